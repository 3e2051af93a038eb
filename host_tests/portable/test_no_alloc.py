# The steady-state path allocates nothing: decoding a cell-info frame into the
# preallocated snapshot, the charge policy's decision and encoding the Pylontech
# frame set run with micropython.heap_lock() held (any allocation -> MemoryError).
# The policy runs on a virtual clock, one decision per CAN period: each of its
# paths is checked under the lock -- the hold after the start, the ramp, the
# settled limits and the link-lost zeros.
# On the webassembly port small ints are 31-bit as on the ESP32, so values
# >= 2**30 would allocate there too. Under CPython the lock is a no-op and
# these tests only check the results.

from fixtures import load_frames, unhex
from mpcompat import IS_MICROPYTHON, bytes_allocated, run_locked

from app import config as C
from charge.policy import ChargePolicy
from charge.ramp import HOLDING, NORMAL, RAMPING
from compat import ticks_add
from jkbms import cellinfo, nw, settings
from jkbms import frame as J
from jkbms.reassembler import Reassembler
from modbus import crc, rtu
from pack.snapshot import PackSnapshot
from protocols.pylon import PylonEncoder
from sources.base import FRESH, STALE

_FRAMES = {}


def ctx():
    """Fresh state for one test (the frames are parsed once)."""
    if not _FRAMES:
        for f in load_frames():
            _FRAMES[f["id"]] = unhex(f["hex"])
    c = {
        "cell32": bytearray(_FRAMES["rs485_pb_status_response_with_ack_mpp"][:300]),
        "cell24": bytearray(_FRAMES["ble_jk02_24s_v7_1_0h_cell_info"]),
        "settings": bytearray(_FRAMES["rs485_pb_settings_response_with_ack_mpp"][:300]),
        "nw": bytearray(_FRAMES["rs485_4e57_read_all_response_16s_v7_1_0h"]),
        "snap": PackSnapshot(),
        "policy": ChargePolicy(C.defaults(), 0),
        "now": 0,
        "enc": PylonEncoder(),
        "reasm": Reassembler(),
        "frame_buf": bytearray(16),
    }
    c["lim"] = c["policy"].lim
    settings.decode(c["settings"], c["snap"])
    return c


CFG = C.defaults()
PERIOD_MS = CFG["can_period_ms"]
# decisions after which the hold and the ramp (0 to the 100 A user maxima) are over, and spare
SETTLE = (CFG["hold_s"] + (100 + CFG["ramp_a_s"] - 1) // CFG["ramp_a_s"]) * 1000 // PERIOD_MS + 3


def decide_encode(c, state):
    now = ticks_add(c["now"], PERIOD_MS)  # the virtual clock: one CAN period per decision
    c["now"] = now
    c["policy"].decide(c["snap"], state, now)
    lim = c["lim"]
    c["enc"].encode(c["snap"], lim, lim.flags)


def modes(c):
    p = c["policy"]
    return p.ccl.mode, p.dcl.mode


def settle(c, cycle):
    """Run cycle (unlocked) until both current limits are at their target."""
    for _ in range(SETTLE):
        cycle(c)
        if modes(c) == (NORMAL, NORMAL):
            return
    raise AssertionError("the limits did not settle: %r" % (modes(c),))


def check_every_path_locked(c, cycle):
    """cycle with the heap locked in the hold, on the ramp and settled; the limits then."""
    run_locked(cycle, c)
    assert modes(c) == (HOLDING, HOLDING)
    for _ in range(CFG["hold_s"] * 1000 // PERIOD_MS + 1):
        cycle(c)
    run_locked(cycle, c)
    assert RAMPING in modes(c), modes(c)
    settle(c, cycle)
    run_locked(cycle, c)
    assert modes(c) == (NORMAL, NORMAL)


def cycle_55aa(c):
    buf = c["cell32"]
    J.check_frame(buf, 300)
    cellinfo.decode(buf, 6, J.detect_layout(buf), c["snap"])
    decide_encode(c, FRESH)
    return c["lim"].ccl_da


def cycle_24s(c):
    buf = c["cell24"]
    J.check_frame(buf, 300)
    cellinfo.decode(buf, 6, J.LAYOUT_JK02_24S, c["snap"])
    decide_encode(c, STALE)
    return c["lim"].dcl_da


def cycle_4e57(c):
    buf = c["nw"]
    nw.decode(buf, len(buf), c["snap"])
    decide_encode(c, FRESH)
    return c["lim"].dcl_da


def reassemble(c):
    r = c["reasm"]
    buf = c["cell32"]
    got = 0
    for start in range(0, 300, 20):  # 20-byte BLE notifications
        r.feed(buf, start, start + 20)
        got += r.next_frame()
    return got


def modbus_round(c):
    b = c["frame_buf"]
    n = rtu.build_read(b, 1, 0x1200, 32)
    return n + crc.crc16(b, 0, n)


def test_pb_cell_info_cycle_allocates_nothing():
    c = ctx()
    check_every_path_locked(c, cycle_55aa)
    ccl = run_locked(cycle_55aa, c)
    # PB pack at address 1: max charge 150 A x 0.9, capped by the 100 A default
    assert ccl == 1000
    assert c["snap"].pack_mv == 26852
    assert c["enc"].frames[1][2] | (c["enc"].frames[1][3] << 8) == 1000


def test_24s_cycle_and_link_lost_encoding_allocate_nothing():
    c = ctx()
    settle(c, cycle_55aa)  # limits up on fresh data first, then the link is lost
    run_locked(cycle_24s, c)
    f351 = c["enc"].frames[1]
    assert f351[2] == 0 and f351[3] == 0 and f351[4] == 0 and f351[5] == 0  # link lost -> 0 A


def test_4e57_cycle_allocates_nothing():
    c = ctx()
    check_every_path_locked(c, cycle_4e57)
    dcl = run_locked(cycle_4e57, c)
    # settled: the limit is the policy's target (below 60 A x 0.9: the lowest cell is in the
    # DCL taper's range)
    assert 0 < dcl == c["policy"].dcl_target_ma // 100 <= 540
    assert c["snap"].current_ma == -690


def test_reassembler_allocates_nothing():
    c = ctx()
    assert run_locked(reassemble, c) == 300
    assert bytes(c["reasm"].frame) == bytes(c["cell32"])


def test_modbus_request_allocates_nothing():
    c = ctx()
    run_locked(modbus_round, c)
    assert bytes(c["frame_buf"][:8]) == b"\x01\x03\x12\x00\x00\x20\x41\x7a"[:6] + bytes(c["frame_buf"][6:8])
    assert crc.crc_ok(c["frame_buf"], 0, 8)


def test_measured_bytes_per_cycle_is_zero():
    c = ctx()
    settle(c, cycle_55aa)
    n = bytes_allocated(cycle_55aa, c)
    assert n == 0, n
    if IS_MICROPYTHON:
        print("bytes allocated per decode+limits+encode cycle:", n)


def gateway_can_cycle(c):
    tx = c["tx"]
    now = c["now"]
    n = tx.burst(now)
    tx.recovery.poll(now)
    tx.receive(now)
    inv = c["inverter"]
    while inv.recv(c["rx"]) is not None:  # the inverter side drains its queue
        pass
    return n


def gateway_cycle_fresh(c):
    """One period on: new BMS data 100 ms ago, then the gateway's CAN cycle."""
    now = ticks_add(c["now"], PERIOD_MS)
    c["now"] = now
    c["fresh"].data_ok(ticks_add(now, -100))
    return gateway_can_cycle(c)


def test_gateway_can_cycle_allocates_nothing():
    # the whole per-burst path of the running gateway: link check, limits,
    # six frames onto a CAN port, bus-off supervision, 0x305 receive
    from can_soft import loopback_pair

    from app.can_io import CanTx
    from canport.base import BusOffRecovery, new_recv_list
    from sources.base import Freshness
    c = ctx()
    port, inverter = loopback_pair()
    fresh = Freshness(5000)
    cfg = C.defaults()
    tx = CanTx(port, BusOffRecovery(port), cfg, c["snap"], fresh, ChargePolicy(cfg, 0), PylonEncoder())
    cellinfo.decode(c["cell32"], 6, J.LAYOUT_JK02_32S, c["snap"])
    c.update(tx=tx, now=0, fresh=fresh, inverter=inverter, rx=new_recv_list(), policy=tx.policy)
    gateway_cycle_fresh(c)  # warm-up: first-time state transitions
    assert run_locked(gateway_cycle_fresh, c) == 6
    assert modes(c) == (HOLDING, HOLDING)
    for _ in range(CFG["hold_s"] * 1000 // PERIOD_MS):
        gateway_cycle_fresh(c)
    assert run_locked(gateway_cycle_fresh, c) == 6
    assert RAMPING in modes(c), modes(c)
    settle(c, gateway_cycle_fresh)
    assert run_locked(gateway_cycle_fresh, c) == 6
    assert modes(c) == (NORMAL, NORMAL) and tx.policy.lim.ccl_da == 1000
    c["now"] = ticks_add(c["now"], 6000)  # stale: the link-lost encoding path too
    assert run_locked(gateway_can_cycle, c) == 6
    assert tx.policy.link_lost and tx.policy.lim.ccl_da == 0
