# The fields of a JK02 cell-info frame (or JK-PB status block) the snapshot does
# not keep, by name, for tools and the console: the gateway itself only needs
# jkbms.cellinfo.decode() (docs/jk-bms.md "55AA frames").

from codec.binary import i16be, i16le, u16be, u16le, u32be, u32le
from compat import const
from jkbms.cellinfo import offsets_for
from jkbms.frame import LAYOUT_JK02_24S, LAYOUT_PB_FC03

_NA = const(-1)  # field not in this layout

# Block offsets (55AA offset - 6) per layout, indexed by the _X* constants
_X_NCELLS = const(0)
_X_RES = const(1)
_X_SENSORS = const(2)
_X_MASK = const(3)
_X_AVG = const(4)
_X_DELTA = const(5)
_X_POWER = const(6)
_X_WIRE_WARN = const(7)
_X_T3 = const(8)
_X_T4 = const(9)
_X_T5 = const(10)
_X_HEAT = const(11)
_X_CHG_STAGE = const(12)
_X_STAGE_S = const(13)

_EXTRA_32S = (32, 74, 208, 64, 68, 70, 148, 140, 248, 250, 252, 209, 274, 272)
_EXTRA_24S = (24, 58, 176, 48, 52, 54, 116, 108, _NA, _NA, _NA, _NA, _NA, _NA)


def describe_extra(buf, base, layout):
    """Fields of a cell-info frame the snapshot does not keep, for tools and
    the console: {name: value} in V / A / W / degC / mOhm (allocates)."""
    offsets_for(layout)  # DecodeError for a layout without JK02 cell info
    off = _EXTRA_24S if layout == LAYOUT_JK02_24S else _EXTRA_32S
    be = layout == LAYOUT_PB_FC03
    r16 = u16be if be else u16le
    r32 = u32be if be else u32le
    ncells = off[_X_NCELLS]
    res = []
    for i in range(ncells):
        res.append(r16(buf, base + off[_X_RES] + 2 * i))
    out = {
        "cell_resistances_mohm": res,
        "enabled_cell_mask": r32(buf, base + off[_X_MASK]),
        "cell_avg_v_field": r16(buf, base + off[_X_AVG]) / 1000,
        "cell_delta_v_field": r16(buf, base + off[_X_DELTA]) / 1000,
        "power_w_field": r32(buf, base + off[_X_POWER]) / 1000,
        "wire_resistance_warning_mask": r32(buf, base + off[_X_WIRE_WARN]),
        "temp_sensor_present_mask": buf[base + off[_X_SENSORS]],
    }
    if layout != LAYOUT_JK02_24S:
        t = i16be if be else i16le
        out["temp_3_c"] = t(buf, base + off[_X_T3]) / 10
        out["temp_4_c"] = t(buf, base + off[_X_T4]) / 10
        out["temp_5_c"] = t(buf, base + off[_X_T5]) / 10
        out["heating"] = buf[base + off[_X_HEAT]] != 0
        out["charge_status"] = buf[base + off[_X_CHG_STAGE]]
        out["charge_status_time_s"] = r16(buf, base + off[_X_STAGE_S])
        out["battery_type"] = buf[base + 269]
        out["detail_log_count"] = r32(buf, base + 260)
    return out
