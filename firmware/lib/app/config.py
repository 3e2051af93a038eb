# Gateway configuration: defaults, validation, atomic save.
#
# The file is JSON on the flash filesystem. A missing, unreadable or invalid
# file -- or an invalid key -- never stops the gateway: each bad value is
# replaced by its default and the reason is reported on the console. Saving
# writes a new file and renames it over the old one, so a power cut leaves
# either the old or the new file, never a broken one.

import json

from canport import schema as _can
from charge import schema as _charge
from net import schema as _net
from protocols import schema as _protocols
from sources import schema as _sources

# key -> (default, kind, low, high or allowed values); kinds: "int"
# (low..high), "str" (one of the allowed values, or any when None), "text"
# (printable, low..high characters), "table" (charge.schema.check_table). Each
# package owns its keys (<package>/schema.py); the meaning of every key is in
# the README's configuration table (help texts would cost RAM on the device).
SCHEMA = {
    "wdt_ms": (10000, "int", 5000, 60000),
    "status_s": (30, "int", 0, 3600),
}
for _part in (_sources.SCHEMA, _charge.SCHEMA, _protocols.SCHEMA, _can.SCHEMA, _net.SCHEMA):
    for _k in _part:
        SCHEMA[_k] = _part[_k]
# what app.boot unloads with this module once the config is read
PARTS = ("sources.schema", "charge.schema", "protocols.schema", "canport.schema", "net.schema")
SECRETS = _net.SECRETS

NAME_MAX = 8
_LISTEN_TIMEOUT_S = 10
FILE_MAX = 4096  # bytes; the full config is well under 1 KB


def defaults():
    out = {}
    for key in SCHEMA:
        out[key] = SCHEMA[key][0]
    return out


def check(key, value):
    """Validated value for key, or raise ValueError with a short reason."""
    if key not in SCHEMA:
        raise ValueError("unknown key")
    default, kind, low, high = SCHEMA[key]
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError("must be an integer")
        if not low <= value <= high:
            raise ValueError("must be %d..%d" % (low, high))
        if key == "mcp2515_xtal_hz" and value not in (8000000, 16000000):
            raise ValueError("must be 8000000 or 16000000")
        if key == "inverter_timeout_s" and 0 < value < 3:
            raise ValueError("must be 0 (the protocol's) or 3..600")
        return value
    if kind == "str":
        if not isinstance(value, str):
            raise ValueError("must be a string")
        if high is not None and value not in high:
            raise ValueError("must be one of " + ", ".join(high))
        if key == "ble_mac" and value and not _mac_ok(value):
            raise ValueError("must be like C8:47:8C:12:34:56")
        if key == "battery_name":
            if len(value) > NAME_MAX:
                raise ValueError("must be 0-8 characters (\"\": the protocol's own)")
            for ch in value:
                if not " " <= ch <= "~":
                    raise ValueError("must be printable ASCII")
        return value
    if kind == "text":
        if not isinstance(value, str):
            raise ValueError("must be a string")
        if not low <= len(value) <= high:
            raise ValueError("must be %d-%d characters" % (low, high))
        for ch in value:
            if not " " <= ch <= "~":
                raise ValueError("must be printable ASCII")
        _net.check_text(key, value)
        return value
    if kind == "table":
        return _charge.check_table(value, low, high)
    if kind == "addrs":
        return _check_addrs(value, low, high)
    raise ValueError("bad schema")


def _check_addrs(value, low, high):
    if value == "scan":
        return value
    if not isinstance(value, list) or len(value) > high - low + 1:
        raise ValueError("must be \"scan\" or a list of up to %d addresses" % (high - low + 1))
    for i, a in enumerate(value):
        if isinstance(a, bool) or not isinstance(a, int) or not low <= a <= high:
            raise ValueError("addresses must be integers %d..%d" % (low, high))
        if a in value[:i]:
            raise ValueError("address %d is listed twice" % a)
    return sorted(value)


def _mac_ok(text):
    parts = text.split(":")
    if len(parts) != 6:
        return False
    for p in parts:
        if len(p) != 2:
            return False
        for ch in p:
            if ch not in "0123456789abcdefABCDEF":
                return False
    return True


def parse_value(key, text):
    """Console input -> typed value for key (then check() it)."""
    if key not in SCHEMA:
        raise ValueError("unknown key")
    if SCHEMA[key][1] == "int":
        try:
            return int(text)
        except ValueError:
            raise ValueError("must be an integer") from None
    if SCHEMA[key][1] == "text" and text == '""':
        return ""  # the console's way to write an empty text
    if SCHEMA[key][1] == "addrs" and text == "scan":
        return text
    if SCHEMA[key][1] in ("table", "addrs"):
        try:
            return json.loads(text)
        except ValueError:
            raise ValueError("must be a JSON list like [[0, 50], [10, 300]]" if SCHEMA[key][1] == "table"
                             else "must be scan or a JSON list like [1, 2, 3]") from None
    return text


def validate(raw, messages):
    """Full config from a decoded JSON object: defaults for every missing or
    invalid key; a message for each problem."""
    cfg = defaults()
    if not isinstance(raw, dict):
        messages.append("not a JSON object, using defaults")
        return cfg
    for key in sorted(raw):
        if key not in SCHEMA:
            messages.append("unknown key '%s' ignored" % key)
            continue
        try:
            cfg[key] = check(key, raw[key])
        except ValueError as e:
            messages.append("%s %s, using default %r" % (key, e.args[0], SCHEMA[key][0]))
    fit_bus(cfg, messages)
    fit_poll_schedule(cfg, messages)
    fit_protocol(cfg, messages)
    _charge.fit(cfg, raw, messages)
    _net.fit(cfg, messages)
    return cfg


def fit_bus(cfg, messages):
    """The bus roles' own rules (docs/jk-bms.md "Several packs on one bus"):
    address 0 is a JK bus master, which an external master collides with;
    a JK master polls each pack only every ~4.4 s."""
    addrs = cfg["bms_addresses"]
    if cfg["bms_protocol"] == "jk-nw" and (addrs or cfg["bms_transport"] == "uart+ble"
                                           or cfg["bms_bus_role"] == "listen"):
        messages.append("several packs need bms_protocol jk-pb: reading one 4E 57 BMS on the UART")
        cfg["bms_addresses"] = []
        cfg["bms_bus_role"] = "master"
        if cfg["bms_transport"] == "uart+ble":
            cfg["bms_transport"] = "uart"
        return
    if cfg["bms_bus_role"] == "master":
        if isinstance(addrs, list) and 0 in addrs:
            messages.append("bms_addresses: address 0 is a JK bus master, not polled (use bms_bus_role "
                            "\"listen\" when a pack is set to 0)")
            addrs.remove(0)
        if isinstance(addrs, list) and len(addrs) == 1:
            cfg["bms_address"] = addrs[0]  # one pack: read as a single source at that address
        return
    if cfg["bms_transport"] == "ble":
        messages.append("bms_bus_role listen needs the UART (bms_transport uart), using master")
        cfg["bms_bus_role"] = "master"
        return
    if addrs == "scan":
        cfg["bms_addresses"] = []  # a listener takes every pack it hears
    if cfg["bms_timeout_s"] < _LISTEN_TIMEOUT_S:
        messages.append("bms_timeout_s %d is shorter than a JK master's poll period (about 4.4 s) allows "
                        "in listener mode, using %d" % (cfg["bms_timeout_s"], _LISTEN_TIMEOUT_S))
        cfg["bms_timeout_s"] = _LISTEN_TIMEOUT_S


def fit_protocol(cfg, messages):
    """Venus OS clips the CVL of a battery calling itself PYLON to 52.4 V
    (docs/inverter-can.md "Victron"): never that name on Victron."""
    if cfg["protocol"] == "victron" and cfg["battery_name"].strip().upper().startswith("PYLON"):
        messages.append("battery_name %r on Victron makes Venus OS clip the CVL to 52.4 V, using the "
                        "protocol's own name" % cfg["battery_name"])
        cfg["battery_name"] = ""


def fit_poll_schedule(cfg, messages):
    """Keys that are valid one by one can still contradict each other: one
    lost poll must never leave the data stale, i.e. bms_poll_ms + 7 x
    bms_reply_ms + bms_gap_ms <= bms_timeout_s. The timeout (a safety bound) is
    kept; the reply time, and if that is not enough the poll period, are
    shortened to fit, and said."""
    if cfg["bms_transport"] == "ble" or cfg["bms_bus_role"] == "listen":
        return  # no polls: the BMS pushes its frames (sources.jk_ble) / a JK master polls
    # imported here: a BLE configuration never loads the UART bus
    from sources.uart_bus import LATE_FACTOR
    # a failed attempt costs its reply time and the drain of late replies
    # after it, the next poll's reply one more reply time
    _FAIL_REPLIES = 2 + LATE_FACTOR
    _GAP = cfg["bms_gap_ms"]
    timeout = cfg["bms_timeout_s"] * 1000
    poll = cfg["bms_poll_ms"]
    reply = cfg["bms_reply_ms"]
    if poll + _FAIL_REPLIES * reply + _GAP <= timeout:
        return
    why = "(poll + %d x reply + %d ms must be <= the timeout: one lost poll would make the data stale)" % (
        _FAIL_REPLIES, _GAP)
    fit = (timeout - _GAP - poll) // _FAIL_REPLIES
    if fit < SCHEMA["bms_reply_ms"][2]:
        poll_min = SCHEMA["bms_poll_ms"][2]
        fit = (timeout - _GAP - poll_min) // _FAIL_REPLIES
        if reply < fit:
            fit = reply
        new_poll = timeout - _GAP - _FAIL_REPLIES * fit
        messages.append("bms_poll_ms %d does not fit bms_timeout_s %d %s, using %d" % (
            poll, cfg["bms_timeout_s"], why, new_poll))
        cfg["bms_poll_ms"] = new_poll
    if fit < reply:
        messages.append("bms_reply_ms %d does not fit bms_timeout_s %d %s, using %d" % (
            reply, cfg["bms_timeout_s"], why, fit))
        cfg["bms_reply_ms"] = fit


def load(store, name, messages):
    """Read and validate the config file; never raises for bad content (a
    damaged flash file must not become a reset loop)."""
    try:
        text = store.read(name, FILE_MAX)
    except OSError:
        messages.append("no %s, using defaults" % name)
        return defaults()
    except MemoryError:
        messages.append("%s too large for the heap, using defaults" % name)
        return defaults()
    except UnicodeError:
        messages.append("%s is not valid UTF-8, using defaults" % name)
        return defaults()
    except ValueError as e:  # larger than FILE_MAX
        messages.append("%s %s, using defaults" % (name, e.args[0] if e.args else "unreadable"))
        return defaults()
    try:
        raw = json.loads(text)
    except (ValueError, MemoryError, RuntimeError):  # RuntimeError: nesting too deep
        messages.append("%s is not valid JSON, using defaults" % name)
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
