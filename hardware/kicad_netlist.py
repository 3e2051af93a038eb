"""Read KiCad files exported by kicad-cli: the S-expression netlist and the BOM CSV.

Used by gen_pcb.py (the board takes its nets from the schematic, like KiCad's
"Update PCB from Schematic") and by the design-rule tests.
"""

import csv
import os
import re
import subprocess
import tempfile

_TOKEN = re.compile(r'\(|\)|"(?:[^"\\]|\\.)*"|[^\s()"]+')


def parse_sexpr(text):
    stack = [[]]
    for tok in _TOKEN.findall(text):
        if tok == "(":
            stack.append([])
        elif tok == ")":
            done = stack.pop()
            stack[-1].append(done)
        elif tok.startswith('"'):
            stack[-1].append(tok[1:-1].replace('\\"', '"').replace("\\\\", "\\"))
        else:
            stack[-1].append(tok)
    return stack[0][0]


def _children(node, key):
    return [c for c in node[1:] if isinstance(c, list) and c and c[0] == key]


def _value(node, key, default=None):
    for c in _children(node, key):
        return c[1] if len(c) > 1 else default
    return default


class Netlist:
    """components: ref -> {value, footprint, fields{}}; nets: name -> [(ref, pin, pinfunction)]."""

    def __init__(self, text):
        root = parse_sexpr(text)
        self.components = {}
        for comps in _children(root, "components"):
            for comp in _children(comps, "comp"):
                ref = _value(comp, "ref")
                fields = {}
                for fs in _children(comp, "fields"):
                    for f in _children(fs, "field"):
                        name = _value(f, "name")
                        fields[name] = f[2] if len(f) > 2 and isinstance(f[2], str) else ""
                lib = _children(comp, "libsource")
                self.components[ref] = {
                    "lib_id": f"{_value(lib[0], 'lib', '')}:{_value(lib[0], 'part', '')}" if lib else "",
                    "value": _value(comp, "value", ""),
                    "footprint": _value(comp, "footprint", ""),
                    "fields": fields,
                }
        self.nets = {}
        for nets in _children(root, "nets"):
            for net in _children(nets, "net"):
                name = _value(net, "name")
                self.nets[name] = [(_value(n, "ref"), _value(n, "pin"), _value(n, "pinfunction", ""))
                                   for n in _children(net, "node")]

    def net_of(self, ref, pin):
        for name, nodes in self.nets.items():
            if any(r == ref and p == pin for r, p, _ in nodes):
                return name
        return None

    def pad_nets(self):
        """(ref, pin) -> net name, for every pin the schematic knows."""
        return {(r, p): name for name, nodes in self.nets.items() for r, p, _ in nodes}


def export_netlist(sch_path, out_dir=None):
    out_dir = out_dir or tempfile.mkdtemp()
    out = os.path.join(out_dir, "netlist.net")
    subprocess.run(["kicad-cli", "sch", "export", "netlist", "--format", "kicadsexpr",
                    "-o", out, sch_path], check=True, capture_output=True)
    with open(out) as f:
        return Netlist(f.read())


BOM_FIELDS = "Reference,Value,Footprint,MPN,Vmax,${QUANTITY},${DNP}"


def export_bom(sch_path, out, group=True):
    cmd = ["kicad-cli", "sch", "export", "bom", "--fields", BOM_FIELDS,
           "--labels", "Refs,Value,Footprint,MPN,Vmax,Qty,DNP"]
    if group:
        cmd += ["--group-by", "Value,Footprint,MPN"]
    cmd += ["-o", out, sch_path]
    subprocess.run(cmd, check=True, capture_output=True)
    with open(out, newline="") as f:
        return list(csv.DictReader(f))
