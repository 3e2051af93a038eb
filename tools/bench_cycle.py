import gc
import sys

USAGE = """Heap bytes one steady-state gateway cycle allocates, under the MicroPython
unix port (run by tools/bench_sim.py, which also writes the input file).

usage: micropython tools/bench_cycle.py REPLIES.txt [CAN_CYCLES [POLLS]]

REPLIES.txt: one exchange per line, "MODE REQUEST_HEX REPLY_HEX", MODE one of
trigger / fc03 / nw -- the requests exactly as the firmware's sources
(sources.jk_pb, sources.jk_4e57) build them, the replies as
tools/jkbms_sim.py sends them. CAN_CYCLES (default 1000), POLLS (default 50).

Measured with the garbage collector disabled, as the growth of
gc.mem_alloc() over many cycles divided by their number:
  can  one CAN cycle: app.can_io.CanTx.burst (charge policy + the six
       Pylontech frames, sent on a host/can_soft.py LoopbackPort) +
       CanTx.receive of the inverter's 0x305 (+ the inverter side draining
       its receive queue), on a virtual clock a CAN period per cycle with
       fresh BMS data each time, measured once the policy's hold and ramp
       are over (both current limits at their target)
  poll one Source.poll_once() per protocol against an in-memory UART that
       answers each request with its reply (asyncio coroutines included)
Prints one line per figure: "NAME bytes=B us=U cycles=N ok=K". Bad arguments:
a one-line reason on stderr, exit status 2. Runs under CPython too (the
heap figures are then not measured: bytes=0).
"""
# argv is parsed by hand (MicroPython has no argparse), and the help text is a
# string constant (MicroPython keeps no module docstring).

_here = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."
sys.path.insert(0, _here + "/../host")
sys.path.insert(0, _here + "/../firmware/lib")

import asyncio  # noqa: E402

from bench_clock import MPY, elapsed_us, now_us  # noqa: E402
from can_soft import loopback_pair  # noqa: E402

import protocols  # noqa: E402
import sources  # noqa: E402
from app import config as C  # noqa: E402
from app.can_io import CanTx  # noqa: E402
from canport.base import BusOffRecovery  # noqa: E402
from charge.policy import ChargePolicy  # noqa: E402
from charge.ramp import NORMAL  # noqa: E402
from compat import ticks_add  # noqa: E402
from pack.snapshot import PackSnapshot  # noqa: E402
from sources.base import Freshness  # noqa: E402

if MPY:
    def mem_alloc():
        return gc.mem_alloc()
else:
    def mem_alloc():
        return 0


class UsageError(Exception):
    pass


def unhex(s):
    return bytes(int(s[i:i + 2], 16) for i in range(0, len(s), 2))


class MemUart:
    """Non-blocking UART whose peer answers every known request at once.
    Allocation-free: the request is looked up by value, the reply copied
    byte by byte into the caller's buffer."""

    def __init__(self, replies):
        self.replies = replies  # request bytes -> reply bytes
        self.cur = b""
        self.pos = 0
        self.writes = 0

    def write(self, buf):
        self.writes += 1
        r = self.replies.get(buf)
        if r is not None:
            self.cur = r
            self.pos = 0
        return len(buf)

    def readinto(self, buf):
        cur = self.cur
        pos = self.pos
        n = len(cur) - pos
        if n <= 0:
            return None
        if n > len(buf):
            n = len(buf)
        for i in range(n):
            buf[i] = cur[pos + i]
        self.pos = pos + n
        return n


def _quiet(msg):
    pass


def source_for(mode, replies):
    cfg = C.defaults()
    cfg["bms_protocol"] = "jk-nw" if mode == "nw" else "jk-pb"
    cfg["bms_read"] = "fc03" if mode == "fc03" else "trigger"
    cfg["bms_reply_ms"] = 200
    snap = PackSnapshot()
    return sources.make(cfg, MemUart(replies), snap, _quiet), cfg, snap


async def measure_poll(src, n):
    for _ in range(2):  # warm-up: device info and settings are read on the first poll
        if not await src.poll_once():
            raise SystemExit("bench_cycle: the warm-up poll failed (%s)" % src.last_error)
    gc.collect()
    gc.disable()
    ok = 0
    t0 = now_us()
    a0 = mem_alloc()
    for _ in range(n):
        if await src.poll_once():
            ok += 1
    a1 = mem_alloc()
    us = elapsed_us(t0)
    gc.enable()
    return a1 - a0, us, ok


def _settled(policy):
    return ((policy.ccl_target_ma == 0 or policy.ccl.mode == NORMAL)
            and (policy.dcl_target_ma == 0 or policy.dcl.mode == NORMAL))


def measure_can(cfg, snap, n):
    gw, inv = loopback_pair()
    fresh = Freshness(cfg["bms_timeout_s"] * 1000)
    policy = ChargePolicy(cfg, 0)
    tx = CanTx(gw, BusOffRecovery(gw), cfg, snap, fresh, policy, protocols.make(cfg))
    hb = bytes(8)
    lst = [0, memoryview(bytearray(8)), 0, 0]
    period = tx.period_ms
    clock = [0]

    def cycle():
        now = ticks_add(clock[0], period)  # a CAN period on, BMS data 100 ms before the burst
        clock[0] = now
        fresh.data_ok(ticks_add(now, -100))
        inv.send(0x305, hb)
        tx.burst(now)
        tx.receive(now)
        while inv.recv(lst) is not None:
            pass

    # warm-up: the hold after the start and the ramp (bounded)
    for _ in range((cfg["hold_s"] * 1000 + 1000 * max(cfg["max_charge_a"], cfg["max_discharge_a"])
                    // cfg["ramp_a_s"]) // period + 5):
        cycle()
        if _settled(policy):
            break
    else:
        raise SystemExit("bench_cycle: the charge policy's limits did not settle")
    for _ in range(5):
        cycle()
    sent0 = tx.sent
    gc.collect()
    gc.disable()
    t0 = now_us()
    a0 = mem_alloc()
    for _ in range(n):
        cycle()
    a1 = mem_alloc()
    us = elapsed_us(t0)
    gc.enable()
    if tx.sent - sent0 != 6 * n or policy.link_lost or not _settled(policy):
        raise SystemExit("bench_cycle: the CAN cycle did not send 6 fresh, settled frame sets each time")
    return a1 - a0, us


def read_exchanges(path):
    by_mode = {}
    try:
        with open(path) as f:
            text = f.read()
    except OSError as e:
        raise UsageError("cannot read %s: %s" % (path, e)) from None
    for lineno, line in enumerate(text.split("\n")):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 3 or parts[0] not in ("trigger", "fc03", "nw"):
            raise UsageError("%s line %d: not \"MODE REQUEST_HEX REPLY_HEX\"" % (path, lineno + 1))
        try:
            by_mode.setdefault(parts[0], {})[unhex(parts[1])] = unhex(parts[2])
        except ValueError:
            raise UsageError("%s line %d: bad hex" % (path, lineno + 1)) from None
    if not by_mode:
        raise UsageError("no exchanges in %s" % path)
    return by_mode


def main(path, can_cycles, polls):
    by_mode = read_exchanges(path)
    snap_for_can = None
    cfg_for_can = None
    for mode in ("trigger", "fc03", "nw"):
        if mode not in by_mode:
            continue
        src, cfg, snap = source_for(mode, by_mode[mode])
        n = polls if mode != "fc03" else max(1, polls // 5)  # FC03 polls wait 100 ms between reads
        alloc, us, ok = asyncio.run(measure_poll(src, n))
        print("poll-%s bytes=%.1f us=%d cycles=%d ok=%d" % (mode, alloc / n, us // n, n, ok))
        if snap_for_can is None:
            snap_for_can, cfg_for_can = snap, cfg
    alloc, us = measure_can(cfg_for_can, snap_for_can, can_cycles)
    print("can bytes=%.1f us=%d cycles=%d ok=%d" % (alloc / can_cycles, us // can_cycles, can_cycles, can_cycles))


def _count(text, name):
    try:
        v = int(text)
    except ValueError:
        raise UsageError("%s must be a whole number, not %r" % (name, text)) from None
    if v < 1:
        raise UsageError("%s must be >= 1" % name)
    return v


def parse_args(args):
    """(path, can_cycles, polls) from argv[1:]; UsageError with a reason."""
    for a in args:
        if a.startswith("-"):
            raise UsageError("unknown option %r" % a)
    if not args:
        raise UsageError("REPLIES.txt is required")
    if len(args) > 3:
        raise UsageError("too many arguments")
    can_cycles = _count(args[1], "CAN_CYCLES") if len(args) > 1 else 1000
    polls = _count(args[2], "POLLS") if len(args) > 2 else 50
    return args[0], can_cycles, polls


def run(args):
    if "-h" in args or "--help" in args:
        print(USAGE.strip())
        return 0
    try:
        path, can_cycles, polls = parse_args(args)
        main(path, can_cycles, polls)
    except UsageError as e:
        sys.stderr.write("bench_cycle: %s (see bench_cycle.py --help)\n" % e)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
