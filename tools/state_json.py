"""Battery states as JSON: the one state loader of the host tools, and JSON
state <-> pack.snapshot.PackSnapshot.

State files (read(), load()): a file holds one JSON object (it may span
several lines, e.g. pretty-printed), or JSON Lines: one JSON object on each
non-blank line. Nothing else (no arrays, no concatenated multi-line objects).
What the objects mean is the tool's business:
  * tools/can_frames.py --state: each object is one independent state (one
    frame set each); with --merge all of them are merged into one state;
  * tools/jkbms_sim.py and tools/simulate.py --state: the simulator serves
    one state, the merge of all objects (load());
  * tools/can_frames.py --series: each line is one point in time.
merge() rule: objects are merged in order and a later value wins, except
  * the keys that describe a capture rather than the battery (protocol,
    frame_type, frame_counter, crc_ok, raw_frame_hex, ack, request,
    confirmation: see tools/jk_decode.py) are dropped, and "layout" is only
    taken from an object with cell voltages;
  * in a settings object (frame_type 1, or BMS settings without cell
    voltages) nominal_capacity_ah is the BMS's design capacity: it becomes
    design_capacity_ah, and nominal_capacity_ah (the full-charge capacity of
    the cell info) only when no other object gives one.
So jk_decode.py's output for a cell-info and a settings frame (one object per
frame) merges into one state in either order.

The JSON schema follows tggo/jkbms-poll's cell-info output (names and units:
V, A, W, Ah, degC, %, s): num_cells, cell_voltages_v, cell_min_v, cell_max_v,
cell_delta_v, cell_avg_v, cell_min_num / cell_max_num (1-based),
battery_voltage_v, battery_current_a (+ = charge), battery_power_w (signed
V * I), power_tube_temp_c, t1_c ... t5_c (the battery sensors the snapshot
keeps), balance_current_a, balance_status, error_bitmask, soc_percent,
soh_percent, remaining_capacity_ah, nominal_capacity_ah (full-charge
capacity), cycle_count, cycle_capacity_ah, total_runtime_s, charging,
discharging; plus the BMS settings the limits need, named as
jkbms.settings.describe names them: cell_count, cell_ovp_v, cell_ovpr_v,
cell_uvp_v, cell_uvpr_v, rcv_v, rfv_v, max_charge_current_a,
max_discharge_current_a, charge_switch, discharge_switch, and
design_capacity_ah; and the protections the charge controller keeps inside
(read by dict_to_snapshot() only: jk_decode.py prints them from the frame's
own field table): charge_otp_c, charge_utp_c, discharge_otp_c,
discharge_utp_c, mos_otp_c (degC) and the 4E 57 pack_ovp_v, pack_uvp_v.
A threshold of 0 reads as not reported where the firmware's decoders read it
so (docs/jk-bms.md "Settings frames": an OTP of 0, a charge UTP of 0 with a
charge OTP of 0, a discharge UTP of 0 with its recovery 0), and so does one
outside -60..120 degC.

snapshot_to_dict() emits only what the snapshot holds (its `have` bits and
`settings_ok`); dict_to_snapshot() reads the same names back, rounding to the
snapshot's integer units (mV, mA, mAh, 0.1 degC), and derives the neutral
pack flags from error_bitmask as the firmware's decoders do. Derived values
(cell min / max / avg / delta, power) are recomputed, never read.
"""

import json
import os
import sys

# run as `python tools/X.py`: the repository root (for the tools package) and
# firmware/lib (the firmware's own code) on sys.path
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for _p in (os.path.join(_ROOT, "firmware", "lib"), _ROOT):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from jkbms.frame import LAYOUT_NAMES  # noqa: E402
from pack import flags as PF  # noqa: E402
from pack import snapshot as S  # noqa: E402


class StateError(ValueError):
    """A state file that cannot be read or is not in the format above."""


# keys of a tools/jk_decode.py object that describe the capture, not the battery
ENVELOPE_KEYS = ("protocol", "frame_type", "frame_counter", "crc_ok", "raw_frame_hex", "ack", "request",
                 "confirmation")


def parse(text):
    """The JSON objects of a state file's text: [(line number, dict)].
    Raises StateError with a one-line reason."""
    if not text.strip():
        raise StateError("state file is empty (no JSON object)")
    try:
        doc = json.loads(text)
    except ValueError:
        pass
    else:
        if not isinstance(doc, dict):
            raise StateError("a state must be a JSON object, not a JSON %s" % _json_kind(doc))
        first = next(i for i, line in enumerate(text.splitlines(), 1) if line.strip())
        return [(first, doc)]
    objs = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as e:
            raise StateError("line %d is not valid JSON (%s); a state file holds one JSON object or "
                             "JSON Lines, one object per line" % (lineno, e)) from None
        if not isinstance(obj, dict):
            raise StateError("line %d: a state must be a JSON object, not a JSON %s" % (lineno, _json_kind(obj)))
        objs.append((lineno, obj))
    return objs


def _json_kind(v):
    if isinstance(v, list):
        return "array"
    if isinstance(v, str):
        return "string"
    if v is None or isinstance(v, bool):
        return "literal"
    return "number"


def read_text(path):
    """The text of path ('-' = standard input); StateError if unreadable."""
    try:
        if path == "-":
            return sys.stdin.read()
        with open(path) as f:
            return f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise StateError("cannot read state: %s" % e) from None


def read(path):
    """[(line number, dict)] of the state file at path ('-' = stdin)."""
    return parse(read_text(path))


def is_settings_object(obj):
    """A settings frame's object (its nominal_capacity_ah is the design capacity)."""
    if obj.get("frame_type") == 1:
        return True
    return "cell_voltages_v" not in obj and any(k in obj for k in SETTINGS_REQUIRED)


def merge(objs):
    """One state from several objects (dicts), by the rule in the module doc."""
    out = {}
    design_nominal = None
    for obj in objs:
        settings_obj = is_settings_object(obj)
        for key, value in obj.items():
            if key in ENVELOPE_KEYS or (key == "layout" and "cell_voltages_v" not in obj):
                continue
            if settings_obj and key == "nominal_capacity_ah":
                if "design_capacity_ah" not in obj:
                    out["design_capacity_ah"] = value
                design_nominal = value
                continue
            out[key] = value
    if design_nominal is not None and "nominal_capacity_ah" not in out:
        out["nominal_capacity_ah"] = design_nominal
    return out


def load(path):
    """One state: the merge of every object in the state file at path."""
    return merge([obj for _, obj in read(path)])


# Battery temperature sensors: snapshot slot i <-> "t<i>_c"
TEMP_KEYS = ("power_tube_temp_c", "t1_c", "t2_c", "t3_c", "t4_c", "t5_c")

# settings fields: (JSON name, snapshot attribute, scale from the JSON unit)
SETTINGS = (
    ("cell_ovp_v", "cell_ovp_mv", 1000),
    ("cell_ovpr_v", "cell_ovpr_mv", 1000),
    ("cell_uvp_v", "cell_uvp_mv", 1000),
    ("cell_uvpr_v", "cell_uvpr_mv", 1000),
    ("rcv_v", "rcv_mv", 1000),
    ("rfv_v", "rfv_mv", 1000),
    ("max_charge_current_a", "max_charge_ma", 1000),
    ("max_discharge_current_a", "max_discharge_ma", 1000),
    ("design_capacity_ah", "design_mah", 1000),
)
# without these a state has no usable settings (limits stay at 0 A)
SETTINGS_REQUIRED = ("cell_ovp_v", "cell_uvp_v", "max_charge_current_a", "max_discharge_current_a")
# the BMS's own temperature protections (degC -> 0.1 degC) and the 4E 57 pack
# voltage protections (V -> mV), read with the settings: charge.policy stays
# inside them
TEMP_THRESHOLDS = (
    ("charge_otp_c", "charge_otp_dc"),
    ("charge_utp_c", "charge_utp_dc"),
    ("discharge_otp_c", "discharge_otp_dc"),
    ("discharge_utp_c", "discharge_utp_dc"),
    ("mos_otp_c", "mos_otp_dc"),
)
PACK_THRESHOLDS = (("pack_ovp_v", "pack_ovp_mv"), ("pack_uvp_v", "pack_uvp_mv"))
THRESHOLD_RANGE_DC = (-600, 1200)  # outside: not reported

_LAYOUT_IDS = {name: lid for lid, name in LAYOUT_NAMES.items()}


def snapshot_to_dict(snap):
    """The snapshot as a schema dict (fields it does not hold are absent)."""
    d = {}
    have = snap.have
    if have & S.HAVE_CELLS:
        n = snap.cell_count
        d["num_cells"] = n
        d["cell_voltages_v"] = [snap.cells[i] / 1000 for i in range(n)]
        d["cell_min_v"] = snap.cell_min_mv / 1000
        d["cell_max_v"] = snap.cell_max_mv / 1000
        d["cell_delta_v"] = snap.cell_delta_mv / 1000
        d["cell_avg_v"] = snap.cell_avg_mv / 1000
        d["cell_min_num"] = snap.cell_min_idx + 1
        d["cell_max_num"] = snap.cell_max_idx + 1
    if have & S.HAVE_PACK_V:
        d["battery_voltage_v"] = snap.pack_mv / 1000
    if have & S.HAVE_CURRENT:
        d["battery_current_a"] = snap.current_ma / 1000
        if have & S.HAVE_PACK_V:
            d["battery_power_w"] = snap.pack_mv * snap.current_ma / 1000000
    if have & S.HAVE_TEMPS:
        for i in range(S.TEMP_SLOTS):
            if snap.temps[i] != S.NO_TEMP:
                d[TEMP_KEYS[i]] = snap.temps[i] / 10
    if have & S.HAVE_BALANCE:
        d["balance_current_a"] = snap.balance_ma / 1000
        d["balance_status"] = snap.balancing
    if have & S.HAVE_ALARMS:
        d["error_bitmask"] = snap.alarms
    if have & S.HAVE_SOC:
        d["soc_percent"] = snap.soc_pct
    if have & S.HAVE_SOH:
        d["soh_percent"] = snap.soh_pct
    if have & S.HAVE_CAPACITY:
        d["remaining_capacity_ah"] = snap.remaining_mah / 1000
        d["nominal_capacity_ah"] = snap.full_mah / 1000
    if have & S.HAVE_CYCLES:
        d["cycle_count"] = snap.cycles
        d["cycle_capacity_ah"] = snap.cycle_mah / 1000
    if have & S.HAVE_RUNTIME:
        d["total_runtime_s"] = snap.runtime_s
    if have & S.HAVE_FETS:
        d["charging"] = bool(snap.charge_fet)
        d["discharging"] = bool(snap.discharge_fet)
    if snap.settings_ok:
        if snap.set_cell_count:
            d["cell_count"] = snap.set_cell_count
        for name, attr, scale in SETTINGS:
            d[name] = getattr(snap, attr) / scale
        d["charge_switch"] = bool(snap.charge_switch)
        d["discharge_switch"] = bool(snap.discharge_switch)
    return d


def _num(d, key):
    v = d[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError("%s must be a number, not %r" % (key, v))
    return v


def _scaled(d, key, scale):
    return int(round(_num(d, key) * scale))


def _flag(d, key):
    v = d[key]
    if not isinstance(v, (bool, int)):
        raise ValueError("%s must be true/false, not %r" % (key, v))
    return 1 if v else 0


def dict_to_snapshot(d, snap=None):
    """Fill (and return) a PackSnapshot from a schema dict. Each field group
    counts as present (snapshot `have` bit) when one of its keys is in d.
    Raises ValueError for a malformed value."""
    if snap is None:
        snap = S.PackSnapshot()
    else:
        snap.clear()
    have = 0
    if "cell_voltages_v" in d:
        cells = d["cell_voltages_v"]
        if not isinstance(cells, list) or not 0 < len(cells) <= S.MAX_CELLS:
            raise ValueError("cell_voltages_v must be a list of 1..%d voltages" % S.MAX_CELLS)
        for i, v in enumerate(cells):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 65.535:
                raise ValueError("cell_voltages_v[%d] is not a cell voltage: %r" % (i, v))
            snap.cells[i] = int(round(v * 1000))
        snap.cell_count = len(cells)
        snap.cell_stats()
        have |= S.HAVE_CELLS
    if "battery_voltage_v" in d:
        snap.pack_mv = _scaled(d, "battery_voltage_v", 1000)
        have |= S.HAVE_PACK_V
    if "battery_current_a" in d:
        snap.current_ma = _scaled(d, "battery_current_a", 1000)
        have |= S.HAVE_CURRENT
    for i, key in enumerate(TEMP_KEYS):
        if key in d and d[key] is not None:
            t = _scaled(d, key, 10)
            if not -32767 <= t <= 32767:
                raise ValueError("%s out of range" % key)
            snap.temps[i] = t
            have |= S.HAVE_TEMPS
    if "balance_current_a" in d or "balance_status" in d:
        if "balance_current_a" in d:
            snap.balance_ma = _scaled(d, "balance_current_a", 1000)
        if "balance_status" in d:
            snap.balancing = int(_num(d, "balance_status"))
        have |= S.HAVE_BALANCE
    if "error_bitmask" in d:
        snap.alarms = int(_num(d, "error_bitmask"))
        if not 0 <= snap.alarms <= 0xFFFFFFFF:
            raise ValueError("error_bitmask must be a 32-bit unsigned word")
        snap.flags = PF.from_jk02(snap.alarms)
        have |= S.HAVE_ALARMS
    if "soc_percent" in d:
        snap.soc_pct = int(round(_num(d, "soc_percent")))
        have |= S.HAVE_SOC
    if "soh_percent" in d:
        snap.soh_pct = int(round(_num(d, "soh_percent")))
        have |= S.HAVE_SOH
    if "remaining_capacity_ah" in d or "nominal_capacity_ah" in d:
        if "remaining_capacity_ah" in d:
            snap.remaining_mah = _scaled(d, "remaining_capacity_ah", 1000)
        if "nominal_capacity_ah" in d:
            snap.full_mah = _scaled(d, "nominal_capacity_ah", 1000)
        have |= S.HAVE_CAPACITY
    if "cycle_count" in d or "cycle_capacity_ah" in d:
        if "cycle_count" in d:
            snap.cycles = int(_num(d, "cycle_count"))
        if "cycle_capacity_ah" in d:
            snap.cycle_mah = _scaled(d, "cycle_capacity_ah", 1000)
        have |= S.HAVE_CYCLES
    if "total_runtime_s" in d:
        snap.runtime_s = int(_num(d, "total_runtime_s"))
        have |= S.HAVE_RUNTIME
    if "charging" in d or "discharging" in d:
        snap.charge_fet = _flag(d, "charging") if "charging" in d else 0
        snap.discharge_fet = _flag(d, "discharging") if "discharging" in d else 0
        have |= S.HAVE_FETS
    if "heating" in d:
        snap.heating = _flag(d, "heating")
    snap.have = have
    if have:
        snap.updates = 1
    layout = d.get("layout")
    if layout in _LAYOUT_IDS:
        snap.layout = _LAYOUT_IDS[layout]

    present = [k for k in SETTINGS_REQUIRED if k in d]
    if present and len(present) < len(SETTINGS_REQUIRED):
        missing = [k for k in SETTINGS_REQUIRED if k not in d]
        raise ValueError("incomplete settings: missing " + ", ".join(missing))
    if present:
        for name, attr, scale in SETTINGS:
            if name in d:
                setattr(snap, attr, _scaled(d, name, scale))
        if "cell_count" in d:
            snap.set_cell_count = int(_num(d, "cell_count"))
        # a BMS that does not report its switches leaves them to the MOSFETs
        snap.charge_switch = _flag(d, "charge_switch") if "charge_switch" in d else 1
        snap.discharge_switch = _flag(d, "discharge_switch") if "discharge_switch" in d else 1
        if not 0 < snap.cell_uvp_mv < snap.cell_ovp_mv:
            raise ValueError("settings: need 0 < cell_uvp_v < cell_ovp_v")
        _thresholds(d, snap)
        snap.settings_ok = 1
    return snap


def _thresholds(d, snap):
    """The BMS's temperature and pack-voltage protections of d into snap
    (NO_TEMP / 0 where d has none or reports none)."""
    got = {}
    for name, attr in TEMP_THRESHOLDS:
        t = S.NO_TEMP
        if d.get(name) is not None:
            t = _scaled(d, name, 10)
            if not THRESHOLD_RANGE_DC[0] <= t <= THRESHOLD_RANGE_DC[1]:
                t = S.NO_TEMP
        got[attr] = t
    # 0 = not reported, as the firmware's decoders read it (jkbms.settings)
    if got["charge_otp_dc"] == 0:
        got["charge_otp_dc"] = S.NO_TEMP
        if got["charge_utp_dc"] == 0:
            got["charge_utp_dc"] = S.NO_TEMP
    for attr in ("discharge_otp_dc", "mos_otp_dc"):
        if got[attr] == 0:
            got[attr] = S.NO_TEMP
    if got["discharge_utp_dc"] == 0 and not d.get("discharge_utpr_c"):
        got["discharge_utp_dc"] = S.NO_TEMP
    for attr, t in got.items():
        setattr(snap, attr, t)
    for name, attr in PACK_THRESHOLDS:
        setattr(snap, attr, _scaled(d, name, 1000) if d.get(name) is not None else 0)
