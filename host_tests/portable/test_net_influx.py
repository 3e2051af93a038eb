# net.influx: the InfluxDB line protocol built from the status model of a real gateway (a JK-PB
# capture decoded into its pack), parsed back here by the line protocol's rules (escaping, the
# i suffix of integers, floats with a point), several packs, numbers from integer fixed point,
# no allocation while a line is built (MicroPython), and the UDP sending: to a real socket where
# the runtime has them (CPython, unix port; the webassembly port skips those), nothing while Wi-Fi
# is down, every send error counted, never raised.
# CPython and MicroPython.
# unix heap: 384k -- a gateway of three packs besides the single-pack one

import asyncio

from fakes import load_pb_pack
from mpcompat import IS_MICROPYTHON, run_locked, skip
from test_app_gateway import make_gateway

from app import config as C
from compat import sleep_ms, ticks_ms
from net import influx as I
from pack import snapshot as S

DEV = "240ac4123456"


class FakeWifi:
    def __init__(self, up=True):
        self.up = up


class FakeNet:
    def __init__(self, status, dev=DEV, up=True):
        self.status = status
        self.device_id = dev
        self.wifi = FakeWifi(up)


def make(over=None, load=True):
    cfg = C.defaults()
    cfg["wifi_ssid"] = "sim"
    cfg["influx_host"] = "127.0.0.1"
    for k in over or {}:
        cfg[k] = over[k]
    gw, _ = make_gateway(cfg)
    if load:
        load_pb_pack(gw.source.snap)
        gw.source.fresh.data_ok(ticks_ms())
    return gw, I.Influx(FakeNet(gw.status))


# ------------------------------------------------------------------ a line-protocol parser


def _split(text, sep):
    """Split at every sep not escaped by a backslash; the escapes stay."""
    out, cur, i = [], "", 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            cur += text[i:i + 2]
            i += 2
            continue
        if ch == sep:
            out.append(cur)
            cur = ""
        else:
            cur += ch
        i += 1
    out.append(cur)
    return out


def _unescape(text):
    out, i = "", 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text):
            i += 1
        out += text[i]
        i += 1
    return out


def parse(line):
    """'m,k=v f=1i,g=2.5' -> (measurement, {tag: value}, {field: int or ('float', text)}).
    Asserts what InfluxDB requires: no timestamp, no newline, integer fields end in i, float
    fields are plain decimals."""
    assert "\n" not in line
    parts = _split(line, " ")
    assert len(parts) == 2, "measurement+tags, fields, no timestamp: %r" % line
    head = _split(parts[0], ",")
    tags = {}
    for kv in head[1:]:
        k, v = _split(kv, "=")
        tags[_unescape(k)] = _unescape(v)
    fields = {}
    for kv in _split(parts[1], ","):
        k, v = _split(kv, "=")
        assert k not in fields, "field %s twice" % k
        if v.endswith("i"):
            assert v[:-1].lstrip("-").isdigit(), kv
            fields[k] = int(v[:-1])
        else:
            num = v.lstrip("-")
            a, dot, b = num.partition(".")
            assert dot and a.isdigit() and b.isdigit(), "a float with a decimal point: %r" % kv
            fields[k] = ("float", v)
    return _unescape(head[0]), tags, fields


def milli(text):
    """'-1.234' -> -1234 (three decimals)."""
    neg = text.startswith("-")
    a, _, b = text.lstrip("-").partition(".")
    v = int(a) * 1000 + int((b + "000")[:3])
    return -v if neg else v


# ------------------------------------------------------------------------------------ lines


def test_line_carries_the_pack_with_the_line_protocol_types():
    gw, inf = make()
    s = gw.source.snap
    m, tags, f = parse(inf.text())
    assert m == "jkbms" and tags == {"device": DEV}
    assert f["voltage"] == ("float", "26.852") and milli(f["voltage"][1]) == s.pack_mv
    assert milli(f["current"][1]) == s.current_ma
    assert f["soc"] == s.soc_pct == 88 and f["soh"] == s.soh_pct
    assert f["cycles"] == s.cycles and f["alarms"] == s.alarms
    assert milli(f["cell_min"][1]) == s.cell_min_mv and milli(f["cell_max"][1]) == s.cell_max_mv
    assert milli(f["cell_delta"][1]) == s.cell_delta_mv
    assert milli(f["remaining_ah"][1]) == s.remaining_mah
    assert [milli(f["cell%d" % (i + 1)][1]) for i in range(s.cell_count)] == list(s.cells[:s.cell_count])
    assert "cell%d" % (s.cell_count + 1) not in f
    assert f["temp_mos"] == ("float", "30.0") and f["temp1"] == ("float", "29.6")
    assert "temp3" not in f  # the sensor JK reports as absent
    assert f["charge_fet"] == 1 and f["discharge_fet"] == 1 and f["bms_fresh"] == 1
    # power: V x I, 0.1 W, from integers
    assert f["power"] == ("float", "%d.%d" % divmod(s.pack_mv * s.current_ma // 100000, 10))
    lim = gw.status.lim
    assert milli(f["cvl"][1]) == lim.cvl_dv * 100 and milli(f["ccl"][1]) == lim.ccl_da * 100
    assert f["charge_enable"] == (1 if lim.charge_enable else 0)
    assert inf.text(1) is None  # one pack: one line


def test_without_data_only_the_link_and_the_limits():
    gw, inf = make(load=False)
    m, tags, f = parse(inf.text())
    assert sorted(f) == sorted(["bms_fresh", "cvl", "ccl", "dcl", "dvl", "charge_enable", "discharge_enable",
                                "soc_sent"])
    assert f["bms_fresh"] == 0 and f["ccl"] == ("float", "0.0")


def test_stale_data_still_reported_with_bms_fresh_0():
    gw, inf = make()
    gw.source.fresh.stale = True
    assert gw.status.bms_state(ticks_ms()) != 1
    _, _, f = parse(inf.text())
    assert f["bms_fresh"] == 0 and f["soc"] == 88


def test_negative_and_small_values_are_exact():
    gw, inf = make()
    s = gw.source.snap
    s.current_ma = -5
    s.temps[1] = -15
    s.temps[S.T_MOS] = -3
    s.temps[2] = 0
    _, _, f = parse(inf.text())
    assert f["current"] == ("float", "-0.005")
    assert f["temp1"] == ("float", "-1.5") and f["temp_mos"] == ("float", "-0.3") and f["temp2"] == ("float", "0.0")
    assert f["power"] == ("float", "-0.1")  # 26.852 V x 5 mA = 134 mW
    s.current_ma = -123456
    _, _, f = parse(inf.text())
    assert f["current"] == ("float", "-123.456")
    assert f["power"] == ("float", "-%d.%d" % divmod(s.pack_mv * 123456 // 100000, 10))


def test_power_matches_exact_arithmetic():
    seed = 7
    for _ in range(300):
        seed = (seed * 1103515245 + 12345) & 0x7FFFFFFF
        mv = seed % 70000
        seed = (seed * 1103515245 + 12345) & 0x7FFFFFFF
        ma = seed % 400001 - 200000
        exact = abs(mv * ma) // 100000
        assert I._power_dw(mv, ma) == (exact if ma >= 0 else -exact), (mv, ma)


def test_escaping_of_measurement_and_tags():
    assert I.escape("a b,c", ", ") == "a\\ b\\,c"
    assert I.escape("k=v,w x", ",= ") == "k\\=v\\,w\\ x"
    assert I.escape("back\\slash", ", ") == "back\\\\slash"
    gw, inf = make({"influx_measurement": "jk"})
    inf.net.device_id = "dev 1,a=b"  # no real device id has these: the escaping must hold anyway
    gw.status.cfg["influx_measurement"] = "bat tery,x"
    inf2 = I.Influx(inf.net)
    m, tags, f = parse(inf2.text())
    assert m == "bat tery,x" and tags == {"device": "dev 1,a=b"} and f["soc"] == 88


def test_a_line_too_long_is_not_sent_cut():
    gw, inf = make()
    inf.w = I.Writer(100)
    assert inf.text() is None and inf.too_long == 1


async def test_several_packs_a_line_each_after_the_battery():
    from test_app_packs import make_gw

    gw, _, _ = make_gw()
    await gw.links[0].cycle(1000)  # every pack polled once: the aggregate is built
    cfg = gw.cfg
    cfg["influx_host"] = "127.0.0.1"
    inf = I.Influx(FakeNet(gw.status))
    lines = []
    i = 0
    while inf.line(i):
        lines.append(parse(bytes(inf.w.data()).decode()))
        i += 1
    assert len(lines) == 4, lines
    m, tags, f = lines[0]
    assert tags == {"device": DEV} and f["packs_online"] == 3 and "cvl" in f
    for n in (1, 2, 3):
        m, tags, f = lines[n]
        p = gw.packs[n - 1]
        assert m == "jkbms" and tags == {"device": DEV, "pack": str(n)}
        assert milli(f["voltage"][1]) == p.snap.pack_mv and f["bms_fresh"] == 1
        assert "cvl" not in f  # the limits are the battery's
    assert [milli(x[2]["voltage"][1]) for x in lines[1:]] == [26800, 26850, 26900]


def test_a_line_is_built_without_allocation():
    gw, inf = make()
    inf.line(0)  # once outside the lock: any lazy state settles
    assert run_locked(inf.line, 0) is True
    assert inf.w.n > 400


# ------------------------------------------------------------------------------------- UDP


def _udp():
    """A bound, non-blocking UDP socket on 127.0.0.1 and its port."""
    try:
        import socket
    except ImportError:
        skip("no socket module on this runtime (webassembly)")
    if not hasattr(socket, "SOCK_DGRAM"):
        skip("no UDP sockets on this runtime")
    # the unix port's sockets have no getsockname: try ports until one binds
    for port in ((0,) if not IS_MICROPYTHON else range(48100, 48300)):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.bind(socket.getaddrinfo("127.0.0.1", port, 0, socket.SOCK_DGRAM)[0][-1])
        except OSError:
            s.close()
            continue
        s.setblocking(False)
        return s, (port or s.getsockname()[1])
    skip("no free UDP port")


async def _recv_all(s, ms):
    out = []
    t0 = ticks_ms()
    from compat import ticks_diff

    while ticks_diff(ticks_ms(), t0) < ms:
        try:
            out.append(s.recv(2048))
            continue
        except OSError:
            pass
        await sleep_ms(10)
    return out


async def test_lines_reach_a_udp_socket_only_while_wifi_is_up():
    rx, port = _udp()
    try:
        gw, inf = make({"influx_port": port})
        wifi = inf.net.wifi
        wifi.up = False
        inf.interval_ms = 60  # the config's minimum is 1 s: a quicker test
        task = asyncio.create_task(inf.run())
        got = await _recv_all(rx, 400)
        assert got == [] and inf.skipped >= 4 and inf.lines_sent == 0
        wifi.up = True
        got = await _recv_all(rx, 400)
        assert len(got) >= 4 and inf.lines_sent == len(got), (len(got), inf.lines(ticks_ms()))
        for d in got:
            m, tags, f = parse(d.decode())
            assert tags == {"device": DEV} and f["soc"] == 88
        wifi.up = False
        await sleep_ms(100)
        n = inf.lines_sent
        assert await _recv_all(rx, 300) == [] and inf.lines_sent == n
        assert inf.send_errors == 0
        assert "lines sent %d" % n in inf.lines(ticks_ms())[0]
        task.cancel()
        await sleep_ms(0)
    finally:
        rx.close()
        inf._close()


class FailingSock:
    def __init__(self, code):
        self.code = code
        self.closed = False
        self.tries = 0

    def sendto(self, data, addr):
        self.tries += 1
        raise OSError(self.code)

    def close(self):
        self.closed = True


def test_send_errors_are_counted_never_raised():
    gw, inf = make()
    inf.addr = ("127.0.0.1", 9)
    busy = FailingSock(12)  # ENOMEM: lwIP out of buffers -- the socket stays
    inf.sock = busy
    inf.send_period()
    inf.send_period()
    assert inf.send_errors == 2 and inf.sock is busy and not busy.closed and inf.lines_sent == 0
    warns = [e for e in gw.status.events.recent() if "InfluxDB" in gw.status.events.line(*e)]
    assert len(warns) == 1  # said once, then counted
    gone = FailingSock(113)  # EHOSTUNREACH: a fresh socket next period
    inf.sock = gone
    inf.send_period()
    assert inf.send_errors == 3 and gone.closed and inf.sock is None
    assert "send errors 3" in inf.lines(ticks_ms())[0] and "last error: send: " in inf.lines(ticks_ms())[0]


def test_the_name_lookup_is_not_repeated_every_period():
    gw, inf = make({"influx_host": "influx.invalid"})
    calls = []

    class NoDns:
        SOCK_DGRAM = 2

        def getaddrinfo(self, *a):
            calls.append(a)
            raise OSError(-2)

    real = I._socket
    I._socket = NoDns
    try:
        inf.send_period()
        inf.send_period()
        inf.send_period()
    finally:
        I._socket = real
    assert len(calls) == 1 and inf.send_errors == 1 and inf.addr is None
    assert "lookup of 'influx.invalid'" in inf.last_error

