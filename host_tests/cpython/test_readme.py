"""The README stays true: its configuration table documents every key of app.config.SCHEMA (and
no other) with its real default and range -- the schema carries no help texts, the README is
where each key is explained -- and every make target it names exists."""
import json
import re
from pathlib import Path

from app import config as C

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()

# keys whose range column is prose instead of "low–high" / "a / b", with the prose expected
RANGE_IN_WORDS = {
    "battery_name": "0–8 ASCII chars",  # C.NAME_MAX, printable ASCII; "" = the protocol's own
    "inverter_timeout_s": "0 or 3–600",  # app.config.check: 1-2 refused
    "ble_mac": "`C8:47:8C:12:34:56`",  # app.config._mac_ok: six hex pairs, or empty
    "ble_name": "text",
    "bms_addresses": "`scan` or a list of 0–15",  # app.config._check_addrs
    "bms_rx": "GPIO",
    "bms_tx": "GPIO",
    "mcp2515_xtal_hz": "8 or 16 MHz",  # app.config.check allows only these two
}


def _config_table():
    """{key: (default cell token, range cell, meaning)} from the README's configuration table."""
    section = README.split("### 5. Configuration", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    header = ["key", "default", "range", "meaning"]
    assert [c.strip() for c in lines[0].strip("|").split("|")] == header
    table = {}
    for line in lines[1:]:
        if set(line) <= set("|-") or [c.strip() for c in line.strip("|").split("|")] == header:
            continue  # the separator, or the header of the next table (charge keys)
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert len(cells) == 4, line
        keys = re.findall(r"`([a-z0-9_]+)`", cells[0])
        defaults = re.findall(r"`([^`]+)`", cells[1])
        assert keys and cells[0] == " / ".join("`%s`" % k for k in keys), line
        # one default per key, or one default shared by all keys of the row
        assert cells[1] == " / ".join("`%s`" % d for d in defaults) and len(defaults) in (1, len(keys)), line
        assert cells[3], line  # every key has its meaning
        for i, key in enumerate(keys):
            assert key not in table, "%s documented twice" % key
            table[key] = (defaults[i if len(defaults) > 1 else 0], cells[2], cells[3])
    return table


def test_config_table_documents_exactly_the_schema():
    table = _config_table()
    assert sorted(table) == sorted(C.SCHEMA), (set(C.SCHEMA) ^ set(table))
    assert sorted(C.SCHEMA) == sorted(C.defaults())


def test_every_config_key_is_documented_with_its_default():
    table = _config_table()
    for key, (default, kind, _low, _high) in C.SCHEMA.items():
        shown = table[key][0]
        if kind in ("str", "text"):
            assert isinstance(default, str) and shown == '"%s"' % default, (key, shown, default)
        elif kind in ("table", "addrs"):
            assert json.loads(shown) == default, (key, shown, default)
        else:
            assert kind == "int" and not isinstance(default, bool), key
            assert shown == str(default), (key, shown, default)
        assert C.check(key, default) == default  # the documented default is a valid value


def test_every_config_key_is_documented_with_its_range():
    table = _config_table()
    for key, (_default, kind, low, high) in C.SCHEMA.items():
        shown = table[key][1]
        if key in RANGE_IN_WORDS:
            assert shown == RANGE_IN_WORDS[key], (key, shown)
        elif kind == "int":
            assert shown == "%d–%d" % (low, high), (key, shown)
        elif kind == "table":
            assert shown == "[x, ‰] × 2–8, x %d–%d" % (low, high), (key, shown)
        elif kind == "text":
            assert shown == "text, %d–%d chars" % (low, high), (key, shown)
        else:
            assert high is not None and shown.split(" / ") == list(high), (key, shown, high)


def test_make_targets_named_in_the_readme_exist():
    # `make X` in running text, and command lines starting with make X (our own
    # targets; the MicroPython build recipe's make lines name other Makefiles)
    targets = set(re.findall(r"(?:`|^)make ([a-z][a-z-]+)", README, re.M))
    assert {"demo", "test", "bench", "deploy", "console"} <= targets
    defined = set(re.findall(r"^([a-z][a-z-]+):", (ROOT / "Makefile").read_text(), re.M))
    assert targets <= defined, targets - defined
