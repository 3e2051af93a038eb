"""A hybrid inverter that obeys what the gateway tells it over CAN, for the
closed-loop simulation of the charge controller (tools/closed_loop.py).
Host-only, plain CPython, SI units.

Frames: the Pylontech LV set, decoded here with struct from the wire tables
in docs/inverter-can.md "Pylontech" -- independently of the firmware's
encoder (the repository has no DBC of its own; the third-party one in
../shared/dbc is GPL and only read by host_tests/cpython/test_pylontech_dbc.py):
  0x351  CVL u16 0.1 V, CCL s16 0.1 A, DCL s16 0.1 A, DVL u16 0.1 V
  0x355  SOC u16 %, SOH u16 %
  0x356  pack V s16 0.01 V, current s16 0.1 A, temperature s16 0.1 degC
  0x359  protection / alarm bits (u32 LE), modules
  0x35C  byte 0: bit 7 charge enable, bit 6 discharge enable, bits 5 / 4
         force-charge request I / II (either one counts as a request)
  0x35E  name
A 0x351 is what makes the limits valid: until the first one the inverter
does not use the battery at all (an inverter in lithium / BMS mode waits for
the BMS).

Power flow each control tick (control(), dt <= 1 s):
  * PV (a power profile) first feeds the house load (a profile); the surplus
    charges the battery, limited by CCL (0 without charge enable), by the
    inverter's own maximum and by its charge ramp (ramp_up_a_s: a real
    inverter raises its charge current at a few A/s after a CCL increase or a
    cloud; decreases are fast, ramp_down_a_s); the rest is exported.
  * constant voltage: the inverter regulates the battery voltage *it
    measures* (terminal voltage + cable drop + meter offset) to CVL, like a
    charger's voltage loop, which is much faster than a CAN period: each tick
    the current is the largest one that keeps the measured voltage at or
    below CVL at the end of the tick (solved on the battery model, a secant
    step or two). With discharge_above_cvl (a Deye quirk, esphome-yambms #46)
    a pack above CVL is discharged towards CVL at up to DCL; off by default.
  * a PV deficit is covered from the battery, limited by DCL (0 without
    discharge enable); below DVL (measured) the inverter stops discharging
    until the voltage is dvl_hyst_v above DVL again; the rest comes from the
    grid. With shutdown_soc > 0 it also stops discharging at that SOC (0x355).
  * force charge (0x35C bit 5 or 4, honour_force_charge): charges from the
    grid at grid_charge_a on top of the PV surplus, within CCL and CVL.
  * CAN silence: an assumption, documented here because inverters differ
    (docs/charge-control.md "Link loss": SMA goes to standby after 60 s,
    Growatt cuts its output, Deye raises a BMS fault): the inverter keeps
    using the last limits it received for can_timeout_s (default 60 s), then
    stops charging and discharging until a new 0x351 arrives.
"""

import struct

from tools.battery_model import Profile

ID_LIMITS = 0x351
ID_SOC = 0x355
ID_MEASURE = 0x356
ID_ALARMS = 0x359
ID_REQUEST = 0x35C
ID_NAME = 0x35E

CHARGE_ENABLE = 0x80
DISCHARGE_ENABLE = 0x40
FORCE_CHARGE = 0x20 | 0x10  # "force charge request I" (bit 5) / "II" (bit 4)


class PylonState:
    """What the inverter has been told: the fields of the last frame of each
    id, decoded with struct (None until seen)."""

    def __init__(self):
        self.cvl_v = None
        self.ccl_a = None
        self.dcl_a = None
        self.dvl_v = None
        self.soc_pct = None
        self.soh_pct = None
        self.pack_v = None
        self.pack_a = None
        self.temp_c = None
        self.alarms = None
        self.modules = None
        self.request = None
        self.name = None

    def decode(self, can_id, data):
        """Take one frame; returns True for a frame of the Pylontech set.
        ValueError for a frame too short for its id."""
        if can_id == ID_LIMITS:
            if len(data) < 8:
                raise ValueError("0x351 shorter than 8 bytes")
            cvl, ccl, dcl, dvl = struct.unpack_from("<HhhH", data, 0)
            self.cvl_v, self.ccl_a, self.dcl_a, self.dvl_v = cvl / 10.0, ccl / 10.0, dcl / 10.0, dvl / 10.0
        elif can_id == ID_SOC:
            if len(data) < 4:
                raise ValueError("0x355 shorter than 4 bytes")
            self.soc_pct, self.soh_pct = struct.unpack_from("<HH", data, 0)
        elif can_id == ID_MEASURE:
            if len(data) < 6:
                raise ValueError("0x356 shorter than 6 bytes")
            v, i, t = struct.unpack_from("<hhh", data, 0)
            self.pack_v, self.pack_a, self.temp_c = v / 100.0, i / 10.0, t / 10.0
        elif can_id == ID_ALARMS:
            if len(data) < 5:
                raise ValueError("0x359 shorter than 5 bytes")
            self.alarms = struct.unpack_from("<I", data, 0)[0]
            self.modules = data[4]
        elif can_id == ID_REQUEST:
            if len(data) < 1:
                raise ValueError("0x35C is empty")
            self.request = data[0]
        elif can_id == ID_NAME:
            self.name = bytes(data).decode("ascii", "replace").rstrip()
        else:
            return False
        return True

    @property
    def charge_enable(self):
        return self.request is not None and bool(self.request & CHARGE_ENABLE)

    @property
    def discharge_enable(self):
        return self.request is not None and bool(self.request & DISCHARGE_ENABLE)

    @property
    def force_charge(self):
        return self.request is not None and bool(self.request & FORCE_CHARGE)


def _profile(p):
    return p if isinstance(p, Profile) else Profile(p)


class Inverter:
    """See the module doc. receive(t_s, frames) with the frames of one CAN
    burst; control(t_s, pack, dt) -> the battery current (A, + = charging) it
    drives for the next dt seconds."""

    def __init__(self, pv_w=0.0, load_w=0.0, max_charge_a=150.0, max_discharge_a=150.0, ramp_up_a_s=5.0,
                 ramp_down_a_s=50.0, efficiency=0.96, can_timeout_s=60.0, meter_offset_v=0.0, cable_ohm=0.0,
                 dvl_hyst_v=0.5, grid_charge_a=20.0, honour_force_charge=True, discharge_above_cvl=False,
                 shutdown_soc=0):
        self.pv = _profile(pv_w)
        self.load = _profile(load_w)
        self.max_charge_a = max_charge_a
        self.max_discharge_a = max_discharge_a
        self.ramp_up_a_s = ramp_up_a_s
        self.ramp_down_a_s = ramp_down_a_s
        self.efficiency = efficiency
        self.can_timeout_s = can_timeout_s
        self.meter_offset_v = meter_offset_v
        self.cable_ohm = cable_ohm
        self.dvl_hyst_v = dvl_hyst_v
        self.grid_charge_a = grid_charge_a
        self.honour_force_charge = honour_force_charge
        self.discharge_above_cvl = discharge_above_cvl
        self.shutdown_soc = shutdown_soc
        self.rx = PylonState()
        self.last_limits_s = None  # time of the last 0x351
        self.bad_frames = 0
        self.current_a = 0.0
        self.mode = "waiting for BMS"
        self.dvl_stopped = False
        self.cv_active = False  # the last tick was voltage-limited
        self.grid_w = 0.0  # + import
        self.export_w = 0.0

    # -- CAN ---------------------------------------------------------------------
    def receive(self, t_s, frames):
        for can_id, data in frames:
            try:
                known = self.rx.decode(can_id, data)
            except ValueError:
                self.bad_frames += 1
                continue
            if known and can_id == ID_LIMITS:
                self.last_limits_s = t_s

    def link_ok(self, t_s):
        return self.last_limits_s is not None and t_s - self.last_limits_s <= self.can_timeout_s

    # -- measurement ---------------------------------------------------------------
    def measured_v(self, pack_v, current):
        """The battery voltage as the inverter sees it: at its terminals
        (cable drop adds while charging) plus its meter's offset."""
        return pack_v + current * self.cable_ohm + self.meter_offset_v

    def _cv_current(self, pack, dt, cvl, hi):
        """The largest current <= hi (A) that keeps the measured voltage at
        the end of dt at or below cvl: secant steps on the battery model."""
        def f(i):
            return self.measured_v(pack.voltage_after(i, dt), i) - cvl
        if f(hi) <= 0:
            return hi
        lo = 0.0 if hi > 0 else hi - 1.0
        flo = f(lo)
        if flo >= 0 and not self.discharge_above_cvl:
            return 0.0
        if flo >= 0:  # discharge towards CVL (Deye quirk)
            lo = -self.max_discharge_a
            flo = f(lo)
            if flo >= 0:
                return lo
        a, fa, b, fb = lo, flo, hi, f(hi)
        for _ in range(3):
            x = a - fa * (b - a) / (fb - fa)
            fx = f(x)
            if abs(fx) < 1e-4:
                break
            if fx > 0:
                b, fb = x, fx
            else:
                a, fa = x, fx
        return a if f(x) > 0 else x

    # -- one tick ------------------------------------------------------------------
    def control(self, t_s, pack, dt):
        rx = self.rx
        pv = max(self.pv(t_s), 0.0)
        load = max(self.load(t_s), 0.0)
        if not self.link_ok(t_s):
            self.mode = "waiting for BMS" if self.last_limits_s is None else "BMS comm fault (CAN silent)"
            self.current_a = 0.0
            self.cv_active = False
            self._grid(pv, load, 0.0, pack)
            return 0.0
        v_now = self.measured_v(pack.voltage(), pack.current_a)
        vbat = max(pack.voltage(), 1.0)
        eff = self.efficiency
        surplus_w = pv - load  # AC-side balance
        # charge side
        ccl = max(rx.ccl_a or 0.0, 0.0) if rx.charge_enable else 0.0
        ccl = min(ccl, self.max_charge_a)
        want = max(surplus_w, 0.0) * eff / vbat
        if self.honour_force_charge and rx.force_charge:
            want += self.grid_charge_a
        target = min(want, ccl)
        prev = max(self.current_a, 0.0)
        if target > prev:
            target = min(target, prev + self.ramp_up_a_s * dt)
        elif target < prev:
            target = max(target, prev - self.ramp_down_a_s * dt)
        i = target
        self.cv_active = False
        if rx.cvl_v is not None and (i > 0 or self.discharge_above_cvl):
            i_cv = self._cv_current(pack, dt, rx.cvl_v, i)
            if i_cv < i - 1e-9:
                self.cv_active = True
                i = i_cv
        mode = "CV" if self.cv_active else ("charge" if i > 0 else "idle")
        if self.honour_force_charge and rx.force_charge and i > 0:
            mode += " (force charge)"
        # discharge side: the deficit, when nothing is charging
        if i <= 0 and surplus_w < 0:
            dvl = rx.dvl_v or 0.0
            if self.dvl_stopped and v_now > dvl + self.dvl_hyst_v:
                self.dvl_stopped = False
            if not self.dvl_stopped and v_now <= dvl:
                self.dvl_stopped = True
            soc_stop = self.shutdown_soc and rx.soc_pct is not None and rx.soc_pct <= self.shutdown_soc
            dcl = max(rx.dcl_a or 0.0, 0.0) if rx.discharge_enable else 0.0
            dcl = min(dcl, self.max_discharge_a)
            if self.dvl_stopped or soc_stop:
                dcl = 0.0
            need = -surplus_w / eff / vbat
            d = min(need, dcl)
            if d > 0:
                i = min(i, -d)
                mode = "discharge"
            elif self.dvl_stopped:
                mode = "idle (below DVL)"
        self.current_a = i
        self.mode = mode
        self._grid(pv, load, i, pack)
        return i

    def _grid(self, pv, load, i, pack):
        bat_w = i * pack.voltage()
        ac = pv - load - (bat_w / self.efficiency if bat_w > 0 else bat_w * self.efficiency)
        self.grid_w = max(-ac, 0.0)
        self.export_w = max(ac, 0.0)
