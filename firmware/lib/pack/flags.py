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

# JK02 / JK-PB alarm bit number -> neutral flag (bits 18-20, 23-26 and 28
# have no safety meaning for the inverter side)
_JK02 = (
    (0, WIRE_RESISTANCE), (1, MOS_OT), (2, CELL_COUNT), (3, CURRENT_SENSOR), (4, CELL_OV), (5, PACK_OV),
    (6, CHARGE_OC), (7, CHARGE_SC), (8, CHARGE_OT), (9, CHARGE_UT), (10, INTERNAL_COMM), (11, CELL_UV),
    (12, PACK_UV), (13, DISCHARGE_OC), (14, DISCHARGE_SC), (15, DISCHARGE_OT), (16, CHARGE_FET_FAULT),
    (17, DISCHARGE_FET_FAULT), (21, BATTERY_OT_WARN), (22, TEMP_SENSOR), (27, DISCHARGE_UT),
)


def from_jk02(word):
    """Neutral flags for a JK02 alarm word. Allocation-free."""
    out = 0
    for bit, flag in _JK02:
        if (word >> bit) & 1:
            out |= flag
    return out
