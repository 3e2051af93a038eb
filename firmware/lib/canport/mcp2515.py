# MCP2515 CAN controller over SPI, pure MicroPython: the CAN port backend for
# stock firmware (no machine.CAN on the ESP32 before PR micropython#19461).
# Interface: canport/base.py.
#
# spi: any object with write_readinto(wbuf, rbuf) (machine.SPI, SoftSPI, a
#      test model); mode 0 or 3, up to 10 MHz.
# cs:  chip select with value(0 / 1) (machine.Pin(.., Pin.OUT, value=1)).
#
#   spi = machine.SPI(2, baudrate=8_000_000, sck=Pin(18), mosi=Pin(13), miso=Pin(19))
#   can = MCP2515(spi, Pin(4, Pin.OUT, value=1), 500_000, xtal_hz=8_000_000)
#
# Register map, SPI instructions and bit timing rules: Microchip MCP2515
# datasheet (DS20001801).  TX through TXB0..TXB2 (LOAD TX BUFFER + RTS), RX
# from RXB0 / RXB1 (rollover enabled; READ RX BUFFER clears RXnIF), state from
# EFLG, counters from TEC / REC.  SPI buffers are allocated once: send() and
# recv(arg) allocate nothing.
#
# Behaviour worth knowing:
# * The MCP2515 has no ID-ordered TX queue: of several pending buffers (same
#   TXP priority) the highest buffer number goes first.  With one frame per
#   id per cycle on a lightly loaded bus this does not matter.
# * The chip leaves bus-off by itself after 128 x 11 recessive bits; state()
#   then reports ACTIVE again without restart().  restart() re-initialises
#   the chip (RESET instruction), which also drops pending TX frames.
# * A chip that was reset behind our back (brown-out) or is no longer
#   answering on SPI shows as STATE_STOPPED in state() (its mode or bit
#   timing registers no longer hold what init() wrote); restart() (e.g. via
#   BusOffRecovery) brings it back.
# * Error-state transitions are counted when observed by state(), send(),
#   recv() or get_counters().
# * Received frames are also checked against the filters in software, so
#   set_filters() is exact; the hardware masks/filters are programmed when
#   the filters are all standard-id ones and fit the 2 masks x (2 + 4)
#   filters of the chip, otherwise the hardware accepts everything.

from canport.base import (
    EINVAL,
    EIO,
    ENODEV,
    FLAG_EXT_ID,
    FLAG_RTR,
    FLAG_UNORDERED,
    MAX_DLC,
    MODE_LOOPBACK,
    MODE_NORMAL,
    MODE_SILENT,
    RECV_ERR_FULL,
    RECV_ERR_OVERRUN,
    STATE_ACTIVE,
    STATE_BUS_OFF,
    STATE_PASSIVE,
    STATE_STOPPED,
    STATE_WARNING,
    RecvViews,
    StateTracker,
    check_frame,
    filter_accepts,
    new_recv_list,
    normalize_filters,
)
from compat import const

# SPI instructions
_RESET = const(0xC0)
_READ = const(0x03)
_WRITE = const(0x02)
_BIT_MODIFY = const(0x05)
_READ_STATUS = const(0xA0)
_LOAD_TX = const(0x40)  # | 2 * n: TXBnSIDH
_RTS = const(0x80)  # | 1 << n
_READ_RX = const(0x90)  # | 4 * n: RXBnSIDH

# registers
_CANSTAT = const(0x0E)
_CANCTRL = const(0x0F)
_RXF0 = const(0x00)
_RXF3 = const(0x10)
_TEC = const(0x1C)
_RXM0 = const(0x20)
_CNF3 = const(0x28)
_CANINTF = const(0x2C)
_TXB0CTRL = const(0x30)  # TXBnCTRL at 0x30 + 0x10 * n
_TXREQ = const(0x08)
_EFLG = const(0x2D)
_RXB0CTRL = const(0x60)
_RXB1CTRL = const(0x70)

# CANCTRL.REQOP / CANSTAT.OPMOD
_OP_NORMAL = const(0x00)
_OP_LOOPBACK = const(0x40)
_OP_LISTEN = const(0x60)
_OP_CONFIG = const(0x80)
_OP_MASK = const(0xE0)
_CANCTRL_RESET = const(0x87)

_CANINTE_VAL = const(0x03)  # RX0IE | RX1IE: INT pin low while a frame waits
_RXM_ANY = const(0x60)  # RXBnCTRL.RXM = 11: masks/filters off
_BUKT = const(0x04)  # RXB0CTRL: roll over into RXB1 when RXB0 is full

# EFLG bits
_RX1OVR = const(0x80)
_RX0OVR = const(0x40)
_TXBO = const(0x20)
_TXEP = const(0x10)
_RXEP = const(0x08)
_EWARN = const(0x01)

# READ STATUS bits
_ST_RX0IF = const(0x01)
_ST_RX1IF = const(0x02)

# offsets in the 18-register window TEC (0x1C) .. EFLG (0x2D)
_W_CANSTAT = const(2)
_W_CNF3 = const(12)
_W_CNF2 = const(13)
_W_CNF1 = const(14)
_W_CANINTE = const(15)
_W_EFLG = const(17)
_WINDOW = const(18)

TX_QUEUE_LEN = const(3)
_BUF = const(20)


def bit_timing(xtal_hz, bitrate, sample_point=75):
    """(CNF1, CNF2, CNF3) for bitrate with a crystal of xtal_hz, SJW = 1.

    TQ = 2 * (BRP + 1) / F_osc; bit = Sync (1 TQ) + PropSeg + PS1 + PS2.  The
    fewest time quanta from 8 up that divide the clock exactly are used (8 TQ
    for 500 / 250 / 125 kbit/s with 8 or 16 MHz: 75 % sample point, CNF2 =
    0x91, CNF3 = 0x01, CNF1 = BRP = 0 / 1 / 3 at 8 MHz, 1 / 3 / 7 at 16 MHz).
    ValueError if no exact setting exists.
    """
    for ntq in range(8, 26):
        div = 2 * ntq * bitrate
        if xtal_hz % div:
            continue
        brp = xtal_hz // div - 1
        if brp > 63:
            continue
        ps2 = ntq - (sample_point * ntq + 50) // 100
        if ps2 < 2:
            ps2 = 2
        tseg1 = ntq - 1 - ps2
        prop = tseg1 // 2
        ps1 = tseg1 - prop
        if ps2 > 8 or ps1 > 8 or prop > 8 or prop < 1 or ps1 + prop < ps2:
            continue
        return (brp, 0x80 | ((ps1 - 1) << 3) | (prop - 1), ps2 - 1)
    raise ValueError("no bit timing for this bitrate and crystal")


def _eflg_state(e):
    if e & _TXBO:
        return STATE_BUS_OFF
    if e & (_TXEP | _RXEP):
        return STATE_PASSIVE
    if e & _EWARN:
        return STATE_WARNING
    return STATE_ACTIVE


def _hw_filters(filters):
    """Hardware masks and filters for a filter set: ((mask0, mask1), (f0, ..
    f5)) as standard ids, or None when the set cannot be expressed."""
    masks = []
    for f in filters:
        if f[2] & FLAG_EXT_ID:
            return None
        if f[1] not in masks:
            masks.append(f[1])
    if not filters:
        return ((0x7FF, 0x7FF), (0, 0, 0, 0, 0, 0))  # std id 0 only; software drops it
    if len(masks) == 1:
        if len(filters) > 6:
            return None
        ids = [f[0] for f in filters]
        return ((masks[0], masks[0]), tuple([ids[k % len(ids)] for k in range(6)]))
    if len(masks) != 2:
        return None
    a = [f[0] for f in filters if f[1] == masks[0]]
    b = [f[0] for f in filters if f[1] == masks[1]]
    if len(a) <= 2 and len(b) <= 4:
        m0, m1, g0, g1 = masks[0], masks[1], a, b
    elif len(b) <= 2 and len(a) <= 4:
        m0, m1, g0, g1 = masks[1], masks[0], b, a
    else:
        return None
    return ((m0, m1), (g0[0], g0[1 % len(g0)], g1[0], g1[1 % len(g1)], g1[2 % len(g1)], g1[3 % len(g1)]))


def _default_sleep_ms(ms):
    import time

    f = getattr(time, "sleep_ms", None)
    if f is not None:
        f(ms)
    else:
        time.sleep(ms / 1000)


class MCP2515:
    def __init__(self, spi, cs, bitrate=500000, xtal_hz=8000000, mode=MODE_NORMAL, sleep_ms=None):
        self.tx_queue_len = TX_QUEUE_LEN
        self.filters_max = 16
        self.bitrate = bitrate
        self.xtal_hz = xtal_hz
        self.cnf = bit_timing(xtal_hz, bitrate)
        if mode == MODE_NORMAL:
            self._opmod = _OP_NORMAL
        elif mode == MODE_LOOPBACK:
            self._opmod = _OP_LOOPBACK
        elif mode == MODE_SILENT:
            self._opmod = _OP_LISTEN
        else:
            raise ValueError("mode")
        self._spi = spi
        self._cs = cs
        self._sleep_ms = sleep_ms if sleep_ms is not None else _default_sleep_ms
        self._w = bytearray(_BUF)
        self._r = bytearray(_BUF)
        wm = memoryview(self._w)
        rm = memoryview(self._r)
        self._wv = tuple([wm[:n] for n in range(_BUF + 1)])
        self._rv = tuple([rm[:n] for n in range(_BUF + 1)])
        self._tx_id = [0] * TX_QUEUE_LEN
        self._tx_ext = bytearray(TX_QUEUE_LEN)
        self._filters = None
        self._views = RecvViews()
        self._trk = StateTracker()
        self._running = False
        self._rx_err = 0
        self.n_overrun = 0
        cs.value(1)
        self.init()

    # -- SPI primitives (no allocation) ------------------------------------
    def _xfer(self, n):
        cs = self._cs
        cs.value(0)
        try:
            self._spi.write_readinto(self._wv[n], self._rv[n])
        finally:
            cs.value(1)

    def _read_reg(self, addr):
        w = self._w
        w[0] = _READ
        w[1] = addr
        w[2] = 0
        self._xfer(3)
        return self._r[2]

    def _read_regs(self, addr, n):
        """Registers addr .. addr + n - 1 into self._r[2:2 + n]."""
        w = self._w
        w[0] = _READ
        w[1] = addr
        self._xfer(2 + n)

    def _write_reg(self, addr, value):
        w = self._w
        w[0] = _WRITE
        w[1] = addr
        w[2] = value
        self._xfer(3)

    def _bit_modify(self, addr, mask, value):
        w = self._w
        w[0] = _BIT_MODIFY
        w[1] = addr
        w[2] = mask
        w[3] = value
        self._xfer(4)

    def _read_status(self):
        w = self._w
        w[0] = _READ_STATUS
        w[1] = 0
        self._xfer(2)
        return self._r[1]

    def _set_mode(self, opmod):
        self._write_reg(_CANCTRL, opmod)
        for _ in range(10):
            if (self._read_reg(_CANSTAT) & _OP_MASK) == opmod:
                return
            self._sleep_ms(1)
        raise OSError(EIO)

    # -- set-up --------------------------------------------------------------
    def init(self):
        """Reset the chip and configure it (bit timing, filters, mode).
        OSError(ENODEV) when no MCP2515 answers, OSError(EIO) when it does
        not take the configuration."""
        self._running = False
        self._w[0] = _RESET
        self._xfer(1)
        for _ in range(10):
            if (self._read_reg(_CANSTAT) & _OP_MASK) == _OP_CONFIG and self._read_reg(_CANCTRL) == _CANCTRL_RESET:
                break
            self._sleep_ms(1)
        else:
            raise OSError(ENODEV)
        cnf1, cnf2, cnf3 = self.cnf
        w = self._w
        w[0] = _WRITE
        w[1] = _CNF3
        w[2] = cnf3
        w[3] = cnf2
        w[4] = cnf1
        w[5] = _CANINTE_VAL
        self._xfer(6)
        self._read_regs(_CNF3, 4)
        r = self._r
        if r[2] != cnf3 or r[3] != cnf2 or r[4] != cnf1 or r[5] != _CANINTE_VAL:
            raise OSError(EIO)
        self._program_filters()
        self._set_mode(self._opmod)
        for i in range(TX_QUEUE_LEN):
            self._tx_id[i] = 0
            self._tx_ext[i] = 0
        self._rx_err = 0
        self.n_overrun = 0
        self._trk.clear()
        self._trk.last = STATE_ACTIVE
        self._running = True

    def _write_id_regs(self, addr, std_id):
        # SIDH, SIDL (EXIDE = 0), EID8, EID0 of a filter or mask
        w = self._w
        w[0] = _WRITE
        w[1] = addr
        w[2] = std_id >> 3
        w[3] = (std_id & 7) << 5
        w[4] = 0
        w[5] = 0
        self._xfer(6)

    def _program_filters(self):
        # config mode only
        rxm = _RXM_ANY
        f = self._filters
        if f is not None:
            hw = _hw_filters(f)
            if hw is not None:
                masks, ids = hw
                self._write_id_regs(_RXM0, masks[0])
                self._write_id_regs(_RXM0 + 4, masks[1])
                for k in range(6):
                    base = _RXF0 if k < 3 else _RXF3
                    self._write_id_regs(base + 4 * (k % 3), ids[k])
                rxm = 0
        self._write_reg(_RXB0CTRL, rxm | _BUKT)
        self._write_reg(_RXB1CTRL, rxm)

    # -- interface -----------------------------------------------------------
    def set_filters(self, filters):
        self._filters = normalize_filters(filters, self.filters_max)
        if self._running:
            self._set_mode(_OP_CONFIG)
            self._program_filters()
            self._set_mode(self._opmod)

    def state(self):
        if not self._running:
            return STATE_STOPPED
        self._read_regs(_TEC, _WINDOW)
        r = self._r
        cnf1, cnf2, cnf3 = self.cnf
        if (
            (r[2 + _W_CANSTAT] & _OP_MASK) != self._opmod
            or r[2 + _W_CNF1] != cnf1
            or r[2 + _W_CNF2] != cnf2
            or r[2 + _W_CNF3] != cnf3
            or r[2 + _W_CANINTE] != _CANINTE_VAL
        ):
            return self._trk.note(STATE_STOPPED)  # reset behind our back, or gone
        return self._trk.note(_eflg_state(r[2 + _W_EFLG]))

    def send(self, can_id, data, flags=0):
        n = len(data)
        check_frame(can_id, n, flags)
        if not self._running:
            raise OSError(EINVAL)
        if self._trk.note(_eflg_state(self._read_reg(_EFLG))) == STATE_BUS_OFF:
            raise OSError(EIO)
        st = self._read_status()
        ext = 1 if flags & FLAG_EXT_ID else 0
        free = -1
        for i in range(TX_QUEUE_LEN):
            if st & (4 << (2 * i)):  # TXBnCTRL.TXREQ
                if not flags & FLAG_UNORDERED and self._tx_id[i] == can_id and self._tx_ext[i] == ext:
                    return None
            elif free < 0:
                free = i
        if free < 0:
            return None
        w = self._w
        w[0] = _LOAD_TX | (free << 1)
        if ext:
            w[1] = can_id >> 21
            w[2] = ((can_id >> 13) & 0xE0) | 0x08 | ((can_id >> 16) & 0x03)
            w[3] = (can_id >> 8) & 0xFF
            w[4] = can_id & 0xFF
        else:
            w[1] = can_id >> 3
            w[2] = (can_id & 7) << 5
            w[3] = 0
            w[4] = 0
        if flags & FLAG_RTR:
            w[5] = 0x40 | n
            n = 0
        else:
            w[5] = n
            for k in range(n):
                w[6 + k] = data[k]
        self._xfer(6 + n)
        w[0] = _RTS | (1 << free)
        self._xfer(1)
        self._tx_id[free] = can_id
        self._tx_ext[free] = ext
        return free

    def cancel_send(self, idx):
        """Abort TX buffer idx's pending frame (machine.CAN.cancel_send): the
        chip clears TXREQ unless the frame is on the wire right now."""
        if not 0 <= idx < TX_QUEUE_LEN:
            raise ValueError("invalid buffer index")
        self._bit_modify(_TXB0CTRL + 0x10 * idx, _TXREQ, 0)

    def recv(self, arg=None):
        if not self._running:
            raise OSError(EINVAL)
        r = self._r
        for _ in range(3):  # at most 2 frames wait; skip those the filters drop
            self._read_regs(_CANINTF, 2)
            intf = r[2]
            eflg = r[3]
            self._trk.note(_eflg_state(eflg))
            if eflg & (_RX0OVR | _RX1OVR):
                if eflg & _RX0OVR:
                    self.n_overrun += 1
                if eflg & _RX1OVR:
                    self.n_overrun += 1
                self._rx_err |= RECV_ERR_OVERRUN
                self._bit_modify(_EFLG, _RX0OVR | _RX1OVR, 0)
            if intf & _ST_RX0IF:
                b = 0
            elif intf & _ST_RX1IF:
                b = 1
            else:
                return None
            full = (intf & (_ST_RX0IF | _ST_RX1IF)) == (_ST_RX0IF | _ST_RX1IF)
            self._w[0] = _READ_RX | (b << 2)
            self._xfer(14)  # SIDH SIDL EID8 EID0 DLC D0..D7; CS high clears RXnIF
            sidh = r[1]
            sidl = r[2]
            dlc = r[5] & 0x0F
            if dlc > MAX_DLC:
                dlc = MAX_DLC
            if sidl & 0x08:  # IDE
                can_id = (sidh << 21) | ((sidl & 0xE0) << 13) | ((sidl & 0x03) << 16) | (r[3] << 8) | r[4]
                flags = FLAG_EXT_ID | (FLAG_RTR if r[5] & 0x40 else 0)
            else:
                can_id = (sidh << 3) | (sidl >> 5)
                flags = FLAG_RTR if sidl & 0x10 else 0  # SRR
            if not filter_accepts(self._filters, can_id, flags):
                continue
            if arg is None:
                arg = new_recv_list()
            out = self._views.buffer(arg)
            rtr = flags & FLAG_RTR
            for k in range(dlc):
                out[k] = 0 if rtr else r[6 + k]
            errors = self._rx_err
            self._rx_err = 0
            if full:
                errors |= RECV_ERR_FULL
            return self._views.finish(arg, can_id, dlc, flags, errors)
        return None

    def get_counters(self, lst=None):
        if lst is None:
            lst = [0] * 8
        tec = rec = txp = rxp = 0
        if self._running:
            self._read_regs(_TEC, 2)
            tec = self._r[2]
            rec = self._r[3]
            st = self._read_status()
            txp = ((st >> 2) & 1) + ((st >> 4) & 1) + ((st >> 6) & 1)
            rxp = (st & 1) + ((st >> 1) & 1)
            self._read_regs(_EFLG, 1)
            self._trk.note(_eflg_state(self._r[2]))
        lst[0] = tec
        lst[1] = rec
        lst[2] = self._trk.n_warning
        lst[3] = self._trk.n_passive
        lst[4] = self._trk.n_bus_off
        lst[5] = txp
        lst[6] = rxp
        lst[7] = self.n_overrun
        return lst

    def restart(self):
        """Full re-initialisation (leaves bus-off, drops pending TX, zeroes
        the counters).  Raises OSError when the chip does not come back."""
        self.init()

    def deinit(self):
        self._running = False
        self._trk.last = STATE_STOPPED
        try:
            self._write_reg(_CANCTRL, _OP_CONFIG)  # off the bus; TX stops
        except OSError:
            pass
