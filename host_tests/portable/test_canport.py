# The CAN port (firmware/lib/canport): interface constants, BusOffRecovery's
# back-off schedule, the in-memory LoopbackPort (host/can_soft.py), the machine.CAN backend over
# a fake CAN class, and the MCP2515 driver against a register-level model of
# the chip (mcp2515_model.py).  Socket-free: runs under pytest, the
# MicroPython unix port and the webassembly port.  The SLCAN socket backend
# is tested in host_tests/cpython/test_slcan_port.py.

import mcp2515_model as M
from can_soft import (
    FAULT_BUS_ERROR,
    FAULT_NO_ACK,
    FAULT_NONE,
    LoopbackBus,
    LoopbackPort,
    loopback_pair,
)
from mpcompat import run_locked

from canport import base as B
from canport.base import BusOffRecovery, new_recv_list
from canport.machine_can import MachineCanPort
from canport.mcp2515 import MCP2515, bit_timing
from compat import ticks_diff


def raises(exc, fn, *args):
    try:
        fn(*args)
    except exc:
        return True
    return False


# ---------------------------------------------------------------------------
# interface constants and helpers


def test_constants_have_the_machine_can_values():
    # extmod/machine_can_port.h
    assert (B.STATE_STOPPED, B.STATE_ACTIVE, B.STATE_WARNING, B.STATE_PASSIVE, B.STATE_BUS_OFF) == (0, 1, 2, 3, 4)
    assert (B.FLAG_RTR, B.FLAG_EXT_ID, B.FLAG_UNORDERED) == (1, 2, 16)
    assert (B.RECV_ERR_FULL, B.RECV_ERR_OVERRUN) == (1, 2)
    assert (B.MODE_NORMAL, B.MODE_LOOPBACK, B.MODE_SILENT) == (0, 2, 3)


def test_check_frame_limits():
    B.check_frame(0x7FF, 8, 0)
    B.check_frame(0x1FFFFFFF, 0, B.FLAG_EXT_ID)
    assert raises(ValueError, B.check_frame, 0x800, 8, 0)
    assert raises(ValueError, B.check_frame, 0x20000000, 8, B.FLAG_EXT_ID)
    assert raises(ValueError, B.check_frame, -1, 8, 0)
    assert raises(ValueError, B.check_frame, 0x305, 9, 0)


def test_filters_normalize_and_match():
    assert B.normalize_filters(None, 4) is None
    assert B.normalize_filters([], 4) == ()
    f = B.normalize_filters([(0x305, 0x7FF, 0), [0x300, 0x700, 0], (0x18FF50E5, 0x1FFFFFFF, B.FLAG_EXT_ID)], 4)
    assert B.filter_accepts(f, 0x305, 0)
    assert B.filter_accepts(f, 0x3AB, 0)
    assert not B.filter_accepts(f, 0x405, 0)
    assert not B.filter_accepts(f, 0x305, B.FLAG_EXT_ID)  # id type must match
    assert B.filter_accepts(f, 0x18FF50E5, B.FLAG_EXT_ID)
    assert not B.filter_accepts((), 0x305, 0)
    assert B.filter_accepts(None, 0x305, 0)
    rtr_only = B.normalize_filters([(0x305, 0x7FF, B.FLAG_RTR)], 4)
    assert B.filter_accepts(rtr_only, 0x305, B.FLAG_RTR)
    assert not B.filter_accepts(rtr_only, 0x305, 0)
    assert raises(ValueError, B.normalize_filters, [(0x800, 0x7FF, 0)], 4)
    assert raises(ValueError, B.normalize_filters, [(0x1, 0x7FF)], 4)
    assert raises(ValueError, B.normalize_filters, [(1, 0x7FF, 0)] * 5, 4)


def test_state_from_counters_thresholds():
    s = B.state_from_counters
    assert s(0, 0, False) == B.STATE_ACTIVE
    assert s(95, 95, False) == B.STATE_ACTIVE
    assert s(96, 0, False) == B.STATE_WARNING
    assert s(0, 96, False) == B.STATE_WARNING
    assert s(128, 0, False) == B.STATE_PASSIVE
    assert s(0, 128, False) == B.STATE_PASSIVE
    assert s(255, 0, False) == B.STATE_PASSIVE
    assert s(0, 0, True) == B.STATE_BUS_OFF


def test_state_tracker_counts_each_level_entered():
    t = B.StateTracker()
    t.note(B.STATE_ACTIVE)
    t.note(B.STATE_WARNING)
    t.note(B.STATE_WARNING)
    t.note(B.STATE_PASSIVE)
    t.note(B.STATE_ACTIVE)
    t.note(B.STATE_BUS_OFF)  # a jump observed late counts every level passed
    assert (t.n_warning, t.n_passive, t.n_bus_off) == (2, 2, 1)
    t.note(B.STATE_STOPPED)
    t.note(B.STATE_ACTIVE)
    assert (t.n_warning, t.n_passive, t.n_bus_off) == (2, 2, 1)


def test_ticks_diff_wraps_at_2_pow_30():
    assert ticks_diff(150, 100) == 50
    assert ticks_diff(100, 150) == -50
    assert ticks_diff(20, 0x3FFFFFF0) == 36  # time.ticks_ms() wrapped
    assert ticks_diff(0x3FFFFFF0, 20) == -36


# ---------------------------------------------------------------------------
# BusOffRecovery


class ScriptedPort:
    """state() returns self.s; restart() is logged and may change it."""

    def __init__(self, s=B.STATE_ACTIVE):
        self.s = s
        self.after_restart = None  # state after restart(); None: unchanged
        self.restart_exc = None
        self.state_exc = None
        self.restart_log = []

    def state(self):
        if self.state_exc is not None:
            raise self.state_exc
        return self.s

    def restart(self):
        self.restart_log.append(self.now)
        if self.restart_exc is not None:
            raise self.restart_exc
        if self.after_restart is not None:
            self.s = self.after_restart


def run_recovery(port, rec, t0, t1, step):
    t = t0
    while t < t1:
        port.now = t
        rec.poll(t)
        t += step
    return t


def test_recovery_backoff_schedule_doubles_to_30s():
    p = ScriptedPort(B.STATE_BUS_OFF)  # the bus stays broken
    r = BusOffRecovery(p)
    run_recovery(p, r, 0, 120000, 50)
    # detection at 0; waits 100, 200, 400 ... 25600, then 30000 each
    assert p.restart_log == [100, 300, 700, 1500, 3100, 6300, 12700, 25500, 51100, 81100, 111100]
    assert r.faults == 1 and r.restarts == 11 and r.recoveries == 0
    assert r.delay_ms == 30000 and r.in_fault
    assert r.due_in(111150) == 29950


def test_recovery_resets_after_a_stable_active_period():
    p = ScriptedPort(B.STATE_BUS_OFF)
    p.after_restart = B.STATE_ACTIVE
    r = BusOffRecovery(p, min_ms=100, max_ms=30000, stable_ms=30000)
    run_recovery(p, r, 0, 1000, 10)
    assert p.restart_log == [100] and r.recoveries == 1 and r.delay_ms == 200
    # bus-off again soon after: the next restart waits the doubled delay
    p.s = B.STATE_BUS_OFF
    run_recovery(p, r, 1000, 2000, 10)
    assert p.restart_log == [100, 1200] and r.recoveries == 2 and r.delay_ms == 400
    # ACTIVE for less than stable_ms: no reset; WARNING interrupts the period
    run_recovery(p, r, 2000, 20000, 10)
    p.s = B.STATE_WARNING
    run_recovery(p, r, 20000, 21000, 10)
    p.s = B.STATE_ACTIVE
    run_recovery(p, r, 21000, 50000, 10)
    assert r.delay_ms == 400
    run_recovery(p, r, 50000, 52000, 10)
    assert r.delay_ms == 100  # 30 s of uninterrupted ACTIVE since 21000
    p.s = B.STATE_BUS_OFF
    run_recovery(p, r, 52000, 53000, 10)
    assert p.restart_log[-1] == 52100


def test_recovery_never_raises_and_counts_errors():
    p = ScriptedPort(B.STATE_BUS_OFF)
    p.restart_exc = OSError(19)
    r = BusOffRecovery(p)
    run_recovery(p, r, 0, 2000, 10)
    assert r.restarts == 4 and r.restart_errors == 4
    p.state_exc = OSError(5)
    run_recovery(p, r, 2000, 4000, 10)  # state() failing = STOPPED: still handled
    assert r.state_errors > 0 and r.in_fault
    p.state_exc = None
    p.restart_exc = None
    p.after_restart = B.STATE_ACTIVE
    run_recovery(p, r, 4000, 20000, 10)
    assert r.recoveries == 1 and r.state == B.STATE_ACTIVE and not r.in_fault


def test_recovery_handles_stopped_unless_disabled():
    p = ScriptedPort(B.STATE_STOPPED)
    r = BusOffRecovery(p, recover_stopped=False)
    run_recovery(p, r, 0, 1000, 10)
    assert p.restart_log == [] and not r.in_fault
    r = BusOffRecovery(p)
    p.after_restart = B.STATE_ACTIVE
    run_recovery(p, r, 0, 1000, 10)
    assert p.restart_log == [100] and r.recoveries == 1


def test_recovery_across_the_ticks_wrap():
    p = ScriptedPort(B.STATE_BUS_OFF)
    r = BusOffRecovery(p)
    t = 0x3FFFFFFF - 120
    for _ in range(100):
        p.now = t
        r.poll(t)
        t = (t + 10) & 0x3FFFFFFF  # time.ticks_ms() on the ESP32
    # detection at 2**30 - 121, restarts 100, 300 and 700 ms later (the last two after the wrap)
    start = 0x3FFFFFFF - 120
    assert p.restart_log == [(start + 100) & 0x3FFFFFFF, (start + 300) & 0x3FFFFFFF, (start + 700) & 0x3FFFFFFF]
    assert p.restart_log[1] == 179


def test_recovery_counts_a_self_recovering_controller():
    p = ScriptedPort(B.STATE_BUS_OFF)
    r = BusOffRecovery(p)
    r.poll(0)
    p.s = B.STATE_ACTIVE  # e.g. the MCP2515 after 128 x 11 recessive bits
    r.poll(50)
    assert r.restarts == 0 and r.recoveries == 1 and r.faults == 1


# ---------------------------------------------------------------------------
# LoopbackPort


def test_loopback_pair_delivers_both_ways():
    a, b = loopback_pair()
    assert a.state() == B.STATE_ACTIVE
    assert a.send(0x351, b"\x10\x02\x20\x03\x90\x01\x00\x02") == 0
    r = b.recv()
    assert r[0] == 0x351 and bytes(r[1]) == b"\x10\x02\x20\x03\x90\x01\x00\x02" and r[2] == 0 and r[3] == 0
    assert a.recv() is None  # a node does not receive its own frames
    assert b.recv() is None
    assert b.send(0x305, b"\x00" * 8) is not None
    arg = new_recv_list()
    got = a.recv(arg)
    assert got is arg and arg[0] == 0x305 and len(arg[1]) == 8
    a.send(0x18FF50E5, b"\x01\x02\x03", B.FLAG_EXT_ID)
    assert b.recv(arg) is arg
    assert arg[0] == 0x18FF50E5 and arg[2] == B.FLAG_EXT_ID and bytes(arg[1]) == b"\x01\x02\x03"
    a.send(0x123, b"\xaa\xbb", B.FLAG_RTR)
    b.recv(arg)
    assert arg[0] == 0x123 and arg[2] == B.FLAG_RTR and bytes(arg[1]) == b"\x00\x00"
    a.send(0x7FF, b"")
    b.recv(arg)
    assert arg[0] == 0x7FF and len(arg[1]) == 0
    a.send(0x100, b"\x42")
    b.recv(arg)  # the list is reused after a short frame
    assert len(arg[1]) == 1 and arg[1][0] == 0x42


def test_loopback_three_ports_on_one_bus():
    bus = LoopbackBus()
    a = LoopbackPort(bus)
    b = LoopbackPort(bus)
    c = LoopbackPort(bus)
    a.send(0x35E, b"PYLON   ")
    assert bytes(b.recv()[1]) == b"PYLON   " and bytes(c.recv()[1]) == b"PYLON   "
    assert bus.frames == 1


def test_loopback_validates_arguments():
    a, b = loopback_pair()
    assert raises(ValueError, a.send, 0x800, b"")
    assert raises(ValueError, a.send, 0x100, b"123456789")
    assert raises(ValueError, a.recv, [0, memoryview(bytearray(4)), 0, 0]) is False  # nothing received yet
    b.send(0x100, b"\x01")
    assert raises(ValueError, a.recv, [0, memoryview(bytearray(4)), 0, 0])


def test_loopback_no_ack_ends_error_passive_with_a_full_queue():
    a, b = loopback_pair()
    a.bus.set_fault(FAULT_NO_ACK)  # inverter switched off
    states = []
    for i in range(8):
        assert a.send(0x351 + i, b"\x00" * 8) == i  # each send: one more failed attempt
        states.append(a.state())
    assert a.tec == 64
    assert a.send(0x360, b"") is None  # 8 TX buffers busy: never blocks
    a.tick(20)
    assert a.tec == 128 and a.state() == B.STATE_PASSIVE  # ACK errors stop at error-passive
    assert states[:4] == [B.STATE_ACTIVE] * 4
    c = a.get_counters()
    assert c[:6] == [128, 0, 1, 1, 0, 8]
    assert b.recv() is None
    a.bus.set_fault(FAULT_NONE)  # inverter back
    a.tick()
    ids = []
    r = b.recv()
    while r is not None:
        ids.append(r[0])
        r = b.recv()
    assert ids == [0x351 + i for i in range(8)]  # arbitration order
    assert a.tec == 120 and a.state() == B.STATE_WARNING
    for _ in range(30):
        a.send(0x351, b"\x00")
        b.recv()
    assert a.state() == B.STATE_ACTIVE and a.get_counters()[5] == 0


def test_loopback_alone_or_with_a_stopped_peer_gets_no_ack():
    lone = LoopbackPort()
    lone.send(0x351, b"\x00")
    lone.tick(40)
    assert lone.state() == B.STATE_PASSIVE and lone.tec == 128
    a, b = loopback_pair()
    b.deinit()
    assert b.state() == B.STATE_STOPPED
    a.send(0x351, b"\x00")
    assert a.tec == 8 and a.get_counters()[5] == 1
    b.restart()
    a.tick()
    assert b.recv()[0] == 0x351 and a.tec == 7


def test_loopback_same_id_rule():
    a, b = loopback_pair()
    a.bus.set_fault(FAULT_NO_ACK)
    assert a.send(0x355, b"\x01") == 0
    assert a.send(0x355, b"\x02") is None  # same id queued: order not guaranteed
    assert a.send(0x355, b"\x02", B.FLAG_EXT_ID) == 1  # other id type
    assert a.send(0x355, b"\x03", B.FLAG_UNORDERED) == 2
    a.bus.set_fault(FAULT_NONE)
    a.tick()
    got = []
    r = b.recv()
    while r is not None:
        got.append((r[0], r[2], bytes(r[1])))
        r = b.recv()
    # extended id 0x00000355 has base id 0: it wins arbitration over standard 0x355
    assert got == [(0x355, B.FLAG_EXT_ID, b"\x02"), (0x355, 0, b"\x01"), (0x355, 0, b"\x03")]


def test_loopback_bus_error_leads_to_bus_off_and_restart_recovers():
    a, b = loopback_pair()
    a.bus.set_fault(FAULT_BUS_ERROR)  # CANH/CANL shorted, transceiver missing ...
    a.send(0x351, b"\x00")
    a.tick(31)
    assert a.tec == 256 and a.state() == B.STATE_BUS_OFF
    assert raises(OSError, a.send, 0x355, b"\x00")
    c = a.get_counters()
    assert c[2:5] == [1, 1, 1] and c[5] == 1
    a.bus.set_fault(FAULT_NONE)
    a.tick(5)
    assert a.state() == B.STATE_BUS_OFF  # bus-off is left only through restart()
    a.restart()
    assert a.state() == B.STATE_ACTIVE
    assert a.get_counters() == [0, 0, 0, 0, 0, 0, 0, 0]  # pending TX dropped, counters zeroed
    assert a.send(0x355, b"\x01") == 0 and b.recv()[0] == 0x355


def test_loopback_with_recovery_never_crashes():
    a, b = loopback_pair()
    rec = BusOffRecovery(a)
    a.bus.set_fault(FAULT_BUS_ERROR)
    sent = refused = errors = 0
    t = 0
    while t < 10000:  # 10 s of a 100 ms application loop
        for i in range(6):
            try:
                if a.send(0x351 + i, b"\x00" * 8) is None:
                    refused += 1
                else:
                    sent += 1
            except OSError:
                errors += 1
        rec.poll(t)
        if t == 5000:
            a.bus.set_fault(FAULT_NONE)
        t += 100
    assert errors > 0 and rec.restarts >= 2 and rec.recoveries >= 1
    assert a.state() == B.STATE_ACTIVE
    n = 0
    while b.recv() is not None:
        n += 1
    assert n > 0


def test_loopback_filters():
    a, b = loopback_pair()
    b.set_filters([(0x305, 0x7FF, 0)])
    a.send(0x351, b"\x00")
    a.send(0x305, b"\x01")
    a.send(0x305, b"\x02", B.FLAG_EXT_ID)
    r = b.recv()
    assert r[0] == 0x305 and r[2] == 0 and b.recv() is None
    b.set_filters([])
    a.send(0x305, b"\x03")
    assert b.recv() is None
    b.set_filters(None)
    a.send(0x306, b"\x04")
    assert b.recv()[0] == 0x306


def test_loopback_rx_overrun_flags():
    bus = LoopbackBus()
    a = LoopbackPort(bus)
    b = LoopbackPort(bus, rx_queue_len=3)
    for i in range(5):
        a.send(0x100 + i, b"\x00")
    c = b.get_counters()
    assert c[6] == 3 and c[7] == 2
    r = b.recv()
    assert r[0] == 0x100 and r[3] == B.RECV_ERR_FULL | B.RECV_ERR_OVERRUN
    r = b.recv()
    assert r[0] == 0x101 and r[3] == 0
    b.recv()
    assert b.recv() is None


def test_loopback_deinit_and_restart():
    a, b = loopback_pair()
    a.deinit()
    assert a.state() == B.STATE_STOPPED
    assert raises(OSError, a.send, 0x351, b"")
    assert raises(OSError, a.recv)
    a.restart()
    assert a.state() == B.STATE_ACTIVE and a.send(0x351, b"") == 0


# ---------------------------------------------------------------------------
# machine.CAN backend (fake class with the PR #19461 / mainline API)


class FakeCAN:
    STATE_STOPPED = 0
    STATE_ACTIVE = 1
    STATE_WARNING = 2
    STATE_PASSIVE = 3
    STATE_BUS_OFF = 4
    FLAG_RTR = 1
    FLAG_EXT_ID = 2
    FLAG_UNORDERED = 16
    RECV_ERR_FULL = 1
    RECV_ERR_OVERRUN = 2
    TX_QUEUE_LEN = 8
    FILTERS_MAX = 4

    def __init__(self, can_id, bitrate, mode=0):
        self.log = [("new", can_id, bitrate, mode)]
        self.s = self.STATE_ACTIVE
        self.rx = None

    def init(self, bitrate, mode=0):
        self.log.append(("init", bitrate, mode))

    def send(self, can_id, data, flags=0):
        self.log.append(("send", can_id, bytes(data), flags))
        return 0

    def cancel_send(self, idx):
        self.log.append(("cancel", idx))

    def recv(self, arg=None):
        if self.rx is None:
            return None
        if arg is None:
            arg = [0, None, 0, 0]
        arg[0], arg[1], arg[2], arg[3] = self.rx
        self.rx = None
        return arg

    def state(self):
        return self.s

    def restart(self):
        self.log.append(("restart",))

    def set_filters(self, f):
        self.log.append(("filters", f))

    def get_counters(self, lst=None):
        if lst is None:
            lst = [0] * 8
        for i in range(8):
            lst[i] = i
        lst[7] = None  # a controller without an overrun counter
        return lst

    def deinit(self):
        self.log.append(("deinit",))


class OddCAN(FakeCAN):
    # a build whose constants differ from ours: the backend translates
    STATE_ACTIVE = 5
    STATE_BUS_OFF = 7
    FLAG_EXT_ID = 4
    FLAG_RTR = 8
    RECV_ERR_OVERRUN = 16


def test_machine_can_backend_passes_through():
    p = MachineCanPort(1, 500000, can_cls=FakeCAN)
    can = p._can
    assert can.log == [("new", 1, 500000, 0), ("filters", None)]
    assert p.tx_queue_len == 8 and p.filters_max == 4
    assert p.send(0x351, b"\x01", B.FLAG_EXT_ID) == 0
    assert can.log[-1] == ("send", 0x351, b"\x01", B.FLAG_EXT_ID)
    assert p.state() == B.STATE_ACTIVE
    can.s = FakeCAN.STATE_BUS_OFF
    assert p.state() == B.STATE_BUS_OFF
    assert p.get_counters() == [0, 1, 2, 3, 4, 5, 6, 0]
    lst = [9] * 8
    assert p.get_counters(lst) is lst and lst[7] == 0
    p.restart()
    assert can.log[-1] == ("restart",)
    p.set_filters([(0x305, 0x7FF, 0)])
    assert can.log[-1] == ("filters", ((0x305, 0x7FF, 0),))
    p.deinit()
    assert p.state() == B.STATE_STOPPED
    p.restart()  # after deinit: init() again, filters re-applied
    assert can.log[-2:] == [("init", 500000, 0), ("filters", ((0x305, 0x7FF, 0),))]
    assert p.state() == B.STATE_BUS_OFF


def test_machine_can_backend_translates_other_constants():
    p = MachineCanPort(1, 250000, can_cls=OddCAN)
    can = p._can
    can.s = OddCAN.STATE_ACTIVE
    assert p.state() == B.STATE_ACTIVE
    can.s = OddCAN.STATE_BUS_OFF
    assert p.state() == B.STATE_BUS_OFF
    p.send(0x18FF50E5, b"", B.FLAG_EXT_ID | B.FLAG_RTR)
    assert can.log[-1] == ("send", 0x18FF50E5, b"", 4 | 8)
    can.rx = (0x123, memoryview(b"\x01"), 4, 16 | 1)
    r = p.recv(new_recv_list())
    assert r[0] == 0x123 and r[2] == B.FLAG_EXT_ID and r[3] == B.RECV_ERR_OVERRUN | B.RECV_ERR_FULL
    p.set_filters([(0x100, 0x7FF, B.FLAG_EXT_ID)])
    assert can.log[-1] == ("filters", [(0x100, 0x7FF, 4)])


def test_machine_can_backend_without_machine_module():
    try:
        MachineCanPort(1, 500000)
    except ImportError:
        return  # host: no machine module, or no machine.CAN
    except AttributeError:
        return
    raise AssertionError("the host has no machine.CAN: should have raised ImportError or AttributeError")


# ---------------------------------------------------------------------------
# MCP2515 driver against the register-level model


def chip(xtal=8000000, bitrate=500000, mode=B.MODE_NORMAL):
    m = M.MCP2515Model(xtal)
    d = MCP2515(m.spi, m.cs, bitrate, xtal, mode, sleep_ms=lambda ms: None)
    return m, d


def test_bit_timing_values():
    # docs/design.md "CAN port": 500 kbit/s, 75 % sample point
    assert bit_timing(8000000, 500000) == (0x00, 0x91, 0x01)
    assert bit_timing(16000000, 500000) == (0x01, 0x91, 0x01)
    assert bit_timing(8000000, 250000) == (0x01, 0x91, 0x01)
    assert bit_timing(8000000, 125000) == (0x03, 0x91, 0x01)
    assert bit_timing(16000000, 250000) == (0x03, 0x91, 0x01)
    assert bit_timing(16000000, 125000) == (0x07, 0x91, 0x01)
    assert raises(ValueError, bit_timing, 8000000, 1000000)
    assert raises(ValueError, bit_timing, 8000000, 333333)


def test_init_programs_the_chip_8_and_16_mhz():
    for xtal, cnf1 in ((8000000, 0x00), (16000000, 0x01)):
        for bitrate in (500000, 250000, 125000):
            m, d = chip(xtal, bitrate)
            r = m.regs
            if bitrate == 500000:
                assert (r[M.CNF1], r[M.CNF2], r[M.CNF3]) == (cnf1, 0x91, 0x01)
            # the model recomputes the bit rate from CNF1..3 (datasheet formulas)
            assert m.timing() == (bitrate, 750, 8, True)
            assert m.mode() == M.MODE_NORMAL
            assert m.resets == 1 and m.ignored_writes == 0
            assert r[M.CANINTE] == 0x03
            assert r[M.RXB0CTRL] & 0x64 == 0x64 and r[M.RXB1CTRL] & 0x60 == 0x60  # accept all, rollover
            assert d.state() == B.STATE_ACTIVE and d.tx_queue_len == 3


def test_init_without_a_chip_raises_oserror():
    m = M.MCP2515Model()
    m.present = False
    assert raises(OSError, MCP2515, m.spi, m.cs, 500000, 8000000, B.MODE_NORMAL, lambda ms: None)


def test_send_puts_the_right_frames_on_the_bus():
    m, d = chip()
    assert d.send(0x351, b"\x10\x02\x20\x03\x90\x01\x00\x02") in (0, 1, 2)
    assert d.send(0x35E, b"PYLON   ") is not None
    assert d.send(0x18FF50E5, b"\xde\xad", B.FLAG_EXT_ID) is not None
    assert d.send(0x123, b"\x00\x00\x00", B.FLAG_RTR) is not None
    assert d.send(0x7FF, b"") is not None
    assert m.sent == [
        (0x351, 0, 0, b"\x10\x02\x20\x03\x90\x01\x00\x02"),
        (0x35E, 0, 0, b"PYLON   "),
        (0x18FF50E5, 1, 0, b"\xde\xad"),
        (0x123, 0, 1, b""),
        (0x7FF, 0, 0, b""),
    ]
    # raw registers of the last frame: SIDH, SIDL, EID8, EID0, DLC
    assert bytes(m.last_tx[:5]) == b"\xff\xe0\x00\x00\x00"
    assert m.ignored_writes == 0
    assert raises(ValueError, d.send, 0x800, b"")
    assert raises(ValueError, d.send, 0x100, b"123456789")


def test_full_tx_buffers_return_none():
    m, d = chip()
    m.ack = False  # nobody acknowledges: frames stay pending
    assert [d.send(0x351 + i, b"\x00") for i in range(3)] == [0, 1, 2]
    assert d.send(0x355, b"\x00") is None
    assert d.get_counters()[5] == 3
    assert m.sent == []
    m.complete_tx()
    assert len(m.sent) == 3 and d.get_counters()[5] == 0
    assert d.send(0x355, b"\x00") == 0
    # the same-id rule: an id already pending is refused unless unordered
    assert d.send(0x356, b"\x01") == 1
    assert d.send(0x356, b"\x02") is None
    assert d.send(0x356, b"\x02", B.FLAG_UNORDERED) == 2
    assert m.ignored_writes == 0


def test_receive_from_rxb0_and_rxb1():
    m, d = chip()
    assert d.recv() is None
    assert m.inject(0x305, b"\x01\x02\x03\x04\x05\x06\x07\x08") == 0
    assert m.inject(0x18FF50E5, b"\xaa", ext=True) == 1  # RXB0 full -> rolls over into RXB1
    arg = new_recv_list()
    r = d.recv(arg)
    assert r is arg and arg[0] == 0x305 and bytes(arg[1]) == b"\x01\x02\x03\x04\x05\x06\x07\x08"
    assert arg[2] == 0 and arg[3] == B.RECV_ERR_FULL  # both buffers were full
    r = d.recv(arg)
    assert arg[0] == 0x18FF50E5 and arg[2] == B.FLAG_EXT_ID and bytes(arg[1]) == b"\xaa" and arg[3] == 0
    assert d.recv(arg) is None
    assert m.inject(0x123, ext=False, rtr=True, dlc=4) == 0
    r = d.recv()
    assert r[0] == 0x123 and r[2] == B.FLAG_RTR and bytes(r[1]) == b"\x00" * 4
    assert m.inject(0x1ABCDEF0, b"", ext=True, rtr=True, dlc=2) == 0
    r = d.recv()
    assert r[0] == 0x1ABCDEF0 and r[2] == B.FLAG_EXT_ID | B.FLAG_RTR and len(r[1]) == 2
    assert m.regs[M.CANINTF] & 3 == 0  # READ RX BUFFER cleared RXnIF


def test_receive_overflow_is_reported():
    m, d = chip()
    assert m.inject(0x301, b"\x01") == 0
    assert m.inject(0x302, b"\x02") == 1
    assert m.inject(0x303, b"\x03") == -2  # lost: both buffers full
    r = d.recv()
    assert r[0] == 0x301 and r[3] == B.RECV_ERR_OVERRUN | B.RECV_ERR_FULL
    assert d.get_counters()[7] == 1
    assert m.regs[M.EFLG] & 0xC0 == 0  # the driver cleared RXnOVR
    r = d.recv()
    assert r[0] == 0x302 and r[3] == 0


def test_hardware_filters_and_masks():
    m, d = chip()
    d.set_filters([(0x305, 0x7FF, 0)])
    assert m.mode() == M.MODE_NORMAL and m.ignored_writes == 0
    assert m.inject(0x351, b"\x00") == -1  # rejected by the chip itself
    assert m.inject(0x305, b"\x00\x00") == 0
    assert d.recv()[0] == 0x305
    d.set_filters([(0x305, 0x7FF, 0), (0x306, 0x7FF, 0), (0x300, 0x700, 0)])  # two masks
    assert m.inject(0x307, b"") == 1  # 0x3xx via RXB1's mask
    assert m.inject(0x405, b"") == -1
    assert d.recv()[0] == 0x307
    d.set_filters([(0x18FF50E5, 0x1FFFFFFF, B.FLAG_EXT_ID)])  # extended: software only
    assert m.inject(0x305, b"") == 0  # the chip takes everything ...
    assert m.inject(0x18FF50E5, b"\x01", ext=True) == 1
    r = d.recv()  # ... the driver drops what the filters do not want
    assert r[0] == 0x18FF50E5 and d.recv() is None
    d.set_filters([])
    m.inject(0x000, b"")
    m.inject(0x305, b"")
    assert d.recv() is None
    d.set_filters(None)
    assert m.inject(0x123, b"\x01", ext=True) == 0 and d.recv()[0] == 0x123
    assert m.ignored_writes == 0


def test_error_states_and_restart():
    m, d = chip()
    m.set_error_counters(96, 0)
    assert d.state() == B.STATE_WARNING
    m.set_error_counters(130, 0)
    assert d.state() == B.STATE_PASSIVE
    m.set_error_counters(0, 128)
    assert d.state() == B.STATE_PASSIVE
    m.ack = False
    d.send(0x351, b"\x00")
    m.force_bus_off()
    assert d.state() == B.STATE_BUS_OFF
    assert raises(OSError, d.send, 0x355, b"\x00")
    c = d.get_counters()
    assert c[2:5] == [1, 1, 1] and c[5] == 1
    m.ack = True
    d.restart()
    assert m.resets == 2 and d.state() == B.STATE_ACTIVE
    assert d.get_counters() == [0, 0, 0, 0, 0, 0, 0, 0]  # pending frame dropped by the reset
    assert m.sent == []
    assert d.send(0x355, b"\x01") is not None and m.sent[-1][0] == 0x355


def test_no_ack_stays_error_passive():
    m, d = chip()
    m.ack = False
    d.send(0x351, b"\x00")
    m.no_ack_attempts(40)
    assert m.regs[M.TEC] == 128 and d.state() == B.STATE_PASSIVE
    m.bus_error_attempts(16)
    assert d.state() == B.STATE_BUS_OFF


def test_chip_leaves_bus_off_by_itself():
    m, d = chip()
    m.force_bus_off()
    assert d.state() == B.STATE_BUS_OFF
    m.bus_off_recovery()
    assert d.state() == B.STATE_ACTIVE and d.get_counters()[4] == 1


def test_chip_reset_or_loss_shows_as_stopped_and_recovery_restores_it():
    m, d = chip()
    rec = BusOffRecovery(d)
    assert rec.poll(0) == B.STATE_ACTIVE
    m.power_on()  # brown-out of the MCP2515 alone: configuration mode, CNF lost
    assert d.state() == B.STATE_STOPPED
    t = 10
    while t < 1000 and rec.poll(t) != B.STATE_ACTIVE:
        t += 10
    assert rec.restarts == 1 and rec.recoveries == 1 and m.mode() == M.MODE_NORMAL
    m.present = False  # SPI wiring lost
    assert d.state() == B.STATE_STOPPED
    while t < 3000:
        rec.poll(t)
        t += 10
    assert rec.restart_errors >= 2 and rec.in_fault
    m.present = True
    while t < 60000 and rec.poll(t) != B.STATE_ACTIVE:
        t += 10
    assert d.state() == B.STATE_ACTIVE
    assert d.send(0x351, b"\x00") is not None and m.sent[-1][0] == 0x351


def test_loopback_mode_receives_own_frames():
    m, d = chip(mode=B.MODE_LOOPBACK)
    assert m.mode() == M.MODE_LOOPBACK
    d.send(0x351, b"\x01\x02")
    r = d.recv()
    assert r[0] == 0x351 and bytes(r[1]) == b"\x01\x02" and m.sent == []


def test_deinit_takes_the_chip_off_the_bus():
    m, d = chip()
    d.deinit()
    assert m.mode() == M.MODE_CONFIG and d.state() == B.STATE_STOPPED
    assert raises(OSError, d.send, 0x351, b"")
    d.restart()
    assert d.state() == B.STATE_ACTIVE


# ---------------------------------------------------------------------------
# no allocation in the steady state (heap locked; MemoryError on any allocation)

_PAYLOAD = b"\x10\x02\x20\x03\x90\x01\x00\x02"


def _mcp_cycle(d, m, arg, lst):
    n = 0
    for i in range(4):
        m.inject(0x305, _PAYLOAD)
        r = d.recv(arg)
        n += r[0] + len(r[1])
        if d.send(0x351 + i, _PAYLOAD) is None:
            n += 1000
        if d.recv(arg) is not None:
            n += 1000
    n += d.state()
    d.get_counters(lst)
    return n + lst[5]


def test_mcp2515_send_recv_allocate_nothing():
    m, d = chip()
    m.record = False
    arg = new_recv_list()
    lst = [0] * 8
    _mcp_cycle(d, m, arg, lst)  # warm-up: recv views of this list are made once
    n = run_locked(_mcp_cycle, d, m, arg, lst)
    assert n == 4 * (0x305 + 8) + B.STATE_ACTIVE
    assert m.tx_count == 8 and bytes(m.last_tx[4:13]) == b"\x08" + _PAYLOAD


def _loop_cycle(a, b, arg, lst):
    n = 0
    for i in range(6):
        if a.send(0x351 + i, _PAYLOAD) is None:
            n += 1000
        r = b.recv(arg)
        n += r[0] + len(r[1])
    n += a.state() + b.state()
    a.get_counters(lst)
    return n + lst[5]


def test_loopback_send_recv_allocate_nothing():
    a, b = loopback_pair()
    arg = new_recv_list()
    lst = [0] * 8
    _loop_cycle(a, b, arg, lst)
    n = run_locked(_loop_cycle, a, b, arg, lst)
    assert n == sum([0x351 + i + 8 for i in range(6)]) + 2


def test_nocan_stands_in_until_the_controller_appears():
    from canport.nocan import NoCan
    attempts = []

    def build():
        attempts.append(1)
        if len(attempts) < 3:
            raise OSError(B.ENODEV)  # no MCP2515 answering yet
        return LoopbackPort()

    can = NoCan(build)
    assert can.state() == B.STATE_STOPPED and can.recv(new_recv_list()) is None
    assert raises(OSError, can.send, 0x351, b"\x00" * 8)
    assert can.get_counters() == [0] * 8
    rec = BusOffRecovery(can, min_ms=100, max_ms=400)
    t = 0
    for _ in range(50):  # recovery keeps calling restart() with back-off until the port exists
        rec.poll(t)
        t += 50
        if can.port is not None:
            break
    assert can.port is not None and len(attempts) == 3
    assert can.state() == B.STATE_ACTIVE
    assert can.send(0x351, b"\x01" * 8) is not None


def test_mcp2515_cancel_send_withdraws_a_frame_nobody_acknowledged():
    m, d = chip()
    m.ack = False
    slot = d.send(0x351, b"\x01" * 8)
    assert slot is not None and m.regs[M.TXB_CTRL[slot]] & M.TXREQ
    d.cancel_send(slot)
    assert not m.regs[M.TXB_CTRL[slot]] & M.TXREQ
    m.complete_tx()
    assert m.sent == []  # withdrawn, never on the bus
    assert raises(ValueError, d.cancel_send, 3)


def test_soft_port_cancel_send_drops_the_pending_frame():
    a, b = loopback_pair()
    a.bus.set_fault(FAULT_NO_ACK)
    slot = a.send(0x351, b"\x02" * 8)
    a.cancel_send(slot)
    a.bus.set_fault(FAULT_NONE)
    assert b.recv(new_recv_list()) is None


def test_machine_can_port_passes_cancel_send_through():
    p = MachineCanPort(1, 500000, can_cls=FakeCAN)
    p.cancel_send(5)
    assert p._can.log[-1] == ("cancel", 5)
