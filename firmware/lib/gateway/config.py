# Gateway configuration: documented defaults, validation, atomic save.
#
# The file is JSON on the flash filesystem. A missing, unreadable or invalid
# file -- or an invalid key -- never stops the gateway: each bad value is
# replaced by its default and the reason is reported on the console. Saving
# writes a new file and renames it over the old one, so a power cut leaves
# either the old or the new file, never a broken one.

import json

from board import pins
from pack.limits import LimitConfig

# the limit defaults live in one place, pack.limits (host tools use them too)
_LIMITS = LimitConfig()

# key -> (default, kind, low, high or allowed values, help)
# kinds: "int" (low..high), "str" (one of the allowed values or any when
# allowed is None, max length high), "bool"
SCHEMA = {
    "bms_protocol": ("jk-pb", "str", None, ("jk-pb", "jk-nw"), "BMS wire protocol: JK-PB Modbus or the older 4E 57"),
    "bms_address": (1, "int", 1, 15, "JK-PB Modbus slave address (DIP switches)"),
    "bms_read": ("trigger", "str", None, ("trigger", "fc03"), "JK-PB: FC10 trigger frames or FC03 register reads"),
    "bms_uart": (pins.BMS_UART_ID, "int", 1, 2, "UART id (UART0 is the REPL)"),
    "bms_rx": (pins.BMS_UART_RX, "int", 0, 39, "UART RX GPIO (<- BMS TX)"),
    "bms_tx": (pins.BMS_UART_TX, "int", 0, 33, "UART TX GPIO (-> BMS RX)"),
    "bms_baud": (115200, "int", 9600, 115200, "UART baud rate"),
    "bms_poll_ms": (1000, "int", 200, 10000, "BMS poll period"),
    "bms_reply_ms": (500, "int", 50, 3000, "time allowed for one BMS reply"),
    "bms_retries": (2, "int", 0, 5, "retries of a failed request within one poll"),
    "bms_settings_s": (300, "int", 10, 3600, "re-read the BMS settings this often"),
    "bms_timeout_s": (5, "int", 2, 60, "BMS data older than this is stale"),
    "link_loss": ("zeros", "str", None, ("zeros", "stop"), "stale BMS data: send 0 A limits + alarms, or stop CAN"),
    "can_backend": ("mcp2515", "str", None, ("twai", "mcp2515"), "CAN controller: ESP32 TWAI (custom firmware) or MCP2515"),
    "can_bitrate": (500000, "int", 125000, 1000000, "CAN bit rate"),
    "can_period_ms": (1000, "int", 200, 5000, "send the full frame set this often"),
    "mcp2515_xtal_hz": (pins.MCP2515_XTAL_HZ, "int", 8000000, 16000000, "MCP2515 crystal (8 or 16 MHz)"),
    "inverter_timeout_s": (10, "int", 3, 600, "no 0x305 for this long -> 'inverter silent' on the console"),
    "protocol": ("pylon", "str", None, ("pylon",), "inverter CAN protocol"),
    "battery_name": ("PYLON", "str", None, None, "0x35E manufacturer name, 1-8 ASCII characters"),
    "modules": (1, "int", 1, 32, "module count reported in 0x359"),
    "bulk_cell_mv": (_LIMITS.bulk_cell_mv, "int", 3000, 4200, "charge voltage per cell when the BMS has no RCV"),
    "max_charge_a": (_LIMITS.max_charge_da // 10, "int", 0, 1000, "user cap on the charge current limit"),
    "max_discharge_a": (_LIMITS.max_discharge_da // 10, "int", 0, 1000, "user cap on the discharge current limit"),
    "wdt_ms": (10000, "int", 5000, 60000, "watchdog timeout (fed only while all tasks progress)"),
    "status_s": (30, "int", 0, 3600, "print a one-line status this often (0 = never)"),
}

NAME_MAX = 8


def defaults():
    out = {}
    for key in SCHEMA:
        out[key] = SCHEMA[key][0]
    return out


def check(key, value):
    """Validated value for key, or raise ValueError with a short reason."""
    if key not in SCHEMA:
        raise ValueError("unknown key")
    default, kind, low, high, _ = SCHEMA[key]
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError("must be an integer")
        if not low <= value <= high:
            raise ValueError("must be %d..%d" % (low, high))
        if key == "mcp2515_xtal_hz" and value not in (8000000, 16000000):
            raise ValueError("must be 8000000 or 16000000")
        return value
    if kind == "str":
        if not isinstance(value, str):
            raise ValueError("must be a string")
        if high is not None and value not in high:
            raise ValueError("must be one of " + ", ".join(high))
        if key == "battery_name":
            if not 1 <= len(value) <= NAME_MAX:
                raise ValueError("must be 1-8 characters")
            for ch in value:
                if not " " <= ch <= "~":
                    raise ValueError("must be printable ASCII")
        return value
    raise ValueError("bad schema")


def parse_value(key, text):
    """Console input -> typed value for key (then check() it)."""
    if key not in SCHEMA:
        raise ValueError("unknown key")
    if SCHEMA[key][1] == "int":
        try:
            return int(text)
        except ValueError:
            raise ValueError("must be an integer")
    return text


def validate(raw, messages):
    """Full config from a decoded JSON object: defaults for every missing or
    invalid key; a message for each problem."""
    cfg = defaults()
    if not isinstance(raw, dict):
        messages.append("config: not a JSON object, using defaults")
        return cfg
    for key in sorted(raw):
        if key not in SCHEMA:
            messages.append("config: unknown key '%s' ignored" % key)
            continue
        try:
            cfg[key] = check(key, raw[key])
        except ValueError as e:
            messages.append("config: %s %s, using default %r" % (key, e.args[0], SCHEMA[key][0]))
    return cfg


def load(store, name, messages):
    """Read and validate the config file; never raises for bad content."""
    try:
        text = store.read(name)
    except OSError:
        messages.append("config: no %s, using defaults" % name)
        return defaults()
    try:
        raw = json.loads(text)
    except ValueError:
        messages.append("config: %s is not valid JSON, using defaults" % name)
        return defaults()
    return validate(raw, messages)


def dumps(cfg):
    """Stable JSON text (sorted keys: dict order differs between runtimes)."""
    parts = []
    for key in sorted(cfg):
        parts.append("  %s: %s" % (json.dumps(key), json.dumps(cfg[key])))
    return "{\n" + ",\n".join(parts) + "\n}\n"


def save(store, name, cfg):
    """Validate everything, then write atomically."""
    for key in cfg:
        check(key, cfg[key])
    store.write_atomic(name, dumps(cfg))
