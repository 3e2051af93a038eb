# Identify and decode one raw capture of any JK wire format, for host tools
# and the console (not the per-cycle path: this allocates freely):
#   * a 300-byte 55AA frame (any type), optionally preceded by our FC10
#     trigger request (TX echo) and followed by the BLE C8 confirmation and
#     "AT\r\n", or by the FC10 ACK with optional 0x00 padding;
#   * a 20-byte AA 55 90 EB command / confirmation frame;
#   * a 4E 57 request or response;
#   * a Modbus RTU request, ACK, reply or exception
# (docs/jk-bms.md "55AA frames", "4E 57" and "JK-PB").
# decode_any() returns a dict of the decoded fields with the names the
# describe functions use, and fills the snapshot from data frames (cell info,
# settings, 4E 57 responses).

from codec.binary import has_prefix, sum8, u32le
from codec.errors import DecodeError
from jkbms import cellinfo, devinfo, jk04, logbook, nw, settings, settings_fields
from jkbms import frame as J
from jkbms.pb_modbus import TRIGGER_TYPE
from modbus import rtu
from modbus.crc import crc_ok
from modbus.rtu_describe import describe as rtu_describe

PROTO_55AA = "jk_55aa"
PROTO_COMMAND = "jk_ble_command"
PROTO_4E57 = "jk_4e57"
PROTO_MODBUS = "modbus_rtu"

COMMAND_LEN = 20
COMMAND_NAMES = {0x97: "device_info", 0x96: "cell_info", 0xA1: "logbook", 0xC8: "confirmation"}
_ECHO_LEN = 11  # FC10 trigger request
_ACK_LEN = 8
# settings rows from this block offset on exist on JK02_32S / JK-PB only
_SETTINGS_32S_FROM = 136


def _strip_at(buf, end):
    """End of buf[:end] without a trailing "AT\\r\\n" from the BLE module."""
    if end >= 4 and buf[end - 4] == 0x41 and buf[end - 3] == 0x54 \
            and buf[end - 2] == 0x0D and buf[end - 1] == 0x0A:
        return end - 4
    return end


def describe_command(buf, o=0):
    """The 20-byte AA 55 90 EB frame at buf[o:]: a host request or the
    BMS's C8 confirmation."""
    if len(buf) - o < COMMAND_LEN or not has_prefix(buf, o, len(buf), J.COMMAND_HEADER):
        raise DecodeError("not a 20-byte AA 55 90 EB command frame")
    if sum8(buf, o, o + COMMAND_LEN - 1) != buf[o + COMMAND_LEN - 1]:
        raise DecodeError("command frame checksum mismatch")
    t = buf[o + 4]
    return {"header": "AA5590EB", "type": t, "kind": COMMAND_NAMES.get(t, "command"),
            "length": buf[o + 5], "value": u32le(buf, o + 6)}


def _is_ack(buf, p, end):
    return end - p >= _ACK_LEN and buf[p + 1] == 0x10 and crc_ok(buf, p, p + _ACK_LEN)


def _trailer(buf, p, end, out):
    """Check what follows a 55AA frame; adds "confirmation" or "ack"."""
    end = _strip_at(buf, end)
    if p < end and has_prefix(buf, p, len(buf), J.COMMAND_HEADER):
        out["confirmation"] = describe_command(buf, p)
        p += COMMAND_LEN
    else:
        # 0x00 padding, but a zero that starts a CRC-valid FC10 ACK is the
        # address byte of a pack at address 0 (a bus master), not padding
        while p < end and buf[p] == 0 and not _is_ack(buf, p, end):
            p += 1
        if end - p >= _ACK_LEN:
            ack = rtu_describe(bytes(buf[p:p + _ACK_LEN]), _ACK_LEN)
            if ack["kind"] != "ack":
                raise DecodeError("55AA frame followed by a Modbus frame that is not an FC10 ACK")
            out["ack"] = ack
            p += _ACK_LEN
            while p < end and buf[p] == 0:
                p += 1
    if p != end:
        raise DecodeError("unexpected bytes after the 300-byte 55AA frame")


def _decode_55aa(buf, start, end, snap, layout, out):
    f = bytes(buf[start:start + J.FRAME_LEN]) if start else buf
    ftype = J.check_frame(f, end - start)
    _trailer(buf, start + J.FRAME_LEN, end, out)
    ack = out.get("ack")
    if ack is not None:
        want = TRIGGER_TYPE.get(ack["register"])
        if want is not None and want != ftype:
            raise DecodeError("FC10 ACK for register 0x%04x does not match frame type %d"
                              % (ack["register"], ftype))
        if not layout:
            layout = J.LAYOUT_JK02_32S  # only the JK-PB answers FC10 triggers
    out["frame_type"] = ftype
    out["frame_counter"] = f[5]
    out["crc_ok"] = True
    out["_span"] = (start, J.FRAME_LEN)
    if ftype == J.TYPE_CELL_INFO:
        if not layout:
            layout = J.detect_layout(f)
        if layout == J.LAYOUT_JK04:
            # describe_cells checks more fields than decode: run it first so that a
            # rejected frame leaves snap untouched
            extra = jk04.describe_cells(f)
            jk04.decode(f, snap)
        else:
            cellinfo.decode(f, 6, layout, snap)
            extra = cellinfo.describe_extra(f, 6, layout)
    elif ftype == J.TYPE_SETTINGS:
        if not layout and J.is_f32_cell_volts(f, 38) and J.is_f32_cell_volts(f, 74):
            layout = J.LAYOUT_JK04  # power-off voltage and ADC calibration floats
        if layout == J.LAYOUT_JK04:
            extra = jk04.describe_settings(f)
        else:
            extra = settings_fields.describe(f)
            if layout == J.LAYOUT_JK02_24S:
                for row in settings_fields.TABLE:
                    if row[1] >= _SETTINGS_32S_FROM:
                        extra.pop(row[0])
            settings.decode(f, snap)
    elif ftype == J.TYPE_DEVICE_INFO:
        extra = devinfo.describe(f)
    elif ftype == J.TYPE_LOGBOOK:
        layout = J.LAYOUT_JK02_32S
        extra = logbook.describe(f)
    else:
        raise DecodeError("unknown 55AA frame type 0x%02x" % ftype)
    if layout:
        out["layout"] = J.LAYOUT_NAMES[layout]
    for k in extra:
        out[k] = extra[k]
    return out


def decode_any(buf, snap, layout=0):
    """Identify and decode the capture buf (bytes / bytearray, exactly the
    captured bytes). layout (a jkbms.frame LAYOUT_* id, 0 = detect) overrides
    the 55AA layout. Returns a dict with "protocol", "layout" and
    "frame_type" where known, the decoded fields and "_span" = (offset,
    length) of the frame proper inside buf; data frames are decoded into
    snap. Raises DecodeError for anything invalid."""
    n = len(buf)
    if n == 0:
        raise DecodeError("empty capture")
    if has_prefix(buf, 0, len(buf), J.HEADER):
        return _decode_55aa(buf, 0, n, snap, layout, {"protocol": PROTO_55AA})
    if has_prefix(buf, 0, len(buf), J.COMMAND_HEADER):
        if _strip_at(buf, n) != COMMAND_LEN:
            raise DecodeError("AA 55 90 EB command frame is not 20 bytes long")
        out = {"protocol": PROTO_COMMAND}
        d = describe_command(buf)
        for k in d:
            out[k] = d[k]
        out["_span"] = (0, COMMAND_LEN)
        return out
    if buf[0] == 0x4E and n > 1 and buf[1] == 0x57:
        out = {"protocol": PROTO_4E57, "layout": J.LAYOUT_NAMES[J.LAYOUT_4E57]}
        d = nw.describe(buf, n)
        if d.pop("_snapshot", None) is not None:
            nw.decode(buf, n, snap)
        for k in d:
            out[k] = d[k]
        out["_span"] = (0, n)
        return out
    if n > _ECHO_LEN and has_prefix(buf, _ECHO_LEN, len(buf), J.HEADER):
        # our own FC10 trigger request echoed before the JK-PB reply
        req = rtu_describe(bytes(buf[:_ECHO_LEN]), _ECHO_LEN)
        if req["function"] != rtu.WRITE_MULTIPLE or req["kind"] != "request":
            raise DecodeError("bytes before the 55AA frame are not an FC10 request")
        out = {"protocol": PROTO_55AA, "request": req}
        return _decode_55aa(buf, _ECHO_LEN, n, snap, layout, out)
    if n < 2 or buf[0] > 247 or (buf[1] & 0x7F) not in (rtu.READ_HOLDING, rtu.WRITE_SINGLE,
                                                         rtu.WRITE_MULTIPLE):
        raise DecodeError("unrecognised capture: not a 55AA, AA55 command, 4E57 or Modbus RTU frame")
    out = {"protocol": PROTO_MODBUS}
    d = rtu_describe(buf, n)
    for k in d:
        out[k] = d[k]
    out["_span"] = (0, n)
    return out
