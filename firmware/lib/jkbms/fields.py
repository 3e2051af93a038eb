# Table-driven decoding of the rarely read, non-hot-path JK blocks (settings,
# device info) into plain dicts for tools, the console and limit extraction.
# A table row is (name, block offset, kind); the 55AA frame carries the block
# at offset 6 little-endian, the JK-PB Modbus block at offset 0 big-endian per
# field (docs/jk-bms.md "JK-PB").

from codec.binary import ascii_field, i32be, i32le, u16be, u16le, u32be, u32le
from codec.errors import DecodeError

# kinds: (reader, unit divisor or 0 for raw int / text length)
MV = "mV"      # u32 mV -> V
MA = "mA"      # u32 mA -> A
MAH = "mAh"    # u32 mAh -> Ah
DC32 = "dC32"  # i32 0.1 degC -> degC
U32 = "u32"
U16 = "u16"
U8 = "u8"
I8 = "i8"      # signed byte, whole degC
BOOL32 = "bool32"
DH8 = "dh8"    # u8 0.1 h -> h


def read_raw(b, o, kind, be):
    if kind == U8 or kind == DH8:
        return b[o]
    if kind == I8:
        v = b[o]
        return v - 256 if v & 0x80 else v
    if kind == U16:
        return u16be(b, o) if be else u16le(b, o)
    if kind == DC32:
        return i32be(b, o) if be else i32le(b, o)
    return u32be(b, o) if be else u32le(b, o)


def scaled(raw, kind):
    """Raw integer in physical units for JSON output (floats are fine here:
    this runs in host tools and on the console, never per cycle)."""
    if kind == MV or kind == MA or kind == MAH:
        return raw / 1000
    if kind == DC32 or kind == DH8:
        return raw / 10
    if kind == BOOL32:
        return raw != 0
    return raw


def size_of(kind):
    if kind.startswith("text"):
        return int(kind[4:])
    if kind == U8 or kind == I8 or kind == DH8:
        return 1
    return 2 if kind == U16 else 4


def decode_table(b, base, table, be):
    """{name: physical value} for every row of table; b must hold them all."""
    if len(b) < base + need(table):
        raise DecodeError("block too short")
    out = {}
    for row in table:
        name, off, kind = row[0], row[1], row[2]
        if kind.startswith("text"):
            out[name] = ascii_field(b, base + off, size_of(kind))
        else:
            out[name] = scaled(read_raw(b, base + off, kind, be), kind)
    return out


def need(table):
    """Bytes a block must hold for every row of table."""
    end = 0
    for row in table:
        e = row[1] + size_of(row[2])
        if e > end:
            end = e
    return end
