import os
import sys

import pytest

HW = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, HW)

import design  # noqa: E402
import kicad_netlist  # noqa: E402

SCH = os.path.join(HW, f"{design.PROJECT}.kicad_sch")


@pytest.fixture(scope="session")
def netlist(tmp_path_factory):
    """The netlist kicad-cli exports from the committed schematic."""
    return kicad_netlist.export_netlist(SCH, str(tmp_path_factory.mktemp("net")))


@pytest.fixture(scope="session")
def bom(tmp_path_factory):
    """One BOM row per part (not grouped), as kicad-cli exports it."""
    out = tmp_path_factory.mktemp("bom") / "bom.csv"
    return kicad_netlist.export_bom(SCH, str(out), group=False)
