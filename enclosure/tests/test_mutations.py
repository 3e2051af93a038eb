"""The checks are not vacuous: a wrong parameter makes the same check fail."""

import checks
import pytest
from gateway_case import Enclosure


def broken(**params):
    return Enclosure(**params)


def test_small_gap_fails_fit():
    with pytest.raises(AssertionError, match="clearance|collides"):
        checks.check_board_fits(broken(PCB_GAP=0.2))


def test_low_lid_fails_clearance():
    with pytest.raises(AssertionError, match="intrudes|>="):
        checks.check_component_clearance(broken(TOP_CLEAR=0.3))


def test_thin_margin_fails_windows():
    with pytest.raises(AssertionError, match="hits the case"):
        checks.check_connector_windows(broken(CUTOUT_MARGIN=0.2))


def test_thin_wall_fails_thickness(tmp_path):
    enc = broken(WALL=1.6)
    base = checks.to_mesh(enc.base, str(tmp_path / "b.stl"))
    lid = checks.to_mesh(enc.lid_print, str(tmp_path / "l.stl"))
    with pytest.raises(AssertionError, match="wall"):
        checks.check_wall_thickness(enc, base, lid)


def test_wide_vents_fail():
    with pytest.raises(AssertionError, match="vent"):
        checks.check_vents(broken(VENT_W=3.0))


def test_vents_over_vbat_fail():
    with pytest.raises(AssertionError, match="VBAT"):
        checks.check_vents(broken(VENT_HV_MARGIN=-40.0))


def test_short_screw_fails():
    with pytest.raises(AssertionError, match="only"):
        checks.check_screws(broken(SCREW_L=25.0))


def test_lid_printed_right_way_up_has_overhangs(tmp_path):
    enc = Enclosure()
    lid_assembled = checks.to_mesh(enc.lid, str(tmp_path / "l.stl"))
    with pytest.raises(AssertionError, match="overhanging"):
        checks.check_no_overhangs(lid_assembled, "lid (assembled orientation)")
