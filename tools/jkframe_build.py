#!/usr/bin/env python3
"""Build JK02_32S 55AA frames (cell info, settings) from a battery state.

Host-side only: the firmware never builds these. Used for the demo's sample
frames and, later, by the BMS simulator. The layout is the one the firmware
decodes (spec/jk-bms-protocols.md 2.6 / 2.7); tests check the round trip.

  python tools/jkframe_build.py --sample     # hex of a sample cell-info and
                                             # settings frame, one per line
"""
import argparse
import struct
import sys

FRAME_LEN = 300

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


def cell_info_32s(state):
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
    current_ma = _ms(state.get("battery_current_a", 0.0))
    struct.pack_into("<h", f, 144, int(round(state.get("power_tube_temp_c", 25.0) * 10)))
    struct.pack_into("<I", f, 150, pack_mv)
    struct.pack_into("<I", f, 154, abs(pack_mv * current_ma) // 1000)
    struct.pack_into("<i", f, 158, current_ma)
    struct.pack_into("<h", f, 162, int(round(state.get("t1_c", 25.0) * 10)))
    struct.pack_into("<h", f, 164, int(round(state.get("t2_c", 25.0) * 10)))
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
    return _finish(f, 0x02)


def settings_32s(s):
    f = bytearray(FRAME_LEN)
    for name, off in (("cell_uvp_v", 10), ("cell_uvpr_v", 14), ("cell_ovp_v", 18), ("cell_ovpr_v", 22),
                      ("rcv_v", 38), ("rfv_v", 42), ("power_off_v", 46),
                      ("max_charge_current_a", 50), ("max_discharge_current_a", 62),
                      ("nominal_capacity_ah", 130)):
        struct.pack_into("<I", f, off, _ms(s.get(name, 0.0)))
    struct.pack_into("<I", f, 114, s.get("cell_count", 16))
    struct.pack_into("<I", f, 118, 1 if s.get("charge_switch", True) else 0)
    struct.pack_into("<I", f, 122, 1 if s.get("discharge_switch", True) else 0)
    struct.pack_into("<I", f, 270, s.get("device_address", 1))
    return _finish(f, 0x01)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sample", action="store_true", help="print the sample cell-info and settings frames")
    args = ap.parse_args(argv)
    if not args.sample:
        ap.error("nothing to do (try --sample)")
    print(cell_info_32s(SAMPLE_STATE).hex())
    print(settings_32s(SAMPLE_SETTINGS).hex())
    return 0


if __name__ == "__main__":
    sys.exit(main())
