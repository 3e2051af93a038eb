"""Hypothesis properties of charge.battery
(docs/charge-control.md "Several packs"), on 2..16 real JK-PB snapshots
(host_tests/portable/test_charge_battery FakePack) with random limits,
capacities, currents and settings:

* the aggregate CCL / DCL input never lets a pack pass its own limit when the
  current splits as measured, and is never above the sum of the limits;
* the CVL cap of the aggregate is at or below every pack's own cap;
* a blocking alarm, a MOSFET or a switch off in any one pack zeroes that
  direction in the policy's very next decision;
* one online pack alone: the aggregate is that pack.
"""
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_charge_battery import FakePack, cfg_with

from charge import limits as L
from charge.battery import P_ONLINE, Battery
from charge.limiters import cvl_cap_mv
from charge.policy import ChargePolicy
from sources.base import FRESH

SETTINGS = dict(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _bits(mask):
    return [1 << b for b in range(30) if mask & (1 << b)]


CHARGE_BITS = _bits(L.CHARGE_BLOCKING)
DISCHARGE_BITS = _bits(L.DISCHARGE_BLOCKING)


def build(n, cfg=None):
    bat = Battery(cfg or cfg_with(), 0)
    packs = [FakePack("p%d" % i) for i in range(n)]
    for p in packs:
        bat.add(p)
    return bat, packs


def poll_all(bat, packs, t, silent=()):
    for i, p in enumerate(packs):
        if i not in silent:
            p.poll(t)
    bat.update(t)


pack_case = st.fixed_dictionaries({
    "charge": st.integers(0, 400000),
    "discharge": st.integers(0, 400000),
    "full": st.one_of(st.just(0), st.integers(5000, 600000)),
    "design": st.one_of(st.just(0), st.integers(5000, 600000)),
    "current": st.one_of(st.just(0), st.integers(-250000, 250000), st.integers(-3000, 3000)),
})


@settings(**SETTINGS)
@given(st.lists(pack_case, min_size=2, max_size=16))
def test_no_pack_passes_its_own_limit_and_never_above_the_sum(cases):
    bat, packs = build(len(cases))
    for p, c in zip(packs, cases, strict=True):
        s = p.snap
        s.max_charge_ma = c["charge"]
        s.max_discharge_ma = c["discharge"]
        s.full_mah = c["full"]
        s.design_mah = c["design"]
        s.current_ma = c["current"]
    poll_all(bat, packs, 1000)
    assert bat.online == len(cases)
    a = bat.snap
    amps = [abs(c["current"]) for c in cases]
    tot = sum(amps)
    for agg, key, who in ((a.max_charge_ma, "charge", bat.ccl_pack), (a.max_discharge_ma, "discharge", bat.dcl_pack)):
        limits = [c[key] for c in cases]
        assert 0 <= agg <= sum(limits)
        assert 0 <= who < len(cases)
        if tot >= 2000:
            for k in range(len(cases)):
                # pack k's part of the aggregate current, split as measured
                assert amps[k] * agg <= limits[k] * tot, (k, agg, limits, amps)
        # the capacity split is honoured as well
        caps = [c["full"] or c["design"] for c in cases]
        if all(x >= 100 for x in caps):
            w = [x // 100 for x in caps]
            for k in range(len(cases)):
                assert w[k] * agg <= limits[k] * sum(w)


settings_case = st.fixed_dictionaries({
    "ovp": st.integers(3450, 3700),
    "ovpr": st.one_of(st.just(0), st.integers(3300, 3450)),
    "pack_ovp": st.one_of(st.just(0), st.integers(26000, 30000)),
})


@settings(**SETTINGS)
@given(st.lists(settings_case, min_size=2, max_size=16), st.integers(20, 300))
def test_the_cvl_cap_is_at_or_below_every_packs_own(cases, margin):
    bat, packs = build(len(cases), cfg_with(ovp_margin_mv=margin))
    for p, c in zip(packs, cases, strict=True):
        p.snap.cell_ovp_mv = c["ovp"]
        p.snap.cell_ovpr_mv = c["ovpr"]
        p.snap.pack_ovp_mv = c["pack_ovp"]
    poll_all(bat, packs, 1000)
    cap = cvl_cap_mv(bat.snap, margin, 8)
    own = [cvl_cap_mv(p.snap, margin, 8) for p in packs]
    assert cap <= min(own)
    # cvl_pack names a pack with the lowest per-cell cap (OVP - margin, OVPR)
    per_cell = [min(c["ovp"] - margin, c["ovpr"]) if 0 < c["ovpr"] < c["ovp"] - margin else c["ovp"] - margin
                for c in cases]
    assert per_cell[bat.cvl_pack] == min(per_cell)


block = st.one_of(
    st.tuples(st.just("charge"), st.sampled_from(CHARGE_BITS), st.none()),
    st.tuples(st.just("discharge"), st.sampled_from(DISCHARGE_BITS), st.none()),
    st.tuples(st.sampled_from(("charge", "discharge")), st.just(0), st.sampled_from(("fet", "switch"))),
)


@settings(**dict(SETTINGS, max_examples=60))
@given(st.integers(2, 16), st.data(), block)
def test_a_block_in_any_pack_zeroes_that_direction(n, data, blk):
    cfg = cfg_with(hold_s=0, max_charge_a=1000, max_discharge_a=1000)
    bat, packs = build(n, cfg)
    for p in packs:
        p.snap.current_ma = data.draw(st.integers(-5000, 5000))
    pol = ChargePolicy(cfg, now=0)
    t = 1000
    for _ in range(3):  # healthy: both directions up
        t += 1000
        poll_all(bat, packs, t)
        pol.decide(bat.snap, bat.state(t), t)
    assert pol.lim.ccl_da > 0 and pol.lim.dcl_da > 0
    side, bit, what = blk
    s = packs[data.draw(st.integers(0, n - 1))].snap
    if bit:
        s.flags |= bit
    else:
        setattr(s, ("charge_" if side == "charge" else "discharge_") + what, 0)
    t += 1000
    poll_all(bat, packs, t)
    pol.decide(bat.snap, bat.state(t), t)
    lim = pol.lim
    if side == "charge":
        assert lim.ccl_da == 0 and not lim.charge_enable
    else:
        assert lim.dcl_da == 0 and not lim.discharge_enable


FIELDS = ("pack_mv", "current_ma", "soc_pct", "soh_pct", "remaining_mah", "full_mah", "design_mah", "cycles",
          "runtime_s", "cell_count", "cell_min_mv", "cell_max_mv", "cell_min_idx", "cell_max_idx", "cell_avg_mv",
          "cell_delta_mv", "flags", "alarms", "charge_fet", "discharge_fet", "charge_switch", "discharge_switch",
          "cell_ovp_mv", "cell_ovpr_mv", "cell_uvp_mv", "cell_uvpr_mv", "rcv_mv", "rfv_mv", "max_charge_ma",
          "max_discharge_ma", "charge_otp_dc", "charge_utp_dc", "discharge_otp_dc", "discharge_utp_dc",
          "mos_otp_dc", "pack_ovp_mv", "pack_uvp_mv", "heating", "balancing", "have")


@settings(**SETTINGS)
@given(st.integers(2, 16), st.data())
def test_one_online_pack_is_that_pack(n, data):
    bat, packs = build(n)
    k = data.draw(st.integers(0, n - 1))
    s = packs[k].snap
    cells = [data.draw(st.integers(2500, 3600)) for _ in range(8)]
    for j, v in enumerate(cells):
        s.cells[j] = v
    s.cell_stats()
    s.pack_mv = data.draw(st.integers(20000, 30000))
    s.current_ma = data.draw(st.integers(-300000, 300000))
    s.soc_pct = data.draw(st.integers(0, 100))
    s.soh_pct = data.draw(st.integers(0, 100))
    s.full_mah = data.draw(st.integers(0, 600000))
    s.max_charge_ma = data.draw(st.integers(0, 400000))
    s.max_discharge_ma = data.draw(st.integers(0, 400000))
    s.flags = data.draw(st.integers(0, (1 << 21) - 1))
    s.cell_ovpr_mv = data.draw(st.one_of(st.just(0), st.integers(3300, 3600)))
    s.rcv_mv = data.draw(st.one_of(st.just(0), st.integers(3300, 3600)))
    s.pack_ovp_mv = data.draw(st.one_of(st.just(0), st.integers(26000, 30000)))
    s.pack_uvp_mv = data.draw(st.one_of(st.just(0), st.integers(18000, 22000)))
    s.heating = data.draw(st.integers(0, 1))
    s.balancing = data.draw(st.integers(0, 2))
    poll_all(bat, packs, 1000, silent=[i for i in range(n) if i != k])
    assert bat.online == 1 and bat.state_of(k) == P_ONLINE and bat.state(1000) == FRESH
    a = bat.snap
    for name in FIELDS:
        assert getattr(a, name) == getattr(s, name), name
    assert list(a.cells[:8]) == cells and a.modules == 1 and a.spread_mv == 0
    assert bat.cvl_pack == bat.ccl_pack == bat.dcl_pack == bat.cell_min_pack == bat.cell_max_pack == k
