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
