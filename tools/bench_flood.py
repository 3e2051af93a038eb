#!/usr/bin/env python3
"""CAN receive-flood benchmark: the whole gateway firmware in the host simulation under a flood of frames.

  python tools/bench_flood.py [--rates 0,250,500,1000,2000,4000,8000] [--seconds-per-rate 10]
      [--junk] [--seed 1] [--json OUT.json] [-v]

For each rate (frames per second, in increasing order) the real firmware is
started afresh as in tools/soak.py: host/sim_firmware.py --console under the
MicroPython unix port polls tools/jkbms_sim.py over TCP, its CAN side is
python-can over SLCAN (socket://) -- everything on 127.0.0.1. The flood
window opens once the firmware sends normal frame sets: its charge policy
holds CCL = DCL = 0 for hold_s (default 30 s) after the first data, so each
rate starts with about that long a wait (at most 30 s for the first data +
hold_s + 3 s). Besides the
inverter's 0x305 heartbeat (11-bit, 8 data bytes, every second) the host then
writes frames to the gateway's CAN receive side at the rate for
--seconds-per-rate: 0x123 with 8 data bytes, or with --junk in turn 0x123,
0x305 as an RTR frame and 0x305 with a 29-bit id (the heartbeat's id in
shapes that are not the heartbeat). The protocol's acceptance filter (11-bit
0x305) is set on the port: 0x123 and the 29-bit 0x305 never reach the
firmware's receive queue, the RTR 0x305 does (and is ignored there). One
thread writes the heartbeat and the flood (paced on a 1 ms tick, at most
MAX_DEBT_S of arrears caught up), the main thread receives.

Per rate the report gives
  written/s    flood frames actually written in the window, per second
  taken/s      flood frames the gateway's SLCAN side took (its "z"/"Z"
               replies, minus the heartbeats), per second
  0x351        intervals between consecutive 0x351 frames inside the flood
               window: count, mean / stdev / max, max deviation from the period
  cadence      "ok" when every interval lies within period +- tolerance (and
               at least one interval was seen)
  sets         frame sets (0x35E ... 0x35C) starting in the window; how many
               were incomplete, how many were not normal (CCL or DCL 0, or
               the communication-fault bit: the BMS data went stale)
  WDT          the firmware's watchdog fired (sim_firmware exits with code 3)
  restarts     task restarts ("crashed, restarting" on the console, or the
               `status` count)
  0x305        heartbeats the firmware counted during the window (the
               console's `status` "0x305 seen N times", typed at the start
               and at the end of the window) / heartbeats sent; "ok" when at
               most one is missing (the edges of the window)

Tolerance: 5 % of the CAN period (the firmware nudges a burst by up to 5 %
to follow the BMS poll, docs/design.md), widened to the largest deviation of
the no-flood run (rate 0: host scheduling alone spreads the intervals a
little) but to at most 10 %. Without rate 0 in --rates the tolerance is 5 %.

The run stops early, with the reason, at the first rate that could not be
delivered: fewer than 90 % of the frames written (the host could not
generate them, or its writes blocked because the gateway did not read), or
the gateway took fewer than 90 % of what was written (its SLCAN input fell
behind; higher rates would only deepen the backlog). The final line names the
largest rate up to which every step kept the cadence within tolerance.

For scale: a 500 kbit/s bus carries at most ~4500 frames/s with 8 data bytes
(111 bits each before stuff bits); the rates above that load the host-only
SLCAN parsing (host/slcan.py, MicroPython) harder than a real bus could load
the CAN controller. A default run takes about 5 min (~34 s of start-up --
hold_s of it -- and `status` per rate besides the windows).

Exit 0 when every rate was measured without a failure, 1 on a failure (the
firmware did not start or died, a watchdog reset, a task restart, the
no-flood run outside the tolerance); bad arguments: 2, one line.
"""
import argparse
import datetime
import json
import math
import os
import re
import statistics
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for _p in (os.path.join(ROOT, "firmware", "lib"), ROOT):  # the firmware's code, the tools package
    if _p not in sys.path:
        sys.path.insert(0, _p)

from app import config as gwconfig  # noqa: E402
from tools import cli, jkbms_sim, simulate, soak  # noqa: E402

DEFAULT_RATES = (0, 250, 500, 1000, 2000, 4000, 8000)
MAX_RATE = 20000
MAX_RATES = 12
TOL_PCT = 5.0  # the cadence criterion: every interval within the period +- 5 % ...
TOL_CAP_PCT = 10.0  # ... widened to the no-flood run's max deviation, at most this
DELIVERED_MIN = 0.9  # written / wanted and taken / written below this: the rate was not delivered
HEARTBEAT_S = 1.0
TICK_S = 0.001  # the writer's pacing tick
MAX_DEBT_S = 0.1  # arrears of the flood caught up at most (the rest is skipped and shows as a lower rate)
MAX_BURST = 400  # frames written per tick at most (the heartbeat stays on time)
SEND_TIMEOUT_S = 2.0  # a write blocked this long ends the flood (the gateway does not read)
BLOCKED_S = 0.02  # a write that took longer waited for the connection (not for the GIL: 5 ms slices)
STARTUP_S = 30.0  # longest wait for the first data; for the first normal frame set + hold_s + LIMITS_SLACK_S
LIMITS_SLACK_S = soak.LIMITS_SLACK_S  # after the hold: the first ramp step
STATUS_WAIT_S = 3.0  # longest wait for the `status` reply at the end of the window
TAIL_S = 0.3  # receiving goes on this long after the window (the last set completes)
FLOOD_ID = 0x123
ID_LIMITS = soak.ID_LIMITS
ID_ALARMS = soak.ID_ALARMS
WDT_EXIT_CODE = soak.WDT_EXIT_CODE

SEEN_RE = re.compile(r"0x305 seen (\d+) times")
RESTARTS_RE = soak.RESTARTS_RE


# ------------------------------------------------------------------ the host's CAN side

def _bus_class():
    """python-can's SLCAN bus, counting the gateway's replies to the frames we
    write: "z" / "Z" (taken) and BELL (refused). python-can reads them in
    slcanBus._read() and drops them (python-can 4.6, requirements-dev.txt)."""
    from can.interfaces.slcan import slcanBus

    class CountingSlcanBus(slcanBus):
        taken = 0
        refused = 0

        def _read(self, timeout):
            s = super()._read(timeout)
            if s:
                if s[0] in "zZ":
                    self.taken += 1
                elif s.endswith("\x07"):
                    self.refused += 1
            return s

    return CountingSlcanBus


def connect(port, deadline):
    """The SLCAN connection to the firmware (it may still be starting)."""
    cls = _bus_class()
    last = None
    for _ in range(1000):  # bounded; the deadline ends it first (0.1 s per attempt)
        if time.monotonic() >= deadline:
            break
        try:
            return cls(channel="socket://127.0.0.1:%d" % port, bitrate=500000, sleep_after_open=0)
        except Exception as e:  # noqa: BLE001 - the firmware may still be starting
            last = e
            time.sleep(0.1)
    raise RuntimeError("no SLCAN connection to the firmware: %s" % last)


def flood_frames(junk):
    import can
    frames = [can.Message(arbitration_id=FLOOD_ID, data=bytes(range(1, 9)), is_extended_id=False)]
    if junk:
        frames.append(can.Message(arbitration_id=0x305, is_remote_frame=True, dlc=8, is_extended_id=False))
        frames.append(can.Message(arbitration_id=0x305, data=bytes(8), is_extended_id=True))
    return frames


class Writer(threading.Thread):
    """Everything the host sends, from one thread: the 0x305 heartbeat every
    second from the start, the flood at `rate` frames/s in [t0, t1) once
    plan() is called. Stops at stop(), at the first failed write, or after
    max_s. Times are on clock()."""

    def __init__(self, bus, frames, max_s, clock):
        super().__init__(name="flood-writer", daemon=True)
        import can
        self.bus = bus
        self.clock = clock
        self.frames = frames
        self.hb = can.Message(arbitration_id=0x305, data=bytes(8), is_extended_id=False)
        self.max_s = max_s
        self._plan = None
        self._halt = threading.Event()
        self.hb_times = []
        self.hb_t0 = None
        self.written = 0
        self.skipped = 0
        self.blocked_s = 0.0
        self.error = None

    def plan(self, t0, t1, rate):
        self._plan = (t0, t1, rate)

    def stop(self):
        self._halt.set()
        self.join(SEND_TIMEOUT_S + 1.0)

    def _send(self, msg):
        t = self.clock()
        self.bus.send(msg, timeout=SEND_TIMEOUT_S)
        d = self.clock() - t
        if d > BLOCKED_S:
            self.blocked_s += d

    def run(self):
        start = self.clock()
        next_hb = start
        self.hb_t0 = start
        nf = len(self.frames)
        for _ in range(int(self.max_s / TICK_S) + 1):  # every pass waits >= TICK_S
            if self._halt.is_set():
                return
            now = self.clock()
            if now - start > self.max_s:
                return
            try:
                if now >= next_hb:
                    self._send(self.hb)
                    self.hb_times.append(now)
                    next_hb += HEARTBEAT_S
                    if next_hb < now:  # fell behind: no catch-up burst of heartbeats
                        next_hb = now + HEARTBEAT_S
                plan = self._plan
                if plan is not None and plan[2] > 0 and now >= plan[0]:
                    t0, t1, rate = plan
                    due = int((min(now, t1) - t0) * rate) - self.written - self.skipped
                    debt = int(rate * MAX_DEBT_S) + 1
                    if due > debt:
                        self.skipped += due - debt
                        due = debt
                    for _k in range(min(due, MAX_BURST)):
                        self._send(self.frames[self.written % nf])
                        self.written += 1
            except Exception as e:  # noqa: BLE001 - write timeout or the firmware closed the link
                self.error = "%s after %d flood frames" % (" ".join(str(e).split()) or type(e).__name__,
                                                          self.written)
                return
            self._halt.wait(TICK_S)


# ------------------------------------------------------------------ one rate

def _status_reply(lines, t_req, regex):
    """The first match of regex in a console line at or after t_req."""
    for t, _boot, text in lines:
        if t >= t_req:
            m = regex.search(text)
            if m:
                return int(m.group(1))
    return None


def startup_limit_s(cfg):
    """Longest wait for the first normal frame set after the firmware's start:
    the first data, charge.policy's hold after it (hold_s), a ramp step."""
    return STARTUP_S + cfg["hold_s"] + LIMITS_SLACK_S


def run_rate(sim, rate, seconds, junk, cfg_path, clock, verbose=False, startup_s=None):
    """Start the firmware, wait for a normal frame set (at most startup_s,
    default startup_limit_s() of the firmware defaults), flood at rate for
    seconds, ask `status` at both ends. Returns the record of the run."""
    if startup_s is None:
        startup_s = startup_limit_s(gwconfig.defaults())
    lines = []
    lock = threading.Lock()
    echo = (lambda line: sys.stderr.write("  firmware | " + line)) if verbose else None
    fw_seconds = startup_s + seconds + STATUS_WAIT_S + 15
    rec = {"rate": rate, "frames": [], "lines": lines, "window": None, "ready": None, "status_times": [],
           "replies_at_start": (0, 0), "exit_code": None, "error": None, "writer": None}
    frames = rec["frames"]
    fw = bus = writer = None
    t_start = clock()
    try:
        fw = soak.ConsoleFirmware(sim.port, simulate.free_port(), cfg_path, fw_seconds, clock, lines, lock, 0,
                                  echo)
        bus = connect(fw.can_port, time.monotonic() + 15)
        writer = Writer(bus, flood_frames(junk), fw_seconds, clock)
        writer.start()
        last = {}
        window = None
        t_done = None
        cap = int((fw_seconds + 10) / 0.01) + 1  # recv waits up to 10 ms; the deadlines end the loop first
        for _ in range(cap):
            now = clock()
            code = fw.proc.poll()
            if code is not None:
                rec["exit_code"] = code
                rec["error"] = "the firmware exited (code %d%s) at %.1f s" % (
                    code, ": watchdog reset" if code == WDT_EXIT_CODE else "", now - t_start)
                break
            if writer.error and rec["error"] is None:
                rec["error"] = "writing failed: " + writer.error
            if window is None and now - t_start > startup_s:
                rec["error"] = "no normal frame set within %.0f s of the start" % startup_s
                break
            if window is not None:
                fs, fe = window
                if len(rec["status_times"]) == 0 and now >= fs:
                    fw.send("status")
                    rec["status_times"].append(now)
                    rec["replies_at_start"] = (bus.taken, bus.refused)  # python-can's set-up replies before
                elif len(rec["status_times"]) == 1 and now >= fe:
                    fw.send("status")
                    rec["status_times"].append(now)
                    t_done = now
                if t_done is not None:
                    with lock:
                        answered = _status_reply(lines, t_done, RESTARTS_RE) is not None
                    if (answered and now >= fe + TAIL_S) or now >= t_done + STATUS_WAIT_S:
                        break
            try:
                msg = bus.recv(timeout=0.01)
            except Exception:  # noqa: BLE001 - the firmware closed the link (its exit is seen next)
                time.sleep(0.01)
                continue
            if msg is None:
                continue
            t = clock()
            data = bytes(msg.data)
            frames.append((t, msg.arbitration_id, data))
            if window is None:
                last[msg.arbitration_id] = data
                if (msg.arbitration_id == ID_ALARMS and ID_LIMITS in last
                        and soak._classify(last[ID_LIMITS], data) == "normal"):
                    rec["ready"] = t - t_start
                    # the window starts half-way between two heartbeats (the
                    # `status` counts then never straddle one) and lasts seconds
                    hb0 = writer.hb_t0
                    fs = hb0 + math.ceil(t - hb0 + 0.25) + 0.5  # 0.75..1.75 s from now
                    window = (fs, fs + seconds)
                    rec["window"] = window
                    writer.plan(fs, fs + seconds, rate)
        else:
            rec["error"] = rec["error"] or "the run did not end in time"
    except RuntimeError as e:
        rec["error"] = str(e)
    finally:
        if writer is not None:
            writer.stop()
            rec["writer"] = {"written": writer.written, "skipped": writer.skipped, "blocked_s": writer.blocked_s,
                             "error": writer.error, "hb_times": list(writer.hb_times),
                             "taken": bus.taken, "refused": bus.refused}
        if bus is not None:
            try:
                bus.shutdown()
            except Exception:  # noqa: BLE001 - the firmware is gone already
                pass
        if fw is not None:
            if rec["exit_code"] is None:
                code = fw.proc.poll()
                if code is not None:
                    rec["exit_code"] = code
            fw.stop()
    with lock:
        rec["lines"] = list(lines)
    return rec


# ------------------------------------------------------------------ analysis

def _r(x, nd=1):
    return None if x is None else round(x, nd)


def cadence(t351, window, period_ms):
    """Intervals (ms) between consecutive 0x351 times inside the window:
    dict intervals, mean, stdev, min, max, max_dev, series (each interval, in
    order: where an excursion fell), or None without one."""
    fs, fe = window
    ts = [t for t in t351 if fs <= t <= fe]
    iv = [(b - a) * 1000.0 for a, b in zip(ts, ts[1:], strict=False)]
    if not iv:
        return None
    return {"intervals": len(iv), "mean": _r(statistics.mean(iv)),
            "stdev": _r(statistics.stdev(iv)) if len(iv) > 1 else None, "min": _r(min(iv)), "max": _r(max(iv)),
            "max_dev": _r(max(abs(x - period_ms) for x in iv)), "series": [_r(x) for x in iv]}


def tolerance_ms(period_ms, baseline_max_dev):
    """(tolerance in ms, how it was chosen): 5 % of the period, widened to the
    no-flood run's max deviation (None: no such run), at most 10 %."""
    base = period_ms * TOL_PCT / 100.0
    cap = period_ms * TOL_CAP_PCT / 100.0
    if baseline_max_dev is None:
        return base, "%g %% of the period; no no-flood run to widen it" % TOL_PCT
    if baseline_max_dev <= base:
        return base, "%g %% of the period; the no-flood run's max deviation, %.1f ms, is within it" % (
            TOL_PCT, baseline_max_dev)
    if baseline_max_dev <= cap:
        return baseline_max_dev, "%g %% of the period, widened to the no-flood run's max deviation" % TOL_PCT
    return cap, "%g %% of the period, the cap; the no-flood run's max deviation, %.1f ms, is beyond it" % (
        TOL_CAP_PCT, baseline_max_dev)


def within(cad, tol_ms):
    return cad is not None and cad["max_dev"] <= tol_ms + 1e-9


def analyse_rate(rec, period_ms, seconds):
    """The figures of one rate (JSON-ready); "within_tolerance" is filled in
    by the caller once the tolerance is known."""
    w = rec["writer"] or {"written": 0, "skipped": 0, "blocked_s": 0.0, "error": None, "hb_times": [],
                          "taken": 0, "refused": 0}
    out = {"rate": rec["rate"], "startup_s": _r(rec["ready"], 2), "error": rec["error"]}
    window = rec["window"]
    lines = rec["lines"]
    hb = w["hb_times"]
    # the gateway replies "z" to each frame it takes (heartbeats included) and
    # BELL to a line it refuses; counted from the window's start (before it:
    # the replies to python-can's set-up, one BELL for its second "O")
    st = rec["status_times"]
    base_taken, base_refused = rec["replies_at_start"]
    hb_in = sum(1 for t in hb if t >= st[0]) if st else len(hb)
    taken = max(0, w["taken"] - base_taken - hb_in)
    out["flood"] = {"written": w["written"], "written_per_s": _r(w["written"] / seconds),
                    "taken": taken, "taken_per_s": _r(taken / seconds), "refused": w["refused"] - base_refused,
                    "skipped": w["skipped"], "blocked_s": _r(w["blocked_s"], 2), "write_error": w["error"]}
    if window is None:
        out.update({"cadence_ms": None, "frame_sets": 0, "incomplete_frame_sets": 0, "not_normal_frame_sets": 0,
                    "heartbeat": None})
    else:
        fs, fe = window
        frames = rec["frames"]
        out["cadence_ms"] = cadence([t for t, i, _ in frames if i == ID_LIMITS], window, period_ms)
        sets = [s for s in soak.frame_sets(frames) if fs <= s["first"] <= fe]
        out["frame_sets"] = len(sets)
        out["incomplete_frame_sets"] = sum(1 for s in sets if not s["complete"])
        out["not_normal_frame_sets"] = sum(1 for s in sets if s["kind"] != "normal")
        seen = [_status_reply(lines, t, SEEN_RE) for t in st]
        if len(st) == 2 and None not in seen:
            sent = sum(1 for t in hb if st[0] <= t < st[1])
            n = seen[1] - seen[0]
            out["heartbeat"] = {"sent": sent, "seen": n, "ok": n >= sent - 1}
        else:
            out["heartbeat"] = {"sent": None, "seen": None, "ok": False,
                                "note": "no `status` reply at %s" % ("the start" if len(st) < 1 or seen[0] is None
                                                                      else "the end")}
    restarts = [int(m.group(1)) for _, _, text in lines for m in [RESTARTS_RE.search(text)] if m]
    crashes = sum(1 for _, _, text in lines if soak.CRASH_TEXT in text)
    out["task_restarts"] = max(crashes, restarts[-1] if restarts else 0)
    out["watchdog_reset"] = rec["exit_code"] == WDT_EXIT_CODE or any(soak.WDT_TEXT in text for _, _, text in lines)
    return out


def delivery_problem(res, seconds):
    """Why this rate's flood was not delivered, or None."""
    rate = res["rate"]
    f = res["flood"]
    if rate <= 0 or res["error"]:  # nothing to say about the flood when the firmware failed
        return None
    wrote = f["written"] / seconds
    if wrote < DELIVERED_MIN * rate:
        if f["write_error"] or f["blocked_s"] > 0.1 * seconds:
            return ("at %d frames/s the gateway's SLCAN side did not read fast enough: the writes blocked "
                    "(%.1f s%s), %.0f frames/s written" % (rate, f["blocked_s"],
                                                          ", " + f["write_error"] if f["write_error"] else "",
                                                          wrote))
        return "the host could not generate %d frames/s (it wrote %.0f frames/s)" % (rate, wrote)
    if f["taken"] < DELIVERED_MIN * f["written"]:
        return ("at %d frames/s the gateway's SLCAN input fell behind: it took %.0f of %.0f frames/s written "
                "(higher rates would only deepen the backlog)" % (rate, f["taken"] / seconds, wrote))
    return None


# ------------------------------------------------------------------ table

def _f(v, fmt="%.0f"):
    return "-" if v is None else fmt % v


def table(rep):
    out = ["bench_flood: gateway firmware in the host simulation (MicroPython unix port, %s simulator, SLCAN), "
           "%s s per rate, flood %s" % (rep["config"]["bms_protocol"], _f(rep["seconds_per_rate"], "%g"),
                                        "0x123 / 0x305 RTR / 0x305 29-bit" if rep["junk"] else "0x123 (8 bytes)"),
           "cadence tolerance: every 0x351 interval within %d +- %.1f ms: %s" % (
               rep["period_ms"], rep["tolerance_ms"], rep["tolerance_basis"]),
           ""]
    hdr = ("%7s %9s %9s %5s %7s %6s %7s %7s %7s %9s %4s %8s %11s" % (
        "flood/s", "written/s", "taken/s", "n", "mean", "stdev", "max", "maxdev", "cadence", "sets/inc/nn",
        "WDT", "restarts", "0x305 seen"))
    out.append(hdr)
    for r in rep["results"]:
        c = r["cadence_ms"] or {}
        hb = r["heartbeat"] or {}
        f = r["flood"]
        out.append("%7d %9s %9s %5s %7s %6s %7s %7s %7s %9s %4s %8d %11s" % (
            r["rate"], _f(f["written_per_s"]), _f(f["taken_per_s"]), _f(c.get("intervals"), "%d"),
            _f(c.get("mean"), "%.1f"), _f(c.get("stdev"), "%.1f"), _f(c.get("max"), "%.1f"),
            _f(c.get("max_dev"), "%.1f"), "ok" if r["within_tolerance"] else "OUT",
            "%d/%d/%d" % (r["frame_sets"], r["incomplete_frame_sets"], r["not_normal_frame_sets"]),
            "yes" if r["watchdog_reset"] else "no", r["task_restarts"],
            ("%s/%s%s" % (hb["seen"], hb["sent"], "" if hb.get("ok") else " !")) if hb.get("sent") is not None
            else "-"))
        if r["error"]:
            out.append("        %d frames/s: %s" % (r["rate"], r["error"]))
    out.append("(n: 0x351 intervals in the window; sets/inc/nn: frame sets, incomplete, not normal; "
               "0x305 seen: heartbeats counted by the firmware / sent)")
    if rep["stopped"]:
        out.append("stopped early: " + rep["stopped"])
    for m in rep["failures"]:
        out.append("FAILURE: " + m)
    best = rep["largest_ok_rate"]
    if best is None:
        out.append("largest flood rate with the cadence within tolerance: none (the no-flood run is outside it)")
    else:
        r = [x for x in rep["results"] if x["rate"] == best][0]
        out.append("largest flood rate with the cadence within tolerance: %d frames/s (%s written/s, %s taken/s)"
                   % (best, _f(r["flood"]["written_per_s"]), _f(r["flood"]["taken_per_s"])))
    return "\n".join(out)


# ------------------------------------------------------------------ main

def parse_rates(text):
    parts = [p.strip() for p in text.split(",")]
    rates = []
    for p in parts:
        try:
            v = int(p)
        except ValueError:
            raise argparse.ArgumentTypeError("%r is not a whole number of frames/s" % p) from None
        if not 0 <= v <= MAX_RATE:
            raise argparse.ArgumentTypeError("%d must be 0..%d" % (v, MAX_RATE))
        rates.append(v)
    if len(set(rates)) != len(rates):
        raise argparse.ArgumentTypeError("%r names a rate twice" % text)
    if not 1 <= len(rates) <= MAX_RATES:
        raise argparse.ArgumentTypeError("1..%d rates" % MAX_RATES)
    return sorted(rates)


def main(argv=None):
    ap = cli.ArgumentParser(prog="bench_flood.py", description=__doc__.split("\n\n")[0],
                            epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rates", type=parse_rates, default=list(DEFAULT_RATES), metavar="R,R,...",
                    help="flood rates in frames/s, 0..%d, at most %d (default %s)" % (
                        MAX_RATE, MAX_RATES, ",".join(map(str, DEFAULT_RATES))))
    ap.add_argument("--seconds-per-rate", type=cli.number(float, 3, 120), default=10.0, metavar="S",
                    help="length of the flood window per rate, 3..120 (default 10)")
    ap.add_argument("--junk", action="store_true", help="flood 0x123, 0x305 RTR and 29-bit 0x305 in turn")
    ap.add_argument("--seed", type=cli.number(int, what="an integer"), default=1,
                    help="seed of the BMS simulator (default 1)")
    ap.add_argument("--json", metavar="OUT.json", help="write the report here as JSON")
    ap.add_argument("-v", "--verbose", action="store_true", help="show the firmware console live (stderr)")
    args = ap.parse_args(argv)
    out_json = None
    if args.json:
        try:
            out_json = open(args.json, "w")  # a bad path is a usage error now, not after minutes
        except OSError as e:
            ap.error("--json: %s" % e)
    cfg = gwconfig.validate({}, [])  # the firmware's defaults: what it will use
    period = cfg["can_period_ms"]
    seconds = args.seconds_per_rate
    started = datetime.datetime.now().astimezone()
    sim = jkbms_sim.JkBmsSim(state={}, protocol=cfg["bms_protocol"], address=cfg["bms_address"], seed=args.seed)
    sim.start()
    t0 = time.monotonic()

    def clock():
        return time.monotonic() - t0

    results = []
    failures = []
    stopped = None
    tol, basis = tolerance_ms(period, None)
    try:
        with tempfile.TemporaryDirectory(prefix="gw-flood-") as tmp:
            cfg_path = os.path.join(tmp, "gateway.json")
            with open(cfg_path, "w") as f:
                json.dump({}, f)
            for rate in args.rates:
                rec = run_rate(sim, rate, seconds, args.junk, cfg_path, clock, args.verbose,
                               startup_limit_s(cfg))
                res = analyse_rate(rec, period, seconds)
                if rate == 0 and res["cadence_ms"] is not None:
                    tol, basis = tolerance_ms(period, res["cadence_ms"]["max_dev"])
                results.append(res)
                if args.verbose:
                    sys.stderr.write("bench_flood: %d frames/s done\n" % rate)
                stopped = delivery_problem(res, seconds)
                if res["error"] and not res["watchdog_reset"]:
                    failures.append("%d frames/s: %s" % (rate, res["error"]))
                if rec["window"] is None:
                    stopped = "the firmware did not reach normal operation at %d frames/s" % rate
                if stopped:
                    break
    finally:
        sim.stop()
    best = None
    for res in results:
        res["within_tolerance"] = within(res["cadence_ms"], tol)
        if res["watchdog_reset"]:
            failures.append("%d frames/s: watchdog reset" % res["rate"])
        if res["task_restarts"]:
            failures.append("%d frames/s: %d task restart(s)" % (res["rate"], res["task_restarts"]))
    for res in results:
        if not res["within_tolerance"]:
            break
        best = res["rate"]
    if results and results[0]["rate"] == 0 and not results[0]["within_tolerance"]:
        failures.append("the no-flood run is outside the tolerance")
    rep = {"tool": "bench_flood", "date": started.isoformat(timespec="seconds"),
           "command": " ".join(["tools/bench_flood.py"] + (sys.argv[1:] if argv is None else list(argv))),
           "rates": args.rates, "seconds_per_rate": seconds, "junk": args.junk, "seed": args.seed,
           "config": {k: cfg[k] for k in ("bms_protocol", "bms_poll_ms", "can_period_ms", "wdt_ms", "hold_s")},
           "period_ms": period, "tolerance_ms": round(tol, 1), "tolerance_basis": basis,
           "results": results, "stopped": stopped, "largest_ok_rate": best, "failures": failures,
           "ok": not failures}
    if out_json is not None:
        with out_json:
            json.dump(rep, out_json, indent=1)
            out_json.write("\n")
    print(table(rep))
    return 0 if rep["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
