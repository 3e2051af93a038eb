# Modbus RTU master side: request builders, response parser and the frame
# judge for codec.stream.FrameExtractor. describe() of any RTU frame, for tools
# and the console, is modbus.rtu_describe (reachable here too, loaded on first
# use: a device never needs it).
#
# Safety: the gateway only reads the BMS. The write builders refuse every
# register except the three JK-PB read triggers (docs/jk-bms.md "JK-PB"),
# and only with the value 0x0000 those triggers take. Block
# 0x1600-0x1615 holds shutdown, calibration and factory-reset commands.

from codec.errors import DecodeError
from codec.stream import NONE, PENDING
from compat import const
from modbus.crc import crc_ok, put_crc

READ_HOLDING = const(0x03)
WRITE_SINGLE = const(0x06)
WRITE_MULTIPLE = const(0x10)

MAX_READ_REGS = const(125)  # Modbus limit; JK-PB readers stay at <= 32
MAX_FRAME = const(256)

# The only registers a write may address: JK-PB "send me a frame" triggers.
TRIGGER_REGISTERS = (0x161C, 0x161E, 0x1620)

# Exception codes (function | 0x80 replies)
ILLEGAL_FUNCTION = const(1)
ILLEGAL_ADDRESS = const(2)
ILLEGAL_VALUE = const(3)
SLAVE_FAILURE = const(4)


class ModbusExceptionReply(DecodeError):
    """The slave answered with function | 0x80; .code holds its code."""

    def __init__(self, function, code):
        super().__init__("modbus exception %d for function 0x%02x" % (code, function))
        self.function = function
        self.code = code


def _check_slave(slave):
    if not 1 <= slave <= 247:
        raise ValueError("slave address must be 1..247")


def _check_write(reg, values):
    if reg not in TRIGGER_REGISTERS:
        raise ValueError("write to register 0x%04x refused: the gateway only reads" % reg)
    for v in values:
        if v != 0:
            raise ValueError("trigger register takes only 0x0000")


def build_read(buf, slave, reg, count):
    """FC03 read-holding-registers request into buf; returns its length (8)."""
    _check_slave(slave)
    if not 1 <= count <= MAX_READ_REGS or not 0 <= reg <= 0xFFFF:
        raise ValueError("bad register range")
    buf[0] = slave
    buf[1] = READ_HOLDING
    buf[2] = reg >> 8
    buf[3] = reg & 0xFF
    buf[4] = count >> 8
    buf[5] = count & 0xFF
    return put_crc(buf, 6)


def build_write_single(buf, slave, reg, value):
    """FC06 write-single-register request (trigger registers only)."""
    _check_slave(slave)
    _check_write(reg, (value,))
    buf[0] = slave
    buf[1] = WRITE_SINGLE
    buf[2] = reg >> 8
    buf[3] = reg & 0xFF
    buf[4] = value >> 8
    buf[5] = value & 0xFF
    return put_crc(buf, 6)


def build_write_multiple(buf, slave, reg, values):
    """FC10 write-multiple-registers request (trigger registers only)."""
    _check_slave(slave)
    count = len(values)
    if not 1 <= count <= 123:
        raise ValueError("bad register count")
    _check_write(reg, values)
    buf[0] = slave
    buf[1] = WRITE_MULTIPLE
    buf[2] = reg >> 8
    buf[3] = reg & 0xFF
    buf[4] = 0
    buf[5] = count
    buf[6] = 2 * count
    o = 7
    for v in values:
        buf[o] = v >> 8
        buf[o + 1] = v & 0xFF
        o += 2
    return put_crc(buf, o)


def parse_reply(frame, n, slave, function, reg=-1, count=-1):
    """Check a complete reply frame[0:n] to our request.

    Returns the number of data bytes (FC03: the data starts at frame[3]; FC06 /
    FC10 acknowledgements: 0). Raises ModbusExceptionReply for an exception
    reply and DecodeError for anything malformed or not answering the request.
    """
    if n < 5 or n > len(frame):
        raise DecodeError("modbus frame too short")
    if not crc_ok(frame, 0, n):
        raise DecodeError("modbus CRC mismatch")
    if frame[0] != slave:
        raise DecodeError("reply from another slave")
    f = frame[1]
    if f == function | 0x80:
        if n != 5:
            raise DecodeError("bad exception reply length")
        raise ModbusExceptionReply(function, frame[2])
    if f != function:
        raise DecodeError("reply to another function")
    if function == READ_HOLDING:
        bc = frame[2]
        if bc != n - 5 or bc & 1:
            raise DecodeError("byte count does not match the frame")
        if count >= 0 and bc != 2 * count:
            raise DecodeError("wrong number of registers")
        return bc
    if function == WRITE_SINGLE or function == WRITE_MULTIPLE:
        if n != 8:
            raise DecodeError("bad acknowledgement length")
        if reg >= 0 and ((frame[2] << 8) | frame[3]) != reg:
            raise DecodeError("acknowledgement for another register")
        if function == WRITE_MULTIPLE and count >= 0 and ((frame[4] << 8) | frame[5]) != count:
            raise DecodeError("acknowledgement for another count")
        return 0
    raise DecodeError("unsupported function")


def _candidate(buf, pos, end, length):
    if length > MAX_FRAME:
        return NONE
    if end - pos < length:
        return PENDING
    return length if crc_ok(buf, pos, pos + length) else NONE


def frame_len_at(buf, pos, end):
    """FrameExtractor judge for RTU frames (requests and replies of FC03 / 06 /
    10 and exception replies), recognised by structure and CRC."""
    if end - pos < 2:
        return PENDING
    if buf[pos] > 247:
        return NONE
    f = buf[pos + 1]
    if f & 0x80:
        if (f & 0x7F) in (READ_HOLDING, WRITE_SINGLE, WRITE_MULTIPLE):
            return _candidate(buf, pos, end, 5)
        return NONE
    if f == WRITE_SINGLE:
        return _candidate(buf, pos, end, 8)
    if f == READ_HOLDING:
        a = _candidate(buf, pos, end, 8)  # request (or our echo)
        if a > 0:
            return a
        if end - pos < 3:
            return PENDING
        b = _candidate(buf, pos, end, 5 + buf[pos + 2])  # reply
        if b > 0:
            return b
        return PENDING if a == PENDING or b == PENDING else NONE
    if f == WRITE_MULTIPLE:
        a = _candidate(buf, pos, end, 8)  # acknowledgement
        if a > 0:
            return a
        if end - pos < 7:
            return PENDING
        b = _candidate(buf, pos, end, 9 + buf[pos + 6])  # request / echo
        if b > 0:
            return b
        return PENDING if a == PENDING or b == PENDING else NONE
    return NONE


def __getattr__(name):
    if name == "describe":
        from modbus.rtu_describe import describe

        return describe
    raise AttributeError(name)
