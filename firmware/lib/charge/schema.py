# Config keys of charge/ (format: sources.schema; kind "table": a list of
# [x, per-mille] pairs, x strictly increasing within low..high). Imported by
# app.config only, and out of RAM again once the config is read. Defaults
# are the LFP values; fit() puts the chosen chemistry's preset in for the
# voltages a config file does not set (docs/charge-control.md "Parameters").

from charge.presets import CHEMISTRIES, PRESETS

SCHEMA = {
    "chemistry": ("LFP", "str", None, CHEMISTRIES),
    # "auto": the protocol's safe default (charge.policy STOP_ON_LOSS)
    "link_loss": ("auto", "str", None, ("auto", "zeros", "stop")),
    "bulk_cell_mv": (3450, "int", 1500, 4300),
    "float_cell_mv": (3375, "int", 1500, 4300),
    "rebulk_cell_mv": (3300, "int", 1500, 4300),
    "ovp_margin_mv": (50, "int", 20, 300),
    "uvp_margin_mv": (50, "int", 0, 500),
    "dvl_margin_mv": (200, "int", 0, 1000),
    "max_charge_a": (100, "int", 0, 1000),
    "max_discharge_a": (100, "int", 0, 1000),
    "capacity_ah": (0, "int", 0, 5000),
    "charge_min_c": (0, "int", -40, 40),
    "charge_max_c": (50, "int", 10, 70),
    "discharge_min_c": (-20, "int", -40, 40),
    "discharge_max_c": (55, "int", 10, 80),
    "temp_margin_c": (2, "int", 0, 20),
    "temp_hyst_c": (2, "int", 0, 10),
    "mos_max_c": (80, "int", 40, 120),
    "require_temp_sensor": ("yes", "str", None, ("yes", "no")),
    "charge_rate_table": ([[0, 50], [5, 120], [10, 300], [20, 500], [40, 500], [45, 250]], "table", -40, 80),
    "discharge_rate_table": ([[-20, 500], [0, 1000], [45, 1000], [50, 500]], "table", -40, 80),
    "ccl_taper_table": ([[0, 1000], [50, 250], [100, 50], [150, 0]], "table", -500, 500),
    "dcl_taper_table": ([[0, 0], [100, 5], [200, 50], [300, 250], [390, 1000]], "table", 0, 1500),
    "ccl_taper_hyst_mv": (20, "int", 0, 200),
    "dcl_taper_hyst_mv": (50, "int", 0, 300),
    "dvl_hyst_mv": (50, "int", 0, 300),
    "release_s": (300, "int", 0, 3600),
    "hold_s": (30, "int", 0, 600),
    "ramp_a_s": (5, "int", 1, 100),
    "cvl_up_mv_s": (1, "int", 1, 50),
    "cvl_down_mv_min": (2, "int", 1, 100),
    "auto_cvl": ("on", "str", None, ("on", "off")),
    "absorption_entry_mv": (10, "int", 0, 200),
    "absorption_exit_mv": (100, "int", 20, 500),
    "absorption_max_min": (30, "int", 1, 600),
    "cutoff_s": (60, "int", 10, 3600),
    "confirm_s": (10, "int", 1, 300),
    "rebulk_soc": (85, "int", 0, 99),
    "rebulk_delta_mv": (80, "int", 0, 500),
    "rebulk_days": (14, "int", 0, 365),
    "top_balance_days": (0, "int", 0, 365),
    "top_balance_mv": (10, "int", 2, 200),
    "top_balance_max_min": (120, "int", 10, 1440),
    "force_charge_soc": (0, "int", 0, 50),
    "force_charge_hyst": (5, "int", 1, 30),
    # several packs as one battery (docs/charge-control.md "Several packs")
    "bms_min_packs": (1, "int", 1, 16),
    "pack_spread_mv": (1500, "int", 200, 10000),
}

# keys that take the chemistry preset when the config does not set them
_PRESET_KEYS = (("bulk_cell_mv", 0), ("float_cell_mv", 1), ("rebulk_cell_mv", 2))


def check_table(value, low, high):
    """A valid rate / taper table, or ValueError."""
    if not isinstance(value, list) or not 2 <= len(value) <= 8:
        raise ValueError("must be a list of 2-8 [x, per-mille] pairs")
    last = None
    for p in value:
        if not isinstance(p, list) or len(p) != 2:
            raise ValueError("must be a list of 2-8 [x, per-mille] pairs")
        for v in p:
            if isinstance(v, bool) or not isinstance(v, int):
                raise ValueError("must hold integers")
        if not low <= p[0] <= high or not 0 <= p[1] <= 1000:
            raise ValueError("x must be %d..%d, the fraction 0..1000" % (low, high))
        if last is not None and p[0] <= last:
            raise ValueError("x must increase")
        last = p[0]
    return value


def fit(cfg, given, messages):
    """Cross-key rules the per-key ranges cannot express: the chemistry's
    preset for voltages not set, the bulk voltage inside the chemistry's
    range, float <= bulk, re-bulk <= float, each temperature window
    non-empty. Each correction is said."""
    pre = PRESETS[CHEMISTRIES.index(cfg["chemistry"])]
    for key, i in _PRESET_KEYS:
        if key not in given:
            cfg[key] = pre[i]
    if cfg["chemistry"] == "LTO" and "charge_min_c" not in given:
        cfg["charge_min_c"] = pre[8] // 10
    lo = pre[3]
    hi = pre[4]
    if not lo <= cfg["bulk_cell_mv"] <= hi:
        messages.append("bulk_cell_mv %d is outside %d..%d for %s, using %d" % (
            cfg["bulk_cell_mv"], lo, hi, cfg["chemistry"], pre[0]))
        cfg["bulk_cell_mv"] = pre[0]
    if cfg["float_cell_mv"] > cfg["bulk_cell_mv"]:
        messages.append("float_cell_mv must be <= bulk_cell_mv, using %d" % cfg["bulk_cell_mv"])
        cfg["float_cell_mv"] = cfg["bulk_cell_mv"]
    if cfg["rebulk_cell_mv"] > cfg["float_cell_mv"]:
        messages.append("rebulk_cell_mv must be <= float_cell_mv, using %d" % cfg["float_cell_mv"])
        cfg["rebulk_cell_mv"] = cfg["float_cell_mv"]
    for a, b in (("charge_min_c", "charge_max_c"), ("discharge_min_c", "discharge_max_c")):
        if cfg[a] >= cfg[b]:
            messages.append("%s must be below %s, using the defaults" % (a, b))
            cfg[a] = SCHEMA[a][0]
            cfg[b] = SCHEMA[b][0]
