# The InfluxDB output end to end with a real InfluxDB 1.x: influxd (Debian's package, /usr/bin/influxd;
# host/install-net-tools.sh installs it) started by this module with a config of its own in a temporary
# folder -- data, meta and WAL there, HTTP and the RPC port on free loopback ports, the [[udp]] input
# on a free port writing into the database "jkbms" -- and the whole firmware simulation
# (tools/simulate.py --influx 127.0.0.1:PORT, the firmware under the MicroPython unix port with the
# stub network of host/fakenet) sending it line protocol over UDP. The points are read back over
# HTTP (/query) and checked against the simulated pack: tags, values, the line protocol's types as
# InfluxDB stored them, one point per influx_interval_s.
# Two runs at once (~12 s): one pack, and two packs on the bus (a line per pack, tagged pack=1 / 2,
# in a measurement of their own). Without influxd every test is skipped with the reason.
import json
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import test_simulation as U

ROOT = Path(__file__).resolve().parents[2]
SIMULATE = ROOT / "tools" / "simulate.py"
INFLUXD = shutil.which("influxd") or "/usr/bin/influxd"
NO_INFLUXD = None if Path(INFLUXD).exists() else (
    "influxd not found (InfluxDB 1.x: Debian's influxdb package; host/install-net-tools.sh installs it)")
if NO_INFLUXD:
    print("test_net_influxdb: skipped: %s" % NO_INFLUXD)
pytestmark = pytest.mark.skipif(NO_INFLUXD is not None, reason=NO_INFLUXD or "")

DEVICE = "240ac4123456"  # host/fakenet/machine.py unique_id()
SECONDS = 12
PACK2 = dict(U.STATE, cell_voltages_v=[3.340] * 16, soc_percent=71, battery_current_a=-4.25, t1_c=-2.5)


def free_port(kind=socket.SOCK_STREAM):
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


CONFIG = """reporting-enabled = false
bind-address = "127.0.0.1:{rpc}"
[meta]
  dir = "{d}/meta"
  logging-enabled = false
[data]
  dir = "{d}/data"
  wal-dir = "{d}/wal"
  query-log-enabled = false
[monitor]
  store-enabled = false
[http]
  enabled = true
  bind-address = "127.0.0.1:{http}"
  log-enabled = false
[logging]
  level = "warn"
  suppress-logo = true
[[udp]]
  enabled = true
  bind-address = "127.0.0.1:{udp}"
  database = "jkbms"
  batch-size = 100
  batch-timeout = "100ms"
"""


class Influx:
    def __init__(self, tmp):
        self.http, self.udp = free_port(), free_port(socket.SOCK_DGRAM)
        conf = tmp / "influxdb.conf"
        conf.write_text(CONFIG.format(rpc=free_port(), d=tmp, http=self.http, udp=self.udp))
        self.log = open(tmp / "influxd.log", "w")
        self.proc = subprocess.Popen([INFLUXD, "-config", str(conf)], stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen("http://127.0.0.1:%d/ping" % self.http, timeout=1) as r:
                    if r.status == 204:
                        break
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("influxd did not start: %s" % (tmp / "influxd.log").read_text()[-2000:])
            time.sleep(0.1)
        self.query("CREATE DATABASE jkbms", post=True)

    def query(self, q, post=False):
        data = urllib.parse.urlencode({"db": "jkbms", "q": q}).encode()
        url = "http://127.0.0.1:%d/query" % self.http
        req = urllib.request.Request(url, data=data) if post else urllib.request.Request(url + "?" + data.decode())
        with urllib.request.urlopen(req, timeout=10) as r:
            out = json.loads(r.read())
        assert "error" not in out["results"][0], out
        return out["results"][0].get("series", [])

    def rows(self, q):
        """[(tags, {column: value})] of every series of the query."""
        out = []
        for series in self.query(q):
            for values in series["values"]:
                out.append((series.get("tags", {}), dict(zip(series["columns"], values, strict=True))))
        return out

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("influx")
    influx = Influx(tmp)
    runs = {}
    procs = {}
    try:
        for name, battery, cfg in (
                ("one", ["--state", U.STATE], {"influx_interval_s": 1}),
                ("two", ["--pack", U.STATE, "--pack", PACK2],
                 {"influx_interval_s": 1, "influx_measurement": "jkbms_packs", "bms_addresses": [1, 2]})):
            args = []
            for a in battery:
                if isinstance(a, dict):
                    p = tmp / ("%s-%d.json" % (name, len(args)))
                    p.write_text(json.dumps(a))
                    a = str(p)
                args.append(a)
            (tmp / (name + ".cfg.json")).write_text(json.dumps(cfg))
            cmd = [sys.executable, str(SIMULATE)] + args + [
                "--seconds", str(SECONDS), "--candump", str(tmp / (name + ".log")), "--log", str(tmp / (name + ".fw")),
                "--config", str(tmp / (name + ".cfg.json")), "--influx", "127.0.0.1:%d" % influx.udp,
                "--console", "net@%d" % (SECONDS - 1)]
            procs[name] = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                           cwd=str(ROOT))
            time.sleep(0.4)
        for name, p in procs.items():
            _, err = p.communicate(timeout=SECONDS + 40)
            fw = tmp / (name + ".fw")
            runs[name] = {"rc": p.returncode, "err": err, "log": fw.read_text() if fw.exists() else ""}
        time.sleep(0.5)  # the UDP input's last batch (batch-timeout 100 ms)
        yield influx, runs
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
        influx.stop()


def why(run):
    return "rc %s\n--- stderr\n%s\n--- firmware log\n%s" % (run["rc"], run["err"][-2000:], run["log"][-3000:])


def test_one_point_per_interval_with_the_device_tag(db):
    influx, runs = db
    run = runs["one"]
    assert run["rc"] == 0, why(run)
    rows = influx.rows("SELECT * FROM jkbms GROUP BY *")
    # Wi-Fi up ~0.5 s after the start, then a line every second up to the end of the run
    assert SECONDS - 3 <= len(rows) <= SECONDS + 1, (len(rows), why(run))
    assert {tuple(sorted(t.items())) for t, _ in rows} == {(("device", DEVICE),)}
    times = [r["time"] for _, r in rows]
    assert times == sorted(times) and len(set(times)) == len(times)  # stamped by the server, one each
    # the console's net command a second before the end: every line sent by then arrived
    m = re.search(r"InfluxDB UDP 127\.0\.0\.1:%d every 1 s: lines sent (\d+) .*, send errors 0, skipped "
                  r"\(Wi-Fi down\) 0" % influx.udp, run["log"])
    assert m and len(rows) - 2 <= int(m.group(1)) <= len(rows), why(run)


def test_the_values_are_the_simulated_packs(db):
    influx, runs = db
    rows = [r for _, r in influx.rows("SELECT * FROM jkbms")]
    fresh = [r for r in rows if r["bms_fresh"] == 1]
    assert len(fresh) >= SECONDS - 4, rows
    r = fresh[-1]
    assert r["voltage"] == pytest.approx(53.3) and r["current"] == pytest.approx(20.5)
    assert r["power"] == pytest.approx(53.3 * 20.5, abs=0.1)
    assert (r["soc"], r["soh"]) == (64, 98)
    assert r["cell_min"] == pytest.approx(3.331) and r["cell_max"] == pytest.approx(3.332)
    assert r["cell_delta"] == pytest.approx(0.001)
    assert [r["cell%d" % i] for i in range(1, 17)] == pytest.approx(U.STATE["cell_voltages_v"])
    assert "cell17" not in r  # 16 cells: no 17th field ever written
    assert r["temp1"] == pytest.approx(21.4) and r["temp2"] == pytest.approx(22.0)
    assert r["temp_mos"] == pytest.approx(27.4) and r["temp"] == pytest.approx(21.7)
    assert r["remaining_ah"] == pytest.approx(179.2) and r["full_ah"] == pytest.approx(280.0)
    assert r["alarms"] == 0 and r["charge_fet"] == 1 and r["discharge_fet"] == 1
    # the limits as the inverter gets them: CVL 55.2 V, 0 A during the hold (hold_s 30 > the run)
    assert r["cvl"] == pytest.approx(55.2) and r["dvl"] == pytest.approx(46.4)
    assert r["ccl"] == 0 and r["dcl"] == 0 and r["charge_enable"] == 0


def test_integers_and_floats_keep_their_types(db):
    influx, _ = db
    types = {}
    for series in influx.query("SHOW FIELD KEYS FROM jkbms"):
        types.update({k: t for k, t in series["values"]})
    for k in ("soc", "soh", "cycles", "alarms", "bms_fresh", "charge_enable", "discharge_enable", "charge_fet"):
        assert types[k] == "integer", (k, types)
    for k in ("voltage", "current", "power", "cell_min", "cell1", "temp1", "cvl", "ccl", "remaining_ah"):
        assert types[k] == "float", (k, types)


def test_several_packs_a_series_each(db):
    influx, runs = db
    run = runs["two"]
    assert run["rc"] == 0, why(run)
    rows = influx.rows("SELECT * FROM jkbms_packs GROUP BY *")
    by = {}
    for tags, r in rows:
        by.setdefault(tags.get("pack", ""), []).append(r)
    assert sorted(by) == ["", "1", "2"], sorted(by)  # the battery's line (no pack tag), then one per pack
    assert all(len(v) >= SECONDS - 4 for v in by.values()), {k: len(v) for k, v in by.items()}
    p1 = [r for r in by["1"] if r["bms_fresh"] == 1][-1]
    p2 = [r for r in by["2"] if r["bms_fresh"] == 1][-1]
    assert p1["soc"] == 64 and p1["cell_max"] == pytest.approx(3.332)
    assert p2["soc"] == 71 and p2["cell_max"] == pytest.approx(3.340) and p2["current"] == pytest.approx(-4.25)
    assert p2["temp1"] == pytest.approx(-2.5)
    assert p1["cvl"] is None and p2["cvl"] is None  # the limits are the battery's
    bat = [r for r in by[""] if r["bms_fresh"] == 1][-1]
    assert bat["packs_online"] == 2 and bat["current"] == pytest.approx(20.5 - 4.25)
    assert bat["cvl"] is not None
