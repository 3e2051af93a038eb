# Boot-time jobs of the composition root: read the config, bring the CAN
# controller up and say what was found. Used once by firmware/main.py (and
# the host simulation), then unloaded with everything it imported for the
# job, so none of it stays in RAM (docs/design.md "RAM").

import sys

from app.gateway import CONFIG_NAME
from board import pins
from outputs import events as E


def load_config(store, events, name=CONFIG_NAME):
    """Config from flash; every problem is an event, none is fatal. The
    config module is needed again only by the console (which imports it on
    use), so it leaves RAM once the config is read (docs/design.md "RAM")."""
    from app import config as C
    msgs = []
    cfg = C.load(store, name, msgs)
    for m in msgs:
        events.emit(E.CONFIG, m)
    for part in C.PARTS:
        unload(part)
    unload("net")  # net.schema's package: the rest of it is loaded only with Wi-Fi (app.gateway)
    unload("app.config")
    return cfg


def unload(name):
    """Forget a module imported for a one-off job, so the GC can free its
    code (it is imported afresh if ever needed again)."""
    mods = sys.modules
    if name in mods:
        del mods[name]
        dot = name.rfind(".")
        if dot > 0 and name[:dot] in mods:
            try:
                delattr(mods[name[:dot]], name[dot + 1:])
            except AttributeError:
                pass


def bring_up_can(can, cfg, events):
    """First start of the CAN controller, saying on the console what was
    found -- or that nothing was, and what to check. Never raises: without a
    controller the BMS side and the console keep running while bus-off
    recovery keeps retrying."""
    mcp = cfg["can_backend"] == "mcp2515"
    try:
        can.restart()
    except Exception as e:  # noqa: BLE001 - any driver error means "no controller"
        if mcp:
            hint = ("no MCP2515 answering (%r): check its SPI wiring (SCK %d, MISO %d, MOSI %d, CS %d), the "
                    "crystal (mcp2515_xtal_hz) and the board's CAN jumpers (default: MCP2515)" % (
                        e, pins.MCP2515_SCK, pins.MCP2515_MISO, pins.MCP2515_MOSI, pins.MCP2515_CS))
        else:
            hint = ("no TWAI controller (%r): this MicroPython has no machine.CAN (TWAI needs the custom "
                    "build, see the README) -- or set can_backend mcp2515 and the jumpers to MCP2515" % (e,))
        events.emit(E.CAN_NONE, hint + "; BMS and console keep running, retrying")
        return False
    label = getattr(can, "label", None)  # a port that is neither (the host simulation's) names itself
    if label:
        found = label
    elif mcp:
        found = "MCP2515 found (%d MHz crystal)" % (cfg["mcp2515_xtal_hz"] // 1000000)
    else:
        found = "TWAI controller (machine.CAN) on GPIO%d/%d" % (pins.CAN_TWAI_TX, pins.CAN_TWAI_RX)
    events.emit(E.CAN_FOUND, "%s, %d kbit/s" % (found, cfg["can_bitrate"] // 1000))
    return True
