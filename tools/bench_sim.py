#!/usr/bin/env python3
"""Timing and memory figures of the whole gateway firmware in the host simulation.

  python tools/bench_sim.py [--changes 20] [--seed N] [--can-cycles 1000] [--polls 50]

(a) data age at the CAN output: the real firmware (host/sim_firmware.py under
    the MicroPython unix port) polls tools/jkbms_sim.py (JK-PB, default
    settings); the bench changes the pack current every 1.1-1.9 s (random, so
    that the changes fall at every phase of the poll and CAN cycles) and
    records when the simulator first SENT a status reply carrying each new
    value (JkBmsSim on_reply hook) and when the first CAN 0x356 frame carrying
    it arrived through python-can (SLCAN over TCP, 127.0.0.1). Both times come
    from this process's monotonic clock. Expect roughly the reply transfer +
    decode plus the wait for the next 1 s CAN burst: ~0..1000 ms.
(b) cadence: the intervals between consecutive 0x351 frames of the same run,
    as received on the host (host scheduling jitter included). (a) and (b)
    do not depend on the current limits: the run spans the charge policy's
    hold after the first data (0 A for hold_s) and its ramp, and every frame
    set carries the pack's values all the same.
(c) heap bytes per steady-state cycle under the MicroPython unix port
    (tools/bench_cycle.py, gc disabled, gc.mem_alloc() growth / cycles): one
    CAN cycle (CanTx.burst = limits + six frames, CanTx.receive of a 0x305),
    and one BmsPoller.poll_once() per protocol against an in-memory UART that
    answers with the simulator's own replies (frames from tools/jkframe_build).

Prints a compact table. Exit 1 if a part could not be measured.
"""
import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for _p in (HERE, os.path.join(ROOT, "firmware", "lib"), ROOT):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import jkbms_sim  # noqa: E402
import simulate  # noqa: E402  (free_port, Firmware, Inverter)

from jkbms import cellinfo, nw, pb_modbus  # noqa: E402
from jkbms import frame as J  # noqa: E402
from jkbms import settings as jk_settings  # noqa: E402
from modbus import rtu  # noqa: E402
from pack.snapshot import PackSnapshot  # noqa: E402
from tools import cli  # noqa: E402

BASE_CURRENT_A = 20.5


# ----------------------------------------------------------------- (a) + (b)

def _s16(d, o):
    v = d[o] | d[o + 1] << 8
    return v - 0x10000 if v & 0x8000 else v


def run_firmware(changes, seed, verbose=False):
    """Run the firmware against the simulator while changing the current.
    Returns (ages_ms, missed, intervals_ms, firmware_rc_text)."""
    rng = random.Random(seed)
    values = []  # new currents, 0.1 A apart from anything served before
    for k in range(changes):
        values.append(round(BASE_CURRENT_A + 0.7 * (k + 1) * (1 if k % 2 == 0 else -1), 1))
    served = {}  # current in mA -> first time a status reply carrying it was sent

    def on_reply(t, req, reply):
        if len(reply) >= J.FRAME_LEN and reply[:4] == J.HEADER and reply[4] == J.TYPE_CELL_INFO:
            snap = PackSnapshot()
            cellinfo.decode(reply, 6, J.LAYOUT_JK02_32S, snap)
            served.setdefault(snap.current_ma, t)

    sim = jkbms_sim.JkBmsSim(state={"battery_current_a": BASE_CURRENT_A}, protocol="jk-pb", seed=seed,
                             on_reply=on_reply).start()
    tmp = tempfile.mkdtemp(prefix="gw-bench-")
    cfg_path = os.path.join(tmp, "gateway.json")
    with open(cfg_path, "w") as f:
        json.dump({}, f)  # the firmware defaults
    can_port = simulate.free_port()
    budget = 8 + changes * 2.2
    fw = simulate.Firmware(sim.port, can_port, cfg_path, budget + 5)
    inv = None
    seen = {}  # current in 0.1 A -> first CAN arrival
    t351 = []
    try:
        t0 = time.monotonic()
        inv = simulate.Inverter(can_port, t0 + 10)
        deadline = t0 + budget
        next_hb = t0
        next_change = None
        k = 0
        last_change = None
        while time.monotonic() < deadline:
            now = time.monotonic()
            fw.check_running()
            if now >= next_hb:
                inv.heartbeat()
                next_hb += 1.0
            if next_change is not None and k < changes and now >= next_change:
                sim.set_state({"battery_current_a": values[k]})
                k += 1
                last_change = now
                next_change = now + rng.uniform(1.1, 1.9)
            if k == changes and (all(round(v * 10) in seen for v in values) or now - last_change > 4.0):
                break
            msg = inv.bus.recv(timeout=0.02)
            if msg is None:
                continue
            t = time.monotonic()
            data = bytes(msg.data)
            if msg.arbitration_id == 0x351:
                t351.append(t)
            elif msg.arbitration_id == 0x356:
                seen.setdefault(_s16(data, 2), t)
                if next_change is None:
                    next_change = t + 0.5  # data flows: start changing
    finally:
        if inv is not None:
            inv.close()
        fw.stop()
        sim.stop()
    if verbose:
        sys.stderr.write("".join(fw.lines))
    ages = []
    missed = 0
    for v in values:
        s, c = served.get(int(round(v * 1000))), seen.get(int(round(v * 10)))
        if s is None or c is None:
            missed += 1
        else:
            ages.append((c - s) * 1000.0)
    intervals = [(b - a) * 1000.0 for a, b in zip(t351, t351[1:], strict=False)]
    return ages, missed, intervals


# ---------------------------------------------------------------------- (c)

def write_exchanges(path):
    """Requests as the firmware's BmsPoller builds them, with the simulator's
    replies, for tools/bench_cycle.py."""
    lines = []
    buf = bytearray(16)
    pb = jkbms_sim.JkBmsSim(protocol="jk-pb")
    for reg in (pb_modbus.TRIGGER_STATUS, pb_modbus.TRIGGER_SETTINGS, pb_modbus.TRIGGER_ABOUT):
        n = pb_modbus.build_trigger(buf, 1, reg)
        req = bytes(buf[:n])
        lines.append(("trigger", req, pb.reply_to(req)))
    blocks = ((pb_modbus.STATUS_BASE, cellinfo.NEED_32S), (pb_modbus.SETTINGS_BASE, jk_settings.BLOCK_BYTES))
    for base, nbytes in blocks:
        for reg, count in pb_modbus.read_plan(base, nbytes):
            n = rtu.build_read(buf, 1, reg, count)
            req = bytes(buf[:n])
            lines.append(("fc03", req, pb.reply_to(req)))
    req = bytes(nw.READ_ALL)
    lines.append(("nw", req, jkbms_sim.JkBmsSim(protocol="jk-nw").reply_to(req)))
    with open(path, "w") as f:
        for mode, req, reply in lines:
            if reply is None:
                raise RuntimeError("the simulator does not answer %s" % req.hex())
            f.write("%s %s %s\n" % (mode, req.hex(), reply.hex()))


def run_cycle_bench(can_cycles, polls):
    tmp = tempfile.mkdtemp(prefix="gw-bench-")
    path = os.path.join(tmp, "exchanges.txt")
    write_exchanges(path)
    r = subprocess.run([simulate.micropython(), "-X", "heapsize=4m", os.path.join(HERE, "bench_cycle.py"), path,
                        str(can_cycles), str(polls)], capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        raise RuntimeError("bench_cycle.py failed: %s%s" % (r.stdout, r.stderr))
    out = {}
    for line in r.stdout.splitlines():
        name, *fields = line.split()
        out[name] = {k: float(v) for k, v in (x.split("=") for x in fields)}
    return out


# --------------------------------------------------------------------- table

def main(argv=None):
    ap = cli.ArgumentParser(prog="bench_sim.py", description=__doc__.split("\n\n")[0],
                            epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--changes", type=cli.number(int, 1, what="a whole number"), default=20,
                    help="current changes timed in (a) (default 20)")
    ap.add_argument("--seed", type=cli.number(int, what="an integer"), default=1,
                    help="random seed of the change times")
    ap.add_argument("--can-cycles", type=cli.number(int, 1, what="a whole number"), default=1000,
                    help="CAN cycles measured in (c)")
    ap.add_argument("--polls", type=cli.number(int, 1, what="a whole number"), default=50,
                    help="BMS polls measured in (c) (FC03: a fifth)")
    ap.add_argument("-v", "--verbose", action="store_true", help="show the firmware console of (a)")
    args = ap.parse_args(argv)

    rows = []
    rc = 0
    try:
        ages, missed, intervals = run_firmware(args.changes, args.seed, args.verbose)
        if ages:
            rows.append(("(a) data age: BMS reply sent -> first CAN frame with it",
                         "min %.0f / median %.0f / max %.0f ms" % (min(ages), statistics.median(ages), max(ages)),
                         "%d changes%s" % (len(ages), ", %d not seen" % missed if missed else "")))
        else:
            rows.append(("(a) data age", "no change was seen on CAN", ""))
            rc = 1
        if len(intervals) >= 2:
            rows.append(("(b) interval between 0x351 frames",
                         "mean %.1f / stdev %.1f / min %.1f / max %.1f ms" % (
                             statistics.mean(intervals), statistics.stdev(intervals), min(intervals),
                             max(intervals)),
                         "%d intervals" % len(intervals)))
        else:
            rc = 1
    except RuntimeError as e:
        print("bench_sim: %s" % e, file=sys.stderr)
        rc = 1
    try:
        c = run_cycle_bench(args.can_cycles, args.polls)
        can = c["can"]
        rows.append(("(c) heap per CAN cycle (limits + 6-frame burst + 0x305 rx)",
                     "%.1f bytes" % can["bytes"], "%d cycles, %d us each" % (can["cycles"], can["us"])))
        names = {"trigger": "JK-PB FC10 trigger (default)", "fc03": "JK-PB FC03 blocks", "nw": "4E 57 read-all"}
        for mode in ("trigger", "fc03", "nw"):
            p = c.get("poll-" + mode)
            if p:
                rows.append(("    heap per BMS poll_once(), %s" % names[mode], "%.1f bytes" % p["bytes"],
                             "%d polls, %d ok" % (p["cycles"], p["ok"])))
    except (RuntimeError, subprocess.TimeoutExpired, KeyError, ValueError) as e:
        print("bench_sim: %s" % e, file=sys.stderr)
        rc = 1

    rows.insert(0, ("figure", "value", "over"))
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    print("gateway firmware in the host simulation (MicroPython unix port, JK-PB simulator, SLCAN)")
    for a, b, note in rows:
        print("%-*s  %-*s  %s" % (w0, a, w1, b, note))
    return rc


if __name__ == "__main__":
    sys.exit(main())
