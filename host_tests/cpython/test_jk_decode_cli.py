"""tools/jk_decode.py, run as a subprocess, against every frame of host_tests/fixtures/jk_frames.json.

Every key of every fixture's `expected` dict is checked through FIELD_MAP (fixture key -> where the
tool's JSON output carries it); a fixture key missing from the table fails the test.
"""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import repo_data

from jkbms import cellinfo, devinfo, pb_modbus, settings_fields
from jkbms import frame as J
from jkbms import settings as jk_settings
from pack.snapshot import PackSnapshot
from tools import jkbms_sim

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / "tools" / "jk_decode.py"
FIXTURE_FILE = repo_data.FIXTURE_FILE
FIXTURES = repo_data.fixtures()
BY_ID = {f["id"]: f for f in FIXTURES}

V_TOL = 0.001  # V, A, Ah, W-free quantities (fixtures/README.md)
C_TOL = 0.05  # degC
# per-fixture tolerances the fixture notes call for
TOL_OVERRIDE = {("ble_jk04_b5a24s_cell_info", "balance_current_a"): 0.05}


def run_tool(*args, stdin=None):
    return subprocess.run([sys.executable, str(TOOL), *args], input=stdin, capture_output=True,
                          text=True, timeout=120)


def parse_lines(stdout):
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


# ---------------------------------------------------------------- fixture key -> output field
def field(name):
    def get(out):
        assert name in out, "output lacks %r" % name
        return out[name]
    get.field = name
    return get


def resistance(n):
    def get(out):
        res = field("cell_resistances_mohm")(out)
        assert len(res) >= n, "no resistance for cell %d" % n
        return res[n - 1] / 1000  # mOhm -> Ohm
    return get


def cell_count(out):
    # settings frames: the configured count; data frames: the cells present
    return field("cell_count")(out) if out.get("frame_type") == 1 else field("num_cells")(out)


def serial_first8(out):
    return field("serial_number")(out)[:8]


EXACT = "exact"
VOLT = "V"  # +-0.001, also A / Ah / h
TEMP = "C"  # +-0.05
CELLS = "cells"

FIELD_MAP = {
    # frame / envelope
    "frame_type": (field("frame_type"), EXACT),
    # cell info (tggo/jkbms-poll schema names)
    "cells_v": (field("cell_voltages_v"), CELLS),
    "cell_count": (cell_count, EXACT),
    "cell_min_v": (field("cell_min_v"), VOLT),
    "cell_max_v": (field("cell_max_v"), VOLT),
    "cell_delta_v": (field("cell_delta_v"), VOLT),
    "cell_avg_v_computed": (field("cell_avg_v"), VOLT),
    "cell_min_index": (field("cell_min_num"), EXACT),
    "cell_max_index": (field("cell_max_num"), EXACT),
    "cell_avg_v_field": (field("cell_avg_v_field"), VOLT),
    "cell_delta_v_field": (field("cell_delta_v_field"), VOLT),
    "cell_mask": (field("enabled_cell_mask"), EXACT),
    "total_voltage_v": (field("battery_voltage_v"), VOLT),
    "total_voltage_v_sum_of_cells": (field("battery_voltage_v"), VOLT),
    "current_a": (field("battery_current_a"), VOLT),
    "temp_mos_c": (field("power_tube_temp_c"), TEMP),
    "temp_1_c": (field("t1_c"), TEMP),
    "temp_2_c": (field("t2_c"), TEMP),
    "temp_3_c": (field("temp_3_c"), TEMP),
    "temp_4_c": (field("temp_4_c"), TEMP),
    "temp_5_c": (field("temp_5_c"), TEMP),
    "temp_sensor_present_mask": (field("temp_sensor_present_mask"), EXACT),
    "errors_bitmask": (field("error_bitmask"), EXACT),
    "balancing_action": (field("balance_status"), EXACT),
    "balancing": (field("balancing"), EXACT),
    "balance_current_a": (field("balance_current_a"), VOLT),
    "soc_pct": (field("soc_percent"), EXACT),
    "soh_pct": (field("soh_percent"), EXACT),
    "capacity_remaining_ah": (field("remaining_capacity_ah"), VOLT),
    "full_charge_capacity_ah": (field("nominal_capacity_ah"), VOLT),
    "cycle_count": (field("cycle_count"), EXACT),
    "cycle_capacity_ah": (field("cycle_capacity_ah"), VOLT),
    "total_runtime_s": (field("total_runtime_s"), EXACT),
    "charging_mosfet": (field("charging"), EXACT),
    "discharging_mosfet": (field("discharging"), EXACT),
    "heating": (field("heating"), EXACT),
    "charge_status": (field("charge_status"), EXACT),
    "charge_status_time_s": (field("charge_status_time_s"), EXACT),
    "battery_type": (field("battery_type"), EXACT),
    "detail_log_count": (field("detail_log_count"), EXACT),
    "wire_res_warn_mask": (field("wire_resistance_warning_mask"), EXACT),
    "cell_resistance_1_ohm": (resistance(1), VOLT),
    "cell_resistance_2_ohm": (resistance(2), VOLT),
    "cell_resistance_16_ohm": (resistance(16), VOLT),
    "max_cell_index_field_plus1": (field("cell_max_index_field"), EXACT),
    "min_cell_index_field_plus1": (field("cell_min_index_field"), EXACT),
    # device info
    "model": (field("model"), EXACT),
    "hw_version": (field("hw_version"), EXACT),
    "sw_version": (field("sw_version"), EXACT),
    "uptime_s": (field("uptime_s"), EXACT),
    "power_on_count": (field("power_on_count"), EXACT),
    "device_name": (field("device_name"), EXACT),
    "device_passcode": (field("device_passcode"), EXACT),
    "manufacturing_date": (field("manufacturing_date"), EXACT),
    "serial_number": (field("serial_number"), EXACT),
    "serial_number_first8": (serial_first8, EXACT),
    "passcode": (field("passcode"), EXACT),
    "user_data": (field("user_data"), EXACT),
    "setup_passcode": (field("setup_passcode"), EXACT),
    "user_data2": (field("user_data2"), EXACT),
    "uart1_protocol": (field("uart1_protocol"), EXACT),
    "can_protocol": (field("can_protocol"), EXACT),
    "uart2_protocol": (field("uart2_protocol"), EXACT),
    "rcv_time_h": (field("rcv_time_h"), VOLT),
    "rfv_time_h": (field("rfv_time_h"), VOLT),
    # JK02 / JK-PB settings
    "smart_sleep_v": (field("smart_sleep_v"), VOLT),
    "cell_uvp_v": (field("cell_uvp_v"), VOLT),
    "cell_uvpr_v": (field("cell_uvpr_v"), VOLT),
    "cell_ovp_v": (field("cell_ovp_v"), VOLT),
    "cell_ovpr_v": (field("cell_ovpr_v"), VOLT),
    "balance_trigger_v": (field("balance_trigger_v"), VOLT),
    "soc100_v": (field("soc100_v"), VOLT),
    "soc0_v": (field("soc0_v"), VOLT),
    "rcv_v": (field("rcv_v"), VOLT),
    "rfv_v": (field("rfv_v"), VOLT),
    "power_off_v": (field("power_off_v"), VOLT),
    "max_charge_current_a": (field("max_charge_current_a"), VOLT),
    "charge_ocp_delay_s": (field("charge_ocp_delay_s"), EXACT),
    "charge_ocp_recovery_s": (field("charge_ocp_recovery_s"), EXACT),
    "max_discharge_current_a": (field("max_discharge_current_a"), VOLT),
    "discharge_ocp_delay_s": (field("discharge_ocp_delay_s"), EXACT),
    "discharge_ocp_recovery_s": (field("discharge_ocp_recovery_s"), EXACT),
    "scp_recovery_s": (field("scp_recovery_s"), EXACT),
    "max_balance_current_a": (field("max_balance_current_a"), VOLT),
    "charge_otp_c": (field("charge_otp_c"), TEMP),
    "charge_otpr_c": (field("charge_otpr_c"), TEMP),
    "discharge_otp_c": (field("discharge_otp_c"), TEMP),
    "discharge_otpr_c": (field("discharge_otpr_c"), TEMP),
    "charge_utp_c": (field("charge_utp_c"), TEMP),
    "charge_utpr_c": (field("charge_utpr_c"), TEMP),
    "mos_otp_c": (field("mos_otp_c"), TEMP),
    "mos_otpr_c": (field("mos_otpr_c"), TEMP),
    "charge_switch": (field("charge_switch"), EXACT),
    "discharge_switch": (field("discharge_switch"), EXACT),
    "balancer_switch": (field("balancer_switch"), EXACT),
    "nominal_capacity_ah": (field("nominal_capacity_ah"), VOLT),
    "scp_delay_us": (field("scp_delay_us"), EXACT),
    "balance_start_v": (field("balance_start_v"), VOLT),
    "device_address": (field("device_address"), EXACT),
    "precharge_time_s": (field("precharge_time_s"), EXACT),
    "control_bitmask": (field("control_bitmask"), EXACT),
    "heating_start_c": (field("heating_start_c"), TEMP),
    "heating_stop_c": (field("heating_stop_c"), TEMP),
    "smart_sleep_h": (field("smart_sleep_h"), EXACT),
    "discharge_utp_c": (field("discharge_utp_c"), TEMP),
    "discharge_utpr_c": (field("discharge_utpr_c"), TEMP),
    # JK04 settings
    "power_off_voltage_v": (field("power_off_voltage_v"), VOLT),
    "voltage_calibration": (field("voltage_calibration"), VOLT),
    "balance_start_voltage_v": (field("balance_start_voltage_v"), VOLT),
    "balance_trigger_voltage_v": (field("balance_trigger_voltage_v"), VOLT),
    "balancer_enabled": (field("balancer_enabled"), EXACT),
    # logbook
    "log_count": (field("log_count"), EXACT),
    "entries": (field("entries"), EXACT),
    # 20-byte command confirmation
    "header": (field("header"), EXACT),
    "type": (field("type"), EXACT),
    "length": (field("length"), EXACT),
    "value": (field("value"), EXACT),
    # 4E 57
    "command": (field("command"), EXACT),
    "frame_source": (field("frame_source"), EXACT),
    "register": (field("register"), EXACT),
    "transport_type": (field("transport_type"), EXACT),
    "protocol_version": (field("protocol_version"), EXACT),
    "temp_sensor_count": (field("temp_sensor_count"), EXACT),
    "warnings_bitmask": (field("warnings_bitmask"), EXACT),
    "status_bitmask": (field("status_bitmask"), EXACT),
    "charging_mosfet_status": (field("charging"), EXACT),
    "discharging_mosfet_status": (field("discharging"), EXACT),
    "balancer_status": (field("balancer_status"), EXACT),
    "pack_ovp_v": (field("pack_ovp_v"), VOLT),
    "pack_uvp_v": (field("pack_uvp_v"), VOLT),
    "discharge_ocp_a": (field("discharge_ocp_a"), VOLT),
    "charge_ocp_a": (field("charge_ocp_a"), VOLT),
    "balance_delta_v": (field("balance_delta_v"), VOLT),
    "capacity_setting_ah": (field("capacity_setting_ah"), VOLT),
    "cell_count_setting": (field("cell_count_setting"), EXACT),
    "total_runtime_min": (field("total_runtime_min"), EXACT),
    "software_version": (field("software_version"), EXACT),
    "manufacturer_id": (field("manufacturer_id"), EXACT),
    "device_id": (field("device_id"), EXACT),
    "mfg_date": (field("mfg_date"), EXACT),
    "current_raw": (field("current_raw"), EXACT),
    # Modbus RTU
    "slave": (field("slave"), EXACT),
    "function": (field("function"), EXACT),
    "count": (field("count"), EXACT),
    "byte_count": (field("byte_count"), EXACT),
}

PROTOCOL = {"ble": "jk_55aa", "rs485-modbus-55aa": "jk_55aa", "rs485-4e57": "jk_4e57",
            "rs485-modbus": "modbus_rtu"}

# tggo/jkbms-poll cell-info fields every JK02 cell-info frame must yield
TGGO_FIELDS = (
    "num_cells", "cell_voltages_v", "cell_min_v", "cell_max_v", "cell_delta_v", "cell_avg_v",
    "cell_min_num", "cell_max_num", "battery_voltage_v", "battery_current_a", "battery_power_w",
    "power_tube_temp_c", "t1_c", "t2_c", "balance_current_a", "balance_status", "error_bitmask",
    "soc_percent", "soh_percent", "remaining_capacity_ah", "nominal_capacity_ah", "cycle_count",
    "cycle_capacity_ah", "total_runtime_s", "charging", "discharging", "crc_ok", "raw_frame_hex",
    "frame_counter", "enabled_cell_mask", "cell_resistances_mohm",
)


@pytest.fixture(scope="module")
def decoded():
    """id -> JSON object, from one stdin run over every fixture."""
    r = run_tool(stdin="".join(f["hex"] + "\n" for f in FIXTURES))
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    outs = parse_lines(r.stdout)
    assert len(outs) == len(FIXTURES)
    return {f["id"]: out for f, out in zip(FIXTURES, outs, strict=True)}


def _check(fixture_id, key, actual, expected):
    getter, kind = FIELD_MAP[key]
    where = "%s: %s" % (fixture_id, key)
    if kind == CELLS:
        for num, v in expected.items():
            i = int(num) - 1
            assert i < len(actual), "%s: no cell %s" % (where, num)
            assert abs(actual[i] - v) <= V_TOL + 1e-9, \
                "%s: cell %s = %r, expected %r" % (where, num, actual[i], v)
        return
    if kind == EXACT:
        same_type = type(actual) is type(expected) or isinstance(expected, float)
        assert actual == expected and same_type, "%s = %r, expected %r" % (where, actual, expected)
        return
    tol = TOL_OVERRIDE.get((fixture_id, key), V_TOL if kind == VOLT else C_TOL)
    assert isinstance(actual, (int, float)) and not isinstance(actual, bool), "%s = %r" % (where, actual)
    assert abs(actual - expected) <= tol + 1e-9, "%s = %r, expected %r +- %g" % (where, actual, expected, tol)


def test_every_fixture_key_is_mapped():
    unmapped = sorted({k for f in FIXTURES for k in f["expected"]} - set(FIELD_MAP))
    assert not unmapped, "fixture keys without a FIELD_MAP entry: %s" % unmapped


@pytest.mark.parametrize("fid", sorted(BY_ID))
def test_fixture_expected_values(decoded, fid):
    fx = BY_ID[fid]
    out = decoded[fid]
    for key, expected in fx["expected"].items():
        assert key in FIELD_MAP, "%s: fixture key %r is not mapped to an output field" % (fid, key)
        getter, _ = FIELD_MAP[key]
        _check(fid, key, getter(out), expected)


@pytest.mark.parametrize("fid", sorted(BY_ID))
def test_fixture_envelope(decoded, fid):
    fx = BY_ID[fid]
    out = decoded[fid]
    raw = bytes.fromhex(fx["hex"])
    want = "jk_ble_command" if fx["layout"] == "ALL" else PROTOCOL[fx["transport"]]
    assert out["protocol"] == want
    assert out["crc_ok"] is True
    if out["protocol"] == "jk_55aa":
        assert out["raw_frame_hex"] == fx["hex"][:600]
        assert out["frame_counter"] == raw[5]
        assert out["frame_type"] == raw[4]
        if out["frame_type"] == 2 or len(raw) > 300 and "ack" in out:
            assert out["layout"] == fx["layout"]
        elif "layout" in out:
            assert out["layout"] == fx["layout"]
    else:
        assert out["raw_frame_hex"] == fx["hex"]
        assert "frame_type" not in out
        if out["protocol"] == "jk_4e57":
            assert out["layout"] == "4E57"
        else:
            assert "layout" not in out
    if out["protocol"] == "modbus_rtu":
        assert out["kind"] == ("ack" if "_ack_" in fid else "request")
    assert list(out)[0] == "protocol" and list(out)[-1] == "raw_frame_hex"


def test_trailers_are_reported(decoded):
    out = decoded["ble_aio_jk02_32s_v19_05_device_info_with_ack"]
    assert out["confirmation"] == {"header": "AA5590EB", "type": 0xC8, "kind": "confirmation",
                                   "length": 1, "value": 1}
    for fid, slave, reg in (("rs485_pb_status_response_with_ack_mpp", 1, 0x1620),
                            ("rs485_pb_settings_response_with_ack_addr7_sleeper85", 7, 0x161E),
                            ("rs485_pb_about_response_with_ack_mpp", 1, 0x161C)):
        ack = decoded[fid]["ack"]
        assert (ack["slave"], ack["function"], ack["register"], ack["count"], ack["kind"]) == \
            (slave, 16, reg, 1, "ack")


def test_jk02_cell_info_has_the_tggo_schema(decoded):
    n = 0
    for fid, out in decoded.items():
        if out.get("frame_type") != 2 or not out["layout"].startswith("JK02"):
            continue
        n += 1
        missing = [k for k in TGGO_FIELDS if k not in out]
        assert not missing, "%s lacks %s" % (fid, missing)
        cells = out["num_cells"]
        assert len(out["cell_voltages_v"]) == cells == len(out["cell_resistances_mohm"])
        assert abs(out["battery_power_w"] - out["battery_voltage_v"] * out["battery_current_a"]) < 1e-6
        assert out["cell_min_v"] == min(out["cell_voltages_v"])
        assert out["cell_voltages_v"][out["cell_max_num"] - 1] == out["cell_max_v"]
        assert isinstance(out["charging"], bool) and isinstance(out["discharging"], bool)
        assert all(isinstance(r, int) for r in out["cell_resistances_mohm"])  # milliohm
    assert n == sum(1 for f in FIXTURES
                    if f["layout"].startswith("JK02") and f["expected"].get("frame_type") == 2)


def test_v15_discharge_and_charge_signs(decoded):
    chg = decoded["ble_jk02_32s_v15_cell_info"]
    assert chg["battery_current_a"] == 31.881 and chg["battery_power_w"] > 0
    dsg = decoded["ble_jk02_32s_v19_cell_info"]
    assert dsg["battery_current_a"] == -0.727 and dsg["battery_power_w"] < 0


def test_fields_not_carried_are_absent(decoded):
    for fid, out in decoded.items():
        fx = BY_ID[fid]
        if out.get("layout") == "JK04" and out.get("frame_type") == 2:
            for k in ("battery_current_a", "battery_power_w", "soc_percent", "soh_percent",
                      "remaining_capacity_ah", "nominal_capacity_ah", "power_tube_temp_c", "t1_c",
                      "error_bitmask", "charging", "cycle_count"):
                assert k not in out, "%s: JK04 carries no %s" % (fid, k)
            assert "battery_voltage_v" in out and "balance_current_a" in out
        if out["protocol"] == "jk_4e57" and out["transport_type"] != 0:
            for k in ("soh_percent", "remaining_capacity_ah", "balance_current_a"):
                assert k not in out, "%s: 4E57 carries no %s" % (fid, k)
        if out.get("layout") == "JK02_24S":
            for k in ("t3_c", "t4_c", "t5_c", "temp_3_c", "heating", "charge_status"):
                assert k not in out, "%s: JK02_24S carries no %s" % (fid, k)
        if out.get("frame_type") in (1, 3, 5) or out["protocol"] in ("modbus_rtu", "jk_ble_command") \
                or fx["id"] == "rs485_4e57_read_all_request":
            for k in ("num_cells", "battery_voltage_v", "soc_percent", "cell_voltages_v"):
                assert k not in out, "%s has %s" % (fid, k)
    # a 32S pack whose extra sensors are flagged absent: raw values kept, no t4_c / t5_c
    out = decoded["ble_jk02_32s_v11_17_cell_info_alarm_bit4"]
    assert out["temp_4_c"] == 0.0 and "t4_c" not in out and "t5_c" not in out


# ---------------------------------------------------------------- command line behaviour
def _hex(fid):
    return BY_ID[fid]["hex"]


def test_arguments_several_frames(decoded):
    ids = ("ble_jk02_32s_v15_cell_info", "modbus_fc03_read_batvol_addr1", "rs485_4e57_read_all_response_14s")
    r = run_tool(*[_hex(i) for i in ids])
    assert r.returncode == 0 and r.stderr == ""
    assert parse_lines(r.stdout) == [decoded[i] for i in ids]


def test_stdin_with_spaces_blank_lines_and_comments(decoded):
    ids = ("ble_jk02_24s_v10_cell_info", "rs485_pb_settings_response_with_ack_mpp",
           "modbus_fc10_ack_status_addr3", "ble_command_confirmation_c8")
    lines = ["# capture of 2024-01-01", ""]
    for i in ids:
        h = _hex(i).upper()
        lines.append(" ".join(h[k:k + 2] for k in range(0, len(h), 2)))
        lines.append("   ")
    r = run_tool(stdin="\n".join(lines) + "\n")
    assert r.returncode == 0, r.stderr
    assert parse_lines(r.stdout) == [decoded[i] for i in ids]
    assert len(r.stdout.splitlines()) == len(ids)  # one object per line


def test_quoted_argument_with_spaces(decoded):
    h = _hex("modbus_fc10_trigger_status_addr1")
    r = run_tool(" ".join(h[k:k + 2] for k in range(0, len(h), 2)))
    assert r.returncode == 0
    assert parse_lines(r.stdout) == [decoded["modbus_fc10_trigger_status_addr1"]]


def test_pretty(decoded):
    r = run_tool("--pretty", _hex("ble_jk02_32s_v19_cell_info"))
    assert r.returncode == 0
    assert len(r.stdout.splitlines()) > 20
    assert json.loads(r.stdout) == decoded["ble_jk02_32s_v19_cell_info"]


def test_help():
    r = run_tool("--help")
    assert r.returncode == 0
    for word in ("stdin", "--pretty", "Exit status", "4E 57", "Modbus", "cell_voltages_v"):
        assert word in r.stdout


def _flip(hexstr, byte_index):
    b = bytearray(bytes.fromhex(hexstr))
    b[byte_index] ^= 0x01
    return b.hex()


BAD_INPUTS = [
    ("non-hex", "55aaeb90zz", "hex"),
    ("odd digits", "0103120000018", "odd"),
    ("55AA checksum", _flip(_hex("ble_jk02_32s_v15_cell_info"), 100), "checksum"),
    ("55AA truncated", _hex("ble_jk02_32s_v15_cell_info")[:400], "300"),
    ("55AA trailing junk", _hex("ble_jk02_32s_v15_cell_info") + "deadbeef", "after"),
    ("ACK of another trigger", _hex("rs485_pb_settings_0x161e_response_dsb") + "03101620000105a9", "ACK"),
    ("modbus CRC", _flip(_hex("modbus_fc03_read_batvol_addr1"), 7), "CRC"),
    ("modbus truncated", _hex("modbus_fc10_trigger_status_addr1")[:16], "CRC"),
    ("4E57 checksum", _flip(_hex("rs485_4e57_read_all_response_14s"), 40), "4E57"),
    ("4E57 truncated", _hex("rs485_4e57_read_all_response_14s")[:300], "4E57"),
    ("confirmation checksum", _flip(_hex("ble_command_confirmation_c8"), 10), "checksum"),
    ("confirmation truncated", _hex("ble_command_confirmation_c8")[:30], "20"),
    ("unknown bytes", "41540d0a55aaeb90", "unrecognised"),
]


@pytest.mark.parametrize("label,text,word", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_invalid_frame_exits_nonzero_with_one_line_reason(label, text, word):
    for r in (run_tool(text), run_tool(stdin=text + "\n")):
        assert r.returncode == 2
        assert r.stdout == ""
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1, r.stderr
        assert word.lower() in lines[0].lower(), lines[0]


def test_bad_frame_among_good_ones(decoded):
    good = _hex("ble_jk02_32s_v11_cell_info")
    bad = _flip(good, 50)
    r = run_tool(stdin="%s\n%s\n\n%s\n" % (good, bad, _hex("modbus_fc03_read_cell0_addr1")))
    assert r.returncode == 2
    assert parse_lines(r.stdout) == [decoded["ble_jk02_32s_v11_cell_info"],
                                      decoded["modbus_fc03_read_cell0_addr1"]]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "line 2" in lines[0] and "checksum" in lines[0]


def test_no_input():
    r = run_tool(stdin="\n\n")
    assert r.returncode == 2 and "no frames" in r.stderr
    r = run_tool("  ")
    assert r.returncode == 2 and "empty" in r.stderr


# ---------------------------------------------------------------- other capture shapes
def _crc16(data):
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return bytes(data) + bytes((crc & 0xFF, crc >> 8))


def test_echo_and_padded_ack(decoded):
    frame = _hex("rs485_pb_status_response_with_ack_mpp")[:600]
    capture = _hex("modbus_fc10_trigger_status_addr1") + frame + "00" + "011016200001044b" + "00"
    r = run_tool(capture)
    assert r.returncode == 0, r.stderr
    out = parse_lines(r.stdout)[0]
    ref = decoded["rs485_pb_status_response_with_ack_mpp"]
    assert out["request"]["register"] == 0x1620 and out["request"]["kind"] == "request"
    assert out.pop("request") and out == ref


def test_modbus_reply_and_exception():
    reply = _crc16(bytes([1, 3, 4, 0x00, 0x00, 0xCE, 0x0C])).hex()  # BatVol = 52748 mV
    exc = _crc16(bytes([1, 0x83, 2])).hex()
    r = run_tool(reply, exc)
    assert r.returncode == 0, r.stderr
    a, b = parse_lines(r.stdout)
    assert (a["kind"], a["function"], a["byte_count"], a["values"], a["value"]) == \
        ("reply", 3, 4, [0, 0xCE0C], 0xCE0C)
    assert (b["kind"], b["function"], b["exception_code"]) == ("exception", 3, 2)


def test_layout_override():
    s = _hex("ble_jk02_32s_v11_17_settings")
    auto, as24 = (parse_lines(run_tool(*args, s).stdout)[0] for args in ((), ("--layout", "JK02_24S")))
    assert "device_address" in auto and "layout" not in auto
    assert as24["layout"] == "JK02_24S" and "device_address" not in as24 and "heating_start_c" not in as24
    assert as24["cell_ovp_v"] == auto["cell_ovp_v"]
    c = _hex("ble_jk02_32s_v15_cell_info")
    r = run_tool("--layout", "JK02_32S", c)
    assert parse_lines(r.stdout)[0] == parse_lines(run_tool(c).stdout)[0]
    r = run_tool("--layout", "JK02_99S", c)
    assert r.returncode == 2


# ---------------------------------------------------------------- 55AA + FC10 ACK of slave address 0
def _ack(slave, register):
    return _crc16(bytes([slave, 0x10, register >> 8, register & 0xFF, 0, 1])).hex()


@pytest.mark.parametrize("before,after", [("", ""), ("00", "00"), ("00", ""), ("", "00"), ("0000", "00")],
                         ids=["bare", "padded", "pad-before", "pad-after", "double-pad"])
def test_ack_of_bus_master_address_0(decoded, before, after):
    """A pack that is bus master answers with slave address 0: the ACK's zero address byte is not
    padding (the ACK's CRC tells)."""
    fid = "rs485_pb_status_response_with_ack_mpp"
    frame = _hex(fid)[:600]
    r = run_tool(frame + before + _ack(0, 0x1620) + after)
    assert r.returncode == 0, r.stderr
    out = parse_lines(r.stdout)[0]
    assert out.pop("ack") == {"slave": 0, "function": 16, "kind": "ack", "register": 0x1620, "count": 1}
    ref = dict(decoded[fid])
    assert ref.pop("ack")["slave"] == 1
    assert out == ref


def test_ack_of_address_0_with_echo_and_checks(decoded):
    frame = _hex("rs485_pb_settings_response_with_ack_mpp")[:600]
    echo = _crc16(bytes([0, 0x10, 0x16, 0x1E, 0, 1, 2, 0, 0])).hex()
    r = run_tool(echo + frame + _ack(0, 0x161E))
    assert r.returncode == 0, r.stderr
    out = parse_lines(r.stdout)[0]
    assert out["request"]["register"] == 0x161E and out["ack"]["slave"] == 0
    assert out["cell_ovp_v"] == decoded["rs485_pb_settings_response_with_ack_mpp"]["cell_ovp_v"]
    # still checked: an address-0 ACK for another trigger, and one with a broken CRC
    for bad, word in ((frame + _ack(0, 0x1620), "does not match"), (frame + _flip(_ack(0, 0x161E), 7), "after")):
        r = run_tool(bad)
        assert r.returncode == 2 and r.stdout == ""
        assert len(r.stderr.strip().splitlines()) == 1 and word in r.stderr, r.stderr


# ---------------------------------------------------------------- FC03 register blocks
# A JK-PB register block holds a 55AA frame's data at block offset = frame offset - 6, every
# multi-byte field big-endian (host_tests/portable/test_pb_register_blocks.py). The images are built
# from the real captures with the BMS simulator's register_image() -- and checked here against the
# firmware's own block decoders before they are used.
BLOCK_CASES = {  # block base -> (capture, bytes the firmware reads)
    0x1200: ("rs485_pb_status_response_with_ack_mpp", cellinfo.NEED_32S),
    0x1000: ("rs485_pb_settings_response_with_ack_mpp", jk_settings.BLOCK_BYTES),
    0x1400: ("rs485_pb_about_response_with_ack_mpp", devinfo.BLOCK_BYTES),
}
ENVELOPE = ("protocol", "crc_ok", "raw_frame_hex", "layout", "frame_type", "frame_counter", "ack", "kind",
            "slave", "function", "register", "count", "byte_count", "block", "block_offset", "request")


def _image(base):
    fid = BLOCK_CASES[base][0]
    frame = bytes.fromhex(_hex(fid)[:600])
    img = jkbms_sim.register_image(frame)
    # the image is what the firmware's FC03 decoders read as the same data
    if base == 0x1200:
        a, b = PackSnapshot(), PackSnapshot()
        cellinfo.decode(frame, 6, J.LAYOUT_JK02_32S, a)
        cellinfo.decode(img, 0, J.LAYOUT_PB_FC03, b)
        for attr in ("cells", "pack_mv", "current_ma", "soc_pct", "soh_pct", "temps", "alarms", "remaining_mah",
                     "full_mah", "cycles", "runtime_s", "charge_fet", "discharge_fet", "balance_ma"):
            assert getattr(a, attr) == getattr(b, attr), attr
    elif base == 0x1000:
        assert settings_fields.describe(img, 0, True) == settings_fields.describe(frame)
    else:
        assert devinfo.describe(img, 0, True) == devinfo.describe(frame)
    return fid, img


def _read(img, base, reg, count, slave=1):
    """(FC03 request hex, reply hex) for count registers from reg."""
    req = _crc16(bytes([slave, 3, reg >> 8, reg & 0xFF, count >> 8, count & 0xFF]))
    off = reg - base
    reply = _crc16(bytes([slave, 3, 2 * count]) + img[off:off + 2 * count])
    return req.hex(), reply.hex()


def _plans(base, nbytes):
    """The firmware's read plan (32 registers a read), and a 125-register read (the Modbus maximum)
    with a second read of the last 100 bytes, overlapping it."""
    return {"firmware": pb_modbus.read_plan(base, nbytes),
            "max": [(base, 125), (base + nbytes - 100, 50)]}


@pytest.mark.parametrize("base", sorted(BLOCK_CASES), ids=["settings", "status", "device_info"])
@pytest.mark.parametrize("plan", ["firmware", "max"])
def test_fc03_block_reads_decode_like_the_55aa_frame(decoded, base, plan):
    fid, img = _image(base)
    ref = decoded[fid]
    reads = _plans(base, BLOCK_CASES[base][1])[plan]
    pairs = [_read(img, base, reg, count) for reg, count in reads]
    r = run_tool(*[req + reply for req, reply in pairs])
    assert r.returncode == 0, r.stderr
    outs = parse_lines(r.stdout)
    assert len(outs) == len(pairs)
    union = {}
    for (reg, count), out in zip(reads, outs, strict=True):
        assert (out["protocol"], out["kind"], out["register"], out["count"]) == ("modbus_rtu", "reply", reg, count)
        assert out["block_offset"] == reg - base and out["request"]["register"] == reg
        assert list(out)[0] == "protocol" and list(out)[-1] == "raw_frame_hex"
        for key, value in out.items():
            if key in ENVELOPE:
                continue
            if key == "cells_v":  # a read that covers only some cell slots
                for num, v in value.items():
                    if int(num) <= ref["num_cells"]:
                        assert v == ref["cell_voltages_v"][int(num) - 1], num
                continue
            assert key in ref, key
            assert value == ref[key], (key, value, ref[key])  # same names, same values
            union[key] = value
    # everything the 55AA frame carries comes through, except fields split between two reads
    missing = sorted(k for k in ref if k not in union and k not in ENVELOPE)
    if plan == "max":
        assert missing == [], missing
    else:
        straddling = {0x1200: ["cell_resistances_mohm"], 0x1000: [], 0x1400: ["device_passcode"]}[base]
        assert missing == straddling, missing
    if base == 0x1200:
        assert {"cell_voltages_v", "battery_voltage_v", "battery_current_a", "soc_percent", "t1_c"} <= set(union)


def test_fc03_pair_on_two_lines_and_bare_reply_with_register(decoded):
    fid, img = _image(0x1200)
    req, reply = _read(img, 0x1200, 0x1280, 33)  # MOS temperature .. FET states: the pack values
    one = parse_lines(run_tool(req + reply).stdout)[0]
    r = run_tool(stdin="%s\n%s\n" % (req, reply))  # as a sniffer logs it: request, then reply
    assert r.returncode == 0, r.stderr
    first, second = parse_lines(r.stdout)
    assert first["kind"] == "request" and first["register"] == 0x1280 and first["count"] == 33
    assert second == one
    bare = parse_lines(run_tool("--register", "0x1280", reply).stdout)[0]
    assert "count" not in bare and "request" not in bare  # nothing to take them from
    assert {k: v for k, v in one.items() if k not in ("request", "count")} == bare
    ref = decoded[fid]
    for key in ("battery_voltage_v", "battery_current_a", "battery_power_w", "soc_percent", "soh_percent",
                "power_tube_temp_c", "t1_c", "t2_c", "error_bitmask", "remaining_capacity_ah",
                "nominal_capacity_ah", "cycle_count", "total_runtime_s", "charging", "discharging"):
        assert bare[key] == ref[key], key
    # without a register a bare reply stays undecoded (as before)
    plain = parse_lines(run_tool(reply).stdout)[0]
    assert "block" not in plain and "battery_voltage_v" not in plain and plain["kind"] == "reply"


def test_fc03_partial_cells_and_unmatched_lines(decoded):
    fid, img = _image(0x1200)
    req, reply = _read(img, 0x1200, 0x1208, 8)  # cell slots 5..12 of an 8S pack
    out = parse_lines(run_tool(req + reply).stdout)[0]
    ref = decoded[fid]["cell_voltages_v"]
    assert len(ref) == 8
    assert out["cells_v"] == {str(n): ref[n - 1] if n <= 8 else 0.0 for n in range(5, 13)}
    assert "cell_voltages_v" not in out and "num_cells" not in out
    # a reply that does not answer the previous line's request is decoded as a bare reply
    other_req, _ = _read(img, 0x1200, 0x1290, 2)
    r = run_tool(stdin="%s\n%s\n" % (other_req, reply))
    assert r.returncode == 0, r.stderr
    assert "block" not in parse_lines(r.stdout)[1]


def test_fc03_bad_register_and_mismatched_pair():
    _, img = _image(0x1200)
    req, reply = _read(img, 0x1200, 0x1200, 4)
    for args, word in ((("--register", "0x1800", reply), "not inside a JK-PB register block"),
                       (("--register", "0x10000", reply), "16-bit"),
                       (("--register", "status", reply), "register number"),
                       ((_read(img, 0x1200, 0x1200, 5)[0] + reply,), "request for 5 registers")):
        r = run_tool(*args)
        assert r.returncode == 2 and r.stdout == "", (args, r.stdout)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and word in lines[0] and "Traceback" not in r.stderr, r.stderr
