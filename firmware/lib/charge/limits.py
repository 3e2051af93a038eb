# What the inverter is told, and why: filled by charge.policy, read by the
# protocol encoders (which add no policy of their own) and the console.
# Units: 0.1 V (dV) and 0.1 A (dA), the Pylontech wire units; the policy
# rounds towards the safe side (CVL and currents down, DVL up).

from compat import const
from pack import flags as F

# pack.flags that forbid charging / discharging (docs/charge-control.md "Blocks")
CHARGE_BLOCKING = (F.MOS_OT | F.CELL_COUNT | F.CURRENT_SENSOR | F.CELL_OV | F.PACK_OV | F.CHARGE_OC
                   | F.CHARGE_SC | F.CHARGE_OT | F.CHARGE_UT | F.INTERNAL_COMM | F.CHARGE_FET_FAULT
                   | F.TEMP_SENSOR)
DISCHARGE_BLOCKING = (F.MOS_OT | F.CELL_COUNT | F.CURRENT_SENSOR | F.INTERNAL_COMM | F.CELL_UV
                      | F.PACK_UV | F.DISCHARGE_OC | F.DISCHARGE_SC | F.DISCHARGE_OT
                      | F.DISCHARGE_FET_FAULT | F.TEMP_SENSOR)

# Why a limit has its value (Limits.charge_reason / discharge_reason /
# cvl_reason): the limiter that won, or the block; the words are in
# charge.texts (REASONS, reachable from here)
USER_MAX = const(0)
NO_DATA = const(1)
NO_SETTINGS = const(2)
FET_OFF = const(3)
SWITCH_OFF = const(4)
ALARM = const(5)
CELL_LIMIT = const(6)
STALE = const(7)
IMPLAUSIBLE = const(8)
BMS_MAX = const(9)
TEMP_WINDOW = const(10)
TEMP_RATE = const(11)
CELL_TAPER = const(12)
MOS_TEMP = const(13)
PACK_LIMIT = const(14)
AT_DVL = const(15)
HOLD = const(16)
RAMP = const(17)
BULK_V = const(18)
FLOAT_V = const(19)
OVP_CAP = const(20)
AUTO_CVL = const(21)
SLEW = const(22)
KEPT = const(23)


class Limits:
    def __init__(self):
        self.cvl_dv = 0
        self.ccl_da = 0
        self.dcl_da = 0
        self.dvl_dv = 0
        self.charge_reason = NO_DATA
        self.discharge_reason = NO_DATA
        self.cvl_reason = NO_DATA
        self.charge_enable = False
        self.discharge_enable = False
        self.force_charge = False
        self.soc_pct = 0  # shaped: at most 99 until the end of absorption
        self.flags = 0  # pack.flags to report to the inverter (incl. LINK_LOST)
        self.capacity_ah = 0  # the battery's: capacity_ah, else the BMS's full / design capacity


def __getattr__(name):
    if name == "REASONS":
        from charge import texts

        return texts.REASONS
    raise AttributeError(name)
