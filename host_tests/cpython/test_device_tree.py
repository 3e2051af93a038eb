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


def test_the_romfs_image_fits_the_boards_romfs_partition(tmp_path):
    # make romfs: lib/ with the network outputs, aioble and mqtt_as as .mpy; the ROMFS board's
    # partition table must hold it (else `make deploy-romfs` fails on the device)
    # (every folder its own: test_ram_budget builds the same targets at the same time)
    img = tmp_path / "romfs.img"
    mqtt_as = tmp_path / "mqtt_as"
    subprocess.run(["make", "-s", "romfs", "VENV=%s" % BIN.parent, "DEVICE=%s" % (tmp_path / "device"),
                    "ROMFS_TREE=%s" % (tmp_path / "tree"), "ROMFS_IMG=%s" % img,
                    "AIOBLE_MPY=%s" % (tmp_path / "aioble"), "MQTT_AS_MPY=%s" % mqtt_as], cwd=ROOT, check=True,
                   capture_output=True, text=True)
    board = ROOT / "firmware" / "boards" / "JKGW_ESP32_ROMFS"
    name = [ln.split("=", 1)[1].strip().strip('"') for ln in (board / "sdkconfig.board").read_text().splitlines()
            if ln.startswith("CONFIG_PARTITION_TABLE_CUSTOM_FILENAME=")][0]
    assert name.startswith("boards/JKGW_ESP32_ROMFS/")  # the board's own file, relative to ports/esp32
    rows = [[c.strip() for c in ln.split(",")] for ln in (board / name.split("/", 2)[2]).read_text().splitlines()
            if ln.strip() and not ln.startswith("#")]
    parts = {r[0]: (int(r[3], 16), int(r[4], 16)) for r in rows}
    size = parts["romfs"][1]
    ends = sorted((o, o + s) for o, s in parts.values())
    assert all(ends[i][1] <= ends[i + 1][0] for i in range(len(ends) - 1))  # no overlap
    assert ends[-1][1] <= 4 * 1024 * 1024  # a 4 MiB WROOM
    tree = tmp_path / "tree" / "lib"
    assert (tree / "net" / "page.html").is_file() and (tree / "net" / "mqtt.mpy").is_file()
    if (mqtt_as / "mqtt_as" / "__init__.mpy").is_file():  # the pinned copy beside the repository, or mip
        assert (tree / "mqtt_as" / "__init__.mpy").is_file()
    n = img.stat().st_size
    print("romfs image %d bytes, partition %d bytes" % (n, size))
    assert n <= size, (n, size)
