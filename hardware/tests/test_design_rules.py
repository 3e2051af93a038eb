"""Design-rule tests on the netlist and BOM that kicad-cli exports from the
committed schematic. Every value is computed from the exported data; the only
inputs typed here are datasheet limits (in design.py) and the GPIO plan, which
comes from firmware/lib/board/pins.py."""

import os
import re

import design
import pytest

from board import pins  # firmware/lib/board/pins.py (conftest puts it on sys.path)


# ---- helpers -------------------------------------------------------------------
def ohms(value):
    """'3k0 1%' -> 3000.0, '2k2' -> 2200.0, '120R 1/4W' -> 120.0, '10k' -> 10000.0"""
    m = re.match(r"^(\d+)([RkM])(\d*)", value.split()[0])
    assert m, f"cannot parse resistor value {value!r}"
    mult = {"R": 1, "k": 1e3, "M": 1e6}[m.group(2)]
    return float(f"{m.group(1)}.{m.group(3) or 0}") * mult


def volts(field):
    m = re.match(r"^\s*([\d.]+)\s*V\s*$", field or "")
    return float(m.group(1)) if m else None


def nodes(netlist, net):
    return netlist.nets.get("/" + net, [])


def resistor_between(netlist, net_a, net_b):
    """Value (ohm) of the resistor with one pin on net_a and the other on net_b."""
    found = []
    for ref, comp in netlist.components.items():
        if comp["lib_id"] != "Device:R":
            continue
        on = {netlist.net_of(ref, "1"), netlist.net_of(ref, "2")}
        if on == {"/" + net_a, "/" + net_b}:
            found.append(ohms(comp["value"]))
    assert len(found) == 1, f"expected one resistor between {net_a} and {net_b}, found {found}"
    return found[0]


def devkit_ref(netlist):
    refs = [r for r, c in netlist.components.items() if c["lib_id"].endswith("ESP32-DevKitC-V4")]
    assert len(refs) == 1
    return refs[0]


def gpio_nets(netlist):
    """GPIO number -> net name on the DevKit headers (from the pin names)."""
    a1 = devkit_ref(netlist)
    out = {}
    for name, ns in netlist.nets.items():
        for ref, _pin, func in ns:
            if ref == a1 and design.gpio_of(func) is not None:
                out[design.gpio_of(func)] = name
    return out


def pin_by_function(netlist, ref, func):
    for name, ns in netlist.nets.items():
        for r, _p, f in ns:
            if r == ref and f == func:
                return name
    raise AssertionError(f"{ref} has no pin {func}")


def through_series(netlist, net, default_jumpers=True, bridged=None):
    """Nets reachable from net through series resistors and the 3-pad solder
    jumpers: by default the bridged 1-2 side of each SolderJumper_3_Bridged12 (the
    state as fabricated); bridged={ref: ("2", "3")} re-bridges the given jumpers."""
    bridged = bridged or {}
    seen = {net}
    todo = [net]
    while todo:
        n = todo.pop()
        for ref, pin, _ in netlist.nets.get(n, []):
            comp = netlist.components[ref]
            other = None
            if comp["lib_id"] == "Device:R":
                other = "2" if pin == "1" else "1"
            elif comp["lib_id"].startswith("Jumper:SolderJumper_3"):
                if ref in bridged:
                    pads = bridged[ref]
                elif default_jumpers and comp["lib_id"] == "Jumper:SolderJumper_3_Bridged12":
                    pads = ("1", "2")
                else:
                    pads = ()
                if pin in pads:
                    other = pads[1] if pin == pads[0] else pads[0]
            if other:
                nxt = netlist.net_of(ref, other)
                if nxt and nxt not in seen and nxt != "/GND":
                    seen.add(nxt)
                    todo.append(nxt)
    return seen


# ---- BOM / library hygiene ------------------------------------------------------
def test_every_part_has_footprint_value_and_mpn(netlist, bom):
    assert len(netlist.components) >= 40
    for ref, comp in netlist.components.items():
        assert comp["footprint"], f"{ref} has no footprint"
        assert comp["value"], f"{ref} has no value"
        if not ref.startswith("H"):
            assert comp["fields"].get("MPN"), f"{ref} has no MPN field"
    rows = {row["Refs"]: row for row in bom}
    for ref in netlist.components:
        if ref.startswith("H") or ref.startswith("JP") and ref != "JP3":
            continue  # mounting holes and solder jumpers are excluded from the BOM
        assert ref in rows, f"{ref} missing from the BOM"
        assert rows[ref]["Footprint"] and rows[ref]["Value"] and rows[ref]["MPN"]


def test_every_part_has_a_vmax_field(netlist):
    for ref, comp in netlist.components.items():
        if not ref.startswith("H"):
            assert "Vmax" in comp["fields"], f"{ref} has no Vmax field"


# ---- power -----------------------------------------------------------------------
def test_buck_output_is_5v_within_2_percent(netlist):
    r_top = resistor_between(netlist, "+5V", "FB")
    r_bot = resistor_between(netlist, "FB", "GND")
    # the divider must sit on the XL7015's FB pin
    u = [r for r, c in netlist.components.items() if c["lib_id"] == "gateway:XL7015"]
    assert len(u) == 1 and pin_by_function(netlist, u[0], "FB") == "/FB"
    vout = design.XL7015_VFB * (1 + r_top / r_bot)
    assert abs(vout - 5.0) <= 0.02 * 5.0, f"buck output {vout:.3f} V"


def test_tja1050_supply_stays_in_range(netlist):
    """The TJA1050 sits on the buck output (before the DevKit's Schottky diode):
    worst case over the XL7015 reference tolerance and 1 % resistors."""
    u = [r for r, c in netlist.components.items() if c["lib_id"] == "gateway:TJA1050T"]
    assert len(u) == 1
    assert pin_by_function(netlist, u[0], "VCC") == "/+5V"
    r_top = resistor_between(netlist, "+5V", "FB")
    r_bot = resistor_between(netlist, "FB", "GND")
    lo = design.XL7015_VFB * (1 - design.XL7015_VFB_TOL) * (1 + r_top * 0.99 / (r_bot * 1.01))
    hi = design.XL7015_VFB * (1 + design.XL7015_VFB_TOL) * (1 + r_top * 1.01 / (r_bot * 0.99))
    assert design.TJA1050_VCC[0] <= lo and hi <= design.TJA1050_VCC[1], (lo, hi)


def test_devkit_5v_is_fed_through_a_schottky(netlist):
    a1 = devkit_ref(netlist)
    net = pin_by_function(netlist, a1, "5V")
    diodes = [(r, p) for r, p, _ in netlist.nets[net]
              if netlist.components[r]["lib_id"] == "Device:D_Schottky"]
    assert len(diodes) == 1 and diodes[0][1] == "1", "DevKit 5V must be a Schottky cathode"
    assert netlist.net_of(diodes[0][0], "2") == "/+5V"
    assert len(netlist.nets[net]) == 2, "nothing else may load the DevKit 5V pin"


def test_vbat_side_parts_are_rated_100v(netlist):
    """Every part with a pin on a VBAT-side net (the pack voltage, or the buck
    switch node that swings up to it) carries a Vmax >= 100 V. Three parts are
    judged by the rating that applies to them instead; each is asserted here."""
    side = {"/" + n for n in design.VBAT_SIDE_NETS}
    parts = sorted({r for n in side for r, _, _ in netlist.nets.get(n, [])})
    assert {"J1", "F1", "C1", "C2", "C3", "D2", "D3"} <= set(parts)
    for ref in parts:
        comp = netlist.components[ref]
        vmax = volts(comp["fields"].get("Vmax"))
        if comp["lib_id"] == "gateway:XL7015":
            # the regulator is an 80 V part: at least 1.25 x the full pack voltage
            assert vmax is not None and vmax >= 1.25 * design.VBAT_MAX, (ref, vmax)
        elif comp["lib_id"] == "Device:D_Zener":
            # TVS: its stand-off voltage must exceed the full pack voltage (it must
            # not conduct in normal use); a 100 V stand-off would not protect U1.
            vwm = volts(comp["fields"].get("Vwm"))
            assert vwm is not None and vwm > design.VBAT_MAX, (ref, vwm)
        elif comp["lib_id"] == "Device:L":
            continue  # an inductor has no voltage rating
        else:
            assert vmax is not None and vmax >= design.VRATING_MIN, \
                f"{ref} ({comp['value']}) on the VBAT side rated {vmax} V"


def test_vbat_path_has_fuse_tvs_and_reverse_diode(netlist):
    j1 = nodes(netlist, "VBAT")
    assert ("J1", "4", "Pin_4") in j1
    libs = {netlist.components[r]["lib_id"] for r, _, _ in nodes(netlist, "VBAT")}
    assert libs == {"Connector_Generic:Conn_01x04", "Device:Fuse"}
    f = {netlist.components[r]["lib_id"] for r, _, _ in nodes(netlist, "VBAT_F")}
    assert {"Device:Fuse", "Device:D_Zener", "Device:D"} <= f
    # reverse-polarity diode: anode on the fused VBAT, cathode feeds the regulator
    d = [r for r, c in netlist.components.items() if c["lib_id"] == "Device:D"]
    assert len(d) == 1
    assert netlist.net_of(d[0], "2") == "/VBAT_F" and netlist.net_of(d[0], "1") == "/VIN"


# ---- CAN level shifting ---------------------------------------------------------
def test_rxd_divider_is_3v3_safe(netlist):
    r_top = resistor_between(netlist, "CAN_RXD_5V", "CAN_RXD")
    r_bot = resistor_between(netlist, "CAN_RXD", "GND")
    ratio = r_bot / (r_top + r_bot)
    assert 5.0 * ratio <= 3.3, f"{5.0 * ratio:.2f} V from 5 V"
    assert design.TJA1050_VCC[1] * ratio < design.ESP32_VIO_MAX
    assert design.TJA1050_VCC[0] * ratio > design.ESP32_VIH_MIN
    u = [r for r, c in netlist.components.items() if c["lib_id"] == "gateway:TJA1050T"][0]
    assert pin_by_function(netlist, u, "RXD") == "/CAN_RXD_5V"


def test_transceiver_txd_is_driven_from_3v3(netlist):
    u = [r for r, c in netlist.components.items() if c["lib_id"] == "gateway:TJA1050T"][0]
    txd = pin_by_function(netlist, u, "TXD")
    # TXD is reached from the MCP2515 (powered from 3V3; the default jumper side)
    # and from the ESP32 (3.3 V; jumpers re-bridged 2-3)
    a1 = devkit_ref(netlist)
    m = [r for r, c in netlist.components.items() if "MCP2515" in c["lib_id"]][0]
    assert txd in through_series(netlist, pin_by_function(netlist, m, "TXCAN"))
    assert txd in through_series(netlist, gpio_nets(netlist)[pins.CAN_TWAI_TX],
                                 bridged=twai_jumpers(netlist))
    assert pin_by_function(netlist, m, "VDD") == pin_by_function(netlist, a1, "3V3")


def can_select_jumpers(netlist):
    """{"TXD": ref, "RXD": ref}: the 3-pad jumpers whose middle pad 2 is on the
    transceiver's TXD net and on the divided RXD net."""
    u = [r for r, c in netlist.components.items() if c["lib_id"] == "gateway:TJA1050T"][0]
    txd = pin_by_function(netlist, u, "TXD")
    rxd_5v = pin_by_function(netlist, u, "RXD")
    rxd = [n for n in through_series(netlist, rxd_5v, default_jumpers=False) if n != rxd_5v]
    assert len(rxd) == 1, f"RXD divider output: {rxd}"
    out = {}
    for name, net in (("TXD", txd), ("RXD", rxd[0])):
        jps = [r for r, p, _ in netlist.nets[net]
               if netlist.components[r]["lib_id"].startswith("Jumper:SolderJumper_3") and p == "2"]
        assert len(jps) == 1, f"expected one select jumper on {net}, found {jps}"
        out[name] = jps[0]
    return out


def twai_jumpers(netlist):
    """The CAN select jumpers re-bridged 2-3 (the TWAI option)."""
    return {ref: ("2", "3") for ref in can_select_jumpers(netlist).values()}


def test_can_select_jumpers_default_to_the_mcp2515(netlist):
    """As fabricated (the jumpers' default bridged 1-2 state) the transceiver's TXD/RXD
    are on the MCP2515 TXCAN/RXCAN, the firmware's default can_backend ("mcp2515":
    stock MicroPython for the ESP32 has no machine.CAN), and not on GPIO23/22.
    Re-bridging 2-3 on both moves them to the ESP32 TWAI pins."""
    u = [r for r, c in netlist.components.items() if c["lib_id"] == "gateway:TJA1050T"][0]
    m = [r for r, c in netlist.components.items() if "MCP2515" in c["lib_id"]][0]
    gpio = gpio_nets(netlist)
    txd, rxd = pin_by_function(netlist, u, "TXD"), pin_by_function(netlist, u, "RXD")
    txcan, rxcan = pin_by_function(netlist, m, "TXCAN"), pin_by_function(netlist, m, "RXCAN")
    twai_tx, twai_rx = gpio[pins.CAN_TWAI_TX], gpio[pins.CAN_TWAI_RX]
    jps = can_select_jumpers(netlist)
    for ref in jps.values():
        # a jumper that is bridged 1-2 in copper as fabricated
        assert netlist.components[ref]["lib_id"] == "Jumper:SolderJumper_3_Bridged12", ref
        assert "Bridged12" in netlist.components[ref]["footprint"], ref
    # pad 1 (default side) = MCP2515, pad 3 = ESP32 TWAI
    assert netlist.net_of(jps["TXD"], "1") == txcan and netlist.net_of(jps["TXD"], "3") == twai_tx
    assert netlist.net_of(jps["RXD"], "1") == rxcan and netlist.net_of(jps["RXD"], "3") == twai_rx
    # as built
    assert txd in through_series(netlist, txcan)
    assert txd not in through_series(netlist, twai_tx)
    default_rx = through_series(netlist, rxd)
    assert rxcan in default_rx and twai_rx not in default_rx
    # re-bridged for TWAI
    twai = twai_jumpers(netlist)
    assert txd in through_series(netlist, twai_tx, bridged=twai)
    assert txd not in through_series(netlist, txcan, bridged=twai)
    twai_rxs = through_series(netlist, rxd, bridged=twai)
    assert twai_rx in twai_rxs and rxcan not in twai_rxs


def firmware_default_can_backend():
    """The default of the firmware's can_backend setting, read from its source
    (firmware/lib/**/*.py: '"can_backend": ("mcp2515", ...'), or None."""
    lib = os.path.join(design.HERE, "..", "firmware", "lib")
    pat = re.compile(r'["\']can_backend["\']\s*:\s*\(\s*["\'](\w+)["\']')
    found = set()
    for root, _, files in os.walk(lib):
        for f in files:
            if f.endswith(".py"):
                with open(os.path.join(root, f), encoding="utf-8") as fh:
                    found.update(pat.findall(fh.read()))
    assert len(found) <= 1, f"several can_backend defaults in firmware/lib: {found}"
    return found.pop() if found else None


def test_board_default_matches_the_firmware_can_backend(netlist):
    backend = firmware_default_can_backend()
    if backend is None:
        pytest.skip("no can_backend default found in firmware/lib")
    assert backend == "mcp2515", \
        f"firmware defaults to {backend!r}, but the board is built with the MCP2515 selected"


# ---- GPIO plan = firmware/lib/board/pins.py ----------------------------------------
def mcp(netlist):
    return [r for r, c in netlist.components.items() if "MCP2515" in c["lib_id"]][0]


def tja(netlist):
    return [r for r, c in netlist.components.items() if c["lib_id"] == "gateway:TJA1050T"][0]


# pins.py name -> (ref finder, pin function or number) the GPIO must reach
EXPECTED = {
    "BMS_UART_RX": (lambda n: "J1", "3", "Pin_3"),      # BMS TX
    "BMS_UART_TX": (lambda n: "J1", "2", "Pin_2"),      # BMS RX
    "CAN_TWAI_TX": (tja, None, "TXD"),
    "CAN_TWAI_RX": (tja, None, "RXD"),
    "MCP2515_SCK": (mcp, None, "SCK"),
    "MCP2515_MISO": (mcp, None, "SO"),
    "MCP2515_MOSI": (mcp, None, "SI"),
    "MCP2515_CS": (mcp, None, "~{CS}"),
    "MCP2515_INT": (mcp, None, "~{INT}"),
    "STATUS_LED": (lambda n: "D5", "2", "A"),
}


@pytest.mark.parametrize("name", sorted(pins.ALL))
def test_gpio_reaches_its_function(netlist, name):
    gpio = pins.ALL[name]
    net = gpio_nets(netlist).get(gpio)
    assert net and not net.startswith("unconnected-"), f"GPIO{gpio} ({name}) is not connected"
    find, _, func = EXPECTED[name]
    ref = find(netlist)
    target = pin_by_function(netlist, ref, func)
    # the TWAI pins reach the transceiver with the CAN select jumpers bridged 2-3
    bridged = twai_jumpers(netlist) if name.startswith("CAN_TWAI_") else None
    assert target in through_series(netlist, net, bridged=bridged), \
        f"GPIO{gpio} ({name}) does not reach {ref} {func}"


def test_only_the_pins_py_gpios_are_used(netlist):
    used = {g for g, n in gpio_nets(netlist).items() if not n.startswith("unconnected-")}
    assert used == set(pins.ALL.values())
    assert not used & design.ESP32_FORBIDDEN_GPIOS, "a strapping/flash/UART0 pin is used"
    # each functional net touches exactly one GPIO
    per_net = {}
    for g, n in gpio_nets(netlist).items():
        per_net.setdefault(n, []).append(g)
    for n, gs in per_net.items():
        if not n.startswith("unconnected-"):
            assert len(gs) == 1, f"{n} reaches GPIOs {gs}"


def test_mcp2515_crystal_matches_firmware(netlist):
    u = mcp(netlist)
    osc1 = pin_by_function(netlist, u, "OSC1")
    xtal = [r for r, _, _ in netlist.nets[osc1] if netlist.components[r]["lib_id"] == "Device:Crystal"]
    assert len(xtal) == 1
    mhz = float(netlist.components[xtal[0]]["value"].replace("MHz", ""))
    assert mhz * 1e6 == pins.MCP2515_XTAL_HZ


# ---- CAN bus side ---------------------------------------------------------------------
def rj45_pin_net(netlist, pin):
    return netlist.net_of("J2", pin)


def test_rj45_can_pins_default_and_victron(netlist):
    canh, canl = "/CANH", "/CANL"
    u = tja(netlist)
    assert pin_by_function(netlist, u, "CANH") == canh
    assert pin_by_function(netlist, u, "CANL") == canl
    # default (jumpers bridged 1-2): Pylontech/Deye/Growatt pins 4/5
    assert canh in through_series(netlist, rj45_pin_net(netlist, "4"))
    assert canl in through_series(netlist, rj45_pin_net(netlist, "5"))
    # the 2-3 side of the same jumpers reaches the Victron pins 7/8
    for pin, bus in (("7", canh), ("8", canl)):
        jp_nodes = [(r, p) for r, p, _ in netlist.nets[rj45_pin_net(netlist, pin)] if r.startswith("JP")]
        assert len(jp_nodes) == 1 and jp_nodes[0][1] == "3"
        assert netlist.net_of(jp_nodes[0][0], "2") == bus
    # CAN-GND jumper is of the open type (B- must not reach the inverter by default)
    for pin in ("3", "6"):
        jp = [r for r, _, _ in netlist.nets[rj45_pin_net(netlist, pin)] if r.startswith("JP")]
        assert netlist.components[jp[0]]["lib_id"] == "Jumper:SolderJumper_3_Open"


def test_switchable_120_ohm_termination(netlist):
    r = [ref for ref, c in netlist.components.items() if c["lib_id"] == "Device:R"
         and "/CANH" in (netlist.net_of(ref, "1"), netlist.net_of(ref, "2"))]
    assert len(r) == 1 and ohms(netlist.components[r[0]]["value"]) == 120
    other = [n for n in (netlist.net_of(r[0], "1"), netlist.net_of(r[0], "2")) if n != "/CANH"][0]
    jumpers = [ref for ref, _, _ in netlist.nets[other] if ref.startswith("JP")]
    assert len(jumpers) == 1
    j = jumpers[0]
    assert {netlist.net_of(j, "1"), netlist.net_of(j, "2")} == {other, "/CANL"}
