# JK "55 AA EB 90" frame envelope (BLE and JK-PB RS485): header, 300-byte
# length, sum8 checksum at byte 299, frame types and layout detection.
# docs/jk-bms.md "55AA frames". The 20-byte BLE requests are
# jkbms.ble_request.

from codec.binary import sum8, u16le, u32le
from codec.errors import DecodeError
from codec.stream import HOLD, NONE, PENDING
from compat import const

FRAME_LEN = const(300)
CHECKSUM_AT = const(299)

TYPE_SETTINGS = const(0x01)
TYPE_CELL_INFO = const(0x02)
TYPE_DEVICE_INFO = const(0x03)
TYPE_LOGBOOK = const(0x05)

# Data-source / layout ids (also stored in PackSnapshot.layout)
LAYOUT_JK02_24S = const(1)
LAYOUT_JK02_32S = const(2)
LAYOUT_JK04 = const(3)
LAYOUT_PB_FC03 = const(4)  # JK-PB status block read with Modbus FC03
LAYOUT_4E57 = const(5)
LAYOUT_NAMES = {1: "JK02_24S", 2: "JK02_32S", 3: "JK04", 4: "JK_PB_FC03", 5: "4E57"}

HEADER = b"\x55\xaa\xeb\x90"
COMMAND_HEADER = b"\xaa\x55\x90\xeb"  # host -> BMS, and the C8 confirmation


def check_frame(buf, n):
    """Validate a 55AA frame in buf[0:n] (n >= 300; bytes past 300, such as a
    glued C8 confirmation or FC10 ACK, are ignored). Returns the frame type."""
    if n < FRAME_LEN or len(buf) < FRAME_LEN:
        raise DecodeError("55AA frame shorter than 300 bytes")
    for i in range(4):
        if buf[i] != HEADER[i]:
            raise DecodeError("no 55 AA EB 90 header")
    if sum8(buf, 0, CHECKSUM_AT) != buf[CHECKSUM_AT]:
        raise DecodeError("55AA checksum mismatch")
    return buf[4]


def frame_len_at(buf, pos, end):
    """codec.stream judge: a checksummed 300-byte 55AA frame at buf[pos:]."""
    k = end - pos
    if k > 4:
        k = 4
    for i in range(k):
        if buf[pos + i] != HEADER[i]:
            return NONE
    if k < 4:
        return PENDING
    if end - pos < FRAME_LEN:
        return HOLD
    if sum8(buf, pos, pos + CHECKSUM_AT) != buf[pos + CHECKSUM_AT]:
        return NONE
    return FRAME_LEN


def version_layout(buf, start, end):
    """JK02 layout implied by the software version text in buf[start:end]
    (ASCII such as b'11.48'): major >= 11 -> JK02_32S, else JK02_24S; 0
    without digits. Allocation-free (the BLE source reads the device-info
    frame with it without loading jkbms.devinfo)."""
    major = -1
    for i in range(start, end):
        c = buf[i]
        if 48 <= c <= 57:
            major = (major if major > 0 else 0) * 10 + c - 48
        elif major >= 0:
            break
    if major < 0:
        return 0
    return LAYOUT_JK02_32S if major >= 11 else LAYOUT_JK02_24S


def _within_2pct(value, ref):
    return ref > 0 and abs(value - ref) * 50 <= ref


def is_f32_cell_volts(buf, o):
    """True if the f32 LE at buf[o] lies between 0.5 and 5.5 (a JK04 cell
    voltage). Positive IEEE floats order like their bit patterns, so the
    high half-word decides: no float arithmetic needed."""
    hi = u16le(buf, o + 2)
    return (hi > 0x3F00 or (hi == 0x3F00 and u16le(buf, o) > 0)) and hi < 0x40B0


def detect_layout(buf):
    """Layout of a checksummed cell-info frame, or raise (docs/jk-bms.md "55AA frames")."""
    if len(buf) < FRAME_LEN:
        raise DecodeError("cell-info frame shorter than 300 bytes")
    if is_f32_cell_volts(buf, 6):
        return LAYOUT_JK04
    s24 = 0
    for i in range(24):
        s24 += u16le(buf, 6 + 2 * i)
    s32 = s24
    for i in range(24, 32):
        s32 += u16le(buf, 6 + 2 * i)
    m32 = _within_2pct(u32le(buf, 150), s32)
    m24 = _within_2pct(u32le(buf, 118), s24)
    if m32 and not m24:
        return LAYOUT_JK02_32S
    if m24 and not m32:
        return LAYOUT_JK02_24S
    raise DecodeError("cannot tell the cell-info layout")
