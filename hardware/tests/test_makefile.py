"""hardware/Makefile: `make test` only checks (ERC, DRC + parity, pytest) and never
runs the fab export or rewrites the committed images; `make fab` still does all of
it; no target collides with a directory; every non-file target is .PHONY.

All checks use make's dry run (-n) or question mode (-q): nothing is executed."""

import os
import re
import shutil
import subprocess

import pytest

HW = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO = os.path.dirname(HW)

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def make(*args):
    """Run make in hardware/ with a clean environment (no flags inherited from an
    outer `make test`), English messages. Returns (exit code, stdout + stderr)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "GNUMAKEFLAGS")}
    env["LC_ALL"] = "C"
    res = subprocess.run(["make", "--no-print-directory", "-C", HW, *args], env=env,
                         capture_output=True, text=True, timeout=60)
    return res.returncode, res.stdout + res.stderr


def assert_no_make_warnings(out):
    for bad in ("Circular", "circular", "warning:", "overriding recipe", "ignoring old recipe"):
        assert bad not in out, f"make printed {bad!r}:\n{out}"


def output_paths(out):
    """Every path a kicad-cli/render command writes (-o PATH, or the PNG argument)."""
    paths = re.findall(r"\s-o\s+(\S+)", out)
    paths += re.findall(r"render_images\.py\s+\S+\s+(\S+)", out)
    return [p.rstrip("/") for p in paths]


def git_ignored(path):
    res = subprocess.run(["git", "-C", REPO, "check-ignore", "-q", "--no-index",
                          os.path.join("hardware", path)], capture_output=True)
    return res.returncode == 0


def test_make_test_dry_run_does_not_export_or_render():
    rc, out = make("-n", "test")
    assert rc == 0, out
    assert_no_make_warnings(out)
    # what `test` is for
    assert "sch erc" in out
    assert "pcb drc" in out and "--schematic-parity" in out
    assert "-m pytest" in out
    # what it must not do
    for step in ("export", "render_images", "images", "fab", "gerber", "make_archive"):
        assert step not in out, f"`make test` runs a fab/export/image step ({step!r}):\n{out}"


@pytest.mark.skipif(shutil.which("git") is None or not os.path.isdir(os.path.join(REPO, ".git")),
                    reason="not a git checkout")
def test_make_test_writes_only_git_ignored_files():
    rc, out = make("-n", "test")
    assert rc == 0, out
    paths = output_paths(out)
    assert paths, out   # the ERC and DRC reports
    for p in paths:
        assert git_ignored(p), f"`make test` writes {p}, which git does not ignore"


def test_make_fab_dry_run_still_produces_everything():
    rc, out = make("-n", "fab")
    assert rc == 0, out
    assert_no_make_warnings(out)
    for step in ("pcb export gerbers", "pcb export drill", "sch export bom", "sch export netlist",
                 "pcb export pos", "pcb export step", "sch export pdf", "sch export svg",
                 "pcb export svg", "images/schematic.png", "images/pcb.png", "make_archive"):
        assert step in out, f"`make fab` lost the step {step!r}:\n{out}"
    for p in output_paths(out):
        if not p.startswith("images/"):
            assert p.startswith("build/"), f"fab output {p} outside build/"


def makefile_targets():
    """(target, is_phony) for every explicit target of hardware/Makefile, from make's
    own database (-p), so variables such as $(FAB_DIR) are expanded."""
    db = make("-p", "-q", "-r", "-R")[1]
    files = db.split("\n# Files\n", 1)[1].split("\n# files hash-table stats", 1)[0]
    out = []
    for block in files.split("\n\n"):
        lines = [line for line in block.strip("\n").splitlines() if line]
        if not lines or lines[0].startswith("#"):
            continue
        if any(line.startswith("#  Not a target") for line in lines):
            continue
        m = re.match(r"^([^:\s]+)::?(\s|$)", lines[0])
        if m:
            out.append((m.group(1), any("Phony target" in line for line in lines)))
    return out


def test_every_non_file_target_is_phony():
    targets = makefile_targets()
    names = {t for t, _ in targets}
    assert {"test", "fab", "erc", "drc", "pytest", "generate", "clean"} <= names, names
    for name, phony in targets:
        if name.startswith(".") or "/" in name or os.path.isfile(os.path.join(HW, name)):
            continue  # special targets, and files (.venv/.stamp, Makefile, requirements.txt)
        assert phony, f"target {name!r} is not in .PHONY"
