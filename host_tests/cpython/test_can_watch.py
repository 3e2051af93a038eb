"""tools/can_watch.py: every protocol's frame set (tools/can_frames.py's candump log) decoded with its shipped DBC
(docs/dbc/PROTOCOL.dbc) to the battery state it was made from; a live python-can bus (the "virtual" interface, fed by
a thread in this process); stdin, --changes, --brief, raw unknown ids; bad arguments exit 2 with one line.

A protocol whose encoder module or DBC is missing FAILS here (it is registered in protocols.NAMES, so it must ship
both)."""
import re
import subprocess
import sys
import threading
from pathlib import Path

import can
import cantools
import pytest
from protocol_cases import missing

import protocols

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / "tools" / "can_watch.py"
FRAMES = ROOT / "tools" / "can_frames.py"
DBC_DIR = ROOT / "docs" / "dbc"
LINE = re.compile(r"^ +(\d+\.\d{3})  ([0-9A-F]{3})  (.*)$")
PAIR = re.compile(r"(\w+)=(\S+)(?: ([^\s=]+))?(?=  |$)")

# A 16S pack at 53.300 V, charging at 20.5 A, SOC 64 %, SOH 98 %, with its BMS settings: CVL 3.45 x 16 = 55.2 V
STATE = {
    "cell_voltages_v": [3.331] * 12 + [3.332] * 4, "battery_voltage_v": 53.3, "battery_current_a": 20.5,
    "soc_percent": 64, "soh_percent": 98,
    "remaining_capacity_ah": 179.2, "nominal_capacity_ah": 280.0, "power_tube_temp_c": 27.4, "t1_c": 21.4,
    "t2_c": 22.0, "charging": True, "discharging": True, "cell_ovp_v": 3.65, "cell_ovpr_v": 3.45,
    "cell_uvp_v": 2.7, "cell_uvpr_v": 2.9, "rcv_v": 3.45, "max_charge_current_a": 150.0,
    "max_discharge_current_a": 200.0,
}

# A DBC of our own for the argument / format tests: one frame of two scaled signals, a choice and two bits
TEST_DBC = """VERSION ""
NS_ :
BS_:
BU_: BMS INV
BO_ 849 T_Limits: 8 BMS
 SG_ T_Voltage : 0|16@1+ (0.1,0) [0|6553.5] "V" INV
 SG_ T_Current : 16|16@1- (0.1,0) [-3276.8|3276.7] "A" INV
 SG_ T_Mode : 32|2@1+ (1,0) [0|3] "" INV
 SG_ T_Bit_A : 40|1@1+ (1,0) [0|1] "" INV
 SG_ T_Bit_B : 41|1@1+ (1,0) [0|1] "" INV
VAL_ 849 T_Mode 0 "idle" 1 "charging" 2 "discharging" ;
VAL_ 849 T_Bit_A 0 "off" 1 "on" ;
"""
T_FRAME = bytes.fromhex("2802C8FF01020000")  # 55.2 V, -5.6 A, charging, bit B


def run(tool, *args, stdin=None):
    return subprocess.run([sys.executable, str(tool), *map(str, args)], input=stdin, capture_output=True,
                          text=True, timeout=120, cwd=str(ROOT))


def parse(stdout):
    """[(t, id, message name or '', {signal: (value text, unit)}, raw text)] of can_watch's lines."""
    out = []
    for line in stdout.splitlines():
        m = LINE.match(line)
        assert m, "not a can_watch line: %r" % line
        rest = m.group(3)
        if re.fullmatch(r"[0-9A-F]{3}#[0-9A-F]*", rest):
            out.append((float(m.group(1)), int(m.group(2), 16), "", {}, rest))
            continue
        name, _, sigs = rest.partition("  ")
        out.append((float(m.group(1)), int(m.group(2), 16), name,
                    {k: (v, u or "") for k, v, u in PAIR.findall(sigs)}, rest))
    return out


@pytest.fixture(scope="module")
def state_file(tmp_path_factory):
    import json
    p = tmp_path_factory.mktemp("watch") / "state.json"
    p.write_text(json.dumps(STATE))
    return p


@pytest.fixture
def test_dbc(tmp_path):
    p = tmp_path / "t.dbc"
    p.write_text(TEST_DBC)
    return p


def _num(text):
    return float(text)


# ---------------------------------------------------------------- every protocol's set, decoded
@pytest.mark.parametrize("name", protocols.NAMES)
def test_every_protocol_decodes_to_the_state(name, state_file, tmp_path):
    why = missing(name)
    if why:
        pytest.fail("protocol %s: %s" % (name, why))
    r = run(FRAMES, "--protocol", name, "--state", state_file)
    assert r.returncode == 0, r.stderr
    log = tmp_path / "set.log"
    log.write_text(r.stdout)
    sent = [(m.arbitration_id, bytes(m.data)) for m in can.LogReader(str(log))]
    w = run(TOOL, "--protocol", name, "--log", log)
    assert w.returncode == 0 and w.stderr == "", w.stderr
    lines = parse(w.stdout)
    assert [i for _, i, _, _, _ in lines] == [i for i, _ in sent]  # one line per frame, in order
    db = cantools.database.load_file(str(DBC_DIR / (name + ".dbc")), strict=True)
    volts, socs = [], []
    for (can_id, data), (_, _, msg_name, sigs, _) in zip(sent, lines, strict=True):
        msg = db.get_message_by_frame_id(can_id)  # every frame the gateway sends is in its DBC
        assert msg_name == msg.name
        vals = msg.decode(data, decode_choices=False)
        assert set(sigs) == {s.name for s in msg.signals}
        for sig in msg.signals:
            text, unit = sigs[sig.name]
            assert unit == (sig.unit or "")
            if sig.choices and int(vals[sig.name]) in sig.choices:
                assert text == str(sig.choices[int(vals[sig.name])]), (sig.name, text)
            else:
                assert _num(text) == pytest.approx(vals[sig.name], abs=abs(sig.scale) / 2 + 1e-9), sig.name
            if unit == "V":
                volts.append(_num(text))
            if "soc" in sig.name.lower() and unit == "%":
                socs.append(_num(text))
    # the state it was made from: pack voltage 53.30 V, CVL 55.2 V, SOC 64 %
    assert any(abs(v - 53.30) < 0.051 for v in volts), volts
    assert any(abs(v - 55.2) < 0.051 for v in volts), volts
    assert 64 in socs, socs


# ---------------------------------------------------------------- format, options
def test_line_format_and_choices(test_dbc, tmp_path):
    log = tmp_path / "t.log"
    log.write_text("(1.250000) can0 351#%s\n(1.500000) can0 7FF#0102\n" % T_FRAME.hex().upper())
    r = run(TOOL, "--dbc", test_dbc, "--log", log)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        "     1.250  351  T_Limits  T_Voltage=55.2 V  T_Current=-5.6 A  T_Mode=charging  T_Bit_A=off  T_Bit_B=1",
        "     1.500  7FF  7FF#0102",  # an id the DBC lacks: raw
    ]
    brief = run(TOOL, "--dbc", test_dbc, "--log", log, "--brief")
    assert brief.stdout.splitlines()[0].endswith("T_Mode=charging  T_Bit_B=1")
    short = tmp_path / "short.log"
    short.write_text("(0.000000) can0 351#2802\n")  # a known id of the wrong length: raw, not a crash
    r = run(TOOL, "--dbc", test_dbc, "--log", short)
    assert r.returncode == 0 and r.stdout.split() == ["0.000", "351", "351#2802"]


def test_stdin_changes_count(test_dbc):
    other = bytes.fromhex("2802C8FF02000000")  # discharging, no bits
    log = "".join("(%d.000000) can0 351#%s\n" % (k, d.hex()) for k, d in
                  enumerate([T_FRAME, T_FRAME, other, other, T_FRAME]))
    every = run(TOOL, "--dbc", test_dbc, "--log", "-", stdin=log)
    assert every.returncode == 0 and len(every.stdout.splitlines()) == 5
    changes = run(TOOL, "--dbc", test_dbc, "--log", "-", "--changes", stdin=log)
    assert [t for t, _, _, _, _ in parse(changes.stdout)] == [0.0, 2.0, 4.0]
    count = run(TOOL, "--dbc", test_dbc, "--log", "-", "--count", "2", stdin=log)
    assert len(count.stdout.splitlines()) == 2
    # python-can's direction marks (what simulate.py --candump-tx writes) are read too
    marked = run(TOOL, "--dbc", test_dbc, "--log", "-", stdin=log.replace("\n", " R\n"))
    assert marked.stdout == every.stdout


def test_any_log_name_is_read_as_candump(test_dbc, tmp_path):
    log = tmp_path / "t.candump"  # python-can has no reader for this extension
    log.write_text("(0.000000) can0 351#%s\n" % T_FRAME.hex())
    r = run(TOOL, "--dbc", test_dbc, "--log", log)
    assert r.returncode == 0 and "T_Mode=charging" in r.stdout


def test_live_virtual_bus(test_dbc, capsys):
    """A live python-can bus: the virtual interface (in-process), fed by a thread until the tool has its count."""
    from tools import can_watch
    stop = threading.Event()
    channel = "can_watch_test"

    def feed():
        with can.Bus(interface="virtual", channel=channel) as bus:
            k = 0
            while not stop.is_set():
                data = T_FRAME if k % 2 == 0 else bytes.fromhex("2802C8FF02000000")
                bus.send(can.Message(arbitration_id=0x351, data=data, is_extended_id=False))
                bus.send(can.Message(arbitration_id=0x123, data=b"\x01", is_extended_id=False))
                k += 1
                stop.wait(0.02)

    t = threading.Thread(target=feed, daemon=True)
    t.start()
    try:
        rc = can_watch.main(["--dbc", str(test_dbc), "--interface", "virtual", "--channel", channel,
                             "--count", "6", "--seconds", "20"])
    finally:
        stop.set()
        t.join(5)
    assert rc == 0
    lines = parse(capsys.readouterr().out)
    assert len(lines) == 6
    assert {i for _, i, _, _, _ in lines} == {0x351, 0x123}
    modes = {s["T_Mode"][0] for _, i, _, s, _ in lines if i == 0x351}
    assert modes <= {"charging", "discharging"} and modes
    assert all(raw == "123#01" for _, i, _, _, raw in lines if i == 0x123)
    ts = [t for t, _, _, _, _ in lines]
    assert ts == sorted(ts) and 0 <= ts[0] < 20


def test_live_seconds_end_a_quiet_bus(test_dbc, capsys):
    from tools import can_watch
    rc = can_watch.main(["--dbc", str(test_dbc), "--interface", "virtual", "--channel", "can_watch_quiet",
                         "--seconds", "0.3"])
    assert rc == 0 and capsys.readouterr().out == ""


# ---------------------------------------------------------------- bad arguments
@pytest.mark.parametrize("args,words", [
    ([], ["--protocol", "--dbc"]),
    (["--protocol", "nosuch", "--log", "x.log"], ["--protocol", "nosuch"]),
    (["--protocol", "pylon"], ["nothing to read"]),
    (["--dbc", "{dbc}", "--log", "{dir}/missing.log"], ["missing.log", "No such file"]),
    (["--dbc", "{dir}/missing.dbc", "--log", "{log}"], ["missing.dbc"]),
    (["--dbc", "{log}", "--log", "{log}"], ["DBC"]),
    (["--dbc", "{dbc}", "--log", "{log}", "--interface", "virtual", "--channel", "x"], ["not both"]),
    (["--dbc", "{dbc}", "--interface", "virtual"], ["--channel"]),
    (["--dbc", "{dbc}", "--log", "{log}", "--seconds", "2"], ["live bus"]),
    (["--dbc", "{dbc}", "--log", "{log}", "--count", "0"], ["--count"]),
    (["--dbc", "{dbc}", "--interface", "no_such_interface", "--channel", "x"], ["cannot open", "no_such_interface"]),
    (["--dbc", "{dbc}", "--log", "{bad}"], ["unreadable line"]),
])
def test_bad_arguments(args, words, test_dbc, tmp_path):
    log = tmp_path / "ok.log"
    log.write_text("(0.000000) can0 351#%s\n" % T_FRAME.hex())
    bad = tmp_path / "bad.log"
    bad.write_text("(0.000000) can0 351#%s\nthis is not a frame\n" % T_FRAME.hex())
    args = [a.format(dbc=test_dbc, dir=tmp_path, log=log, bad=bad) for a in args]
    r = run(TOOL, *args)
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("can_watch: ") and "Traceback" not in r.stderr, r.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])


def test_protocol_without_dbc_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    from tools import can_watch
    monkeypatch.setattr(can_watch, "DBC_DIR", str(tmp_path))
    assert can_watch.main(["--protocol", "pylon", "--log", "-"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "protocol pylon has no DBC" in err[0]


def test_help():
    r = run(TOOL, "--help")
    assert r.returncode == 0 and "--protocol" in r.stdout and "socketcan" in r.stdout
