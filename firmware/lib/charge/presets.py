# Chemistry presets (docs/charge-control.md "Chemistry presets"): per cell,
# mV -- bulk, float, re-bulk, cv_min, cv_max, empty, lowest plausible,
# highest plausible -- then the lowest charge temperature in dC. cv_min /
# cv_max bound the bulk voltage and feed the cut-off rule; empty is the DCL
# taper's zero point.

from compat import const

CHEMISTRIES = ("LFP", "NMC", "LTO")
PRESETS = (
    (3450, 3375, 3300, 3370, 3650, 2800, 2000, 4000, 0),
    (4100, 4000, 3950, 3900, 4200, 3200, 2500, 4500, 0),
    (2700, 2600, 2500, 2550, 2850, 1900, 1200, 3200, -300),
)
BULK = const(0)
FLOAT = const(1)
REBULK = const(2)
CV_MIN = const(3)
CV_MAX = const(4)
EMPTY = const(5)
CELL_LO = const(6)
CELL_HI = const(7)
CHARGE_MIN_DC = const(8)


def of(cfg):
    return PRESETS[CHEMISTRIES.index(cfg["chemistry"])]
