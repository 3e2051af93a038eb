#!/usr/bin/env python3
"""Soak benchmark: the whole gateway firmware in the host simulation for minutes, with faults.

  python tools/soak.py [--minutes 15] [--seed 1] [--json OUT.json] [--candump OUT.log]
      [--log FIRMWARE.log] [--config CONFIG.json] [--state STATE.json] [-v]

The real firmware application runs as in tools/simulate.py: host/sim_firmware.py
(with --console) under the MicroPython unix port polls tools/jkbms_sim.py over
TCP; its CAN frames are received through python-can (SLCAN over a socket://
URL) and an inverter 0x305 heartbeat (11-bit, 8 data bytes) is sent every
second. Everything stays on 127.0.0.1. Every received frame is kept with its
host time, and so is every line of the firmware's console; `status` is typed
on the console every 30 s (its "free heap N bytes" is the heap series).

The firmware runs with its configuration (default: the firmware defaults),
charge controller included: CCL and DCL stay 0 for hold_s (default 30 s)
after the first data and after every block -- stale data among them -- and
then ramp up at ramp_a_s. The run starts once the first normal frame set
arrives (at most 30 s for the first data + hold_s + 3 s after the start);
--minutes of faults on a fixed schedule then follow (seeded: --seed), and the
run stops by itself. The first cycle of the schedule is, in order
  bms-silent-short   0.3-0.9 s of silence (must stay normal)
  bms-silent-long    10 s (longer than the 5 s stale timeout: safe state)
  bms-silent-medium  3 s (safe state or not, depending on the poll phase)
  bms-garbage        8 s of random bytes / broken checksums and noise
  bms-slow           8 s of replies after 1.5 s (beyond the reply time)
  bms-partial        8 s of replies cut short
  inverter-silent    15 s without 0x305 (frame sets must continue as normal)
later cycles shuffle the order; 6-14 s of normal operation lie between two
faults -- after a fault that may reach the safe state, on top of the time
the limits need to come back (5 s for the data, hold_s, 3 s: every fault
starts from normal frame sets) -- and 5 s (plus that time) follow the last
one (a fault that does not fit is left out).

A frame set (0x35E ... 0x35C) is "safe" when 0x351 carries CCL = DCL = 0 and
0x359 the communication-fault bit, "normal" when CCL > 0, DCL > 0 and that bit
is clear (a set with the bit clear and CCL or DCL 0 is the hold after a
block). The report (a table; --json FILE for the figures as JSON):
  cadence       interval between 0x351 frames: mean / stdev / min / max / p99
  longest gap   from the last frame of one set to the first of the next
  per fault     time from its start to the first safe frame set, or that it
                stayed normal; time from its end to the first frame set
                without the communication-fault bit (recovery: the data is
                back and fresh, the frames leave the safe state; after it the
                bit stays clear up to the next fault); time from its end to
                the first normal frame set (limits back: recovery + hold_s +
                the first ramp step; after it the output stays normal up to
                the next fault); for inverter-silent the firmware's events
  unsafe        frame sets with CCL or DCL > 0 while the BMS had sent no valid
                reply (silent, garbage, partial) for longer than the stale
                timeout (+ 0.1 s for the reply in flight at the fault's start)
  heap          free heap of the `status` replies: min and trend (bytes/hour,
                least-squares slope over the last firmware boot)
  restarts      task restarts, watchdog resets (sim_firmware exits with code 3
                on a starved watchdog: it is counted, and the firmware is
                started again, at most 3 times)
  BMS polls     ok / timeouts / bad frames / exceptions of the final `status`

Exit 0 when nothing failed, 1 when something did (unsafe frame sets, a
watchdog reset, a task restart, the firmware died, a fault that never reached
the safe state, never recovered or whose limits never came back; the reasons
are listed); timing beyond the limits (safe state later than timeout + 2 s,
recovery later than 5 s, limits back later than 5 s + hold_s + 3 s or sooner
than hold_s - 1.5 s after the recovery, a short silence that went safe) is
listed as a warning. Bad arguments: 2, one line.
"""
import argparse
import datetime
import json
import math
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for _p in (os.path.join(ROOT, "firmware", "lib"), ROOT):  # the firmware's code, the tools package
    if _p not in sys.path:
        sys.path.insert(0, _p)

import protocols  # noqa: E402
from app import config as gwconfig  # noqa: E402
from charge.policy import link_loss_mode  # noqa: E402
from tools import cli, jkbms_sim, simulate, state_json  # noqa: E402

WDT_EXIT_CODE = 3  # host/hostio.py HostWdt: the process exits with it on a starved watchdog
STATUS_EVERY_S = 30.0
STARTUP_S = 30.0  # longest wait for the first frame set (data); the first normal one: + hold_s + LIMITS_SLACK_S
LEAD_S = 3.0  # normal operation before the first fault
GAP_S = (6.0, 14.0)  # normal operation between two faults
TAIL_S = 5.0  # normal operation after the last fault
IN_FLIGHT_S = 0.1  # a reply requested just before a fault starts still arrives (10-40 ms + transfer)
SAFE_SLACK_S = 2.0  # time to the safe state: at most the stale timeout + this
# back to normal at most this long after the BMS answers again: an attempt that
# timed out just before drains late replies for (1 + LATE_FACTOR) reply times
# (sources.uart_bus), then one poll and one CAN period; 5 s with the defaults
RECOVERY_LIMIT_S = 5.0
# the limits come back hold_s (charge.policy's hold after a block) after the
# data, at the first ramp step: within this much more (two CAN periods +
# host scheduling)
LIMITS_SLACK_S = 3.0
HOLD_SHORT_S = 1.5  # limits back sooner than hold_s minus this after the recovery: the hold was cut short
MAX_RESETS = 3
FINAL_STATUS_WAIT_S = 3.0
HEARTBEAT_S = 1.0

ID_NAME, ID_LIMITS, ID_ALARMS, ID_REQUEST = 0x35E, 0x351, 0x359, 0x35C
SET_IDS = (0x35E, 0x351, 0x355, 0x356, 0x359, 0x35C)
COMM_FAIL_BYTE, COMM_FAIL_MASK = 3, 0x08  # 0x359 bit 27: communication fault (docs/inverter-can.md)

INVERTER = simulate.INVERTER_FAULT
NO_DATA_FAULTS = ("bms-silent", "bms-garbage", "bms-partial")  # no valid reply reaches the firmware

# (label, fault, duration in s or (low, high) drawn from the seeded generator)
KINDS = (
    ("bms-silent-short", "bms-silent", (0.3, 0.9)),
    ("bms-silent-long", "bms-silent", 10.0),
    ("bms-silent-medium", "bms-silent", 3.0),
    ("bms-garbage", "bms-garbage", 8.0),
    ("bms-slow", "bms-slow", 8.0),
    ("bms-partial", "bms-partial", 8.0),
    (INVERTER, INVERTER, 15.0),
)

HEAP_RE = re.compile(r"free heap (\d+) bytes")
RESTARTS_RE = re.compile(r"task restarts (\d+)")
POLLS_RE = re.compile(r"polls ok (\d+), timeouts (\d+), bad frames (\d+), exceptions (\d+)")
CRASH_TEXT = "crashed, restarting"
INV_SILENT_TEXT = "inverter silent:"
INV_BACK_TEXT = "inverter heartbeat back"
WDT_TEXT = "WATCHDOG:"


# ------------------------------------------------------------------ schedule

def limits_back_limit(cfg):
    """Longest time from a fault's end to normal frame sets again: the data
    back (RECOVERY_LIMIT_S), charge.policy's hold after a block (hold_s),
    the first ramp step."""
    return RECOVERY_LIMIT_S + cfg["hold_s"] + LIMITS_SLACK_S


def build_schedule(window_s, seed, cfg=None):
    """The faults of a run of window_s seconds: dicts label, fault, at,
    duration (s after the run's start). After a fault that may reach the
    safe state (expectation() not "normal") the next one waits the time the
    limits need to come back (limits_back_limit()) on top of its gap, and the
    window's tail is that much longer: every fault starts from normal frame
    sets. Deterministic for a seed and a configuration (default: the firmware
    defaults); bounded (each fault takes > 6 s of the window)."""
    cfg = cfg or gwconfig.defaults()
    settle_s = limits_back_limit(cfg)
    rng = random.Random(seed)
    out = []
    t = None  # end of the previous fault (+ its settle time)
    # every fault takes more than GAP_S[0] of the window: this many cycles are always enough
    for cycle in range(int(window_s // (GAP_S[0] * len(KINDS))) + 2):
        order = list(KINDS)
        if cycle:
            rng.shuffle(order)
        for label, fault, dur in order:
            if not isinstance(dur, float):
                dur = round(rng.uniform(*dur), 2)
            gap = round(rng.uniform(*GAP_S), 2)
            settle = settle_s if expectation(fault, dur, cfg) != "normal" else 0.0
            at = LEAD_S if t is None else t + gap
            if at + dur + settle + TAIL_S > window_s and t is not None:
                at = t + GAP_S[0]  # the shortest gap, if that makes it fit
            if at + dur + settle + TAIL_S > window_s:
                return out
            out.append({"label": label, "fault": fault, "at": round(at, 2), "duration": dur})
            t = at + dur + settle
    return out


def expectation(fault, duration, cfg):
    """'safe' (the limits must drop to 0), 'normal' (they must not) or
    'either' (depends on where in the poll cycle the fault falls)."""
    if fault == INVERTER:
        return "normal"
    timeout = cfg["bms_timeout_s"]
    if duration > timeout:
        return "safe"
    # the data is up to a poll period old when the fault starts; after it the
    # attempt under way (reply time + 3 reply times of late-reply discard +
    # 0.1 s gap) and the exchange itself pass before new data is in
    worst = cfg["bms_poll_ms"] / 1000.0 + 4 * cfg["bms_reply_ms"] / 1000.0 + 0.1 + 0.2
    return "normal" if duration + worst <= timeout else "either"


# --------------------------------------------------------------- the run

class ConsoleFirmware:
    """host/sim_firmware.py --console under the MicroPython unix port: console
    lines are read into lines as (time, boot, text), commands go to stdin."""

    def __init__(self, bms_port, can_port, cfg_path, seconds, clock, lines, lock, boot, echo=None):
        cmd = [simulate.micropython(), "-X", "heapsize=2m", os.path.join(ROOT, "host", "sim_firmware.py"),
               "--bms", "127.0.0.1:%d" % bms_port, "--can-port", str(can_port),
               "--config", cfg_path, "--seconds", str(int(math.ceil(seconds))), "--console"]
        self.can_port = can_port
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, bufsize=1)
        self._reader = threading.Thread(target=self._pump, args=(clock, lines, lock, boot, echo), daemon=True)
        self._reader.start()

    def _pump(self, clock, lines, lock, boot, echo):
        for line in self.proc.stdout:
            with lock:
                lines.append((clock(), boot, line.rstrip("\r\n")))
            if echo is not None:
                echo(line)

    def send(self, text):
        try:
            self.proc.stdin.write(text + "\n")
            self.proc.stdin.flush()
            return True
        except (OSError, ValueError):  # the firmware is gone: its exit code tells why
            return False

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        try:
            self.proc.stdin.close()
        except (OSError, ValueError):
            pass
        self._reader.join(2)


def _normal_pair(limits, alarms):
    return _classify(limits, alarms) == "normal"


def run(window_s, seed, cfg, state, cfg_path, verbose=False):
    """Run the firmware for the startup plus window_s seconds of faults.
    Returns the record: frames [(t, id, data)], lines [(t, boot, text)], the
    schedule with absolute times, status requests, resets, error. Times are
    seconds since the BMS simulator's start."""
    schedule = build_schedule(window_s, seed, cfg)
    startup_s = STARTUP_S + cfg["hold_s"] + LIMITS_SLACK_S  # the first normal frame set by then
    sim = jkbms_sim.JkBmsSim(state=state, protocol=cfg["bms_protocol"], address=cfg["bms_address"], seed=seed)
    sim.start()
    t0 = time.monotonic() - sim.elapsed()  # the simulator's clock: its fault times are ours

    def clock():
        return time.monotonic() - t0

    lines = []
    lock = threading.Lock()
    echo = (lambda line: sys.stderr.write("  firmware | " + line)) if verbose else None
    fw_seconds = startup_s + window_s + 30
    rec = {"frames": [], "lines": lines, "schedule": schedule, "status_requests": [], "resets": [],
           "ready": None, "end": None, "final_status": None, "error": None, "boots": 1}
    frames = rec["frames"]
    fw = inv = None
    try:
        fw = ConsoleFirmware(sim.port, simulate.free_port(), cfg_path, fw_seconds, clock, lines, lock, 0, echo)
        inv = simulate.Inverter(fw.can_port, time.monotonic() + 15)
        startup_deadline = clock() + startup_s
        end = None
        next_hb = clock()
        next_status = None
        inv_windows = []
        last = {}  # id -> data of the current frame set, to spot the first normal set
        cap = int((startup_s + window_s + 60) * 1000)  # > any number of 1 ms iterations in the time
        for _ in range(cap):
            now = clock()
            if end is None and now > startup_deadline:
                rec["error"] = "no normal frame set within %.0f s of the start" % startup_s
                break
            if end is not None and now >= end:
                break
            code = fw.proc.poll()
            if code is not None:
                if code == WDT_EXIT_CODE and len(rec["resets"]) < MAX_RESETS and (end is None or end - now > 5):
                    rec["resets"].append(round(now, 3))
                    inv.close()
                    inv = None
                    fw.stop()
                    rec["boots"] += 1
                    fw = ConsoleFirmware(sim.port, simulate.free_port(), cfg_path, fw_seconds, clock, lines, lock,
                                         rec["boots"] - 1, echo)
                    inv = simulate.Inverter(fw.can_port, time.monotonic() + 15)
                    continue
                if code == WDT_EXIT_CODE:
                    rec["resets"].append(round(now, 3))
                rec["error"] = "the firmware exited (code %d) at %.1f s" % (code, now)
                break
            if now >= next_hb:
                if not any(a <= now < b for a, b in inv_windows):
                    try:
                        inv.heartbeat()
                    except Exception:  # noqa: BLE001 - the link is gone: the exit code tells why
                        pass
                next_hb += HEARTBEAT_S
                if next_hb < now:  # fell behind: no catch-up burst of heartbeats
                    next_hb = now + HEARTBEAT_S
            if next_status is not None and now >= next_status:
                fw.send("status")
                rec["status_requests"].append(round(now, 3))
                next_status += STATUS_EVERY_S
            try:
                msg = inv.bus.recv(timeout=0.02)
            except Exception:  # noqa: BLE001 - the firmware closed the link (its exit is seen next)
                time.sleep(0.02)
                continue
            if msg is None:
                continue
            t = clock()
            data = bytes(msg.data)
            frames.append((t, msg.arbitration_id, data))
            if end is None:
                last[msg.arbitration_id] = data
                if msg.arbitration_id == ID_ALARMS and ID_LIMITS in last and _normal_pair(last[ID_LIMITS], data):
                    rec["ready"] = ready = t
                    end = ready + window_s
                    rec["end"] = end
                    for f in schedule:
                        f["start"] = round(ready + f["at"], 3)
                        f["end"] = round(f["start"] + f["duration"], 3)
                        if f["fault"] == INVERTER:
                            inv_windows.append((f["start"], f["end"]))
                        else:
                            sim.add_fault(f["fault"], at=f["start"], duration=f["duration"])
                    next_status = t
        else:
            rec["error"] = "the main loop reached its iteration limit"
        if rec["error"] is None:
            # the final status: its BMS counters close the report
            asked = clock()
            fw.send("status")
            rec["status_requests"].append(round(asked, 3))
            for _ in range(int(FINAL_STATUS_WAIT_S / 0.02)):
                with lock:
                    got = [x for x in lines if x[0] >= asked and HEAP_RE.search(x[2])]
                if got:
                    rec["final_status"] = asked
                    break
                try:
                    inv.bus.recv(timeout=0.02)  # keep the link drained; not recorded
                except Exception:  # noqa: BLE001
                    time.sleep(0.02)
    except RuntimeError as e:  # simulate.Inverter: no SLCAN connection
        rec["error"] = str(e)
    finally:
        if inv is not None:
            inv.close()
        if fw is not None:
            fw.stop()
        sim.stop()
        rec["sim_stats"] = dict(sim.stats)
    with lock:
        rec["lines"] = list(lines)
    return rec


# --------------------------------------------------------------- analysis

def _u16(d, o):
    return d[o] | d[o + 1] << 8


def _s16(d, o):
    v = _u16(d, o)
    return v - 0x10000 if v & 0x8000 else v


def _classify(limits, alarms):
    if limits is None or alarms is None or len(limits) < 6 or len(alarms) < 4:
        return "incomplete"
    ccl, dcl = _s16(limits, 2), _s16(limits, 4)
    comm = bool(alarms[COMM_FAIL_BYTE] & COMM_FAIL_MASK)
    if ccl == 0 and dcl == 0 and comm:
        return "safe"
    if ccl > 0 and dcl > 0 and not comm:
        return "normal"
    return "other"


def frame_sets(frames):
    """Group frames [(t, id, data)] into sets (a set starts at 0x35E, or when
    an id repeats): dicts t (the 0x351's time, else the first frame's),
    first, last, ccl_a, dcl_a, comm_fault, kind (safe / normal / other /
    incomplete)."""
    sets = []
    cur = None
    for t, can_id, data in frames:
        if can_id not in SET_IDS:
            continue
        if cur is None or can_id == ID_NAME or can_id in cur["ids"]:
            cur = {"ids": {}, "first": t, "last": t}
            sets.append(cur)
        cur["ids"][can_id] = (t, data)
        cur["last"] = t
    out = []
    for s in sets:
        ids = s["ids"]
        limits = ids.get(ID_LIMITS, (None, None))[1]
        alarms = ids.get(ID_ALARMS, (None, None))[1]
        kind = _classify(limits, alarms)
        out.append({
            "t": ids[ID_LIMITS][0] if ID_LIMITS in ids else s["first"], "first": s["first"], "last": s["last"],
            "ccl_a": _s16(limits, 2) / 10.0 if limits is not None else None,
            "dcl_a": _s16(limits, 4) / 10.0 if limits is not None else None,
            "comm_fault": bool(alarms[COMM_FAIL_BYTE] & COMM_FAIL_MASK) if alarms is not None else None,
            "complete": len(ids) == len(SET_IDS), "kind": kind})
    return out


def percentile(values, q):
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    v = sorted(values)
    k = max(1, int(math.ceil(q / 100.0 * len(v))))
    return v[k - 1]


def slope_per_hour(samples):
    """Least-squares slope of [(t_s, value)] in value units per hour, or None
    with fewer than two distinct times."""
    if len(samples) < 2:
        return None
    mt = statistics.mean(t for t, _ in samples)
    mv = statistics.mean(v for _, v in samples)
    den = sum((t - mt) ** 2 for t, _ in samples)
    if den == 0:
        return None
    return sum((t - mt) * (v - mv) for t, v in samples) / den * 3600.0


def _r(x, nd=3):
    return None if x is None else round(x, nd)


def analyse_fault(f, sets, lines, next_start, cfg):
    """The figures of one scheduled fault (f with start / end set)."""
    timeout = cfg["bms_timeout_s"]
    start, end = f["start"], f["end"]
    window = [s for s in sets if start <= s["t"] < next_start]
    # a set without its 0x351 or 0x359 (cut off at the end of the run) counts neither way
    bad = [s for s in window if s["kind"] in ("safe", "other")]
    out = {"label": f["label"], "fault": f["fault"], "at_s": f["at"], "duration_s": f["duration"],
           "expect": expectation(f["fault"], f["duration"], cfg), "frame_sets": len(window),
           "stayed_normal": not bad, "time_to_safe_s": None, "recovery_s": None, "limits_back_s": None,
           "unsafe_frame_sets": 0}
    safe = [s for s in bad if s["kind"] == "safe"]
    if safe:
        out["time_to_safe_s"] = _r(safe[0]["t"] - start)
    # recovery: the frames leave the safe state (the communication-fault bit clears: fresh data)
    # for good; limits back: normal frame sets again for good (after the hold and a ramp step)
    after = max([end] + [s["t"] for s in window if s["comm_fault"]])
    rec = [s for s in window if s["comm_fault"] is False and s["t"] > after]
    if rec:
        out["recovery_s"] = _r(rec[0]["t"] - end)
    after = max([end] + [s["t"] for s in bad])
    back = [s for s in window if s["kind"] == "normal" and s["t"] > after]
    if back:
        out["limits_back_s"] = _r(back[0]["t"] - end)
    if f["fault"] in NO_DATA_FAULTS:
        limit = start + IN_FLIGHT_S + timeout
        out["unsafe_frame_sets"] = sum(1 for s in window if limit < s["t"] <= end
                                       and ((s["ccl_a"] or 0) > 0 or (s["dcl_a"] or 0) > 0))
    if f["fault"] == INVERTER:
        silent = [t for t, _, text in lines if start <= t < next_start and INV_SILENT_TEXT in text]
        back = [t for t, _, text in lines if end <= t < next_start and INV_BACK_TEXT in text]
        out["inverter_silent_event_s"] = _r(silent[0] - start) if silent else None
        out["inverter_back_event_s"] = _r(back[0] - end) if back else None
    return out


def analyse(rec, cfg):
    """The report (a dict, JSON-ready) of a run record."""
    ready = rec["ready"]
    frames = rec["frames"]
    sets = frame_sets(frames)
    lines = rec["lines"]
    failures = []
    warnings = []
    if rec.get("error"):
        failures.append(rec["error"])
    rep = {"first_frame_set_s": _r(sets[0]["first"]) if sets else None,
           "startup_s": _r(ready), "soak_s": _r(rec["end"] - ready) if ready is not None else None,
           "frames": len(frames), "frame_sets": len(sets),
           "incomplete_frame_sets": sum(1 for s in sets if not s["complete"])}
    t351 = [t for t, i, _ in frames if i == ID_LIMITS]
    iv = [(b - a) * 1000.0 for a, b in zip(t351, t351[1:], strict=False)]
    rep["cadence_ms"] = ({"intervals": len(iv), "mean": _r(statistics.mean(iv), 1),
                          "stdev": _r(statistics.stdev(iv), 1) if len(iv) > 1 else None,
                          "min": _r(min(iv), 1), "max": _r(max(iv), 1), "p99": _r(percentile(iv, 99), 1)}
                         if iv else None)
    gaps = [(b["first"] - a["last"], a["last"]) for a, b in zip(sets, sets[1:], strict=False)]
    if gaps:
        g, at = max(gaps)
        rep["longest_gap_s"] = {"gap": _r(g), "after_s": _r(at - (ready or 0.0), 1)}
    else:
        rep["longest_gap_s"] = None
    faults = []
    sched = [f for f in rec["schedule"] if "start" in f]
    run_end = rec["end"] if rec["end"] is not None else (frames[-1][0] if frames else 0.0)
    for k, f in enumerate(sched):
        nxt = sched[k + 1]["start"] if k + 1 < len(sched) else run_end + 1.0
        a = analyse_fault(f, sets, lines, nxt, cfg)
        faults.append(a)
        if f["start"] >= run_end:
            continue
        name = "%s at %.1f s" % (a["label"], a["at_s"])
        if a["unsafe_frame_sets"]:
            failures.append("%s: %d frame set(s) with CCL/DCL > 0 after the stale timeout"
                            % (name, a["unsafe_frame_sets"]))
        if a["expect"] == "safe":
            if a["time_to_safe_s"] is None:
                failures.append("%s: never reached the safe state" % name)
            elif a["time_to_safe_s"] > cfg["bms_timeout_s"] + SAFE_SLACK_S:
                warnings.append("%s: safe state after %.2f s (limit %.1f s)" % (
                    name, a["time_to_safe_s"], cfg["bms_timeout_s"] + SAFE_SLACK_S))
        elif a["expect"] == "normal" and not a["stayed_normal"]:
            warnings.append("%s: did not stay normal" % name)
        if a["recovery_s"] is None:
            failures.append("%s: no frame set without the communication fault after it" % name)
        elif not a["stayed_normal"] and a["recovery_s"] > RECOVERY_LIMIT_S:
            warnings.append("%s: recovered after %.2f s (limit %.1f s)" % (name, a["recovery_s"], RECOVERY_LIMIT_S))
        if a["limits_back_s"] is None:
            failures.append("%s: no normal frame set after it (the limits never came back)" % name)
        elif not a["stayed_normal"]:
            if a["limits_back_s"] > limits_back_limit(cfg):
                warnings.append("%s: limits back after %.2f s (limit %.1f s)" % (
                    name, a["limits_back_s"], limits_back_limit(cfg)))
            if a["time_to_safe_s"] is not None and a["recovery_s"] is not None \
                    and a["limits_back_s"] - a["recovery_s"] < cfg["hold_s"] - HOLD_SHORT_S:
                warnings.append("%s: limits back %.2f s after the data (hold_s %d s)" % (
                    name, a["limits_back_s"] - a["recovery_s"], cfg["hold_s"]))
        if a["fault"] == INVERTER and a.get("inverter_silent_event_s") is None:
            warnings.append("%s: the firmware reported no silent inverter" % name)
    rep["faults"] = faults
    rep["unsafe_frame_sets"] = sum(a["unsafe_frame_sets"] for a in faults)

    # heap and restarts from the console
    last_boot = rec.get("boots", 1) - 1
    heap = [(t, int(m.group(1)), b) for t, b, text in lines for m in [HEAP_RE.search(text)] if m]
    series = [(t - (ready or 0.0), v) for t, v, b in heap if b == last_boot]
    rep["heap"] = {"samples": len(heap), "min_bytes": min(v for _, v, _ in heap) if heap else None,
                   "max_bytes": max(v for _, v, _ in heap) if heap else None,
                   "first_bytes": series[0][1] if series else None, "last_bytes": series[-1][1] if series else None,
                   "trend_bytes_per_hour": _r(slope_per_hour(series), 1),
                   "series": [[_r(t, 1), v] for t, v in series]}
    if not heap:
        warnings.append("no free heap figure on the console")
    restarts = [int(m.group(1)) for _, _, text in lines for m in [RESTARTS_RE.search(text)] if m]
    crashes = sum(1 for _, _, text in lines if CRASH_TEXT in text)
    rep["task_restarts"] = max(crashes, restarts[-1] if restarts else 0)
    rep["watchdog_resets"] = max(len(rec["resets"]), sum(1 for _, _, text in lines if WDT_TEXT in text))
    rep["watchdog_reset_times_s"] = [_r(t - (ready or 0.0), 1) for t in rec["resets"]]
    if rep["task_restarts"]:
        failures.append("%d task restart(s)" % rep["task_restarts"])
    if rep["watchdog_resets"]:
        failures.append("%d watchdog reset(s)" % rep["watchdog_resets"])
    polls = None
    for t, _boot, text in reversed(lines):
        m = POLLS_RE.search(text)
        if m and (rec.get("final_status") is None or t >= rec["final_status"]):
            polls = dict(zip(("ok", "timeouts", "bad_frames", "exceptions"), map(int, m.groups()), strict=True))
            break
    rep["bms_polls"] = polls
    if polls is None:
        warnings.append("no final BMS poll counters on the console")
    rep["simulator"] = rec.get("sim_stats")
    rep["failures"] = failures
    rep["warnings"] = warnings
    rep["ok"] = not failures
    return rep


# ------------------------------------------------------------------ table

def _fmt(v, unit="", nd=2):
    if v is None:
        return "-"
    return ("%.*f%s" % (nd, v, unit)) if isinstance(v, float) else "%s%s" % (v, unit)


def table(rep, cfg):
    out = []
    c = rep["cadence_ms"]
    rows = [("startup: first frame set / first normal one", "%s / %s (hold_s %d s)" % (
                _fmt(rep["first_frame_set_s"], " s"), _fmt(rep["startup_s"], " s"), cfg["hold_s"])),
            ("soak", "%s, %d frame sets, %d incomplete" % (_fmt(rep["soak_s"], " s", 0), rep["frame_sets"],
                                                           rep["incomplete_frame_sets"]))]
    if c:
        rows.append(("0x351 interval", "mean %.1f / stdev %s / min %.1f / max %.1f / p99 %.1f ms (%d)" % (
            c["mean"], _fmt(c["stdev"], "", 1), c["min"], c["max"], c["p99"], c["intervals"])))
    g = rep["longest_gap_s"]
    if g:
        rows.append(("longest gap between frame sets", "%.3f s (at %.1f s)" % (g["gap"], g["after_s"])))
    rows.append(("unsafe frame sets (must be 0)", str(rep["unsafe_frame_sets"])))
    h = rep["heap"]
    rows.append(("free heap", "min %s, first %s, last %s bytes, trend %s bytes/h (%d samples)" % (
        _fmt(h["min_bytes"]), _fmt(h["first_bytes"]), _fmt(h["last_bytes"]), _fmt(h["trend_bytes_per_hour"], "", 0),
        h["samples"])))
    rows.append(("task restarts / watchdog resets", "%d / %d" % (rep["task_restarts"], rep["watchdog_resets"])))
    p = rep["bms_polls"]
    if p:
        rows.append(("BMS polls (final status)", "ok %d, timeouts %d, bad frames %d, exceptions %d" % (
            p["ok"], p["timeouts"], p["bad_frames"], p["exceptions"])))
    w = max(len(a) for a, _ in rows)
    out.append("soak: gateway firmware in the host simulation (MicroPython unix port, %s simulator, SLCAN), "
               "stale timeout %d s" % (cfg["bms_protocol"], cfg["bms_timeout_s"]))
    out += ["%-*s  %s" % (w, a, b) for a, b in rows]
    out.append("")
    out.append("%-18s %7s %6s %7s  %-13s %9s %9s %8s %6s" % ("fault", "at s", "dur s", "expect", "outcome",
                                                             "to safe s", "recover s", "limits s", "unsafe"))
    for a in rep["faults"]:
        outcome = "stayed normal" if a["stayed_normal"] else ("safe" if a["time_to_safe_s"] is not None else "other")
        extra = ""
        if a["fault"] == INVERTER:
            extra = "  firmware: silent after %s s, back after %s s" % (
                _fmt(a.get("inverter_silent_event_s")), _fmt(a.get("inverter_back_event_s")))
        out.append("%-18s %7.1f %6.2f %7s  %-13s %9s %9s %8s %6d%s" % (
            a["label"], a["at_s"], a["duration_s"], a["expect"], outcome, _fmt(a["time_to_safe_s"]),
            _fmt(a["recovery_s"]), _fmt(a["limits_back_s"]), a["unsafe_frame_sets"], extra))
    for label in ("failures", "warnings"):
        for m in rep[label]:
            out.append("%s: %s" % (label[:-1].upper(), m))
    out.append("result: %s" % ("ok" if rep["ok"] else "FAILED"))
    return "\n".join(out)


# -------------------------------------------------------------------- main

def main(argv=None):
    ap = cli.ArgumentParser(prog="soak.py", description=__doc__.split("\n\n")[0],
                            epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=cli.number(float, 0.5, 1440), default=15.0,
                    help="length of the fault schedule, 0.5..1440 (default 15)")
    ap.add_argument("--seed", type=cli.number(int, what="an integer"), default=1,
                    help="seed of the schedule and the simulator (default 1)")
    ap.add_argument("--json", metavar="OUT.json", help="write the report here as JSON")
    ap.add_argument("--candump", metavar="OUT.log", help="write every received frame here (candump -l format)")
    ap.add_argument("--log", metavar="FIRMWARE.log", help="write the firmware console here (host time first)")
    ap.add_argument("--config", metavar="CONFIG.json", help="gateway.json for the firmware (default: the defaults)")
    ap.add_argument("--state", metavar="STATE.json", help="battery state (default: the simulator's 16S LFP pack)")
    ap.add_argument("-v", "--verbose", action="store_true", help="show the firmware console live (stderr)")
    args = ap.parse_args(argv)
    cfg_raw = {}
    if args.config:
        try:
            with open(args.config) as f:
                cfg_raw = json.load(f)
        except (OSError, ValueError) as e:
            ap.error("--config: %s" % e)
        if not isinstance(cfg_raw, dict):
            ap.error("--config: not a JSON object")
    cfg = gwconfig.validate(cfg_raw, [])  # what the firmware will use
    if link_loss_mode(cfg) != "zeros":
        ap.error("--config: the soak needs link_loss zeros (it looks for the safe frame sets)")
    try:
        state = state_json.load(args.state) if args.state else {}
        jkbms_sim.JkBmsSim(state=state, protocol=cfg["bms_protocol"], address=cfg["bms_address"])
    except (OSError, ValueError) as e:
        ap.error("--state: %s" % e)
    outs = {}
    for opt, path in (("--json", args.json), ("--candump", args.candump), ("--log", args.log)):
        if path:  # a bad path is a usage error now, not a failure after 15 minutes
            try:
                outs[opt] = open(path, "w")
            except OSError as e:
                for f in outs.values():
                    f.close()
                    os.remove(f.name)
                ap.error("%s: %s" % (opt, e))
    tmp = tempfile.mkdtemp(prefix="gw-soak-")
    cfg_path = os.path.join(tmp, "gateway.json")
    with open(cfg_path, "w") as f:
        json.dump(cfg_raw, f)
    started = datetime.datetime.now().astimezone()
    rec = run(args.minutes * 60.0, args.seed, cfg, state, cfg_path, args.verbose)
    rep = analyse(rec, cfg)
    rep = {"tool": "soak", "date": started.isoformat(timespec="seconds"),
           "command": " ".join(["tools/soak.py"] + (sys.argv[1:] if argv is None else list(argv))),
           "minutes": args.minutes, "seed": args.seed,
           "config": {k: cfg[k] for k in ("bms_protocol", "bms_poll_ms", "bms_reply_ms", "bms_retries",
                                          "bms_timeout_s", "can_period_ms", "inverter_timeout_s", "link_loss",
                                          "hold_s", "ramp_a_s")},
           "limits": {"time_to_safe_s": cfg["bms_timeout_s"] + SAFE_SLACK_S, "recovery_s": RECOVERY_LIMIT_S,
                      "limits_back_s": limits_back_limit(cfg)},
           **rep}
    # the values in force: "auto" / 0 resolved to the protocol's own (docs/inverter-can.md "Safe defaults")
    rep["config"]["link_loss"] = link_loss_mode(cfg)
    rep["config"]["inverter_timeout_s"] = cfg["inverter_timeout_s"] or protocols.load(cfg["protocol"]).SILENT_S
    ready = rec["ready"] or 0.0
    if "--candump" in outs:
        with outs["--candump"] as f:
            for t, can_id, data in rec["frames"]:
                f.write("(%.6f) can0 %03X#%s\n" % (t - ready, can_id, data.hex().upper()))
    if "--log" in outs:
        with outs["--log"] as f:
            for t, boot, text in rec["lines"]:
                f.write("%9.3f %d %s\n" % (t - ready, boot, text))
    if "--json" in outs:
        with outs["--json"] as f:
            json.dump(rep, f, indent=1)
            f.write("\n")
    print(table(rep, cfg))
    if rec.get("error") and rec["lines"]:
        sys.stderr.write("soak: the firmware's last lines:\n" + "\n".join(x[2] for x in rec["lines"][-20:]) + "\n")
    return 0 if rep["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
