"""Gateway PCB: the one table every generator and test reads.

Each part lists its symbol, footprint, value, order code, voltage rating and a
pin -> net map. gen_sch.py draws the schematic from it (a label on every pin),
gen_pcb.py places and routes the board from it, and tests/ check the KiCad
netlist that kicad-cli exports from the schematic against the design rules.

GPIO numbers are NOT typed here: they come from firmware/lib/board/pins.py,
the single source of truth shared with the firmware.
Circuit rationale: shared/spec/hardware-notes.md sections 2.1-2.7.
"""

import os
import sys
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "firmware", "lib"))
from board import pins  # noqa: E402  (firmware/lib/board/pins.py)

PROJECT = "gateway"
UUID_NS = uuid.UUID("6f1f3c2e-2b9c-4f53-9a53-0b3f7d1c0a15")


def uuid_for(kind, name):
    """Deterministic UUIDs so regenerating gives an identical file."""
    return str(uuid.uuid5(UUID_NS, f"{kind}:{name}"))


# --- electrical limits used by the design-rule tests --------------------------
VBAT_MAX = 58.4          # 16S LiFePO4 fully charged [V]
VRATING_MIN = 100.0      # every VBAT-side part rated at least this [V]
XL7015_VFB = 1.25        # XL7015 feedback reference, typ. [V] (datasheet)
XL7015_VFB_TOL = 0.02    # +/-2 % (1.225 ... 1.275 V in the datasheet table)
XL7015_VIN_MAX = 80.0    # XL7015 input rating [V]
TJA1050_VCC = (4.75, 5.25)
ESP32_VIH_MIN = 0.75 * 3.3   # ESP32 input-high threshold [V]
ESP32_VIO_MAX = 3.6          # ESP32 absolute maximum on a GPIO [V]

# Nets that carry the pack voltage. Copper of these nets keeps >= 1 mm from all
# other nets (gateway.kicad_dru); parts touching them need Vmax >= VRATING_MIN.
HV_NETS = ("VBAT", "VBAT_F", "VIN", "VC")
# The buck's switch node swings 0 ... VIN: parts on it see the pack voltage too.
VBAT_SIDE_NETS = HV_NETS + ("SW",)

# --- ESP32-DevKitC V4 (38 pin, WROOM-32) header pinout --------------------------
# Footprint pads 1-19 = left header J2 (pin 1 at the antenna end),
# pads 20-38 = right header J3 (pad 19 + n = J3-n).
DEVKIT_J2 = ["3V3", "EN", "IO36", "IO39", "IO34", "IO35", "IO32", "IO33", "IO25",
             "IO26", "IO27", "IO14", "IO12", "GND", "IO13", "SD2/IO9", "SD3/IO10",
             "CMD/IO11", "5V"]
DEVKIT_J3 = ["GND", "IO23", "IO22", "TXD0/IO1", "RXD0/IO3", "IO21", "GND", "IO19",
             "IO18", "IO5", "IO17", "IO16", "IO4", "IO0", "IO2", "IO15", "SD1/IO8",
             "SD0/IO7", "CLK/IO6"]
DEVKIT_PINS = {str(i + 1): n for i, n in enumerate(DEVKIT_J2)}
DEVKIT_PINS.update({str(i + 20): n for i, n in enumerate(DEVKIT_J3)})

# Pins the board must never use: strapping (0, 2, 5, 12, 15), flash (6-11),
# UART0 / programming (1, 3). See hardware-notes.md section 2.6.
ESP32_FORBIDDEN_GPIOS = {0, 1, 2, 3, 5, 6, 7, 8, 9, 10, 11, 12, 15}


def gpio_of(pin_name):
    """'IO23' -> 23, 'TXD0/IO1' -> 1, '3V3' -> None."""
    for part in pin_name.split("/"):
        if part.startswith("IO") and part[2:].isdigit():
            return int(part[2:])
    return None


def devkit_pad(gpio):
    """Footprint pad number of a GPIO on the DevKit headers."""
    for pad, name in DEVKIT_PINS.items():
        if gpio_of(name) == gpio:
            return pad
    raise KeyError(f"GPIO{gpio} is not on the DevKitC headers")


# Net of each GPIO used on the board, keyed by the pins.py name.
GPIO_NETS = {
    "BMS_UART_RX": "UART_RX",
    "BMS_UART_TX": "UART_TX",
    "CAN_TWAI_TX": "TWAI_TX",
    "CAN_TWAI_RX": "TWAI_RX",
    "MCP2515_SCK": "SPI_SCK",
    "MCP2515_MISO": "SPI_MISO",
    "MCP2515_MOSI": "SPI_MOSI",
    "MCP2515_CS": "SPI_CS",
    "MCP2515_INT": "MCP_INT",
    "STATUS_LED": "LED",
}


def _devkit_nets():
    nets = {}
    for pad, name in DEVKIT_PINS.items():
        if name == "GND":
            nets[pad] = "GND"
    nets[devkit_pad_named("3V3")] = "+3V3"
    nets[devkit_pad_named("5V")] = "+5V_DEV"
    for key, net in GPIO_NETS.items():
        nets[devkit_pad(pins.ALL[key])] = net
    return nets


def devkit_pad_named(name):
    return next(p for p, n in DEVKIT_PINS.items() if n == name)


def P(ref, lib_id, value, footprint, pins_, mpn, vmax=None, desc="", **fields):
    """One part. pins_: {pin number: net name or None (no-connect)}."""
    d = dict(ref=ref, lib_id=lib_id, value=value, footprint=footprint,
             pins=pins_, MPN=mpn, desc=desc)
    d["Vmax"] = "" if vmax is None else f"{vmax:g}V"
    d.update(fields)
    return d


R0603 = "Resistor_SMD:R_0603_1608Metric"
C0603 = "Capacitor_SMD:C_0603_1608Metric"
SJ3 = "Jumper:SolderJumper-3_P1.3mm_Bridged12_RoundedPad1.0x1.5mm_NumberLabels"
SJ3_OPEN = "Jumper:SolderJumper-3_P1.3mm_Open_RoundedPad1.0x1.5mm_NumberLabels"

PARTS = [
    # ---- BMS "GPS" port and VBAT input protection ---------------------------
    P("J1", "Connector_Generic:Conn_01x04", "BMS GPS port",
      "Connector_Molex:Molex_PicoBlade_53047-0410_1x04_P1.25mm_Vertical",
      {"1": "GND", "2": "BMS_RX", "3": "BMS_TX", "4": "VBAT"},
      "Molex 53047-0410", 125,
      "1.25 mm, pin order as on the JK-B GPS socket: 1 GND, 2 RX, 3 TX, 4 VBAT"),
    P("F1", "Device:Fuse", "500mA 125V",
      "Fuse:Fuse_Littelfuse-NANO2-451_453",
      {"1": "VBAT", "2": "VBAT_F"}, "Littelfuse 0451.500MRL", 125,
      "Nano2 fast fuse, 125 V DC rated"),
    P("D1", "Device:D_Zener", "SMBJ64A", "Diode_SMD:D_SMB",
      {"1": "VBAT_F", "2": "GND"}, "Littelfuse SMBJ64A", None,
      "unidirectional TVS, V_WM 64 V > 58.4 V", Vwm="64V"),
    P("D2", "Device:D", "US1M", "Diode_SMD:D_SMA",
      {"1": "VIN", "2": "VBAT_F"}, "US1M", 1000,
      "reverse-polarity series diode, 1 A 1000 V"),
    P("C1", "Device:C_Polarized", "47u 100V", "Capacitor_SMD:CP_Elec_10x10",
      {"1": "VIN", "2": "GND"}, "Panasonic EEE-FK2A470P", 100,
      "bulk input capacitor, damps hot-plug ringing"),
    P("C2", "Device:C", "2.2u 100V X7R", "Capacitor_SMD:C_1210_3225Metric",
      {"1": "VIN", "2": "GND"}, "Murata GRM32ER72A225KA35L", 100,
      "ceramic input capacitor"),
    # ---- 5 V buck (XL7015) ------------------------------------------------------
    P("U1", "gateway:XL7015", "XL7015E1", "Package_TO_SOT_SMD:TO-252-5_TabPin3",
      {"1": "GND", "2": "FB", "3": "SW", "4": "VC", "5": "VIN"},
      "XLSEMI XL7015E1", XL7015_VIN_MAX,
      "80 V 0.8 A 150 kHz buck; pinout unverified, check the datasheet"),
    P("C3", "Device:C", "1u 100V X7R", "Capacitor_SMD:C_1206_3216Metric",
      {"1": "VIN", "2": "VC"}, "Samsung CL31B105KCHNNNE", 100,
      "VC bypass, VC to VIN"),
    P("D3", "Device:D_Schottky", "SS210", "Diode_SMD:D_SMA",
      {"1": "SW", "2": "GND"}, "SS210", 100, "catch diode, 2 A 100 V"),
    P("L1", "Device:L", "68u", "Inductor_SMD:L_Bourns_SRR1260",
      {"1": "SW", "2": "+5V"}, "Bourns SRR1260-680M", None,
      "shielded, Isat >= 1 A (an inductor has no voltage rating)"),
    P("R1", "Device:R", "3k0 1%", R0603,
      {"1": "+5V", "2": "FB"}, "RC0603FR-073KL", 75, "feedback top"),
    P("R2", "Device:R", "1k0 1%", R0603,
      {"1": "FB", "2": "GND"}, "RC0603FR-071KL", 75, "feedback bottom"),
    P("C4", "Device:C_Polarized", "220u 10V", "Capacitor_SMD:CP_Elec_8x10",
      {"1": "+5V", "2": "GND"}, "Panasonic EEE-FK1A221P", 10,
      "output capacitor, low ESR"),
    P("C5", "Device:C", "100n", C0603,
      {"1": "+5V", "2": "GND"}, "GCM188R71H104KA57D", 50, "output ceramic"),
    P("D4", "Device:D_Schottky", "SS14", "Diode_SMD:D_SMA",
      {"1": "+5V_DEV", "2": "+5V"}, "SS14", 40,
      "Schottky into the DevKit 5V pin: USB cannot back-feed the buck"),
    # ---- ESP32 DevKitC ----------------------------------------------------------
    P("A1", "gateway:ESP32-DevKitC-V4", "ESP32-DevKitC-V4 (WROOM-32)",
      "gateway:ESP32-DevKitC-V4_Socket", None,
      "2x Samtec SSW-119-01-T-S (or 2x 1x19 2.54 mm socket)", None,
      "plug-in DevKit; needs a WROOM (not WROVER) module: GPIO16/17 used"),
    # ---- BMS UART series resistors (limit current on a miswired cable) ----------
    P("R3", "Device:R", "4k7", R0603,
      {"1": "BMS_TX", "2": "UART_RX"}, "RC0603FR-074K7L", 75,
      "BMS TX -> ESP32 UART2 RX"),
    P("R4", "Device:R", "4k7", R0603,
      {"1": "UART_TX", "2": "BMS_RX"}, "RC0603FR-074K7L", 75,
      "ESP32 UART2 TX -> BMS RX"),
    # ---- CAN transceiver --------------------------------------------------------
    P("U2", "gateway:TJA1050T", "TJA1050T", "Package_SO:SOIC-8_3.9x4.9mm_P1.27mm",
      {"1": "CAN_TXD", "2": "GND", "3": "+5V", "4": "CAN_RXD_5V", "5": None,
       "6": "CANL", "7": "CANH", "8": "GND"},
      "NXP TJA1050T/CM,118", 6, "5 V CAN transceiver; S=GND: normal mode"),
    P("C6", "Device:C", "100n", C0603, {"1": "+5V", "2": "GND"},
      "GCM188R71H104KA57D", 50, "TJA1050 decoupling"),
    P("R5", "Device:R", "2k2", R0603, {"1": "CAN_RXD_5V", "2": "CAN_RXD"},
      "RC0603FR-072K2L", 75, "RXD divider top (5 V -> 3.3 V)"),
    P("R6", "Device:R", "3k3", R0603, {"1": "CAN_RXD", "2": "GND"},
      "RC0603FR-073K3L", 75, "RXD divider bottom"),
    # CAN controller select. As fabricated (pads 1-2 bridged) the transceiver is on
    # the MCP2515, which is the firmware's default can_backend: stock MicroPython
    # for the ESP32 has no machine.CAN. Cut 1-2 and bridge 2-3 on both for the
    # ESP32 TWAI controller (GPIO23/22; firmware can_backend "twai").
    P("JP1", "Jumper:SolderJumper_3_Bridged12", "TXD: 1-2 MCP2515 / 2-3 TWAI", SJ3,
      {"1": "MCP_TXCAN", "2": "CAN_TXD", "3": "TWAI_TX"}, "solder jumper", None,
      "transceiver TXD source; default 1-2 = MCP2515 TXCAN"),
    P("JP2", "Jumper:SolderJumper_3_Bridged12", "RXD: 1-2 MCP2515 / 2-3 TWAI", SJ3,
      {"1": "MCP_RXCAN", "2": "CAN_RXD", "3": "TWAI_RX"}, "solder jumper", None,
      "divided transceiver RXD destination; default 1-2 = MCP2515 RXCAN"),
    # ---- MCP2515 SPI CAN controller (the default; the ESP32 TWAI is the option) -
    P("U3", "Interface_CAN_LIN:MCP2515-xSO", "MCP2515-I/SO",
      "Package_SO:SOIC-18W_7.5x11.6mm_P1.27mm",
      {"1": "MCP_TXCAN", "2": "MCP_RXCAN", "3": None, "4": None, "5": None,
       "6": None, "7": "XTAL_OUT", "8": "XTAL_IN", "9": "GND", "10": None,
       "11": None, "12": "MCP_INT", "13": "SPI_SCK", "14": "SPI_MOSI",
       "15": "SPI_MISO", "16": "SPI_CS", "17": "MCP_RST", "18": "+3V3"},
      "Microchip MCP2515-I/SO", 7, "runs at 3.3 V: SPI and TXCAN are 3.3 V logic"),
    P("C7", "Device:C", "100n", C0603, {"1": "+3V3", "2": "GND"},
      "GCM188R71H104KA57D", 50, "MCP2515 decoupling"),
    P("R7", "Device:R", "10k", R0603, {"1": "+3V3", "2": "MCP_RST"},
      "RC0603FR-0710KL", 75, "MCP2515 reset pull-up"),
    P("Y1", "Device:Crystal", f"{pins.MCP2515_XTAL_HZ // 1000000}MHz",
      "Crystal:Crystal_SMD_HC49-SD", {"1": "XTAL_IN", "2": "XTAL_OUT"},
      "ABLS-8.000MHZ-B4-T", None, "MCP2515 clock, 18 pF load"),
    P("C8", "Device:C", "22p C0G", C0603, {"1": "XTAL_IN", "2": "GND"},
      "GRM1885C1H220JA01D", 50, "crystal load"),
    P("C9", "Device:C", "22p C0G", C0603, {"1": "XTAL_OUT", "2": "GND"},
      "GRM1885C1H220JA01D", 50, "crystal load"),
    # ---- CAN bus side: termination and RJ45 pin selection -----------------------
    P("R8", "Device:R", "120R 1/4W", "Resistor_SMD:R_1206_3216Metric",
      {"1": "CANH", "2": "TERM"}, "RC1206FR-07120RL", 200, "bus termination"),
    P("JP3", "Jumper:Jumper_2_Bridged", "TERM (cap fitted = 120R on)",
      "Connector_PinHeader_2.54mm:PinHeader_1x02_P2.54mm_Vertical",
      {"1": "TERM", "2": "CANL"}, "2.54 mm header + jumper cap", None,
      "remove the cap if the gateway is not at a bus end"),
    P("JP4", "Jumper:SolderJumper_3_Bridged12", "CAN-H: 1-2 pin 4 / 2-3 pin 7", SJ3,
      {"1": "RJ_P4", "2": "CANH", "3": "RJ_P7"}, "solder jumper", None,
      "pin 4 Pylontech/Deye/Growatt, pin 7 Victron"),
    P("JP5", "Jumper:SolderJumper_3_Bridged12", "CAN-L: 1-2 pin 5 / 2-3 pin 8", SJ3,
      {"1": "RJ_P5", "2": "CANL", "3": "RJ_P8"}, "solder jumper", None,
      "pin 5 Pylontech/Deye/Growatt, pin 8 Victron"),
    P("JP6", "Jumper:SolderJumper_3_Open", "CAN-GND: open (see README)", SJ3_OPEN,
      {"1": "RJ_P6", "2": "GND", "3": "RJ_P3"}, "solder jumper", None,
      "leave OPEN: BMS GND is B-, bridging bypasses the BMS"),
    P("J2", "Connector:8P8C", "RJ45 inverter CAN",
      "Connector_RJ:RJ45_Amphenol_54602-x08_Horizontal",
      {"1": None, "2": None, "3": "RJ_P3", "4": "RJ_P4", "5": "RJ_P5",
       "6": "RJ_P6", "7": "RJ_P7", "8": "RJ_P8"},
      "Amphenol 54602-908LF", None, "to the inverter BMS/CAN port"),
    # ---- status LED -------------------------------------------------------------
    P("R9", "Device:R", "1k", R0603, {"1": "LED", "2": "LED_A"},
      "RC0603FR-071KL", 75, "LED series resistor"),
    P("D5", "Device:LED", "green", "LED_SMD:LED_0805_2012Metric",
      {"1": "GND", "2": "LED_A"}, "Kingbright APT2012SGC", None, "status LED"),
]
for _p in PARTS:
    if _p["ref"] == "A1":
        _nets = _devkit_nets()
        _p["pins"] = {pad: _nets.get(pad) for pad in DEVKIT_PINS}

MOUNTING_HOLES = ["H1", "H2", "H3", "H4"]
MOUNTING_HOLE_FP = "MountingHole:MountingHole_3.2mm_M3"

# Nets that get a PWR_FLAG in the schematic (power nets with no power_out pin).
PWR_FLAG_NETS = ["VBAT", "VIN", "GND", "+5V", "+5V_DEV"]


def part(ref):
    return next(p for p in PARTS if p["ref"] == ref)


def nets():
    """net name -> list of (ref, pin)."""
    out = {}
    for p in PARTS:
        for pin, net in p["pins"].items():
            if net:
                out.setdefault(net, []).append((p["ref"], pin))
    return out


if __name__ == "__main__":
    for n, nodes in sorted(nets().items()):
        print(f"{n:12s} {nodes}")
