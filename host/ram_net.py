# Network stand-ins for host/ram_probe.py (make ram's network configurations,
# docs/design.md "RAM"): the webassembly port has no `network`, `socket` or
# `machine` module and asyncio there has no start_server. Everything here is
# built before the probe's baseline, so the figure is what the firmware holds:
#
#   network, machine  host/fakenet (a WLAN that connects ~300 ms after
#                     connect(); machine.unique_id), as the simulation uses
#   socket            the module object below: socket() returns one of two
#                     preallocated sockets -- a TCP one that is an MQTT broker
#                     (CONNACK, SUBACK, PINGRESP; every call non-blocking) and
#                     a UDP one that takes every datagram; getaddrinfo() gives
#                     the host back (the config holds IP addresses)
#   binascii          imported here: built into the ESP32's firmware, a frozen
#                     Python module on the webassembly port
#   start_server      asyncio.start_server: returns a preallocated listener
#                     that never accepts; the probe hands net.web one request
#                     (GET /api/status) on a fake stream pair itself
#
# Not in the figure, so: the socket objects themselves (on the ESP32 a few
# dozen bytes each in the GC heap; their buffers are lwIP's, in the IDF heap)
# and asyncio's Server with its accept task.
import sys

AF_INET = 2
SOCK_STREAM = 1
SOCK_DGRAM = 2
SOL_SOCKET = 1
SO_REUSEADDR = 4
# MQTT packet types (high nibble) the broker answers
_CONNECT = 0x10
_PUBLISH = 0x30
_SUBSCRIBE = 0x80
_PINGREQ = 0xC0


class BrokerSocket:
    """A non-blocking TCP socket whose peer is an MQTT 3.1.1 broker: the
    packets written are parsed as they come (any split), each CONNECT gets a
    CONNACK, each SUBSCRIBE its SUBACK, each PINGREQ a PINGRESP; readinto()
    returns None while there is nothing to read. Allocates nothing but what
    read() returns."""

    def __init__(self):
        self.out = bytearray(64)
        self.n = 0  # reply bytes in out
        self.pos = 0  # of them read
        self.connects = self.publishes = self.subscribes = self.pings = self.closes = 0
        self._reset()

    def _reset(self):
        self.n = self.pos = 0
        self._state = 0  # 0 fixed header, 1 remaining length, 2 body
        self._type = 0
        self._len = 0
        self._mul = 1
        self._k = 0
        self._pid = 0

    def setblocking(self, flag):
        pass

    def setsockopt(self, *args):
        pass

    def connect(self, addr):
        self._reset()

    def _reply(self, *data):
        if self.pos == self.n:
            self.pos = self.n = 0
        for b in data:
            self.out[self.n] = b
            self.n += 1

    def _packet(self):
        t = self._type
        if t == _CONNECT:
            self.connects += 1
            self._reply(0x20, 2, 0, 0)
        elif t == _SUBSCRIBE:
            self.subscribes += 1
            self._reply(0x90, 3, self._pid >> 8, self._pid & 0xFF, 0)
        elif t == _PINGREQ:
            self.pings += 1
            self._reply(0xD0, 0)
        elif t == _PUBLISH:
            self.publishes += 1
        self._state = 0

    def _feed(self, b):
        s = self._state
        if s == 0:
            self._type = b & 0xF0
            self._len = 0
            self._mul = 1
            self._state = 1
        elif s == 1:
            self._len += (b & 0x7F) * self._mul
            self._mul *= 128
            if not b & 0x80:
                self._k = 0
                if self._len:
                    self._state = 2
                else:
                    self._packet()
        else:
            if self._k < 2:  # a SUBSCRIBE's packet id comes first
                self._pid = ((self._pid << 8) | b) & 0xFFFF
            self._k += 1
            if self._k == self._len:
                self._packet()

    def write(self, buf):
        for b in buf:
            self._feed(b)
        return len(buf)

    def readinto(self, buf, nbytes=-1):
        k = self.n - self.pos
        if k <= 0:
            return None
        if nbytes < 0 or nbytes > len(buf):
            nbytes = len(buf)
        if k > nbytes:
            k = nbytes
        for i in range(k):
            buf[i] = self.out[self.pos + i]
        self.pos += k
        return k

    def read(self, nbytes):
        k = self.n - self.pos
        if k <= 0:
            return None
        if k > nbytes:
            k = nbytes
        data = bytes(self.out[self.pos:self.pos + k])
        self.pos += k
        return data

    def close(self):
        self.closes += 1


class UdpSocket:
    def __init__(self):
        self.sent = 0
        self.bytes = 0

    def setblocking(self, flag):
        pass

    def sendto(self, data, addr):
        self.sent += 1
        self.bytes += len(data)
        return len(data)

    def close(self):
        pass


class SocketModule:
    """What `import socket` gives the firmware and mqtt_as here."""

    AF_INET = AF_INET
    SOCK_STREAM = SOCK_STREAM
    SOCK_DGRAM = SOCK_DGRAM
    SOL_SOCKET = SOL_SOCKET
    SO_REUSEADDR = SO_REUSEADDR

    def __init__(self):
        self.tcp = BrokerSocket()
        self.udp = UdpSocket()

    def socket(self, af=AF_INET, kind=SOCK_STREAM, proto=0):
        return self.udp if kind == SOCK_DGRAM else self.tcp

    def getaddrinfo(self, host, port, af=0, kind=0, proto=0, flags=0):
        return [(AF_INET, kind or SOCK_STREAM, 0, "", (host, port))]


class Listener:
    """What asyncio.start_server returns: a listening socket that never
    accepts (the probe serves its one request itself)."""

    def __init__(self):
        self.closed = 0

    def close(self):
        self.closed += 1

    async def wait_closed(self):
        pass


class Reader:
    def __init__(self, request):
        self.request = request
        self.done = False

    async def read(self, n):
        if self.done:
            return b""
        self.done = True
        return self.request


class Writer:
    """Counts the answer's bytes and keeps its first line."""

    def __init__(self):
        self.head = bytearray(16)
        self.n = 0
        self.closed = 0

    def write(self, data):
        if not self.n:
            k = len(data) if len(data) < 16 else 16
            self.head[:k] = data[:k]
        self.n += len(data)

    async def drain(self):
        pass

    def close(self):
        self.closed += 1

    async def wait_closed(self):
        pass


class NetFakes:
    """Installs the stand-ins (call before the baseline)."""

    def __init__(self, fakenet_dir):
        import asyncio

        # mqtt_as imports binascii: a C module in the ESP32's firmware (no heap), but a frozen
        # Python module on the webassembly port, whose code must not count
        import binascii  # noqa: F401

        if fakenet_dir not in sys.path:
            sys.path.insert(0, fakenet_dir)
        import machine  # noqa: F401 - host/fakenet's (unique_id): mqtt_as imports it
        import network

        network.link.reset()
        self.link = network.link
        self.sock = SocketModule()
        sys.modules["socket"] = self.sock
        self.listener = Listener()
        self.starts = 0
        self.reader = Reader(b"GET /api/status HTTP/1.1\r\nHost: gw\r\n\r\n")
        self.writer = Writer()

        async def start_server(cb, host, port, backlog=5, ssl=None):
            self.starts += 1
            return self.listener

        asyncio.start_server = start_server


def _outputs(net):
    out = {}
    for o in net.outputs:
        out[o.name] = o
    return out


async def steady(gw, fakes, want, timeout_ms=20000):
    """The network tasks, started as app.gateway starts them (supervised),
    run until Wi-Fi is up, MQTT is connected and has sent its discovery and a
    state, the web page listens and InfluxDB has had a line (those wanted);
    then the web page answers one GET /api/status. The tasks are left
    running (they are part of the steady state): gw.net_tasks."""
    import asyncio

    from app.supervisor import supervise
    from compat import ticks_diff, ticks_ms

    st = gw.status
    net = st.net
    if net is None:
        raise AssertionError("no network outputs built (wifi_ssid set?)")
    outs = _outputs(net)
    if sorted(outs) != sorted(want):
        raise AssertionError("network outputs %s, want %s: %s" % (
            sorted(outs), sorted(want), " / ".join([st.events.text(c, a) for t, c, a in st.events.recent()])))
    gw.net_tasks = [asyncio.create_task(supervise(name, fn, st)) for name, fn in net.tasks()]
    t0 = ticks_ms()
    while not ready(net, outs, fakes):
        if ticks_diff(ticks_ms(), t0) > timeout_ms:
            raise AssertionError("network outputs not in their steady state after %d ms: %s" % (
                timeout_ms, " | ".join(net.lines(ticks_ms()))))
        await asyncio.sleep_ms(50)
    web = outs.get("web")
    if web is not None:
        # in a task of its own: asyncio.wait_for (which net.web uses) cancels the waiting task
        # to wake it, and the webassembly port's top-level coroutine cannot be cancelled
        await asyncio.create_task(web.serve(fakes.reader, fakes.writer))


def ready(net, outs, fakes):
    if not net.wifi.up:
        return False
    m = outs.get("mqtt")
    if m is not None and not (m.connected and m._disc is None and m.disc_sent and m.state_bytes):
        return False
    w = outs.get("web")
    if w is not None and w.server is None:
        return False
    i = outs.get("influx")
    if i is not None and not i.lines_sent:
        return False
    return True


def check(gw, fakes):
    """What the network outputs did is what they should have done."""
    st = gw.status
    outs = _outputs(st.net)
    if st.task_restarts:
        raise AssertionError("%d task restarts" % st.task_restarts)
    m = outs.get("mqtt")
    b = fakes.sock.tcp
    if m is not None:
        if b.connects != 1 or b.subscribes != 1 or m.losses:
            raise AssertionError("MQTT: %d connects, %d subscribes, %d losses" % (b.connects, b.subscribes, m.losses))
        if b.publishes < m.disc_sent + 2 or m.disc_sent < 40:  # online + discovery + a state
            raise AssertionError("MQTT: %d publishes, %d discovery configs" % (b.publishes, m.disc_sent))
    w = outs.get("web")
    if w is not None:
        head = bytes(fakes.writer.head)
        if not head.startswith(b"HTTP/1.1 200") or fakes.writer.n < 1000 or fakes.starts != 1:
            raise AssertionError("web: GET /api/status answered %r, %d bytes" % (head, fakes.writer.n))
    i = outs.get("influx")
    if i is not None and (not fakes.sock.udp.sent or i.send_errors):
        raise AssertionError("InfluxDB: %d lines sent, %d errors" % (fakes.sock.udp.sent, i.send_errors))


async def stop(gw):
    """End every task the network outputs started, so that the interpreter
    falls quiet after a measurement: host/ram_wasm.mjs runs the next one in
    another interpreter of the same node process, where tasks still running
    here would compete with it (and have been seen to break an import there).
    mqtt_as's own tasks end when the client is no longer connected."""
    import asyncio

    for t in getattr(gw, "net_tasks", ()):
        t.cancel()
    net = gw.status.net
    for o in net.outputs if net is not None else ():
        c = getattr(o, "client", None)
        if c is not None:
            c._has_connected = False  # mqtt_as: _keep_connected ends
            c._isconnected = False  # _handle_msg ends
            for t in c._tasks:  # _keep_alive
                t.cancel()
    await asyncio.sleep_ms(1100)  # _keep_connected's 1 s sleep ends
