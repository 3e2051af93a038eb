# The firmware's BMS source for JK-PB (sources.jk_pb.JkPbSource over sources.uart_bus.UartBus,
# run by CPython's asyncio, bms_read = "fc03") against pymodbus as an independent Modbus RTU slave:
# a pymodbus server speaking RTU framing over TCP on 127.0.0.1 (free port, started and stopped
# inside the tests) holds a JK-PB register image -- the 0x1200 status and 0x1000 settings blocks,
# big-endian fields at byte offsets (JK registers are byte offsets). The emulator and the images are
# the ones of test_modbus_pymodbus.py (imported, not repeated). The UART is host/hostio.SocketUart,
# the adapter the host simulation runs the firmware with.
#
#   * every poll_once() reads the planned FC03 reads of the status block first, then parts of the
#     settings block in the time left, until the snapshot holds the image's values (cells, voltage,
#     current, SOC / SOH, temperatures, alarms and their neutral flags, BMS settings);
#     charge.policy's limits follow from them (once the hold after the start and the ramp are
#     over: the policy on a virtual clock, tools/can_frames.settle), and src.fresh is FRESH;
#   * replies later than the reply time are thrown away, never taken for the answer to the retry;
#   * a stopped server: timeouts, the snapshot stays as it was, and src.fresh turns STALE once
#     bms_timeout has passed since the last good poll -- never before -- and stays STALE (latched);
#     the policy then sends 0 A limits with the reason "BMS data stale" (CVL / DVL of the data
#     it had before kept).
import asyncio
import sys
import time
from pathlib import Path

import pytest

_ROOT = Path(__file__).resolve().parents[2]
for _p in (_ROOT / "firmware" / "lib", _ROOT / "host", Path(__file__).resolve().parent):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from hostio import SocketUart  # noqa: E402
from test_modbus_pymodbus import (  # noqa: E402
    CELLS_MV,
    PACK,
    SET,
    SETTINGS_BASE,
    SLAVE,
    STATUS_BASE,
    _JkPbEmulator,
    _settings_image,
    _status_image,
)

import sources  # noqa: E402
from app import config as C  # noqa: E402
from charge import limits as L  # noqa: E402
from charge import texts  # noqa: E402
from charge.policy import ChargePolicy  # noqa: E402
from compat import ticks_diff, ticks_ms  # noqa: E402
from jkbms import cellinfo, pb_modbus, settings  # noqa: E402
from jkbms import frame as J  # noqa: E402
from pack import flags as F  # noqa: E402
from pack import snapshot as S  # noqa: E402
from sources.base import FRESH, STALE, WAIT, Freshness  # noqa: E402
from sources.jk_pb import JkPbSource  # noqa: E402
from sources.uart_bus import UartBus  # noqa: E402
from tools import can_frames  # noqa: E402

BOUND_S = 30  # no test may take longer


class _SlowJkPb(_JkPbEmulator):
    """The same emulator, answering every read `delay` seconds late."""

    def __init__(self, images, delay):
        super().__init__(images)
        self.delay = delay

    async def _action(self, *args):
        await asyncio.sleep(self.delay)
        return await super()._action(*args)


def _images():
    return {STATUS_BASE: _status_image(PACK), SETTINGS_BASE: _settings_image(SET)}


def _config(**over):
    raw = dict(bms_read="fc03", bms_address=SLAVE, bms_reply_ms=200, bms_retries=1, bms_timeout_s=3)
    raw.update(over)
    msgs = []
    cfg = C.validate(raw, msgs)
    assert not msgs, msgs  # a configuration the firmware takes as it is
    return cfg


def _plans():
    status = pb_modbus.read_plan(STATUS_BASE, cellinfo.NEED_32S)
    settings_plan = pb_modbus.read_plan(SETTINGS_BASE, settings.BLOCK_BYTES)
    return settings_plan, status


def _values(snap):
    """Everything poll_once may change, to compare before / after."""
    return (list(snap.cells), snap.cell_count, snap.pack_mv, snap.current_ma, snap.soc_pct, snap.soh_pct,
            list(snap.temps), snap.alarms, snap.flags, snap.charge_fet, snap.discharge_fet, snap.cell_ovp_mv,
            snap.cell_uvp_mv, snap.rcv_mv, snap.max_charge_ma, snap.max_discharge_ma, snap.settings_ok,
            snap.updates, snap.have)


def _source(port, cfg, via_make=False):
    """The source as app.gateway builds it (sources.make), or by hand from its parts."""
    snap = S.PackSnapshot()
    uart = SocketUart("127.0.0.1", port)
    if via_make:
        src = sources.make(cfg, uart, snap, lambda msg: None)
    else:
        src = JkPbSource(UartBus(uart, cfg["bms_reply_ms"], cfg["bms_retries"]), cfg, snap, lambda msg: None)
    # by name: other tests may drop firmware modules from sys.modules, and make() imports afresh
    assert (type(src).__module__, type(src).__name__) == ("sources.jk_pb", "JkPbSource")
    assert type(src.bus).__name__ == "UartBus" and src.snap is snap and src.bus.uart is uart
    assert (src.bus.reply_ms, src.bus.retries) == (cfg["bms_reply_ms"], cfg["bms_retries"])
    assert src.fresh.timeout_ms == cfg["bms_timeout_s"] * 1000
    return src, snap, uart


async def _bounded(coro):
    return await asyncio.wait_for(coro, BOUND_S)


@pytest.mark.parametrize("via_make", (True, False))
def test_poll_once_reads_the_register_image(via_make):
    emu = _JkPbEmulator(_images()).start()
    uart = None
    try:
        cfg = _config()
        p, snap, uart = _source(emu.port, cfg, via_make)
        assert p.name == "jk-pb@%d" % SLAVE
        assert not p.fresh.have_data and p.fresh.state(ticks_ms()) == WAIT
        settings_plan, status_plan = _plans()
        # the status block first; the settings block (none yet) right after it, all of it even past the
        # poll's budget, because nothing is sent without settings
        emu.reads.clear()
        t0 = time.monotonic()
        assert asyncio.run(_bounded(p.poll_once())) is True
        took = time.monotonic() - t0
        polls = 1
        assert emu.reads == status_plan + settings_plan
        assert took < 2 * cfg["bms_poll_ms"] / 1000  # no reply took its timeout
        assert p.complete()
        assert (p.polls_ok, p.timeouts, p.decode_errors, p.exceptions) == (polls, 0, 0, 0)

        # status block (docs/jk-bms.md "JK-PB"), values of test_modbus_pymodbus.PACK
        v = PACK
        assert snap.cell_count == 16 and list(snap.cells[:16]) == CELLS_MV and not any(snap.cells[16:])
        assert (snap.cell_min_mv, snap.cell_max_mv) == (min(CELLS_MV), max(CELLS_MV))
        assert snap.pack_mv == v["pack_mv"] and snap.current_ma == v["current_ma"]
        assert (snap.soc_pct, snap.soh_pct) == (v["soc"], v["soh"])
        assert (snap.temps[S.T_MOS], snap.temps[1], snap.temps[2]) == (v["mos_dc"], v["t1_dc"], v["t2_dc"])
        assert snap.alarms == v["alarms"]
        assert snap.flags == F.CELL_OV | F.BATTERY_OT_WARN  # JK bits 4 and 21 of the image
        assert (snap.charge_fet, snap.discharge_fet) == (v["chg"], v["dsg"])
        assert snap.layout == J.LAYOUT_PB_FC03
        # settings block (4.4), values of test_modbus_pymodbus.SET
        assert snap.settings_ok == 1
        assert (snap.cell_uvp_mv, snap.cell_uvpr_mv, snap.cell_ovp_mv, snap.cell_ovpr_mv) == (
            SET["uvp"], SET["uvpr"], SET["ovp"], SET["ovpr"])
        assert (snap.rcv_mv, snap.max_charge_ma, snap.max_discharge_ma) == (SET["rcv"], SET["chg_ma"], SET["dsg_ma"])
        assert snap.set_cell_count == SET["cells"]

        # the source is fresh: complete data (live values + settings) was accepted just now
        now = ticks_ms()
        assert p.complete() and p.fresh.have_data
        # dated when this poll's status block was asked for (the settings parts came after it)
        assert p.fresh.state(now) == FRESH and 0 <= p.fresh.age_ms(now) < cfg["bms_poll_ms"]

        # what the inverter side makes of it: at first nothing but the hold after the start (0 A,
        # no alarm of its own) ...
        policy = ChargePolicy(cfg, now)
        assert policy.decide(snap, p.fresh.state(now), now) is True
        lim = policy.lim
        assert (lim.ccl_da, lim.dcl_da) == (0, 0) and lim.flags == snap.flags
        assert lim.discharge_reason == L.HOLD
        # ... and once the hold and the ramp are over: CVL = RCV (= the bulk voltage) x cells, DVL =
        # (UVP + 0.2 V) x cells, DCL = 0.9 x 150 A capped at the 100 A user maximum, CCL = 0 because
        # the image carries a cell-OVP alarm (JK bit 4), which blocks charging
        can_frames.settle(policy, snap, cfg, cfg["can_period_ms"], now)
        assert (lim.cvl_dv, lim.dvl_dv) == (SET["rcv"] * 16 // 100, (SET["uvp"] + 200) * 16 // 100)
        assert (lim.ccl_da, lim.dcl_da) == (0, 1000)
        assert (lim.charge_reason, lim.discharge_reason) == (L.ALARM, L.USER_MAX)
        assert (lim.charge_enable, lim.discharge_enable) == (False, True)
        assert lim.flags == snap.flags

        # the next poll only reads the status block (settings are re-read every bms_settings_s)
        emu.reads.clear()
        assert asyncio.run(_bounded(p.poll_once())) is True
        assert emu.reads == status_plan and p.polls_ok == polls + 1
    finally:
        if uart is not None:
            uart._close()
        emu.stop()


def test_late_replies_are_never_taken_for_the_retry():
    # every reply comes 0.4 s after its request: after the 0.2 s reply time, and -- without the
    # poller's late-reply discarding (5 reply times after a timeout) -- inside the window of the
    # retry, which would take it for its own answer. A 2 s poll leaves time for the retry.
    emu = _SlowJkPb(_images(), delay=0.4).start()
    uart = None
    try:
        cfg = _config(bms_poll_ms=2000, bms_timeout_s=5)
        p, snap, uart = _source(emu.port, cfg)
        before = _values(snap)
        assert asyncio.run(_bounded(p.poll_once())) is False
        # the status read and its retry; no settings read after a status read that got no byte in its
        # reply window (a silent pack must not hold up the other packs on its bus twice)
        assert p.timeouts == cfg["bms_retries"] + 1 and p.polls_ok == 0
        assert p.last_error == "no reply from the BMS"
        assert emu.reads  # the server did answer -- too late
        assert _values(snap) == before and not p.fresh.have_data
        assert p.fresh.state(ticks_ms()) == WAIT
    finally:
        if uart is not None:
            uart._close()
        emu.stop()


def test_stopped_server_times_out_keeps_the_snapshot_and_goes_stale():
    emu = _JkPbEmulator(_images()).start()
    uart = None
    try:
        cfg = _config()
        p, snap, uart = _source(emu.port, cfg)
        for _ in range(3):  # complete after the first; the others as a running source does them
            assert asyncio.run(_bounded(p.poll_once())) is True
        assert p.complete()
        good = _values(snap)
        data_ms = p.fresh.data_ms
        assert p.fresh.state(ticks_ms()) == FRESH
    finally:
        emu.stop()  # the BMS goes away (its TCP connection with it)
    try:
        timeout_ms = cfg["bms_timeout_s"] * 1000

        async def keep_polling():
            seen = []
            while ticks_diff(ticks_ms(), data_ms) <= timeout_ms + 300:
                ok = await p.poll_once()
                now = ticks_ms()
                seen.append((ok, ticks_diff(now, data_ms), p.fresh.state(now)))
                await asyncio.sleep(0.05)
            return seen

        seen = asyncio.run(_bounded(keep_polling()))
        assert seen and not any(ok for ok, _, _ in seen)
        assert p.timeouts >= len(seen) and p.polls_ok == 3
        assert p.last_error == "no reply from the BMS"
        assert _values(snap) == good  # nothing was touched by the failed polls
        assert p.fresh.data_ms == data_ms  # no new data time
        for _ok, age, state in seen:  # FRESH up to bms_timeout, STALE after it
            assert state == (FRESH if age <= timeout_ms else STALE), seen
        assert seen[-1][2] == STALE
        # STALE is latched until new data: even a time inside the timeout (a wrapped tick counter)
        # does not make the old data fresh again
        assert p.fresh.state(data_ms) == STALE and p.fresh.state(data_ms + timeout_ms) == STALE
        # the pure rule at the boundary, on a new Freshness with the same data time
        f = Freshness(timeout_ms)
        f.data_ok(data_ms)
        assert f.state(data_ms + timeout_ms) == FRESH
        assert f.state(data_ms + timeout_ms + 1) == STALE
        assert f.state(data_ms + timeout_ms) == STALE
        # the inverter is told: 0 A, reason "BMS data stale", link lost; CVL / DVL of the data the
        # gateway had before the outage (its policy on a virtual clock up to a period ago) still sent
        now = ticks_ms()
        period = cfg["can_period_ms"]
        policy = ChargePolicy(cfg, now)
        t = can_frames.settle(policy, snap, cfg, period, now)
        assert policy.lim.dcl_da == 1000  # the limits were up before
        assert policy.decide(snap, p.fresh.state(now), t + period) is True  # link_loss "zeros"
        lim = policy.lim
        assert (lim.ccl_da, lim.dcl_da) == (0, 0) and not lim.charge_enable and not lim.discharge_enable
        assert texts.REASONS[lim.charge_reason] == texts.REASONS[lim.discharge_reason] == "BMS data stale"
        assert lim.flags == snap.flags | F.LINK_LOST
        assert (lim.cvl_dv, lim.dvl_dv) == (SET["rcv"] * 16 // 100, (SET["uvp"] + 200) * 16 // 100)
        # and with link_loss "stop" nothing at all
        assert ChargePolicy(_config(link_loss="stop")).decide(snap, STALE) is False
        # new data ends the outage
        p.fresh.data_ok(ticks_ms())
        assert p.fresh.state(ticks_ms()) == FRESH
    finally:
        uart._close()


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
