# The composition root: builds the gateway from its configuration and the
# hardware adapters (uart, CAN port + bus-off recovery, wdt, file store,
# console io), so the same code runs on the ESP32 (firmware/main.py) and in
# the host simulation under the MicroPython unix port (host/sim_firmware.py).
# Only the configured source and protocol modules are imported.

import asyncio
import gc
import sys

import charge.policy
import protocols
import sources
from app import charge_memory
from app.can_io import CanTx
from app.supervisor import link_events, supervise, watch
from compat import sleep_ms
from outputs import events as E
from outputs.status import Status
from pack.snapshot import PackSnapshot

CONFIG_NAME = "gateway.json"
LINE_MAX = 120
# console input is taken in chunks of at most this many characters, with a
# yield after each: a pasted 64 KB must not hold up the CAN bursts
CHUNK = 64


class Gateway:
    def __init__(self, cfg, uart, can, recovery, wdt=None, store=None, console_io=None,
                 config_name=CONFIG_NAME, out=print, events=None):
        self.cfg = cfg
        self.wdt = wdt
        self.store = store
        self.console_io = console_io
        self.config_name = config_name
        self._out = out
        self.events = events or E.Events(out)
        self.battery = None
        if sources.several(cfg):
            # several packs: one battery aggregate decides (charge.battery)
            from app import packs
            b, self.links = packs.build(cfg, uart, self.log, self._bus_warn)
            self.battery = b
            self.packs = b.packs
            snap = b.snap
            link = b
        else:
            src = sources.make(cfg, uart, PackSnapshot(), self.log)
            self.links = self.packs = [src]
            snap = src.snap
            link = src.fresh
        self.policy = charge.policy.ChargePolicy(cfg)
        if store is not None:
            charge_memory.load(store, self.policy.ctl, self.events)
        enc = protocols.make(cfg)
        self.tx = CanTx(can, recovery, cfg, snap, link, self.policy, enc,
                        self.battery.since_cycle_ms if self.battery is not None else None)
        if self.battery is not None and self.battery.pushed:
            self.tx.poll_ms = 0  # the data does not come on our schedule: no phase to lock onto
        try:
            can.set_filters(enc.rx_filters)  # kept across restarts by the port
        except (OSError, ValueError) as e:
            self.events.emit(E.CAN_NONE, "receive filters not set (%r): every frame is taken" % (e,))
        self.status = Status(cfg, self.packs, self.links, self.battery, link, snap, self.policy, self.tx, can,
                             recovery, self.events)
        self.status.store = store
        link_events(self.status)
        if cfg["wifi_ssid"]:
            self._start_net(store, config_name)
        self.console = None  # outputs.console.Console, imported on the first typed line
        self._line = ""

    def _start_net(self, store, config_name):
        """The network outputs (docs/network.md), loaded only when configured;
        whatever goes wrong there leaves the gateway without them, never down."""
        try:
            from net.hub import Net
            self.status.net = Net(self.status, store, config_name)
        except (ImportError, MemoryError, OSError) as e:
            self.events.emit(E.NET_WARN, "outputs off: %r" % (e,))

    @property
    def source(self):
        """The pack source (the first of several)."""
        return self.status.source

    def log(self, msg):
        self.events.emit(E.STATUS, msg)

    def _bus_warn(self, msg):
        self.events.emit(E.BUS_WARN, msg)

    def execute(self, line):
        """Run one console line; returns its output lines."""
        if self.console is None:
            gc.collect()  # room for the console module, loaded on first use
            from outputs.console import Console
            self.console = Console(self.status, self.store, self.config_name)
        return self.console.execute(line)

    async def console_task(self):
        io = self.console_io
        while True:
            chunk = io.read(CHUNK)
            if chunk:
                for ch in chunk:
                    if ch == "\r" or ch == "\n":
                        io.write("\r\n")
                        line = self._line
                        self._line = ""
                        for out in self.execute(line):
                            self._out(out)
                        await sleep_ms(0)  # let a due CAN burst go first
                    elif ch == "\x08" or ch == "\x7f":
                        if self._line:
                            self._line = self._line[:-1]
                            io.write("\b \b")
                    elif " " <= ch <= "~" and len(self._line) < LINE_MAX:
                        self._line += ch
                        io.write(ch)  # a raw terminal (mpremote repl) shows only what we echo
            # more may be waiting after a full chunk: yield, then read on
            await sleep_ms(0 if chunk and len(chunk) >= CHUNK else 50)

    async def run(self, seconds=0):
        """Start every task; return after seconds (simulation), else never."""
        cfg = self.cfg
        bms = cfg["bms_protocol"] if cfg["bms_transport"] != "ble" else "JK (BLE)"
        if self.battery is None:
            via = self.source.name
        else:
            from app.packs import via  # which bus role is active, and for which packs
            via = via(cfg, self.links)
        # the link-loss policy in force: link_loss "auto" is the protocol's (docs/inverter-can.md "Safe defaults")
        self.events.emit(E.BOOT, "BMS %s via %s, CAN %s %d kbit/s, protocol %s, every %d ms, stale BMS data: %s" % (
            bms, via, cfg["can_backend"], cfg["can_bitrate"] // 1000, cfg["protocol"], self.tx.period_ms,
            "frames stop" if self.policy.stop_on_loss else "0 A + alarms"))
        st = self.status
        tasks = [asyncio.create_task(supervise("bms-poller" if link is st.source else link.name, link.run, st))
                 for link in self.links]
        tasks += [
            asyncio.create_task(supervise("can-tx", self.tx.run_tx, st)),
            asyncio.create_task(supervise("can-rx", self.tx.run_rx, st)),
            asyncio.create_task(supervise("watch", self._watch, st)),
        ]
        if self.console_io is not None:
            tasks.append(asyncio.create_task(supervise("console", self.console_task, st)))
        if st.net is not None:
            for name, fn in st.net.tasks():
                tasks.append(asyncio.create_task(supervise(name, fn, st)))
        if seconds:
            await sleep_ms(seconds * 1000)
            for t in tasks:
                t.cancel()
            await sleep_ms(0)
        else:
            while True:
                await sleep_ms(60000)

    async def _watch(self):
        await watch(self.status, self.wdt)


class StdinConsole:
    """Non-blocking console on the USB REPL (sys.stdin / sys.stdout)."""

    def __init__(self, poller):
        self._poll = poller

    def read(self, limit):
        """At most limit characters that are waiting, or None; never blocks."""
        out = ""
        while len(out) < limit and self._poll.poll(0):
            ch = sys.stdin.read(1)
            if not ch:
                break
            out += ch
        return out or None

    def write(self, text):
        sys.stdout.write(text)


def make_stdin_console():
    """A StdinConsole, or None where stdin cannot be polled."""
    try:
        import select
        p = select.poll()
        p.register(sys.stdin, select.POLLIN)
    except (ImportError, OSError, AttributeError, TypeError):
        return None
    return StdinConsole(p)
