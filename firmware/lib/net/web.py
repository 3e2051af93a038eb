# The web page and its JSON API (docs/network.md "Web page"): a small
# HTTP/1.1 server of our own on asyncio.start_server, one request per
# connection (Connection: close). Smaller than microdot on the heap
# (docs/network.md "Web page": measured) and bounded everywhere, because a
# browser or a scanner on the LAN must never cost the CAN output anything:
#   - at most MAX_CLIENTS connections; one more gets 503 at once;
#   - request line + headers <= HEAD_MAX (431), a body <= BODY_MAX (413),
#     the whole request within REQUEST_MS (408), each write within WRITE_MS
#     (a client that stops reading is dropped);
#   - every socket operation awaits; answers go out in <= CHUNK-byte writes,
#     the page straight from the flash, JSON encoded piece by piece, so
#     neither is ever whole in RAM.
# Routes: GET / (the page), GET /api/status (net.telemetry), GET and POST
# /api/config (app.config_edit: the console's rules; POST needs
# web_password). The listening socket is opened once Wi-Fi is up, closed
# when it goes down and opened again when it is back.

import asyncio
import json

from compat import sleep_ms, ticks_diff, ticks_ms
from outputs import events as E

MAX_CLIENTS = 2
HEAD_MAX = 1024
BODY_MAX = 4096  # = app.config.FILE_MAX (a test holds them equal): a config is never larger
REQUEST_MS = 5000
WRITE_MS = 3000
BUSY_MS = 200  # a client refused with 503: time for its request to arrive
CHUNK = 512
WAIT_MS = 500  # Wi-Fi watch
RETRY_MS = 10000  # after the port could not be opened
AFTER_BURST_POLL_MS = 10
BAD_PASSWORD_MS = 1000  # after a wrong password, none is checked for this long: no fast guessing
PAGE = "page.html"

_REASONS = {200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
            408: "Request Timeout", 411: "Length Required", 413: "Payload Too Large",
            429: "Too Many Requests", 431: "Request Header Fields Too Large", 500: "Internal Server Error",
            501: "Not Implemented", 503: "Service Unavailable"}
_ROUTES = {"/": "GET", "/index.html": "GET", "/api/status": "GET", "/api/config": "GET, POST"}

try:
    from asyncio import wait_for_ms
except ImportError:  # CPython
    async def wait_for_ms(aw, ms):
        return await asyncio.wait_for(aw, ms / 1000)


def _here():
    f = __file__  # /lib/net/web.mpy on the device; the page lies beside it
    i = f.rfind("/")
    return f[:i + 1] if i >= 0 else ""


class HttpError(Exception):
    """An answer that ends the request: status, and a short reason."""


def parse_head(head):
    """Request line and headers (bytes, without the blank line) ->
    (method, path, content length or -1, expects 100-continue)."""
    try:
        text = head.decode()
    except UnicodeError:
        raise HttpError(400, "not UTF-8") from None
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1.") or not parts[1].startswith("/"):
        raise HttpError(400, "bad request line")
    length = -1
    expect = False
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon:
            raise HttpError(400, "bad header line")
        name = name.strip().lower()
        value = value.strip()
        if name == "content-length":
            if not value.isdigit():
                raise HttpError(400, "bad Content-Length")
            length = int(value)
        elif name == "transfer-encoding":
            raise HttpError(501, "no chunked bodies: send Content-Length")
        elif name == "expect" and value.lower() == "100-continue":
            expect = True
    path = parts[1]
    q = path.find("?")
    return parts[0], path[:q] if q >= 0 else path, length, expect


def json_parts(obj):
    """JSON text of obj piece by piece (dict keys sorted: the same text on
    every runtime), so a large answer is never one string in RAM."""
    if isinstance(obj, dict):
        yield "{"
        first = True
        for k in sorted(obj):
            yield ("%s: " if first else ", %s: ") % json.dumps(k)
            first = False
            yield from json_parts(obj[k])
        yield "}"
    elif isinstance(obj, (list, tuple)):
        yield "["
        for i in range(len(obj)):
            if i:
                yield ", "
            yield from json_parts(obj[i])
        yield "]"
    else:
        yield json.dumps(obj)


class Out:
    """The answer to one client: text collected up to CHUNK bytes, each
    write awaited (drain) within WRITE_MS."""

    def __init__(self, writer):
        self.w = writer
        self.parts = []
        self.n = 0
        self.sent = 0

    async def send(self, data):
        mv = memoryview(data)  # data is not changed afterwards: slices need no copy
        for i in range(0, len(data), CHUNK):
            self.w.write(mv[i:i + CHUNK])
            await wait_for_ms(self.w.drain(), WRITE_MS)
        self.sent += len(data)

    async def add(self, text):
        self.parts.append(text)
        self.n += len(text)
        if self.n >= CHUNK:
            await self.flush()

    async def flush(self):
        if self.parts:
            data = "".join(self.parts).encode()
            self.parts = []
            self.n = 0
            await self.send(data)


def head_text(code, ctype, length=-1, extra=""):
    """Status line and headers; without a length the close ends the body."""
    return "HTTP/1.1 %d %s\r\nContent-Type: %s\r\n%sCache-Control: no-store\r\nConnection: close\r\n%s\r\n" % (
        code, _REASONS.get(code, ""), ctype, ("Content-Length: %d\r\n" % length) if length >= 0 else "", extra)


class Web:
    name = "web"

    def __init__(self, net):
        self.net = net
        self.st = net.status
        self.port = self.st.cfg["web_port"]
        self.page = _here() + PAGE
        self.server = None
        self.url = ""
        self.why = "waiting for Wi-Fi"
        self.clients = 0
        self.requests = 0  # answered (any status)
        self.busy = 0  # refused with 503: MAX_CLIENTS already connected
        self.timeouts = 0  # 408, or dropped: stopped reading
        self.errors = 0  # 4xx / 5xx answers (timeouts and 503 not counted here)
        self.saves = 0
        self.bad_passwords = 0
        self._bad_ms = ticks_ms() - BAD_PASSWORD_MS

    # ------------------------------------------------------------ the listening socket
    async def run(self):
        wifi = self.net.wifi
        said = ""
        while True:
            while not wifi.up:
                await sleep_ms(WAIT_MS)
            try:
                srv = await asyncio.start_server(self.serve, "0.0.0.0", self.port, backlog=MAX_CLIENTS)
            except OSError as e:
                why = "port %d: %r" % (self.port, e)
                if why != self.why:  # said once, not at every retry
                    self.st.events.emit(E.NET_WARN, "web page: cannot listen on %s, retrying every %d s" % (
                        why, RETRY_MS // 1000))
                self.why = why
                await sleep_ms(RETRY_MS)
                continue
            ip = wifi.ip
            self.server = srv
            self.url = "http://%s:%d/" % (ip, self.port)
            self.why = ""
            if self.url != said:  # once per address, not at every reconnect of a flapping link
                said = self.url
                self.st.events.emit(E.NET, "web page on " + self.url)
            try:
                while wifi.up and wifi.ip == ip:
                    await sleep_ms(WAIT_MS)
            finally:
                # Wi-Fi lost (or a new address): the socket is opened again when it is back
                self.server = None
                self.why = "waiting for Wi-Fi"
                srv.close()
                try:
                    await wait_for_ms(srv.wait_closed(), WRITE_MS)
                except (asyncio.TimeoutError, OSError):
                    pass

    # ------------------------------------------------------------ one connection
    async def serve(self, reader, writer):
        """One client (start_server's callback): never raises."""
        if self.clients >= MAX_CLIENTS:
            self.busy += 1
            try:
                # take what came of the request first: a socket closed with unread
                # bytes is reset, and the reset can overtake the answer
                await wait_for_ms(reader.read(HEAD_MAX), BUSY_MS)
                writer.write((head_text(503, "text/plain", 5) + "busy\n").encode())  # sent at once, or not at all
            except (asyncio.TimeoutError, OSError):
                pass
            await self._close(writer, False)
            return
        self.clients += 1
        drop = True
        try:
            drop = await self.handle(reader, writer)
        finally:
            self.clients -= 1
            await self._close(writer, drop)

    async def _close(self, writer, drop):
        try:
            if drop and hasattr(writer, "transport"):
                writer.transport.abort()  # CPython: no waiting for a client that does not read
            writer.close()
            await wait_for_ms(writer.wait_closed(), WRITE_MS)
        except (OSError, asyncio.TimeoutError):
            pass

    async def handle(self, reader, writer):
        """Read one request, answer it; True when the connection must be
        dropped (it timed out or failed) rather than closed."""
        out = Out(writer)
        try:
            try:
                method, path, body = await self.read_request(reader, writer)
            except HttpError as e:
                await self.error(out, e.args[0], e.args[1])
                return False
            except asyncio.TimeoutError:
                self.timeouts += 1
                try:
                    writer.write((head_text(408, "text/plain", 8) + "timeout\n").encode())
                except OSError:
                    pass
                return True
            if body is None:
                return True  # closed before a whole request
            await self.route(out, method, path, body)
            return False
        except asyncio.TimeoutError:
            self.timeouts += 1  # the client stopped reading
        except OSError:
            pass  # reset by the client
        except MemoryError:
            self.errors += 1
        except Exception as e:  # noqa: BLE001 - a bug in one answer must not stop the server
            self.errors += 1
            self.st.events.emit(E.NET_WARN, "web page: %r" % (e,))
        return True

    async def read_request(self, reader, writer):
        """(method, path, body bytes); body None when the client closed
        early. Raises HttpError, or asyncio.TimeoutError after REQUEST_MS."""
        t0 = ticks_ms()
        data = b""
        while True:
            end = data.find(b"\r\n\r\n")
            if end >= 0:
                break
            if len(data) > HEAD_MAX:
                raise HttpError(431, "request line + headers over %d bytes" % HEAD_MAX)
            chunk = await self._read(reader, HEAD_MAX + 4 - len(data), t0)
            if not chunk:
                return None, None, None
            data += chunk
        if end > HEAD_MAX:
            raise HttpError(431, "request line + headers over %d bytes" % HEAD_MAX)
        method, path, length, expect = parse_head(data[:end])
        allowed = _ROUTES.get(path)
        if allowed is None:
            raise HttpError(404, "no such page")
        if method not in allowed.split(", "):
            raise HttpError(405, "use " + allowed)
        body = data[end + 4:]
        if method != "POST":
            return method, path, b""
        if length < 0:
            raise HttpError(411, "Content-Length needed")
        if length > BODY_MAX:
            raise HttpError(413, "body over %d bytes" % BODY_MAX)
        if expect and len(body) < length:
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # curl waits for this before a larger body
            await wait_for_ms(writer.drain(), WRITE_MS)
        while len(body) < length:
            chunk = await self._read(reader, length - len(body), t0)
            if not chunk:
                return None, None, None
            body += chunk
        return method, path, body[:length]

    async def _read(self, reader, n, t0):
        left = REQUEST_MS - ticks_diff(ticks_ms(), t0)
        if left <= 0:
            raise asyncio.TimeoutError
        return await wait_for_ms(reader.read(n), left)

    # ------------------------------------------------------------ answers
    async def error(self, out, code, why):
        self.errors += 1
        self.requests += 1
        text = "%d %s: %s\n" % (code, _REASONS.get(code, ""), why)
        extra = ("Allow: %s\r\n" % why[4:]) if code == 405 else ""  # why: "use GET, POST"
        await out.send((head_text(code, "text/plain", len(text), extra) + text).encode())

    async def json(self, out, code, doc):
        """doc: a JSON text (net.telemetry builds its own), or its pieces."""
        self.requests += 1
        await out.add(head_text(code, "application/json"))
        if isinstance(doc, str):
            await out.add(doc)
        else:
            for piece in doc:
                await out.add(piece)
        await out.add("\n")
        await out.flush()

    async def route(self, out, method, path, body):
        if path == "/" or path == "/index.html":
            await self.send_page(out)
            return
        if path == "/api/config":
            await self.after_burst()
        # the answer is decided (or begun) before anything is sent: a failure there is still a clean 500
        try:
            code, obj = self.answer(method, path, body)
        except MemoryError:
            raise
        except Exception as e:  # noqa: BLE001 - e.g. a bug in the telemetry: said, the server goes on
            self.st.events.emit(E.NET_WARN, "web page %s %s: %r" % (method, path, e))
            await self.error(out, 500, repr(e))
            return
        await self.json(out, code, obj)

    async def after_burst(self):
        """Wait (at most a CAN period) until a CAN frame set has just gone.
        A config request imports app.config and its schemas (21 KB of
        modules; an import blocks the whole interpreter): begun right after a
        burst, it has the rest of the period before the next one is due
        (docs/network.md "Isolation")."""
        tx = self.st.tx
        t0 = ticks_ms()
        while tx.bursts and ticks_diff(ticks_ms(), t0) < tx.period_ms:
            if ticks_diff(ticks_ms(), tx.sent_ms) < tx.period_ms // 4:
                return
            await sleep_ms(AFTER_BURST_POLL_MS)

    def answer(self, method, path, body):
        """(status, JSON text or its pieces)."""
        if path == "/api/status":
            from net import telemetry  # the same text as MQTT's state topic, with the events
            st = self.st
            return 200, telemetry.state(st, st.now(), events=True)
        if method == "POST":
            code, reply = self.post_config(body)
            return code, json_parts(reply)
        from app import config_edit as CE  # app.config was unloaded after boot: loaded for this request
        try:
            return 200, CE.describe(self.st)  # pieces: the generator keeps what it needs while it runs
        finally:
            CE.release()

    async def send_page(self, out):
        try:
            f = open(self.page, "rb")
        except OSError:
            await self.error(out, 404, "no %s beside %s (make device copies it)" % (PAGE, self.page[:-len(PAGE)]))
            return
        try:
            self.requests += 1
            await out.send(head_text(200, "text/html; charset=utf-8").encode())
            while True:
                data = f.read(CHUNK)  # from the flash, one chunk at a time
                if not data:
                    break
                await out.send(data)
        finally:
            f.close()

    def post_config(self, body):
        """(status, reply) for POST /api/config."""
        try:
            req = json.loads(body.decode())
        except (ValueError, UnicodeError):
            return 400, {"saved": False, "errors": ["not JSON"]}
        if not isinstance(req, dict):
            return 400, {"saved": False, "errors": ['send {"password": ..., "config": {key: value}}']}
        want = self.st.cfg["web_password"]
        if not want:
            return 403, {"saved": False, "errors": ["web_password is not set: the page takes no changes "
                                                    "(set it on the console, save, reboot)"]}
        if ticks_diff(ticks_ms(), self._bad_ms) < BAD_PASSWORD_MS:
            return 429, {"saved": False, "errors": ["wait a second after a wrong password"]}
        pw = req.get("password")
        if not isinstance(pw, str) or not same(pw, want):
            self.bad_passwords += 1
            self._bad_ms = ticks_ms()
            return 403, {"saved": False, "errors": ["wrong password"]}
        from app import config_edit as CE
        try:
            code, reply = CE.submit(self.st, self.net.store, self.net.config_name, req.get("config"))
        finally:
            CE.release()
        if reply.get("saved"):
            self.saves += 1
            text = "config changed on the web page: keys " + ", ".join(reply["applied"] + reply["reboot"])
            if reply["reboot"]:
                text += " (reboot to apply %s)" % ", ".join(reply["reboot"])
            self.st.events.emit(E.NET, text)
        return code, reply

    def lines(self, now):
        head = ("web page on " + self.url) if self.server is not None else "web page: not listening (%s)" % self.why
        return [head + "; clients %d, requests %d, refused busy %d, timed out %d, errors %d, config saves %d, "
                "wrong passwords %d" % (self.clients, self.requests, self.busy, self.timeouts, self.errors,
                                        self.saves, self.bad_passwords)]


def same(a, b):
    """a == b in a time that does not tell how much of a guess was right."""
    if len(a) != len(b):
        return False
    d = 0
    for i in range(len(a)):
        d |= ord(a[i]) ^ ord(b[i])
    return d == 0
