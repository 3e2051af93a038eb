# JK-PB bus sniffer: which pack sent which 55AA frame, worked out from the
# traffic of a bank whose pack at address 0 is the bus master (docs/jk-bms.md
# "Listening to a JK master"). The 55AA payload names no sender; only the
# FC10 ACK right behind it does. So a frame is attributed only when the very
# next frame on the bus is a good ACK for a trigger of the frame's type;
# anything else in between (a request, another frame, a corrupted or
# wrong-type ACK) orphans it: a wrong attribution would put one pack's cells
# into another pack's snapshot.
# Allocation-free after construction.

from codec.binary import sum8
from codec.stream import NONE, PENDING, FrameExtractor
from compat import const, ticks_diff, ticks_ms
from jkbms import frame as J
from jkbms.pb_modbus import TRIGGER_TYPE
from jkbms.pb_modbus import frame_len_at as _pb_len
from modbus.crc import crc_ok

MAX_ADDR = const(15)
ADDRS = const(16)  # 0 (the master) .. 15
_FC10 = const(0x10)
_ACK_LEN = const(8)
_REQ_LEN = const(11)
_CHUNK = const(256)  # fed per step: FrameExtractor takes size - max_frame between drains
_HOLD_MS = const(1000)  # a frame whose ACK comes later than this is not trusted
_ECHO_MS = const(50)  # the same request again within this: its echo, not a retry


def _trigger_reg(r):
    return r == 0x1620 or r == 0x161E or r == 0x161C


def _trigger_len(buf, pos, end):
    """Judge for the trigger traffic `a 10 16 xx 00 01 ...` (a <= 15): 8 for
    an ACK, 11 for a request (02 00 00 data) -- also with a wrong CRC, so a
    corrupted one is seen and counted rather than skipped as noise (it must
    orphan the frame held before it). NONE when not this shape."""
    k = end - pos
    if k > 2 and buf[pos + 2] != 0x16:
        return NONE
    if k > 3:
        r = buf[pos + 3]
        if r != 0x20 and r != 0x1E and r != 0x1C:
            return NONE
    if k > 4 and buf[pos + 4] != 0:
        return NONE
    if k > 5 and buf[pos + 5] != 1:
        return NONE
    if k < _ACK_LEN:
        return PENDING
    if crc_ok(buf, pos, pos + _ACK_LEN):
        return _ACK_LEN
    if k >= _REQ_LEN and crc_ok(buf, pos, pos + _REQ_LEN):
        return _REQ_LEN
    if buf[pos + 6] != 2 or buf[pos + 7] != 0 or (k > 8 and buf[pos + 8] != 0):
        return _ACK_LEN  # ACK-shaped, CRC wrong
    if k < _REQ_LEN:
        return PENDING
    return _REQ_LEN  # request-shaped, CRC wrong


def judge(buf, pos, end):
    """codec.stream judge: jkbms.pb_modbus.frame_len_at, plus 55AA frames
    with a bad sum and trigger ACKs / requests with a bad CRC handed over
    whole (the caller checks and counts them)."""
    c = buf[pos]
    if c == 0x55 and end - pos >= J.FRAME_LEN:
        r = _pb_len(buf, pos, end)
        if r != NONE:
            return r
        if buf[pos + 1] == 0xAA and buf[pos + 2] == 0xEB and buf[pos + 3] == 0x90:
            return J.FRAME_LEN  # a whole 55AA frame whose sum is wrong
        return NONE
    if c <= MAX_ADDR and end - pos > 1 and buf[pos + 1] == _FC10:
        r = _trigger_len(buf, pos, end)
        if r != NONE:
            return r
    return _pb_len(buf, pos, end)


def is_trigger(f, n):
    """True for a trigger-shaped ACK (n 8) or request (n 11) in f[0:n]."""
    if f[0] > MAX_ADDR or f[1] != _FC10 or f[4] != 0 or f[5] != 1:
        return False
    if not _trigger_reg((f[2] << 8) | f[3]):
        return False
    return n == _ACK_LEN or (n == _REQ_LEN and f[6] == 2 and f[7] == 0 and f[8] == 0)


class PbSniffer:
    """feed(buf, n, now) the raw bus bytes; on_frame(addr, frame, frame_ms)
    is called for every attributed frame (frame: a 300-byte checksummed 55AA
    frame, valid during the call only; frame_ms: the time of the feed that
    completed it). on_request(addr, reg, now), if given, for every request."""

    def __init__(self, on_frame, on_request=None):
        self._x = FrameExtractor(judge, 2 * J.FRAME_LEN + 64, J.FRAME_LEN)
        self.on_frame = on_frame
        self.on_request = on_request
        self.held = bytearray(J.FRAME_LEN)
        self.held_type = 0  # 0: no frame held
        self.held_ms = 0
        self._echo = -1  # (addr << 16 | reg) of a request just seen, for its echo
        # per address: the last request seen (reg 0: none yet), requests seen
        self.req_ms = [0] * ADDRS
        self.req_reg = [0] * ADDRS
        self.req_count = [0] * ADDRS
        self.rx_bytes = 0
        self.rx_ms = 0  # time of the last bytes heard
        self.attributed = 0
        self.orphans = 0
        self.bad_sum = 0  # 55AA frames whose sum8 is wrong
        self.bad_crc = 0  # trigger ACKs / requests whose CRC is wrong
        self.requests = 0
        self.echoes = 0
        self.lone_acks = 0  # good ACKs with no frame before them
        self.others = 0  # other Modbus frames (these orphan a held frame too)

    def bad(self):
        return self.bad_sum + self.bad_crc

    def noise_bytes(self):
        return self._x.dropped

    def reset(self):
        self._x.reset()
        self.held_type = 0
        self._echo = -1

    def feed(self, buf, n, now=-1):
        if now < 0:
            now = ticks_ms()
        if n <= 0:
            return
        self.rx_bytes += n
        self.rx_ms = now
        x = self._x
        i = 0
        while i < n:
            j = i + _CHUNK
            if j > n:
                j = n
            x.feed(buf, i, j)
            i = j
            while True:
                k = x.next_frame()
                if not k:
                    break
                self._take(x.frame, k, now)

    def _orphan(self):
        if self.held_type:
            self.held_type = 0
            self.orphans += 1

    def _take(self, f, n, now):
        if n == J.FRAME_LEN and f[0] == 0x55:
            self._echo = -1
            self._orphan()  # the frame held before this one got no ACK
            if sum8(f, 0, J.CHECKSUM_AT) != f[J.CHECKSUM_AT]:
                self.bad_sum += 1
                return
            held = self.held
            for i in range(J.FRAME_LEN):
                held[i] = f[i]
            self.held_type = f[4]
            self.held_ms = now
            return
        if not is_trigger(f, n):
            self._echo = -1
            self.others += 1
            self._orphan()
            return
        if not crc_ok(f, 0, n):
            self._echo = -1
            self.bad_crc += 1
            self._orphan()
            return
        addr = f[0]
        reg = (f[2] << 8) | f[3]
        if n == _REQ_LEN:
            self._orphan()
            key = (addr << 16) | reg
            if key == self._echo and ticks_diff(now, self.req_ms[addr]) <= _ECHO_MS:
                self.echoes += 1  # the same request straight again: its echo
                return
            self._echo = key
            self.requests += 1
            self.req_ms[addr] = now
            self.req_reg[addr] = reg
            self.req_count[addr] += 1
            if self.on_request is not None:
                self.on_request(addr, reg, now)
            return
        self._echo = -1
        t = self.held_type
        if not t:
            self.lone_acks += 1
            return
        self.held_type = 0
        if t != TRIGGER_TYPE[reg] or ticks_diff(now, self.held_ms) > _HOLD_MS:
            self.orphans += 1
            return
        self.attributed += 1
        self.on_frame(addr, self.held, self.held_ms)

    def request_ms(self, addr, reg, frame_ms, within_ms):
        """When the request (addr, reg) answered by a frame completed at
        frame_ms was seen, or -1 if none was seen in the within_ms before."""
        if self.req_reg[addr] != reg:
            return -1
        d = ticks_diff(frame_ms, self.req_ms[addr])
        return self.req_ms[addr] if 0 <= d <= within_ms else -1

