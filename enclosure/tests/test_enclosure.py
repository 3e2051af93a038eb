"""Checks of the real enclosure model against the KiCad board."""

import math
import os
import subprocess

import checks
import pytest
import trimesh
from gateway_case import PCB_FILE, Enclosure


@pytest.fixture(scope="session")
def enc():
    return Enclosure()


@pytest.fixture(scope="session")
def exported(enc, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    paths = enc.export(str(out))
    return paths, {k: trimesh.load(paths[k]) for k in ("base", "lid")}


def test_board_read_from_kicad(enc):
    b = enc.board
    assert len(b.outline) >= 4
    assert len(enc.holes) == 4 and all(d == pytest.approx(3.2) for *_, d in enc.holes)
    assert b.thickness == pytest.approx(1.6)
    for ref in ("J1", "J2", "A1"):
        assert ref in b.footprints
    assert "USB" in b.footprints["A1"].texts
    # the VBAT-side parts come from the pad nets (J1 pin 4 is VBAT)
    assert {"J1", "F1", "D1", "D2", "C1", "U1", "L1"} <= set(enc.hv_refs)
    assert "A1" not in enc.hv_refs and "J2" not in enc.hv_refs


PCBNEW_PY = "/usr/bin/python3"
PCBNEW_SNIPPET = """
import pcbnew, sys, json
b = pcbnew.LoadBoard(sys.argv[1])
bb = b.GetBoardEdgesBoundingBox()
mm = pcbnew.ToMM
out = {"bbox": [mm(bb.GetLeft()), mm(bb.GetTop()), mm(bb.GetRight()), mm(bb.GetBottom())], "fp": {}}
for fp in b.GetFootprints():
    p = fp.GetPosition()
    out["fp"][fp.GetReference()] = [mm(p.x), mm(p.y), fp.GetOrientationDegrees()]
print(json.dumps(out))
"""


def test_parser_agrees_with_pcbnew(enc):
    """Cross-check the tiny S-expression reader with KiCad's own module (if installed)."""
    if not os.path.exists(PCBNEW_PY) or subprocess.run(
            [PCBNEW_PY, "-c", "import pcbnew"], capture_output=True).returncode != 0:
        pytest.skip("KiCad's pcbnew module is not installed")
    import json
    res = subprocess.run([PCBNEW_PY, "-c", PCBNEW_SNIPPET, PCB_FILE], capture_output=True,
                         text=True, check=True)
    ref = json.loads(res.stdout.strip().splitlines()[-1])
    # pcbnew's edge bbox includes half the 0.1 mm line width
    for a, b in zip(enc.board.bbox, ref["bbox"], strict=True):
        assert a == pytest.approx(b, abs=0.06)
    for r, (x, y, rot) in ref["fp"].items():
        fp = enc.board.footprints[r]
        assert (fp.x, fp.y) == pytest.approx((x, y), abs=1e-6)
        assert math.isclose((fp.rot - rot) % 360, 0, abs_tol=1e-6) or \
            math.isclose((fp.rot - rot) % 360, 360, abs_tol=1e-6)


def test_board_fits_cavity(enc):
    checks.check_board_fits(enc)


def test_board_sits_on_standoffs(enc, exported):
    checks.check_board_on_standoffs(enc, exported[1]["base"])


def test_lid_clears_components(enc):
    checks.check_component_clearance(enc)


def test_connector_faces_inside_windows(enc):
    checks.check_connector_windows(enc)


def test_bms_window_finger_safe(enc):
    checks.check_bms_window_finger_safe(enc)


def test_meshes_closed(enc, exported):
    assert enc.base.is_valid and enc.lid.is_valid
    for name, mesh in exported[1].items():
        checks.check_mesh(mesh, name)
    assert os.path.getsize(exported[0]["step"]) > 10000


def test_wall_thickness(enc, exported):
    assert enc.WALL >= enc.MIN_WALL and enc.FLOOR >= enc.MIN_WALL and enc.LID_T >= enc.MIN_WALL
    m = checks.check_wall_thickness(enc, exported[1]["base"], exported[1]["lid"])
    kinds = {w for w, _, _ in m}
    assert kinds == {"wall -x", "wall +x", "wall -y", "wall +y", "floor", "lid"}


def test_vents_and_vbat_side(enc):
    checks.check_vents(enc)


def test_printable_without_supports(exported):
    meshes = exported[1]
    checks.check_no_overhangs(meshes["base"], "base (opening up)")
    checks.check_no_overhangs(meshes["lid"], "lid (upside down)")
    for mesh in meshes.values():
        assert mesh.bounds[0][2] == pytest.approx(0, abs=1e-6)  # sits on the bed


def test_screw_closure(enc):
    checks.check_screws(enc)


def test_strain_relief(enc, exported):
    """A cable-tie slot (>= 2.5 mm) between the wall and the post, open above the foot."""
    base = exported[1]["base"]
    f = enc.faces["BMS"]
    lat = (f.lat0 + f.lat1) / 2
    assert f.wall == "+x"
    out = enc.inner_l / 2 + enc.WALL
    z = enc.TIE_FOOT_H + 2
    ts = checks.ray_hits(base, (out + 30, lat, z), (-1, 0, 0))
    post_t = ts[1] - ts[0]
    gap = ts[2] - ts[1]
    assert post_t == pytest.approx(enc.TIE_POST_T, abs=0.05)
    assert gap >= 2.5
