# charge/: the limiters, blocks and plausibility checks of the controller, on
# a real JK-PB pack decoded from captures (8 cells at 3.356 V, 220 Ah, OVP
# 3.650 / OVPR 3.498 / UVP 2.650 V, RCV 3.500 / RFV 3.400 V, 150 A, five
# sensors at 28.6-30.0 degC), through the firmware's one policy on a virtual
# clock -- and the encoder only places what the policy decided. CPython and
# MicroPython.

from fakes import load_pb_pack

from app import config as C
from charge import limits as L
from charge import plausible as P
from charge.policy import ChargePolicy
from pack import flags as F
from pack import snapshot as S
from pack.snapshot import PackSnapshot
from sources.base import FRESH, STALE, WAIT

SETTLE_MS = 60000  # past the 30 s hold and the 5 A/s ramp to 100 A


def cfg_with(**over):
    cfg = C.defaults()
    for k in over:
        cfg[k] = over[k]
    return cfg


def pack():
    snap = PackSnapshot()
    load_pb_pack(snap)
    return snap


def set_cells(snap, mv, runner=None):
    for i in range(snap.cell_count):
        snap.cells[i] = mv
    if runner is not None:
        snap.cells[0] = runner
    snap.cell_stats()
    snap.pack_mv = snap.cell_avg_mv * snap.cell_count


def set_temps(snap, dc):
    for i in range(1, S.TEMP_SLOTS):
        snap.temps[i] = dc


class Run:
    """A policy on a virtual clock."""

    def __init__(self, snap, **over):
        self.snap = snap
        self.pol = ChargePolicy(cfg_with(**over), now=0)
        self.t = 0
        self.send = None

    def step(self, state=FRESH, ms=1000):
        self.t += ms
        self.send = self.pol.decide(self.snap, state, self.t)
        return self.pol.lim

    def run(self, ms, state=FRESH):
        end = self.t + ms
        lim = None
        while self.t < end:
            lim = self.step(state)
        return lim


def settled(snap, **over):
    r = Run(snap, **over)
    return r.run(SETTLE_MS), r


def test_a_healthy_pack_gets_its_limits_and_both_enables():
    snap = pack()
    lim, r = settled(snap)
    assert r.send
    assert lim.ccl_da == 1000 and lim.dcl_da == 1000  # 0.9 x 150 A, capped by the 100 A default
    assert lim.charge_reason == L.USER_MAX and lim.discharge_reason == L.USER_MAX
    assert lim.charge_enable and lim.discharge_enable and lim.flags == 0
    # bulk 3.450 V (the BMS's RCV 3.500 V is not stricter) x 8 cells
    assert lim.cvl_dv == 276 and lim.cvl_reason == L.BULK_V
    assert lim.dvl_dv == (2650 + 200) * 8 // 100
    assert lim.soc_pct == snap.soc_pct == 88


def test_no_data_yet_sends_nothing():
    r = Run(PackSnapshot())
    lim = r.step(WAIT)
    assert not r.send and lim.ccl_da == 0 and lim.dcl_da == 0
    assert lim.charge_reason == L.NO_DATA and not lim.charge_enable and not lim.discharge_enable


def test_no_live_data_or_no_settings_means_zero_limits():
    snap = PackSnapshot()
    snap.settings_ok = 1
    snap.cell_count = 8
    lim, _ = settled(snap)
    assert (lim.ccl_da, lim.dcl_da) == (0, 0) and lim.charge_reason == L.NO_DATA == lim.discharge_reason
    snap = pack()
    snap.settings_ok = 0
    lim, _ = settled(snap)
    assert (lim.ccl_da, lim.dcl_da) == (0, 0) and lim.charge_reason == L.NO_SETTINGS
    assert not lim.charge_enable and not lim.discharge_enable


def test_fet_or_switch_off_blocks_its_direction_only():
    for attr, why in (("charge_fet", L.FET_OFF), ("charge_switch", L.SWITCH_OFF)):
        snap = pack()
        setattr(snap, attr, 0)
        lim, _ = settled(snap)
        assert lim.ccl_da == 0 and lim.charge_reason == why and not lim.charge_enable, attr
        assert lim.dcl_da == 1000 and lim.discharge_enable, attr
    for attr, why in (("discharge_fet", L.FET_OFF), ("discharge_switch", L.SWITCH_OFF)):
        snap = pack()
        setattr(snap, attr, 0)
        lim, _ = settled(snap)
        assert lim.dcl_da == 0 and lim.discharge_reason == why and not lim.discharge_enable, attr
        assert lim.ccl_da == 1000 and lim.charge_enable, attr


def _bms_flags():
    out = []
    for name in dir(F):
        v = getattr(F, name)
        if name.isupper() and isinstance(v, int) and name not in ("LINK_LOST", "IMPLAUSIBLE"):
            out.append((name, v))
    return out


def test_each_blocking_alarm_blocks_exactly_its_directions():
    blocked_both = 0
    for name, flag in _bms_flags():
        snap = pack()
        snap.flags = flag
        lim, _ = settled(snap)
        charge_blocked = bool(flag & L.CHARGE_BLOCKING)
        discharge_blocked = bool(flag & L.DISCHARGE_BLOCKING)
        assert (lim.ccl_da == 0) == charge_blocked, name
        assert (lim.dcl_da == 0) == discharge_blocked, name
        assert (lim.charge_reason == L.ALARM) == charge_blocked, name
        assert (lim.discharge_reason == L.ALARM) == discharge_blocked, name
        assert lim.charge_enable != charge_blocked and lim.discharge_enable != discharge_blocked, name
        if charge_blocked and discharge_blocked:
            blocked_both += 1
    assert blocked_both >= 5  # MOSFET OT, cell count, current sensor, internal comms, temp sensor


def test_the_protection_flags_named_in_the_docs_block():
    for flag in (F.CELL_OV, F.PACK_OV, F.CHARGE_OC, F.CHARGE_SC, F.CHARGE_OT, F.CHARGE_UT, F.MOS_OT):
        assert flag & L.CHARGE_BLOCKING
    for flag in (F.CELL_UV, F.PACK_UV, F.DISCHARGE_OC, F.DISCHARGE_SC, F.DISCHARGE_OT, F.MOS_OT):
        assert flag & L.DISCHARGE_BLOCKING
    for flag in (F.CELL_UV, F.PACK_UV, F.DISCHARGE_OC, F.DISCHARGE_SC, F.DISCHARGE_OT):
        assert not flag & L.CHARGE_BLOCKING  # discharging trips do not stop charging


def test_jk02_alarm_words_map_to_the_neutral_flags():
    assert F.from_jk02(1 << 4) == F.CELL_OV
    assert F.from_jk02(1 << 11) == F.CELL_UV
    assert F.from_jk02((1 << 9) | (1 << 15)) == F.CHARGE_UT | F.DISCHARGE_OT
    assert F.from_jk02(1 << 18) == 0  # "GPS disconnected" has no safety meaning
    snap = pack()
    assert snap.flags == F.from_jk02(snap.alarms)  # the decoder sets both


def test_a_runner_cell_near_ovp_gets_no_charge_current():
    # the case: one cell at 3.640 V, OVP 3.650 V -> 0 A, not 100 A
    snap = pack()
    set_cells(snap, 3400, runner=3640)
    lim, _ = settled(snap)
    assert lim.ccl_da == 0 and lim.charge_reason == L.CELL_TAPER and not lim.charge_enable
    assert lim.dcl_da == 1000


def test_the_charge_taper_steps_down_as_the_highest_cell_rises():
    # LFP bulk 3.450 V: full below bulk, 25 % from bulk, 5 % from bulk + 50 mV,
    # 0 from bulk + 100 mV (between two points the lower value)
    got = []
    for mv in (3440, 3449, 3450, 3499, 3500, 3549, 3550, 3600):
        snap = pack()
        set_cells(snap, 3340, runner=mv)
        lim, _ = settled(snap)
        got.append(lim.ccl_da)
    assert got == [1000, 1000, 250, 250, 50, 50, 0, 0], got


def test_the_taper_is_shifted_below_ovp_when_bulk_is_high():
    snap = pack()
    snap.cell_ovp_mv = 3520  # top of the table (bulk + 50 mV) would pass OVP - 50 mV
    snap.cell_ovpr_mv = 3480
    snap.rcv_mv = 3450
    set_cells(snap, 3300, runner=3420)
    lim, _ = settled(snap)
    assert lim.ccl_da == 0  # shifted by 30 mV: 3.420 V is already the table's 0 point


def test_taper_hysteresis_and_release_delay_keep_the_limit_from_chattering():
    snap = pack()
    set_cells(snap, 3340, runner=3460)
    r = Run(snap)
    assert r.run(SETTLE_MS).ccl_da == 250
    set_cells(snap, 3340, runner=3440)  # 10 mV back below the threshold: not enough
    assert r.run(400000).ccl_da == 250
    set_cells(snap, 3340, runner=3425)  # 25 mV below: more than the 20 mV hysteresis ...
    assert r.run(290000).ccl_da == 250  # ... but only after release_s (300 s)
    assert r.run(30000).ccl_da == 1000
    set_cells(snap, 3340, runner=3460)  # decreases apply at once
    assert r.step().ccl_da == 250


def test_the_discharge_taper_steps_down_as_the_lowest_cell_falls():
    # LFP empty 2.800 V (UVP 2.650 + 50 mV is lower): 0 below 2.900, then
    # 0.5 / 5 / 25 %, full from 3.190 V
    got = []
    for mv in (3200, 3150, 3050, 2950, 2850):
        snap = pack()
        set_cells(snap, 3300, runner=mv)
        lim, _ = settled(snap)
        got.append(lim.dcl_da)
    assert got == [1000, 250, 50, 5, 0], got


def test_highest_cell_at_ovp_and_lowest_at_uvp_block():
    snap = pack()
    snap.cell_max_mv = snap.cell_ovp_mv
    lim, _ = settled(snap)
    assert lim.ccl_da == 0 and lim.charge_reason == L.CELL_LIMIT and lim.dcl_da > 0
    snap = pack()
    snap.cell_min_mv = snap.cell_uvp_mv
    lim, _ = settled(snap)
    assert lim.dcl_da == 0 and lim.discharge_reason == L.CELL_LIMIT and lim.ccl_da > 0


def test_pack_at_dvl_gets_zero_discharge_current_until_it_recovers():
    # DVL = (UVP 2.650 + 0.600 V) x 8 = 26.0 V: above the cell taper's range
    snap = pack()
    set_cells(snap, 3300)
    lim, r = settled(snap, dvl_margin_mv=600)
    assert lim.dvl_dv == 260 and lim.dcl_da == 1000
    set_cells(snap, 3250)
    lim = r.step()
    assert lim.dcl_da == 0 and lim.discharge_reason == L.AT_DVL and not lim.discharge_enable
    set_cells(snap, 3299)  # inside the 50 mV per cell hysteresis
    assert r.run(SETTLE_MS).dcl_da == 0
    set_cells(snap, 3300)
    assert r.run(SETTLE_MS).dcl_da == 1000


def test_pack_ovp_and_uvp_of_a_4e57_bms_block():
    snap = pack()
    snap.pack_ovp_mv = snap.pack_mv
    lim, _ = settled(snap)
    assert lim.ccl_da == 0 and lim.charge_reason == L.PACK_LIMIT
    snap = pack()
    snap.pack_uvp_mv = snap.pack_mv
    lim, _ = settled(snap)
    assert lim.dcl_da == 0 and lim.discharge_reason == L.PACK_LIMIT


def test_a_frozen_pack_gets_no_charge_current():
    # the case: -8 degC, BMS charge UTP -10 degC -> 0 A (LFP: not below 0 degC)
    snap = pack()
    snap.charge_utp_dc = -100
    set_temps(snap, -80)
    lim, _ = settled(snap)
    assert lim.ccl_da == 0 and lim.charge_reason == L.TEMP_WINDOW and not lim.charge_enable
    assert lim.dcl_da > 0  # discharging is allowed down to -20 degC
    # the user may allow charging below 0 degC, but never below the BMS's UTP + margin
    lim, _ = settled(snap, charge_min_c=-15)
    assert lim.ccl_da == 0 and lim.charge_reason == L.TEMP_WINDOW
    set_temps(snap, -50)  # -10 + 2 degC margin + 2 degC hysteresis (the window starts closed)
    lim, _ = settled(snap, charge_min_c=-15)
    assert lim.ccl_da == 110 and lim.charge_reason == L.TEMP_RATE  # 0.05 C x 220 Ah


def test_above_the_bms_charge_otp_no_charge_current():
    snap = pack()
    snap.charge_otp_dc = 450
    set_temps(snap, 440)  # within 2 degC of the BMS's OTP
    lim, _ = settled(snap)
    assert lim.ccl_da == 0 and lim.charge_reason == L.TEMP_WINDOW
    snap.discharge_otp_dc = 450
    lim, _ = settled(snap)
    assert lim.dcl_da == 0 and lim.discharge_reason == L.TEMP_WINDOW


def test_the_c_rate_table_derates_charging_in_the_cold():
    snap = pack()
    got = []
    for dc in (30, 60, 150, 250):
        set_temps(snap, dc)
        lim, _ = settled(snap)
        got.append(lim.ccl_da)
    # 220 Ah: 0.05 C, 0.12 C, 0.30 C, 0.50 C (= 110 A, above the 100 A cap)
    assert got == [110, 264, 660, 1000], got


def test_a_hot_mosfet_blocks_both_directions():
    snap = pack()
    snap.temps[S.T_MOS] = 800  # the default 80 degC limit
    lim, _ = settled(snap)
    assert lim.ccl_da == 0 and lim.dcl_da == 0
    assert lim.charge_reason == L.MOS_TEMP == lim.discharge_reason
    snap.temps[S.T_MOS] = 500
    snap.mos_otp_dc = 520  # the BMS's own OTP is stricter
    lim, _ = settled(snap)
    assert lim.ccl_da == 0 and lim.charge_reason == L.MOS_TEMP


def test_implausible_data_counts_as_no_data_and_is_reported():
    cases = []
    snap = pack()
    snap.cell_count = 32  # 32 reported on an 8-cell pack (settings say 8)
    cases.append((snap, P.CELL_COUNT))
    snap = pack()
    snap.cells[3] = 0  # one cell at 0 V
    snap.cell_stats()
    cases.append((snap, P.CELL_RANGE))
    snap = pack()
    snap.temps[2] = -1000
    cases.append((snap, P.TEMP_RANGE))
    snap = pack()
    snap.temps[1] = 30000
    cases.append((snap, P.TEMP_RANGE))
    snap = pack()
    set_temps(snap, S.NO_TEMP)
    cases.append((snap, P.NO_TEMP))
    snap = pack()
    snap.pack_mv = snap.pack_mv * 2
    cases.append((snap, P.PACK_SUM))
    snap = pack()
    snap.cell_uvpr_mv = snap.cell_uvp_mv  # UVPR must be above UVP
    cases.append((snap, P.SETTINGS))
    snap = pack()
    snap.rfv_mv = snap.rcv_mv + 10
    cases.append((snap, P.SETTINGS))
    snap = pack()
    snap.full_mah = snap.design_mah = 0
    cases.append((snap, P.CAPACITY))
    for snap, code in cases:
        seen = []
        good = pack()
        r = Run(good)
        r.pol.notify = seen.append
        cvl = r.run(SETTLE_MS).cvl_dv
        r.snap = snap  # valid data first, then the implausible set
        lim = r.run(SETTLE_MS)
        assert r.send and lim.cvl_dv == cvl and lim.cvl_reason == L.KEPT, code
        assert (lim.ccl_da, lim.dcl_da) == (0, 0), code
        assert lim.charge_reason == L.IMPLAUSIBLE == lim.discharge_reason, code
        assert not lim.charge_enable and not lim.discharge_enable
        assert lim.flags & F.IMPLAUSIBLE, code
        assert r.pol.implausible == code and seen == [code], (code, seen)


def test_implausible_data_from_the_first_frame_sends_nothing():
    # no valid data set yet: no CVL / DVL to keep, so nothing at all goes out
    snap = pack()
    snap.cell_count = 32
    lim, r = settled(snap)
    assert not r.send and lim.ccl_da == 0 and lim.charge_reason == L.IMPLAUSIBLE
    assert r.pol.implausible == P.CELL_COUNT
    r.snap = pack()
    r.step()
    assert r.send


def test_without_a_temperature_sensor_the_user_may_accept_the_risk():
    snap = pack()
    set_temps(snap, S.NO_TEMP)
    lim, _ = settled(snap, require_temp_sensor="no")
    assert lim.ccl_da == 1000 and lim.dcl_da == 1000


def test_stale_data_zeros_policy_zeroes_both_limits_and_raises_link_lost():
    snap = pack()
    lim, r = settled(snap)
    cvl = lim.cvl_dv
    lim = r.step(STALE)
    assert r.send and r.pol.link_lost and not r.pol.stopped
    assert (lim.ccl_da, lim.dcl_da) == (0, 0)
    assert lim.charge_reason == L.STALE == lim.discharge_reason
    assert not lim.charge_enable and not lim.discharge_enable
    assert lim.flags & F.LINK_LOST and lim.cvl_dv == cvl and lim.cvl_reason == L.KEPT
    lim = r.step(FRESH)
    assert not r.pol.link_lost and not lim.flags & F.LINK_LOST
    assert lim.ccl_da == 0 and lim.charge_reason == L.HOLD  # hold after the block
    assert r.run(SETTLE_MS).ccl_da == 1000


def test_stale_data_stop_policy_sends_nothing():
    snap = pack()
    lim, r = settled(snap, link_loss="stop")
    r.step(STALE)
    assert not r.send and r.pol.stopped and r.pol.lim.ccl_da == 0 and r.pol.lim.dcl_da == 0
    r.step(FRESH)
    assert r.send and not r.pol.stopped


def test_hold_then_ramp_after_a_block():
    snap = pack()
    lim, r = settled(snap)
    snap.charge_fet = 0
    assert r.step().ccl_da == 0
    snap.charge_fet = 1
    seen = []
    for _ in range(29):
        seen.append(r.step().ccl_da)
    assert max(seen) == 0  # 30 s hold at 0
    lim = r.step()
    assert lim.charge_reason in (L.HOLD, L.RAMP)
    prev = 0
    for _ in range(30):
        cur = r.step().ccl_da
        assert 0 <= cur - prev <= 50  # at most 5 A per 1 s cycle
        prev = cur
    assert prev == 1000


def test_user_caps_limit_the_current():
    snap = pack()
    lim, _ = settled(snap, max_charge_a=20, max_discharge_a=0)
    assert lim.ccl_da == 200 and lim.dcl_da == 0 and not lim.discharge_enable


def test_cvl_is_capped_at_ovp_minus_margin_and_by_ovpr():
    snap = pack()
    snap.cell_ovpr_mv = 0  # a BMS without OVPR
    snap.rcv_mv = 0
    lim, _ = settled(snap, bulk_cell_mv=3650)
    assert lim.cvl_dv * 100 <= (snap.cell_ovp_mv - 50) * 8
    assert lim.cvl_dv == (3650 - 50) * 8 // 100
    snap = pack()
    snap.rcv_mv = 0
    snap.cell_ovpr_mv = 3420  # OVPR below bulk: the cap
    lim, _ = settled(snap)
    assert lim.cvl_dv == 3420 * 8 // 100


def test_a_stricter_bms_rcv_lowers_the_bulk_voltage():
    snap = pack()
    snap.rcv_mv = 3400
    lim, _ = settled(snap)
    assert lim.cvl_dv == 3400 * 8 // 100


def test_a_settings_change_ramps_cvl_down_instead_of_stepping_below_the_pack():
    snap = pack()
    set_cells(snap, 3440)  # pack 27.52 V, CVL 27.60 V
    lim, r = settled(snap)
    assert lim.cvl_dv == 276
    snap.rcv_mv = 3350  # new RCV / RFV: CVL target 26.80 V, below the pack
    snap.rfv_mv = 3300
    lim = r.step()
    assert lim.cvl_dv * 100 >= snap.pack_mv - 100 and lim.cvl_reason == L.SLEW
    lim = r.run(60000)  # 2 mV per cell per minute below the pack voltage
    assert snap.pack_mv - 8 * 2 - 100 <= lim.cvl_dv * 100 < snap.pack_mv
    # with discharging not allowed nothing can be pushed into the grid: at once
    snap.discharge_fet = 0
    assert r.step().cvl_dv == 268


def test_soc_100_only_after_absorption():
    snap = pack()
    snap.soc_pct = 100
    lim, r = settled(snap)
    assert lim.soc_pct == 99
    r.pol.ctl.state = 3  # FLOAT
    assert r.step().soc_pct == 100


def test_force_charge_with_hysteresis():
    snap = pack()
    snap.soc_pct = 10
    lim, r = settled(snap, force_charge_soc=10, force_charge_hyst=5)
    assert lim.force_charge
    snap.soc_pct = 14
    assert r.step().force_charge
    snap.soc_pct = 15
    assert not r.step().force_charge
    snap.soc_pct = 11
    assert not r.step().force_charge
    snap.charge_fet = 0
    snap.soc_pct = 5
    assert not r.step().force_charge  # no request while charging is not possible
    lim, r = settled(snap)
    assert not lim.force_charge  # off by default


def test_parameters_apply_at_run_time():
    snap = pack()
    lim, r = settled(snap)
    assert lim.ccl_da == 1000
    r.pol.apply(cfg_with(max_charge_a=40))
    assert r.step().ccl_da == 400


def test_the_encoder_places_the_policy_values_and_decides_nothing():
    import protocols
    snap = pack()
    cfg = C.defaults()
    enc = protocols.make(cfg)
    lim = L.Limits()
    lim.cvl_dv, lim.ccl_da, lim.dcl_da, lim.dvl_dv = 552, 123, 45, 464
    lim.charge_enable = False  # contradicts ccl > 0 on purpose: the encoder must not "fix" it
    lim.discharge_enable = True
    lim.force_charge = True
    lim.soc_pct = 42
    enc.encode(snap, lim, F.LINK_LOST)
    f = enc.frames
    assert bytes(f[1]) == bytes((552 & 0xFF, 552 >> 8, 123, 0, 45, 0, 464 & 0xFF, 464 >> 8))
    assert f[2][0] == 42  # the shaped SOC, not the BMS's
    assert f[5][0] == 0x40 | 0x10  # discharge enable + force charge, as decided
    assert f[4][1] & 0x08 and f[4][3] & 0x08  # LINK_LOST -> system error + communication failure
    enc.encode(snap, lim, F.IMPLAUSIBLE)
    assert f[4][1] & 0x08 and not f[4][3] & 0x08  # implausible -> system error only


def test_0x356_never_reports_the_mosfet_as_the_cells_temperature():
    import protocols
    snap = pack()
    set_temps(snap, S.NO_TEMP)
    snap.temps[S.T_MOS] = 450
    enc = protocols.make(C.defaults())
    enc.encode(snap, L.Limits(), 0)
    assert enc.frames[3][4] == 0 and enc.frames[3][5] == 0
