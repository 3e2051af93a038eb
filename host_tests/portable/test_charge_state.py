# charge.state: every transition of the charge state machine, through the
# policy on a virtual clock, on a real JK-PB pack (8 cells, 220 Ah) whose
# cells the tests move. CPython and MicroPython.

# charge.policy first: the unix port compiles it from source, which fits its
# capped heap only before the heap is fragmented
from fakes import load_pb_pack  # noqa: I001

from charge.policy import ChargePolicy

from app import config as C
from charge import limits as L
from charge import state as CS
from pack.snapshot import PackSnapshot
from sources.base import FRESH, STALE

CELLS = 8


def make(**over):
    cfg = C.defaults()
    for k in over:
        cfg[k] = over[k]
    snap = PackSnapshot()
    load_pb_pack(snap)
    return snap, ChargePolicy(cfg, now=0)


class Clock:
    def __init__(self, snap, pol):
        self.snap = snap
        self.pol = pol
        self.t = 0

    def run(self, s, state=FRESH):
        for _ in range(s):
            self.t += 1000
            self.pol.decide(self.snap, state, self.t)
        return self.pol.ctl.state


def cells(snap, mv, current_ma=0, runner=None, soc=None):
    for i in range(snap.cell_count):
        snap.cells[i] = mv
    if runner is not None:
        snap.cells[0] = runner
    snap.cell_stats()
    snap.pack_mv = snap.cell_avg_mv * snap.cell_count
    snap.current_ma = current_ma
    if soc is not None:
        snap.soc_pct = soc


def test_first_valid_data_starts_bulk():
    snap, pol = make()
    c = Clock(snap, pol)
    assert pol.ctl.state == CS.NO_DATA
    c.run(1, STALE)
    assert pol.ctl.state == CS.NO_DATA  # no valid data: no transition
    c.run(1)
    assert pol.ctl.state == CS.BULK and pol.ctl.why == CS.W_FIRST


def test_bulk_to_absorption_needs_the_pack_at_bulk_for_the_confirm_time():
    snap, pol = make()
    c = Clock(snap, pol)
    cells(snap, 3400, 50000)
    assert c.run(60) == CS.BULK
    cells(snap, 3441, 50000)  # within 10 mV per cell of bulk 3.450
    assert c.run(9) == CS.BULK
    cells(snap, 3400, 50000)  # a dip resets the confirmation
    assert c.run(1) == CS.BULK
    cells(snap, 3441, 50000)
    assert c.run(9) == CS.BULK
    assert c.run(2) == CS.ABSORPTION and pol.ctl.why == CS.W_AT_BULK


def test_a_runner_cell_at_bulk_starts_absorption():
    snap, pol = make()
    c = Clock(snap, pol)
    cells(snap, 3380, 20000, runner=3450)
    assert c.run(12) == CS.ABSORPTION


def _absorbing(**over):
    snap, pol = make(**over)
    c = Clock(snap, pol)
    cells(snap, 3445, 40000)
    assert c.run(12) == CS.ABSORPTION
    return snap, pol, c


def test_absorption_ends_on_the_cut_off_rule():
    snap, pol, c = _absorbing()
    # 220 Ah: R = 280 mV / 11 A; max cell 3.445 -> cut-off below (3445 - 3370) / 25.45 = ~2.9 A
    cells(snap, 3445, 5000)
    assert c.run(120) == CS.ABSORPTION  # 5 A: not tapered off yet
    cells(snap, 3445, 2000)
    assert c.run(59) == CS.ABSORPTION
    assert c.run(2) == CS.FLOAT and pol.ctl.why == CS.W_CUTOFF
    assert pol.ctl.full_s == 0 and pol.ctl.save_due


def test_absorption_ends_at_its_time_limit():
    snap, pol, c = _absorbing(absorption_max_min=5)
    cells(snap, 3445, 20000)  # never tapers
    assert c.run(290) == CS.ABSORPTION
    assert c.run(11) == CS.FLOAT and pol.ctl.why == CS.W_TIMEOUT


def test_absorption_falls_back_to_bulk_when_discharged_well_below_bulk():
    snap, pol, c = _absorbing()
    cells(snap, 3380, -30000)  # discharging, but within 100 mV of bulk: grey zone
    assert c.run(30) == CS.ABSORPTION
    cells(snap, 3340, -30000)
    assert c.run(11) == CS.BULK and pol.ctl.why == CS.W_DISCHARGE


def test_top_balance_waits_for_the_cells_with_a_time_limit():
    snap, pol = make(top_balance_days=7, top_balance_mv=10, top_balance_max_min=20)
    pol.ctl.restore(0, 8 * 86400)  # the last top balance 8 days ago
    c = Clock(snap, pol)
    cells(snap, 3420, 40000, runner=3450)
    assert c.run(12) == CS.ABSORPTION and pol.ctl.balancing
    cells(snap, 3420, 1000, runner=3450)  # tapered, but 30 mV apart
    assert c.run(300) == CS.ABSORPTION
    cells(snap, 3440, 1000, runner=3448)  # 8 mV apart
    assert c.run(61) == CS.FLOAT and pol.ctl.balance_s < 100
    snap, pol = make(top_balance_days=7, top_balance_mv=10, top_balance_max_min=20)
    pol.ctl.restore(0, 8 * 86400)
    c = Clock(snap, pol)
    cells(snap, 3420, 1000, runner=3450)
    assert c.run(12) == CS.ABSORPTION
    assert c.run(20 * 60) == CS.FLOAT and pol.ctl.why == CS.W_TIMEOUT


def _floating(**over):
    snap, pol, c = _absorbing(**over)
    cells(snap, 3445, 1000)
    assert c.run(61) == CS.FLOAT
    cells(snap, 3380, 0, soc=98)
    return snap, pol, c


def test_float_ramps_cvl_to_the_float_voltage_without_stepping():
    snap, pol, c = _floating()
    # CVL target: min(float 3.375, RFV 3.400) x 8 = 27.00 V; the pack is at
    # 27.04 V: CVL goes to the pack voltage at once, below it 2 mV per cell
    # per minute (16 mV / min)
    lim = pol.lim
    c.run(1)
    assert lim.cvl_dv * 100 >= snap.pack_mv - 100 and lim.cvl_reason == L.SLEW
    seen = []
    for _ in range(4):
        c.run(60)
        seen.append(pol.cvl.out)
    assert seen[0] < snap.pack_mv and seen[0] >= snap.pack_mv - 16
    for a, b in zip(seen, seen[1:]):
        assert 0 <= a - b <= 16
    assert seen[-1] == 27000 and lim.cvl_dv == 270 and lim.cvl_reason == L.FLOAT_V


def test_rebulk_on_cell_voltage_soc_delta_days_and_force_charge():
    snap, pol, c = _floating()
    cells(snap, 3300, 0, soc=95)
    assert c.run(11) == CS.BULK and pol.ctl.why == CS.W_CELL
    snap, pol, c = _floating()
    cells(snap, 3340, 0, soc=85)
    assert c.run(9) == CS.FLOAT  # confirm time
    assert c.run(2) == CS.BULK and pol.ctl.why == CS.W_SOC
    snap, pol, c = _floating()
    cells(snap, 3340, 0, soc=95, runner=3420)
    assert c.run(11) == CS.BULK and pol.ctl.why == CS.W_DELTA
    snap, pol, c = _floating()
    pol.ctl.full_s = 14 * 86400
    assert c.run(1) == CS.BULK and pol.ctl.why == CS.W_DAYS
    snap, pol, c = _floating(force_charge_soc=20)
    cells(snap, 3340, 0, soc=19)
    c.run(1)
    assert c.run(1) == CS.BULK and pol.ctl.why == CS.W_FORCE


def test_stale_data_freezes_the_state_machine():
    snap, pol, c = _absorbing()
    cells(snap, 3445, 1000)
    assert c.run(3600, STALE) == CS.ABSORPTION  # not even the time limit on stale data
    assert c.run(1) == CS.FLOAT and pol.ctl.why == CS.W_TIMEOUT


def test_days_since_full_counts_and_asks_to_be_saved():
    snap, pol, c = _floating()
    pol.ctl.save_due = False
    pol.ctl.restore(6 * 3600 - 5, 0)
    c.run(4)
    assert not pol.ctl.save_due
    c.run(2)
    assert pol.ctl.save_due and pol.ctl.full_s == 6 * 3600 + 1
    pol.ctl.restore(-5, 10 ** 9)  # damaged memory: counted from 0
    assert pol.ctl.full_s == 0 and pol.ctl.balance_s == 0
