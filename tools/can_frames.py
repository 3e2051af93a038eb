#!/usr/bin/env python3
"""Print the inverter CAN frame set the gateway would send for a battery state.

The state is either a JSON file in the schema of tools/jk_decode.py's
cell-info output (see tools/state_json.py), optionally with the BMS settings
merged in (max_charge_current_a, max_discharge_current_a, cell_ovp_v,
cell_ovpr_v, cell_uvp_v, cell_uvpr_v, rcv_v, rfv_v, charge_switch,
discharge_switch, ...), or raw JK frames as hex (--hex, repeatable: give the
cell-info frame and the settings frame, since the current limits need the
BMS settings). The limits come from the firmware's charge policy
(charge.policy) with its default configuration, the frames from the firmware's encoder (PylonEncoder for
--protocol pylon).

Output: candump log format, one frame a line, e.g.
  (0.000000) can0 351#2C02000000000000

A --state file holds one JSON object, or several (e.g. jk_decode.py's output
for a cell-info and a settings frame, one per line); with several, a key
keeps the value of the first object that has it.

Exit status 2 for invalid input (bad hex, invalid frame, malformed JSON) or
when no input carries live battery data (cell voltages).
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
import protocols  # noqa: E402
from app import config as gwconfig  # noqa: E402
from charge.policy import ChargePolicy  # noqa: E402
from protocols.pylon import PylonEncoder  # noqa: E402
from sources.base import FRESH, STALE  # noqa: E402
from jk_decode import parse_hex  # noqa: E402
from jkbms import dispatch  # noqa: E402
from charge import limits  # noqa: E402
from pack import snapshot as S  # noqa: E402

EXIT_INVALID = 2
PROTOCOLS = ("pylon",)


class InputError(Exception):
    pass


def load_state(text):
    """The merged dict of the JSON object(s) in text (first occurrence wins)."""
    dec = json.JSONDecoder()
    merged = {}
    pos = 0
    count = 0
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos == len(text):
            break
        try:
            obj, pos = dec.raw_decode(text, pos)
        except ValueError as e:
            raise InputError("state is not valid JSON: %s" % e)
        if not isinstance(obj, dict):
            raise InputError("state must be a JSON object")
        count += 1
        for key, value in obj.items():
            merged.setdefault(key, value)
    if not count:
        raise InputError("state file is empty")
    return merged


def snapshot_from_hex(texts):
    snap = S.PackSnapshot()
    for i, text in enumerate(texts):
        try:
            dispatch.decode_any(parse_hex(text), snap)
        except (ValueError, DecodeError) as e:
            raise InputError("--hex %d: %s" % (i + 1, e))
    return snap


def snapshot_from_state(path):
    try:
        if path == "-":
            text = sys.stdin.read()
        else:
            with open(path) as f:
                text = f.read()
    except OSError as e:
        raise InputError("cannot read state: %s" % e)
    try:
        return state_json.dict_to_snapshot(load_state(text))
    except ValueError as e:
        raise InputError("bad state: %s" % e)


def frame_set(snap, protocol="pylon", name="PYLON", link_lost=False):
    """[(can_id, bytes)] the gateway sends for snap, and the Limits used:
    the firmware's own charge policy (default configuration) and encoder."""
    cfg = gwconfig.defaults()
    cfg["protocol"] = protocol
    cfg["battery_name"] = name
    enc = protocols.make(cfg)
    policy = ChargePolicy(cfg)
    policy.decide(snap, STALE if link_lost else FRESH)
    lim = policy.lim
    enc.encode(snap, lim, lim.flags)
    return [(can_id, bytes(f)) for can_id, f in zip(enc.ids, enc.frames)], lim


def candump_line(can_id, data, interface="can0", timestamp=0.0):
    return "(%.6f) %s %03X#%s" % (timestamp, interface, can_id, data.hex().upper())


def main(argv=None):
    ap = argparse.ArgumentParser(
        prog="can_frames.py",
        description=__doc__.split("\n\n", 1)[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--state", metavar="FILE", help="JSON state file ('-' = stdin)")
    src.add_argument("--hex", action="append", metavar="HEX",
                     help="raw JK frame as hex; repeat for cell info + settings")
    ap.add_argument("--protocol", choices=PROTOCOLS, default="pylon",
                    help="inverter protocol (default: pylon = Pylontech LV V1.2)")
    ap.add_argument("--name", default="PYLON", help="battery name in 0x35E, 1-8 ASCII characters "
                                                    "(default: PYLON)")
    ap.add_argument("--interface", default="can0", help="interface name in the output (default: can0)")
    ap.add_argument("-v", "--verbose", action="store_true",
                    help="also print the limits and why a current limit is 0 on stderr")
    args = ap.parse_args(argv)
    try:
        PylonEncoder(args.name)
    except ValueError as e:
        ap.error("--name: %s" % e)

    try:
        if args.state is not None:
            snap = snapshot_from_state(args.state)
        else:
            snap = snapshot_from_hex(args.hex)
        if not snap.have & S.HAVE_CELLS:
            raise InputError("no live battery data (cell voltages) in the input: "
                             "give a cell-info frame or state")
    except InputError as e:
        sys.stderr.write("can_frames: %s\n" % e)
        return EXIT_INVALID

    frames, lim = frame_set(snap, args.protocol, args.name)
    if args.verbose:
        sys.stderr.write("CVL %.1f V, CCL %.1f A (%s), DCL %.1f A (%s), DVL %.1f V\n" % (
            lim.cvl_dv / 10, lim.ccl_da / 10, limits.REASONS[lim.charge_reason],
            lim.dcl_da / 10, limits.REASONS[lim.discharge_reason], lim.dvl_dv / 10))
    for can_id, data in frames:
        sys.stdout.write(candump_line(can_id, data, args.interface) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
