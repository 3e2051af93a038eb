import gc
import sys

USAGE = """Benchmark of the per-cycle path, runnable under CPython and MicroPython.

usage: bench.py [SAMPLE.hex [ROUNDS]]
  micropython tools/bench.py build/sample.hex 5000
  python tools/bench.py build/sample.hex

SAMPLE.hex (default build/sample.hex) holds a cell-info frame and a settings
frame as hex, one per line (tools/jkframe_build.py --sample). ROUNDS (default
2000) timed calls each. Prints microseconds per cell-info decode, per
Pylontech frame-set encode (limits + 6 frames), per encode of each inverter
protocol's frame set alone (protocols.NAMES, the same limits) and the heap
bytes one decode + encode cycle allocates. The charge policy runs on a virtual clock, one CAN
period (1 s) per decision, and is measured once its hold and ramp are over
(the steady state: both current limits at their target). `make bench` runs it
on every runtime. Bad arguments or an unusable sample file: a one-line reason
on stderr, exit status 2.
"""
# argv is parsed by hand (MicroPython has no argparse), and the help text is a
# string constant (MicroPython keeps no module docstring).

_here = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."
sys.path.insert(0, _here + "/../firmware/lib")

from bench_clock import MPY, elapsed_us, now_us  # noqa: E402

import protocols  # noqa: E402
from app import config as gwconfig  # noqa: E402
from charge.policy import ChargePolicy  # noqa: E402
from charge.ramp import NORMAL  # noqa: E402
from compat import ticks_add  # noqa: E402
from jkbms import cellinfo, settings  # noqa: E402
from jkbms import frame as J  # noqa: E402
from pack.snapshot import PackSnapshot  # noqa: E402
from protocols.pylon import PylonEncoder  # noqa: E402
from sources.base import FRESH  # noqa: E402


def unhex(s):
    s = s.strip()
    return bytes(int(s[i:i + 2], 16) for i in range(0, len(s), 2))


class UsageError(Exception):
    pass


def load(path):
    """(cell-info frame, snapshot with the settings) from the sample file."""
    try:
        with open(path) as f:
            lines = [x for x in f.read().split("\n") if x.strip()]
    except OSError as e:
        raise UsageError("cannot read %s: %s" % (path, e)) from None
    if len(lines) < 2:
        raise UsageError("%s: needs a cell-info and a settings frame as hex, one per line "
                         "(tools/jkframe_build.py --sample)" % path)
    try:
        cell = bytearray(unhex(lines[0]))
        setf = bytearray(unhex(lines[1]))
        snap = PackSnapshot()
        J.check_frame(setf, len(setf))
        settings.decode(setf, snap)
        J.check_frame(cell, len(cell))
        cellinfo.decode(cell, 6, J.detect_layout(cell), snap)
    except ValueError as e:  # bad hex, or codec.errors.DecodeError
        raise UsageError("%s: not a cell-info + settings frame pair: %s" % (path, e)) from None
    return cell, snap


PERIOD_MS = 1000  # the virtual clock's step: one CAN period per decision


def main(path, rounds):
    cell, snap = load(path)
    cfg = gwconfig.defaults()
    policy = ChargePolicy(cfg, 0)
    lim = policy.lim
    enc = PylonEncoder()
    layout = J.detect_layout(cell)
    clock = [0]

    def decode():
        J.check_frame(cell, 300)
        cellinfo.decode(cell, 6, layout, snap)

    def encode():
        now = ticks_add(clock[0], PERIOD_MS)
        clock[0] = now
        policy.decide(snap, FRESH, now)
        enc.encode(snap, lim, lim.flags)

    def cycle():
        decode()
        encode()

    decode()
    # warm-up: past the hold after the start and the ramp (bounded: hold + 0..max A at the rate)
    for _ in range(cfg["hold_s"] + max(cfg["max_charge_a"], cfg["max_discharge_a"]) // cfg["ramp_a_s"] + 3):
        encode()
        if ((policy.ccl_target_ma == 0 or policy.ccl.mode == NORMAL)
                and (policy.dcl_target_ma == 0 or policy.dcl.mode == NORMAL)):
            break  # each limit at its target, or held at 0 by a block
    else:
        raise UsageError("%s: the charge policy's limits did not settle on this sample (CCL %d, DCL %d dA)"
                         % (path, lim.ccl_da, lim.dcl_da))
    results = []
    for name, fn in (("cell-info decode", decode), ("pylontech frame-set encode", encode)):
        gc.collect()
        t0 = now_us()
        for _ in range(rounds):
            fn()
        results.append((name, elapsed_us(t0) / rounds))
    for pname in protocols.NAMES:
        cfg["protocol"] = pname
        penc = protocols.make(cfg)
        gc.collect()
        t0 = now_us()
        for _ in range(rounds):
            penc.encode(snap, lim, lim.flags)
        results.append(("encode %s (%d frames)" % (pname, len(penc.ids)), elapsed_us(t0) / rounds))
    cfg["protocol"] = "pylon"
    gc.collect()
    if MPY:
        gc.disable()
        a0 = gc.mem_alloc()
        for _ in range(100):
            cycle()
        alloc = (gc.mem_alloc() - a0) / 100
        gc.enable()
    else:
        import tracemalloc
        tracemalloc.start()
        cycle()
        s0 = tracemalloc.take_snapshot()
        for _ in range(100):
            cycle()
        s1 = tracemalloc.take_snapshot()
        tracemalloc.stop()
        alloc = sum(st.size_diff for st in s1.compare_to(s0, "filename") if st.size_diff > 0) / 100
    impl = "%s %s" % (sys.implementation.name, sys.platform)
    for name, us in results:
        print("%-28s %9.1f us   (%s, %d rounds)" % (name, us, impl, rounds))
    print("%-28s %9.1f bytes (%s, per decode+encode cycle)" % ("heap allocated", alloc, impl))


def parse_args(args):
    """(path, rounds) from argv[1:]; UsageError with a reason."""
    for a in args:
        if a.startswith("-"):
            raise UsageError("unknown option %r" % a)
    if len(args) > 2:
        raise UsageError("too many arguments")
    rounds = 2000
    if len(args) > 1:
        try:
            rounds = int(args[1])
        except ValueError:
            raise UsageError("ROUNDS must be a whole number, not %r" % args[1]) from None
        if rounds < 1:
            raise UsageError("ROUNDS must be >= 1")
    return (args[0] if args else "build/sample.hex"), rounds


def run(args):
    if "-h" in args or "--help" in args:
        print(USAGE.strip())
        return 0
    try:
        path, rounds = parse_args(args)
        main(path, rounds)
    except UsageError as e:
        sys.stderr.write("bench: %s (see bench.py --help)\n" % e)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
