# The charge controller on the console and in the events: state, limits and
# the reason for each, `set` of charge parameters without a reboot
# (validated, logged), the days-since-full memory on flash, the events of
# transitions and implausible data. CPython and MicroPython.

from fakes import FakeCan, FakeRecovery, FakeUart, MemStore, load_pb_pack

from app import charge_memory
from app import config as C
from app import gateway as G
from charge import state as CS
from compat import sleep_ms, ticks_add, ticks_ms


def make(store=None):
    out = []
    store = store if store is not None else MemStore()
    gw = G.Gateway(C.defaults(), FakeUart({}), FakeCan(), FakeRecovery(), None, store, None, "gateway.json",
                   out.append)
    load_pb_pack(gw.source.snap)
    gw.clock = Clock(gw)
    return gw, out, store


class Clock:
    """A virtual clock from the gateway's creation on, read by the outputs
    too (Status.now)."""

    def __init__(self, gw):
        self.t = ticks_ms()
        gw.status.now = self.now

    def now(self):
        return self.t


def run(gw, seconds, t0=None):
    """CAN bursts on the virtual clock, the data fresh each time."""
    c = gw.clock
    for _ in range(seconds):
        c.t = ticks_add(c.t, 1000)
        gw.source.fresh.data_ok(c.t)
        gw.policy.decide(gw.source.snap, gw.source.fresh.state(c.t), c.t)
    return c.t


def test_status_and_charge_show_state_limits_and_reasons():
    gw, out, _ = make()
    run(gw, 60)
    status = "\n".join(gw.execute("status"))
    assert "charge: bulk for 59 s" in status and "(first valid BMS data)" in status
    assert "CVL: bulk voltage" in status and "SOC sent 88 %" in status
    assert "CCL 100.0 A (user maximum)" in status
    lines = gw.execute("charge")
    text = "\n".join(lines)
    assert "CVL 27.6 V (bulk voltage), bulk 3.450 V per cell" in text
    assert "CCL 100.0 A (user maximum), before hold/ramp 100.0 A; charge enable on" in text
    assert "data: ok" in text and "hold_s=30" in text and "ccl_taper_table=[[0,1000],[50,250]," in text
    assert any("charge: bulk (first valid BMS data)" in line for line in out)  # the transition event


def test_a_block_shows_its_reason_and_the_hold():
    gw, _, _ = make()
    t = run(gw, 60)
    gw.source.snap.charge_fet = 0
    t = run(gw, 1, t)
    assert "CCL 0.0 A (MOSFET off)" in "\n".join(gw.execute("status"))
    gw.source.snap.charge_fet = 1
    run(gw, 5, t)
    text = "\n".join(gw.execute("charge"))
    assert "CCL 0.0 A (hold after a block), before hold/ramp 100.0 A" in text


def test_set_applies_charge_parameters_at_once_validated_and_logged():
    gw, out, _ = make()
    t = run(gw, 60)
    r = gw.execute("set max_charge_a 40")
    assert "applied now" in r[0] and gw.cfg["max_charge_a"] == 40
    assert "set max_charge_a = 40, applied to the charge controller" in out[-1]
    run(gw, 1, t)
    assert gw.policy.lim.ccl_da == 400  # a decrease applies in the next cycle
    assert "must be 0..1000" in gw.execute("set max_charge_a 5000")[0]
    # cross-key rules as at boot: float above bulk is refused, nothing changes
    r = gw.execute("set float_cell_mv 3500")
    assert "float_cell_mv must be <= bulk_cell_mv" in r[0] and gw.cfg["float_cell_mv"] == 3375
    assert "must be a JSON list" in gw.execute("set ccl_taper_table 1,2")[0]
    r = gw.execute("set ccl_taper_table [[-100,1000],[0,0]]")
    assert "applied now" in r[0] and gw.cfg["ccl_taper_table"] == [[-100, 1000], [0, 0]]
    # a non-charge key still waits for save + reboot
    assert "pending" in gw.execute("set can_period_ms 500")[0] and gw.cfg["can_period_ms"] == 1000


def test_set_then_save_keeps_charge_parameters():
    gw, _, store = make()
    gw.execute("set hold_s 10")
    assert "saved" in gw.execute("save")[0]
    assert '"hold_s": 10' in store.files["gateway.json"]


def test_days_since_full_survive_a_reboot():
    store = MemStore()
    gw, _, _ = make(store)
    gw.policy.ctl.restore(3 * 86400, 9 * 86400)
    charge_memory.save(store, gw.policy.ctl, gw.events)
    assert store.files[charge_memory.NAME] == "%d %d\n" % (3 * 86400, 9 * 86400)
    gw2, _, _ = make(store)
    assert gw2.policy.ctl.full_s == 3 * 86400 and gw2.policy.ctl.balance_s == 9 * 86400
    assert "last full charge 3.0 days ago" in "\n".join(gw2.execute("status"))


def test_a_damaged_charge_memory_is_reported_and_counted_from_zero():
    store = MemStore({charge_memory.NAME: "garbage"})
    gw, out, _ = make(store)
    assert gw.policy.ctl.full_s == 0
    assert any("charge.txt unreadable" in line for line in out)


async def test_the_watch_task_writes_the_memory_when_due():
    import asyncio

    from app import supervisor as SV

    gw, _, store = make()
    gw.policy.ctl.save_due = True
    task = asyncio.create_task(SV.watch(gw.status, None))
    await sleep_ms(10)
    task.cancel()
    assert charge_memory.NAME in store.files and not gw.policy.ctl.save_due


def test_implausible_data_is_an_alarm_event_and_on_the_console():
    gw, out, _ = make()
    t = run(gw, 5)
    gw.source.snap.cells[2] = 0
    gw.source.snap.cell_stats()
    t = run(gw, 1, t)
    assert any("BMS data implausible (a cell voltage is outside the physical range)" in line for line in out)
    assert "[BMS data IMPLAUSIBLE: a cell voltage is outside the physical range]" in "\n".join(
        gw.execute("status"))
    gw.source.snap.cells[2] = 3356
    gw.source.snap.cell_stats()
    run(gw, 1, t)
    assert out[-1].endswith("BMS data plausible again")
    assert gw.policy.ctl.state == CS.BULK
