# The gateway application: wires the BMS poller, the CAN transmitter and
# receiver, the console, link supervision and the watchdog together. All
# hardware comes in as adapters (uart, can port + bus-off recovery, wdt,
# file store, console io), so the same code runs on the ESP32 (firmware/
# main.py) and in the host simulation under the MicroPython unix port
# (tools/sim_firmware.py).

import asyncio
import gc
import sys

from gateway import config as C
from gateway import link as L
from gateway.bms_poller import BmsPoller
from gateway.can_tx import CanTx
from gateway.clock import sleep_ms, ticks_diff, ticks_ms
from gateway.console import Console
from pack.snapshot import PackSnapshot

CONFIG_NAME = "gateway.json"
_WATCH_MS = 1000
_RESTART_BACKOFF_MS = (500, 2000, 5000, 15000)
# canport.base STATE_* values 0..4
_CAN_STATES = ("stopped", "active", "warning", "error-passive", "BUS-OFF")


def print_exception(e):
    if hasattr(sys, "print_exception"):
        sys.print_exception(e)
    else:  # CPython
        import traceback
        traceback.print_exception(type(e), e, e.__traceback__)


class Gateway:
    def __init__(self, cfg, uart, can, recovery, wdt=None, store=None, console_io=None,
                 config_name=CONFIG_NAME, out=print):
        self.cfg = cfg
        self.can = can
        self.recovery = recovery
        self.wdt = wdt
        self.store = store
        self.console_io = console_io
        self.config_name = config_name
        self._out = out
        self.started_ms = ticks_ms()
        self.snap = PackSnapshot()
        self.link = L.LinkMonitor(cfg["bms_timeout_s"] * 1000, cfg["inverter_timeout_s"] * 1000)
        self.poller = BmsPoller(uart, cfg, self.snap, self.link, self.log)
        self.tx = CanTx(can, recovery, cfg, self.snap, self.link, self.log)
        self.console = Console(self)
        self.task_restarts = 0
        self.wdt_starved = ""  # name of the task that stopped the watchdog feed
        self._line = ""

    # -- output ----------------------------------------------------------------
    def log(self, msg):
        t = ticks_diff(ticks_ms(), self.started_ms)
        self._out("[%6d.%01d] %s" % (t // 1000, (t % 1000) // 100, msg))

    def free_heap(self):
        return ("%d bytes" % gc.mem_free()) if hasattr(gc, "mem_free") else "n/a"

    def can_state_name(self):
        s = self.recovery.state
        return _CAN_STATES[s] if 0 <= s < len(_CAN_STATES) else "state %d" % s

    # -- tasks -----------------------------------------------------------------
    async def supervise(self, name, fn):
        """Run fn() forever; log and restart it (with back-off) if it dies."""
        fails = 0
        while True:
            try:
                await fn()
                fails = 0
            except Exception as e:  # noqa: BLE001 - one task's bug must not stop the others
                self.task_restarts += 1
                self.log("task %s crashed, restarting: %r" % (name, e))
                print_exception(e)
                wait = _RESTART_BACKOFF_MS[fails if fails < len(_RESTART_BACKOFF_MS) else -1]
                fails += 1
                await sleep_ms(wait)

    def _stalled(self, now):
        """Name of a task that made no progress for too long, or ''."""
        p = self.cfg
        # the poller beats every few ms while it waits for replies, and at
        # least once per poll period while it sleeps
        bms_limit = p["bms_poll_ms"] + 3000
        if ticks_diff(now, self.poller.heartbeat_ms) > bms_limit:
            return "bms-poller"
        if ticks_diff(now, self.tx.tx_heartbeat_ms) > p["can_period_ms"] + 3000:
            return "can-tx"
        if ticks_diff(now, self.tx.rx_heartbeat_ms) > 3000:
            return "can-rx"
        return ""

    async def watch(self):
        """Feed the watchdog only while every task makes progress; report
        link changes and a periodic status line."""
        last_state = L.WAIT
        silent = False
        last_status = ticks_ms()
        while True:
            now = ticks_ms()
            stalled = self._stalled(now)
            if stalled:
                if stalled != self.wdt_starved:
                    self.log("watchdog: %s made no progress, not feeding (reset follows)" % stalled)
                self.wdt_starved = stalled
            else:
                self.wdt_starved = ""
                if self.wdt is not None:
                    self.wdt.feed()
            state = self.link.bms_state(now)
            if state != last_state:
                if state == L.FRESH and last_state == L.WAIT:
                    self.log("BMS data complete: CAN output starts")
                elif state == L.FRESH:
                    self.log("BMS data back: normal CAN output")
                else:
                    self.log("BMS data STALE (%s): %s" % (
                        self.poller.last_error or "no valid data",
                        "sending 0 A limits + alarms" if self.cfg["link_loss"] == "zeros" else "CAN output stopped"))
                last_state = state
            s = self.link.inverter_silent(now, self.tx.started_ms)
            if s != silent:
                self.log("inverter silent: no 0x305 for %d s (frames continue)" % self.cfg["inverter_timeout_s"]
                         if s else "inverter 0x305 heartbeat back")
                silent = s
            period = self.cfg["status_s"] * 1000
            if period and ticks_diff(now, last_status) >= period:
                last_status = now
                lines = self.console.status()
                self.log(lines[0])
            await sleep_ms(_WATCH_MS)

    async def console_task(self):
        io = self.console_io
        while True:
            chunk = io.read()
            if chunk:
                for ch in chunk:
                    if ch == "\r" or ch == "\n":
                        line = self._line
                        self._line = ""
                        for out in self.console.execute(line):
                            self._out(out)
                        await sleep_ms(0)  # let a due CAN burst go first
                    elif ch == "\x08" or ch == "\x7f":
                        self._line = self._line[:-1]
                    elif len(self._line) < 120:
                        self._line += ch
            await sleep_ms(50)

    async def run(self, seconds=0):
        """Start every task; return after seconds (simulation), else never."""
        self.log("JK-BMS -> inverter CAN gateway: BMS %s, CAN %s %d kbit/s, protocol %s, every %d ms"
                 % (self.cfg["bms_protocol"], self.cfg["can_backend"], self.cfg["can_bitrate"] // 1000,
                    self.cfg["protocol"], self.cfg["can_period_ms"]))
        tasks = [
            asyncio.create_task(self.supervise("bms-poller", self.poller.run)),
            asyncio.create_task(self.supervise("can-tx", self.tx.run_tx)),
            asyncio.create_task(self.supervise("can-rx", self.tx.run_rx)),
            asyncio.create_task(self.supervise("watch", self.watch)),
        ]
        if self.console_io is not None:
            tasks.append(asyncio.create_task(self.supervise("console", self.console_task)))
        if seconds:
            await sleep_ms(seconds * 1000)
            for t in tasks:
                t.cancel()
            await sleep_ms(0)
        else:
            while True:
                await sleep_ms(60000)


def load_config(store, out=print):
    """Config from flash; every problem is reported, none is fatal."""
    msgs = []
    cfg = C.load(store, CONFIG_NAME, msgs)
    for m in msgs:
        out(m)
    return cfg


class StdinConsole:
    """Non-blocking console input on the USB REPL (sys.stdin)."""

    def __init__(self, poller):
        self._poll = poller

    def read(self):
        out = ""
        while self._poll.poll(0):
            ch = sys.stdin.read(1)
            if not ch:
                break
            out += ch
        return out or None


def make_stdin_console():
    """A StdinConsole, or None where stdin cannot be polled."""
    try:
        import select
        p = select.poll()
        p.register(sys.stdin, select.POLLIN)
    except (ImportError, OSError, AttributeError, TypeError):
        return None
    return StdinConsole(p)
