"""firmware/package.json (the mip manifest) is the generator's output, lists
exactly the firmware library, and the real mip client (mpremote's) installs
that library from it into a device's /lib, complete and importable."""
import io
import json
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import mip_manifest  # host/, on sys.path via host_tests/conftest.py

ROOT = Path(__file__).resolve().parents[2]
FIRMWARE = ROOT / "firmware"
LIB = FIRMWARE / "lib"
PACKAGE = FIRMWARE / "package.json"
BIN = Path(sys.executable).parent


def _lib_files():
    """The library's .py files and the web page (*.html), found independently of the generator."""
    return sorted(p.relative_to(LIB).as_posix() for p in LIB.rglob("*") if p.suffix in (".py", ".html")
                  and p.is_file() and "__pycache__" not in p.parts)


def test_the_web_page_ships_with_the_library():
    dests = [d for d, _ in json.loads(PACKAGE.read_text())["urls"]]
    assert "net/page.html" in dests and "net/web.py" in dests


def test_committed_manifest_is_the_generators_output():
    assert PACKAGE.read_text() == mip_manifest.render(), (
        "firmware/package.json is stale: run  python host/mip_manifest.py > firmware/package.json")


def test_generator_run_as_a_script_prints_the_same_text():
    r = subprocess.run([sys.executable, str(ROOT / "host" / "mip_manifest.py")], cwd=ROOT,
                       capture_output=True, text=True, check=True)
    assert r.stdout == PACKAGE.read_text()


def test_manifest_lists_exactly_the_firmware_library():
    pkg = json.loads(PACKAGE.read_text())
    assert sorted(pkg) == ["deps", "urls", "version"]
    assert pkg["deps"] == []  # only modules built into MicroPython are used
    assert isinstance(pkg["version"], str) and pkg["version"]
    dests = [d for d, _ in pkg["urls"]]
    assert dests == sorted(dests) and len(set(dests)) == len(dests)
    assert set(dests) == set(_lib_files())
    for dest, src in pkg["urls"]:
        assert src == "lib/" + dest, (dest, src)
        path = FIRMWARE / src
        assert path.is_file(), src
        assert path.resolve().is_relative_to(LIB.resolve()), src
        assert not dest.startswith("/") and ".." not in dest.split("/"), dest
    # nothing of the host side: its modules live in host/ and tools/ only
    host_names = {p.name for d in ("host", "tools") for p in (ROOT / d).glob("*.py")}
    assert not host_names & {Path(d).name for d in dests if "/" not in d}
    assert "main.py" not in dests and "boot.py" not in dests


def test_new_module_without_regenerating_is_detected(tmp_path):
    lib = tmp_path / "lib"
    (lib / "pkg").mkdir(parents=True)
    (lib / "pkg" / "a.py").write_text("")
    before = mip_manifest.render(lib)
    (lib / "pkg" / "b.py").write_text("")
    (lib / "pkg" / "__pycache__").mkdir()
    (lib / "pkg" / "__pycache__" / "a.py").write_text("")
    after = mip_manifest.render(lib)
    assert before != after
    assert json.loads(after)["urls"] == [["pkg/a.py", "lib/pkg/a.py"], ["pkg/b.py", "lib/pkg/b.py"]]


class _Device:
    """The part of mpremote's transport that mip uses: a filesystem."""

    def __init__(self):
        self.files = {}
        self.dirs = {"/lib"}

    def fs_exists(self, path):
        return path in self.dirs or path in self.files

    def fs_mkdir(self, path):
        assert path not in self.files
        self.dirs.add(path)

    def fs_writefile(self, dest, data, progress_callback=None):
        parent = dest.rpartition("/")[0]
        assert parent in self.dirs, dest
        self.files[dest] = data


def test_mip_install_from_github_installs_the_library(monkeypatch, tmp_path):
    # mpremote's own installer (pinned in requirements-mpy.txt) with the
    # network replaced by this checkout: what raw.githubusercontent.com would
    # serve for github:OWNER/REPO/... at HEAD
    from mpremote import mip

    served = []
    prefix = "https://raw.githubusercontent.com/owner/repo/HEAD/"

    def urlopen(url, *a, **k):
        if not url.startswith(prefix) or not (ROOT / url[len(prefix):]).is_file():
            raise urllib.error.HTTPError(url, 404, "not found", {}, None)
        served.append(url[len(prefix):])
        return io.BytesIO((ROOT / url[len(prefix):]).read_bytes())

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    dev = _Device()
    mip._install_package(dev, "github:owner/repo/firmware", mip._PACKAGE_INDEX, "/lib", None, True)

    assert served[0] == "firmware/package.json"
    want = {"/lib/" + m: (LIB / m).read_bytes() for m in _lib_files()}
    assert dev.files == want  # every module, byte for byte, nothing else

    # the installed tree is self-contained: every module imports on the
    # MicroPython unix port from /lib alone (no host/ or tools/ on the path)
    for path, data in dev.files.items():
        out = tmp_path / path.lstrip("/")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(data)
    names = sorted(m[:-3].replace("/", ".").removesuffix(".__init__") for m in _lib_files() if m.endswith(".py"))
    # (the frozen modules, asyncio among them, stay importable as on the device)
    code = ("import sys; sys.path[:] = ['lib'] + [p for p in sys.path if p == '.frozen']\n"
            + "".join("import %s\n" % n for n in names) + "print('ok')")
    # every module at once, compiled from source by the 64-bit unix port: far more than the device ever
    # loads (only the configured parts, as .mpy); the network outputs took it past 512 KB
    r = subprocess.run([str(BIN / "micropython"), "-X", "heapsize=1m", "-c", code], cwd=tmp_path,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stdout + r.stderr
