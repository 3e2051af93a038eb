# The older JK-B/BD wired protocol ("4E 57", UART-TTL / RS485 GPS port):
# read-all request, frame judge, TLV response decoding into a PackSnapshot.
# Big-endian throughout. describe() of every data item by name, for tools and
# the console, is jkbms.nw_fields (reachable here too, loaded on first use).
# docs/jk-bms.md "4E 57".

from codec.binary import u16be, u32be
from codec.errors import DecodeError
from codec.stream import HOLD, NONE, PENDING
from compat import const
from jkbms.frame import LAYOUT_4E57
from pack import flags as F
from pack import snapshot as S

MIN_FRAME = const(21)
MAX_FRAME = const(512)
_END_MARK = const(0x68)

# Data id -> value length (0x79 is variable: 1 + its first byte)
_LEN = {
    0x80: 2, 0x81: 2, 0x82: 2, 0x83: 2, 0x84: 2, 0x85: 1, 0x86: 1, 0x87: 2, 0x89: 4,
    0x8A: 2, 0x8B: 2, 0x8C: 2, 0x8E: 2, 0x8F: 2, 0x90: 2, 0x91: 2, 0x92: 2, 0x93: 2,
    0x94: 2, 0x95: 2, 0x96: 2, 0x97: 2, 0x98: 2, 0x99: 2, 0x9A: 2, 0x9B: 2, 0x9C: 2,
    0x9D: 1, 0x9E: 2, 0x9F: 2, 0xA0: 2, 0xA1: 2, 0xA2: 2, 0xA3: 2, 0xA4: 2, 0xA5: 2,
    0xA6: 2, 0xA7: 2, 0xA8: 2, 0xA9: 1, 0xAA: 4, 0xAB: 1, 0xAC: 1, 0xAD: 2, 0xAE: 1,
    0xAF: 1, 0xB0: 2, 0xB1: 1, 0xB2: 10, 0xB3: 1, 0xB4: 8, 0xB5: 4, 0xB6: 4, 0xB7: 15,
    0xB8: 1, 0xB9: 4, 0xBA: 24, 0xBB: 1, 0xBC: 1, 0xBD: 1, 0xBE: 2, 0xBF: 2, 0xC0: 1,
}

# 0x8B warning bit -> JK02 alarm bits, by meaning (docs/jk-bms.md "Alarm bits"); 0 = no equivalent
_OTP = const((1 << 8) | (1 << 15))  # charge + discharge over-temperature protection: blocks both
_WARN_TO_JK02 = (
    0,  # 0 low capacity (a warning only)
    1 << 1,  # 1 MOSFET over-temperature
    1 << 5,  # 2 charge over-voltage = pack OVP
    1 << 12,  # 3 discharge under-voltage = pack UVP
    _OTP,  # 4 battery over-temperature
    1 << 6,  # 5 charge over-current
    1 << 13,  # 6 discharge over-current
    0,  # 7 cell voltage difference
    _OTP,  # 8 battery-box over-temperature (0x81, a battery-side sensor: temps[1])
    1 << 9,  # 9 battery low temperature = charge UTP (the discharge FET shows a discharge UTP)
    1 << 4,  # 10 cell over-voltage
    1 << 11,  # 11 cell under-voltage
    0, 0, 0, 0,  # 12-15 "309_A protection" (meaning unknown), reserved
)

READ_ALL = b"\x4e\x57\x00\x13\x00\x00\x00\x00\x06\x03\x00\x00\x00\x00\x00\x00\x68\x00\x00\x01\x29"


def build_read_all(buf):
    """21-byte read-all request (source 3 = PC) into buf; returns 21."""
    for i in range(21):
        buf[i] = READ_ALL[i]
    return 21


def _checksum_ok(buf, pos, total):
    s = 0
    for i in range(pos, pos + total - 4):
        s += buf[i]
    o = pos + total - 4
    return buf[o] == 0 and buf[o + 1] == 0 and u16be(buf, o + 2) == (s & 0xFFFF)


def frame_len_at(buf, pos, end):
    """codec.stream judge: a complete, checksummed 4E 57 frame at buf[pos:]."""
    if buf[pos] != 0x4E:
        return NONE
    if end - pos < 2:
        return PENDING
    if buf[pos + 1] != 0x57:
        return NONE
    if end - pos < 4:
        return PENDING
    total = u16be(buf, pos + 2) + 2
    if not MIN_FRAME <= total <= MAX_FRAME:
        return NONE
    if end - pos < total:
        return HOLD
    if buf[pos + total - 5] != _END_MARK or not _checksum_ok(buf, pos, total):
        return NONE
    return total


def check_frame(buf, n):
    """Validate a whole 4E 57 frame in buf[0:n]; returns its total length."""
    if n < MIN_FRAME:
        raise DecodeError("4E57 frame too short")
    r = frame_len_at(buf, 0, n)
    if r <= 0:
        raise DecodeError("4E57 frame invalid (header, length, end mark or checksum)")
    if r != n:
        raise DecodeError("4E57 length field does not match the frame")
    return r


def _temp_dc(raw):
    # vendor encoding: 0..100 degC, 101..140 -> -(raw - 100) degC
    if raw <= 100:
        return raw * 10
    if raw <= 140:
        return -(raw - 100) * 10
    raise DecodeError("implausible 4E57 temperature")


def _otp_dc(raw):
    # u16 whole degC (0x9E, 0xA3, 0xA4); outside 0..120 degC = not reported
    return raw * 10 if raw <= 120 else S.NO_TEMP


def _utp_dc(raw):
    # i16 whole degC, plain signed (0xA5, 0xA7); outside -60..60 degC = not reported
    if raw & 0x8000:
        raw -= 0x10000
    return raw * 10 if -60 <= raw <= 60 else S.NO_TEMP


def _current_ma(raw, version):
    if version == 0:
        return (10000 - raw) * 10
    mag = (raw & 0x7FFF) * 10
    return mag if raw & 0x8000 else -mag


def _item_len(buf, p, end):
    ident = buf[p]
    if ident == 0x79:
        if p + 1 >= end:
            raise DecodeError("4E57 cell block truncated")
        n = buf[p + 1]
        if n % 3 or n > 3 * S.MAX_CELLS:
            raise DecodeError("4E57 cell block length")
        return 1 + n
    n = _LEN.get(ident, 0)
    if not n:
        raise DecodeError("unknown 4E57 data id")
    return n


def _walk(buf, start, end, snap):
    """Walk the TLV data of a response. snap None = validate only."""
    version = 1
    p = start
    while p < end:
        n = _item_len(buf, p, end)
        if p + 1 + n > end:
            raise DecodeError("4E57 data item truncated")
        if buf[p] == 0xC0:
            version = buf[p + 1]
        p += 1 + n
    if p != end:
        raise DecodeError("4E57 data overruns")
    have_cells = 0
    ovp = uvp = 0
    p = start
    while p < end:
        ident = buf[p]
        v = p + 1
        n = _item_len(buf, p, end)
        p = v + n
        if ident == 0x79:
            top = 0
            for k in range(v + 1, v + n, 3):
                num = buf[k]
                mv = u16be(buf, k + 1)
                if not 1 <= num <= S.MAX_CELLS or mv > 5000:
                    raise DecodeError("implausible 4E57 cell")
                if num > top:
                    top = num
                if snap is not None:
                    snap.cells[num - 1] = mv
            if top == 0:
                raise DecodeError("no cell voltages")
            if top > have_cells:  # a repeated 0x79 block must not hide cells already written
                have_cells = top
            continue
        if n == 1:
            x = buf[v]
        elif n == 2:
            x = u16be(buf, v)
        elif n == 4:
            x = u32be(buf, v)
        else:
            continue  # text items: nothing for the snapshot
        if ident == 0x85 and x > 100:
            raise DecodeError("SOC above 100 %")
        if ident == 0x80 or ident == 0x81 or ident == 0x82:
            t = _temp_dc(x)
            if snap is not None:
                snap.temps[ident - 0x80] = t
        elif ident == 0x90:
            ovp = x
        elif ident == 0x93:
            uvp = x
        if snap is None:
            continue
        if ident == 0x83:
            snap.pack_mv = x * 10
        elif ident == 0x84:
            snap.current_ma = _current_ma(x, version)
        elif ident == 0x85:
            snap.soc_pct = x
        elif ident == 0x87:
            snap.cycles = x
        elif ident == 0x89:
            snap.cycle_mah = x * 1000
        elif ident == 0x8B:
            a = 0
            for bit in range(16):
                if x & (1 << bit):
                    a |= _WARN_TO_JK02[bit]
            snap.alarms = a
            snap.flags = F.from_jk02(a)
        elif ident == 0x8C:
            snap.charge_fet = x & 1
            snap.discharge_fet = (x >> 1) & 1
            snap.balancing = (x >> 2) & 1
        elif ident == 0x8E:
            snap.pack_ovp_mv = x * 10
        elif ident == 0x8F:
            snap.pack_uvp_mv = x * 10
        elif ident == 0x90:
            snap.cell_ovp_mv = x
        elif ident == 0x91:
            snap.cell_ovpr_mv = x
        elif ident == 0x93:
            snap.cell_uvp_mv = x
        elif ident == 0x94:
            snap.cell_uvpr_mv = x
        elif ident == 0x97:
            snap.max_discharge_ma = x * 1000
        elif ident == 0x99:
            snap.max_charge_ma = x * 1000
        elif ident == 0x9E:
            snap.mos_otp_dc = _otp_dc(x)
        elif ident == 0xA3:
            snap.charge_otp_dc = _otp_dc(x)
        elif ident == 0xA4:
            snap.discharge_otp_dc = _otp_dc(x)
        elif ident == 0xA5:
            snap.charge_utp_dc = _utp_dc(x)
        elif ident == 0xA7:
            snap.discharge_utp_dc = _utp_dc(x)
        elif ident == 0xA9:
            snap.set_cell_count = x
        elif ident == 0xAA:
            snap.design_mah = x * 1000
        elif ident == 0xAB:
            snap.charge_switch = 1 if x else 0
        elif ident == 0xAC:
            snap.discharge_switch = 1 if x else 0
        elif ident == 0xB6:
            snap.runtime_s = x * 60
        elif ident == 0xB9:
            snap.full_mah = x * 1000
    if not have_cells:
        raise DecodeError("4E57 frame without cell data")
    if snap is not None:
        snap.settings_ok = 1 if 1000 <= uvp < ovp <= 5000 else 0
    return have_cells


def _check_thresholds(snap):
    # a threshold pair that contradicts itself is a setting we do not
    # understand: both read as not reported (docs/jk-bms.md "4E 57")
    no = S.NO_TEMP
    if snap.charge_utp_dc != no and snap.charge_otp_dc != no and snap.charge_utp_dc >= snap.charge_otp_dc:
        snap.charge_utp_dc = snap.charge_otp_dc = no
    if snap.discharge_utp_dc != no and snap.discharge_otp_dc != no \
            and snap.discharge_utp_dc >= snap.discharge_otp_dc:
        snap.discharge_utp_dc = snap.discharge_otp_dc = no
    if not 0 < snap.pack_uvp_mv < snap.pack_ovp_mv:
        snap.pack_uvp_mv = snap.pack_ovp_mv = 0


def decode(buf, n, snap):
    """Decode a read-all response in buf[0:n] into snap; raises DecodeError
    (snap untouched) for any malformed or implausible frame."""
    total = check_frame(buf, n)
    if buf[10] == 0 or (buf[8] != 0x06 and buf[8] != 0x03):
        raise DecodeError("not a 4E57 read response")
    start = 11
    end = total - 9
    count = _walk(buf, start, end, None)  # validate everything first
    for i in range(S.MAX_CELLS):
        snap.cells[i] = 0
    for i in range(S.TEMP_SLOTS):
        snap.temps[i] = S.NO_TEMP
    snap.full_mah = 0
    snap.design_mah = 0
    snap.set_cell_count = 0
    snap.charge_switch = 1  # older firmware omits 0xAB / 0xAC: the FETs decide
    snap.discharge_switch = 1
    # thresholds an older firmware may omit: unknown unless this frame has them
    snap.charge_otp_dc = S.NO_TEMP
    snap.charge_utp_dc = S.NO_TEMP
    snap.discharge_otp_dc = S.NO_TEMP
    snap.discharge_utp_dc = S.NO_TEMP
    snap.mos_otp_dc = S.NO_TEMP
    snap.pack_ovp_mv = 0
    snap.pack_uvp_mv = 0
    _walk(buf, start, end, snap)
    _check_thresholds(snap)
    snap.cell_count = count
    snap.cell_stats()
    if not snap.full_mah:
        snap.full_mah = snap.design_mah
    snap.remaining_mah = snap.full_mah * snap.soc_pct // 100
    snap.soh_pct = 0
    snap.heating = 0
    snap.balance_ma = 0
    snap.layout = LAYOUT_4E57
    snap.have = (S.HAVE_CELLS | S.HAVE_PACK_V | S.HAVE_CURRENT | S.HAVE_SOC | S.HAVE_CAPACITY
                 | S.HAVE_TEMPS | S.HAVE_ALARMS | S.HAVE_FETS | S.HAVE_CYCLES | S.HAVE_RUNTIME)
    snap.updates += 1


def __getattr__(name):
    if name == "describe":
        from jkbms.nw_fields import describe

        return describe
    raise AttributeError(name)
