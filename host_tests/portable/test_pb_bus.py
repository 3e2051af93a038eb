# sources/pb_bus.py: the master role on a JK-PB bus with several packs --
# one cycle reads every pack into its own snapshot, a silent pack is backed
# off without holding up the others, the boot scan finds the packs, and
# another master's traffic is reported. The packs answer with the real
# captured frames, each with its own pack voltage and its own ACK address.
# CPython and MicroPython.

from fakes import FakeUart, pb_ack, pb_request
from fixtures import find_frame, unhex

from app import config as C
from compat import ticks_ms
from jkbms import pb_modbus as pb
from sources.base import FRESH, WAIT
from sources.pb_bus import PbBus

_STATUS = unhex(find_frame("rs485_pb_status_response_with_ack_mpp")["hex"])[:300]
_SETTINGS = unhex(find_frame("rs485_pb_settings_response_with_ack_mpp")["hex"])[:300]
_ABOUT = unhex(find_frame("rs485_pb_about_response_with_ack_mpp")["hex"])[:300]
_PACK_MV = 150  # offset of the pack voltage (u32 LE, mV) in a JK02_32S cell-info frame


def _with_pack_mv(frame, mv):
    f = bytearray(frame)
    f[_PACK_MV] = mv & 0xFF
    f[_PACK_MV + 1] = (mv >> 8) & 0xFF
    f[_PACK_MV + 2] = (mv >> 16) & 0xFF
    f[_PACK_MV + 3] = 0
    f[299] = sum(f[:299]) & 0xFF
    return bytes(f)


def bus_replies(volts):
    """address -> pack mV: the replies of those packs to status and settings."""
    out = {}
    for a in volts:
        out[pb_request(a, pb.TRIGGER_STATUS)] = _with_pack_mv(_STATUS, volts[a]) + pb_ack(a, pb.TRIGGER_STATUS)
        out[pb_request(a, pb.TRIGGER_SETTINGS)] = _SETTINGS + pb_ack(a, pb.TRIGGER_SETTINGS)
        out[pb_request(a, pb.TRIGGER_ABOUT)] = _ABOUT + pb_ack(a, pb.TRIGGER_ABOUT)
    return out


def make_bus(volts, addresses, **over):
    cfg = C.defaults()
    cfg["bms_addresses"] = addresses
    cfg["bms_reply_ms"] = 150  # the fake bus hands a frame over in 37-byte reads: slow under load
    cfg["bms_gap_ms"] = 10
    for k in over:
        cfg[k] = over[k]
    uart = FakeUart(bus_replies(volts))
    seen = []
    logs = []
    bus = PbBus(uart, cfg, logs.append, seen.append)
    return bus, uart, seen, logs


def _to(request):
    return request[0]


async def test_one_cycle_reads_every_pack_into_its_own_snapshot():
    volts = {1: 26001, 2: 26002, 5: 26005}
    bus, uart, seen, _ = make_bus(volts, [1, 2, 5])
    assert [p.name for p in seen] == ["jk-pb@1", "jk-pb@2", "jk-pb@5"]
    await bus.cycle(1000)
    now = ticks_ms()
    for p in seen:
        assert p.fresh.state(now) == FRESH, p.name
        assert p.snap.pack_mv == volts[p.slave], (p.name, p.snap.pack_mv)
        assert p.snap.settings_ok == 1
    # one shared reply extractor and raw buffer, not one per pack
    assert seen[0]._reply is seen[2]._reply and seen[0].raw is seen[1].raw
    # the device info is read once per pack, where the cycle has room
    await bus.cycle(1000)
    assert all(p.device is not None for p in seen)
    # then: status only (settings are not due), in address order
    uart.requests = []
    await bus.cycle(1000)
    assert [(_to(r), r[3]) for r in uart.requests] == [(1, 0x20), (2, 0x20), (5, 0x20)]
    assert bus.cycles == 3


async def test_a_reply_with_another_address_is_not_taken():
    # pack 2's frame answered with pack 3's ACK: never pack 2's data
    volts = {1: 26001, 2: 26002}
    bus, uart, seen, _ = make_bus(volts, [1, 2])
    uart.replies[pb_request(2, pb.TRIGGER_STATUS)] = _with_pack_mv(_STATUS, 26002) + pb_ack(3, pb.TRIGGER_STATUS)
    await bus.cycle(1000)
    assert seen[0].fresh.state(ticks_ms()) == FRESH
    assert seen[1].fresh.state(ticks_ms()) == WAIT and seen[1].snap.pack_mv == 0


async def test_a_silent_pack_is_backed_off_and_the_others_keep_their_cycle():
    volts = {1: 26001, 3: 26003}  # pack 2 configured, but silent
    bus, uart, seen, _ = make_bus(volts, [1, 2, 3])
    asked = 0
    for _ in range(8):
        uart.requests = []
        await bus.cycle(1000)
        to2 = [r for r in uart.requests if _to(r) == 2]
        assert len(to2) <= 1, to2  # no retry of a silent pack in its cycle (a short drain: no late reply in it)
        asked += len(to2)
        assert seen[0].fresh.state(ticks_ms()) == FRESH and seen[2].fresh.state(ticks_ms()) == FRESH
    # asked in cycles 1, 3, 6 (back-off 1, 2, 4 cycles), never its settings
    assert asked == 3, asked
    assert seen[1].timeouts == 3 and seen[1].fresh.state(ticks_ms()) == WAIT
    assert bus.bus.late == 1  # several packs: replies name their pack
    # it comes back: polled again at the end of its back-off, then every cycle
    uart.replies.update(bus_replies({2: 26002}))
    for _ in range(5):
        await bus.cycle(1000)
    assert seen[1].fresh.state(ticks_ms()) == FRESH and seen[1].snap.pack_mv == 26002
    uart.requests = []
    await bus.cycle(1000)
    assert [_to(r) for r in uart.requests] == [1, 2, 3]


async def test_only_one_silent_pack_is_retried_per_cycle():
    bus, uart, seen, _ = make_bus({1: 26001}, [1, 2, 3, 4])
    await bus.cycle(1000)  # first cycle: everyone is asked once
    for _ in range(6):
        uart.requests = []
        await bus.cycle(1000)
        silent = set(_to(r) for r in uart.requests if _to(r) != 1)
        assert len(silent) <= 1, silent


async def test_the_boot_scan_finds_the_packs_that_answer():
    volts = {3: 26003, 7: 26007}
    bus, uart, seen, logs = make_bus(volts, "scan")
    assert bus.scanning and not seen
    await bus._scan()
    assert sorted(_to(r) for r in uart.requests) == list(range(1, 16))
    assert [p.slave for p in seen] == [3, 7] and bus.found == [3, 7] and not bus.scanning
    assert "JK-PB packs at 3, 7" in logs[-1], logs
    await bus.cycle(1000)
    assert seen[1].snap.pack_mv == 26007


async def test_a_scan_that_finds_nothing_says_what_to_check():
    bus, uart, seen, logs = make_bus({}, "scan")
    await bus._scan()
    assert bus.scanning and not seen and bus.found == []
    assert "no JK-PB pack answered" in logs[-1]


def test_another_master_on_the_bus_is_reported_once():
    bus, uart, seen, logs = make_bus({1: 26001}, [1, 2])
    junk = b"\x00\x13"
    # a trigger request we did not send, split over two reads, then an ACK from address 0
    req = pb_request(4, pb.TRIGGER_STATUS)
    bus._sniff(junk + req[:5], 7)
    assert bus.foreign == 0
    bus._sniff(req[5:], len(req) - 5)
    assert bus.foreign == 1
    ack0 = pb_ack(0, pb.TRIGGER_SETTINGS)
    bus._sniff(ack0, 8)
    assert bus.foreign == 2
    said = [m for m in logs if "another bus master" in m]
    assert len(said) == 1 and "listen" in said[0]
    assert "ANOTHER MASTER" in bus.link_text(ticks_ms())
    # a corrupted request is not taken for one
    bad = bytearray(req)
    bad[4] ^= 1
    bus._sniff(bad, len(bad))
    assert bus.foreign == 2


async def test_another_masters_request_between_our_exchanges_is_seen_by_the_drain():
    bus, uart, seen, logs = make_bus({1: 26001}, [1])
    uart.pending += pb_request(9, pb.TRIGGER_SETTINGS)  # on the wire before our request
    await bus.cycle(1000)
    assert bus.foreign == 1 and seen[0].fresh.state(ticks_ms()) == FRESH


async def test_on_a_full_bus_each_pack_still_gets_its_device_info_read():
    # a cycle too short for every pack's share to hold an optional read: one pack per cycle gets the room
    volts = {1: 26001, 2: 26002, 3: 26003, 4: 26004}
    bus, uart, seen, _ = make_bus(volts, [1, 2, 3, 4])
    for _ in range(8):
        await bus.cycle(200)  # 50 ms per pack: no room for anything but the status reads
        if all(p.device is not None for p in seen):
            break
    assert all(p.device is not None for p in seen), [p.device is not None for p in seen]


async def test_the_back_off_starts_only_once_the_silent_packs_data_is_stale():
    # while its data is still fresh a pack that fell silent is asked every cycle, and that must not
    # build up a long back-off: once stale it is asked again after 1, 2, 4 ... cycles from then
    from compat import ticks_add

    volts = {1: 26001, 2: 26002}
    bus, uart, seen, _ = make_bus(volts, [1, 2])
    await bus.cycle(1000)
    p2 = seen[1]
    assert p2.fresh.state(ticks_ms()) == FRESH
    for k in list(uart.replies):
        if k[0] == 2:
            del uart.replies[k]
    asked = []
    for _ in range(4):  # silent, data still fresh: asked every cycle
        uart.requests = []
        await bus.cycle(1000)
        asked.append(any(_to(r) == 2 for r in uart.requests))
    assert asked == [True] * 4 and p2.wait == 1
    p2.fresh.data_ms = ticks_add(ticks_ms(), -60000)  # now its data is stale
    asked = []
    for _ in range(4):
        uart.requests = []
        await bus.cycle(1000)
        asked.append(any(_to(r) == 2 for r in uart.requests))
    assert asked == [True, False, True, False], asked  # back-off 1, then 2 cycles
