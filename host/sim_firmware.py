# The firmware application on the host, under the MicroPython unix port:
# the same gateway code as firmware/main.py, with host adapters -- the BMS
# UART is a TCP connection to tools/jkbms_sim.py, the CAN port speaks SLCAN
# over TCP to python-can, the watchdog exits the process (code 3) when it is
# starved. Started by tools/simulate.py:
#   micropython host/sim_firmware.py --bms 127.0.0.1:PORT --can-port PORT
#       [--config DIR/gateway.json] [--seconds N] [--console]
import sys

_ROOT = (__file__.rsplit("/", 1)[0] if "/" in __file__ else ".") + "/.."
sys.path.insert(0, _ROOT + "/host")
sys.path.insert(0, _ROOT + "/firmware/lib")

import asyncio  # noqa: E402

from hostio import HostWdt, SocketUart  # noqa: E402
from slcan import SlcanSocketPort  # noqa: E402

from app import boot  # noqa: E402
from app import gateway as A  # noqa: E402
from app.storage import FileStore  # noqa: E402
from canport.base import BusOffRecovery  # noqa: E402
from compat import sleep_ms  # noqa: E402
from outputs.events import Events  # noqa: E402


def parse_args(argv):
    opts = {"--bms": None, "--can-port": None, "--config": None, "--seconds": "0"}
    flags = set()
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in opts and i + 1 < len(argv):
            opts[a] = argv[i + 1]
            i += 2
        elif a == "--console":
            flags.add(a)
            i += 1
        else:
            raise SystemExit("sim_firmware: bad argument %r" % a)
    if opts["--bms"] is None or opts["--can-port"] is None:
        raise SystemExit("sim_firmware: --bms HOST:PORT and --can-port PORT are required")
    return opts, flags


async def watchdog_check(wdt):
    while True:
        wdt.check()
        await sleep_ms(200)


async def run(gw, wdt, seconds):
    asyncio.create_task(watchdog_check(wdt))
    await gw.run(seconds)


def main(argv):
    opts, flags = parse_args(argv)
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
    host, port = opts["--bms"].rsplit(":", 1)
    uart = SocketUart(host, int(port))
    can = SlcanSocketPort(port=int(opts["--can-port"]), bitrate=cfg["can_bitrate"])
    boot.bring_up_can(can, cfg, events)
    recovery = BusOffRecovery(can)
    wdt = HostWdt(cfg["wdt_ms"])
    console = A.make_stdin_console() if "--console" in flags else None
    gw = A.Gateway(cfg, uart, can, recovery, wdt, store, console, config_name=name, events=events)
    asyncio.run(run(gw, wdt, int(opts["--seconds"])))
    print("SIM DONE")


main(sys.argv[1:])
