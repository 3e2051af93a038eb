# Every safety decision about what the inverter is told, in one place
# (docs/charge-control.md). Each cycle:
#
#   WAIT (no complete data set yet)  -> send nothing
#   STALE, link_loss "stop"          -> send nothing
#   STALE, link_loss "zeros"         -> CCL = DCL = 0, both enables off, the
#                                       LINK_LOST flag; CVL / DVL kept
#   implausible data (charge.plausible) -> as STALE "zeros", flag IMPLAUSIBLE
#                                       (nothing at all before the first
#                                       valid data set)
#   FRESH and plausible              -> the charge state machine
#                                       (charge.state), then every limiter:
#                                       each limit is the minimum of its
#                                       candidates, the blocks set it to 0,
#                                       then hold-and-ramp / slew
#                                       (charge.ramp) and the SOC shaping.
#
# The protocol encoders only place lim's values into frames. Allocation-free
# per call; mV / mA / dC inside, dV / dA out.

from array import array

from charge import limits as L
from charge import plausible
from charge import presets as PR
from charge.limiters import Latch, Pick, Window, auto_cvl_mv, battery_temps, cvl_cap_mv
from charge.ramp import HOLDING, RAMPING, Ramp, Slew
from charge.state import FLOAT, ChargeState
from compat import ticks_ms
from pack import flags as F
from pack import snapshot as S
from sources.base import STALE, WAIT

# link_loss "auto": the protocols whose inverters are reported to keep using
# the battery at 0 A limits in a fault (Deye / Sunsynk / Sol-Ark), so the
# frames stop and the inverter raises its own BMS-communication fault; every
# other protocol gets "zeros" (docs/inverter-can.md "Safe defaults")
STOP_ON_LOSS = ("deye",)


def link_loss_mode(cfg):
    """The link-loss policy in force: "zeros" or "stop"."""
    mode = cfg["link_loss"]
    if mode == "auto":
        return "stop" if cfg.get("protocol") in STOP_ON_LOSS else "zeros"
    return mode


class ChargePolicy:
    def __init__(self, cfg, now=None):
        if now is None:
            now = ticks_ms()
        self.apply(cfg)
        self.lim = L.Limits()
        self.ctl = ChargeState(now)
        self.ccl = Ramp(now)
        self.dcl = Ramp(now)
        self.cvl = Slew(now)
        self.ccl_taper = Latch()
        self.dcl_taper = Latch()
        self.charge_rate = Latch()
        self.discharge_rate = Latch()
        self.charge_window = Window()
        self.discharge_window = Window()
        self.mos_window = Window()
        self.at_dvl = False
        self.implausible = plausible.OK  # the last plausibility verdict
        self.notify = None  # called with the new verdict when it changes
        self.valid_once = False  # a fresh, plausible data set has been seen
        self.link_lost = False  # the last decision was made on stale data
        self.stopped = False  # ... and the "stop" policy held the frames back
        self.force = False  # force-charge request latched (SOC hysteresis)
        self.bulk_mv = 0  # per cell, in force this cycle
        self.ccl_target_ma = 0  # before hold and ramp, for the console
        self.dcl_target_ma = 0
        self._t = array("h", [0, 0])
        self._pick = Pick()
        self.modules = 1  # packs in the last snapshot (charge.battery)

    def apply(self, cfg):
        """Parameters from a validated config (app.config, charge.schema),
        read as they are each cycle: the console's `set` changes them at
        run time without a reboot."""
        self.cfg = cfg
        self.pre = PR.of(cfg)
        self.link_loss = link_loss_mode(cfg)
        self.stop_on_loss = self.link_loss == "stop"

    def _zero(self, lim, why, now):
        self.ccl.step(0, now, 0, 0)
        self.dcl.step(0, now, 0, 0)
        lim.ccl_da = lim.dcl_da = 0
        lim.charge_reason = lim.discharge_reason = why
        lim.charge_enable = lim.discharge_enable = False
        lim.force_charge = False
        self.force = False

    def decide(self, snap, state, now=None):
        """Fill self.lim for a link state (sources.base WAIT / FRESH /
        STALE) at ticks `now`; True when a frame set is to be sent."""
        if now is None:
            now = ticks_ms()
        lim = self.lim
        c = self.cfg
        pre = self.pre
        if snap.modules > self.modules:
            # a pack joined: its share arrives through hold and ramp
            # (docs/charge-control.md "Several packs")
            self.ccl.pause(now)
            self.dcl.pause(now)
        self.modules = snap.modules
        if state == WAIT:
            self._zero(lim, L.NO_DATA, now)
            self.ctl.update(snap, c, pre, now, False, 0, 1, False)
            return False
        stale = state == STALE
        self.link_lost = stale
        self.stopped = stale and self.stop_on_loss
        t = self._t
        have_t = battery_temps(snap, t)
        ok = False
        why = L.STALE
        if not stale:
            if (snap.have & S.HAVE_FOR_INVERTER) != S.HAVE_FOR_INVERTER or snap.cell_count == 0:
                why = L.NO_DATA
            elif not snap.settings_ok:
                why = L.NO_SETTINGS
            else:
                code = plausible.check(snap, c, pre, have_t)
                if code != self.implausible:
                    self.implausible = code
                    if self.notify is not None:
                        self.notify(code)
                ok = code == plausible.OK
                why = L.IMPLAUSIBLE
        lim.flags = snap.flags
        if stale:
            lim.flags |= F.LINK_LOST
        elif self.implausible != plausible.OK:
            lim.flags |= F.IMPLAUSIBLE
        cells = snap.cell_count
        cap_mah = c["capacity_ah"] * 1000 or snap.full_mah or snap.design_mah
        cap_dah = cap_mah // 100 if cap_mah >= 100 else 1
        lim.capacity_ah = cap_mah // 1000
        cap = cvl_cap_mv(snap, c["ovp_margin_mv"], cells) if ok else 0
        bulk = self._bulk_mv(snap, c, cap // cells) if ok else self.bulk_mv
        self.bulk_mv = bulk
        self.ctl.update(snap, c, pre, now, ok, bulk, cap_dah, self.force)
        if not ok:
            self._zero(lim, why, now)
            self.ccl_target_ma = self.dcl_target_ma = 0
            lim.cvl_reason = L.KEPT  # CVL / DVL: the last values from valid data
            self._soc(snap, lim, False)
            # before the first valid data set there are no values to keep:
            # nothing is sent, as in WAIT (the console says why)
            return self.valid_once and not self.stopped
        self.valid_once = True

        hot = self._mos_hot(snap, c)
        self.dcl_target_ma = self._dcl(snap, c, pre, cells, cap_dah, have_t, hot, now)
        dcl_why = self._pick.why
        self.ccl_target_ma = self._ccl(snap, c, bulk, cap_dah, have_t, hot, now)
        ccl_why = self._pick.why
        hold = c["hold_s"] * 1000
        rate = c["ramp_a_s"] * 1000
        ccl = self.ccl.step(self.ccl_target_ma, now, hold, rate)
        dcl = self.dcl.step(self.dcl_target_ma, now, hold, rate)
        lim.ccl_da = ccl // 100
        lim.dcl_da = dcl // 100
        lim.charge_reason = _ramp_why(self.ccl, ccl_why, self.ccl_target_ma)
        lim.discharge_reason = _ramp_why(self.dcl, dcl_why, self.dcl_target_ma)
        self._cvl(snap, c, lim, bulk, cap, cells, now)
        lim.dvl_dv = (self._dvl_mv(snap, c, cells) + 99) // 100
        lim.charge_enable = lim.ccl_da > 0
        lim.discharge_enable = lim.dcl_da > 0 and snap.pack_mv > lim.dvl_dv * 100
        self._soc(snap, lim, True)
        return not self.stopped

    # --- CVL -----------------------------------------------------------

    def _bulk_mv(self, snap, c, cap):
        """Bulk per cell: the configured value, the BMS's RCV when that is
        stricter, and never above the cap per cell (cap)."""
        bulk = c["bulk_cell_mv"]
        if snap.rcv_mv and snap.rcv_mv < bulk:
            bulk = snap.rcv_mv
        return cap if bulk > cap else bulk

    def _cvl(self, snap, c, lim, bulk, cap, cells, now):
        if self.ctl.state == FLOAT:
            fl = c["float_cell_mv"]
            if snap.rfv_mv and snap.rfv_mv < fl:
                fl = snap.rfv_mv
            if fl > bulk:
                fl = bulk
            target = fl * cells
            why = L.FLOAT_V
        else:
            fl = c["float_cell_mv"] if c["float_cell_mv"] < bulk else bulk
            target = bulk * cells
            why = L.BULK_V
        if c["auto_cvl"] == "on":
            a = auto_cvl_mv(snap, bulk, cells)
            floor = fl * cells
            if a and a < floor:
                a = floor
            if a and a < target:
                target = a
                why = L.AUTO_CVL
        out = self.cvl.step(target, snap.pack_mv, self.dcl_target_ma == 0, now,
                            c["cvl_up_mv_s"] * cells, c["cvl_down_mv_min"] * cells)
        if out != target:
            why = L.SLEW
        if out > cap:  # the hard cap wins over any ramp
            out = cap
            self.cvl.out = cap
            why = L.OVP_CAP
        lim.cvl_dv = out // 100
        lim.cvl_reason = why

    def _dvl_mv(self, snap, c, cells):
        m = c["dvl_margin_mv"]
        dvl = (snap.cell_uvp_mv + m) * cells
        if snap.pack_uvp_mv:
            pk = snap.pack_uvp_mv + m * cells
            if pk > dvl:
                dvl = pk
        return dvl

    # --- currents ------------------------------------------------------

    def _ccl(self, snap, c, bulk, cap_dah, have_t, hot, now):
        pick = self._pick
        base = _start(pick, c["max_charge_a"], snap.max_charge_ma)
        if not snap.charge_fet:
            pick.start(0, L.FET_OFF)
        elif not snap.charge_switch:
            pick.start(0, L.SWITCH_OFF)
        elif snap.flags & L.CHARGE_BLOCKING:
            pick.start(0, L.ALARM)
        elif snap.cell_max_mv >= snap.cell_ovp_mv:
            pick.start(0, L.CELL_LIMIT)
        elif snap.pack_ovp_mv and snap.pack_mv >= snap.pack_ovp_mv:
            pick.start(0, L.PACK_LIMIT)
        if hot:
            pick.offer(0, L.MOS_TEMP)
        if have_t:
            self._temperature(c, self.charge_window, self.charge_rate, c["charge_min_c"], c["charge_max_c"],
                              snap.charge_utp_dc, snap.charge_otp_dc, c["charge_rate_table"], cap_dah, now)
        # the taper, shifted down when its top would pass OVP - margin
        tab = c["ccl_taper_table"]
        x = snap.cell_max_mv - bulk
        over = bulk + tab[len(tab) - 1][0] - (snap.cell_ovp_mv - c["ovp_margin_mv"])
        if over > 0:
            x += over
        f = self.ccl_taper.update(tab, 1, x, x, c["ccl_taper_hyst_mv"], now, c["release_s"] * 1000)
        pick.offer(base * f // 1000, L.CELL_TAPER)
        return pick.v

    def _dcl(self, snap, c, pre, cells, cap_dah, have_t, hot, now):
        pick = self._pick
        base = _start(pick, c["max_discharge_a"], snap.max_discharge_ma)
        dvl = self._dvl_mv(snap, c, cells)
        if snap.pack_mv <= dvl:
            self.at_dvl = True
        elif snap.pack_mv >= dvl + c["dvl_hyst_mv"] * cells:
            self.at_dvl = False
        if not snap.discharge_fet:
            pick.start(0, L.FET_OFF)
        elif not snap.discharge_switch:
            pick.start(0, L.SWITCH_OFF)
        elif snap.flags & L.DISCHARGE_BLOCKING:
            pick.start(0, L.ALARM)
        elif snap.cell_min_mv <= snap.cell_uvp_mv:
            pick.start(0, L.CELL_LIMIT)
        elif snap.pack_uvp_mv and snap.pack_mv <= snap.pack_uvp_mv:
            pick.start(0, L.PACK_LIMIT)
        elif self.at_dvl:
            pick.start(0, L.AT_DVL)
        if hot:
            pick.offer(0, L.MOS_TEMP)
        if have_t:
            self._temperature(c, self.discharge_window, self.discharge_rate, c["discharge_min_c"],
                              c["discharge_max_c"], snap.discharge_utp_dc, snap.discharge_otp_dc,
                              c["discharge_rate_table"], cap_dah, now)
        # the taper's zero point kept at least uvp_margin above UVP
        tab = c["dcl_taper_table"]
        zero = pre[PR.EMPTY]
        low = snap.cell_uvp_mv + c["uvp_margin_mv"] - tab[0][0]
        if zero < low:
            zero = low
        x = snap.cell_min_mv - zero
        f = self.dcl_taper.update(tab, 1, x, x, c["dcl_taper_hyst_mv"], now, c["release_s"] * 1000)
        pick.offer(base * f // 1000, L.CELL_TAPER)
        return pick.v

    def _temperature(self, c, window, rate, lo_c, hi_c, utp_dc, otp_dc, table, cap_dah, now):
        """The temperature window -- the user's, narrowed to the BMS's own
        UTP / OTP less the margin -- and the C-rate table, offered to the
        running minimum (charge or discharge side)."""
        pick = self._pick
        t = self._t
        m = c["temp_margin_c"] * 10
        hyst = c["temp_hyst_c"] * 10
        lo = lo_c * 10
        if utp_dc != S.NO_TEMP and utp_dc + m > lo:
            lo = utp_dc + m  # never below the BMS's own UTP
        hi = hi_c * 10
        if otp_dc != S.NO_TEMP and otp_dc - m < hi:
            hi = otp_dc - m
        if window.update(lo, hi, t[0], t[1], hyst):
            pick.offer(0, L.TEMP_WINDOW)
        f = rate.update(table, 10, t[0], t[1], hyst, now, c["release_s"] * 1000)
        pick.offer(cap_dah * f // 10, L.TEMP_RATE)

    def _mos_hot(self, snap, c):
        t = snap.temps[S.T_MOS]
        if t == S.NO_TEMP:
            return False
        m = c["temp_margin_c"] * 10
        hi = c["mos_max_c"] * 10
        if snap.mos_otp_dc != S.NO_TEMP and snap.mos_otp_dc - m < hi:
            hi = snap.mos_otp_dc - m
        return self.mos_window.update(-32768, hi, t, t, c["temp_hyst_c"] * 10)

    # --- SOC -----------------------------------------------------------

    def _soc(self, snap, lim, ok):
        """100 % only once absorption has ended (FLOAT), else at most 99 %;
        the force-charge request with hysteresis, only with valid data and
        while charging is allowed (docs/charge-control.md "SOC shaping")."""
        soc = snap.soc_pct
        if soc > 99 and self.ctl.state != FLOAT:
            soc = 99
        lim.soc_pct = soc
        on = self.cfg["force_charge_soc"]
        if not ok or not on:
            self.force = False
        elif snap.soc_pct <= on:
            self.force = True
        elif snap.soc_pct >= on + self.cfg["force_charge_hyst"]:
            self.force = False
        lim.force_charge = self.force and lim.charge_enable


def _start(pick, user_a, bms_ma):
    """Start the running minimum at the user's cap or 0.9 x the BMS's
    maximum, whichever is lower; returns it (the base of the fractions)."""
    bms = bms_ma * 9 // 10
    user = user_a * 1000
    if user <= bms:
        pick.start(user, L.USER_MAX)
    else:
        pick.start(bms, L.BMS_MAX)
    return pick.v


def _ramp_why(ramp, why, target):
    if target > 0:
        if ramp.mode == HOLDING:
            return L.HOLD
        if ramp.mode == RAMPING:
            return L.RAMP
    return why

