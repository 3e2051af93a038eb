#!/usr/bin/env python3
"""Make docs/images/ha-device.png: the gateway's device as a real Home Assistant shows it.

  python tools/ha_screenshot.py [--out docs/images/ha-device.png] [--seconds N] [--settle S]
      [--width 1280] [--height 0] [--feed COMMAND] [--keep]

A host tool for the documentation, never part of `make test`. It
1. installs Home Assistant Core and its frontend, every version pinned in
   tools/ha_requirements.txt, into their own venv build/ha/venv (Python 3.13:
   $JKGW_HA_PYTHON, else /root/.pyenv/versions/3.13.0/bin/python3.13, else
   python3.13 on PATH); the first run takes about 3 minutes for that, later
   runs reuse the venv while the requirements file is unchanged;
2. starts mosquitto (/usr/sbin/mosquitto, $JKGW_MOSQUITTO) on a free loopback
   port and Home Assistant (a fresh config in build/ha/config: only http,
   frontend, mqtt and what they depend on, no default_config; the location,
   time zone, units and country are set, `--skip-pip`: it downloads nothing at
   run time), onboards it through its REST API (owner "docs", password in
   build/ha/owner.txt; the core config and analytics steps marked done in
   its store beforehand: location from the YAML, analytics off) and adds the MQTT
   integration against that broker through the config-flow REST API;
3. runs the whole gateway firmware in simulation with its MQTT output on:
   tools/simulate.py --state build/sample_state.jsonl --mqtt 127.0.0.1:PORT
   (make build/sample_state.jsonl first); --feed COMMAND runs COMMAND instead
   ({host} and {port} replaced by the broker's);
4. waits until the device Home Assistant discovered has values in all its
   sensors and the simulation has run --settle seconds, opens its device page in headless Chromium (/usr/bin/chromium,
   driven by tools/ha_screenshot.mjs through node_modules/playwright-core,
   logged in with the onboarding's tokens) and writes the PNG.
Then it stops everything it started (--keep: leaves Home Assistant, the broker
and the feed running until Ctrl-C, to look at the page by hand; it prints the
address and the login). A run after the install takes about 2 minutes (most of it --settle).
Logs: build/ha/hass.log, build/ha/mosquitto.log, build/ha/feed.log.
"""
import argparse
import hashlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from tools import cli  # noqa: E402

PROG = "ha_screenshot"
HA_DIR = ROOT / "build" / "ha"
REQS = ROOT / "tools" / "ha_requirements.txt"
DRIVER = ROOT / "tools" / "ha_screenshot.mjs"
STATE = ROOT / "build" / "sample_state.jsonl"
PYTHONS = ("/root/.pyenv/versions/3.13.0/bin/python3.13", "python3.13")
OWNER = "docs"
CLIENT_ID = "http://127.0.0.1/"  # any URL: HA's IndieAuth client id the tokens are issued to

# Home Assistant's configuration: nothing that reaches out. default_config would bring cloud, the
# analytics, updater-like checks, zeroconf/ssdp/bluetooth discovery; none of them is loaded here.
CONFIG = """homeassistant:
  name: Home
  latitude: 52.37
  longitude: 4.89
  elevation: 0
  unit_system: metric
  time_zone: Europe/Amsterdam
  currency: EUR
  country: NL
  language: en
  internal_url: http://127.0.0.1:{port}
http:
  server_host: 127.0.0.1
  server_port: {port}
frontend:
logger:
  default: warning
  logs:
    # the camera helper looks for libturbojpeg when imported; no camera here
    homeassistant.components.camera.img_util: critical
    aiohttp_fast_zlib: error
"""


# Onboarding's core_config and analytics steps marked done before the start: the location is in
# configuration.yaml, analytics stay off (nothing opted in), and finishing core_config through the API
# would set up met (weather downloads), radio_browser, google_translate and shopping_list.
ONBOARDED = {"version": 4, "minor_version": 1, "key": "onboarding", "data": {"done": ["core_config", "analytics"]}}


def die(msg):
    sys.exit(cli.fail(PROG, msg, 1))


def log(msg):
    print(PROG + ": " + msg, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_python():
    for p in ([os.environ["JKGW_HA_PYTHON"]] if os.environ.get("JKGW_HA_PYTHON") else []) + list(PYTHONS):
        exe = shutil.which(p)
        if exe:
            return exe
    die("no Python 3.13 found (set JKGW_HA_PYTHON)")


def ensure_venv():
    """build/ha/venv with tools/ha_requirements.txt installed; redone when the file changes."""
    venv = HA_DIR / "venv"
    stamp = venv / "requirements.sha256"
    want = hashlib.sha256(REQS.read_bytes()).hexdigest()
    hass = venv / "bin" / "hass"
    if hass.exists() and stamp.exists() and stamp.read_text().strip() == want:
        return venv
    log("installing Home Assistant into %s (takes a few minutes)" % venv)
    if venv.exists():
        shutil.rmtree(venv)
    subprocess.run([find_python(), "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run(pip + ["-r", str(REQS)], check=True)
    stamp.write_text(want + "\n")
    return venv


def http(method, url, data=None, token=None, form=False, timeout=30, raw=False):
    """(status, parsed JSON or text; raw: text) of one request; no exception for an HTTP error status."""
    headers = {}
    body = None
    if token:
        headers["Authorization"] = "Bearer " + token
    if data is not None:
        if form:
            body = urllib.parse.urlencode(data).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        else:
            body = json.dumps(data).encode()
            headers["Content-Type"] = "application/json"
    req = urllib.request.Request(url, data=body, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            status, text = r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read().decode()
    if raw:
        return status, text
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


def wait_for(what, fn, timeout, procs=()):
    """fn() until it returns something true; die after timeout s or when a process ended."""
    t_end = time.monotonic() + timeout
    while True:
        for name, p in procs:
            if p.poll() is not None:
                die("%s ended (exit %s) while waiting for %s; see its log in %s" % (name, p.returncode, what, HA_DIR))
        try:
            v = fn()
        except (OSError, urllib.error.URLError):
            v = None
        if v:
            return v
        if time.monotonic() > t_end:
            die("timed out after %d s waiting for %s" % (timeout, what))
        time.sleep(0.5)


class Procs:
    """The processes this run started, stopped in reverse order (each by its own process group)."""

    def __init__(self):
        self.items = []

    def start(self, name, argv, logfile, **kw):
        f = open(logfile, "w")
        p = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             start_new_session=True, **kw)
        self.items.append((name, p))
        return p

    def stop(self):
        for _name, p in reversed(self.items):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait()


def onboard(base):
    """Owner user, core config, analytics, integration step: an access token for the API and the browser."""
    password = hashlib.sha256(os.urandom(16)).hexdigest()[:20]
    (HA_DIR / "owner.txt").write_text("%s %s\n" % (OWNER, password))
    st, r = http("POST", base + "/api/onboarding/users",
                 {"client_id": CLIENT_ID, "name": "Docs", "username": OWNER, "password": password,
                  "language": "en"})
    if st != 200:
        die("onboarding the owner: HTTP %s %s" % (st, r))
    st, tokens = http("POST", base + "/auth/token",
                      {"grant_type": "authorization_code", "code": r["auth_code"], "client_id": CLIENT_ID}, form=True)
    if st != 200:
        die("token: HTTP %s %s" % (st, tokens))
    tok = tokens["access_token"]
    st, r = http("POST", base + "/api/onboarding/integration",
                 {"client_id": CLIENT_ID, "redirect_uri": CLIENT_ID + "?auth_callback=1"}, token=tok)
    if st != 200:
        die("onboarding step integration: HTTP %s %s" % (st, r))
    return tokens


def add_mqtt(base, tok, port):
    """The MQTT integration against our broker, as the config flow's form would be filled in."""
    st, r = http("POST", base + "/api/config/config_entries/flow", {"handler": "mqtt", "show_advanced_options": False},
                 token=tok)
    if st != 200:
        die("starting the MQTT config flow: HTTP %s %s" % (st, r))
    for _ in range(3):  # a menu or the broker form, then the entry
        if r.get("type") == "create_entry":
            return r
        if r.get("type") == "menu":
            nxt = {"next_step_id": "broker" if "broker" in r.get("menu_options", []) else r["menu_options"][0]}
        elif r.get("type") == "form":
            nxt = {"broker": "127.0.0.1", "port": port}
        else:
            die("MQTT config flow: %s" % r)
        st, r = http("POST", base + "/api/config/config_entries/flow/" + r["flow_id"], nxt, token=tok)
        if st != 200:
            die("MQTT config flow step: HTTP %s %s" % (st, r))
    die("MQTT config flow did not finish: %s" % r)


def template(base, tok, tpl):
    st, r = http("POST", base + "/api/template", {"template": tpl}, token=tok, raw=True)
    return r if st == 200 else None


def discovered(base, tok):
    """(device id, [(entity, state)]) once the MQTT device has every entity with a value."""
    r = template(base, tok, "{{ integration_entities('mqtt') | map('device_id') | reject('none') | unique"
                            " | list | tojson }}")
    if not r:
        return None
    devs = json.loads(r)
    if not devs:
        return None
    dev = devs[0]
    ents = json.loads(template(base, tok, "{{ device_entities('%s') | tojson }}" % dev) or "[]")
    states = [(e, (http("GET", base + "/api/states/" + e, token=tok)[1] or {}).get("state")) for e in ents]
    if not states or any(s in (None, "unknown", "unavailable") for _, s in states):
        return None
    return dev, states


def main(argv=None):
    doc_head, doc_rest = __doc__.split("\n\n", 1)
    ap = cli.ArgumentParser(prog="ha_screenshot.py", description=doc_head, epilog=doc_rest,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "docs" / "images" / "ha-device.png"), help="the PNG to write")
    ap.add_argument("--seconds", type=cli.number(int, 30, 3600, "a whole number of seconds"), default=240,
                    help="how long the simulation may run at most (240)")
    ap.add_argument("--settle", type=cli.number(int, 0, 3000, "a whole number of seconds"), default=90,
                    help="seconds of simulation before the picture (90: past the start-up's hold and ramp)")
    ap.add_argument("--width", type=cli.number(int, 320, 4000, "a width in pixels"), default=1280,
                    help="browser viewport width (1280)")
    ap.add_argument("--height", type=cli.number(int, 0, 4000, "a height in pixels"), default=0,
                    help="browser viewport height (0, the default: as tall as the page, every entity in view)")
    ap.add_argument("--feed", metavar="COMMAND", help="run COMMAND instead of the simulation ({host}, {port})")
    ap.add_argument("--keep", action="store_true", help="leave everything running until Ctrl-C")
    args = ap.parse_args(argv)
    if args.settle + 30 > args.seconds:
        ap.error("--seconds must be at least --settle + 30")
    if not args.feed and not STATE.exists():
        ap.error("%s missing: make build/sample_state.jsonl" % STATE.relative_to(ROOT))
    mosquitto = os.environ.get("JKGW_MOSQUITTO", "/usr/sbin/mosquitto")
    for exe in (mosquitto, "node"):
        if not shutil.which(exe):
            die("%s not found" % exe)
    if not (ROOT / "node_modules" / "playwright-core").exists():
        die("node_modules/playwright-core missing: npm ci")

    t0 = time.monotonic()
    HA_DIR.mkdir(parents=True, exist_ok=True)
    venv = ensure_venv()
    procs = Procs()
    try:
        mport, hport = free_port(), free_port()
        conf = HA_DIR / "mosquitto.conf"
        conf.write_text("listener %d 127.0.0.1\nallow_anonymous true\npersistence false\n" % mport)
        procs.start("mosquitto", [mosquitto, "-c", str(conf)], HA_DIR / "mosquitto.log")

        cfg = HA_DIR / "config"
        if cfg.exists():
            shutil.rmtree(cfg)  # a fresh install every run: onboarding and discovery from scratch
        cfg.mkdir()
        (cfg / "configuration.yaml").write_text(CONFIG.format(port=hport))
        (cfg / ".storage").mkdir()
        (cfg / ".storage" / "onboarding").write_text(json.dumps(ONBOARDED))
        base = "http://127.0.0.1:%d" % hport
        hass = procs.start("Home Assistant", [str(venv / "bin" / "hass"), "-c", str(cfg), "--skip-pip"],
                           HA_DIR / "hass.log")
        log("Home Assistant starting on %s" % base)
        wait_for("Home Assistant's API", lambda: http("GET", base + "/api/onboarding", timeout=5)[0] == 200, 180,
                 procs.items)
        tokens = onboard(base)
        tok = tokens["access_token"]
        add_mqtt(base, tok, mport)
        log("onboarded, MQTT integration on 127.0.0.1:%d (%.0f s)" % (mport, time.monotonic() - t0))

        if args.feed:
            feed = [a.replace("{host}", "127.0.0.1").replace("{port}", str(mport)) for a in shlex.split(args.feed)]
        else:
            feed = [sys.executable, str(ROOT / "tools" / "simulate.py"), "--state", str(STATE),
                    "--mqtt", "127.0.0.1:%d" % mport, "--seconds", str(args.seconds),
                    "--candump", str(HA_DIR / "sim_candump.log")]
        procs.start("the feed", feed, HA_DIR / "feed.log", cwd=str(ROOT))
        t_feed = time.monotonic()
        wait_for("the gateway's device with values in all its entities", lambda: discovered(base, tok),
                 args.seconds, procs.items)
        # past the start-up (the charge controller's first hold and ramp): the values a running gateway shows
        wait_for("--settle", lambda: time.monotonic() - t_feed >= args.settle, args.seconds, procs.items)
        dev, states = discovered(base, tok) or die("the device's entities lost their values")
        log("device %s: %d entities, %s" % (dev, len(states), ", ".join("%s=%s" % s for s in states)))

        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        session = {"hassUrl": base, "clientId": CLIENT_ID, "access_token": tok,
                   "refresh_token": tokens["refresh_token"], "token_type": "Bearer",
                   "expires_in": tokens["expires_in"], "expires": int(time.time() * 1000) + tokens["expires_in"] * 1000}
        url = base + "/config/devices/device/" + dev
        name = template(base, tok, "{{ device_attr('%s', 'name_by_user') or device_attr('%s', 'name') }}" % (dev, dev))
        r = subprocess.run(["node", str(DRIVER), url, json.dumps(session), str(out), str(args.width),
                            str(args.height), name], cwd=str(ROOT), timeout=180)
        if r.returncode != 0:
            die("the browser driver failed (exit %d)" % r.returncode)
        log("wrote %s (%.0f s in all)" % (out, time.monotonic() - t0))
        if args.keep:
            log("running: %s  login %s; Ctrl-C stops" % (url, (HA_DIR / "owner.txt").read_text().strip()))
            try:
                while hass.poll() is None:
                    time.sleep(1)
            except KeyboardInterrupt:
                pass
    finally:
        procs.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
