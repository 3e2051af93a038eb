"""Read what the enclosure needs from a KiCad 9 board file (.kicad_pcb).

A tiny S-expression reader, no pcbnew dependency: the board outline (Edge.Cuts),
the footprints with their position, rotation, pads (drill, net) and graphic
items per layer (F.Fab body outlines, F.CrtYd courtyards, user texts).

Coordinates returned by this module are KiCad's (mm, y pointing DOWN). The
enclosure model converts them to its own frame (y up, origin at the board centre).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

_TOKEN = re.compile(r'\s*(?:(\()|(\))|"((?:[^"\\]|\\.)*)"|([^\s()"]+))')


class Str(str):
    """A quoted string atom (so '"1"' and the number 1 stay distinguishable)."""


def parse_sexpr(text: str):
    """Parse one S-expression into nested lists of atoms (str / Str)."""
    stack: list[list] = [[]]
    pos, n = 0, len(text)
    while pos < n:
        m = _TOKEN.match(text, pos)
        if not m:
            if text[pos:].strip() == "":
                break
            raise ValueError(f"cannot parse at offset {pos}: {text[pos:pos + 40]!r}")
        pos = m.end()
        if m.group(1):
            stack.append([])
        elif m.group(2):
            node = stack.pop()
            stack[-1].append(node)
        elif m.group(3) is not None:
            stack[-1].append(Str(m.group(3).replace('\\"', '"').replace("\\\\", "\\")))
        elif m.group(4) is not None:
            stack[-1].append(m.group(4))
    if len(stack) != 1 or len(stack[0]) != 1:
        raise ValueError("unbalanced S-expression")
    return stack[0][0]


def children(node, name):
    return [c for c in node[1:] if isinstance(c, list) and c and c[0] == name]


def child(node, name):
    found = children(node, name)
    return found[0] if found else None


def _xy(node):
    return float(node[1]), float(node[2])


def _layer(node):
    lay = child(node, "layer")
    return str(lay[1]) if lay else None


def _arc_points(start, mid, end, segments=16):
    """Points on the circular arc through start, mid, end."""
    (ax, ay), (bx, by), (cx, cy) = start, mid, end
    d = 2 * (ax * (by - cy) + bx * (cy - ay) + cx * (ay - by))
    if abs(d) < 1e-12:
        return [start, end]
    ux = ((ax**2 + ay**2) * (by - cy) + (bx**2 + by**2) * (cy - ay) + (cx**2 + cy**2) * (ay - by)) / d
    uy = ((ax**2 + ay**2) * (cx - bx) + (bx**2 + by**2) * (ax - cx) + (cx**2 + cy**2) * (bx - ax)) / d
    r = math.hypot(ax - ux, ay - uy)
    a0 = math.atan2(ay - uy, ax - ux)
    a1 = math.atan2(by - uy, bx - ux)
    a2 = math.atan2(cy - uy, cx - ux)
    # sweep from a0 to a2 through a1
    sweep = (a2 - a0) % (2 * math.pi)
    if (a1 - a0) % (2 * math.pi) > sweep:
        sweep -= 2 * math.pi
    return [(ux + r * math.cos(a0 + sweep * i / segments), uy + r * math.sin(a0 + sweep * i / segments))
            for i in range(segments + 1)]


def graphic_points(node):
    """Outline points of a gr_/fp_ line, rect, poly, circle or arc (local coordinates)."""
    kind = node[0][3:]  # strip "gr_" / "fp_"
    if kind == "line":
        return [_xy(child(node, "start")), _xy(child(node, "end"))]
    if kind == "rect":
        (x0, y0), (x1, y1) = _xy(child(node, "start")), _xy(child(node, "end"))
        return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
    if kind == "poly":
        return [_xy(p) for p in children(child(node, "pts"), "xy")]
    if kind == "circle":
        (cx, cy), (ex, ey) = _xy(child(node, "center")), _xy(child(node, "end"))
        r = math.hypot(ex - cx, ey - cy)
        return [(cx + r * math.cos(t * math.pi / 8), cy + r * math.sin(t * math.pi / 8)) for t in range(16)]
    if kind == "arc":
        return _arc_points(_xy(child(node, "start")), _xy(child(node, "mid")), _xy(child(node, "end")))
    return []


@dataclass
class Pad:
    number: str
    x: float          # board coordinates (KiCad, mm)
    y: float
    drill: float | None
    net: str | None


@dataclass
class Footprint:
    ref: str
    lib_id: str
    x: float
    y: float
    rot: float        # degrees, KiCad convention
    layer: str
    pads: list[Pad] = field(default_factory=list)
    graphics: dict[str, list[list[tuple[float, float]]]] = field(default_factory=dict)
    texts: dict[str, tuple[float, float]] = field(default_factory=dict)

    def to_board(self, lx, ly):
        """Footprint-local point -> board coordinates (KiCad: y down, angle CCW on screen)."""
        t = math.radians(self.rot)
        c, s = math.cos(t), math.sin(t)
        return self.x + lx * c + ly * s, self.y - lx * s + ly * c

    def bbox(self, layer):
        """(xmin, ymin, xmax, ymax) of the graphics on `layer`, board coordinates."""
        pts = [p for shape in self.graphics.get(layer, []) for p in shape]
        if not pts:
            raise KeyError(f"{self.ref}: nothing on {layer}")
        xs, ys = zip(*pts, strict=True)
        return min(xs), min(ys), max(xs), max(ys)

    def nets(self):
        return {p.net for p in self.pads if p.net}


@dataclass
class Board:
    outline: list[tuple[float, float]]   # closed polygon, board coordinates
    thickness: float
    footprints: dict[str, Footprint]

    @property
    def bbox(self):
        xs, ys = zip(*self.outline, strict=True)
        return min(xs), min(ys), max(xs), max(ys)

    def mounting_holes(self, prefix="MountingHole:"):
        """[(ref, x, y, drill)] of the mounting-hole footprints."""
        out = []
        for fp in self.footprints.values():
            if fp.lib_id.startswith(prefix):
                pad = max(fp.pads, key=lambda p: p.drill or 0)
                out.append((fp.ref, pad.x, pad.y, pad.drill))
        return sorted(out)


def _chain(segments, tol=1e-6):
    """Join line segments [(p, q), ...] into one closed polygon."""
    segs = list(segments)
    poly = list(segs.pop(0))
    while segs:
        end = poly[-1]
        for i, (p, q) in enumerate(segs):
            if math.dist(p, end) < tol:
                poly.append(q)
                segs.pop(i)
                break
            if math.dist(q, end) < tol:
                poly.append(p)
                segs.pop(i)
                break
        else:
            raise ValueError("Edge.Cuts outline is not one closed chain")
    if math.dist(poly[0], poly[-1]) > tol:
        raise ValueError("Edge.Cuts outline is not closed")
    return poly[:-1]


def load_board(path) -> Board:
    with open(path, encoding="utf-8") as f:
        root = parse_sexpr(f.read())
    if root[0] != "kicad_pcb":
        raise ValueError(f"{path}: not a kicad_pcb file")
    thickness = float(child(child(root, "general"), "thickness")[1])

    segments = []
    for node in root[1:]:
        if isinstance(node, list) and node and str(node[0]).startswith("gr_") and _layer(node) == "Edge.Cuts":
            pts = graphic_points(node)
            if node[0] in ("gr_rect", "gr_poly", "gr_circle"):
                pts = pts + [pts[0]]
            segments += list(zip(pts[:-1], pts[1:], strict=True))
    if not segments:
        raise ValueError(f"{path}: no Edge.Cuts outline")
    outline = _chain(segments)

    fps = {}
    for node in children(root, "footprint"):
        at = child(node, "at")
        x, y = float(at[1]), float(at[2])
        rot = float(at[3]) if len(at) > 3 else 0.0
        ref = next(str(p[2]) for p in children(node, "property") if p[1] == "Reference")
        fp = Footprint(ref=ref, lib_id=str(node[1]), x=x, y=y, rot=rot, layer=_layer(node))
        for item in node[1:]:
            if not (isinstance(item, list) and item):
                continue
            tag = item[0]
            if tag in ("fp_line", "fp_rect", "fp_poly", "fp_circle", "fp_arc"):
                pts = [fp.to_board(*p) for p in graphic_points(item)]
                fp.graphics.setdefault(_layer(item), []).append(pts)
            elif tag == "fp_text" and item[1] == "user":
                fp.texts[str(item[2])] = fp.to_board(*_xy(child(item, "at")))
            elif tag == "pad":
                lx, ly = _xy(child(item, "at"))
                drill = child(item, "drill")
                d = None
                if drill:
                    nums = [v for v in drill[1:] if not isinstance(v, list) and v != "oval"]
                    d = float(nums[0]) if nums else None
                net = child(item, "net")
                fp.pads.append(Pad(str(item[1]), *fp.to_board(lx, ly), d,
                                   str(net[2]).lstrip("/") if net else None))
        fps[ref] = fp
    return Board(outline=outline, thickness=thickness, footprints=fps)
