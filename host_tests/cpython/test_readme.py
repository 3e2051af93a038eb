"""The README stays true: every configuration key is documented with its real
default, and every make target it names exists."""
import re
from pathlib import Path

from gateway import config as C

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def test_every_config_key_is_documented_with_its_default():
    rows = [line for line in README.splitlines() if line.startswith("| `")]
    for key, spec in C.SCHEMA.items():
        row = [r for r in rows if "`%s`" % key in r.split("|")[1]]
        assert row, key
        default = spec[0]
        cell = row[0].split("|")[2]
        shown = '"%s"' % default if isinstance(default, str) else str(default)
        assert shown in cell, (key, cell)


def test_make_targets_named_in_the_readme_exist():
    # `make X` in running text, and command lines starting with make X (our own
    # targets; the MicroPython build recipe's make lines name other Makefiles)
    targets = set(re.findall(r"(?:`|^)make ([a-z][a-z-]+)", README, re.M))
    assert {"demo", "test", "bench", "deploy", "console"} <= targets
    defined = set(re.findall(r"^([a-z][a-z-]+):", (ROOT / "Makefile").read_text(), re.M))
    assert targets <= defined, targets - defined
