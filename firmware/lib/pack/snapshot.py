# One normalised battery-pack state, filled in place by every BMS decoder and
# read by every inverter encoder. Integer fixed-point units only: the ESP32's
# floats are single precision and every float operation allocates.
#
# Units: mV, mA, mAh, 0.1 degC ("dC"), %, s. Decoders validate a whole frame
# before they write a single field, so a rejected frame leaves the snapshot
# exactly as it was.

from array import array

from compat import const

MAX_CELLS = const(32)
NO_TEMP = const(-32768)  # sensor absent / not reported (dC)
TEMP_SLOTS = const(6)
T_MOS = const(0)  # temps[1..5] = battery sensors T1..T5

# Bits of PackSnapshot.have: which groups the last data frame carried.
HAVE_CELLS = const(1)
HAVE_PACK_V = const(2)
HAVE_CURRENT = const(4)
HAVE_SOC = const(8)
HAVE_SOH = const(16)
HAVE_CAPACITY = const(32)
HAVE_TEMPS = const(64)
HAVE_ALARMS = const(128)
HAVE_FETS = const(256)
HAVE_CYCLES = const(512)
HAVE_BALANCE = const(1024)
HAVE_RUNTIME = const(2048)

# A data set the inverter side can be served from (no current, SOC or FET
# state -> a JK04 balancer frame, for instance, is not enough).
HAVE_FOR_INVERTER = const(1 | 2 | 4 | 8 | 256)


class PackSnapshot:
    def __init__(self):
        self.cells = array("H", [0] * MAX_CELLS)
        self.temps = array("h", [0] * TEMP_SLOTS)
        self.clear()

    def clear(self):
        self.have = 0
        self.updates = 0  # incremented on every accepted data frame
        self.layout = 0  # wire layout of the last data frame (jkbms.frame LAYOUT_*)
        # cells
        self.cell_count = 0
        for i in range(MAX_CELLS):
            self.cells[i] = 0
        self.cell_min_mv = 0
        self.cell_max_mv = 0
        self.cell_min_idx = 0  # 0-based
        self.cell_max_idx = 0
        self.cell_avg_mv = 0
        self.cell_delta_mv = 0
        # pack
        self.pack_mv = 0
        self.current_ma = 0  # + charging, - discharging
        self.soc_pct = 0
        self.soh_pct = 0
        self.remaining_mah = 0
        self.full_mah = 0
        self.cycles = 0
        self.cycle_mah = 0
        self.runtime_s = 0
        for i in range(TEMP_SLOTS):
            self.temps[i] = NO_TEMP  # dC; index T_MOS, then sensors 1..5
        self.alarms = 0  # the BMS's own alarm word, JK02 numbering: for display
        self.flags = 0  # pack.flags, derived from alarms by the decoder: for decisions
        self.charge_fet = 0
        self.discharge_fet = 0
        self.balancing = 0  # 0 off, 1 charge-balancing, 2 discharge-balancing
        self.balance_ma = 0
        self.heating = 0
        # BMS settings (limits for the inverter side); settings_ok = 0 until a
        # settings frame (or a 4E 57 frame, which carries them) was accepted.
        self.settings_ok = 0
        self.set_cell_count = 0
        self.cell_ovp_mv = 0
        self.cell_ovpr_mv = 0
        self.cell_uvp_mv = 0
        self.cell_uvpr_mv = 0
        self.rcv_mv = 0  # JK-PB request charge voltage per cell, 0 = unset
        self.rfv_mv = 0
        self.max_charge_ma = 0
        self.max_discharge_ma = 0
        self.charge_switch = 0
        self.discharge_switch = 0
        self.design_mah = 0
        # BMS temperature thresholds (dC, NO_TEMP = not reported) and the
        # 4E 57 pack-level voltage protection (mV, 0 = not reported; JK-PB
        # has none: the charge controller then uses cells x cell OVP / UVP)
        self.charge_otp_dc = NO_TEMP
        self.charge_utp_dc = NO_TEMP
        self.discharge_otp_dc = NO_TEMP
        self.discharge_utp_dc = NO_TEMP
        self.mos_otp_dc = NO_TEMP
        self.pack_ovp_mv = 0
        self.pack_uvp_mv = 0
        # several packs as one battery (charge.battery): the packs in the
        # aggregate, and the spread of their voltages (mV); one pack: 1, 0
        self.modules = 1
        self.modules_offline = 0  # configured packs not in the aggregate
        self.spread_mv = 0

    def cell_stats(self):
        """Derive min / max / avg / delta from self.cells[0:cell_count]."""
        n = self.cell_count
        cells = self.cells
        lo = 0xFFFF
        hi = 0
        lo_i = 0
        hi_i = 0
        total = 0
        for i in range(n):
            v = cells[i]
            total += v
            if v < lo:
                lo = v
                lo_i = i
            if v > hi:
                hi = v
                hi_i = i
        if n == 0:
            lo = 0
        self.cell_min_mv = lo
        self.cell_max_mv = hi
        self.cell_min_idx = lo_i
        self.cell_max_idx = hi_i
        self.cell_avg_mv = (total + n // 2) // n if n else 0
        self.cell_delta_mv = hi - lo

    def avg_temp_dc(self):
        """Mean of the battery sensors present (not the MOSFET), or NO_TEMP."""
        total = 0
        k = 0
        temps = self.temps
        for i in range(1, TEMP_SLOTS):
            t = temps[i]
            if t != NO_TEMP:
                total += t
                k += 1
        if k == 0:
            return NO_TEMP
        # round half away from zero, integers only
        return (total + k // 2) // k if total >= 0 else -((-total + k // 2) // k)
