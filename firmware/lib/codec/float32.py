# IEEE-754 single-precision fields as scaled integers, without float maths
# (the ESP32's floats are single precision and every float operation
# allocates): for the JK04 layout, whose fields are floats.

from codec.binary import u32le


def f32le_milli(b, o, scale=1000):
    """IEEE-754 single (LE) at b[o] as round(value * scale), integers only.

    For the JK04 float layout. Values beyond +/- 2**20 and NaN / infinity are
    rejected by the caller's plausibility checks (returned as None)."""
    bits = u32le(b, o)
    exp = (bits >> 23) & 0xFF
    if exp == 0xFF:
        return None
    if exp == 0:
        return 0
    m = (bits & 0x7FFFFF) | 0x800000
    shift = 150 - exp  # value = m * 2**-shift
    if shift < 4:
        return None  # |value| >= 2**20: no JK quantity is that large
    if shift > 60:
        return 0
    v = (m * scale + (1 << (shift - 1))) >> shift
    return -v if bits & 0x80000000 else v
