# app.can_io: the CAN burst follows the policy's decision, never blocks or
# raises on a full queue or bus-off, locks onto the BMS poll's phase, and
# hands received frames to the protocol (0x305 heartbeat). CPython and
# MicroPython. The policy runs on the bursts' own (virtual) times: CCL and DCL
# stay 0 for hold_s after the first data and after any block, then ramp.

from fakes import FakeCan, FakeRecovery, load_pb_pack

import protocols
from app import config as C
from app.can_io import CanTx, InverterLink
from charge.policy import ChargePolicy
from pack.snapshot import PackSnapshot
from sources.base import Freshness

HOLD_MS = C.defaults()["hold_s"] * 1000


def make_tx(cfg=None, can=None):
    cfg = cfg or C.defaults()
    snap = PackSnapshot()
    fresh = Freshness(cfg["bms_timeout_s"] * 1000)
    tx = CanTx(can or FakeCan(), FakeRecovery(), cfg, snap, fresh, ChargePolicy(cfg, 0), protocols.make(cfg))
    return tx, snap, fresh


def limits(tx):
    """(CCL, DCL) of the last frame set sent (0x351 bytes 2-5, 0.1 A)."""
    f = tx.can.sent[1][1]
    return f[2] | (f[3] << 8), f[4] | (f[5] << 8)


def fresh_bursts(tx, fresh, t, until):
    """A burst every second from t to until (ms), each 100 ms after new data; the next burst time."""
    while t <= until:
        fresh.data_ok(t - 100)
        tx.can.sent = []
        assert tx.burst(t) == 6
        t += 1000
    return t


def test_no_frame_before_the_first_complete_data_set():
    tx, snap, fresh = make_tx()
    assert tx.burst(0) == 0 and tx.can.sent == []
    load_pb_pack(snap)
    fresh.data_ok(100)
    assert tx.burst(200) == 6
    assert [f[0] for f in tx.can.sent] == [0x35E, 0x351, 0x355, 0x356, 0x359, 0x35C]


def test_stale_data_zeros_policy_then_recovery():
    tx, snap, fresh = make_tx()
    load_pb_pack(snap)
    fresh.data_ok(0)
    tx.burst(100)
    assert limits(tx) == (0, 0) and tx.can.sent[4][1][1] == 0  # the hold after the start, no alarm
    t = fresh_bursts(tx, fresh, 1100, HOLD_MS + 2100)
    ccl, dcl = limits(tx)
    assert ccl > 0 and dcl > 0  # fresh, past the hold: limits (ramping up)
    last = t - 1100  # the last data
    tx.can.sent = []
    tx.burst(last + 6001)  # data now 6 s old
    f351 = tx.can.sent[1][1]
    f359 = tx.can.sent[4][1]
    f35c = tx.can.sent[5][1]
    assert f351[2:6] == b"\x00\x00\x00\x00"  # CCL = DCL = 0
    assert f359[1] & 0x08 and f359[3] & 0x08  # system error + communication failure
    assert f35c[0] == 0  # neither charge nor discharge enabled
    assert tx.policy.link_lost
    # data again: no alarm at once, the limits after the hold (the outage was a block)
    back = last + 7000
    t = fresh_bursts(tx, fresh, back, back)
    assert tx.can.sent[4][1][1] == 0 and tx.can.sent[4][1][3] == 0 and not tx.policy.link_lost
    assert limits(tx) == (0, 0) and tx.can.sent[5][1][0] == 0
    t = fresh_bursts(tx, fresh, t, back + HOLD_MS - 2000)
    assert limits(tx) == (0, 0)
    t = fresh_bursts(tx, fresh, t, back + HOLD_MS + 2000)
    ccl, dcl = limits(tx)
    assert ccl > 0 and dcl > 0 and tx.can.sent[5][1][0] & 0xC0 == 0xC0


def test_stale_data_stop_policy():
    cfg = C.defaults()
    cfg["link_loss"] = "stop"
    tx, snap, fresh = make_tx(cfg)
    load_pb_pack(snap)
    fresh.data_ok(0)
    assert tx.burst(1000) == 6
    assert tx.burst(6001) == 0 and tx.policy.stopped
    fresh.data_ok(7000)
    assert tx.burst(7100) == 6 and not tx.policy.stopped


def test_full_queue_and_bus_off_never_raise():
    tx, snap, fresh = make_tx(can=FakeCan(capacity=3))
    load_pb_pack(snap)
    fresh.data_ok(0)
    assert tx.burst(10) == 3 and tx.pending()  # three buffers taken, three frames wait in software
    assert tx.pump() == 0 and tx.tx_full == 0  # the controller takes nothing more this period
    assert tx.burst(1010) == 0 and tx.tx_full == 3  # the next burst counts the three that never went
    assert tx.tx_cancelled == 3 and tx.can.cancelled == 3  # and withdraws what the controller still held
    tx.can.bus_off = True
    assert tx.burst(2010) == 0 and tx.tx_errors == 1
    assert not tx.pending()  # nothing is left to go out late


def test_inverter_heartbeat_is_recorded_through_the_protocol():
    tx, snap, fresh = make_tx()
    tx.can.inbox = [(0x305, b"\x00" * 8), (0x123, b"\x01"), (0x305, b"\x00" * 8)]
    assert tx.receive(500) == 3
    assert tx.inverter.count == 2 and tx.rx_frames == 3


def test_inverter_link_gaps_and_silence():
    inv = InverterLink(10000, 0)
    assert not inv.silent(10000) and inv.silent(10001)  # never heard: counted from start
    inv.heartbeat(20000)
    inv.heartbeat(21000)
    inv.heartbeat(26000)
    assert (inv.count, inv.min_gap, inv.max_gap) == (3, 1000, 5000)
    assert not inv.silent(36000) and inv.silent(36001)


def lock_in(tx, fresh, burst_at):
    ages = []
    for _ in range(40):
        fresh.data_ok((burst_at - 40) // 1000 * 1000 + 40)  # the newest data at that time
        step = tx.phase_step(burst_at, 1000)
        assert -50 <= step <= 50  # cadence stays within 5 %
        ages.append(fresh.age_ms(burst_at))
        burst_at += 1000 + step
    return ages


def test_burst_phase_locks_onto_the_bms_poll():
    tx, snap, fresh = make_tx()
    load_pb_pack(snap)
    # BMS data lands every 1000 ms at phase 40; bursts start at phase 940 -> age 900 ms
    for start in (940, 1020, 1050):
        ages = lock_in(tx, fresh, start)
        assert 75 <= ages[-1] <= 150 and 75 <= ages[-2] <= 150, (start, ages)
    assert lock_in(tx, fresh, 940)[0] == 900
    # different poll and CAN periods: no phase to lock onto, no nudging
    cfg = C.defaults()
    cfg["bms_poll_ms"] = 2000
    tx2, snap2, fresh2 = make_tx(cfg)
    fresh2.data_ok(0)
    assert tx2.phase_step(900, 1000) == 0


def test_burst_phase_follows_its_phase_age_and_holds_still_without_one():
    # several packs: the bursts lock onto the end of a full bus cycle (charge.battery.since_cycle_ms),
    # whatever the age of the newest pack's data
    cfg = C.defaults()
    snap = PackSnapshot()
    load_pb_pack(snap)
    fresh = Freshness(cfg["bms_timeout_s"] * 1000)
    ref = [0]
    tx = CanTx(FakeCan(), FakeRecovery(), cfg, snap, fresh, ChargePolicy(cfg, 0), protocols.make(cfg),
               lambda now: ref[0])
    fresh.data_ok(1000)  # newest data 100 ms old: no nudge by it
    ref[0] = 900  # but the cycle ended 900 ms before the burst: go later
    assert tx.phase_step(1100, 1000) == 50
    ref[0] = -1  # no cycle to lock onto (longer than its period): no nudge at all
    assert tx.phase_step(1100, 1000) == 0


def test_only_the_configured_protocol_module_is_loaded():
    import sys
    if "protocols.pylon" in sys.modules:
        del sys.modules["protocols.pylon"]
    assert protocols.load("pylon").__name__ == "PylonEncoder"
    assert "protocols.pylon" in sys.modules
    try:
        protocols.load("nonexistent")
        raise AssertionError("should have raised KeyError for an unknown protocol")
    except KeyError:
        pass


def test_only_a_real_0x305_counts_as_the_heartbeat():
    tx, snap, fresh = make_tx()
    rtr, ext = 1, 2  # canport.base FLAG_RTR, FLAG_EXT_ID
    tx.can.inbox = [(0x305, b"\x00" * 8, rtr), (0x305, b"\x00" * 8, ext), (0x305, b"\x00" * 2, 0),
                    (0x305, b"", 0), (0x305, b"\x00" * 8, 0)]
    assert tx.receive(500) == 5
    assert tx.inverter.count == 1  # only the 11-bit data frame with 8 bytes


def test_a_receive_flood_is_taken_in_bounded_slices():
    from app import can_io
    tx, snap, fresh = make_tx()
    tx.can.inbox = [(0x123, b"\x01" * 8, 0)] * 5000
    assert tx.receive(500) == can_io.RX_BATCH  # one pass takes a slice, then the task yields
    assert len(tx.can.inbox) == 5000 - can_io.RX_BATCH
    assert tx.rx_frames == can_io.RX_BATCH


def test_the_protocol_s_receive_filters_reach_the_port_and_survive_its_absence():
    from can_soft import LoopbackPort
    from fakes import FakeUart

    from app import gateway as G
    from canport.base import BusOffRecovery
    from canport.nocan import NoCan
    built = []

    def build():
        if not built:
            built.append(0)
            raise OSError(19)
        port = LoopbackPort()
        built.append(port)
        return port

    can = NoCan(build)
    gw = G.Gateway(C.defaults(), FakeUart({}), can, BusOffRecovery(can), out=lambda s: None)
    assert gw.tx.enc.rx_filters == ((0x305, 0x7FF, 0),)
    t = 0
    while can.port is None and t < 5000:
        gw.tx.recovery.poll(t)
        t += 50
    port = built[-1]
    assert can.port is port and port.filters_max >= 1
    assert port._filters == ((0x305, 0x7FF, 0),)  # set on the port once it existed


def mcp2515_tx():
    """CanTx on the real MCP2515 driver over the register-level chip model
    (three TX buffers, like the chip)."""
    import mcp2515_model as M

    from canport import base as CB
    from canport.mcp2515 import MCP2515
    m = M.MCP2515Model()
    d = MCP2515(m.spi, m.cs, 500000, 8000000, CB.MODE_NORMAL, lambda ms: None)
    tx, snap, fresh = make_tx(can=d)
    load_pb_pack(snap)
    return tx, snap, fresh, m


def test_six_frames_through_three_mcp2515_buffers_all_go_within_the_period():
    # the three TX buffers were held (nothing acknowledged yet): 0x356, 0x359 and 0x35C used to be dropped
    tx, snap, fresh, m = mcp2515_tx()
    fresh.data_ok(0)
    m.ack = False
    assert tx.burst(100) == 3 and tx.pending()
    m.complete_tx()  # the bus takes the first three
    assert tx.pump() == 3 and not tx.pending()
    m.complete_tx()
    assert sorted(f[0] for f in m.sent) == [0x351, 0x355, 0x356, 0x359, 0x35C, 0x35E]  # all six, once
    assert tx.tx_full == 0


def test_no_stale_frame_set_reaches_the_bus_when_it_comes_back():
    # 17 s without an ACK, the BMS link stale for the last 11 of them: the inverter used to get the
    # set queued 17 s earlier first (CCL/DCL 100 A, enables on, no alarms)
    tx, snap, fresh, m = mcp2515_tx()
    fresh.data_ok(0)
    m.ack = False
    t = 100
    for _ in range(17):
        tx.burst(t)
        while tx.pump():
            pass
        t += 1000
    assert fresh.state(t) == 2  # sources.base.STALE since 5 s after the data
    m.complete_tx()  # the inverter is back
    assert m.sent, "the newest set goes out"
    for can_id, _, _, data in m.sent:
        if can_id == 0x351:
            assert data[2:6] == b"\x00\x00\x00\x00", data  # only 0 A limits: nothing from before the outage
        if can_id == 0x35C:
            assert data[0] == 0  # no enable bit
        if can_id == 0x359:
            assert data[3] & 0x08  # communication failure
    assert tx.tx_full > 0 and tx.tx_cancelled > 0  # what could not go was counted and withdrawn


def _mcp2515_period(tx, m, now):
    # one period with the three TX buffers: the burst (which withdraws what the previous set left),
    # then the software queue fed as the bus frees the buffers
    n = tx.burst(now)
    m.complete_tx()
    n += tx.pump()
    m.complete_tx()
    return n


def test_the_mcp2515_burst_with_its_software_queue_allocates_nothing():
    from mpcompat import run_locked
    tx, snap, fresh, m = mcp2515_tx()
    m.record = False
    m.ack = False  # the buffers stay taken until complete_tx(): the software queue has to hold frames
    fresh.data_ok(0)
    _mcp2515_period(tx, m, 100)  # warm-up
    assert run_locked(_mcp2515_period, tx, m, 1100) == 6
    assert m.tx_count == 12 and tx.tx_full == 0
