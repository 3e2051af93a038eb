# Pylontech LV CAN V1.2 ("PYLON") encoder: the frame set a Deye / Sunsynk,
# Growatt SPF (L52), Sofar, EG4 ... inverter expects from a 48 V battery, and
# parsing of the inverter's 0x305 heartbeat (docs/inverter-can.md "Pylontech"):
# 500 kbit/s, 11-bit ids, little-endian, DLC 8 zero-padded, 0x351 carries the
# discharge voltage limit in bytes 6-7. Frames are written into buffers
# allocated once; encode() allocates nothing and decides nothing.

import struct

from codec.errors import DecodeError
from compat import const
from pack import flags as F
from pack import snapshot as S
from protocols.base import RTR_OR_EXT, RX_HEARTBEAT, RX_IGNORED, Encoder, div_round, s16, set_ascii

ID_LIMITS = const(0x351)
ID_SOC = const(0x355)
ID_MEASURE = const(0x356)
ID_ALARMS = const(0x359)
ID_REQUEST = const(0x35C)
ID_NAME = const(0x35E)
ID_INVERTER = const(0x305)

# Send order: name first (Deye keys features on it), limits before values.
FRAME_IDS = (ID_NAME, ID_LIMITS, ID_SOC, ID_MEASURE, ID_ALARMS, ID_REQUEST)
DLC = const(8)

# 0x359 bits as a 32-bit little-endian word: bytes 0-1 protection, 2-3 alarm.
# A leading underscore makes const() inline a value and keeps it out of the
# module's dict in RAM; the public ones are read by tools and tests.
_P_OVER_VOLTAGE = const(1 << 1)
_P_UNDER_VOLTAGE = const(1 << 2)
_P_OVER_TEMP = const(1 << 3)
_P_UNDER_TEMP = const(1 << 4)
_P_DISCHARGE_OC = const(1 << 7)
_P_CHARGE_OC = const(1 << 8)
P_SYSTEM_ERROR = const(1 << 11)
_A_HIGH_TEMP = const(1 << 19)
_A_LOW_TEMP = const(1 << 20)
A_COMM_FAIL = const(1 << 27)

# 0x35C request flags
_REQ_CHARGE_ENABLE = const(0x80)
_REQ_DISCHARGE_ENABLE = const(0x40)
_REQ_FORCE_CHARGE = const(0x10)  # "force charge II": charge before shutdown (docs/inverter-can.md "Pylontech")

# pack.flags -> 0x359 bit (docs/inverter-can.md "Pylontech alarms"), as
# code rather than a table: a table of tuples would sit in RAM
_SYSTEM = (F.CELL_COUNT | F.CURRENT_SENSOR | F.INTERNAL_COMM | F.CHARGE_FET_FAULT | F.DISCHARGE_FET_FAULT
           | F.TEMP_SENSOR | F.LINK_LOST | F.IMPLAUSIBLE)


def alarm_bits(flags):
    """0x359 bytes 0-3 (as an int) for pack.flags."""
    out = 0
    if flags & (F.CELL_OV | F.PACK_OV):
        out |= _P_OVER_VOLTAGE
    if flags & (F.CELL_UV | F.PACK_UV):
        out |= _P_UNDER_VOLTAGE
    if flags & (F.MOS_OT | F.CHARGE_OT | F.DISCHARGE_OT):
        out |= _P_OVER_TEMP
    if flags & F.CHARGE_UT:
        out |= _P_UNDER_TEMP
    if flags & (F.DISCHARGE_OC | F.DISCHARGE_SC):
        out |= _P_DISCHARGE_OC
    if flags & (F.CHARGE_OC | F.CHARGE_SC):
        out |= _P_CHARGE_OC
    if flags & _SYSTEM:
        out |= P_SYSTEM_ERROR
    if flags & F.BATTERY_OT_WARN:
        out |= _A_HIGH_TEMP
    if flags & F.DISCHARGE_UT:
        out |= _A_LOW_TEMP
    if flags & F.LINK_LOST:
        out |= A_COMM_FAIL
    return out


class PylonEncoder(Encoder):
    # the controller's acceptance filter: only 11-bit id 0x305 gets through,
    # so a flood of other traffic cannot push the heartbeat out of its queue
    rx_filters = ((ID_INVERTER, 0x7FF, 0),)

    def __init__(self, name="PYLON", modules=0):
        self.ids = FRAME_IDS
        self.frames = [bytearray(DLC) for _ in FRAME_IDS]
        self.set_name(name)
        self.modules = modules

    def set_name(self, name):
        set_ascii(self.frames[0], 0, 8, name)

    def encode(self, snap, lim, flags):
        """Write 0x351 ... 0x35C from snap, lim (charge.limits.Limits) and
        flags (pack.flags)."""
        f = self.frames
        struct.pack_into("<HhhH", f[1], 0, lim.cvl_dv, s16(lim.ccl_da),
                         s16(lim.dcl_da), lim.dvl_dv)
        soh = snap.soh_pct if snap.have & S.HAVE_SOH else 100
        struct.pack_into("<HHHH", f[2], 0, lim.soc_pct, soh, 0, 0)
        # the cells' temperature only: without a battery sensor 0, never the
        # MOSFET's (charge.plausible then withholds the currents and raises
        # the system-error bit unless require_temp_sensor is "no")
        t = snap.avg_temp_dc()
        if t == S.NO_TEMP:
            t = 0
        struct.pack_into("<hhhH", f[3], 0, s16(div_round(snap.pack_mv, 10)),
                         s16(div_round(snap.current_ma, 100)), t, 0)
        a = alarm_bits(flags)
        b = f[4]
        b[0] = a & 0xFF
        b[1] = (a >> 8) & 0xFF
        b[2] = (a >> 16) & 0xFF
        b[3] = (a >> 24) & 0xFF
        b[4] = self.modules or snap.modules  # 0 = auto: the packs online (charge.battery)
        b[5] = 0x50  # 'P'
        b[6] = 0x4E  # 'N'
        b[7] = 0
        req = 0
        if lim.charge_enable:
            req |= _REQ_CHARGE_ENABLE
        if lim.discharge_enable:
            req |= _REQ_DISCHARGE_ENABLE
        if lim.force_charge:
            req |= _REQ_FORCE_CHARGE
        r = f[5]
        r[0] = req
        for i in range(1, DLC):
            r[i] = 0

    def on_rx(self, can_id, data, n, flags=0):
        """The inverter heartbeat is an 11-bit data frame 0x305 with 8 bytes;
        an RTR, a 29-bit id or another length with the same id is not."""
        if can_id == ID_INVERTER and n == DLC and not flags & RTR_OR_EXT:
            return RX_HEARTBEAT
        return RX_IGNORED


def parse_inverter(can_id, data, n):
    """Classify a frame received from the inverter: returns ID_INVERTER for
    the 0x305 heartbeat, 0 for traffic we do not use; DecodeError if the
    heartbeat is malformed."""
    if can_id != ID_INVERTER:
        return 0
    if n > 8 or n > len(data):
        raise DecodeError("0x305 longer than 8 bytes")
    return ID_INVERTER

ENCODER = PylonEncoder
