# Heap bytes one steady-state gateway cycle allocates, under the MicroPython
# unix port (run by tools/bench_sim.py, which also writes the input file):
#   micropython tools/bench_cycle.py REPLIES.txt [CAN_CYCLES [POLLS]]
# REPLIES.txt: one exchange per line, "MODE REQUEST_HEX REPLY_HEX", MODE one of
# trigger / fc03 / nw -- the requests exactly as the firmware's BmsPoller
# builds them, the replies as tools/jkbms_sim.py sends them.
#
# Measured with the garbage collector disabled, as the growth of
# gc.mem_alloc() over many cycles divided by their number:
#   can  one CAN cycle: CanTx.burst (limits + the six Pylontech frames, sent on
#        a canport.host LoopbackPort) + CanTx.receive of the inverter's 0x305
#        (+ the inverter side draining its receive queue)
#   poll one BmsPoller.poll_once() per protocol against an in-memory UART that
#        answers each request with its reply (asyncio coroutines included)
# Prints one line per figure: "NAME bytes=B us=U cycles=N ok=K".
import gc
import sys

_here = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."
sys.path.insert(0, _here + "/../firmware/lib")

import asyncio  # noqa: E402
import time  # noqa: E402

from canport.base import BusOffRecovery  # noqa: E402
from canport.host import loopback_pair  # noqa: E402
from gateway import config as C  # noqa: E402
from gateway import link as L  # noqa: E402
from gateway.bms_poller import BmsPoller  # noqa: E402
from gateway.can_tx import CanTx  # noqa: E402
from gateway.clock import ticks_ms  # noqa: E402
from pack.snapshot import PackSnapshot  # noqa: E402


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


def poller_for(mode, replies):
    cfg = C.defaults()
    cfg["bms_protocol"] = "jk-nw" if mode == "nw" else "jk-pb"
    cfg["bms_read"] = "fc03" if mode == "fc03" else "trigger"
    cfg["bms_reply_ms"] = 200
    link = L.LinkMonitor(cfg["bms_timeout_s"] * 1000, cfg["inverter_timeout_s"] * 1000)
    snap = PackSnapshot()
    return BmsPoller(MemUart(replies), cfg, snap, link, _quiet), cfg, snap, link


async def measure_poll(p, n):
    for _ in range(2):  # warm-up: device info and settings are read on the first poll
        if not await p.poll_once():
            raise SystemExit("bench_cycle: the warm-up poll failed (%s)" % p.last_error)
    gc.collect()
    gc.disable()
    ok = 0
    t0 = time.ticks_us()
    a0 = gc.mem_alloc()
    for _ in range(n):
        if await p.poll_once():
            ok += 1
    a1 = gc.mem_alloc()
    us = time.ticks_diff(time.ticks_us(), t0)
    gc.enable()
    return a1 - a0, us, ok


def measure_can(cfg, snap, n):
    gw, inv = loopback_pair()
    link = L.LinkMonitor(cfg["bms_timeout_s"] * 1000, cfg["inverter_timeout_s"] * 1000)
    link.data_ok(ticks_ms())
    tx = CanTx(gw, BusOffRecovery(gw), cfg, snap, link, _quiet)
    hb = bytes(8)
    lst = [0, memoryview(bytearray(8)), 0, 0]

    def cycle():
        now = ticks_ms()
        inv.send(0x305, hb)
        tx.burst(now)
        tx.receive(now)
        while inv.recv(lst) is not None:
            pass

    for _ in range(5):
        cycle()
    sent0 = tx.sent
    gc.collect()
    gc.disable()
    t0 = time.ticks_us()
    a0 = gc.mem_alloc()
    for _ in range(n):
        cycle()
    a1 = gc.mem_alloc()
    us = time.ticks_diff(time.ticks_us(), t0)
    gc.enable()
    if tx.sent - sent0 != 6 * n or tx.link_lost:
        raise SystemExit("bench_cycle: the CAN cycle did not send 6 fresh frames each time")
    return a1 - a0, us


def main(path, can_cycles, polls):
    by_mode = {}
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3:
                by_mode.setdefault(parts[0], {})[unhex(parts[1])] = unhex(parts[2])
    snap_for_can = None
    cfg_for_can = None
    for mode in ("trigger", "fc03", "nw"):
        if mode not in by_mode:
            continue
        p, cfg, snap, link = poller_for(mode, by_mode[mode])
        n = polls if mode != "fc03" else max(1, polls // 5)  # FC03 polls wait 100 ms between reads
        alloc, us, ok = asyncio.run(measure_poll(p, n))
        print("poll-%s bytes=%.1f us=%d cycles=%d ok=%d" % (mode, alloc / n, us // n, n, ok))
        if snap_for_can is None:
            snap_for_can, cfg_for_can = snap, cfg
    if snap_for_can is None:
        raise SystemExit("bench_cycle: no exchanges in %s" % path)
    alloc, us = measure_can(cfg_for_can, snap_for_can, can_cycles)
    print("can bytes=%.1f us=%d cycles=%d ok=%d" % (alloc / can_cycles, us // can_cycles, can_cycles, can_cycles))


if __name__ == "__main__":
    a = sys.argv[1:]
    if not a:
        raise SystemExit("usage: micropython tools/bench_cycle.py REPLIES.txt [CAN_CYCLES [POLLS]]")
    main(a[0], int(a[1]) if len(a) > 1 else 1000, int(a[2]) if len(a) > 2 else 50)
