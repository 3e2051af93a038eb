"""enclosure/Makefile: `make enclosure` always runs the export (it is .PHONY, so a
file or directory of the same name cannot make it "up to date"), and every non-file
target is .PHONY. Dry runs (-n) and question mode (-q) only: nothing is executed."""

import os
import re
import shutil
import subprocess

import pytest

ENC = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def make(directory, *args):
    env = {k: v for k, v in os.environ.items()
           if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "GNUMAKEFLAGS")}
    env["LC_ALL"] = "C"
    res = subprocess.run(["make", "--no-print-directory", "-C", directory, *args], env=env,
                         capture_output=True, text=True, timeout=60)
    return res.returncode, res.stdout + res.stderr


def assert_runs_export(rc, out):
    assert rc == 0, out
    for bad in ("is up to date", "Nothing to be done", "warning:", "Circular"):
        assert bad not in out, f"make printed {bad!r}:\n{out}"
    assert "gateway_case.py out" in out, out        # STL + STEP export
    assert "render.py out/base.stl out/lid.stl images/preview.png" in out, out


def test_make_enclosure_dry_run_runs_the_export():
    assert_runs_export(*make(ENC, "-n", "enclosure"))


def test_make_enclosure_runs_even_next_to_files_named_like_its_targets(tmp_path):
    """A copy of the Makefile in a directory that holds files called `enclosure`,
    `test`, `venv` and `clean`: the export must still run (the targets are .PHONY)."""
    shutil.copy(os.path.join(ENC, "Makefile"), tmp_path / "Makefile")
    shutil.copy(os.path.join(ENC, "requirements.txt"), tmp_path / "requirements.txt")
    for name in ("enclosure", "test", "venv", "clean"):
        (tmp_path / name).write_text("")
    assert_runs_export(*make(str(tmp_path), "-n", "enclosure"))


def test_every_non_file_target_is_phony():
    db = make(ENC, "-p", "-q", "-r", "-R")[1]
    files = db.split("\n# Files\n", 1)[1].split("\n# files hash-table stats", 1)[0]
    targets = []
    for block in files.split("\n\n"):
        lines = [line for line in block.strip("\n").splitlines() if line]
        if not lines or lines[0].startswith("#") or any(line.startswith("#  Not a target") for line in lines):
            continue
        m = re.match(r"^([^:\s]+)::?(\s|$)", lines[0])
        if m:
            targets.append((m.group(1), any("Phony target" in line for line in lines)))
    assert {"enclosure", "test", "venv", "clean"} <= {t for t, _ in targets}, targets
    for name, phony in targets:
        if name.startswith(".") or "/" in name or os.path.isfile(os.path.join(ENC, name)):
            continue  # special targets and files (.venv/.stamp, Makefile, requirements.txt)
        assert phony, f"target {name!r} is not in .PHONY"
