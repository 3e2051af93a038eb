# The web page's server (net/web.py) on every runtime: request parsing, the
# limits (head, body, time, clients, a client that stops reading), the
# routes, the password, a config POST saved atomically to a store and a
# charge key applied at once -- with fake reader / writer streams; then the
# same over real sockets (asyncio.start_server on 127.0.0.1) where the
# runtime has them (CPython, the unix port; the webassembly port has no
# sockets: that part skips, saying so).
# unix heap: 448k -- the 64-bit unix port compiles the gateway, the web server, app.config and
# the console from source in one process (the device loads .mpy: docs/network.md "RAM")

import asyncio
import json
import sys

from fakes import FakeCan, FakeRecovery, FakeUart, MemStore, load_pb_pack
from mpcompat import skip

from app import config as C
from app import gateway as G
from compat import sleep_ms, ticks_add, ticks_diff, ticks_ms
from net import web as W

PW = "s3cret"


# ---------------------------------------------------------------- a gateway and its web page
class FakeWifi:
    def __init__(self):
        self.up = True
        self.ip = "127.0.0.1"


class FakeNet:
    """What net.hub.Net gives an output: status, store, config name, Wi-Fi."""

    def __init__(self, status, store):
        self.status = status
        self.store = store
        self.config_name = "gateway.json"
        self.wifi = FakeWifi()


def make(password=PW, store=None, **keys):
    cfg = C.defaults()
    cfg["web_port"] = 8080
    cfg["web_password"] = password
    for k in keys:
        cfg[k] = keys[k]
    out = []
    store = store if store is not None else MemStore()
    gw = G.Gateway(cfg, FakeUart({}), FakeCan(), FakeRecovery(), None, store, None, "gateway.json", out.append)
    load_pb_pack(gw.source.snap)
    web = W.Web(FakeNet(gw.status, store))
    return gw, web, store, out


class Reader:
    """The request's bytes, piece bytes per read; after them end of stream,
    or with hold nothing more ever (a client that keeps the connection open)."""

    def __init__(self, data, piece=100000, hold=False):
        self.data = data
        self.pos = 0
        self.piece = piece
        self.hold = hold
        self.reads = 0

    async def read(self, n):
        self.reads += 1
        if self.pos >= len(self.data):
            if self.hold:
                await sleep_ms(1000000)
            return b""
        k = min(n, self.piece)
        out = self.data[self.pos:self.pos + k]
        self.pos += len(out)
        return out


class Writer:
    """Records every write; with stall_after, drain() never returns once
    that many bytes were written (a client that stopped reading)."""

    def __init__(self, stall_after=None):
        self.chunks = []  # joined once when read: growing one bytes object would fragment the small heap
        self.writes = []
        self.closed = False
        self.stall_after = stall_after

    @property
    def data(self):
        return b"".join(self.chunks)

    def write(self, buf):
        self.writes.append(len(buf))
        self.chunks.append(bytes(buf))

    async def drain(self):
        if self.stall_after is not None and sum(self.writes) >= self.stall_after:
            await sleep_ms(1000000)
        await sleep_ms(0)

    def close(self):
        self.closed = True

    async def wait_closed(self):
        pass


def response(data):
    """(status, headers dict with lower-case names, body bytes)."""
    end = data.find(b"\r\n\r\n")
    assert end > 0, data
    lines = data[:end].decode().split("\r\n")
    parts = lines[0].split(" ")
    assert parts[0] == "HTTP/1.1", lines[0]
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return int(parts[1]), headers, data[end + 4:]


async def ask(web, raw, **kw):
    """Serve one fake connection (in a task of its own, as start_server
    does); the writer and the parsed answer."""
    w = Writer(kw.pop("stall_after", None))
    r = Reader(raw, **kw)
    await asyncio.create_task(web.serve(r, w))
    assert w.closed
    return w, r


def get(path):
    return ("GET %s HTTP/1.1\r\nHost: gw\r\nUser-Agent: test\r\n\r\n" % path).encode()


def post(obj, path="/api/config", text=None):
    body = text if text is not None else json.dumps(obj)
    return ("POST %s HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
        path, len(body), body)).encode()


async def ask_json(web, raw, **kw):
    w, _ = await ask(web, raw, **kw)
    code, headers, body = response(w.data)
    assert headers["content-type"] == "application/json", headers
    return code, json.loads(body)


class Limits:
    """Shorter time limits for a test (the module's values are read at each use)."""

    NAMES = ("REQUEST_MS", "WRITE_MS", "WAIT_MS", "BAD_PASSWORD_MS")

    def __init__(self, request_ms=None, write_ms=None, wait_ms=None, bad_password_ms=None):
        self.want = (request_ms, write_ms, wait_ms, bad_password_ms)

    def __enter__(self):
        self.old = [getattr(W, n) for n in self.NAMES]
        for n, v in zip(self.NAMES, self.want):
            if v is not None:
                setattr(W, n, v)

    def __exit__(self, *a):
        for n, v in zip(self.NAMES, self.old):
            setattr(W, n, v)


# ---------------------------------------------------------------- parsing
def test_parse_head_takes_method_path_length_and_strips_the_query():
    m, p, n, e = W.parse_head(b"POST /api/config?x=1 HTTP/1.1\r\nContent-Length: 12\r\nExpect: 100-continue")
    assert (m, p, n, e) == ("POST", "/api/config", 12, True)
    assert W.parse_head(b"GET / HTTP/1.0\r\nhost: a:80") == ("GET", "/", -1, False)
    for bad, code in ((b"GET /", 400), (b"GET / HTTP/2", 400), (b"GET x HTTP/1.1", 400),
                      (b"GET / HTTP/1.1\r\nno colon", 400), (b"POST / HTTP/1.1\r\nContent-Length: -1", 400),
                      (b"POST / HTTP/1.1\r\nContent-Length: 1e3", 400), (b"GET / HTTP/1.1\r\nX: \xff", 400),
                      (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked", 501)):
        try:
            W.parse_head(bad)
            raise AssertionError(bad)
        except W.HttpError as e:
            assert e.args[0] == code, (bad, e.args)


def test_json_parts_is_the_json_text_with_sorted_keys():
    obj = {"b": [1, "x", None, True], "a": {"z": -2, "y": [[0, 50]]}, "c": "q\"\n"}
    text = "".join(W.json_parts(obj))
    assert json.loads(text) == obj
    assert text.index('"a"') < text.index('"b"') < text.index('"c"')  # the same on every runtime


def test_the_body_limit_is_the_config_files():
    assert W.BODY_MAX == C.FILE_MAX


# ---------------------------------------------------------------- routes
async def test_the_page_comes_from_the_file_beside_the_module_in_small_writes():
    _, web, _, _ = make()
    assert web.page.endswith("net/page.html")
    chunks = []  # the file in the server's chunks: compared piece by piece (no 14 KB blocks on a small heap)
    with open(web.page, "rb") as f:
        while True:
            c = f.read(W.CHUNK)
            if not c:
                break
            chunks.append(c)
    assert len(chunks) > 4
    for path in ("/", "/index.html?v=2"):
        w, _ = await ask(web, get(path))
        code, headers, rest = response(w.chunks[0])  # the head is a write of its own
        assert code == 200 and headers["content-type"].startswith("text/html") and rest == b""
        assert headers["connection"] == "close"
        assert w.chunks[1:] == chunks, path
        assert max(w.writes) <= W.CHUNK


async def test_status_is_the_telemetry_document_with_events():
    from net import telemetry

    gw, web, _, _ = make()
    t = ticks_ms()
    gw.status.now = lambda: t  # one clock for both documents
    gw.events.emit(11, "hello from the test")
    code, obj = await ask_json(web, get("/api/status"))
    assert code == 200
    want = json.loads(telemetry.state(gw.status, t, events=True))
    obj.pop("heap_free", None)  # the one field that differs between two calls
    want.pop("heap_free", None)
    assert obj == want, [k for k in want if obj.get(k) != want[k]]
    assert obj["soc_percent"] == gw.source.snap.soc_pct and len(obj["cell_voltages_v"]) == 8, obj
    assert [e[2] for e in obj["events"]] == ["hello from the test"], obj["events"]


async def test_config_shows_the_schema_the_reboot_keys_and_never_a_secret():
    gw, web, _, _ = make(wifi_password="wifipw", mqtt_password="")
    gw.status.pending["can_period_ms"] = 500
    gw.status.pending["hold_s"] = gw.cfg["hold_s"]  # applied already: not pending
    # as on a device where nobody has typed on the console (other tests in this
    # process may have loaded it; it keeps app.config loaded)
    console = sys.modules.pop("outputs.console", None)
    try:
        code, obj = await ask_json(web, get("/api/config"))
        # app.config is out of RAM again after the request
        released = [m for m in ("app.config", "app.config_edit", "charge.schema") if m in sys.modules]
    finally:
        if console is not None:
            sys.modules["outputs.console"] = console
    assert code == 200
    assert released == [], released
    cfg = obj["config"]
    assert set(cfg) == set(C.SCHEMA)
    assert cfg["wifi_password"] == "***" and cfg["web_password"] == "***" and cfg["mqtt_password"] == ""
    assert "wifipw" not in json.dumps(obj) and PW not in json.dumps(obj)
    assert cfg["max_charge_a"] == 100 and cfg["charge_rate_table"] == C.SCHEMA["charge_rate_table"][0]
    assert obj["pending"] == {"can_period_ms": 500}
    assert obj["schema"]["max_charge_a"] == ["int", 0, 1000]
    assert obj["schema"]["protocol"][0] == "str" and "victron" in obj["schema"]["protocol"][2]
    assert obj["schema"]["web_password"] == ["text", 0, 64]
    assert "can_period_ms" in obj["reboot"] and "wifi_ssid" in obj["reboot"]
    assert "max_charge_a" not in obj["reboot"] and obj["reboot"] == sorted(obj["reboot"])
    assert sorted(obj["secrets"]) == sorted(C.SECRETS)  # the page shows these as password fields


async def test_a_config_request_waits_for_the_next_can_burst():
    gw, web, _, _ = make()
    tx = gw.tx
    tx.bursts = 5
    tx.sent_ms = ticks_add(ticks_ms(), -600)  # the last set went 600 ms ago, the next is due in 400

    async def burst_later():
        await sleep_ms(150)
        tx.sent_ms = ticks_ms()

    task = asyncio.create_task(burst_later())
    t0 = ticks_ms()
    code, _ = await ask_json(web, get("/api/config"))
    took = ticks_diff(ticks_ms(), t0)
    await task
    assert code == 200 and 140 <= took < 900, took  # begun right after the burst, not before
    tx.period_ms = 300  # (a short period keeps the test short)
    tx.sent_ms = ticks_add(ticks_ms(), -5000)  # frames stopped: at most a period of waiting
    t0 = ticks_ms()
    assert (await ask_json(web, get("/api/config")))[0] == 200
    assert tx.period_ms - 20 <= ticks_diff(ticks_ms(), t0) < tx.period_ms + 500
    t0 = ticks_ms()
    assert (await ask_json(web, get("/api/status")))[0] == 200  # no import: no waiting
    assert ticks_diff(ticks_ms(), t0) < 300


async def test_unknown_route_404_wrong_method_405_with_allow():
    _, web, _, _ = make()
    w, _ = await ask(web, get("/nope"))
    assert response(w.data)[0] == 404
    w, _ = await ask(web, post({}, path="/"))
    code, headers, _ = response(w.data)
    assert code == 405 and headers["allow"] == "GET"
    w, _ = await ask(web, b"DELETE /api/config HTTP/1.1\r\n\r\n")
    code, headers, _ = response(w.data)
    assert code == 405 and headers["allow"] == "GET, POST"
    assert web.errors == 3 and web.requests == 3


# ---------------------------------------------------------------- limits
async def test_a_head_over_1_kb_is_431_and_read_no_further():
    _, web, _, _ = make()
    raw = b"GET / HTTP/1.1\r\n" + b"X-Long: " + b"a" * 1100 + b"\r\n\r\n"
    w, r = await ask(web, raw, piece=100)
    assert response(w.data)[0] == 431
    assert r.pos <= W.HEAD_MAX + 100
    # just under the limit is fine
    raw = b"GET / HTTP/1.1\r\nX-Long: " + b"a" * (W.HEAD_MAX - 30) + b"\r\n\r\n"
    assert len(raw) - 4 <= W.HEAD_MAX
    w, _ = await ask(web, raw, piece=7)
    assert response(w.data)[0] == 200


async def test_a_body_over_the_limit_is_413_before_it_is_read():
    _, web, store, _ = make()
    raw = ("POST /api/config HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % (C.FILE_MAX + 1)).encode() + b"{" * 100
    w, r = await ask(web, raw, piece=60)
    assert response(w.data)[0] == 413
    assert r.pos < 200 and store.writes == 0
    w, _ = await ask(web, b"POST /api/config HTTP/1.1\r\n\r\n{}")
    assert response(w.data)[0] == 411


async def test_a_slow_request_is_408_after_the_time_limit():
    _, web, _, _ = make()
    with Limits(request_ms=150):
        t0 = ticks_ms()
        w, _ = await ask(web, b"GET / HTTP/1.1\r\nHost: a\r\n", hold=True)  # never ends its head
        took = ticks_diff(ticks_ms(), t0)
    assert response(w.data)[0] == 408
    assert 140 <= took < 1000, took
    assert web.timeouts == 1 and web.clients == 0


async def test_a_client_that_stops_reading_is_dropped():
    _, web, _, _ = make()
    with Limits(write_ms=100):
        t0 = ticks_ms()
        w, _ = await ask(web, get("/"), stall_after=100)
        took = ticks_diff(ticks_ms(), t0)
    assert 90 <= took < 1000, took
    assert len(w.data) <= 100 + W.CHUNK and web.timeouts == 1 and web.clients == 0


async def test_a_third_client_gets_503_at_once_while_two_are_connected():
    _, web, _, _ = make()
    with Limits(request_ms=300):
        slow = [Writer(), Writer()]
        tasks = [asyncio.create_task(web.serve(Reader(b"GET / HT", hold=True), w)) for w in slow]
        await sleep_ms(20)
        assert web.clients == 2
        t0 = ticks_ms()
        w, _ = await ask(web, get("/"))
        # at once: not after a place is free (300 ms); the margin is for a loaded test machine
        assert ticks_diff(ticks_ms(), t0) < 200
        assert response(w.data)[0] == 503 and web.busy == 1
        for t in tasks:
            await t
    assert web.clients == 0 and [response(w.data)[0] for w in slow] == [408, 408]
    w, _ = await ask(web, get("/"))
    assert response(w.data)[0] == 200


async def test_a_client_that_closes_early_gets_nothing_and_frees_its_place():
    _, web, _, _ = make()
    w, _ = await ask(web, b"GET / HTTP/1.1\r\nHo")
    assert w.data == b"" and web.clients == 0
    w, _ = await ask(web, post({"password": PW, "config": {}})[:-5])
    assert w.data == b""


# ---------------------------------------------------------------- POST /api/config
async def test_changes_need_the_password_and_a_wrong_one_waits():
    assert W.BAD_PASSWORD_MS == 1000
    with Limits(bad_password_ms=200):  # (shorter for the test)
        await _passwords()


async def _passwords():
    _, web, store, _ = make()
    code, obj = await ask_json(web, post({"password": "nope", "config": {"max_charge_a": 40}}))
    assert code == 403 and obj["saved"] is False and web.bad_passwords == 1
    code, obj = await ask_json(web, post({"password": PW, "config": {"max_charge_a": 40}}))
    assert code == 429  # within a second of the wrong one: not even checked
    await sleep_ms(W.BAD_PASSWORD_MS + 20)
    code, obj = await ask_json(web, post({"config": {"max_charge_a": 40}}))
    assert code == 403
    assert store.writes == 0
    _, web, store, _ = make(password="")
    code, obj = await ask_json(web, post({"password": "", "config": {"max_charge_a": 40}}))
    assert code == 403 and "web_password is not set" in obj["errors"][0] and store.writes == 0


async def test_a_charge_key_applies_at_once_the_others_after_a_reboot_saved_atomically():
    gw, web, store, out = make(wifi_password="wifipw")
    code, obj = await ask_json(web, post({"password": PW, "config": {
        "max_charge_a": 40, "can_period_ms": 500, "protocol": "pylon", "wifi_password": "***",
        "web_password": "***", "hold_s": gw.cfg["hold_s"]}}))
    assert code == 200, obj
    assert obj["saved"] is True
    assert obj["applied"] == ["max_charge_a"] and obj["reboot"] == ["can_period_ms"]
    assert isinstance(obj["messages"], list)
    # charge key: in force now, in the controller's next decision
    assert gw.cfg["max_charge_a"] == 40
    now = ticks_ms()
    for _ in range(40):
        now = ticks_add(now, 1000)
        gw.source.fresh.data_ok(now)
        gw.policy.decide(gw.source.snap, gw.source.fresh.state(now), now)
    assert gw.policy.lim.ccl_da == 400
    # the other: pending, in the file, not in force
    assert gw.cfg["can_period_ms"] == 1000 and gw.status.pending["can_period_ms"] == 500
    assert store.writes == 1
    saved = json.loads(store.files["gateway.json"])
    assert saved["max_charge_a"] == 40 and saved["can_period_ms"] == 500
    assert saved["wifi_password"] == "wifipw" and saved["web_password"] == PW  # "***": unchanged
    assert any("config changed on the web page: keys max_charge_a, can_period_ms (reboot to apply can_period_ms)"
               in line for line in out)
    assert web.saves == 1
    # what GET shows now; a value back to the running one is no longer pending
    _, cfg = await ask_json(web, get("/api/config"))
    assert cfg["config"]["max_charge_a"] == 40 and cfg["pending"] == {"can_period_ms": 500}
    code, obj = await ask_json(web, post({"password": PW, "config": {"can_period_ms": 1000}}))
    assert code == 200 and obj["applied"] == ["can_period_ms"] and obj["reboot"] == []
    assert "can_period_ms" not in gw.status.pending
    assert json.loads(store.files["gateway.json"])["can_period_ms"] == 1000
    code, obj = await ask_json(web, post({"password": PW, "config": {"can_period_ms": 1000}}))
    assert code == 200 and obj["saved"] is False and obj["messages"] == ["nothing changed"]
    assert store.writes == 2


async def test_any_bad_value_saves_nothing_and_says_why():
    gw, web, store, _ = make()
    code, obj = await ask_json(web, post({"password": PW, "config": {
        "max_charge_a": 40, "can_period_ms": 5, "nosuch": 1, "protocol": "x", "hold_s": True}}))
    assert code == 400 and obj["saved"] is False
    text = " | ".join(obj["errors"])
    assert "can_period_ms: must be 200..5000" in text and "nosuch: unknown key" in text
    assert "protocol: must be one of" in text and "hold_s: must be an integer" in text
    assert gw.cfg["max_charge_a"] == 100 and store.writes == 0 and gw.status.pending == {}
    # cross-key rules as the console's set: float above bulk is refused
    code, obj = await ask_json(web, post({"password": PW, "config": {"float_cell_mv": 3500}}))
    assert code == 400 and "float_cell_mv must be <= bulk_cell_mv" in obj["errors"][0]
    assert gw.cfg["float_cell_mv"] == 3375 and store.writes == 0
    for bad in ("not json", "[1, 2]", '{"password": "%s", "config": [1]}' % PW):
        code, obj = await ask_json(web, post(None, text=bad))
        assert code == 400 and obj["saved"] is False, bad
    assert store.writes == 0


async def test_boot_rules_on_the_whole_config_are_reported():
    gw, web, store, _ = make(wifi_ssid="home")
    code, obj = await ask_json(web, post({"password": PW, "config": {"mqtt_host": "broker.lan"}}))
    assert code == 200 and obj["reboot"] == ["mqtt_host"]
    assert any("is a name: its DNS lookup blocks" in m for m in obj["messages"]), obj["messages"]


async def test_a_failed_save_applies_nothing():
    class BrokenStore(MemStore):
        def write_atomic(self, name, text):
            raise OSError(28)

    gw, web, _, _ = make(store=BrokenStore())
    code, obj = await ask_json(web, post({"password": PW, "config": {"max_charge_a": 40, "can_period_ms": 500}}))
    assert code == 500 and "save failed" in obj["errors"][0]
    assert gw.cfg["max_charge_a"] == 100 and gw.status.pending == {}


async def test_the_console_and_the_web_page_share_the_pending_changes():
    gw, web, store, _ = make()
    gw.execute("set can_period_ms 500")
    gw.execute("set hold_s 10")
    code, obj = await ask_json(web, post({"password": PW, "config": {"hold_s": 20}}))
    assert code == 200 and obj["applied"] == ["hold_s"]
    saved = json.loads(store.files["gateway.json"])
    assert saved["hold_s"] == 20 and saved["can_period_ms"] == 500  # the console's pending change kept
    assert "hold_s = 20" in gw.execute("get hold_s")[0]
    assert "saved" in gw.execute("save")[0]
    assert json.loads(store.files["gateway.json"])["hold_s"] == 20


async def test_lines_say_the_state_and_the_counters():
    _, web, _, _ = make()
    assert "not listening (waiting for Wi-Fi)" in web.lines(0)[0]
    await ask(web, get("/nope"))
    line = web.lines(0)[0]
    assert "requests 1" in line and "errors 1" in line and "refused busy 0" in line


# ---------------------------------------------------------------- real sockets
def _free_port():
    import socket

    base = 20000 + (ticks_ms() * 7919) % 30000
    for k in range(50):
        p = base + k
        s = socket.socket()
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(socket.getaddrinfo("0.0.0.0", p)[0][-1])
            return p
        except OSError:
            continue
        finally:
            s.close()
    raise AssertionError("no free port")


async def _http(port, raw, read=True):
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(raw)
    await w.drain()
    data = b""
    if read:
        while True:
            chunk = await r.read(4096)
            if not chunk:
                break
            data += chunk
    w.close()
    await w.wait_closed()
    return data


async def test_over_real_sockets_the_server_answers_limits_and_rebinds():
    if not hasattr(asyncio, "start_server"):
        skip("this runtime (%s) has no sockets: the server is tested with fake streams only" % sys.platform)
    gw, web, store, out = make()
    web.port = _free_port()
    wifi = web.net.wifi
    late = [0]

    async def can_like():  # a task that wants to run every 10 ms, as the CAN bursts do
        t = ticks_ms()
        while True:
            await sleep_ms(10)
            now = ticks_ms()
            late[0] = max(late[0], ticks_diff(now, t) - 10)
            t = now

    with Limits(request_ms=300, wait_ms=100):  # (the Wi-Fi watch shorter for the test)
        task = asyncio.create_task(web.run())
        tick = asyncio.create_task(can_like())
        await sleep_ms(50)
        assert any(("web page on http://127.0.0.1:%d/" % web.port) in line for line in out), out
        code, _, body = response(await _http(web.port, get("/")))
        assert code == 200 and body.startswith(b"<!doctype html>")
        code, _, body = response(await _http(web.port, get("/api/config")))
        assert code == 200 and json.loads(body)["config"]["web_password"] == "***"
        code, _, body = response(await _http(web.port, post({"password": PW, "config": {"max_charge_a": 30}})))
        assert code == 200 and json.loads(body)["applied"] == ["max_charge_a"]
        assert gw.cfg["max_charge_a"] == 30 and json.loads(store.files["gateway.json"])["max_charge_a"] == 30
        # two clients that hold their connection open; a third gets 503 at once, then the two 408
        held = []
        for _ in range(2):
            r, w = await asyncio.open_connection("127.0.0.1", web.port)
            w.write(b"GET / HTTP/1.1\r\n")
            await w.drain()
            held.append((r, w))
        await sleep_ms(30)
        assert web.clients == 2
        code = response(await _http(web.port, get("/")))[0]
        assert code == 503
        for r, w in held:
            data = b""
            while True:
                chunk = await r.read(1024)
                if not chunk:
                    break
                data += chunk
            assert response(data)[0] == 408
            w.close()
            await w.wait_closed()
        assert web.clients == 0 and web.busy == 1 and web.timeouts == 2
        # nothing here held the other tasks up (a blocking read would for the 300 ms the clients hold;
        # the margin is for a loaded test machine)
        assert late[0] < 250, late[0]
        # Wi-Fi lost: the port closes; back: it is opened again (said once per address)
        wifi.up = False
        await sleep_ms(W.WAIT_MS + 100)
        assert web.server is None and "not listening" in web.lines(0)[0]
        try:
            await _http(web.port, get("/"))
            refused = False
        except OSError:
            refused = True
        assert refused
        wifi.up = True
        await sleep_ms(W.WAIT_MS + 100)
        assert response(await _http(web.port, get("/api/status")))[0] == 200
        assert sum(1 for line in out if "web page on" in line) == 1
        task.cancel()
        tick.cancel()
        await sleep_ms(20)


async def test_a_port_in_use_is_said_once_and_tried_again():
    if not hasattr(asyncio, "start_server"):
        skip("this runtime (%s) has no sockets" % sys.platform)
    import socket

    _, web, _, out = make()
    web.port = _free_port()
    s = socket.socket()  # another program holds the port
    s.bind(socket.getaddrinfo("0.0.0.0", web.port)[0][-1])
    s.listen(1)
    old = W.RETRY_MS
    W.RETRY_MS = 50
    try:
        task = asyncio.create_task(web.run())
        await sleep_ms(300)
        said = [line for line in out if "cannot listen on port %d" % web.port in line]
        assert len(said) == 1 and web.server is None, out
        assert "not listening (port %d" % web.port in web.lines(0)[0]
        s.close()  # freed: the next attempt listens
        await sleep_ms(300)
        assert web.server is not None
        assert response(await _http(web.port, get("/api/status")))[0] == 200
        task.cancel()
        await sleep_ms(20)
    finally:
        W.RETRY_MS = old
        s.close()
