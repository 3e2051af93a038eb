# The whole gateway firmware with its network side on (tools/simulate.py with a wifi-* fault: the
# firmware runs with the stub network module of host/fakenet and wifi_ssid "sim"): the Wi-Fi
# station connects, loses the link in a reconnect storm and in an access-point outage, comes
# back, and the CAN output goes on throughout. The smoke test of the simulation's network
# plumbing (host/sim_firmware.py --net / --net-fault); the outputs' own tests use the same path
# (test_net_isolation.py measures the CAN cadence under these faults).
# One run of 14 s, no other service needed.
import json
import re
import subprocess
import sys
from pathlib import Path
from statistics import mean

import pytest
import test_simulation as U

ROOT = Path(__file__).resolve().parents[2]
SIMULATE = ROOT / "tools" / "simulate.py"
STORM = (3, 4)  # wifi-storm from 3 s for 4 s
DOWN = (8, 2)  # wifi-down from 8 s for 2 s
SECONDS = 14
_EVENT = re.compile(r"^\[ *(\d+\.\d)\] (.+)$")
_SIM = re.compile(r"^sim (\d+\.\d): (.+)$")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sim-net")
    state = tmp / "state.json"
    state.write_text(json.dumps(U.STATE))
    cmd = [sys.executable, str(SIMULATE), "--state", str(state), "--seconds", str(SECONDS),
           "--candump", str(tmp / "can.log"), "--log", str(tmp / "fw.log"),
           "--fault", "wifi-storm@%d:%d" % STORM, "--fault", "wifi-down@%d:%d" % DOWN,
           "--console", "net@%d" % (SECONDS - 1)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=SECONDS + 40, cwd=str(ROOT))
    log = (tmp / "fw.log").read_text() if (tmp / "fw.log").exists() else ""
    frames = U.parse_candump(tmp / "can.log") if (tmp / "can.log").exists() else []
    events, sim, other = [], [], []
    for line in log.splitlines():
        m = _EVENT.match(line) or _SIM.match(line)
        if m is None:
            other.append(line)  # the console's echo and reply
        else:
            (events if line.startswith("[") else sim).append((float(m.group(1)), m.group(2)))
    return {"rc": r.returncode, "stderr": r.stderr, "log": log, "frames": frames, "events": events,
            "sim": sim, "other": other}


def why(run):
    return "rc %s\n--- stderr\n%s\n--- firmware log\n%s" % (run["rc"], run["stderr"][-2000:], run["log"][-3000:])


def test_the_station_connects_and_rides_out_the_faults(run):
    assert run["rc"] == 0, why(run)
    texts = [e for _, e in run["events"]]
    up = [t for t, e in run["events"] if e == "network: Wi-Fi connected to 'sim', address 127.0.0.1"]
    assert up and up[0] < STORM[0], why(run)  # up at once: the stub connects in 0.3 s
    assert up[-1] > DOWN[0] + DOWN[1], why(run)  # and again after the outage
    assert any(e.startswith("network: Wi-Fi link lost (") for e in texts), why(run)
    # a flapping link is counted, not printed every time: at most one down event per 10 s (net.wifi)
    downs = [t for t, e in run["events"] if e.startswith(("network: Wi-Fi link lost", "network: Wi-Fi: no conn"))]
    assert all(b - a >= 9.9 for a, b in zip(downs, downs[1:], strict=False)), downs
    assert not [e for e in texts if e.startswith(("task ", "watchdog"))], why(run)


def test_the_faults_are_applied_on_schedule(run):
    sim = run["sim"]
    starts = {e.split(":")[0]: t for t, e in sim if e.startswith(("wifi-storm:", "wifi-down:"))}
    assert abs(starts["wifi-storm"] - STORM[0]) < 0.3 and abs(starts["wifi-down"] - DOWN[0]) < 0.3, sim
    storm_end = [e for _, e in sim if e.startswith("wifi-storm over after ")]
    assert storm_end, sim
    drops = int(re.search(r"drops (\d+)", storm_end[0]).group(1))
    # 4 s of 150-450 ms phases: about 7 drops (each connect() the station makes restarts a phase)
    assert drops >= 5, storm_end


def test_the_console_net_command_shows_the_station(run):
    out = "\n".join(run["other"])
    m = re.search(r"Wi-Fi 'sim' (up|DOWN) for \d+ s.*; connects (\d+), losses (\d+), failed attempts (\d+)", out)
    assert m, why(run)
    assert int(m.group(2)) >= 3 and int(m.group(3)) >= 2 and int(m.group(4)) >= 1, m.group(0)


def test_the_can_output_goes_on(run):
    ts = [t for t, i, _ in run["frames"] if i == 0x351]
    gaps = [b - a for a, b in zip(ts, ts[1:], strict=False)]
    assert len(ts) >= SECONDS - 3, why(run)
    assert abs(mean(gaps) - 1.0) < 0.05 and max(gaps) < 1.3, gaps
