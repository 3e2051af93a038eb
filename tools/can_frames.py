#!/usr/bin/env python3
"""Print the inverter CAN frames the gateway would send for a battery state or a time series.

Three inputs (one of them):
  --hex HEX      raw JK frames as hex (repeatable: give the cell-info frame and
                 the settings frame, since the current limits need the BMS
                 settings); they make up one state -> one frame set.
  --state FILE   battery states as JSON in the schema of tools/jk_decode.py's
                 cell-info output (see tools/state_json.py), optionally with
                 the BMS settings (max_charge_current_a, cell_ovp_v, ...). The
                 file holds one JSON object, or JSON Lines. Each object is one
                 independent state -> one frame set; the sets are separated by
                 a blank line. --merge merges all objects into ONE state first
                 (later values win; what jk_decode.py prints for a cell-info and
                 a settings frame, one object per frame, needs --merge).
  --series FILE  a time series, JSON Lines, replayed through the firmware's
                 stateful policy: each line {"t_s": SECONDS, <state fields>}
                 (the BMS delivered this data set at t_s) or
                 {"t_s": SECONDS, "bms": "silent"} (no new data at t_s); t_s
                 must not decrease. A data line updates the state the way a
                 decoded frame updates the firmware's snapshot: the fields it
                 gives replace the old ones, the others are kept (so the first
                 line gives the whole state, later ones what changes). The
                 state counts as fresh data only when it is complete, as in the
                 firmware (cells, pack voltage, current, SOC, MOSFET states and
                 the BMS settings). Frames are computed at every line's time
                 and every --period-ms after it until the next line; the series
                 ends at its last line.

The limits come from the firmware's own charge policy (charge.policy
ChargePolicy, default configuration; with --series also its link-loss
handling: sources.base.Freshness with --timeout-s, --link-loss zeros sends
CCL = DCL = 0 with the communication-fault bits, stop sends nothing), the
frames from the firmware's encoder of --protocol (protocols.make; --list
shows every protocol with its frame ids). Nothing is printed for a time at which the policy sends nothing (no
complete data set yet, or link loss with --link-loss stop).

Time. The policy is stateful: after the start and after any block (stale
data, an alarm, a temperature window, implausible data, ...) CCL and DCL
stay 0 for hold_s (default %(hold)d s) after the block cleared, then ramp up
at ramp_a_s (default %(ramp)d A/s); its charge state machine (bulk /
absorption / float) and the CVL slew run on time too.
  --hex / --state  one frame set per state: the one the gateway sends once
                   it has had that state for the hold and the ramp (the
                   policy runs on a virtual clock from the first data, one
                   decision per CAN period, until both current limits are at
                   their target or held at 0 by a block). The frame sets of
                   the first seconds (0 A while the hold runs) are what
                   --series shows.
  --series         the policy runs on the series' own clock: every decision
                   gets now_ms = t (the line's time or a period after it, in
                   ms, wrapped like ticks_ms), so hold, ramp and state machine
                   evolve in series time: the first frame sets carry CCL =
                   DCL = 0 until hold_s after the first data, and after an
                   outage the limits return hold_s after the data (then ramp).

--list prints each protocol, one line: its name, what it is, the ids of its
frame set in send order, its period and the inverter frame it counts as
heartbeat (a protocol whose module is not in firmware/lib/protocols says so).

Output: candump log format (what `candump -l` writes and python-can's
can.LogReader reads from a .log file), one frame a line, e.g.
  (0.000000) can0 351#2C02000000000000
--hex and --state frames are stamped 0.000000, --series frames with their time.

Exit status 2 for invalid input (bad hex, invalid frame, malformed JSON, a
state without live battery data, a protocol whose encoder module is missing)
with a one-line reason on stderr.
"""
# (the figures in the docstring are filled in from the firmware's defaults below)

import argparse
import os
import sys

# run as `python tools/X.py`: the repository root (for the tools package) and
# firmware/lib (the firmware's own code) on sys.path
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for _p in (os.path.join(_ROOT, "firmware", "lib"), _ROOT):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import protocols  # noqa: E402
from app import config as gwconfig  # noqa: E402
from charge import texts  # noqa: E402
from charge.policy import ChargePolicy  # noqa: E402
from charge.ramp import NORMAL  # noqa: E402
from codec.errors import DecodeError  # noqa: E402
from compat import ticks_add  # noqa: E402
from jkbms import dispatch  # noqa: E402
from pack import snapshot as S  # noqa: E402
from sources.base import FRESH, STALE, STATE_NAMES, Freshness  # noqa: E402
from tools import cli, state_json  # noqa: E402
from tools.jk_decode import parse_hex  # noqa: E402

PROG = "can_frames"
EXIT_INVALID = 2
PROTOCOLS = protocols.NAMES
# --list: what each protocol is (docs/inverter-can.md)
ABOUT = {
    "pylon": "Pylontech LV V1.2 (Deye/Sunsynk, Growatt L52, Sofar, EG4 Lithium 2, ...)",
    "pylon_plus": "Pylontech V1.3 / Goodwe V1.5: Pylontech plus 0x35A alarms, 0x35F and 0x37x",
    "growatt": "Growatt native LV (L51), big-endian, answers the inverter's 0x301 query",
    "sma": "SMA Sunny Island LiIon_Ext-BMS, 0x35A alarm pairs",
    "victron": "Victron CAN-bus BMS LV (GX devices)",
    "luxpower": "Luxpower / EG4 Lithium 6 (V04): Pylontech with cell min/max, capacity, cycles",
    "deye": "Deye / Sunsynk / Sol-Ark: the Pylontech layout, no frames while the BMS data is lost",
}
_DEFAULTS = gwconfig.defaults()
__doc__ = __doc__ % {"hold": _DEFAULTS["hold_s"], "ramp": _DEFAULTS["ramp_a_s"]}
NO_LIVE_DATA = "no live battery data (cell voltages) in the input: give a cell-info frame or state"


class InputError(Exception):
    pass


def snapshot_from_hex(texts):
    snap = S.PackSnapshot()
    for i, text in enumerate(texts):
        try:
            dispatch.decode_any(parse_hex(text), snap)
        except (ValueError, DecodeError) as e:
            raise InputError("--hex %d: %s" % (i + 1, e)) from None
    return snap


def _snapshot(state, where=""):
    try:
        snap = state_json.dict_to_snapshot(state)
    except ValueError as e:
        raise InputError("%sbad state: %s" % (where, e)) from None
    if not snap.have & S.HAVE_CELLS:
        hint = ""
        if where and state_json.is_settings_object(state):
            hint = " (it holds BMS settings: to combine jk_decode.py's cell-info and settings objects " \
                   "into one state, use --merge)"
        raise InputError(where + NO_LIVE_DATA + hint)
    return snap


def snapshots_from_state(path, merge=False):
    """[PackSnapshot]: one per object of the state file, or one with merge."""
    try:
        objs = state_json.read(path)
    except state_json.StateError as e:
        raise InputError(str(e)) from None
    if merge:
        return [_snapshot(state_json.merge([o for _, o in objs]))]
    many = len(objs) > 1
    return [_snapshot(o, "line %d: " % n if many else "") for n, o in objs]


def make_cfg(protocol="pylon", name="", link_loss=None, timeout_s=None):
    cfg = gwconfig.defaults()
    cfg["protocol"] = protocol
    cfg["battery_name"] = name
    if link_loss is not None:
        cfg["link_loss"] = link_loss
    if timeout_s is not None:
        cfg["bms_timeout_s"] = timeout_s
    return cfg


def frames_of(enc):
    return [(can_id, bytes(f)) for can_id, f in zip(enc.ids, enc.frames, strict=True)]


def period_of(cfg, enc=None):
    """The CAN period (ms) the firmware uses with cfg: the protocol's own, else can_period_ms."""
    if enc is None:
        enc = protocols.make(cfg)
    return enc.period_ms or cfg["can_period_ms"]


def settled(policy):
    """Hold and ramp are over: each current limit is at its target, or its
    target is 0 (a block holds it there)."""
    return ((policy.ccl_target_ma == 0 or policy.ccl.mode == NORMAL)
            and (policy.dcl_target_ma == 0 or policy.dcl.mode == NORMAL))


def settle_steps(cfg, period_ms):
    """Decisions enough for any hold and ramp of cfg: hold_s, then the ramp
    from 0 to the larger user maximum, a period apiece, and two spare."""
    ramp_s = -(-max(cfg["max_charge_a"], cfg["max_discharge_a"]) // cfg["ramp_a_s"])
    return -(-(cfg["hold_s"] + ramp_s) * 1000 // period_ms) + 3


def settle(policy, snap, cfg, period_ms, t=0):
    """Decide on snap (fresh data) at t, t + period_ms, ... (ms, a virtual
    clock) until settled(), at most settle_steps(); the time of the last
    decision."""
    for k in range(settle_steps(cfg, period_ms)):
        now = t + k * period_ms
        policy.decide(snap, FRESH, ticks_add(0, now))
        if settled(policy):
            break
    return now


def steady_policy(snap, cfg, period_ms):
    """(ChargePolicy, t_ms): a new policy after settle() on snap from 0, and
    the time of its last decision."""
    policy = ChargePolicy(cfg, 0)
    return policy, settle(policy, snap, cfg, period_ms)


def frame_set(snap, protocol="pylon", name="", link_lost=False):
    """([(can_id, bytes)], Limits, t_ms): the frame set the gateway sends for
    snap once the hold and the ramp are over (steady_policy(); the firmware's
    own charge policy, default configuration, and encoder; name "" = the
    protocol's own), and the time of that decision after the first data. link_lost: the next decision, a
    period later, on that data gone stale."""
    cfg = make_cfg(protocol, name)
    enc = protocols.make(cfg)
    period = period_of(cfg, enc)
    policy, t = steady_policy(snap, cfg, period)
    if link_lost:
        t += period
        policy.decide(snap, STALE, ticks_add(0, t))
    lim = policy.lim
    enc.encode(snap, lim, lim.flags)
    return frames_of(enc), lim, t


def candump_line(can_id, data, interface="can0", timestamp=0.0):
    return "(%.6f) %s %03X#%s" % (timestamp, interface, can_id, data.hex().upper())


def describe_limits(lim):
    return "CVL %.1f V, CCL %.1f A (%s), DCL %.1f A (%s), DVL %.1f V" % (
        lim.cvl_dv / 10, lim.ccl_da / 10, texts.REASONS[lim.charge_reason],
        lim.dcl_da / 10, texts.REASONS[lim.discharge_reason], lim.dvl_dv / 10)


# ---------------------------------------------------------------- --series

SILENT = "silent"


def complete(snap):
    """What sources.base.Source.complete() asks of a data set before it
    counts as fresh data."""
    return (snap.have & S.HAVE_FOR_INVERTER) == S.HAVE_FOR_INVERTER and snap.settings_ok == 1


def read_series(path):
    """[(t_ms, PackSnapshot or None for silence, lineno)] of a series file,
    and warnings (incomplete data sets). Data lines accumulate (merge())."""
    try:
        text = state_json.read_text(path)
    except state_json.StateError as e:
        raise InputError(str(e)) from None
    points = []
    warnings = []
    state = {}
    last_t = None
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            objs = state_json.parse(line)
        except state_json.StateError as e:
            raise InputError("series line %d: %s" % (lineno, str(e).replace("line 1 is ", ""))) from None
        obj = dict(objs[0][1])
        where = "series line %d: " % lineno
        t = obj.pop("t_s", None)
        if isinstance(t, bool) or not isinstance(t, (int, float)) or t != t or t < 0:
            raise InputError(where + "needs \"t_s\": a time in seconds >= 0")
        t_ms = int(round(t * 1000))
        if last_t is not None and t_ms < last_t:
            raise InputError(where + "t_s %g goes back in time" % t)
        last_t = t_ms
        if "bms" in obj:
            if obj["bms"] != SILENT or len(obj) != 1:
                raise InputError(where + "a silence line is {\"t_s\": SECONDS, \"bms\": \"silent\"} "
                                         "and nothing else")
            points.append((t_ms, None, lineno))
            continue
        state = state_json.merge([state, obj])
        snap = _snapshot(state, where)
        if not complete(snap):
            warnings.append(where + "the state is not a complete data set yet (needs cells, pack voltage, "
                                    "current, SOC, charging / discharging and the BMS settings): not fresh data")
        points.append((t_ms, snap, lineno))
    if not points:
        raise InputError("series file has no lines")
    return points, warnings


def replay(points, cfg, period_ms):
    """Yield (t_ms, state, policy, encoder or None): the firmware's
    Freshness + ChargePolicy at every line's time and every period_ms between
    lines, on the series' clock (now = t_ms, wrapped like ticks_ms, for the
    freshness, the policy's construction and every decision); the encoder
    (with its frames encoded) when a frame set is sent."""
    fresh = Freshness(cfg["bms_timeout_s"] * 1000)
    policy = ChargePolicy(cfg, ticks_add(0, points[0][0]))
    enc = protocols.make(cfg)
    snap = S.PackSnapshot()  # nothing received yet
    for i, (t_ms, data, _) in enumerate(points):
        if data is not None:
            snap = data
            if complete(snap):
                fresh.data_ok(ticks_add(0, t_ms))
        end = points[i + 1][0] if i + 1 < len(points) else t_ms + 1
        t = t_ms
        while t < end:
            now = ticks_add(0, t)
            state = fresh.state(now)
            if policy.decide(snap, state, now):
                lim = policy.lim
                enc.encode(snap, lim, lim.flags)
                yield t, state, policy, enc
            else:
                yield t, state, policy, None
            t += period_ms


# ---------------------------------------------------------------- main

def encoder(protocol, name=""):
    """The firmware's encoder of protocol with battery name (a new one);
    ImportError with a reason when its module is not there, ValueError for
    a name the protocol refuses."""
    try:
        return protocols.make(make_cfg(protocol, name))
    except ImportError as e:
        if protocol in PROTOCOLS and getattr(e, "name", None) == "protocols." + protocol:
            raise ImportError("its encoder module firmware/lib/protocols/%s.py is not there" % protocol) from None
        raise


def list_lines():
    """--list: one line per protocol."""
    out = []
    cfg = make_cfg()
    for name in PROTOCOLS:
        try:
            enc = encoder(name)
        except ImportError as e:
            out.append("%-10s  %s; %s" % (name, ABOUT.get(name, ""), e))
            continue
        period = enc.period_ms or cfg["can_period_ms"]
        out.append("%-10s  %s; frames %s every %d ms; heartbeat %s" % (
            name, ABOUT.get(name, ""), " ".join("%03X" % i for i in enc.ids), period, enc.HEARTBEAT))
    return out


def main(argv=None):
    doc_head, doc_rest = __doc__.split("\n\n", 1)
    ap = cli.ArgumentParser(prog="can_frames.py", description=doc_head, epilog=doc_rest,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--list", action="store_true", help="list the protocols (name, what, frame ids) and exit")
    src.add_argument("--state", metavar="FILE", help="JSON state file ('-' = stdin)")
    src.add_argument("--hex", action="append", metavar="HEX",
                     help="raw JK frame as hex; repeat for cell info + settings")
    src.add_argument("--series", metavar="FILE.jsonl", help="time series, JSON Lines ('-' = stdin)")
    ap.add_argument("--merge", action="store_true",
                    help="--state: merge all objects into one state (later values win)")
    ap.add_argument("--protocol", choices=PROTOCOLS, default="pylon",
                    help="inverter protocol (default: pylon = Pylontech LV V1.2; --list says what each is)")
    ap.add_argument("--name", default=None, help="battery name the protocol sends (0x35E on most), printable "
                                                 "ASCII (default: the protocol's own, e.g. PYLON)")
    ap.add_argument("--interface", default="can0", help="interface name in the output (default: can0)")
    lo, hi = gwconfig.SCHEMA["can_period_ms"][2:]
    ap.add_argument("--period-ms", type=cli.number(int, lo, hi, "a whole number of ms"), default=None,
                    help="--series: CAN period (default: the protocol's, else the firmware default %d)"
                         % _DEFAULTS["can_period_ms"])
    ap.add_argument("--link-loss", choices=gwconfig.SCHEMA["link_loss"][3], default=None,
                    help="--series: what is sent once the BMS data is stale (default: the firmware "
                         "default, %s)" % _DEFAULTS["link_loss"])
    lo, hi = gwconfig.SCHEMA["bms_timeout_s"][2:]
    ap.add_argument("--timeout-s", type=cli.number(int, lo, hi, "a whole number of seconds"), default=None,
                    help="--series: BMS data is stale after this many seconds without new data "
                         "(default: the firmware default bms_timeout_s, %d)" % _DEFAULTS["bms_timeout_s"])
    ap.add_argument("-v", "--verbose", action="store_true",
                    help="also print the limits and why a current limit is 0 on stderr")
    args = ap.parse_args(argv)
    if args.list:
        sys.stdout.write("".join(line + "\n" for line in list_lines()))
        return 0
    if args.name == "":
        ap.error("--name: an empty battery name (leave --name out for the protocol's own)")
    args.name = args.name or ""
    try:
        encoder(args.protocol, args.name)
    except ImportError as e:
        ap.error("--protocol %s: %s" % (args.protocol, e))
    except ValueError as e:
        ap.error("--name: %s" % e)
    if args.series is None:
        for opt in ("period_ms", "link_loss", "timeout_s"):
            if getattr(args, opt) is not None:
                ap.error("--%s needs --series" % opt.replace("_", "-"))
    if args.merge and args.state is None:
        ap.error("--merge goes with --state (--hex frames always make one state, --series lines accumulate)")

    try:
        if args.series is not None:
            return run_series(args)
        if args.state is not None:
            snaps = snapshots_from_state(args.state, args.merge)
        else:
            snaps = [snapshot_from_hex(args.hex)]
            if not snaps[0].have & S.HAVE_CELLS:
                raise InputError(NO_LIVE_DATA)
    except InputError as e:
        return cli.fail(PROG, e, EXIT_INVALID)

    out = []
    for k, snap in enumerate(snaps):
        frames, lim, t = frame_set(snap, args.protocol, args.name)
        if args.verbose:
            sys.stderr.write(("state %d: " % (k + 1) if len(snaps) > 1 else "") + "%.0f s after the first data: "
                             % (t / 1000) + describe_limits(lim) + "\n")
        if k:
            out.append("")
        for can_id, data in frames:
            out.append(candump_line(can_id, data, args.interface))
    sys.stdout.write("\n".join(out) + "\n")
    return 0


def run_series(args):
    points, warnings = read_series(args.series)
    for w in warnings:
        sys.stderr.write("%s: warning: %s\n" % (PROG, w))
    cfg = make_cfg(args.protocol, args.name, args.link_loss, args.timeout_s)
    period = args.period_ms or period_of(cfg)
    lines = []
    for t, state, policy, enc in replay(points, cfg, period):
        if args.verbose:
            what = describe_limits(policy.lim) if enc is not None else "nothing sent"
            sys.stderr.write("%10.3f s  %-26s %-10s %s\n" % (t / 1000, STATE_NAMES[state],
                                                            texts.STATES[policy.ctl.state], what))
        if enc is None:
            continue
        for can_id, data in frames_of(enc):
            lines.append(candump_line(can_id, data, args.interface, t / 1000))
    if lines:
        sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
