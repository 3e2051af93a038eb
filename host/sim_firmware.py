# The firmware application on the host, under the MicroPython unix port:
# the same gateway code as firmware/main.py, with host adapters -- the BMS
# UART is a TCP connection to tools/jkbms_sim.py, the CAN port speaks SLCAN
# over TCP to python-can, the watchdog exits the process (code 3) when it is
# starved. Started by tools/simulate.py:
#   micropython host/sim_firmware.py --bms 127.0.0.1:PORT --can-port PORT
#       [--config DIR/gateway.json] [--seconds N] [--console]
#
# Over BLE (the config says bms_transport "ble"), --ble 127.0.0.1:PORT instead
# of --bms: the real aioble (../shared/vendor/micropython-lib, found by
# host/fakeble/env.py; exit code 4 when it is absent) on the simulated radio
# (host/fakeble/bluetooth.py) with one JK-BMS BLE module on air
# (host/fakeble/jk_peripheral.py, MAC = the config's ble_mac, else DEFAULT_MAC;
# name = ble_name, else JK-B2A24S15P) whose frames come from jkbms_sim.py's
# TCP port (host/fakeble/remote_frames.py, FC10 triggers, protocol jk-pb):
#   micropython host/sim_firmware.py --ble 127.0.0.1:PORT --can-port PORT
#       [--ble-fault NAME@SECONDS[:DURATION] ...] [--epoch UNIX_TIME]
#       [--link-every SECONDS] ...
# Radio faults, applied to the module at their times (seconds after --epoch,
# the unix time the caller's clock counts from; default: this start):
#   ble-disconnect  the module drops the link and stops advertising (no
#                   connect completes) until the end of the fault
#   ble-burst       12-16 notifications per connection event, 20 bytes each
#                   (15 per frame), MTU exchange refused (from the next link on)
# Lines of its own start with "sim T:" (T = seconds after the epoch): every
# fault change, and every --link-every seconds (default 5) the source's BLE
# link line (the console's status line: connects, link losses, frames,
# chunks, lost chunks) and the module's and the frame pump's records.
#
# With --net the network outputs run (the config names wifi_ssid and the
# outputs): the stub `network` and `machine` modules of host/fakenet (a WLAN
# that connects to 127.0.0.1; the host's sockets reach the real services) and
# the vendor mqtt_as (../shared/vendor/micropython-mqtt; JKGW_MQTT_AS_PATH
# overrides; absent: said on the console, the firmware then runs without MQTT)
# come first on the path, before the firmware's modules are imported:
#   micropython host/sim_firmware.py --bms ... --net
#       [--net-fault NAME@SECONDS[:DURATION] ...] [--epoch UNIX_TIME]
# Wi-Fi faults, applied to the stub WLAN at their times (host/fakenet/network.py):
#   wifi-down   the access point is gone: the link drops, every attempt fails
#   wifi-storm  the link flaps up and down every 150-450 ms
# Each start and end is a "sim T:" line, the end with the stub's records
# (connect() calls, times up, drops, failed attempts).
import sys

_ROOT = (__file__.rsplit("/", 1)[0] if "/" in __file__ else ".") + "/.."
sys.path.insert(0, _ROOT + "/host")
sys.path.insert(0, _ROOT + "/firmware/lib")

import asyncio  # noqa: E402
import time  # noqa: E402

from hostio import HostWdt, SocketUart  # noqa: E402
from slcan import SlcanSocketPort  # noqa: E402

from app import boot  # noqa: E402
from app import gateway as A  # noqa: E402
from app.storage import FileStore  # noqa: E402
from canport.base import BusOffRecovery  # noqa: E402
from compat import sleep_ms  # noqa: E402
from outputs.events import Events  # noqa: E402

DEFAULT_MAC = "C8:47:8C:00:11:22"
BLE_FAULTS = ("ble-disconnect", "ble-burst")
NET_FAULTS = ("wifi-down", "wifi-storm")  # host/fakenet/network.py FAULTS
AIOBLE_MISSING = 4  # exit code: --ble without the vendor aioble


def parse_args(argv):
    opts = {"--bms": None, "--ble": None, "--can-port": None, "--config": None, "--seconds": "0",
            "--epoch": None, "--link-every": "5"}
    flags = set()
    faults = []
    net_faults = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--ble-fault" and i + 1 < len(argv):
            faults.append(parse_fault(argv[i + 1]))
            i += 2
        elif a == "--net-fault" and i + 1 < len(argv):
            net_faults.append(parse_fault(argv[i + 1], NET_FAULTS, "--net-fault"))
            i += 2
        elif a in opts and i + 1 < len(argv):
            opts[a] = argv[i + 1]
            i += 2
        elif a in ("--console", "--net"):
            flags.add(a)
            i += 1
        else:
            raise SystemExit("sim_firmware: bad argument %r" % a)
    if (opts["--bms"] is None) == (opts["--ble"] is None) or opts["--can-port"] is None:
        raise SystemExit("sim_firmware: --bms HOST:PORT or --ble HOST:PORT, and --can-port PORT are required")
    if faults and opts["--ble"] is None:
        raise SystemExit("sim_firmware: --ble-fault needs --ble")
    if net_faults and "--net" not in flags:
        raise SystemExit("sim_firmware: --net-fault needs --net")
    opts["faults"] = faults
    opts["net_faults"] = net_faults
    return opts, flags


def parse_fault(text, names=BLE_FAULTS, opt="--ble-fault"):
    """'NAME@SECONDS[:DURATION]' -> (name, at, duration or None)."""
    name, _, when = text.partition("@")
    a, colon, d = when.partition(":")
    try:
        at = float(a)
        dur = float(d) if colon else None
    except ValueError:
        raise SystemExit("sim_firmware: bad %s %r (NAME@SECONDS[:DURATION])" % (opt, text)) from None
    if name not in names or at < 0 or (dur is not None and dur <= 0):
        raise SystemExit("sim_firmware: bad %s %r (one of %s)" % (opt, text, ", ".join(names)))
    return name, at, dur


def fault_steps(faults):
    """[(name, at, duration or None)] -> [[name, start, end or None, state]] (state 0 before,
    1 on, 2 over), the schedules' to-do list."""
    return [[n, at, None if d is None else at + d, 0] for n, at, d in faults]


def due(todo, t, apply):
    """Start and end the faults of todo whose time has come (apply(name, on))."""
    for f in todo:
        if f[3] == 0 and t >= f[1]:
            f[3] = 1
            apply(f[0], True)
        if f[3] == 1 and f[2] is not None and t >= f[2]:
            f[3] = 2
            apply(f[0], False)


async def watchdog_check(wdt):
    while True:
        wdt.check()
        await sleep_ms(200)


class BleWorld:
    """The simulated radio with one JK module fed by jkbms_sim.py, and its fault schedule."""

    def __init__(self, cfg, endpoint, faults, epoch, link_every):
        import bluetooth
        from jk_peripheral import JkPeripheral
        from remote_frames import RemoteFrames

        host, port = endpoint.rsplit(":", 1)
        self.frames = RemoteFrames(host, int(port), cfg["bms_address"])
        self.p = bluetooth.radio.add(JkPeripheral(cfg["ble_mac"] or DEFAULT_MAC,
                                                  name=cfg["ble_name"] or "JK-B2A24S15P", frames=self.frames))
        self.faults = faults
        self.epoch = epoch
        self.link_every = link_every
        self.source = None  # the gateway's source, for its link line

    def now(self):
        return time.time() - self.epoch

    def say(self, text):
        print("sim %.1f: %s" % (self.now(), text))

    def records(self):
        p, f = self.p, self.frames
        return ("module: connects %d, requests %d, frames sent %d, chunks sent %d, dropped %d, "
                "frames missing %d; simulator: requests %d, frames %d, junk %d, timeouts %d" % (
                    p.connects, p.requests, p.frames_sent, p.chunks_sent, p.chunks_dropped,
                    p.frames_missing, f.requests, f.frames, f.junk, f.timeouts))

    def _apply(self, name, on):
        p = self.p
        if name == "ble-disconnect":
            p.set(refuse_connect=on)
            if on:
                p.disconnect()
                self.say("ble-disconnect: the module drops the link and stops advertising")
            else:
                self.say("ble-disconnect over: the module advertises again")
        elif on:
            p.set(per_event=16, chunk=20, refuse_mtu=True)
            self.say("ble-burst: 12-16 notifications of 20 bytes per connection event, MTU refused")
        else:
            p.set(per_event=1, chunk=None, refuse_mtu=False)
            self.say("ble-burst over")

    async def schedule(self):
        todo = fault_steps(self.faults)
        bursting = 0
        next_link = self.link_every
        while True:
            t = self.now()
            due(todo, t, self._apply)
            if any(f[3] == 1 and f[0] == "ble-burst" for f in todo):
                bursting += 1
                self.p.per_event = 12 + bursting % 5  # 12..16 per connection event
            if self.link_every > 0 and t >= next_link:
                next_link += self.link_every
                self.link()
            await sleep_ms(50)

    def link(self):
        src = self.source
        if src is not None and hasattr(src, "link_text"):
            from compat import ticks_ms
            self.say(src.link_text(ticks_ms()))
        self.say(self.records())
        import gc
        self.say("heap: %d bytes used, %d free" % (gc.mem_alloc(), gc.mem_free()))


class NetWorld:
    """The stub WLAN (host/fakenet/network.py) and its fault schedule."""

    def __init__(self, faults, epoch):
        import network

        self.link = network.link
        self.faults = faults
        self.epoch = epoch
        self.since = {}

    def say(self, text):
        print("sim %.1f: %s" % (time.time() - self.epoch, text))

    def _apply(self, name, on):
        self.link.fault(name, on)
        if on:
            self.since[name] = time.time()
            self.say(name + (": the access point is gone" if name == "wifi-down" else
                             ": the link flaps up and down every 150-450 ms"))
        else:
            self.say("%s over after %.1f s; %s" % (name, time.time() - self.since.get(name, time.time()),
                                                   self.link.text()))

    async def schedule(self):
        todo = fault_steps(self.faults)
        while True:
            due(todo, time.time() - self.epoch, self._apply)
            await sleep_ms(50)


def net_ready():
    """Put the stub network / machine modules and the vendor mqtt_as on sys.path."""
    from fakenet import env

    why = env.setup()
    if why is not None:
        print("sim_firmware: --net: %s; the firmware runs without MQTT" % why)


def ble_ready():
    """Put the vendor aioble and the simulated radio on sys.path; exit when aioble is absent."""
    from fakeble import env

    why = env.setup()
    if why is not None:
        print("sim_firmware: --ble needs aioble: %s" % why)
        sys.exit(AIOBLE_MISSING)


async def run(gw, wdt, seconds, world=None, net=None):
    asyncio.create_task(watchdog_check(wdt))
    if world is not None:
        asyncio.create_task(world.frames.run())
        asyncio.create_task(world.schedule())
    if net is not None:
        asyncio.create_task(net.schedule())
    await gw.run(seconds)


def main(argv):
    opts, flags = parse_args(argv)
    if opts["--ble"]:
        ble_ready()  # before the firmware's modules: aioble and bluetooth come from there
    if "--net" in flags:
        net_ready()  # likewise network, machine and mqtt_as
    if opts["--config"]:
        path = opts["--config"]
        cut = path.rfind("/")
        store = FileStore(path[:cut] if cut > 0 else "")
        name = path[cut + 1:]
    else:
        store = FileStore("/nonexistent-config-dir")  # defaults, said on the console
        name = A.CONFIG_NAME
    events = Events()
    cfg = boot.load_config(store, events, name)
    world = None
    uart = None
    if opts["--ble"]:
        if cfg["bms_transport"] != "ble":
            print("sim_firmware: --ble, but the config says bms_transport %r" % cfg["bms_transport"])
            sys.exit(2)
        world = BleWorld(cfg, opts["--ble"], opts["faults"], float(opts["--epoch"] or time.time()),
                         float(opts["--link-every"]))
    else:
        host, port = opts["--bms"].rsplit(":", 1)
        uart = SocketUart(host, int(port))
    can = SlcanSocketPort(port=int(opts["--can-port"]), bitrate=cfg["can_bitrate"])
    boot.bring_up_can(can, cfg, events)
    recovery = BusOffRecovery(can)
    wdt = HostWdt(cfg["wdt_ms"])
    console = A.make_stdin_console() if "--console" in flags else None
    gw = A.Gateway(cfg, uart, can, recovery, wdt, store, console, config_name=name, events=events)
    if world is not None:
        world.source = gw.source
    net = None
    if "--net" in flags:
        net = NetWorld(opts["net_faults"], float(opts["--epoch"] or time.time()))
    asyncio.run(run(gw, wdt, int(opts["--seconds"]), world, net))
    print("SIM DONE")


main(sys.argv[1:])
