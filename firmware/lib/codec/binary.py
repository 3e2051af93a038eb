# Allocation-free integer readers for byte buffers.
#
# struct.unpack_from returns a tuple (a heap allocation) and
# int.from_bytes(signed=True) does not exist in MicroPython, so the per-cycle
# decoders read fields byte by byte. Signed values are formed without ever
# building an intermediate >= 2**30 (which would allocate a big int on the
# ESP32's 31-bit small ints) as long as the value itself is small.


def u16le(b, o):
    return b[o] | (b[o + 1] << 8)


def u16be(b, o):
    return (b[o] << 8) | b[o + 1]


def i16le(b, o):
    v = b[o] | (b[o + 1] << 8)
    return v - 0x10000 if v & 0x8000 else v


def i16be(b, o):
    v = (b[o] << 8) | b[o + 1]
    return v - 0x10000 if v & 0x8000 else v


def u32le(b, o):
    return b[o] | (b[o + 1] << 8) | (b[o + 2] << 16) | (b[o + 3] << 24)


def u32be(b, o):
    return (b[o] << 24) | (b[o + 1] << 16) | (b[o + 2] << 8) | b[o + 3]


def i32le(b, o):
    if b[o + 3] & 0x80:
        # -(~v + 1) computed on the inverted bytes keeps small negatives small
        return -((b[o] ^ 0xFF) | ((b[o + 1] ^ 0xFF) << 8)
                 | ((b[o + 2] ^ 0xFF) << 16) | ((b[o + 3] ^ 0xFF) << 24)) - 1
    return u32le(b, o)


def i32be(b, o):
    if b[o] & 0x80:
        return -(((b[o] ^ 0xFF) << 24) | ((b[o + 1] ^ 0xFF) << 16)
                 | ((b[o + 2] ^ 0xFF) << 8) | (b[o + 3] ^ 0xFF)) - 1
    return u32be(b, o)


def sum8(b, start, end):
    s = 0
    for i in range(start, end):
        s += b[i]
    return s & 0xFF


def has_prefix(b, start, end, pattern):
    """True if b[start:end] begins with pattern (no slicing, no allocation)."""
    k = len(pattern)
    if end - start < k:
        return False
    for i in range(k):
        if b[start + i] != pattern[i]:
            return False
    return True


def ascii_field(b, o, n):
    """NUL/space-trimmed ASCII text (for device-info fields; allocates)."""
    end = o
    stop = o + n
    while end < stop and b[end] != 0:
        end += 1
    out = []
    for i in range(o, end):
        c = b[i]
        out.append(chr(c) if 32 <= c < 127 else "?")
    return "".join(out).strip()
