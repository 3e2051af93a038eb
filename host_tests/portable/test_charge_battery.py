# charge.battery: several packs as one battery (docs/charge-control.md
# "Several packs"). Each fake pack is a real JK-PB snapshot decoded from the
# captures (8 cells at 3.356 V, 220 Ah, OVP 3.650 / OVPR 3.498 / UVP 2.650 V,
# 150 A, 17.8 A charging) with a real Freshness, then moved by the test; the
# aggregate goes through the firmware's one policy on a virtual clock.
# CPython and MicroPython (the heap-lock checks are no-ops on CPython).

# charge.policy first: the unix port compiles it from source, which fits its
# capped heap only before the heap is fragmented
from charge.policy import ChargePolicy  # noqa: I001

from fixtures import find_frame, unhex
from mpcompat import IS_MICROPYTHON, bytes_allocated, run_locked

from app import config as C
from charge import battery as B
from charge import limits as L
from charge import plausible as P
from charge.battery import Battery
from charge.limiters import battery_temps, cvl_cap_mv
from charge.ramp import HOLDING, NORMAL, Ramp
from jkbms import cellinfo, settings
from jkbms import frame as J
from pack import flags as F
from pack import snapshot as S
from pack.snapshot import PackSnapshot
from sources.base import FRESH, STALE, WAIT, Freshness

TIMEOUT_MS = 5000
_RAW = {}


def _raw():
    if not _RAW:
        _RAW["set"] = unhex(find_frame("rs485_pb_settings_response_with_ack_mpp")["hex"])[:300]
        _RAW["cell"] = unhex(find_frame("rs485_pb_status_response_with_ack_mpp")["hex"])[:300]
    return _RAW


class FakePack:
    """A source as the Battery sees it: name, snap, fresh."""

    def __init__(self, name):
        self.name = name
        self.snap = PackSnapshot()
        self.fresh = Freshness(TIMEOUT_MS)
        self.read_settings()
        cellinfo.decode(_raw()["cell"], 6, J.LAYOUT_JK02_32S, self.snap)

    def read_settings(self):
        settings.decode(_raw()["set"], self.snap)

    def poll(self, now):
        # as Source.accepted(): only a complete data set (live + settings) is fresh
        s = self.snap
        if (s.have & S.HAVE_FOR_INVERTER) == S.HAVE_FOR_INVERTER and s.settings_ok == 1:
            self.fresh.data_ok(now)


def cfg_with(**over):
    cfg = C.defaults()
    for k in over:
        cfg[k] = over[k]
    return cfg


class Rig:
    """n packs in a Battery, a policy on the aggregate, a virtual clock."""

    def __init__(self, n, **over):
        self.cfg = cfg_with(**over)
        self.bat = Battery(self.cfg, 0)
        self.packs = []
        self.events = []  # pack_notify calls
        self.changes = []  # notify calls
        self.bat.pack_notify = self._pack_event
        self.bat.notify = self._event
        for i in range(n):
            p = FakePack("p%d" % i)
            self.packs.append(p)
            assert self.bat.add(p) == i
        self.pol = ChargePolicy(self.cfg, now=0)
        self.t = 1000

    def _pack_event(self, i, old, new):
        self.events.append((i, old, new))

    def _event(self, old, new):
        self.changes.append((old, new))

    def cycle(self, silent=(), ms=1000):
        """One poll cycle: every pack not in `silent` answers, update(),
        then one CAN burst; returns the policy's limits."""
        self.t += ms
        for i in range(len(self.packs)):
            if i not in silent:
                self.packs[i].poll(self.t)
        self.bat.update(self.t)
        return self.burst()

    def burst(self):
        self.pol.decide(self.bat.snap, self.bat.state(self.t), self.t)
        return self.pol.lim

    def run(self, ms, silent=()):
        end = self.t + ms
        while self.t < end:
            self.cycle(silent)
        return self.pol.lim


def set_cells(snap, values):
    for j in range(len(values)):
        snap.cells[j] = values[j]
    snap.cell_count = len(values)
    snap.cell_stats()
    snap.pack_mv = snap.cell_avg_mv * snap.cell_count


def online_rig(n, **over):
    r = Rig(n, **over)
    r.cycle()
    for i in range(n):
        assert r.bat.state_of(i) == B.P_ONLINE, (i, r.bat.why_of(i))
    return r


# --- the aggregate ------------------------------------------------------


def test_sums_means_and_capacity_weights():
    r = Rig(3)
    mv = (26800, 26852, 26950)
    ma = (10000, 20000, -5000)
    cap = (100000, 200000, 300000)
    soc = (10, 50, 90)
    soh = (100, 90, 80)
    for i in range(3):
        s = r.packs[i].snap
        s.pack_mv = mv[i]
        s.current_ma = ma[i]
        s.full_mah = cap[i]
        s.design_mah = cap[i] + 10000
        s.remaining_mah = cap[i] * soc[i] // 100
        s.soc_pct = soc[i]
        s.soh_pct = soh[i]
        s.cycles = 100 + 50 * i
        s.runtime_s = 1000 - i
    r.cycle()
    a = r.bat.snap
    assert r.bat.online == 3 and a.modules == 3
    assert a.pack_mv == (26800 + 26852 + 26950 + 1) // 3
    assert r.bat.spread_mv == a.spread_mv == 150
    assert a.current_ma == 25000
    # capacity-weighted: (10 x 100 + 50 x 200 + 90 x 300) / 600 = 63.3
    assert a.soc_pct == 63
    assert a.soh_pct == (100 * 100 + 90 * 200 + 80 * 300 + 300) // 600
    assert a.full_mah == 600000 and a.design_mah == 630000
    assert a.remaining_mah == 10000 + 100000 + 270000
    assert a.cycles == 200 and a.runtime_s == 1000
    assert a.cell_count == a.set_cell_count == 8 and a.settings_ok == 1
    n = a.updates
    r.cycle()
    assert a.updates == n + 1  # one per rebuild


def test_soc_without_a_capacity_is_the_plain_mean():
    r = Rig(2)
    r.packs[0].snap.soc_pct = 20
    r.packs[1].snap.soc_pct = 60
    r.packs[1].snap.full_mah = r.packs[1].snap.design_mah = 0
    r.cycle()
    assert r.bat.snap.soc_pct == 40


def test_cells_take_the_highest_per_position_and_the_extremes_over_all():
    r = Rig(3)
    set_cells(r.packs[0].snap, [3300, 3310, 3320, 3330, 3340, 3350, 3360, 3370])  # delta 70
    set_cells(r.packs[1].snap, [3400, 3300, 3300, 3300, 3300, 3300, 3300, 3290])  # delta 110
    set_cells(r.packs[2].snap, [3350, 3350, 3350, 3350, 3350, 3350, 3350, 3350])  # delta 0
    r.cycle()
    a = r.bat.snap
    assert list(a.cells[:8]) == [3400, 3350, 3350, 3350, 3350, 3350, 3360, 3370]
    assert a.cell_max_mv == 3400 and r.bat.cell_max_pack == 1 and a.cell_max_idx == 0
    assert a.cell_min_mv == 3290 and r.bat.cell_min_pack == 1 and a.cell_min_idx == 7
    # the largest delta within one pack, not the 110 mV between packs' extremes
    assert a.cell_delta_mv == 110
    total = 0
    for p in r.packs:
        for j in range(8):
            total += p.snap.cells[j]
    assert a.cell_avg_mv == (total + 12) // 24
    set_cells(r.packs[1].snap, [3300] * 8)
    r.cycle()
    assert a.cell_delta_mv == 70  # not 3370 - 3300 across packs


def test_temperatures_coldest_and_hottest_of_all_packs():
    r = Rig(2)
    t0 = r.packs[0].snap.temps
    t1 = r.packs[1].snap.temps
    t0[S.T_MOS] = 350
    t1[S.T_MOS] = 420
    for j in range(1, S.TEMP_SLOTS):
        t0[j] = 200 + j
        t1[j] = S.NO_TEMP
    t1[3] = -50
    t1[5] = 410
    r.cycle()
    a = r.bat.snap
    assert a.temps[S.T_MOS] == 420
    assert a.temps[1] == -50 and a.temps[2] == 410
    for j in range(3, S.TEMP_SLOTS):
        assert a.temps[j] == S.NO_TEMP
    out = [0, 0]
    assert battery_temps(a, out) and out == [-50, 410]


def test_the_strictest_settings_of_every_pack():
    r = Rig(3, ovp_margin_mv=50)
    s0, s1, s2 = (p.snap for p in r.packs)
    s0.cell_ovp_mv, s0.cell_ovpr_mv = 3650, 3498  # cap min(3600, 3498) = 3498
    s1.cell_ovp_mv, s1.cell_ovpr_mv = 3600, 0  # cap 3550, no OVPR
    s2.cell_ovp_mv, s2.cell_ovpr_mv = 3620, 3480  # cap 3480: the lowest
    s0.cell_uvp_mv, s1.cell_uvp_mv, s2.cell_uvp_mv = 2650, 2700, 2600
    s0.cell_uvpr_mv, s1.cell_uvpr_mv, s2.cell_uvpr_mv = 2710, 2750, 0
    s0.rcv_mv, s1.rcv_mv, s2.rcv_mv = 3500, 0, 3450
    s0.rfv_mv, s1.rfv_mv, s2.rfv_mv = 3400, 3380, 0
    s0.charge_otp_dc, s1.charge_otp_dc, s2.charge_otp_dc = 600, S.NO_TEMP, 550
    s0.charge_utp_dc, s1.charge_utp_dc, s2.charge_utp_dc = -100, 20, S.NO_TEMP
    s0.discharge_otp_dc, s1.discharge_otp_dc, s2.discharge_otp_dc = 600, 650, 580
    s0.discharge_utp_dc, s1.discharge_utp_dc, s2.discharge_utp_dc = S.NO_TEMP, -200, -150
    s0.mos_otp_dc, s1.mos_otp_dc, s2.mos_otp_dc = 1000, 900, S.NO_TEMP
    s0.pack_ovp_mv, s1.pack_ovp_mv, s2.pack_ovp_mv = 0, 29000, 28800
    s0.pack_uvp_mv, s1.pack_uvp_mv, s2.pack_uvp_mv = 0, 21000, 21500
    r.cycle()
    a = r.bat.snap
    assert a.cell_ovp_mv == 3600 and a.cell_ovpr_mv == 3480
    assert r.bat.cvl_pack == 2
    assert a.cell_uvp_mv == 2700 and a.cell_uvpr_mv == 2750
    assert a.rcv_mv == 3450 and a.rfv_mv == 3380
    assert a.charge_otp_dc == 550 and a.charge_utp_dc == 20
    assert a.discharge_otp_dc == 580 and a.discharge_utp_dc == -150
    assert a.mos_otp_dc == 900
    assert a.pack_ovp_mv == 28800 and a.pack_uvp_mv == 21500
    cap = cvl_cap_mv(a, 50, 8)
    for p in r.packs:
        assert cap <= cvl_cap_mv(p.snap, 50, 8)
    assert cap == 3480 * 8  # pack OVP 28800 - 400 = 28400 is above it


def test_a_pack_in_protection_blocks_its_direction_for_the_battery():
    r = online_rig(3, max_charge_a=1000, max_discharge_a=1000)
    lim = r.run(60000)
    assert lim.ccl_da > 0 and lim.dcl_da > 0
    r.packs[1].snap.flags = F.CELL_OV
    r.packs[1].snap.alarms = 1 << 4
    lim = r.cycle()
    a = r.bat.snap
    assert a.flags & F.CELL_OV and a.alarms & (1 << 4)
    assert lim.ccl_da == 0 and lim.charge_reason == L.ALARM
    assert lim.dcl_da > 0  # over-voltage does not block discharging
    r.packs[1].snap.flags = 0
    r.packs[2].snap.discharge_fet = 0
    lim = r.cycle()
    assert r.bat.snap.discharge_fet == 0 and r.bat.snap.charge_fet == 1
    assert lim.dcl_da == 0 and lim.discharge_reason == L.FET_OFF
    r.packs[2].snap.discharge_fet = 1
    r.packs[0].snap.charge_switch = 0
    lim = r.cycle()
    assert lim.ccl_da == 0 and lim.charge_reason == L.SWITCH_OFF
    r.packs[0].snap.charge_switch = 1
    r.packs[2].snap.have &= ~S.HAVE_BALANCE
    r.cycle()
    assert not r.bat.snap.have & S.HAVE_BALANCE and r.bat.snap.have & S.HAVE_CELLS
    r.packs[0].snap.heating = 1
    r.packs[1].snap.balancing = 2
    r.cycle()
    assert r.bat.snap.heating == 1 and r.bat.snap.balancing == 2


# --- the current limits -------------------------------------------------


def _currents(r, limits, caps, amps):
    for i in range(len(r.packs)):
        s = r.packs[i].snap
        s.max_charge_ma = limits[i]
        s.max_discharge_ma = limits[i] // 2
        s.full_mah = caps[i]
        s.current_ma = amps[i]
    r.cycle()
    return r.bat.snap


def test_equal_packs_equal_currents_get_the_sum():
    r = Rig(2)
    a = _currents(r, (150000, 150000), (200000, 200000), (20000, 20000))
    assert a.max_charge_ma == 300000 and a.max_discharge_ma == 150000


def test_an_uneven_split_caps_at_the_pack_with_least_headroom():
    r = Rig(2)
    # 30 A / 10 A: pack 0 takes 75 % of the current -> the total at which it
    # reaches its 150 A is 200 A
    a = _currents(r, (150000, 150000), (200000, 200000), (30000, 10000))
    assert a.max_charge_ma == 200000 and r.bat.ccl_pack == 0
    assert a.max_charge_ma * 3 // 4 <= 150000
    assert a.max_discharge_ma == 100000 and r.bat.dcl_pack == 0
    # a discharge splits the same way
    a = _currents(r, (150000, 150000), (200000, 200000), (-10000, -30000))
    assert a.max_charge_ma == 200000 and r.bat.ccl_pack == 1


def test_at_rest_the_capacity_share_decides():
    r = Rig(2)
    # below 2 A in total the split says nothing: shares 1/4, 3/4 by capacity
    a = _currents(r, (100000, 150000), (100000, 300000), (500, 1000))
    assert a.max_charge_ma == 200000 and r.bat.ccl_pack == 1  # 150 A / 0.75
    assert a.max_charge_ma <= 250000  # never above the sum
    # the smaller pack taking more than its capacity share caps it
    a = _currents(r, (100000, 150000), (100000, 300000), (25000, 15000))
    assert a.max_charge_ma == 160000 and r.bat.ccl_pack == 0  # 100 A / 0.625


def test_a_pack_taking_no_current_shrinks_the_limit():
    r = Rig(3)
    # pack 2's contactor is open: packs 0 and 1 carry everything
    a = _currents(r, (150000, 150000, 150000), (200000, 200000, 200000), (15000, 15000, 0))
    assert a.max_charge_ma == 300000
    a = _currents(r, (150000, 150000, 150000), (200000, 200000, 200000), (15000, 15000, 15000))
    # all three carry a third: shares rounded up to 334 per mille
    assert a.max_charge_ma == 150000 * 1000 // 334 and a.max_charge_ma <= 450000


def test_a_zero_limit_or_zero_capacity_is_safe():
    r = Rig(2)
    a = _currents(r, (0, 150000), (200000, 200000), (0, 0))
    assert a.max_charge_ma == 0 and r.bat.ccl_pack == 0
    r.packs[0].snap.design_mah = r.packs[1].snap.design_mah = 0
    a = _currents(r, (150000, 100000), (0, 0), (0, 0))
    assert a.max_charge_ma == 200000 and r.bat.ccl_pack == 1  # equal shares: 100 A / 0.5


# --- admission ----------------------------------------------------------


def test_a_silent_pack_drops_at_once_and_the_limits_shrink():
    r = online_rig(2, max_charge_a=1000, max_discharge_a=1000)
    r.run(60000)
    before = r.pol.lim.ccl_da
    assert r.bat.snap.max_charge_ma == 300000
    del r.events[:]
    # pack 1 falls silent; no update() comes (the bus task is stuck): the
    # CAN burst's state() sees it at the timeout
    r.t += 1000
    r.packs[0].poll(r.t)
    r.bat.update(r.t)
    stamp = r.t
    r.t = stamp + TIMEOUT_MS + 1
    r.packs[0].fresh.data_ok(r.t)
    lim = r.burst()
    assert r.events == [(1, B.P_ONLINE, B.P_OFFLINE)]
    assert r.bat.state_of(1) == B.P_OFFLINE and r.bat.why_of(1) == B.R_STALE
    assert r.bat.online == 1 and r.bat.snap.modules == 1
    assert r.bat.snap.max_charge_ma == 150000
    assert r.packs[1].snap.settings_ok == 0  # back only with fresh settings
    assert lim.ccl_da < before and lim.ccl_da <= 150000 * 9 // 10 // 100
    assert r.bat.state(r.t) == FRESH  # bms_min_packs 1


def test_a_staleness_seen_elsewhere_rebuilds_at_that_moment():
    r = online_rig(2)
    r.t += TIMEOUT_MS + 1
    r.packs[0].fresh.data_ok(r.t)
    assert r.packs[1].fresh.state(r.t) == STALE  # e.g. the console asked
    assert r.bat.state_of(1) == B.P_OFFLINE and r.bat.snap.modules == 1


def test_readmission_only_with_fresh_settings_and_through_the_hold():
    r = online_rig(2, max_charge_a=1000, max_discharge_a=1000, hold_s=30, ramp_a_s=5)
    r.run(60000)
    r.run(TIMEOUT_MS + 2000, silent=(1,))
    assert r.bat.state_of(1) == B.P_OFFLINE
    r.run(60000)  # settled on one pack
    one = r.pol.lim.ccl_da
    # the pack answers again, but its settings were cleared: not complete,
    # so its source does not mark it fresh
    r.cycle()
    assert r.bat.state_of(1) == B.P_OFFLINE and r.packs[1].fresh.state(r.t) == STALE
    # data marked fresh without settings (a source that did not re-read)
    r.packs[1].fresh.data_ok(r.t)
    r.bat.update(r.t)
    assert r.bat.state_of(1) == B.P_OFFLINE and r.bat.why_of(1) == B.R_INCOMPLETE
    del r.events[:]
    r.packs[1].read_settings()
    lim = r.cycle()
    assert r.events == [(1, B.P_OFFLINE, B.P_ONLINE)]
    assert r.bat.snap.modules == 2 and r.bat.snap.max_charge_ma == 300000
    # its share arrives through the hold, then the ramp: no step
    assert lim.ccl_da == one and r.pol.ccl.mode == HOLDING
    last = one
    for _ in range(28):
        lim = r.cycle()
        assert lim.ccl_da == one, lim.ccl_da
    rose = False
    for _ in range(60):
        lim = r.cycle()
        assert lim.ccl_da - last <= 5 * 10  # 5 A/s, dA per 1 s cycle
        rose = rose or lim.ccl_da > last
        last = lim.ccl_da
    assert rose and r.pol.ccl.mode == NORMAL and last > one


def test_a_pack_with_another_cell_count_is_rejected():
    r = Rig(3)
    set_cells(r.packs[2].snap, [3350] * 7)
    r.packs[2].snap.set_cell_count = 7
    r.cycle()
    assert r.bat.cells == 8
    assert r.bat.state_of(2) == B.P_REJECTED and r.bat.why_of(2) == B.R_CELLS
    assert (2, B.P_WAIT, B.P_REJECTED) in r.events
    assert r.bat.snap.modules == 2 and r.bat.online == 2
    # re-evaluated when its data changes
    set_cells(r.packs[2].snap, [3350] * 8)
    r.packs[2].snap.set_cell_count = 8
    r.cycle()
    assert r.bat.state_of(2) == B.P_ONLINE and (2, B.P_REJECTED, B.P_ONLINE) in r.events


def test_cell_count_tie_goes_to_the_lowest_index_and_settings_must_agree():
    r = Rig(2)
    set_cells(r.packs[0].snap, [3350] * 7)
    r.packs[0].snap.set_cell_count = 7
    r.cycle()
    assert r.bat.cells == 7 and r.bat.state_of(0) == B.P_ONLINE and r.bat.state_of(1) == B.P_REJECTED
    r = Rig(2)
    r.packs[1].snap.set_cell_count = 16  # its own settings disagree with its cells
    r.cycle()
    assert r.bat.state_of(1) == B.P_REJECTED and r.bat.online == 1


def test_an_outage_does_not_flip_the_cell_count():
    r = Rig(3)
    set_cells(r.packs[0].snap, [3350] * 7)
    r.packs[0].snap.set_cell_count = 7
    r.cycle()
    assert r.bat.cells == 8
    r.run(TIMEOUT_MS + 2000, silent=(1,))
    assert r.bat.state_of(1) == B.P_OFFLINE
    # the stale 8-cell pack still votes: 8 stays the battery's count
    assert r.bat.cells == 8 and r.bat.state_of(0) == B.P_REJECTED and r.bat.state_of(2) == B.P_ONLINE


def test_min_packs_wait_fresh_stale_and_back():
    r = Rig(3, bms_min_packs=2)
    assert r.bat.state(r.t) == WAIT
    r.cycle(silent=(1, 2))
    assert r.bat.online == 1 and r.bat.state(r.t) == WAIT
    assert not r.pol.decide(r.bat.snap, r.bat.state(r.t), r.t)  # nothing sent in WAIT
    r.cycle(silent=(2,))
    assert r.bat.state(r.t) == FRESH and r.changes == [(WAIT, FRESH)]
    r.run(60000, silent=(2,))
    assert r.pol.lim.ccl_da > 0
    r.run(TIMEOUT_MS + 2000, silent=(1, 2))
    assert r.bat.online == 1 and r.bat.state(r.t) == STALE
    assert r.changes == [(WAIT, FRESH), (FRESH, STALE)]
    lim = r.pol.lim
    assert lim.ccl_da == 0 and lim.dcl_da == 0 and lim.flags & F.LINK_LOST
    r.packs[1].read_settings()  # cleared at the drop
    r.cycle(silent=(2,))
    assert r.bat.state(r.t) == FRESH and r.changes[-1] == (STALE, FRESH)
    assert r.bat.age_ms(r.t) == 0 and r.bat.oldest_ms(r.t) == 0


def test_ages_of_the_newest_and_oldest_data():
    r = Rig(2)
    assert r.bat.age_ms(r.t) == -1 and r.bat.oldest_ms(r.t) == -1
    r.packs[0].poll(r.t)
    r.packs[1].poll(r.t + 300)
    r.bat.update(r.t + 300)
    assert r.bat.age_ms(r.t + 1000) == 700 and r.bat.oldest_ms(r.t + 1000) == 1000


def test_add_refuses_a_second_registration_and_a_17th_pack():
    bat = Battery(cfg_with(), 0)
    p = FakePack("a")
    assert bat.add(p) == 0
    try:
        bat.add(p)
        raise AssertionError("added twice")
    except ValueError:
        pass
    for i in range(1, B.MAX_PACKS):
        q = FakePack("p")
        assert bat.add(q) == i
    try:
        bat.add(FakePack("x"))
        raise AssertionError("a 17th pack")
    except ValueError:
        pass


def test_one_pack_alone_is_that_pack():
    r = Rig(2)
    s = r.packs[0].snap
    s.current_ma = -12345
    r.cycle(silent=(1,))
    a = r.bat.snap
    assert r.bat.online == 1 and r.bat.state_of(1) == B.P_WAIT
    for name in ("pack_mv", "current_ma", "soc_pct", "soh_pct", "remaining_mah", "full_mah", "design_mah",
                 "cycles", "cell_count", "cell_min_mv", "cell_max_mv", "cell_min_idx", "cell_max_idx",
                 "cell_delta_mv", "flags", "alarms", "charge_fet", "discharge_fet", "charge_switch",
                 "discharge_switch", "cell_ovp_mv", "cell_ovpr_mv", "cell_uvp_mv", "cell_uvpr_mv", "rcv_mv",
                 "rfv_mv", "max_charge_ma", "max_discharge_ma", "charge_otp_dc", "charge_utp_dc",
                 "discharge_otp_dc", "discharge_utp_dc", "mos_otp_dc", "pack_ovp_mv", "pack_uvp_mv"):
        assert getattr(a, name) == getattr(s, name), name
    assert list(a.cells[:8]) == list(s.cells[:8]) and a.spread_mv == 0 and a.modules == 1


# --- plausibility and the ramp ------------------------------------------


def test_a_large_spread_is_implausible():
    r = online_rig(2, pack_spread_mv=1500)
    r.run(60000)
    assert r.pol.lim.ccl_da > 0
    r.packs[1].snap.pack_mv += 1600
    lim = r.cycle()
    assert P.check(r.bat.snap, r.cfg, r.pol.pre, True) == P.PACK_SPREAD
    assert lim.ccl_da == 0 and lim.dcl_da == 0 and lim.charge_reason == L.IMPLAUSIBLE
    r.packs[1].snap.pack_mv -= 200
    r.cycle()
    assert P.check(r.bat.snap, r.cfg, r.pol.pre, True) == P.OK


def test_ramp_pause_keeps_the_output_then_ramps():
    rp = Ramp(0)
    hold = 30000
    rate = 5000
    t = 0
    while rp.mode != NORMAL:
        t += 1000
        rp.step(50000, t, hold, rate)
    assert rp.out == 50000
    rp.pause(t)
    t += 1000
    assert rp.step(100000, t, hold, rate) == 50000 and rp.mode == HOLDING
    t += 1000
    assert rp.step(40000, t, hold, rate) == 40000  # a decrease applies at once
    t += 27000
    assert rp.step(100000, t, hold, rate) == 40000
    t += 2000  # 1 s past the hold
    assert rp.step(100000, t, hold, rate) == 45000
    rp.step(0, t, hold, rate)
    rp.pause(t)  # at 0 after a block: the block's own hold applies
    assert not rp.paused


# --- no allocation --------------------------------------------------------


def _big_battery():
    cfg = cfg_with()
    bat = Battery(cfg, 0)
    packs = []
    for i in range(B.MAX_PACKS):
        p = FakePack("p%d" % i)
        set_cells(p.snap, [3300 + (i * 7 + j * 3) % 50 for j in range(32)])
        p.snap.set_cell_count = 32
        p.snap.current_ma = 1000 + 300 * i
        packs.append(p)
        bat.add(p)
    return bat, packs


def _steady(bat, packs, t):
    for p in packs:
        p.fresh.data_ok(t)
    bat.update(t)
    return bat.state(t + 100)


def _drop(bat, t):
    return bat.state(t)


def test_update_and_state_allocate_nothing():
    bat, packs = _big_battery()
    t = 1000
    assert _steady(bat, packs, t) == FRESH
    assert bat.online == 16 and bat.snap.cell_count == 32
    for _ in range(3):
        t += 1000
        assert run_locked(_steady, bat, packs, t) == FRESH
    assert bytes_allocated(_steady, bat, packs, t + 1000) == 0
    agg = bat.snap.max_charge_ma
    # a drop in the CAN burst's state() (the hook, the admission, the rebuild)
    t += 1000
    for i in range(1, 16):
        packs[i].fresh.data_ok(t + TIMEOUT_MS)
    assert run_locked(_drop, bat, t + TIMEOUT_MS + 1) == FRESH
    assert bat.state_of(0) == B.P_OFFLINE and bat.online == 15 and bat.snap.max_charge_ma < agg
    if not IS_MICROPYTHON:
        print("heap lock not available on CPython: checked the results only")


def test_every_code_has_its_words():
    from charge import texts

    assert len(texts.PACK_WHY) == B.R_CELLS + 1
    assert len(texts.PLAUSIBLE) == P.PACK_SPREAD + 1
    assert "parallel packs" in texts.PLAUSIBLE[P.PACK_SPREAD]


def test_the_can_phase_locks_onto_the_end_of_a_full_bus_cycle():
    # the bursts must follow the whole data set, not its first pack: a burst
    # just after pack 1 of a new cycle would carry the others a cycle old
    r = Rig(2)
    assert r.bat.since_cycle_ms(r.t) == -1  # no cycle yet: nothing to lock onto
    r.t += 1000
    for p in r.packs:
        p.poll(r.t)
    r.bat.cycle_done(r.t, True)
    assert r.bat.online == 2 and r.bat.since_cycle_ms(r.t + 40) == 40
    r.t += 1000
    r.bat.cycle_done(r.t, False)  # a cycle longer than its period: no fixed phase
    assert r.bat.since_cycle_ms(r.t + 40) == -1
    r.t += 6000
    r.bat.cycle_done(r.t, True)  # nobody answered for 6 s: no pack online, nothing to lock onto
    assert r.bat.online == 0 and r.bat.since_cycle_ms(r.t + 40) == -1
