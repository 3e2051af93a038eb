# JK02 cell-info / status decoding into a PackSnapshot, allocation-free.
#
# One decoder serves three carriers of the same data: the BLE / JK-PB FC10
# 55AA frames in the JK02_24S and JK02_32S layouts (little-endian, data at
# frame offset 6) and the JK-PB status register block 0x1200 read with FC03
# (big-endian per field, data at block offset 0): "55AA offset = Modbus block
# byte offset + 6" (docs/jk-bms.md "JK-PB").
# describe_extra(), the fields the snapshot does not keep, is
# jkbms.cellinfo_fields (reachable here too, loaded on first use).

from codec.binary import i16be, i16le, i32be, i32le, u16be, u16le, u32be, u32le
from codec.errors import DecodeError
from compat import const
from jkbms.frame import LAYOUT_JK02_24S, LAYOUT_JK02_32S, LAYOUT_PB_FC03
from pack import flags as F
from pack import snapshot as S

MAX_CELL_MV = const(5000)  # no lithium chemistry gets near this
NA = const(-1)  # field not in this layout

# Block offsets (55AA offset - 6) per layout of the fields decode() reads,
# indexed by the _F* constants (jkbms.cellinfo_fields has the others).
_F_CELLS = const(0)
_F_NCELLS = const(1)
_F_MOS = const(2)
_F_PACK = const(3)
_F_CURRENT = const(4)
_F_T1 = const(5)
_F_T2 = const(6)
_F_ALARMS = const(7)
_F_ALARMS32 = const(8)
_F_BAL_MA = const(9)
_F_BAL_ACT = const(10)
_F_SOC = const(11)
_F_REMAIN = const(12)
_F_FULL = const(13)
_F_CYCLES = const(14)
_F_CYC_MAH = const(15)
_F_SOH = const(16)
_F_RUNTIME = const(17)
_F_CHG = const(18)
_F_DSG = const(19)
_F_HEAT = const(20)
_F_T4 = const(21)
_F_T5 = const(22)
_F_SENSORS = const(23)

OFFSETS_32S = (0, 32, 138, 144, 152, 156, 158, 160, 1, 164, 166, 167, 168, 172, 176, 180,
               184, 188, 192, 193, 209, 250, 252, 208)
OFFSETS_24S = (0, 24, 128, 112, 120, 124, 126, 130, 0, 132, 134, 135, 136, 140, 144, 148,
               152, 156, 160, 161, NA, NA, NA, 176)

# bytes of data (from base) each layout needs
NEED_32S = const(276)
NEED_24S = const(180)

# JK reports an absent sensor as -200.0 degC
_ABSENT_DC = const(-2000)


def offsets_for(layout):
    if layout == LAYOUT_JK02_32S or layout == LAYOUT_PB_FC03:
        return OFFSETS_32S
    if layout == LAYOUT_JK02_24S:
        return OFFSETS_24S
    raise DecodeError("not a JK02 cell-info layout")


def _temp(b, o, be):
    if o == NA:
        return S.NO_TEMP
    t = i16be(b, o) if be else i16le(b, o)
    return S.NO_TEMP if t == _ABSENT_DC else t


def _extra_temp(b, o, be):
    t = _temp(b, o, be)
    return S.NO_TEMP if t == 0 else t


def decode(buf, base, layout, snap):
    """Decode the JK02 data at buf[base:] into snap (after full validation).

    base = 6 for a checksummed 55AA frame, 0 for an FC03 status block image
    (layout LAYOUT_PB_FC03, big-endian fields). Raises DecodeError and leaves
    snap untouched when the data is implausible.
    """
    off = offsets_for(layout)
    be = layout == LAYOUT_PB_FC03
    r16 = u16be if be else u16le
    r32 = u32be if be else u32le
    s32 = i32be if be else i32le
    s16 = i16be if be else i16le
    if len(buf) < base + (NEED_24S if off is OFFSETS_24S else NEED_32S):
        raise DecodeError("status data too short")

    # -- validate: cells, SOC/SOH ranges, pack voltage against the cell sum
    ncells = off[_F_NCELLS]
    c0 = base + off[_F_CELLS]
    count = 0
    total = 0
    for i in range(ncells):
        v = r16(buf, c0 + 2 * i)
        if v > MAX_CELL_MV:
            raise DecodeError("implausible cell voltage")
        if v:
            count = i + 1
            total += v
    if count == 0:
        raise DecodeError("no cell voltages")
    soc = buf[base + off[_F_SOC]]
    soh = buf[base + off[_F_SOH]]
    if soc > 100 or soh > 100:
        raise DecodeError("SOC or SOH above 100 %")
    pack = r32(buf, base + off[_F_PACK])
    if abs(pack - total) * 10 > total:
        raise DecodeError("pack voltage does not match the cells")

    # -- write
    cells = snap.cells
    for i in range(S.MAX_CELLS):
        cells[i] = r16(buf, c0 + 2 * i) if i < count else 0
    snap.cell_count = count
    snap.cell_stats()
    snap.pack_mv = pack
    snap.current_ma = s32(buf, base + off[_F_CURRENT])
    snap.soc_pct = soc
    snap.soh_pct = soh
    snap.remaining_mah = s32(buf, base + off[_F_REMAIN])
    snap.full_mah = r32(buf, base + off[_F_FULL])
    snap.cycles = r32(buf, base + off[_F_CYCLES])
    snap.cycle_mah = r32(buf, base + off[_F_CYC_MAH])
    snap.runtime_s = r32(buf, base + off[_F_RUNTIME])
    temps = snap.temps
    temps[S.T_MOS] = _temp(buf, base + off[_F_MOS], be)
    temps[1] = _temp(buf, base + off[_F_T1], be)
    temps[2] = _temp(buf, base + off[_F_T2], be)
    if layout == LAYOUT_JK02_24S:
        temps[3] = S.NO_TEMP
        temps[4] = S.NO_TEMP
        temps[5] = S.NO_TEMP
        snap.heating = 0
    else:
        # official TempBat3 (off 254) duplicates the MOSFET sensor in every
        # capture: keep it out of the battery average
        temps[3] = S.NO_TEMP
        # T4 / T5 exist on JK-PB hardware; v11 firmware flags them present
        # (mask 0xFF) but reports exactly 0, so a raw 0 counts as absent
        mask = buf[base + off[_F_SENSORS]]
        temps[4] = _extra_temp(buf, base + off[_F_T4], be) if mask & 0x10 else S.NO_TEMP
        temps[5] = _extra_temp(buf, base + off[_F_T5], be) if mask & 0x20 else S.NO_TEMP
        snap.heating = buf[base + off[_F_HEAT]]
    if off[_F_ALARMS32]:
        snap.alarms = r32(buf, base + off[_F_ALARMS])
    else:
        snap.alarms = r16(buf, base + off[_F_ALARMS])
    snap.flags = F.from_jk02(snap.alarms)
    snap.charge_fet = buf[base + off[_F_CHG]]
    snap.discharge_fet = buf[base + off[_F_DSG]]
    snap.balancing = buf[base + off[_F_BAL_ACT]]
    snap.balance_ma = s16(buf, base + off[_F_BAL_MA])
    snap.layout = layout
    snap.have = (S.HAVE_CELLS | S.HAVE_PACK_V | S.HAVE_CURRENT | S.HAVE_SOC | S.HAVE_SOH
                 | S.HAVE_CAPACITY | S.HAVE_TEMPS | S.HAVE_ALARMS | S.HAVE_FETS
                 | S.HAVE_CYCLES | S.HAVE_BALANCE | S.HAVE_RUNTIME)
    snap.updates += 1


def __getattr__(name):
    if name == "describe_extra":
        from jkbms.cellinfo_fields import describe_extra

        return describe_extra
    raise AttributeError(name)
