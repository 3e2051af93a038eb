# End-to-end runs of the whole gateway firmware with several JK-PB packs on one RS485 bus
# (tools/simulate.py --pack ...: the real firmware app under the MicroPython unix port against
# tools/jkbms_sim.py playing the packs, each with its own state; CAN frames received through
# python-can and written in candump format). Frames are decoded with the helpers of
# test_simulation.py (cantools and the third-party DBC in ../shared/dbc, read in place; without it
# the tests that decode frames are skipped with the reason and their runs are not started).
# What the frames must carry follows docs/charge-control.md "Several packs"; the bus roles,
# the cycle and a silent pack's back-off docs/jk-bms.md "Several packs on one bus".
#
# Every run this module's tests need starts at once, 0.4 s apart, longest first (as in
# test_simulation.py); the file takes about as long as the longest run (~35 s) plus the stagger.
# A short charge hold keeps them short: hold_s 4, ramp_a_s 10 (0 A for 4 s after the first
# data, a returning pack's share held 4 s, then 10 A/s). The console's events and its periodic
# status line (status_s 2) are checked in every run; one run types the `packs` and `status`
# commands into it (simulate.py --console) and checks their replies.
#
# Clocks: the fault schedule and the simulator's record (--sim-log, "T jkbms_sim: ...") count
# from the simulator's start, the candump times from a few ms later; the firmware's "[t]" event
# times from its own start, a fraction of a second later still (compared with the others only
# with a second of slack, or by order).
import json
import math
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import test_simulation as U

ROOT = Path(__file__).resolve().parents[2]
SIMULATE = ROOT / "tools" / "simulate.py"

PERIOD = 1.0  # s, can_period_ms = bms_poll_ms (defaults)
SLACK = 0.5  # s of scheduling slack
TIMEOUT = 5.0  # s, bms_timeout_s (default)
HOLD = 4.0  # s, hold_s below
RAMP_A_S = 10.0  # A/s, ramp_a_s below
BASE_CFG = {"hold_s": int(HOLD), "ramp_a_s": int(RAMP_A_S), "status_s": 2}
USER_CAP_A = float(U.DEFAULTS["max_charge_a"])  # = max_discharge_a: the user caps (100 A)
assert U.DEFAULTS["max_discharge_a"] == U.DEFAULTS["max_charge_a"]
DERATE = 0.9  # README "max_charge_a": CCL / DCL at most 0.9 x the BMS's maximum
TOL_A = 0.15  # A: the 0.1 A resolution of 0x351 and the firmware's integer mA


def pack(**over):
    """A pack's state: test_simulation's 16S LFP pack (53.300 V, SOC 64, 280 Ah) with smaller
    BMS current limits (20 A charge, 25 A discharge) and 5 A of charge current."""
    s = dict(U.STATE, max_charge_current_a=20.0, max_discharge_current_a=25.0, battery_current_a=5.0)
    s.update(over)
    return s


# 1. two packs of different size and SOC; the same current in each, so the measured split
# (50/50) is not the capacity split (74/26) and the limits show which one counts
TWO = [pack(soc_percent=80, nominal_capacity_ah=280.0, remaining_capacity_ah=224.0, battery_current_a=10.0,
            max_charge_current_a=50.0, max_discharge_current_a=60.0),
       pack(soc_percent=20, nominal_capacity_ah=100.0, remaining_capacity_ah=20.0, battery_current_a=10.0,
            cell_voltages_v=[3.321] * 16, t1_c=18.0, t2_c=19.5,
            max_charge_current_a=50.0, max_discharge_current_a=60.0)]
# 2. four equal packs, the third silent for a while
FOUR = [pack(soc_percent=60 + k) for k in range(1, 5)]
SILENT_AT, SILENT_S = 14, 7  # the limits are full by then (~1 + 4 + 7.2 s)
SILENT_END = SILENT_AT + SILENT_S
# 3. the second of three packs in cell over-voltage protection (JK02 alarm bit 4,
# docs/jk-bms.md "Alarm bits")
ALARM = [pack(), pack(error_bitmask=1 << 4), pack()]
# 4. the third of three packs is an 8S pack (its own settings say 8 cells too)
CELLS8 = [pack(), pack(soc_percent=70), pack(cell_voltages_v=[3.331] * 8, cell_count=8, soc_percent=30)]
# 5. a full bus: 15 packs at 1..15, 15 ms between the polls
FIFTEEN = [pack(soc_percent=50 + k, battery_current_a=1.0 + k / 10) for k in range(1, 16)]
# 6. two packs, both needed (bms_min_packs 2); the second silent for a while
MIN2_AT, MIN2_S = 12, 6
# 7. a JK bank with its own master: the master at 0 and slaves at 1..3, of different sizes
LISTEN = [pack(soc_percent=70, nominal_capacity_ah=280.0, battery_current_a=6.0),
          pack(soc_percent=50, nominal_capacity_ah=200.0, battery_current_a=4.0),
          pack(soc_percent=30, nominal_capacity_ah=100.0, battery_current_a=2.0, max_charge_current_a=10.0),
          pack(soc_percent=60, nominal_capacity_ah=280.0, battery_current_a=5.0)]
# 8. the same bank, but the gateway configured as the master: two masters on one bus
# 9. the console's view (packs, status): two packs in the battery, an 8S pack rejected, and an
# address that never answers
CONSOLE = [pack(battery_current_a=5.0),
           pack(soc_percent=70, battery_current_a=3.0, cell_voltages_v=[3.321] * 15 + [3.325]),
           pack(cell_voltages_v=[3.331] * 8, cell_count=8, soc_percent=30),
           pack()]

# name -> (simulate.py arguments, seconds, config beyond BASE_CFG, the packs' states)
SCENARIOS = {
    "two": ((), 20, {"bms_addresses": [1, 2]}, TWO),
    "silent": (("--fault", "bms-silent@%d:%d:3" % (SILENT_AT, SILENT_S)), 34,
               {"bms_addresses": [1, 2, 3, 4]}, FOUR),
    "alarm": ((), 18, {"bms_addresses": [1, 2, 3]}, ALARM),
    "cells": ((), 18, {"bms_addresses": [1, 2, 3]}, CELLS8),
    "fifteen": ((), 20, {"bms_addresses": list(range(1, 16)), "bms_gap_ms": 15}, FIFTEEN),
    "min-packs": (("--fault", "bms-silent@%d:%d:2" % (MIN2_AT, MIN2_S)), 30,
                  {"bms_addresses": [1, 2], "bms_min_packs": 2}, FOUR[:2]),
    "listen": (("--bus-master",), 24,
               {"bms_addresses": [0, 1, 2, 3], "bms_bus_role": "listen", "bms_timeout_s": 15}, LISTEN),
    # a bank of 16: the master at 0 and 15 slaves, every address a JK bus can have
    "listen-16": (("--bus-master",), 24, {"bms_addresses": [], "bms_bus_role": "listen", "bms_timeout_s": 15},
                  [pack(soc_percent=50, battery_current_a=1.0)] + FIFTEEN),
    "two-masters": (("--bus-master",), 12, {"bms_addresses": [1, 2], "bms_bus_role": "master"}, FOUR[:3]),
    "console": (("--fault", "bms-silent@0::4", "--console", "packs@9", "--console", "status@10"), 12,
                {"bms_addresses": [1, 2, 3, 4]}, CONSOLE),
}
NO_FRAMES = ("two-masters",)  # the gateway hears nothing it asked for: no data, no frames


# ------------------------------------------------------------------------------- the runs


class Run(U.Run):
    """A finished run (test_simulation.Run) plus the simulator's record: sim = [(its seconds,
    text)], and its counters (stats)."""

    def __init__(self, name, rc, stderr, log, frames, seconds):
        U.Run.__init__(self, name, rc, stderr, log, frames, seconds)
        self.sim = []
        self.stats = {}

    def read_sim(self, path):
        text = path.read_text() if path.exists() else ""
        for line in text.splitlines():
            t, _, msg = line.partition(" ")
            self.sim.append((float(t), msg))
            if msg.startswith("jkbms_sim: stats "):
                self.stats = {k: int(v) for k, v in (kv.split("=") for kv in msg.split()[2:])}
        return self

    def requests(self):
        """The gateway's requests as the simulator saw them: [(t, address, register, answered,
        reply delay in s or None)] (FC10 triggers only: the gateway sends nothing else)."""
        out = []
        for t, msg in self.sim:
            m = _REQUEST.match(msg)
            if m:
                req = bytes.fromhex(m.group(1))
                assert req[1] == 0x10, (t, msg)
                delay = None if m.group(2) == "silence" else float(m.group(3)) / 1000
                out.append((t, req[0], req[2] << 8 | req[3], delay is not None, delay))
        return out

    def sets(self):
        """Every frame set as (time, module count of 0x359 byte 4, decoded signals)."""
        return [(t, b[0x359][4], U.decode(b)) for t, b in self.bursts]


_REQUEST = re.compile(r"^jkbms_sim: request ([0-9a-f]+) -> (silence|\d+ bytes after (\d+) ms) ")


def _start(tmp, name, tag=""):
    args, seconds, cfg, packs = SCENARIOS[name]
    base = tmp / (name + tag)
    cmd = [sys.executable, str(SIMULATE), "--seconds", str(seconds), "--candump", str(base) + ".log",
           "--log", str(base) + ".fw", "--sim-log", str(base) + ".sim"]
    for k, state in enumerate(packs):
        p = tmp / ("%s-pack%d.json" % (name, k))
        p.write_text(json.dumps(state))
        cmd += ["--pack", str(p)]
    p = tmp / (name + ".json")
    p.write_text(json.dumps(dict(BASE_CFG, **cfg)))
    cmd += ["--config", str(p)] + list(args)
    err = open(str(base) + ".err", "w")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, cwd=str(ROOT))
    err.close()
    return proc, time.monotonic() + seconds + 30, base


def _start_all(names, tmp, tag=""):
    procs = {}
    for name in sorted(names, key=lambda n: -SCENARIOS[n][1]):  # longest first, 0.4 s apart
        if procs:
            time.sleep(0.4)
        procs[name] = _start(tmp, name, tag)
    return procs


def _disturbed(name, run):
    """Why a run says nothing about the firmware (test_simulation._disturbed: the first frame
    late, or a frame set spread over a stalled moment), or ""."""
    if name in NO_FRAMES:
        return ""
    return U._disturbed(name, run)


@pytest.fixture(scope="module")
def sims(request, tmp_path_factory):
    """Every scenario this module's tests name (uses()), run at once; yields get(name) -> Run.
    A run disturbed by the host is repeated once (all such runs together)."""
    tmp = tmp_path_factory.mktemp("sim-packs")
    needed = []
    for item in request.session.items:
        if getattr(item, "module", None) is request.module:
            for name in getattr(getattr(item, "function", None), "scenarios", ()):
                if name not in needed:
                    needed.append(name)
    procs = _start_all(needed, tmp)
    done = {}

    def finish_all():
        for name, (proc, deadline, base) in list(procs.items()):
            run = U._finish(name, proc, deadline, base, SCENARIOS, Run)
            done[name] = run.read_sim(Path(str(base) + ".sim"))
        procs.clear()

    def get(name):
        if "collected" not in done:
            done["collected"] = True
            finish_all()
            late = [n for n in needed if _disturbed(n, done[n])]
            if late:
                procs.update(_start_all(late, tmp, ".again"))
                finish_all()
        run = done[name]
        why = _disturbed(name, run)
        assert not why, "%s: %s, in two runs -- is the host too busy for these timings?\n%s" % (
            name, why, run.why())
        return run

    try:
        yield get
    finally:
        U.stop_all(procs)


# -------------------------------------------------------------------------- expectations


def expect(states):
    """What the inverter must see of these packs as one battery (docs/charge-control.md
    "Several packs"), computed from the states: SOC weighted by capacity, voltage the mean,
    current the sum; CCL / DCL = 0.9 x min over the packs of limit_k / share_k (share = the
    larger of its capacity share and, from 2 A on, its measured current share), at most the
    user caps."""
    caps = [s["nominal_capacity_ah"] for s in states]
    w = [round(c * 10) for c in caps]  # 0.1 Ah
    ma = [round(abs(s["battery_current_a"]) * 1000) for s in states]

    def per_mille_up(x, total):
        return -(-x * 1000 // total)

    def limit_in(key):
        """(the battery's limit input in A, index of the pack that sets it)"""
        best = None
        for k, (wk, mk, s) in enumerate(zip(w, ma, states, strict=True)):
            share = per_mille_up(wk, sum(w))  # each share rounded up (the doc's rule)
            if sum(ma) >= 2000:
                share = max(share, per_mille_up(mk, sum(ma)))
            v = s[key] * 1000 / share
            if best is None or v < best[0]:
                best = (v, k)
        return best

    def limit(key):
        return min(DERATE * limit_in(key)[0], USER_CAP_A)

    cap_sum = sum(caps)

    temps = [s[k] for s in states for k in ("t1_c", "t2_c")]
    return {
        "soc": sum(s["soc_percent"] * c for s, c in zip(states, caps, strict=True)) / cap_sum,
        "soc_plain": sum(s["soc_percent"] for s in states) / len(states),
        "volts": sum(sum(s["cell_voltages_v"]) for s in states) / len(states),
        "amps": sum(s["battery_current_a"] for s in states),
        "ccl": limit("max_charge_current_a"),
        "dcl": limit("max_discharge_current_a"),
        "ccl_in": limit_in("max_charge_current_a"),
        "dcl_in": limit_in("max_discharge_current_a"),
        "ccl_sum": min(DERATE * sum(s["max_charge_current_a"] for s in states), USER_CAP_A),
        "t_lo": min(temps),
        "t_hi": max(temps),
        "cvl": min(s["rcv_v"] for s in states) * len(states[0]["cell_voltages_v"]),
    }


def check_aggregate(v, e):
    """One decoded frame set carries the battery e (expect()) on fresh data."""
    assert abs(v["SOC"] - e["soc"]) <= 0.5 + 1e-9, (v["SOC"], e)
    assert abs(v["Battery_Voltage"] - e["volts"]) < 0.011, (v["Battery_Voltage"], e)
    assert abs(v["Battery_Current"] - e["amps"]) < 0.051, (v["Battery_Current"], e)
    assert e["t_lo"] - 0.051 <= v["Battery_Temperature"] <= e["t_hi"] + 0.051, (v["Battery_Temperature"], e)
    assert abs(v["Battery_Charge_Voltage"] - e["cvl"]) < 0.051, (v["Battery_Charge_Voltage"], e)
    assert not v["sys_error"] and not v["comm_fail"], v


def texts(run):
    return [e for _, e in U.events(run)]


_STATUS = re.compile(r"^BMS: (fresh|STALE) \((\d+) of (\d+) packs online, (\d+) needed\), data age (\d+|-) ms "
                     r"\(oldest (\d+|-) ms\), polls ok (\d+), timeouts (\d+), bad frames (\d+), exceptions (\d+)$")


def status_lines(run):
    """The periodic status lines for several packs: [(t, match)]; every "BMS: " line must be one."""
    out = [(t, _STATUS.match(e)) for t, e in U.events(run) if e.startswith("BMS: ")]
    assert out and all(m for _, m in out), (out, run.why())
    return out


def check_gaps(run, gap_s):
    """The gateway leaves at least gap_s between a reply and its next request (docs/jk-bms.md
    "Several packs on one bus"). The simulator notes a request before it waits out its reply
    delay, so request time + delay is no later than the reply: a shorter gap means the
    gateway's was shorter."""
    reqs = run.requests()
    pairs = [(a, b) for a, b in zip(reqs, reqs[1:], strict=False) if a[3]]
    assert len(pairs) >= 10, run.why()
    gaps = [b[0] - (a[0] + a[4]) for a, b in pairs]
    assert min(gaps) >= gap_s - 0.002, sorted(gaps)[:5]


def limit_series(run, key="Charge_Current_Limitation"):
    return [(t, v[key]) for t, _, v in run.sets()]


# ---------------------------------------------------------------- 1. two packs, one battery


@U.uses("two")
def test_two_packs_are_one_battery(sims):
    run = sims("two")
    assert run.rc == 0, run.why()
    U.check_complete_bursts(run)
    e = expect(TWO)
    assert abs(e["soc"] - e["soc_plain"]) > 5  # the weighting shows in the frames
    sets = run.sets()
    assert all(m in (1, 2) for _, m, _ in sets), [m for _, m, _ in sets]
    both = [k for k, (_, m, _) in enumerate(sets) if m == 2]
    assert both and both[0] <= 1 and both == list(range(both[0], len(sets))), [m for _, m, _ in sets]
    for _t, _m, v in sets[both[0]:]:
        check_aggregate(v, e)
        assert v["Pack_Nr"] == 2 and v["PN"] == b"PN" and v["name"] == b"PYLON   "
    # the limits: the share-capped sum -- the smaller pack takes half the current, so the
    # larger one's capacity share (74 %) sets the limit, well below the plain sum
    assert e["ccl"] < e["ccl_sum"] - 10
    ccl = limit_series(run)
    dcl = limit_series(run, "Discharge_Current_Limitation")
    assert all(a <= e["ccl"] + TOL_A for _, a in ccl) and all(a <= e["dcl"] + TOL_A for _, a in dcl)
    assert all(abs(a - e["ccl"]) <= TOL_A for _, a in ccl[-3:]), (ccl, e)
    assert all(abs(a - e["dcl"]) <= TOL_A for _, a in dcl[-3:]), (dcl, e)
    assert all(v["Charge_Enable"] == 1 and v["Discharge_Enable"] == 1 for _, _, v in sets[-3:])
    U.check_cadence(run)


@U.uses("two", dbc=False)
def test_two_packs_console(sims):
    run = sims("two")
    assert run.rc == 0, run.why()
    ts = texts(run)
    assert "pack online: jk-pb@1 (1 of 2 online)" in ts and "pack online: jk-pb@2 (2 of 2 online)" in ts, ts
    assert "BMS data complete: CAN output starts" in ts
    assert not [x for x in ts if x.startswith(("pack OFFLINE", "pack rejected", "BMS data STALE", "task "))], ts
    lines = [(t, m) for t, m in status_lines(run) if t >= 3 * PERIOD]  # both online by then
    assert len(lines) >= run.seconds // BASE_CFG["status_s"] - 2, lines
    polls = []
    for _t, m in lines:
        state, online, total, needed, age, oldest, ok, timeouts, bad, exc = m.groups()
        assert (state, online, total, needed) == ("fresh", "2", "2", "1"), m.group(0)
        assert int(age) <= int(oldest) <= 2 * PERIOD * 1000 + 500, m.group(0)  # every pack every cycle
        assert (timeouts, bad, exc) == ("0", "0", "0"), m.group(0)
        polls.append(int(ok))
    # both packs polled every cycle: about two good polls a second (settings reads on top)
    assert polls == sorted(polls) and polls[-1] - polls[0] >= 2 * (lines[-1][0] - lines[0][0]) - 2, lines


@U.uses("two", dbc=False)
def test_two_packs_each_read_with_its_settings(sims):
    run = sims("two")
    assert run.rc == 0, run.why()
    reqs = run.requests()
    assert {a for _, a, _, _, _ in reqs} == {1, 2}, reqs  # only the configured addresses
    for a in (1, 2):
        status = [t for t, x, reg, ok, _ in reqs if x == a and reg == 0x1620 and ok]
        settings = [t for t, x, reg, ok, _ in reqs if x == a and reg == 0x161E and ok]
        assert settings and settings[0] < 2.0, (a, reqs[:10])
        assert len(status) >= run.seconds / PERIOD - 3, (a, len(status))
    check_gaps(run, 0.100)  # bms_gap_ms default


# ------------------------------------------------------------------- 2. one of four silent


def _silent_sets(run):
    """(sets from the first with all 4 packs, index of the first set with 3 modules, index of the
    first with 4 after it). The first set of all may still miss the last pack of the first cycle."""
    sets = run.sets()
    mods = [m for _, m, _ in sets]
    assert 4 in mods[:2], mods
    sets, mods = sets[mods.index(4):], mods[mods.index(4):]
    changes = [m for k, m in enumerate(mods) if k == 0 or m != mods[k - 1]]
    assert changes == [4, 3, 4], mods
    drop = mods.index(3)
    back = drop + mods[drop:].index(4)
    return sets, drop, back


@U.uses("silent", dbc=False)
def test_silent_pack_goes_offline_alone(sims):
    run = sims("silent")  # the pack at 3 silent from SILENT_AT to SILENT_END
    assert run.rc == 0, run.why()
    ev = U.events(run)
    off = [(t, x) for t, x in ev if x.startswith("pack OFFLINE")]
    assert len(off) == 1 and off[0][1].startswith("pack OFFLINE: jk-pb@3: "), off
    assert off[0][1].endswith("; 3 of 4 online, limits shrink now"), off
    # after bms_timeout_s without data from it (its last reply came before SILENT_AT); the
    # firmware's clock may lag the simulator's by a fraction of a second
    assert SILENT_AT - 2 * PERIOD + TIMEOUT - SLACK <= off[0][0] <= SILENT_AT + TIMEOUT + PERIOD + 2 * SLACK, off
    on = [(t, x) for t, x in ev if x.startswith("pack online: jk-pb@3 ")]
    assert len(on) == 2 and on[1][0] > off[0][0] and on[1][1] == "pack online: jk-pb@3 (4 of 4 online)", on
    ts = [x for _, x in ev]
    assert not [x for x in ts if x.startswith(("BMS data STALE", "pack rejected", "task ", "watchdog"))], ts
    # the others stay fresh: the status lines never show fewer than 3 packs, nor a stale battery
    lines = status_lines(run)
    assert all(m.group(1) == "fresh" and int(m.group(2)) >= 3 for _, m in lines), lines
    assert [t for t, m in lines if m.group(2) == "3"], lines  # the outage shows


@U.uses("silent")
def test_silent_pack_limits_shrink_at_once(sims):
    run = sims("silent")
    assert run.rc == 0, run.why()
    U.check_complete_bursts(run)
    sets, drop, back = _silent_sets(run)
    e4, e3 = expect(FOUR), expect(FOUR[:2] + FOUR[3:])
    assert e3["ccl"] < e4["ccl"] - 10  # three packs carry less
    t_drop = sets[drop][0]
    assert SILENT_AT - 2 * PERIOD + TIMEOUT - SLACK <= t_drop <= SILENT_AT + TIMEOUT + PERIOD + SLACK, t_drop
    # before: the full limits of four packs; the very set that has 3 modules has the
    # three packs' limits (no ramp down, no hold) and their aggregate
    before = sets[drop - 1][2]
    assert abs(before["Charge_Current_Limitation"] - e4["ccl"]) <= TOL_A, before
    assert abs(before["Discharge_Current_Limitation"] - e4["dcl"]) <= TOL_A, before
    for _t, _m, v in sets[drop:back]:
        assert abs(v["Charge_Current_Limitation"] - e3["ccl"]) <= TOL_A, v
        assert abs(v["Discharge_Current_Limitation"] - e3["dcl"]) <= TOL_A, v
        assert v["Pack_Nr"] == 3
        check_aggregate(v, e3)
        assert v["Charge_Enable"] == 1 and v["Discharge_Enable"] == 1
    for _t, _m, v in sets[:drop]:
        assert v["Pack_Nr"] == 4
        check_aggregate(v, e4)
    U.check_cadence(run)


@U.uses("silent")
def test_returning_pack_rereads_settings_then_holds_and_ramps(sims):
    run = sims("silent")
    assert run.rc == 0, run.why()
    sets, drop, back = _silent_sets(run)
    t_back = sets[back][0]
    assert t_back > SILENT_END, t_back
    # back only with settings read after the outage: the simulator answered a settings
    # request (0x161E) of address 3 after the silence and before the pack counted again
    reqs = run.requests()
    after = [(t, reg) for t, a, reg, ok, _ in reqs if a == 3 and ok and t >= SILENT_END]
    assert after, reqs
    settings = [t for t, reg in after if reg == 0x161E]
    assert settings and settings[0] < t_back, (after[:5], t_back)
    # ... and during the silence nobody answered for it, the gateway still asked (back-off)
    silent = [t for t, a, reg, ok, _ in reqs if a == 3 and SILENT_AT + 0.05 < t < SILENT_END - 0.05]
    assert silent and not [t for t, a, reg, ok, _ in reqs if a == 3 and ok and SILENT_AT + 0.05 < t < SILENT_END]
    # its share comes through hold then ramp: no step at the return, the three packs' CCL for
    # hold_s, then up by at most ramp_a_s per second, to the four packs' limit
    e4, e3 = expect(FOUR), expect(FOUR[:2] + FOUR[3:])
    ccl = [(t, v["Charge_Current_Limitation"]) for t, _, v in sets[back:]]
    up = next((t for t, a in ccl if a > e3["ccl"] + TOL_A), None)
    assert up is not None, ccl
    assert all(abs(a - e3["ccl"]) <= TOL_A for t, a in ccl if t < up), ccl
    assert t_back + HOLD - SLACK <= up <= t_back + HOLD + PERIOD + SLACK, (t_back, up, ccl)
    rising = [(t, a) for t, a in ccl if t >= up]
    for (t0, a0), (t1, a1) in zip(rising, rising[1:], strict=False):
        assert 0 <= a1 - a0 <= RAMP_A_S * (t1 - t0 + 0.3) + TOL_A, (t0, a0, t1, a1)
    assert abs(rising[-1][1] - e4["ccl"]) <= TOL_A, ccl
    assert all(a <= e4["ccl"] + TOL_A for _, a in ccl)
    dcl = [v["Discharge_Current_Limitation"] for t, _, v in sets[back:] if t < up]
    assert all(abs(a - e3["dcl"]) <= TOL_A for a in dcl), dcl
    assert abs(sets[-1][2]["Discharge_Current_Limitation"] - e4["dcl"]) <= TOL_A
    check_gaps(run, 0.100)


# ------------------------------------------------------------------------- 3. pack in alarm


@U.uses("alarm")
def test_pack_in_alarm_blocks_charge_only(sims):
    run = sims("alarm")  # pack 2 reports cell over-voltage protection
    assert run.rc == 0, run.why()
    U.check_complete_bursts(run)
    e = expect(ALARM)
    sets = run.sets()
    t0 = sets[0][0]
    assert [m for _, m, _ in sets[1:]] == [3] * (len(sets) - 1), sets  # the alarmed pack stays in
    for t, m, v in sets:
        # no charge from the first frame set to the last: CCL 0, charge enable off, the
        # over-voltage protection bit set
        assert v["Charge_Current_Limitation"] == 0 and v["Charge_Enable"] == 0, (t, v)
        assert v["Alarm_Over_Voltage"] == 1, (t, v)
        if m == 3:
            check_aggregate(v, e)
    # discharge: after the hold and the ramp, the three packs' full DCL
    late = [(t, v) for t, _, v in sets if t > t0 + HOLD + PERIOD + SLACK]
    assert len(late) >= 8, sets
    assert all(v["Discharge_Enable"] == 1 and v["Discharge_Current_Limitation"] > 0 for _, v in late), late
    assert abs(late[-1][1]["Discharge_Current_Limitation"] - e["dcl"]) <= TOL_A, late[-1]
    ts = texts(run)
    assert "pack online: jk-pb@2 (2 of 3 online)" in ts or "pack online: jk-pb@2 (3 of 3 online)" in ts, ts
    assert not [x for x in ts if x.startswith(("pack OFFLINE", "pack rejected", "BMS data STALE"))], ts


# -------------------------------------------------------------------- 4. another cell count


@U.uses("cells")
def test_pack_with_other_cell_count_is_rejected(sims):
    run = sims("cells")  # pack 3 is 8S
    assert run.rc == 0, run.why()
    U.check_complete_bursts(run)
    ts = texts(run)
    rejected = [x for x in ts if x.startswith("pack rejected")]
    assert rejected and rejected[0].startswith("pack rejected: jk-pb@3: "), ts
    assert not [x for x in ts if x.startswith("pack online: jk-pb@3")], ts
    assert "pack online: jk-pb@2 (2 of 3 online)" in ts, ts
    # the two 16S packs drive the frames; the 8S pack is in no value (its 26.6 V would halve
    # the mean, its SOC 30 pull the SOC down, its 5 A add to the current)
    e = expect(CELLS8[:2])
    sets = run.sets()
    assert [m for _, m, _ in sets[1:]] == [2] * (len(sets) - 1), [m for _, m, _ in sets]
    for _t, m, v in sets:
        if m == 2:
            check_aggregate(v, e)
    assert abs(sets[-1][2]["Charge_Current_Limitation"] - e["ccl"]) <= TOL_A, sets[-1]
    assert abs(sets[-1][2]["Discharge_Current_Limitation"] - e["dcl"]) <= TOL_A, sets[-1]
    lines = status_lines(run)
    assert all(m.group(1, 2, 3) == ("fresh", "2", "3") for _, m in lines), lines


# ----------------------------------------------------------------------- 5. fifteen packs


@U.uses("fifteen")
def test_fifteen_packs_all_online_and_fresh(sims):
    run = sims("fifteen")  # addresses 1..15, bms_gap_ms 15, the default 1 s cycle
    assert run.rc == 0, run.why()
    U.check_complete_bursts(run)
    ev = U.events(run)
    ts = [x for _, x in ev]
    on = [x for x in ts if x.startswith("pack online: ")]
    assert sorted(on) == sorted("pack online: jk-pb@%d (%d of 15 online)" % (a, a) for a in range(1, 16)), on
    # all within the first cycles (each pack's first poll reads its settings too)
    assert [t for t, x in ev if x.startswith("pack online: jk-pb@15 ")][0] < 4 * PERIOD, ev
    assert not [x for x in ts if x.startswith(("pack OFFLINE", "pack rejected", "BMS data STALE", "task ",
                                               "watchdog"))], ts
    sets = run.sets()
    full = [k for k, (_, m, _) in enumerate(sets) if m == 15]  # the first cycle takes 1.5 s (settings)
    assert full and full[0] <= 2 and full == list(range(full[0], len(sets))), [m for _, m, _ in sets]
    e = expect(FIFTEEN)
    for _t, _m, v in sets[full[0]:]:
        check_aggregate(v, e)
    # fresh throughout: every pack's data younger than two cycles at every status line, no
    # timeout, and each pack answered about once a second
    lines = [(t, m) for t, m in status_lines(run) if t >= 4 * PERIOD]
    assert len(lines) >= 6, lines
    for _t, m in lines:
        assert m.group(1, 2, 3) == ("fresh", "15", "15") and int(m.group(6)) <= 2 * PERIOD * 1000 + 500, m.group(0)
        assert m.group(8, 9, 10) == ("0", "0", "0"), m.group(0)
    reqs = run.requests()
    for a in range(1, 16):
        ts_a = [t for t, x, reg, ok, _ in reqs if x == a and reg == 0x1620 and ok]
        assert len(ts_a) >= run.seconds / PERIOD - 3, (a, len(ts_a))
        assert max(b - t for t, b in zip(ts_a, ts_a[1:], strict=False)) < 2 * PERIOD + SLACK, (a, ts_a)
    check_gaps(run, 0.015)


# ------------------------------------------------------------------ 6. bms_min_packs 2 of 2


@U.uses("min-packs")
def test_min_packs_missing_is_link_loss_for_the_battery(sims):
    run = sims("min-packs")  # both packs needed; pack 2 silent from MIN2_AT for MIN2_S
    assert run.rc == 0, run.why()
    U.check_complete_bursts(run)
    ev = U.events(run)
    ts = [x for _, x in ev]
    off = ts.index(next(x for x in ts if x.startswith("pack OFFLINE: jk-pb@2: ")))
    stale = ts.index("BMS data STALE (1 of 2 packs online, bms_min_packs 2: sending 0 A limits + alarms)")
    on = ts.index("pack online: jk-pb@2 (2 of 2 online)", off)
    back = ts.index("BMS data back: limits return after the hold")
    assert off <= stale < on <= back, ts
    sets = run.sets()
    mods = [m for _, m, _ in sets]
    changes = [m for k, m in enumerate(mods) if k == 0 or m != mods[k - 1]]
    assert changes == [2, 1, 2], mods
    drop = mods.index(1)
    ret = drop + mods[drop:].index(2)
    t_drop, t_ret = sets[drop][0], sets[ret][0]
    assert MIN2_AT - 2 * PERIOD + TIMEOUT - SLACK <= t_drop <= MIN2_AT + TIMEOUT + PERIOD + SLACK, t_drop
    # before: the limits were up; from the drop to the return: the link-loss frame set
    assert any(U.limits_nonzero(b) for t, b in run.bursts if t < t_drop)
    for t, _m, v in sets[drop:ret]:
        assert U.is_stale_zeros(v), (t, v)
    # back: both packs, 0 A for the hold (the outage was a block), then the limits again; the hold
    # counts from the last 0 A decision (charge.ramp.Ramp: the last link-loss set, up to a period
    # before the first set with both packs)
    e = expect(FOUR[:2])
    t_zero = sets[ret - 1][0]
    after = [(t, v) for t, _, v in sets[ret:]]
    for t, v in after:
        check_aggregate(v, e)
        if t < t_zero + HOLD - SLACK:
            assert v["Charge_Current_Limitation"] == 0 and v["Discharge_Current_Limitation"] == 0, (t, v)
    up = [t for t, v in after if v["Charge_Current_Limitation"] > 0]
    assert up and up[0] <= t_ret + HOLD + PERIOD + SLACK, (t_ret, after)
    assert all(v["Charge_Current_Limitation"] > 0 and v["Discharge_Current_Limitation"] > 0
               for t, v in after if t >= up[0]), after
    U.check_cadence(run)


# --------------------------------------------------------------- 7. listening to a JK master


@U.uses("listen")
def test_listener_takes_every_pack_from_the_master_traffic(sims):
    run = sims("listen")  # a master at 0 polls slaves 1..3; the gateway listens to all four
    assert run.rc == 0, run.why()
    U.check_complete_bursts(run)
    ts = texts(run)
    on = [x for x in ts if x.startswith("pack online: ")]
    assert sorted(x.split(" (")[0] for x in on) == ["pack online: jk-pb@%d" % a for a in range(4)], on
    assert all(" (heard) (" in x for x in on), on
    assert not [x for x in ts if x.startswith(("pack OFFLINE", "pack rejected", "BMS data STALE", "RS485:"))], ts
    e = expect(LISTEN)
    assert abs(e["soc"] - e["soc_plain"]) > 1.5 and e["ccl"] < e["ccl_sum"] - 10
    sets = run.sets()
    full = [k for k, (_, m, _) in enumerate(sets) if m == 4]
    assert full and full[0] <= 1 and full == list(range(full[0], len(sets))), [m for _, m, _ in sets]
    for _t, _m, v in sets[full[0]:]:
        check_aggregate(v, e)
    assert abs(sets[-1][2]["Charge_Current_Limitation"] - e["ccl"]) <= TOL_A, sets[-1]
    assert abs(sets[-1][2]["Discharge_Current_Limitation"] - e["dcl"]) <= TOL_A, sets[-1]
    U.check_cadence(run)


@U.uses("listen", dbc=False)
def test_listener_never_transmits(sims):
    run = sims("listen")
    assert run.rc == 0, run.why()
    st = run.stats
    # the simulator played the master (its broadcasts, its polls of the slaves) ...
    assert st.get("broadcasts", 0) >= 8 and st.get("master_requests", 0) >= 12, (st, run.why())
    # ... and got not one byte from the gateway
    assert st["foreign_rx_bytes"] == 0, st
    assert st["requests"] == 0 and not run.requests(), st
    assert not [m for _, m in run.sim if "from the gateway" in m]
    assert "the gateway sent" not in run.stderr, run.stderr


@U.uses("listen-16")
def test_a_listener_takes_a_bank_of_sixteen_as_one_battery(sims):
    run = sims("listen-16")  # packs as heard ([]): the master at 0 and its slaves 1..15
    assert run.rc == 0, run.why()
    U.check_complete_bursts(run)
    ts = texts(run)
    on = sorted(int(x.split("@")[1].split(" ")[0]) for x in ts if x.startswith("pack online: "))
    assert on == list(range(16)), on
    assert not [x for x in ts if x.startswith(("pack OFFLINE", "pack rejected", "BMS data STALE", "RS485:"))], ts
    states = SCENARIOS["listen-16"][3]
    e = expect(states)
    sets = run.sets()
    full = [k for k, (_, m, _) in enumerate(sets) if m == 16]
    # every pack is heard within one master period (4.4 s); from then on all 16 drive the frames
    assert full and full == list(range(full[0], len(sets))) and sets[full[0]][0] <= 4.4 + 2 * PERIOD, \
        [(round(t, 1), m) for t, m, _ in sets]
    for _t, _m, v in sets[full[0]:]:
        check_aggregate(v, e)
    assert run.stats["foreign_rx_bytes"] == 0, run.stats  # and not one byte sent
    U.check_cadence(run)


# ------------------------------------------------------- 8. master mode beside another master


@U.uses("two-masters", dbc=False)
def test_master_mode_warns_of_another_master(sims):
    run = sims("two-masters")  # bms_bus_role master, but the bank has its own master at 0
    assert run.rc == 0, run.why()
    ev = U.events(run)
    warn = [(t, x) for t, x in ev if x.startswith("RS485: another bus master is polling")]
    assert len(warn) == 1, ev  # at most once a minute
    assert warn[0][0] < 5.0, warn  # the master talks from the start (every 4.4 s)
    assert run.stats["foreign_rx_bytes"] > 0 and "the gateway sent" in run.stderr, (run.stats, run.stderr)
    assert not [x for _, x in ev if x.startswith(("task ", "watchdog"))], ev


# ----------------------------------------------------------------- 9. the console's view


def console_reply(run, command):
    """The lines the console printed for command (typed by simulate.py --console): from its echo
    to the next event line or echo."""
    lines = run.log.splitlines()
    assert command in lines, run.why()
    out = []
    for line in lines[lines.index(command) + 1:]:
        if _EVENT.match(line) or line in ("packs", "status"):
            break
        out.append(line)
    return out


_EVENT = re.compile(r"^\[ *\d+\.\d\] ")


def _volts(v):
    return "%.3f V" % v


@U.uses("console", dbc=False)
def test_console_packs_lists_every_pack(sims):
    run = sims("console")  # packs 1, 2 in the battery, 3 is 8S, 4 never answers
    assert run.rc == 0, run.why()
    out = console_reply(run, "packs")
    heads = [k for k, line in enumerate(out) if line.startswith("jk-pb@")]
    assert [out[k].split()[0] for k in heads] == ["jk-pb@1", "jk-pb@2", "jk-pb@3", "jk-pb@4"], out
    blocks = [out[a:b] for a, b in zip(heads, heads[1:] + [len(out)], strict=True)]
    for a in (1, 2, 3):
        s = CONSOLE[a - 1]
        # its BMS (device info) once read, in spare cycle time: not by a fixed moment
        bms = [x for x in blocks[a - 1] if x.startswith("    BMS ")]
        assert len(bms) <= 1, bms
        assert all(re.match(r"^    BMS .+, hardware .+, software .+, serial .+$", x) for x in bms), bms
        head, values, counters = [x for x in blocks[a - 1] if not x.startswith("    BMS ")]
        state = "REJECTED (cell count differs from the battery's (or from its own settings))" if a == 3 else "online"
        m = re.match(r"^jk-pb@%d +%s, age (\d+) ms$" % (a, re.escape(state)), head)
        assert m and int(m.group(1)) <= 4000, (head, out)  # a silent poll of 4 costs 3 s of the bus
        cells = s["cell_voltages_v"]
        assert values == "    %s %.1f A SOC %d %% %d cells min %s max %s  alarms: none" % (
            _volts(sum(cells)), s["battery_current_a"], s["soc_percent"], len(cells), _volts(min(cells)),
            _volts(max(cells))), (values, out)
        m = re.match(r"^    polls ok (\d+), timeouts 0, bad frames 0, exceptions 0$", counters)
        assert m and int(m.group(1)) >= 3, (counters, out)
    head, counters = blocks[3]
    assert re.match(r"^jk-pb@4 +waiting for data, age -$", head), blocks[3]
    m = re.match(r"^    polls ok 0, timeouts (\d+), bad frames 0, exceptions 0, last error: no reply from the BMS$",
                 counters)
    assert m and int(m.group(1)) >= 1, blocks[3]


@U.uses("console", dbc=False)
def test_console_status_names_the_packs_that_set_the_limits(sims):
    run = sims("console")
    assert run.rc == 0, run.why()
    out = console_reply(run, "status")
    e = expect(CONSOLE[:2])
    assert re.match(r"^BMS: fresh \(2 of 4 packs online, 1 needed\), ", out[0]), out
    assert [x for x in out if x.startswith("  RS485: master of 4 pack(s), ") and x.endswith(", gap 100 ms")], out
    # the inputs before the controller's 0.9 x and caps: min over the packs of limit / share, and
    # the pack that sets each; the spread of the two packs' voltages
    (ccl, kc), (dcl, kd) = e["ccl_in"], e["dcl_in"]
    volts = [sum(s["cell_voltages_v"]) for s in CONSOLE[:2]]
    spread = round(abs(volts[0] - volts[1]) * 1000)
    def amps(a):  # the console's amps: one decimal, truncated
        return "%.1f A" % (math.floor(a * 10 + 1e-6) / 10)

    # (the CVL cap: both packs have the same settings, the first of equals names it)
    line = [x for x in out if x.startswith("  battery of ")]
    assert line == ["  battery of 2 online: CVL cap from jk-pb@1, CCL input %s from jk-pb@%d, DCL input %s "
                    "from jk-pb@%d, pack voltage spread %d mV" % (amps(ccl), kc + 1, amps(dcl), kd + 1, spread)], out
    lo = min((min(s["cell_voltages_v"]), k) for k, s in enumerate(CONSOLE[:2]))
    hi = max((max(s["cell_voltages_v"]), -k) for k, s in enumerate(CONSOLE[:2]))
    cells = [x for x in out if x.startswith("  lowest cell ")]
    assert cells and cells[0].startswith("  lowest cell %s in jk-pb@%d (cell " % (_volts(lo[0]), lo[1] + 1)), out
    assert " highest %s in jk-pb@%d (cell " % (_volts(hi[0]), -hi[1] + 1) in cells[0], out
