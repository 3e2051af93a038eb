# Neutral protection / alarm flags of a pack: what charge/ and the protocol
# encoders read, whatever BMS the data came from. A decoder keeps the BMS's
# own word for display (PackSnapshot.alarms, JK02 numbering, docs/jk-bms.md
# "Alarm bits") and sets PackSnapshot.flags from it with from_jk02().
# Values stay below 2**30: small ints on the ESP32, no allocation.

from compat import const

CELL_OV = const(1 << 0)
PACK_OV = const(1 << 1)
CELL_UV = const(1 << 2)
PACK_UV = const(1 << 3)
CHARGE_OT = const(1 << 4)
DISCHARGE_OT = const(1 << 5)
MOS_OT = const(1 << 6)
CHARGE_UT = const(1 << 7)
DISCHARGE_UT = const(1 << 8)
CHARGE_OC = const(1 << 9)
CHARGE_SC = const(1 << 10)
DISCHARGE_OC = const(1 << 11)
DISCHARGE_SC = const(1 << 12)
CELL_COUNT = const(1 << 13)
CURRENT_SENSOR = const(1 << 14)
INTERNAL_COMM = const(1 << 15)
CHARGE_FET_FAULT = const(1 << 16)
DISCHARGE_FET_FAULT = const(1 << 17)
TEMP_SENSOR = const(1 << 18)
BATTERY_OT_WARN = const(1 << 19)
WIRE_RESISTANCE = const(1 << 20)
# set by charge/, never by a decoder: the BMS data is stale or missing
LINK_LOST = const(1 << 21)
# set by charge/: the BMS data fails a plausibility check (charge.plausible)
IMPLAUSIBLE = const(1 << 22)

# JK02 / JK-PB alarm bit n -> neutral flag; 0 (bits 18-20, 23-26) and bits 28
# and up have no safety meaning for the inverter side
_BY_JK02_BIT = (
    WIRE_RESISTANCE, MOS_OT, CELL_COUNT, CURRENT_SENSOR,  # 0-3
    CELL_OV, PACK_OV, CHARGE_OC, CHARGE_SC,  # 4-7
    CHARGE_OT, CHARGE_UT, INTERNAL_COMM, CELL_UV,  # 8-11
    PACK_UV, DISCHARGE_OC, DISCHARGE_SC, DISCHARGE_OT,  # 12-15
    CHARGE_FET_FAULT, DISCHARGE_FET_FAULT, 0, 0,  # 16-19
    0, BATTERY_OT_WARN, TEMP_SENSOR, 0,  # 20-23
    0, 0, 0, DISCHARGE_UT,  # 24-27
)


def from_jk02(word):
    """Neutral flags for a JK02 alarm word. Allocation-free."""
    out = 0
    by_bit = _BY_JK02_BIT
    for bit in range(len(by_bit)):
        if (word >> bit) & 1:
            out |= by_bit[bit]
    return out
