"""make device produces exactly the file tree an ESP32 needs (boot.py, main.py and every module of
firmware/lib as .mpy; no host-only code from host/), and it imports."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEVICE = ROOT / "build" / "device"
BIN = Path(sys.executable).parent


def test_device_tree_is_complete_and_importable():
    subprocess.run(["make", "-s", "device", "VENV=%s" % BIN.parent], cwd=ROOT, check=True,
                   capture_output=True, text=True)
    lib_sources = sorted(p.relative_to(ROOT / "firmware" / "lib").with_suffix(".mpy")
                         for p in (ROOT / "firmware" / "lib").rglob("*.py") if "__pycache__" not in p.parts)
    # the web page's files as they are (net/web.py streams them from the flash)
    pages = sorted(p.relative_to(ROOT / "firmware") for p in (ROOT / "firmware" / "lib").rglob("*.html"))
    assert Path("lib/net/page.html") in pages
    want = {Path("boot.py"), Path("main.py")} | {Path("lib") / p for p in lib_sources} | set(pages)
    got = {p.relative_to(DEVICE) for p in DEVICE.rglob("*") if p.is_file()}
    assert got == want
    # host/ (SoftPort, SLCAN, host I/O, the simulation wrapper) never ships
    host_modules = {p.stem for p in (ROOT / "host").glob("*.py")}
    assert {"can_soft", "slcan", "hostio", "sim_firmware"} <= host_modules
    assert not {p.stem for p in got} & host_modules
    for p in pages:
        assert (DEVICE / p).read_bytes() == (ROOT / "firmware" / p).read_bytes(), p
    for p in DEVICE.rglob("*.mpy"):
        head = p.read_bytes()[:2]
        assert head == b"M\x06", p  # mpy v6: loads on MicroPython >= 1.23
    # the bytecode .mpy files (no native code) load on the unix port too
    modules = ("app.gateway", "canport.mcp2515", "canport.machine_can", "jkbms.dispatch", "protocols.pylon",
               "sources.jk_pb", "sources.jk_4e57")
    # only lib/ and the frozen modules (asyncio), as on the ESP32
    # net.web finds its page beside its .mpy (__file__ of a .mpy module)
    code = ("import sys, os; sys.path[:] = ['lib', '.frozen']; "
            "import %s; print('ok')\n"
            "from net import web; os.stat(web._here() + web.PAGE)\n"
            "try:\n import can_soft\nexcept ImportError:\n print('no host code')" % ", ".join(modules))
    r = subprocess.run([str(BIN / "micropython"), "-X", "heapsize=256k", "-c", code], cwd=DEVICE,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.split() == ["ok", "no", "host", "code"], r.stdout + r.stderr
