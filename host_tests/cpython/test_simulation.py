# End-to-end runs of the whole gateway firmware (tools/simulate.py: the real firmware app under the
# MicroPython unix port, against tools/jkbms_sim.py, CAN frames received through python-can and
# written in candump format). Every frame is decoded with cantools and the public plewka DBC in
# ../shared/dbc (third-party, GPL: read in place, never copied); the bytes the DBC lacks (0x351 DVL
# in bytes 6-7, 0x359 'P' 'N' in bytes 5-6) are read per docs/inverter-can.md "Pylontech". Without
# ../shared/dbc beside the checkout the tests that decode frames are skipped (the reason is in the
# pytest summary) and their runs are not started; the console log, cadence and usage tests still run.
#
# The long scenarios are independent, so a module-scoped fixture starts every simulate.py run that
# the selected tests need -- 0.4 s apart, so that their start-ups (CPython imports, MicroPython
# compiling the firmware) do not all compete for the CPU at the same moment; longest first, except
# the normal run, whose cadence is checked strictly: it starts last, when the others are up -- and
# each test then waits for its own run and checks it; the whole file takes about as long as the
# longest run plus the stagger (~90 s on 2 cores), not the sum. Ports are picked free by simulate.py and
# jkbms_sim.py (127.0.0.1 only).
#
# The charge controller holds CCL = DCL = 0 for hold_s after the first data and after every block (stale
# data too), then ramps up at ramp_a_s: the runs are as long as that takes (read from the firmware's
# defaults), the faults start once the limits are up, and every frame set is classed as normal (full
# limits), ramp (limits on their way up), held (fresh data, 0 A: the hold), stale (the link-loss set) or
# other.
#
# Times: the fault schedule is relative to the BMS simulator's start, the candump times to the
# moment simulate.py starts listening, a few ms later -- well inside the tolerances below.
# Firmware defaults that the expectations rely on (app.config.SCHEMA, assembled from the
# packages' fragments in firmware/lib/{sources,charge,canport,protocols}/__init__.py): one frame
# set every 1000 ms, BMS poll every 1000 ms, reply time 500 ms, bms_timeout_s 5, link_loss zeros,
# max_charge_a = max_discharge_a = 100 (user caps), inverter_timeout_s 10, hold_s and ramp_a_s.
import json
import math
import re
import subprocess
import sys
import time
from pathlib import Path
from statistics import mean

import cantools
import pytest

from app import config as gwconfig

ROOT = Path(__file__).resolve().parents[2]
SIMULATE = ROOT / "tools" / "simulate.py"
DBC_PATH = ROOT.parent / "shared" / "dbc" / "pylontech_plewka_PylontechUSX00C_CAN2MQTT.dbc"
DB = cantools.database.load_file(str(DBC_PATH), strict=True) if DBC_PATH.is_file() else None
NO_DBC = ("../shared/dbc is absent (%s not found): this test decodes the simulation's frames with that "
          "third-party DBC, which is not part of the repository" % DBC_PATH)

IDS = (0x351, 0x355, 0x356, 0x359, 0x35C, 0x35E)
PERIOD = 1.0  # s, can_period_ms
TIMEOUT = 5.0  # s, bms_timeout_s (default)
SLACK = 0.5  # s of scheduling slack on top of one CAN period
STALL = 0.25  # s: a frame set arriving over a longer time shows a stalled host (see _disturbed)
# Longest time from the end of a BMS fault to the first frame set with fresh data: the attempt
# under way when the BMS came back (reply time 0.5 s + 1.5 s of late-reply discarding + 0.1 s
# gap), one exchange, then the next frame set at most a period later.
RECOVERY = 2.1 + 0.5 + PERIOD + 0.9
DEFAULTS = gwconfig.defaults()
HOLD = float(DEFAULTS["hold_s"])  # s of 0 A after the first data and after a block ...
RAMP_A_S = float(DEFAULTS["ramp_a_s"])  # ... then up at this rate
FULL_A = 100.0  # the limits this pack gets (the user caps)
RAMP_S = math.ceil(FULL_A / RAMP_A_S)
READY = 2.8  # s: the first frame set is out by then (see _disturbed)
# the hold counts from the last blocked decision, a period before the first fresh frame set: the
# limits come up within a period (+ slack) of hold_s after it, and are full RAMP_S later
LIMITS_AFTER = (HOLD - PERIOD - SLACK, HOLD + PERIOD + SLACK)
FULL_AFTER = (RAMP_S - PERIOD - SLACK, RAMP_S + PERIOD + SLACK)
LIMITS_BY = READY + LIMITS_AFTER[1]
FULL_BY = LIMITS_BY + FULL_AFTER[1]
FAULT_AT = math.ceil(LIMITS_BY) + 2  # the faults start once the limits are up (ramping)
BACK_AT = FAULT_AT + 6  # the end of the faults that end
# a run that ends this long after BACK_AT has its limits back (and two frame sets more)
AFTER_BACK = RECOVERY + LIMITS_AFTER[1] + 2 * PERIOD

# A 16S LFP pack at 53.300 V (12 x 3.331 + 4 x 3.332), charging at 20.5 A, SOC 64, SOH 98.
CELLS = [3.331] * 12 + [3.332] * 4
STATE = {
    "cell_voltages_v": CELLS,
    "battery_current_a": 20.5,
    "soc_percent": 64,
    "soh_percent": 98,
    "remaining_capacity_ah": 179.2,
    "nominal_capacity_ah": 280.0,
    "power_tube_temp_c": 27.4,
    "t1_c": 21.4,
    "t2_c": 22.0,
    "error_bitmask": 0,
    "charging": True,
    "discharging": True,
    "cell_ovp_v": 3.65,
    "cell_ovpr_v": 3.45,
    "cell_uvp_v": 2.7,
    "cell_uvpr_v": 2.9,
    "rcv_v": 3.45,
    "max_charge_current_a": 150.0,
    "max_discharge_current_a": 200.0,
}
# What the inverter must see (README "Limits straight from the BMS", default user caps 100 A)
EXPECT = {
    "cvl_v": 3.45 * 16,  # RCV x cells = 55.2 V
    "ccl_a": min(0.9 * 150, 100),  # 100 A
    "dcl_a": min(0.9 * 200, 100),  # 100 A
    "dvl_v": (2.7 + 0.2) * 16,  # 46.4 V
    "volts": 53.30,
    "amps": 20.5,
    "soc": 64,
    "soh": 98,
    "temp_c": (21.4 + 22.0) / 2,  # mean of the battery sensors (not the MOSFET)
}

# name -> (simulate.py arguments beyond --state/--candump/--log, seconds, config or None).
# The firmware has its first data after ~1.2 s; the BMS faults start at FAULT_AT (~36 s: the limits
# are on their way up) and those that end last 6 s; the runs go on until the limits are back after
# them. Where a fault must outlast the stale point by a clear margin in a short run, bms_timeout_s
# is 3 instead of 5. The first frame must be out by READY (s) for a scenario to test what it claims.
READY_BY = {"late-start": 4.0 + RECOVERY}
_BACK_S = math.ceil(BACK_AT + AFTER_BACK)
SCENARIOS = {
    "normal": ((), math.ceil(FULL_BY) + 8, None),
    "late-start": (("--fault", "bms-silent@0:4"), math.ceil(4.0 + RECOVERY + LIMITS_AFTER[1]) + 3, None),
    "silent-zeros": (("--fault", "bms-silent@%d" % FAULT_AT), FAULT_AT + 9, None),
    "silent-zeros-back": (("--fault", "bms-silent@%d:6" % FAULT_AT), _BACK_S, None),
    "silent-stop": (("--fault", "bms-silent@%d" % FAULT_AT), FAULT_AT + 9, {"link_loss": "stop"}),
    "silent-stop-back": (("--fault", "bms-silent@%d:6" % FAULT_AT), _BACK_S,
                         {"link_loss": "stop", "bms_timeout_s": 3}),
    "garbage": (("--fault", "bms-garbage@%d:6" % FAULT_AT), _BACK_S, {"bms_timeout_s": 3}),
    "slow": (("--fault", "bms-slow@%d:6" % FAULT_AT), _BACK_S, {"bms_timeout_s": 3}),
    "inverter-silent": (("--fault", "inverter-silent@%d" % FAULT_AT), FAULT_AT + 6, {"inverter_timeout_s": 3}),
    "status-lines": (("--fault", "bms-silent@3"), 12, {"status_s": 1}),
    "jk-nw": (("--bms-protocol", "jk-nw"), math.ceil(FULL_BY) + 5, None),
    "bad-config": ((), math.ceil(FULL_BY) + 5,
                   {"bogus_key": 1, "can_period_ms": 50, "link_loss": "explode", "max_charge_a": "lots"}),
}


# ------------------------------------------------------------------------------------ helpers


class Run:
    """One finished simulate.py run: exit code, stderr, firmware log and the decoded frames."""

    def __init__(self, name, rc, stderr, log, frames, seconds=None):
        self.name, self.rc, self.stderr, self.log, self.frames = name, rc, stderr, log, frames
        self.seconds = seconds
        self.bursts = group_bursts(frames)

    def of(self, can_id):
        return [(t, d) for t, i, d in self.frames if i == can_id]

    def why(self):
        return "%s: rc %s\n--- stderr\n%s\n--- firmware log\n%s" % (self.name, self.rc, self.stderr[-2000:],
                                                                     self.log[-3000:])


_LINE = re.compile(r"^\((\d+\.\d+)\) can0 ([0-9A-F]{3})#([0-9A-F]*)$")


def parse_candump(path):
    frames = []
    for line in Path(path).read_text().splitlines():
        m = _LINE.match(line.strip())
        assert m, "not a candump log line: %r" % line
        frames.append((float(m.group(1)), int(m.group(2), 16), bytes.fromhex(m.group(3))))
    return frames


def group_bursts(frames):
    """Frame sets -> [(time of the first frame, {id: data})]. A set starts with 0x35E (the firmware
    sends the name first) or when an id repeats -- not after a pause: a set that arrives over a
    longer time stays one set, and shows a stalled host (see _disturbed)."""
    return [(t0, ids) for t0, _, ids in group_spans(frames)]


def group_spans(frames):
    """As group_bursts, with the time of the last frame: [(first, last, {id: data})]."""
    out = []
    for t, i, d in frames:
        if not out or i == 0x35E or i in out[-1][2]:
            out.append([t, t, {}])
        out[-1][1] = t
        out[-1][2][i] = d
    return [tuple(x) for x in out]


def u16(d, o):
    return d[o] | d[o + 1] << 8


def decode(burst):
    """A frame set -> one flat dict of DBC signals plus the spec-only bytes."""
    out = {}
    for can_id in IDS:
        data = burst[can_id]
        assert len(data) == 8, "0x%03X DLC %d" % (can_id, len(data))
        out.update(DB.decode_message(can_id, data, decode_choices=False))
    d351, d359 = burst[0x351], burst[0x359]
    out["DVL"] = u16(d351, 6) / 10  # docs/inverter-can.md "Pylontech": bytes 6-7, U16 0.1 V (not in the DBC)
    out["PN"] = bytes(d359[5:7])  # docs/inverter-can.md "Pylontech": 'P' 'N'
    out["sys_error"] = bool(d359[1] & 0x08)  # docs/inverter-can.md "Pylontech alarms": byte 1 bit 3
    out["comm_fail"] = bool(d359[3] & 0x08)  # docs/inverter-can.md "Pylontech alarms": byte 3 bit 3
    out["name"] = bytes(out[k] for k in "abcdefgh")
    return out


def is_fresh(v, tol_v=0.011, tol_a=0.051, tol_t=0.051, soh=EXPECT["soh"]):
    """True when a decoded frame set carries the simulated pack on fresh data: its measurements,
    CVL and DVL, no alarm -- whatever the current limits."""
    return (abs(v["Battery_Charge_Voltage"] - EXPECT["cvl_v"]) < 0.051
            and abs(v["DVL"] - EXPECT["dvl_v"]) < 0.051
            and abs(v["Battery_Voltage"] - EXPECT["volts"]) < tol_v
            and abs(v["Battery_Current"] - EXPECT["amps"]) < tol_a
            and abs(v["Battery_Temperature"] - EXPECT["temp_c"]) < tol_t
            and v["SOC"] == EXPECT["soc"] and v["SOH"] == soh
            and not v["sys_error"] and not v["comm_fail"]
            and v["name"] == b"PYLON   " and v["Pack_Nr"] == 1 and v["PN"] == b"PN")


def is_normal(v, **tol):
    """True when a decoded frame set carries the simulated pack with its normal (full) limits."""
    return (is_fresh(v, **tol)
            and abs(v["Charge_Current_Limitation"] - EXPECT["ccl_a"]) < 0.051
            and abs(v["Discharge_Current_Limitation"] - EXPECT["dcl_a"]) < 0.051
            and v["Charge_Enable"] == 1 and v["Discharge_Enable"] == 1)


def is_held(v, **tol):
    """The hold after the start or a block: the pack on fresh data, CCL = DCL = 0, enables off."""
    return (is_fresh(v, **tol)
            and v["Charge_Current_Limitation"] == 0 and v["Discharge_Current_Limitation"] == 0
            and v["Charge_Enable"] == 0 and v["Discharge_Enable"] == 0)


def is_ramping(v, **tol):
    """On the ramp after the hold: both limits above 0, below the full ones, enables on."""
    return (is_fresh(v, **tol)
            and 0 < v["Charge_Current_Limitation"] < EXPECT["ccl_a"] - 0.05
            and 0 < v["Discharge_Current_Limitation"] < EXPECT["dcl_a"] - 0.05
            and v["Charge_Enable"] == 1 and v["Discharge_Enable"] == 1)


def is_stale_zeros(v):
    """The "zeros" link-loss frame set (docs/charge-control.md "Link loss")."""
    return (v["Charge_Current_Limitation"] == 0 and v["Discharge_Current_Limitation"] == 0
            and v["Charge_Enable"] == 0 and v["Discharge_Enable"] == 0
            and v["sys_error"] and v["comm_fail"]
            and v["Alarm_Internal"] == 1 and v["Warn_Internal"] == 1
            and v["name"] == b"PYLON   " and v["PN"] == b"PN")


def limits_nonzero(burst):
    d = burst[0x351]
    return u16(d, 2) != 0 or u16(d, 4) != 0


def check_cadence(run, t_from=None, t_to=None, strict=False):
    """One frame set per period. strict (the normal run): mean within 1.0 +/- 0.05 s and every gap
    0.8..1.2 s. The fault scenarios check the cadence loosely (mean +/- 0.1 s, gaps 0.5..1.5 s): the
    times are host receive times, and a run that shares the CPU with the others' start-up (or with
    whatever else the machine runs) may see one burst late and the next on its grid again."""
    ts = [t for t, _ in run.of(0x351) if (t_from is None or t >= t_from) and (t_to is None or t <= t_to)]
    assert len(ts) >= 3, run.why()
    gaps = [b - a for a, b in zip(ts, ts[1:], strict=False)]  # consecutive pairs
    tol, lo, hi = (0.05, 0.8, 1.2) if strict else (0.1, 0.5, 1.5)
    assert abs(mean(gaps) - PERIOD) <= tol, (gaps, run.why())
    assert all(lo <= g <= hi for g in gaps), gaps


def check_complete_bursts(run):
    for t, b in run.bursts:
        if run.seconds is not None and t > run.seconds - 0.05:
            continue  # a set that began as the run was ended: cut by the end, not by the firmware
        assert sorted(b) == sorted(IDS), "incomplete frame set at %.3f s: %s" % (t, [hex(i) for i in b])


# ---------------------------------------------------------------------------------- the runs


def uses(*names, dbc=True):
    """Mark which scenarios a test needs; the fixture starts only the needed ones. dbc: the test
    decodes frames with the DBC -- without ../shared/dbc it is skipped and starts no run."""
    def deco(fn):
        if dbc and DB is None:
            return pytest.mark.skip(reason=NO_DBC)(fn)
        fn.scenarios = names
        return fn
    return deco


_EVENT = re.compile(r"^\[ *(\d+)\.(\d)\] (.+)$")


def events(run):
    """The firmware's console lines as (seconds since its start, text); every line is an event."""
    out = []
    for line in run.log.splitlines():
        m = _EVENT.match(line)
        assert m, "not an event line: %r\n%s" % (line, run.why())
        out.append((int(m.group(1)) + int(m.group(2)) / 10, m.group(3)))
    assert [t for t, _ in out] == sorted(t for t, _ in out), out  # printed as they happen
    return out


def _start(tmp, name, state_path, tag="", table=None, extra=(), base_cfg=None):
    """Start simulate.py for scenario name of table (default SCENARIOS: name -> (arguments,
    seconds, config or None)) with the extra arguments; a config is merged over base_cfg."""
    args, seconds, cfg = (table or SCENARIOS)[name]
    if base_cfg is not None:
        cfg = dict(base_cfg, **(cfg or {}))
    base = tmp / (name + tag)
    cmd = [sys.executable, str(SIMULATE), "--state", str(state_path), "--seconds", str(seconds),
           "--candump", str(base) + ".log", "--log", str(base) + ".fw"] + list(extra) + list(args)
    if cfg is not None:
        p = tmp / (name + ".json")
        p.write_text(json.dumps(cfg))
        cmd += ["--config", str(p)]
    err = open(str(base) + ".err", "w")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, cwd=str(ROOT))
    err.close()
    return proc, time.monotonic() + seconds + 30, base


def _finish(name, proc, deadline, base, table=None, run_cls=None):
    try:
        rc = proc.wait(max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        rc = "killed: simulate.py did not finish in time"
    log_path, fw_path = Path(str(base) + ".log"), Path(str(base) + ".fw")
    return (run_cls or Run)(name, rc, Path(str(base) + ".err").read_text(),
                            fw_path.read_text() if fw_path.exists() else "",
                            parse_candump(log_path) if log_path.exists() else [], (table or SCENARIOS)[name][1])


def _disturbed(name, run):
    """Why a run says nothing about the firmware, or "": its firmware was not even up before the
    fault, or the host stalled a process for a moment (the firmware writes the six frames of a set
    in one go, so a set that takes more than STALL s to arrive shows a stall)."""
    if run.rc != 0:
        return ""  # a failure of its own: reported by the test
    if not run.frames or run.frames[0][0] > READY_BY.get(name, READY):
        return "the firmware's first frame came only at %s s" % (run.frames[0][0] if run.frames else "never")
    for first, last, _ in group_spans(run.frames):
        if last - first > STALL:
            return "a frame set took %.3f s to arrive (at %.3f s)" % (last - first, first)
    return ""


def _start_all(names, tmp, state_path, tag="", table=None, **start):
    procs = {}
    table = table or SCENARIOS
    # 0.4 s apart; longest first, the normal run (its cadence is checked strictly) last: it then
    # starts when the others' start-up is over, and still ends before the longest ones
    for name in sorted(names, key=lambda n: (n == "normal", -table[n][1])):
        if procs:
            time.sleep(0.4)
        procs[name] = _start(tmp, name, state_path, tag, table, **start)
    return procs


def scenario_runs(request, tmp, state_path, disturbed, table=None, run_cls=None, **start):
    """The body of a module's sims fixture (this file's and test_simulation_ble's): start every
    scenario the module's tests name (uses()) at once; yields get(name) -> Run. The first get()
    waits for all runs; a run disturbed by the host (disturbed(name, run) says why: the scenario
    then tests nothing) is repeated once, again all such runs together."""
    needed = []
    for item in request.session.items:
        if getattr(item, "module", None) is not request.module:
            continue  # another file's scenarios (test_simulation / test_simulation_ble) are its own
        for name in getattr(getattr(item, "function", None), "scenarios", ()):
            if name not in needed:
                needed.append(name)
    procs = _start_all(needed, tmp, state_path, "", table, **start)
    done = {}

    def finish_all():
        for name, (proc, deadline, base) in list(procs.items()):
            done[name] = _finish(name, proc, deadline, base, table, run_cls)
        procs.clear()

    def collect():
        done["collected"] = True
        finish_all()
        late = [n for n in needed if disturbed(n, done[n])]
        if late:
            procs.update(_start_all(late, tmp, state_path, ".again", table, **start))
            finish_all()

    def get(name):
        if "collected" not in done:
            collect()
        run = done[name]
        why = disturbed(name, run)
        assert not why, "%s: %s, in two runs -- is the host too busy for these timings?\n%s" % (
            name, why, run.why())
        return run

    try:
        yield get
    finally:
        stop_all(procs)


def stop_all(procs):
    """Terminate what is still running of {name: (proc, deadline, base)}."""
    for proc, _, _ in procs.values():
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="module")
def state_path(tmp_path_factory):
    p = tmp_path_factory.mktemp("sim-state") / "state.json"
    p.write_text(json.dumps(STATE))
    return p


@pytest.fixture(scope="module")
def sims(request, tmp_path_factory, state_path):
    """Every scenario this module's tests name, run at once (scenario_runs)."""
    yield from scenario_runs(request, tmp_path_factory.mktemp("sim-runs"), state_path, _disturbed)


# ------------------------------------------------------------------------------- (a) normal


@uses("normal")
def test_normal_run_carries_the_simulated_values(sims):
    run = sims("normal")
    assert run.rc == 0, run.why()
    check_complete_bursts(run)
    # from the first frame set on: the pack's values; 0 A for the hold, the ramp, then the normal
    # limits -- at least 7 frame sets of them at the end
    states, changes = phases(run)
    assert changes == ["held", "ramp", "normal"], states
    check_hold_and_ramp(run, run.bursts[0][0])
    assert sum(1 for _, p in states if p == "normal") >= 7, states
    v = decode(run.bursts[-1][1])
    # exact values (the DBC's own scaling: 0.1 V / 0.1 A / 0.01 V / 0.1 degC)
    assert v["Battery_Charge_Voltage"] == pytest.approx(55.2)
    assert v["Charge_Current_Limitation"] == pytest.approx(100.0)
    assert v["Discharge_Current_Limitation"] == pytest.approx(100.0)
    assert v["DVL"] == pytest.approx(46.4)
    assert v["Battery_Voltage"] == pytest.approx(53.30)
    assert v["Battery_Current"] == pytest.approx(20.5)
    assert v["Battery_Temperature"] == pytest.approx(21.7)
    assert (v["SOC"], v["SOH"], v["Pack_Nr"], v["PN"], v["name"]) == (64, 98, 1, b"PN", b"PYLON   ")
    assert (v["Charge_Enable"], v["Discharge_Enable"], v["Charge_Immediately"]) == (1, 1, 0)
    alarms = [k for k in v if k.startswith(("Alarm_", "Warn_")) and v[k]]
    assert not alarms
    assert "BMS data complete: CAN output starts" in run.log


@uses("normal", dbc=False)
def test_normal_run_cadence(sims):
    run = sims("normal")
    check_cadence(run, strict=True)
    for _t, b in run.bursts:
        assert set(b) == set(IDS)
    # the six frames of one set go out together (one burst, not spread over the period)
    for first, last, _b in group_spans(run.frames):
        assert last - first < STALL, (first, last)
    # a frame set per second from the first one to the end of the run
    first, last = run.bursts[0][0], run.bursts[-1][0]
    assert len(run.bursts) == round(last - first) + 1


@uses("normal", dbc=False)
def test_normal_run_console_events(sims):
    run = sims("normal")
    assert run.rc == 0, run.why()
    texts = [text for _, text in events(run)]
    status = [t for t in texts if t.startswith("BMS: fresh (jk-pb@1), ")]  # the status line, every status_s
    assert len(status) == int(run.seconds // DEFAULTS["status_s"]), texts
    assert [t for t in texts if t not in status] == [
        "CAN: SLCAN over TCP (host simulation), 500 kbit/s",  # the port the simulation really uses
        "JK-BMS -> inverter CAN gateway: BMS jk-pb via jk-pb@1, CAN mcp2515 500 kbit/s, protocol pylon, "
        "every 1000 ms, stale BMS data: 0 A + alarms",
        "BMS data complete: CAN output starts",
        "charge: bulk (first valid BMS data)",  # the charge state machine's first transition
    ], run.why()


# -------------------------------------------------------------------- (b) nothing before data


@uses("late-start")
def test_no_frame_before_valid_data(sims):
    run = sims("late-start")  # the BMS answers nothing for the first 4 s
    assert run.rc == 0, run.why()
    assert run.frames, run.why()
    first = run.frames[0][0]
    assert first >= 4.0 - 0.1, "frame at %.3f s while the BMS was silent" % first
    assert first <= 4.0 + RECOVERY, run.why()  # the first attempt after the silence
    check_complete_bursts(run)
    # the very first frame set already carries the pack (held at 0 A: the start is a block), the
    # limits follow the hold from the first data
    check_hold_and_ramp(run, run.bursts[0][0], full=False)
    check_cadence(run)
    assert "BMS data complete: CAN output starts" in run.log


# ------------------------------------------------------------ (c) BMS lost, "zeros" (default)


def _stale_point(fault_at, timeout=TIMEOUT):
    """Latest moment the gateway may still send the last fresh data: the last good reply came
    before fault_at, it goes stale bms_timeout later, and the next burst is at most a period on."""
    return fault_at + timeout + PERIOD + SLACK


def _fresh_until(fault_at, timeout=TIMEOUT):
    """Earliest moment the data may turn stale: the last good reply came at most about two poll
    periods before the fault (one, plus a late poll on a busy host)."""
    return fault_at - 2 * PERIOD + timeout - SLACK


def phase(v, **tol):
    for name, test in (("normal", is_normal), ("ramp", is_ramping), ("held", is_held)):
        if test(v, **tol):
            return name
    return "stale" if is_stale_zeros(v) else "other"


def phases(run, **tol):
    """[(time, 'normal' | 'ramp' | 'held' | 'stale' | 'other')] per frame set, and the sequence of
    phase changes."""
    out = []
    for t, b in run.bursts:
        out.append((t, phase(decode(b), **tol)))
    seq = [p for _, p in out]
    return out, [seq[i] for i in range(len(seq)) if i == 0 or seq[i] != seq[i - 1]]


def check_hold_and_ramp(run, t_fresh, full=True, **tol):
    """From the frame set at t_fresh on (the first on fresh data after the start or a block): held
    sets for hold_s, then the ramp -- both limits up by at most ramp_a_s a second, never down --
    and (full) the normal limits RAMP_S after the ramp began, kept to the end. Returns the time
    of the first set with limits."""
    sets = [(t, decode(b)) for t, b in run.bursts if t >= t_fresh - 0.05]
    assert sets and abs(sets[0][0] - t_fresh) < 0.05, (t_fresh, run.why())
    kinds = [(t, phase(v, **tol)) for t, v in sets]
    up = next((t for t, p in kinds if p in ("ramp", "normal")), None)
    assert up is not None, kinds
    assert all(p == "held" for t, p in kinds if t < up), kinds
    assert t_fresh + LIMITS_AFTER[0] <= up <= t_fresh + LIMITS_AFTER[1], (t_fresh, up, kinds)
    last_t, last = None, None
    for t, v in sets:
        if t < up:
            continue
        a = v["Charge_Current_Limitation"], v["Discharge_Current_Limitation"]
        if last is not None:
            step = RAMP_A_S * (t - last_t + 0.3) + 0.15  # host receive times: +- scheduling
            assert all(0 <= x - y <= step for x, y in zip(a, last, strict=True)), (t, a, last)
        last_t, last = t, a
    if full:
        top = next((t for t, p in kinds if p == "normal"), None)
        assert top is not None, kinds
        assert up + FULL_AFTER[0] <= top <= up + FULL_AFTER[1], (up, top, kinds)
        assert all(p == "normal" for t, p in kinds if t >= top), kinds
        assert all(p == "ramp" for t, p in kinds if up <= t < top), kinds
    else:
        assert all(p in ("ramp", "normal") for t, p in kinds if t >= up), kinds
    return up


@uses("silent-zeros")
def test_silent_bms_zeros_policy(sims):
    run = sims("silent-zeros")  # silent from FAULT_AT to the end
    assert run.rc == 0, run.why()
    check_complete_bursts(run)
    stale_from = _stale_point(FAULT_AT)
    states, changes = phases(run)
    assert changes == ["held", "ramp", "stale"], states  # never back to limits while silent
    assert [p for t, p in states if t < FAULT_AT][-1] == "ramp"  # the limits were up at the fault
    # never too early: the data stays fresh for bms_timeout_s after the last good reply
    first_stale = next(t for t, p in states if p == "stale")
    assert _fresh_until(FAULT_AT) <= first_stale <= stale_from, states
    assert sum(1 for t, _ in run.bursts if t > stale_from) >= 2
    assert not any(limits_nonzero(b) for t, b in run.bursts if t > stale_from)
    for _t, b in run.bursts:
        # voltage, SOC etc. of the last data are still reported; only the limits are withheld
        v = decode(b)
        assert v["SOC"] == 64 and abs(v["Battery_Voltage"] - 53.3) < 0.011
        assert v["Battery_Charge_Voltage"] == pytest.approx(55.2) and v["DVL"] == pytest.approx(46.4)
    check_cadence(run)  # frames keep coming every second throughout
    assert "BMS data STALE (no reply from the BMS: sending 0 A limits + alarms)" in [e for _, e in events(run)]


@uses("silent-zeros-back")
def test_silent_bms_zeros_policy_recovers(sims):
    run = sims("silent-zeros-back")  # silent from FAULT_AT to BACK_AT
    assert run.rc == 0, run.why()
    check_complete_bursts(run)
    states, changes = phases(run)
    assert changes == ["held", "ramp", "stale", "held", "ramp"], states
    stale = [t for t, p in states if p == "stale"]
    assert min(stale) >= _fresh_until(FAULT_AT), states
    # recovery: fresh data again, the frames leave the safe state (0 A for the hold: the outage was
    # a block); the limits come back hold_s later
    back = next(t for t, p in states if p == "held" and t > max(stale))
    assert BACK_AT <= back <= BACK_AT + RECOVERY, states
    check_hold_and_ramp(run, back, full=False)
    check_cadence(run)
    texts = [e for _, e in events(run)]
    assert texts.index("BMS data STALE (no reply from the BMS: sending 0 A limits + alarms)") < texts.index(
        "BMS data back: limits return after the hold"), texts


# --------------------------------------------------------------------------- (d) "stop" policy


@uses("silent-stop")
def test_silent_bms_stop_policy(sims):
    run = sims("silent-stop")  # silent from FAULT_AT to the end
    assert run.rc == 0, run.why()
    check_complete_bursts(run)
    stale_from = _stale_point(FAULT_AT)
    assert run.bursts and run.bursts[0][0] < READY
    states, changes = phases(run)
    assert changes == ["held", "ramp"], states  # never a stale frame set with "stop"
    last = run.bursts[-1][0]
    assert _fresh_until(FAULT_AT) - PERIOD <= last <= stale_from, last
    assert not [t for t, _, _ in run.frames if t > stale_from]
    check_cadence(run)  # up to the stop
    assert "BMS data STALE (no reply from the BMS: CAN output stopped)" in [e for _, e in events(run)]


@uses("silent-stop-back")
def test_silent_bms_stop_policy_resumes(sims):
    run = sims("silent-stop-back")  # silent from FAULT_AT to BACK_AT, bms_timeout_s 3
    assert run.rc == 0, run.why()
    check_complete_bursts(run)
    states, changes = phases(run)
    assert changes == ["held", "ramp", "held", "ramp"], states  # never a stale frame set with "stop"
    stale_from = _stale_point(FAULT_AT, 3.0)
    assert [t for t, _ in run.bursts if t < FAULT_AT]
    assert not [t for t, _, _ in run.frames if stale_from < t < BACK_AT], run.why()
    resumed = [t for t, _ in run.bursts if t >= BACK_AT]
    assert resumed and resumed[0] <= BACK_AT + RECOVERY, resumed
    check_hold_and_ramp(run, resumed[0], full=False)  # the outage was a block: the hold again
    check_cadence(run, t_to=stale_from)
    check_cadence(run, t_from=resumed[0])
    texts = [e for _, e in events(run)]
    assert texts.index("BMS data STALE (no reply from the BMS: CAN output stopped)") < texts.index(
        "BMS data back: limits return after the hold"), texts


# ------------------------------------------------------------- (e) garbage and slow replies


@pytest.mark.parametrize("name", ("garbage", "slow"))
@uses("garbage", "slow")
def test_bad_bms_replies_never_count_as_data(sims, name):
    # the fault lasts from FAULT_AT to BACK_AT, bms_timeout_s 3. Garbage: random bytes or replies
    # with a broken checksum / CRC, noise between them. Slow: every reply 1.5 s late (reply time 0.5 s).
    run = sims(name)
    assert run.rc == 0, run.why()  # the firmware survived (simulate.py checks it stayed up)
    check_complete_bursts(run)
    states, changes = phases(run)
    assert changes == ["held", "ramp", "stale", "held", "ramp"], states
    stale_from = _stale_point(FAULT_AT, 3.0)
    window = [(t, p) for t, p in states if stale_from < t < BACK_AT]
    assert window and all(p == "stale" for _, p in window), states
    assert not any(limits_nonzero(b) for t, b in run.bursts if stale_from < t < BACK_AT)
    back = next(t for t, p in states if p == "held" and t > stale_from)
    assert BACK_AT <= back <= BACK_AT + RECOVERY, states
    check_hold_and_ramp(run, back, full=False)
    check_cadence(run)
    texts = [e for _, e in events(run)]  # every console line is an event: no traceback, no crash
    stale = [i for i, e in enumerate(texts) if e.startswith("BMS data STALE (")]
    assert stale and texts.index("BMS data back: limits return after the hold") > stale[0], texts
    # the reason names what went wrong: garbled bytes, or (slow) no reply in time
    reason = "bytes received but no valid frame" if name == "garbage" else "no reply from the BMS"
    assert reason in texts[stale[0]], texts
    assert not [e for e in texts if e.startswith(("task ", "watchdog"))], texts


# --------------------------------------------------------------------------- (f) inverter silent


@uses("inverter-silent", dbc=False)
def test_inverter_silence_is_only_reported(sims):
    run = sims("inverter-silent")  # no 0x305 from FAULT_AT on; inverter_timeout_s 3
    assert run.rc == 0, run.why()
    silent = [t for t, e in events(run) if e == "inverter silent: no 0x305 for 3 s (frames continue)"]
    assert silent and silent[0] >= FAULT_AT, run.why()
    check_complete_bursts(run)
    assert run.bursts[-1][0] > FAULT_AT + 3.0
    check_cadence(run)


@uses("inverter-silent")
def test_inverter_silence_leaves_the_frames_unchanged(sims):
    run = sims("inverter-silent")
    assert run.rc == 0, run.why()
    states, changes = phases(run)
    assert changes == ["held", "ramp"], states
    # the limits keep ramping up through the silence: no block, nothing withheld
    check_hold_and_ramp(run, run.bursts[0][0], full=False)


# ------------------------------------------------------------------------------ status lines


_STATUS = re.compile(r"^BMS: (fresh|STALE) \(jk-pb@1\), data age (\d+) ms, polls ok (\d+), timeouts (\d+), "
                     r"bad frames (\d+), exceptions (\d+), resync bytes (\d+)$")


@uses("status-lines", dbc=False)
def test_status_lines_follow_the_link(sims):
    # status_s 1: the one-line status every second; the BMS is silent from 3 s on
    run = sims("status-lines")
    assert run.rc == 0, run.why()
    lines = [(t, _STATUS.match(e)) for t, e in events(run) if e.startswith("BMS: ")]
    assert len(lines) >= 8 and all(m for _, m in lines), lines
    rows = [(m.group(1), int(m.group(2)), int(m.group(3)), int(m.group(4))) + tuple(map(int, m.groups()[4:]))
            for _, m in lines]
    states = [r[0] for r in rows]
    # fresh, then STALE to the end (latched: never fresh again while the BMS is silent)
    k = states.index("STALE")
    assert k >= 1 and set(states[:k]) == {"fresh"} and set(states[k:]) == {"STALE"}, rows
    for state, age, _ok, _timeouts, bad, exc, resync in rows:
        assert (age <= TIMEOUT * 1000) if state == "fresh" else (age > TIMEOUT * 1000), rows
        assert (bad, exc, resync) == (0, 0, 0), rows
    # polls stop succeeding once the BMS is silent; the timeouts keep counting
    assert rows[-1][2] == rows[k][2] and rows[-1][3] > rows[k][3] > 0, rows
    stale_ages = [r[1] for r in rows[k:]]
    assert stale_ages == sorted(stale_ages) and stale_ages[-1] - stale_ages[0] >= 1000 * (len(stale_ages) - 2)
    assert "BMS data STALE (no reply from the BMS: sending 0 A limits + alarms)" in [e for _, e in events(run)]


# ------------------------------------------------------------------------------------ (g) 4E 57


@uses("jk-nw")
def test_4e57_protocol_gives_the_same_values(sims):
    run = sims("jk-nw")
    assert run.rc == 0, run.why()
    check_complete_bursts(run)
    # 4E 57 resolution: pack 0.01 V, current 0.01 A, temperatures whole degC (21.4 -> 21, 22 -> 22);
    # it carries no SOH, reported as 100 (README, "Pylontech frames").
    tol = dict(tol_v=0.011, tol_a=0.051, tol_t=0.51, soh=100)
    states, changes = phases(run, **tol)
    assert changes == ["held", "ramp", "normal"], states
    check_hold_and_ramp(run, run.bursts[0][0], **tol)
    assert sum(1 for _, p in states if p == "normal") >= 3, states
    v = decode(run.bursts[-1][1])
    assert v["Battery_Temperature"] == pytest.approx(21.5)
    assert v["SOH"] == 100
    check_cadence(run)


@uses("jk-nw", dbc=False)
def test_4e57_protocol_runs_its_own_source(sims):
    run = sims("jk-nw")
    assert run.rc == 0, run.why()
    texts = [e for _, e in events(run)]
    assert "JK-BMS -> inverter CAN gateway: BMS jk-nw via jk-4e57, CAN mcp2515 500 kbit/s, protocol pylon, " \
           "every 1000 ms, stale BMS data: 0 A + alarms" in texts, texts
    assert "BMS data complete: CAN output starts" in texts
    check_complete_bursts(run)
    check_cadence(run)


# ------------------------------------------------------------------------------------ (h) bad input


def _quick(tmp_path, *args):
    return subprocess.run([sys.executable, str(SIMULATE), "--candump", str(tmp_path / "x.log")] + list(args),
                          capture_output=True, text=True, timeout=60, cwd=str(ROOT))


def test_missing_state_file_is_a_usage_error(tmp_path):
    missing = tmp_path / "no-such-state.json"
    r = _quick(tmp_path, "--state", str(missing), "--seconds", "1")
    assert r.returncode == 2, r
    assert "no-such-state.json" in r.stderr and "No such file" in r.stderr


def test_unknown_fault_is_a_usage_error(tmp_path, state_path):
    r = _quick(tmp_path, "--state", str(state_path), "--seconds", "1", "--fault", "bms-explode@3")
    assert r.returncode == 2, r
    assert "unknown fault 'bms-explode'" in r.stderr


@uses("bad-config", dbc=False)
def test_invalid_config_keys_fall_back_and_run(sims):
    run = sims("bad-config")
    assert run.rc == 0, run.why()
    texts = [e for _, e in events(run)]
    # one event per problem, in key order, before the gateway starts
    assert texts[:4] == [
        "config: unknown key 'bogus_key' ignored",
        "config: can_period_ms must be 200..5000, using default 1000",
        "config: link_loss must be one of auto, zeros, stop, using default 'auto'",
        "config: max_charge_a must be an integer, using default 100",
    ], texts
    assert "BMS data complete: CAN output starts" in texts
    check_complete_bursts(run)
    assert len(run.bursts) >= 5
    check_cadence(run)  # the default period, not 50 ms


@uses("bad-config")
def test_invalid_config_keys_leave_the_frames_normal(sims):
    run = sims("bad-config")
    assert run.rc == 0, run.why()
    # the default user maximum (100 A) in force: the normal limits after the hold and the ramp
    states, changes = phases(run)
    assert changes == ["held", "ramp", "normal"], states
    check_hold_and_ramp(run, run.bursts[0][0])
