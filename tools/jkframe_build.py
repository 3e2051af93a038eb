#!/usr/bin/env python3
"""Build JK-BMS frames from a battery state: JK02_32S 55AA frames (cell info,
settings, device info) and the "4E 57" read-all response.

Host-side only: the firmware never builds these. Used for the demo's sample
frames and by the BMS simulator (tools/jkbms_sim.py). The layouts are the ones
the firmware decodes (docs/jk-bms.md "55AA frames" and docs/jk-bms.md "4E 57"); tests
check the round trip.

cell_info_32s() and settings_32s() called with one argument build exactly the
frames they always built; extra=True (the simulator) also fills the fields a
state from tools/jk_decode.py carries beyond those (battery_voltage_v, t4_c /
t5_c, balancing, heating, cell resistances, every settings.TABLE field with a
default) and counter= sets the rolling frame counter (byte 5).

  python tools/jkframe_build.py --sample     # hex of a sample cell-info and
                                             # settings frame, one per line
"""
import argparse
import os
import struct
import sys

# run as `python tools/X.py`: the repository root (for the tools package) and
# firmware/lib (the firmware's own code) on sys.path
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for _p in (os.path.join(_ROOT, "firmware", "lib"), _ROOT):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from tools import cli  # noqa: E402

FRAME_LEN = 300
ABSENT_DC = -2000  # JK's "sensor absent" temperature (-200.0 degC)

# A 16S LFP pack of 280 Ah, charging at 20.5 A, nothing alarming.
SAMPLE_STATE = {
    "cell_voltages_v": [3.331, 3.329, 3.334, 3.330, 3.328, 3.333, 3.331, 3.332,
                        3.330, 3.329, 3.335, 3.331, 3.330, 3.332, 3.329, 3.331],
    "battery_current_a": 20.5,
    "soc_percent": 64,
    "soh_percent": 98,
    "remaining_capacity_ah": 179.2,
    "nominal_capacity_ah": 280.0,
    "cycle_count": 112,
    "cycle_capacity_ah": 31360.0,
    "total_runtime_s": 12096000,
    "power_tube_temp_c": 27.4,
    "t1_c": 21.3,
    "t2_c": 21.9,
    "error_bitmask": 0,
    "charging": True,
    "discharging": True,
}
SAMPLE_SETTINGS = {
    "cell_uvp_v": 2.70, "cell_uvpr_v": 2.90, "cell_ovp_v": 3.65, "cell_ovpr_v": 3.45,
    "rcv_v": 3.45, "rfv_v": 3.375, "power_off_v": 2.60, "max_charge_current_a": 150.0,
    "max_discharge_current_a": 200.0, "cell_count": 16, "charge_switch": True,
    "discharge_switch": True, "nominal_capacity_ah": 280.0, "device_address": 1,
}


def _finish(frame, ftype):
    frame[0:4] = b"\x55\xaa\xeb\x90"
    frame[4] = ftype
    frame[299] = sum(frame[:299]) & 0xFF
    return bytes(frame)


def _ms(v):
    return int(round(v * 1000))


def _dc(v):
    return int(round(v * 10))


def _temp_dc(state, key, extra):
    """0.1 degC of a temperature key; 25.0 degC when absent. With extra, an
    explicit None is a missing sensor (-200.0 degC, JK's "absent")."""
    if extra and key in state and state[key] is None:
        return ABSENT_DC
    return _dc(state.get(key, 25.0))


def cell_info_32s(state, extra=False, counter=0):
    f = bytearray(FRAME_LEN)
    cells = [_ms(v) for v in state["cell_voltages_v"]]
    for i, mv in enumerate(cells):
        struct.pack_into("<H", f, 6 + 2 * i, mv)
    struct.pack_into("<I", f, 70, (1 << len(cells)) - 1)
    struct.pack_into("<H", f, 74, round(sum(cells) / len(cells)))
    struct.pack_into("<H", f, 76, max(cells) - min(cells))
    f[78] = cells.index(max(cells))
    f[79] = cells.index(min(cells))
    pack_mv = sum(cells)
    if extra and state.get("battery_voltage_v") is not None:
        pack_mv = _ms(state["battery_voltage_v"])
    current_ma = _ms(state.get("battery_current_a", 0.0))
    struct.pack_into("<h", f, 144, _temp_dc(state, "power_tube_temp_c", extra))
    struct.pack_into("<I", f, 150, pack_mv)
    struct.pack_into("<I", f, 154, abs(pack_mv * current_ma) // 1000)
    struct.pack_into("<i", f, 158, current_ma)
    struct.pack_into("<h", f, 162, _temp_dc(state, "t1_c", extra))
    struct.pack_into("<h", f, 164, _temp_dc(state, "t2_c", extra))
    struct.pack_into("<I", f, 166, state.get("error_bitmask", 0))
    f[173] = state.get("soc_percent", 50)
    struct.pack_into("<i", f, 174, _ms(state.get("remaining_capacity_ah", 0.0)))
    struct.pack_into("<I", f, 178, _ms(state.get("nominal_capacity_ah", 0.0)))
    struct.pack_into("<I", f, 182, state.get("cycle_count", 0))
    struct.pack_into("<I", f, 186, _ms(state.get("cycle_capacity_ah", 0.0)))
    f[190] = state.get("soh_percent", 100)
    struct.pack_into("<I", f, 194, state.get("total_runtime_s", 0))
    f[198] = 1 if state.get("charging", True) else 0
    f[199] = 1 if state.get("discharging", True) else 0
    f[214] = 0x07  # MOS, T1, T2 present
    struct.pack_into("<H", f, 234, pack_mv // 10)
    if extra:
        _cell_info_extra(f, state, pack_mv)
    f[5] = counter & 0xFF
    return _finish(f, 0x02)


def _cell_info_extra(f, state, pack_mv):
    for i, r in enumerate(state.get("cell_resistances_mohm") or ()):
        if i < 32:
            struct.pack_into("<H", f, 80 + 2 * i, int(round(r)))
    struct.pack_into("<I", f, 146, int(state.get("wire_resistance_warning_mask", 0)))
    struct.pack_into("<h", f, 170, _ms(state.get("balance_current_a", 0.0)))
    f[172] = int(state.get("balance_status", 0))
    mask = 0x01
    for bit, key in ((0x02, "t1_c"), (0x04, "t2_c")):
        if not (key in state and state[key] is None):
            mask |= bit
    struct.pack_into("<h", f, 254, _temp_dc(state, "power_tube_temp_c", True))  # TempBat3 = MOS copy
    for bit, key, off in ((0x10, "t4_c", 256), (0x20, "t5_c", 258)):
        if state.get(key) is not None:
            struct.pack_into("<h", f, off, _dc(state[key]))
            mask |= bit
    f[214] = mask
    f[215] = 1 if state.get("heating", False) else 0
    struct.pack_into("<I", f, 246, (int(state.get("total_runtime_s", 0)) * 10) & 0xFFFFFFFF)
    f[275] = int(state.get("battery_type", 0))


def settings_32s(s, extra=False, counter=0):
    f = bytearray(FRAME_LEN)
    if extra:
        for name, off, kind, default in SETTINGS_EXTRA:
            _put_setting(f, off, kind, s.get(name, default))
    for name, off in (("cell_uvp_v", 10), ("cell_uvpr_v", 14), ("cell_ovp_v", 18), ("cell_ovpr_v", 22),
                      ("rcv_v", 38), ("rfv_v", 42), ("power_off_v", 46),
                      ("max_charge_current_a", 50), ("max_discharge_current_a", 62),
                      ("nominal_capacity_ah", 130)):
        struct.pack_into("<I", f, off, _ms(s.get(name, 0.0)))
    if extra and s.get("design_capacity_ah") is not None:
        struct.pack_into("<I", f, 130, _ms(s["design_capacity_ah"]))
    struct.pack_into("<I", f, 114, s.get("cell_count", 16))
    struct.pack_into("<I", f, 118, 1 if s.get("charge_switch", True) else 0)
    struct.pack_into("<I", f, 122, 1 if s.get("discharge_switch", True) else 0)
    struct.pack_into("<I", f, 270, s.get("device_address", 1))
    f[5] = counter & 0xFF
    return _finish(f, 0x01)


# settings frame fields beyond settings_32s()'s own, for extra=True:
# (name as jkbms.settings.TABLE names it, frame offset, kind, default of a
# 16S LFP JK-PB). Kinds: mV / mA (value in V / A), dC (degC, i32 0.1 degC),
# u32, bool, u16, i8, u8.
SETTINGS_EXTRA = (
    ("smart_sleep_v", 6, "mV", 3.30), ("balance_trigger_v", 26, "mV", 0.005),
    ("soc100_v", 30, "mV", 3.45), ("soc0_v", 34, "mV", 2.90),
    ("charge_ocp_delay_s", 54, "u32", 30), ("charge_ocp_recovery_s", 58, "u32", 60),
    ("discharge_ocp_delay_s", 66, "u32", 30), ("discharge_ocp_recovery_s", 70, "u32", 60),
    ("scp_recovery_s", 74, "u32", 5), ("max_balance_current_a", 78, "mA", 2.0),
    ("charge_otp_c", 82, "dC", 60.0), ("charge_otpr_c", 86, "dC", 55.0),
    ("discharge_otp_c", 90, "dC", 60.0), ("discharge_otpr_c", 94, "dC", 55.0),
    ("charge_utp_c", 98, "dC", 0.0), ("charge_utpr_c", 102, "dC", 5.0),
    ("mos_otp_c", 106, "dC", 100.0), ("mos_otpr_c", 110, "dC", 80.0),
    ("balancer_switch", 126, "bool", True), ("scp_delay_us", 134, "u32", 1500),
    ("balance_start_v", 138, "mV", 3.40), ("precharge_time_s", 274, "u32", 5),
    ("control_bitmask", 282, "u16", 0x0350), ("heating_start_c", 284, "i8", 60),
    ("heating_stop_c", 285, "i8", 50), ("smart_sleep_h", 286, "u8", 24),
    ("discharge_utp_c", 296, "i8", -20), ("discharge_utpr_c", 297, "i8", -10),
)


def _put_setting(f, off, kind, v):
    if kind == "mV" or kind == "mA":
        struct.pack_into("<I", f, off, _ms(v))
    elif kind == "dC":
        struct.pack_into("<i", f, off, _dc(v))
    elif kind == "bool":
        struct.pack_into("<I", f, off, 1 if v else 0)
    elif kind == "u16":
        struct.pack_into("<H", f, off, int(v))
    elif kind == "i8":
        struct.pack_into("<b", f, off, int(v))
    elif kind == "u8":
        f[off] = int(v) & 0xFF
    else:
        struct.pack_into("<I", f, off, int(v))


# Device info (frame type 0x03), docs/jk-bms.md "55AA frames": (name as jkbms.devinfo.TABLE names
# it, frame offset, size or kind, default).
DEVICE_INFO_FIELDS = (
    ("model", 6, 16, "JK_PB2A16S15P"), ("hw_version", 22, 8, "15A"), ("sw_version", 30, 8, "15.38"),
    ("uptime_s", 38, "u32", 0), ("power_on_count", 42, "u32", 7), ("device_name", 46, 16, "JK-SIM"),
    ("device_passcode", 62, 16, "1234"), ("manufacturing_date", 78, 8, "250101"),
    ("serial_number", 86, 11, "SIM00000001"), ("passcode", 97, 5, ""), ("user_data", 102, 16, ""),
    ("setup_passcode", 118, 16, "000000"), ("user_data2", 134, 16, ""),
    ("uart1_protocol", 184, "u8", 1), ("can_protocol", 185, "u8", 2), ("uart2_protocol", 218, "u8", 1),
    ("rcv_time_h", 266, "dh8", 5.0), ("rfv_time_h", 267, "dh8", 5.0),
)


def device_info_32s(info, counter=0):
    """Device-info ("about") frame, type 0x03, from {name: value} (names of
    jkbms.devinfo.TABLE; missing ones get the defaults above)."""
    f = bytearray(FRAME_LEN)
    for name, off, kind, default in DEVICE_INFO_FIELDS:
        v = info.get(name, default)
        if v is None:
            v = default
        if isinstance(kind, int):
            raw = str(v).encode("ascii", "replace")[:kind]
            f[off:off + len(raw)] = raw
        elif kind == "u32":
            struct.pack_into("<I", f, off, int(v) & 0xFFFFFFFF)
        elif kind == "dh8":
            f[off] = int(round(v * 10)) & 0xFF
        else:
            f[off] = int(v) & 0xFF
    f[5] = counter & 0xFF
    return _finish(f, 0x03)


# ------------------------------------------------------------------ "4E 57"

# JK02 alarm bit -> 0x8B warning bit (docs/jk-bms.md "Alarm bits"), by meaning
# JK02 bit -> 0x8B warning bit; 4E 57 has one battery over-temperature bit (4)
# for the JK02 charge / discharge OTP and the battery over-temperature alarm
JK02_TO_4E57_WARNING = {1: 1, 5: 2, 12: 3, 8: 4, 15: 4, 21: 4, 6: 5, 13: 6, 9: 9, 4: 10, 11: 11}


def temp_4e57(c):
    """Vendor temperature encoding: 0..100 degC as is, -1..-40 degC as
    100 + |t| (clamped to what the encoding can carry)."""
    t = int(round(c))
    if t >= 0:
        return min(t, 100)
    return 100 + min(-t, 40)


def current_4e57(a):
    """0x84 with protocol version 1: bit 15 = charging, bits 0-14 = 10 mA."""
    mag = min(int(round(abs(a) * 100)), 0x7FFF)
    return (0x8000 | mag) if a > 0 and mag else mag


def warnings_4e57(jk02_bits):
    w = 0
    for jb, nb in JK02_TO_4E57_WARNING.items():
        if jk02_bits & (1 << jb):
            w |= 1 << nb
    return w


def _text(v, n):
    raw = str(v).encode("ascii", "replace")[:n]
    return raw + b"\x00" * (n - len(raw))


def response_4e57(d, record=0):
    """Read-all response (command 0x06, source 0 = BMS, transport 1 =
    response) with the data items of a JK-B/BD BMS, in the order real ones
    send them, from a state dict merged with its settings (names as in
    tools/state_json.py and jkbms.settings; missing ones get defaults).
    0x83 pack voltage is battery_voltage_v when given, else the cell sum;
    0x8B holds the alarm bits of error_bitmask that have a 4E 57 warning bit
    (or nw_warnings verbatim); 0xC0 = 1 (current encoding version 1)."""
    cells = [_ms(v) for v in d["cell_voltages_v"]]
    n = len(cells)
    pack_mv = _ms(d["battery_voltage_v"]) if d.get("battery_voltage_v") is not None else sum(cells)

    def mv(key, default):
        return _ms(d.get(key, default))

    def a(key, default):
        return int(round(d.get(key, default)))

    ovp, uvp = mv("cell_ovp_v", 3.65), mv("cell_uvp_v", 2.70)
    set_cells = int(d.get("cell_count", n))
    status = (1 if d.get("charging", True) else 0) | (2 if d.get("discharging", True) else 0) \
        | (4 if d.get("balance_status", 0) else 0)
    warn = d["nw_warnings"] if "nw_warnings" in d else warnings_4e57(int(d.get("error_bitmask", 0)))
    design = d.get("design_capacity_ah")
    if design is None:
        design = d.get("nominal_capacity_ah", 0)
    data = bytearray(b"\x79" + bytes((3 * n,)))
    for i, c in enumerate(cells):
        data += struct.pack(">BH", i + 1, c)
    def temp(key):  # 4E 57 has no "sensor absent" value: an absent sensor reads 25 degC
        v = d.get(key)
        return temp_4e57(25.0 if v is None else v)

    items = (
        (0x80, ">H", temp("power_tube_temp_c")),
        (0x81, ">H", temp("t1_c")),
        (0x82, ">H", temp("t2_c")),
        (0x83, ">H", min((pack_mv + 5) // 10, 0xFFFF)),
        (0x84, ">H", current_4e57(d.get("battery_current_a", 0.0))),
        (0x85, ">B", int(d.get("soc_percent", 50))),
        (0x86, ">B", 2),
        (0x87, ">H", min(int(d.get("cycle_count", 0)), 0xFFFF)),
        (0x89, ">I", int(round(d.get("cycle_capacity_ah", 0)))),
        (0x8A, ">H", n),
        (0x8B, ">H", warn & 0xFFFF),
        (0x8C, ">H", status),
        (0x8E, ">H", ovp * set_cells // 10), (0x8F, ">H", uvp * set_cells // 10),
        (0x90, ">H", ovp), (0x91, ">H", mv("cell_ovpr_v", 3.45)), (0x92, ">H", 5),
        (0x93, ">H", uvp), (0x94, ">H", mv("cell_uvpr_v", 2.90)), (0x95, ">H", 5),
        (0x96, ">H", 300),
        (0x97, ">H", a("max_discharge_current_a", 200)), (0x98, ">H", 3),
        (0x99, ">H", a("max_charge_current_a", 150)), (0x9A, ">H", 5),
        (0x9B, ">H", mv("balance_start_v", 3.40)), (0x9C, ">H", mv("balance_trigger_v", 0.005)),
        (0x9D, ">B", 1 if d.get("balancer_switch", True) else 0),
        (0x9E, ">H", a("mos_otp_c", 90)), (0x9F, ">H", a("mos_otpr_c", 70)),
        (0xA0, ">H", 100), (0xA1, ">H", 100), (0xA2, ">H", 20),
        (0xA3, ">H", a("charge_otp_c", 60)), (0xA4, ">H", a("discharge_otp_c", 60)),
        (0xA5, ">h", a("charge_utp_c", 0)), (0xA6, ">h", a("charge_utpr_c", 5)),
        (0xA7, ">h", a("discharge_utp_c", -20)), (0xA8, ">h", a("discharge_utpr_c", -10)),
        (0xA9, ">B", set_cells), (0xAA, ">I", int(round(design))),
        (0xAB, ">B", 1 if d.get("charge_switch", True) else 0),
        (0xAC, ">B", 1 if d.get("discharge_switch", True) else 0),
        (0xAD, ">H", 1000), (0xAE, ">B", int(d.get("device_address", 1))),
        (0xAF, ">B", int(d.get("battery_type", 0))), (0xB0, ">H", 10), (0xB1, ">B", 20),
    )
    for ident, fmt, v in items:
        data += bytes((ident,)) + struct.pack(fmt, v)
    data += b"\xb2" + _text("123456", 10) + b"\xb3\x00" + b"\xb4" + _text(d.get("device_id", "JKSIM001"), 8)
    data += b"\xb5" + _text(d.get("mfg_date", "2501"), 4)
    data += b"\xb6" + struct.pack(">I", int(d.get("total_runtime_s", 0)) // 60)
    data += b"\xb7" + _text(d.get("software_version", "11.XW_S11.261__"), 15) + b"\xb8\x00"
    data += b"\xb9" + struct.pack(">I", int(round(d.get("nominal_capacity_ah", 0))))
    data += b"\xba" + _text(d.get("manufacturer_id", "JK-SIM-BMS"), 24) + b"\xc0\x01"
    frame = bytearray(b"\x4e\x57\x00\x00\x00\x00\x00\x00\x06\x00\x01") + data
    frame += struct.pack(">I", record) + b"\x68"
    struct.pack_into(">H", frame, 2, len(frame) + 4 - 2)
    frame += struct.pack(">I", sum(frame) & 0xFFFF)
    return bytes(frame)


def main(argv=None):
    ap = cli.ArgumentParser(prog="jkframe_build.py", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sample", action="store_true", help="print the sample cell-info and settings frames")
    args = ap.parse_args(argv)
    if not args.sample:
        ap.error("nothing to do (try --sample)")
    print(cell_info_32s(SAMPLE_STATE).hex())
    print(settings_32s(SAMPLE_SETTINGS).hex())
    return 0


if __name__ == "__main__":
    sys.exit(main())
