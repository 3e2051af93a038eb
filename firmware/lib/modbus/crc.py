# CRC-16/MODBUS: init 0xFFFF, reflected polynomial 0xA001, no final XOR,
# transmitted low byte first. Driven by a 16-entry table, one lookup per
# nibble: four times fewer steps than bit by bit, and 16 entries instead of
# the 256 a byte table would keep in RAM.

# _NIBBLE[n] = the register after shifting the low nibble n through four
# steps of the polynomial
_NIBBLE = (0x0000, 0xCC01, 0xD801, 0x1400, 0xF001, 0x3C00, 0x2800, 0xE401,
           0xA001, 0x6C00, 0x7800, 0xB401, 0x5000, 0x9C01, 0x8801, 0x4400)


def crc16(buf, start, end):
    """CRC of buf[start:end]."""
    c = 0xFFFF
    t = _NIBBLE
    for i in range(start, end):
        c ^= buf[i]
        c = (c >> 4) ^ t[c & 15]
        c = (c >> 4) ^ t[c & 15]
    return c


def crc_ok(buf, start, end):
    """True if buf[start:end] ends with its correct CRC (low byte first)."""
    if end - start < 4:
        return False
    c = crc16(buf, start, end - 2)
    return buf[end - 2] == (c & 0xFF) and buf[end - 1] == (c >> 8)


def put_crc(buf, end):
    """Append the CRC of buf[0:end] at buf[end]; returns the new length."""
    c = crc16(buf, 0, end)
    buf[end] = c & 0xFF
    buf[end + 1] = c >> 8
    return end + 2
