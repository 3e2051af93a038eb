#!/usr/bin/env python3
"""Decode inverter CAN traffic with a protocol's DBC, one line per frame.

What a user runs beside a real inverter (or on a candump log): every frame
is decoded with the shipped DBC of --protocol (docs/dbc/PROTOCOL.dbc; --dbc
FILE for another) and printed as

  TIME  ID  MESSAGE  signal=value unit  signal=value unit ...

TIME in seconds (a log's own timestamps; live: since the start), ID in hex.
A frame whose id the DBC does not know is printed raw (ID#HEX), as is one
that does not decode (wrong length).

Input, one of:
  --log FILE       a candump log (`candump -l`, `candump -L`, what
                   tools/can_frames.py and tools/simulate.py write); '-' =
                   stdin in that format. python-can's can.LogReader reads it
                   (so .asc, .blf, .trc ... work too); a name python-can does
                   not know is read as a candump log.
  --interface IF --channel CH [--bitrate B]
                   a live bus through python-can, any interface:
                   socketcan (--channel can0), slcan (--channel /dev/ttyACM0
                   or socket://HOST:PORT), pcan, kvaser, ... Stops after
                   --seconds or --count, or on Ctrl-C.

--brief leaves out the one-bit signals that are 0 (an alarm frame then
shows only the bits raised). --changes prints a message only when its decoded values differ from the
last time it was printed (a steady inverter link then prints each message
once). --count N stops after N printed lines.

Examples:
  python tools/can_watch.py --protocol pylon --log frames.log
  python tools/can_frames.py --hex CELLINFO --hex SETTINGS | python tools/can_watch.py --protocol pylon --log -
  python tools/can_watch.py --protocol sma --interface socketcan --channel can0 --changes
  python tools/can_watch.py --protocol victron --interface slcan --channel /dev/ttyACM0 --bitrate 500000

Exit status 0; 2 for bad arguments or unreadable input (no such protocol or
DBC, a log that cannot be read, a bus that cannot be opened) with a one-line
reason on stderr. Needs cantools and python-can (requirements-dev.txt).
"""
import argparse
import math
import os
import sys
import time

# run as `python tools/X.py`: the repository root (for the tools package) and
# firmware/lib (the firmware's own code) on sys.path
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for _p in (os.path.join(_ROOT, "firmware", "lib"), _ROOT):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import protocols  # noqa: E402
from tools import cli  # noqa: E402

PROG = "can_watch"
EXIT_INVALID = 2
DBC_DIR = os.path.join(_ROOT, "docs", "dbc")


class InputError(Exception):
    pass


def dbc_path(protocol):
    """The shipped DBC of protocol (it may not exist)."""
    return os.path.join(DBC_DIR, protocol + ".dbc")


def _decimals(scale):
    """Digits after the point that a signal's scale gives (0.01 -> 2, 1 -> 0)."""
    if not scale or scale == int(scale):
        return 0
    return max(0, min(6, -math.floor(math.log10(abs(scale)) + 1e-9)))


class Decoder:
    """A DBC's messages by id: text(can_id, data) is the frame's decoded
    reading, values(can_id, data) its signal values (None for an id the DBC
    lacks or a frame that does not decode)."""

    def __init__(self, path):
        try:
            import cantools
        except ImportError:
            raise InputError("cantools is not installed (pip install cantools)") from None
        try:
            self.db = cantools.database.load_file(path, strict=True)
        except OSError as e:
            raise InputError("DBC %s: %s" % (path, e.strerror or e)) from None
        except Exception as e:  # noqa: BLE001 - cantools raises its own parse errors
            raise InputError("DBC %s: %s" % (path, " ".join(str(e).split()))) from None
        self.path = path
        self.by_id = {m.frame_id: m for m in self.db.messages if not m.is_extended_frame}
        self.ext = {m.frame_id: m for m in self.db.messages if m.is_extended_frame}

    @classmethod
    def for_protocol(cls, protocol):
        return cls(dbc_path(protocol))

    def message(self, can_id, extended=False):
        return (self.ext if extended else self.by_id).get(can_id)

    def values(self, can_id, data, extended=False):
        msg = self.message(can_id, extended)
        if msg is None:
            return None
        try:
            return msg.decode(bytes(data), decode_choices=True, scaling=True)
        except Exception:  # noqa: BLE001 - wrong length, bad multiplexer: shown raw
            return None

    def text(self, can_id, data, extended=False, brief=False):
        """'MESSAGE sig=value unit ...', or '' when the frame does not decode.
        brief: without the one-bit signals that are 0 ("no bits set" when
        that leaves none)."""
        msg = self.message(can_id, extended)
        vals = self.values(can_id, data, extended)
        if vals is None:
            return ""
        parts = [msg.name]
        for sig in msg.signals:
            if sig.name not in vals:
                continue
            v = vals[sig.name]
            if brief and sig.length == 1 and not getattr(v, "value", v):  # a choice's number
                continue
            parts.append(sig.name + "=" + _value(sig, v) + (" " + sig.unit if sig.unit else ""))
        if len(parts) == 1:
            parts.append("no bits set")
        return "  ".join(parts)


def _value(sig, v):
    if hasattr(v, "name") and not isinstance(v, (int, float)):  # a NamedSignalValue (VAL_ choice)
        return str(v.name)
    if isinstance(v, float) or not float(sig.scale).is_integer() or not float(sig.offset).is_integer():
        return "%.*f" % (_decimals(sig.scale), v)
    return "%d" % v


def raw(can_id, data, extended=False):
    return ("%08X" if extended else "%03X") % can_id + "#" + bytes(data).hex().upper()


def line(t, can_id, data, decoder, extended=False, brief=False):
    """One output line for a frame at t seconds."""
    text = decoder.text(can_id, data, extended, brief) if decoder is not None else ""
    ident = ("%08X" if extended else "%03X") % can_id
    if not text:
        return "%10.3f  %s  %s" % (t, ident, raw(can_id, data, extended))
    return "%10.3f  %s  %s" % (t, ident, text)


# ---------------------------------------------------------------- inputs

def log_messages(path):
    """python-can messages of a log file ('-' = stdin, candump log format)."""
    import can
    if path == "-":
        return can.io.CanutilsLogReader(sys.stdin)
    if not os.path.isfile(path):
        raise InputError("--log %s: %s" % (path, "No such file" if not os.path.exists(path) else "not a file"))
    try:
        return can.LogReader(path)
    except ValueError:  # an extension python-can has no reader for: a candump log by another name
        return can.io.CanutilsLogReader(path)
    except OSError as e:
        raise InputError("--log %s: %s" % (path, e.strerror or e)) from None


def open_bus(interface, channel, bitrate):
    import can
    kw = {"interface": interface, "channel": channel}
    if bitrate:
        kw["bitrate"] = bitrate
    try:
        return can.Bus(**kw)
    except Exception as e:  # noqa: BLE001 - every interface raises its own errors
        raise InputError("cannot open %s bus %s: %s" % (interface, channel, " ".join(str(e).split()))) from None


def live_messages(bus, seconds=None):
    """Messages from bus until seconds have passed (forever without); each
    gets its time since the start in .timestamp."""
    t0 = time.monotonic()
    end = None if seconds is None else t0 + seconds
    while True:
        now = time.monotonic()
        if end is not None and now >= end:
            return
        msg = bus.recv(timeout=0.2 if end is None else min(0.2, end - now))
        if msg is None:
            continue
        msg.timestamp = time.monotonic() - t0
        yield msg


# ---------------------------------------------------------------- main

def watch(messages, decoder, out, changes=False, count=None, brief=False):
    """Print messages; returns how many lines were printed."""
    last = {}
    n = 0
    for msg in messages:
        if msg.is_error_frame or msg.is_remote_frame:
            continue
        data = bytes(msg.data)
        if changes:
            key = (msg.arbitration_id, msg.is_extended_id)
            vals = decoder.values(msg.arbitration_id, data, msg.is_extended_id)
            seen = vals if vals is not None else data
            if key in last and last[key] == seen:
                continue
            last[key] = seen
        out.write(line(msg.timestamp, msg.arbitration_id, data, decoder, msg.is_extended_id, brief) + "\n")
        out.flush()
        n += 1
        if count is not None and n >= count:
            break
    return n


def main(argv=None):
    doc_head, doc_rest = __doc__.split("\n\n", 1)
    ap = cli.ArgumentParser(prog="can_watch.py", description=doc_head, epilog=doc_rest,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    which = ap.add_mutually_exclusive_group(required=True)
    which.add_argument("--protocol", choices=protocols.NAMES, help="decode with docs/dbc/PROTOCOL.dbc")
    which.add_argument("--dbc", metavar="FILE", help="decode with this DBC instead")
    ap.add_argument("--log", metavar="FILE", help="read a candump log ('-' = stdin) instead of a live bus")
    ap.add_argument("--interface", help="python-can interface of a live bus (socketcan, slcan, pcan, ...)")
    ap.add_argument("--channel", help="its channel (can0, /dev/ttyACM0, ...)")
    ap.add_argument("--bitrate", type=cli.number(int, 10000, 1000000, "a bit rate in bit/s"), default=None,
                    help="live bus bit rate (the inverter protocols use 500000; default: the interface's)")
    ap.add_argument("--seconds", type=cli.number(float, 0.001, None, "a number of seconds"), default=None,
                    help="live bus: stop after this many seconds")
    ap.add_argument("--count", type=cli.number(int, 1, None, "a whole number"), default=None,
                    help="stop after this many printed lines")
    ap.add_argument("--changes", action="store_true",
                    help="print a message only when its decoded values changed since it was last printed")
    ap.add_argument("--brief", action="store_true",
                    help="leave out the one-bit signals (alarm, warning, request bits) that are 0")
    args = ap.parse_args(argv)
    live = args.interface is not None or args.channel is not None
    if args.log is not None and live:
        ap.error("--log or --interface/--channel, not both")
    if args.log is None and not live:
        ap.error("nothing to read: give --log FILE or --interface IF --channel CH")
    if live and (args.interface is None or args.channel is None):
        ap.error("a live bus needs --interface and --channel")
    if args.log is not None and (args.seconds is not None or args.bitrate is not None):
        ap.error("--seconds / --bitrate are for a live bus")
    try:
        path = args.dbc or dbc_path(args.protocol)
        if args.protocol and not os.path.isfile(path):
            raise InputError("protocol %s has no DBC yet (%s not found)" % (args.protocol, path))
        decoder = Decoder(path)
        if args.log is not None:
            messages = log_messages(args.log)
            bus = None
        else:
            bus = open_bus(args.interface, args.channel, args.bitrate)
            messages = live_messages(bus, args.seconds)
    except InputError as e:
        return cli.fail(PROG, e, EXIT_INVALID)
    try:
        watch(messages, decoder, sys.stdout, args.changes, args.count, args.brief)
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:  # | head: the reader is gone
        sys.stderr.close()
    except (ValueError, IndexError) as e:  # a malformed log line (python-can's readers raise these)
        return cli.fail(PROG, "--log %s: unreadable line (%s)" % (args.log, e), EXIT_INVALID)
    finally:
        if bus is not None:
            bus.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
