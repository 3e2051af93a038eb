# app/packs.py and the gateway with several packs: the packs on one bus
# become one battery in the CAN frames (module count, summed current), a
# pack that goes silent is dropped at once with an event and shrinks the
# limits, fewer than bms_min_packs make the whole battery stale, and the
# console and the watchdog see every pack and the bus task.
# CPython and MicroPython.
# unix heap: 384k -- one process builds several gateways of three packs and
# compiles the console, the listener and the bus task from source

import struct

from fakes import FakeCan, FakeRecovery, FakeUart, pb_request
from test_pb_bus import bus_replies

from app import config as C
from app.gateway import Gateway
from app.supervisor import stalled
from compat import ticks_add, ticks_ms
from jkbms import pb_modbus as pb
from outputs import events as E
from sources.base import FRESH, STALE

_VOLTS = {1: 26800, 2: 26850, 4: 26900}


def make_gw(**over):
    cfg = C.defaults()
    cfg["bms_addresses"] = [1, 2, 4]
    cfg["bms_reply_ms"] = 150  # room for the fake bus under load
    cfg["bms_gap_ms"] = 10
    cfg["require_temp_sensor"] = "no"
    for k in over:
        cfg[k] = over[k]
    out = []
    can = FakeCan()
    gw = Gateway(cfg, FakeUart(bus_replies(_VOLTS)), can, FakeRecovery(), out=out.append)
    return gw, can, out


def frame(can, can_id):
    for i, d in reversed(can.sent):
        if i == can_id:
            return d
    raise AssertionError("no frame 0x%X sent" % can_id)


async def test_three_packs_are_one_battery_in_the_frames():
    gw, can, out = make_gw()
    assert gw.battery is not None and len(gw.links) == 1 and gw.links[0].name == "jk-pb bus"
    await gw.links[0].cycle(1000)  # the aggregate is rebuilt at the end of the cycle
    now = ticks_ms()
    b = gw.battery
    assert b.state(now) == FRESH and b.online == 3
    assert gw.tx.burst(now) > 0
    assert frame(can, 0x359)[4] == 3  # modules: the packs online
    volts, amps, _ = struct.unpack("<hhh", bytes(frame(can, 0x356)[:6]))
    packs = gw.packs
    assert amps == sum(p.snap.current_ma for p in packs) // 100
    assert volts == (sum(_VOLTS.values()) // 3 + 5) // 10
    assert "pack online: jk-pb@4 (3 of 3 online)" in "\n".join(out)


async def test_a_silent_pack_is_dropped_at_once_and_the_limits_shrink():
    gw, can, out = make_gw(max_charge_a=1000)  # the packs' own limits decide, not the user's cap
    await gw.links[0].cycle(1000)
    now = ticks_ms()
    gw.tx.burst(now)
    ccl3 = gw.policy.ccl_target_ma
    assert ccl3 > 0
    # pack 2's newest data is older than bms_timeout_s: out on the next look
    p2 = gw.packs[1]
    p2.fresh.data_ms = ticks_add(now, -gw.cfg["bms_timeout_s"] * 1000 - 1)
    gw.tx.burst(now)
    assert gw.battery.online == 2 and frame(can, 0x359)[4] == 2
    assert gw.policy.ccl_target_ma < ccl3, (gw.policy.ccl_target_ma, ccl3)
    text = "\n".join(out)
    assert "pack OFFLINE: jk-pb@2" in text and "2 of 3 online, limits shrink now" in text
    assert "BMS data STALE" not in text  # the battery goes on with two
    assert p2.snap.settings_ok == 0  # back only with settings read again
    lines = gw.execute("packs")
    assert any(line.startswith("jk-pb@2") and "OFFLINE" in line for line in lines), lines
    status = "\n".join(gw.execute("status"))
    assert "2 of 3 packs online" in status and "RS485: master of 3 pack(s)" in status
    assert "battery of 2 online" in status
    # the next cycle reads its settings and it is back
    await gw.links[0].cycle(1000)
    assert gw.battery.online == 3 and p2.snap.settings_ok == 1
    assert "pack online: jk-pb@2 (3 of 3 online)" in "\n".join(out)
    # each pack's own BMS: its device info, read once in a cycle's spare time
    await gw.links[0].cycle(1000)
    lines = gw.execute("packs")
    assert sum(1 for line in lines if line.startswith("    BMS ") and "software" in line) == 3, lines


async def test_fewer_packs_than_bms_min_packs_make_the_battery_stale():
    gw, can, out = make_gw(bms_min_packs=3)
    await gw.links[0].cycle(1000)
    now = ticks_ms()
    assert gw.battery.state(now) == FRESH
    assert gw.tx.burst(now) > 0
    gw.packs[2].fresh.data_ms = ticks_add(now, -60000)
    assert gw.battery.state(now) == STALE
    gw.tx.burst(now)  # link_loss "zeros": 0 A for the whole battery
    ccl, dcl = struct.unpack("<hh", bytes(frame(can, 0x351)[2:6]))
    assert ccl == 0 and dcl == 0
    assert "BMS data STALE (2 of 3 packs online, bms_min_packs 3: sending 0 A limits + alarms)" in "\n".join(out)


def test_a_stuck_bus_task_is_named_for_the_watchdog():
    gw, can, out = make_gw()
    now = ticks_ms()
    gw.tx.tx_heartbeat_ms = gw.tx.rx_heartbeat_ms = now
    gw.links[0].heartbeat_ms = now
    assert stalled(gw.status, now) == ""
    gw.links[0].heartbeat_ms = ticks_add(now, -60000)
    assert stalled(gw.status, now) == ""  # ... but the bus made progress (a pack's exchange)
    gw.links[0].bus.beat_ms = ticks_add(now, -60000)
    assert stalled(gw.status, now) == "jk-pb bus"


def test_another_master_is_a_warning_event():
    gw, can, out = make_gw()
    req = pb_request(9, pb.TRIGGER_STATUS)  # a request we did not send, drained between our exchanges
    gw.links[0]._sniff(req, len(req))
    assert gw.events.recent()[-1][1] == E.BUS_WARN and E.TEXT[E.BUS_WARN][0] == E.WARN
    assert "RS485: another bus master is polling" in out[-1] and "listen" in out[-1], out


def test_several_is_chosen_by_the_config():
    import sources

    cfg = C.defaults()
    assert not sources.several(cfg)
    cfg["bms_addresses"] = [3]
    assert not sources.several(cfg)  # one pack at another address: no battery aggregate needed
    cfg["bms_addresses"] = "scan"
    assert sources.several(cfg)
    cfg["bms_addresses"] = [1, 2]
    assert sources.several(cfg)
    cfg["bms_addresses"] = []
    cfg["bms_bus_role"] = "listen"
    assert sources.several(cfg)


async def test_the_running_gateway_says_its_bus_role_and_reads_every_pack():
    gw, can, out = make_gw()
    await gw.run(2)
    text = "\n".join(out)
    assert "via jk-pb bus (master, packs 1, 2, 4)" in text, text
    assert gw.battery.online == 3 and gw.tx.bursts >= 1 and frame(can, 0x359)[4] == 3
    assert gw.status.task_restarts == 0


async def test_a_listening_gateway_makes_one_battery_of_what_it_hears_and_never_transmits():
    from test_jk_listen import NoWriteUart, chunks, cycle

    cfg = C.defaults()
    cfg["bms_bus_role"] = "listen"
    cfg["bms_timeout_s"] = 10
    cfg["require_temp_sensor"] = "no"
    out = []
    can = FakeCan()
    uart = NoWriteUart(chunks(cycle() + cycle(), 5, 200))  # write() raises: a listener must never send
    gw = Gateway(cfg, uart, can, FakeRecovery(), out=out.append)
    assert gw.tx.poll_ms == 0  # the master's schedule is not ours: no phase lock
    await gw.run(2)
    text = "\n".join(out)
    assert "via listen (listening to a JK master, packs as heard)" in text, text
    assert [p.name for p in gw.packs] == ["jk-pb@0 (heard)", "jk-pb@1 (heard)", "jk-pb@2 (heard)"]
    # the bank's pack 2 is a 16S pack among 8S ones (test_jk_listen's captures): rejected, said, left out
    assert gw.battery.online == 2 and frame(can, 0x359)[4] == 2
    assert "pack rejected: jk-pb@2 (heard): cell count differs" in text
    assert gw.status.task_restarts == 0 and not uart.chunks
