# The 0x35A alarm / warning frame of the SMA family (SMA Sunny Island,
# Victron CAN-bus BMS, Pylontech V1.3): 16 alarm pairs in bytes 0-3, 16
# warning pairs in bytes 4-7, pair n at bits 2n..2n+1 of its half, low bit
# first. `01` = active (SMA: "raised"), `10` = OK (SMA: "cleared"), so all
# well is AA x 8 as a real BYD sends; `00` / `11` mean "no change" to an SI,
# which would keep an alarm raised, so they are never sent (docs/inverter-can.md
# "SMA"). Reserved pairs and pairs no pack flag maps to are sent `10`.

from pack import flags as F

ACTIVE = 1
OK = 2

# pair n -> the pack.flags that raise it; 0 = never raised (always OK)
_ALARMS = (
    0,  # 0 general: every protection has its own pair below
    F.CELL_OV | F.PACK_OV,  # 1 high voltage
    F.CELL_UV | F.PACK_UV,  # 2 low voltage
    F.DISCHARGE_OT | F.MOS_OT,  # 3 high temperature (both directions cut)
    0,  # 4 low temperature: JK has no discharge under-temperature protection
    F.CHARGE_OT,  # 5 high temperature charge
    F.CHARGE_UT,  # 6 low temperature charge
    F.DISCHARGE_OC,  # 7 high (discharge) current
    F.CHARGE_OC,  # 8 high charge current
    F.CHARGE_FET_FAULT | F.DISCHARGE_FET_FAULT,  # 9 contactor: the FETs are the BMS's contactor
    F.CHARGE_SC | F.DISCHARGE_SC,  # 10 short circuit
    F.CELL_COUNT | F.CURRENT_SENSOR | F.INTERNAL_COMM | F.TEMP_SENSOR
    | F.LINK_LOST | F.IMPLAUSIBLE,  # 11 BMS internal (charge.policy adds the last two)
    0,  # 12 cell imbalance: no JK flag
    0, 0, 0,  # 13-15 reserved
)
_WARNINGS = (
    F.WIRE_RESISTANCE,  # 0 general: balance-wire resistance, no safety meaning, log only
    0, 0,  # 1-2 high / low voltage: JK reports protections, not warnings
    F.BATTERY_OT_WARN,  # 3 high temperature
    F.DISCHARGE_UT,  # 4 low temperature (JK's discharge under-temperature alarm)
    0, 0, 0, 0, 0, 0, 0, 0,  # 5-12: no JK warning for these
    0, 0, 0,  # 13-15 reserved (warning 15 = "generator", not for a BMS)
)


def _half(buf, off, flags, table):
    for b in range(4):
        v = 0
        for k in range(4):
            v |= (ACTIVE if flags & table[4 * b + k] else OK) << (2 * k)
        buf[off + b] = v


def write(buf, off, flags):
    """The 8 bytes of 0x35A for pack.flags into buf[off:off+8]. Allocation-free."""
    _half(buf, off, flags, _ALARMS)
    _half(buf, off + 4, flags, _WARNINGS)
