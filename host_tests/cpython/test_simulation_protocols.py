# Every inverter protocol end to end: the whole firmware (tools/simulate.py --protocol NAME: the firmware app under
# the MicroPython unix port, the JK-BMS simulator, a simulated inverter that speaks NAME) for a short run, its frames
# decoded with the protocol's shipped DBC (docs/dbc/NAME.dbc, cantools; written by us, so no skip): every frame id
# of the encoder at the protocol's period, carrying the simulated pack; the console's `frames` command reports the
# inverter's keep-alive under the protocol's HEARTBEAT name. Per protocol: Growatt's set answers each 0x301 query;
# Deye's simulated inverter sends 0x305 only after a 0x356; the SMA Sunny Island's 0x305 / 0x306 values come back in
# the console's "inverter says:" lines; Luxpower's 0x300 shutdown request is reported (an event, the console) and
# the frames go on. And the protocol switch by the config file alone ({"protocol": "victron"}).
#
# simulate.py --candump-tx writes both directions into the candump log (python-can's " R" / " T" marks: the
# gateway's frames are R, the simulated inverter's T). The runs are independent and mostly idle after start-up
# (one frame set a second), so they run concurrently, a few at a time, staggered: the whole file takes about
# two runs' time, not the sum. hold_s 0 and ramp_a_s 100: the limits are full within ~2 s of the first data.
import json
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from statistics import mean

import can
import cantools
import pytest
import test_simulation as U
from protocol_cases import missing

import protocols

ROOT = Path(__file__).resolve().parents[2]
SIMULATE = ROOT / "tools" / "simulate.py"
DBC_DIR = ROOT / "docs" / "dbc"
SECONDS = 10
CONSOLE_AT = 8
COMMAND_AT = 4  # luxpower: the inverter's 0x300 shutdown request
CFG = {"hold_s": 0, "ramp_a_s": 100}
WORKERS = 5
PERIOD = 1.0  # s: every protocol here uses can_period_ms (default 1000 ms)
QUERY_GAP = 0.1  # s: a Growatt set starts at most this long after the 0x301 query it answers
ACK_GAP = 0.1  # s: the simulated Deye answers a 0x356 within this
STEADY = 2.5  # s: from here on the firmware has data and the inverter link is up

STATE = U.STATE  # 53.30 V, 20.5 A charging, SOC 64, SOH 98, battery sensors 21.4 / 22.0 degC
EXPECT = U.EXPECT  # CVL 55.2 V, CCL = DCL = 100 A (the user caps)


# name -> (simulate.py arguments, config, protocol the firmware must run)
RUNS = {p: (["--protocol", p], CFG, p) for p in protocols.NAMES}
RUNS["luxpower"] = (["--protocol", "luxpower", "--fault", "inverter-command@%d" % COMMAND_AT], CFG, "luxpower")
RUNS["pylon"] = (["--protocol", "pylon", "--show"], CFG, "pylon")  # --show: the frames decoded on stdout
RUNS["victron-by-config"] = ([], dict(CFG, protocol="victron"), "victron")
# the per-protocol safe default on stale BMS data (docs/inverter-can.md "Safe defaults"): the BMS falls silent at
# SILENT_AT, stale bms_timeout_s later; Deye's frames stop, Growatt's go on with 0 A + alarms
SILENT_AT = 4
STALE_CFG = dict(CFG, bms_timeout_s=2)
STALE_BY = SILENT_AT + STALE_CFG["bms_timeout_s"] + 1.5  # s: stale by then (poll phase, one lost poll's slack)
RUNS["deye-stale"] = (["--protocol", "deye", "--fault", "bms-silent@%d" % SILENT_AT], STALE_CFG, "deye")
RUNS["growatt-stale"] = (["--protocol", "growatt", "--fault", "bms-silent@%d" % SILENT_AT], STALE_CFG, "growatt")


class Run:
    def __init__(self, name, rc, stdout, stderr, log, frames):
        self.name, self.rc, self.stdout, self.stderr, self.log = name, rc, stdout, stderr, log
        self.protocol = RUNS[name][2]
        self.gw = [(t, i, d) for t, i, d, rx in frames if rx]  # what the gateway sent
        self.inv = [(t, i, d) for t, i, d, rx in frames if not rx]  # what the simulated inverter sent
        self.enc = protocols.load(self.protocol).from_config({"battery_name": "", "modules": 0})

    def why(self):
        return "%s: rc %s\n--- stderr\n%s\n--- firmware log\n%s" % (self.name, self.rc, self.stderr[-2000:],
                                                                     self.log[-3000:])

    def bursts(self):
        """[(time of the first frame, {id: data})]: a set starts with the encoder's first id or a repeated id."""
        out = []
        first = self.enc.ids[0]
        for t, i, d in self.gw:
            if not out or i == first or i in out[-1][1]:
                out.append((t, {}))
            out[-1][1][i] = d
        return out

    def console(self):
        """The console's reply lines (the lines that are not "[t] event" lines)."""
        return [line for line in self.log.splitlines() if not re.match(r"^\[ *\d+\.\d\] ", line)]


def _simulate(tmp, name, state_path):
    args, cfg, _ = RUNS[name]
    base = tmp / name
    cfg_path = tmp / (name + ".json")
    cfg_path.write_text(json.dumps(cfg))
    cmd = [sys.executable, str(SIMULATE), "--state", str(state_path), "--seconds", str(SECONDS),
           "--candump", str(base) + ".log", "--candump-tx", "--log", str(base) + ".fw", "--config", str(cfg_path),
           "--console", "frames@%d" % CONSOLE_AT] + args
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=SECONDS + 60, cwd=str(ROOT))
        rc, out, err = r.returncode, r.stdout, r.stderr
    except subprocess.TimeoutExpired as e:
        rc, out, err = "killed: simulate.py did not finish in time", e.stdout or "", e.stderr or ""
    log_path, fw_path = Path(str(base) + ".log"), Path(str(base) + ".fw")
    frames = []
    if log_path.exists():
        frames = [(m.timestamp, m.arbitration_id, bytes(m.data), m.is_rx)
                  for m in can.io.CanutilsLogReader(str(log_path))]
    return Run(name, rc, out if isinstance(out, str) else out.decode(), err if isinstance(err, str) else err.decode(),
               fw_path.read_text() if fw_path.exists() else "", frames)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Every run that can run (its module and DBC are there), WORKERS at a time, started 0.4 s apart."""
    tmp = tmp_path_factory.mktemp("sim-protocols")
    state_path = tmp / "state.json"
    state_path.write_text(json.dumps(STATE))
    names = [n for n in RUNS if not missing(RUNS[n][2])]
    with ThreadPoolExecutor(WORKERS) as pool:
        futures = {}
        for k, n in enumerate(names):
            if k:
                time.sleep(0.4)  # their start-ups (CPython imports, MicroPython compiling) do not all coincide
            futures[n] = pool.submit(_simulate, tmp, n, state_path)
        done = {n: f.result() for n, f in futures.items()}
    return done


def get(runs, name):
    why = missing(RUNS[name][2])
    if why:
        pytest.fail("protocol %s: %s" % (RUNS[name][2], why))
    run = runs[name]
    assert run.rc == 0, run.why()
    return run


def dbc(protocol):
    return cantools.database.load_file(str(DBC_DIR / (protocol + ".dbc")), strict=True)


# ---------------------------------------------------------------- every protocol
@pytest.mark.parametrize("name", protocols.NAMES)
def test_every_frame_at_the_period(runs, name):
    run = get(runs, name)
    ids = list(run.enc.ids)
    assert {i for _, i, _ in run.gw} == set(ids), run.why()
    for t, b in run.bursts()[:-1]:  # the last may be cut by the end of the run
        assert list(b) == ids, "incomplete or reordered set at %.3f s: %s" % (t, [hex(i) for i in b])
    for can_id in ids:
        ts = [t for t, i, _ in run.gw if i == can_id]
        assert len(ts) >= SECONDS - 4, (hex(can_id), ts, run.why())
        gaps = [b - a for a, b in zip(ts, ts[1:], strict=False)]
        # loose (the runs share the CPU): the mean on the period, no gap far off it
        assert abs(mean(gaps) - PERIOD) <= 0.1, (hex(can_id), gaps)
        assert all(0.5 <= g <= 1.5 for g in gaps), (hex(can_id), gaps)


@pytest.mark.parametrize("name", protocols.NAMES)
def test_frames_decode_to_the_simulated_pack(runs, name):
    """The last complete set, decoded with the shipped DBC: pack voltage, current, SOC, CVL and the current limits
    of the simulated pack (found by unit: the signal names are each protocol's own)."""
    run = get(runs, name)
    db = dbc(run.protocol)
    sets = [b for t, b in run.bursts() if t > STEADY and len(b) == len(run.enc.ids)]
    assert sets, run.why()
    volts, amps, socs = [], [], []
    for can_id, data in sets[-1].items():
        msg = db.get_message_by_frame_id(can_id)
        for sig, v in msg.decode(data, decode_choices=False).items():
            unit = msg.get_signal_by_name(sig).unit
            if unit == "V":
                volts.append(v)
            elif unit == "A":
                amps.append(v)
            elif unit == "%" and "soc" in sig.lower():
                socs.append(v)
    assert any(abs(v - EXPECT["volts"]) < 0.011 for v in volts), volts  # pack voltage
    assert any(abs(v - EXPECT["cvl_v"]) < 0.051 for v in volts), volts  # CVL
    assert any(abs(v - EXPECT["amps"]) < 0.051 for v in amps), amps  # pack current
    assert any(abs(v - EXPECT["ccl_a"]) < 0.051 for v in amps), amps  # CCL / DCL: the user caps
    assert all(abs(v) <= EXPECT["ccl_a"] + 0.05 for v in amps), amps  # nothing above them
    assert EXPECT["soc"] in socs, socs


@pytest.mark.parametrize("name", protocols.NAMES)
def test_the_inverter_frames_are_in_the_dbc(runs, name):
    """The shipped DBC also decodes what the inverter sends (sender INV)."""
    run = get(runs, name)
    db = dbc(run.protocol)
    assert run.inv, run.why()
    for _, can_id, data in run.inv:
        msg = db.get_message_by_frame_id(can_id)
        assert "INV" in msg.senders, (msg.name, msg.senders)
        msg.decode(data)


@pytest.mark.parametrize("name", protocols.NAMES)
def test_console_reports_the_heartbeat(runs, name):
    run = get(runs, name)
    hb = run.enc.HEARTBEAT
    lines = [line for line in run.console() if line.startswith(hb + ": ")]
    assert len(lines) == 1, run.console()
    m = re.match(re.escape(hb) + r": (\d+) received, last (\d+) ms ago", lines[0])
    assert m and int(m.group(1)) >= CONSOLE_AT - 3, lines[0]
    assert int(m.group(2)) <= 1500, lines[0]
    banner = [e for e in run.log.splitlines() if "JK-BMS -> inverter CAN gateway" in e]
    assert banner and ", protocol %s, " % run.protocol in banner[0], banner


# ---------------------------------------------------------------- per protocol
def test_growatt_sets_answer_the_queries(runs):
    run = get(runs, "growatt")
    queries = [t for t, i, d in run.inv if i == 0x301]
    assert all(d == bytes.fromhex("1122334455667788") for _, i, d in run.inv if i == 0x301)
    assert len(queries) >= SECONDS - 1
    late = []
    for t, _ in run.bursts():
        if t < STEADY:
            continue
        before = [q for q in queries if q <= t]
        if not before or t - before[-1] > QUERY_GAP:
            late.append((t, before[-1] if before else None))
    assert not late, ("sets not right after a 0x301 query (set, query)", late, queries)
    line = [x for x in run.console() if x.startswith("0x301: ")]
    m = re.search(r", (\d+) were queries, (\d+) answered at once with a set", line[0])
    assert m and int(m.group(2)) >= CONSOLE_AT - 3 and int(m.group(2)) <= int(m.group(1)), line


def test_deye_acknowledges_each_0x356(runs):
    run = get(runs, "deye")
    assert {i for _, i, _ in run.inv} == {0x305}
    acks = [t for t, i, d in run.inv if i == 0x305]
    measures = [t for t, i, _ in run.gw if i == 0x356]
    assert acks and len(measures) - 1 <= len(acks) <= len(measures)
    for a in acks:
        before = [m for m in measures if m <= a]
        assert before and a - before[-1] <= ACK_GAP, (a, measures)
    # one 0x305 per 0x356, never one without it
    for m0, m1 in zip(measures, measures[1:] + [1e9], strict=True):
        assert sum(1 for a in acks if m0 <= a < m1) <= 1


def test_sma_inverter_says(runs):
    """The SI's 0x305 / 0x306 repeat what the gateway sent (voltage, current negative while charging, temperature,
    SOC; SOH, the charge set-point = CVL): the console shows what the firmware parsed from them."""
    run = get(runs, "sma")
    says = [x[len("inverter says: "):] for x in run.console() if x.startswith("inverter says: ")]
    text = "\n".join(says)
    assert "SI 0x305: 53.3 V, -20.5 A (- = charging), 21.7 C, SOC 64.0 %" in text, says
    assert "SI 0x306: state operating, error 0, charge set-point 55.2 V, SOH 98 %, procedure 10" in text, says
    assert "SI 0x307: relays 0x0000" in text, says
    assert {i for _, i, _ in run.inv} == {0x305, 0x306, 0x307}


def test_victron_gx_frames(runs):
    run = get(runs, "victron")
    assert {(i, d) for _, i, d in run.inv} == {(0x305, bytes(8)), (0x307, bytes.fromhex("1234567856494300"))}
    assert any(x.startswith("inverter says: GX 0x307") for x in run.console()), run.console()


def test_luxpower_shutdown_request_is_reported_and_frames_go_on(runs):
    run = get(runs, "luxpower")
    cmds = [(t, d) for t, i, d in run.inv if i == 0x300]
    assert len(cmds) == 1 and cmds[0][1] == bytes([1, 0, 0, 0, 0, 0, 0, 0])
    asks = [e for e in run.log.splitlines() if "inverter asks: " in e]
    assert len(asks) == 1 and "not carried out" in asks[0], run.log
    t_ask = float(re.match(r"^\[ *(\d+\.\d)\]", asks[0]).group(1))
    assert t_ask < CONSOLE_AT
    line = [x for x in run.console() if x.startswith("inverter commands not carried out: ")]
    assert line and line[0].startswith("inverter commands not carried out: 1 ("), run.console()
    after = [t for t, _ in run.bursts() if t > cmds[0][0]]
    assert len(after) >= SECONDS - COMMAND_AT - 2, after  # the frames continue, at the period


def test_protocol_from_the_config_file(runs):
    """{"protocol": "victron"} in the config, no --protocol: Victron frames, and the inverter speaks Victron."""
    run = get(runs, "victron-by-config")
    assert [i for i, _ in run.bursts()[1][1].items()] == list(run.enc.ids)
    assert {i for _, i, _ in run.gw} == set(run.enc.ids)
    assert {i for _, i, _ in run.inv} == {0x305, 0x307}


def test_show_decodes_with_the_dbc(runs):
    run = get(runs, "pylon")
    name = dbc("pylon").get_message_by_frame_id(0x356).name
    shown = [x for x in run.stdout.splitlines() if re.match(r"^ *\d+\.\d{3}  356#", x)]
    assert shown and all(name in x for x in shown), run.stdout[-2000:]
    assert any(re.match(r"^ *\d+\.\d{3}  305#0000000000000000 < ", x) for x in run.stdout.splitlines())
    assert "  firmware | " in run.stdout


def test_deye_stops_its_frames_on_stale_bms_data(runs):
    """link_loss "auto" on deye = stop: Deye keeps using a battery at 0 A limits, so no frames at all while the
    BMS data is stale (the inverter raises its own BMS-communication fault); the boot line says so."""
    run = get(runs, "deye-stale")
    banner = [e for e in run.log.splitlines() if "JK-BMS -> inverter CAN gateway" in e]
    assert banner and banner[0].endswith("protocol deye, every 1000 ms, stale BMS data: frames stop"), banner
    sent = [t for t, _, _ in run.gw]
    assert any(t < SILENT_AT for t in sent), run.why()  # it sent while the data was fresh
    assert not [t for t in sent if t > STALE_BY], ("frames on stale data", [t for t in sent if t > STALE_BY])
    assert any("BMS data STALE" in e and "CAN output stopped" in e for e in run.log.splitlines()), run.log


def test_growatt_sends_zeros_and_alarms_on_stale_bms_data(runs):
    """link_loss "auto" on growatt = zeros: an SPF in LI mode cuts its AC output when the frames stop, so they go
    on, with CCL = DCL = 0, both enables off and the system-error / internal-comm bits (decoded with the DBC)."""
    run = get(runs, "growatt-stale")
    db = dbc("growatt")
    late = [b for t, b in run.bursts() if t > STALE_BY and len(b) == len(run.enc.ids)]
    assert len(late) >= 1, run.why()
    lim = db.decode_message(0x311, late[-1][0x311])
    alarms = db.decode_message(0x312, late[-1][0x312])
    req = db.decode_message(0x319, late[-1][0x319], decode_choices=False)
    assert lim["Charge_Current_Limit"] == 0 and lim["Discharge_Current_Limit"] == 0, lim
    assert abs(lim["CV_Charge_Voltage"] - EXPECT["cvl_v"]) < 0.051, lim  # CVL kept from the last valid data
    assert lim["Status_Charge_Enable"] == 0 and lim["Status_Discharge_Enable"] == 0, lim
    assert alarms["T2_System_Error"] == 1 and alarms["T4_Internal_Comm_Fail"] == 1, alarms
    enables = [v for k, v in req.items() if "enable" in k.lower()]
    assert enables and not any(enables), req
    early = [b for t, b in run.bursts() if STEADY < t < SILENT_AT and len(b) == len(run.enc.ids)]
    assert early and db.decode_message(0x311, early[-1][0x311])["Charge_Current_Limit"] > 0  # not zero before
