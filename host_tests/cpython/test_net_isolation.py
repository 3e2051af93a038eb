# Issue 13 item 5, measured: no network fault delays the CAN output. One whole-firmware simulation
# (tools/simulate.py: the firmware under the MicroPython unix port with the stub network of
# host/fakenet, MQTT to a real mosquitto started here, the web page, InfluxDB lines to a UDP socket
# here, every output at its shortest interval) goes through the faults one after the other:
#   broker-down   mosquitto killed, started again on the same port 6 s later
#   broker-hung   mosquitto stopped (SIGSTOP) for 6 s: its connection stays open and unanswered
#   slow-clients  for 8 s, more clients than the web server takes (MAX_CLIENTS): some connect and
#                 send nothing, some send a request one byte every 300 ms, some ask for the page
#                 and never read it (a small receive buffer); each closed one comes back at once
#   wifi-storm    the stub WLAN's link flaps up and down every 150-450 ms for 8 s
# The CAN cadence -- the intervals between the periodic frame sets in the candump log, as the
# simulated inverter receives them -- must stay within 5 % of can_period_ms (the mean over each
# fault's window, the fault and its recovery), and every single interval must be 0.75..1.25
# periods: a network operation that blocked the interpreter for a quarter of a period shows (the
# host's own scheduling adds up to ~0.1-0.2 on a loaded machine; test_simulation's strict bound is
# 0.8..1.2). Each window's figures are printed (pytest -s shows them) and are in every failure.
# Evidence that each fault happened and was survived is checked too (the subscriber's gaps, the
# web server's refusals, the stub's drops, the outputs' counters at the end).
# One run of 56 s (once more when the host stalled it: disturbed()); skipped with the reason when
# mosquitto, paho-mqtt or mqtt_as is absent.
import json
import re
import select
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from statistics import mean

import pytest
import test_simulation as U
from net_services import Broker, free_port, missing

ROOT = Path(__file__).resolve().parents[2]
SIMULATE = ROOT / "tools" / "simulate.py"

PERIOD = 1.0  # s, can_period_ms (default)
MEAN_TOL = 0.05  # the 5 %
WORST = 1.25  # periods: the longest single interval allowed ...
LEAST = 0.75  # ... and the shortest (a late set is followed by one on time: a short interval)
SECONDS = 56
DEV = "240ac4123456"  # host/fakenet/machine.py unique_id()
# the faults' times (s after the start) and the windows the cadence is measured in
KILL, RESTART = 10.0, 16.0
STOP, CONT = 23.0, 29.0
LORIS = (33.0, 41.0)
STORM = (44.0, 8.0)
WINDOWS = {
    "baseline": (3.0, KILL),
    "broker-down": (KILL, CONT - 8.0),  # to 5 s after the restart: reconnected by then
    "broker-hung": (STOP, LORIS[0]),
    "slow-clients": (LORIS[0], LORIS[1] + 2.0),
    "wifi-storm": (STORM[0], STORM[0] + STORM[1] + 2.0),
}


MISSING = missing()
if MISSING:
    print("test_net_isolation: skipped: %s" % MISSING)
pytestmark = pytest.mark.skipif(MISSING is not None, reason=str(MISSING))


class Sub:
    """A paho subscriber to the gateway's state topic (reconnecting on its own); arrival times."""

    def __init__(self, port):
        import paho.mqtt.client as mqtt

        self.times = []
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self.c.on_connect = lambda c, u, f, rc, p=None: c.subscribe("jkgw/%s/state" % DEV)
        self.c.on_message = lambda c, u, m: self.times.append(time.monotonic())
        self.c.reconnect_delay_set(0.2, 1)
        self.c.connect_async("127.0.0.1", port, keepalive=5)
        self.c.loop_start()

    def close(self):
        self.c.loop_stop()
        self.c.disconnect()


class SlowClients:
    """More web clients than the server takes, each slow in its own way; a closed one reconnects.
    Kinds: idle (connects, sends nothing), trickle (a request one byte every 300 ms), noread (asks
    for the page with a 1 KB receive buffer and never reads)."""

    KINDS = ("idle", "idle", "trickle", "trickle", "noread", "noread")
    REQUEST = b"GET /api/status HTTP/1.1\r\nHost: gw\r\nX-Slow: " + b"a" * 200

    def __init__(self, port):
        self.port = port
        self.opened = self.closed_by_server = self.refused = 0
        self.codes = {}  # status code -> count, of the replies that came
        self.stop = threading.Event()

    def _open(self, kind):
        s = socket.socket()
        if kind == "noread":
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
        s.settimeout(1)
        try:
            s.connect(("127.0.0.1", self.port))
        except OSError:
            s.close()
            self.refused += 1
            return None
        s.setblocking(False)
        self.opened += 1
        if kind == "noread":
            s.sendall(b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n")
        return [s, kind, time.monotonic(), 0, b""]  # socket, kind, opened at, bytes trickled, reply

    def run(self, seconds):
        slots = [None] * len(self.KINDS)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            now = time.monotonic()
            for i, kind in enumerate(self.KINDS):
                slot = slots[i]
                if slot is None:
                    slots[i] = self._open(kind)
                    continue
                s = slot[0]
                if kind == "noread":
                    if now - slot[2] > 6.0:  # it cannot tell the server's close: start over now and then
                        s.close()
                        slots[i] = None
                    continue
                if kind == "trickle" and now - slot[2] > 0.3 * (slot[3] + 1) and slot[3] < len(self.REQUEST):
                    try:
                        s.send(self.REQUEST[slot[3]:slot[3] + 1])
                        slot[3] += 1
                    except OSError:
                        pass
                if select.select([s], [], [], 0)[0]:
                    try:
                        data = s.recv(4096)
                    except OSError:
                        data = b""
                    if data:
                        slot[4] += data
                        continue
                    m = re.match(rb"HTTP/1\.1 (\d+)", slot[4])
                    if m:
                        self.codes[int(m.group(1))] = self.codes.get(int(m.group(1)), 0) + 1
                    self.closed_by_server += 1
                    s.close()
                    slots[i] = None
            time.sleep(0.05)
        for slot in slots:
            if slot is not None:
                slot[0].close()


def http_status(port, timeout=1.0):
    """The status code of GET /api/status, or None."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout) as s:
            s.settimeout(timeout)
            s.sendall(b"GET /api/status HTTP/1.1\r\nHost: gw\r\n\r\n")
            head = s.recv(64)
        m = re.match(rb"HTTP/1\.1 (\d+)", head)
        return int(m.group(1)) if m else None
    except OSError:
        return None


def cadence(bursts, lo, hi):
    """The intervals between the frame sets that begin in [lo, hi): (count, mean, min, max)."""
    ts = [t for t, _ in bursts if lo <= t < hi]
    gaps = [b - a for a, b in zip(ts, ts[1:], strict=False)]
    if not gaps:
        return 0, 0.0, 0.0, 0.0
    return len(gaps), mean(gaps), min(gaps), max(gaps)


def figures(run):
    """One line per window: intervals, mean (and its deviation), min, max."""
    out = []
    for name, (lo, hi) in WINDOWS.items():
        n, m, a, b = cadence(run["bursts"], lo, hi)
        out.append("%-13s %4.1f-%4.1f s: %2d intervals, mean %.3f s (%+.1f %%), min %.3f, max %.3f" % (
            name, lo, hi, n, m, (m / PERIOD - 1) * 100 if n else 0.0, a, b))
    return out


def disturbed(run):
    """Why a run says nothing about the firmware, or "": the host stalled a process for a moment
    (the firmware writes the frames of a set in one go, between two awaits: no network operation
    can come in between, so a set that takes more than U.STALL s to arrive shows the host)."""
    for first, last, _ in U.group_spans(run["frames"]):
        if last - first > U.STALL and WINDOWS["baseline"][0] <= first:
            return "a frame set took %.3f s to arrive (at %.3f s)" % (last - first, first)
    return ""


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The run; once more when the host disturbed the first (disturbed() says why)."""
    result = simulate(tmp_path_factory.mktemp("isolation"))
    why_not = disturbed(result)
    if why_not and result["rc"] == 0:
        print("test_net_isolation: the run again: %s" % why_not)
        result = simulate(tmp_path_factory.mktemp("isolation-again"))
        why_not = disturbed(result)
        assert not why_not, "%s, in two runs -- is the host too busy for these timings?" % why_not
    return result


def simulate(tmp):
    broker = Broker(tmp)
    sub = Sub(broker.port)
    web = free_port()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.settimeout(0.2)
    datagrams = []
    (tmp / "state.json").write_text(json.dumps(U.STATE))
    (tmp / "gw.json").write_text(json.dumps({"mqtt_interval_s": 1, "influx_interval_s": 1, "web_password": "pw"}))
    can_log = tmp / "can.log"
    cmd = [sys.executable, str(SIMULATE), "--state", str(tmp / "state.json"), "--config", str(tmp / "gw.json"),
           "--mqtt", "127.0.0.1:%d" % broker.port, "--web", str(web),
           "--influx", "127.0.0.1:%d" % udp.getsockname()[1], "--seconds", str(SECONDS),
           "--fault", "wifi-storm@%g:%g" % STORM, "--candump", str(can_log), "--log", str(tmp / "fw.log"),
           "--console", "net@%d" % (SECONDS - 1)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=str(ROOT))
    stop = threading.Event()

    def receive():
        while not stop.is_set():
            try:
                datagrams.append((time.monotonic(), udp.recv(2048)))
            except OSError:
                pass

    rx = threading.Thread(target=receive, daemon=True)
    rx.start()
    loris = SlowClients(web)
    marks = {}
    try:
        # the candump clock: the first frame's time in the log against this process's clock
        deadline = time.monotonic() + 30
        first = None
        while first is None:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("no CAN frame from the simulation: %s" % proc.stderr.read())
            lines = can_log.read_text().splitlines() if can_log.exists() else []
            if lines:
                first = float(lines[0][1:lines[0].index(")")])
                offset = time.monotonic() - first  # candump time t is this process's offset + t
            else:
                time.sleep(0.01)

        def at(t):
            wait = offset + t - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            return time.monotonic() - offset

        marks["kill"] = at(KILL)
        broker.kill()
        marks["restart"] = at(RESTART)
        broker.start()
        marks["stop"] = at(STOP)
        broker.pause(True)
        marks["cont"] = at(CONT)
        broker.pause(False)
        marks["loris"] = at(LORIS[0])
        loris.run(LORIS[1] - LORIS[0])
        marks["loris_end"] = time.monotonic() - offset
        web_after = None
        for _ in range(20):  # the page answers again once the slow clients are gone
            code = http_status(web)
            if code == 200:
                web_after = time.monotonic() - offset
                break
            time.sleep(0.1)
        _, err = proc.communicate(timeout=SECONDS + 30)
    finally:
        stop.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        sub.close()
        broker.close()
        rx.join(2)
        udp.close()
    frames = U.parse_candump(can_log)
    log = (tmp / "fw.log").read_text() if (tmp / "fw.log").exists() else ""
    result = {"rc": proc.returncode, "err": err, "log": log, "frames": frames, "bursts": U.group_bursts(frames),
              "marks": marks, "sub": [t - offset for t in sub.times], "udp": [t - offset for t, _ in datagrams],
              "loris": loris, "web_after": web_after}
    print("\nCAN cadence per window (candump intervals between frame sets, can_period_ms 1000):")
    for line in figures(result):
        print("  " + line)
    print("  slow clients: %d connections, %d closed by the server, replies %s, refused %d; web answered 200 "
          "again at %s s" % (loris.opened, loris.closed_by_server, dict(sorted(loris.codes.items())), loris.refused,
                             "%.1f" % web_after if web_after else "never"))
    for line in log.splitlines():
        if line.startswith(("web page on", "MQTT 127.", "InfluxDB UDP", "Wi-Fi 'sim'")):
            print("  firmware: " + line)
    return result


def why(run):
    return "%s\n--- figures\n%s\n--- stderr\n%s\n--- firmware log\n%s" % (
        "rc %s" % run["rc"], "\n".join(figures(run)), run["err"][-2000:], run["log"][-4000:])


def check_window(run, name):
    lo, hi = WINDOWS[name]
    n, m, a, b = cadence(run["bursts"], lo, hi)
    assert n >= int(hi - lo) - 1, (name, n, why(run))  # a frame set every period: none missing
    assert abs(m - PERIOD) <= MEAN_TOL * PERIOD, (name, m, why(run))
    assert LEAST * PERIOD <= a and b <= WORST * PERIOD, (name, a, b, why(run))
    U.check_complete_bursts(type("R", (), {"bursts": [x for x in run["bursts"] if lo <= x[0] < hi],
                                           "seconds": SECONDS})())


def test_the_run_completed_with_every_output_up(run):
    assert run["rc"] == 0, why(run)
    texts = run["log"]
    assert "network: Wi-Fi connected to 'sim', address 127.0.0.1" in texts, why(run)
    assert "MQTT 127.0.0.1:" in texts and "web page on " in texts and "InfluxDB UDP 127.0.0.1:" in texts, why(run)
    assert not re.search(r"^\[ *[\d.]+\] task .* crashed", texts, re.M), why(run)
    assert len(run["sub"]) >= 10 and len(run["udp"]) >= 30, (len(run["sub"]), len(run["udp"]), why(run))


def test_baseline_cadence(run):
    check_window(run, "baseline")


def test_cadence_through_a_broker_outage(run):
    check_window(run, "broker-down")
    mk = run["marks"]
    sub = run["sub"]
    # the outage was real: nothing reached the broker while it was down, states again after it
    assert [t for t in sub if t < mk["kill"]], sub
    assert not [t for t in sub if mk["kill"] + 0.5 < t < mk["restart"]], sub
    back = [t for t in sub if mk["restart"] < t < mk["stop"]]
    assert back, (sub, why(run))


def test_cadence_while_the_broker_hangs(run):
    check_window(run, "broker-hung")
    mk = run["marks"]
    assert not [t for t in run["sub"] if mk["stop"] + 0.5 < t < mk["cont"]], run["sub"]


def test_cadence_under_slow_web_clients(run):
    check_window(run, "slow-clients")
    lo = run["loris"]
    # more clients than the server takes: some refused at once (503), the slow ones timed out (408)
    # or dropped; the page answers again right after
    assert lo.opened > 6 and lo.closed_by_server >= 3, vars(lo)
    assert run["web_after"] is not None and run["web_after"] - run["marks"]["loris_end"] < 2.0, run["web_after"]
    # the server's own count (a 503 closes at once, often with a reset that loses the reply here)
    m = re.search(r"refused busy (\d+), timed out (\d+)", run["log"])
    assert m and int(m.group(1)) >= 3 and int(m.group(2)) >= 1, why(run)


def test_cadence_through_a_wifi_reconnect_storm(run):
    check_window(run, "wifi-storm")
    over = [line for line in run["log"].splitlines() if "wifi-storm over after" in line]
    assert over, why(run)
    drops = int(re.search(r"drops (\d+)", over[0]).group(1))
    assert drops >= 10, over  # 8 s of 150-450 ms phases
    # the outputs rode it out: states and lines again after it
    end = STORM[0] + STORM[1]
    assert [t for t in run["udp"] if t > end + 1], run["udp"][-5:]
    assert [t for t in run["sub"] if t > end + 1], run["sub"][-5:]
