"""Hypothesis properties of the charge controller (charge/), on the real
decode path's snapshot: each generated case is a sequence of BMS states
(cells, temperatures, alarms, MOSFETs, settings, stale/fresh, cycle gaps),
each held for a number of cycles, and charge_props.Checker checks after every
cycle that

* CCL = 0 outside the charge temperature window, at/above cell OVP, with
  charging off, with blocking alarms, with stale or implausible data;
* DCL = 0 at/below UVP, at/below DVL, outside the discharge window, ...;
* CVL <= cells x OVP always (cells x (OVP - margin) with valid data);
* no 0 -> full jump after a block (hold, then the ramp rate);
* no CVL step below the pack voltage while DCL > 0;

and separately that the frames are fully determined by the inputs and the
state: two gateways fed the same inputs send the same bytes. The same
checker runs on MicroPython in portable/test_charge_invariants.py.
"""
import os
import sys

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "portable"))

import charge_props  # noqa: E402
from charge_props import FLAG_CHOICES, Checker  # noqa: E402

mv = st.integers(2400, 3800)
SETTINGS = dict(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def bms_state(draw):
    base = draw(st.integers(2700, 3700))
    cells = [base + draw(st.integers(-20, 20)) for _ in range(8)]
    if draw(st.booleans()):
        cells[draw(st.integers(0, 7))] = draw(st.one_of(mv, st.integers(0, 5000)))
    ovp = draw(st.integers(3450, 3700))
    uvp = draw(st.integers(2500, 2900))
    return {
        "cells": cells,
        "temp": draw(st.one_of(st.none(), st.integers(-300, 700))),
        "dtemp": draw(st.integers(-30, 30)),
        "mos": draw(st.integers(-100, 1000)),
        "current": draw(st.integers(-200000, 200000)),
        "soc": draw(st.integers(0, 100)),
        "flags": draw(st.sampled_from(FLAG_CHOICES)),
        "cfet": draw(st.sampled_from((1, 1, 1, 0))),
        "dfet": draw(st.sampled_from((1, 1, 1, 0))),
        "cswitch": draw(st.sampled_from((1, 1, 1, 0))),
        "dswitch": draw(st.sampled_from((1, 1, 1, 0))),
        "ovp": ovp,
        "ovpr": draw(st.one_of(st.just(0), st.integers(3300, ovp))),
        "uvp": uvp,
        "uvpr": uvp + draw(st.integers(0, 300)),
        "rcv": draw(st.one_of(st.just(0), st.integers(3300, ovp))),
        "rfv": draw(st.one_of(st.just(0), st.integers(3250, 3400))),
        "utp": draw(st.integers(-250, 50)),
        "otp": draw(st.integers(350, 750)),
        "dotp": draw(st.integers(350, 750)),
        "pack_off": draw(st.sampled_from((0, 0, 0, 3000, -3000))),
    }


episode = st.tuples(bms_state(), st.booleans(), st.sampled_from((1000, 1000, 100, 3000, 8000)),
                    st.integers(1, 60))
config = st.fixed_dictionaries({
    "hold_s": st.sampled_from((0, 5, 30)),
    "release_s": st.sampled_from((0, 20, 300)),
    "ramp_a_s": st.sampled_from((1, 5, 50)),
    "charge_min_c": st.integers(-20, 10),
    "max_charge_a": st.sampled_from((50, 100, 400)),
    "max_discharge_a": st.sampled_from((50, 100, 400)),
    "require_temp_sensor": st.sampled_from(("yes", "no")),
    "auto_cvl": st.sampled_from(("on", "off")),
    "link_loss": st.sampled_from(("zeros", "stop")),
})


def run(cfg, episodes):
    chk = Checker(**cfg)
    for x, stale, dt, repeat in episodes:
        for _ in range(repeat):
            chk.step(x, stale, dt)
    return chk


@settings(**SETTINGS)
@given(config, st.lists(episode, min_size=1, max_size=12))
def test_every_safety_property_holds_on_any_sequence(cfg, episodes):
    run(cfg, episodes)


@settings(**SETTINGS)
@given(st.lists(episode, min_size=1, max_size=8))
def test_frames_are_fully_determined_by_inputs_and_state(episodes):
    a = Checker()
    b = Checker()
    for x, stale, dt, repeat in episodes:
        for _ in range(repeat):
            a.step(x, stale, dt)
            b.step(dict(x), stale, dt)
            assert charge_props.frames_of(a.pol, a.snap) == charge_props.frames_of(b.pol, b.snap)
            la, lb = a.pol.lim, b.pol.lim
            assert (la.charge_reason, la.discharge_reason, la.cvl_reason, a.pol.ctl.state) == \
                   (lb.charge_reason, lb.discharge_reason, lb.cvl_reason, b.pol.ctl.state)


def test_the_properties_catch_a_controller_without_temperature_windows(monkeypatch):
    """The checker can fail: with the window limiter removed, a cold pack
    with otherwise perfect data must be caught."""
    from charge import limiters
    monkeypatch.setattr(limiters.Window, "update", lambda self, *a: False)
    x = {"cells": [3300] * 8, "temp": -90, "dtemp": 0, "mos": 0, "current": 0, "soc": 50, "flags": 0,
         "cfet": 1, "dfet": 1, "cswitch": 1, "dswitch": 1, "ovp": 3650, "ovpr": 3500, "uvp": 2650,
         "uvpr": 2900, "rcv": 3450, "rfv": 3375, "utp": -100, "otp": 500, "dotp": 600, "pack_off": 0}
    try:
        run({"charge_min_c": -10}, [(x, False, 1000, 60)])
    except AssertionError as e:
        assert "CCL" in str(e)
    else:
        raise AssertionError("a cold pack got charge current and the checker did not notice")
