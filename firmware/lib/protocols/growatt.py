# Growatt native LV CAN ("L51", Growatt BMS CAN-Bus protocol low voltage
# Rev04 V1.04) encoder: the set an SPF / SPE in LI mode with protocol 51
# asks for with its 0x301 query (docs/inverter-can.md "Growatt"). 500 kbit/s,
# 11-bit ids, DLC 8, every field BIG-endian (high byte first), unlike the
# Pylontech family. Frames are written into buffers allocated once;
# encode() allocates nothing and decides nothing: it only places the
# policy's limits and the pack's values, clamped to the wire ranges.

import struct
from array import array

from charge.limiters import battery_temps
from compat import const
from pack import flags as F
from pack import snapshot as S
from protocols.base import RTR_OR_EXT, RX_IGNORED, RX_REQUEST, Encoder, clamp, div_round, s16, set_ascii, u16

ID_QUERY = const(0x301)  # inverter -> battery, 11 22 33 44 55 66 77 88 every second
ID_LIMITS = const(0x311)
ID_ALARMS = const(0x312)
ID_MEASURE = const(0x313)
ID_CAPACITY = const(0x314)
ID_CELLS = const(0x315)  # 0x315-0x318: cells 1-16, four per frame
ID_REQUEST = const(0x319)
ID_INFO = const(0x320)
ID_UPDATE = const(0x321)  # firmware-update status: all zero = normal

# limits first, then the values, in id order (as the document lists them)
FRAME_IDS = (ID_LIMITS, ID_ALARMS, ID_MEASURE, ID_CAPACITY, ID_CELLS, ID_CELLS + 1, ID_CELLS + 2,
             ID_CELLS + 3, ID_REQUEST, ID_INFO, ID_UPDATE)
DLC = const(8)
CELL_SLOTS = const(16)
# indexes into FRAME_IDS / frames
_F_ALARMS = const(1)
_F_CELLS = const(4)
_F_REQUEST = const(8)
_F_INFO = const(9)

# 0x311 status word (bytes 6-7; bits 0-7 are byte 7)
ST_STANDBY = const(1)
ST_CHARGING = const(2)
ST_DISCHARGING = const(3)
ST_ERROR_VALID = const(1 << 2)
ST_DISCHARGE_ENABLE = const(1 << 5)
ST_CHARGE_ENABLE = const(1 << 6)
# |I| below this is "standby": a JK current sensor reads a few 100 mA at
# rest, and 1 A is 1 % of a 100 Ah pack's C-rate (docs/inverter-can.md "Growatt")
STANDBY_MA = const(1000)

# 0x319 byte 0
REQ_CHARGE_ENABLE = const(0x80)
REQ_DISCHARGE_ENABLE = const(0x40)
REQ_FORCE_CHARGE = const(0x20)  # "force charge I": the document asks for this one (SOC 5-10 %)
CHEMISTRY_CODES = ("LFP", "NMC", "LTO")  # b0-1: 0 LFP, 1 NMC, 2 LTO

# 0x312 bytes 0-3: T1, T2 protection, T3, T4 warning (bit values per byte)
T1_DISCHARGE_OC = const(0x80)
T1_CHARGE_OC = const(0x40)
T1_DISCHARGE_SC = const(0x20)
T1_CELL_OV = const(0x10)
T1_CELL_UV = const(0x08)
T1_MODULE_OV = const(0x04)
T1_MODULE_UV = const(0x02)
T2_DISCHARGE_OT = const(0x80)
T2_CHARGE_OT = const(0x40)
T2_CHARGE_UT = const(0x10)
T2_SYSTEM_ERROR = const(0x08)
T4_DISCHARGE_OT = const(0x80)
T4_CHARGE_OT = const(0x40)
T4_DISCHARGE_UT = const(0x20)
T4_INTERNAL_COMM = const(0x01)

# pack.flags -> (0x312 byte, bits) (docs/inverter-can.md "Growatt").
# Never set: T1 soft-start fail, the delta-V bits (no pack flag), T3 (no
# pack flag is a voltage or current warning), T4 "before turn off", T2
# under-temperature discharge (DISCHARGE_UT is a JK alarm that blocks nothing)
_MAP = (
    (F.DISCHARGE_OC, 0, T1_DISCHARGE_OC),
    (F.CHARGE_OC | F.CHARGE_SC, 0, T1_CHARGE_OC),
    (F.DISCHARGE_SC, 0, T1_DISCHARGE_SC),
    (F.CELL_OV, 0, T1_CELL_OV),
    (F.CELL_UV, 0, T1_CELL_UV),
    (F.PACK_OV, 0, T1_MODULE_OV),
    (F.PACK_UV, 0, T1_MODULE_UV),
    (F.DISCHARGE_OT | F.MOS_OT, 1, T2_DISCHARGE_OT),
    (F.CHARGE_OT | F.MOS_OT, 1, T2_CHARGE_OT),
    (F.CHARGE_UT, 1, T2_CHARGE_UT),
    (F.CELL_COUNT | F.CURRENT_SENSOR | F.INTERNAL_COMM | F.CHARGE_FET_FAULT | F.DISCHARGE_FET_FAULT
     | F.TEMP_SENSOR | F.LINK_LOST | F.IMPLAUSIBLE, 1, T2_SYSTEM_ERROR),
    (F.BATTERY_OT_WARN, 3, T4_DISCHARGE_OT | T4_CHARGE_OT),
    (F.DISCHARGE_UT, 3, T4_DISCHARGE_UT),
    (F.LINK_LOST | F.INTERNAL_COMM, 3, T4_INTERNAL_COMM),
)

HW_VERSION = const(1)
SW_VERSION = const(1)
_QUERY = b"\x11\x22\x33\x44\x55\x66\x77\x88"


def alarm_bytes(flags, b):
    """T1..T4 for pack.flags into b[0..3]; returns nonzero when any is set."""
    for k in range(4):
        b[k] = 0
    any_ = 0
    for mask, k, bits in _MAP:
        if flags & mask:
            b[k] |= bits
            any_ = 1
    return any_


class GrowattEncoder(Encoder):
    NAME = "JK-BMS"  # only the first two characters go on the wire (0x320)
    SILENT_S = 10  # the SPF queries every second
    HEARTBEAT = "0x301"
    rx_filters = ((ID_QUERY, 0x7FF, 0),)

    @classmethod
    def from_config(cls, cfg):
        return cls(cfg["battery_name"] or cls.NAME, cfg["modules"], cfg.get("chemistry", "LFP"))

    def __init__(self, name="JK-BMS", modules=0, chemistry="LFP"):
        self.ids = FRAME_IDS
        self.frames = [bytearray(DLC) for _ in FRAME_IDS]
        self.set_name(name)
        self.modules = modules
        self.chemistry = CHEMISTRY_CODES.index(chemistry)  # ValueError for an unknown one
        self._t = array("h", (0, 0))
        self.query = bytearray(DLC)  # the last 0x301 payload (rx_text)
        self.queries = 0
        f = self.frames[_F_INFO]
        f[2] = HW_VERSION
        f[3] = SW_VERSION  # bytes 4-7 date-time stay 0: the gateway has no clock

    def set_name(self, name):
        set_ascii(bytearray(8), 0, 8, name)  # the whole name must be valid (config rule)
        info = self.frames[_F_INFO]
        set_ascii(info, 0, 2, name[:2])
        f = self.frames[_F_ALARMS]
        f[5] = info[0]  # manufacturer code: no code table is published, so the name's
        f[6] = info[1]

    def encode(self, snap, lim, flags):
        """Write 0x311 ... 0x321 from snap, lim (charge.limits.Limits) and
        flags (pack.flags)."""
        f = self.frames
        i = snap.current_ma
        word = ST_STANDBY if -STANDBY_MA < i < STANDBY_MA else (ST_CHARGING if i > 0 else ST_DISCHARGING)
        if lim.discharge_enable:
            word |= ST_DISCHARGE_ENABLE
        if lim.charge_enable:
            word |= ST_CHARGE_ENABLE
        b = f[_F_ALARMS]
        if alarm_bytes(flags, b):
            word |= ST_ERROR_VALID
        struct.pack_into(">HHHH", f[0], 0, u16(lim.cvl_dv), u16(lim.ccl_da), u16(lim.dcl_da), word)
        b[4] = clamp(self.modules or snap.modules, 1, 254)
        b[7] = clamp(snap.cell_count, 0, 255)
        # the cells' temperature only, never the MOSFET's; 0 without a sensor
        t = self._t
        hot = t[1] if battery_temps(snap, t) else 0
        soh = snap.soh_pct if snap.have & S.HAVE_SOH else 100
        struct.pack_into(">hhhBB", f[2], 0, s16(div_round(snap.pack_mv, 10)),
                         s16(div_round(snap.current_ma, 100)), hot, clamp(lim.soc_pct, 0, 100),
                         clamp(soh, 0, 100))
        # 10 mAh units: 655.35 Ah at most, larger banks saturate
        struct.pack_into(">HHHH", f[3], 0, u16(div_round(snap.remaining_mah, 10)),
                         u16(div_round(snap.full_mah, 10)), u16(snap.cell_delta_mv), u16(snap.cycles))
        # cells of one pack only: an aggregate's cells[] is each position's
        # highest over the packs, and 0x315-0x318 hold 16 cells
        n = snap.cell_count
        real = snap.modules == 1 and n <= CELL_SLOTS
        cells = snap.cells
        for k in range(CELL_SLOTS):
            struct.pack_into(">H", f[_F_CELLS + (k >> 2)], (k & 3) << 1, cells[k] if real and k < n else 0)
        req = self.chemistry
        if lim.force_charge:
            req |= REQ_FORCE_CHARGE
        if lim.discharge_enable:
            req |= REQ_DISCHARGE_ENABLE
        if lim.charge_enable:
            req |= REQ_CHARGE_ENABLE
        struct.pack_into(">BHHBBB", f[_F_REQUEST], 0, req, u16(snap.cell_max_mv), u16(snap.cell_min_mv),
                         snap.cell_max_idx + 1 if n else 0, snap.cell_min_idx + 1 if n else 0, 0)

    def on_rx(self, can_id, data, n, flags=0):
        """The inverter's query is an 11-bit data frame 0x301 with 8 bytes,
        whatever they hold (its content carries nothing we use); an RTR, a
        29-bit id or another length is ignored."""
        if can_id != ID_QUERY or n != DLC or len(data) < DLC or flags & RTR_OR_EXT:
            return RX_IGNORED
        q = self.query
        for k in range(DLC):
            q[k] = data[k]
        self.queries += 1
        return RX_REQUEST

    def rx_text(self):
        if not self.queries:
            return []
        return ["0x301 %s%s" % (" ".join("%02X" % b for b in self.query),
                                "" if self.query == _QUERY else " (not the documented 11 22 .. 88)")]


ENCODER = GrowattEncoder
