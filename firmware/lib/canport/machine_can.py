# CAN port backend on machine.CAN (interface: canport/base.py): the ESP32's
# TWAI controller in a firmware built with PR micropython#19461 (a board
# definition with MICROPY_HW_ENABLE_CAN 1 and the TX/RX GPIOs compiled in:
# CAN(id, bitrate), no pin arguments), or any port with mainline machine.CAN.
#
# machine is imported inside the constructor, so this module imports on the
# host; tests pass a fake class as can_cls.  Our constants have the values of
# extmod/machine_can_port.h, but the CAN class's own constants are read at
# construction and translated when they differ.  get_counters() items a
# controller does not support (None in machine.CAN) read as 0.

from canport.base import (
    FLAG_EXT_ID,
    FLAG_RTR,
    FLAG_UNORDERED,
    MODE_NORMAL,
    RECV_ERR_FULL,
    RECV_ERR_OVERRUN,
    STATE_ACTIVE,
    STATE_BUS_OFF,
    STATE_PASSIVE,
    STATE_STOPPED,
    STATE_WARNING,
    normalize_filters,
)


def _bit(cls, name, default):
    v = getattr(cls, name, None)
    return default if v is None else v


class MachineCanPort:
    def __init__(self, can_id=1, bitrate=500000, mode=MODE_NORMAL, can_cls=None, filters_max=None):
        if can_cls is None:
            from machine import CAN as can_cls  # noqa: N813
        self._cls = can_cls
        self.can_id = can_id
        self.bitrate = bitrate
        self._mode = mode  # MODE_* values are machine.CAN's
        self.tx_queue_len = _bit(can_cls, "TX_QUEUE_LEN", 1)
        self.filters_max = filters_max if filters_max is not None else _bit(can_cls, "FILTERS_MAX", 1)
        # their state value -> ours (values 0..7)
        smap = bytearray(8)
        for name, ours in (
            ("STATE_STOPPED", STATE_STOPPED),
            ("STATE_ACTIVE", STATE_ACTIVE),
            ("STATE_WARNING", STATE_WARNING),
            ("STATE_PASSIVE", STATE_PASSIVE),
            ("STATE_BUS_OFF", STATE_BUS_OFF),
        ):
            v = _bit(can_cls, name, ours)
            if 0 <= v < 8:
                smap[v] = ours
        self._smap = smap
        self._f_ext = _bit(can_cls, "FLAG_EXT_ID", FLAG_EXT_ID)
        self._f_rtr = _bit(can_cls, "FLAG_RTR", FLAG_RTR)
        self._f_unord = _bit(can_cls, "FLAG_UNORDERED", FLAG_UNORDERED)
        self._e_full = _bit(can_cls, "RECV_ERR_FULL", RECV_ERR_FULL)
        self._e_ovr = _bit(can_cls, "RECV_ERR_OVERRUN", RECV_ERR_OVERRUN)
        self._same = (
            self._f_ext == FLAG_EXT_ID
            and self._f_rtr == FLAG_RTR
            and self._f_unord == FLAG_UNORDERED
            and self._e_full == RECV_ERR_FULL
            and self._e_ovr == RECV_ERR_OVERRUN
        )
        self._filters = None
        self._can = can_cls(can_id, bitrate) if mode == MODE_NORMAL else can_cls(can_id, bitrate, mode)
        self._stopped = False
        self._state_fn = getattr(self._can, "state", None) or self._can.get_state
        self._can.set_filters(None)  # machine.CAN receives nothing before set_filters()

    def _their_flags(self, flags):
        if self._same:
            return flags
        f = 0
        if flags & FLAG_EXT_ID:
            f |= self._f_ext
        if flags & FLAG_RTR:
            f |= self._f_rtr
        if flags & FLAG_UNORDERED:
            f |= self._f_unord
        return f

    def send(self, can_id, data, flags=0):
        return self._can.send(can_id, data, self._their_flags(flags))

    def cancel_send(self, idx):
        self._can.cancel_send(idx)

    def recv(self, arg=None):
        r = self._can.recv(arg)
        if r is None or self._same:
            return r
        f = r[2]
        r[2] = (FLAG_EXT_ID if f & self._f_ext else 0) | (FLAG_RTR if f & self._f_rtr else 0)
        e = r[3]
        r[3] = (RECV_ERR_FULL if e & self._e_full else 0) | (RECV_ERR_OVERRUN if e & self._e_ovr else 0)
        return r

    def state(self):
        if self._stopped:
            return STATE_STOPPED
        s = self._state_fn()
        if 0 <= s < 8:
            return self._smap[s]
        return STATE_STOPPED

    def restart(self):
        if self._stopped:
            if self._mode == MODE_NORMAL:
                self._can.init(self.bitrate)
            else:
                self._can.init(self.bitrate, self._mode)
            self._stopped = False
            self._apply_filters()
        else:
            self._can.restart()

    def _apply_filters(self):
        f = self._filters
        if f is None or self._same:
            self._can.set_filters(f)
        else:
            self._can.set_filters([(x[0], x[1], self._their_flags(x[2])) for x in f])

    def set_filters(self, filters):
        self._filters = normalize_filters(filters, self.filters_max)
        self._apply_filters()

    def get_counters(self, lst=None):
        lst = self._can.get_counters(lst) if lst is not None else self._can.get_counters()
        for i in range(8):
            if lst[i] is None:
                lst[i] = 0
        return lst

    def deinit(self):
        self._stopped = True
        self._can.deinit()
