#!/usr/bin/env python3
"""RAM budget of the firmware per configuration (`make ram`).

Heap in use once the gateway is built the way firmware/main.py builds it and
has processed its BMS data (two polls) and one CAN burst, measured by
host/ram_probe.py on the MicroPython webassembly port (32-bit objects, as on
the ESP32) from the .mpy tree of `make device`:

  python host/ram.py [--lib build/device/lib] [--aioble build/aioble/lib]
                     [--mqtt-as build/mqtt_as/lib] [--romfs] [--verbose] [CONFIG...]

  ram jk-pb+mcp2515: 61234 bytes (wasm32, .mpy)

--verbose adds a table of bytes per module (imported one at a time in
dependency order) per configuration. The BMS replies the probe's fake UART
gives are recorded here first: the firmware's own source (CPython) polls
tools/jkbms_sim.JkBmsSim.reply_to() once per configuration, so the requests
are exactly the ones the firmware sends.
"""
import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for _p in (os.path.join(ROOT, "firmware", "lib"), os.path.join(ROOT, "tools"), os.path.join(ROOT, "host")):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import ram_probe  # noqa: E402

DRIVER = os.path.join(ROOT, "host", "ram_wasm.mjs")
WASM_PACKAGE = os.path.join(ROOT, "node_modules", "@micropython", "micropython-webassembly-pyscript")
DEFAULT_LIB = os.path.join(ROOT, "build", "device", "lib")
DEFAULT_AIOBLE = os.path.join(ROOT, "build", "aioble", "lib")
DEFAULT_MQTT_AS = os.path.join(ROOT, "build", "mqtt_as", "lib")


class RecordingUart:
    """A UART on which every request gets the simulator's reply; keeps the
    (request, reply) pairs."""

    def __init__(self, sim):
        self.sim = sim
        self.pairs = {}
        self._out = b""

    def write(self, buf):
        req = bytes(buf)
        reply = self.sim.reply_to(req)
        if not reply:
            raise AssertionError("the simulator does not answer %s" % req.hex())
        self.pairs[req] = reply
        self._out = reply
        return len(buf)

    def readinto(self, buf):
        n = min(len(buf), len(self._out))
        if not n:
            return None
        buf[:n] = self._out[:n]
        self._out = self._out[n:]
        return n


def record_replies(name):
    """{request: reply} for ram_probe.POLLS polls of configuration name's
    source."""
    from jkbms_sim import JkBmsSim

    import sources
    from app import config as C
    from pack.snapshot import PackSnapshot

    overrides = ram_probe.CONFIGS[name]
    msgs = []
    cfg = C.validate(dict(overrides), msgs)
    assert not msgs, msgs
    sim = JkBmsSim(protocol=cfg["bms_protocol"], address=cfg["bms_address"], seed=1)
    uart = RecordingUart(sim)
    src = sources.make(cfg, uart, PackSnapshot(), lambda msg: None)
    for _ in range(ram_probe.POLLS):
        if not asyncio.run(src.poll_once()):
            raise AssertionError("%s: the firmware did not accept the simulator's replies: %s"
                                 % (name, src.last_error or "no reply taken"))
    return uart.pairs


def record_bus_replies():
    """{request: reply} of every pack at 1..15 on one bus, recorded while the
    firmware's own bus task (sources.pb_bus via app.packs) polls them for
    ram_probe.POLLS + 1 cycles: status, settings and device info of each
    address, with that address's ACK."""
    from jkbms_sim import JkBmsSim

    from app import config as C
    from app import packs

    msgs = []
    cfg = C.validate(dict(ram_probe.CONFIGS["jk-pb-x15+mcp2515"]), msgs)
    addresses = cfg["bms_addresses"]
    assert not msgs, msgs
    sim = JkBmsSim(packs={a: {} for a in addresses}, seed=1)
    uart = RecordingUart(sim)
    battery, links = packs.build(cfg, uart, lambda msg: None)

    async def cycles():
        for _ in range(ram_probe.POLLS + 1):
            await links[0].cycle(cfg["bms_poll_ms"])

    asyncio.run(cycles())
    missing = [p.name for p in battery.packs if p.device is None or not p.complete()]
    if missing:
        raise AssertionError("the firmware did not read every pack from the simulator: %s" % ", ".join(missing))
    return uart.pairs


def listen_stream(n):
    """The bytes a JK bank of n packs (master at 0) puts on the bus in one
    master period (tools/bench_packs.master_stream: the simulator's own
    master steps)."""
    import bench_packs

    return bench_packs.master_stream(n)


def ble_frames():
    """The three frames the simulated JK radio sends the BLE configuration:
    the simulator's JK02_32S device info, settings and cell info."""
    from jkbms_sim import JkBmsSim

    sim = JkBmsSim(protocol="jk-pb", address=1, seed=1)
    return {"device": sim.frame(0x03), "settings": sim.frame(0x01), "cell": sim.frame(0x02)}


def write_replies(directory, names):
    done = set()
    for name in names:
        key = ram_probe.replies_key(name)
        if key in done:
            continue
        done.add(key)
        if key == "ble":
            with open(os.path.join(directory, key + ".txt"), "w") as f:
                for kind, frame in sorted(ble_frames().items()):
                    f.write("%s %s\n" % (kind, bytes(frame).hex()))
            continue
        if key.startswith("listen-"):
            with open(os.path.join(directory, key + ".txt"), "w") as f:
                f.write("stream %s\n" % listen_stream(len(ram_probe.CONFIGS[name]["bms_addresses"])).hex())
            continue
        pairs = record_bus_replies() if key == "jk-pb-bus" else record_replies(name)
        with open(os.path.join(directory, key + ".txt"), "w") as f:
            for req, reply in sorted(pairs.items()):
                f.write("%s %s\n" % (req.hex(), reply.hex()))


def aioble_missing(aioble=DEFAULT_AIOBLE):
    """Why the BLE configuration cannot be measured, or None."""
    if os.path.isfile(os.path.join(aioble, "aioble", "client.mpy")):
        return None
    return "no aioble .mpy at %s (make aioble-mpy)" % aioble


def mqtt_as_missing(mqtt_as=DEFAULT_MQTT_AS):
    """Why the network configurations cannot be measured, or None."""
    d = os.path.join(mqtt_as, "mqtt_as")
    if os.path.isfile(os.path.join(d, "__init__.mpy")) or os.path.isfile(os.path.join(d, "__init__.py")):
        return None
    return "no mqtt_as at %s (make mqtt-as-mpy)" % mqtt_as


def build_romfs(lib, aioble, out, mqtt_as=None):
    """A ROMFS image (mpremote romfs build) of lib/ plus aioble and mqtt_as,
    as `mpremote romfs deploy` would put it in the device's flash (mqtt_as
    in the image too: installed with mip into the filesystem's /lib its
    bytecode would be in the heap)."""
    tree = tempfile.mkdtemp(prefix="ram-romfs-")
    try:
        shutil.copytree(lib, os.path.join(tree, "lib"))
        if os.path.isdir(os.path.join(aioble, "aioble")):
            shutil.copytree(os.path.join(aioble, "aioble"), os.path.join(tree, "lib", "aioble"))
        if mqtt_as and os.path.isdir(os.path.join(mqtt_as, "mqtt_as")):
            shutil.copytree(os.path.join(mqtt_as, "mqtt_as"), os.path.join(tree, "lib", "mqtt_as"))
        mpremote = os.path.join(os.path.dirname(sys.executable), "mpremote")
        subprocess.run([mpremote, "romfs", "--no-mpy", "-o", out, "build", tree], check=True,
                       capture_output=True, text=True, timeout=120)
    finally:
        shutil.rmtree(tree, ignore_errors=True)
    return out


# The webassembly interpreter under node sometimes ends with a Python await
# still pending (node's event loop runs empty: exit status 0, no error, the
# rest of the output missing), seen in the verbose breakdown of the
# several-packs configurations about once in eight runs. Such a run is
# repeated for the configurations it left out; a failure the driver reports
# (an exit status, a "ram_wasm:" line) is never retried.
_SILENT_RETRIES = 2


def measure(lib=DEFAULT_LIB, names=ram_probe.NAMES, verbose=False, aioble=DEFAULT_AIOBLE, romfs=False,
            mqtt_as=DEFAULT_MQTT_AS):
    """({config: bytes}, {config: [(module, bytes)]}); raises RuntimeError
    when the driver fails. BLE configurations need aioble's .mpy in aioble,
    the network ones mqtt_as's in mqtt_as (both are mirrored into the
    device's lib/, as mip puts them). romfs: import everything from a ROMFS
    image instead (bytecode in flash)."""
    tmp = tempfile.mkdtemp(prefix="ram-replies-")
    totals = {}
    modules = {}
    try:
        write_replies(tmp, names)
        cmd = ["node", DRIVER, "--lib", lib, "--aioble", aioble, "--mqtt-as", mqtt_as, "--replies", tmp]
        if romfs:
            cmd += ["--romfs", build_romfs(lib, aioble, os.path.join(tmp, "rom.img"), mqtt_as)]
        cmd += ["--verbose"] if verbose else []
        todo = list(names)
        for _attempt in range(1 + _SILENT_RETRIES):
            r = subprocess.run(cmd + todo, cwd=ROOT, capture_output=True, text=True, timeout=600)
            got = {}
            mods = {}
            for line in r.stdout.splitlines():
                parts = line.split()
                if line.startswith("ram ") and len(parts) >= 4:
                    got[parts[1].rstrip(":")] = int(parts[2])
                elif line.startswith("mod ") and len(parts) == 8:
                    mods.setdefault(parts[1], []).append((parts[2],) + tuple(int(v) for v in parts[3:]))
            done = [n for n in todo if n in got and (not verbose or n in mods)]
            for n in done:
                totals[n] = got[n]
                if verbose:
                    modules[n] = mods[n]
            todo = [n for n in todo if n not in done]
            if r.returncode != 0 or "ram_wasm:" in r.stderr or not todo:
                break
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if r.returncode != 0 or todo:
        raise RuntimeError("ram_wasm.mjs failed (exit %d):\n%s%s" % (r.returncode, r.stdout, r.stderr))
    return totals, modules


def module_table(names, modules):
    """Bytes per module, one column per configuration, rows in load order;
    then the total, the qstrs the firmware added and the measured growth
    (which includes the qstr pools' slack at the probe's state)."""
    rows = []
    for name in names:
        for r in modules[name]:
            if r[0] not in rows and r[0] != "(app_objects_and_data)":
                rows.append(r[0])
    rows.append("(app_objects_and_data)")
    width = max(len(m) for m in rows)
    cells = {name: {r[0]: r for r in modules[name]} for name in names}
    lines = ["%-*s %s" % (width, "bytes, wasm32 .mpy", " ".join("%18s" % n for n in names))]
    for mod in rows:
        label = mod.replace("_", " ") if mod.startswith("(") else mod
        lines.append("%-*s %s" % (width, label, " ".join(
            "%18s" % (cells[n][mod][1] if mod in cells[n] else "-") for n in names)))
    for label, col in (("total", 1), ("  qstrs added", 3), ("  their text bytes", 4),
                       ("measured heap growth", 2)):
        lines.append("%-*s %s" % (width, label, " ".join(
            "%18d" % sum(r[col] for r in modules[n]) for n in names)))
    return lines


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lib", default=DEFAULT_LIB, help="the .mpy tree (make device: build/device/lib)")
    ap.add_argument("--aioble", default=DEFAULT_AIOBLE, help="aioble's .mpy (make aioble-mpy: build/aioble/lib)")
    ap.add_argument("--mqtt-as", default=DEFAULT_MQTT_AS,
                    help="mqtt_as's .mpy (make mqtt-as-mpy: build/mqtt_as/lib)")
    ap.add_argument("--verbose", action="store_true", help="bytes per module")
    ap.add_argument("--romfs", action="store_true",
                    help="also measure with the .mpy files in a ROMFS image (bytecode in flash)")
    ap.add_argument("configs", nargs="*", metavar="CONFIG", help="default: all of " + ", ".join(ram_probe.NAMES))
    args = ap.parse_args(argv)
    args.configs = args.configs or list(ram_probe.NAMES)
    for name in args.configs:
        if name not in ram_probe.CONFIGS:
            ap.error("unknown configuration %r" % name)
    if not os.path.isdir(WASM_PACKAGE):
        print("ram: node_modules has no MicroPython webassembly package (run npm ci)", file=sys.stderr)
        return 2
    why = aioble_missing(args.aioble)
    if why:
        skipped = [n for n in args.configs if n in ram_probe.BLE_NAMES]
        args.configs = [n for n in args.configs if n not in ram_probe.BLE_NAMES]
        for name in skipped:
            print("ram %s: not measured: %s" % (name, why))
    why = mqtt_as_missing(args.mqtt_as)
    if why:
        skipped = [n for n in args.configs if n in ram_probe.NET_NAMES]
        args.configs = [n for n in args.configs if n not in ram_probe.NET_NAMES]
        for name in skipped:
            print("ram %s: not measured: %s" % (name, why))
    totals, modules = measure(args.lib, args.configs, args.verbose, args.aioble, mqtt_as=args.mqtt_as)
    rom = measure(args.lib, args.configs, False, args.aioble, True, args.mqtt_as)[0] if args.romfs else {}
    for name in args.configs:
        print("ram %s: %d bytes (wasm32, .mpy)" % (name, totals[name]))
        if name in rom:
            print("ram %s: %d bytes (wasm32, romfs: bytecode in flash)" % (name, rom[name]))
    if args.verbose:
        print()
        for line in module_table(args.configs, modules):
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
