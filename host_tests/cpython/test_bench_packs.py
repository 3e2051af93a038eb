"""tools/bench_packs.py, the several-packs benchmark (make bench): one short run (1 and 3 packs at one gap, a
bank of 3 in listener mode, the heap part) checks that the tool runs, that its tables and JSON are well
formed and that the figures are plausible (a cycle of 3 packs is longer than one pack's poll, the oldest
pack's data is never younger than the newest, a listener never transmits). No timing thresholds: the
figures themselves are what the benchmark measures. --help and the one-line usage errors. ~20 s."""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / "tools" / "bench_packs.py"
MICROPYTHON = ROOT / ".venv" / "bin" / "micropython"

MASTER_ROW = re.compile(r"^\s+(\d+)(\*?)\s+(\d+)\s+(\d+) / (\d+)\s+(\d+|-)\s+(\d+) / (\d+)\s+(\d+) / (\d+)\s+"
                        r"(yes|no .*)$")
LISTEN_ROW = re.compile(r"^\s+(\d+)\s+(\d+) / (\d+)\s+(\d+) \((\d+)\)\s+(\d+) / (\d+)\s+(\d+) bytes$")
HEAP_ROW = re.compile(r"^\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+ \(poll \d+\)|-)$")
LOCK_ROW = re.compile(r"^    (0|allocates \(.*\))\s+(\S.*)$")


def run(*args, exe=sys.executable, timeout=240):
    return subprocess.run([str(exe), str(TOOL), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=str(ROOT))


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench-packs") / "figures.json"
    r = run("--packs", "1,3", "--gaps", "100", "--cycles", "3", "--warm", "1", "--listen-packs", "3",
            "--listen-seconds", "3", "--heap-cycles", "3", "--json", out)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout, json.loads(out.read_text())


def _section(text, head):
    lines = text.splitlines()
    start = [i for i, x in enumerate(lines) if x.startswith(head)]
    assert len(start) == 1, text
    rest = lines[start[0] + 2:]
    end = [i for i, x in enumerate(rest) if not x.strip()[:1].isdigit()]  # the rows start with the count
    return lines[start[0]], rest[:end[0]] if end else rest


def test_master_table_and_figures(short_run):
    text, fig = short_run
    head, rows = _section(text, "(a) master role, 115200 baud")
    assert "bms_poll_ms 1000" in head
    parsed = [MASTER_ROW.match(x) for x in rows]
    assert len(parsed) == 2 and all(parsed), text
    assert [(m.group(1), m.group(2), m.group(3)) for m in parsed] == [("1", "*", "100"), ("3", "", "100")]
    assert "one pack: the single-pack path" in text
    by_n = {r["packs"]: r for r in fig["master"]}
    assert set(by_n) == {1, 3}
    for n, r in by_n.items():
        c, old, new = r["cycle_ms"], r["oldest_ms"], r["newest_ms"]
        assert r["gap_ms"] == 100 and c["n"] == 3 and r["online_min"] == n, r
        assert 0 < c["min"] <= c["median"] <= c["max"], r
        assert old["n"] == new["n"] >= 1 and 0 <= new["median"] <= old["median"] and new["max"] <= old["max"], r
        assert r["polls_ok"] > 0, r
    # one table row per JSON entry, same figures
    for m in parsed:
        r = by_n[int(m.group(1))]
        assert (int(m.group(4)), int(m.group(5))) == (round(r["cycle_ms"]["median"]), round(r["cycle_ms"]["max"]))
        assert (m.group(11) == "yes") == (r["cycle_ms"]["max"] <= 1000)
    # 3 packs: three polls and two gaps of 100 ms, against one poll
    assert by_n[3]["cycle_ms"]["median"] > by_n[1]["cycle_ms"]["median"] + 2 * 100
    assert by_n[1]["single_path"] is True and by_n[3]["single_path"] is False


def test_listener_table_and_figures(short_run):
    text, fig = short_run
    _, rows = _section(text, "(b) listener role, 115200 baud")
    assert len(rows) == 1 and LISTEN_ROW.match(rows[0]), text
    (r,) = fig["listen"]
    assert r["packs"] == 3 and sorted(r["per_pack"]) == ["0", "1", "2"], r
    assert r["online_min"] == 3
    assert r["gateway_tx_bytes"] == 0  # the listener never transmits
    for s in r["per_pack"].values():
        assert 0 <= s["min"] <= s["median"] <= s["max"] and s["n"] >= 1, r
    assert r["age_ms"]["max"] == max(s["max"] for s in r["per_pack"].values())
    assert r["oldest_ms"]["max"] <= r["age_ms"]["max"]


def test_heap_table_and_figures(short_run):
    text, fig = short_run
    _, rows = _section(text, "(c) heap per cycle")
    parsed = [HEAP_ROW.match(x) for x in rows]
    assert len(parsed) == 2 and all(parsed), text
    h = fig["heap"]
    per = {int(k): v for k, v in h["per_count"].items()}
    assert set(per) == {1, 3}
    # every pack's poll is part of the cycle: more packs, more objects per cycle
    assert per[3]["cycle"] > per[1]["cycle"] >= per[1]["poll"] >= 0, per
    locks = [x for x in text.splitlines() if LOCK_ROW.match(x)]
    labels = [LOCK_ROW.match(x).group(2) for x in locks]
    assert len(labels) == 6 and labels[0] == "Battery.update()", text
    assert labels[-1].startswith("JkListener.read_once() over a master period")
    assert int(re.search(r"\((\d+) frames attributed\)", labels[-1]).group(1)) > 0
    assert len(h["sizes"]) >= 6 and all(int(v) > 0 for v, _ in h["sizes"]), h


def test_help_and_usage_errors():
    r = run("--help", timeout=30)
    assert r.returncode == 0 and "usage" in r.stdout.lower() and "bench_packs.py" in r.stdout
    for args, word in ((("--packs", "16"), "1..15"), (("--gaps", "5"), "10..1000"),
                       (("--listen-packs", "17"), "1..16"), (("--packs", "x"), "comma-separated"),
                       (("--cycles", "1"), ">= 2")):
        r = run(*args, timeout=30)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("bench_packs:") and word in lines[0], (args, r.stderr)
        assert "Traceback" not in r.stderr and r.stdout == ""


def test_under_micropython_it_is_only_the_firmware_side():
    r = run(exe=MICROPYTHON, timeout=30)
    assert r.returncode == 2 and "run the tool with CPython" in r.stderr, r.stdout + r.stderr
