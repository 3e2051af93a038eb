# SLCAN (Lawicel) device side over TCP: a CAN port backend (interface:
# canport/base.py) whose "bus" is a TCP client speaking SLCAN, e.g. python-can's
# slcan interface with channel "socket://127.0.0.1:PORT".  Also reachable as
# canport.host.SlcanSocketPort.  Runs under CPython and the MicroPython unix
# port (and on the ESP32 over WiFi, as a debugging aid).
#
# Protocol (Lawicel CANUSB / CAN232 ASCII commands, CR-terminated; replies CR
# for OK, BELL for an error): O / L open (L: listen only), C close, Sn bit rate
# (0..8 Lawicel, 9 = 83.3k as python-can), s BTR, V / v version, N serial
# number, F status flags, Z0 / Z1 timestamps, t / T / r / R frames (standard /
# extended id, data / remote) answered z / Z.  python-can 4.6.1 sends, when it
# opens the bus: "C", "S6" (500 kbit/s), "" (no data bit rate), "O"; it
# ignores the replies, reads frames as "tIIIL<data>" / "TIIIIIIIIL<data>"
# lines and sends frames the same way; shutdown() sends "C".

from can_soft import SoftPort

from canport.base import (
    FLAG_EXT_ID,
    FLAG_RTR,
    MAX_DLC,
    STATE_BUS_OFF,
)

try:
    from micropython import const
except ImportError:
    def const(x):
        return x

_EAGAIN = const(11)
_EWOULDBLOCK = const(11)
_EINPROGRESS = const(115)

_HEX = b"0123456789ABCDEF"
# Sn codes -> bit/s (n = 0..9; S7 is 800k for Lawicel, 750k for python-can,
# S9 83.3k is a python-can / CANable extension)
_BITRATES = (10000, 20000, 50000, 100000, 125000, 250000, 500000, 750000, 1000000, 83300)
_CR = const(13)
_BELL = const(7)


def _hexval(c):
    if 48 <= c <= 57:
        return c - 48
    if 65 <= c <= 70:
        return c - 55
    if 97 <= c <= 102:
        return c - 87
    return -1


def _default_ticks_ms():
    import time

    f = getattr(time, "ticks_ms", None)
    if f is not None:
        return f()
    return int(time.monotonic() * 1000)


class SlcanSocketPort(SoftPort):
    """SLCAN device on a listening TCP socket (one client at a time).

    The client (python-can: can.Bus(interface="slcan",
    channel="socket://127.0.0.1:PORT", bitrate=500000, sleep_after_open=0))
    is the rest of the CAN bus.  Frames we send() are written to it as
    "tIIILDD..\\r" / "TIIIIIIIILDD..\\r" (timestamps only after "Z1"); the
    frames it transmits ("t", "T", "r", "R") become our received frames.
    Commands answered: O/L/C, S0-S9, s, V, v, N, F, Z, X/W/M/m/Q (accepted
    and ignored); empty lines are ignored (python-can sends one when no data
    bitrate is set); anything else, and CAN FD, gets BELL.

    While no client has the channel open (or its S-code bitrate differs from
    ours), nobody acknowledges our frames: they stay queued and TEC rises to
    error-passive, as on a real bus without an inverter; they are delivered
    when a client opens the channel.

    Nothing blocks: accept, read and write are non-blocking.  poll() does the
    socket work; send() and recv() call it too, so a loop that only sends
    and receives needs no extra call.  port.port is the TCP port (given, or
    the kernel's choice for port 0 where getsockname exists, else None).
    """

    label = "SLCAN over TCP (host simulation)"

    def __init__(self, port=0, host="127.0.0.1", bitrate=500000, tx_queue_len=8, rx_queue_len=32,
                 ticks_ms=None):
        super().__init__(tx_queue_len, rx_queue_len)
        import socket

        self.bitrate = bitrate
        self._ticks_ms = ticks_ms if ticks_ms is not None else _default_ticks_ms
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        except (OSError, AttributeError):
            pass
        s.bind(socket.getaddrinfo(host, port)[0][-1])
        s.listen(1)
        s.setblocking(False)
        self._lsock = s
        if port == 0 and hasattr(s, "getsockname"):
            port = s.getsockname()[1]
        self.port = port if port else None
        self._nodelay = None
        if hasattr(socket, "IPPROTO_TCP") and hasattr(socket, "TCP_NODELAY"):
            self._nodelay = (socket.IPPROTO_TCP, socket.TCP_NODELAY)
        self._client = None
        self._readinto = None
        self._open = False
        self._listen_only = False
        self.client_bitrate = 0  # 0: not set by the client (accepted as matching)
        self._timestamps = False
        self._inbuf = bytearray(256)
        self._line = bytearray(40)
        self._line_n = 0
        self._line_bad = False
        self._out = bytearray(2048)
        self._out_n = 0
        self._frame = bytearray(MAX_DLC)
        self.connections = 0
        self.bad_commands = 0

    # -- state of the link -------------------------------------------------
    def connected(self):
        return self._client is not None

    def is_open(self):
        """A client is connected and has opened the channel (O or L)."""
        return self._client is not None and self._open

    def _link_ok(self):
        return (
            self._open
            and not self._listen_only
            and (self.client_bitrate == 0 or self.client_bitrate == self.bitrate)
        )

    # -- SoftPort hooks ----------------------------------------------------
    def _tx_kick(self):
        self.poll()

    def _rx_kick(self):
        self.poll()

    def _link_rx_ok(self):
        return self._open and (self.client_bitrate == 0 or self.client_bitrate == self.bitrate)

    # -- socket work -------------------------------------------------------
    def poll(self):
        if self._lsock is None:
            return
        self._accept()
        if self._client is not None:
            self._read()
        self._transmit()
        if self._client is not None:
            self._flush()

    def close(self):
        """Close the client and the listening socket (deinit() keeps them)."""
        self._drop_client()
        if self._lsock is not None:
            self._lsock.close()
            self._lsock = None

    def _accept(self):
        try:
            c, _ = self._lsock.accept()
        except OSError:
            return
        if self._client is not None:
            c.close()  # one client at a time
            return
        c.setblocking(False)
        if self._nodelay is not None:
            try:
                c.setsockopt(self._nodelay[0], self._nodelay[1], 1)
            except OSError:
                pass
        self._client = c
        self._readinto = getattr(c, "recv_into", None) or c.readinto
        self._open = False
        self._listen_only = False
        self.client_bitrate = 0
        self._timestamps = False
        self._line_n = 0
        self._line_bad = False
        self._out_n = 0
        self.connections += 1

    def _drop_client(self):
        c = self._client
        self._client = None
        self._readinto = None
        self._open = False
        self._out_n = 0
        self._line_n = 0
        if c is not None:
            try:
                c.close()
            except OSError:
                pass

    def _read(self):
        buf = self._inbuf
        for _ in range(16):  # bounded work per poll
            try:
                n = self._readinto(buf)
            except OSError as e:
                if e.args and e.args[0] in (_EAGAIN, _EWOULDBLOCK, _EINPROGRESS):
                    return
                self._drop_client()
                return
            if n is None:
                return
            if n == 0:
                self._drop_client()
                return
            for i in range(n):
                self._feed(buf[i])
                if self._client is None:
                    return
            if n < len(buf):
                return

    def _flush(self):
        while self._out_n:
            try:
                k = self._client.send(memoryview(self._out)[: self._out_n])
            except OSError as e:
                if e.args and e.args[0] in (_EAGAIN, _EWOULDBLOCK):
                    return
                self._drop_client()
                return
            if not k:
                return
            n = self._out_n - k
            if n:
                self._out[0:n] = self._out[k : self._out_n]
            self._out_n = n

    def _transmit(self):
        if not self.is_active():
            return
        if self._client is None or not self._link_ok():
            if self._next_tx() >= 0:
                self._tx_error(True)  # nobody acknowledges
            return
        while True:
            i = self._next_tx()
            if i < 0 or len(self._out) - self._out_n < 32:
                return
            self._put_frame(self._tx_id[i], self._tx_flags[i], self._tx_data[i], self._tx_len[i])
            self._tx_done(i)

    # -- output ------------------------------------------------------------
    def _put(self, b):
        if self._out_n < len(self._out):
            self._out[self._out_n] = b
            self._out_n += 1

    def _put_hex(self, v, digits):
        for k in range(digits - 1, -1, -1):
            self._put(_HEX[(v >> (4 * k)) & 15])

    def _put_frame(self, can_id, flags, data, n):
        rtr = flags & FLAG_RTR
        if flags & FLAG_EXT_ID:
            self._put(82 if rtr else 84)  # R / T
            self._put_hex(can_id, 8)
        else:
            self._put(114 if rtr else 116)  # r / t
            self._put_hex(can_id, 3)
        self._put(48 + n)
        if not rtr:
            for k in range(n):
                self._put_hex(data[k], 2)
        if self._timestamps:
            self._put_hex(self._ticks_ms() % 60000, 4)
        self._put(_CR)

    def _reply(self, text):
        for i in range(len(text)):
            self._put(text[i])

    def _ok(self):
        self._put(_CR)

    def _err(self):
        self.bad_commands += 1
        self._put(_BELL)

    # -- input -------------------------------------------------------------
    def _feed(self, b):
        if b == _CR:
            if self._line_bad:
                self._err()
            elif self._line_n:
                self._exec(self._line, self._line_n)
            self._line_n = 0
            self._line_bad = False
        elif b == 10:  # LF after CR: ignored
            return
        elif self._line_n < len(self._line):
            self._line[self._line_n] = b
            self._line_n += 1
        else:
            self._line_bad = True

    def _exec(self, ln, n):
        c = ln[0]
        if c in (116, 84, 114, 82):  # t T r R
            self._cmd_frame(ln, n)
        elif c == 79 or c == 76:  # O L
            if self._open or n != 1:
                self._err()
            else:
                self._open = True
                self._listen_only = c == 76
                self._ok()
        elif c == 67:  # C
            self._open = False
            self._ok()
        elif c == 83:  # Sn
            v = _hexval(ln[1]) if n == 2 else -1
            if self._open or v < 0 or v >= len(_BITRATES):
                self._err()
            else:
                self.client_bitrate = _BITRATES[v]
                self._ok()
        elif c == 115:  # sxxyy: BTR registers, bitrate unknown -> accepted
            if self._open:
                self._err()
            else:
                self.client_bitrate = 0
                self._ok()
        elif c == 86:  # V
            self._reply(b"V1013\r")
        elif c == 118:  # v
            self._reply(b"v1013\r")
        elif c == 78:  # N
            self._reply(b"NJKGW\r")
        elif c == 70:  # F: status flags
            self._put(70)
            self._put_hex(self._status_flags(), 2)
            self._put(_CR)
        elif c == 90:  # Z0 / Z1
            if n == 2 and (ln[1] == 48 or ln[1] == 49):
                self._timestamps = ln[1] == 49
                self._ok()
            else:
                self._err()
        elif c in (88, 87, 77, 109, 81):  # X W M m Q: accepted, no effect
            self._ok()
        else:
            self._err()

    def _status_flags(self):
        f = 0
        if self._rx_count == self.rx_queue_len:
            f |= 0x01
        if self.tx_pending() == self.tx_queue_len:
            f |= 0x02
        s = self.state()
        if s >= 2:  # WARNING or worse
            f |= 0x04
        if self._rx_lost:
            f |= 0x08
        if s >= 3:
            f |= 0x20
        if s == STATE_BUS_OFF:
            f |= 0x80
        return f

    def _cmd_frame(self, ln, n):
        c = ln[0]
        ext = c == 84 or c == 82
        rtr = c == 114 or c == 82
        nid = 8 if ext else 3
        if n < nid + 2 or not self._open or self._listen_only:
            self._err()
            return
        can_id = 0
        for i in range(1, nid + 1):
            v = _hexval(ln[i])
            if v < 0:
                self._err()
                return
            can_id = (can_id << 4) | v
        dlc = ln[nid + 1] - 48
        if dlc < 0 or dlc > MAX_DLC or can_id > (0x1FFFFFFF if ext else 0x7FF):
            self._err()
            return
        p = nid + 2
        if rtr:
            if n != p:
                self._err()
                return
        else:
            if n != p + 2 * dlc:
                self._err()
                return
            d = self._frame
            for k in range(dlc):
                hi = _hexval(ln[p + 2 * k])
                lo = _hexval(ln[p + 2 * k + 1])
                if hi < 0 or lo < 0:
                    self._err()
                    return
                d[k] = (hi << 4) | lo
        if not self._link_rx_ok():
            self._err()  # bitrate mismatch: the frame never makes it onto our bus
            return
        flags = (FLAG_EXT_ID if ext else 0) | (FLAG_RTR if rtr else 0)
        self._rx_push(can_id, flags, self._frame, dlc)
        self._put(90 if ext else 122)  # Z / z: transmitted
        self._put(_CR)
