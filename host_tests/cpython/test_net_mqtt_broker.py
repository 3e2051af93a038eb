# The MQTT output end to end: a real mosquitto (/usr/sbin/mosquitto, started here on a free port of
# 127.0.0.1 with its own config file: anonymous, no persistence) and the WHOLE firmware in the
# simulation under the unix port (tools/simulate.py --mqtt: the real mqtt_as from ../shared/vendor
# on the stub Wi-Fi of host/fakenet, the BMS simulator serving STATE below), watched by paho-mqtt
# subscribers: one from before the start to the end, one that joins mid-run (what a broker keeps
# retained while the gateway runs: availability "online", every discovery config) and one after
# the firmware was killed (the LWT: "offline", retained). Home Assistant's birth message is sent
# mid-run and must bring a second round of discovery.
# Checked: every discovery config is valid JSON with HA's abbreviations, unique ids unique, units /
# device classes / state classes as HA expects, its state / availability topics are topics the
# gateway publishes, the device block is one and the same (sw = firmware/package.json's version),
# one sensor per cell and per temperature sensor of the pack; every value template, rendered on a
# published state (the templates are Python expressions too, see render()), gives the pack's
# value; the state values equal the simulated pack's (cells, pack voltage, SOC, ...), once a second.
# A second simulation beside it has the broker go away and come back empty. TLS (mqtt_tls on) runs
# the real MqttOut and mqtt_as under the unix port in a small script: against a TLS listener of
# mosquitto (a self-signed certificate made with openssl), and against a server that takes the TCP
# connection and never answers the handshake, which must leave the interpreter running.
# Skipped with the reason when mosquitto, paho-mqtt or the vendor mqtt_as is absent.
import json
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import test_simulation as U
from net_services import Broker, missing

ROOT = Path(__file__).resolve().parents[2]
SIMULATE = ROOT / "tools" / "simulate.py"

DEV = "240ac4123456"  # host/fakenet/machine.py's unique_id
BASE = "jkgw/" + DEV
NODE = "jkgw_" + DEV
SECONDS = 12
OUTAGE_SECONDS = 16
OUTAGE = (5.0, 4.0)  # the second run's broker: away from 5 s for 4 s
BIRTH_AT = 7.0  # s after the start: HA's birth message
LATE_AT = 5.0  # s: a subscriber joins and reads what is retained
CELLS = [round(3.301 + 0.002 * i, 3) for i in range(16)]  # all different: a cell mixed up shows
STATE = dict(U.STATE, cell_voltages_v=CELLS)
ABBR = {"~": "~", "avty_t": "availability_topic", "stat_t": "state_topic", "val_tpl": "value_template",
        "uniq_id": "unique_id", "unit_of_meas": "unit_of_measurement", "dev_cla": "device_class",
        "stat_cla": "state_class", "dev": "device", "name": "name", "ent_cat": "entity_category",
        "sug_dsp_prc": "suggested_display_precision", "json_attr_t": "json_attributes_topic",
        "json_attr_tpl": "json_attributes_template"}
DEVICE_ABBR = {"ids": "identifiers", "name": "name", "mf": "manufacturer", "mdl": "model", "sw": "sw_version"}
# HA's sensor device classes used here -> the units HA accepts (homeassistant.components.sensor)
SENSOR_UNITS = {"voltage": {"V", "mV"}, "current": {"A", "mA"}, "power": {"W", "kW"}, "battery": {"%"},
                "temperature": {"\u00b0C", "\u00b0F", "K"}, "duration": {"s", "min", "h", "d"}}
BINARY_CLASSES = {"connectivity", "problem"}


MISSING = missing()
pytestmark = pytest.mark.skipif(MISSING is not None, reason=str(MISSING))


class Sub:
    """A paho subscriber recording (monotonic time, topic, payload text, retain flag)."""

    def __init__(self, port, topics=("#",)):
        import paho.mqtt.client as mqtt

        self.msgs = []
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self.c.on_message = lambda c, u, m: self.msgs.append((time.monotonic(), m.topic, m.payload.decode(),
                                                              bool(m.retain)))
        self.c.connect("127.0.0.1", port)
        for t in topics:
            self.c.subscribe(t)
        self.c.loop_start()

    def publish(self, topic, payload):
        self.c.publish(topic, payload).wait_for_publish(2)

    def close(self):
        self.c.loop_stop()
        self.c.disconnect()

    def on(self, topic):
        return [m for m in self.msgs if m[1] == topic]


def simulate(tmp, port, seconds, extra=()):
    """tools/simulate.py with the MQTT output to port, state once a second; (process, output lines)."""
    (tmp / "state.json").write_text(json.dumps(STATE))
    (tmp / "gw.json").write_text(json.dumps({"mqtt_interval_s": 1}))
    cmd = [sys.executable, str(SIMULATE), "--state", str(tmp / "state.json"), "--config", str(tmp / "gw.json"),
           "--mqtt", "127.0.0.1:%d" % port, "--seconds", str(seconds), "--candump", str(tmp / "can.log"),
           "--log", str(tmp / "fw.log"), "--console", "net@%d" % (seconds - 1)] + list(extra)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=str(ROOT))
    out = []
    reader = threading.Thread(target=lambda: out.extend(proc.stdout), daemon=True)
    reader.start()
    return proc, out, reader


def finish(proc, reader, timeout):
    try:
        rc = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        rc = "timeout"
    reader.join(2)
    return rc


def outage_run(tmp, result):
    """The second run, beside the first: the broker goes away at OUTAGE[0] s for OUTAGE[1] s and
    comes back empty; the gateway must reconnect by itself and publish everything again."""
    b = Broker(tmp)
    t0 = time.monotonic()
    proc, out, reader = simulate(tmp, b.port, OUTAGE_SECONDS)
    try:
        time.sleep(OUTAGE[0])
        b.stop()
        time.sleep(OUTAGE[1])
        b.start()
        back = Sub(b.port, (BASE + "/#", "homeassistant/#"))
        rc = finish(proc, reader, OUTAGE_SECONDS + 40)
        back.close()
    finally:
        b.stop()
    log = (tmp / "fw.log").read_text() if (tmp / "fw.log").exists() else ""
    result.update(rc=rc, out="".join(out), log=log, back=back, t0=t0,
                  frames=U.parse_candump(tmp / "can.log") if (tmp / "can.log").exists() else [])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    outage = {}
    side = threading.Thread(target=outage_run, args=(tmp_path_factory.mktemp("sim-mqtt-outage"), outage))
    side.start()
    tmp = tmp_path_factory.mktemp("sim-mqtt")
    b = Broker(tmp)
    try:
        live = Sub(b.port)
        t0 = time.monotonic()
        proc, out, reader = simulate(tmp, b.port, SECONDS)
        time.sleep(LATE_AT)
        late = Sub(b.port, (BASE + "/availability", "homeassistant/#"))
        time.sleep(BIRTH_AT - LATE_AT)
        late.close()
        birth_t = time.monotonic()
        live.publish("homeassistant/status", "online")
        rc = finish(proc, reader, SECONDS + 40)
        ended = time.monotonic()
        while live.on(BASE + "/availability")[-1][2] != "offline" and time.monotonic() - ended < 3:
            time.sleep(0.05)
        after = Sub(b.port, (BASE + "/availability", "homeassistant/#"))
        time.sleep(1.0)
        after.close()
        live.close()
    finally:
        b.stop()
        side.join(OUTAGE_SECONDS + 60)
    log = (tmp / "fw.log").read_text() if (tmp / "fw.log").exists() else ""
    main = {"rc": rc, "out": "".join(out), "log": log, "live": live, "late": late, "after": after, "t0": t0,
            "birth_t": birth_t, "ended": ended, "elapsed": ended - t0}
    return main, outage


@pytest.fixture
def run(runs):
    return runs[0]


@pytest.fixture
def outage(runs):
    return runs[1]


def why(run):
    return "rc %s\n--- simulate\n%s\n--- firmware log\n%s" % (run["rc"], run["out"][-2000:], run["log"][-3000:])


def configs(msgs):
    """topic -> parsed payload of the discovery configs among msgs (the last of each topic)."""
    out = {}
    for _, topic, payload, _ in msgs:
        if topic.startswith("homeassistant/") and topic.endswith("/config") and payload:
            out[topic] = json.loads(payload)
    return out


def states(run):
    return [(t, json.loads(p)) for t, _, p, _ in run["live"].on(BASE + "/state")]


class _Obj:
    """value_json as HA's Jinja sees it: attributes of a dict, items of a list."""

    def __init__(self, v):
        self._v = v

    def __getattr__(self, name):
        return _wrap(self._v[name])

    def __getitem__(self, i):
        return _wrap(self._v[i])

    def __len__(self):  # an empty list is false in Jinja too
        return len(self._v)


def _wrap(v):
    return _Obj(v) if isinstance(v, (dict, list)) else v


def render(tpl, state):
    """A template of net.ha as HA renders it: {{ EXPR }}, EXPR a Python expression too, with the
    Jinja filters it uses (|default(None): "None" for a missing field, |tojson)."""
    assert tpl.startswith("{{") and tpl.endswith("}}"), tpl
    expr = tpl[2:-2].strip()
    if expr.endswith("|tojson"):
        v = eval(expr[:-len("|tojson")].replace("value_json.alarms", "value_json._v['alarms']"),  # noqa: S307
                 {"value_json": _Obj(state)})
        return json.dumps(v)
    default = expr.endswith("|default(None)")
    if default:
        expr = expr[:-len("|default(None)")]
    try:
        v = eval(expr, {"value_json": _Obj(state)})  # noqa: S307 - our own templates
    except (KeyError, IndexError):
        if default:
            return "None"
        raise
    return v if isinstance(v, str) else json.dumps(v)


def test_the_run_went_as_planned(run):
    assert run["rc"] == 0, why(run)
    assert "network: MQTT connected to 127.0.0.1:" in run["log"], why(run)
    assert not [line for line in run["log"].splitlines() if "task " in line and "crashed" in line], why(run)
    m = [line for line in run["log"].splitlines() if line.startswith("  published ")]
    assert m and "skipped while down 0" in m[-1] and "connects 1, losses 0" in m[-1], why(run)


def test_every_discovery_config_is_what_ha_expects(run):
    cfgs = configs(run["live"].msgs)
    assert len(cfgs) >= 27 + 16 + 3, sorted(cfgs)
    uids = [d["uniq_id"] for d in cfgs.values()]
    assert len(set(uids)) == len(uids)
    published = {t for _, t, _, _ in run["live"].msgs}
    version = json.loads((ROOT / "firmware" / "package.json").read_text())["version"]
    devices = set()
    for topic, d in cfgs.items():
        assert set(d) <= set(ABBR), (topic, set(d) - set(ABBR))
        prefix, component, node, obj, _ = topic.split("/")
        assert node == NODE and component in ("sensor", "binary_sensor") and d["uniq_id"] == NODE + "_" + obj
        for key in ("stat_t", "avty_t", "json_attr_t"):
            if key in d:
                assert d[key].startswith("~/") and d["~"] + d[key][1:] in published, (topic, key)
        dev = d["dev"]
        assert set(dev) == set(DEVICE_ABBR) and dev["sw"] == version
        devices.add(json.dumps(dev, sort_keys=True))
        dcla = d.get("dev_cla")
        if component == "sensor":
            if dcla is not None:
                assert d["unit_of_meas"] in SENSOR_UNITS[dcla], (topic, d)
            assert d.get("stat_cla") in (None, "measurement", "total", "total_increasing"), topic
            if d.get("stat_cla") is None:
                assert "unit_of_meas" not in d, topic  # text sensors: charge state, reasons, last event
        else:
            assert dcla is None or dcla in BINARY_CLASSES, topic
    assert len(devices) == 1
    dev = json.loads(devices.pop())
    assert dev["ids"] == [NODE] and dev["name"] and dev["mf"] and dev["mdl"]
    cells = [t for t in cfgs if t.split("/")[3].startswith("cell_") and t.split("/")[3][5:].isdigit()]
    assert len(cells) == len(CELLS)
    temps = sorted(t.split("/")[3] for t in cfgs if "/temp_" in t)
    assert temps == ["temp_1", "temp_2", "temp_mos"]  # the sensors the pack has (STATE)


def test_every_template_gives_the_packs_value(run):
    cfgs = configs(run["live"].msgs)
    state = states(run)[-1][1]
    got = {}
    for topic, d in cfgs.items():
        if d["stat_t"] == "~/state":
            got[topic.split("/")[3]] = render(d["val_tpl"], state)
        if "json_attr_tpl" in d:
            assert json.loads(render(d["json_attr_tpl"], state)) == {"alarms": []}
    for i, v in enumerate(CELLS):
        assert float(got["cell_%d" % (i + 1)]) == v
    assert abs(float(got["voltage"]) - sum(CELLS)) < 0.006
    assert float(got["current"]) == STATE["battery_current_a"] and float(got["soc"]) == STATE["soc_percent"]
    assert float(got["soh"]) == STATE["soh_percent"] and float(got["full"]) == STATE["nominal_capacity_ah"]
    assert float(got["remaining"]) == STATE["remaining_capacity_ah"]
    assert float(got["temp_mos"]) == STATE["power_tube_temp_c"] and float(got["temp_2"]) == STATE["t2_c"]
    assert float(got["cell_max"]) == max(CELLS) and float(got["cell_min"]) == min(CELLS)
    assert abs(float(got["cell_delta"]) - (max(CELLS) - min(CELLS))) < 1e-9
    assert float(got["cvl"]) == U.EXPECT["cvl_v"]  # RCV x cells: the limits as decided
    assert got["bms_link"] == "ON" and got["inverter_link"] == "ON" and got["can_bus"] == "OFF"
    assert got["alarms"] == "OFF" and got["charge_enable"] in ("ON", "OFF")
    assert got["charge_state"] == "bulk" and int(got["cycles"]) >= 0 and got["soc_sent"] == "64"


def test_the_state_is_the_simulated_pack_once_a_second(run):
    st = states(run)
    assert len(st) >= SECONDS - 3, why(run)
    gaps = [b[0] - a[0] for a, b in zip(st, st[1:], strict=False)]
    # once a second, also while the second discovery round goes (after HA's birth); one more right
    # after each round, for the new entities
    assert 0.8 < sum(gaps) / len(gaps) < 1.1 and max(gaps) < 1.3, gaps
    d = st[-1][1]
    assert d["cell_voltages_v"] == CELLS and d["num_cells"] == 16
    assert d["soc_percent"] == 64 and d["battery_current_a"] == 20.5 and d["t1_c"] == 21.4
    assert d["cell_ovp_v"] == 3.65 and d["max_discharge_current_a"] == 200.0
    assert d["links"] == {"bms": "fresh", "bms_age_ms": d["links"]["bms_age_ms"], "inverter": "ok",
                          "can": "active", "wifi": "up", "mqtt": "connected"}
    assert 0 <= d["links"]["bms_age_ms"] < 2500
    assert d["device"] == DEV and d["packs"] == {"configured": 1, "online": 1}
    assert d["limits"]["cvl_v"] == U.EXPECT["cvl_v"] and d["charge"]["state"] == "bulk"
    assert not run["live"].on(BASE + "/pack/1/state")  # one pack: no pack topics


def test_availability_online_retained_then_the_lwt(run):
    live = [p for _, _, p, _ in run["live"].on(BASE + "/availability")]
    assert live[0] == "online" and live[-1] == "offline", live
    late = run["late"].on(BASE + "/availability")
    assert late and late[0][2] == "online" and late[0][3], late  # retained, while the gateway runs
    after = run["after"].on(BASE + "/availability")
    assert after and after[0][2] == "offline" and after[0][3], after  # the LWT, retained
    off_t = run["live"].on(BASE + "/availability")[-1][0]
    assert off_t - run["ended"] < 1.5  # the broker sees the socket close at once


def test_discovery_is_retained_and_sent_again_on_ha_birth(run):
    for sub in ("late", "after"):
        kept = [m for m in run[sub].msgs if m[1].endswith("/config")]
        assert len(kept) == len(configs(run["live"].msgs)) and all(m[3] for m in kept), sub
    cfg_msgs = [m for m in run["live"].msgs if m[1].endswith("/config")]
    first = [m for m in cfg_msgs if m[0] < run["birth_t"]]
    second = [m for m in cfg_msgs if m[0] >= run["birth_t"]]
    assert len(first) == len(second) == len(configs(run["live"].msgs))
    assert second[-1][0] - second[0][0] < 3.0  # one round: 46 messages, 20 ms apart
    assert "HA restarts 1" in run["log"], why(run)


def test_events_are_published_as_they_happen(run):
    ev = [p for _, _, p, _ in run["live"].on(BASE + "/event")]
    assert any(e.startswith("JK-BMS -> inverter CAN gateway: BMS jk-pb") for e in ev), ev  # from before the connect
    assert any(e.startswith("network: MQTT connected to 127.0.0.1:") for e in ev), ev
    assert "BMS data complete: CAN output starts" in ev


def test_the_sizes(run):
    st = run["live"].on(BASE + "/state")
    cfgs = [m for m in run["live"].msgs if m[1].endswith("/config")]
    sizes = [len(p) for _, _, p, _ in st]
    assert max(sizes) < 2000, max(sizes)
    assert max(len(p) for _, _, p, _ in cfgs) < 600
    # the figures for docs/network.md (pytest -s shows them)
    print("state %d..%d bytes, %d discovery messages, %d bytes in all, run %.1f s" % (
        min(sizes), max(sizes), len(cfgs) // 2, sum(len(p) for _, _, p, _ in cfgs) // 2, run["elapsed"]))


def test_a_broker_outage_is_ridden_out(outage):
    log = outage["log"]
    assert outage["rc"] == 0, why(outage)
    said = [line for line in log.splitlines() if "network: MQTT" in line]
    assert len(said) == 3, said  # connected, lost (once), connected again
    assert "MQTT connection lost (broker connection lost; 1 so far)" in said[1], said
    assert "Task exception" not in log and "Traceback" not in log, why(outage)  # mqtt_as's reader: an OSError
    m = [line for line in log.splitlines() if line.startswith("  published ")][-1]
    skipped = int(m.split("skipped while down ")[1].split(",")[0])
    assert OUTAGE[1] - 2 <= skipped <= OUTAGE[1] + 4 and "connects 2, losses 1" in m, m


def test_after_the_outage_everything_is_published_again(outage):
    back = outage["back"]  # subscribed to the restarted, empty broker
    avail = back.on(BASE + "/availability")
    assert avail and avail[0][2] == "online", avail  # published again on the reconnect
    cfgs = configs(back.msgs)
    assert len(cfgs) >= 27 + 16 + 3
    assert len(back.on(BASE + "/state")) >= OUTAGE_SECONDS - sum(OUTAGE) - 5
    assert any("MQTT connection lost" in p for _, _, p, _ in back.on(BASE + "/event"))


def test_the_can_output_goes_on_through_the_outage(outage):
    ts = [t for t, i, _ in outage["frames"] if i == 0x351]
    gaps = [b - a for a, b in zip(ts, ts[1:], strict=False)]
    assert len(ts) >= OUTAGE_SECONDS - 3, why(outage)
    assert abs(sum(gaps) / len(gaps) - 1.0) < 0.05 and max(gaps) < 1.5, gaps


# The real MqttOut and mqtt_as under the unix port on a gateway of fakes (host_tests/portable),
# with TLS on, for SECONDS: a ticker task measures the longest time the interpreter did not run it
TLS_SCRIPT = """
import sys
ROOT = %(root)r
sys.path[:0] = [ROOT + "/firmware/lib", ROOT + "/host", ROOT + "/host_tests/portable"]
from fakenet import env
env.setup()
import asyncio
from fakes import CountingWdt, FakeCan, FakeRecovery, FakeUart, MemStore, load_pb_pack
from app import config as C
from app import gateway as G
from compat import sleep_ms, ticks_diff, ticks_ms
cfg = C.defaults()
cfg.update({"wifi_ssid": "sim", "mqtt_host": "127.0.0.1", "mqtt_port": %(port)d, "mqtt_tls": "on",
            "mqtt_interval_s": 1})
gw = G.Gateway(cfg, FakeUart({}), FakeCan(), FakeRecovery(), CountingWdt(), MemStore(), None, "gateway.json",
               print)
load_pb_pack(gw.source.snap)
gw.source.fresh.data_ok(ticks_ms())
out = gw.status.net.outputs[0]
out.client._response_time = 2000  # mqtt_as's no-progress limit, shorter than its 10 s for the test
worst = [0]

async def ticker():
    last = ticks_ms()
    while True:
        await sleep_ms(20)
        now = ticks_ms()
        worst[0] = max(worst[0], ticks_diff(now, last))
        last = now

async def main():
    tasks = [asyncio.create_task(fn()) for _, fn in gw.status.net.tasks()]
    tasks.append(asyncio.create_task(ticker()))
    await sleep_ms(%(ms)d)
    print("RESULT connects=%%d published=%%d failures=%%d worst_ms=%%d why=%%s" %% (
        out.connects, out.published, out.failures, worst[0], out.why))
    sys.exit(0)

asyncio.run(main())
"""


def tls_run(tmp, port, ms):
    script = tmp / "tls_run.py"
    script.write_text(TLS_SCRIPT % {"root": str(ROOT), "port": port, "ms": ms})
    exe = Path(sys.executable).parent / "micropython"
    try:
        r = subprocess.run([str(exe), "-X", "heapsize=2M", str(script)], capture_output=True, text=True,
                           timeout=ms / 1000 + 20)
    except subprocess.TimeoutExpired as e:
        pytest.fail("the unix port did not finish: the TLS handshake blocked the interpreter\n%s" % (e.stdout,))
    m = [line for line in r.stdout.splitlines() if line.startswith("RESULT ")]
    assert r.returncode == 0 and m, r.stdout[-3000:] + r.stderr[-3000:]
    return dict(kv.split("=", 1) for kv in m[0][len("RESULT "):].split(" ", 4)), r.stdout


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory):
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed: no certificate for the TLS listener")
    tmp = tmp_path_factory.mktemp("mosquitto-tls")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(tmp / "key.pem"),
                    "-out", str(tmp / "cert.pem"), "-days", "2", "-subj", "/CN=127.0.0.1"], check=True,
                   capture_output=True)
    b = Broker(tmp, "certfile %s\nkeyfile %s\n" % (tmp / "cert.pem", tmp / "key.pem"))
    yield b
    b.stop()


def test_tls_to_a_real_broker(tls_broker, tmp_path):
    got, out = tls_run(tmp_path, tls_broker.port, 3000)
    assert got["connects"] == "1" and int(got["published"]) >= 40, out[-2000:]  # online, 46 configs, states
    assert int(got["worst_ms"]) < 500, got  # the handshake's crypto is the longest step (fast on this host)


def test_a_server_that_never_answers_the_tls_handshake_cannot_stop_the_gateway(tmp_path):
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(4)  # the kernel completes the TCP handshake; nobody reads or answers
    try:
        got, out = tls_run(tmp_path, hole.getsockname()[1], 3500)
    finally:
        hole.close()
    assert got["connects"] == "0" and int(got["failures"]) >= 1, out[-2000:]
    assert "network: MQTT: no connection to 127.0.0.1:" in out, out[-2000:]  # said, and tried again
    assert int(got["worst_ms"]) < 200, got  # the ticker (as the CAN tasks) ran throughout
