# Shared by the protocol tests (CPython): hypothesis limits for the encoders,
# and why a protocol cannot be tested (its module or its shipped DBC missing).
import sys
from pathlib import Path

from hypothesis import strategies as st

_REPO = Path(__file__).resolve().parents[2]
if str(_REPO / "firmware" / "lib") not in sys.path:
    sys.path.insert(0, str(_REPO / "firmware" / "lib"))

import protocols  # noqa: E402
from charge import limits as L  # noqa: E402

DBC_DIR = _REPO / "docs" / "dbc"

# A real Pylontech US5000 on "old" (V1.2) firmware, as captured by setfirelabs.com ("Pylontech battery CAN comms
# V1.2 vs V1.3"): CVL 53.2 V, CCL 480.0 A, DCL 480.0 A, DVL 45.0 V; SOC 88 %, SOH 94 %; 49.86 V, -27.0 A, 36.3 degC;
# no alarm, 6 modules, "PN"; charge + discharge enable; "PYLON" (docs/inverter-can.md "Pylontech")
US5000 = {k: bytes.fromhex(v) for k, v in {
    0x351: "14 02 C0 12 C0 12 C2 01",
    0x355: "58 00 5E 00",
    0x356: "7A 13 F2 FE 6B 01",
    0x359: "00 00 00 00 06 50 4E",
    0x35C: "C0 00",
    0x35E: "50 59 4C 4F 4E 20 20 20",
}.items()}


@st.composite
def limits(draw, flags):
    """charge.limits.Limits as the policy could fill them, and beyond (16-bit
    overflow, currents up to 10 kA): an encoder places whatever it gets.
    flags: the strategy for lim.flags."""
    lim = L.Limits()
    lim.cvl_dv = draw(st.integers(0, 0xFFFF))
    lim.ccl_da = draw(st.one_of(st.integers(0, 5000), st.integers(0, 100000)))
    lim.dcl_da = draw(st.one_of(st.integers(0, 5000), st.integers(0, 100000)))
    lim.dvl_dv = draw(st.integers(0, 0xFFFF))
    lim.charge_enable = draw(st.booleans())
    lim.discharge_enable = draw(st.booleans())
    lim.force_charge = draw(st.booleans())
    lim.soc_pct = draw(st.integers(0, 100))
    lim.capacity_ah = draw(st.one_of(st.integers(0, 2000), st.integers(0, 200000)))
    lim.flags = draw(flags)
    return lim


def missing(name):
    """Why protocol name cannot be tested (its encoder module or its DBC is missing), or ''."""
    try:
        protocols.load(name)
    except ImportError:
        return "firmware/lib/protocols/%s.py is missing" % name
    if not (DBC_DIR / (name + ".dbc")).is_file():
        return "docs/dbc/%s.dbc is missing" % name
    return ""
