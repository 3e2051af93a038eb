"""An LFP pack and its JK-PB BMS, for the closed-loop simulation of the charge
controller (tools/closed_loop.py). Host-only, plain CPython, SI units (V, A,
Ah, s, degC, ohm) in floats: nothing here ships.

The pack (Pack): N cells (default 16 x 280 Ah prismatic), each with its own
capacity, state of charge and resistance, in series. A cell is the usual
equivalent circuit of battery-model literature (the "Thevenin" model with two
RC pairs):

    V = OCV(SOC) + I * R0 + V1 + V2      I > 0 = charging
    dVk/dt = (I * Rk - Vk) / tauk        (k = 1 fast, 2 slow polarisation)

  * OCV(SOC): OCV_LFP below, the shape of a typical published LFP (LiFePO4 /
    graphite) open-circuit-voltage curve -- steep knees below ~10 % and above
    ~95 % SOC, the flat two-step plateau of ~3.26-3.34 V between (as in the
    GITT / low-rate OCV curves of LFP cells in the literature and in 280 Ah
    prismatic cell datasheets); the values are rounded round numbers of that
    shape, not one cell's measurement. The top point is where a charge at a
    low current ends (~3.55 V at 100 %); beyond 100 % (overcharge) and below
    0 % the curve keeps climbing / falling steeply, so a cell driven past its
    limits shows it.
  * R0 0.25 mOhm (a 280 Ah prismatic cell's 1 kHz AC resistance is specified
    at <= 0.25 mOhm), R1 0.20 mOhm / 60 s (charge transfer) and R2 0.25 mOhm /
    1800 s (diffusion): 0.7 mOhm DC in all, which puts a cell charged at 0.5 C
    about 0.1 V above its OCV on the plateau, as datasheet charge curves show,
    and gives the tens-of-minutes current taper under a constant voltage and
    the slow relaxation after the current stops that real LFP cells show.
    Every resistance grows in the cold: x exp(0.03 * (25 - T)), about x2 at
    0 degC; R1 and R2 also grow towards the ends of the SOC range (x4 at 0 %
    and 100 %, polarisation_factor), the bathtub shape of a cell's pulse
    resistance over SOC, which is what stretches the constant-voltage taper
    at the top over tens of minutes.
  * temperature: one lumped pack temperature. Either it follows a profile
    (Profile, e.g. -5 degC warming to +15 degC) exactly, or the profile is the
    ambient and the pack warms from its I^2 R losses (thermal_tau_s,
    heat capacity 5.4 kg x 1000 J/(kg K) per cell).

The BMS (JkBms): a JK-PB on top of the pack, with the JK behaviour of its
own protections (docs/jk-bms.md "Alarm bits" for the alarm word):
  * cell OVP: a cell at or above cell_ovp_v opens the charge MOSFET (charge
    current forced to 0; discharge still flows through the body diode) until
    every cell is below cell_ovpr_v (in this model a cell pushed to OVP
    keeps the overcharge as SOC past the top knee, so it rests above OVPR
    until something discharges it: recovery comes later than on a real
    cell, whose top-of-charge voltage is partly polarisation that relaxes);
  * cell UVP: a cell at or below cell_uvp_v opens the discharge MOSFET until
    every cell is at or above cell_uvpr_v (charging stays possible);
  * charge OTP / UTP: the battery temperature at or above charge_otp_c /
    at or below charge_utp_c opens the charge MOSFET until it is back past
    charge_otpr_c / charge_utpr_c; discharge OTP / UTP likewise for the
    discharge MOSFET; MOSFET OTP (mos_otp_c / mos_otpr_c) opens both. The JK
    judges temperature alone: a charge UTP trips in the cold whether or not a
    current flows;
  * charge / discharge OCP: more than max_charge_current_a /
    max_discharge_current_a for the OCP delay (30 s) opens that MOSFET for the
    recovery time (60 s).
  Each time a protection trips (not-tripped -> tripped) it is counted in
  JkBms.trips by kind (KINDS): these are the "BMS protection trips" the charge
  controller must never cause.
  * balancer (JK active balancer): while the highest cell is at or above
    balance_start_v and the cell spread is at least balance_trigger_v, it
    moves max_balance_current_a out of the highest cell into the lowest
    (90 % efficient);
  * SOC: coulomb counting against the nominal capacity from a correct start,
    clamped to 0..100 %, calibrated to 100 % when a cell reaches soc100_v
    while charging and to 0 % when one falls to soc0_v while discharging (our
    model of JK's "SOC-100% / SOC-0% voltage" settings; an assumption);
  * what the BMS reports (state()): cell voltages to the mV with an optional
    +-cell_noise_mv of seeded jitter, current to the mA, temperatures to
    0.1 degC, the JK02 alarm word of the protections in force, the MOSFET
    states and every setting -- a state dict in the schema of
    tools/state_json.py, which tools/jkbms_sim.py turns into the JK-PB's wire
    frames.
"""

import bisect
import math
import random

# --------------------------------------------------------------------- OCV

# (SOC fraction, open-circuit voltage) of an LFP cell: a typical published
# LFP curve (see the module doc).
OCV_LFP = (
    (-0.020, 1.800), (-0.005, 2.300),
    (0.000, 2.500), (0.010, 2.800), (0.020, 2.950), (0.030, 3.050), (0.050, 3.150), (0.070, 3.190),
    (0.100, 3.220), (0.150, 3.250), (0.200, 3.262), (0.300, 3.280), (0.400, 3.293), (0.500, 3.300),
    (0.600, 3.305), (0.650, 3.315), (0.700, 3.325), (0.800, 3.330), (0.900, 3.335), (0.950, 3.345),
    (0.970, 3.360), (0.980, 3.380), (0.990, 3.420), (0.995, 3.470), (1.000, 3.550),
    (1.005, 3.750), (1.020, 4.300),
)
_OCV_X = tuple(p[0] for p in OCV_LFP)
_OCV_Y = tuple(p[1] for p in OCV_LFP)


def ocv_lfp(soc):
    """Open-circuit voltage (V) of an LFP cell at soc (fraction, may lie a
    little outside 0..1), linear between the table points, clamped at the
    table's ends."""
    if soc <= _OCV_X[0]:
        return _OCV_Y[0]
    if soc >= _OCV_X[-1]:
        return _OCV_Y[-1]
    k = bisect.bisect_right(_OCV_X, soc)
    x0, x1 = _OCV_X[k - 1], _OCV_X[k]
    y0, y1 = _OCV_Y[k - 1], _OCV_Y[k]
    return y0 + (y1 - y0) * (soc - x0) / (x1 - x0)


# ----------------------------------------------------------------- profiles

class Profile:
    """A value over time, piecewise linear through (t_s, value) points,
    constant before the first and after the last. Profile(5.0) is constant."""

    def __init__(self, points):
        if isinstance(points, (int, float)):
            points = ((0.0, float(points)),)
        pts = sorted((float(t), float(v)) for t, v in points)
        if not pts:
            raise ValueError("a profile needs at least one point")
        self.ts = tuple(p[0] for p in pts)
        self.vs = tuple(p[1] for p in pts)

    def __call__(self, t):
        ts, vs = self.ts, self.vs
        if t <= ts[0]:
            return vs[0]
        if t >= ts[-1]:
            return vs[-1]
        k = bisect.bisect_right(ts, t)
        t0, t1 = ts[k - 1], ts[k]
        return vs[k - 1] + (vs[k] - vs[k - 1]) * (t - t0) / (t1 - t0)

    def points(self):
        return list(zip(self.ts, self.vs, strict=True))


# -------------------------------------------------------------------- cells

R0_OHM = 0.20e-3
R1_OHM = 0.15e-3
TAU1_S = 60.0
R2_OHM = 0.15e-3
TAU2_S = 1800.0
R_TEMP_COEFF = 0.03  # per degC below 25 degC: R x exp(coeff * (25 - T))
CELL_HEAT_J_K = 5.4 * 1000.0  # 5.4 kg x ~1000 J/(kg K), a 280 Ah prismatic cell


def r_factor(temp_c):
    """How much a cell's resistances grow at temp_c (1.0 at 25 degC)."""
    return math.exp(R_TEMP_COEFF * (25.0 - temp_c))


POLARISATION_END_GAIN = 3.0  # R1, R2 x (1 + 3) at 0 % and 100 % SOC


def polarisation_factor(soc):
    """How much the polarisation resistances (R1, R2) grow towards the ends
    of the SOC range: 1.0 between 10 % and 90 %, rising quadratically to x4
    at 0 % and 100 % (the bathtub of a cell's pulse resistance over SOC)."""
    if soc > 0.9:
        x = (soc - 0.9) / 0.1
    elif soc < 0.1:
        x = (0.1 - soc) / 0.1
    else:
        return 1.0
    if x > 1.0:
        x = 1.0
    return 1.0 + POLARISATION_END_GAIN * x * x


class Cell:
    __slots__ = ("capacity_ah", "soc", "r0", "r1", "tau1", "r2", "tau2", "v1", "v2")

    def __init__(self, capacity_ah=280.0, soc=0.5, r0=R0_OHM, r1=R1_OHM, tau1=TAU1_S, r2=R2_OHM, tau2=TAU2_S):
        if capacity_ah <= 0:
            raise ValueError("a cell needs a capacity > 0")
        self.capacity_ah = float(capacity_ah)
        self.soc = float(soc)
        self.r0, self.r1, self.tau1, self.r2, self.tau2 = r0, r1, tau1, r2, tau2
        self.v1 = 0.0
        self.v2 = 0.0

    def voltage(self, current, rf=1.0):
        """Terminal voltage with current flowing now (polarisation as it is)."""
        return ocv_lfp(self.soc) + current * self.r0 * rf + self.v1 + self.v2

    def after(self, current, dt, rf=1.0):
        """Terminal voltage at the end of dt seconds of current (no change)."""
        e1 = math.exp(-dt / self.tau1)
        e2 = math.exp(-dt / self.tau2)
        pf = rf * polarisation_factor(self.soc)
        soc = self.soc + current * dt / 3600.0 / self.capacity_ah
        v1 = self.v1 * e1 + current * self.r1 * pf * (1.0 - e1)
        v2 = self.v2 * e2 + current * self.r2 * pf * (1.0 - e2)
        return ocv_lfp(soc) + current * self.r0 * rf + v1 + v2

    def step(self, current, dt, rf=1.0):
        e1 = math.exp(-dt / self.tau1)
        e2 = math.exp(-dt / self.tau2)
        pf = rf * polarisation_factor(self.soc)
        self.soc += current * dt / 3600.0 / self.capacity_ah
        self.v1 = self.v1 * e1 + current * self.r1 * pf * (1.0 - e1)
        self.v2 = self.v2 * e2 + current * self.r2 * pf * (1.0 - e2)

    def move_ah(self, ah):
        """Charge taken out (ah < 0) or put in by the balancer."""
        self.soc += ah / self.capacity_ah

    def loss_w(self, current, rf=1.0):
        pf = rf * polarisation_factor(self.soc)
        return current * current * self.r0 * rf + self.v1 * self.v1 / (self.r1 * pf) \
            + self.v2 * self.v2 / (self.r2 * pf)


# --------------------------------------------------------------------- pack

class Pack:
    """Cells in series, one current, one lumped temperature.

    temp: a Profile (or a number) of the pack temperature; with
    thermal_tau_s it is the ambient instead, and the pack starts at the
    ambient and warms from its own losses."""

    def __init__(self, cells, temp=25.0, thermal_tau_s=None):
        if not cells:
            raise ValueError("a pack needs cells")
        self.cells = list(cells)
        self.temp_profile = temp if isinstance(temp, Profile) else Profile(temp)
        self.thermal_tau_s = thermal_tau_s
        self.t_s = 0.0
        self.current_a = 0.0
        self.temp_c = self.temp_profile(0.0)
        self._v = None  # cell voltages as they are now (cached until the next change)

    @classmethod
    def build(cls, n=16, capacity_ah=280.0, soc=0.5, capacity_spread=0.0, soc_spread=0.0, r_spread=0.0, seed=1,
              capacities=None, top_balanced=False, offsets_ah=None, temp=25.0, thermal_tau_s=None):
        """n cells of capacity_ah at soc, each off by a seeded uniform
        +-capacity_spread (fraction of the capacity) and +-r_spread (fraction
        of each resistance); capacities (a list) sets them explicitly.

        The charge in each cell: without top_balanced, soc +- soc_spread
        (SOC fraction); top_balanced, every cell is (1 - soc) x capacity_ah
        away from full (a pack the balancer has top-balanced: the cells meet
        at the top, the smallest one is empty first), +- soc_spread x
        capacity_ah. offsets_ah {cell index: Ah} adds charge to single cells
        (> 0: ahead, a runner at the top)."""
        rng = random.Random(seed)
        offsets_ah = offsets_ah or {}
        cells = []
        for k in range(n):
            cap = capacities[k] if capacities else capacity_ah * (1.0 + rng.uniform(-capacity_spread,
                                                                                     capacity_spread))
            rs = 1.0 + rng.uniform(-r_spread, r_spread)
            jitter = rng.uniform(-soc_spread, soc_spread)
            if top_balanced:
                to_full = (1.0 - soc) * capacity_ah - jitter * capacity_ah - offsets_ah.get(k, 0.0)
                s = 1.0 - to_full / cap
            else:
                s = soc + jitter + offsets_ah.get(k, 0.0) / cap
            cells.append(Cell(cap, s, r0=R0_OHM * rs, r1=R1_OHM * rs, r2=R2_OHM * rs))
        return cls(cells, temp=temp, thermal_tau_s=thermal_tau_s)

    @property
    def n(self):
        return len(self.cells)

    def rf(self):
        return r_factor(self.temp_c)

    def cell_voltages(self):
        """Every cell's terminal voltage now (a list the caller must not change)."""
        if self._v is None:
            rf = self.rf()
            i = self.current_a
            self._v = [c.voltage(i, rf) for c in self.cells]
        return self._v

    def changed(self):
        """Call after changing a cell (its soc, ...) directly."""
        self._v = None

    def move_ah(self, k, ah):
        """Charge moved into (ah > 0) or out of cell k by a balancer."""
        self.cells[k].move_ah(ah)
        self._v = None

    def voltage(self):
        return sum(self.cell_voltages())

    def voltage_after(self, current, dt):
        """Pack terminal voltage after dt seconds of current (no change)."""
        rf = self.rf()
        return sum(c.after(current, dt, rf) for c in self.cells)

    def max_cell_after(self, current, dt):
        rf = self.rf()
        return max(c.after(current, dt, rf) for c in self.cells)

    def soc(self):
        """Mean true SOC (fraction)."""
        return sum(c.soc for c in self.cells) / len(self.cells)

    def charge_ah(self):
        """Ah the pack can still deliver / take: by its weakest cell."""
        return (min(c.soc * c.capacity_ah for c in self.cells),
                min((1.0 - c.soc) * c.capacity_ah for c in self.cells))

    def step(self, current, dt):
        rf = self.rf()
        for c in self.cells:
            c.step(current, dt, rf)
        self.current_a = current
        self.t_s += dt
        self._v = None
        if self.thermal_tau_s:
            amb = self.temp_profile(self.t_s)
            heat = sum(c.loss_w(current, rf) for c in self.cells)
            cap = CELL_HEAT_J_K * len(self.cells)
            self.temp_c += dt * ((amb - self.temp_c) / self.thermal_tau_s + heat / cap)
        else:
            self.temp_c = self.temp_profile(self.t_s)


# ---------------------------------------------------------------------- BMS

# Kinds of protection trip, and the JK02 alarm bit each sets (docs/jk-bms.md
# "Alarm bits"): the charge-side ones open the charge MOSFET, the others the
# discharge MOSFET, MOSFET OTP both.
KINDS = ("OVP", "UVP", "charge OTP", "charge UTP", "discharge OTP", "discharge UTP", "charge OCP",
         "discharge OCP", "MOS OTP")
ALARM_BIT = {"OVP": 4, "UVP": 11, "charge OTP": 8, "charge UTP": 9, "discharge OTP": 15,
             "discharge UTP": 27, "charge OCP": 6, "discharge OCP": 13, "MOS OTP": 1}
CHARGE_SIDE = ("OVP", "charge OTP", "charge UTP", "charge OCP", "MOS OTP")
DISCHARGE_SIDE = ("UVP", "discharge OTP", "discharge UTP", "discharge OCP", "MOS OTP")
# what the brief's summary groups them into
GROUPS = {"OVP": ("OVP",), "UVP": ("UVP",), "OTP": ("charge OTP", "discharge OTP", "MOS OTP"),
          "UTP": ("charge UTP", "discharge UTP"), "OCP": ("charge OCP", "discharge OCP")}

# A 16S LFP JK-PB's settings, as tools/jkbms_sim.py and tools/jkframe_build.py
# default them (names of tools/state_json.py and jkbms.settings_fields).
DEFAULT_SETTINGS = {
    "cell_ovp_v": 3.65, "cell_ovpr_v": 3.45, "cell_uvp_v": 2.70, "cell_uvpr_v": 2.90,
    "rcv_v": 3.45, "rfv_v": 3.375, "power_off_v": 2.60, "soc100_v": 3.45, "soc0_v": 2.90,
    "max_charge_current_a": 150.0, "max_discharge_current_a": 200.0,
    "charge_ocp_delay_s": 30, "charge_ocp_recovery_s": 60,
    "discharge_ocp_delay_s": 30, "discharge_ocp_recovery_s": 60,
    "charge_otp_c": 60.0, "charge_otpr_c": 55.0, "charge_utp_c": 0.0, "charge_utpr_c": 5.0,
    "discharge_otp_c": 60.0, "discharge_otpr_c": 55.0, "discharge_utp_c": -20.0, "discharge_utpr_c": -10.0,
    "mos_otp_c": 100.0, "mos_otpr_c": 80.0,
    "balancer_switch": True, "balance_start_v": 3.40, "balance_trigger_v": 0.005, "max_balance_current_a": 2.0,
    "charge_switch": True, "discharge_switch": True,
}

MOS_K_PER_A2 = 0.0015  # MOSFET temperature rise, K per A^2 (100 A -> +15 K)
MOS_TAU_S = 300.0


class JkBms:
    """A JK-PB BMS guarding a Pack. step(requested_a, dt) lets through what
    the MOSFETs allow, advances the pack, balances, counts and re-judges the
    protections; returns the current that flowed."""

    def __init__(self, pack, settings=None, nominal_ah=None, cell_noise_mv=0, seed=1, soc_calibration=True):
        self.pack = pack
        self.settings = dict(DEFAULT_SETTINGS)
        if settings:
            self.settings.update(settings)
        self.nominal_ah = float(nominal_ah if nominal_ah is not None
                                else sum(c.capacity_ah for c in pack.cells) / pack.n)
        self.remaining_ah = self.nominal_ah * min(max(pack.soc(), 0.0), 1.0)
        self.cell_noise_mv = cell_noise_mv
        self.soc_calibration = soc_calibration
        self._rng = random.Random(seed)
        self.active = {k: False for k in KINDS}
        self.trips = {k: 0 for k in KINDS}
        self.trip_log = []  # (t_s, kind, detail)
        self._ocp_since = {"charge OCP": None, "discharge OCP": None}
        self._ocp_until = {"charge OCP": 0.0, "discharge OCP": 0.0}
        self.mos_temp_c = pack.temp_c
        self.balancing = 0
        self.balance_a = 0.0
        self.cycle_ah = 0.0
        self.runtime_s = 0.0
        self.blocked_charge_s = 0.0  # time a charge current was asked for but the MOSFET was open
        self._judge()

    # -- settings ----------------------------------------------------------------
    def set_settings(self, **changes):
        """Change BMS settings (what a user does in the JK app): in force at
        once for the protections; the gateway sees them at its next settings
        read."""
        for k in changes:
            if k not in self.settings:
                raise KeyError("unknown BMS setting %r" % k)
        self.settings.update(changes)
        self._judge()

    # -- state -----------------------------------------------------------------
    @property
    def charge_fet(self):
        return bool(self.settings["charge_switch"]) and not any(self.active[k] for k in CHARGE_SIDE)

    @property
    def discharge_fet(self):
        return bool(self.settings["discharge_switch"]) and not any(self.active[k] for k in DISCHARGE_SIDE)

    def allowed(self, requested_a):
        if requested_a > 0 and not self.charge_fet:
            return 0.0
        if requested_a < 0 and not self.discharge_fet:
            return 0.0
        return requested_a

    def alarm_word(self):
        w = 0
        for k in KINDS:
            if self.active[k]:
                w |= 1 << ALARM_BIT[k]
        return w

    def soc_percent(self):
        return int(round(100.0 * self.remaining_ah / self.nominal_ah)) if self.nominal_ah else 0

    def temps(self):
        """Battery sensors T1, T2 (degC): the pack temperature, T2 0.5 K warmer
        (nearer a busbar)."""
        t = self.pack.temp_c
        return t, t + 0.5

    def trips_total(self):
        return sum(self.trips.values())

    def trips_grouped(self):
        return {g: sum(self.trips[k] for k in ks) for g, ks in GROUPS.items()}

    # -- one step ----------------------------------------------------------------
    def step(self, requested_a, dt):
        i = self.allowed(requested_a)
        if requested_a > 0 and i == 0:
            self.blocked_charge_s += dt
        pack = self.pack
        pack.step(i, dt)
        self.runtime_s += dt
        self.cycle_ah += abs(i) * dt / 3600.0 / 2.0
        self.remaining_ah = min(max(self.remaining_ah + i * dt / 3600.0, 0.0), self.nominal_ah)
        e = math.exp(-dt / MOS_TAU_S)
        self.mos_temp_c = self.mos_temp_c * e + (pack.temp_c + MOS_K_PER_A2 * i * i) * (1.0 - e)
        self._balance(dt)
        self._judge(i, dt)
        return i

    def _balance(self, dt):
        s = self.settings
        self.balancing = 0
        self.balance_a = 0.0
        if not s["balancer_switch"] or s["max_balance_current_a"] <= 0:
            return
        v = self.pack.cell_voltages()
        hi = max(range(len(v)), key=v.__getitem__)
        lo = min(range(len(v)), key=v.__getitem__)
        if v[hi] < s["balance_start_v"] or v[hi] - v[lo] < s["balance_trigger_v"]:
            return
        ah = s["max_balance_current_a"] * dt / 3600.0
        self.pack.move_ah(hi, -ah)
        self.pack.move_ah(lo, 0.9 * ah)
        self.balancing = 1
        self.balance_a = s["max_balance_current_a"]

    def _trip(self, kind, on, detail=""):
        if on and not self.active[kind]:
            self.trips[kind] += 1
            self.trip_log.append((self.pack.t_s, kind, detail))
        self.active[kind] = on

    def _band(self, kind, value, trip_at, release_at, high):
        """Hysteresis: trips when value >= trip_at (high) / <= trip_at (low),
        releases once back past release_at."""
        if high:
            on = value >= trip_at if not self.active[kind] else value >= release_at
        else:
            on = value <= trip_at if not self.active[kind] else value < release_at
        self._trip(kind, on, "%.3f" % value)

    def _judge(self, current=0.0, dt=0.0):
        s = self.settings
        v = self.pack.cell_voltages()
        vmax, vmin = max(v), min(v)
        if not self.active["OVP"]:
            self._trip("OVP", vmax >= s["cell_ovp_v"], "cell %.3f V" % vmax)
        else:
            self._trip("OVP", vmax >= s["cell_ovpr_v"])
        if not self.active["UVP"]:
            self._trip("UVP", vmin <= s["cell_uvp_v"], "cell %.3f V" % vmin)
        else:
            self._trip("UVP", vmin < s["cell_uvpr_v"])
        t1, t2 = self.temps()
        tmax, tmin = max(t1, t2), min(t1, t2)
        self._band("charge OTP", tmax, s["charge_otp_c"], s["charge_otpr_c"], True)
        self._band("charge UTP", tmin, s["charge_utp_c"], s["charge_utpr_c"], False)
        self._band("discharge OTP", tmax, s["discharge_otp_c"], s["discharge_otpr_c"], True)
        self._band("discharge UTP", tmin, s["discharge_utp_c"], s["discharge_utpr_c"], False)
        self._band("MOS OTP", self.mos_temp_c, s["mos_otp_c"], s["mos_otpr_c"], True)
        now = self.pack.t_s
        for kind, over, delay, rec in (
                ("charge OCP", current > s["max_charge_current_a"], "charge_ocp_delay_s", "charge_ocp_recovery_s"),
                ("discharge OCP", -current > s["max_discharge_current_a"], "discharge_ocp_delay_s",
                 "discharge_ocp_recovery_s")):
            if self.active[kind]:
                if now >= self._ocp_until[kind]:
                    self._trip(kind, False)
                continue
            if over:
                since = self._ocp_since[kind]
                if since is None:
                    since = self._ocp_since[kind] = now - dt
                if now - since >= s[delay]:
                    self._trip(kind, True, "%.1f A" % current)
                    self._ocp_until[kind] = now + s[rec]
                    self._ocp_since[kind] = None
            else:
                self._ocp_since[kind] = None
        if self.soc_calibration:
            if current > 0 and vmax >= s["soc100_v"]:
                self.remaining_ah = self.nominal_ah
            elif current < 0 and vmin <= s["soc0_v"]:
                self.remaining_ah = 0.0

    # -- what the BMS reports ----------------------------------------------------
    def _mv(self, v):
        mv = int(round(v * 1000))
        if self.cell_noise_mv:
            mv += self._rng.randint(-self.cell_noise_mv, self.cell_noise_mv)
        return mv / 1000.0

    def state(self):
        """The BMS's state and settings as a tools/state_json.py state dict."""
        s = self.settings
        t1, t2 = self.temps()
        d = {
            "cell_voltages_v": [min(max(self._mv(v), 0.0), 5.0) for v in self.pack.cell_voltages()],
            "battery_current_a": round(self.pack.current_a, 3),
            "soc_percent": min(max(self.soc_percent(), 0), 100),
            "soh_percent": 100,
            "remaining_capacity_ah": round(self.remaining_ah, 3),
            "nominal_capacity_ah": round(self.nominal_ah, 3),
            "design_capacity_ah": round(self.nominal_ah, 3),
            "cycle_count": int(self.cycle_ah // self.nominal_ah) if self.nominal_ah else 0,
            "cycle_capacity_ah": round(self.cycle_ah, 3),
            "total_runtime_s": int(self.runtime_s),
            "power_tube_temp_c": round(self.mos_temp_c, 1),
            "t1_c": round(t1, 1),
            "t2_c": round(t2, 1),
            "error_bitmask": self.alarm_word(),
            "charging": self.charge_fet,
            "discharging": self.discharge_fet,
            "balance_current_a": round(self.balance_a, 3),
            "balance_status": self.balancing,
            "cell_count": self.pack.n,
        }
        for k, v in s.items():
            d[k] = v
        return d
