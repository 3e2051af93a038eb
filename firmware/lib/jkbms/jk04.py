# JK04 (old hw 3.x devices, JK-B5A24S active balancer) float32 layout.
# These devices report cell voltages and balancing only: no current, SOC or
# temperatures, so a JK04 snapshot never suffices to serve an inverter
# (pack.snapshot.HAVE_FOR_INVERTER; docs/jk-bms.md "55AA frames").
# Float fields are converted to integer milli-units without float maths.

from codec.binary import u32le
from codec.errors import DecodeError
from codec.float32 import f32le_milli
from jkbms.frame import FRAME_LEN, LAYOUT_JK04
from pack import snapshot as S

_CELLS = 24


def _need_frame(buf):
    if len(buf) < FRAME_LEN:
        raise DecodeError("JK04 frame shorter than 300 bytes")


def _milli(buf, o, lo, hi):
    v = f32le_milli(buf, o)
    if v is None or not lo <= v <= hi:
        raise DecodeError("implausible JK04 float field")
    return v


def decode(buf, snap):
    """Cell voltages of a checksummed JK04 cell-info frame into snap."""
    _need_frame(buf)
    count = 0
    for i in range(_CELLS):
        if _milli(buf, 6 + 4 * i, 0, 5000) > 0:
            count = i + 1
    if count == 0:
        raise DecodeError("no cell voltages")
    bal = _milli(buf, 222, -100000, 100000)
    cells = snap.cells
    total = 0  # uV: the sum of the rounded mV cells can be off by count / 2 mV
    for i in range(S.MAX_CELLS):
        v = _milli(buf, 6 + 4 * i, 0, 5000) if i < count else 0
        cells[i] = v
        if v:
            total += f32le_milli(buf, 6 + 4 * i, 1000000)
    snap.cell_count = count
    snap.cell_stats()
    snap.pack_mv = (total + 500) // 1000
    snap.balancing = buf[220]
    snap.balance_ma = bal
    snap.runtime_s = u32le(buf, 286)
    snap.layout = LAYOUT_JK04
    snap.have = S.HAVE_CELLS | S.HAVE_PACK_V | S.HAVE_BALANCE | S.HAVE_RUNTIME
    snap.updates += 1


def describe_cells(buf):
    _need_frame(buf)
    cells = []
    res = []
    for i in range(_CELLS):
        v = _milli(buf, 6 + 4 * i, 0, 5000)
        if v:
            cells.append(v / 1000)
            res.append(_milli(buf, 102 + 4 * i, 0, 1000000) / 1000)
    return {
        "cell_voltages_v": cells,
        "cell_resistances_ohm": res,
        "cell_avg_v_field": _milli(buf, 202, 0, 5000) / 1000,
        "cell_delta_v_field": _milli(buf, 206, 0, 5000) / 1000,
        "enabled_cell_mask": u32le(buf, 214),
        "cell_max_index_field": buf[218] + 1,
        "cell_min_index_field": buf[219] + 1,
        "balance_status": buf[220],
        "balancing": buf[220] != 0,
        "balance_current_a": _milli(buf, 222, -100000, 100000) / 1000,
        "total_runtime_s": u32le(buf, 286),
    }


def describe_settings(buf):
    _need_frame(buf)
    return {
        "cell_count": buf[34],
        "power_off_voltage_v": _milli(buf, 38, 0, 100000) / 1000,
        "voltage_calibration": _milli(buf, 74, 0, 100000) / 1000,
        "balance_start_voltage_v": _milli(buf, 98, 0, 100000) / 1000,
        "balance_trigger_voltage_v": _milli(buf, 106, 0, 100000) / 1000,
        "max_balance_current_a": _milli(buf, 110, 0, 100000) / 1000,
        "balancer_enabled": buf[114] != 0,
    }
