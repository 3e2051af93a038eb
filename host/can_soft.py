# Host backends of the CAN port (interface: canport/base.py), for the
# whole-firmware simulation and the tests.  Both run under CPython and the
# MicroPython unix port (and compile for the ESP32: SlcanSocketPort also works
# over WiFi there, as a debugging aid).
#
#   LoopbackPort     in-memory CAN bus: frames sent on one port are received
#                    by the others; faults can be injected (no ACK, bus error).
#   SlcanSocketPort  the DEVICE side of the SLCAN (Lawicel) ASCII protocol on
#                    a listening TCP socket: python-can's "slcan" interface
#                    with channel "socket://127.0.0.1:PORT" connects to it,
#                    receives the frames we send and sends frames to us.
#                    (Defined in canport/slcan.py, loaded on first access.)
#
# Both share SoftPort, a small CAN controller model: TX buffers with the
# machine.CAN queue rules, an RX ring, filters, and fault confinement
# (ISO 11898-1): a failed transmission adds 8 to TEC, a successful one
# subtracts 1; TEC or REC >= 96 -> WARNING, >= 128 -> PASSIVE, TEC >= 256 ->
# BUS_OFF.  A missing acknowledgement does not raise TEC beyond error-passive
# (the ISO exception for an error-passive transmitter), so a node alone on
# the bus ends in PASSIVE with its TX queue full, never in BUS_OFF; bus-off
# needs real bus errors (FAULT_BUS_ERROR: shorted/open bus lines, missing
# transceiver, bitrate mismatch).

from canport.base import (
    BUS_OFF_LIMIT,
    EINVAL,
    EIO,
    FLAG_EXT_ID,
    FLAG_RTR,
    FLAG_UNORDERED,
    MAX_DLC,
    PASSIVE_LIMIT,
    RECV_ERR_FULL,
    RECV_ERR_OVERRUN,
    STATE_ACTIVE,
    STATE_STOPPED,
    RecvViews,
    StateTracker,
    check_frame,
    filter_accepts,
    new_recv_list,
    normalize_filters,
    state_from_counters,
)

try:
    from micropython import const
except ImportError:
    def const(x):
        return x

FAULT_NONE = const(0)
FAULT_NO_ACK = const(1)  # nobody acknowledges: TEC -> 128 (PASSIVE), queue fills
FAULT_BUS_ERROR = const(2)  # every attempt is a bit error: TEC -> 256 (BUS_OFF)


def _arb_key(can_id, flags):
    # CAN arbitration order (lower wins): the 11-bit base id first, a
    # standard frame before an extended one with the same base id.  < 2**30.
    if flags & FLAG_EXT_ID:
        return ((can_id >> 18) << 19) | (1 << 18) | (can_id & 0x3FFFF)
    return can_id << 19


class SoftPort:
    """CAN controller model implementing the canport interface."""

    def __init__(self, tx_queue_len=8, rx_queue_len=16, filters_max=16):
        self.tx_queue_len = tx_queue_len
        self.rx_queue_len = rx_queue_len
        self.filters_max = filters_max
        self._tx_busy = bytearray(tx_queue_len)
        self._tx_id = [0] * tx_queue_len
        self._tx_flags = [0] * tx_queue_len
        self._tx_len = bytearray(tx_queue_len)
        self._tx_data = [bytearray(MAX_DLC) for _ in range(tx_queue_len)]
        self._rx_id = [0] * rx_queue_len
        self._rx_flags = [0] * rx_queue_len
        self._rx_len = bytearray(rx_queue_len)
        self._rx_data = [bytearray(MAX_DLC) for _ in range(rx_queue_len)]
        self._rx_head = 0
        self._rx_count = 0
        self._rx_lost = False
        self._filters = None
        self._views = RecvViews()
        self._trk = StateTracker()
        self.tec = 0
        self.rec = 0
        self._bus_off = False
        self._running = True
        self.n_overrun = 0
        self.tx_frames = 0  # frames that left this port (diagnostics)
        self.rx_frames = 0  # frames queued for recv()
        self._trk.note(STATE_ACTIVE)

    # -- hooks for the subclasses ------------------------------------------
    def _tx_kick(self):
        """Called after a frame was queued: try to transmit."""

    def _rx_kick(self):
        """Called before recv() looks at the RX ring."""

    # -- interface ---------------------------------------------------------
    def send(self, can_id, data, flags=0):
        n = len(data)
        check_frame(can_id, n, flags)
        if not self._running:
            raise OSError(EINVAL)
        if self._bus_off:
            raise OSError(EIO)
        free = self._free_slot(can_id, flags)
        if free < 0:
            self._tx_kick()  # time passes for the frames already queued
            return None
        buf = self._tx_data[free]
        rtr = flags & FLAG_RTR
        for k in range(n):
            buf[k] = 0 if rtr else data[k]
        self._tx_id[free] = can_id
        self._tx_flags[free] = flags & (FLAG_EXT_ID | FLAG_RTR)
        self._tx_len[free] = n
        self._tx_busy[free] = 1
        self._tx_kick()
        return free

    def cancel_send(self, idx):
        if not 0 <= idx < self.tx_queue_len:
            raise ValueError("invalid buffer index")
        self._tx_busy[idx] = 0

    def _free_slot(self, can_id, flags):
        # a free TX buffer, or -1 when all are busy or the same id is queued
        ext = flags & FLAG_EXT_ID
        busy = self._tx_busy
        free = -1
        for i in range(self.tx_queue_len):
            if busy[i]:
                if (
                    not flags & FLAG_UNORDERED
                    and self._tx_id[i] == can_id
                    and (self._tx_flags[i] & FLAG_EXT_ID) == ext
                ):
                    return -1
            elif free < 0:
                free = i
        return free

    def recv(self, arg=None):
        self._rx_kick()
        if not self._running:
            raise OSError(EINVAL)
        if self._rx_count == 0:
            return None
        if arg is None:
            arg = new_recv_list()
        out = self._views.buffer(arg)
        j = self._rx_head
        n = self._rx_len[j]
        src = self._rx_data[j]
        for k in range(n):
            out[k] = src[k]
        errors = 0
        if self._rx_count == self.rx_queue_len:
            errors |= RECV_ERR_FULL
        if self._rx_lost:
            errors |= RECV_ERR_OVERRUN
            self._rx_lost = False
        can_id = self._rx_id[j]
        flags = self._rx_flags[j]
        j += 1
        self._rx_head = 0 if j == self.rx_queue_len else j
        self._rx_count -= 1
        return self._views.finish(arg, can_id, n, flags, errors)

    def state(self):
        if not self._running:
            return STATE_STOPPED
        return self._trk.note(state_from_counters(self.tec, self.rec, self._bus_off))

    def restart(self):
        self._running = True
        self._bus_off = False
        self.tec = 0
        self.rec = 0
        self._drop_tx()
        self._trk.clear()
        self.n_overrun = 0
        self._trk.note(STATE_ACTIVE)

    def set_filters(self, filters):
        self._filters = normalize_filters(filters, self.filters_max)

    def get_counters(self, lst=None):
        if lst is None:
            lst = [0] * 8
        lst[0] = self.tec
        lst[1] = self.rec
        lst[2] = self._trk.n_warning
        lst[3] = self._trk.n_passive
        lst[4] = self._trk.n_bus_off
        lst[5] = self.tx_pending()
        lst[6] = self._rx_count
        lst[7] = self.n_overrun
        return lst

    def deinit(self):
        self._running = False
        self._drop_tx()
        self._rx_count = 0
        self._rx_lost = False
        self._trk.last = STATE_STOPPED

    # -- simulation helpers ------------------------------------------------
    def tx_pending(self):
        n = 0
        busy = self._tx_busy
        for i in range(self.tx_queue_len):
            n += busy[i]
        return n

    def set_error_counters(self, tec, rec=0):
        """Force TEC / REC (tests); tec >= 256 puts the port into bus-off."""
        self.tec = tec
        self.rec = rec
        if tec >= BUS_OFF_LIMIT:
            self._bus_off = True
        self._trk.note(state_from_counters(tec, rec, self._bus_off))

    def is_active(self):
        """Takes part in the bus (started and not bus-off)."""
        return self._running and not self._bus_off

    # -- controller internals ----------------------------------------------
    def _drop_tx(self):
        busy = self._tx_busy
        for i in range(self.tx_queue_len):
            busy[i] = 0

    def _next_tx(self):
        """Index of the pending frame that wins arbitration, or -1."""
        best = -1
        best_key = 0
        busy = self._tx_busy
        for i in range(self.tx_queue_len):
            if busy[i]:
                k = _arb_key(self._tx_id[i], self._tx_flags[i])
                if best < 0 or k < best_key:
                    best = i
                    best_key = k
        return best

    def _tx_done(self, i):
        self._tx_busy[i] = 0
        self.tx_frames += 1
        if self.tec > 0:
            self.tec -= 1
            self._trk.note(state_from_counters(self.tec, self.rec, self._bus_off))

    def _tx_error(self, ack_error):
        """One failed transmission attempt."""
        if ack_error and self.tec >= PASSIVE_LIMIT:
            return  # ISO 11898-1: error-passive transmitter, ACK error -> unchanged
        self.tec += 8
        if self.tec >= BUS_OFF_LIMIT:
            self._bus_off = True
        self._trk.note(state_from_counters(self.tec, self.rec, self._bus_off))

    def _rx_push(self, can_id, flags, data, n):
        """A frame seen on the bus; False if filtered out or lost."""
        if not self._running or self._bus_off:
            return False
        if not filter_accepts(self._filters, can_id, flags):
            return False
        if self.rec > 0:
            self.rec -= 1
        if self._rx_count == self.rx_queue_len:
            self.n_overrun += 1
            self._rx_lost = True
            return False
        j = self._rx_head + self._rx_count
        if j >= self.rx_queue_len:
            j -= self.rx_queue_len
        dst = self._rx_data[j]
        rtr = flags & FLAG_RTR
        for k in range(n):
            dst[k] = 0 if rtr else data[k]
        self._rx_id[j] = can_id
        self._rx_flags[j] = flags & (FLAG_EXT_ID | FLAG_RTR)
        self._rx_len[j] = n
        self._rx_count += 1
        self.rx_frames += 1
        return True


class LoopbackBus:
    """The wire between LoopbackPorts.  fault: FAULT_NONE, FAULT_NO_ACK (e.g.
    the inverter is off or unplugged), FAULT_BUS_ERROR (bus broken)."""

    def __init__(self):
        self.ports = []
        self.fault = FAULT_NONE
        self.frames = 0  # frames delivered on the bus

    def attach(self, port):
        self.ports.append(port)

    def set_fault(self, fault):
        self.fault = fault

    def run(self):
        """One slice of bus time.  Healthy: every pending frame of every port
        is delivered, in arbitration order.  Faulted, or no other active
        port to acknowledge: one failed attempt for each port with pending
        frames."""
        ports = self.ports
        np = len(ports)
        while True:
            tx = None
            slot = -1
            key = 0
            for i in range(np):
                p = ports[i]
                if not p.is_active():
                    continue
                j = p._next_tx()
                if j >= 0:
                    k = _arb_key(p._tx_id[j], p._tx_flags[j])
                    if tx is None or k < key:
                        tx = p
                        slot = j
                        key = k
            if tx is None:
                return
            if self.fault == FAULT_NONE:
                acked = False
                for i in range(np):
                    q = ports[i]
                    if q is not tx and q.is_active():
                        acked = True
                        break
            else:
                acked = False
            if not acked:
                ack_error = self.fault != FAULT_BUS_ERROR
                for i in range(np):
                    p = ports[i]
                    if p.is_active() and p._next_tx() >= 0:
                        p._tx_error(ack_error)
                return
            can_id = tx._tx_id[slot]
            flags = tx._tx_flags[slot]
            data = tx._tx_data[slot]
            n = tx._tx_len[slot]
            for i in range(np):
                q = ports[i]
                if q is not tx:
                    q._rx_push(can_id, flags, data, n)
            tx._tx_done(slot)
            self.frames += 1


class LoopbackPort(SoftPort):
    """A port on an in-memory LoopbackBus.  A healthy bus delivers a frame
    during send() itself; with a fault, every send() call (queued or
    refused) and every tick() is one slice of bus time: one failed
    transmission attempt per port with pending frames (TEC rises as
    described at the top)."""

    def __init__(self, bus=None, tx_queue_len=8, rx_queue_len=16):
        super().__init__(tx_queue_len, rx_queue_len)
        if bus is None:
            bus = LoopbackBus()
        self.bus = bus
        bus.attach(self)

    def _tx_kick(self):
        self.bus.run()

    def tick(self, n=1):
        """n slices of bus time (retransmissions of pending frames)."""
        for _ in range(n):
            self.bus.run()


def loopback_pair(tx_queue_len=8, rx_queue_len=16):
    """Two LoopbackPorts on one new bus: (a, b)."""
    bus = LoopbackBus()
    return (LoopbackPort(bus, tx_queue_len, rx_queue_len), LoopbackPort(bus, tx_queue_len, rx_queue_len))


def __getattr__(name):
    # SlcanSocketPort lives in canport.slcan and is loaded only when asked for
    # (saves RAM where only the loopback bus is used, e.g. the portable tests).
    if name == "SlcanSocketPort":
        from slcan import SlcanSocketPort

        return SlcanSocketPort
    raise AttributeError(name)
