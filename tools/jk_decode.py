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
    exception replies.

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
  python tools/jk_decode.py --pretty < captures.txt
"""

import argparse
import json
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
for _p in (os.path.join(os.path.dirname(_HERE), "firmware", "lib"), _HERE):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import state_json  # noqa: E402
from codec.errors import DecodeError  # noqa: E402
from jkbms import dispatch  # noqa: E402
from jkbms.frame import LAYOUT_NAMES  # noqa: E402
from pack.snapshot import PackSnapshot  # noqa: E402

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


def decode_frame(data, layout=0):
    """One capture -> (JSON-ready dict, PackSnapshot). Raises DecodeError."""
    snap = PackSnapshot()
    d = dispatch.decode_any(data, snap, layout)
    start, length = d.pop("_span")
    out = {"protocol": d.pop("protocol")}
    for key in ("layout", "frame_type", "frame_counter"):
        if key in d:
            out[key] = d.pop(key)
    out["crc_ok"] = d.pop("crc_ok", True)  # every protocol's check was verified
    fields = {}
    if snap.have or snap.settings_ok:
        for key in SUPERSEDED:
            d.pop(key, None)
        fields = state_json.snapshot_to_dict(snap)
        for key in NOT_CARRIED.get(out["protocol"], ()):
            fields.pop(key, None)
    if "cell_resistances_ohm" in d:  # JK04 floats, in ohm
        d["cell_resistances_mohm"] = [round(r * 1000, 3) for r in d.pop("cell_resistances_ohm")]
    if "cell_resistances_mohm" in d and "num_cells" in fields:
        d["cell_resistances_mohm"] = d["cell_resistances_mohm"][:fields["num_cells"]]
    # live data first (tggo order); for settings frames the library's table order
    first, second = (fields, d) if snap.have else (d, fields)
    for part in (first, second):
        for key, value in part.items():
            if key not in out and not isinstance(value, dict):
                out[key] = value
    for key, value in d.items():  # nested frames: request echo, ACK, confirmation
        if isinstance(value, dict):
            out[key] = value
    out["raw_frame_hex"] = bytes(data[start:start + length]).hex()
    return out, snap


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


def main(argv=None):
    ap = argparse.ArgumentParser(
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
    args = ap.parse_args(argv)
    layout = layout_id(args.layout) if args.layout else 0

    failed = False
    count = 0
    for label, text in _frames(args):
        count += 1
        try:
            out, _ = decode_frame(parse_hex(text), layout)
        except (ValueError, DecodeError) as e:  # DecodeError is a ValueError
            failed = True
            sys.stderr.write("jk_decode: %s: %s\n" % (label, e))
            continue
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
