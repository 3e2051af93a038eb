# JK02_32S logbook frame (type 0x05, BLE request 0xA1): event count at 6, then
# entries of (u32 LE seconds, u8 event code) at 11 + 5 i.
# Console / tool use only (docs/jk-bms.md "55AA frames").

from codec.binary import u32le
from codec.errors import DecodeError

_MAX_ENTRIES = 57  # what fits before the checksum


def describe(buf):
    if len(buf) < 300:
        raise DecodeError("logbook frame shorter than 300 bytes")
    count = u32le(buf, 6)
    n = count if count < _MAX_ENTRIES else _MAX_ENTRIES
    entries = []
    for i in range(n):
        o = 11 + 5 * i
        entries.append([u32le(buf, o), buf[o + 4]])
    return {"log_count": count, "entries": entries}
