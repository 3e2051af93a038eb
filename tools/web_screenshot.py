#!/usr/bin/env python3
"""Make docs/images/web-status.png and docs/images/web-config.png: the gateway's web page.

  python tools/web_screenshot.py [--out docs/images] [--state STATE.json] [--port PORT] [--keep]

A host tool for the documentation, never part of `make test`. It runs the whole
gateway firmware in simulation with its web page on (tools/simulate.py --web
PORT; a demo config: web_password "demo", hold_s 0 and ramp_a_s 100 so the
limits are up within seconds; the pack of DEMO_STATE, or --state), waits
until the page's JSON API shows fresh BMS data and non-zero limits, then
drives headless Chromium (/usr/bin/chromium through node_modules/playwright-core,
tools/web_screenshot.mjs): the status part of the page goes to web-status.png;
then it changes max_charge_a (in force at once) and can_period_ms (after a
reboot) in the config form, saves them with the password and writes the
config part with the gateway's answer to web-config.png. --keep leaves the
simulation running afterwards (until Ctrl-C, at most 10 minutes) to look at
the page by hand. A run takes about 15 s.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from tools import cli  # noqa: E402

PROG = "web_screenshot"
DRIVER = ROOT / "tools" / "web_screenshot.mjs"
SIMULATE = ROOT / "tools" / "simulate.py"
PASSWORD = "demo"
CONFIG = {"web_password": PASSWORD, "hold_s": 0, "ramp_a_s": 100}
# a 16s LFP pack charging, its cells a few mV apart (the chart shows the spread)
DEMO_STATE = {
    "cell_voltages_v": [3.342, 3.339, 3.345, 3.341, 3.337, 3.340, 3.343, 3.351, 3.338, 3.341, 3.344, 3.336,
                        3.340, 3.342, 3.339, 3.341],
    "battery_current_a": 23.4, "soc_percent": 72, "soh_percent": 98, "remaining_capacity_ah": 201.6,
    "nominal_capacity_ah": 280.0, "power_tube_temp_c": 27.4, "t1_c": 21.4, "t2_c": 22.0, "error_bitmask": 0,
    "charging": True, "discharging": True, "cycle_count": 87, "cell_ovp_v": 3.65, "cell_ovpr_v": 3.45,
    "cell_uvp_v": 2.7, "cell_uvpr_v": 2.9, "rcv_v": 3.45, "max_charge_current_a": 150.0,
    "max_discharge_current_a": 200.0,
}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def status(port):
    with urllib.request.urlopen("http://127.0.0.1:%d/api/status" % port, timeout=5) as r:
        return json.loads(r.read())


def wait_ready(port, proc, timeout=60):
    """Until the page's API shows fresh BMS data and the limits up; the last document."""
    t0 = time.monotonic()
    last = None
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError("the simulation stopped (exit %s)" % proc.returncode)
        try:
            last = status(port)
            if last["links"]["bms"] == "fresh" and last["limits"]["ccl_a"] > 0:
                return last
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.5)
    raise RuntimeError("no fresh data with limits on the web page after %d s: %r" % (timeout, last))


def main(argv=None):
    ap = cli.ArgumentParser(prog=PROG + ".py", description=__doc__.split("\n\n")[0],
                            epilog="The images go into --out (default docs/images).")
    ap.add_argument("--out", default=str(ROOT / "docs" / "images"), help="folder for the two PNGs")
    ap.add_argument("--state", help="the pack's state (JSON, as tools/simulate.py takes it; default: a demo pack)")
    ap.add_argument("--port", type=cli.number(int, 1, 65535), help="the web page's port (default: a free one)")
    ap.add_argument("--keep", action="store_true", help="leave the simulation running afterwards")
    args = ap.parse_args(argv)
    out = Path(args.out)
    if not out.is_dir():
        ap.error("--out: %s is not a folder" % out)
    if args.state and not Path(args.state).is_file():
        ap.error("--state: no such file %s" % args.state)
    if not Path("/usr/bin/chromium").exists() and not os.environ.get("JKGW_CHROMIUM"):
        return cli.fail(PROG, "no /usr/bin/chromium (make net-tools installs it; JKGW_CHROMIUM overrides)", 1)
    port = args.port or free_port()
    with tempfile.TemporaryDirectory(prefix="web-shot-") as tmp:
        state = args.state
        if not state:
            state = os.path.join(tmp, "state.json")
            Path(state).write_text(json.dumps(DEMO_STATE))
        cfg = os.path.join(tmp, "config.json")
        Path(cfg).write_text(json.dumps(CONFIG))
        cmd = [sys.executable, str(SIMULATE), "--state", state, "--config", cfg, "--web", str(port),
               "--seconds", "600" if args.keep else "60", "--candump", os.path.join(tmp, "can.log"),
               "--log", os.path.join(tmp, "firmware.log")]
        env = dict(os.environ, TMPDIR=tmp)  # simulate.py's gateway.json lands here, removed with it
        sim = subprocess.Popen(cmd, cwd=str(ROOT), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
        try:
            wait_ready(port, sim)
            url = "http://127.0.0.1:%d/" % port
            r = subprocess.run(["node", str(DRIVER), url, PASSWORD, str(out / "web-status.png"),
                                str(out / "web-config.png")], cwd=str(ROOT), capture_output=True, text=True,
                               timeout=120)
            if r.returncode:
                return cli.fail(PROG, "the browser: %s" % (r.stderr.strip() or r.stdout.strip()), 1)
            print("wrote %s and %s" % (out / "web-status.png", out / "web-config.png"))
            if args.keep:
                print("the page: %s (password %r); Ctrl-C ends the simulation" % (url, PASSWORD))
                sim.wait()
        except RuntimeError as e:
            return cli.fail(PROG, e, 1)
        except KeyboardInterrupt:
            pass
        finally:
            if sim.poll() is None:
                sim.send_signal(signal.SIGINT)  # simulate.py stops the firmware and the simulators itself
                try:
                    sim.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    sim.kill()
            sim.communicate()
    return 0


if __name__ == "__main__":
    sys.exit(main())
