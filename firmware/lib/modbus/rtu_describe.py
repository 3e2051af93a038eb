# Any Modbus RTU frame (request, ACK, reply, exception) as a dict, for tools and
# the console; the gateway's own reads need only modbus.rtu.

from codec.errors import DecodeError
from modbus.crc import crc_ok
from modbus.rtu import READ_HOLDING, WRITE_MULTIPLE, WRITE_SINGLE


def describe(frame, n):
    """A complete RTU frame frame[0:n] (CRC checked) as a dict for tools and
    the console: slave, function, kind ("request", "ack", "reply" or
    "exception") and, as the frame carries them, register, count, byte_count,
    values (16-bit registers) and value (the data as one big-endian integer,
    up to 4 bytes). The function code tells an 8-byte FC03 request from an
    8-byte FC10 ACK; an FC06 request and its ACK are identical ("request").
    Raises DecodeError for anything malformed."""
    if n < 5 or n > len(frame):
        raise DecodeError("modbus frame too short")
    if not crc_ok(frame, 0, n):
        raise DecodeError("modbus CRC mismatch")
    if frame[0] > 247:
        raise DecodeError("modbus slave address above 247")
    f = frame[1]
    out = {"slave": frame[0], "function": f & 0x7F}
    if f & 0x80:
        if n != 5:
            raise DecodeError("bad exception reply length")
        out["kind"] = "exception"
        out["exception_code"] = frame[2]
        return out
    if (f == READ_HOLDING or f == WRITE_MULTIPLE or f == WRITE_SINGLE) and n == 8:
        out["kind"] = "ack" if f == WRITE_MULTIPLE else "request"
        out["register"] = (frame[2] << 8) | frame[3]
        if f == WRITE_SINGLE:
            out["value"] = (frame[4] << 8) | frame[5]
        else:
            out["count"] = (frame[4] << 8) | frame[5]
        return out
    if f == READ_HOLDING:
        out["kind"] = "reply"
        data = 3
        bc = frame[2]
        if bc != n - 5 or bc & 1:
            raise DecodeError("byte count does not match the frame")
    elif f == WRITE_MULTIPLE:
        if n < 9:
            raise DecodeError("FC10 request too short")
        out["kind"] = "request"
        out["register"] = (frame[2] << 8) | frame[3]
        count = (frame[4] << 8) | frame[5]
        out["count"] = count
        data = 7
        bc = frame[6]
        if bc != n - 9 or bc != 2 * count:
            raise DecodeError("byte count does not match the frame")
    elif f == WRITE_SINGLE:
        raise DecodeError("bad FC06 frame length")
    else:
        raise DecodeError("unsupported modbus function 0x%02x" % f)
    out["byte_count"] = bc
    values = []
    for i in range(data, data + bc, 2):
        values.append((frame[i] << 8) | frame[i + 1])
    out["values"] = values
    if bc <= 4:
        v = 0
        for i in range(data, data + bc):
            v = (v << 8) | frame[i]
        out["value"] = v
    return out
