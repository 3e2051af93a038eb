"""Write the project symbol and footprint libraries (parts KiCad does not ship).

  gateway.kicad_sym: XL7015 (buck), TJA1050T (CAN transceiver),
                     ESP32-DevKitC-V4 (the plug-in board, 38 pins)
  gateway.pretty/ESP32-DevKitC-V4_Socket.kicad_mod: two 1x19 2.54 mm rows,
                     25.4 mm apart (DevKitC V4 header spacing)

Plain text, written from the tables below, so a review reads the pin lists.
"""

import os

import design

HERE = os.path.dirname(os.path.abspath(__file__))


def _pin(ptype, name, number, x, y, angle, length=2.54):
    return (f'\t\t\t(pin {ptype} line (at {x:g} {y:g} {angle}) (length {length:g})\n'
            f'\t\t\t\t(name "{name}" (effects (font (size 1.27 1.27))))\n'
            f'\t\t\t\t(number "{number}" (effects (font (size 1.27 1.27))))\n'
            f'\t\t\t)\n')


def _symbol(name, ref, desc, footprint, left, right, width, datasheet="~"):
    """left/right: lists of (type, name, number) or None for a gap, top to bottom."""
    rows = max(len(left), len(right))
    half_h = (rows + 1) * 2.54 / 2
    top = round(half_h / 2.54) * 2.54
    x = width / 2
    body = []
    for _side, pins_, px, ang in (("L", left, -x - 2.54, 0), ("R", right, x + 2.54, 180)):
        for i, p in enumerate(pins_):
            if p is None:
                continue
            y = top - 2.54 * (i + 1)
            body.append(_pin(p[0], p[1], p[2], px, y, ang))
    bottom = top - 2.54 * (rows + 1)

    def prop(key, val, y, hide=False):
        h = " (hide yes)" if hide else ""
        return (f'\t\t(property "{key}" "{val}" (at 0 {y:g} 0)\n'
                f'\t\t\t(effects (font (size 1.27 1.27)){h})\n\t\t)\n')

    return (f'\t(symbol "{name}"\n\t\t(exclude_from_sim no) (in_bom yes) (on_board yes)\n'
            + prop("Reference", ref, top + 1.27)
            + prop("Value", name, bottom - 1.27)
            + prop("Footprint", footprint, bottom - 3.81, True)
            + prop("Datasheet", datasheet, 0, True)
            + prop("Description", desc, 0, True)
            + f'\t\t(symbol "{name}_0_1"\n'
            f'\t\t\t(rectangle (start {-x:g} {top:g}) (end {x:g} {bottom:g})\n'
            f'\t\t\t\t(stroke (width 0.254) (type default)) (fill (type background))\n'
            f'\t\t\t)\n\t\t)\n'
            f'\t\t(symbol "{name}_1_1"\n' + "".join(body) + '\t\t)\n\t)\n')


def symbols():
    xl7015 = _symbol(
        "XL7015", "U", "XLSEMI XL7015 80 V 0.8 A 150 kHz buck, TO-252-5 "
        "(pinout 1 GND, 2 FB, 3 SW/tab, 4 VC, 5 VIN: check the datasheet)",
        "Package_TO_SOT_SMD:TO-252-5_TabPin3",
        [("power_in", "VIN", "5"), ("passive", "VC", "4"), None, ("power_in", "GND", "1")],
        [("output", "SW", "3"), None, ("input", "FB", "2"), None],
        10.16)
    tja = _symbol(
        "TJA1050T", "U", "NXP TJA1050 high-speed CAN transceiver, 5 V, SO-8",
        "Package_SO:SOIC-8_3.9x4.9mm_P1.27mm",
        [("input", "TXD", "1"), ("output", "RXD", "4"), ("input", "S", "8"),
         ("output", "Vref", "5"), ("power_in", "VCC", "3"), ("power_in", "GND", "2")],
        [("bidirectional", "CANH", "7"), None, ("bidirectional", "CANL", "6")],
        10.16)

    def devkit_type(name):
        if name == "3V3":
            return "power_out"
        if name in ("5V", "GND"):
            return "power_in"
        if name == "EN":
            return "input"
        return "bidirectional"

    left = [(devkit_type(n), n, str(i + 1)) for i, n in enumerate(design.DEVKIT_J2)]
    right = [(devkit_type(n), n, str(i + 20)) for i, n in enumerate(design.DEVKIT_J3)]
    devkit = _symbol(
        "ESP32-DevKitC-V4", "A", "Espressif ESP32-DevKitC V4 (38 pin, WROOM-32) on "
        "two 1x19 sockets; pads 1-19 = J2 (left), 20-38 = J3 (right)",
        "gateway:ESP32-DevKitC-V4_Socket", left, right, 17.78)
    return ('(kicad_symbol_lib\n\t(version 20241209)\n\t(generator "gateway_gen_lib")\n'
            '\t(generator_version "9.0")\n' + xl7015 + tja + devkit + ')\n')


def devkit_footprint():
    """Rows along Y, pad 1 at the origin, J3 row at x = +25.4 mm."""
    pitch, row = 2.54, 25.4
    pads = []
    for i in range(38):
        x = 0 if i < 19 else row
        y = (i % 19) * pitch
        shape = "rect" if i in (0, 19) else "circle"
        pads.append(
            f'\t(pad "{i + 1}" thru_hole {shape} (at {x:g} {y:g}) (size 1.7 1.7) '
            f'(drill 1) (layers "*.Cu" "*.Mask")\n'
            f'\t\t(uuid "{design.uuid_for("devkit-pad", i + 1)}")\n\t)\n')
    # DevKitC V4 board is about 54.4 x 27.9 mm; headers centred on its length.
    y0, y1 = -4.35, 18 * pitch + 4.35
    x0, x1 = -1.25, row + 1.25
    lines = []

    def rect(layer, a, b, c, d, width):
        for (p, q) in (((a, b), (c, b)), ((c, b), (c, d)), ((c, d), (a, d)), ((a, d), (a, b))):
            lines.append(
                f'\t(fp_line (start {p[0]:g} {p[1]:g}) (end {q[0]:g} {q[1]:g})\n'
                f'\t\t(stroke (width {width:g}) (type solid)) (layer "{layer}")\n'
                f'\t\t(uuid "{design.uuid_for("devkit-line", len(lines))}")\n\t)\n')

    rect("F.SilkS", x0 - 0.12, y0 - 0.12, x1 + 0.12, y1 + 0.12, 0.12)
    rect("F.Fab", x0, y0, x1, y1, 0.1)
    rect("F.CrtYd", x0 - 0.5, y0 - 0.5, x1 + 0.5, y1 + 0.5, 0.05)
    return ('(footprint "ESP32-DevKitC-V4_Socket"\n\t(version 20241229)\n'
            '\t(generator "gateway_gen_lib")\n\t(generator_version "9.0")\n'
            '\t(layer "F.Cu")\n'
            '\t(descr "ESP32-DevKitC V4 (38 pin) on two 1x19 2.54 mm sockets, rows 25.4 mm '
            'apart; pad 1 = J2-1 (3V3, antenna end), pad 20 = J3-1 (GND); USB at the pad 19 end")\n'
            '\t(tags "ESP32 DevKitC socket")\n'
            '\t(property "Reference" "REF**" (at 12.7 -6.5 0) (layer "F.SilkS")\n'
            f'\t\t(uuid "{design.uuid_for("devkit-fp", "ref")}")\n'
            '\t\t(effects (font (size 1 1) (thickness 0.15)))\n\t)\n'
            '\t(property "Value" "ESP32-DevKitC-V4_Socket" (at 12.7 23 90) (layer "F.Fab")\n'
            f'\t\t(uuid "{design.uuid_for("devkit-fp", "value")}")\n'
            '\t\t(effects (font (size 1 1) (thickness 0.15)))\n\t)\n'
            '\t(fp_text user "USB" (at 12.7 48 0) (layer "F.SilkS")\n'
            f'\t\t(uuid "{design.uuid_for("devkit-fp", "usb")}")\n'
            '\t\t(effects (font (size 1 1) (thickness 0.15)))\n\t)\n'
            '\t(attr through_hole)\n' + "".join(lines) + "".join(pads) + ')\n')


def main():
    with open(os.path.join(HERE, "gateway.kicad_sym"), "w") as f:
        f.write(symbols())
    os.makedirs(os.path.join(HERE, "gateway.pretty"), exist_ok=True)
    with open(os.path.join(HERE, "gateway.pretty", "ESP32-DevKitC-V4_Socket.kicad_mod"), "w") as f:
        f.write(devkit_footprint())
    for name, uri, kind in (("sym-lib-table", "gateway.kicad_sym", "KiCad"),
                            ("fp-lib-table", "gateway.pretty", "KiCad")):
        tag = name.replace("-", "_")
        with open(os.path.join(HERE, name), "w") as f:
            f.write(f'({tag}\n  (version 7)\n  (lib (name "gateway")(type "{kind}")'
                    f'(uri "${{KIPRJMOD}}/{uri}")(options "")(descr "gateway project library"))\n)\n')


if __name__ == "__main__":
    main()
