# The web page in real headless Chromium against the whole gateway firmware in simulation
# (tools/simulate.py --web PORT: the MicroPython unix port with the stub network of host/fakenet):
# the page shows the simulated pack's values, refreshes itself, and a config change made in its
# form round-trips -- a wrong password refused, the right one saves; /api/config and the
# gateway.json on disk show it; the charge key is in force at once (/api/status), the other waits
# for a reboot; the CAN frame sets stay on time meanwhile. One simulation run for the module; the
# browser part is host_tests/web/page_check.mjs (playwright-core, /usr/bin/chromium).
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import test_simulation as U

ROOT = Path(__file__).resolve().parents[2]
SIMULATE = ROOT / "tools" / "simulate.py"
CHECK = ROOT / "host_tests" / "web" / "page_check.mjs"
CHROMIUM = os.environ.get("JKGW_CHROMIUM", "/usr/bin/chromium")
PASSWORD = "browser-test"
# limits up at once (no hold, fast ramp): a lower max_charge_a then shows in the next frame set
CONFIG = {"web_password": PASSWORD, "hold_s": 0, "ramp_a_s": 100}
SECONDS = 45  # an upper bound: the run is stopped once the checks are done


def free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(port, path):
    with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=5) as r:
        return r.status, r.read()


def wait_ready(port, proc, timeout=30):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        assert proc.poll() is None, "the simulation stopped: %s" % proc.communicate()[0][-3000:]
        try:
            st = json.loads(get(port, "/api/status")[1])
            if st["links"]["bms"] == "fresh" and st["limits"]["ccl_a"] >= 100:
                return st
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.3)
    raise AssertionError("the web page never showed fresh data with the limits up")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    if not Path(CHROMIUM).exists():
        pytest.skip("no Chromium at %s (make net-tools installs it)" % CHROMIUM)
    if not (ROOT / "node_modules" / "playwright-core").is_dir():
        pytest.skip("no node_modules/playwright-core (npm ci)")
    tmp = tmp_path_factory.mktemp("web")
    state = tmp / "state.json"
    state.write_text(json.dumps(U.STATE))
    cfg = tmp / "config.json"
    cfg.write_text(json.dumps(CONFIG))
    port = free_port()
    cmd = [sys.executable, str(SIMULATE), "--state", str(state), "--config", str(cfg), "--web", str(port),
           "--seconds", str(SECONDS), "--candump", str(tmp / "can.log"), "--log", str(tmp / "fw.log")]
    # simulate.py writes the firmware's gateway.json into a fresh folder under TMPDIR: here, to read it back
    env = dict(os.environ, TMPDIR=str(tmp))
    t0 = time.monotonic()
    sim = subprocess.Popen(cmd, cwd=str(ROOT), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = {"port": port, "tmp": tmp}
    try:
        out["ready"] = wait_ready(port, sim)
        out["ready_s"] = time.monotonic() - t0
        r = subprocess.run(["node", str(CHECK), "http://127.0.0.1:%d/" % port, PASSWORD], cwd=str(ROOT),
                           capture_output=True, text=True, timeout=120)
        out["rc"], out["stderr"] = r.returncode, r.stderr
        out["page"] = json.loads(r.stdout) if r.stdout.strip() else {}
        out["config"] = json.loads(get(port, "/api/config")[1])
        out["status"] = json.loads(get(port, "/api/status")[1])
        files = sorted(tmp.glob("gw-sim-*/gateway.json"))
        out["saved"] = json.loads(files[0].read_text()) if files else None
        out["check_s"] = time.monotonic() - t0
    finally:
        if sim.poll() is None:
            sim.send_signal(signal.SIGINT)  # simulate.py stops the firmware and the simulators itself
        try:
            out["sim_out"] = sim.communicate(timeout=30)[0]
        except subprocess.TimeoutExpired:
            sim.kill()
            out["sim_out"] = sim.communicate()[0]
    out["log"] = (tmp / "fw.log").read_text() if (tmp / "fw.log").exists() else ""
    out["frames"] = U.parse_candump(tmp / "can.log") if (tmp / "can.log").exists() else []
    yield out
    shutil.rmtree(tmp, ignore_errors=True)


def why(run):
    return "page_check rc %s: %s\n--- firmware log\n%s" % (run.get("rc"), run.get("stderr", "")[-2000:],
                                                          run["log"][-3000:])


def test_the_page_shows_the_simulated_pack(run):
    assert run.get("rc") == 0, why(run)
    p = run["page"]["first"]
    cells = U.STATE["cell_voltages_v"]
    assert p["cells"] == cells
    lo, hi = min(cells), max(cells)
    assert cells[p["min_bar"]] == lo and cells[p["max_bar"]] == hi  # min / max marked
    assert "min %.3f V" % lo in p["cellsum"] and "max %.3f V" % hi in p["cellsum"]
    scale = [float(x) for x in p["scale"]]
    assert scale == sorted(scale) and scale[0] < lo and scale[-1] > hi  # the scale spans the cells
    assert p["soc"] == "%d %%" % U.STATE["soc_percent"]
    assert p["pack_v"] == "%.2f V" % sum(cells)
    assert p["current"] == "%.1f A" % U.STATE["battery_current_a"]
    assert "fresh" in p["links"] and "Wi-Fi" in p["links"] and "up" in p["links"]
    assert "CCL100.0 A" in p["limits"].replace(" user", "")  # the limits and why
    assert "user maximum" in p["limits"] and "bulk" in p["limits"]
    assert "web page on http://127.0.0.1:%d/" % run["port"] in p["events"]


def test_the_page_refreshes_itself(run):
    assert run.get("rc") == 0, why(run)
    first, later = run["page"]["first"], run["page"]["later"]
    # the uptime in the header comes from /api/status: a newer answer was drawn
    up1 = int(first["header"].split("up ")[1].split(" s")[0])
    up2 = int(later["header"].split("up ")[1].split(" s")[0])
    assert up2 >= up1 + 2, (first["header"], later["header"])
    assert later["age"].endswith("s ago")


def test_the_form_is_built_from_the_schema(run):
    assert run.get("rc") == 0, why(run)
    form = run["page"]["form"]
    assert form["max_charge_a"] == "100" and form["max_charge_a_range"] == ["0", "1000"]
    assert form["web_password"] == "***"  # the secret never reaches the page
    assert "victron" in form["protocol_options"] and "pylon" in form["protocol_options"]
    kinds = {name: (tag, typ) for name, tag, typ in run["page"]["inputs"]}
    assert kinds["protocol"][0] == "SELECT" and kinds["max_charge_a"] == ("INPUT", "number")
    assert kinds["wifi_password"] == ("INPUT", "password")


def test_a_config_change_round_trips(run):
    assert run.get("rc") == 0, why(run)
    page = run["page"]
    assert "not saved (403)" in page["wrong"] and "wrong password" in page["wrong"]
    assert page["right"].startswith("saved.")
    assert "In force now: max_charge_a" in page["right"] and "After a reboot: can_period_ms" in page["right"]
    # the API and the file on disk
    cfg = run["config"]
    assert cfg["config"]["max_charge_a"] == 40 and cfg["pending"] == {"can_period_ms": 500}
    assert cfg["config"]["can_period_ms"] == 1000
    saved = run["saved"]
    assert saved is not None, "no gateway.json under %s" % run["tmp"]
    assert saved["max_charge_a"] == 40 and saved["can_period_ms"] == 500 and saved["web_password"] == PASSWORD
    # the charge key is in force at once: the CCL follows, on the page and in the API
    assert run["status"]["limits"]["ccl_a"] == 40.0
    assert "CCL40.0 A" in page["after"]["limits"]
    assert page["after"]["max_charge_a"] == "40" and "500 after reboot" in page["after"]["pending"]
    log = run["log"]
    assert "config changed on the web page: keys max_charge_a, can_period_ms (reboot to apply can_period_ms)" in log


def test_the_can_output_stays_on_time_meanwhile(run):
    assert run.get("rc") == 0, why(run)
    bursts = U.group_bursts(run["frames"])
    starts = [t for t, _ in bursts]
    assert len(starts) >= run["check_s"] - 6, (len(starts), run["check_s"])
    gaps = [starts[i + 1] - starts[i] for i in range(1, len(starts) - 1)]  # the first set may come early
    assert max(gaps) < 1.05 and min(gaps) > 0.95, gaps
