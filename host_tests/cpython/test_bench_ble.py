"""tools/bench_ble.py, the BLE source benchmark (make bench): a short run under CPython (both parts, a few
frames on the simulated radio) and under the MicroPython unix port (the receive path: allocation-free),
the format and sanity of the figures; --help and the one-line usage errors. Part (b) needs the vendor
aioble (host/fakeble/env.py): skipped with the reason when it is absent. ~25 s."""
import re
import subprocess
import sys
from pathlib import Path

import pytest
from fakeble import env

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / "tools" / "bench_ble.py"
MICROPYTHON = ROOT / ".venv" / "bin" / "micropython"

PATH_LINE = re.compile(r"^  (MTU 23 |MTU 247) \(.*\)\s+([\d.]+) us/frame \(drain (-?[\d.]+) us\)\s+put\s+([\d.]+) "
                       r"us/notification\s+heap\s+([\d.]+) bytes/frame\s+allocation-free: (yes|no|n/a \(CPython\))$")
AGE_LINE = re.compile(r"^  (notification -> CAN|notification -> snapshot|snapshot -> CAN)(, last \d+)?\s+"
                      r"min\s+(-?[\d.]+)\s+mean\s+(-?[\d.]+)\s+max\s+(-?[\d.]+) ms$")
COUNT_LINE = re.compile(r"^  (\d+) bursts with a new frame, (\d+) without .*, (\d+) frames no burst carried; "
                        r"link: (\d+) connect\(s\), (\d+) lost notifications, (\d+) decode errors$")


def run(*args, exe=sys.executable, timeout=45):
    return subprocess.run([str(exe), str(TOOL), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=str(ROOT))


def path_figures(out):
    rows = {}
    for line in out.splitlines():
        m = PATH_LINE.match(line)
        if m:
            rows[m.group(1).strip()] = (float(m.group(2)), float(m.group(3)), float(m.group(4)),
                                        float(m.group(5)), m.group(6))
    assert set(rows) == {"MTU 23", "MTU 247"}, out
    for frame_us, drain_us, put_us, _, _ in rows.values():
        assert 0 < put_us < frame_us < 100000 and 0 < drain_us < frame_us, out
    return rows


@pytest.fixture(scope="module")
def cpython_run():
    r = run(30, 3)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def test_receive_path_figures_under_cpython(cpython_run):
    assert cpython_run.startswith("(a) BLE receive path, one 300-byte JK02_32S cell-info frame")
    assert "(cpython " in cpython_run and "30 rounds" in cpython_run
    for row in path_figures(cpython_run).values():
        assert row[4] == "n/a (CPython)"


def test_data_age_on_the_simulated_radio(cpython_run):
    why = env.reason()
    if why is not None:
        assert "(b) data age: SKIPPED: " + why in cpython_run
        pytest.skip(why)
    lines = cpython_run.splitlines()
    head = [x for x in lines if x.startswith("(b) data age")]
    assert len(head) == 1 and "MTU 247" in head[0] and "CAN every 1000 ms" in head[0], cpython_run
    age = {}
    for line in lines:
        m = AGE_LINE.match(line)
        if m:
            age[m.group(1) + (m.group(2) or "")] = tuple(float(m.group(i)) for i in (3, 4, 5))
    assert len(age) == 4, cpython_run
    total, dec, wait = age["notification -> CAN"], age["notification -> snapshot"], age["snapshot -> CAN"]
    for lo, mean, hi in age.values():
        assert 0 <= lo <= mean <= hi, cpython_run
    # decode follows within the source's 20 ms drain tick (+ scheduling); the burst within a CAN period
    assert dec[2] < 200 and total[2] < 1300, cpython_run
    assert abs(total[1] - (dec[1] + wait[1])) < 1, cpython_run
    counts = [COUNT_LINE.match(x) for x in lines]
    m = [c for c in counts if c][0]
    assert int(m.group(1)) >= 1 and int(m.group(4)) == 1 and m.group(5) == "0" and m.group(6) == "0", cpython_run


@pytest.mark.skipif(not MICROPYTHON.exists(), reason="no MicroPython unix port at .venv/bin/micropython")
def test_receive_path_is_allocation_free_under_micropython():
    r = run(50, 0, exe=MICROPYTHON)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "(micropython " in r.stdout and "(b) data age" not in r.stdout  # FRAMES 0: part (a) only
    for _, _, _, heap, free in path_figures(r.stdout).values():
        assert heap == 0.0 and free == "yes", r.stdout


def test_help_and_usage_errors():
    r = run("--help")
    assert r.returncode == 0 and r.stdout.startswith("Benchmark of the BLE source")
    assert "usage: bench_ble.py" in r.stdout
    for args, why in (((0,), "ROUNDS must be >= 1"), (("x",), "ROUNDS must be a whole number"),
                      ((10, "y"), "FRAMES must be a whole number"), ((1, 2, 3), "too many arguments"),
                      (("--fast",), "unknown option")):
        r = run(*args)
        assert r.returncode == 2 and r.stdout == "", (args, r.stdout)
        assert r.stderr.startswith("bench_ble: " + why) and r.stderr.count("\n") == 1, (args, r.stderr)
