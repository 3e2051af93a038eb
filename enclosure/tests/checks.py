"""Geometric checks shared by test_enclosure.py (the real model) and
test_mutations.py (deliberately broken parameters must make the same checks fail)."""

import math
import os
import sys

import numpy as np
import trimesh
from build123d import Align, Box, CenterOf, Cylinder, GeomType, Kind, Polygon, Pos, export_stl, extrude, offset

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

MIN_BOARD_CLEARANCE = 0.5   # board edge -> wall
MIN_LID_CLEARANCE = 1.0     # tallest part -> lid / pillars / tongues
MIN_CUTOUT_MARGIN = 0.5     # connector face -> window edge
HOLE_TOL = 0.1              # hole alignment
FINGER_D = 12.0             # IEC 60529 IP2X jointed test finger diameter
EPS_VOL = 1e-3              # mm^3: "no intersection"


def vol(a, b):
    return (a & b).volume


def board_prism(enc, grow=0.0, z0=None, z1=None):
    pts = [enc.xy(x, y) for x, y in enc.board.outline]
    poly = Polygon(*pts, align=None)
    if grow:
        poly = offset(poly, grow, kind=Kind.INTERSECTION)
    z0 = enc.board_bottom_z if z0 is None else z0
    z1 = enc.board_top_z if z1 is None else z1
    return Pos(0, 0, z0) * extrude(poly, z1 - z0, dir=(0, 0, 1))


def rect_prism(rect, z0, z1):
    x0, y0, x1, y1 = rect
    return Pos((x0 + x1) / 2, (y0 + y1) / 2, (z0 + z1) / 2) * Box(x1 - x0, y1 - y0, z1 - z0)


# ---------------------------------------------------------------- ray casting
def ray_hits(mesh, origin, direction):
    """Sorted distances along the ray to every triangle it crosses (Moller-Trumbore)."""
    o = np.asarray(origin, float)
    d = np.asarray(direction, float)
    d = d / np.linalg.norm(d)
    tri = mesh.triangles
    v0, e1, e2 = tri[:, 0], tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
    p = np.cross(d, e2)
    det = np.einsum("ij,ij->i", e1, p)
    ok = np.abs(det) > 1e-12
    inv = np.zeros_like(det)
    inv[ok] = 1.0 / det[ok]
    t_ = o - v0
    u = np.einsum("ij,ij->i", t_, p) * inv
    q = np.cross(t_, e1)
    v = (q @ d) * inv
    t = np.einsum("ij,ij->i", e2, q) * inv
    hit = ok & (u >= -1e-9) & (v >= -1e-9) & (u + v <= 1 + 1e-9) & (t > 1e-9)
    ts = np.sort(t[hit])
    # a ray through a shared edge hits two triangles at the same distance
    if ts.size:
        ts = ts[np.concatenate([[True], np.diff(ts) > 1e-6])]
    return ts


def thickness_along(mesh, origin, direction):
    """Thickness of the first solid section the ray enters."""
    ts = ray_hits(mesh, origin, direction)
    assert ts.size >= 2, f"ray from {origin} along {direction} does not cross the solid"
    return ts[1] - ts[0], ts[0]


def to_mesh(shape, path):
    export_stl(shape, path, tolerance=0.02)
    return trimesh.load(path)


# ---------------------------------------------------------------- checks
def check_board_fits(enc):
    """Board outline grown by the clearance stays clear of base and lid."""
    # the standoffs/pillars touch the board faces only: shrink the z-range a hair
    grown = board_prism(enc, MIN_BOARD_CLEARANCE, enc.board_bottom_z + 0.01, enc.board_top_z - 0.01)
    assert vol(grown, enc.base) < EPS_VOL, "board (+clearance) collides with the base walls"
    assert vol(grown, enc.lid) < EPS_VOL, "board (+clearance) collides with the lid"
    # and per side, from the cavity size
    x0, y0, x1, y1 = enc.board.bbox
    for side, gap in (("x", (enc.inner_l - (x1 - x0)) / 2), ("y", (enc.inner_w - (y1 - y0)) / 2)):
        assert gap >= MIN_BOARD_CLEARANCE, f"{side}: clearance {gap:.2f} mm"


def check_board_on_standoffs(enc, base_mesh):
    """Standoff tops at the board's underside, pilot holes on the KiCad holes."""
    exact = board_prism(enc)
    assert vol(exact, enc.base) < EPS_VOL, "the board intersects the base"
    for ref, x, y, _ in enc.holes:
        r = (enc.STANDOFF_D / 2 + enc.PILOT_D / 2) / 2   # on the standoff's ring
        for a in range(0, 360, 90):
            px, py = x + r * math.cos(math.radians(a)), y + r * math.sin(math.radians(a))
            ts = ray_hits(base_mesh, (px, py, enc.split_z + 5), (0, 0, -1))
            top = enc.split_z + 5 - ts[0]
            assert abs(top - enc.board_bottom_z) < 0.01, f"{ref}: standoff top {top:.3f} != board underside"
    # hole axes measured on the solids
    for solid, radius, what in ((enc.base, enc.PILOT_D / 2, "pilot hole"),
                                (enc.lid, enc.SCREW_CLEAR_D / 2, "lid screw hole")):
        axes = [f.center(CenterOf.MASS) for f in solid.faces()
                if f.geom_type == GeomType.CYLINDER and abs(f.radius - radius) < 1e-6]
        assert len(axes) >= len(enc.holes), f"{what}s missing"
        for ref, x, y, _ in enc.holes:
            d = min(math.hypot(a.X - x, a.Y - y) for a in axes)
            assert d <= HOLE_TOL, f"{ref}: {what} {d:.3f} mm off the KiCad hole"
    # the lid pillars come down onto the board top (clamp)
    for ref, x, y, _ in enc.holes:
        r = (enc.PILLAR_D / 2 + enc.SCREW_CLEAR_D / 2) / 2
        probe = Pos(x + r, y, enc.board_top_z + 0.05) * Box(0.1, 0.1, 0.1)
        assert vol(probe, enc.lid) > 0.0004, f"{ref}: lid pillar does not reach the board top"


def check_component_clearance(enc):
    """Every part's courtyard x height (+ clearance) stays clear of lid and base."""
    lid_boxes, base_boxes = [], []
    for ref in enc.parts:
        rect = enc.rect(enc.board.footprints[ref].bbox("F.CrtYd"))
        h = enc.height_of(ref)
        lid_boxes.append((ref, rect_prism(rect, enc.board_top_z + 0.01, enc.board_top_z + h + MIN_LID_CLEARANCE)))
        base_boxes.append((ref, rect_prism(rect, enc.board_top_z + 0.01, enc.board_top_z + h)))
    for ref, box in lid_boxes:
        v = vol(box, enc.lid)
        assert v < EPS_VOL, f"{ref}: lid intrudes {v:.1f} mm^3 into the part (+{MIN_LID_CLEARANCE} mm)"
    for ref, box in base_boxes:
        v = vol(box, enc.base)
        assert v < EPS_VOL, f"{ref}: base intrudes {v:.1f} mm^3 into the part"
    top = max(enc.height_of(r) for r in enc.parts)
    assert enc.split_z - (enc.board_top_z + top) >= MIN_LID_CLEARANCE


def face_probe(enc, face, margin):
    """The connector face grown by `margin`, from the board edge through the wall."""
    lat0, lat1, z0, z1 = face.lat0 - margin, face.lat1 + margin, face.z0 - margin, face.z1 + margin
    half = {"x": enc.pcb_l / 2, "y": enc.pcb_w / 2}[face.wall[1]]
    outer = half + enc.PCB_GAP + enc.WALL + 1.0
    s = 1 if face.wall[0] == "+" else -1
    n0, n1 = sorted((s * (half - 0.01), s * outer))
    if face.wall[1] == "x":
        return rect_prism((n0, lat0, n1, lat1), z0, z1)
    return rect_prism((lat0, n0, lat1, n1), z0, z1)


def check_connector_windows(enc):
    for name, face in enc.faces.items():
        probe = face_probe(enc, face, MIN_CUTOUT_MARGIN)
        vb, vl = vol(probe, enc.base), vol(probe, enc.lid)
        assert vb < EPS_VOL and vl < EPS_VOL, \
            f"{name}: face + {MIN_CUTOUT_MARGIN} mm hits the case (base {vb:.2f}, lid {vl:.2f} mm^3)"
        # the window is a window, not a missing wall: the case is there just outside the margin
        big = face_probe(enc, face, enc.CUTOUT_MARGIN + 1.5)
        assert vol(big, enc.base) + vol(big, enc.lid) > 1.0, f"{name}: no wall around the window"


def check_bms_window_finger_safe(enc):
    lat0, lat1, z0, z1, _ = enc.window(enc.faces["BMS"])
    assert min(lat1 - lat0, z1 - z0) < FINGER_D, "BMS window admits the IP2X test finger"


def check_wall_thickness(enc, base_mesh, lid_print_mesh):
    """Ray-cast the wall, floor and lid plate thickness at sample points."""
    measured = []
    hl, hw = enc.outer_l / 2, enc.outer_w / 2
    z_samples = [enc.FLOOR + 3, enc.board_top_z, (enc.board_top_z + enc.split_z) / 2, enc.split_z - 1]

    def in_window(wall, lat, z):
        for face in enc.faces.values():
            if face.wall != wall:
                continue
            a, b, z0, _, _ = enc.window(face)
            if a - 1 <= lat <= b + 1 and z >= z0 - 1:
                return True
        bms = enc.faces["BMS"]
        if wall == bms.wall and bms.lat0 - enc.TIE_POST_W <= lat <= bms.lat1 + enc.TIE_POST_W \
                and z <= enc.TIE_POST_H + 1:
            return True
        return False

    for wall, (o, d), lats in (
            ("-x", ((-hl - 5, 0), (1, 0)), np.linspace(-hw + 6, hw - 6, 9)),
            ("+x", ((hl + 5, 0), (-1, 0)), np.linspace(-hw + 6, hw - 6, 9)),
            ("-y", ((0, -hw - 5), (0, 1)), np.linspace(-hl + 6, hl - 6, 11)),
            ("+y", ((0, hw + 5), (0, -1)), np.linspace(-hl + 6, hl - 6, 11))):
        for lat in lats:
            for z in z_samples:
                if in_window(wall, lat, z):
                    continue
                origin = (o[0], lat, z) if wall[1] == "x" else (lat, o[1], z)
                t, _ = thickness_along(base_mesh, origin, (d[0], d[1], 0))
                measured.append(("wall " + wall, t, enc.WALL))
    # floor and lid plate: vertical rays away from vents and holes
    vent_xy = enc._vent_slots(0)
    for x in np.linspace(-hl + 6, hl - 6, 12):
        for y in np.linspace(-hw + 6, hw - 6, 8):
            if any(abs(x - vx) < enc.VENT_W and abs(y - vy) < enc.VENT_L / 2 + 1 for vx, vy in vent_xy):
                continue
            if any(math.hypot(x - hx, y - hy) < enc.STANDOFF_D for _, hx, hy, _ in enc.holes):
                continue
            t, _ = thickness_along(base_mesh, (x, y, -5), (0, 0, 1))
            measured.append(("floor", t, enc.FLOOR))
            # lid.stl is upside down: its top face lies on z = 0, y is mirrored
            t, _ = thickness_along(lid_print_mesh, (x, -y, -5), (0, 0, 1))
            measured.append(("lid", t, enc.LID_T))
    assert len(measured) > 100
    for what, t, nominal in measured:
        assert t >= enc.MIN_WALL - 1e-3, f"{what}: {t:.2f} mm < {enc.MIN_WALL}"
        assert abs(t - nominal) < 0.05, f"{what}: {t:.2f} mm, parameter says {nominal}"
    return measured


def _openings(solid, z):
    """Bounding boxes (x0, y0, x1, y1) of the holes in the planar face at height z."""
    faces = [f for f in solid.faces() if f.geom_type == GeomType.PLANE
             and abs(f.center().Z - z) < 1e-6 and abs(abs(f.normal_at().Z) - 1) < 1e-9]
    face = max(faces, key=lambda f: f.area)
    out = []
    for w in face.inner_wires():
        # sample the edges (a bounding box may be enlarged once the shape is meshed)
        pts = [e.position_at(t) for e in w.edges() for t in np.linspace(0, 1, 33)]
        xs, ys = [p.X for p in pts], [p.Y for p in pts]
        out.append((min(xs), min(ys), max(xs), max(ys)))
    return out


def check_vents(enc):
    """Vent openings narrower than MAX_VENT_OPENING; none above/below the VBAT side."""
    zx0, zy0, zx1, zy1 = enc.hv_zone
    n = 0
    for solid, z in ((enc.lid, enc.total_h), (enc.base, 0.0)):
        for x0, y0, x1, y1 in _openings(solid, z):
            cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
            screw = any(math.hypot(cx - hx, cy - hy) < 0.1 for _, hx, hy, _ in enc.holes) \
                and max(x1 - x0, y1 - y0) <= enc.SCREW_CLEAR_D + 1e-6
            if screw:
                continue  # filled by the screw
            n += 1
            assert min(x1 - x0, y1 - y0) < enc.MAX_VENT_OPENING, f"vent {x1 - x0:.2f} x {y1 - y0:.2f} mm"
            assert enc.MAX_VENT_OPENING <= 2.5
            overlap = x1 > zx0 and x0 < zx1 and y1 > zy0 and y0 < zy1
            assert not overlap, f"vent at ({cx:.1f}, {cy:.1f}) over the VBAT side"
    assert n >= 10, "too few vents"
    # and the plate above the HV zone is solid
    # and the plate above the HV zone is solid (apart from a screw hole, which the screw fills)
    plate = rect_prism(enc.hv_zone, enc.split_z, enc.total_h)
    for _, hx, hy, _ in enc.holes:
        plate -= Pos(hx, hy, enc.split_z - 1) * Cylinder(enc.SCREW_CLEAR_D / 2, enc.LID_T + 2,
                                                           align=(Align.CENTER, Align.CENTER, Align.MIN))
    assert abs(vol(plate, enc.lid) - plate.volume) < 1e-3, "lid above the VBAT side is not closed"
    floor = rect_prism(enc.hv_zone, 0, enc.FLOOR)
    assert abs(vol(floor, enc.base) - floor.volume) < 1e-3, "floor below the VBAT side is not closed"


def check_no_overhangs(mesh, what, max_angle=45.0):
    """In print orientation every downward-facing triangle steeper than 45 deg lies on the bed."""
    nz = mesh.face_normals[:, 2]
    down = nz < -math.cos(math.radians(max_angle))
    zmax = mesh.triangles[down][:, :, 2].max(axis=1)
    bad = zmax > 1e-3
    assert not bad.any(), f"{what}: {bad.sum()} overhanging triangles, e.g. at z={zmax[bad].max():.2f}"


def check_mesh(mesh, what):
    assert mesh.is_watertight, f"{what}: mesh not watertight"
    assert mesh.is_winding_consistent, f"{what}: inconsistent winding"
    assert mesh.volume > 1000, f"{what}: volume {mesh.volume}"


def check_screws(enc):
    e = enc.screw_engagement()
    assert e >= enc.MIN_ENGAGEMENT, f"M3x{enc.SCREW_L:g}: only {e:.1f} mm in the standoff"
    assert e <= enc.STANDOFF_H - 0.5, f"M3x{enc.SCREW_L:g} bottoms out in the floor ({e:.1f} mm)"
