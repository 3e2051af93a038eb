# Benchmark of the per-cycle path, runnable under CPython and MicroPython:
#   micropython tools/bench.py build/sample.hex
#   python tools/bench.py build/sample.hex
# The file holds a cell-info frame and a settings frame as hex, one per line
# (tools/jkframe_build.py --sample). Prints microseconds per cell-info decode,
# per Pylontech frame-set encode (limits + 6 frames) and the heap bytes one
# decode + encode cycle allocates. `make bench` runs it on every runtime.
import gc
import sys

_here = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."
sys.path.insert(0, _here + "/../firmware/lib")

from protocols.pylon import PylonEncoder  # noqa: E402
from jkbms import cellinfo, settings  # noqa: E402
from jkbms import frame as J  # noqa: E402
from app import config as gwconfig  # noqa: E402
from charge.policy import ChargePolicy  # noqa: E402
from sources.base import FRESH  # noqa: E402
from pack.snapshot import PackSnapshot  # noqa: E402

MPY = sys.implementation.name == "micropython"
if MPY:
    import time

    def now_us():
        return time.ticks_us()

    def elapsed_us(t0):
        return time.ticks_diff(time.ticks_us(), t0)
else:
    import time

    def now_us():
        return time.perf_counter_ns() // 1000

    def elapsed_us(t0):
        return time.perf_counter_ns() // 1000 - t0


def unhex(s):
    s = s.strip()
    return bytes(int(s[i:i + 2], 16) for i in range(0, len(s), 2))


def main(path, rounds):
    with open(path) as f:
        lines = [x for x in f.read().split("\n") if x.strip()]
    cell = bytearray(unhex(lines[0]))
    setf = bytearray(unhex(lines[1]))
    snap = PackSnapshot()
    settings.decode(setf, snap)
    policy = ChargePolicy(gwconfig.defaults())
    lim = policy.lim
    enc = PylonEncoder()
    layout = J.detect_layout(cell)

    def decode():
        J.check_frame(cell, 300)
        cellinfo.decode(cell, 6, layout, snap)

    def encode():
        policy.decide(snap, FRESH)
        enc.encode(snap, lim, lim.flags)

    def cycle():
        decode()
        encode()

    for fn in (decode, encode):  # warm-up
        fn()
    results = []
    for name, fn in (("cell-info decode", decode), ("pylontech frame-set encode", encode)):
        gc.collect()
        t0 = now_us()
        for _ in range(rounds):
            fn()
        results.append((name, elapsed_us(t0) / rounds))
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


if __name__ == "__main__":
    args = sys.argv[1:]
    main(args[0] if args else "build/sample.hex", int(args[1]) if len(args) > 1 else 2000)
