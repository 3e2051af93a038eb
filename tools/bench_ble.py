import gc
import sys

USAGE = """Benchmark of the BLE source (sources.jk_ble), runnable under CPython and MicroPython.

usage: bench_ble.py [ROUNDS [FRAMES]]
  micropython tools/bench_ble.py 2000 25
  python tools/bench_ble.py

(a) the firmware's receive path for one 300-byte JK02_32S cell-info frame,
    as the IRQ hook and the source's task run it: NotifyRing.put() of each
    notification, then JkBleSource.drain() (ring -> Reassembler ->
    cellinfo.decode into the snapshot). Two chunkings: MTU 23 (15 x 20 bytes)
    and MTU 247 (244 + 56). Prints us per frame (put + drain, mean over
    ROUNDS frames, default 2000), us per notification put() alone (the IRQ
    side), the heap bytes one frame allocates (gc.mem_alloc() growth with the
    gc off under MicroPython, tracemalloc under CPython) and, under
    MicroPython, "allocation-free: yes" when frames go through with the heap
    locked (micropython.heap_lock()).
(b) the data age from notification to CAN in the whole gateway (app.gateway
    with a recording CAN port) on the simulated radio (host/fakeble, the real
    aioble from ../shared/vendor/micropython-lib): a JkPeripheral pushes a
    cell-info frame every 1000 ms; for each CAN burst that carries a new
    frame, the time from the peripheral's last notification of that frame to
    0x351 + 0x355 leaving the CAN port, split into notification -> snapshot
    (decode; the source drains its ring every 20 ms) and snapshot -> CAN (the
    wait for the next 1 s burst). min / mean / max ms over about FRAMES frames
    (default 25; 0 skips (b)); runs FRAMES + 6 s. Skipped, with the reason,
    when aioble is not found.
Bad arguments: a one-line reason on stderr, exit status 2. Exit status 1 when
a part could not be measured.
"""
# argv is parsed by hand (MicroPython has no argparse), and the help text is a
# string constant (MicroPython keeps no module docstring).

_here = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."
for _p in (_here + "/../host_tests/portable", _here + "/../host", _here + "/../firmware/lib", _here):
    sys.path.insert(0, _p)

from bench_clock import MPY, elapsed_us, now_us  # noqa: E402

from app import config as C  # noqa: E402
from jkbms import frame as J  # noqa: E402
from pack.snapshot import PackSnapshot  # noqa: E402

_MAC = "20:21:11:40:50:60"
# a matching pair (8 cells both): the gateway's plausibility check passes, limits are normal
_DEVICE_ID = "ble_aio_jk02_32s_v11_48_device_info"
_CELL_ID = "ble_aio_jk02_32s_v11_48_cell_info"
_SETTINGS_ID = "ble_jk02_32s_v11_17_settings"
_LAYOUTS = (("MTU 23  (15 x 20 B)", (20,) * 15), ("MTU 247 (244 + 56 B)", (244, 56)))
_LOCKED_FRAMES = 20  # frames per chunking pushed through with the heap locked


class UsageError(Exception):
    pass


class Failed(Exception):
    pass


def _impl():
    return "%s %s" % (sys.implementation.name, sys.platform)


def _cfg():
    msgs = []
    cfg = C.validate({"bms_transport": "ble", "ble_mac": _MAC}, msgs)
    if msgs:
        raise Failed("config: %s" % "; ".join(msgs))
    return cfg


def _chunks(frame, sizes):
    mv = memoryview(frame)
    out = []
    o = 0
    for n in sizes:
        out.append(mv[o:o + n])
        o += n
    return out


# ---------------------------------------------------------------- (a)

def _frames(chunks, put, drain, rounds):
    """rounds frames through put() + drain() (drain = the ring's clear() times
    the puts alone); elapsed us (allocates nothing itself)."""
    t0 = now_us()
    for _ in range(rounds):
        for c in chunks:
            put(c)
        drain()
    return elapsed_us(t0)


def _locked(chunks, put, drain, rounds):
    """True when rounds frames go through with the heap locked (MicroPython)."""
    import micropython

    ok = True
    micropython.heap_lock()
    try:
        _frames(chunks, put, drain, rounds)
    except MemoryError:
        ok = False
    finally:
        micropython.heap_unlock()
    return ok


def _alloc_per_frame(chunks, put, drain, rounds):
    gc.collect()
    if MPY:
        gc.disable()
        try:
            a0 = gc.mem_alloc()
            _frames(chunks, put, drain, rounds)
            return (gc.mem_alloc() - a0) / rounds
        finally:
            gc.enable()
    import tracemalloc

    tracemalloc.start()
    try:
        _frames(chunks, put, drain, 1)
        s0 = tracemalloc.take_snapshot()
        _frames(chunks, put, drain, rounds)
        s1 = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    return sum(st.size_diff for st in s1.compare_to(s0, "filename") if st.size_diff > 0) / rounds


def bench_path(rounds):
    """Part (a): prints the figures; returns the list of result dicts."""
    from fixtures import find_frame, unhex

    import sources

    cell = bytearray(unhex(find_frame(_CELL_ID)["hex"]))
    sett = bytearray(unhex(find_frame(_SETTINGS_ID)["hex"]))
    src = sources.make(_cfg(), None, PackSnapshot(), lambda msg: None)
    ring = src.ring
    put = ring.put
    drain = src.drain
    # warm-up: the settings frame, the first cell frame (layout detection)
    for c in _chunks(sett, (20,) * 15) + _chunks(cell, (20,) * 15):
        put(c)
    drain()
    if src.frames != 2 or src.snap.settings_ok != 1 or src.layout != J.LAYOUT_JK02_32S:
        raise Failed("warm-up: frames %d, settings %d, layout %d" % (src.frames, src.snap.settings_ok, src.layout))
    impl = _impl()
    print("(a) BLE receive path, one 300-byte JK02_32S cell-info frame: NotifyRing.put() per notification "
          "(IRQ) + JkBleSource.drain() (Reassembler + cellinfo.decode) (%s, %d rounds)" % (impl, rounds))
    results = []
    for name, sizes in _LAYOUTS:
        chunks = _chunks(cell, sizes)
        _frames(chunks, put, drain, 10)
        before = src.frames
        gc.collect()
        total = _frames(chunks, put, drain, rounds)
        gc.collect()
        puts = _frames(chunks, put, ring.clear, rounds)
        alloc = _alloc_per_frame(chunks, put, drain, min(rounds, 200))
        free = _locked(chunks, put, drain, _LOCKED_FRAMES) if MPY else None
        if src.decode_errors or ring.lost or src.rx.dropped or src.frames - before < rounds:
            raise Failed("%s: decode errors %d, lost %d, resync bytes %d, frames %d of %d" % (
                name, src.decode_errors, ring.lost, src.rx.dropped, src.frames - before, rounds))
        r = {"name": name, "frame_us": total / rounds, "put_us": puts / (rounds * len(sizes)),
             "notifications": len(sizes), "alloc": alloc, "free": free}
        r["drain_us"] = r["frame_us"] - r["put_us"] * len(sizes)
        results.append(r)
        print("  %-21s %8.1f us/frame (drain %.1f us)   put %6.2f us/notification   heap %6.1f bytes/frame   "
              "allocation-free: %s" % (name, r["frame_us"], r["drain_us"], r["put_us"], alloc,
                                       "n/a (CPython)" if free is None else ("yes" if free else "no")))
    if src.snap.cell_count <= 0:
        raise Failed("the snapshot holds no cells")
    return results


# ---------------------------------------------------------------- (b)

class _TimedCan:
    """The fake CAN port of the gateway tests (host_tests/portable/fakes.py),
    but it keeps nothing: it notes when 0x351 and 0x355 leave and which cell
    frame (its counter, byte 5) the source had accepted last."""

    def __init__(self, src, on_burst):
        from fakes import FakeCan

        self._base = FakeCan()
        self.src = src
        self.on_burst = on_burst
        self.n = 0
        self.limits_us = None

    def send(self, can_id, data, flags=0):
        t = now_us()
        if can_id == 0x351:
            self.limits_us = t
        elif can_id == 0x355 and self.limits_us is not None:
            src = self.src
            self.on_burst(src.raw[5] if src.raw_len == J.FRAME_LEN else -1, t)
            self.limits_us = None
        self.n += 1
        return (self.n - 1) % 8

    def __getattr__(self, name):  # recv, get_counters, restart, set_filters, cancel_send
        return getattr(self._base, name)


def _stats(xs):
    return min(xs), sum(xs) / len(xs), max(xs)


async def _age_run(per_event, seconds):
    import aioble
    import bluetooth
    from fakes import CountingWdt, FakeRecovery, MemStore
    from jk_peripheral import FrameSource, JkPeripheral

    from app import gateway as G

    radio = bluetooth.radio
    radio.reset()
    bluetooth.BLE().irq(aioble.core.ble_irq)
    sent = {}  # cell frame counter (byte 5) -> us of its last notification
    decoded = {}  # ... -> us of its decode into the snapshot
    rows = []  # (us last notification, us decoded, us 0x355 left) per burst with a new frame
    repeats = [0]  # bursts that carried no new frame
    used = {}

    def on_frame(kind, data):
        if kind == "cell":
            sent[data[5]] = now_us()

    def on_burst(k, t):
        if k < 0 or k in used or k not in sent or k not in decoded:
            repeats[0] += 1
            return
        used[k] = True
        rows.append((sent[k], decoded[k], t))

    frames = FrameSource.from_fixtures(_DEVICE_ID, _CELL_ID, _SETTINGS_ID)
    radio.add(JkPeripheral(_MAC, frames=frames, per_event=per_event, on_frame=on_frame))
    out = []
    # the port reads which frame the source accepted last: it gets the source once the
    # gateway has built it, before anything runs
    can = _TimedCan(_NoSource(), on_burst)
    gw = G.Gateway(_cfg(), None, can, FakeRecovery(), CountingWdt(), MemStore(), None, "gateway.json", out.append)
    src = gw.source
    can.src = src
    orig = src.accepted

    def accepted(stamp):
        # called by JkBleSource._frame right after keep_raw() of the cell frame
        decoded[src.raw[5]] = now_us()
        orig(stamp)

    src.accepted = accepted
    await gw.run(seconds)
    await src._close()
    # frames decoded between the first and the last burst that no burst carried
    lo, hi = (rows[0][1], rows[-1][1]) if rows else (0, -1)
    skipped = 0
    for k in decoded:
        if k not in used and lo < decoded[k] < hi:
            skipped += 1
    return rows, repeats[0], skipped, src, out


class _NoSource:
    raw = b""
    raw_len = 0


def _line(label, xs):
    lo, mean, hi = _stats(xs)
    print("  %-34s min %7.1f  mean %7.1f  max %7.1f ms" % (label, lo, mean, hi))
    return (lo, mean, hi)


def bench_age(frames, per_event=8):
    """Part (b): prints the figures; returns a dict, or None when skipped."""
    from fakeble import env

    why = env.setup()
    if why is not None:
        print("(b) data age: SKIPPED: %s" % why)
        return None
    import asyncio

    seconds = frames + 6  # connection + device info ~1 s, the phase lock, one frame a second
    rows, repeats, skipped, src, out = asyncio.run(_age_run(per_event, seconds))
    cfg = src.cfg
    print("(b) data age, last notification of a cell-info frame -> CAN 0x351 + 0x355 leaving the port (whole "
          "gateway, simulated radio: a frame every 1000 ms, MTU %d, %d notifications per connection event; CAN "
          "every %d ms, phase lock %s; %s, %d s)" % (
              src.mtu, per_event, cfg["can_period_ms"],
              "on" if cfg["bms_poll_ms"] == cfg["can_period_ms"] else "off", _impl(), seconds))
    if not rows:
        raise Failed("no CAN burst carried a BLE frame (link: %s; %s)" % (src.link_text(0), " | ".join(out[-5:])))
    if src.decode_errors or src.ring.lost:
        raise Failed("decode errors %d, lost notifications %d" % (src.decode_errors, src.ring.lost))
    res = {"bursts": len(rows), "repeats": repeats, "skipped": skipped}
    res["total"] = _line("notification -> CAN", [(c - a) / 1000 for a, b, c in rows])
    res["decode"] = _line("notification -> snapshot", [(b - a) / 1000 for a, b, c in rows])
    res["wait"] = _line("snapshot -> CAN", [(c - b) / 1000 for a, b, c in rows])
    half = rows[len(rows) // 2:]
    res["steady"] = _line("notification -> CAN, last %d" % len(half), [(c - a) / 1000 for a, b, c in half])
    print("  %d bursts with a new frame, %d without (the same frame again, or none yet), %d frames no burst "
          "carried; link: %d connect(s), %d lost notifications, %d decode errors"
          % (len(rows), repeats, skipped, src.connects, src.ring.lost, src.decode_errors))
    return res


def parse_args(args):
    """(rounds, frames) from argv[1:]; UsageError with a reason."""
    for a in args:
        if a.startswith("-"):
            raise UsageError("unknown option %r" % a)
    if len(args) > 2:
        raise UsageError("too many arguments")
    out = [2000, 25]
    names = ("ROUNDS", "FRAMES")
    for i in range(len(args)):
        try:
            out[i] = int(args[i])
        except ValueError:
            raise UsageError("%s must be a whole number, not %r" % (names[i], args[i])) from None
    if out[0] < 1:
        raise UsageError("ROUNDS must be >= 1")
    if out[1] < 0:
        raise UsageError("FRAMES must be >= 0")
    return out[0], out[1]


def run(args):
    if "-h" in args or "--help" in args:
        print(USAGE.strip())
        return 0
    try:
        rounds, frames = parse_args(args)
    except UsageError as e:
        sys.stderr.write("bench_ble: %s (see bench_ble.py --help)\n" % e)
        return 2
    try:
        bench_path(rounds)
        if frames:
            bench_age(frames)
    except Failed as e:
        sys.stderr.write("bench_ble: %s\n" % e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
