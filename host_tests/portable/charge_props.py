# The safety properties of charge/ as one checker, shared by the portable
# random walk (test_charge_invariants.py: CPython, unix and webassembly
# MicroPython) and the hypothesis properties (cpython/test_charge_properties.py).
# Each property is written from the rule in docs/charge-control.md, not
# from the code: an input, the limit the rule allows, and the check.

from fakes import load_pb_pack

from app import config as C
from charge import plausible as P
from charge.policy import ChargePolicy
from pack import flags as F
from pack import snapshot as S
from pack.snapshot import PackSnapshot
from sources.base import FRESH, STALE

CELLS = 8
FLAG_CHOICES = (0, 0, 0, 0, F.CELL_OV, F.CELL_UV, F.CHARGE_OT, F.CHARGE_UT, F.DISCHARGE_OT, F.MOS_OT,
                F.CHARGE_OC, F.DISCHARGE_SC, F.BATTERY_OT_WARN, F.DISCHARGE_UT, F.TEMP_SENSOR)


def base_pack():
    snap = PackSnapshot()
    load_pb_pack(snap)
    return snap


def apply_inputs(snap, x):
    """x: a dict of raw inputs (ints) -> snap. Keys: cells (list of 8 mV),
    temp (dC or None), dtemp, mos, current, soc, flags, cfet, dfet, cswitch,
    dswitch, ovp, ovpr, uvp, uvpr, rcv, rfv, utp, otp, dotp, pack_off."""
    for i in range(CELLS):
        snap.cells[i] = x["cells"][i]
    snap.cell_stats()
    snap.pack_mv = snap.cell_avg_mv * CELLS + x["pack_off"]
    t = x["temp"]
    for i in range(1, S.TEMP_SLOTS):
        snap.temps[i] = S.NO_TEMP if t is None else t + (i - 1) * x["dtemp"]
    snap.temps[S.T_MOS] = x["mos"]
    snap.current_ma = x["current"]
    snap.soc_pct = x["soc"]
    snap.flags = x["flags"]
    snap.charge_fet = x["cfet"]
    snap.discharge_fet = x["dfet"]
    snap.charge_switch = x["cswitch"]
    snap.discharge_switch = x["dswitch"]
    snap.cell_ovp_mv = x["ovp"]
    snap.cell_ovpr_mv = x["ovpr"]
    snap.cell_uvp_mv = x["uvp"]
    snap.cell_uvpr_mv = x["uvpr"]
    snap.rcv_mv = x["rcv"]
    snap.rfv_mv = x["rfv"]
    snap.charge_utp_dc = x["utp"]
    snap.charge_otp_dc = x["otp"]
    snap.discharge_otp_dc = x["dotp"]


def battery_temps(snap):
    ts = [snap.temps[i] for i in range(1, S.TEMP_SLOTS) if snap.temps[i] != S.NO_TEMP]
    return (min(ts), max(ts)) if ts else (None, None)


class Checker:
    """Runs a policy over a sequence of (inputs, link state, dt) steps and
    checks every property after each step."""

    def __init__(self, **over):
        cfg = C.defaults()
        for k in over:
            cfg[k] = over[k]
        self.cfg = cfg
        self.pol = ChargePolicy(cfg, now=0)
        self.snap = base_pack()
        self.t = 0
        self.prev_ccl = 0
        self.prev_dcl = 0
        self.prev_cvl = None
        self.last_ccl_block = 0  # time of the last cycle whose CCL had to be 0
        self.last_dcl_block = 0
        self.steps = 0

    def step(self, x, stale, dt):
        snap = self.snap
        apply_inputs(snap, x)
        self.t += dt
        state = STALE if stale else FRESH
        self.pol.decide(snap, state, self.t)
        self.check(x, stale, dt)
        self.steps += 1

    def check(self, x, stale, dt):
        pol = self.pol
        lim = pol.lim
        snap = self.snap
        cfg = self.cfg
        ccl = lim.ccl_da * 100
        dcl = lim.dcl_da * 100
        implausible = pol.implausible != P.OK
        invalid = stale or implausible
        lo_t, hi_t = battery_temps(snap)
        margin = cfg["temp_margin_c"] * 10
        ctx = (self.steps, x, stale)

        # CVL never above cells x OVP (and never above cells x (OVP - margin))
        assert lim.cvl_dv * 100 <= CELLS * snap.cell_ovp_mv, ctx
        if not invalid:
            assert lim.cvl_dv * 100 <= CELLS * (snap.cell_ovp_mv - cfg["ovp_margin_mv"]), ctx

        # the enable bits never claim more than the limits
        assert not lim.charge_enable or ccl > 0, ctx
        assert not lim.discharge_enable or dcl > 0, ctx

        # CCL = 0: stale or implausible data, charging off, blocking alarms,
        # a cell or the pack at OVP, outside the charge temperature window
        must_block_charge = (
            invalid or not snap.charge_fet or not snap.charge_switch
            or snap.flags & (F.CELL_OV | F.PACK_OV | F.CHARGE_OT | F.CHARGE_UT | F.MOS_OT | F.CHARGE_OC
                             | F.CHARGE_SC | F.TEMP_SENSOR)
            or snap.cell_max_mv >= snap.cell_ovp_mv)
        if lo_t is not None:
            lo = max(cfg["charge_min_c"] * 10, snap.charge_utp_dc + margin)
            hi = min(cfg["charge_max_c"] * 10, snap.charge_otp_dc - margin)
            if lo_t < lo or hi_t > hi:
                must_block_charge = True
        elif cfg["require_temp_sensor"] == "yes":
            must_block_charge = True
        if must_block_charge:
            assert ccl == 0, ("CCL", ctx)
            self.last_ccl_block = self.t

        # DCL = 0: stale or implausible data, discharging off, blocking
        # alarms, a cell at UVP, the pack at DVL, outside the discharge window
        dvl_mv = (snap.cell_uvp_mv + cfg["dvl_margin_mv"]) * CELLS
        must_block_discharge = (
            invalid or not snap.discharge_fet or not snap.discharge_switch
            or snap.flags & (F.CELL_UV | F.PACK_UV | F.DISCHARGE_OT | F.MOS_OT | F.DISCHARGE_OC
                             | F.DISCHARGE_SC | F.TEMP_SENSOR)
            or snap.cell_min_mv <= snap.cell_uvp_mv or snap.pack_mv <= dvl_mv)
        if lo_t is not None:
            lo = cfg["discharge_min_c"] * 10
            if snap.discharge_utp_dc != S.NO_TEMP:
                lo = max(lo, snap.discharge_utp_dc + margin)
            hi = min(cfg["discharge_max_c"] * 10, snap.discharge_otp_dc - margin)
            if lo_t < lo or hi_t > hi:
                must_block_discharge = True
        elif cfg["require_temp_sensor"] == "yes":
            must_block_discharge = True
        if must_block_discharge:
            assert dcl == 0, ("DCL", ctx)
            self.last_dcl_block = self.t

        # hold and ramp: after a block, 0 for hold_s, then at most ramp_a_s
        hold = cfg["hold_s"] * 1000
        rate = cfg["ramp_a_s"] * 1000
        for cur, prev, blocked_at in ((ccl, self.prev_ccl, self.last_ccl_block),
                                      (dcl, self.prev_dcl, self.last_dcl_block)):
            if cur > 0:
                assert self.t - blocked_at >= hold, ("no hold after a block", ctx)
            if cur > prev:
                # the ramp: no more than rate x dt (+ 0.1 A rounding), dt capped at 5 s
                assert cur - prev <= rate * min(dt, 5000) // 1000 + 100, ("jump", prev, cur, ctx)

        # CVL: no step below the pack voltage while discharging is allowed
        # (only the ramp of cvl_down_mv_min, or the hard OVP cap)
        cvl = lim.cvl_dv * 100
        if self.prev_cvl is not None and dcl > 0 and cvl < snap.pack_mv - 100:
            cap = CELLS * min(snap.cell_ovp_mv - cfg["ovp_margin_mv"],
                              snap.cell_ovpr_mv if snap.cell_ovpr_mv else 99999)
            if cvl < cap - 100:
                step = cfg["cvl_down_mv_min"] * CELLS * min(dt, 5000) // 60000 + 100
                assert self.prev_cvl - cvl <= step, ("CVL step below the pack", self.prev_cvl, cvl, ctx)
        self.prev_ccl = ccl
        self.prev_dcl = dcl
        self.prev_cvl = cvl


def frames_of(pol, snap):
    """The Pylontech frame set for the policy's last decision."""
    import protocols
    enc = protocols.make(pol.cfg)
    lim = pol.lim
    enc.encode(snap, lim, lim.flags)
    return [bytes(f) for f in enc.frames]
