# The safety property every inverter protocol must keep, as hypothesis properties over all of them: an encoder
# never tells the inverter more than charge.policy decided. Read back through each protocol's shipped DBC (cantools,
# strict): the charge / discharge current limits never above the policy's, the charge voltage never above its CVL
# (the one exception, documented in docs/inverter-can.md "SMA": a CVL below the Sunny Island's 41.0 V floor goes as
# 41.0 V, and then with 0 A), every enable bit exactly the policy's, and stale BMS data (LINK_LOST) always visible
# as the protocol's system / BMS-internal alarm, while a clean pack raises none.
import sys
from pathlib import Path

import cantools
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from protocol_cases import DBC_DIR, limits

_REPO = Path(__file__).resolve().parents[2]
if str(_REPO / "firmware" / "lib") not in sys.path:
    sys.path.insert(0, str(_REPO / "firmware" / "lib"))

import protocols  # noqa: E402
from app import config as C  # noqa: E402
from pack import flags as F  # noqa: E402
from pack import snapshot as S  # noqa: E402

LIMIT_IDS = {"growatt": 0x311}  # the frame with CVL / CCL / DCL (0x351 elsewhere)
CVL = ("Charge_Voltage_Limit", "CV_Charge_Voltage")
CCL = "Charge_Current_Limit"
DCL = "Discharge_Current_Limit"
# the signal that says "the BMS data cannot be trusted": 1 = raised (SMA-family pairs: 1 = active)
LINK_ALARMS = {"growatt": ("T2_System_Error",), "sma": ("Alarm_BMS_Internal",), "victron": ("Alarm_BMS_Internal",),
               "pylon_plus": ("Protection_System_Error", "Alarm_BMS_Internal")}
SYSTEM_ERROR = ("Protection_System_Error",)  # the Pylontech family's 0x359 byte 1 bit 3
SMA_FLOOR_DV = 410
DB = {p: cantools.database.load_file(str(DBC_DIR / (p + ".dbc")), strict=True) for p in protocols.NAMES}
ENC = {}
for _p in protocols.NAMES:
    _cfg = C.defaults()
    _cfg["protocol"] = _p
    ENC[_p] = protocols.make(_cfg)
ALL_FLAGS = (1 << 23) - 1  # every pack.flags bit (flags.py keeps them below 2**23)


@st.composite
def snapshots(draw):
    s = S.PackSnapshot()
    s.cell_count = draw(st.integers(4, 24))
    for i in range(s.cell_count):
        s.cells[i] = draw(st.integers(2500, 3700))
    s.cell_stats()
    s.pack_mv = draw(st.integers(0, 90000))
    s.current_ma = draw(st.integers(-300000, 300000))
    s.soh_pct = draw(st.integers(0, 100))
    s.have = S.HAVE_FOR_INVERTER | S.HAVE_SOH
    for i in range(S.TEMP_SLOTS):
        s.temps[i] = draw(st.one_of(st.just(S.NO_TEMP), st.integers(-300, 700)))
    s.full_mah = draw(st.integers(0, 600000))
    s.remaining_mah = draw(st.integers(0, s.full_mah))
    s.cycles = draw(st.integers(0, 5000))
    s.modules = draw(st.integers(1, 15))
    return s


def decoded(name, snap, lim):
    enc = ENC[name]
    enc.encode(snap, lim, lim.flags)
    db = DB[name]
    out = {}
    for can_id, data in zip(enc.ids, enc.frames, strict=True):
        out[can_id] = db.decode_message(can_id, bytes(data), decode_choices=False, scaling=False)
    return out


def signals(frames, pred):
    return [(k, v) for f in frames.values() for k, v in f.items() if pred(k)]


@pytest.mark.parametrize("name", protocols.NAMES)
@settings(max_examples=120, deadline=None)
@given(snap=snapshots(), lim=limits(st.one_of(st.just(0), st.just(F.LINK_LOST), st.integers(0, ALL_FLAGS))))
def test_never_more_than_the_policy_decided(name, snap, lim):
    frames = decoded(name, snap, lim)
    f = frames[LIMIT_IDS.get(name, 0x351)]
    cvl = [f[k] for k in CVL if k in f][0]
    ccl, dcl = f[CCL], f[DCL]  # raw, 0.1 A
    assert 0 <= ccl <= max(lim.ccl_da, 0) and 0 <= dcl <= max(lim.dcl_da, 0), (ccl, dcl, lim.ccl_da, lim.dcl_da)
    if cvl > lim.cvl_dv:  # only the SI's floor, and never with a charge current
        assert name == "sma" and cvl == SMA_FLOOR_DV and ccl == 0, (name, cvl, lim.cvl_dv, ccl)
    charge = signals(frames, lambda k: k.endswith("Charge_Enable") and "Discharge" not in k)
    discharge = signals(frames, lambda k: k.endswith("Discharge_Enable"))
    if name not in ("sma", "victron"):  # the SMA family has no enable bits: the limits say it
        assert charge and discharge, name
    assert all(v == int(lim.charge_enable) for _, v in charge), (charge, lim.charge_enable)
    assert all(v == int(lim.discharge_enable) for _, v in discharge), (discharge, lim.discharge_enable)


@pytest.mark.parametrize("name", protocols.NAMES)
@settings(max_examples=60, deadline=None)
@given(snap=snapshots(), lim=limits(st.just(F.LINK_LOST)))
def test_stale_data_is_always_an_alarm(name, snap, lim):
    frames = decoded(name, snap, lim)
    wanted = LINK_ALARMS.get(name, SYSTEM_ERROR)
    raised = signals(frames, lambda k: k in wanted)
    assert len(raised) == len(wanted) and all(v == 1 for _, v in raised), (name, raised)


def _alarm_signal(k):
    return k.startswith(("Protection_", "Alarm_", "Warn_", "T1_", "T2_", "T3_", "T4_"))


@pytest.mark.parametrize("name", protocols.NAMES)
@settings(max_examples=40, deadline=None)
@given(snap=snapshots(), lim=limits(st.just(0)))
def test_a_clean_pack_raises_no_alarm(name, snap, lim):
    frames = decoded(name, snap, lim)
    alarms = signals(frames, _alarm_signal)
    assert alarms, name
    # Pylontech / Growatt bits: 0; SMA-family pairs: 2 = OK ("10"), never 1 = active
    bad = [(k, v) for k, v in alarms if v not in (0, 2) or (v == 2 and not k.startswith(("Alarm_", "Warn_")))]
    assert not bad, (name, bad)
