# Config keys of charge/ (format: sources.schema). Imported by app.config
# only, and out of RAM again once the config is read.

from charge.limits import LimitConfig as _LC

_D = _LC()

SCHEMA = {
    "link_loss": ("zeros", "str", None, ("zeros", "stop")),
    "bulk_cell_mv": (_D.bulk_cell_mv, "int", 3000, 4200),
    "max_charge_a": (_D.max_charge_da // 10, "int", 0, 1000),
    "max_discharge_a": (_D.max_discharge_da // 10, "int", 0, 1000),
}
del _D
