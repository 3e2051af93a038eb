"""tools/can_frames.py (and tools/state_json.py), run as subprocesses on the fixtures of
host_tests/fixtures/jk_frames.json; the frames are decoded back with cantools and the public
Pylontech DBC in ../shared/dbc (read from there, never copied; the DBC checks skip with a reason
without it)."""
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import can
import pytest
import repo_data
from cantools import logreader

import protocols

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / "tools" / "can_frames.py"
DECODER = ROOT / "tools" / "jk_decode.py"
FIXTURES = repo_data.fixtures()
BY_ID = {f["id"]: f for f in FIXTURES}

IDS = [0x35E, 0x351, 0x355, 0x356, 0x359, 0x35C]
LINE = re.compile(r"^\((\d+\.\d{6})\) (\S+) ([0-9A-F]{3})#([0-9A-F]{16})$")

# (cell info, settings, charge enable expected, discharge enable expected)
PAIRS = [
    ("rs485_pb_status_0x1620_response_dsb", "rs485_pb_settings_0x161e_response_dsb", True, True),
    ("rs485_pb_status_response_with_ack_mpp", "rs485_pb_settings_response_with_ack_mpp", True, True),
    # charge MOSFET off and JK alarm bit 4 (cell OVP) set
    ("ble_jk02_32s_v11_17_cell_info_alarm_bit4", "ble_jk02_32s_v11_17_settings", False, True),
]


def run(tool, *args, stdin=None):
    return subprocess.run([sys.executable, str(tool), *args], input=stdin, capture_output=True,
                          text=True, timeout=120)


def can_frames(*args, stdin=None):
    return run(TOOL, *args, stdin=stdin)


def hexargs(*fids):
    out = []
    for fid in fids:
        out += ["--hex", BY_ID[fid]["hex"]]
    return out


def parse_candump(stdout, interface="can0"):
    """[(id, data)] after checking the candump log format line by line."""
    lines = stdout.splitlines()
    for line in lines:
        m = LINE.match(line)
        assert m, "not a candump log line: %r" % line
        assert m.group(2) == interface
    frames = [(f.frame_id, bytes(f.data)) for f in logreader.Parser(io.StringIO(stdout))]
    assert len(frames) == len(lines)
    return frames


def decode(frames):
    return {can_id: repo_data.pylon_dbc().decode_message(can_id, data, decode_choices=False) for can_id, data in frames}


@pytest.fixture(scope="module")
def decoded():
    """fixture id -> jk_decode.py JSON output (one run over every fixture)."""
    r = run(DECODER, stdin="".join(f["hex"] + "\n" for f in FIXTURES))
    assert r.returncode == 0, r.stderr
    outs = [json.loads(line) for line in r.stdout.splitlines()]
    return {f["id"]: out for f, out in zip(FIXTURES, outs, strict=True)}


def battery_temp(state):
    """0x356's temperature: the mean of the battery sensors; 0 without one -- never the MOSFET
    sensor's (it says nothing about the cells)."""
    temps = [state[k] for k in ("t1_c", "t2_c", "t3_c", "t4_c", "t5_c") if k in state]
    return sum(temps) / len(temps) if temps else 0.0


def shaped_soc(soc):
    """0x355's SOC: the BMS's, but at most 99 % until an absorption has ended (charge.policy "SOC
    shaping") -- which a single state never reaches within its hold and ramp, so 100 % reads 99."""
    return min(soc, 99)


def check_measurements(msgs, exp, state):
    """0x355 / 0x356 against the fixture's expected values (and the state for temperature)."""
    # a value the fixture does not assert comes from jk_decode's output (the state)
    volts = exp.get("total_voltage_v", exp.get("total_voltage_v_sum_of_cells", state["battery_voltage_v"]))
    assert abs(msgs[0x356]["Battery_Voltage"] - volts) <= 0.005 + 1e-6
    current = exp.get("current_a", state.get("battery_current_a", 0.0))
    assert abs(msgs[0x356]["Battery_Current"] - current) <= 0.05 + 1e-6
    assert abs(msgs[0x356]["Battery_Temperature"] - battery_temp(state)) <= 0.05 + 1e-6
    assert msgs[0x355]["SOC"] == shaped_soc(exp.get("soc_pct", state.get("soc_percent", 0)))
    assert msgs[0x355]["SOH"] == exp.get("soh_pct", state.get("soh_percent", 100))


# ---------------------------------------------------------------- every fixture
@pytest.mark.parametrize("fid", sorted(BY_ID))
def test_every_fixture(decoded, fid):
    fx = BY_ID[fid]
    r = can_frames("--hex", fx["hex"])
    if "num_cells" not in decoded[fid]:
        # device info, settings alone, logbook, requests: nothing to serve the inverter from
        assert r.returncode == 2 and r.stdout == ""
        assert len(r.stderr.strip().splitlines()) == 1 and "no live battery data" in r.stderr
        return
    assert r.returncode == 0, r.stderr
    frames = parse_candump(r.stdout)
    assert [i for i, _ in frames] == IDS
    msgs = decode(frames)
    check_measurements(msgs, fx["expected"], decoded[fid])
    if not decoded[fid].get("max_charge_current_a"):  # no BMS settings: no current allowed
        assert msgs[0x351]["Charge_Current_Limitation"] == 0 == msgs[0x351]["Discharge_Current_Limitation"]
        assert msgs[0x35C]["Charge_Enable"] == 0 == msgs[0x35C]["Discharge_Enable"]


# ---------------------------------------------------------------- cell info + settings
@pytest.mark.parametrize("cell,sett,chg,dsg", PAIRS, ids=[p[0] for p in PAIRS])
def test_cell_info_and_settings(decoded, cell, sett, chg, dsg):
    r = can_frames(*hexargs(cell, sett))
    assert r.returncode == 0 and r.stderr == ""
    lines = r.stdout.splitlines()
    assert len(lines) == 6
    assert [line.split()[2].split("#")[0] for line in lines] == ["35E", "351", "355", "356", "359", "35C"]
    assert all(line.startswith("(0.000000) can0 ") for line in lines)
    frames = parse_candump(r.stdout)
    msgs = decode(frames)
    exp, st = BY_ID[cell]["expected"], BY_ID[sett]["expected"]
    check_measurements(msgs, exp, decoded[cell])

    assert bytes(frames[0][1]) == b"PYLON   "
    assert "".join(chr(msgs[0x35E][c]) for c in "abcdefgh") == "PYLON   "
    assert msgs[0x35C]["Charge_Enable"] == chg and msgs[0x35C]["Discharge_Enable"] == dsg
    assert msgs[0x35C]["Charge_Immediately"] == 0
    lim = msgs[0x351]
    cells = st["cell_count"]
    assert (lim["Charge_Current_Limitation"] > 0) == chg
    assert (lim["Discharge_Current_Limitation"] > 0) == dsg
    assert 0 <= lim["Charge_Current_Limitation"] <= st["max_charge_current_a"]
    assert 0 <= lim["Discharge_Current_Limitation"] <= st["max_discharge_current_a"]
    assert st["cell_uvp_v"] * cells < lim["Battery_Charge_Voltage"] <= st["cell_ovp_v"] * cells + 1e-6
    # DVL is not in the DBC: docs/inverter-can.md "Pylontech", bytes 6-7
    dvl = int.from_bytes(frames[1][1][6:8], "little") / 10
    assert st["cell_uvp_v"] * cells <= dvl < lim["Battery_Charge_Voltage"]
    alarm = msgs[0x359]
    assert alarm["Pack_Nr"] == 1 and frames[4][1][5:7] == b"PN"
    over_voltage = bool(exp.get("errors_bitmask", 0) & (1 << 4))  # JK bit 4 = cell OVP
    assert alarm["Alarm_Over_Voltage"] == over_voltage
    others = [k for k, v in alarm.items() if k not in ("Pack_Nr", "Alarm_Over_Voltage") and v]
    assert not others


def test_settings_order_does_not_matter():
    cell, sett = PAIRS[0][:2]
    a = can_frames(*hexargs(cell, sett))
    b = can_frames(*hexargs(sett, cell))
    assert a.returncode == 0 and a.stdout == b.stdout


def test_name_and_interface():
    r = can_frames(*hexargs(*PAIRS[0][:2]), "--name", "JKBMS", "--interface", "vcan1")
    assert r.returncode == 0
    frames = parse_candump(r.stdout, "vcan1")
    assert frames[0] == (0x35E, b"JKBMS   ")


# ---------------------------------------------------------------- --state round trips
def _state_frames(tmp_path, *objs):
    """can_frames --state on the objects as JSON Lines; string items are extra arguments."""
    path = tmp_path / "state.jsonl"
    path.write_text("".join(json.dumps(o) + "\n" for o in objs if isinstance(o, dict)))
    return can_frames("--state", str(path), *[o for o in objs if isinstance(o, str)])


@pytest.mark.parametrize("fid", sorted(BY_ID))
def test_state_round_trip_single_frame(decoded, tmp_path, fid):
    state = decoded[fid]
    if "num_cells" not in state:
        return
    via_state = _state_frames(tmp_path, state)
    via_hex = can_frames("--hex", BY_ID[fid]["hex"])
    assert via_state.returncode == 0 == via_hex.returncode, via_state.stderr
    assert via_state.stdout == via_hex.stdout


@pytest.mark.parametrize("cell,sett", [p[:2] for p in PAIRS], ids=[p[0] for p in PAIRS])
def test_state_round_trip_with_settings(decoded, tmp_path, cell, sett):
    via_hex = can_frames(*hexargs(cell, sett))
    # jk_decode's two objects as JSON lines (--merge: one state), in either order, and merged by
    # hand into one pretty-printed object
    lines = _state_frames(tmp_path, decoded[cell], decoded[sett], "--merge")
    swapped = _state_frames(tmp_path, decoded[sett], decoded[cell], "--merge")
    merged = dict(decoded[cell])
    for k, v in decoded[sett].items():
        merged.setdefault(k, v)
    one = can_frames("--state", "-", stdin=json.dumps(merged, indent=2))
    for r in (lines, swapped, one):
        assert r.returncode == 0, r.stderr
        assert r.stdout == via_hex.stdout
    # and without the settings the current limits drop to 0
    bare = _state_frames(tmp_path, decoded[cell])
    assert bare.stdout != via_hex.stdout


def test_jsonl_states_are_independent_frame_sets(decoded, tmp_path):
    """Without --merge every line is a state of its own: one frame set each, a blank line between."""
    (c1, s1), (c2, s2) = [p[:2] for p in PAIRS[:2]]
    merged = []
    for cell, sett in ((c1, s1), (c2, s2), (PAIRS[2][0], PAIRS[2][1])):
        m = dict(decoded[cell])
        m.update({k: v for k, v in decoded[sett].items() if k not in m})
        merged.append(m)
    r = _state_frames(tmp_path, *merged)
    assert r.returncode == 0, r.stderr
    sets = r.stdout.split("\n\n")
    assert len(sets) == 3
    for text, (cell, sett, _, _) in zip(sets, PAIRS, strict=True):
        assert text.rstrip("\n") + "\n" == can_frames(*hexargs(cell, sett)).stdout
    # python-can's reader skips the blank lines: 18 frames
    frames = list(can.io.CanutilsLogReader(io.StringIO(r.stdout)))
    assert len(frames) == 18 and {m.arbitration_id for m in frames} == set(IDS)


def test_settings_line_without_merge_names_merge(decoded, tmp_path):
    cell, sett = PAIRS[0][:2]
    r = _state_frames(tmp_path, decoded[cell], decoded[sett])
    assert r.returncode == 2 and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("can_frames: line 2: no live battery data") and "--merge" in lines[0]


def test_merge_later_values_win(decoded, tmp_path):
    cell, sett = PAIRS[0][:2]
    base = dict(decoded[cell])
    r1 = _state_frames(tmp_path, base, decoded[sett], {"soc_percent": 12, "battery_current_a": -30.0}, "--merge")
    assert r1.returncode == 0, r1.stderr
    msgs = decode(parse_candump(r1.stdout))
    assert msgs[0x355]["SOC"] == 12
    assert msgs[0x356]["Battery_Current"] == pytest.approx(-30.0)


def test_hand_written_state_rounds_not_truncates(tmp_path):
    state = {
        "cell_voltages_v": [3.3] * 16,
        "battery_voltage_v": 52.8049,  # -> 52805 mV -> 52.81 V (truncation would give 52.80)
        "battery_current_a": -10.05,
        "soc_percent": 50, "soh_percent": 97,
        "t1_c": 20.04, "t2_c": 21.06,
        "charging": True, "discharging": True,
        "cell_ovp_v": 3.65, "cell_ovpr_v": 3.45, "cell_uvp_v": 2.7, "cell_uvpr_v": 2.9,
        "max_charge_current_a": 50.0, "max_discharge_current_a": 80.0,
        "charge_switch": True, "discharge_switch": True,
        "nominal_capacity_ah": 280.0,  # without a capacity the data is implausible: 0 A
    }
    r = _state_frames(tmp_path, state)
    assert r.returncode == 0, r.stderr
    msgs = decode(parse_candump(r.stdout))
    assert msgs[0x356]["Battery_Voltage"] == pytest.approx(52.81)
    assert msgs[0x356]["Battery_Current"] == pytest.approx(-10.1)
    assert msgs[0x356]["Battery_Temperature"] == pytest.approx(20.6)
    assert (msgs[0x355]["SOC"], msgs[0x355]["SOH"]) == (50, 97)
    assert msgs[0x351]["Charge_Current_Limitation"] == pytest.approx(45.0)
    assert msgs[0x351]["Discharge_Current_Limitation"] == pytest.approx(72.0)
    assert msgs[0x35C]["Charge_Enable"] == 1 == msgs[0x35C]["Discharge_Enable"]


def test_bms_protections_reach_the_policy_through_a_state(tmp_path):
    """The BMS's own temperature protections in a state (as jk_decode prints them) bound the charge
    policy's windows as they do from the frames: a charge UTP above the battery's temperature blocks
    charging, and without it the same state charges."""
    state = {
        "cell_voltages_v": [3.3] * 16, "battery_voltage_v": 52.8, "battery_current_a": 5.0, "soc_percent": 50,
        "t1_c": 8.0, "t2_c": 8.5,
        "charging": True, "discharging": True, "nominal_capacity_ah": 280.0,
        "cell_ovp_v": 3.65, "cell_ovpr_v": 3.45, "cell_uvp_v": 2.7, "cell_uvpr_v": 2.9,
        "max_charge_current_a": 50.0, "max_discharge_current_a": 80.0,
    }
    free = _state_frames(tmp_path, state, "-v")
    cold = _state_frames(tmp_path, dict(state, charge_utp_c=10.0, charge_otp_c=45.0), "-v")
    for r in (free, cold):
        assert r.returncode == 0, r.stderr
    assert decode(parse_candump(free.stdout))[0x351]["Charge_Current_Limitation"] > 0
    msgs = decode(parse_candump(cold.stdout))
    assert msgs[0x351]["Charge_Current_Limitation"] == 0 and msgs[0x35C]["Charge_Enable"] == 0
    assert msgs[0x351]["Discharge_Current_Limitation"] > 0  # discharging is not bound by the charge UTP
    assert "CCL 0.0 A (outside the temperature window)" in cold.stderr, cold.stderr


def test_state_thresholds_equal_the_decoders(decoded):
    """Every fixture with BMS settings: its jk_decode state gives the snapshot the same protections
    (temperatures, 4E 57 pack voltages, the "0 = not reported" rules) as the firmware's decoder."""
    from tools import can_frames, state_json
    names = ("charge_otp_dc", "charge_utp_dc", "discharge_otp_dc", "discharge_utp_dc", "mos_otp_dc",
             "pack_ovp_mv", "pack_uvp_mv")
    n = 0
    for fid, out in decoded.items():
        if "max_charge_current_a" not in out:
            continue
        by_hex = can_frames.snapshot_from_hex([BY_ID[fid]["hex"]])
        by_state = state_json.dict_to_snapshot(out)
        assert [getattr(by_state, a) for a in names] == [getattr(by_hex, a) for a in names], fid
        n += 1
    assert n == 8  # 4 JK02 settings frames, 4 4E57 responses


def test_state_json_module_round_trip(decoded):
    from tools import state_json
    n = 0
    for fid, out in decoded.items():
        if "num_cells" not in out and "max_charge_current_a" not in out:
            continue
        snap = state_json.dict_to_snapshot(out)
        d = state_json.snapshot_to_dict(snap)
        assert state_json.snapshot_to_dict(state_json.dict_to_snapshot(d)) == d
        for k, v in d.items():
            if k in out:  # the decoder's own output agrees with the snapshot view
                assert out[k] == v, (fid, k)
        n += 1
    assert n == 27  # 19 cell-info frames, 4 4E57 responses, 4 JK02 settings frames


# ---------------------------------------------------------------- bad input
BAD = [
    ("bad hex", ["--hex", "55aazz"], "hex"),
    ("bad checksum", ["--hex", BY_ID["ble_jk02_32s_v15_cell_info"]["hex"][:-2] + "00"], "checksum"),
    ("settings only", hexargs("rs485_pb_settings_0x161e_response_dsb"), "no live battery data"),
    ("modbus only", hexargs("modbus_fc10_trigger_status_addr1"), "no live battery data"),
]


@pytest.mark.parametrize("label,args,word", BAD, ids=[b[0] for b in BAD])
def test_bad_input(label, args, word):
    r = can_frames(*args)
    assert r.returncode == 2 and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and word in lines[0]


@pytest.mark.parametrize("text,word", [
    ("{not json", "JSON"),
    ("[1, 2]", "object"),
    ("", "empty"),
    ('{"cell_voltages_v": [3.3]}\n[3.3]\n', "line 2"),
    ('{\n "cell_voltages_v": [3.3]\n}\n{\n "soc_percent": 5\n}\n', "JSON Lines"),
    ('{"cell_voltages_v": [3.3, 3.3], "cell_ovp_v": 3.65}', "incomplete settings"),
    ('{"cell_voltages_v": "3.3"}', "cell_voltages_v"),
    ('{"battery_voltage_v": 52.0}', "no live battery data"),
])
def test_bad_state(text, word):
    r = can_frames("--state", "-", stdin=text)
    assert r.returncode == 2 and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and word in lines[0], r.stderr


def test_usage_errors():
    assert can_frames().returncode == 2
    assert can_frames("--protocol", "nosuch", *hexargs(PAIRS[0][0])).returncode == 2
    assert can_frames("--name", "", *hexargs(PAIRS[0][0])).returncode == 2
    assert can_frames("--state", "x.json", *hexargs(PAIRS[0][0])).returncode == 2
    r = can_frames("--help")
    assert r.returncode == 0 and "candump" in r.stdout and "--protocol {%s}" % ",".join(protocols.NAMES) in r.stdout


# ---------------------------------------------------------------- every protocol
def _encoder(name):
    """The protocol's encoder, or None when its module is not there (the test then fails)."""
    try:
        return protocols.load(name)
    except ImportError:
        return None


@pytest.mark.parametrize("name", protocols.NAMES)
def test_every_protocol(name):
    """--protocol NAME gives the encoder's frame set in its order, DLC 8; with the protocol's own battery
    name by default (never PYLON on Victron), --name replacing it."""
    r = can_frames("--protocol", name, *hexargs(*PAIRS[0][:2]))
    enc = _encoder(name)
    if enc is None:
        assert r.returncode == 2 and "protocols/%s.py is not there" % name in r.stderr, r.stderr
        pytest.fail("protocol %s: firmware/lib/protocols/%s.py is missing" % (name, name))
    assert r.returncode == 0, r.stderr
    frames = [(m.arbitration_id, bytes(m.data)) for m in can.io.CanutilsLogReader(io.StringIO(r.stdout))]
    assert [i for i, _ in frames] == list(enc.from_config(dict(battery_name="", modules=0)).ids)
    assert all(len(d) == 8 for _, d in frames)
    assert (b"PYLON" in b"".join(d for _, d in frames)) == (enc.NAME == "PYLON")
    if name == "victron":
        assert enc.NAME != "PYLON"
    named = can_frames("--protocol", name, "--name", "ZQX", *hexargs(*PAIRS[0][:2]))
    assert named.returncode == 0, named.stderr
    payload = b"".join(bytes(m.data) for m in can.io.CanutilsLogReader(io.StringIO(named.stdout)))
    assert b"ZQ" in payload and named.stdout != r.stdout


def test_list():
    r = can_frames("--list")
    assert r.returncode == 0 and r.stderr == ""
    lines = r.stdout.splitlines()
    assert [line.split()[0] for line in lines] == list(protocols.NAMES)
    for name, line in zip(protocols.NAMES, lines, strict=True):
        enc = _encoder(name)
        if enc is None:
            assert "not there" in line
            continue
        ids = enc.from_config(dict(battery_name="", modules=0)).ids
        assert "frames " + " ".join("%03X" % i for i in ids) + " every " in line, line
        assert line.endswith("heartbeat " + enc.HEARTBEAT), line
