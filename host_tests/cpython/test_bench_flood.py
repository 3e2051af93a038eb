"""tools/bench_flood.py, the CAN receive-flood benchmark (make bench): one short run of the whole firmware
(no flood, then 1000 frames/s, 4 s each) and the facts of its report -- the structure, the no-flood cadence
within the tolerance, no watchdog reset and no task restart under the flood, the flood actually taken by the
gateway, the heartbeat still counted; the analysis on hand-made records (tolerance, cadence, a watchdog exit,
a crash line, the reasons to stop early); --help and one-line usage errors.

Firmware defaults the expectations rely on (app.config.SCHEMA): can_period_ms 1000, hold_s (the charge
policy's hold after the first data: each rate's window opens after it). The short run takes ~80 s, most
of it the two holds."""
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app import config as gwconfig
from tools import bench_flood as bf

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / "tools" / "bench_flood.py"
PERIOD_MS = gwconfig.defaults()["can_period_ms"]
HOLD_S = gwconfig.defaults()["hold_s"]
SECONDS = 4

REPORT_KEYS = {"tool", "date", "command", "rates", "seconds_per_rate", "junk", "seed", "config", "period_ms",
               "tolerance_ms", "tolerance_basis", "results", "stopped", "largest_ok_rate", "failures", "ok"}
RESULT_KEYS = {"rate", "startup_s", "error", "flood", "cadence_ms", "frame_sets", "incomplete_frame_sets",
               "not_normal_frame_sets", "heartbeat", "task_restarts", "watchdog_reset", "within_tolerance"}
FLOOD_KEYS = {"written", "written_per_s", "taken", "taken_per_s", "refused", "skipped", "blocked_s", "write_error"}
CADENCE_KEYS = {"intervals", "mean", "stdev", "min", "max", "max_dev", "series"}


def run_tool(*args, timeout=30):
    return subprocess.run([sys.executable, str(TOOL), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=str(ROOT))


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("flood") / "report.json"
    t0 = time.monotonic()
    r = run_tool("--rates", "0,1000", "--seconds-per-rate", SECONDS, "--json", out, timeout=240)
    took = time.monotonic() - t0
    assert out.exists() and out.stat().st_size, (r.returncode, r.stdout, r.stderr)
    return {"r": r, "rep": json.loads(out.read_text()), "took": took}


def result(rep, rate):
    got = [x for x in rep["results"] if x["rate"] == rate]
    assert len(got) == 1, [x["rate"] for x in rep["results"]]
    return got[0]


# ------------------------------------------------------------------ the short run of the real firmware
def test_short_run_completes_with_a_table(short_run):
    r, rep = short_run["r"], short_run["rep"]
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    assert short_run["took"] < 150
    lines = r.stdout.strip().splitlines()
    assert lines[0].startswith("bench_flood: gateway firmware in the host simulation")
    assert lines[1].startswith("cadence tolerance: every 0x351 interval within %d +- " % PERIOD_MS)
    head = [ln for ln in lines if ln.split()[:3] == ["flood/s", "written/s", "taken/s"]]
    assert len(head) == 1, r.stdout
    rows = lines[lines.index(head[0]) + 1:][:2]
    assert [int(x.split()[0]) for x in rows] == [0, 1000], r.stdout
    assert lines[-1] == "largest flood rate with the cadence within tolerance: %d frames/s (%.0f written/s, " \
        "%.0f taken/s)" % (rep["largest_ok_rate"], result(rep, rep["largest_ok_rate"])["flood"]["written_per_s"],
                           result(rep, rep["largest_ok_rate"])["flood"]["taken_per_s"])


def test_report_structure(short_run):
    rep = short_run["rep"]
    assert set(rep) == REPORT_KEYS
    assert rep["tool"] == "bench_flood" and rep["rates"] == [0, 1000] and rep["seconds_per_rate"] == SECONDS
    assert rep["command"] == "tools/bench_flood.py --rates 0,1000 --seconds-per-rate %d --json %s" % (
        SECONDS, rep["command"].rsplit(" ", 1)[1])
    assert rep["junk"] is False and rep["period_ms"] == PERIOD_MS and rep["config"]["hold_s"] == HOLD_S
    assert rep["stopped"] is None and rep["failures"] == [] and rep["ok"] is True
    assert len(rep["results"]) == 2
    for res in rep["results"]:
        assert set(res) == RESULT_KEYS
        assert set(res["flood"]) == FLOOD_KEYS
        assert set(res["cadence_ms"]) == CADENCE_KEYS
        c = res["cadence_ms"]
        assert c["min"] <= c["mean"] <= c["max"]
        assert len(c["series"]) == c["intervals"] and (min(c["series"]), max(c["series"])) == (c["min"], c["max"])
        assert set(res["heartbeat"]) == {"sent", "seen", "ok"}
        assert res["error"] is None and res["startup_s"] is not None
        # the window opened at the first normal frame set: after the hold that follows the first data
        assert HOLD_S - 1.5 <= res["startup_s"] <= bf.startup_limit_s(gwconfig.defaults())
        # a 4 s window holds 4 frame sets of a 1 s period (3 intervals), give or take the edges
        assert SECONDS - 1 <= res["frame_sets"] <= SECONDS + 1
        assert res["incomplete_frame_sets"] == 0


def test_no_flood_cadence_is_within_the_tolerance(short_run):
    rep = short_run["rep"]
    base = result(rep, 0)
    c = base["cadence_ms"]
    # the tolerance: 5 % of the period, widened to this run's max deviation, at most 10 %
    assert PERIOD_MS * 0.05 <= rep["tolerance_ms"] <= PERIOD_MS * 0.10
    assert rep["tolerance_ms"] == round(max(PERIOD_MS * 0.05, c["max_dev"]), 1)
    assert base["within_tolerance"] is True
    assert c["intervals"] >= SECONDS - 2
    assert abs(c["max"] - PERIOD_MS) <= rep["tolerance_ms"] and abs(c["min"] - PERIOD_MS) <= rep["tolerance_ms"]
    assert base["not_normal_frame_sets"] == 0
    assert base["flood"]["written"] == 0 and base["flood"]["taken"] == 0
    assert rep["largest_ok_rate"] in (0, 1000)


def test_no_watchdog_reset_and_no_task_restart_under_the_flood(short_run):
    res = result(short_run["rep"], 1000)
    assert res["watchdog_reset"] is False
    assert res["task_restarts"] == 0
    assert res["error"] is None


def test_the_flood_reached_the_gateway_and_the_heartbeat_was_still_counted(short_run):
    res = result(short_run["rep"], 1000)
    f = res["flood"]
    assert f["written_per_s"] >= 0.9 * 1000 and f["written"] <= 1000 * SECONDS
    # every frame written was taken by the gateway's SLCAN side (its "z" replies)
    assert f["taken"] >= 0.99 * f["written"] and f["refused"] == 0
    hb = res["heartbeat"]
    assert hb["sent"] >= SECONDS - 1
    assert hb["seen"] >= hb["sent"] - 1 and hb["ok"] is True
    assert res["not_normal_frame_sets"] == 0


# ------------------------------------------------------------------ the analysis on hand-made records
def test_tolerance_from_the_no_flood_run():
    assert bf.tolerance_ms(1000, None)[0] == 50.0
    assert bf.tolerance_ms(1000, 12.0)[0] == 50.0
    assert bf.tolerance_ms(1000, 51.0)[0] == 51.0
    tol, basis = bf.tolerance_ms(1000, 150.0)
    assert tol == 100.0 and "beyond" in basis
    # a no-flood run beyond the cap is itself outside the tolerance
    assert not bf.within({"max_dev": 150.0}, tol)
    assert bf.within({"max_dev": 51.0}, 51.0) and not bf.within({"max_dev": 51.1}, 51.0)
    assert not bf.within(None, 50.0)


def test_cadence_counts_only_the_window():
    t351 = [0.5, 1.5, 2.51, 3.47, 4.6, 5.6]
    c = bf.cadence(t351, (1.0, 5.0), 1000)  # 1.5, 2.51, 3.47, 4.6: intervals 1010, 960, 1130 ms
    assert c["intervals"] == 3
    assert (c["min"], c["max"], c["mean"], c["max_dev"]) == (960.0, 1130.0, 1033.3, 130.0)
    assert c["series"] == [1010.0, 960.0, 1130.0]
    assert bf.cadence([2.0], (1.0, 5.0), 1000) is None


def record(rate=1000, exit_code=None, lines=(), written=4000, taken=None, blocked_s=0.0, write_error=None,
           seen=(2, 6)):
    """A run record as run_rate() returns it: seven normal frame sets 1 s apart (at 0.1 .. 6.1 s), the
    window 1.5 .. 5.5 s, heartbeats every second from 0 s, `status` at both ends of the window."""
    frames = []
    for k in range(7):
        for j, can_id in enumerate(bf.soak.SET_IDS):
            data = bytes(8)  # 0x359 without the communication-fault bit
            if can_id == bf.ID_LIMITS:
                data = bytes([0x10, 0x02, 0x64, 0, 0x64, 0, 0xC0, 0x01])  # CCL 10 A, DCL 10 A
            frames.append((k + 0.1 + j * 0.002, can_id, data))
    status = [(1.6, 0, "inverter: ok, 0x305 seen %d times" % seen[0]),
              (1.6, 0, "uptime 2 s, free heap 1, task restarts 0"),
              (5.6, 0, "inverter: ok, 0x305 seen %d times" % seen[1]),
              (5.6, 0, "uptime 6 s, free heap 1, task restarts 0")]
    hb = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    # replies: 2 "z" and 1 BELL before the window (set-up, first heartbeats), then one per heartbeat + frame
    replies = 2 + (written if taken is None else taken) + sum(1 for t in hb if t >= 1.5)
    return {"rate": rate, "frames": frames, "lines": status + list(lines), "window": (1.5, 5.5), "ready": 0.2,
            "status_times": [1.5, 5.5], "replies_at_start": (2, 1), "exit_code": exit_code,
            "error": "the firmware exited (code %d)" % exit_code if exit_code is not None else None,
            "writer": {"written": written, "skipped": 0, "blocked_s": blocked_s, "error": write_error,
                       "hb_times": hb, "taken": replies, "refused": 1}}


def test_analysis_of_a_clean_record():
    res = bf.analyse_rate(record(), 1000, 4)
    assert res["flood"]["written_per_s"] == 1000.0 and res["flood"]["taken"] == 4000
    assert res["flood"]["refused"] == 0
    assert res["cadence_ms"]["intervals"] == 3 and res["cadence_ms"]["max_dev"] == 0.0
    assert (res["frame_sets"], res["incomplete_frame_sets"], res["not_normal_frame_sets"]) == (4, 0, 0)
    assert res["heartbeat"] == {"sent": 4, "seen": 4, "ok": True}
    assert res["watchdog_reset"] is False and res["task_restarts"] == 0
    assert bf.delivery_problem(res, 4) is None


def test_analysis_counts_watchdog_resets_restarts_and_lost_heartbeats():
    assert bf.analyse_rate(record(exit_code=bf.WDT_EXIT_CODE), 1000, 4)["watchdog_reset"] is True
    assert bf.analyse_rate(record(lines=[(3.0, 0, "WATCHDOG: not fed for 10000 ms -> reset")]), 1000,
                           4)["watchdog_reset"] is True
    crash = (3.0, 0, "bms-poller crashed, restarting: OSError(5)")
    assert bf.analyse_rate(record(lines=[crash]), 1000, 4)["task_restarts"] == 1
    assert bf.analyse_rate(record(lines=[(6.0, 0, "uptime 7 s, free heap 1, task restarts 2")]), 1000,
                           4)["task_restarts"] == 2
    hb = bf.analyse_rate(record(seen=(2, 4)), 1000, 4)["heartbeat"]
    assert hb == {"sent": 4, "seen": 2, "ok": False}
    assert bf.analyse_rate(record(seen=(2, 5)), 1000, 4)["heartbeat"]["ok"] is True  # one edge frame


def test_reasons_to_stop_early():
    def why(**kw):
        return bf.delivery_problem(bf.analyse_rate(record(**kw), 1000, 4), 4)
    assert "the host could not generate 1000 frames/s (it wrote 500 frames/s)" in why(written=2000)
    assert "did not read fast enough" in why(written=2000, blocked_s=1.5)
    assert "fell behind: it took 500 of 1000 frames/s" in why(taken=2000)
    assert why(written=3700) is None  # 92 %: delivered
    assert why(rate=0, written=0) is None
    assert why(written=100, exit_code=bf.WDT_EXIT_CODE) is None  # the firmware died: not about the flood


# ------------------------------------------------------------------ the command line
def test_help():
    r = run_tool("--help")
    assert r.returncode == 0 and r.stderr == ""
    assert "usage: bench_flood.py" in r.stdout
    for word in ("--rates", "--seconds-per-rate", "--junk", "--json", "0x305 seen N times", "Tolerance"):
        assert word in r.stdout, word


@pytest.mark.parametrize("args,words", [
    (["--rates", "0,abc"], ["--rates", "'abc' is not a whole number"]),
    (["--rates", "0,0"], ["names a rate twice"]),
    (["--rates", "0,20001"], ["0..20000"]),
    (["--rates", ",".join(str(i) for i in range(13))], ["1..12 rates"]),
    (["--seconds-per-rate", "2"], ["--seconds-per-rate", "3..120"]),
    (["--seconds-per-rate", "ten"], ["--seconds-per-rate"]),
    (["--json", "/nonexistent-dir/out.json"], ["--json"]),
    (["--bogus"], ["--bogus"]),
])
def test_bad_arguments_are_one_line(args, words):
    r = run_tool(*args)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bench_flood: "), r.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])
