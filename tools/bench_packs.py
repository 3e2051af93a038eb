#!/usr/bin/env python3
"""Several JK-PB packs on one RS485 bus: poll cycle, data age and heap per cycle versus the pack count.

  python tools/bench_packs.py [--packs 1,4,8,15] [--gaps 100,15] [--cycles 20]
                              [--listen-packs 4,16] [--listen-seconds 15] [--heap-cycles 20] [--json FILE]

(a) master role: the whole gateway (app.gateway.Gateway, built the way
    host/sim_firmware.py builds it) runs under the MicroPython unix port, its
    BMS UART a TCP connection to tools/jkbms_sim.py serving N packs at
    addresses 1..N with the wire time of --baud (default 115200: the
    simulator paces each reply at 10 bits per byte) and its reply delay of
    10-40 ms; the CAN port is host/can_soft.py's loopback, with an inverter
    that sends its 0x305 every second. For each bms_gap_ms in --gaps: the
    cycle (sources.pb_bus.PbBus.cycle_ms: every pack polled once, the gap
    between requests), the time between cycle starts, and at each CAN burst
    (CanTx.burst) the data age of the aggregate, Battery.oldest_ms (its oldest
    pack) and Battery.age_ms (its newest), measured once every pack is online
    and --warm more cycles went by, over --cycles cycles. JK addresses are
    1..15 in master mode (bms_addresses accepts no more), so the top case is
    15 packs. One pack is the single-pack path (sources.several() is false:
    JkPbSource + poll_forever, no PbBus and no Battery): its "cycle" is one
    poll_once() and its age the source's Freshness.age_ms.
(b) listener role: the same gateway with bms_bus_role "listen" against the
    simulator playing a JK bank with its own master (--bus-master: the pack
    at address 0 polls the others every 4.4 s); data age of every pack
    (ticks since its Freshness.data_ms) at each CAN burst, over
    --listen-seconds once every pack is online.
(c) heap per cycle under the MicroPython unix port (64-bit objects; the
    ESP32's are about half the size): PbBus.cycle() with N packs against an
    in-memory UART that answers each request with the simulator's reply after
    the same wire time, gc disabled, gc.mem_alloc() growth over --heap-cycles
    cycles; the same for one JkPbSource.poll_once(), and the size of each
    object a poll creates (coroutines, bound methods), so the figure is
    accounted for. Then micropython.heap_lock() around the synchronous parts
    of a cycle: Battery.update / state / age_ms / oldest_ms, the CAN burst
    from the aggregate, and the listener's read of a whole master period
    (sources.jk_listen.JkListener.read_once on the bytes the simulated master
    sends): "0" means they allocate nothing.

The network and the simulator's threads add host jitter of a few ms; the
request's own 11 bytes (1 ms) are not paced. Prints tables; --json writes
the figures. Exit 1 if a part could not be measured.
"""
# Runs under CPython (the tool: simulator, tables) and, as its own firmware
# side, under the MicroPython unix port (`micropython tools/bench_packs.py run
# ...`, started by the CPython side): MicroPython has no argparse and keeps no
# module docstring, so that side parses argv by hand and imports nothing of
# CPython's.
import sys

MPY = sys.implementation.name == "micropython"
BAUD = 115200
FRAME_ACK = 308  # a trigger reply: 300-byte 55AA frame + 8-byte FC10 ACK
MASTER_PERIOD_S = 4.4  # the simulated JK master's period (jkbms_sim default)

if not MPY:
    import argparse
    import json
    import os
    import statistics
    import subprocess
    import tempfile

    HERE = os.path.dirname(os.path.abspath(__file__))
    ROOT = os.path.dirname(HERE)
    for _p in (HERE, os.path.join(ROOT, "firmware", "lib"), ROOT):
        if _p not in sys.path:
            sys.path.insert(0, _p)


# ============================================================ firmware side (MicroPython)

def _fw_paths():
    here = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."
    sys.path.insert(0, here + "/../host")
    sys.path.insert(0, here + "/../firmware/lib")


def _say(key, values):
    print("BENCH %s %s" % (key, " ".join("%d" % v for v in values)))


def _unhex(s):
    return bytes(int(s[i:i + 2], 16) for i in range(0, len(s), 2))


class _Rec:
    """What the hooks collect; phase: 0 warming up, 1 measuring, 2 done."""

    def __init__(self, n, count, warm):
        self.n = n
        self.count = count
        self.warm = warm
        self.phase = 0
        self.after = 0  # cycles since every pack was online
        self.cycles = []
        self.starts = []
        self.oldest = []
        self.newest = []
        self.online_min = n
        self.per_pack = None  # listener: {address: [ages]}


def _gateway(endpoint, cfg_path, verbose):
    from can_soft import loopback_pair
    from hostio import SocketUart

    from app import boot
    from app import gateway as A
    from app.storage import FileStore
    from canport.base import BusOffRecovery
    from outputs.events import Events

    out = print if verbose else (lambda line: None)
    cut = cfg_path.rfind("/")
    store = FileStore(cfg_path[:cut] if cut > 0 else "")
    name = cfg_path[cut + 1:]
    events = Events(out)
    cfg = boot.load_config(store, events, name)
    host, port = endpoint.rsplit(":", 1)
    uart = SocketUart(host, int(port))
    can, inv = loopback_pair()
    boot.bring_up_can(can, cfg, events)
    gw = A.Gateway(cfg, uart, can, BusOffRecovery(can), None, store, None, config_name=name, out=out,
                   events=events)
    return gw, inv


async def _inverter(inv):
    from compat import sleep_ms

    lst = [0, memoryview(bytearray(8)), 0, 0]
    hb = bytes(8)
    k = 0
    while True:
        while inv.recv(lst) is not None:
            pass
        if k % 50 == 0:
            inv.send(0x305, hb)
        k += 1
        await sleep_ms(20)


def _online(gw, now):
    from sources.base import FRESH

    if gw.battery is not None:
        gw.battery.state(now)
        return gw.battery.online
    return 1 if gw.packs[0].fresh.state(now) == FRESH else 0


def _hook_cycles(gw, rec):
    """rec.cycles gets each cycle's duration once every pack is online and
    rec.warm more cycles went by."""
    from compat import ticks_diff, ticks_ms

    def took(now, ms):
        if rec.phase == 0:
            if _online(gw, now) == rec.n:
                rec.after += 1
                if rec.after > rec.warm:
                    rec.phase = 1
        if rec.phase == 1:
            rec.cycles.append(ms)
            rec.starts.append(now - ms)
            if len(rec.cycles) >= rec.count:
                rec.phase = 2

    if gw.battery is not None:
        bus = gw.links[0]
        done = bus.on_cycle

        def on_cycle(now, fits):
            done(now, fits)
            took(now, bus.cycle_ms)
        bus.on_cycle = on_cycle
    else:
        src = gw.packs[0]
        poll = src.poll_once

        async def timed(budget_ms=0):
            t0 = ticks_ms()
            ok = await poll(budget_ms)
            now = ticks_ms()
            took(now, ticks_diff(now, t0))
            return ok
        src.poll_once = timed


def _hook_bursts(gw, rec):
    """At each CAN burst while measuring: the data age of what it sends."""
    from charge.battery import P_ONLINE
    from compat import ticks_diff

    tx = gw.tx
    link = tx.fresh  # the Battery, or the one source's Freshness
    b = gw.battery
    burst = tx.burst

    def at_burst(now):
        if rec.phase == 1:
            if b is not None:
                rec.oldest.append(b.oldest_ms(now))
                rec.newest.append(b.age_ms(now))
                if b.online < rec.online_min:
                    rec.online_min = b.online
                if rec.per_pack is not None:
                    for i in range(len(b.packs)):
                        if b.state_of(i) == P_ONLINE:
                            p = b.packs[i]
                            rec.per_pack[p.address].append(ticks_diff(now, p.fresh.data_ms))
            else:
                a = link.age_ms(now)
                rec.oldest.append(a)
                rec.newest.append(a)
                if _online(gw, now) < rec.online_min:
                    rec.online_min = 0
        return burst(now)
    tx.burst = at_burst


async def _fw_main(gw, inv, rec, limit_s, listen_s):
    import asyncio

    from compat import sleep_ms, ticks_diff, ticks_ms

    asyncio.create_task(gw.run())
    asyncio.create_task(_inverter(inv))
    t0 = ticks_ms()
    t_measure = None
    while rec.phase != 2:
        now = ticks_ms()
        if ticks_diff(now, t0) > limit_s * 1000:
            return False
        if listen_s:  # no cycles of our own: a time window once every pack is online
            if rec.phase == 0 and _online(gw, now) == rec.n:
                if t_measure is None:
                    t_measure = ticks_add_ms(now, rec.warm * 1000)
                elif ticks_diff(now, t_measure) >= 0:
                    rec.phase = 1
                    t_measure = ticks_add_ms(now, listen_s * 1000)
            elif rec.phase == 1 and ticks_diff(now, t_measure) >= 0:
                rec.phase = 2
        await sleep_ms(50)
    return True


def ticks_add_ms(t, ms):
    from compat import ticks_add

    return ticks_add(t, ms)


def fw_run(argv):
    """run HOST:PORT CONFIG N CYCLES WARM LIMIT_S [-v]: the master role (or
    the single pack). listen HOST:PORT CONFIG N SECONDS WARM_S LIMIT_S [-v]:
    the listener role."""
    import asyncio

    verbose = "-v" in argv
    argv = [a for a in argv if a != "-v"]
    mode, endpoint, cfg_path = argv[0], argv[1], argv[2]
    n, count, warm, limit_s = int(argv[3]), int(argv[4]), int(argv[5]), int(argv[6])
    gw, inv = _gateway(endpoint, cfg_path, verbose)
    listen = mode == "listen"
    rec = _Rec(n, 0 if listen else count, warm)
    if listen:
        rec.per_pack = {}
        for p in gw.packs:
            rec.per_pack[p.address] = []
    else:
        _hook_cycles(gw, rec)
    _hook_bursts(gw, rec)
    ok = asyncio.run(_fw_main(gw, inv, rec, limit_s, count if listen else 0))
    if not ok:
        print("BENCH error timeout: phase %d, %d of %d packs online" % (
            rec.phase, _online(gw, ticks_now()), n))
        for p in gw.packs:
            print("BENCH error %s: polls ok %d, timeouts %d, bad %d, last error %r" % (
                p.name, p.polls_ok, p.timeouts, p.decode_errors, p.last_error))
        return 1
    _say("cycle", rec.cycles)
    _say("start", rec.starts)
    _say("oldest", rec.oldest)
    _say("newest", rec.newest)
    _say("online_min", (rec.online_min,))
    if listen:
        for a in sorted(rec.per_pack):
            _say("pack%d" % a, rec.per_pack[a])
    polls = timeouts = 0
    for p in gw.packs:
        polls += p.polls_ok
        timeouts += p.timeouts
    _say("polls", (polls, timeouts))
    return 0


def ticks_now():
    from compat import ticks_ms

    return ticks_ms()


class _TimedUart:
    """An in-memory bus: the recorded reply to each request (any address),
    delivered as the wire would, delay_ms after the request and then
    baud/10 bytes a second. Allocation-free."""

    def __init__(self, replies, delay_ms, baud):
        from compat import ticks_diff, ticks_ms

        # kept as attributes: an import statement per call would allocate
        self.ticks_ms = ticks_ms
        self.ticks_diff = ticks_diff
        self.replies = replies
        self.delay_ms = delay_ms
        self.baud = baud
        self.cur = b""
        self.pos = 0
        self.t = 0

    def write(self, buf):
        r = self.replies.get(buf)
        if r is not None:
            self.cur = r
            self.pos = 0
            self.t = self.ticks_ms()
        return len(buf)

    def readinto(self, buf):
        ms = self.ticks_diff(self.ticks_ms(), self.t) - self.delay_ms
        if ms <= 0:
            return None
        cur = self.cur
        pos = self.pos
        end = ms * self.baud // 10000 + 1
        if end > len(cur):
            end = len(cur)
        n = end - pos
        if n <= 0:
            return None
        if n > len(buf):
            n = len(buf)
        for i in range(n):
            buf[i] = cur[pos + i]
        self.pos = pos + n
        return n


class _StreamUart:
    """The bytes of a JK master's period, up to 256 at a time."""

    def __init__(self, data):
        self.data = data
        self.pos = 0

    def write(self, buf):
        raise OSError("a listener must never write")

    def readinto(self, buf):
        n = len(self.data) - self.pos
        if n <= 0:
            return None
        if n > len(buf):
            n = len(buf)
        d = self.data
        p = self.pos
        for i in range(n):
            buf[i] = d[p + i]
        self.pos = p + n
        return n


def _locked(fn):
    """'0' if fn() allocates nothing, else what the allocation raised."""
    import micropython

    micropython.heap_lock()
    try:
        fn()
        r = "0"
    except MemoryError as e:
        r = "allocates (%s)" % e
    finally:
        micropython.heap_unlock()
    return r


def _size(fn):
    """Heap bytes of the object fn() creates (closed if it is a coroutine)."""
    import gc

    gc.collect()
    a0 = gc.mem_alloc()
    x = fn()
    a1 = gc.mem_alloc()
    if hasattr(x, "close"):
        x.close()
    return a1 - a0



async def _alloc_per(fn, arg, rounds):
    """Heap bytes one await fn(arg) allocates, gc off, after one call to settle."""
    import gc

    await fn(arg)
    gc.collect()
    gc.disable()
    a0 = gc.mem_alloc()
    for _ in range(rounds):
        await fn(arg)
    a1 = gc.mem_alloc()
    gc.enable()
    return (a1 - a0) // rounds

def fw_heap(argv):
    """heap REPLIES N CYCLES GAP_MS DELAY_MS BAUD [STREAM]"""
    import asyncio

    from can_soft import loopback_pair

    import protocols
    from app import config as C
    from app import packs
    from app.can_io import CanTx
    from canport.base import BusOffRecovery
    from charge.policy import ChargePolicy
    from compat import ticks_ms
    from jkbms import pb_modbus as pb

    path, n, cycles, gap, delay, baud = argv[0], int(argv[1]), int(argv[2]), int(argv[3]), int(argv[4]), int(argv[5])
    replies = {}
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) == 2:
                replies[_unhex(parts[0])] = _unhex(parts[1])
    msgs = []
    cfg = C.validate({"bms_addresses": list(range(1, n + 1)), "bms_gap_ms": gap}, msgs)
    b, links = packs.build(cfg, _TimedUart(replies, delay, baud), lambda m: None)
    bus = links[0]
    period = cfg["bms_poll_ms"]

    async def measure():
        for _ in range(50):
            await bus.cycle(period)
            if b.online == n and bus.cycles >= 3:
                break
        else:
            return None
        per_cycle = await _alloc_per(bus.cycle, period, cycles)
        # one poll with the whole period first (in _alloc_per): it may read
        # the device info that the pack's share of a full cycle never left room for
        per_poll = await _alloc_per(bus.packs[0].poll_once, period, cycles)
        return per_cycle, per_poll

    r = asyncio.run(measure())
    if r is None or b.online != n:
        print("BENCH error heap: %d of %d packs online" % (b.online, n))
        return 1
    _say("heap_cycle", (r[0],))
    _say("heap_poll", (r[1],))
    src = bus.packs[0]
    u = src.bus
    trig = src._trigger
    feed = src._feed_reply
    done = src._reply.poll
    req = src._req[pb.TRIGGER_STATUS]
    sizes = (
        ("PbBus.cycle()", lambda: bus.cycle(period)),
        ("JkPbSource.poll_once()", lambda: src.poll_once(period)),
        ("UartBus.retrying()", lambda: u.retrying(src, trig, pb.TRIGGER_STATUS)),
        ("JkPbSource._trigger()", lambda: src._trigger(pb.TRIGGER_STATUS)),
        ("UartBus.exchange()", lambda: u.exchange(src, req, feed, done)),
        ("UartBus.gap()", lambda: u.gap()),
        ("bound method self._trigger", lambda: src._trigger),
        ("bound method self._feed_reply", lambda: src._feed_reply),
        ("bound method self._reply.poll", lambda: src._reply.poll),
    )
    for label, fn in sizes:
        print("BENCH size %d %s" % (_size(fn), label))
    now = ticks_ms()
    can, inv = loopback_pair()
    tx = CanTx(can, BusOffRecovery(can), cfg, b.snap, b, ChargePolicy(cfg), protocols.make(cfg))
    lst = [0, memoryview(bytearray(8)), 0, 0]
    for _ in range(3):
        tx.burst(now)
        while inv.recv(lst) is not None:
            pass
    locks = (
        ("Battery.update()", lambda: b.update(now)),
        ("Battery.state()", lambda: b.state(now)),
        ("Battery.age_ms()", lambda: b.age_ms(now)),
        ("Battery.oldest_ms()", lambda: b.oldest_ms(now)),
        ("CanTx.burst() from the aggregate", lambda: tx.burst(now)),
    )
    for label, fn in locks:
        print("BENCH lock %s %s" % (_locked(fn), label))
    if len(argv) > 6:
        _listener_lock(argv[6], n)
    return 0


def _listener_lock(path, n):
    """JkListener.read_once over a recorded master period, heap locked."""
    from app import config as C
    from charge.battery import Battery

    with open(path) as f:
        data = _unhex(f.read().strip())
    msgs = []
    cfg = C.validate({"bms_bus_role": "listen", "bms_addresses": list(range(n))}, msgs)
    from sources.jk_listen import JkListener

    b = Battery(cfg)
    lst = JkListener(_StreamUart(data), cfg, lambda m: None, b.add)
    lst.sniff.reset()
    lst.read_once()  # the first period: every pack's first frames (settings) arrive
    lst.uart.pos = 0
    a0 = lst.sniff.attributed

    def period():
        u = lst.uart
        while u.pos < len(u.data):
            lst.read_once()
    r = _locked(period)
    print("BENCH lock %s JkListener.read_once() over a master period (%d frames attributed)" % (
        r, lst.sniff.attributed - a0))


def fw_main(argv):
    _fw_paths()
    if argv and argv[0] in ("run", "listen"):
        return fw_run(argv)
    if argv and argv[0] == "heap":
        return fw_heap(argv[1:])
    sys.stderr.write("bench_packs: under MicroPython this is the firmware side of tools/bench_packs.py "
                     "(run / listen / heap); run the tool with CPython\n")
    return 2


# ============================================================ the tool (CPython)

def _fw(args, timeout, verbose=False):
    """Run this file's firmware side; its BENCH lines as {key: [ints]} (plus
    "size" / "lock": [(value, label)])."""
    import simulate

    cmd = [simulate.micropython(), "-X", "heapsize=8m", os.path.abspath(__file__)] + [str(a) for a in args]
    if verbose:
        cmd.append("-v")
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    out = {"size": [], "lock": [], "error": []}
    for line in r.stdout.splitlines():
        if not line.startswith("BENCH "):
            if verbose:
                sys.stderr.write(line + "\n")
            continue
        _, key, rest = (line + " ").split(" ", 2)
        if key in ("size", "lock", "error"):
            value, _, label = rest.strip().partition(" ")
            if key == "lock" and value.startswith("allocates"):
                value, label = rest.strip().split(") ", 1)
                value += ")"
            out[key].append((value, label))
        else:
            out[key] = [int(v) for v in rest.split()]
    if r.returncode != 0 or out["error"]:
        raise RuntimeError("firmware side failed (exit %d): %s%s" % (
            r.returncode, "; ".join("%s %s" % e for e in out["error"]), r.stderr[-2000:]))
    return out


def _write(tmp, name, obj):
    path = os.path.join(tmp, name)
    with open(path, "w") as f:
        json.dump(obj, f)
    return path


def _spread(values):
    return {"median": statistics.median(values), "max": max(values), "min": min(values), "n": len(values)}


def master_run(n, gap, cycles, warm, baud, seed, tmp, verbose=False):
    """(a) for n packs at bms_gap_ms gap: a dict of figures."""
    import jkbms_sim
    import simulate

    cfg = simulate.bus_config(n, False)
    cfg["bms_gap_ms"] = gap
    path = _write(tmp, "master-%d-%d.json" % (n, gap), cfg)
    sim = jkbms_sim.JkBmsSim(packs=[{} for _ in range(n)], baud=baud, seed=seed).start()
    try:
        # warm-up: the first cycles also read each pack's settings (and device info)
        limit = 20 + (cycles + warm + 4) * n * (gap + 200) // 1000
        out = _fw(["run", "127.0.0.1:%d" % sim.port, path, n, cycles, warm, limit], limit + 30, verbose)
    finally:
        sim.stop()
    starts = out["start"]
    periods = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    return {"packs": n, "gap_ms": gap, "cycle_ms": _spread(out["cycle"]),
            "period_ms": _spread(periods) if periods else None,
            "oldest_ms": _spread(out["oldest"]), "newest_ms": _spread(out["newest"]),
            "online_min": out["online_min"][0], "polls_ok": out["polls"][0], "timeouts": out["polls"][1],
            "poll_ms": 1000, "single_path": n == 1}


def listen_run(n, seconds, baud, seed, tmp, verbose=False):
    """(b) a JK bank of n packs (master at 0, slaves 1..n-1)."""
    import jkbms_sim
    import simulate

    cfg = simulate.bus_config(n, True)
    path = _write(tmp, "listen-%d.json" % n, cfg)
    sim = jkbms_sim.JkBmsSim(packs=[{} for _ in range(n)], bus_master=True, baud=baud, seed=seed).start()
    try:
        warm = 2  # s after every pack is online
        limit = int(3 * MASTER_PERIOD_S + warm + seconds + 20)
        out = _fw(["listen", "127.0.0.1:%d" % sim.port, path, n, seconds, warm, limit], limit + 30, verbose)
        foreign = sim.foreign_rx_bytes
    finally:
        sim.stop()
    per = {a: _spread(out["pack%d" % a]) for a in range(n) if out.get("pack%d" % a)}
    every = [v for a in range(n) for v in out.get("pack%d" % a, ())]
    worst = max(per, key=lambda a: per[a]["max"])
    return {"packs": n, "seconds": seconds, "age_ms": _spread(every), "per_pack": per, "worst_pack": worst,
            "oldest_ms": _spread(out["oldest"]), "online_min": out["online_min"][0],
            "gateway_tx_bytes": foreign}


def heap_run(counts, cycles, baud, tmp):
    """(c): {n: {"cycle": B, "poll": B}}, sizes, heap_lock results."""
    import jkbms_sim

    from jkbms import pb_modbus

    top = max(counts)
    sim = jkbms_sim.JkBmsSim(packs=[{} for _ in range(top)])
    lines = []
    for a in range(1, top + 1):
        for reg in (pb_modbus.TRIGGER_STATUS, pb_modbus.TRIGGER_SETTINGS, pb_modbus.TRIGGER_ABOUT):
            req = jkbms_sim.trigger_request(a, reg)
            lines.append("%s %s\n" % (req.hex(), sim.reply_to(req).hex()))
    replies = os.path.join(tmp, "replies.txt")
    with open(replies, "w") as f:
        f.writelines(lines)
    stream = os.path.join(tmp, "master-stream.hex")
    with open(stream, "w") as f:
        f.write(master_stream(top).hex())
    per = {}
    sizes = locks = None
    for n in counts:
        args = ["heap", replies, n, cycles, 15, 25, baud]
        if n == top:
            args.append(stream)
        out = _fw(args, 120 + cycles * n)
        per[n] = {"cycle": out["heap_cycle"][0], "poll": out["heap_poll"][0]}
        if n == top:
            sizes, locks = out["size"], out["lock"]
    return per, sizes, locks


def master_stream(n):
    """The bytes a JK master's period puts on the bus with n packs (master
    at 0, slaves 1..n-1): jkbms_sim's own master steps, frames and replies."""
    import jkbms_sim

    sim = jkbms_sim.JkBmsSim(packs=[{} for _ in range(n)], bus_master=True)
    out = b""
    for address, reg in sim.master_steps(0):
        if address == jkbms_sim.MASTER_ADDRESS:
            out += bytes(sim.frame(jkbms_sim.TRIGGERS[reg], address=address)) + jkbms_sim.trigger_ack(address, reg)
        else:
            req = jkbms_sim.trigger_request(address, reg)
            out += req + (sim.reply_to(req) or b"")
    return out


def wire_ms(baud):
    return FRAME_ACK * 10 * 1000.0 / baud


# ----------------------------------------------------------------- tables

def _mm(s):
    return "%d / %d" % (round(s["median"]), round(s["max"]))


def master_table(rows, baud):
    out = ["(a) master role, %d baud (reply %.0f ms on the wire + 10-40 ms reply delay), bms_poll_ms 1000" % (
        baud, wire_ms(baud)),
        "%5s  %6s  %-18s  %-16s  %-24s  %-24s  %s" % (
            "packs", "gap ms", "cycle ms med / max", "period ms med", "oldest age ms med / max",
            "newest age ms med / max", "fits 1 s")]
    for r in rows:
        fits = "yes" if r["cycle_ms"]["max"] <= r["poll_ms"] else "no (cycle > bms_poll_ms)"
        if r["online_min"] < r["packs"]:
            fits += "; a pack dropped out (%d online)" % r["online_min"]
        out.append("%5s  %6d  %-18s  %-16s  %-24s  %-24s  %s" % (
            "%d%s" % (r["packs"], "*" if r["single_path"] else ""), r["gap_ms"], _mm(r["cycle_ms"]),
            "%d" % round(r["period_ms"]["median"]) if r["period_ms"] else "-", _mm(r["oldest_ms"]),
            _mm(r["newest_ms"]), fits))
    if any(r["single_path"] for r in rows):
        out.append("  * one pack: the single-pack path (no PbBus / Battery); cycle = one poll_once()")
    return out


def listen_table(rows, baud):
    out = ["(b) listener role, %d baud, a JK master at address 0 polling every %.1f s" % (baud, MASTER_PERIOD_S),
           "%5s  %-26s  %-22s  %-26s  %s" % ("packs", "age per pack ms med / max", "worst pack (max ms)",
                                             "aggregate oldest ms med / max", "gateway sent")]
    for r in rows:
        out.append("%5d  %-26s  %-22s  %-26s  %d bytes" % (
            r["packs"], _mm(r["age_ms"]), "%d (%d)" % (r["worst_pack"], round(r["per_pack"][r["worst_pack"]]["max"])),
            _mm(r["oldest_ms"]), r["gateway_tx_bytes"]))
    return out


def accounted(n, sizes):
    """Bytes a cycle of n packs creates by the object sizes measured: the
    cycle's coroutine, per pack a poll's coroutines and bound methods, a gap
    between two polls. None without the sizes."""
    z = {label: int(value) for value, label in sizes or ()}
    poll = sum(v for k, v in z.items() if k not in ("PbBus.cycle()", "UartBus.gap()"))
    if "PbBus.cycle()" not in z or "UartBus.gap()" not in z:
        return None, None
    return z["PbBus.cycle()"] + n * poll + (n - 1) * z["UartBus.gap()"], poll


def heap_table(per, sizes, locks):
    out = ["(c) heap per cycle, MicroPython unix port (64-bit objects), gc disabled; PbBus with N packs "
           "(also for 1)",
           "%5s  %-16s  %-16s  %s" % ("packs", "bytes per cycle", "bytes per poll",
                                      "by the object sizes below: cycle + N x poll + (N-1) x gap")]
    for n in sorted(per):
        total, poll = accounted(n, sizes)
        out.append("%5d  %-16d  %-16d  %s" % (n, per[n]["cycle"], per[n]["poll"],
                                              "-" if total is None else "%d (poll %d)" % (total, poll)))
    if sizes:
        out.append("  objects a cycle creates (bytes each):")
        for value, label in sizes:
            out.append("    %6s  %s" % (value, label))
    if locks:
        out.append("  synchronous parts under micropython.heap_lock() (0 = allocates nothing):")
        for value, label in locks:
            out.append("    %-6s  %s" % (value, label))
    return out


def _counts(low, high):
    def parse(text):
        try:
            vals = [int(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError("%r is not a comma-separated list of whole numbers" % text) from None
        for v in vals:
            if not low <= v <= high:
                raise argparse.ArgumentTypeError("%d is not in %d..%d" % (v, low, high))
        return vals
    parse.__name__ = "list"
    return parse


def main(argv=None):
    from tools import cli

    ap = cli.ArgumentParser(prog="bench_packs.py", description=__doc__.split("\n\n")[0],
                            epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--packs", type=_counts(1, 15), default=[1, 4, 8, 15],
                    help="pack counts of (a) and (c), 1..15 (default 1,4,8,15)")
    ap.add_argument("--gaps", type=_counts(10, 1000), default=[100, 15],
                    help="bms_gap_ms values of (a), 10..1000 (default 100,15)")
    ap.add_argument("--cycles", type=cli.number(int, 2, what="a whole number"), default=20,
                    help="cycles measured per case of (a) (default 20)")
    ap.add_argument("--warm", type=cli.number(int, 0, what="a whole number"), default=3,
                    help="cycles left out after every pack is online (default 3)")
    ap.add_argument("--listen-packs", type=_counts(1, 16), default=[4, 16],
                    help="bank sizes of (b), master included, 1..16 (default 4,16; empty: none)")
    ap.add_argument("--listen-seconds", type=cli.number(int, 1, what="a whole number"), default=15,
                    help="seconds measured per case of (b) (default 15)")
    ap.add_argument("--heap-cycles", type=cli.number(int, 0, what="a whole number"), default=20,
                    help="cycles measured per count in (c) (default 20; 0: no heap part)")
    ap.add_argument("--baud", type=cli.number(int, 1200, 1000000, what="a whole number"), default=BAUD,
                    help="the simulated RS485 baud rate (default 115200)")
    ap.add_argument("--seed", type=cli.number(int, what="an integer"), default=1, help="simulator seed")
    ap.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    ap.add_argument("-v", "--verbose", action="store_true", help="show the firmware console")
    args = ap.parse_args(argv)

    rc = 0
    result = {"baud": args.baud, "master": [], "listen": [], "heap": None}
    tmp = tempfile.mkdtemp(prefix="bench-packs-")
    for gap in args.gaps:
        for n in args.packs:
            try:
                result["master"].append(master_run(n, gap, args.cycles, args.warm, args.baud, args.seed, tmp,
                                                   args.verbose))
            except (RuntimeError, subprocess.TimeoutExpired) as e:
                print("bench_packs: master, %d packs, gap %d ms: %s" % (n, gap, e), file=sys.stderr)
                rc = 1
    for n in args.listen_packs:
        try:
            result["listen"].append(listen_run(n, args.listen_seconds, args.baud, args.seed, tmp, args.verbose))
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            print("bench_packs: listener, %d packs: %s" % (n, e), file=sys.stderr)
            rc = 1
    if args.heap_cycles:
        try:
            per, sizes, locks = heap_run(sorted(set(args.packs)), args.heap_cycles, args.baud, tmp)
            result["heap"] = {"per_count": per, "sizes": sizes, "locks": locks}
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            print("bench_packs: heap: %s" % e, file=sys.stderr)
            rc = 1
    print("several JK-PB packs on one bus: the gateway firmware under the MicroPython unix port, "
          "tools/jkbms_sim.py over TCP")
    if result["master"]:
        print("\n".join(master_table(result["master"], args.baud)))
    if result["listen"]:
        print()
        print("\n".join(listen_table(result["listen"], args.baud)))
    if result["heap"]:
        print()
        h = result["heap"]
        print("\n".join(heap_table(h["per_count"], h["sizes"], h["locks"])))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1, sort_keys=True)
    return rc


if __name__ == "__main__":
    sys.exit(fw_main(sys.argv[1:]) if MPY else main())
