#!/usr/bin/env python3
"""Decode raw JK-BMS / JK-PB captures given as hex into JSON, one object per frame.

Accepted captures (each one frame, exactly as captured):
  * 55 AA EB 90 frames (300 bytes; BLE or JK-PB RS485): cell info (JK02_24S,
    JK02_32S, JK04), settings, device info, logbook; optionally preceded by
    the FC10 trigger request echo and followed by the 20-byte C8 confirmation
    (+ "AT\\r\\n") or by the FC10 ACK (with or without 0x00 padding);
  * the 20-byte AA 55 90 EB BLE command / confirmation frame;
  * "4E 57" requests and responses (older JK-B/BD UART / RS485 protocol);
  * Modbus RTU frames: FC03 request / reply, FC10 request / ACK, FC06,
    exception replies;
  * a JK-PB FC03 register-block read as a sniffer captures it: the 8-byte
    FC03 request followed by its reply, in one hex string or as two
    consecutive lines (the request line is printed as a frame of its own,
    the reply line is decoded with the request's start register). A bare
    reply is decoded when --register gives its start register. The reply's
    bytes are placed at their offset in block 0x1200 (status), 0x1000
    (settings) or 0x1400 (device info) -- JK registers are byte offsets,
    block offset = 55AA frame offset - 6, every field big-endian -- and every
    field the reply covers completely is decoded, with the same names and
    values as the same data in a 55AA frame (cells: cell_voltages_v when all
    32 cell slots are covered, else cells_v {"cell number": volts}). The
    object carries "block" (status / settings / device_info), "block_offset"
    and, when paired, the "request".

Cell-info data uses tggo/jkbms-poll's field names and units (num_cells,
cell_voltages_v, battery_voltage_v, battery_current_a (+ = charge),
battery_power_w, power_tube_temp_c, t1_c, soc_percent, ...; see
tools/state_json.py); settings, device-info and other fields keep the names
the firmware library's describe functions give them. A field the frame does
not carry is absent. cell_resistances_mohm is in milliohm, as its name says
(jkbms-poll writes ohm under that name). t1_c ... t5_c are the battery
sensors the BMS flags present (what the gateway averages); temp_3_c ...
temp_5_c are the raw JK02_32S fields at offsets 254 / 256 / 258. Every object starts with "protocol" (jk_55aa,
jk_ble_command, jk_4e57, modbus_rtu), "layout" where known and "frame_type"
for 55AA frames, and ends with "raw_frame_hex" (the frame proper, lowercase).

Input: hex arguments (one frame each; spaces allowed inside a quoted
argument), or, without arguments, standard input with one frame per line
(blank lines and lines starting with '#' are skipped).

Exit status: 0 if every frame decoded; 2 if any frame was invalid (a one-line
reason per bad frame goes to stderr; the other frames are still printed) or
if there was no input at all.

Examples:
  python tools/jk_decode.py 011016200001020000d6f1
  python tools/jk_decode.py 010312900002c15e0103040000d02fe62f     # FC03 request + reply
  python tools/jk_decode.py --register 0x1290 0103040000d02fe62f   # the bare reply
  python tools/jk_decode.py --pretty < captures.txt
"""

import argparse
import json
import os
import sys

# run as `python tools/X.py`: the repository root (for the tools package) and
# firmware/lib (the firmware's own code) on sys.path
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for _p in (os.path.join(_ROOT, "firmware", "lib"), _ROOT):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from codec.binary import ascii_field, i16be, i32be, u16be, u32be  # noqa: E402
from codec.errors import DecodeError  # noqa: E402
from jkbms import devinfo, dispatch, fields, settings_fields  # noqa: E402
from jkbms import frame as J  # noqa: E402
from jkbms.frame import LAYOUT_NAMES  # noqa: E402
from jkbms.pb_modbus import ABOUT_BASE, SETTINGS_BASE, STATUS_BASE, TRIGGER_TYPE  # noqa: E402
from modbus import rtu  # noqa: E402
from modbus.crc import crc_ok  # noqa: E402
from modbus.rtu_describe import describe as rtu_describe  # noqa: E402
from pack import snapshot as S  # noqa: E402
from pack.snapshot import PackSnapshot  # noqa: E402
from tools import cli, state_json  # noqa: E402

EXIT_INVALID = 2
LAYOUT_CHOICES = ("JK02_24S", "JK02_32S", "JK04")  # 55AA layouts

# Library field names whose value the snapshot schema already carries (under
# its own name): dropped so every quantity appears once.
SUPERSEDED = (
    "total_voltage_v", "current_a", "soc_pct", "temp_mos_c", "temp_1_c", "temp_2_c",
    "charging_mosfet_status", "discharging_mosfet_status", "cell_voltages_v",
    "balance_status", "balance_current_a", "total_runtime_s",
)
# Schema fields a decoder fills from other fields rather than from the frame:
# left out of the output (per protocol).
NOT_CARRIED = {
    dispatch.PROTO_4E57: ("remaining_capacity_ah",),  # the library derives it as SOC x capacity
}


def parse_hex(text):
    """Hex digits (whitespace allowed anywhere, optional 0x prefix) -> bytes;
    ValueError with a short reason otherwise."""
    s = "".join(text.split())
    if s[:2] in ("0x", "0X"):
        s = s[2:]
    if not s:
        raise ValueError("empty hex string")
    for i, c in enumerate(s):
        if c not in "0123456789abcdefABCDEF":
            raise ValueError("invalid hex: non-hex character %r at position %d" % (c, i))
    if len(s) % 2:
        raise ValueError("invalid hex: odd number of digits (%d)" % len(s))
    return bytes.fromhex(s)


def layout_id(name):
    for lid, n in LAYOUT_NAMES.items():
        if n == name:
            return lid
    raise ValueError("unknown layout %r" % name)


# ---------------------------------------------------------------- 55AA + FC10 ACK

_ECHO_LEN = 11  # our FC10 trigger request, echoed before the JK-PB reply
_ACK_LEN = 8


def split_ack(data):
    """(end of the 55AA part, ACK bytes) when data is a 55AA frame (optionally
    after the FC10 request echo) followed by a CRC-valid FC10 ACK with
    optional 0x00 padding before and after it; None otherwise. A zero byte
    is padding only if it is not the address byte of a valid ACK: a pack that
    is bus master answers with slave address 0."""
    if bytes(data[:4]) == J.HEADER:
        start = 0
    elif len(data) > _ECHO_LEN + 4 and bytes(data[_ECHO_LEN:_ECHO_LEN + 4]) == J.HEADER:
        start = _ECHO_LEN
    else:
        return None
    p = start + J.FRAME_LEN
    for k in range(p, len(data) - _ACK_LEN + 1):
        if k > p and data[k - 1] != 0:
            break  # only padding zeros may come before the ACK
        if data[k + 1] == rtu.WRITE_MULTIPLE and crc_ok(data, k, k + _ACK_LEN) \
                and not any(data[k + _ACK_LEN:]):
            return p, bytes(data[k:k + _ACK_LEN])
    return None


def _decode_with_ack(data, snap, layout, end, ack):
    d = dispatch.decode_any(data[:end], snap, layout or J.LAYOUT_JK02_32S)  # only the JK-PB answers FC10
    a = rtu_describe(ack, _ACK_LEN)
    want = TRIGGER_TYPE.get(a["register"])
    if want is not None and want != d["frame_type"]:
        raise DecodeError("FC10 ACK for register 0x%04x does not match frame type %d"
                          % (a["register"], d["frame_type"]))
    d["ack"] = a
    return d


# ---------------------------------------------------------------- FC03 register blocks

# bytes readable in a block: the 55AA frame's data bytes 6..298 (+1 pad byte)
BLOCK_SPAN = 294
BLOCKS = ((STATUS_BASE, "status"), (SETTINGS_BASE, "settings"), (ABOUT_BASE, "device_info"))
BLOCK_NAMES = ", ".join("0x%04X %s" % b for b in BLOCKS)

# Status block 0x1200 (JK02_32S offsets - 6, big-endian), as the firmware's
# jkbms.cellinfo reads it (OFFSETS_32S): (name, block offset, reader, divisor)
# for the scalar fields. A divisor of 0 keeps the raw integer; "bool" is a
# byte read as true / false; "temp" a 0.1 degC i16 that JK reports as -200.0
# when the sensor is absent (then left out, as in the 55AA output).
_CELLS_OFF, _CELL_SLOTS = 0, 32
_RES_OFF = 74
_SENSORS_OFF, _T4_OFF, _T5_OFF = 208, 250, 252
_PACK_OFF, _CURRENT_OFF = 144, 152
STATUS_FIELDS = (
    ("battery_voltage_v", _PACK_OFF, "u32", 1000),
    ("battery_current_a", _CURRENT_OFF, "i32", 1000),
    ("power_tube_temp_c", 138, "temp", 10),
    ("t1_c", 156, "temp", 10),
    ("t2_c", 158, "temp", 10),
    ("balance_current_a", 164, "i16", 1000),
    ("balance_status", 166, "u8", 0),
    ("error_bitmask", 160, "u32", 0),
    ("soc_percent", 167, "u8", 0),
    ("soh_percent", 184, "u8", 0),
    ("remaining_capacity_ah", 168, "i32", 1000),
    ("nominal_capacity_ah", 172, "u32", 1000),
    ("cycle_count", 176, "u32", 0),
    ("cycle_capacity_ah", 180, "u32", 1000),
    ("total_runtime_s", 188, "u32", 0),
    ("charging", 192, "bool", 0),
    ("discharging", 193, "bool", 0),
    ("enabled_cell_mask", 64, "u32", 0),
    ("cell_avg_v_field", 68, "u16", 1000),
    ("cell_delta_v_field", 70, "u16", 1000),
    ("power_w_field", 148, "u32", 1000),
    ("wire_resistance_warning_mask", 140, "u32", 0),
    ("temp_sensor_present_mask", _SENSORS_OFF, "u8", 0),
    ("temp_3_c", 248, "i16", 10),
    ("temp_4_c", _T4_OFF, "i16", 10),
    ("temp_5_c", _T5_OFF, "i16", 10),
    ("heating", 209, "bool", 0),
    ("charge_status", 274, "u8", 0),
    ("charge_status_time_s", 272, "u16", 0),
    ("battery_type", 269, "u8", 0),
    ("detail_log_count", 260, "u32", 0),
)
_SIZE = {"u8": 1, "bool": 1, "u16": 2, "i16": 2, "temp": 2, "u32": 4, "i32": 4}
_ABSENT_DC = -2000


def _read(img, off, kind):
    if kind in ("u8", "bool"):
        return img[off]
    if kind == "u16":
        return u16be(img, off)
    if kind in ("i16", "temp"):
        return i16be(img, off)
    if kind == "u32":
        return u32be(img, off)
    return i32be(img, off)


def find_block(register, nbytes):
    """(base, name) of the JK-PB block holding register .. + nbytes, or None."""
    for base, name in BLOCKS:
        if base <= register and register - base + nbytes <= BLOCK_SPAN:
            return base, name
    return None


def _status_fields(img, lo, hi):
    def covered(off, size):
        return lo <= off and off + size <= hi

    out = {}
    if covered(_CELLS_OFF, 2 * _CELL_SLOTS):
        snap = PackSnapshot()
        count = 0
        for i in range(_CELL_SLOTS):
            v = u16be(img, _CELLS_OFF + 2 * i)
            snap.cells[i] = v
            if v:
                count = i + 1
        for i in range(count, S.MAX_CELLS):
            snap.cells[i] = 0
        snap.cell_count = count
        if count:
            snap.cell_stats()
            snap.have = S.HAVE_CELLS
            out.update(state_json.snapshot_to_dict(snap))
    else:
        cells = {}
        for i in range(_CELL_SLOTS):
            if covered(_CELLS_OFF + 2 * i, 2):
                cells[str(i + 1)] = u16be(img, _CELLS_OFF + 2 * i) / 1000
        if cells:
            out["cells_v"] = cells
    raw = {}
    for name, off, kind, div in STATUS_FIELDS:
        if not covered(off, _SIZE[kind]):
            continue
        v = _read(img, off, kind)
        raw[name] = v
        if kind == "temp":
            if v != _ABSENT_DC:
                out[name] = v / div
        elif kind == "bool":
            out[name] = v != 0
        else:
            out[name] = v / div if div else v
    if "battery_voltage_v" in raw and "battery_current_a" in raw:
        out["battery_power_w"] = raw["battery_voltage_v"] * raw["battery_current_a"] / 1000000
    # T4 / T5 as jkbms.cellinfo takes them: flagged present, and 0 counts as absent
    for name, bit, key in (("t4_c", 0x10, "temp_4_c"), ("t5_c", 0x20, "temp_5_c")):
        if key in raw and "temp_sensor_present_mask" in raw and raw["temp_sensor_present_mask"] & bit \
                and raw[key] not in (0, _ABSENT_DC):
            out[name] = raw[key] / 10
    if covered(_RES_OFF, 2 * _CELL_SLOTS):
        res = [u16be(img, _RES_OFF + 2 * i) for i in range(_CELL_SLOTS)]
        out["cell_resistances_mohm"] = res[:out["num_cells"]] if "num_cells" in out else res
    return out


def _table_fields(img, lo, hi, table):
    out = {}
    for name, off, kind in table:
        size = fields.size_of(kind)
        if lo <= off and off + size <= hi:
            if kind.startswith("text"):
                out[name] = ascii_field(img, off, size)
            else:
                out[name] = fields.scaled(fields.read_raw(img, off, kind, True), kind)
    return out


def decode_block_reply(reply, register, request=None):
    """An FC03 reply of a JK-PB register block, read from `register` -> dict.
    request: the FC03 request bytes it answers (checked), or None."""
    d = rtu_describe(reply, len(reply))
    if d["function"] != rtu.READ_HOLDING or d["kind"] not in ("reply", "exception"):
        raise DecodeError("not an FC03 reply")
    req = None
    if request is not None:
        req = rtu_describe(request, len(request))
        if req["slave"] != d["slave"]:
            raise DecodeError("FC03 reply from slave %d to a request for slave %d" % (d["slave"], req["slave"]))
        if d["kind"] == "reply" and d["byte_count"] != 2 * req["count"]:
            raise DecodeError("FC03 reply of %d bytes to a request for %d registers"
                              % (d["byte_count"], req["count"]))
    out = {"protocol": dispatch.PROTO_MODBUS, "crc_ok": True, "slave": d["slave"], "function": d["function"],
           "kind": d["kind"], "register": register}
    if req is not None:
        out["count"] = req["count"]
    if d["kind"] == "exception":
        out["exception_code"] = d["exception_code"]
    else:
        n = d["byte_count"]
        out["byte_count"] = n
        found = find_block(register, n)
        if found is None:
            raise DecodeError("registers 0x%04X..0x%04X are not inside a JK-PB register block (%s)"
                              % (register, register + n - 1, BLOCK_NAMES))
        base, name = found
        lo = register - base
        img = bytearray(BLOCK_SPAN)
        img[lo:lo + n] = reply[3:3 + n]
        out["block"] = name
        out["block_offset"] = lo
        if name == "status":
            out.update(_status_fields(img, lo, lo + n))
        elif name == "settings":
            out.update(_table_fields(img, lo, lo + n, settings_fields.TABLE))
            if "nominal_capacity_ah" in out:  # the settings' capacity is the design capacity
                out["design_capacity_ah"] = out["nominal_capacity_ah"]
        else:
            out.update(_table_fields(img, lo, lo + n, devinfo.TABLE))
    if req is not None:
        out["request"] = req
    out["raw_frame_hex"] = bytes(reply).hex()
    return out


def split_fc03_pair(data):
    """(request, reply) when data is an 8-byte FC03 request followed by a
    CRC-valid reply (or exception) from the same slave; else None."""
    if len(data) < 8 + 5 or data[1] != rtu.READ_HOLDING or not crc_ok(data, 0, 8):
        return None
    if data[8] != data[0] or data[9] & 0x7F != rtu.READ_HOLDING or not crc_ok(data, 8, len(data)):
        return None
    return bytes(data[:8]), bytes(data[8:])


def fc03_request(data):
    """The start register of data if it is an 8-byte FC03 request, else None."""
    if len(data) == 8 and data[1] == rtu.READ_HOLDING and data[0] <= 247 and crc_ok(data, 0, 8):
        return (data[2] << 8) | data[3]
    return None


def answers(request, reply):
    """True when the FC03 reply can be the answer to the FC03 request."""
    if reply[0] != request[0]:
        return False
    return reply[1] & 0x80 != 0 or reply[2] == 2 * ((request[4] << 8) | request[5])


def is_fc03_reply(data):
    if len(data) < 5 or data[0] > 247 or data[1] & 0x7F != rtu.READ_HOLDING or not crc_ok(data, 0, len(data)):
        return False
    return data[1] & 0x80 != 0 or (len(data) != 8 and data[2] == len(data) - 5)


# ---------------------------------------------------------------- one capture

def decode_frame(data, layout=0, register=None, request=None):
    """One capture -> (JSON-ready dict, PackSnapshot). Raises DecodeError.
    register: start register of a bare FC03 reply; request: the FC03
    request that preceded it (a sniffer's previous line)."""
    pair = split_fc03_pair(data)
    if pair is not None:
        req, reply = pair
        return decode_block_reply(reply, (req[2] << 8) | req[3], req), PackSnapshot()
    if is_fc03_reply(data):
        if request is not None and answers(request, data):
            return decode_block_reply(data, (request[2] << 8) | request[3], request), PackSnapshot()
        if register is not None:
            return decode_block_reply(data, register), PackSnapshot()
    snap = PackSnapshot()
    split = split_ack(data)
    if split is not None:
        d = _decode_with_ack(data, snap, layout, split[0], split[1])
    else:
        d = dispatch.decode_any(data, snap, layout)
    return _shape(d, snap, data), snap


def _shape(d, snap, data):
    """decode_any()'s dict -> the output object (schema names first)."""
    start, length = d.pop("_span")
    out = {"protocol": d.pop("protocol")}
    for key in ("layout", "frame_type", "frame_counter"):
        if key in d:
            out[key] = d.pop(key)
    out["crc_ok"] = d.pop("crc_ok", True)  # every protocol's check was verified
    state = {}
    if snap.have or snap.settings_ok:
        for key in SUPERSEDED:
            d.pop(key, None)
        state = state_json.snapshot_to_dict(snap)
        for key in NOT_CARRIED.get(out["protocol"], ()):
            state.pop(key, None)
    if "cell_resistances_ohm" in d:  # JK04 floats, in ohm
        d["cell_resistances_mohm"] = [round(r * 1000, 3) for r in d.pop("cell_resistances_ohm")]
    if "cell_resistances_mohm" in d and "num_cells" in state:
        d["cell_resistances_mohm"] = d["cell_resistances_mohm"][:state["num_cells"]]
    # live data first (tggo order); for settings frames the library's table order
    first, second = (state, d) if snap.have else (d, state)
    for part in (first, second):
        for key, value in part.items():
            if key not in out and not isinstance(value, dict):
                out[key] = value
    for key, value in d.items():  # nested frames: request echo, ACK, confirmation
        if isinstance(value, dict):
            out[key] = value
    out["raw_frame_hex"] = bytes(data[start:start + length]).hex()
    return out


def _frames(args):
    """(label, text) for each frame to decode."""
    if args.hex:
        for i, text in enumerate(args.hex):
            yield "argument %d" % (i + 1), text
        return
    for lineno, line in enumerate(sys.stdin, 1):
        text = line.strip()
        if text and not text.startswith("#"):
            yield "line %d" % lineno, text


def _register(text):
    try:
        v = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError("%r is not a register number (e.g. 0x1200)" % text) from None
    if not 0 <= v <= 0xFFFF:
        raise argparse.ArgumentTypeError("%s is not a 16-bit register number" % text)
    return v


def main(argv=None):
    ap = cli.ArgumentParser(
        prog="jk_decode.py",
        description=__doc__.split("\n\n", 1)[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("hex", nargs="*", help="frame as hex (default: read stdin, one frame per line)")
    ap.add_argument("--pretty", action="store_true", help="indented JSON instead of one object per line")
    ap.add_argument("--layout", choices=LAYOUT_CHOICES,
                    help="55AA layout instead of auto-detection (cell info; settings of a JK02_24S "
                         "BMS lack the JK02_32S-only fields)")
    ap.add_argument("--register", type=_register, metavar="REG",
                    help="start register of bare FC03 replies, e.g. 0x1200 (status block), 0x1000 "
                         "(settings), 0x1400 (device info) or inside one (0x1290 = pack voltage)")
    args = ap.parse_args(argv)
    layout = layout_id(args.layout) if args.layout else 0

    failed = False
    count = 0
    prev_request = None  # the previous frame, if it was an FC03 request
    for label, text in _frames(args):
        count += 1
        try:
            data = parse_hex(text)
            out, _ = decode_frame(data, layout, args.register, prev_request)
        except (ValueError, DecodeError) as e:  # DecodeError is a ValueError
            failed = True
            prev_request = None
            sys.stderr.write("jk_decode: %s: %s\n" % (label, e))
            continue
        prev_request = data if fc03_request(data) is not None else None
        if args.pretty:
            sys.stdout.write(json.dumps(out, indent=2) + "\n")
        else:
            sys.stdout.write(json.dumps(out) + "\n")
        sys.stdout.flush()
    if count == 0:
        sys.stderr.write("jk_decode: no frames given\n")
        return EXIT_INVALID
    return EXIT_INVALID if failed else 0


if __name__ == "__main__":
    sys.exit(main())
