"""Every host tool in tools/ as a command: --help works, a bad argument is a one-line reason on stderr
with exit status 2 and no traceback (under CPython, and under the MicroPython unix port for the tools
that run there); the candump logs the tools write are read by python-can's can.LogReader."""
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import can
import pytest

ROOT = Path(__file__).resolve().parents[2]
TOOLS_DIR = ROOT / "tools"
MICROPYTHON = Path(sys.executable).parent / "micropython"
# every script in tools/ (a module without a __main__ block is a library: state_json, cli)
TOOLS = sorted(p.name for p in TOOLS_DIR.glob("*.py") if 'if __name__ == "__main__":' in p.read_text())
MPY_TOOLS = ("bench.py", "bench_cycle.py", "bench_ble.py")  # also run under the MicroPython unix port
RUNS = [(t, "cpython") for t in TOOLS] + [(t, "micropython") for t in TOOLS if t in MPY_TOOLS]
IDS = [0x35E, 0x351, 0x355, 0x356, 0x359, 0x35C]


def tool(name, *args, runtime="cpython", timeout=60, cwd=ROOT):
    exe = str(MICROPYTHON) if runtime == "micropython" else sys.executable
    return subprocess.run([exe, str(TOOLS_DIR / name), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=str(cwd))


def check_usage_error(r, name, *words):
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith(name[:-3] + ":"), lines[0]
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


def test_the_tools_are_found():
    assert set(TOOLS) == {"bench.py", "bench_cycle.py", "bench_sim.py", "can_frames.py", "can_watch.py", "jk_decode.py",
                          "jkbms_sim.py", "jkframe_build.py", "simulate.py", "soak.py", "bench_flood.py",
                          "closed_loop.py", "bench_ble.py", "bench_packs.py", "ha_screenshot.py", "web_screenshot.py"}
    assert MICROPYTHON.exists()


@pytest.mark.parametrize("name,runtime", RUNS, ids=["%s-%s" % r for r in RUNS])
def test_help(name, runtime):
    r = tool(name, "--help", runtime=runtime)
    assert r.returncode == 0, r.stderr
    assert "usage" in r.stdout.lower() and name in r.stdout
    assert r.stderr == ""


@pytest.mark.parametrize("name,runtime", RUNS, ids=["%s-%s" % r for r in RUNS])
def test_unknown_option(name, runtime):
    r = tool(name, "--no-such-option", runtime=runtime)
    line = check_usage_error(r, name)
    # named, unless a missing required argument is reported first
    assert "--no-such-option" in line or "required" in line, line
    assert r.stdout == ""


# ---------------------------------------------------------------- the known bad arguments, one by one
@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    sample = d / "sample.hex"
    r = tool("jkframe_build.py", "--sample")
    assert r.returncode == 0
    sample.write_text(r.stdout)
    state = d / "state.jsonl"  # jk_decode's output: a cell-info and a settings object
    r = subprocess.run([sys.executable, str(TOOLS_DIR / "jk_decode.py")], input=r.stdout, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 2
    state.write_text(r.stdout)
    no_cells = d / "no_cells.json"
    no_cells.write_text(json.dumps({"cell_voltages_v": []}))
    array = d / "array.json"
    array.write_text(json.dumps([{"soc_percent": 5}]))
    return {"dir": d, "sample": sample, "state": state, "no_cells": no_cells, "array": array}


# (tool, arguments ({name} = a file of the fixture), words the one line must contain)
BAD = [
    ("jkbms_sim.py", ["--port", "99999"], ["--port", "0..65535"]),
    ("jkbms_sim.py", ["--port", "http"], ["--port", "TCP port"]),
    ("jkbms_sim.py", ["--fault", "bms-silent@x"], ["NAME@SECONDS[:DURATION]"]),
    ("jkbms_sim.py", ["--fault", "bms-silent@1:x"], ["NAME@SECONDS[:DURATION]"]),
    ("jkbms_sim.py", ["--fault", "bms-wobbly@1"], ["unknown fault", "bms-partial"]),
    ("jkbms_sim.py", ["--delay-ms", "fast"], ["--delay-ms", "MIN[:MAX]"]),
    ("jkbms_sim.py", ["--address", "0"], ["1..247"]),
    ("jkbms_sim.py", ["--state", "{array}"], ["JSON object", "array"]),
    ("jkbms_sim.py", ["--state", "{dir}/missing.json"], ["No such file"]),
    ("jkbms_sim.py", ["--pty-link", "{dir}/tty"], ["--pty-link needs --pty"]),
    ("simulate.py", ["--state", "{state}", "--candump", "/missing/dir/x.log"], ["--candump", "No such file"]),
    ("simulate.py", ["--state", "{state}", "--candump", "{dir}/x.log", "--log", "/missing/dir/fw.log"],
     ["--log", "No such file"]),
    ("simulate.py", ["--state", "{state}", "--candump", "{dir}/x.log", "--fault", "bms-silent@x"],
     ["NAME@SECONDS[:DURATION]", "bms-silent@8:5"]),
    ("simulate.py", ["--state", "{state}", "--candump", "{dir}/x.log", "--fault", "bms-x@1"],
     ["unknown fault", "bms-silent", "inverter-silent"]),
    ("simulate.py", ["--state", "{state}", "--candump", "{dir}/x.log", "--fault", "inverter-silent@-2"],
     [">= 0"]),
    ("simulate.py", ["--state", "{state}", "--candump", "{dir}/x.log", "--seconds", "0"], ["--seconds"]),
    ("simulate.py", ["--state", "{state}", "--candump", "{dir}/x.log", "--fault", "wifi-storm@x"],
     ["NAME@SECONDS[:DURATION]"]),
    ("simulate.py", ["--state", "{state}", "--candump", "{dir}/x.log", "--mqtt", "localhost"], ["--mqtt", "HOST:PORT"]),
    ("simulate.py", ["--state", "{state}", "--candump", "{dir}/x.log", "--influx", "h:99999"],
     ["--influx", "HOST:PORT"]),
    ("simulate.py", ["--state", "{state}", "--candump", "{dir}/x.log", "--web", "0"], ["--web", "1..65535"]),
    ("simulate.py", ["--state", "{no_cells}", "--candump", "{dir}/x.log"], ["cell_voltages_v"]),
    ("simulate.py", ["--candump", "{dir}/x.log"], ["--state"]),
    ("simulate.py", ["--state", "{state}", "--candump", "{dir}/x.log", "--protocol", "nosuch"], ["--protocol"]),
    ("simulate.py", ["--state", "{state}", "--candump", "{dir}/x.log", "--fault", "inverter-command@2"],
     ["inverter-command", "pylon", "luxpower"]),
    ("simulate.py", ["--state", "{state}", "--candump", "{dir}/x.log", "--protocol", "luxpower", "--fault",
                     "inverter-command@2:3"], ["without a duration"]),
    ("can_frames.py", ["--state", "{dir}/missing.json"], ["No such file"]),
    ("can_frames.py", ["--hex", "0102", "--protocol", "nosuch"], ["--protocol"]),
    ("can_watch.py", ["--protocol", "pylon"], ["nothing to read"]),
    ("can_watch.py", ["--protocol", "pylon", "--log", "{dir}/missing.log"], ["No such file"]),
    ("can_watch.py", ["--protocol", "pylon", "--log", "{sample}", "--count", "x"], ["--count"]),
    ("can_frames.py", ["--hex", "0102", "--merge"], ["--merge"]),
    ("can_frames.py", ["--state", "{state}"], ["line 2", "--merge"]),
    ("jk_decode.py", ["--register", "zz", "00"], ["--register"]),
    ("jk_decode.py", ["--layout", "JK99"], ["--layout"]),
    ("jkframe_build.py", [], ["nothing to do"]),
    ("bench_sim.py", ["--polls", "0"], ["--polls", ">= 1"]),
    ("bench_sim.py", ["--changes", "many"], ["--changes"]),
    ("bench.py", ["{dir}/missing.hex"], ["cannot read"]),
    ("bench.py", ["{sample}", "0"], ["ROUNDS"]),
    ("bench.py", ["{sample}", "ten"], ["ROUNDS"]),
    ("bench.py", ["{state}"], ["not a cell-info + settings frame pair"]),
    ("bench.py", ["{sample}", "1", "2"], ["too many"]),
    ("bench_cycle.py", [], ["REPLIES.txt"]),
    ("bench_cycle.py", ["{dir}/missing.txt"], ["cannot read"]),
    ("bench_cycle.py", ["{sample}"], ["MODE REQUEST_HEX REPLY_HEX"]),
    ("bench_cycle.py", ["{sample}", "x"], ["CAN_CYCLES"]),
    ("ha_screenshot.py", ["--width", "10"], ["--width", "320..4000"]),
    ("ha_screenshot.py", ["--seconds", "soon"], ["--seconds", "whole number"]),
]
BAD_RUNS = [(n, a, w, rt) for n, a, w in BAD for rt in (("cpython", "micropython") if n in MPY_TOOLS
                                                          else ("cpython",))]


@pytest.mark.parametrize("name,args,words,runtime", BAD_RUNS,
                         ids=["%s-%s-%s" % (n, "_".join(a)[:40], rt) for n, a, w, rt in BAD_RUNS])
def test_bad_argument(files, name, args, words, runtime):
    args = [a.format(**files) for a in args]
    candump = files["dir"] / "x.log"
    if candump.exists():
        candump.unlink()
    t0 = time.monotonic()
    r = tool(name, *args, runtime=runtime)
    check_usage_error(r, name, *words)
    assert time.monotonic() - t0 < 20  # refused up front, nothing was started
    assert not candump.exists()  # and no output file left behind


def test_busy_port_is_a_one_line_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        r = tool("jkbms_sim.py", "--port", port, "--duration", "1")
    check_usage_error(r, "jkbms_sim.py", "127.0.0.1:%d" % port, "in use")
    assert r.stdout == ""  # no LISTEN line


# ---------------------------------------------------------------- candump logs python-can can read
def test_can_frames_output_is_a_python_can_log(files, tmp_path):
    cell, sett = files["sample"].read_text().split()
    r = tool("can_frames.py", "--hex", cell, "--hex", sett)
    assert r.returncode == 0, r.stderr
    log = tmp_path / "frames.log"
    log.write_text(r.stdout)
    msgs = list(can.LogReader(str(log)))
    assert [m.arbitration_id for m in msgs] == IDS
    assert all(m.dlc == 8 and m.channel == "can0" and not m.is_extended_id for m in msgs)
    for m, line in zip(msgs, r.stdout.splitlines(), strict=True):
        assert line.endswith("%03X#%s" % (m.arbitration_id, bytes(m.data).hex().upper()))
    # why .log: python-can picks its reader by the extension and has none for ".candump"
    other = tmp_path / "frames.candump"
    other.write_text(r.stdout)
    with pytest.raises(ValueError):
        can.LogReader(str(other))


def test_simulate_writes_a_python_can_log(files, tmp_path):
    log = tmp_path / "sim.log"
    r = subprocess.run([sys.executable, str(TOOLS_DIR / "simulate.py"), "--state", str(files["state"]),
                        "--seconds", "3", "--candump", str(log)], capture_output=True, text=True, timeout=120,
                       cwd=str(ROOT))
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""  # a .log name: no note
    msgs = list(can.LogReader(str(log)))
    assert len(msgs) >= 6 and len(msgs) == len(log.read_text().splitlines())
    ids = [m.arbitration_id for m in msgs]
    first = ids.index(0x35E)
    assert ids[first:first + 6] == IDS  # a whole frame set, in the firmware's order
    stamps = [m.timestamp for m in msgs]
    assert stamps == sorted(stamps) and 0 <= stamps[0] and stamps[-1] <= 3.5
    soc = [m for m in msgs if m.arbitration_id == 0x355][0]
    assert soc.data[0] == json.loads(files["state"].read_text().splitlines()[0])["soc_percent"]


def test_simulate_accepts_any_candump_name(files, tmp_path):
    out = tmp_path / "sim.candump"
    r = subprocess.run([sys.executable, str(TOOLS_DIR / "simulate.py"), "--state", str(files["state"]),
                        "--seconds", "1", "--candump", str(out)], capture_output=True, text=True, timeout=120,
                       cwd=str(ROOT))
    assert r.returncode == 0, r.stderr
    assert out.exists()
    note = r.stderr.strip().splitlines()
    assert len(note) == 1 and "*.log" in note[0] and note[0].startswith("simulate: note:")


def test_tools_run_from_any_directory(files, tmp_path):
    """The sys.path shim: `python tools/X.py` works wherever it is started from."""
    cell, sett = files["sample"].read_text().split()
    a = tool("can_frames.py", "--hex", cell, "--hex", sett, cwd=tmp_path)
    b = tool("can_frames.py", "--hex", cell, "--hex", sett)
    assert a.returncode == 0 == b.returncode and a.stdout == b.stdout
    r = subprocess.run([str(MICROPYTHON), str(TOOLS_DIR / "bench.py"), str(files["sample"]), "10"],
                       capture_output=True, text=True, timeout=60, cwd=str(tmp_path))
    assert r.returncode == 0 and "cell-info decode" in r.stdout, r.stderr
    env = dict(os.environ, PYTHONPATH="")
    r = subprocess.run([sys.executable, "-c", "import tools.can_frames, tools.jkbms_sim, tools.simulate"],
                       capture_output=True, text=True, timeout=60, cwd=str(ROOT), env=env)
    assert r.returncode == 0, r.stderr
