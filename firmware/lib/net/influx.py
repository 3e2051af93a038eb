# InfluxDB line protocol over UDP (docs/network.md "InfluxDB"): one line per
# influx_interval_s to a Telegraf socket_listener (udp) or an InfluxDB 1.x
# [[udp]] input. UDP because it cannot hang: a send either goes into the
# stack's buffer or fails at once, and nothing waits for an answer. No
# timestamp: the server stamps each line as it arrives.
#
#   jkbms,device=240ac4123456 voltage=53.300,current=20.500,...,bms_fresh=1i
#
# With several packs the battery's line comes first, then one per pack with
# the tag pack=<n> (1.. in the order of bms_addresses) and that pack's values.
# Numbers are written from the integer fixed-point values digit by digit into
# one preallocated buffer (no float, no string per field); integers carry the
# line protocol's i suffix, the rest are floats.

from compat import sleep_ms, ticks_add, ticks_diff, ticks_ms
from outputs import events as E
from pack import snapshot as S
from sources.base import FRESH

BUF_BYTES = 1400  # below the 1472-byte UDP payload of a 1500-byte MTU: never fragmented
RESOLVE_RETRY_MS = 60000  # a failed name lookup blocks while it runs: not more often than this
_EAGAIN = (11, 12, 105, 118, 119)  # EAGAIN, ENOMEM, ENOBUFS, lwIP's ERR_MEM/ERR_BUF on some ports
QUIET_MS = 60000  # at most one warning event per this time; the rest are counted


def escape(text, specials):
    """Line-protocol escaping: a backslash before every character of specials
    (measurement: comma, space; tag keys and values: comma, equals, space)."""
    out = ""
    for ch in text:
        if ch in specials or ch == "\\":
            out += "\\"
        out += ch
    return out


def _socket():
    """The socket module, imported only to send: the lines need none (the
    webassembly port has no sockets); tests replace this."""
    import socket

    return socket


class Writer:
    """One line into a preallocated buffer; n = bytes written. Every put
    returns False (and stops writing) once the buffer is full."""

    def __init__(self, size=BUF_BYTES):
        self.buf = bytearray(size)
        self.mv = memoryview(self.buf)
        self.n = 0
        self.full = False
        self._sep = 0  # the separator before the next field: 0 none (b" " after tags), 1 comma
        self._digits = bytearray(12)

    def reset(self):
        self.n = 0
        self.full = False
        self._sep = 0

    def raw(self, data):
        n = self.n
        k = len(data)
        if self.full or n + k > len(self.buf):
            self.full = True
            return False
        self.buf[n:n + k] = data
        self.n = n + k
        return True

    def byte(self, b):
        if self.full or self.n >= len(self.buf):
            self.full = True
            return False
        self.buf[self.n] = b
        self.n += 1
        return True

    def uint(self, v, width=1):
        """v >= 0 in decimal, at least width digits (zero-padded)."""
        d = self._digits
        k = 0
        while v or k < width:
            d[k] = 48 + v % 10
            v //= 10
            k += 1
        while k:
            k -= 1
            if not self.byte(d[k]):
                return False
        return True

    def field(self, name):
        """Start a field: the separator, then name (bytes ending in '=')."""
        if self._sep:
            self.byte(44)  # ,
        else:
            self.byte(32)  # the space between the tags and the fields
            self._sep = 1
        return self.raw(name)

    def int_field(self, name, v):
        self.field(name)
        if v < 0:
            self.byte(45)
            v = -v
        self.uint(v)
        return self.byte(105)  # i

    def fixed_field(self, name, v, digits):
        """v / 10**digits as a float (digits >= 1): "-1.234"."""
        self.field(name)
        if v < 0:
            self.byte(45)
            v = -v
        div = 10 ** digits
        self.uint(v // div)
        self.byte(46)  # .
        return self.uint(v % div, digits)

    def data(self):
        return self.mv[:self.n]


def _power_dw(mv, ma):
    """mV x mA as 0.1 W, truncated towards 0; every product stays a small int
    on the ESP32 (31 bits), so no big-int allocation."""
    neg = ma < 0
    if neg:
        ma = -ma
    mw = mv * (ma // 1000) + mv * (ma % 1000) // 1000
    dw = mw // 100
    return -dw if neg else dw


def pack_fields(w, s, fresh):
    """The values of one snapshot (those its last data carried), then bms_fresh."""
    have = s.have
    if have & S.HAVE_PACK_V:
        w.fixed_field(b"voltage=", s.pack_mv, 3)
    if have & S.HAVE_CURRENT:
        w.fixed_field(b"current=", s.current_ma, 3)
        if have & S.HAVE_PACK_V:
            w.fixed_field(b"power=", _power_dw(s.pack_mv, s.current_ma), 1)
    if have & S.HAVE_SOC:
        w.int_field(b"soc=", s.soc_pct)
    if have & S.HAVE_SOH:
        w.int_field(b"soh=", s.soh_pct)
    if have & S.HAVE_CAPACITY:
        w.fixed_field(b"remaining_ah=", s.remaining_mah, 3)
        w.fixed_field(b"full_ah=", s.full_mah, 3)
    if have & S.HAVE_CYCLES:
        w.int_field(b"cycles=", s.cycles)
    if have & S.HAVE_CELLS and s.cell_count:
        w.fixed_field(b"cell_min=", s.cell_min_mv, 3)
        w.fixed_field(b"cell_max=", s.cell_max_mv, 3)
        w.fixed_field(b"cell_delta=", s.cell_delta_mv, 3)
        w.fixed_field(b"cell_avg=", s.cell_avg_mv, 3)
        w.int_field(b"cell_min_n=", s.cell_min_idx + 1)
        w.int_field(b"cell_max_n=", s.cell_max_idx + 1)
        for i in range(s.cell_count):
            w.field(b"cell")
            w.uint(i + 1)
            w.byte(61)  # =
            v = s.cells[i]
            w.uint(v // 1000)
            w.byte(46)
            w.uint(v % 1000, 3)
    if have & S.HAVE_TEMPS:
        t = s.avg_temp_dc()
        if t != S.NO_TEMP:
            w.fixed_field(b"temp=", t, 1)
        if s.temps[S.T_MOS] != S.NO_TEMP:
            w.fixed_field(b"temp_mos=", s.temps[S.T_MOS], 1)
        for i in range(1, S.TEMP_SLOTS):
            t = s.temps[i]
            if t != S.NO_TEMP:
                w.field(b"temp")
                w.uint(i)
                w.byte(61)
                if t < 0:
                    w.byte(45)
                    t = -t
                w.uint(t // 10)
                w.byte(46)
                w.uint(t % 10)
    if have & S.HAVE_ALARMS:
        w.int_field(b"alarms=", s.alarms)
    if have & S.HAVE_FETS:
        w.int_field(b"charge_fet=", 1 if s.charge_fet else 0)
        w.int_field(b"discharge_fet=", 1 if s.discharge_fet else 0)
    if have & S.HAVE_BALANCE:
        w.int_field(b"balancing=", s.balancing)
    w.int_field(b"bms_fresh=", 1 if fresh else 0)


def limit_fields(w, lim):
    """What the inverter is told (charge.limits.Limits)."""
    w.fixed_field(b"cvl=", lim.cvl_dv, 1)
    w.fixed_field(b"ccl=", lim.ccl_da, 1)
    w.fixed_field(b"dcl=", lim.dcl_da, 1)
    w.fixed_field(b"dvl=", lim.dvl_dv, 1)
    w.int_field(b"charge_enable=", 1 if lim.charge_enable else 0)
    w.int_field(b"discharge_enable=", 1 if lim.discharge_enable else 0)
    w.int_field(b"soc_sent=", lim.soc_pct)


class Influx:
    name = "influx"

    def __init__(self, net):
        cfg = net.status.cfg
        self.net = net
        self.host = cfg["influx_host"]
        self.port = cfg["influx_port"]
        self.interval_ms = cfg["influx_interval_s"] * 1000
        # measurement and tags, escaped once (app.config keeps commas and spaces
        # out of the measurement; escaped anyway: a line must never break)
        self.head = (escape(cfg["influx_measurement"], ", ") + ",device=" +
                     escape(net.device_id, ",= ")).encode()
        self.w = Writer()
        self.addr = None
        self.sock = None
        self.lines_sent = 0
        self.send_errors = 0
        self.skipped = 0  # periods with Wi-Fi down: nothing sent
        self.too_long = 0  # lines cut off by the buffer: not sent
        self.last_error = ""
        self.last_ms = None
        self._resolve_ms = None
        self._failing = False
        self._said_ms = None

    # -- the lines (no sockets: testable on every runtime)

    def line(self, i):
        """Line i of this period into self.w (0: the battery, 1..: the packs
        when several); False when there is no such line or it did not fit."""
        st = self.net.status
        w = self.w
        w.reset()
        now = st.now()
        packs = st.packs
        several = len(packs) > 1
        if i > (len(packs) if several else 0):
            return False
        w.raw(self.head)
        if i == 0:
            pack_fields(w, st.snap, st.bms_state(now) == FRESH)
            limit_fields(w, st.lim)
            if several:
                w.int_field(b"packs_online=", st.snap.modules)
        else:
            p = packs[i - 1]
            w.raw(b",pack=")  # still a tag: the space comes with the first field
            w.uint(i)
            pack_fields(w, p.snap, p.fresh.state(now) == FRESH)
        if w.full:
            self.too_long += 1
            return False
        return True

    def text(self, i=0):
        """Line i as a str (tests, the console)."""
        return bytes(self.w.data()).decode() if self.line(i) else None

    # -- the socket

    def _resolve(self):
        """The server's address, looked up once (a name blocks while the
        lookup runs; an IP address does not, docs/network.md "Isolation")."""
        now = ticks_ms()
        if self._resolve_ms is not None and ticks_diff(now, self._resolve_ms) < RESOLVE_RETRY_MS:
            return False
        self._resolve_ms = now
        socket = _socket()
        try:
            self.addr = socket.getaddrinfo(self.host, self.port, 0, socket.SOCK_DGRAM)[0][-1]
        except (OSError, IndexError) as e:
            self._error("lookup of %r: %r" % (self.host, e))
            return False
        return True

    def _open(self):
        socket = _socket()
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setblocking(False)
        self.sock = s

    def _close(self):
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
            self.sock = None

    def _error(self, text):
        self.send_errors += 1
        self.last_error = text
        now = ticks_ms()
        if not self._failing and (self._said_ms is None or ticks_diff(now, self._said_ms) >= QUIET_MS):
            self._said_ms = now  # once per run of failures, at most once a minute
            self._failing = True
            self.net.status.events.emit(E.NET_WARN, "InfluxDB: %s (counted; the lines go on)" % text)

    def send_period(self):
        """Every line of this period, one datagram each; errors are counted."""
        if self.addr is None and not self._resolve():
            return
        try:
            if self.sock is None:
                self._open()
        except (OSError, ImportError) as e:
            self._error("socket: %r" % (e,))
            return
        i = 0
        while self.line(i):
            try:
                self.sock.sendto(self.w.data(), self.addr)
                self.lines_sent += 1
                self._failing = False
            except OSError as e:
                code = e.args[0] if e.args else 0
                self._error("send: %r" % (e,))
                if code not in _EAGAIN:
                    self._close()  # EHOSTUNREACH and the like: a fresh socket next period
                return
            i += 1
        self.last_ms = ticks_ms()

    async def run(self):
        wifi = self.net.wifi
        due = ticks_ms()
        while True:
            due = ticks_add(due, self.interval_ms)
            wait = ticks_diff(due, ticks_ms())
            if wait < 0:  # late (a long pause): start the grid again from now
                due = ticks_ms()
                wait = 0
            await sleep_ms(wait)
            if not wifi.up:
                self.skipped += 1
                continue
            try:
                self.send_period()
            except ImportError as e:  # a runtime without sockets
                self.last_error = "no sockets: %r" % (e,)
                self.skipped += 1

    def lines(self, now):
        ago = ("last %d s ago" % (ticks_diff(now, self.last_ms) // 1000)) if self.last_ms is not None else "none yet"
        out = "InfluxDB UDP %s:%d every %d s: lines sent %d (%s), send errors %d, skipped (Wi-Fi down) %d" % (
            self.host, self.port, self.interval_ms // 1000, self.lines_sent, ago, self.send_errors, self.skipped)
        if self.too_long:
            out += ", lines too long %d" % self.too_long
        if self.last_error:
            out += "; last error: " + self.last_error
        return [out]
