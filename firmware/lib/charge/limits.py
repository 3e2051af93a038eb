# Charge / discharge limits taken straight from the BMS's own settings and
# state (docs/charge-control.md "Limits from the BMS"), until the charge
# controller exists:
#   CVL = bulk per cell x cells, bulk = RCV (JK-PB) or the configured value,
#         never above the BMS's cell OVP recovery voltage;
#   CCL = 0.9 x BMS max charge current, capped by the user maximum, 0 while the
#         charge MOSFET / switch is off, a charge-blocking alarm is set or a
#         cell has reached OVP;
#   DCL = likewise for discharge (min cell at or below UVP blocks);
#   DVL = (cell UVP + 0.2 V) x cells.
# Nothing the BMS has not told us is assumed: without a settings frame, or
# without live current / SOC / FET data, both current limits are 0.
# Units: 0.1 V (dV) and 0.1 A (dA), the Pylontech wire units.

from compat import const
from pack import flags as F
from pack import snapshot as S

# pack.flags that forbid charging / discharging
CHARGE_BLOCKING = (F.MOS_OT | F.CELL_COUNT | F.CURRENT_SENSOR | F.CELL_OV | F.PACK_OV | F.CHARGE_OC
                        | F.CHARGE_SC | F.CHARGE_OT | F.CHARGE_UT | F.INTERNAL_COMM | F.CHARGE_FET_FAULT
                        | F.TEMP_SENSOR)
DISCHARGE_BLOCKING = (F.MOS_OT | F.CELL_COUNT | F.CURRENT_SENSOR | F.INTERNAL_COMM | F.CELL_UV
                           | F.PACK_UV | F.DISCHARGE_OC | F.DISCHARGE_SC | F.DISCHARGE_OT
                           | F.DISCHARGE_FET_FAULT | F.TEMP_SENSOR)

# Why a current limit is 0 (Limits.charge_reason / discharge_reason)
OK = const(0)
NO_DATA = const(1)
NO_SETTINGS = const(2)
FET_OFF = const(3)
SWITCH_OFF = const(4)
ALARM = const(5)
CELL_LIMIT = const(6)
STALE = const(7)  # set by charge.policy
REASONS = ("ok", "no live BMS data", "no BMS settings yet", "MOSFET off",
           "switched off in the BMS", "BMS alarm", "cell voltage at its limit", "BMS data stale")


class LimitConfig:
    def __init__(self):
        self.bulk_cell_mv = 3450  # used when the BMS has no RCV (LFP default)
        self.max_charge_da = 1000  # user cap, 100.0 A
        self.max_discharge_da = 1000
        self.dvl_margin_mv = 200  # DVL = (UVP + margin) x cells


class Limits:
    """What the inverter is told: filled by compute() and charge.policy,
    read by the protocol encoders (which add no policy of their own)."""

    def __init__(self):
        self.cvl_dv = 0
        self.ccl_da = 0
        self.dcl_da = 0
        self.dvl_dv = 0
        self.charge_reason = NO_DATA
        self.discharge_reason = NO_DATA
        self.charge_enable = False
        self.discharge_enable = False
        self.flags = 0  # pack.flags to report to the inverter (incl. LINK_LOST)


def _da_from_ma(ma, cap_da):
    da = ma * 9 // 1000  # 0.9 x the BMS limit, mA -> 0.1 A
    return cap_da if da > cap_da else da


def compute(snap, cfg, lim):
    """Fill lim from snap and cfg. Allocation-free."""
    cells = snap.cell_count
    live = (snap.have & S.HAVE_FOR_INVERTER) == S.HAVE_FOR_INVERTER and cells > 0
    bulk = cfg.bulk_cell_mv
    if snap.settings_ok:
        if snap.rcv_mv:
            bulk = snap.rcv_mv
        if snap.cell_ovpr_mv and bulk > snap.cell_ovpr_mv:
            bulk = snap.cell_ovpr_mv
    lim.cvl_dv = bulk * cells // 100
    lim.dvl_dv = (snap.cell_uvp_mv + cfg.dvl_margin_mv) * cells // 100 if snap.settings_ok else 0

    lim.ccl_da = 0
    lim.dcl_da = 0
    if not live:
        lim.charge_reason = NO_DATA
        lim.discharge_reason = NO_DATA
        return
    if not snap.settings_ok:
        lim.charge_reason = NO_SETTINGS
        lim.discharge_reason = NO_SETTINGS
        return

    if not snap.charge_fet:
        lim.charge_reason = FET_OFF
    elif not snap.charge_switch:
        lim.charge_reason = SWITCH_OFF
    elif snap.flags & CHARGE_BLOCKING:
        lim.charge_reason = ALARM
    elif snap.cell_max_mv >= snap.cell_ovp_mv:
        lim.charge_reason = CELL_LIMIT
    else:
        lim.charge_reason = OK
        lim.ccl_da = _da_from_ma(snap.max_charge_ma, cfg.max_charge_da)

    if not snap.discharge_fet:
        lim.discharge_reason = FET_OFF
    elif not snap.discharge_switch:
        lim.discharge_reason = SWITCH_OFF
    elif snap.flags & DISCHARGE_BLOCKING:
        lim.discharge_reason = ALARM
    elif snap.cell_min_mv <= snap.cell_uvp_mv:
        lim.discharge_reason = CELL_LIMIT
    else:
        lim.discharge_reason = OK
        lim.dcl_da = _da_from_ma(snap.max_discharge_ma, cfg.max_discharge_da)
