# The CAN port of the firmware: one small interface with the method names of
# MicroPython's machine.CAN (docs/library/machine.CAN.rst, v1.28+; ESP32 TWAI
# in PR micropython#19461), implemented by several backends:
#
#   canport.machine_can  machine.CAN (custom ESP32 build with #19461)
#   canport.mcp2515      MCP2515 over SPI, pure MicroPython (stock firmware)
#   canport.host         LoopbackPort (in-memory bus for simulation and tests)
#   canport.slcan        SlcanSocketPort (SLCAN over TCP, for python-can on the
#                        host; also importable from canport.host)
#
# The interface every backend implements ("port"):
#
#   send(can_id, data, flags=0) -> int or None
#       Queue one classic CAN frame (len(data) <= 8; with FLAG_RTR the DLC is
#       len(data) and the bytes are ignored).  Returns the TX buffer index
#       (0 <= i < port.tx_queue_len) or None when the queue is full or a frame
#       with the same id is already queued (pass FLAG_UNORDERED to allow that).
#       Never blocks.  Raises OSError while bus-off or stopped (deinit), and
#       ValueError for an id out of range ("invalid id") or more than 8 bytes.
#   cancel_send(idx) -> None
#       Abort the frame queued in TX buffer idx (as returned by send()) if it
#       has not been transmitted yet; a no-op for a buffer that is free.
#   recv(arg=None) -> None or [can_id, data, flags, errors]
#       The next received frame that passed the filters, or None.  data is a
#       memoryview of exactly the received bytes.  With arg, a list
#       [0, memoryview(bytearray(8)), 0, 0], the list itself is filled and
#       returned and nothing is allocated: its memoryview is replaced by a
#       view of the right length onto the same 8-byte buffer (as machine.CAN
#       resizes it), so the same list can be passed again and again.
#       flags: FLAG_EXT_ID, FLAG_RTR.  errors: RECV_ERR_FULL (the receive
#       queue was full when this frame was taken), RECV_ERR_OVERRUN (frames
#       were lost since the previous recv()).
#   state() -> STATE_STOPPED | STATE_ACTIVE | STATE_WARNING | STATE_PASSIVE
#              | STATE_BUS_OFF
#       Bus-off is left only through restart() (the MCP2515 also recovers by
#       itself after 128 x 11 recessive bits; the driver then reports ACTIVE).
#   restart() -> None
#       Leave bus-off (or re-initialise after deinit() or a lost controller);
#       drops pending TX frames and zeroes the counters, as machine.CAN does.
#       May raise OSError when the controller cannot be brought up.
#   set_filters(filters) -> None
#       None: accept everything (the default); [] or (): receive nothing;
#       else an iterable of (id, mask, flags): a frame is accepted when
#       (frame_id & mask) == (id & mask) for some filter whose FLAG_EXT_ID
#       equals the frame's (and whose FLAG_RTR, when set, the frame has).
#   get_counters(lst=None) -> [TEC, REC, n_warning, n_passive, n_bus_off,
#                              tx_pending, rx_pending, n_overrun]
#       Fills and returns lst (8 items) when given.  n_warning / n_passive /
#       n_bus_off count entries into those states (as observed by the
#       backend), n_overrun counts lost received frames.
#   deinit() -> None
#       Stop taking part in the bus; state() is then STATE_STOPPED and send()
#       raises OSError until restart().
#   tx_queue_len  attribute: number of TX buffer indexes.
#
# Steady-state send() and recv(arg) allocate nothing on the MCP2515 driver and
# the LoopbackPort (heap_lock tests in host_tests/portable/test_canport.py).
#
# BusOffRecovery (below) keeps a port usable without ever raising: a missing
# bus, a shorted bus or no node acknowledging must neither crash nor reset the
# firmware (docs/charge-control.md "Pitfalls").

from compat import const, ticks_diff

# Values are those of machine.CAN (extmod/machine_can_port.h), so the
# machine.CAN backend passes them through unchanged.
STATE_STOPPED = const(0)
STATE_ACTIVE = const(1)
STATE_WARNING = const(2)
STATE_PASSIVE = const(3)
STATE_BUS_OFF = const(4)

MODE_NORMAL = const(0)
MODE_SLEEP = const(1)
MODE_LOOPBACK = const(2)
MODE_SILENT = const(3)
MODE_SILENT_LOOPBACK = const(4)

FLAG_RTR = const(1)
FLAG_EXT_ID = const(2)
FLAG_UNORDERED = const(16)

RECV_ERR_FULL = const(1)
RECV_ERR_OVERRUN = const(2)

_STD_ID_MAX = const(0x7FF)
_EXT_ID_MAX = const(0x1FFFFFFF)
MAX_DLC = const(8)

# CAN fault confinement thresholds (ISO 11898-1)
_WARNING_LIMIT = const(96)
PASSIVE_LIMIT = const(128)
BUS_OFF_LIMIT = const(256)

# errno values used for OSError (Linux / lwIP numbering)
EIO = const(5)
EINVAL = const(22)
ENODEV = const(19)


def new_recv_list():
    """A list for recv(arg): [0, memoryview(bytearray(8)), 0, 0]."""
    return [0, memoryview(bytearray(MAX_DLC)), 0, 0]


def check_frame(can_id, n, flags):
    """ValueError unless can_id fits the id type and n <= 8 (no allocation)."""
    lim = _EXT_ID_MAX if flags & FLAG_EXT_ID else _STD_ID_MAX
    if can_id < 0 or can_id > lim:
        raise ValueError("invalid id")
    if n > MAX_DLC:
        raise ValueError("data too long")


def state_from_counters(tec, rec, bus_off):
    if bus_off:
        return STATE_BUS_OFF
    if tec >= PASSIVE_LIMIT or rec >= PASSIVE_LIMIT:
        return STATE_PASSIVE
    if tec >= _WARNING_LIMIT or rec >= _WARNING_LIMIT:
        return STATE_WARNING
    return STATE_ACTIVE


def normalize_filters(filters, max_filters):
    """None, or a tuple of (id, mask, flags) tuples checked for range."""
    if filters is None:
        return None
    out = []
    for f in filters:
        if len(f) != 3:
            raise ValueError("filter items must have length 3")
        fid = f[0]
        mask = f[1]
        fl = f[2] & (FLAG_EXT_ID | FLAG_RTR)
        lim = _EXT_ID_MAX if fl & FLAG_EXT_ID else _STD_ID_MAX
        if fid < 0 or fid > lim or mask < 0 or mask > lim:
            raise ValueError("invalid id")
        out.append((fid, mask, fl))
    if len(out) > max_filters:
        raise ValueError("too many filters")
    return tuple(out)


def filter_accepts(filters, can_id, flags):
    """Software acceptance test for normalize_filters() output (no allocation)."""
    if filters is None:
        return True
    ext = flags & FLAG_EXT_ID
    for i in range(len(filters)):
        f = filters[i]
        ff = f[2]
        if (ff & FLAG_EXT_ID) != ext:
            continue
        if ff & FLAG_RTR and not flags & FLAG_RTR:
            continue
        if ((can_id ^ f[0]) & f[1]) == 0:
            return True
    return False


class StateTracker:
    """Counts entries into WARNING / PASSIVE / BUS_OFF from observed states."""

    def __init__(self):
        self.last = STATE_STOPPED
        self.n_warning = 0
        self.n_passive = 0
        self.n_bus_off = 0

    def note(self, s):
        lo = self.last
        if lo == STATE_STOPPED:
            lo = STATE_ACTIVE
        if s > lo:
            if lo < STATE_WARNING <= s:
                self.n_warning += 1
            if lo < STATE_PASSIVE <= s:
                self.n_passive += 1
            if s == STATE_BUS_OFF:
                self.n_bus_off += 1
        self.last = s
        return s

    def clear(self):
        self.n_warning = 0
        self.n_passive = 0
        self.n_bus_off = 0


def _prefix_views(v):
    # v[:0] .. v[:8]; a function of its own: a comprehension inside
    # RecvViews.buffer() would make v a closure cell, allocated on every call
    return tuple([v[:k] for k in range(MAX_DLC + 1)])


class RecvViews:
    """Fills a caller's recv list without allocating.

    The first time a list is seen, views of length 0..8 onto its 8-byte
    buffer are made (allocation once per list); afterwards recv() copies
    into that buffer and stores the view of the received length in arg[1].
    """

    def __init__(self):
        self._arg = None
        self._buf = None
        self._views = None

    def buffer(self, arg):
        """The writable 8-byte buffer behind arg[1]."""
        v = arg[1]
        n = len(v)
        views = self._views
        if arg is self._arg and n <= MAX_DLC and v is views[n]:
            return self._buf
        if n < MAX_DLC:
            raise ValueError("recv buffer needs 8 bytes")
        if not isinstance(v, memoryview):
            v = memoryview(v)
        self._views = _prefix_views(v)
        self._buf = v
        self._arg = arg
        return v

    def finish(self, arg, can_id, dlc, flags, errors):
        arg[0] = can_id
        arg[1] = self._views[dlc]
        arg[2] = flags
        arg[3] = errors
        return arg


class BusOffRecovery:
    """Brings a port back from bus-off (and, by default, from STOPPED: a
    controller that was reset or lost) with exponential back-off.

    Call poll(now_ms) regularly (e.g. once per main-loop pass) with
    time.ticks_ms().  Schedule: when a fault is first seen at t0, restart()
    is called at t0 + delay_ms; while the port stays (or falls back) in the
    fault, every further restart() waits twice as long as the previous one
    (min_ms, 2*min_ms, ... capped at max_ms, default 100 ms .. 30 s).  The
    delay drops back to min_ms only after the port has been ACTIVE without
    interruption for stable_ms.  Exceptions from state() / restart() are
    counted, never raised.

    Counters: faults (fault episodes seen), restarts (restart() calls),
    recoveries (episodes that ended with the port out of the fault),
    restart_errors, state_errors.
    """

    def __init__(self, port, min_ms=100, max_ms=30000, stable_ms=30000, recover_stopped=True):
        self.port = port
        self.min_ms = min_ms
        self.max_ms = max_ms
        self.stable_ms = stable_ms
        self.recover_stopped = recover_stopped
        self.delay_ms = min_ms
        self.state = STATE_STOPPED
        self.in_fault = False
        self.faults = 0
        self.restarts = 0
        self.recoveries = 0
        self.restart_errors = 0
        self.state_errors = 0
        self._since = 0  # fault: time of the last restart or detection
        self._wait = 0  # fault: ms from _since to the next restart
        self._ok_since = 0
        self._ok_timing = False

    def _read_state(self):
        try:
            return self.port.state()
        except Exception:  # noqa: BLE001 - a failing controller is a fault, not a crash
            self.state_errors += 1
            return STATE_STOPPED

    def _is_fault(self, s):
        return s == STATE_BUS_OFF or (s == STATE_STOPPED and self.recover_stopped)

    def poll(self, now_ms):
        """Observe the port, restart it when due; returns the port state."""
        s = self._read_state()
        if self._is_fault(s):
            self._ok_timing = False
            if not self.in_fault:
                self.in_fault = True
                self.faults += 1
                self._since = now_ms
                self._wait = self.delay_ms
            elif ticks_diff(now_ms, self._since) >= self._wait:
                self.restarts += 1
                try:
                    self.port.restart()
                except Exception:  # noqa: BLE001
                    self.restart_errors += 1
                self._since = now_ms
                d = self.delay_ms * 2
                self.delay_ms = d if d < self.max_ms else self.max_ms
                self._wait = self.delay_ms
                s = self._read_state()
                if not self._is_fault(s):
                    self._end_fault(now_ms, s)
        else:
            if self.in_fault:
                self._end_fault(now_ms, s)
            elif s == STATE_ACTIVE:
                if not self._ok_timing:
                    self._ok_timing = True
                    self._ok_since = now_ms
                elif self.delay_ms != self.min_ms and ticks_diff(now_ms, self._ok_since) >= self.stable_ms:
                    self.delay_ms = self.min_ms
            else:
                self._ok_timing = False
        self.state = s
        return s

    def _end_fault(self, now_ms, s):
        self.in_fault = False
        self.recoveries += 1
        self._ok_timing = s == STATE_ACTIVE
        self._ok_since = now_ms

    def due_in(self, now_ms):
        """ms until the next restart() while in a fault, else -1."""
        if not self.in_fault:
            return -1
        d = self._wait - ticks_diff(now_ms, self._since)
        return d if d > 0 else 0
