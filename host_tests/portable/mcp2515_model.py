# Register-level model of a Microchip MCP2515 CAN controller behind SPI, for
# testing firmware/lib/canport/mcp2515.py without hardware (CPython and real
# MicroPython).  Written from the MCP2515 datasheet (DS20001801): the SPI
# instruction set, the register map with its write rules, operating modes,
# transmit buffers, receive buffers with masks / filters / rollover, and the
# error flags and counters.  Runs allocation-free on the SPI path when
# record=False (used by the heap_lock tests).
#
#   m = MCP2515Model(xtal_hz=8000000)
#   drv = MCP2515(m.spi, m.cs, 500000, 8000000)
#   m.sent            frames the chip put on the bus: (id, ext, rtr, bytes)
#   m.inject(0x305, b"\x00" * 8)   a frame arrives from the bus -> RXB0 / RXB1
#   m.ack = False     nobody acknowledges: TX buffers stay pending
#   m.no_ack_attempts(n) / m.bus_error_attempts(n)   failed transmissions
#   m.force_bus_off(), m.bus_off_recovery(), m.set_error_counters(tec, rec)

# SPI instructions
RESET = 0xC0
READ = 0x03
WRITE = 0x02
BIT_MODIFY = 0x05
READ_STATUS = 0xA0
RX_STATUS = 0xB0

# registers
CANSTAT = 0x0E
CANCTRL = 0x0F
BFPCTRL = 0x0C
TXRTSCTRL = 0x0D
TEC = 0x1C
REC = 0x1D
RXM0 = 0x20
RXM1 = 0x24
CNF3 = 0x28
CNF2 = 0x29
CNF1 = 0x2A
CANINTE = 0x2B
CANINTF = 0x2C
EFLG = 0x2D
TXB_CTRL = (0x30, 0x40, 0x50)
RXB0CTRL = 0x60
RXB1CTRL = 0x70
RXF = (0x00, 0x04, 0x08, 0x10, 0x14, 0x18)

# modes (CANCTRL.REQOP / CANSTAT.OPMOD)
MODE_NORMAL = 0
MODE_SLEEP = 1
MODE_LOOPBACK = 2
MODE_LISTEN = 3
MODE_CONFIG = 4

# CANINTF
RX0IF = 0x01
RX1IF = 0x02
TX0IF = 0x04
ERRIF = 0x20

# EFLG
RX1OVR = 0x80
RX0OVR = 0x40
TXBO = 0x20
TXEP = 0x10
RXEP = 0x08
TXWAR = 0x04
RXWAR = 0x02
EWARN = 0x01

# TXBnCTRL
ABTF = 0x40
TXERR = 0x10
TXREQ = 0x08

_BITMOD_OK = (0x0C, 0x0D, 0x28, 0x29, 0x2A, 0x2B, 0x2C, 0x2D, 0x30, 0x40, 0x50, 0x60, 0x70)
_LOAD_TX_ADDR = (0x31, 0x36, 0x41, 0x46, 0x51, 0x56)


class _Spi:
    """Duck-typed machine.SPI bound to the model."""

    def __init__(self, model):
        self._m = model

    def write(self, buf):
        m = self._m
        for i in range(len(buf)):
            m._byte(buf[i])

    def readinto(self, buf, write=0):
        m = self._m
        for i in range(len(buf)):
            buf[i] = m._byte(write)

    def write_readinto(self, wbuf, rbuf):
        m = self._m
        for i in range(len(wbuf)):
            rbuf[i] = m._byte(wbuf[i])


class _Cs:
    """Duck-typed chip-select Pin: value(0) starts a transaction, value(1) ends it."""

    def __init__(self, model):
        self._m = model
        self._v = 1

    def value(self, v=None):
        if v is None:
            return self._v
        if v and not self._v:
            self._m._end()
        elif not v and self._v:
            self._m._begin()
        self._v = 1 if v else 0
        return None


class MCP2515Model:
    def __init__(self, xtal_hz=8000000):
        self.xtal_hz = xtal_hz
        self.regs = bytearray(128)
        self.spi = _Spi(self)
        self.cs = _Cs(self)
        self.present = True  # False: nothing on the SPI bus (MISO reads 0xFF)
        self.ack = True  # another node acknowledges: pending frames go out at once
        self.record = True  # append sent frames to self.sent (allocates)
        self.sent = []
        self.tx_count = 0
        self.last_tx = bytearray(13)  # SIDH .. D7 of the last frame put on the bus
        self.loopback_rx = 0
        self.ignored_writes = 0  # writes the chip refuses (read-only, wrong mode, busy buffer)
        self.transactions = 0
        self.resets = 0
        self.tec = 0
        self.rec = 0
        self.bus_off = False
        self._sel = False
        self._pos = 0
        self._instr = 0
        self._addr = 0
        self._mask = 0
        self.power_on()

    # -- chip state -----------------------------------------------------------
    def power_on(self):
        r = self.regs
        for i in range(128):
            r[i] = 0
        r[CANSTAT] = 0x80
        r[CANCTRL] = 0x87
        self.tec = 0
        self.rec = 0
        self.bus_off = False
        self._update_eflg()

    def mode(self):
        return self.regs[CANSTAT] >> 5

    def timing(self):
        """(bitrate, sample point in 0.1 %, TQ per bit, rules ok) from CNF1..3."""
        r = self.regs
        cnf1 = r[CNF1]
        cnf2 = r[CNF2]
        cnf3 = r[CNF3]
        brp = cnf1 & 0x3F
        sjw = (cnf1 >> 6) + 1
        prseg = (cnf2 & 7) + 1
        ps1 = ((cnf2 >> 3) & 7) + 1
        if cnf2 & 0x80:
            ps2 = (cnf3 & 7) + 1
        else:
            ps2 = ps1 if ps1 > 2 else 2  # information processing time
        ntq = 1 + prseg + ps1 + ps2
        div = 2 * (brp + 1) * ntq
        ok = ps2 >= 2 and ps2 > sjw and prseg + ps1 >= ps2 and self.xtal_hz % div == 0
        return (self.xtal_hz // div, (1000 * (1 + prseg + ps1)) // ntq, ntq, ok)

    def _update_eflg(self):
        r = self.regs
        tec = self.tec
        rec = self.rec
        old = r[EFLG]
        e = old & (RX1OVR | RX0OVR)
        if self.bus_off:
            e |= TXBO | TXEP | TXWAR | EWARN
        else:
            if tec >= 96:
                e |= TXWAR | EWARN
            if rec >= 96:
                e |= RXWAR | EWARN
            if tec >= 128:
                e |= TXEP
        if rec >= 128:
            e |= RXEP
        r[EFLG] = e
        r[TEC] = tec if tec < 256 else 255
        r[REC] = rec if rec < 256 else 255
        if e != old:
            r[CANINTF] |= ERRIF

    def set_error_counters(self, tec, rec=0):
        self.tec = tec
        self.rec = rec
        if tec >= 256:
            self.bus_off = True
        self._update_eflg()

    def force_bus_off(self):
        self.set_error_counters(256, self.rec)

    def bus_off_recovery(self):
        """128 occurrences of 11 recessive bits: the chip leaves bus-off."""
        if self.bus_off:
            self.bus_off = False
            self.tec = 0
            self.rec = 0
            self._update_eflg()

    # -- SPI ------------------------------------------------------------------
    def _begin(self):
        self._sel = True
        self._pos = 0
        self.transactions += 1

    def _end(self):
        ins = self._instr
        if self._pos > 0 and ins & 0xF9 == 0x90:  # READ RX BUFFER: clear RXnIF
            self.regs[CANINTF] &= ~(RX1IF if ins & 0x04 else RX0IF) & 0xFF
        self._sel = False
        self._instr = 0

    def _byte(self, b):
        if not self._sel or not self.present:
            return 0xFF
        pos = self._pos
        self._pos = pos + 1
        if pos == 0:
            self._instr = b
            self._start(b)
            return 0
        ins = self._instr
        if ins == READ or ins & 0xF9 == 0x90:
            if pos == 1 and ins == READ:
                self._addr = b & 0x7F
                return 0
            v = self._read(self._addr)
            self._addr = (self._addr + 1) & 0x7F
            return v
        if ins == WRITE or (ins & 0xF8 == 0x40 and ins & 7 <= 5):
            if pos == 1 and ins == WRITE:
                self._addr = b & 0x7F
                return 0
            self._write(self._addr, b)
            self._addr = (self._addr + 1) & 0x7F
            return 0
        if ins == BIT_MODIFY:
            if pos == 1:
                self._addr = b & 0x7F
            elif pos == 2:
                self._mask = b
            elif pos == 3:
                a = self._addr
                mask = self._mask if self._bitmod_ok(a) else 0xFF
                self._write(a, (self._read(a) & ~mask & 0xFF) | (b & mask))
            return 0
        if ins == READ_STATUS:
            return self._status()
        if ins == RX_STATUS:
            return self._rx_status()
        return 0

    def _start(self, ins):
        if ins == RESET:
            self.resets += 1
            self.power_on()
        elif ins & 0xF9 == 0x90:  # READ RX BUFFER 1001 0nm0
            self._addr = 0x61 + (0x10 if ins & 0x04 else 0) + (5 if ins & 0x02 else 0)
        elif ins & 0xF8 == 0x40 and ins & 7 <= 5:  # LOAD TX BUFFER 0100 0abc
            self._addr = _LOAD_TX_ADDR[ins & 7]
        elif ins & 0xF8 == 0x80:  # RTS 1000 0nnn
            for n in range(3):
                if ins & (1 << n):
                    self.regs[TXB_CTRL[n]] |= TXREQ
            self._try_tx()

    @staticmethod
    def _bitmod_ok(a):
        if a & 0x0F == 0x0F:
            return True
        for x in _BITMOD_OK:
            if x == a:
                return True
        return False

    def _status(self):
        r = self.regs
        intf = r[CANINTF]
        s = intf & 3
        for n in range(3):
            if r[TXB_CTRL[n]] & TXREQ:
                s |= 4 << (2 * n)
            if intf & (TX0IF << n):
                s |= 8 << (2 * n)
        return s

    def _rx_status(self):
        r = self.regs
        intf = r[CANINTF]
        s = (intf & 3) << 6
        if intf & 3:
            base = 0x60 if intf & RX0IF else 0x70
            sidl = r[base + 2]
            ext = sidl & 0x08
            rtr = (r[base + 5] & 0x40) if ext else (sidl & 0x10)
            s |= (0x10 if ext else 0) | (0x08 if rtr else 0)
            s |= r[base] & (0x01 if base == 0x60 else 0x07)
        return s

    # -- register access --------------------------------------------------------
    def _read(self, a):
        low = a & 0x0F
        if low == 0x0E:
            return self.regs[CANSTAT]
        if low == 0x0F:
            return self.regs[CANCTRL]
        return self.regs[a]

    def _write(self, a, v):
        r = self.regs
        low = a & 0x0F
        config = self.mode() == MODE_CONFIG
        if low == 0x0F:
            self._write_canctrl(v)
        elif low == 0x0E or a == TEC or a == REC or 0x61 <= a <= 0x6D or 0x71 <= a <= 0x7D:
            self.ignored_writes += 1  # read-only
        elif a < 0x0C or 0x10 <= a <= 0x1B or 0x20 <= a <= 0x2A or a == TXRTSCTRL:
            if not config:
                self.ignored_writes += 1  # filters, masks, CNF: configuration mode only
            elif a == CNF3:
                r[a] = v & 0xC7
            else:
                r[a] = v
        elif a == EFLG:
            r[a] = r[a] & ~((~v) & 0xC0) & 0xFF  # RXnOVR can only be cleared
        elif a in TXB_CTRL:
            old = r[a]
            r[a] = (old & ~0x0B & 0xFF) | (v & 0x0B)
            if old & TXREQ and not v & TXREQ:
                r[a] |= ABTF
            elif v & TXREQ and not old & TXREQ:
                self._try_tx()
        elif 0x31 <= a <= 0x5D and (a & 0x0F) <= 0x0D:  # TX buffer contents
            if r[a & 0xF0] & TXREQ:
                self.ignored_writes += 1  # buffer pending transmission
            else:
                r[a] = v
        elif a == RXB0CTRL:
            r[a] = (r[a] & ~0x64 & 0xFF) | (v & 0x64)
            r[a] = (r[a] & ~0x02 & 0xFF) | (0x02 if r[a] & 0x04 else 0)  # BUKT1 mirrors BUKT
        elif a == RXB1CTRL:
            r[a] = (r[a] & ~0x60 & 0xFF) | (v & 0x60)
        else:
            r[a] = v

    def _write_canctrl(self, v):
        r = self.regs
        r[CANCTRL] = v
        if v & 0x10:  # ABAT: abort all pending transmissions
            for n in range(3):
                c = TXB_CTRL[n]
                if r[c] & TXREQ:
                    r[c] = (r[c] & ~TXREQ & 0xFF) | ABTF
        req = v >> 5
        if req > MODE_CONFIG:
            return
        old = self.mode()
        r[CANSTAT] = (r[CANSTAT] & 0x1F) | (req << 5)
        if req == MODE_CONFIG and old != MODE_CONFIG:
            # "When Configuration mode is entered, all error counters are cleared."
            self.tec = 0
            self.rec = 0
            self.bus_off = False
            self._update_eflg()
        if req == MODE_NORMAL or req == MODE_LOOPBACK:
            self._try_tx()

    # -- the bus ----------------------------------------------------------------
    def _pending(self):
        """TX buffer to go next (highest TXP, then highest number) or -1."""
        r = self.regs
        best = -1
        best_p = -1
        for n in range(3):
            c = r[TXB_CTRL[n]]
            if c & TXREQ and (c & 3) >= best_p:
                best = n
                best_p = c & 3
        return best

    def _try_tx(self):
        mode = self.mode()
        if mode != MODE_NORMAL and mode != MODE_LOOPBACK:
            return
        if self.bus_off or (mode == MODE_NORMAL and not self.ack):
            return
        r = self.regs
        while True:
            n = self._pending()
            if n < 0:
                return
            base = TXB_CTRL[n]
            sidh = r[base + 1]
            sidl = r[base + 2]
            ext = sidl & 0x08
            dlcr = r[base + 5]
            dlc = dlcr & 0x0F
            if dlc > 8:
                dlc = 8
            if ext:
                can_id = (sidh << 21) | ((sidl >> 5) << 18) | ((sidl & 3) << 16) | (r[base + 3] << 8) | r[base + 4]
            else:
                can_id = (sidh << 3) | (sidl >> 5)
            rtr = 1 if dlcr & 0x40 else 0
            if mode == MODE_LOOPBACK:
                self.loopback_rx += 1
                self._receive(can_id, ext, rtr, r, base + 6, dlc)
            else:
                for k in range(13):
                    self.last_tx[k] = r[base + 1 + k]
                self.tx_count += 1
                if self.record:
                    data = bytes(r[base + 6 : base + 6 + (0 if rtr else dlc)])
                    self.sent.append((can_id, 1 if ext else 0, rtr, data))
                if self.tec > 0:
                    self.tec -= 1
                    self._update_eflg()
            r[base] &= ~(TXREQ | TXERR) & 0xFF
            r[CANINTF] |= TX0IF << n

    def complete_tx(self):
        """The other nodes acknowledge again: send what is pending."""
        ack = self.ack
        self.ack = True
        self._try_tx()
        self.ack = ack

    def _attempt(self, ack_error):
        if self.mode() != MODE_NORMAL or self.bus_off:
            return False
        n = self._pending()
        if n < 0:
            return False
        self.regs[TXB_CTRL[n]] |= TXERR
        if not (ack_error and self.tec >= 128):  # ISO 11898-1 exception for ACK errors
            self.tec += 8
        if self.tec >= 256:
            self.bus_off = True
        self._update_eflg()
        return True

    def no_ack_attempts(self, n=1):
        """n transmission attempts nobody acknowledges (TEC stops at 128)."""
        for _ in range(n):
            self._attempt(True)

    def bus_error_attempts(self, n=1):
        """n transmission attempts ending in bit errors (TEC -> bus-off)."""
        for _ in range(n):
            self._attempt(False)

    # -- frames from the bus ------------------------------------------------------
    def inject(self, can_id, data=b"", ext=False, rtr=False, dlc=None):
        """A frame on the bus.  Returns the RX buffer (0 / 1) it went to, -1 if
        the masks / filters rejected it, -2 if it was lost (overflow), -3 if
        the chip does not receive (configuration / sleep / loopback mode,
        bus-off)."""
        mode = self.mode()
        if (mode != MODE_NORMAL and mode != MODE_LISTEN) or self.bus_off:
            return -3
        if dlc is None:
            dlc = len(data)
        return self._receive(can_id, 1 if ext else 0, 1 if rtr else 0, data, 0, dlc)

    def _match(self, mask_addr, filt_addr, can_id, ext, data, off, dlc):
        r = self.regs
        if (r[filt_addr + 1] & 0x08) != (0x08 if ext else 0):
            return False
        msid = (r[mask_addr] << 3) | (r[mask_addr + 1] >> 5)
        fsid = (r[filt_addr] << 3) | (r[filt_addr + 1] >> 5)
        meid = ((r[mask_addr + 1] & 3) << 16) | (r[mask_addr + 2] << 8) | r[mask_addr + 3]
        feid = ((r[filt_addr + 1] & 3) << 16) | (r[filt_addr + 2] << 8) | r[filt_addr + 3]
        if ext:
            sid = can_id >> 18
            eid = can_id & 0x3FFFF
        else:
            sid = can_id
            # standard frames: EID15..0 of mask and filter apply to data bytes 0 and 1
            d0 = data[off] if dlc > 0 else 0
            d1 = data[off + 1] if dlc > 1 else 0
            eid = (d0 << 8) | d1
            meid &= 0xFFFF
            feid &= 0xFFFF
        return ((sid ^ fsid) & msid) == 0 and ((eid ^ feid) & meid) == 0

    def _accept(self, n, can_id, ext, data, off, dlc):
        """Filter number that accepts the frame into RXBn (0 with RXM = 11), or -1."""
        r = self.regs
        ctrl = r[RXB0CTRL if n == 0 else RXB1CTRL]
        if (ctrl >> 5) & 3 == 3:
            return 0
        mask = RXM0 if n == 0 else RXM1
        first, last = (0, 2) if n == 0 else (2, 6)
        for f in range(first, last):
            if self._match(mask, RXF[f], can_id, ext, data, off, dlc):
                return f
        return -1

    def _receive(self, can_id, ext, rtr, data, off, dlc):
        r = self.regs
        intf = r[CANINTF]
        f0 = self._accept(0, can_id, ext, data, off, dlc)
        if f0 >= 0:
            if not intf & RX0IF:
                self._store(0, can_id, ext, rtr, data, off, dlc, f0)
                return 0
            if r[RXB0CTRL] & 0x04:  # BUKT: roll over into RXB1
                if not intf & RX1IF:
                    self._store(1, can_id, ext, rtr, data, off, dlc, f0)
                    return 1
                r[EFLG] |= RX1OVR
            else:
                r[EFLG] |= RX0OVR
            r[CANINTF] |= ERRIF
            return -2
        f1 = self._accept(1, can_id, ext, data, off, dlc)
        if f1 < 0:
            return -1
        if not intf & RX1IF:
            self._store(1, can_id, ext, rtr, data, off, dlc, f1)
            return 1
        r[EFLG] |= RX1OVR
        r[CANINTF] |= ERRIF
        return -2

    def _store(self, n, can_id, ext, rtr, data, off, dlc, filhit):
        r = self.regs
        base = RXB0CTRL if n == 0 else RXB1CTRL
        if ext:
            r[base + 1] = (can_id >> 21) & 0xFF
            r[base + 2] = (((can_id >> 18) & 7) << 5) | 0x08 | ((can_id >> 16) & 3)
            r[base + 3] = (can_id >> 8) & 0xFF
            r[base + 4] = can_id & 0xFF
            r[base + 5] = (0x40 if rtr else 0) | dlc
        else:
            r[base + 1] = can_id >> 3
            r[base + 2] = ((can_id & 7) << 5) | (0x10 if rtr else 0)
            r[base + 3] = 0
            r[base + 4] = 0
            r[base + 5] = dlc
        for k in range(8):
            r[base + 6 + k] = data[off + k] if (k < dlc and not rtr) else 0
        ctrl = r[base] & (0x64 if n == 0 else 0x60)
        if n == 0:
            ctrl |= (0x02 if ctrl & 0x04 else 0) | (filhit & 1)
        else:
            ctrl |= filhit & 7
        if rtr:
            ctrl |= 0x08
        r[base] = ctrl
        r[CANINTF] |= RX0IF if n == 0 else RX1IF
