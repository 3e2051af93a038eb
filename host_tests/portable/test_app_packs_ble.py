# bms_transport "uart+ble": the packs on the RS485 bus and one more over BLE
# (the real aioble on the simulated radio, host/fakeble) make one battery:
# both tasks run under the gateway and every pack is registered, read and
# judged. Skipped with the reason when the vendor aioble folder is absent.
# CPython and MicroPython.
# unix heap: 448k -- the 64-bit unix port compiles aioble, the fake radio and
# the gateway from source here; the device runs this setup from ROMFS (README 3b)

import mpcompat
from fakeble import env
from fakes import FakeCan, FakeRecovery, FakeUart
from test_pb_bus import bus_replies

from app import config as C
from app.gateway import Gateway

_WHY = env.setup()
_MAC = "20:21:11:40:50:60"


async def test_bus_packs_and_a_ble_pack_are_one_battery():
    if _WHY is not None:
        mpcompat.skip(_WHY)
    import aioble
    import bluetooth
    from jk_peripheral import FrameSource, JkPeripheral

    radio = bluetooth.radio
    radio.reset()
    bluetooth.BLE().irq(aioble.core.ble_irq)
    radio.add(JkPeripheral(_MAC, name="JK-B2A24S15P", frames=FrameSource.from_fixtures(), period_ms=250))
    msgs = []
    cfg = C.validate({"bms_transport": "uart+ble", "ble_mac": _MAC, "bms_addresses": [1, 2],
                      "bms_reply_ms": 60, "bms_gap_ms": 10, "require_temp_sensor": "no"}, msgs)
    assert not msgs, msgs
    out = []
    gw = Gateway(cfg, FakeUart(bus_replies({1: 26800, 2: 26850})), FakeCan(), FakeRecovery(), out=out.append)
    assert [link.name for link in gw.links] == ["jk-pb bus", "ble " + _MAC]
    assert gw.tx.poll_ms == 0  # BLE pushes on its own schedule: no phase to lock onto
    await gw.run(4)
    b = gw.battery
    names = [p.name for p in gw.packs]
    assert names == ["jk-pb@1", "jk-pb@2", "ble " + _MAC], names
    ble = gw.packs[2]
    assert ble.snap.settings_ok == 1 and ble.polls_ok > 0, (ble.last_error, out)
    text = "\n".join(out)
    # the BLE capture is a pack with another cell count than the bus packs' captures: judged like any pack
    if ble.snap.cell_count == gw.packs[1].snap.cell_count:
        assert b.online == 3 and "pack online: ble" in text
    else:
        assert b.online == 2 and b.state_of(2) == 3 and "pack rejected: ble " + _MAC in text
    assert gw.status.task_restarts == 0, text
