#!/usr/bin/env python3
"""Closed-loop simulation of the charge controller: the firmware in the loop
with an LFP pack, its JK-PB BMS and an inverter, at simulated speed.

Each control step (--step-s, default 1 s = the BMS poll and CAN period):
  1. the BMS model's state (tools/battery_model.py) becomes the JK-PB's real
     wire frames (tools/jkbms_sim.py JkBmsSim: FC10 trigger replies, or FC03
     register blocks with --bms-read fc03), which the firmware's own decoders
     read into a pack.snapshot.PackSnapshot, as sources/jk_pb.py does (the
     status every poll, the settings when missing or every bms_settings_s);
  2. a sources.base.Freshness on a simulated tick clock gives the link state
     (the clock starts 20 min before the 2**30 ms tick wrap, so every run
     crosses it);
  3. charge.policy.ChargePolicy(cfg).decide(snap, state, now_ms) (a policy
     whose decide() takes no now_ms is called as decide(snap, state));
  4. the firmware's encoder (protocols.make(cfg)) builds the CAN frame set;
  5. the inverter model (tools/inverter_model.py) decodes the frames and
     drives the battery current through the next step, in ticks of <= 1 s,
     the BMS letting through what its MOSFETs allow.

Scenarios (--scenario NAME, or all; --list describes them):
  full-charge      20 -> 100 %, PV enough for a high current, a runner cell
  cold-morning     -5 degC warming to +15 degC, BMS charge UTP at -10 degC
  deep-discharge   the house load drains the pack; one weak cell
  settings-change  the BMS's OVP / OVPR / RCV lowered mid-charge
  link-lost        BMS link lost for 10 min mid-charge
  link-lost-stop   the same with link_loss "stop" (the frames stop)

Summary (--json for JSON): highest cell voltage and the smallest margin to
the cell OVP in force (mV), BMS protection trips by kind, time to
absorption, time in absorption, float reached, CCL changes and moves per
hour (overall, in absorption, and the most in any 60 min of absorption), CCL
direction reversals, DCL changes per hour, energy charged / discharged (kWh, at the
battery), charge taken below 0 degC (Ah), and the goals, each pass / fail:
  no-bms-trips        0 BMS protection trips
  ovp-margin          the highest cell stays >= 20 mV below the cell OVP
  ccl-calm            <= 6 CCL moves in any 60 min of absorption (a move:
                      changes in one direction <= 10 s apart -- one ramp
                      of the controller's hold-and-ramp is one move, though
                      each of its steps is a change on the wire)
  absorption-limit    every absorption ends within absorption_max_min
                      (+ one step); a run that ends inside an absorption
                      still within the limit passes
  no-cold-charge      0 Ah charged below 0 degC
  float-in-time       (the charges from 20 %) float within 4 h: ~2.3 h of
                      bulk at the 100 A user maximum + the absorption limit
                      + an hour for the tapers
"Absorption" is the controller's state (policy.ctl.state) when it has a
state machine; without one, the time the inverter spends voltage-limited
(CV), gaps under 60 s merged. Exit status 0 when every goal passes, 1
otherwise, 2 for a bad argument (one line on stderr).

  python tools/closed_loop.py --scenario full-charge [--json] [--hours H] [--step-s S]
  python tools/closed_loop.py --scenario all          # a table of every scenario
"""

import argparse
import inspect
import json
import math
import os
import sys
import traceback

# run as `python tools/X.py`: the repository root (for the tools package) and
# firmware/lib (the firmware's own code) on sys.path
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for _p in (os.path.join(_ROOT, "firmware", "lib"), _ROOT):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import protocols  # noqa: E402
from app import config as gwconfig  # noqa: E402
from charge import policy as charge_policy  # noqa: E402
from codec.errors import DecodeError  # noqa: E402
from codec.stream import FrameExtractor  # noqa: E402
from compat import ticks_add, ticks_diff  # noqa: E402
from jkbms import cellinfo, settings  # noqa: E402
from jkbms import frame as J  # noqa: E402
from jkbms import pb_modbus as pb  # noqa: E402
from modbus import rtu  # noqa: E402
from pack import snapshot as S  # noqa: E402
from sources.base import FRESH, STALE, WAIT, Freshness  # noqa: E402
from tools import cli  # noqa: E402
from tools.battery_model import KINDS, JkBms, Pack, Profile  # noqa: E402
from tools.inverter_model import Inverter  # noqa: E402
from tools.jkbms_sim import JkBmsSim  # noqa: E402

try:
    from charge import state as charge_state  # the lead's state machine, once it exists
except ImportError:
    charge_state = None

PROG = "closed_loop"
TICK_START = (1 << 30) - 20 * 60 * 1000  # the tick counter wraps 20 min into every run
PHYSICS_DT_S = 1.0  # the inverter / battery tick, at most (Run(physics_dt_s=...))
OVP_MARGIN_MV = 20
CCL_CHANGES_PER_HOUR = 6
MOVE_GAP_S = 10.0  # CCL changes this close, in one direction, are one move (a ramp)
CV_GAP_MERGE_S = 60.0
DEFAULT_ABSORPTION_MAX_MIN = 30  # when the config has no absorption_max_min (the spec's EOC timer)
LINK_NAMES = {WAIT: "WAIT", FRESH: "FRESH", STALE: "STALE"}


# ------------------------------------------------------------------ scenarios

class Scenario:
    """What a run needs: build() -> (bms, inverter), gateway config
    overrides, events [(label, trigger(run) -> bool, action(run))], the
    default length, and which goals apply."""

    def __init__(self, name, description, hours, build, cfg=None, events=(), float_deadline_h=None):
        self.name = name
        self.description = description
        self.hours = hours
        self.build = build
        self.cfg = dict(cfg or {})
        self.events = tuple(events)
        self.float_deadline_h = float_deadline_h


RUNNER = 6  # the runner cell's index (cell 7)
# A charge from 20 % at the 100 A user maximum: ~2.3 h of bulk + at most absorption_max_min (30 min); 4 h
# leaves more than an hour for the tapers.
FLOAT_DEADLINE_H = 4.0


def _charging_pack(soc, temp=25.0, thermal_tau_s=3 * 3600.0, runner_ah=1.2, seed=7):
    """16 x 280 Ah, capacities +-1 %, resistances +-5 %, top-balanced to
    +-0.1 % by the JK balancer, except the runner: runner_ah ahead at the top
    (about +40 mV over the others when the pack reaches its charge voltage)."""
    return Pack.build(16, 280.0, soc=soc, capacity_spread=0.01, soc_spread=0.001, r_spread=0.05, seed=seed,
                      top_balanced=True, offsets_ah={RUNNER: runner_ah}, temp=temp, thermal_tau_s=thermal_tau_s)


def _inverter(pv, load, **kw):
    """A 48 V hybrid inverter: 150 A charge / discharge hardware limit, charge
    ramp 5 A/s, a meter reading the battery 0.1 V low (the BMS and the
    inverter typically disagree by 0.1-0.2 V) and 1 mOhm of cable, fuse and
    breaker between them."""
    args = dict(pv_w=pv, load_w=load, max_charge_a=150.0, max_discharge_a=150.0, ramp_up_a_s=5.0,
                ramp_down_a_s=50.0, meter_offset_v=-0.10, cable_ohm=0.001, can_timeout_s=60.0)
    args.update(kw)
    return Inverter(**args)


SUNNY_PV = Profile([(0, 0.0), (1200, 8000.0)])  # 8 kW of PV within 20 min, then all day


def _full_charge_build():
    pack = _charging_pack(0.20)
    return JkBms(pack, nominal_ah=280.0, cell_noise_mv=1), _inverter(SUNNY_PV, 400.0)


def _cold_build():
    # the cells follow the profile: -5 degC at dawn, +15 degC 4 h later
    pack = _charging_pack(0.30, temp=Profile([(0, -5.0), (4 * 3600, 15.0)]), thermal_tau_s=None)
    bms = JkBms(pack, settings={"charge_utp_c": -10.0, "charge_utpr_c": -5.0}, nominal_ah=280.0, cell_noise_mv=1)
    pv = Profile([(0, 0.0), (1800, 500.0), (3 * 3600, 5000.0)])  # sunrise
    return bms, _inverter(pv, 300.0)


def _deep_discharge_build():
    caps = [280.0 * (1.0 + d) for d in (0.004, -0.006, 0.008, 0.0, -0.003, 0.006, 0.002, -0.008,
                                        0.005, -0.002, 0.009, -0.005, 0.001, -0.030, 0.003, -0.004)]
    pack = Pack.build(16, 280.0, soc=0.25, capacities=caps, soc_spread=0.001, r_spread=0.05, seed=11,
                      top_balanced=True, temp=25.0, thermal_tau_s=3 * 3600.0)
    load = Profile([(0, 2500.0), (3000, 2500.0), (3060, 5000.0), (4800, 5000.0), (4860, 2500.0)])
    return JkBms(pack, nominal_ah=280.0, cell_noise_mv=1), _inverter(0.0, load)


def _max_cell_at_least(v):
    def trigger(run):
        return max(run.pack.cell_voltages()) >= v
    return trigger


def _at_min(minutes):
    def trigger(run):
        return run.t_s >= minutes * 60.0
    return trigger


def _settings_change(run):
    run.bms.set_settings(cell_ovp_v=3.55, cell_ovpr_v=3.40, rcv_v=3.40, rfv_v=3.35)


def _link_lost(minutes):
    def action(run):
        run.link_down_until_s = run.t_s + minutes * 60.0
    return action


SCENARIOS = {s.name: s for s in (
    Scenario("full-charge", "20 -> 100 % on a sunny day (8 kW PV, 400 W load), runner cell +40 mV at the top",
             6.0, _full_charge_build, float_deadline_h=FLOAT_DEADLINE_H),
    Scenario("cold-morning", "30 %, cells at -5 degC warming to +15 degC over 4 h, PV rising from dawn; the "
             "BMS's own charge UTP is -10 degC, so only the gateway can keep charging out below 0 degC",
             6.0, _cold_build),
    Scenario("deep-discharge", "25 % and no PV, 2.5 kW house load (5 kW for 30 min) drains the pack; one cell "
             "3 % small empties first", 3.0, _deep_discharge_build),
    Scenario("settings-change", "full-charge, and when a cell first reaches 3.40 V the user lowers the BMS's "
             "OVP 3.65 -> 3.55 V, OVPR 3.45 -> 3.40 V, RCV 3.45 -> 3.40 V, RFV 3.375 -> 3.35 V", 6.0,
             _full_charge_build, float_deadline_h=FLOAT_DEADLINE_H,
             events=(("BMS settings changed (OVP 3.55, OVPR 3.40, RCV 3.40, RFV 3.35)",
                      _max_cell_at_least(3.40), _settings_change),)),
    Scenario("link-lost", "full-charge, and 90 min in (mid-charge, at full current) the BMS link is lost for "
             "10 min", 6.0, _full_charge_build, float_deadline_h=FLOAT_DEADLINE_H,
             events=(("BMS link lost for 10 min", _at_min(90), _link_lost(10)),)),
    Scenario("link-lost-stop", "link-lost with link_loss \"stop\": the gateway stops sending, the inverter "
             "keeps its last limits for 60 s", 6.0, _full_charge_build, cfg={"link_loss": "stop"},
             float_deadline_h=FLOAT_DEADLINE_H,
             events=(("BMS link lost for 10 min", _at_min(90), _link_lost(10)),)),
)}


# --------------------------------------------------------- the firmware's BMS read

class PbTriggerReader:
    """The JK-PB FC10 trigger read, as sources/jk_pb.py does it: the request
    bytes, the reply picked out of the bus bytes by jkbms.pb_trigger, the
    55AA frame checked and decoded into the snapshot."""

    def __init__(self, slave):
        self.slave = slave
        buf = bytearray(16)
        self.req = {}
        for reg in (pb.TRIGGER_STATUS, pb.TRIGGER_SETTINGS):
            n = pb.build_trigger(buf, slave, reg)
            self.req[reg] = bytes(buf[:n])
        self.reply = pb.TriggerReply()

    def _read(self, sim, reg, snap):
        data = sim.reply_to(self.req[reg])
        if data is None:
            return False
        r = self.reply
        r.start(self.slave, reg)
        r.feed(data, 0, len(data))
        if not r.poll():
            return False
        J.check_frame(r.frame, J.FRAME_LEN)
        if reg == pb.TRIGGER_STATUS:
            cellinfo.decode(r.frame, 6, J.LAYOUT_JK02_32S, snap)
        else:
            settings.decode(r.frame, snap)
        return True

    def status(self, sim, snap):
        return self._read(sim, pb.TRIGGER_STATUS, snap)

    def settings(self, sim, snap):
        return self._read(sim, pb.TRIGGER_SETTINGS, snap)


class PbFc03Reader:
    """The JK-PB FC03 register-block read, as sources/jk_pb.py does it."""

    def __init__(self, slave):
        self.slave = slave
        self.x = FrameExtractor(rtu.frame_len_at, 512, rtu.MAX_FRAME)
        self.blocks = (pb.BlockImage(pb.STATUS_BASE, cellinfo.NEED_32S),
                       pb.BlockImage(pb.SETTINGS_BASE, settings.BLOCK_BYTES))
        buf = bytearray(16)
        self.reqs = []
        for image in self.blocks:
            reqs = []
            for reg, count in image.plan:
                n = rtu.build_read(buf, slave, reg, count)
                reqs.append(bytes(buf[:n]))
            self.reqs.append(reqs)

    def _block(self, sim, which, snap):
        image = self.blocks[which]
        image.reset()
        for i, req in enumerate(self.reqs[which]):
            data = sim.reply_to(req)
            if data is None:
                return False
            x = self.x
            x.reset()
            x.feed(data, 0, len(data))
            while True:  # sources/jk_pb.py _rtu_reply: a reply (or exception) from our slave, not our echo
                n = x.next_frame()
                if not n:
                    return False
                f = x.frame
                if f[0] == self.slave and (f[1] & 0x7F) == rtu.READ_HOLDING and n != 8:
                    break
            image.store(image.plan[i][0], x.frame, x.frame_len, self.slave)
        if which == 0:
            cellinfo.decode(image.data, 0, J.LAYOUT_PB_FC03, snap)
        else:
            settings.decode(image.data, snap, 0, True)
        return True

    def status(self, sim, snap):
        return self._block(sim, 0, snap)

    def settings(self, sim, snap):
        return self._block(sim, 1, snap)


def _takes(fn, name):
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def complete(snap):
    """sources.base.Source.complete(): live data and the BMS settings."""
    return (snap.have & S.HAVE_FOR_INVERTER) == S.HAVE_FOR_INVERTER and snap.settings_ok == 1


# ------------------------------------------------------------------- the run

def make_config(scenario, overrides=None):
    """app.config defaults + the scenario's keys + overrides, validated the
    way the gateway validates its file; (cfg, messages)."""
    raw = dict(scenario.cfg)
    raw.update(overrides or {})
    messages = []
    return gwconfig.validate(raw, messages), messages


class Run:
    """One scenario run. policy_factory(cfg) builds the controller (default:
    charge.policy.ChargePolicy); trace(row dict) is called every step."""

    def __init__(self, scenario, step_s=1.0, hours=None, cfg_overrides=None, bms_read=None, policy_factory=None,
                 trace=None, physics_dt_s=PHYSICS_DT_S):
        self.scenario = scenario
        self.step_s = float(step_s)
        self.physics_dt_s = float(physics_dt_s)
        self.hours = float(hours if hours is not None else scenario.hours)
        self.cfg, self.cfg_messages = make_config(scenario, cfg_overrides)
        if bms_read:
            self.cfg["bms_read"] = bms_read
        self.bms, self.inverter = scenario.build()
        self.pack = self.bms.pack
        self.snap = S.PackSnapshot()
        self.fresh = Freshness(self.cfg["bms_timeout_s"] * 1000)
        factory = policy_factory or charge_policy.ChargePolicy
        # the controller's timers start on the simulated clock (ChargePolicy(cfg, now)), not on ticks_ms()
        self.policy = factory(self.cfg, now=self.now_ms(0.0)) if _takes(factory, "now") else factory(self.cfg)
        try:
            params = inspect.signature(self.policy.decide).parameters
            self.decide_takes_now = len(params) >= 3
        except (TypeError, ValueError):
            self.decide_takes_now = True
        self.enc = protocols.make(self.cfg)
        slave = self.cfg["bms_address"]
        self.sim = JkBmsSim(self.bms.state(), protocol="jk-pb", address=slave)
        self.reader = (PbFc03Reader if self.cfg["bms_read"] == "fc03" else PbTriggerReader)(slave)
        self.trace = trace
        self.t_s = 0.0
        self.link_down_until_s = -1.0
        self.settings_ms = None
        self.events_fired = []
        self._pending = list(scenario.events)
        self.m = Metrics(self)

    def now_ms(self, t_s=None):
        return ticks_add(TICK_START, int(round((self.t_s if t_s is None else t_s) * 1000)))

    def ctl_state(self):
        """(state name, is absorption, is float), or None without a state machine."""
        ctl = getattr(self.policy, "ctl", None)
        if ctl is None or charge_state is None:
            return None
        st = ctl.state
        names = getattr(charge_state, "NAMES", None)
        name = names[st] if names is not None and 0 <= st < len(names) else str(st)
        return (name, st == getattr(charge_state, "ABSORPTION", object()),
                st == getattr(charge_state, "FLOAT", object()))

    def poll_bms(self, now):
        """One BMS poll of the firmware: True when a complete data set was
        accepted."""
        if self.t_s < self.link_down_until_s:
            self.m.polls_lost += 1
            return False
        self.sim.set_state(self.bms.state(), replace=True)
        snap = self.snap
        try:
            ok = self.reader.status(self.sim, snap)
            due = (not snap.settings_ok or self.settings_ms is None
                   or ticks_diff(now, self.settings_ms) > self.cfg["bms_settings_s"] * 1000)
            if ok and due and self.reader.settings(self.sim, snap):
                self.settings_ms = now
                self.m.settings_reads += 1
        except DecodeError as e:
            self.m.decode_errors.append((self.t_s, str(e)))
            return False
        if not ok:
            self.m.polls_failed += 1
        elif complete(snap):
            self.fresh.data_ok(now, now)
        return ok

    def step(self):
        for ev in list(self._pending):
            label, trigger, action = ev
            if trigger(self):
                action(self)
                self._pending.remove(ev)
                self.events_fired.append((self.t_s, label))
        now = self.now_ms()
        self.poll_bms(now)
        link = self.fresh.state(now)
        if self.decide_takes_now:
            send = self.policy.decide(self.snap, link, now)
        else:
            send = self.policy.decide(self.snap, link)
        frames = None
        if send:
            lim = self.policy.lim
            self.enc.encode(self.snap, lim, lim.flags)
            frames = [(cid, bytes(f)) for cid, f in zip(self.enc.ids, self.enc.frames, strict=True)]
            self.inverter.receive(self.t_s, frames)
        self.m.control(link, frames)
        n = max(1, int(math.ceil(self.step_s / self.physics_dt_s - 1e-9)))
        dt = self.step_s / n
        for _ in range(n):
            req = self.inverter.control(self.t_s, self.pack, dt)
            i = self.bms.step(req, dt)
            self.t_s += dt
            self.m.physics(i, req, dt)
        if self.trace is not None:
            self.trace(self.m.row(link))

    def run(self):
        end = self.hours * 3600.0 - 1e-9
        while self.t_s < end:
            self.step()
        return self.m.summary()


# ------------------------------------------------------------------- metrics

class Metrics:
    def __init__(self, run):
        self.run = run
        self.bms = run.bms
        self.pack = run.pack
        self.soc0 = run.pack.soc()
        self.bms_soc0 = run.bms.soc_percent()
        self.cell_max_v = 0.0
        self.cell_max_t = 0.0
        self.margin_mv = None
        self.margin_t = 0.0
        self.margin_ovp_v = 0.0
        self.cell_min_v = 9.0
        self.charged_wh = 0.0
        self.discharged_wh = 0.0
        self.charged_ah = 0.0
        self.discharged_ah = 0.0
        self.cold_charge_ah = 0.0
        self.cool_charge_max_a = 0.0  # the largest charge current below +5 degC
        self.stale_charge_ah = 0.0  # charge taken while the gateway's link state was STALE
        self.cv_s = 0.0
        self.cv_episodes = []  # [start, end] of inverter CV periods
        self.runner_mv = None  # highest cell - median cell when the highest cell peaked
        self.polls_lost = 0  # no reply: the simulated link outage
        self.polls_failed = 0  # a reply the firmware's reader did not take
        self.settings_reads = 0
        self.decode_errors = []
        self.link = WAIT
        self.link_stale_s = 0.0
        self.frames_sent = 0
        self.steps_silent = 0
        # limits as the inverter decoded them, one entry per change
        self.last = None  # (ccl, dcl, cvl, dvl, request)
        self.ccl_changes = []  # (t_s, old, new, in_absorption)
        self.dcl_changes = []
        self.cvl_changes = []
        self.states = []  # (t_s, name) at every change of controller state
        self.ctl = run.ctl_state() is not None
        self.absorption = []  # [start, end or None]
        self.float_t = None
        self.cur_abs = False
        self.max_cvl_v = 0.0
        self.max_ccl_a = 0.0

    # -- per control step ----------------------------------------------------------
    def in_absorption(self):
        return self.cur_abs

    def control(self, link, frames):
        run = self.run
        t = run.t_s
        self.link = link
        if frames is None:
            self.steps_silent += 1
        else:
            self.frames_sent += 1
            rx = run.inverter.rx
            cur = (rx.ccl_a, rx.dcl_a, rx.cvl_v, rx.dvl_v, rx.request)
            self.max_cvl_v = max(self.max_cvl_v, rx.cvl_v)
            self.max_ccl_a = max(self.max_ccl_a, rx.ccl_a)
            if self.last is not None:
                if cur[0] != self.last[0]:
                    self.ccl_changes.append((t, self.last[0], cur[0], self.cur_abs))
                if cur[1] != self.last[1]:
                    self.dcl_changes.append((t, self.last[1], cur[1]))
                if cur[2] != self.last[2]:
                    self.cvl_changes.append((t, self.last[2], cur[2]))
            self.last = cur
        st = run.ctl_state()
        if st is not None:
            name, is_abs, is_float = st
            if not self.states or self.states[-1][1] != name:
                self.states.append((t, name))
            self._absorption_flag(t, is_abs)
            if is_float and self.float_t is None:
                self.float_t = t

    def _absorption_flag(self, t, on):
        if on and not self.cur_abs:
            self.absorption.append([t, None])
        elif not on and self.cur_abs:
            self.absorption[-1][1] = t
        self.cur_abs = on

    # -- per physics tick ------------------------------------------------------------
    def physics(self, i, req, dt):
        run = self.run
        t = run.t_s
        pack = self.pack
        v = pack.cell_voltages()
        vmax, vmin = max(v), min(v)
        if vmax > self.cell_max_v:
            self.cell_max_v, self.cell_max_t = vmax, t
            sv = sorted(v)
            self.runner_mv = (vmax - sv[len(sv) // 2]) * 1000.0
        self.cell_min_v = min(self.cell_min_v, vmin)
        ovp = self.bms.settings["cell_ovp_v"]
        margin = (ovp - vmax) * 1000.0
        if self.margin_mv is None or margin < self.margin_mv:
            self.margin_mv, self.margin_t, self.margin_ovp_v = margin, t, ovp
        w = sum(v) * i * dt / 3600.0
        if i > 0:
            self.charged_wh += w
            self.charged_ah += i * dt / 3600.0
            if pack.temp_c < 0.0:
                self.cold_charge_ah += i * dt / 3600.0
            if pack.temp_c < 5.0:
                self.cool_charge_max_a = max(self.cool_charge_max_a, i)
            if self.link == STALE:
                self.stale_charge_ah += i * dt / 3600.0
        elif i < 0:
            self.discharged_wh -= w
            self.discharged_ah -= i * dt / 3600.0
        if self.link == STALE:
            self.link_stale_s += dt
        if run.inverter.cv_active:
            self.cv_s += dt
            if self.cv_episodes and t - dt - self.cv_episodes[-1][1] <= CV_GAP_MERGE_S:
                self.cv_episodes[-1][1] = t
            else:
                self.cv_episodes.append([t - dt, t])
            if not self.ctl:
                self._cv_as_absorption(t - dt, True)
        elif not self.ctl and self.cur_abs and t - self.cv_episodes[-1][1] > CV_GAP_MERGE_S:
            self.absorption[-1][1] = self.cv_episodes[-1][1]
            self.cur_abs = False

    def _cv_as_absorption(self, t, on):
        if on and not self.cur_abs:
            self.absorption.append([t, None])
            self.cur_abs = True

    def row(self, link):
        run = self.run
        rx = run.inverter.rx
        v = self.pack.cell_voltages()
        st = run.ctl_state()
        return {"t_s": round(run.t_s, 1), "soc_true_pct": round(100 * self.pack.soc(), 2),
                "soc_bms_pct": run.bms.soc_percent(), "pack_v": round(sum(v), 3),
                "current_a": round(self.pack.current_a, 2), "cell_max_v": round(max(v), 4),
                "cell_min_v": round(min(v), 4), "temp_c": round(self.pack.temp_c, 2),
                "cvl_v": rx.cvl_v, "ccl_a": rx.ccl_a, "dcl_a": rx.dcl_a, "dvl_v": rx.dvl_v,
                "request": rx.request, "link": LINK_NAMES[link], "state": st[0] if st else "",
                "inverter": run.inverter.mode, "charge_fet": int(run.bms.charge_fet),
                "discharge_fet": int(run.bms.discharge_fet), "alarms": run.bms.alarm_word()}

    # -- the summary ---------------------------------------------------------------
    def summary(self):
        run = self.run
        end = run.t_s
        hours = end / 3600.0
        abs_eps = [(a, b if b is not None else end, b is None) for a, b in self.absorption]
        abs_s = sum(b - a for a, b, _ in abs_eps)
        abs_h = abs_s / 3600.0
        in_abs = [c for c in self.ccl_changes if c[3]]
        gap = max(MOVE_GAP_S, 2.0 * run.step_s)
        moves = _moves(self.ccl_changes, gap)
        abs_moves = [m for m in moves if m[3]]
        worst = _worst_window([m[0] for m in abs_moves], 3600.0)
        worst_raw = _worst_window([c[0] for c in in_abs], 3600.0)
        limit_min = run.cfg.get("absorption_max_min", DEFAULT_ABSORPTION_MAX_MIN)
        tol_s = run.step_s + 1.0
        longest = max((b - a for a, b, _ in abs_eps), default=0.0)
        over = [(a, b) for a, b, _ in abs_eps if b - a > limit_min * 60.0 + tol_s]
        trips = dict(self.bms.trips)
        st = run.ctl_state()
        s = {
            "scenario": run.scenario.name,
            "description": run.scenario.description,
            "hours": round(hours, 3),
            "step_s": run.step_s,
            "bms_read": run.cfg["bms_read"],
            "link_loss": charge_policy.link_loss_mode(run.cfg),
            "controller": "%s.%s, %s" % (type(run.policy).__module__, type(run.policy).__name__,
                                         "decide(snap, state, now_ms)" if run.decide_takes_now
                                         else "decide(snap, state) (no now_ms)"),
            "state_machine": self.ctl,
            "final_state": st[0] if st else None,
            "config_messages": run.cfg_messages,
            "events": [{"t_min": round(t / 60.0, 2), "what": w} for t, w in run.events_fired],
            "soc_start_pct": round(100 * self.soc0, 2),
            "soc_end_pct": round(100 * self.pack.soc(), 2),
            "bms_soc_start_pct": self.bms_soc0,
            "bms_soc_end_pct": run.bms.soc_percent(),
            "cell_max_v": round(self.cell_max_v, 4),
            "cell_max_t_min": round(self.cell_max_t / 60.0, 2),
            "ovp_margin_mv": round(self.margin_mv, 1),
            "ovp_margin_t_min": round(self.margin_t / 60.0, 2),
            "ovp_v_at_margin": self.margin_ovp_v,
            "cell_min_v": round(self.cell_min_v, 4),
            "runner_mv_at_peak": None if self.runner_mv is None else round(self.runner_mv, 1),
            "cell_delta_end_mv": round((max(self.pack.cell_voltages()) - min(self.pack.cell_voltages())) * 1000, 1),
            "bms_trips": trips,
            "bms_trips_grouped": self.bms.trips_grouped(),
            "bms_trips_total": self.bms.trips_total(),
            "bms_trip_log": [{"t_min": round(t / 60.0, 2), "kind": k, "detail": d}
                             for t, k, d in self.bms.trip_log[:50]],
            "absorption_source": "controller state" if self.ctl else "inverter CV (no state machine)",
            "time_to_absorption_min": round(abs_eps[0][0] / 60.0, 2) if abs_eps else None,
            "absorption_min": round(abs_s / 60.0, 2),
            "absorption_episodes": [{"start_min": round(a / 60.0, 2), "minutes": round((b - a) / 60.0, 2),
                                     "open_at_end": o} for a, b, o in abs_eps],
            "absorption_longest_min": round(longest / 60.0, 2),
            "absorption_max_min": limit_min,
            "float_reached": self.float_t is not None,
            "time_to_float_min": None if self.float_t is None else round(self.float_t / 60.0, 2),
            "cv_min": round(self.cv_s / 60.0, 2),
            "states": [{"t_min": round(t / 60.0, 2), "state": n} for t, n in self.states[:100]],
            "ccl_changes": len(self.ccl_changes),
            "ccl_changes_per_h": round(len(self.ccl_changes) / hours, 2) if hours else 0.0,
            "ccl_changes_absorption": len(in_abs),
            "ccl_changes_absorption_per_h": round(len(in_abs) / abs_h, 2) if abs_h else 0.0,
            "ccl_changes_absorption_worst_h": worst_raw,
            "ccl_moves": len(moves),
            "ccl_moves_per_h": round(len(moves) / hours, 2) if hours else 0.0,
            "ccl_moves_absorption": len(abs_moves),
            "ccl_moves_absorption_worst_h": worst,
            "ccl_reversals": _reversals([c[2] for c in self.ccl_changes], self.ccl_changes[0][1]
                                        if self.ccl_changes else None),
            "ccl_reversals_absorption": _reversals([c[2] for c in in_abs], in_abs[0][1] if in_abs else None),
            "dcl_changes_per_h": round(len(self.dcl_changes) / hours, 2) if hours else 0.0,
            "cvl_changes": len(self.cvl_changes),
            "max_cvl_v": round(self.max_cvl_v, 2),
            "max_ccl_a": round(self.max_ccl_a, 1),
            "charged_kwh": round(self.charged_wh / 1000.0, 3),
            "discharged_kwh": round(self.discharged_wh / 1000.0, 3),
            "charged_ah": round(self.charged_ah, 2),
            "discharged_ah": round(self.discharged_ah, 2),
            "charge_below_0c_ah": round(self.cold_charge_ah, 4),
            "max_charge_a_below_5c": round(self.cool_charge_max_a, 1),
            "charge_while_stale_ah": round(self.stale_charge_ah, 3),
            "link_stale_min": round(self.link_stale_s / 60.0, 2),
            "bms_polls_lost": self.polls_lost,
            "bms_polls_failed": self.polls_failed,
            "bms_settings_reads": self.settings_reads,
            "decode_errors": len(self.decode_errors),
            "control_steps_without_frames": self.steps_silent,
            "charge_blocked_by_bms_min": round(self.bms.blocked_charge_s / 60.0, 2),
        }
        goals = {
            "no-bms-trips": {"pass": self.bms.trips_total() == 0, "value": self.bms.trips_total(), "limit": 0},
            "ovp-margin": {"pass": self.margin_mv >= OVP_MARGIN_MV, "value": round(self.margin_mv, 1),
                           "limit": ">= %d mV" % OVP_MARGIN_MV},
            "ccl-calm": {"pass": worst <= CCL_CHANGES_PER_HOUR, "value": worst,
                         "limit": "<= %d CCL moves in any 60 min of absorption" % CCL_CHANGES_PER_HOUR},
            "absorption-limit": {"pass": not over, "value": round(longest / 60.0, 2),
                                 "limit": "<= %s min (+ one step)" % limit_min},
            "no-cold-charge": {"pass": self.cold_charge_ah <= 0.0, "value": round(self.cold_charge_ah, 4),
                               "limit": "0 Ah below 0 degC"},
        }
        deadline = run.scenario.float_deadline_h
        if deadline is not None:
            goals["float-in-time"] = {
                "pass": self.float_t is not None and self.float_t <= deadline * 3600.0,
                "value": s["time_to_float_min"], "limit": "float within %g h" % deadline}
        s["goals"] = goals
        s["passed"] = all(g["pass"] for g in goals.values())
        return s


def _moves(changes, gap_s):
    """CCL changes grouped into moves: consecutive changes in the same
    direction at most gap_s apart (one ramp, one step) are one move.
    [(t of the first change, from, to, in absorption)]."""
    out = []
    last_t = None
    for t, old, new, in_abs in changes:
        d = (new > old) - (new < old)
        if out and last_t is not None and t - last_t <= gap_s and d == ((out[-1][2] > out[-1][1])
                                                                       - (out[-1][2] < out[-1][1])):
            first = out[-1]
            out[-1] = (first[0], first[1], new, first[3] or in_abs)
        else:
            out.append((t, old, new, in_abs))
        last_t = t
    return out


def _worst_window(times, width):
    """The most events within any window of width seconds."""
    best = 0
    j = 0
    for i, t in enumerate(times):
        while t - times[j] >= width:
            j += 1
        best = max(best, i - j + 1)
    return best


def _reversals(values, first):
    """Direction reversals of a sequence of changes: first, then values."""
    seq = ([first] if first is not None else []) + list(values)
    n = 0
    prev = 0
    for a, b in zip(seq[:-1], seq[1:], strict=True):
        d = (b > a) - (b < a)
        if d and prev and d != prev:
            n += 1
        if d:
            prev = d
    return n


# -------------------------------------------------------------------- output

def _fmt(v, spec="%.1f", none="-"):
    return none if v is None else spec % v


def text_summary(s):
    g = s["goals"]
    out = ["scenario %s: %s" % (s["scenario"], s["description"]),
           "  %.2f h simulated in %g s steps; controller %s%s; link_loss %s; BMS read %s" % (
               s["hours"], s["step_s"], s["controller"], "" if s["state_machine"] else " (no state machine)",
               s["link_loss"], s["bms_read"])]
    for e in s["events"]:
        out.append("  event at %.1f min: %s" % (e["t_min"], e["what"]))
    trips = ", ".join("%s %d" % (k, s["bms_trips"][k]) for k in KINDS if s["bms_trips"][k]) or "none"
    out += [
        "  SOC %.1f -> %.1f %% (BMS %d -> %d %%); charged %.2f kWh, discharged %.2f kWh" % (
            s["soc_start_pct"], s["soc_end_pct"], s["bms_soc_start_pct"], s["bms_soc_end_pct"], s["charged_kwh"],
            s["discharged_kwh"]),
        "  highest cell %.3f V at %.1f min; smallest margin to OVP %.1f mV (OVP %.2f V, at %.1f min); "
        "lowest cell %.3f V" % (s["cell_max_v"], s["cell_max_t_min"], s["ovp_margin_mv"], s["ovp_v_at_margin"],
                                s["ovp_margin_t_min"], s["cell_min_v"]),
        "  the highest cell at its peak: %s mV over the median cell; cell spread at the end %.1f mV" % (
            _fmt(s["runner_mv_at_peak"]), s["cell_delta_end_mv"]),
        "  BMS trips: %s" % trips,
    ]
    for t in s["bms_trip_log"][:5]:
        out.append("    trip at %.1f min: %s %s" % (t["t_min"], t["kind"], t["detail"]))
    out += [
        "  absorption (%s): first at %s min, %.1f min in all, longest %.1f min (limit %s min); float %s" % (
            s["absorption_source"], _fmt(s["time_to_absorption_min"]), s["absorption_min"],
            s["absorption_longest_min"], s["absorption_max_min"],
            ("at %.1f min" % s["time_to_float_min"]) if s["float_reached"] else "not reached"),
        "  inverter CV %.1f min; CVL up to %.1f V, changed %d times" % (s["cv_min"], s["max_cvl_v"],
                                                                       s["cvl_changes"]),
        "  CCL: %d changes (%.1f/h) in %d moves (%.1f/h; a ramp or a step is one move), %d direction reversals; "
        "in absorption %d changes in %d moves, at most %d moves (%d changes) in 60 min, %d reversals; "
        "DCL %.1f changes/h" % (
            s["ccl_changes"], s["ccl_changes_per_h"], s["ccl_moves"], s["ccl_moves_per_h"], s["ccl_reversals"],
            s["ccl_changes_absorption"], s["ccl_moves_absorption"], s["ccl_moves_absorption_worst_h"],
            s["ccl_changes_absorption_worst_h"], s["ccl_reversals_absorption"], s["dcl_changes_per_h"]),
        "  charge below 0 degC %.3f Ah; largest charge current below +5 degC %.1f A; charge while the link was "
        "STALE %.2f Ah (%.1f min STALE)" % (s["charge_below_0c_ah"], s["max_charge_a_below_5c"],
                                            s["charge_while_stale_ah"], s["link_stale_min"]),
        "  goals: " + ", ".join("%s %s (%s)" % (k, "PASS" if v["pass"] else "FAIL", v["value"])
                                for k, v in g.items()),
        "  => %s" % ("all goals pass" if s["passed"] else "GOALS FAILED: " + ", ".join(
            k for k, v in g.items() if not v["pass"])),
    ]
    return "\n".join(out)


TABLE_COLUMNS = (
    ("scenario", lambda s: s["scenario"]),
    ("max cell V", lambda s: "%.3f" % s["cell_max_v"]),
    ("OVP margin mV", lambda s: "%.0f" % s["ovp_margin_mv"]),
    ("BMS trips", lambda s: ", ".join("%s %d" % (g, n) for g, n in s["bms_trips_grouped"].items() if n) or "0"),
    ("to absorption min", lambda s: _fmt(s["time_to_absorption_min"], "%.0f")),
    ("absorption min", lambda s: "%.0f" % s["absorption_min"]),
    ("float at min", lambda s: _fmt(s["time_to_float_min"], "%.0f", "no")),
    ("CCL changes / moves per h", lambda s: "%.1f / %.1f" % (s["ccl_changes_per_h"], s["ccl_moves_per_h"])),
    ("CCL moves in 60 min of abs.", lambda s: str(s["ccl_moves_absorption_worst_h"])),
    ("CCL reversals", lambda s: str(s["ccl_reversals"])),
    ("DCL chg/h", lambda s: "%.1f" % s["dcl_changes_per_h"]),
    ("kWh in / out", lambda s: "%.2f / %.2f" % (s["charged_kwh"], s["discharged_kwh"])),
    ("Ah < 0 degC", lambda s: "%.2f" % s["charge_below_0c_ah"]),
    ("goals", lambda s: "pass" if s["passed"] else "FAIL: " + ", ".join(
        k for k, v in s["goals"].items() if not v["pass"])),
)


def table(summaries):
    head = [c[0] for c in TABLE_COLUMNS]
    rows = [[f(s) for _, f in TABLE_COLUMNS] for s in summaries]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


# ----------------------------------------------------------------------- CLI

def _setting(text):
    key, eq, value = text.partition("=")
    if not eq or not key:
        raise argparse.ArgumentTypeError("%r is not KEY=VALUE" % text)
    try:
        return key, gwconfig.check(key, gwconfig.parse_value(key, value))
    except ValueError as e:
        raise argparse.ArgumentTypeError("--set %s: %s" % (key, e)) from None


def main(argv=None):
    ap = cli.ArgumentParser(prog="closed_loop.py", description=__doc__.split("\n\n", 1)[0],
                            epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenario", help="scenario name, or all (see --list)")
    ap.add_argument("--list", action="store_true", help="describe the scenarios and exit")
    ap.add_argument("--json", action="store_true", help="print the summary as JSON (a list with --scenario all)")
    ap.add_argument("--hours", type=cli.number(float, 0.01, 240.0), help="simulated hours (default: the scenario's)")
    ap.add_argument("--step-s", type=cli.number(float, 0.1, 60.0), default=1.0,
                    help="control step in seconds: BMS poll, controller and CAN burst (default 1)")
    ap.add_argument("--bms-read", choices=("trigger", "fc03"), help="how the firmware reads the JK-PB "
                    "(default: the config's bms_read)")
    ap.add_argument("--set", dest="sets", type=_setting, action="append", default=[], metavar="KEY=VALUE",
                    help="a gateway config key for the run (repeatable), e.g. link_loss=stop")
    ap.add_argument("--trace", metavar="FILE.jsonl", help="write one JSON line per control step (one scenario)")
    ap.add_argument("-v", "--verbose", action="store_true", help="a traceback if the firmware raises")
    args = ap.parse_args(argv)
    if args.list:
        for s in SCENARIOS.values():
            print("%-16s %4.1f h  %s" % (s.name, s.hours, s.description))
        return 0
    if not args.scenario:
        ap.error("--scenario NAME is required (one of %s, or all)" % ", ".join(SCENARIOS))
    if args.scenario != "all" and args.scenario not in SCENARIOS:
        ap.error("unknown scenario %r (one of %s, or all)" % (args.scenario, ", ".join(SCENARIOS)))
    names = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
    if args.trace and len(names) > 1:
        ap.error("--trace needs a single --scenario")
    overrides = dict(args.sets)
    trace_file = None
    summaries = []
    try:
        if args.trace:
            trace_file = open(args.trace, "w")
        for name in names:
            writer = (lambda row: trace_file.write(json.dumps(row) + "\n")) if trace_file else None
            run = Run(SCENARIOS[name], step_s=args.step_s, hours=args.hours, cfg_overrides=overrides,
                      bms_read=args.bms_read, trace=writer)
            try:
                summaries.append(run.run())
            except Exception as e:  # the firmware raised: say where
                if args.verbose:
                    traceback.print_exc()
                return cli.fail(PROG, "scenario %s, %.0f s simulated: the firmware raised %s: %s" % (
                    name, run.t_s, type(e).__name__, e), 1)
    except OSError as e:
        return cli.fail(PROG, "cannot write the trace: %s" % e)
    finally:
        if trace_file:
            trace_file.close()
    if args.json:
        print(json.dumps(summaries if args.scenario == "all" else summaries[0], indent=1))
    elif len(summaries) > 1:
        print(table(summaries))
    else:
        print(text_summary(summaries[0]))
    return 0 if all(s["passed"] for s in summaries) else 1


if __name__ == "__main__":
    sys.exit(main())
