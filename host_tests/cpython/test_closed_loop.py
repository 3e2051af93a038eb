"""tools/closed_loop.py: the firmware's charge controller in the loop with the LFP pack / JK-PB BMS and the
inverter models. Every scenario runs its full simulated length at a coarse step (10 s control step and
physics tick; `make bench` runs them at the real 1 s) with the goals as assertions: 0 BMS protection trips,
the highest cell >= 20 mV below OVP, <= 6 CCL moves in any hour of absorption, every absorption within
absorption_max_min, no charge below 0 degC; and, for the charges from 20 %, float within 4 h.
Then the proof that the harness can fail: an unsafe controller (CCL 100 A, CVL = cells x 3.65 V, DCL
100 A, DVL 0, always enabled) fails the goals; the metrics on hand-made series; the link-loss and
settings-change events reaching the firmware; the FC03 read path; a legacy decide(snap, state); the CLI.
The whole file takes ~15 s."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from charge.policy import ChargePolicy
from sources.base import STALE
from tools import closed_loop as CL

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / "tools" / "closed_loop.py"
STEP_S = 10.0
BRIEF_GOALS = ("no-bms-trips", "ovp-margin", "ccl-calm", "absorption-limit", "no-cold-charge")

_cache = {}


def summary(name, **kw):
    key = (name, tuple(sorted(kw.items())))
    if key not in _cache:
        kw.setdefault("step_s", STEP_S)
        kw.setdefault("physics_dt_s", STEP_S)
        _cache[key] = CL.Run(CL.SCENARIOS[name], **kw).run()
    return _cache[key]


def failed(s):
    return sorted(k for k, v in s["goals"].items() if not v["pass"])


class UnsafePolicy(ChargePolicy):
    """What a naive gateway sends: the BMS's absolute limits, always enabled."""

    def decide(self, snap, state, now=None):
        send = ChargePolicy.decide(self, snap, state, now)
        lim = self.lim
        cells = snap.cell_count or 16
        lim.cvl_dv = cells * 365 // 10
        lim.ccl_da = lim.dcl_da = 1000
        lim.dvl_dv = 0
        lim.charge_enable = lim.discharge_enable = True
        return send or state == STALE


class LegacyPolicy:
    """A controller of the old interface: decide(snap, state), no state machine."""

    def __init__(self, cfg):
        self.inner = ChargePolicy(cfg)
        self.lim = self.inner.lim
        self.calls = 0

    def decide(self, snap, state):
        self.calls += 1
        return self.inner.decide(snap, state, CL.TICK_START)


# ------------------------------------------------------------- scenarios

@pytest.mark.parametrize("name", list(CL.SCENARIOS))
def test_scenario_meets_the_goals(name):
    s = summary(name)
    assert s["hours"] == pytest.approx(CL.SCENARIOS[name].hours, abs=0.01)
    assert s["state_machine"] and s["controller"].endswith("decide(snap, state, now_ms)")
    assert set(BRIEF_GOALS) <= set(s["goals"])
    assert s["decode_errors"] == 0 and not s["config_messages"]
    assert [g for g in failed(s) if g in BRIEF_GOALS] == [], json.dumps(
        {k: s[k] for k in ("goals", "bms_trip_log", "absorption_episodes", "states")}, indent=1)


CHARGES = [n for n, sc in CL.SCENARIOS.items() if sc.float_deadline_h]


@pytest.mark.parametrize("name", CHARGES)
def test_charge_reaches_float_in_time(name):
    s = summary(name)
    assert s["goals"]["float-in-time"]["pass"], s["goals"]["float-in-time"]
    assert s["passed"]


def test_full_charge_is_a_real_charge():
    s = summary("full-charge")
    assert s["soc_start_pct"] == pytest.approx(20.0, abs=0.5)
    assert s["soc_end_pct"] > 98.5 and s["bms_soc_end_pct"] >= 99
    assert s["bms_polls_failed"] + s["decode_errors"] <= 2
    assert s["max_ccl_a"] == 100.0  # the PV was enough for the user maximum
    assert 11.0 < s["charged_kwh"] < 13.0 and s["discharged_kwh"] < 0.1
    assert s["cell_max_v"] < 3.65 - 0.020


def test_cold_morning_charges_only_once_warm():
    s = summary("cold-morning")
    assert s["charge_below_0c_ah"] == 0.0
    assert s["charged_kwh"] > 3.0  # it did charge once the cells were warm
    assert s["bms_trips"]["charge UTP"] == 0


def test_deep_discharge_stops_before_the_bms_does():
    s = summary("deep-discharge")
    assert s["bms_trips"]["UVP"] == 0
    assert s["discharged_kwh"] > 2.0 and s["soc_end_pct"] < 15.0
    assert s["cell_min_v"] > 2.70


def test_link_lost_zeros_stops_the_charge_while_stale():
    s = summary("link-lost")
    assert [e["what"] for e in s["events"]] == ["BMS link lost for 10 min"]
    assert s["bms_polls_lost"] == pytest.approx(600 / STEP_S, abs=1)
    assert 9.0 <= s["link_stale_min"] <= 10.0
    assert s["charge_while_stale_ah"] < 0.05  # "zeros": CCL 0 from the first stale frame set (+ the ramp-down)


def test_link_lost_stop_leaves_the_inverter_on_its_last_limits():
    s = summary("link-lost-stop")
    assert s["link_loss"] == "stop"
    assert s["control_steps_without_frames"] >= 9 * 60 / STEP_S
    # the inverter model keeps the last limits for its 60 s CAN timeout, then stops
    assert 0.5 < s["charge_while_stale_ah"] < 100.0 * 70 / 3600


def test_settings_change_reaches_the_firmware():
    s = summary("settings-change")
    assert s["events"] and "OVP 3.55" in s["events"][0]["what"]
    assert s["ovp_v_at_margin"] == 3.55  # the margin is judged against the OVP in force
    assert s["max_cvl_v"] <= 55.2 and s["cvl_changes"] >= 1
    assert s["bms_settings_reads"] >= 2


# ----------------------------------------------------- the harness can fail

def test_an_unsafe_controller_fails_the_goals():
    s = summary("full-charge", policy_factory=UnsafePolicy, hours=4.0)
    assert s["max_cvl_v"] == pytest.approx(58.4) and s["max_ccl_a"] == 100.0
    assert s["bms_trips"]["OVP"] >= 1 and s["cell_max_v"] >= 3.65
    assert "no-bms-trips" in failed(s) and "ovp-margin" in failed(s)
    assert not s["passed"]


def test_an_unsafe_controller_charges_in_the_cold_and_drains_to_uvp():
    cold = summary("cold-morning", policy_factory=UnsafePolicy, hours=2.0)
    assert cold["charge_below_0c_ah"] > 1.0 and "no-cold-charge" in failed(cold)
    deep = summary("deep-discharge", policy_factory=UnsafePolicy)
    assert deep["bms_trips"]["UVP"] >= 1 and "no-bms-trips" in failed(deep)


def test_a_legacy_decide_without_now_ms():
    holder = {}

    def factory(cfg):
        holder["p"] = LegacyPolicy(cfg)
        return holder["p"]

    s = summary("deep-discharge", policy_factory=factory, hours=0.2)
    assert s["controller"].endswith("decide(snap, state) (no now_ms)")
    assert not s["state_machine"] and s["absorption_source"].startswith("inverter CV")
    assert holder["p"].calls == round(0.2 * 3600 / STEP_S)


def test_fc03_reads_the_same_pack():
    a = summary("full-charge", hours=0.5)
    b = summary("full-charge", hours=0.5, bms_read="fc03")
    assert b["bms_read"] == "fc03" and b["decode_errors"] == 0
    for k in ("charged_kwh", "cell_max_v", "max_ccl_a", "soc_end_pct"):
        assert b[k] == pytest.approx(a[k], rel=0.01), k


# ------------------------------------------------------------ the metrics

def test_worst_window_and_reversals_and_moves():
    assert CL._worst_window([], 3600) == 0
    assert CL._worst_window([0, 10, 3599, 3600, 3700], 3600) == 3
    assert CL._worst_window([0, 10, 20, 3599, 3600, 3700], 3600) == 4
    assert CL._reversals([25, 100, 25, 30], 100) == 3  # 100 -> 25 -> 100 -> 25 -> 30
    assert CL._reversals([50, 25, 10], 100) == 0
    ramp = [(t, 25 + 5 * k, 30 + 5 * k, True) for k, t in enumerate(range(100, 115))]  # one 1 A/s ramp
    step = [(500, 100, 25, True)]
    moves = CL._moves(ramp + step, 10.0)
    assert len(moves) == 2 and moves[0][1:3] == (25, 100) and moves[1][1:3] == (100, 25)
    assert len(CL._moves([(0, 0, 5, False), (30, 5, 10, False)], 10.0)) == 2  # too far apart


def test_the_tick_clock_wraps_in_every_run():
    r = CL.Run(CL.SCENARIOS["deep-discharge"], step_s=STEP_S, physics_dt_s=STEP_S, hours=0.5)
    assert r.now_ms(0.0) == CL.TICK_START
    assert r.now_ms(30 * 60.0) < r.now_ms(0.0)  # wrapped at 20 min
    assert r.run()["passed"]


def test_trace_rows(tmp_path):
    rows = []
    CL.Run(CL.SCENARIOS["full-charge"], step_s=STEP_S, physics_dt_s=STEP_S, hours=0.1, trace=rows.append).run()
    assert len(rows) == 36
    assert {"t_s", "soc_true_pct", "cell_max_v", "ccl_a", "cvl_v", "state", "inverter", "link"} <= set(rows[0])
    assert rows[-1]["state"] == "bulk" and rows[-1]["link"] == "FRESH"


# -------------------------------------------------------------------- CLI

def tool(*args, timeout=120):
    return subprocess.run([sys.executable, str(TOOL), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=str(ROOT))


def test_cli_json_and_exit_status(tmp_path):
    r = tool("--scenario", "deep-discharge", "--json", "--hours", "0.3", "--step-s", "10",
             "--trace", tmp_path / "t.jsonl")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["scenario"] == "deep-discharge" and s["passed"] and s["step_s"] == 10.0
    assert len((tmp_path / "t.jsonl").read_text().splitlines()) == 108
    # a full charge cut short never reaches float: that goal fails, exit status 1
    r = tool("--scenario", "full-charge", "--hours", "0.2", "--step-s", "10")
    assert r.returncode == 1, r.stderr
    assert "GOALS FAILED: float-in-time" in r.stdout


def test_cli_list_and_text():
    r = tool("--list")
    assert r.returncode == 0 and all(n in r.stdout for n in CL.SCENARIOS)
    r = tool("--scenario", "cold-morning", "--hours", "0.1", "--step-s", "10", "--set", "link_loss=stop")
    assert r.returncode == 0, r.stderr
    assert "link_loss stop" in r.stdout and "goals:" in r.stdout


@pytest.mark.parametrize("args,words", [
    ([], ["--scenario"]),
    (["--scenario", "nope"], ["unknown scenario", "full-charge"]),
    (["--scenario", "all", "--trace", "x.jsonl"], ["--trace"]),
    (["--scenario", "full-charge", "--step-s", "0"], ["--step-s"]),
    (["--scenario", "full-charge", "--hours", "x"], ["--hours"]),
    (["--scenario", "full-charge", "--set", "link_loss=sometimes"], ["link_loss"]),
    (["--scenario", "full-charge", "--set", "nokey"], ["KEY=VALUE"]),
])
def test_cli_usage_errors(args, words):
    r = tool(*args)
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("closed_loop:") and "Traceback" not in r.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])


def test_table_has_a_row_per_scenario():
    rows = [summary(n) for n in ("full-charge", "deep-discharge")]
    text = CL.table(rows)
    lines = text.splitlines()
    assert len(lines) == 4 and lines[0].startswith("| scenario |") and "| full-charge |" in lines[2]
