"""Parametric 3D-printable enclosure (base + lid) for the gateway PCB (build123d).

Everything board-related is READ from hardware/gateway.kicad_pcb: the Edge.Cuts
outline, the mounting holes, the connector bodies (F.Fab) of J1 (BMS GPS port),
J2 (RJ45) and the DevKit's USB end (the "USB" text of the A1 footprint), the
courtyards of all parts, and which parts carry the pack voltage (their pad nets).
Only the component HEIGHTS are typed here (the KiCad 3D models are not installed).

Frame: x/y in mm with the board centre at the origin and y pointing "up" in the
KiCad top view (KiCad's y is flipped); z = 0 is the underside of the base.

    python gateway_case.py out/       -> base.stl, lid.stl (print orientation), enclosure.step
"""

from __future__ import annotations

import importlib.util
import math
import os
import sys
from dataclasses import dataclass
from functools import cached_property

from build123d import (
    Align,
    Box,
    Compound,
    Cylinder,
    Pos,
    RectangleRounded,
    Rot,
    SlotOverall,
    export_step,
    export_stl,
    extrude,
)

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import kicad_board  # noqa: E402

# ============================== parameters (mm) ==============================
PCB_FILE = os.path.join(HERE, "..", "hardware", "gateway.kicad_pcb")
DESIGN_FILE = os.path.join(HERE, "..", "hardware", "design.py")

# --- shell
WALL = 2.4              # side walls: 6 perimeters of a 0.4 mm nozzle (>= 2.0 required)
FLOOR = 2.4             # base floor
LID_T = 2.4             # lid plate
CORNER_R = 3.0          # outer vertical corner radius
PCB_GAP = 1.0           # board edge -> inner wall, every side
MIN_WALL = 2.0          # requirement checked by the tests

# --- board support and closure: M3 screws from the lid top, through a lid pillar
# and the board's mounting hole, into a pilot hole in the base standoff (the board
# is clamped between pillar and standoff).
STANDOFF_H = 8.0        # floor top -> board underside (THT pins stick out ~3 mm)
STANDOFF_D = 7.0
PILOT_D = 2.5           # M3 thread-forming screw for plastics; 4.0 for an M3 heat-set insert
PILLAR_D = 6.0          # lid pillar, presses on the board around the hole (hole courtyard is 6.9)
SCREW_CLEAR_D = 3.4     # M3 clearance through lid and pillar
SCREW_L = 30.0          # M3 x 30 (engagement computed in screw_engagement())
MIN_ENGAGEMENT = 6.0    # >= 2 x d into plastic

# --- component heights above the board's TOP face (mm). Sources: datasheets of
# the parts in hardware/README.md's BOM; "est." = estimate, measure before printing.
SOCKET_H = 8.5          # 1x19 2.54 mm female socket strip (Samtec SSW-119-01-T-S: 8.5 mm body)
DEVKIT_SPACER = 2.5     # plastic spacer of the DevKit's male pin headers (standard 2.54 mm header)
DEVKIT_PCB_T = 1.6      # DevKitC V4 board
DEVKIT_TOP_H = 3.5      # WROOM-32 module 3.1 mm (Espressif datasheet), EN/BOOT buttons ~3.5 mm (est.)
USB_ABOVE_DEVKIT = 1.5  # micro-USB receptacle centre above the DevKit's top face (2.6-3 mm high part)
J1_MATED_H = 9.0        # PicoBlade 53047 vertical header + 51021 plug housing + wire bend (est.)
BMS_CABLE_D = 2.0       # 4 x 28 AWG wires (or a round cable) leaving the plug
COMPONENT_HEIGHTS = {
    "A1": SOCKET_H + DEVKIT_SPACER + DEVKIT_PCB_T + DEVKIT_TOP_H,  # DevKit on sockets: 16.1
    "J2": 13.6,   # RJ45 Amphenol 54602-908LF, horizontal jack body (drawing in the footprint descr; est.)
    "C1": 10.2,   # Panasonic EEE-FK2A470P, case 10 x 10.2 mm (datasheet height 10.2)
    "C4": 10.2,   # Panasonic EEE-FK1A221P, case 8 x 10.2 mm (datasheet height 10.2)
    "L1": 6.0,    # Bourns SRR1260: 6.0 mm max (datasheet)
    "JP3": 8.5,   # 2.54 mm header (2.5 spacer + 6 mm pin) with jumper cap on top
    "J1": J1_MATED_H + BMS_CABLE_D,  # with the BMS plug inserted, wires bend towards the wall
    "Y1": 4.5,    # HC-49/SD SMD crystal, 4.3 mm nominal
    "F1": 2.7,    # Littelfuse Nano2 451: 2.69 mm
    "D1": 2.5,    # SMB package, 2.44 mm max
}
DEFAULT_HEIGHT = 3.0    # everything else: 0603..1210 passives <= 1.6, SOIC <= 2.65, SMA/TO-252 <= 2.4
TOP_CLEAR = 3.0         # tallest part -> lid underside

# --- connector windows (notches in the base wall, closed from above by lid tongues)
USB_PLUG_W = 11.0       # micro-USB cable overmould, width (typ. 10.5)
USB_PLUG_H = 7.0        # and height (typ. 6.5): the window must pass the plug, not only the jack
CUTOUT_MARGIN = 1.0     # connector face -> window edge, every side (tests require >= 0.5)
FIT = 0.3               # tongue <-> notch side clearance
MIN_TONGUE_H = 1.5      # shorter tongues are left out (window runs up to the lid)

# --- ventilation: 2.0 mm slots (< 2.5 mm, IP3X-like for a wire probe), none above
# the parts that carry the pack voltage (VBAT ... buck switch node) plus a margin.
VENT_W = 2.0
VENT_L = 16.0
VENT_PITCH = 4.5        # slot-to-slot (x)
VENT_EDGE = 6.0         # keep-out from the inner walls
VENT_HV_MARGIN = 4.0    # keep-out around the HV parts' courtyards
VENT_POST_MARGIN = 2.0  # keep-out around standoffs / pillars
MAX_VENT_OPENING = 2.5

# --- strain relief for the BMS lead: a cable-tie post outside the +x wall below
# the BMS window (tie through the gap between post and wall, around post + cable)
TIE_GAP = 3.0           # slot for a 2.5 mm cable tie
TIE_POST_T = 3.0
TIE_POST_W = 8.0
TIE_POST_H = 9.0
TIE_FOOT_H = 2.4

STL_TOL = 0.02          # mesh deviation for the STL export
# ============================================================================


def _load_design_hv_nets():
    """VBAT-side net names from hardware/design.py (single source of truth)."""
    spec = importlib.util.spec_from_file_location("gateway_design", DESIGN_FILE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return tuple(mod.VBAT_SIDE_NETS)


@dataclass(frozen=True)
class Face:
    """A connector face projected onto a wall: wall side, lateral span and z span."""
    name: str
    wall: str          # "-x", "+x", "-y", "+y"
    lat0: float        # along the wall (y for x-walls, x for y-walls), model frame
    lat1: float
    z0: float
    z1: float


class Enclosure:
    def __init__(self, pcb_file=PCB_FILE, **overrides):
        """Parameters can be overridden by keyword (used by the tests to break them)."""
        self.p = {k: v for k, v in globals().items() if k.isupper()}
        unknown = set(overrides) - set(self.p)
        if unknown:
            raise KeyError(f"unknown parameters: {unknown}")
        self.p.update(overrides)
        self.board = kicad_board.load_board(pcb_file)
        x0, y0, x1, y1 = self.board.bbox
        self.cx, self.cy = (x0 + x1) / 2, (y0 + y1) / 2
        self.pcb_l, self.pcb_w = x1 - x0, y1 - y0
        self.pcb_t = self.board.thickness

    # ---------------- frame and derived dimensions
    def xy(self, kx, ky):
        """KiCad board coordinates -> model frame."""
        return kx - self.cx, self.cy - ky

    def rect(self, bbox):
        (ax, ay), (bx, by) = self.xy(bbox[0], bbox[1]), self.xy(bbox[2], bbox[3])
        return min(ax, bx), min(ay, by), max(ax, bx), max(ay, by)

    def __getattr__(self, name):
        if name.isupper() and "p" in self.__dict__ and name in self.p:
            return self.p[name]
        raise AttributeError(name)

    @property
    def inner_l(self):
        return self.pcb_l + 2 * self.PCB_GAP

    @property
    def inner_w(self):
        return self.pcb_w + 2 * self.PCB_GAP

    @property
    def outer_l(self):
        return self.inner_l + 2 * self.WALL

    @property
    def outer_w(self):
        return self.inner_w + 2 * self.WALL

    @property
    def board_bottom_z(self):
        return self.FLOOR + self.STANDOFF_H

    @property
    def board_top_z(self):
        return self.board_bottom_z + self.pcb_t

    def height_of(self, ref):
        return self.COMPONENT_HEIGHTS.get(ref, self.DEFAULT_HEIGHT)

    @property
    def parts(self):
        """Refs of the parts on the board (mounting holes excluded)."""
        return [r for r, fp in self.board.footprints.items()
                if not fp.lib_id.startswith("MountingHole:")]

    @property
    def split_z(self):
        """Top of the base walls = underside of the lid plate."""
        return self.board_top_z + max(self.height_of(r) for r in self.parts) + self.TOP_CLEAR

    @property
    def total_h(self):
        return self.split_z + self.LID_T

    @property
    def holes(self):
        """[(ref, x, y, drill)] in the model frame."""
        return [(r, *self.xy(x, y), d) for r, x, y, d in self.board.mounting_holes()]

    def screw_engagement(self):
        stack = self.LID_T + (self.split_z - self.board_top_z) + self.pcb_t
        return self.SCREW_L - stack

    @cached_property
    def hv_refs(self):
        nets = set(_load_design_hv_nets())
        return sorted(r for r, fp in self.board.footprints.items() if fp.nets() & nets)

    @cached_property
    def hv_zone(self):
        """Model-frame rectangle around the courtyards of every VBAT-side part."""
        rs = [self.rect(self.board.footprints[r].bbox("F.CrtYd")) for r in self.hv_refs]
        return (min(r[0] for r in rs), min(r[1] for r in rs),
                max(r[2] for r in rs), max(r[3] for r in rs))

    # ---------------- connector faces (from the KiCad footprints)
    def _wall_of(self, rect):
        """Board edge nearest to a model-frame rectangle."""
        hl, hw = self.pcb_l / 2, self.pcb_w / 2
        d = {"-x": rect[0] + hl, "+x": hl - rect[2], "-y": rect[1] + hw, "+y": hw - rect[3]}
        return min(d, key=d.get)

    def _face(self, name, rect, z0, z1, lat_center=None, lat_width=None):
        wall = self._wall_of(rect)
        lat0, lat1 = (rect[1], rect[3]) if wall in ("-x", "+x") else (rect[0], rect[2])
        if lat_center is not None:
            lat0, lat1 = lat_center - lat_width / 2, lat_center + lat_width / 2
        return Face(name, wall, lat0, lat1, z0, z1)

    @cached_property
    def faces(self):
        fps = self.board.footprints
        top = self.board_top_z
        j2 = self.rect(fps["J2"].bbox("F.Fab"))
        j1 = self.rect(fps["J1"].bbox("F.Fab"))
        a1 = self.rect(fps["A1"].bbox("F.Fab"))
        ux, uy = self.xy(*fps["A1"].texts["USB"])
        usb_z = top + self.SOCKET_H + self.DEVKIT_SPACER + self.DEVKIT_PCB_T + self.USB_ABOVE_DEVKIT
        usb_lat = uy if self._wall_of(a1) in ("-x", "+x") else ux
        return {
            "RJ45": self._face("RJ45", j2, top, top + self.height_of("J2")),
            "USB": self._face("USB", a1, usb_z - self.USB_PLUG_H / 2, usb_z + self.USB_PLUG_H / 2,
                              lat_center=usb_lat, lat_width=self.USB_PLUG_W),
            "BMS": self._face("BMS", j1, top, top + self.height_of("J1")),
        }

    def window(self, face: Face):
        """(lat0, lat1, z0, z1, tongue) of the window in the wall for a face."""
        m = self.CUTOUT_MARGIN
        z1 = face.z1 + m
        tongue = self.split_z - z1 >= self.MIN_TONGUE_H
        if not tongue:
            z1 = self.split_z
        return face.lat0 - m, face.lat1 + m, face.z0 - m, z1, tongue

    def _wall_box(self, wall, lat0, lat1, z0, z1, inset=0.0, extra=0.5):
        """A box through the wall `wall` spanning lat0..lat1, z0..z1.
        inset > 0 keeps it inside the wall thickness (for tongues)."""
        t = self.WALL + 2 * extra - 2 * inset
        mid = {"-x": -(self.inner_l / 2 + self.WALL / 2), "+x": self.inner_l / 2 + self.WALL / 2,
               "-y": -(self.inner_w / 2 + self.WALL / 2), "+y": self.inner_w / 2 + self.WALL / 2}[wall]
        lat, zc = (lat0 + lat1) / 2, (z0 + z1) / 2
        if wall in ("-x", "+x"):
            return Pos(mid, lat, zc) * Box(t, lat1 - lat0, z1 - z0)
        return Pos(lat, mid, zc) * Box(lat1 - lat0, t, z1 - z0)

    # ---------------- vents
    def _vent_slots(self, avoid_r):
        """Centres of the vent slots (slots run along y)."""
        hx, hy = self.inner_l / 2 - self.VENT_EDGE, self.inner_w / 2 - self.VENT_EDGE
        z = self.hv_zone
        m = self.VENT_HV_MARGIN
        out = []
        n_x = int((2 * hx - self.VENT_W) // self.VENT_PITCH)
        x_start = -((n_x - 1) * self.VENT_PITCH) / 2
        rows = int((2 * hy + 2.0) // (self.VENT_L + 2.0))
        row_pitch = self.VENT_L + 2.0
        y_start = -((rows - 1) * row_pitch) / 2
        for i in range(n_x):
            x = x_start + i * self.VENT_PITCH
            for j in range(rows):
                y = y_start + j * row_pitch
                sx0, sx1 = x - self.VENT_W / 2, x + self.VENT_W / 2
                sy0, sy1 = y - self.VENT_L / 2, y + self.VENT_L / 2
                if sx1 > z[0] - m and sx0 < z[2] + m and sy1 > z[1] - m and sy0 < z[3] + m:
                    continue  # above / below the VBAT side
                near = False
                for _, hx_, hy_, _ in self.holes:
                    dx = max(sx0 - hx_, 0, hx_ - sx1)
                    dy = max(sy0 - hy_, 0, hy_ - sy1)
                    if math.hypot(dx, dy) < avoid_r + self.VENT_POST_MARGIN:
                        near = True
                if not near:
                    out.append((x, y))
        return out

    def _vents(self, z0, h, avoid_r):
        slots = [Pos(x, y, z0) * extrude(SlotOverall(self.VENT_L, self.VENT_W, rotation=90), h)
                 for x, y in self._vent_slots(avoid_r)]
        return Compound(children=slots) if slots else None

    # ---------------- solids
    @cached_property
    def base(self):
        r_in = max(self.CORNER_R - self.WALL, 0.5)
        shell = extrude(RectangleRounded(self.outer_l, self.outer_w, self.CORNER_R), self.split_z)
        cavity = Pos(0, 0, self.FLOOR) * extrude(
            RectangleRounded(self.inner_l, self.inner_w, r_in), self.split_z)
        base = shell - cavity
        for _, x, y, _ in self.holes:
            post = Pos(x, y, self.FLOOR - 0.1) * Cylinder(
                self.STANDOFF_D / 2, self.STANDOFF_H + 0.1, align=(Align.CENTER, Align.CENTER, Align.MIN))
            base += post
        for _, x, y, _ in self.holes:
            base -= Pos(x, y, self.FLOOR) * Cylinder(
                self.PILOT_D / 2, self.STANDOFF_H + 1, align=(Align.CENTER, Align.CENTER, Align.MIN))
        for face in self.faces.values():
            lat0, lat1, z0, _, _ = self.window(face)
            base -= self._wall_box(face.wall, lat0, lat1, z0, self.split_z + 1)
        vents = self._vents(-0.5, self.FLOOR + 1, self.STANDOFF_D / 2)
        if vents is not None:
            base -= vents
        base += self.tie_post
        return base

    @cached_property
    def tie_post(self):
        """Cable-tie post + foot outside the wall of the BMS window (printed standing)."""
        f = self.faces["BMS"]
        lat = (f.lat0 + f.lat1) / 2
        sign = 1 if f.wall[0] == "+" else -1
        out = (self.inner_l / 2 + self.WALL) if f.wall[1] == "x" else (self.inner_w / 2 + self.WALL)
        foot_len = self.TIE_GAP + self.TIE_POST_T + 1.0
        foot_c = sign * (out - 1.0 + foot_len / 2)
        post_c = sign * (out + self.TIE_GAP + self.TIE_POST_T / 2)
        if f.wall[1] == "x":
            foot = Pos(foot_c, lat, 0) * Box(foot_len, self.TIE_POST_W, self.TIE_FOOT_H,
                                             align=(Align.CENTER, Align.CENTER, Align.MIN))
            post = Pos(post_c, lat, 0) * Box(self.TIE_POST_T, self.TIE_POST_W, self.TIE_POST_H,
                                             align=(Align.CENTER, Align.CENTER, Align.MIN))
        else:
            foot = Pos(lat, foot_c, 0) * Box(self.TIE_POST_W, foot_len, self.TIE_FOOT_H,
                                             align=(Align.CENTER, Align.CENTER, Align.MIN))
            post = Pos(lat, post_c, 0) * Box(self.TIE_POST_W, self.TIE_POST_T, self.TIE_POST_H,
                                             align=(Align.CENTER, Align.CENTER, Align.MIN))
        return foot + post

    @cached_property
    def lid(self):
        """The lid in its assembled position (plate from split_z up)."""
        lid = Pos(0, 0, self.split_z) * extrude(
            RectangleRounded(self.outer_l, self.outer_w, self.CORNER_R), self.LID_T)
        pillar_h = self.split_z - self.board_top_z
        for _, x, y, _ in self.holes:
            lid += Pos(x, y, self.board_top_z) * Cylinder(
                self.PILLAR_D / 2, pillar_h + 0.1, align=(Align.CENTER, Align.CENTER, Align.MIN))
        for face in self.faces.values():
            lat0, lat1, _, z1, tongue = self.window(face)
            if tongue:
                lid += self._wall_box(face.wall, lat0 + self.FIT, lat1 - self.FIT, z1,
                                      self.split_z + 0.1, extra=0.0)
        for _, x, y, _ in self.holes:
            lid -= Pos(x, y, self.board_top_z - 1) * Cylinder(
                self.SCREW_CLEAR_D / 2, self.total_h + 2, align=(Align.CENTER, Align.CENTER, Align.MIN))
        vents = self._vents(self.split_z - 0.5, self.LID_T + 1, self.PILLAR_D / 2)
        if vents is not None:
            lid -= vents
        return lid

    @property
    def lid_print(self):
        """The lid upside down with its top face on the bed (z = 0)."""
        return Pos(0, 0, self.total_h) * Rot(180, 0, 0) * self.lid

    def export(self, outdir):
        os.makedirs(outdir, exist_ok=True)
        paths = {
            "base": os.path.join(outdir, "base.stl"),
            "lid": os.path.join(outdir, "lid.stl"),
            "step": os.path.join(outdir, "enclosure.step"),
        }
        export_stl(self.base, paths["base"], tolerance=self.STL_TOL)
        export_stl(self.lid_print, paths["lid"], tolerance=self.STL_TOL)
        asm = Compound(children=[self.base, self.lid], label="gateway-enclosure")
        export_step(asm, paths["step"])
        return paths

    def summary(self):
        return (f"outer {self.outer_l:.1f} x {self.outer_w:.1f} x {self.total_h:.1f} mm, "
                f"board top at z={self.board_top_z:.1f}, lid underside z={self.split_z:.1f}, "
                f"M3x{self.SCREW_L:g} engagement {self.screw_engagement():.1f} mm, "
                f"HV parts {','.join(self.hv_refs)}")


if __name__ == "__main__":
    enc = Enclosure()
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "out")
    paths = enc.export(out)
    print(enc.summary())
    for k, v in paths.items():
        print(f"{k}: {v}")
