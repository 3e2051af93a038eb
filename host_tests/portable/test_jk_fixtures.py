# Every real JK capture in host_tests/fixtures decodes, through the firmware
# library itself, to the values its source asserts. Runs under CPython and
# real MicroPython (unix and webassembly ports).

from fixtures import load_frames, unhex

from codec.errors import DecodeError
from jkbms import cellinfo, devinfo, jk04, logbook, nw, settings
from jkbms import frame as J
from pack import snapshot as S
from pack.snapshot import PackSnapshot

_FRAMES = None


def frames():
    global _FRAMES
    if _FRAMES is None:
        _FRAMES = load_frames()
    return _FRAMES


def close(a, b, tol):
    return abs(a - b) <= tol + 1e-9


# fixture key -> (snapshot getter, scale to the fixture unit, tolerance)
def _temp(i):
    return lambda s: s.temps[i]


SNAP_KEYS = {
    "total_voltage_v": (lambda s: s.pack_mv, 1000, 0.001),
    "current_a": (lambda s: s.current_ma, 1000, 0.001),
    "soc_pct": (lambda s: s.soc_pct, 1, 0),
    "soh_pct": (lambda s: s.soh_pct, 1, 0),
    "capacity_remaining_ah": (lambda s: s.remaining_mah, 1000, 0.001),
    "full_charge_capacity_ah": (lambda s: s.full_mah, 1000, 0.001),
    "cycle_count": (lambda s: s.cycles, 1, 0),
    "cycle_capacity_ah": (lambda s: s.cycle_mah, 1000, 0.001),
    "temp_mos_c": (_temp(S.T_MOS), 10, 0.05),
    "temp_1_c": (_temp(1), 10, 0.05),
    "temp_2_c": (_temp(2), 10, 0.05),
    "cell_count": (lambda s: s.cell_count, 1, 0),
    "cell_min_v": (lambda s: s.cell_min_mv, 1000, 0.001),
    "cell_max_v": (lambda s: s.cell_max_mv, 1000, 0.001),
    "cell_delta_v": (lambda s: s.cell_delta_mv, 1000, 0.001),
    "cell_min_index": (lambda s: s.cell_min_idx + 1, 1, 0),
    "cell_max_index": (lambda s: s.cell_max_idx + 1, 1, 0),
    "charging_mosfet": (lambda s: s.charge_fet, 1, 0),
    "discharging_mosfet": (lambda s: s.discharge_fet, 1, 0),
    "errors_bitmask": (lambda s: s.alarms, 1, 0),
    "balancing_action": (lambda s: s.balancing, 1, 0),
    "balance_current_a": (lambda s: s.balance_ma, 1000, 0.001),
    "total_runtime_s": (lambda s: s.runtime_s, 1, 0),
    "heating": (lambda s: s.heating, 1, 0),
}


def check_snapshot(fid, snap, expected, skip=()):
    checked = 0
    for key in expected:
        if key in skip:
            continue
        want = expected[key]
        if key == "cells_v":
            for num in want:
                got = snap.cells[int(num) - 1] / 1000
                assert close(got, want[num], 0.001), (fid, "cell", num, got, want[num])
            checked += 1
            continue
        if key not in SNAP_KEYS:
            continue
        get, scale, tol = SNAP_KEYS[key]
        got = get(snap) / scale
        if isinstance(want, bool):
            want = 1 if want else 0
        assert close(got, want, tol), (fid, key, got, want)
        checked += 1
    return checked


def decode_cell_frame(b):
    snap = PackSnapshot()
    layout = J.detect_layout(b)
    if layout == J.LAYOUT_JK04:
        jk04.decode(b, snap)
    else:
        cellinfo.decode(b, 6, layout, snap)
    return layout, snap


def test_every_55aa_frame_passes_its_checksum_and_type():
    n = 0
    for f in frames():
        if f["transport"] in ("ble", "rs485-modbus-55aa") and f["layout"] != "ALL":
            b = unhex(f["hex"])
            assert J.check_frame(b, len(b)) == f["expected"]["frame_type"], f["id"]
            n += 1
    assert n == 39


def test_cell_info_frames_decode_to_expected_values():
    n = 0
    for f in frames():
        exp = f["expected"]
        if f["layout"] in ("JK02_24S", "JK02_32S", "JK04") and exp.get("frame_type") == 2:
            b = unhex(f["hex"])
            layout, snap = decode_cell_frame(b)
            assert J.LAYOUT_NAMES[layout] == f["layout"], f["id"]
            # JK04 has no current: its balance_current is a float with a
            # looser tolerance (fixture note), compared below
            skip = ("balance_current_a",) if layout == J.LAYOUT_JK04 else ()
            assert check_snapshot(f["id"], snap, exp, skip) > 0 or layout == J.LAYOUT_JK04, f["id"]
            if layout == J.LAYOUT_JK04 and "balance_current_a" in exp:
                assert close(snap.balance_ma / 1000, exp["balance_current_a"], 0.05)
            if "total_voltage_v_sum_of_cells" in exp:
                # each cell is rounded to whole mV: the sum may drift by 0.5 mV a cell
                assert close(snap.pack_mv / 1000, exp["total_voltage_v_sum_of_cells"], 0.0005 * snap.cell_count)
            assert snap.updates == 1
            n += 1
    assert n == 19


def test_cell_info_extras_match_fixture_fields():
    for f in frames():
        exp = f["expected"]
        if f["layout"] in ("JK02_24S", "JK02_32S") and exp.get("frame_type") == 2:
            b = unhex(f["hex"])
            extra = cellinfo.describe_extra(b, 6, J.detect_layout(b))
            for key in ("cell_avg_v_field", "cell_delta_v_field", "temp_3_c", "temp_4_c", "temp_5_c",
                        "charge_status", "charge_status_time_s", "temp_sensor_present_mask",
                        "battery_type", "detail_log_count"):
                if key in exp:
                    assert close(extra[key], exp[key], 0.05 if key.startswith("temp") else 0.001), (f["id"], key)
            if "cell_mask" in exp:
                assert extra["enabled_cell_mask"] == exp["cell_mask"]
            if "wire_res_warn_mask" in exp:
                assert extra["wire_resistance_warning_mask"] == exp["wire_res_warn_mask"]
            for key in exp:
                if key.startswith("cell_resistance_"):
                    i = int(key.split("_")[2]) - 1
                    assert close(extra["cell_resistances_mohm"][i] / 1000, exp[key], 0.001), (f["id"], key)


def test_settings_frames_decode_to_expected_values():
    n = 0
    for f in frames():
        exp = f["expected"]
        if f["layout"] == "JK02_32S" and exp.get("frame_type") == 1:
            b = unhex(f["hex"])
            d = settings.describe(b)
            for key in exp:
                if key == "frame_type":
                    continue
                assert key in d, (f["id"], key)
                assert close(d[key], exp[key], 0.001), (f["id"], key, d[key], exp[key])
            snap = PackSnapshot()
            settings.decode(b, snap)
            assert snap.settings_ok == 1
            assert snap.cell_ovp_mv == round(exp["cell_ovp_v"] * 1000)
            assert snap.max_charge_ma == round(exp["max_charge_current_a"] * 1000)
            assert snap.max_discharge_ma == round(exp["max_discharge_current_a"] * 1000)
            assert snap.set_cell_count == exp["cell_count"]
            n += 1
    assert n == 4


def test_jk04_settings_and_cells():
    for f in frames():
        exp = f["expected"]
        if f["layout"] != "JK04":
            continue
        b = unhex(f["hex"])
        if exp["frame_type"] == 1:
            d = jk04.describe_settings(b)
            for key in exp:
                if key != "frame_type":
                    assert close(d[key], exp[key], 0.001), (f["id"], key)
        elif exp["frame_type"] == 2:
            d = jk04.describe_cells(b)
            if "cell_avg_v_field" in exp:
                assert close(d["cell_avg_v_field"], exp["cell_avg_v_field"], 0.001)
                assert close(d["cell_delta_v_field"], exp["cell_delta_v_field"], 0.001)
                assert d["cell_max_index_field"] == exp["max_cell_index_field_plus1"]
                assert d["cell_min_index_field"] == exp["min_cell_index_field_plus1"]
                assert close(d["cell_resistances_ohm"][0], exp["cell_resistance_1_ohm"], 0.001)
            if "balancing" in exp:
                assert d["balancing"] == exp["balancing"]


def test_device_info_frames():
    n = 0
    for f in frames():
        exp = f["expected"]
        if exp.get("frame_type") != 3:
            continue
        b = unhex(f["hex"])
        d = devinfo.describe(b)
        for key in exp:
            if key == "frame_type":
                continue
            if key == "serial_number_first8":
                assert d["serial_number"][:8] == exp[key], f["id"]
            else:
                assert close(d[key], exp[key], 0.001) if isinstance(exp[key], float) else d[key] == exp[key], \
                    (f["id"], key, d.get(key), exp[key])
        n += 1
    assert n == 14


def test_device_info_version_selects_layout():
    assert devinfo.layout_from_version("10.07") == J.LAYOUT_JK02_24S
    assert devinfo.layout_from_version("11.48") == J.LAYOUT_JK02_32S
    assert devinfo.layout_from_version("19.27") == J.LAYOUT_JK02_32S
    assert devinfo.layout_from_version("") == 0


def test_logbook_frame():
    for f in frames():
        if f["expected"].get("frame_type") == 5:
            d = logbook.describe(unhex(f["hex"]))
            assert d["log_count"] == f["expected"]["log_count"]
            assert d["entries"] == f["expected"]["entries"]
            return
    raise AssertionError("no logbook fixture")


def test_4e57_responses_decode_to_expected_values():
    n = 0
    for f in frames():
        if f["layout"] != "4E57":
            continue
        b = unhex(f["hex"])
        exp = f["expected"]
        d = nw.describe(b, len(b))
        if "register" in exp:  # the read-all request
            for key in exp:
                assert d[key] == exp[key], key
            assert bytes(b) == nw.READ_ALL
            continue
        snap = d["_snapshot"]
        check_snapshot(f["id"], snap, exp)
        for key in exp:
            if key in SNAP_KEYS or key == "cells_v":
                continue
            want = exp[key]
            name = "cell_count_field" if key == "cell_count" else key
            got = d[name]
            if isinstance(want, (int, float)) and not isinstance(want, bool):
                assert close(got, want, 0.001), (f["id"], key, got, want)
            else:
                assert got == want, (f["id"], key, got, want)
        n += 1
    assert n == 4


def test_4e57_settings_feed_the_snapshot():
    for f in frames():
        if f["id"] == "rs485_4e57_read_all_response_16s_v7_1_0h":
            b = unhex(f["hex"])
            snap = PackSnapshot()
            nw.decode(b, len(b), snap)
            assert snap.settings_ok == 1
            assert snap.cell_ovp_mv == 3650 and snap.cell_uvp_mv == 2650
            assert snap.max_charge_ma == 30000 and snap.max_discharge_ma == 60000
            assert snap.current_ma == -690
            assert snap.have & S.HAVE_SOH == 0  # 4E 57 carries no SOH
            return
    raise AssertionError("no fixture rs485_4e57_read_all_response_16s_v7_1_0h")


def test_rejected_frame_leaves_snapshot_unchanged():
    f = [x for x in frames() if x["id"] == "ble_jk02_32s_v15_cell_info"][0]
    good = unhex(f["hex"])
    snap = PackSnapshot()
    cellinfo.decode(good, 6, J.LAYOUT_JK02_32S, snap)
    before = (snap.pack_mv, snap.current_ma, snap.soc_pct, list(snap.cells), snap.updates)
    bad = bytearray(good)
    bad[6] = 0xFF  # cell 1 = 0x0CFF... then fix the checksum: still implausible?
    bad[7] = 0x7F  # 32767 mV: impossible cell voltage
    bad[299] = 0
    s = 0
    for i in range(299):
        s += bad[i]
    bad[299] = s & 0xFF
    assert J.check_frame(bad, 300) == 2
    try:
        cellinfo.decode(bad, 6, J.LAYOUT_JK02_32S, snap)
        raise AssertionError("accepted an impossible cell voltage: should have raised DecodeError")
    except DecodeError:
        pass
    assert (snap.pack_mv, snap.current_ma, snap.soc_pct, list(snap.cells), snap.updates) == before


def test_layout_detection_rejects_garbage():
    b = bytearray(300)
    try:
        J.detect_layout(b)
        raise AssertionError("should have raised DecodeError (all-zero frame: no layout)")
    except DecodeError:
        pass


def test_unpopulated_extra_sensors_do_not_skew_the_temperature():
    # v11.48 flags T4/T5 present (mask 0xFF) but reports 0.0: the mean of the
    # battery sensors must come from T1/T2 only (28.4 and 29.2 degC)
    for f in frames():
        if f["id"] == "ble_aio_jk02_32s_v11_48_cell_info":
            _, snap = decode_cell_frame(unhex(f["hex"]))
            assert snap.temps[4] == S.NO_TEMP and snap.temps[5] == S.NO_TEMP
            assert snap.avg_temp_dc() == (snap.temps[1] + snap.temps[2] + 1) // 2
            assert 280 <= snap.avg_temp_dc() <= 295
            return
    raise AssertionError("no fixture ble_aio_jk02_32s_v11_48_cell_info")
