"""tools/soak.py, the soak benchmark (make soak): one short run of the whole firmware (--minutes 1.1: a
short and a long BMS silence on the seeded schedule, the long one followed by the time the limits need
to come back) and the safety facts of its report; the report's analysis on hand-made frame sets (an
unsafe frame set is counted, times to the safe state, to the recovery and to the limits back are
measured from the schedule, a hold cut short or too long a wait is a warning, the heap trend is a
least-squares slope); --help and one-line usage errors.

Firmware defaults the expectations rely on (app.config.SCHEMA): bms_timeout_s 5, bms_poll_ms 1000,
can_period_ms 1000, link_loss zeros, hold_s (the charge policy's hold after the start and after every
block, read from the defaults). The short run takes ~100 s (~33 s of it the start and its hold)."""
import json
import subprocess
import sys
import time
from pathlib import Path

import can
import pytest

from app import config as gwconfig
from tools import soak

ROOT = Path(__file__).resolve().parents[2]
SOAK = ROOT / "tools" / "soak.py"
CFG = gwconfig.defaults()
TIMEOUT = CFG["bms_timeout_s"]
POLL = CFG["bms_poll_ms"] / 1000.0
PERIOD = CFG["can_period_ms"] / 1000.0
HOLD = CFG["hold_s"]
MINUTES = 1.1  # the shortest window with a short and a long silence and the limits back after it
WINDOW = MINUTES * 60.0

REPORT_KEYS = {"tool", "date", "command", "minutes", "seed", "config", "limits", "first_frame_set_s", "startup_s",
               "soak_s", "frames", "frame_sets", "incomplete_frame_sets", "cadence_ms", "longest_gap_s", "faults",
               "unsafe_frame_sets", "heap", "task_restarts", "watchdog_resets", "watchdog_reset_times_s",
               "bms_polls", "simulator", "failures", "warnings", "ok"}
FAULT_KEYS = {"label", "fault", "at_s", "duration_s", "expect", "frame_sets", "stayed_normal", "time_to_safe_s",
              "recovery_s", "limits_back_s", "unsafe_frame_sets"}


# ------------------------------------------------------------------ the short run of the real firmware
@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("soak")
    out, log, frames = d / "report.json", d / "firmware.log", d / "frames.log"
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, str(SOAK), "--minutes", str(MINUTES), "--json", str(out), "--log",
                        str(log), "--candump", str(frames)], capture_output=True, text=True, timeout=240,
                       cwd=str(ROOT))
    took = time.monotonic() - t0
    assert out.exists() and out.stat().st_size, (r.returncode, r.stdout, r.stderr)
    return {"r": r, "rep": json.loads(out.read_text()), "log": log, "frames": frames, "took": took}


def fault(rep, label):
    got = [f for f in rep["faults"] if f["label"] == label]
    assert len(got) == 1, [f["label"] for f in rep["faults"]]
    return got[0]


def test_short_run_completes_with_a_table(short_run):
    r, rep = short_run["r"], short_run["rep"]
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    assert short_run["took"] < 150
    for row in ("startup: first frame set / first normal one", "0x351 interval", "longest gap between frame sets",
                "unsafe frame sets (must be 0)", "free heap", "task restarts / watchdog resets",
                "BMS polls (final status)", "bms-silent-long", "limits s", "result: ok"):
        assert row in r.stdout, row
    assert rep["ok"] is True and rep["failures"] == []


def test_report_structure(short_run):
    rep = short_run["rep"]
    assert set(rep) == REPORT_KEYS
    assert rep["tool"] == "soak" and rep["minutes"] == MINUTES and rep["seed"] == 1
    assert rep["command"].startswith("tools/soak.py --minutes %s" % MINUTES)
    assert rep["config"]["bms_timeout_s"] == TIMEOUT and rep["config"]["link_loss"] == "zeros"
    assert rep["config"]["hold_s"] == HOLD and rep["config"]["ramp_a_s"] == CFG["ramp_a_s"]
    assert rep["limits"] == {"time_to_safe_s": TIMEOUT + 2.0, "recovery_s": soak.RECOVERY_LIMIT_S,
                             "limits_back_s": soak.RECOVERY_LIMIT_S + HOLD + soak.LIMITS_SLACK_S}
    assert set(rep["cadence_ms"]) == {"intervals", "mean", "stdev", "min", "max", "p99"}
    c = rep["cadence_ms"]
    assert c["min"] <= c["mean"] <= c["p99"] <= c["max"]
    assert set(rep["longest_gap_s"]) == {"gap", "after_s"}
    assert set(rep["heap"]) == {"samples", "min_bytes", "max_bytes", "first_bytes", "last_bytes",
                                "trend_bytes_per_hour", "series"}
    assert set(rep["bms_polls"]) == {"ok", "timeouts", "bad_frames", "exceptions"}
    labels = [f["label"] for f in rep["faults"]]
    assert labels[:2] == ["bms-silent-short", "bms-silent-long"], labels
    for f in rep["faults"]:
        assert FAULT_KEYS <= set(f), f
        assert 0 < f["at_s"] and f["at_s"] + f["duration_s"] + soak.TAIL_S <= WINDOW


def test_safety_facts_of_the_short_run(short_run):
    rep = short_run["rep"]
    assert rep["unsafe_frame_sets"] == 0
    assert rep["watchdog_resets"] == 0 and rep["watchdog_reset_times_s"] == []
    assert rep["task_restarts"] == 0
    # the run starts at the first normal frame set: the hold after the start (counted from the
    # first data) and a ramp step after the first frame set
    assert HOLD - PERIOD - 0.5 <= rep["startup_s"] - rep["first_frame_set_s"] <= HOLD + soak.LIMITS_SLACK_S, rep
    long = fault(rep, "bms-silent-long")
    assert long["duration_s"] > TIMEOUT and long["expect"] == "safe"
    assert not long["stayed_normal"]
    # not before the data was older than the timeout (it was at most a poll period old at the start) ...
    assert TIMEOUT - POLL - 0.5 <= long["time_to_safe_s"] <= TIMEOUT + 2.0, long
    # ... and back within the drain of a timed-out attempt + a poll + a CAN period of the BMS answering again
    assert 0 < long["recovery_s"] <= soak.RECOVERY_LIMIT_S, long
    # the limits once the hold after that block is over (the first ramp step), not before
    assert HOLD - PERIOD - 0.5 <= long["limits_back_s"] - long["recovery_s"] <= HOLD + soak.LIMITS_SLACK_S, long
    assert long["limits_back_s"] <= soak.limits_back_limit(CFG)
    assert long["unsafe_frame_sets"] == 0
    short = fault(rep, "bms-silent-short")
    assert short["duration_s"] < 1.0 and short["expect"] == "normal"
    assert short["stayed_normal"] and short["time_to_safe_s"] is None, short
    assert short["recovery_s"] <= PERIOD + 0.5 and short["limits_back_s"] == short["recovery_s"], short
    assert rep["warnings"] == [], rep["warnings"]
    # the long silence shows in the firmware's own counters; the rest of the time it polled fine
    polls = rep["bms_polls"]
    assert polls["timeouts"] >= 1 and polls["ok"] >= 15, polls


def test_cadence_heap_and_records_of_the_short_run(short_run):
    rep = short_run["rep"]
    c = rep["cadence_ms"]
    assert abs(c["mean"] - PERIOD * 1000) <= 50, c
    # a frame set a period from the first one (in the hold already) to the end of the run
    span = rep["startup_s"] + rep["soak_s"] - rep["first_frame_set_s"]
    assert span / PERIOD - 3 <= c["intervals"] <= span / PERIOD + 2, (c, span)
    assert rep["frame_sets"] - 2 <= c["intervals"] <= rep["frame_sets"], c
    assert rep["longest_gap_s"]["gap"] < 2 * PERIOD  # the safe state and the hold keep the frames coming
    assert rep["frame_sets"] >= span / PERIOD - 2 and rep["frames"] >= 6 * (span / PERIOD - 2)
    h = rep["heap"]
    assert h["samples"] >= 2 and len(h["series"]) == h["samples"]  # the first `status` and the final one
    assert 0 < h["min_bytes"] <= h["max_bytes"] <= 2 * 1024 * 1024  # -X heapsize=2m
    assert isinstance(h["trend_bytes_per_hour"], float)
    # every received frame is in the candump log (python-can reads it back), the console in the log
    with can.LogReader(str(short_run["frames"])) as reader:
        logged = list(reader)
    assert len(logged) == rep["frames"]
    assert {m.arbitration_id for m in logged} == set(soak.SET_IDS)
    text = short_run["log"].read_text()
    assert "BMS data STALE" in text and "BMS data back" in text and "free heap" in text


# ---------------------------------------------------------------- the analysis on hand-made frame sets
def frame_set(t, ccl_a=100.0, dcl_a=100.0, comm=False):
    """One Pylontech frame set as the firmware sends it (ids in its send order, 1 ms apart)."""
    lim = bytearray(8)
    lim[2:4] = int(ccl_a * 10).to_bytes(2, "little", signed=True)
    lim[4:6] = int(dcl_a * 10).to_bytes(2, "little", signed=True)
    alarms = bytearray(8)
    if comm:
        alarms[3] = 0x08
    data = {0x351: bytes(lim), 0x359: bytes(alarms)}
    return [(t + k * 0.001, i, data.get(i, bytes(8))) for k, i in enumerate(soak.SET_IDS)]


def record(sets, schedule, lines=(), end=40.0, resets=()):
    frames = [f for s in sets for f in s]
    return {"frames": frames, "lines": list(lines), "schedule": schedule, "status_requests": [],
            "resets": list(resets), "ready": 0.0, "end": end, "final_status": None, "error": None, "boots": 1,
            "sim_stats": {}}


def silence(start, duration, label="bms-silent-long", kind="bms-silent"):
    return {"label": label, "fault": kind, "at": start, "duration": duration, "start": start,
            "end": start + duration}


def held_after(t, back, hold=HOLD):
    """The sets of a silence 10..20 s: normal up to 15 s, safe 16 s to back - 1, then the hold (no
    communication fault, 0 A) for `hold` s, normal again after it."""
    if t <= 15 or t >= back + hold:
        return frame_set(t)
    if t < back:
        return frame_set(t, 0, 0, True)
    return frame_set(t, 0, 0, False)


def test_analysis_measures_safe_state_and_recovery():
    # silence 10..20 s: normal sets up to 15 s, safe 16..21 s, normal again from 22 s
    sets = [frame_set(t) if t <= 15 or t >= 22 else frame_set(t, 0, 0, True) for t in range(40)]
    rep = soak.analyse(record(sets, [silence(10.0, 10.0)]), CFG)
    f = rep["faults"][0]
    assert f["expect"] == "safe" and not f["stayed_normal"]
    assert f["time_to_safe_s"] == pytest.approx(6.0, abs=0.01)
    assert f["recovery_s"] == pytest.approx(2.0, abs=0.01)
    assert f["limits_back_s"] == pytest.approx(2.0, abs=0.01)
    assert f["unsafe_frame_sets"] == 0 and rep["unsafe_frame_sets"] == 0
    assert rep["ok"] and rep["failures"] == []
    assert rep["first_frame_set_s"] == 0.0 and rep["startup_s"] == 0.0
    assert rep["cadence_ms"]["mean"] == pytest.approx(1000.0, abs=0.1)
    assert rep["longest_gap_s"]["gap"] == pytest.approx(1.0 - 0.005, abs=1e-3)
    # the limits 0 a further 30 s after the data came back (the hold after a block): recovery when
    # the communication fault clears, limits back when the sets are normal again -- no warning
    sets = [held_after(t, 22) for t in range(80)]
    rep = soak.analyse(record(sets, [silence(10.0, 10.0)], end=80.0), CFG)
    f = rep["faults"][0]
    assert f["recovery_s"] == pytest.approx(2.0, abs=0.01)
    assert f["limits_back_s"] == pytest.approx(2.0 + HOLD, abs=0.01)
    assert rep["ok"] and rep["failures"] == []
    assert not [m for m in rep["warnings"] if "limits" in m or "recovered" in m or "normal" in m], rep["warnings"]


def test_analysis_warns_of_a_hold_cut_short_or_limits_late_and_fails_without_them():
    # limits back 4 s after the data: the hold was cut short
    rep = soak.analyse(record([held_after(t, 22, hold=4) for t in range(80)], [silence(10.0, 10.0)], end=80.0),
                       CFG)
    assert rep["ok"] and any("after the data (hold_s" in m for m in rep["warnings"]), rep["warnings"]
    # recovery late (8 s) and limits later than data + hold + slack (8 + 30 s + 3 s > 5 + 30 + 3 s)
    rep = soak.analyse(record([held_after(t, 28, hold=HOLD + 3) for t in range(90)], [silence(10.0, 10.0)],
                              end=90.0), CFG)
    f = rep["faults"][0]
    assert f["recovery_s"] == pytest.approx(8.0, abs=0.01)
    assert f["limits_back_s"] == pytest.approx(8.0 + HOLD + 3, abs=0.01)
    assert rep["ok"] and any("recovered after" in m for m in rep["warnings"])
    assert any("limits back after" in m for m in rep["warnings"]), rep["warnings"]
    # the data back, the limits never: a failure
    rep = soak.analyse(record([held_after(t, 22, hold=1000) for t in range(60)], [silence(10.0, 10.0)], end=60.0),
                       CFG)
    f = rep["faults"][0]
    assert f["recovery_s"] == pytest.approx(2.0, abs=0.01) and f["limits_back_s"] is None
    assert not rep["ok"] and any("limits never came back" in m for m in rep["failures"])
    # and no data ever again: both fail
    rep = soak.analyse(record([held_after(t, 1000) for t in range(40)], [silence(10.0, 10.0)]), CFG)
    assert not rep["ok"] and any("without the communication fault" in m for m in rep["failures"])


def test_analysis_counts_frame_sets_with_current_after_the_timeout():
    # the limits stay up through the whole silence: every set later than start + timeout + 0.1 s is unsafe
    sets = [frame_set(t + 0.5) for t in range(40)]  # at 0.5, 1.5, ...
    rep = soak.analyse(record(sets, [silence(10.0, 10.0)]), CFG)
    f = rep["faults"][0]
    assert f["stayed_normal"] and f["time_to_safe_s"] is None
    assert f["unsafe_frame_sets"] == 5  # 15.5, 16.5, 17.5, 18.5, 19.5 s
    assert rep["unsafe_frame_sets"] == 5 and not rep["ok"]
    assert any("never reached the safe state" in m for m in rep["failures"])
    assert any("CCL/DCL > 0" in m for m in rep["failures"])
    # the same sets during a slow BMS (valid, late replies) are not counted as unsafe
    rep = soak.analyse(record(sets, [silence(10.0, 10.0, "bms-slow", "bms-slow")]), CFG)
    assert rep["unsafe_frame_sets"] == 0


def test_analysis_short_silence_that_went_safe_is_a_warning_and_late_recovery_too():
    sets = [frame_set(t) if not 12 <= t <= 17 else frame_set(t, 0, 0, True) for t in range(40)]
    rep = soak.analyse(record(sets, [silence(10.0, 0.5, "bms-silent-short")]), CFG)
    f = rep["faults"][0]
    assert f["expect"] == "normal" and not f["stayed_normal"]
    assert f["recovery_s"] == pytest.approx(18 - 10.5, abs=0.01)  # after the last safe set
    assert f["limits_back_s"] == pytest.approx(18 - 10.5, abs=0.01)
    assert rep["ok"]  # timing beyond the limits is a warning, not a failure
    assert any("did not stay normal" in m for m in rep["warnings"])
    assert any("recovered after" in m for m in rep["warnings"])


def test_analysis_heap_trend_restarts_watchdog_and_polls():
    lines = [(30.0 * k, 0, "uptime %d s, free heap %d bytes, task restarts 0" % (30 * k, 100000 - 100 * k))
             for k in range(10)]
    lines.append((300.0, 0, "BMS: fresh (jk-pb@1), data age 200 ms, polls ok 290, timeouts 7, bad frames 3, "
                            "exceptions 1, resync bytes 0"))
    sets = [frame_set(t) for t in range(40)]
    rep = soak.analyse(record(sets, [], lines), CFG)
    h = rep["heap"]
    assert h["trend_bytes_per_hour"] == pytest.approx(-12000.0, abs=0.5)  # -100 bytes per 30 s
    assert h["min_bytes"] == 100000 - 900 and h["first_bytes"] == 100000 and h["samples"] == 10
    assert rep["bms_polls"] == {"ok": 290, "timeouts": 7, "bad_frames": 3, "exceptions": 1}
    assert rep["ok"]
    lines += [(301.0, 0, "[   301.0] task can-rx crashed, restarting: ValueError()"),
              (302.0, 0, "WATCHDOG: not fed for 10000 ms -> reset")]
    rep = soak.analyse(record(sets, [], lines, resets=[302.5]), CFG)
    assert rep["task_restarts"] == 1 and rep["watchdog_resets"] == 1
    assert not rep["ok"] and any("watchdog" in m for m in rep["failures"])


def test_percentile_and_schedule():
    assert soak.percentile(list(range(1, 101)), 99) == 99
    assert soak.percentile([5.0], 99) == 5.0
    settle = soak.limits_back_limit(CFG)
    assert settle == soak.RECOVERY_LIMIT_S + HOLD + soak.LIMITS_SLACK_S
    for seed in range(20):
        s = soak.build_schedule(WINDOW, seed)
        assert s == soak.build_schedule(WINDOW, seed, CFG)  # fixed for a seed (and the defaults)
        kinds = [(f["label"], f["duration"]) for f in s]
        assert kinds[0][0] == "bms-silent-short" and kinds[0][1] < 1.0
        assert kinds[1] == ("bms-silent-long", 10.0) and 10.0 > TIMEOUT
        # the long silence blocks: the time for the limits to come back fits in the window after it
        assert s[1]["at"] + 10.0 + settle + soak.TAIL_S <= WINDOW
    full = soak.build_schedule(900.0, 1)
    assert {f["label"] for f in full} == {k[0] for k in soak.KINDS}
    assert len(full) >= 2 * len(soak.KINDS)
    for a, b in zip(full, full[1:], strict=False):
        # every fault starts from normal frame sets: after one that may block, the limits had time
        blocks = soak.expectation(a["fault"], a["duration"], CFG) != "normal"
        assert b["at"] - (a["at"] + a["duration"]) >= soak.GAP_S[0] + (settle if blocks else 0.0) - 1e-9
    last = full[-1]
    blocks = soak.expectation(last["fault"], last["duration"], CFG) != "normal"
    assert last["at"] + last["duration"] + (settle if blocks else 0.0) + soak.TAIL_S <= 900.0
    assert soak.build_schedule(900.0, 2) != full
    # a shorter hold, a denser schedule
    assert len(soak.build_schedule(900.0, 1, dict(CFG, hold_s=5))) > len(full)


# ------------------------------------------------------------------------------------------- usage
def test_help():
    r = subprocess.run([sys.executable, str(SOAK), "--help"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and r.stderr == ""
    assert "usage: soak.py" in r.stdout and "--minutes" in r.stdout and "bms-silent-long" in r.stdout


@pytest.mark.parametrize("args,words", [
    (["--minutes", "0"], ["--minutes", "0.5..1440"]),
    (["--minutes", "ten"], ["--minutes", "not a number"]),
    (["--seed", "x"], ["--seed", "integer"]),
    (["--json", "/missing/dir/x.json"], ["--json", "No such file"]),
    (["--candump", "/missing/dir/x.log"], ["--candump", "No such file"]),
    (["--state", "/missing/state.json"], ["--state", "No such file"]),
    (["--config", "{stop}"], ["--config", "link_loss zeros"]),
    (["--bogus"], ["--bogus"]),
], ids=["minutes-0", "minutes-word", "seed", "json-path", "candump-path", "state", "config-stop", "unknown"])
def test_bad_argument_is_one_line(tmp_path, args, words):
    stop = tmp_path / "stop.json"
    stop.write_text(json.dumps({"link_loss": "stop"}))
    args = [a.format(stop=stop) for a in args]
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, str(SOAK), *args, "--json", str(tmp_path / "out.json")]
                       if "--json" not in args else [sys.executable, str(SOAK), *args],
                       capture_output=True, text=True, timeout=30)
    assert time.monotonic() - t0 < 15  # refused before any firmware starts
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert r.stdout == "" and "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("soak: "), r.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])
    assert not (tmp_path / "out.json").exists()  # a usage error leaves no output behind
