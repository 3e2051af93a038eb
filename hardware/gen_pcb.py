"""Generate gateway.kicad_pcb (and the board rules in gateway.kicad_pro) from design.py.

Uses KiCad's own pcbnew Python module (Debian's /usr/bin/python3 or a venv made
with --system-site-packages). Placement is the table PLACEMENT below; tracks come
from router.py (a deterministic grid maze router). Footprints are linked to the
schematic symbols through the symbol UUIDs (design.uuid_for), which is what the
DRC schematic-parity check needs.

Run: python3 gen_pcb.py   (after gen_sch.py)
"""

import json
import os
import sys

import design
import kicad_netlist
import pcbnew
from router import B, F, Router

HERE = os.path.dirname(os.path.abspath(__file__))
PCB = os.path.join(HERE, f"{design.PROJECT}.kicad_pcb")
PRO = os.path.join(HERE, f"{design.PROJECT}.kicad_pro")
DRU = os.path.join(HERE, f"{design.PROJECT}.kicad_dru")
FP_DIR = "/usr/share/kicad/footprints"

# Board outline (mm). The board's top-left corner sits at ORIGIN on the page.
W, H = 110.0, 80.0
ORIGIN = (60.0, 50.0)

# Track widths and clearances (mm)
HV_CLEARANCE = 1.0      # VBAT-class copper to any other net (IPC-2221 B2 ~0.6 mm @ 60 V)
CLEARANCE = 0.2
VIA_D, VIA_DRILL = 0.6, 0.3
WIDTH = {"HV": 0.6, "Power": 0.6, "Default": 0.25}
POWER_NETS = ("GND", "+5V", "+5V_DEV", "+3V3", "SW")
# Footprints whose own pad pitch is below the HV spacing (the connector and the
# regulator): near them the HV rule does not apply (see gateway.kicad_dru).
HV_EXEMPT_REFS = ("J1", "U1")

# ref: (x, y, rotation in degrees), board coordinates (mm, y down), all on top.
PLACEMENT = {
    # ESP32 DevKitC: J2 row (pads 1-19) at y = 36, J3 row 25.4 mm above; USB to the right
    "A1": (56.0, 36.0, 90),
    # VBAT input (J1 at the right board edge, cable goes up)
    "J1": (105.0, 46.5, 90),
    "F1": (97.0, 47.0, 0),
    "D1": (97.5, 54.0, 0),
    "D2": (97.5, 60.5, 180),
    "C1": (96.0, 69.0, 180),
    "C2": (86.0, 70.0, 0),
    # buck
    "U1": (82.0, 62.0, 180),
    "C3": (84.5, 54.5, 0),
    "D3": (76.5, 71.0, 90),
    "L1": (66.0, 68.0, 0),
    "R1": (74.5, 56.0, 0),
    "R2": (74.5, 59.5, 0),
    "C4": (51.0, 69.0, 90),
    "C5": (56.5, 62.0, 90),
    "D4": (59.0, 55.0, 180),
    # UART series resistors near J1
    "R3": (90.0, 44.5, 0),
    "R4": (90.0, 41.5, 0),
    # status LED
    "R9": (68.0, 44.0, 0),
    "D5": (68.0, 47.0, 0),
    # CAN transceiver, divider, TWAI/MCP2515 jumpers
    "U2": (33.0, 55.0, 0),
    "C6": (33.0, 49.0, 0),
    "R5": (40.0, 58.0, 0),
    "R6": (40.0, 61.0, 0),
    "JP1": (44.0, 45.0, 0),
    "JP2": (44.0, 50.0, 0),
    # MCP2515 + crystal
    "U3": (36.0, 25.0, 0),
    "C7": (28.0, 20.0, 90),
    "R7": (28.0, 30.0, 90),
    "Y1": (36.0, 11.0, 0),
    "C8": (26.5, 11.0, 90),
    "C9": (45.5, 11.0, 90),
    # bus side: termination, pin selection, RJ45 at the left edge
    "R8": (24.0, 62.0, 90),
    "JP3": (24.0, 70.0, 0),
    "JP4": (20.0, 50.0, 90),
    "JP5": (24.0, 50.0, 90),
    "JP6": (16.0, 44.0, 90),
    "J2": (15.5, 57.0, 270),
}
MOUNTING = {"H1": (4.0, 4.0), "H2": (106.0, 4.0), "H3": (4.0, 76.0), "H4": (106.0, 76.0)}


def mm(v):
    return pcbnew.FromMM(float(v))


def pt(x, y):
    return pcbnew.VECTOR2I(mm(ORIGIN[0] + x), mm(ORIGIN[1] + y))


def netclass_of(net):
    if net in design.HV_NETS:
        return "HV"
    if net in POWER_NETS:
        return "Power"
    return "Default"


def load_fp(fpid):
    lib, name = fpid.split(":")
    path = os.path.join(HERE, "gateway.pretty") if lib == "gateway" else \
        os.path.join(FP_DIR, f"{lib}.pretty")
    fp = pcbnew.FootprintLoad(path, name)
    if fp is None:
        sys.exit(f"footprint {fpid} not found")
    fp.SetFPID(pcbnew.LIB_ID(lib, name))
    return fp


def add_footprint(board, nets, ref, fpid, value, pad_nets, x, y, rot):
    fp = load_fp(fpid)
    fp.SetReference(ref)
    fp.SetValue(value)
    fp.SetPath(pcbnew.KIID_PATH("/" + design.uuid_for("symbol", ref)))
    board.Add(fp)
    fp.SetOrientationDegrees(rot)
    fp.SetPosition(pt(x, y))
    for pad in fp.Pads():
        net = pad_nets.get((ref, pad.GetNumber()))
        if net:
            pad.SetNet(nets[net])
    return fp


def pad_shape(pad):
    """Copper shape of a pad for the router (board mm)."""
    layers = tuple(layer for layer, kl in ((F, pcbnew.F_Cu), (B, pcbnew.B_Cu)) if pad.IsOnLayer(kl))
    pos = pad.GetPosition()
    cx, cy = pcbnew.ToMM(pos.x) - ORIGIN[0], pcbnew.ToMM(pos.y) - ORIGIN[1]
    name = pad.GetNetname()
    net = (name[1:] if name.startswith("/") else name) if pad.GetNetCode() > 0 else ""
    if pad.GetShape(pcbnew.F_Cu if F in layers else pcbnew.B_Cu) == pcbnew.PAD_SHAPE_CIRCLE:
        return ("circle", layers, net, cx, cy, pcbnew.ToMM(pad.GetSize(pcbnew.F_Cu).x) / 2)
    bb = pad.GetBoundingBox()
    return ("rect", layers, net, cx, cy, pcbnew.ToMM(bb.GetWidth()) / 2,
            pcbnew.ToMM(bb.GetHeight()) / 2)


def clearance_fn(net, other):
    """(clearance, clearance inside the HV-exempt areas)."""
    if other is None:
        return 0.3, 0.3
    if (net in design.HV_NETS) != (other in design.HV_NETS):
        return HV_CLEARANCE, CLEARANCE
    return CLEARANCE, CLEARANCE


def make_router(fps):
    r = Router(W, H)
    pads_by_net = {}
    for fp in fps:
        for pad in fp.Pads():
            if pad.GetAttribute() == pcbnew.PAD_ATTRIB_NPTH:
                c = pad.GetPosition()
                r.objects.append(("circle", (F, B), None, pcbnew.ToMM(c.x) - ORIGIN[0],
                                  pcbnew.ToMM(c.y) - ORIGIN[1],
                                  pcbnew.ToMM(pad.GetDrillSize().x) / 2))
                continue
            shape = pad_shape(pad)
            if not shape[1]:
                continue
            r.objects.append(shape)
            if shape[2] and not shape[2].startswith("unconnected-"):
                pads_by_net.setdefault(shape[2], []).append(shape)
        if fp.GetReference() in HV_EXEMPT_REFS:
            bb = fp.GetCourtyard(pcbnew.F_CrtYd).BBox()
            r.set_exempt(pcbnew.ToMM(bb.GetLeft()) - ORIGIN[0], pcbnew.ToMM(bb.GetTop()) - ORIGIN[1],
                         pcbnew.ToMM(bb.GetRight()) - ORIGIN[0], pcbnew.ToMM(bb.GetBottom()) - ORIGIN[1])
    return r, pads_by_net


def route_all(fps, order):
    """Route the nets in the given order. Returns (tracks, vias, failed nets)."""
    r, pads_by_net = make_router(fps)
    tracks, vias_out, failed = [], [], []
    for net in order:
        hw = WIDTH[netclass_of(net)] / 2
        free_b = r.blocked(net, hw, clearance_fn)
        free = [~free_b[0], ~free_b[1]]
        via_b = r.blocked(net, VIA_D / 2, clearance_fn)
        no_via = r.exempt.copy()
        no_via[:] = False
        for obj in r.objects:
            if obj[0] != "seg":
                r.mark(no_via, obj, VIA_D / 2 + 0.1)
        via_ok = ~via_b[0] & ~via_b[1] & ~no_via
        pads = list(pads_by_net[net])
        tree = pads.pop(0)
        connected = [tree]
        goal = {(layer, i, j) for layer in tree[1] for (i, j) in r.cells_in(tree)}
        while pads:
            pads.sort(key=lambda p: min(abs(p[3] - c[3]) + abs(p[4] - c[4]) for c in connected))
            nxt = pads.pop(0)
            near = min(connected, key=lambda c: abs(nxt[3] - c[3]) + abs(nxt[4] - c[4]))
            starts = [(layer, i, j) for layer in nxt[1] for (i, j) in r.cells_in(nxt)]
            path = r.astar(starts, goal, free, via_ok, r.cell(near[3], near[4]))
            if path is None:
                failed.append(net)
                continue
            segs, vias = r.to_geometry(path)
            for (layer, x1, y1, x2, y2) in segs:
                tracks.append((net, layer, x1, y1, x2, y2, 2 * hw))
                r.objects.append(("seg", (layer,), net, x1, y1, x2, y2, hw))
            for (x, y) in vias:
                vias_out.append((net, x, y))
                r.objects.append(("circle", (F, B), net, x, y, VIA_D / 2))
                i, j = r.cell(x, y)
                goal.update({(F, i, j), (B, i, j)})
            goal.update(path)
            goal.update((layer, i, j) for layer in nxt[1] for (i, j) in r.cells_in(nxt))
            connected.append(nxt)
    return tracks, vias_out, failed, pads_by_net


def route(board, nets, fps, attempts=6):
    _, pads_by_net = make_router(fps)

    def span(net):
        ps = pads_by_net[net]
        xs = [p[3] for p in ps]
        ys = [p[4] for p in ps]
        return (max(xs) - min(xs)) + (max(ys) - min(ys))

    order = sorted(pads_by_net, key=lambda n: (netclass_of(n) == "Default", span(n), n))
    for attempt in range(attempts):
        tracks, vias, failed, _ = route_all(fps, order)
        print(f"attempt {attempt + 1}: {len(tracks)} segments, {len(vias)} vias, "
              f"unrouted: {sorted(set(failed))}")
        if not failed:
            break
        # rip up and retry with the failed nets first
        order = [n for n in order if n in failed] + [n for n in order if n not in failed]
    for (net, layer, x1, y1, x2, y2, w) in tracks:
        t = pcbnew.PCB_TRACK(board)
        t.SetStart(pt(x1, y1))
        t.SetEnd(pt(x2, y2))
        t.SetWidth(mm(w))
        t.SetLayer(pcbnew.F_Cu if layer == F else pcbnew.B_Cu)
        t.SetNet(nets["/" + net])
        board.Add(t)
    for (net, x, y) in vias:
        v = pcbnew.PCB_VIA(board)
        v.SetPosition(pt(x, y))
        v.SetDrill(mm(VIA_DRILL))
        v.SetWidth(mm(VIA_D))
        v.SetNet(nets["/" + net])
        board.Add(v)
    return sorted(set(failed))


def write_rules():
    with open(DRU, "w") as f:
        f.write(
            "(version 1)\n"
            "# VBAT-class copper (the pack voltage, up to 58.4 V) keeps 1 mm from every other\n"
            "# net (IPC-2221 B2, external uncoated: about 0.6 mm at 60 V). Inside the courtyards\n"
            "# of the 1.25 mm connector J1 and the TO-252-5 regulator U1 the package pitch sets\n"
            "# the spacing, so the rule is not applied there.\n"
            "(rule \"HV clearance\"\n"
            f"  (constraint clearance (min {HV_CLEARANCE}mm))\n"
            "  (condition \"A.NetClass == 'HV' && B.NetClass != 'HV'"
            + "".join(f" && !A.intersectsCourtyard('{r}') && !B.intersectsCourtyard('{r}')"
                      for r in HV_EXEMPT_REFS)
            + "\"))\n")


def write_project():
    with open(PRO) as f:
        pro = json.load(f)
    rules = pro["board"]["design_settings"]["rules"]
    rules.update({"min_clearance": CLEARANCE, "min_track_width": 0.2,
                  "min_via_diameter": VIA_D, "min_through_hole_diameter": VIA_DRILL,
                  "min_copper_edge_clearance": 0.5})
    default = pro["net_settings"]["classes"][0]
    default.update({"clearance": CLEARANCE, "track_width": WIDTH["Default"],
                    "via_diameter": VIA_D, "via_drill": VIA_DRILL})
    classes = [default]
    for i, name in enumerate(("HV", "Power")):
        c = dict(default)
        c.update({"name": name, "track_width": WIDTH[name], "priority": i})
        classes.append(c)
    pro["net_settings"]["classes"] = classes
    pro["net_settings"]["netclass_patterns"] = (
        [{"netclass": "HV", "pattern": f"/{n}"} for n in design.HV_NETS]
        + [{"netclass": "Power", "pattern": f"/{n}"} for n in POWER_NETS])
    pro["meta"]["filename"] = os.path.basename(PRO)
    with open(PRO, "w") as f:
        json.dump(pro, f, indent=2, sort_keys=True)
        f.write("\n")


def main():
    pcbnew.KIID.SeedGenerator(1)   # deterministic UUIDs: regenerating gives the same file
    board = pcbnew.NewBoard(PCB)
    ds = board.GetDesignSettings()
    ds.SetCopperLayerCount(2)
    # Nets come from the schematic (kicad-cli netlist), as "Update PCB from
    # Schematic" would do; they must agree with design.py.
    netlist = kicad_netlist.export_netlist(os.path.join(HERE, f"{design.PROJECT}.kicad_sch"))
    sch_nets = {n.lstrip("/"): sorted((r, p) for r, p, _ in nodes)
                for n, nodes in netlist.nets.items() if not n.startswith("unconnected-")}
    want = {n: sorted(nodes) for n, nodes in design.nets().items()}
    if sch_nets != want:
        sys.exit("schematic netlist differs from design.py: run gen_sch.py first")
    nets = {}
    for name in sorted(netlist.nets):
        ni = pcbnew.NETINFO_ITEM(board, name)
        board.Add(ni)
        nets[name] = ni
    pad_nets = {k: v for k, v in netlist.pad_nets().items()}

    fps = []
    for p in design.PARTS:
        x, y, rot = PLACEMENT[p["ref"]]
        fps.append(add_footprint(board, nets, p["ref"], p["footprint"], p["value"],
                                 pad_nets, x, y, rot))
    for ref, (x, y) in MOUNTING.items():
        fp = add_footprint(board, nets, ref, design.MOUNTING_HOLE_FP, "M3", {}, x, y, 0)
        fp.Reference().SetVisible(False)
        fps.append(fp)

    # outline
    corners = [(0, 0), (W, 0), (W, H), (0, H)]
    for a, b in zip(corners, corners[1:] + corners[:1], strict=True):
        s = pcbnew.PCB_SHAPE(board)
        s.SetShape(pcbnew.SHAPE_T_SEGMENT)
        s.SetStart(pt(*a))
        s.SetEnd(pt(*b))
        s.SetLayer(pcbnew.Edge_Cuts)
        s.SetWidth(mm(0.1))
        board.Add(s)

    failed = [] if os.environ.get("NOROUTE") else route(board, nets, fps)
    pcbnew.SaveBoard(PCB, board)
    write_project()
    write_rules()
    prl = os.path.join(HERE, f"{design.PROJECT}.kicad_prl")
    if os.path.exists(prl):
        os.remove(prl)
    if failed:
        print("UNROUTED:", failed)
        sys.exit(1)


if __name__ == "__main__":
    main()
