# Our Growatt native LV encoder (firmware/lib/protocols/growatt.py) decoded with our own DBC
# (docs/dbc/growatt.dbc) by cantools in strict mode: no public Growatt LV DBC exists, so the DBC is
# written from the protocol document's tables (docs/inverter-can.md "Growatt") and checked here for
# what a DBC can get wrong -- big-endian (Motorola) start bits, lengths, signedness, factors -- by
# round trips and by decoding encoder output generated from random snapshots, limits and flags
# (hypothesis). The expected values are computed here from the inputs with the documented scaling
# and clamping, independently of the encoder's helpers; the pack-flag -> T1..T4 table is written
# again by signal name (the portable test states it by byte and bit).
import string
import struct
import sys
from pathlib import Path

import cantools
from hypothesis import given, settings
from hypothesis import strategies as st

_REPO = Path(__file__).resolve().parents[2]
if str(_REPO / "firmware" / "lib") not in sys.path:
    sys.path.insert(0, str(_REPO / "firmware" / "lib"))

from charge.limits import Limits  # noqa: E402
from pack import flags as F  # noqa: E402
from pack import snapshot as S  # noqa: E402
from protocols import growatt as G  # noqa: E402

DBC_PATH = _REPO / "docs" / "dbc" / "growatt.dbc"
DB = cantools.database.load_file(str(DBC_PATH), strict=True)
ALL_FLAGS = (1 << 23) - 1

FLAG_TO_SIGNALS = {
    "CELL_OV": ("T1_Cell_Over_Voltage",), "PACK_OV": ("T1_Module_Over_Voltage",),
    "CELL_UV": ("T1_Cell_Under_Voltage",), "PACK_UV": ("T1_Module_Under_Voltage",),
    "CHARGE_OC": ("T1_Charge_Over_Current",), "CHARGE_SC": ("T1_Charge_Over_Current",),
    "DISCHARGE_OC": ("T1_Discharge_Over_Current",), "DISCHARGE_SC": ("T1_Discharge_Short_Circuit",),
    "CHARGE_OT": ("T2_Over_Temp_Charge",), "DISCHARGE_OT": ("T2_Over_Temp_Discharge",),
    "MOS_OT": ("T2_Over_Temp_Charge", "T2_Over_Temp_Discharge"),
    "CHARGE_UT": ("T2_Under_Temp_Charge",),
    "DISCHARGE_UT": ("T4_Under_Temp_Discharge",),
    "CELL_COUNT": ("T2_System_Error",), "CURRENT_SENSOR": ("T2_System_Error",),
    "INTERNAL_COMM": ("T2_System_Error", "T4_Internal_Comm_Fail"),
    "CHARGE_FET_FAULT": ("T2_System_Error",), "DISCHARGE_FET_FAULT": ("T2_System_Error",),
    "TEMP_SENSOR": ("T2_System_Error",),
    "BATTERY_OT_WARN": ("T4_Over_Temp_Charge", "T4_Over_Temp_Discharge"),
    "WIRE_RESISTANCE": (),
    "LINK_LOST": ("T2_System_Error", "T4_Internal_Comm_Fail"),
    "IMPLAUSIBLE": ("T2_System_Error",),
}
ALARM_SIGNALS = [s.name for s in DB.get_message_by_frame_id(0x312).signals if s.name[:2] in ("T1", "T2", "T3", "T4")]


def clamp(v, lo, hi):
    return max(lo, min(hi, v))


def rnd(x, d):  # half away from zero
    return (abs(x) + d // 2) // d * (1 if x >= 0 else -1)


def decode(enc, raw=True):
    out = {}
    for can_id, buf in zip(enc.ids, enc.frames, strict=True):
        assert len(buf) == 8
        out[can_id] = DB.decode_message(can_id, bytes(buf), decode_choices=False, scaling=not raw)
    return out


def test_dbc_loads_strict_with_dlc_8_and_covers_the_set():
    ids = {m.frame_id for m in DB.messages}
    assert ids == set(G.FRAME_IDS) | {0x301}
    for m in DB.messages:
        assert m.length == 8, m.name
        assert not m.is_extended_frame
        assert m.name.startswith("Growatt_")
        assert m.senders == (["INV"] if m.frame_id == 0x301 else ["BMS"]), m.name
        for s in m.signals:
            assert s.byte_order == "big_endian", (m.name, s.name)
        # every bit of every message belongs to a signal: all ones round-trip
        dec = DB.decode_message(m.frame_id, b"\xff" * 8, decode_choices=False, scaling=False)
        assert DB.encode_message(m.frame_id, dec, scaling=False, strict=False) == b"\xff" * 8, m.name
    assert {n.name for n in DB.nodes} == {"BMS", "INV"}


def test_query_frame():
    dec = DB.decode_message(0x301, b"\x11\x22\x33\x44\x55\x66\x77\x88")
    assert dec == {"Query": 0x1122334455667788}
    enc = G.GrowattEncoder()
    assert enc.on_rx(0x301, b"\x11\x22\x33\x44\x55\x66\x77\x88", 8, 0) == G.RX_REQUEST


def test_big_endian_start_bits_by_hand():
    """Values that differ in every byte land high byte first (catches an Intel / Motorola mix-up)."""
    data = DB.encode_message(0x311, {"CV_Charge_Voltage": 0x1234 / 10, "Charge_Current_Limit": 0x5678 / 10,
                                     "Discharge_Current_Limit": 0x9ABC / 10, "Status_State": 3,
                                     "Status_Error_Byte_Valid": 1, "Status_Cell_Balance": 0, "Status_Sleep": 0,
                                     "Status_Discharge_Enable": 1, "Status_Charge_Enable": 0,
                                     "Status_Terminal_Open": 1, "Status_Master_Box_Mode": 2,
                                     "Status_SP_State": 1, "Status_Reserved_12_15": 0})
    assert data.hex() == "123456789abc" "06" "a7"
    d = DB.decode_message(0x313, bytes.fromhex("14c9ff85011f3961"), decode_choices=False)
    assert round(d["Battery_Voltage"], 6) == 53.21 and round(d["Battery_Current"], 6) == -12.3
    assert round(d["Max_Cell_Temperature"], 6) == 28.7 and d["SOC"] == 57 and d["SOH"] == 97 and d["SOH_Flag"] == 0
    d = DB.decode_message(0x319, bytes.fromhex("e30cf30ce4100100"), decode_choices=False)
    assert (d["Chemistry"], d["Req_Force_Charge_I"], d["Req_Force_Charge_II"], d["Req_Charge_Enable"]) == (3, 1, 0, 1)
    assert (d["Max_Cell_Voltage"], d["Min_Cell_Voltage"], d["Max_Cell_Number"], d["Min_Cell_Number"]) == (
        3315, 3300, 16, 1)
    word = 37 | (41 << 6) | (19 << 12) | (28 << 17) | (11 << 22) | (25 << 26)
    d = DB.decode_message(0x320, b"JK\x01\x02" + struct.pack(">I", word))
    assert (d["Date_Year"], d["Date_Month"], d["Date_Day"], d["Date_Hour"], d["Date_Minute"], d["Date_Second"]) == (
        2025, 11, 28, 19, 41, 37)
    assert (d["Manufacturer_Char_1"], d["Manufacturer_Char_2"], d["HW_Version"], d["SW_Version"]) == (74, 75, 1, 2)


def test_flag_table_covers_every_neutral_flag():
    total = 0
    for name in FLAG_TO_SIGNALS:
        total |= getattr(F, name)
    assert total == ALL_FLAGS
    for sigs in FLAG_TO_SIGNALS.values():
        for s in sigs:
            assert s in ALARM_SIGNALS


def test_one_flag_at_a_time():
    snap = S.PackSnapshot()
    lim = Limits()
    enc = G.GrowattEncoder()
    for name, sigs in FLAG_TO_SIGNALS.items():
        enc.encode(snap, lim, getattr(F, name))
        d = decode(enc)
        on = {s for s in ALARM_SIGNALS if d[0x312][s]}
        assert on == set(sigs), name
        assert d[0x311]["Status_Error_Byte_Valid"] == (1 if sigs else 0), name


def expected_cells(snap):
    n = snap.cell_count
    real = snap.modules == 1 and n <= 16
    return [snap.cells[k] if real and k < n else 0 for k in range(16)]


cells_st = st.lists(st.integers(0, 5000), min_size=32, max_size=32)
temp_st = st.one_of(st.just(S.NO_TEMP), st.integers(-400, 1200))


@settings(max_examples=150, deadline=None)
@given(cell_count=st.integers(0, 32), cells=cells_st, cmin=st.integers(0, 70000), cmax=st.integers(0, 70000),
       imin=st.integers(0, 31), imax=st.integers(0, 31), pack_mv=st.integers(-500000, 500000),
       current_ma=st.integers(-5000000, 5000000), temps=st.lists(temp_st, min_size=6, max_size=6),
       soh=st.integers(0, 150), have_soh=st.booleans(), remaining=st.integers(0, 1000000),
       full=st.integers(0, 1000000), delta=st.integers(0, 70000), cycles=st.integers(0, 70000),
       modules=st.integers(0, 300), cfg_modules=st.sampled_from((0, 0, 1, 2, 32)),
       cvl=st.integers(0, 70000), ccl=st.integers(-100, 70000), dcl=st.integers(-100, 70000),
       soc=st.integers(0, 150), ce=st.booleans(), de=st.booleans(), fc=st.booleans(),
       flags=st.integers(0, ALL_FLAGS), chem=st.sampled_from(("LFP", "NMC", "LTO")),
       name=st.text(string.ascii_letters + string.digits + " -_", min_size=1, max_size=8))
def test_random_state_round_trips(cell_count, cells, cmin, cmax, imin, imax, pack_mv, current_ma, temps, soh,
                                  have_soh, remaining, full, delta, cycles, modules, cfg_modules, cvl, ccl, dcl,
                                  soc, ce, de, fc, flags, chem, name):
    snap = S.PackSnapshot()
    snap.cell_count = cell_count
    for i in range(32):
        snap.cells[i] = cells[i]
    snap.cell_min_mv, snap.cell_max_mv, snap.cell_min_idx, snap.cell_max_idx = cmin, cmax, imin, imax
    snap.pack_mv, snap.current_ma = pack_mv, current_ma
    for i in range(6):
        snap.temps[i] = temps[i]
    snap.soh_pct = soh
    snap.have = S.HAVE_SOH if have_soh else 0
    snap.remaining_mah, snap.full_mah, snap.cell_delta_mv, snap.cycles = remaining, full, delta, cycles
    snap.modules = modules
    lim = Limits()
    lim.cvl_dv, lim.ccl_da, lim.dcl_da, lim.soc_pct = cvl, ccl, dcl, soc
    lim.charge_enable, lim.discharge_enable, lim.force_charge = ce, de, fc
    enc = G.GrowattEncoder(name, cfg_modules, chem)
    enc.encode(snap, lim, flags)
    d = decode(enc)

    u16 = (0, 0xFFFF)
    m = d[0x311]
    assert (m["CV_Charge_Voltage"], m["Charge_Current_Limit"], m["Discharge_Current_Limit"]) == (
        clamp(cvl, *u16), clamp(ccl, *u16), clamp(dcl, *u16))
    state = 1 if abs(current_ma) < 1000 else (2 if current_ma > 0 else 3)
    alarms = {s for s in ALARM_SIGNALS if d[0x312][s]}
    want_alarms = set()
    for fname, sigs in FLAG_TO_SIGNALS.items():
        if flags & getattr(F, fname):
            want_alarms.update(sigs)
    assert alarms == want_alarms
    assert m == {"CV_Charge_Voltage": m["CV_Charge_Voltage"], "Charge_Current_Limit": m["Charge_Current_Limit"],
                 "Discharge_Current_Limit": m["Discharge_Current_Limit"], "Status_State": state,
                 "Status_Error_Byte_Valid": 1 if want_alarms else 0, "Status_Cell_Balance": 0, "Status_Sleep": 0,
                 "Status_Discharge_Enable": int(de), "Status_Charge_Enable": int(ce), "Status_Terminal_Open": 0,
                 "Status_Master_Box_Mode": 0, "Status_SP_State": 0, "Status_Reserved_12_15": 0}

    m = d[0x312]
    assert m["Pack_Count"] == clamp(cfg_modules or modules, 1, 254)
    assert m["Manufacturer_Code"] == (ord(name[0]) << 8) | ord((name + " ")[1])
    assert m["Cell_Count"] == cell_count

    battery = [t for t in temps[1:] if t != S.NO_TEMP]
    m = d[0x313]
    assert m == {"Battery_Voltage": clamp(rnd(pack_mv, 10), -32768, 32767),
                 "Battery_Current": clamp(rnd(current_ma, 100), -32768, 32767),
                 "Max_Cell_Temperature": max(battery) if battery else 0,
                 "SOC": clamp(soc, 0, 100), "SOH": clamp(soh, 0, 100) if have_soh else 100, "SOH_Flag": 0}

    assert d[0x314] == {"Remaining_Capacity": clamp(rnd(remaining, 10), *u16),
                        "Full_Capacity": clamp(rnd(full, 10), *u16),
                        "Cell_Delta_Voltage": clamp(delta, *u16), "Cycle_Count": clamp(cycles, *u16)}

    got = []
    for k in range(4):
        got += [d[0x315 + k]["Cell_%02d_Voltage" % (4 * k + j + 1)] for j in range(4)]
    assert got == expected_cells(snap)

    m = d[0x319]
    assert m == {"Chemistry": ("LFP", "NMC", "LTO").index(chem), "Req_Reserved_b2": 0, "Req_Reserved_b3": 0,
                 "Req_Force_Charge_II": 0, "Req_Force_Charge_I": int(fc), "Req_Discharge_Enable": int(de),
                 "Req_Charge_Enable": int(ce), "Max_Cell_Voltage": clamp(cmax, *u16),
                 "Min_Cell_Voltage": clamp(cmin, *u16), "Max_Cell_Number": imax + 1 if cell_count else 0,
                 "Min_Cell_Number": imin + 1 if cell_count else 0, "Faulty_Pack_Id": 0}

    m = d[0x320]
    assert (m["Manufacturer_Char_1"], m["Manufacturer_Char_2"]) == (ord(name[0]), ord((name + " ")[1]))
    assert (m["HW_Version"], m["SW_Version"]) == (1, 1)
    assert all(m[k] == 0 for k in ("Date_Second", "Date_Minute", "Date_Hour", "Date_Day", "Date_Month", "Date_Year"))
    assert d[0x321] == {"Update_Status": 0}

    # the DBC's factors give the physical values back (where nothing was clamped)
    p = decode(enc, raw=False)
    if abs(pack_mv) < 300000:
        assert abs(p[0x313]["Battery_Voltage"] - pack_mv / 1000) <= 0.005 + 1e-9
    if abs(current_ma) < 3000000:
        assert abs(p[0x313]["Battery_Current"] - current_ma / 1000) <= 0.05 + 1e-9
    if battery:
        assert abs(p[0x313]["Max_Cell_Temperature"] - max(battery) / 10) < 1e-9
    if remaining < 655000:
        assert abs(p[0x314]["Remaining_Capacity"] - remaining / 1000) <= 0.005 + 1e-9
    if cvl < 65535:
        assert abs(p[0x311]["CV_Charge_Voltage"] - cvl / 10) < 1e-9
    assert p[0x320]["Date_Year"] == 2000  # no clock: the zero word


def test_values_from_the_dbc_encode_back_to_the_encoder_bytes():
    """The other direction: decode a frame set, encode it with the DBC, same bytes."""
    snap = S.PackSnapshot()
    snap.cell_count = 16
    for i in range(16):
        snap.cells[i] = 3200 + 7 * i
    snap.cell_stats()
    snap.pack_mv, snap.current_ma, snap.temps[2] = 52480, 45600, 312
    snap.remaining_mah, snap.full_mah, snap.cycles = 99990, 100000, 12
    lim = Limits()
    lim.cvl_dv, lim.ccl_da, lim.dcl_da, lim.soc_pct, lim.charge_enable = 560, 500, 1000, 99, True
    enc = G.GrowattEncoder("JK-BMS", 0, "LFP")
    enc.encode(snap, lim, F.CELL_OV | F.LINK_LOST)
    for can_id, buf in zip(enc.ids, enc.frames, strict=True):
        dec = DB.decode_message(can_id, bytes(buf), decode_choices=False, scaling=False)
        assert DB.encode_message(can_id, dec, scaling=False) == bytes(buf), hex(can_id)
