# Charge control: every safety rule about the limits the inverter is told
# (docs/charge-control.md). charge.policy is the entry point.

from charge.limits import LimitConfig as _LC

_D = _LC()

# config keys of this package (see sources.SCHEMA for the format)
SCHEMA = {
    "link_loss": ("zeros", "str", None, ("zeros", "stop")),
    "bulk_cell_mv": (_D.bulk_cell_mv, "int", 3000, 4200),
    "max_charge_a": (_D.max_charge_da // 10, "int", 0, 1000),
    "max_discharge_a": (_D.max_discharge_da // 10, "int", 0, 1000),
}
del _D
