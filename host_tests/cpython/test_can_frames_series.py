"""tools/can_frames.py --series: a time series replayed through the firmware's stateful policy
(sources.base.Freshness, charge.policy.ChargePolicy, protocols.make), run as a subprocess.

The state is a real JK-PB capture pair (host_tests/fixtures/jk_frames.json, decoded by tools/jk_decode.py
and merged by the tools' state loader); the output is read back with python-can's can.LogReader from a
.log file and decoded with cantools and the public Pylontech DBC in ../shared/dbc, and the link-loss
bits are checked against the firmware encoder's own constants (protocols.pylon)."""
import json
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
DEFAULT_TIMEOUT_S = gwconfig.defaults()["bms_timeout_s"]


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
    """Data at 0..3 s, silence to 12 s (one explicit silence line at 6 s), data again 12..14 s, and
    the series extended to 15 s by a silence line."""
    lines = [dict(state, t_s=t) for t in (0, 1, 2, 3)]
    lines.append({"t_s": 6, "bms": "silent"})
    lines += [dict(state, t_s=t) for t in (12, 13, 14)]
    lines.append({"t_s": 15, "bms": "silent"})
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


def check_normal(frames):
    m = decoded(frames)
    assert m[0x351]["Charge_Current_Limitation"] == pytest.approx(100.0)
    assert m[0x351]["Discharge_Current_Limitation"] == pytest.approx(100.0)
    assert (m[0x35C]["Charge_Enable"], m[0x35C]["Discharge_Enable"]) == (1, 1)
    assert (m[0x359]["Warn_Internal"], m[0x359]["Alarm_Internal"]) == (0, 0)
    assert not alarm_word(frames) & pylon.A_COMM_FAIL


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
    # one burst a second (the default CAN period) from 0 to 15 s, the series' last line
    assert sorted(b) == [float(t) for t in range(16)]
    last_data = 3.0
    for t, frames in sorted(b.items()):
        # Freshness: stale once the data is older than bms_timeout_s (5 s), until new data comes
        if last_data + DEFAULT_TIMEOUT_S < t < 12.0:
            check_link_lost(frames)
        else:
            check_normal(frames)
    assert [t for t in b if alarm_word(b[t]) & pylon.A_COMM_FAIL] == [9.0, 10.0, 11.0]
    # the measurements keep coming from the last data set throughout
    v = decoded(b[10.0])[0x356]["Battery_Voltage"]
    assert v == pytest.approx(state["battery_voltage_v"], abs=0.006)


def test_outage_with_link_loss_stop_sends_nothing(tmp_path, state):
    r = run("--series", write_series(tmp_path / "s.jsonl", outage_series(state)), "--link-loss", "stop")
    assert r.returncode == 0, r.stderr
    b = bursts(tmp_path, r.stdout)
    assert sorted(b) == [float(t) for t in range(16) if not 8 < t < 12]
    for frames in b.values():
        check_normal(frames)


def test_timeout_and_period_options(tmp_path, state):
    path = write_series(tmp_path / "s.jsonl", outage_series(state))
    r = run("--series", path, "--timeout-s", "2", "--period-ms", "500")
    assert r.returncode == 0, r.stderr
    b = bursts(tmp_path, r.stdout)
    assert sorted(b) == [t / 2 for t in range(31)]
    lost = sorted(t for t in b if alarm_word(b[t]) & pylon.A_COMM_FAIL)
    assert lost == [t / 2 for t in range(11, 24)]  # 5.5 .. 11.5 s: older than 2 s after the data at 3 s


def test_no_frames_before_the_first_complete_data_set(tmp_path, state):
    """WAIT: nothing is sent until a complete data set (live data AND the BMS settings) arrived."""
    live = {k: v for k, v in state.items() if k not in state_json.SETTINGS_REQUIRED}  # no BMS settings
    lines = [{"t_s": 0, "bms": "silent"}, dict(live, t_s=1), dict(state, t_s=3), {"t_s": 4, "bms": "silent"}]
    r = run("--series", write_series(tmp_path / "s.jsonl", lines))
    assert r.returncode == 0
    warn = r.stderr.strip().splitlines()
    assert len(warn) == 1 and "series line 2" in warn[0] and "not a complete data set" in warn[0], warn
    b = bursts(tmp_path, r.stdout)
    assert sorted(b) == [3.0, 4.0]
    check_normal(b[3.0])


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
        check_normal(b[float(t)])  # the partial line at 7 s is fresh data again: no link loss at 7 or 8 s
    # --merge is for --state
    r = run("--series", write_series(tmp_path / "s.jsonl", lines), "--merge")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--merge goes with --state" in r.stderr


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
