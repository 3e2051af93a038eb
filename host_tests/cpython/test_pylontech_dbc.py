# Our Pylontech LV CAN V1.2 encoder (firmware/lib/protocols/pylon.py) checked against an
# independent reference: the plewka DBC in ../shared/dbc (third-party, GPL: read from there, never
# copied), decoded with cantools in strict mode. Without ../shared/dbc beside the checkout the whole
# file is skipped, with the reason shown in the pytest summary. Where the DBC is silent (0x351 bytes
# 6-7 DVL, 0x359 'P' 'N' bytes 5-6, the DLC of 8) the frames are checked against the spec tables
# (docs/inverter-can.md "Pylontech").
#
# The firmware's path is exercised as it runs: decoder -> PackSnapshot (alarms = the JK word,
# flags = pack.flags) -> charge.policy.ChargePolicy(app.config defaults).decide(snap, FRESH or
# STALE, now) -> PylonEncoder.encode(snap, policy.lim, policy.lim.flags) -> frames -> DBC. The
# policy holds CCL = DCL = 0 for hold_s after the start and then ramps: every decision here is
# taken on a virtual clock once that is over (tools/can_frames.settle: one decision per CAN period
# until both limits are at their target), and a stale decision one period after that.
#
#   * every JK02 cell-info fixture (plus its settings fixture where one exists, else settings set
#     by hand) and every 4E 57 response, fresh and stale: the DBC values equal the values put in,
#     and agree with the fixture's own expected values;
#   * hypothesis-generated snapshots, limits, enables and flags: the encoder places exactly what
#     it is given (it decides nothing), including the clamping of 16-bit fields;
#   * the real US5000 capture decodes to its documented values, and a snapshot built to match it
#     encodes to the same bytes;
#   * JK alarm bits -> pack.flags -> 0x359 per docs/charge-control.md "Alarms", one JK bit and one
#     neutral flag at a time, and the BMS-link-lost rule (system error + internal communication
#     fail, CCL = DCL = 0 with reason "BMS data stale", enables off; "stop" sends nothing); data
#     the policy finds implausible raises the system error (flag IMPLAUSIBLE) with 0 A.
import json
import sys
from pathlib import Path

import cantools
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

_REPO = Path(__file__).resolve().parents[2]
if str(_REPO / "firmware" / "lib") not in sys.path:
    sys.path.insert(0, str(_REPO / "firmware" / "lib"))

DBC_PATH = _REPO.parent / "shared" / "dbc" / "pylontech_plewka_PylontechUSX00C_CAN2MQTT.dbc"
if not DBC_PATH.is_file():
    pytest.skip("../shared/dbc is absent (%s not found): the third-party Pylontech DBC is not part of the "
                "repository, so the DBC cross-check of the encoder is skipped" % DBC_PATH,
                allow_module_level=True)

import protocol_cases  # noqa: E402

from app import config as C  # noqa: E402
from charge import limits as L  # noqa: E402
from charge import plausible, texts  # noqa: E402
from charge.policy import ChargePolicy  # noqa: E402
from charge.state import FLOAT  # noqa: E402
from jkbms import cellinfo, nw  # noqa: E402
from jkbms import frame as J  # noqa: E402
from jkbms import settings as jk_settings  # noqa: E402
from pack import flags as F  # noqa: E402
from pack import snapshot as S  # noqa: E402
from protocols import pylon as P  # noqa: E402
from sources.base import FRESH, STALE  # noqa: E402
from tools import can_frames  # noqa: E402

DB = cantools.database.load_file(str(DBC_PATH), strict=True)
FIXTURES = json.loads((_REPO / "host_tests" / "fixtures" / "jk_frames.json").read_text())

NAMES = {0x351: "BMS_DC_Parameter", 0x355: "BMS_State", 0x356: "BMS_Battery", 0x359: "BMS_Alarm_Warn",
         0x35C: "BMS_Charge", 0x35E: "BMS_Manufacturer_ASCII"}

ALARM_SIGNALS = {  # signal -> bit of the 32-bit 0x359 word (Pylon V1.2 bit table)
    "Alarm_Over_Voltage": 1, "Alarm_Under_Voltage": 2, "Alarm_Over_Temperature": 3,
    "Alarm_Under_Temperature": 4, "Alarm_Over_Current_Discharge": 7, "Alarm_Over_Current_Charge": 8,
    "Alarm_Internal": 11, "Warn_High_Voltage": 17, "Warn_Low_Voltage": 18, "Warn_High_Temperature": 19,
    "Warn_Low_Temperature": 20, "Warn_High_Current_Discharge": 23, "Warn_High_Current_Charge": 24,
    "Warn_Internal": 27,
}
# docs/charge-control.md "Alarms": JK02 alarm bit -> DBC signal of 0x359
JK_TO_SIGNAL = {
    4: "Alarm_Over_Voltage", 5: "Alarm_Over_Voltage",            # cell OVP, pack OVP
    11: "Alarm_Under_Voltage", 12: "Alarm_Under_Voltage",        # cell UVP, pack UVP
    1: "Alarm_Over_Temperature", 8: "Alarm_Over_Temperature",    # MOS OTP, charge OTP
    15: "Alarm_Over_Temperature",                                # discharge OTP
    9: "Alarm_Under_Temperature",                                # charge UTP
    13: "Alarm_Over_Current_Discharge", 14: "Alarm_Over_Current_Discharge",  # discharge OCP / SCP
    6: "Alarm_Over_Current_Charge", 7: "Alarm_Over_Current_Charge",          # charge OCP / SCP
    2: "Alarm_Internal", 3: "Alarm_Internal", 10: "Alarm_Internal",          # cell count, sensor, comm
    16: "Alarm_Internal", 17: "Alarm_Internal", 22: "Alarm_Internal",        # MOSFETs, temp sensor
    21: "Warn_High_Temperature",                                 # battery over-temperature alarm
    27: "Warn_Low_Temperature",                                  # discharge under-temperature alarm
}
# the same rule on the neutral flags (pack.flags) the encoder reads; every flag is listed, so a new
# flag fails test_flag_table_covers_every_neutral_flag until its 0x359 meaning is decided
FLAG_TO_SIGNALS = {
    "CELL_OV": ("Alarm_Over_Voltage",), "PACK_OV": ("Alarm_Over_Voltage",),
    "CELL_UV": ("Alarm_Under_Voltage",), "PACK_UV": ("Alarm_Under_Voltage",),
    "MOS_OT": ("Alarm_Over_Temperature",), "CHARGE_OT": ("Alarm_Over_Temperature",),
    "DISCHARGE_OT": ("Alarm_Over_Temperature",),
    "CHARGE_UT": ("Alarm_Under_Temperature",),
    "DISCHARGE_OC": ("Alarm_Over_Current_Discharge",), "DISCHARGE_SC": ("Alarm_Over_Current_Discharge",),
    "CHARGE_OC": ("Alarm_Over_Current_Charge",), "CHARGE_SC": ("Alarm_Over_Current_Charge",),
    "CELL_COUNT": ("Alarm_Internal",), "CURRENT_SENSOR": ("Alarm_Internal",),
    "INTERNAL_COMM": ("Alarm_Internal",), "CHARGE_FET_FAULT": ("Alarm_Internal",),
    "DISCHARGE_FET_FAULT": ("Alarm_Internal",), "TEMP_SENSOR": ("Alarm_Internal",),
    "BATTERY_OT_WARN": ("Warn_High_Temperature",),
    "DISCHARGE_UT": ("Warn_Low_Temperature",),
    "WIRE_RESISTANCE": (),  # no safety meaning for the inverter
    "LINK_LOST": ("Alarm_Internal", "Warn_Internal"),  # system error + communication fail
    "IMPLAUSIBLE": ("Alarm_Internal",),  # set by charge.plausible: system error
}
ALL_FLAGS = (1 << 23) - 1
PERIOD_MS = C.defaults()["can_period_ms"]
REQ_FORCE = 0x10  # 0x35C byte 0 bit 4, "force charge II" (docs/inverter-can.md "Pylontech"; not in the DBC)


# ----------------------------------------------------------------------------------- helpers


def encode(snap, lim, flags, name="PYLON", modules=1):
    enc = P.PylonEncoder(name, modules)
    enc.encode(snap, lim, flags)
    frames = {}
    for can_id, buf in zip(enc.ids, enc.frames, strict=True):
        assert len(buf) == P.DLC == 8  # DLC 8, zero-padded (docs/inverter-can.md "Pylontech")
        frames[can_id] = bytes(buf)
    assert set(frames) == set(NAMES)
    assert enc.ids[0] == 0x35E  # name first
    return frames


def policy_for(**over):
    msgs = []
    cfg = C.validate(over, msgs)  # the firmware's own validation (chemistry presets included) ...
    assert not msgs and all(cfg[k] == v for k, v in over.items()), msgs  # ... accepts it as it is
    return ChargePolicy(cfg, 0)


def chemistry(snap):
    """The chemistry a gateway on this pack is configured for: NMC when the BMS's own cell OVP is
    above LFP's range (the 13S / 14S 4E 57 packs), else LFP (the default)."""
    return "NMC" if snap.cell_ovp_mv > 3650 else "LFP"


def decide(snap, stale, policy=None):
    """The firmware's decision for snap on a fresh or stale link, after the hold and the ramp:
    charge.policy fills lim. Stale: the next period's decision, on the same data gone stale."""
    policy = policy or policy_for()
    t = can_frames.settle(policy, snap, policy.cfg, PERIOD_MS)
    fresh = (policy.lim.cvl_dv, policy.lim.dvl_dv)
    if stale:
        # link_loss "zeros" still sends -- unless no valid data set was ever seen (implausible from the
        # first frame): then nothing goes out at all (docs/charge-control.md "Plausibility")
        assert policy.decide(snap, STALE, t + PERIOD_MS) is policy.valid_once
    check_policy(snap, policy, stale, fresh)
    return policy.lim


def implausible(policy, stale):
    """The decision raised the IMPLAUSIBLE flag (fresh data that failed a plausibility check)."""
    return not stale and policy.implausible != plausible.OK


def encode_decided(snap, stale, policy=None, name="PYLON", modules=1):
    policy = policy or policy_for()
    lim = decide(snap, stale, policy)
    return encode(snap, lim, lim.flags, name, modules), lim, implausible(policy, stale)


def check_policy(snap, policy, stale, fresh_cvl_dvl):
    """What charge.policy must have decided, as far as the frames are concerned: 0 A with the
    link-lost flag and CVL / DVL of the last fresh decision when stale; 0 A with the implausible
    flag for implausible data; otherwise limits within the user's and 0.9 x the BMS's maxima and a
    CVL within the BMS's protection; the enables follow the current limits (and DVL); the SOC is at
    most 99 % outside float (docs/charge-control.md "SOC shaping")."""
    lim = policy.lim
    cfg = policy.cfg
    assert lim.soc_pct == (snap.soc_pct if policy.ctl.state == FLOAT else min(snap.soc_pct, 99))
    if stale:
        assert (lim.ccl_da, lim.dcl_da) == (0, 0)
        assert lim.charge_reason == lim.discharge_reason == L.STALE
        assert texts.REASONS[lim.charge_reason] == "BMS data stale"
        assert lim.flags == snap.flags | F.LINK_LOST
        assert not lim.charge_enable and not lim.discharge_enable and not lim.force_charge
        assert (lim.cvl_dv, lim.dvl_dv) == fresh_cvl_dvl  # still sent when stale
        return
    assert not lim.flags & F.LINK_LOST
    if policy.implausible != plausible.OK:
        assert lim.flags == snap.flags | F.IMPLAUSIBLE
        assert (lim.ccl_da, lim.dcl_da) == (0, 0)
        assert lim.charge_reason == lim.discharge_reason == L.IMPLAUSIBLE
    else:
        assert lim.flags == snap.flags
        assert 0 <= lim.ccl_da <= min(cfg["max_charge_a"] * 10, snap.max_charge_ma * 9 // 10 // 100)
        assert 0 <= lim.dcl_da <= min(cfg["max_discharge_a"] * 10, snap.max_discharge_ma * 9 // 10 // 100)
        n = snap.cell_count
        cap = n * (snap.cell_ovp_mv - cfg["ovp_margin_mv"])
        if snap.cell_ovpr_mv:
            cap = min(cap, n * snap.cell_ovpr_mv)
        assert lim.cvl_dv * 100 <= cap
        assert lim.dvl_dv * 100 >= n * (snap.cell_uvp_mv + cfg["dvl_margin_mv"])
    assert lim.charge_enable == (lim.ccl_da > 0)
    assert lim.discharge_enable == (lim.dcl_da > 0 and snap.pack_mv > lim.dvl_dv * 100)
    assert not lim.force_charge or lim.charge_enable


def dbc(frames, scaling=True):
    return {i: DB.decode_message(i, frames[i], decode_choices=False, scaling=scaling) for i in NAMES}


def s16(v):
    return -32768 if v < -32768 else (32767 if v > 32767 else v)


def div_round(x, d):
    return (x + d // 2) // d if x >= 0 else -((-x + d // 2) // d)


def expected_temp(snap):
    """The battery sensors' mean; 0 without one (never the MOSFET sensor's)."""
    present = [snap.temps[i] for i in range(1, S.TEMP_SLOTS) if snap.temps[i] != S.NO_TEMP]
    if present:
        return div_round(sum(present), len(present))
    return 0


def expected_alarm_word(jk, link_lost=False, implausible=False):
    """0x359 bytes 0-3 for a JK02 alarm word, from the JK-bit table alone (+ link lost: system
    error and communication fail; + implausible data: system error)."""
    w = 0
    for bit, sig in JK_TO_SIGNAL.items():
        if jk >> bit & 1:
            w |= 1 << ALARM_SIGNALS[sig]
    if link_lost:
        w |= 1 << ALARM_SIGNALS["Alarm_Internal"] | 1 << ALARM_SIGNALS["Warn_Internal"]
    if implausible:
        w |= 1 << ALARM_SIGNALS["Alarm_Internal"]
    return w


def expected_flag_word(flags):
    """0x359 bytes 0-3 for pack.flags, from the neutral-flag table alone."""
    w = 0
    for name, sigs in FLAG_TO_SIGNALS.items():
        if flags & getattr(F, name):
            for sig in sigs:
                w |= 1 << ALARM_SIGNALS[sig]
    return w


def check_frames(frames, snap, lim, word, name="PYLON", modules=1):
    """Every value the frames carry equals the value put in (raw DBC units, exact); word is the
    expected 0x359 alarm word."""
    raw = dbc(frames, scaling=False)
    # 0x351
    assert raw[0x351]["Battery_Charge_Voltage"] == lim.cvl_dv
    assert raw[0x351]["Charge_Current_Limitation"] == s16(lim.ccl_da)
    assert raw[0x351]["Discharge_Current_Limitation"] == s16(lim.dcl_da)
    assert int.from_bytes(frames[0x351][6:8], "little") == lim.dvl_dv  # DVL, not in the DBC
    # 0x355: the SOC as the policy shaped it
    soh = snap.soh_pct if snap.have & S.HAVE_SOH else 100
    assert (raw[0x355]["SOC"], raw[0x355]["SOH"]) == (lim.soc_pct, soh)
    assert frames[0x355][4:] == bytes(4)
    # 0x356
    assert raw[0x356]["Battery_Voltage"] == s16(div_round(snap.pack_mv, 10))
    assert raw[0x356]["Battery_Current"] == s16(div_round(snap.current_ma, 100))
    assert raw[0x356]["Battery_Temperature"] == expected_temp(snap)
    assert frames[0x356][6:] == bytes(2)
    # 0x359
    for sig, bit in ALARM_SIGNALS.items():
        assert raw[0x359][sig] == (word >> bit & 1), sig
    assert int.from_bytes(frames[0x359][0:4], "little") == word  # nothing outside the table
    assert raw[0x359]["Pack_Nr"] == (modules or snap.modules)  # 0 = auto: the packs online
    assert frames[0x359][5:8] == b"PN\x00"  # 'P' 'N' (not in the DBC), reserved 0
    # 0x35C: the enables as decided (the encoder adds no rule of its own)
    assert raw[0x35C]["Charge_Enable"] == (1 if lim.charge_enable else 0)
    assert raw[0x35C]["Discharge_Enable"] == (1 if lim.discharge_enable else 0)
    assert raw[0x35C]["Charge_Immediately"] == 0
    assert bool(frames[0x35C][0] & REQ_FORCE) == bool(lim.force_charge)
    assert frames[0x35C][1:] == bytes(7) and frames[0x35C][0] & 0x2F == 0
    # 0x35E
    letters = bytes(raw[0x35E][c] for c in "abcdefgh")
    assert letters == name.encode().ljust(8, b" ")
    return raw


# ----------------------------------------------------------------------------------- fixtures

_BY_ID = {f["id"]: f for f in FIXTURES}
_SETTINGS_FOR = {
    "ble_jk02_32s_v11_17_cell_info_alarm_bit4": "ble_jk02_32s_v11_17_settings",
    "rs485_pb_status_0x1620_response_dsb": "rs485_pb_settings_0x161e_response_dsb",
    "rs485_pb_status_response_with_ack_mpp": "rs485_pb_settings_response_with_ack_mpp",
}
JK02_CELL_IDS = [f["id"] for f in FIXTURES if f["layout"] in ("JK02_24S", "JK02_32S")
                 and f["hex"][:8] == "55aaeb90" and int(f["hex"][8:10], 16) == J.TYPE_CELL_INFO]
NW_IDS = [f["id"] for f in FIXTURES if f["layout"] == "4E57" and bytes.fromhex(f["hex"])[10] != 0]


def test_fixture_selection():
    assert len(JK02_CELL_IDS) >= 14
    assert set(_SETTINGS_FOR) <= set(JK02_CELL_IDS)
    assert len(NW_IDS) == 4


def _settings_by_hand(snap):
    """Plausible BMS settings for a pack without a settings fixture (LFP or NMC by cell voltage)."""
    nmc = snap.cell_max_mv > 3650
    snap.settings_ok = 1
    snap.set_cell_count = snap.cell_count
    snap.cell_uvp_mv, snap.cell_uvpr_mv = (3000, 3200) if nmc else (2800, 3000)
    snap.cell_ovp_mv, snap.cell_ovpr_mv = (4200, 4100) if nmc else (3650, 3550)
    snap.rcv_mv, snap.rfv_mv = (4100, 4000) if nmc else (3450, 3375)
    snap.max_charge_ma, snap.max_discharge_ma = 100000, 150000
    snap.charge_switch = snap.discharge_switch = 1
    snap.design_mah = 100000


def fixture_snapshot(fid):
    b = bytes.fromhex(_BY_ID[fid]["hex"])
    snap = S.PackSnapshot()
    if _BY_ID[fid]["layout"] == "4E57":
        nw.decode(b, len(b), snap)  # carries its own settings
        return snap
    b = b[:300]
    J.check_frame(b, 300)
    cellinfo.decode(b, 6, J.detect_layout(b), snap)
    if fid in _SETTINGS_FOR:
        jk_settings.decode(bytes.fromhex(_BY_ID[_SETTINGS_FOR[fid]]["hex"])[:300], snap)
    else:
        _settings_by_hand(snap)
    return snap


@pytest.mark.parametrize("fid", JK02_CELL_IDS + NW_IDS)
@pytest.mark.parametrize("link_lost", (False, True))
def test_fixture_frames_decode_through_dbc(fid, link_lost):
    snap = fixture_snapshot(fid)
    assert snap.flags == F.from_jk02(snap.alarms)  # the decoder sets the neutral flags
    policy = policy_for(chemistry=chemistry(snap))
    frames, lim, bad = encode_decided(snap, link_lost, policy)
    check_frames(frames, snap, lim, expected_alarm_word(snap.alarms, link_lost, bad))

    # and against the fixture's own expected values, in physical units through the DBC
    exp = _BY_ID[fid]["expected"]
    phys = dbc(frames)
    if "soc_pct" in exp:
        assert phys[0x355]["SOC"] == min(exp["soc_pct"], 99)  # 100 % only after an absorption
    if "soh_pct" in exp:
        assert phys[0x355]["SOH"] == exp["soh_pct"]
    if "total_voltage_v" in exp:
        assert phys[0x356]["Battery_Voltage"] == pytest.approx(exp["total_voltage_v"], abs=0.0051)
    if "current_a" in exp:
        assert phys[0x356]["Battery_Current"] == pytest.approx(exp["current_a"], abs=0.051)
    if "errors_bitmask" in exp:
        w = expected_alarm_word(exp["errors_bitmask"], link_lost, bad)
        assert all(phys[0x359][s] == (w >> b & 1) for s, b in ALARM_SIGNALS.items())
    if exp.get("charging_mosfet") is False or exp.get("charging_mosfet_status") is False:
        assert phys[0x351]["Charge_Current_Limitation"] == 0 and phys[0x35C]["Charge_Enable"] == 0
    if exp.get("discharging_mosfet") is False or exp.get("discharging_mosfet_status") is False:
        assert phys[0x351]["Discharge_Current_Limitation"] == 0 and phys[0x35C]["Discharge_Enable"] == 0
    # CVL / DVL from the BMS's own per-cell settings and the configured bulk voltage: the lowest of
    # bulk_cell_mv, RCV, OVP - margin and OVPR per cell (when no cell is above it: else the auto-CVL
    # penalty may lower it), DVL = (UVP + margin) per cell, rounded up -- kept as they were when
    # stale; data never plausible has no CVL / DVL to keep
    cfg = policy.cfg
    n = snap.cell_count
    bulk = min(v for v in (cfg["bulk_cell_mv"], snap.rcv_mv, snap.cell_ovp_mv - cfg["ovp_margin_mv"],
                           snap.cell_ovpr_mv) if v)
    if snap.pack_ovp_mv:  # a 4E 57 pack OVP, by the same margin per cell
        bulk = min(bulk, (snap.pack_ovp_mv - cfg["ovp_margin_mv"] * n) // n)
    dvl = n * (snap.cell_uvp_mv + cfg["dvl_margin_mv"])
    if snap.pack_uvp_mv:
        dvl = max(dvl, snap.pack_uvp_mv + cfg["dvl_margin_mv"] * n)
    if bad or (link_lost and policy.implausible != plausible.OK):
        assert (lim.cvl_dv, lim.dvl_dv) == (0, 0)
    else:
        assert int.from_bytes(frames[0x351][6:8], "little") == -(-dvl // 100)
        if snap.cell_max_mv <= bulk:
            assert phys[0x351]["Battery_Charge_Voltage"] == pytest.approx(bulk * n // 100 / 10)
        else:
            assert phys[0x351]["Battery_Charge_Voltage"] <= bulk * n / 1000 + 1e-6
    if link_lost:
        assert phys[0x359]["Alarm_Internal"] == 1 and phys[0x359]["Warn_Internal"] == 1
        assert phys[0x351]["Charge_Current_Limitation"] == 0
        assert phys[0x351]["Discharge_Current_Limitation"] == 0
        assert phys[0x35C]["Charge_Enable"] == 0 and phys[0x35C]["Discharge_Enable"] == 0


def test_some_fixture_packs_get_nonzero_limits():
    # the fixture test above must also see packs the gateway lets charge / discharge, or its
    # link-lost assertions would prove nothing
    snaps = [fixture_snapshot(fid) for fid in JK02_CELL_IDS + NW_IDS]
    lims = [decide(s, False, policy_for(chemistry=chemistry(s))) for s in snaps]
    assert sum(1 for lim in lims if lim.ccl_da > 0 and lim.charge_enable) >= 3
    assert sum(1 for lim in lims if lim.dcl_da > 0 and lim.discharge_enable) >= 3
    # ... and every real capture is plausible data for a gateway set to its chemistry
    assert not [lim for lim in lims if lim.flags & F.IMPLAUSIBLE]


# ----------------------------------------------------------------------- generated snapshots

_TEMP = st.one_of(st.just(S.NO_TEMP), st.integers(-400, 1000))
_NAME = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789-", min_size=1, max_size=8)


@st.composite
def snapshots(draw):
    s = S.PackSnapshot()
    s.cell_count = draw(st.integers(1, S.MAX_CELLS))
    for i in range(s.cell_count):
        s.cells[i] = draw(st.integers(2000, 4300))
    s.cell_stats()
    s.pack_mv = draw(st.one_of(st.integers(0, 80000), st.integers(0, 400000)))
    s.current_ma = draw(st.one_of(st.integers(-300000, 300000), st.integers(-4000000, 4000000)))
    s.soc_pct = draw(st.integers(0, 100))
    s.soh_pct = draw(st.integers(0, 100))
    s.have = S.HAVE_FOR_INVERTER | (S.HAVE_SOH if draw(st.booleans()) else 0)
    for i in range(S.TEMP_SLOTS):
        s.temps[i] = draw(_TEMP)
    s.alarms = draw(st.one_of(st.just(0), st.integers(0, 0xFFFFFFFF)))
    s.flags = F.from_jk02(s.alarms)  # as every decoder sets them
    return s


def limits():
    return protocol_cases.limits(st.one_of(st.just(0), st.just(F.LINK_LOST), st.just(F.IMPLAUSIBLE),
                                           st.integers(0, ALL_FLAGS)))


@settings(deadline=None, max_examples=300)
@given(snapshots(), limits(), _NAME, st.integers(0, 255))
def test_generated_values_decode_through_dbc(snap, lim, name, modules):
    # the encoder only places values: limits, enables and flags exactly as given, whatever they are
    frames = encode(snap, lim, lim.flags, name, modules)
    check_frames(frames, snap, lim, expected_flag_word(lim.flags), name, modules)
    phys = dbc(frames)  # and the scaled values
    assert phys[0x351]["Battery_Charge_Voltage"] == pytest.approx(lim.cvl_dv / 10)
    assert phys[0x356]["Battery_Voltage"] == pytest.approx(s16(div_round(snap.pack_mv, 10)) / 100)
    assert phys[0x356]["Battery_Current"] == pytest.approx(s16(div_round(snap.current_ma, 100)) / 10)


@settings(deadline=None, max_examples=150)
@given(snapshots(), st.integers(1000, 4500), st.integers(0, 200), st.integers(0, 200), st.booleans())
def test_decided_limits_decode_through_dbc(snap, rcv, cap_chg_a, cap_dsg_a, stale):
    # charge.policy output round-trips too (values stay inside the 16-bit fields), fresh and stale
    snap.settings_ok = 1
    snap.cell_uvp_mv, snap.cell_ovp_mv, snap.cell_ovpr_mv = 2500, 4400, 4300
    snap.rcv_mv = rcv
    snap.max_charge_ma, snap.max_discharge_ma = 1000000, 1000000
    snap.charge_switch = snap.discharge_switch = snap.charge_fet = snap.discharge_fet = 1
    policy = policy_for(max_charge_a=cap_chg_a, max_discharge_a=cap_dsg_a)
    frames, lim, bad = encode_decided(snap, stale, policy)
    check_frames(frames, snap, lim, expected_alarm_word(snap.alarms, stale, bad))
    if not stale and lim.charge_reason == L.USER_MAX:
        assert lim.ccl_da == cap_chg_a * 10  # 0.9 x 1000 A is above every cap drawn


# ------------------------------------- US5000 capture (docs/inverter-can.md "Pylontech")

US5000 = protocol_cases.US5000


def test_us5000_capture_decodes_via_dbc():
    d = {i: DB.decode_message(i, US5000[i], decode_choices=False) for i in NAMES}
    assert d[0x351]["Battery_Charge_Voltage"] == pytest.approx(53.2)
    assert d[0x351]["Charge_Current_Limitation"] == pytest.approx(480.0)
    assert d[0x351]["Discharge_Current_Limitation"] == pytest.approx(480.0)
    assert int.from_bytes(US5000[0x351][6:8], "little") == 450  # DVL 45.0 V (spec table)
    assert (d[0x355]["SOC"], d[0x355]["SOH"]) == (88, 94)
    assert d[0x356]["Battery_Voltage"] == pytest.approx(49.86)
    assert d[0x356]["Battery_Current"] == pytest.approx(-27.0)
    assert d[0x356]["Battery_Temperature"] == pytest.approx(36.3)
    assert d[0x359]["Pack_Nr"] == 6
    assert all(d[0x359][s] == 0 for s in ALARM_SIGNALS)
    assert US5000[0x359][5:7] == b"PN"
    assert (d[0x35C]["Charge_Enable"], d[0x35C]["Discharge_Enable"], d[0x35C]["Charge_Immediately"]) == (1, 1, 0)
    assert bytes(d[0x35E][c] for c in "abcdefgh") == b"PYLON   "
    # and the value table names the letters
    named = DB.decode_message(0x35E, US5000[0x35E])
    assert "".join(str(named[c]) for c in "abcdefgh") == "PYLON   "


def _us5000_snapshot():
    s = S.PackSnapshot()
    s.cell_count = 16
    for i in range(16):
        s.cells[i] = 3116 if i < 12 else 3117  # 49.860 V
    s.cell_stats()
    s.pack_mv = 49860
    s.current_ma = -27000
    s.soc_pct, s.soh_pct = 88, 94
    s.temps[1] = 363
    s.temps[S.T_MOS] = 401  # not used: a battery sensor is present
    s.alarms = s.flags = 0
    s.design_mah = 600000  # 6 modules of 100 Ah (Pack_Nr 6)
    s.charge_fet = s.discharge_fet = 1
    s.have = S.HAVE_FOR_INVERTER | S.HAVE_SOH | S.HAVE_TEMPS | S.HAVE_ALARMS | S.HAVE_CELLS
    return s


def _with_settings(s):
    # BMS settings that give the real pack's CVL and DVL
    s.settings_ok = 1
    s.set_cell_count = 16
    s.rcv_mv = 3325            # 16 x 3.325 = 53.2 V
    s.cell_ovp_mv, s.cell_ovpr_mv = 3650, 3450
    s.cell_uvp_mv = 2612       # (2.612 + 0.2) x 16 = 44.992 V, rounded up (the safe side): 45.0 V
    s.max_charge_ma = s.max_discharge_ma = 200000
    s.charge_switch = s.discharge_switch = 1
    return s


def test_us5000_snapshot_encodes_to_capture():
    snap = _us5000_snapshot()
    lim = L.Limits()
    lim.cvl_dv, lim.ccl_da, lim.dcl_da, lim.dvl_dv = 532, 4800, 4800, 450
    lim.charge_enable = lim.discharge_enable = True
    lim.soc_pct = 88  # 0x355 carries the policy's (shaped) SOC
    frames = encode(snap, lim, 0, name="PYLON", modules=6)
    for i in (0x351, 0x355, 0x356, 0x359, 0x35C, 0x35E):
        cap = US5000[i]
        assert frames[i][:len(cap)] == cap, hex(i)
        assert frames[i][len(cap):] == bytes(8 - len(cap))  # our DLC-8 zero padding
    check_frames(frames, snap, lim, 0, name="PYLON", modules=6)


def test_us5000_with_decided_limits():
    # the same pack with BMS settings and the firmware's decision: CVL and DVL match the real
    # pack, CCL / DCL differ by design (0.9 x the BMS maximum, capped by the user maximum)
    snap = _with_settings(_us5000_snapshot())
    cfg = C.defaults()
    frames, lim, bad = encode_decided(snap, False, modules=6)
    assert not bad and lim.charge_enable and lim.discharge_enable
    cap = US5000[0x351]
    assert frames[0x351][0:2] == cap[0:2] and frames[0x351][6:8] == cap[6:8]
    ours = dbc(frames)[0x351]
    # CCL: the user maximum (below 0.9 x 200 A and 0.5 C of 600 Ah at 36 degC)
    assert lim.charge_reason == L.USER_MAX
    assert ours["Charge_Current_Limitation"] == pytest.approx(min(180.0, cfg["max_charge_a"]))
    # DCL: the lowest cell (3.116 V under a 27 A load) is in the DCL taper's range: below the maximum
    assert lim.discharge_reason == L.CELL_TAPER
    assert 0 < ours["Discharge_Current_Limitation"] < min(180.0, cfg["max_discharge_a"])
    for i in (0x355, 0x356, 0x359, 0x35C, 0x35E):
        assert frames[i][:len(US5000[i])] == US5000[i], hex(i)


# ------------------------------------------------------------------------ alarms and link loss


def _plain_snapshot(alarms=0):
    s = _with_settings(_us5000_snapshot())
    s.alarms = alarms
    s.flags = F.from_jk02(alarms)
    return s


def _plain_limits():
    lim = L.Limits()
    lim.cvl_dv, lim.ccl_da, lim.dcl_da, lim.dvl_dv = 560, 1000, 1000, 450
    lim.charge_enable = lim.discharge_enable = True
    lim.soc_pct = 88
    return lim


def test_flag_table_covers_every_neutral_flag():
    names = sorted(n for n in dir(F) if n.isupper() and isinstance(getattr(F, n), int))
    assert names == sorted(FLAG_TO_SIGNALS)
    values = [getattr(F, n) for n in names]
    assert len(set(values)) == len(values) and all(v & (v - 1) == 0 for v in values)  # one bit each
    assert sum(values) == ALL_FLAGS


@pytest.mark.parametrize("name", sorted(FLAG_TO_SIGNALS))
def test_each_neutral_flag(name):
    flag = getattr(F, name)
    frames = encode(_plain_snapshot(), _plain_limits(), flag)
    d = dbc(frames)[0x359]
    for sig in ALARM_SIGNALS:
        assert d[sig] == (1 if sig in FLAG_TO_SIGNALS[name] else 0), (name, sig)
    assert P.alarm_bits(flag) == int.from_bytes(frames[0x359][:4], "little") == expected_flag_word(flag)


@pytest.mark.parametrize("jk_bit", range(32))
def test_each_jk_alarm_bit(jk_bit):
    snap = _plain_snapshot(1 << jk_bit)
    want = JK_TO_SIGNAL.get(jk_bit)
    word = 1 << ALARM_SIGNALS[want] if want else 0
    # the encoder alone, given the neutral flags of the JK bit ...
    frames = encode(snap, _plain_limits(), snap.flags)
    d = dbc(frames)[0x359]
    for sig in ALARM_SIGNALS:
        assert d[sig] == (1 if sig == want else 0), (jk_bit, sig)
    assert int.from_bytes(frames[0x359][:4], "little") == word
    assert P.alarm_bits(F.from_jk02(1 << jk_bit)) == word
    # ... and the firmware's path: the policy passes the flags on unchanged
    frames, _, bad = encode_decided(snap, False)
    assert not bad and int.from_bytes(frames[0x359][:4], "little") == word


def test_alarm_bit_positions_per_spec_bytes():
    # docs/inverter-can.md "Pylontech alarms" bit table, byte by byte (bit 0 = LSB)
    cases = {4: (0, 1), 11: (0, 2), 1: (0, 3), 9: (0, 4), 13: (0, 7), 6: (1, 0), 2: (1, 3),
             21: (2, 3), 27: (2, 4)}
    for jk, (byte, bit) in cases.items():
        f = encode_decided(_plain_snapshot(1 << jk), False)[0][0x359]
        assert f[:4] == bytes(1 << bit if i == byte else 0 for i in range(4)), jk


@settings(deadline=None, max_examples=200)
@given(st.integers(0, 0xFFFFFFFF), st.booleans())
def test_alarm_masks_combine(jk, link_lost):
    frames, _, bad = encode_decided(_plain_snapshot(jk), link_lost)
    assert not bad and int.from_bytes(frames[0x359][:4], "little") == expected_alarm_word(jk, link_lost)


@pytest.mark.parametrize("jk", (0, 1 << 4, 0xFFFFFFFF))
def test_link_lost(jk):
    snap = _plain_snapshot(jk)
    fresh_frames, fresh_lim, _ = encode_decided(snap, False)
    fresh = dbc(fresh_frames)
    lost_frames, lost_lim, _ = encode_decided(snap, True)
    lost = dbc(lost_frames)
    # the decision itself: 0 A with reason "BMS data stale", enables off, LINK_LOST reported
    assert (lost_lim.ccl_da, lost_lim.dcl_da) == (0, 0)
    assert texts.REASONS[lost_lim.charge_reason] == texts.REASONS[lost_lim.discharge_reason] == "BMS data stale"
    assert lost_lim.flags & F.LINK_LOST and not fresh_lim.flags & F.LINK_LOST
    # byte 1 bit 3 (system error) and byte 3 bit 3 (internal communication fail)
    assert lost[0x359]["Alarm_Internal"] == 1 and lost[0x359]["Warn_Internal"] == 1
    assert lost_frames[0x359][1] & 0x08 and lost_frames[0x359][3] & 0x08
    # CCL / DCL 0 on the wire, and so are the enable flags
    assert lost[0x351]["Charge_Current_Limitation"] == 0
    assert lost[0x351]["Discharge_Current_Limitation"] == 0
    assert lost[0x35C]["Charge_Enable"] == 0 and lost[0x35C]["Discharge_Enable"] == 0
    # everything else unchanged (CVL / DVL still sent)
    assert lost[0x351]["Battery_Charge_Voltage"] == fresh[0x351]["Battery_Charge_Voltage"]
    assert lost_frames[0x351][6:8] == fresh_frames[0x351][6:8]
    for i in (0x355, 0x356, 0x35E):
        assert lost[i] == fresh[i]
    if jk == 0:
        assert fresh[0x359]["Alarm_Internal"] == 0 and fresh[0x359]["Warn_Internal"] == 0
        assert fresh[0x351]["Charge_Current_Limitation"] > 0
        assert fresh[0x351]["Discharge_Current_Limitation"] > 0
        assert fresh[0x35C]["Charge_Enable"] == 1 and fresh[0x35C]["Discharge_Enable"] == 1
    else:  # a cell-OVP alarm blocks charging already on a fresh link
        assert fresh[0x351]["Charge_Current_Limitation"] == 0 and fresh[0x35C]["Charge_Enable"] == 0


def test_link_loss_stop_sends_nothing():
    # link_loss "stop": a stale link yields no frame set at all (and a fresh one still does)
    snap = _plain_snapshot()
    policy = policy_for(link_loss="stop")
    assert policy.decide(snap, FRESH, 0) is True
    assert policy.decide(snap, STALE, PERIOD_MS) is False
    assert policy.stopped and policy.link_lost
