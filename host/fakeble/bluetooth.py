# Simulated `bluetooth` module for host tests (README.md beside this file): the central-role subset
# of MicroPython's bluetooth API that aioble uses, on a simulated radio world (`radio`) that holds
# peripherals such as jk_peripheral.JkPeripheral.  Runs under CPython, the MicroPython unix port
# and the webassembly port.  Import it as the top-level module `bluetooth` (env.setup() puts this
# folder on sys.path), never as fakeble.bluetooth: a second copy would be a second radio.
#
# What behaves like the real module (extmod/modbluetooth.c with NimBLE, as on the ESP32):
# * IRQs arrive from a background asyncio task of the radio, never inside the call that caused
#   them, after small delays (connect 50-200 ms, one GATT procedure per connection event);
# * addr / adv_data / notify_data / read data are memoryviews of scratch buffers, and the UUID of
#   a discovery result is one reused object: all are overwritten after the handler returns;
# * several notifications of one connection event reach the handler back to back (aioble keeps
#   only the last one, micropython-lib #934);
# * errors as OSError with MicroPython's errno numbers (ENODEV when not active, ENOTCONN for an
#   unknown connection, EALREADY for a second scan / connect / MTU exchange);
# * the scanner only hears advertisements inside its scan window (window_us / interval_us duty
#   cycle); a connect that does not complete within scan_duration_ms (2000 by default) ends with
#   _IRQ_PERIPHERAL_DISCONNECT(0xFFFF, 0xFF, 00:00:00:00:00:00), as a cancelled one does.
import asyncio
import sys

try:
    from time import ticks_diff, ticks_ms

    _T0 = ticks_ms()

    def _now():
        return ticks_diff(ticks_ms(), _T0)

except ImportError:  # CPython
    from time import monotonic

    _T0 = monotonic()

    def _now():
        return int((monotonic() - _T0) * 1000)


_CPYTHON = sys.implementation.name != "micropython"

if __name__ != "bluetooth":  # e.g. `import fakeble.bluetooth`: that would be a second, separate radio
    raise ImportError("import the fake radio as `bluetooth` (host/fakeble on sys.path: fakeble.env.setup())")

FLAG_BROADCAST = 0x0001
FLAG_READ = 0x0002
FLAG_WRITE_NO_RESPONSE = 0x0004
FLAG_WRITE = 0x0008
FLAG_NOTIFY = 0x0010
FLAG_INDICATE = 0x0020
FLAG_AUTHENTICATED_SIGNED_WRITE = 0x0040
FLAG_AUX_WRITE = 0x0100
FLAG_READ_ENCRYPTED = 0x0200
FLAG_READ_AUTHENTICATED = 0x0400
FLAG_READ_AUTHORIZED = 0x0800
FLAG_WRITE_ENCRYPTED = 0x1000
FLAG_WRITE_AUTHENTICATED = 0x2000
FLAG_WRITE_AUTHORIZED = 0x4000

# IRQ numbers (extmod/modbluetooth.h)
_IRQ_SCAN_RESULT = 5
_IRQ_SCAN_DONE = 6
_IRQ_PERIPHERAL_CONNECT = 7
_IRQ_PERIPHERAL_DISCONNECT = 8
_IRQ_GATTC_SERVICE_RESULT = 9
_IRQ_GATTC_SERVICE_DONE = 10
_IRQ_GATTC_CHARACTERISTIC_RESULT = 11
_IRQ_GATTC_CHARACTERISTIC_DONE = 12
_IRQ_GATTC_DESCRIPTOR_RESULT = 13
_IRQ_GATTC_DESCRIPTOR_DONE = 14
_IRQ_GATTC_READ_RESULT = 15
_IRQ_GATTC_READ_DONE = 16
_IRQ_GATTC_WRITE_DONE = 17
_IRQ_GATTC_NOTIFY = 18
_IRQ_MTU_EXCHANGED = 21

# MicroPython errno numbers (py/mperrno.h)
_ENODEV = 19
_EINVAL = 22
_ENOTCONN = 107
_EALREADY = 114

# status values in the *_DONE events, as NimBLE reports them (BLE_HS_*, ATT errors + 0x100)
_ST_ENOTCONN = 7
_ST_INVALID_HANDLE = 0x101
_ST_READ_NOT_PERMITTED = 0x102
_ST_WRITE_NOT_PERMITTED = 0x103

_CONN_NONE = 0xFFFF
_ADV_IND = 0
_SCAN_RSP = 4
_MTU_MIN = 23
_JUNK = 0xEE  # what the scratch buffers hold once the handler has returned


def _hex(b):
    return "".join("%02x" % x for x in b)


class UUID:
    """bluetooth.UUID: 16-, 32- or 128-bit; data kept little-endian as in MicroPython."""

    def __init__(self, value):
        if isinstance(value, UUID):
            b = value._b
        elif isinstance(value, int):
            if value < 0 or value > 0xFFFFFFFF:
                raise ValueError("invalid UUID")
            b = value.to_bytes(2 if value < 0x10000 else 4, "little")
        elif isinstance(value, str):
            s = value.replace("-", "")
            if len(s) != 32:
                raise ValueError("invalid UUID")
            b = bytes(int(s[i - 2 : i], 16) for i in range(32, 0, -2))
        else:
            b = bytes(value)
            if len(b) not in (2, 4, 16):
                raise ValueError("invalid UUID")
        self._b = bytes(b)

    def _int(self):
        return int.from_bytes(self._b, "little")

    def __eq__(self, other):
        return isinstance(other, UUID) and self._b == other._b

    def __ne__(self, other):
        return not self.__eq__(other)

    def __hash__(self):
        return hash(self._b)

    def __bytes__(self):
        return self._b

    def __repr__(self):
        n = len(self._b)
        if n == 2:
            return "UUID(0x%04x)" % self._int()
        if n == 4:
            return "UUID(0x%08x)" % self._int()
        s = _hex(self._b[i] for i in range(15, -1, -1))
        return "UUID('%s-%s-%s-%s-%s')" % (s[:8], s[8:12], s[12:16], s[16:20], s[20:])

    __str__ = __repr__


class _Conn:
    def __init__(self, handle, periph, interval_ms):
        self.handle = handle
        self.periph = periph
        self.interval_ms = interval_ms
        self.mtu = _MTU_MIN
        self.mtu_asked = False
        self.ops = []  # pending GATT procedures, one per connection event
        self.closing = False  # gap_disconnect() called: the link ends at the next event
        self.open = True


class _Radio:
    """The simulated world: peripherals on air, connections, timers, the background task."""

    conn_interval_ms = 30  # connection interval unless gap_connect() asks for another

    def __init__(self):
        self._ble = None
        self._task = None
        self._gen = 0
        self.peripherals = []
        self._addr_buf = bytearray(6)
        self._addr_mv = memoryview(self._addr_buf)
        self._data_buf = bytearray(1024)
        self._data_mv = memoryview(self._data_buf)
        self._junk = bytes([_JUNK]) * 1024
        self._uuid = UUID(0)  # reused for every discovery result, as modbluetooth does
        self._clear()

    # ----- harness API

    def _clear(self):
        self._conns = {}
        self._pending = None  # [addr_type, addr, periph or None, token]
        self._scan = None  # [token, active, interval_ms, window_ms, t0]
        self._timers = []
        self._seq = 0
        self._rnd = 4321
        self.stats = {
            "events": 0,
            "notifications": 0,
            "notify_bytes": 0,
            "scan_results": 0,
            "connects": 0,
            "disconnects": 0,
            "gatt_ops": 0,
            "irq_errors": 0,
        }
        self.last_irq_error = None
        self.last_error = None

    def add(self, p):
        """Put a peripheral on air; returns it."""
        if p not in self.peripherals:
            self.peripherals.append(p)
            if self._scan is not None:
                self._at(5, self._adv, (self._scan[0], p))
        return p

    def remove(self, p):
        """Take a peripheral off air (an open connection to it is lost at its next event)."""
        if p in self.peripherals:
            self.peripherals.remove(p)
        for c in list(self._conns.values()):
            if c.periph is p:
                c.closing = True

    def reset(self):
        """Drop peripherals, connections, scan, pending connect, timers and counters; restore the
        BLE object's config (the IRQ handler is kept: aioble installs it once, at import).

        Open connections, a running scan and a pending connect are ended with their usual events
        (_IRQ_PERIPHERAL_DISCONNECT / _IRQ_SCAN_DONE) delivered at once, so that aioble's own
        bookkeeping (DeviceConnection._connected, the active scanner) is cleaned up too."""
        conns = list(self._conns.values())
        scan = self._scan
        pending = self._pending
        for p in self.peripherals:
            if p._conn is not None:
                p._conn = None
                p.disconnected()
        self._clear()
        self.peripherals = []
        for c in conns:
            c.open = False
            self._emit_addr(_IRQ_PERIPHERAL_DISCONNECT, c.handle, c.periph.addr_type, c.periph.addr)
        if pending is not None:
            self._emit_addr(_IRQ_PERIPHERAL_DISCONNECT, _CONN_NONE, 0xFF, b"\x00" * 6)
        if scan is not None:
            self._emit(_IRQ_SCAN_DONE, ())
        for k in self.stats:
            self.stats[k] = 0
        self.last_irq_error = None
        self._task = None
        self._gen += 1
        if self._ble is not None:
            self._ble._defaults()

    def connections(self):
        """{conn_handle: peripheral} of the open links."""
        d = {}
        for h in self._conns:
            d[h] = self._conns[h].periph
        return d

    async def settle(self, ms=0):
        """Let the radio run for ms (test helper)."""
        await asyncio.sleep(ms / 1000)

    # ----- scheduler

    def _rand(self, n):
        self._rnd = (self._rnd * 75 + 74) % 65537
        return self._rnd % n

    def _at(self, delay_ms, fn, arg):
        self._seq += 1
        self._timers.append((_now() + delay_ms, self._seq, fn, arg))
        self._kick()

    def _kick(self):
        t = self._task
        if _CPYTHON:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return  # no loop yet: started by the next call made inside one
            if t is not None and not t.done() and t.get_loop() is loop:
                return
        elif t is not None and not t.done():
            return
        self._gen += 1
        self._task = asyncio.create_task(self._run(self._gen))

    async def _run(self, gen):
        try:
            while self._timers and gen == self._gen:
                now = _now()
                due = self._timers[0][0]
                for t in self._timers:
                    if t[0] < due:
                        due = t[0]
                if due > now:
                    await asyncio.sleep(min(due - now, 20) / 1000)
                    continue
                self._step(now)
                await asyncio.sleep(0)
        finally:
            if gen == self._gen:
                self._task = None

    def _step(self, now):
        # run every timer due at `now`, in (due, seq) order; a timer may add timers
        while True:
            best = -1
            for i in range(len(self._timers)):
                t = self._timers[i]
                if t[0] <= now and (best < 0 or (t[0], t[1]) < (self._timers[best][0], self._timers[best][1])):
                    best = i
            if best < 0:
                return
            t = self._timers.pop(best)
            try:
                t[2](t[3])
            except Exception as e:  # a bug in the radio or a peripheral: report, keep running
                self.last_error = e
                _print_exc(e)

    # ----- IRQ delivery

    def _emit(self, event, data, n_data=0, n_addr=0):
        self.stats["events"] += 1
        ble = self._ble
        h = ble._handler if ble is not None else None
        try:
            if h is not None:
                try:
                    h(event, data)
                except Exception as e:  # as modbluetooth: print and carry on
                    self.stats["irq_errors"] += 1
                    self.last_irq_error = e
                    print("fakeble: uncaught exception in IRQ handler (event %d)" % event)
                    _print_exc(e)
        finally:
            # the scratch buffers are reused for the next event: a kept memoryview goes stale
            if n_data:
                self._data_mv[:n_data] = self._junk[:n_data]
            if n_addr:
                self._addr_mv[:] = self._junk[:6]
            self._uuid._b = b"\xee\xee"

    def _addr(self, addr):
        self._addr_mv[:] = addr
        return self._addr_mv

    def _data(self, data):
        n = len(data)
        if n > len(self._data_buf):
            n = len(self._data_buf)  # truncated as with a too small rxbuf
        self._data_mv[:n] = data[:n]
        return self._data_mv[:n], n

    def _emit_addr(self, event, conn, addr_type, addr):
        self._emit(event, (conn, addr_type, self._addr(addr)), 0, 6)

    def _emit_uuid(self, event, head, uuid16):
        self._uuid._b = uuid16.to_bytes(2, "little")
        self._emit(event, head + (self._uuid,))

    # ----- scanning

    def _scan_start(self, duration_ms, interval_us, window_us, active):
        self._seq += 1
        token = self._seq
        interval = max(interval_us, 2500) // 1000 or 1
        window = min(max(window_us, 2500) // 1000 or 1, interval)
        self._scan = [token, active, interval, window, _now()]
        if duration_ms:
            self._at(duration_ms, self._scan_end, token)
        for p in self.peripherals:
            self._at(5 + self._rand(40), self._adv, (token, p))

    def _scan_end(self, token):
        if self._scan is not None and self._scan[0] == token:
            self._scan = None
            self._emit(_IRQ_SCAN_DONE, ())

    def _adv(self, arg):
        token, p = arg
        s = self._scan
        if s is None or s[0] != token or p not in self.peripherals:
            return
        # heard only inside the scan window (duty cycle window / interval)
        if p.advertising() and (_now() - s[4]) % s[2] < s[3]:
            self.stats["scan_results"] += 1
            mv, n = self._data(p.adv_data())
            self._emit(_IRQ_SCAN_RESULT, (p.addr_type, self._addr(p.addr), _ADV_IND, p.rssi_now(), mv), n, 6)
            resp = p.resp_data()
            if s[1] and resp and self._scan is s:
                mv, n = self._data(resp)
                self._emit(_IRQ_SCAN_RESULT, (p.addr_type, self._addr(p.addr), _SCAN_RSP, p.rssi_now(), mv), n, 6)
        self._at(p.adv_interval_ms + self._rand(10), self._adv, arg)

    # ----- connecting

    def _find(self, addr_type, addr):
        for p in self.peripherals:
            if p.addr == addr and p.addr_type == addr_type:
                return p
        return None

    def _connect_start(self, addr_type, addr, scan_duration_ms, interval_ms):
        self._seq += 1
        pend = [addr_type, bytes(addr), interval_ms, self._seq]
        self._pending = pend
        self._at(scan_duration_ms, self._connect_fail, pend)
        self._at(50 + self._rand(151), self._connect_try, pend)

    def _connect_try(self, pend):
        if self._pending is not pend:
            return
        p = self._find(pend[0], pend[1])
        if p is None or not p.advertising() or not p.accept_connect():
            self._at(100, self._connect_try, pend)  # keep listening for a connectable advertisement
            return
        self._pending = None
        h = 0
        while h in self._conns:
            h += 1
        c = _Conn(h, p, pend[2])
        self._conns[h] = c
        p._conn = c
        p.connected(_now())
        self.stats["connects"] += 1
        self._emit_addr(_IRQ_PERIPHERAL_CONNECT, h, p.addr_type, p.addr)
        self._at(c.interval_ms, self._conn_event, c)

    def _connect_fail(self, pend):
        if self._pending is pend:
            self._pending = None
            self._emit_addr(_IRQ_PERIPHERAL_DISCONNECT, _CONN_NONE, 0xFF, b"\x00" * 6)

    def _drop(self, c):
        # end of a link: pending procedures fail with ENOTCONN, then the disconnect event
        if not c.open:
            return
        c.open = False
        self._conns.pop(c.handle, None)
        p = c.periph
        if p._conn is c:
            p._conn = None
            p.disconnected()
        ops = c.ops
        c.ops = []
        for op in ops:
            kind = op[0]
            if kind == "svc":
                self._emit(_IRQ_GATTC_SERVICE_DONE, (c.handle, _ST_ENOTCONN))
            elif kind == "chr":
                self._emit(_IRQ_GATTC_CHARACTERISTIC_DONE, (c.handle, _ST_ENOTCONN))
            elif kind == "dsc":
                self._emit(_IRQ_GATTC_DESCRIPTOR_DONE, (c.handle, _ST_ENOTCONN))
            elif kind == "read":
                self._emit(_IRQ_GATTC_READ_DONE, (c.handle, op[1], _ST_ENOTCONN))
            elif kind == "write" and op[3]:
                self._emit(_IRQ_GATTC_WRITE_DONE, (c.handle, op[1], _ST_ENOTCONN))
        self.stats["disconnects"] += 1
        self._emit_addr(_IRQ_PERIPHERAL_DISCONNECT, c.handle, p.addr_type, p.addr)

    # ----- connection events

    def _conn_event(self, c):
        if not c.open:
            return
        p = c.periph
        if c.closing or p.drop_link or p not in self.peripherals:
            p.drop_link = False
            self._drop(c)
            return
        now = _now()
        if c.ops:
            self._gatt(c, c.ops.pop(0), now)
            if not c.open:
                return
        for vh, data in p.conn_event(now, c.mtu):
            if not c.open:
                return
            self.stats["notifications"] += 1
            self.stats["notify_bytes"] += len(data)
            mv, n = self._data(data)
            self._emit(_IRQ_GATTC_NOTIFY, (c.handle, vh, mv), n)
        if c.open:
            self._at(c.interval_ms, self._conn_event, c)

    def _gatt(self, c, op, now):
        self.stats["gatt_ops"] += 1
        p = c.periph
        table = p.gatt_table()  # [(handle, kind, uuid16, props_or_end)], by handle
        kind = op[0]
        h = c.handle
        if kind == "svc":
            for e in table:
                if e[1] == "svc" and (op[1] is None or op[1] == UUID(e[2])):
                    self._emit_uuid(_IRQ_GATTC_SERVICE_RESULT, (h, e[0], e[3]), e[2])
            self._emit(_IRQ_GATTC_SERVICE_DONE, (h, 0))
        elif kind == "chr":
            start, end, want = op[1], op[2], op[3]
            found = []
            for e in table:
                if e[1] == "val" and start <= e[0] - 1 <= end and (want is None or want == UUID(e[2])):
                    found.append(e)
            # modbluetooth reports each characteristic with the handle before the next one's
            # declaration as its end handle (the last one: the end of the requested range)
            for i in range(len(found)):
                e = found[i]
                last = found[i + 1][0] - 2 if i + 1 < len(found) else end
                self._emit_uuid(_IRQ_GATTC_CHARACTERISTIC_RESULT, (h, last, e[0], e[3]), e[2])
            self._emit(_IRQ_GATTC_CHARACTERISTIC_DONE, (h, 0))
        elif kind == "dsc":
            # NimBLE's "discover all descriptors" is a Find Information over (start, end]: it
            # reports every attribute there, declarations of a following characteristic included
            for e in table:
                if op[1] < e[0] <= op[2]:
                    u = 0x2800 if e[1] == "svc" else (0x2803 if e[1] == "chr" else e[2])
                    self._emit_uuid(_IRQ_GATTC_DESCRIPTOR_RESULT, (h, e[0]), u)
            self._emit(_IRQ_GATTC_DESCRIPTOR_DONE, (h, 0))
        elif kind == "read":
            vh = op[1]
            e = _entry(table, vh)
            if e is None:
                st = _ST_INVALID_HANDLE
            elif e[1] == "dsc" or (e[1] == "val" and e[3] & FLAG_READ):
                data = p.gatt_read(vh)
                mv, n = self._data(data)
                self._emit(_IRQ_GATTC_READ_RESULT, (h, vh, mv), n)
                st = 0
            else:
                st = _ST_READ_NOT_PERMITTED
            self._emit(_IRQ_GATTC_READ_DONE, (h, vh, st))
        elif kind == "write":
            vh, data, response = op[1], op[2], op[3]
            e = _entry(table, vh)
            if e is None:
                st = _ST_INVALID_HANDLE
            elif e[1] == "dsc" or (e[1] == "val" and e[3] & (FLAG_WRITE if response else FLAG_WRITE_NO_RESPONSE)):
                st = p.gatt_write(vh, data, now)
            else:
                st = _ST_WRITE_NOT_PERMITTED
            if response:
                self._emit(_IRQ_GATTC_WRITE_DONE, (h, vh, st))
        elif kind == "mtu":
            local = self._ble._mtu
            peer = p.peer_mtu()
            c.mtu = max(_MTU_MIN, min(local, peer))
            self._emit(_IRQ_MTU_EXCHANGED, (h, c.mtu))


def _entry(table, handle):
    for e in table:
        if e[0] == handle:
            return e
    return None


def _print_exc(e):
    if _CPYTHON:
        import traceback

        traceback.print_exception(type(e), e, e.__traceback__)
    else:
        sys.print_exception(e)


radio = _Radio()


class _BLE:
    """The object BLE() returns (one per process, as on MicroPython)."""

    def __init__(self):
        self._handler = None
        self._active = False
        self._defaults()

    def _defaults(self):
        self._mtu = _MTU_MIN
        self._gap_name = b"MPY NIMBLE"
        self._rxbuf = 1024
        self._other = {}

    def _need_active(self):
        if not self._active:
            raise OSError(_ENODEV)

    def _conn(self, conn_handle):
        self._need_active()
        c = radio._conns.get(conn_handle)
        if c is None:
            raise OSError(_ENOTCONN)
        return c

    def active(self, *args):
        if args:
            on = bool(args[0])
            if on and not self._active:
                self._defaults()
            if not on and self._active:
                # deinit: links, scan and pending connect vanish without events
                for c in list(radio._conns.values()):
                    c.open = False
                    if c.periph._conn is c:
                        c.periph._conn = None
                        c.periph.disconnected()
                radio._conns = {}
                radio._scan = None
                radio._pending = None
            self._active = on
        return self._active

    def config(self, *args, **kwargs):
        if args:
            if len(args) != 1 or kwargs:
                raise TypeError("must query one param")
            k = args[0]
            if k == "rxbuf":
                return self._rxbuf
            if k == "gap_name":
                return self._gap_name
            self._need_active()
            if k == "mac":
                return (0, b"\x24\x0a\xc4\xfa\x4b\x01")
            if k == "mtu":
                return self._mtu
            if k in self._other:
                return self._other[k]
            raise ValueError("unknown config param")
        for k in kwargs:
            v = kwargs[k]
            if k == "rxbuf":
                self._rxbuf = int(v)
            elif k == "gap_name":
                self._gap_name = v.encode() if isinstance(v, str) else bytes(v)
            elif k == "mtu":
                self._need_active()
                if v < _MTU_MIN or v > 517:
                    raise OSError(_EINVAL)
                self._mtu = int(v)
            elif k in ("bond", "mitm", "io", "le_secure", "addr_mode"):
                self._other[k] = v
            else:
                raise ValueError("unknown config param")
        return None

    def irq(self, handler):
        self._handler = handler

    def gap_scan(self, duration_ms, interval_us=1280000, window_us=11250, active=False):
        self._need_active()
        if duration_ms is None:
            if radio._scan is not None:
                radio._at(1, radio._scan_end, radio._scan[0])
            return None
        if radio._scan is not None:
            raise OSError(_EALREADY)
        radio._scan_start(int(duration_ms), int(interval_us), int(window_us), bool(active))
        return None

    def gap_connect(self, addr_type, addr=None, scan_duration_ms=2000, min_conn_interval_us=None,
                    max_conn_interval_us=None):
        self._need_active()
        if addr_type is None:
            pend = radio._pending
            if pend is not None:
                radio._at(1, radio._connect_fail, pend)
            return None
        if radio._pending is not None:
            raise OSError(_EALREADY)
        if addr is None or len(addr) != 6:
            raise ValueError("invalid addr")
        if radio._scan is not None:  # connecting stops a running scan (NimBLE does)
            radio._at(1, radio._scan_end, radio._scan[0])
        if scan_duration_ms is None:
            scan_duration_ms = 2000
        interval = radio.conn_interval_ms
        if min_conn_interval_us:
            interval = max(8, int(min_conn_interval_us) // 1000)
        radio._connect_start(int(addr_type), addr, int(scan_duration_ms), interval)
        return None

    def gap_disconnect(self, conn_handle):
        self._need_active()
        c = radio._conns.get(conn_handle)
        if c is None:
            return False
        if c.closing:
            raise OSError(_EALREADY)
        c.closing = True
        return True

    def _op(self, conn_handle, op):
        c = self._conn(conn_handle)
        c.ops.append(op)
        radio._kick()

    def gattc_discover_services(self, conn_handle, uuid=None):
        self._op(conn_handle, ("svc", None if uuid is None else UUID(uuid)))

    def gattc_discover_characteristics(self, conn_handle, start_handle, end_handle, uuid=None):
        self._op(conn_handle, ("chr", start_handle, end_handle, None if uuid is None else UUID(uuid)))

    def gattc_discover_descriptors(self, conn_handle, start_handle, end_handle):
        self._op(conn_handle, ("dsc", start_handle, end_handle))

    def gattc_read(self, conn_handle, value_handle):
        self._op(conn_handle, ("read", value_handle))

    def gattc_write(self, conn_handle, value_handle, data, mode=0):
        mode = int(mode)
        if mode not in (0, 1):
            raise OSError(_EINVAL)
        self._op(conn_handle, ("write", value_handle, bytes(data), mode))

    def gattc_exchange_mtu(self, conn_handle):
        c = self._conn(conn_handle)
        if c.mtu_asked:
            raise OSError(_EALREADY)
        c.mtu_asked = True
        self._op(conn_handle, ("mtu",))


_ble = _BLE()
radio._ble = _ble


def BLE():  # noqa: N802 - the real module's name
    return _ble
