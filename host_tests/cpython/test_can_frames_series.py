"""tools/can_frames.py --series: a time series replayed through the firmware's stateful policy
(sources.base.Freshness, charge.policy.ChargePolicy, protocols.make), run as a subprocess, on the
series' own clock: the hold after the first data and after an outage, the ramp and the link loss
all run in series time.

The state is a real JK-PB capture pair (host_tests/fixtures/jk_frames.json, decoded by tools/jk_decode.py
and merged by the tools' state loader); the output is read back with python-can's can.LogReader from a
.log file and decoded with cantools and the public Pylontech DBC in ../shared/dbc, and the link-loss
bits are checked against the firmware encoder's own constants (protocols.pylon).

Firmware defaults the expectations rely on (app.config.SCHEMA): bms_timeout_s, hold_s, ramp_a_s,
can_period_ms 1000, max_charge_a = max_discharge_a = 100 (below 0.9 x the pack's 150 A and its
temperature derating), read from gwconfig.defaults() where they enter a figure."""
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import can
import pytest
import repo_data

from app import config as gwconfig
from protocols import pylon
from tools import state_json

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / "tools" / "can_frames.py"
DECODER = ROOT / "tools" / "jk_decode.py"
BY_ID = {f["id"]: f for f in repo_data.fixtures()}
IDS = [0x35E, 0x351, 0x355, 0x356, 0x359, 0x35C]
LINE = re.compile(r"^\((\d+\.\d{6})\) can0 ([0-9A-F]{3})#([0-9A-F]{16})$")
CELL, SETTINGS = "rs485_pb_status_response_with_ack_mpp", "rs485_pb_settings_response_with_ack_mpp"
CFG = gwconfig.defaults()
DEFAULT_TIMEOUT_S = CFG["bms_timeout_s"]
HOLD_S = CFG["hold_s"]  # CCL = DCL = 0 this long after a block cleared (the start counts as one) ...
RAMP_A_S = CFG["ramp_a_s"]  # ... then up at this rate
FULL_A = 100.0  # the user maxima, the pack's limits once the ramp is over
RAMP_S = math.ceil(FULL_A / RAMP_A_S)
# the outage series: data every second from 0 to DATA_TO (past the hold and the ramp), silence,
# data again from BACK to END (past the hold and the ramp once more)
DATA_TO = HOLD_S + RAMP_S + 5
BACK = DATA_TO + 9
END = BACK + HOLD_S + RAMP_S + 5


def run(*args, stdin=None):
    return subprocess.run([sys.executable, str(TOOL), *args], input=stdin, capture_output=True, text=True,
                          timeout=120)


@pytest.fixture(scope="module")
def state():
    r = subprocess.run([sys.executable, str(DECODER), BY_ID[CELL]["hex"], BY_ID[SETTINGS]["hex"]],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return state_json.merge(json.loads(line) for line in r.stdout.splitlines())


def write_series(path, lines):
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return str(path)


def outage_series(state):
    """Data every second from 0 to DATA_TO s, silence to BACK s (one explicit silence line 3 s in),
    data every second again from BACK to END - 1 s, and the series extended to END s by a silence
    line."""
    lines = [dict(state, t_s=t) for t in range(DATA_TO + 1)]
    lines.append({"t_s": DATA_TO + 3, "bms": "silent"})
    lines += [dict(state, t_s=t) for t in range(BACK, END)]
    lines.append({"t_s": END, "bms": "silent"})
    return lines


def bursts(tmp_path, stdout):
    """{time: {can_id: data}} from the output, read by python-can from a .log file."""
    for line in stdout.splitlines():
        assert LINE.match(line), line
    log = tmp_path / "series.log"
    log.write_text(stdout)
    out = {}
    msgs = list(can.LogReader(str(log)))
    assert len(msgs) == len(stdout.splitlines())
    for m in msgs:
        out.setdefault(round(m.timestamp, 3), {})[m.arbitration_id] = bytes(m.data)
    for t, frames in out.items():
        assert sorted(frames) == sorted(IDS), t  # whole frame sets only
    return out


def decoded(frames):
    return {i: repo_data.pylon_dbc().decode_message(i, d, decode_choices=False) for i, d in frames.items()}


def alarm_word(frames):
    return int.from_bytes(frames[0x359][0:4], "little")


def ramp_a(t, since):
    """The current limit hold-and-ramp allows at t after a block that cleared at `since` (s)."""
    return min(FULL_A, max(0.0, (t - since - HOLD_S) * RAMP_A_S))


def check_fresh(frames, since, t, slack=1.0):
    """A frame set on fresh data: no alarm, and both limits where the hold and the ramp from
    `since` put them, to within `slack` s (one CAN period: the hold counts from the last blocked
    decision); the enables follow the limits."""
    m = decoded(frames)
    for sig, enable in (("Charge_Current_Limitation", "Charge_Enable"),
                        ("Discharge_Current_Limitation", "Discharge_Enable")):
        a = m[0x351][sig]
        assert ramp_a(t, since + slack) - 1e-6 <= a <= ramp_a(t, since - slack) + 1e-6, (t, sig, a)
        assert m[0x35C][enable] == (a > 0), (t, enable)
    assert (m[0x359]["Warn_Internal"], m[0x359]["Alarm_Internal"]) == (0, 0)
    assert not alarm_word(frames) & (pylon.A_COMM_FAIL | pylon.P_SYSTEM_ERROR)


def check_normal(frames):
    m = decoded(frames)
    assert m[0x351]["Charge_Current_Limitation"] == pytest.approx(FULL_A)
    assert m[0x351]["Discharge_Current_Limitation"] == pytest.approx(FULL_A)
    assert (m[0x35C]["Charge_Enable"], m[0x35C]["Discharge_Enable"]) == (1, 1)
    assert (m[0x359]["Warn_Internal"], m[0x359]["Alarm_Internal"]) == (0, 0)
    assert not alarm_word(frames) & pylon.A_COMM_FAIL


def check_held(frames):
    """The hold after a block (or the start): fresh data, no alarm, but CCL = DCL = 0."""
    m = decoded(frames)
    assert m[0x351]["Charge_Current_Limitation"] == 0 == m[0x351]["Discharge_Current_Limitation"]
    assert (m[0x35C]["Charge_Enable"], m[0x35C]["Discharge_Enable"]) == (0, 0)
    assert (m[0x359]["Warn_Internal"], m[0x359]["Alarm_Internal"]) == (0, 0)
    assert not alarm_word(frames) & (pylon.A_COMM_FAIL | pylon.P_SYSTEM_ERROR)


def check_link_lost(frames):
    m = decoded(frames)
    assert m[0x351]["Charge_Current_Limitation"] == 0 == m[0x351]["Discharge_Current_Limitation"]
    assert (m[0x35C]["Charge_Enable"], m[0x35C]["Discharge_Enable"]) == (0, 0)
    # the communication-fault bit (and the system error) of the firmware's Pylontech encoder
    assert alarm_word(frames) & pylon.A_COMM_FAIL and alarm_word(frames) & pylon.P_SYSTEM_ERROR
    assert (m[0x359]["Warn_Internal"], m[0x359]["Alarm_Internal"]) == (1, 1)


def test_outage_zeros_then_recovery(tmp_path, state):
    r = run("--series", write_series(tmp_path / "s.jsonl", outage_series(state)))
    assert r.returncode == 0 and r.stderr == "", r.stderr
    b = bursts(tmp_path, r.stdout)
    # one burst a second (the default CAN period) from 0 to END s, the series' last line
    assert sorted(b) == [float(t) for t in range(END + 1)]
    for t, frames in sorted(b.items()):
        # Freshness: stale once the data is older than bms_timeout_s, until new data comes
        if DATA_TO + DEFAULT_TIMEOUT_S < t < BACK:
            check_link_lost(frames)
        elif t < BACK:
            # the start is a block: 0 A for hold_s after the first data (series time), then the
            # ramp -- exactly: the first decision was at 0 s
            check_fresh(frames, 0.0, t, slack=0.0)
        else:
            check_fresh(frames, float(BACK), t)  # the outage was a block too
    assert [t for t in b if alarm_word(b[t]) & pylon.A_COMM_FAIL] == [
        float(t) for t in range(DATA_TO + DEFAULT_TIMEOUT_S + 1, BACK)]
    # the hold, the ramp and the full limits are all there, in series time
    for t in (1.0, HOLD_S - 1.0, BACK + 1.0, BACK + HOLD_S - 2.0):
        check_held(b[t])
    for t in (float(HOLD_S + RAMP_S), float(DATA_TO), float(END)):
        check_normal(b[t])
    first_back = min(t for t in b if t > BACK and decoded(b[t])[0x351]["Charge_Current_Limitation"] > 0)
    assert BACK + HOLD_S - 1.0 <= first_back <= BACK + HOLD_S + 1.0, first_back
    # the measurements keep coming from the last data set throughout
    v = decoded(b[float(DATA_TO + 7)])[0x356]["Battery_Voltage"]
    assert v == pytest.approx(state["battery_voltage_v"], abs=0.006)


def test_outage_with_link_loss_stop_sends_nothing(tmp_path, state):
    r = run("--series", write_series(tmp_path / "s.jsonl", outage_series(state)), "--link-loss", "stop")
    assert r.returncode == 0, r.stderr
    b = bursts(tmp_path, r.stdout)
    assert sorted(b) == [float(t) for t in range(END + 1) if not DATA_TO + DEFAULT_TIMEOUT_S < t < BACK]
    for t, frames in b.items():
        # never a stale frame set; after the gap the hold starts over
        check_fresh(frames, 0.0 if t < BACK else float(BACK), t, slack=0.0 if t < BACK else 1.0)
    check_normal(b[float(DATA_TO)])
    check_held(b[float(BACK)])
    check_normal(b[float(END)])


def test_timeout_and_period_options(tmp_path, state):
    path = write_series(tmp_path / "s.jsonl", outage_series(state))
    r = run("--series", path, "--timeout-s", "2", "--period-ms", "500")
    assert r.returncode == 0, r.stderr
    b = bursts(tmp_path, r.stdout)
    assert sorted(b) == [t / 2 for t in range(2 * END + 1)]
    lost = sorted(t for t in b if alarm_word(b[t]) & pylon.A_COMM_FAIL)
    # older than 2 s after the data at DATA_TO s, until the data at BACK s
    assert lost == [t / 2 for t in range(2 * (DATA_TO + 2) + 1, 2 * BACK)]
    # the ramp is a function of series time, not of the number of decisions: at 500 ms the
    # limits rise 2.5 A a burst and reach the same value at the same time as at 1000 ms
    for t in (HOLD_S + 0.5, HOLD_S + 1.0, HOLD_S + 7.5, float(HOLD_S + RAMP_S)):
        check_fresh(b[t], 0.0, t, slack=0.0)
    assert decoded(b[HOLD_S + 0.5])[0x351]["Charge_Current_Limitation"] == pytest.approx(RAMP_A_S / 2)


def test_no_frames_before_the_first_complete_data_set(tmp_path, state):
    """WAIT: nothing is sent until a complete data set (live data AND the BMS settings) arrived;
    the first frame sets then carry the pack with 0 A (the hold after the start)."""
    live = {k: v for k, v in state.items() if k not in state_json.SETTINGS_REQUIRED}  # no BMS settings
    lines = [{"t_s": 0, "bms": "silent"}, dict(live, t_s=1), dict(state, t_s=3), {"t_s": 4, "bms": "silent"}]
    r = run("--series", write_series(tmp_path / "s.jsonl", lines))
    assert r.returncode == 0
    warn = r.stderr.strip().splitlines()
    assert len(warn) == 1 and "series line 2" in warn[0] and "not a complete data set" in warn[0], warn
    b = bursts(tmp_path, r.stdout)
    assert sorted(b) == [3.0, 4.0]
    check_held(b[3.0])
    check_held(b[4.0])
    assert decoded(b[3.0])[0x355]["SOC"] == state["soc_percent"]


def test_data_lines_update_the_state(tmp_path, state):
    """A data line changes what it gives and keeps the rest, like a decoded frame in the firmware's
    snapshot: the settings of the first line stay."""
    lines = [dict(state, t_s=0), {"t_s": 1, "soc_percent": 42, "battery_current_a": -12.5},
             {"t_s": 2, "bms": "silent"}, {"t_s": 7, "battery_current_a": 3.0}, {"t_s": 8, "bms": "silent"}]
    r = run("--series", write_series(tmp_path / "s.jsonl", lines))
    assert r.returncode == 0 and r.stderr == "", r.stderr
    b = bursts(tmp_path, r.stdout)
    assert sorted(b) == [float(t) for t in range(9)]
    assert decoded(b[0.0])[0x355]["SOC"] == state["soc_percent"] != 42
    for t in range(1, 9):
        m = decoded(b[float(t)])
        assert m[0x355]["SOC"] == 42
        assert m[0x356]["Battery_Current"] == pytest.approx(-12.5 if t < 7 else 3.0)
        # the partial line at 7 s is fresh data again: no link loss at 7 or 8 s (the data at 2..6 s
        # was not older than the timeout either); all inside the hold after the start
        check_held(b[float(t)])
    # --merge is for --state
    r = run("--series", write_series(tmp_path / "s.jsonl", lines), "--merge")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--merge goes with --state" in r.stderr


def test_a_state_held_past_the_ramp_gives_the_single_state_frame_set(tmp_path, state):
    """--hex / --state print the frame set of a state once the hold and the ramp are over: the
    same frames the series sends from then on with that state."""
    single = run("--hex", BY_ID[CELL]["hex"], "--hex", BY_ID[SETTINGS]["hex"], "-v")
    assert single.returncode == 0, single.stderr
    settled = float(re.match(r"^(\d+) s after the first data: ", single.stderr).group(1))
    assert HOLD_S < settled <= HOLD_S + RAMP_S + 1
    end = int(settled) + 10
    lines = [dict(state, t_s=t) for t in range(end + 1)]
    r = run("--series", write_series(tmp_path / "s.jsonl", lines))
    assert r.returncode == 0, r.stderr
    b = bursts(tmp_path, r.stdout)
    want = {int(x.split()[2][:3], 16): bytes.fromhex(x.split("#")[1]) for x in single.stdout.splitlines()}
    check_normal(want)
    assert b[settled] == want and b[float(end)] == want
    assert b[settled - 1.0] != want  # still ramping a period earlier


@pytest.mark.parametrize("lines,word", [
    ([{"soc_percent": 5}], '"t_s"'),
    ([{"t_s": -1, "bms": "silent"}], '"t_s"'),
    ([{"t_s": "1", "bms": "silent"}], '"t_s"'),
    ([{"t_s": 2, "bms": "silent"}, {"t_s": 1, "bms": "silent"}], "back in time"),
    ([{"t_s": 1, "bms": "asleep"}], "silence line"),
    ([{"t_s": 1, "bms": "silent", "soc_percent": 3}], "silence line"),
    ([], "no lines"),
    ([{"t_s": 0, "soc_percent": 50}], "no live battery data"),
    (["[1]"], "JSON object"),
    (["{oops"], "not valid JSON"),
])
def test_bad_series(tmp_path, lines, word):
    path = tmp_path / "s.jsonl"
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    r = run("--series", str(path))
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and word in r.stderr and "Traceback" not in r.stderr, r.stderr


@pytest.mark.parametrize("args,word", [
    (["--period-ms", "10"], "200..5000"),
    (["--timeout-s", "x"], "whole number"),
    (["--link-loss", "panic"], "invalid choice"),
])
def test_bad_series_options(tmp_path, state, args, word):
    r = run("--series", write_series(tmp_path / "s.jsonl", outage_series(state)), *args)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and word in r.stderr, r.stderr


def test_series_options_need_series(state):
    r = run("--hex", BY_ID[CELL]["hex"], "--link-loss", "stop")
    assert r.returncode == 2 and "--link-loss needs --series" in r.stderr
