# Every data item of a "4E 57" read-all response by name, for tools and the
# console (docs/jk-bms.md "4E 57"); the gateway itself only needs
# jkbms.nw.decode().

from codec.binary import ascii_field, u16be, u32be
from jkbms.nw import _item_len, _temp_dc, check_frame, decode
from pack import snapshot as S

# id -> (name, kind) for describe(); kinds: V10 (10 mV), MV, A, C (temperature),
# INT, BOOL, TEXT
_DESCRIBE = {
    0x80: ("temp_mos_c", "C"), 0x81: ("temp_1_c", "C"), 0x82: ("temp_2_c", "C"),
    0x83: ("total_voltage_v", "V10"), 0x85: ("soc_pct", "INT"), 0x86: ("temp_sensor_count", "INT"),
    0x87: ("cycle_count", "INT"), 0x89: ("cycle_capacity_ah", "INT"), 0x8A: ("cell_count_field", "INT"),
    0x8B: ("warnings_bitmask", "INT"), 0x8C: ("status_bitmask", "INT"),
    0x8E: ("pack_ovp_v", "V10"), 0x8F: ("pack_uvp_v", "V10"), 0x90: ("cell_ovp_v", "MV"),
    0x91: ("cell_ovpr_v", "MV"), 0x92: ("cell_ovp_delay_s", "INT"), 0x93: ("cell_uvp_v", "MV"),
    0x94: ("cell_uvpr_v", "MV"), 0x95: ("cell_uvp_delay_s", "INT"), 0x96: ("cell_diff_protection_v", "MV"),
    0x97: ("discharge_ocp_a", "INT"), 0x98: ("discharge_ocp_delay_s", "INT"), 0x99: ("charge_ocp_a", "INT"),
    0x9A: ("charge_ocp_delay_s", "INT"), 0x9B: ("balance_start_v", "MV"), 0x9C: ("balance_delta_v", "MV"),
    0x9D: ("balancer_switch", "BOOL"), 0x9E: ("mos_otp_c", "INT"), 0x9F: ("mos_otpr_c", "INT"),
    0xA0: ("box_otp_c", "INT"), 0xA1: ("box_otpr_c", "INT"), 0xA2: ("temp_diff_protection_c", "INT"),
    0xA3: ("charge_otp_c", "INT"), 0xA4: ("discharge_otp_c", "INT"), 0xA5: ("charge_utp_c", "S16"),
    0xA6: ("charge_utpr_c", "S16"), 0xA7: ("discharge_utp_c", "S16"), 0xA8: ("discharge_utpr_c", "S16"),
    0xA9: ("cell_count_setting", "INT"), 0xAA: ("capacity_setting_ah", "INT"),
    0xAB: ("charge_switch", "BOOL"), 0xAC: ("discharge_switch", "BOOL"),
    0xAD: ("current_calibration_ma", "INT"), 0xAE: ("board_address", "INT"), 0xAF: ("battery_type", "INT"),
    0xB0: ("sleep_wait_s", "INT"), 0xB1: ("low_capacity_alarm_pct", "INT"), 0xB2: ("parameter_password", "TEXT"),
    0xB3: ("dedicated_charger_switch", "BOOL"), 0xB4: ("device_id", "TEXT"), 0xB5: ("mfg_date", "TEXT"),
    0xB6: ("total_runtime_min", "INT"), 0xB7: ("software_version", "TEXT"),
    0xB8: ("start_current_calibration", "INT"), 0xB9: ("actual_capacity_ah", "INT"),
    0xBA: ("manufacturer_id", "TEXT"), 0xC0: ("protocol_version", "INT"),
}


def describe(buf, n):
    """Every data item of a read-all response as {name: value}. Requests
    (no data items) describe their header fields."""
    total = check_frame(buf, n)
    out = {"command": buf[8], "frame_source": buf[9], "transport_type": buf[10]}
    if buf[10] == 0:
        out["register"] = buf[11]
        return out
    snap = S.PackSnapshot()
    decode(buf, n, snap)
    end = total - 9
    p = 11
    raw_current = 0
    while p < end:
        ident = buf[p]
        v = p + 1
        size = _item_len(buf, p, end)
        p = v + size
        if ident == 0x79:
            continue
        if ident == 0x84:
            raw_current = u16be(buf, v)
            continue
        item = _DESCRIBE.get(ident)
        if item is None:
            continue
        name, kind = item
        if kind == "TEXT":
            out[name] = ascii_field(buf, v, size)
            continue
        x = buf[v] if size == 1 else (u16be(buf, v) if size == 2 else u32be(buf, v))
        if kind == "C":
            out[name] = _temp_dc(x) / 10
        elif kind == "V10":
            out[name] = x / 100
        elif kind == "MV":
            out[name] = x / 1000
        elif kind == "BOOL":
            out[name] = x != 0
        elif kind == "S16":
            out[name] = x - 0x10000 if x & 0x8000 else x
        else:
            out[name] = x
    out["current_raw"] = raw_current
    out["current_a"] = snap.current_ma / 1000
    st = out.get("status_bitmask", 0)
    out["charging_mosfet_status"] = bool(st & 1)
    out["discharging_mosfet_status"] = bool(st & 2)
    out["balancer_status"] = bool(st & 4)
    out["_snapshot"] = snap
    return out
