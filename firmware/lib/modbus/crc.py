# CRC-16/MODBUS: init 0xFFFF, reflected polynomial 0xA001, no final XOR,
# transmitted low byte first. Table-driven: one lookup per byte instead of
# eight shift/xor steps, which matters for the 300-byte JK-PB replies.

from array import array


def _make_table():
    t = array("H", [0] * 256)
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0xA001 if c & 1 else c >> 1
        t[i] = c
    return t


_TABLE = _make_table()


def crc16(buf, start, end):
    """CRC of buf[start:end]."""
    c = 0xFFFF
    t = _TABLE
    for i in range(start, end):
        c = (c >> 8) ^ t[(c ^ buf[i]) & 0xFF]
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
