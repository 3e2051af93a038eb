# End-to-end runs of the whole gateway firmware over BLE (tools/simulate.py --bms-transport ble):
# the real firmware app under the MicroPython unix port with its BLE source (sources/jk_ble.py) and
# the real, unmodified aioble (../shared/vendor/micropython-lib) on the simulated radio of
# host/fakeble, against one simulated JK-BMS BLE module whose frames come from tools/jkbms_sim.py
# (host/fakeble/remote_frames.py). CAN frames are decoded with cantools and the third-party DBC in
# ../shared/dbc through the helpers of test_simulation.py (same pack state, same expected values).
# Without the vendor aioble every test is skipped with the reason; without the DBC the tests that
# decode frames are.
#
# All runs start at once, 0.4 s apart (as in test_simulation.py), and take about as long as the
# longest (~50 s). A shorter charge hold keeps them short: hold_s 10, ramp_a_s 20 (0 A for 10 s
# after the first data and after every block, then 100 A in 5 s).
#
# Times: the faults count from the BMS simulator's start (the radio faults too: simulate.py hands
# sim_firmware.py that moment as --epoch), the candump times from a few ms later; the firmware's
# own "[t]" event times from its own start, a fraction of a second later still (only their order
# is checked).
import json
import re
import subprocess
import sys
from pathlib import Path
from statistics import mean

import pytest
import test_simulation as U
from fakeble import env

ROOT = Path(__file__).resolve().parents[2]
SIMULATE = ROOT / "tools" / "simulate.py"
NO_BLE = env.reason()
if NO_BLE:
    print("test_simulation_ble: skipped: %s" % NO_BLE)

PERIOD = 1.0  # s, can_period_ms
TIMEOUT = 5.0  # s, bms_timeout_s (default)
SLACK = 0.5
HOLD = 10.0
BASE_CFG = {"hold_s": int(HOLD), "ramp_a_s": 20, "status_s": 5}
RAMP_S = 100 / 20
READY = 3.0  # s: connected, device info, settings, first cell frame, first frame set
# the hold counts from the last blocked decision, a period before the first fresh frame set
LIMITS_AFTER = (HOLD - PERIOD - SLACK, HOLD + PERIOD + SLACK)
FAULT_AT = 20  # the limits are full by then (~1 + 10 + 5 s)
FAULT_S = 8
# From the end of an outage to the first fresh frame set: the link comes back at the firmware's
# next connect attempt (it may be waiting out a back-off step of 2 s, or be in the middle of a
# connect attempt that then completes), setup, 0x96, settings + cell frame, the next frame set.
BACK_BLE = 2.0 + 1.5 + PERIOD + SLACK
# From the end of a silence to fresh data: the module still streams; the next cell frame.
BACK_SILENT = 1.0 + PERIOD + SLACK
RUN_S = 50
MODULE_LAG = 0.4  # s: host/fakeble/remote_frames.py fresh_ms

# name -> (simulate.py arguments, seconds, config beyond BASE_CFG)
SCENARIOS = {
    "normal": ((), 35, {}),
    "burst": (("--fault", "ble-burst@0"), 35, {}),
    "disconnect": (("--fault", "ble-disconnect@%d:%d" % (FAULT_AT, FAULT_S)), RUN_S, {}),
    "disconnect-stop": (("--fault", "ble-disconnect@%d:%d" % (FAULT_AT, FAULT_S)), RUN_S, {"link_loss": "stop"}),
    "silent": (("--fault", "bms-silent@%d:%d" % (FAULT_AT, FAULT_S)), RUN_S, {}),
}


class Run(U.Run):
    def __init__(self, name, rc, stderr, log, frames, seconds):
        U.Run.__init__(self, name, rc, stderr, log, frames, seconds)
        self.events = []  # the firmware's console events: (its seconds, text)
        self.sim = []  # sim_firmware.py's own lines: (seconds after the epoch, text)
        for line in log.splitlines():
            m = _EVENT.match(line)
            if m:
                self.events.append((float(m.group(1)), m.group(2)))
                continue
            m = _SIM.match(line)
            assert m, "neither an event nor a sim line: %r\n%s" % (line, self.why())
            self.sim.append((float(m.group(1)), m.group(2)))
        self.texts = [e for _, e in self.events]

    def links(self):
        """The BLE link lines (every 5 s) as dicts of their counters."""
        out = []
        for t, text in self.sim:
            if text.startswith("BLE: "):
                d = {"t": t, "text": text}
                for k, v in re.findall(r"(connects|link losses|frames|chunks|lost chunks|re-requests) (\d+)", text):
                    d[k] = int(v)
                m = re.search(r"MTU (\d+|-)", text)
                d["mtu"] = m.group(1) if m else None
                out.append(d)
        return out


_EVENT = re.compile(r"^\[ *(\d+\.\d)\] (.+)$")
_SIM = re.compile(r"^sim (\d+\.\d): (.+)$")


def _disturbed(name, run):
    """Why a run says nothing about the firmware (see test_simulation._disturbed), or ""."""
    if run.rc != 0:
        return ""
    if not run.frames or run.frames[0][0] > READY:
        return "the firmware's first frame came only at %s s" % (run.frames[0][0] if run.frames else "never")
    for first, last, _ in U.group_spans(run.frames):
        if last - first > U.STALL:
            return "a frame set took %.3f s to arrive (at %.3f s)" % (last - first, first)
    return ""


def uses(*names, dbc=True):
    def deco(fn):
        if NO_BLE:
            return pytest.mark.skip(reason=NO_BLE)(fn)
        if dbc and U.DB is None:
            return pytest.mark.skip(reason=U.NO_DBC)(fn)
        fn.scenarios = names
        return fn
    return deco


@pytest.fixture(scope="module")
def sims(request, tmp_path_factory):
    """Every scenario this module's tests name, run at once over BLE (test_simulation.scenario_runs)."""
    tmp = tmp_path_factory.mktemp("sim-ble")
    state_path = tmp / "state.json"
    state_path.write_text(json.dumps(U.STATE))
    yield from U.scenario_runs(request, tmp, state_path, _disturbed, table=SCENARIOS, run_cls=Run,
                               extra=("--bms-transport", "ble"), base_cfg=BASE_CFG)


# ---------------------------------------------------------------------------------- helpers


def check_cadence(run, t_from=None, t_to=None, tol=0.1, lo=0.5, hi=1.5):
    ts = [t for t, _ in run.of(0x351) if (t_from is None or t >= t_from) and (t_to is None or t <= t_to)]
    assert len(ts) >= 3, run.why()
    gaps = [b - a for a, b in zip(ts, ts[1:], strict=False)]
    assert abs(mean(gaps) - PERIOD) <= tol, (gaps, run.why())
    assert all(lo <= g <= hi for g in gaps), gaps


def check_hold_and_ramp(run, t_fresh, full=True):
    """From the first frame set on fresh data (after the start or a block): held sets for hold_s,
    then the ramp, never down, and (full) the normal limits about RAMP_S later, kept to the end."""
    sets = [(t, U.decode(b)) for t, b in run.bursts if t >= t_fresh - 0.05]
    assert sets and abs(sets[0][0] - t_fresh) < 0.05, (t_fresh, run.why())
    kinds = [(t, U.phase(v)) for t, v in sets]
    up = next((t for t, p in kinds if p in ("ramp", "normal")), None)
    assert up is not None, kinds
    assert all(p == "held" for t, p in kinds if t < up), kinds
    assert t_fresh + LIMITS_AFTER[0] <= up <= t_fresh + LIMITS_AFTER[1], (t_fresh, up, kinds)
    last = None
    for t, v in sets:
        if t >= up:
            a = v["Charge_Current_Limitation"], v["Discharge_Current_Limitation"]
            assert last is None or all(x >= y for x, y in zip(a, last, strict=True)), (t, a, last)
            last = a
    if full:
        top = next((t for t, p in kinds if p == "normal"), None)
        assert top is not None and top <= up + RAMP_S + PERIOD + SLACK, (up, top, kinds)
        assert all(p == "normal" for t, p in kinds if t >= top), kinds
    return up


def check_values(run):
    """The last frame set: the simulated pack, limits within the BMS settings (README "Limits
    straight from the BMS": 0.9 x the BMS maximum, capped by the user's 100 A; CVL = RCV x cells,
    DVL = (UVP + 0.2 V) x cells, inside OVP / UVP x cells)."""
    v = U.decode(run.bursts[-1][1])
    s = U.STATE
    cells = len(s["cell_voltages_v"])
    assert v["Battery_Charge_Voltage"] == pytest.approx(55.2)
    assert v["Battery_Charge_Voltage"] <= s["cell_ovp_v"] * cells
    assert v["DVL"] == pytest.approx(46.4) and v["DVL"] >= s["cell_uvp_v"] * cells
    assert v["Charge_Current_Limitation"] == pytest.approx(100.0)
    assert v["Charge_Current_Limitation"] <= 0.9 * s["max_charge_current_a"]
    assert v["Discharge_Current_Limitation"] == pytest.approx(100.0)
    assert v["Discharge_Current_Limitation"] <= 0.9 * s["max_discharge_current_a"]
    assert v["Battery_Voltage"] == pytest.approx(53.30)
    assert v["Battery_Current"] == pytest.approx(20.5)
    assert v["Battery_Temperature"] == pytest.approx(21.7)
    assert (v["SOC"], v["SOH"], v["Pack_Nr"], v["PN"], v["name"]) == (64, 98, 1, b"PN", b"PYLON   ")
    assert (v["Charge_Enable"], v["Discharge_Enable"]) == (1, 1)
    assert not [k for k in v if k.startswith(("Alarm_", "Warn_")) and v[k]]


def check_clean(run):
    """No lost notification, no bad frame, no crash: the link lines and the status lines."""
    links = run.links()
    assert links, run.why()
    assert all(d["lost chunks"] == 0 for d in links), [d["text"] for d in links]
    status = [e for e in run.texts if e.startswith("BMS: ")]
    assert status, run.why()
    for e in status:
        assert re.search(r", bad frames 0, exceptions 0, resync bytes 0$", e), status
    assert not [e for e in run.texts if e.startswith(("task ", "watchdog"))], run.texts


# ------------------------------------------------------------------------------ (1) values


@uses("normal")
def test_ble_run_carries_the_simulated_values(sims):
    run = sims("normal")
    assert run.rc == 0, run.why()
    U.check_complete_bursts(run)
    states, changes = U.phases(run)
    assert changes == ["held", "ramp", "normal"], states
    check_hold_and_ramp(run, run.bursts[0][0])
    assert sum(1 for _, p in states if p == "normal") >= 10, states
    check_values(run)
    check_cadence(run, tol=0.05, lo=0.8, hi=1.2)
    assert len(run.bursts) == round(run.bursts[-1][0] - run.bursts[0][0]) + 1


@uses("normal", dbc=False)
def test_ble_run_console(sims):
    run = sims("normal")
    assert run.rc == 0, run.why()
    check_clean(run)
    start = run.texts[1]
    assert start.startswith("JK-BMS -> inverter CAN gateway: BMS ") and " via ble C8:47:8C:00:11:22, " in start
    assert run.texts[:1] + run.texts[2:5] == [
        "CAN: SLCAN over TCP (host simulation), 500 kbit/s",
        "BLE: connected to C8:47:8C:00:11:22, MTU 247",
        "BMS data complete: CAN output starts",
        "charge: bulk (first valid BMS data)",
    ], run.texts
    links = run.links()
    last = links[-1]
    assert (last["connects"], last["link losses"], last["mtu"]) == (1, 0, "247"), last
    # one cell-info frame a second (+ device info and settings), two notifications each at MTU 247
    assert last["frames"] >= int(last["t"]) - 1, last


# ------------------------------------------------------------------------- (2) link loss


@pytest.mark.parametrize("name", ("disconnect", "disconnect-stop"))
@uses("disconnect", "disconnect-stop")
def test_ble_disconnect_goes_stale_and_comes_back(sims, name):
    # the module drops the link at FAULT_AT and is not connectable until FAULT_AT + FAULT_S
    run = sims(name)
    assert run.rc == 0, run.why()
    U.check_complete_bursts(run)
    stop = name == "disconnect-stop"
    states, changes = U.phases(run)
    assert changes == (["held", "ramp", "normal", "held", "ramp", "normal"] if stop else
                       ["held", "ramp", "normal", "stale", "held", "ramp", "normal"]), states
    # the last frame before the loss came at most a period before it; stale bms_timeout_s later,
    # seen at the next frame set
    stale_by = FAULT_AT + TIMEOUT + PERIOD + SLACK
    fresh_until = FAULT_AT - PERIOD + TIMEOUT - SLACK
    if stop:
        assert not [t for t, _, _ in run.frames if stale_by < t < FAULT_AT + FAULT_S], run.why()
        last = max(t for t, _ in run.bursts if t < FAULT_AT + FAULT_S)
        assert fresh_until - PERIOD <= last <= stale_by, (last, states)
    else:
        stale = [t for t, p in states if p == "stale"]
        assert fresh_until <= stale[0] <= stale_by, states
        assert not any(U.limits_nonzero(b) for t, b in run.bursts if stale_by < t < FAULT_AT + FAULT_S)
    back = next(t for t, p in states if p == "held" and t > FAULT_AT)
    assert FAULT_AT + FAULT_S <= back <= FAULT_AT + FAULT_S + BACK_BLE, (back, states)
    check_hold_and_ramp(run, back)
    check_values(run)
    check_cadence(run, t_to=FAULT_AT + (0 if stop else FAULT_S))
    check_cadence(run, t_from=back)
    # the console: the loss, the failed tries while the module is away, the link back
    texts = run.texts
    lost = texts.index("BLE: BLE link lost")
    i_stale = next(i for i, e in enumerate(texts) if e.startswith("BMS data STALE ("))
    i_back = texts.index("BMS data back: limits return after the hold")
    connected = [i for i, e in enumerate(texts) if e == "BLE: connected to C8:47:8C:00:11:22, MTU 247"]
    assert len(connected) == 2 and connected[0] < lost < i_stale < connected[1] < i_back, texts
    assert texts[i_stale].endswith("CAN output stopped)" if stop else "sending 0 A limits + alarms)"), texts
    tries = [e for e in texts[lost + 1:connected[1]] if e.startswith("BLE: ") and not e.startswith("BMS")]
    assert tries, texts  # at least one retry failed while the module was away
    links = run.links()
    assert links[-1]["connects"] == 2 and links[-1]["link losses"] == 1, links[-1]
    away = [d for d in links if FAULT_AT + 1 < d["t"] < FAULT_AT + FAULT_S]
    assert away and all(not d["text"].startswith("BLE: connected") for d in away), away
    check_clean(run)


# ---------------------------------------------------------------------- (3) notification bursts


@uses("burst")
def test_ble_bursts_lose_nothing(sims):
    # 12-16 notifications of 20 bytes per connection event from the first link on, MTU refused:
    # 15 notifications per frame, most frames in one event
    run = sims("burst")
    assert run.rc == 0, run.why()
    U.check_complete_bursts(run)
    states, changes = U.phases(run)
    assert changes == ["held", "ramp", "normal"], states
    check_hold_and_ramp(run, run.bursts[0][0])
    check_values(run)
    check_cadence(run)
    check_clean(run)
    assert "BLE: MTU exchange refused, going on with 23 (20-byte chunks)" in run.texts or \
        "BLE: connected to C8:47:8C:00:11:22, MTU 23" in run.texts, run.texts
    last = run.links()[-1]
    assert last["mtu"] == "23" and last["connects"] == 1 and last["link losses"] == 0, last
    assert last["chunks"] >= 15 * (last["frames"] - 1), last  # 300-byte frames in 20-byte pieces
    module = [text for _, text in run.sim if text.startswith("module: ")][-1]
    sent = int(re.search(r"chunks sent (\d+)", module).group(1))
    assert sent - last["chunks"] <= 16, (module, last)  # all taken, bar the event under way


# ----------------------------------------------------------------------------- (4) silent BMS


@uses("silent")
def test_ble_silent_bms_goes_stale_and_comes_back(sims):
    # the BMS simulator answers nothing from FAULT_AT to FAULT_AT + FAULT_S: the module stays
    # connected and sends nothing
    run = sims("silent")
    assert run.rc == 0, run.why()
    U.check_complete_bursts(run)
    states, changes = U.phases(run)
    assert changes == ["held", "ramp", "normal", "stale", "held", "ramp", "normal"], states
    stale = [t for t, p in states if p == "stale"]
    # the module may still pass on a frame the simulator served up to MODULE_LAG before the silence
    stale_by = FAULT_AT + MODULE_LAG + TIMEOUT + PERIOD + SLACK
    assert FAULT_AT - PERIOD + TIMEOUT - SLACK <= stale[0] <= stale_by, states
    assert not any(U.limits_nonzero(b) for t, b in run.bursts if stale[0] <= t < FAULT_AT + FAULT_S)
    back = next(t for t, p in states if p == "held" and t > FAULT_AT)
    assert FAULT_AT + FAULT_S <= back <= FAULT_AT + FAULT_S + BACK_SILENT, (back, states)
    check_hold_and_ramp(run, back)
    check_values(run)
    check_cadence(run)
    texts = run.texts
    # (the reason reads "no valid data": the BLE source counts no timeout while the stream is quiet)
    i_stale = next(i for i, e in enumerate(texts) if e.startswith("BMS data STALE ("))
    assert texts[i_stale].endswith("sending 0 A limits + alarms)"), texts
    assert i_stale < texts.index("BMS data back: limits return after the hold"), texts
    # the link stayed up: the firmware asked again (0x96) and did not reconnect
    last = run.links()[-1]
    assert last["connects"] == 1 and last["link losses"] == 0 and last["re-requests"] >= 1, last
    check_clean(run)


# ---------------------------------------------------------------------------------- usage


def test_ble_faults_need_ble(tmp_path):
    r = subprocess.run([sys.executable, str(SIMULATE), "--state", str(tmp_path / "s.json"), "--candump",
                        str(tmp_path / "x.log"), "--fault", "ble-burst@3"],
                       capture_output=True, text=True, timeout=60, cwd=str(ROOT))
    assert r.returncode == 2, r
    (tmp_path / "s.json").write_text(json.dumps(U.STATE))
    r = subprocess.run([sys.executable, str(SIMULATE), "--state", str(tmp_path / "s.json"), "--candump",
                        str(tmp_path / "x.log"), "--fault", "ble-burst@3"],
                       capture_output=True, text=True, timeout=60, cwd=str(ROOT))
    assert r.returncode == 2 and "ble-burst: only over BLE (--bms-transport ble)" in r.stderr, r
    assert not (tmp_path / "x.log").exists()
    r = subprocess.run([sys.executable, str(SIMULATE), "--state", str(tmp_path / "s.json"), "--candump",
                        str(tmp_path / "x.log"), "--bms-transport", "ble", "--bms-protocol", "jk-nw"],
                       capture_output=True, text=True, timeout=60, cwd=str(ROOT))
    assert r.returncode == 2 and "jk-nw" in r.stderr, r
