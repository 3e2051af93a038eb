# Charge-control parameters in integer units (mV per cell, mA, dC, ms,
# per-mille), read from the validated gateway config (docs/charge-control.md
# "Parameters"). apply() may run at any time: the console's `set` changes
# charge parameters without a reboot.

from compat import const

LFP = const(0)
NMC = const(1)
LTO = const(2)
CHEMISTRIES = ("LFP", "NMC", "LTO")

# Chemistry presets (docs/charge-control.md "Chemistry presets"):
# (bulk, float, rebulk, cv_min, cv_max, empty, cell_lo, cell_hi) in mV per
# cell, then the lowest charge temperature in dC. cv_min / cv_max bound the
# bulk voltage and feed the cut-off rule; empty is the DCL taper's zero point;
# cell_lo / cell_hi the physically plausible cell voltages.
PRESETS = (
    (3450, 3375, 3300, 3370, 3650, 2800, 2000, 4000, 0),
    (4100, 4000, 3950, 3900, 4200, 3200, 2500, 4500, 0),
    (2700, 2600, 2500, 2550, 2850, 1900, 1200, 3200, -300),
)


def table(pairs, x_scale):
    """Config table [[x, per-mille], ...] -> (xs, ys) tuples, x scaled to
    internal units (mV offsets: 1; degC -> dC: 10). Built once per apply."""
    xs = []
    ys = []
    for p in pairs:
        xs.append(p[0] * x_scale)
        ys.append(p[1])
    return tuple(xs), tuple(ys)


class Params:
    def __init__(self, cfg):
        self.apply(cfg)

    def apply(self, cfg):
        c = CHEMISTRIES.index(cfg["chemistry"])
        pre = PRESETS[c]
        self.chemistry = c
        self.cv_min_mv = pre[3]
        self.cv_max_mv = pre[4]
        self.empty_mv = pre[5]
        self.cell_lo_mv = pre[6]
        self.cell_hi_mv = pre[7]
        # app.config's fit step already clamped these into the chemistry's range
        self.bulk_mv = cfg["bulk_cell_mv"]
        self.float_mv = cfg["float_cell_mv"]
        self.rebulk_mv = cfg["rebulk_cell_mv"]
        self.ovp_margin_mv = cfg["ovp_margin_mv"]
        self.uvp_margin_mv = cfg["uvp_margin_mv"]
        self.dvl_margin_mv = cfg["dvl_margin_mv"]
        self.max_charge_ma = cfg["max_charge_a"] * 1000
        self.max_discharge_ma = cfg["max_discharge_a"] * 1000
        self.capacity_mah = cfg["capacity_ah"] * 1000  # 0: the BMS's
        # temperature windows (dC) and the margin kept inside the BMS's own
        self.charge_min_dc = cfg["charge_min_c"] * 10
        self.charge_max_dc = cfg["charge_max_c"] * 10
        self.discharge_min_dc = cfg["discharge_min_c"] * 10
        self.discharge_max_dc = cfg["discharge_max_c"] * 10
        self.temp_margin_dc = cfg["temp_margin_c"] * 10
        self.temp_hyst_dc = cfg["temp_hyst_c"] * 10
        self.mos_max_dc = cfg["mos_max_c"] * 10
        self.need_temp = cfg["require_temp_sensor"] == "yes"
        self.charge_rate = table(cfg["charge_rate_table"], 10)
        self.discharge_rate = table(cfg["discharge_rate_table"], 10)
        self.ccl_taper = table(cfg["ccl_taper_table"], 1)
        self.dcl_taper = table(cfg["dcl_taper_table"], 1)
        self.ccl_hyst_mv = cfg["ccl_taper_hyst_mv"]
        self.dcl_hyst_mv = cfg["dcl_taper_hyst_mv"]
        self.dvl_hyst_mv = cfg["dvl_hyst_mv"]
        # hold and ramp, slew
        self.hold_ms = cfg["hold_s"] * 1000
        self.ramp_ma_s = cfg["ramp_a_s"] * 1000
        self.cvl_up_mv_s = cfg["cvl_up_mv_s"]  # per cell
        self.cvl_down_mv_min = cfg["cvl_down_mv_min"]  # per cell, below the pack voltage
        self.auto_cvl = cfg["auto_cvl"] == "on"
        # state machine
        self.absorb_entry_mv = cfg["absorption_entry_mv"]
        self.absorb_exit_mv = cfg["absorption_exit_mv"]
        self.absorb_max_ms = cfg["absorption_max_min"] * 60000
        self.cutoff_ms = cfg["cutoff_s"] * 1000
        self.confirm_ms = cfg["confirm_s"] * 1000
        self.rebulk_soc = cfg["rebulk_soc"]
        self.rebulk_delta_mv = cfg["rebulk_delta_mv"]
        self.rebulk_days = cfg["rebulk_days"]
        self.balance_days = cfg["top_balance_days"]
        self.balance_mv = cfg["top_balance_mv"]
        self.balance_max_ms = cfg["top_balance_max_min"] * 60000
        # SOC shaping
        self.force_soc = cfg["force_charge_soc"]
        self.force_off_soc = cfg["force_charge_soc"] + cfg["force_charge_hyst"]
        self.stop_on_loss = cfg["link_loss"] == "stop"
