# RAM probe: the heap the firmware of one configuration holds once it is built
# the way firmware/main.py builds it (app.boot.load_config, bring_up_can,
# Gateway) and has processed its BMS data (POLLS polls) and one CAN burst.
# Runs under MicroPython; host/ram_wasm.mjs drives it on the webassembly port (the
# ESP32's 32-bit object model) against the .mpy files of `make device`, and
# host/ram.py (`make ram`) reports the figures (docs/design.md "RAM").
#
# Everything the probe needs for itself -- the fakes standing in for main.py's
# hardware adapters, the recorded BMS replies, the MCP2515 register model --
# is built before the baseline, so only what the firmware allocates counts.
#
#   fake UART    answers each request with the reply recorded on the host by
#                tools/jkbms_sim.JkBmsSim.reply_to() (host/ram.py writes the
#                file: one "request-hex reply-hex" line per request)
#   MCP2515      the real canport.mcp2515 driver on host_tests/portable/
#                mcp2515_model.py (SPI register model of the chip)
#   TWAI         canport.machine_can on FakeCan, a machine.CAN stand-in
#
# Under the unix port (64-bit objects, figures ~1.6x the ESP32's):
#   micropython host/ram_probe.py CONFIG REPLIES_FILE [LIB_DIR]
import gc
import sys

# configuration name -> config keys that differ from the defaults
CONFIGS = {
    "jk-pb+mcp2515": {},
    "jk-pb-fc03+mcp2515": {"bms_read": "fc03"},
    "jk-nw+mcp2515": {"bms_protocol": "jk-nw"},
    "jk-pb+twai": {"can_backend": "twai"},
    # over BLE: aioble (core, device, central, client .mpy) and one connection
    # to a JK on the simulated radio (host/fakeble), set up before the baseline
    "jk-ble+mcp2515": {"bms_transport": "ble", "ble_mac": "20:21:11:40:50:60"},
    # several packs on one bus (app.packs: PbBus + Battery; docs/jk-bms.md
    # "Several packs on one bus"): master of 4 and of 15 packs (JK addresses
    # 1..15; with the longer cycle docs/jk-bms.md gives for that many, which
    # also leaves every pack the time to read its device info), and a
    # listener to a JK bank of 4 (master at 0). The short gap only keeps
    # make ram quick: it changes no RAM
    "jk-pb-x4+mcp2515": {"bms_addresses": [1, 2, 3, 4], "bms_gap_ms": 10},
    "jk-pb-x15+mcp2515": {"bms_addresses": list(range(1, 16)), "bms_gap_ms": 10, "bms_poll_ms": 2500,
                          "bms_timeout_s": 10},
    "listen-x4+mcp2515": {"bms_bus_role": "listen", "bms_addresses": [0, 1, 2, 3], "bms_timeout_s": 15},
    # the other inverter protocols (docs/inverter-can.md): only the configured
    # one is loaded, so each is the default configuration plus its module
    "growatt+mcp2515": {"protocol": "growatt"},
    "sma+mcp2515": {"protocol": "sma"},
    "victron+mcp2515": {"protocol": "victron"},
    "pylon_plus+mcp2515": {"protocol": "pylon_plus"},
    "luxpower+mcp2515": {"protocol": "luxpower"},
    "deye+mcp2515": {"protocol": "deye"},
    # the network outputs (docs/network.md): the default configuration with
    # Wi-Fi, MQTT (mqtt_as, HA discovery on) and the web page, then with
    # InfluxDB too. Wi-Fi, sockets and the listener are the stand-ins of
    # host/ram_net.py, set up before the baseline; the tasks run until MQTT has
    # sent its discovery and a state, InfluxDB a line, and the page has
    # answered one GET /api/status. The 1 s InfluxDB period only keeps make
    # ram quick: it changes no RAM
    "net+mcp2515": {"wifi_ssid": "home", "wifi_password": "x", "mqtt_host": "192.168.1.2", "web_port": 80,
                    "web_password": "pw"},
    "net-all+mcp2515": {"wifi_ssid": "home", "wifi_password": "x", "mqtt_host": "192.168.1.2", "web_port": 80,
                        "web_password": "pw", "influx_host": "192.168.1.2", "influx_interval_s": 1},
}
NAMES = ("jk-pb+mcp2515", "jk-pb-fc03+mcp2515", "jk-nw+mcp2515", "jk-pb+twai", "jk-ble+mcp2515",
         "jk-pb-x4+mcp2515", "jk-pb-x15+mcp2515", "listen-x4+mcp2515", "growatt+mcp2515", "sma+mcp2515",
         "victron+mcp2515", "pylon_plus+mcp2515", "luxpower+mcp2515", "deye+mcp2515", "net+mcp2515",
         "net-all+mcp2515")
BLE_NAMES = ("jk-ble+mcp2515",)
NET_NAMES = ("net+mcp2515", "net-all+mcp2515")  # need mqtt_as (make mqtt-as-mpy)

# BMS polls before the measurement: the first brings a complete data set, the
# second what a source reads once besides (the JK-PB device info), so the
# figure is the steady state's
POLLS = 2


def net_outputs(name):
    """The network outputs a configuration has (net.hub's names)."""
    cfg = CONFIGS[name]
    if not cfg.get("wifi_ssid"):
        return ()
    return tuple(o for k, o in (("mqtt_host", "mqtt"), ("web_port", "web"), ("influx_host", "influx")) if cfg.get(k))


def _here():
    f = __file__
    return f.rsplit("/", 1)[0] if "/" in f else "."


def packs_of(name):
    """The pack addresses of a configuration with several packs, else None."""
    a = CONFIGS[name].get("bms_addresses")
    return a if a and len(a) > 1 else None


def listens(name):
    return CONFIGS[name].get("bms_bus_role") == "listen"


def replies_key(name):
    """Configurations that send the same BMS requests share a replies file
    (the master configurations share one that answers every address 1..15)."""
    cfg = CONFIGS[name]
    if cfg.get("bms_transport") == "ble":
        return "ble"
    if listens(name):
        return "listen-%d" % len(cfg["bms_addresses"])
    if packs_of(name):
        return "jk-pb-bus"
    return "%s-%s" % (cfg.get("bms_protocol", "jk-pb"), cfg.get("bms_read", "trigger"))


def config_json(name):
    """The config file on the fake flash."""
    import json

    return json.dumps(CONFIGS[name])


def load_replies(path):
    """{request: reply}; a listener's file holds one line "stream HEX": the
    bytes a JK master's bank puts on the bus in one period (key None)."""
    table = {}
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) == 2:
                table[None if parts[0] == "stream" else bytes.fromhex(parts[0])] = bytes.fromhex(parts[1])
    if not table:
        raise ValueError("no replies in " + path)
    return table


class FakeUart:
    """machine.UART with timeout=0: the recorded reply to each request,
    then nothing; an unknown request gets no reply (counted). With a
    recorded stream (a listener's bus) it is read from the start; a write
    then counts as unanswered (a listener must never transmit)."""

    def __init__(self, replies):
        self._replies = replies
        self._out = replies.get(None, b"")
        self._pos = 0
        self.requests = 0
        self.unanswered = 0

    def write(self, buf):
        self.requests += 1
        r = self._replies.get(bytes(buf))
        if r is None:
            self.unanswered += 1
            r = b""
        self._out = r
        self._pos = 0
        return len(buf)

    def rewind(self):
        """A listener's stream once more (the master's next period)."""
        self._out = self._replies.get(None, b"")
        self._pos = 0

    def readinto(self, buf):
        n = len(self._out) - self._pos
        if n <= 0:
            return None
        if n > len(buf):
            n = len(buf)
        out = self._out
        p = self._pos
        for i in range(n):
            buf[i] = out[p + i]
        self._pos = p + n
        return n


class FakeCan:
    """machine.CAN stand-in with what canport.machine_can uses; takes every
    frame (a bus where the inverter acknowledges)."""

    def __init__(self, can_id, bitrate, mode=None):
        self.sent = 0

    def init(self, bitrate, mode=None):
        pass

    def set_filters(self, filters):
        pass

    def send(self, can_id, data, flags=0):
        self.sent += 1
        return 0

    def recv(self, arg=None):
        return None

    def state(self):
        return 1  # STATE_ACTIVE

    def restart(self):
        pass

    def get_counters(self, lst=None):
        return lst if lst is not None else [0] * 8

    def deinit(self):
        pass


class FakeCanClass:
    """The class object machine.CAN would be: constructing it remembers the
    instance, so the probe can count the frames sent."""

    def __init__(self):
        self.made = None

    def __call__(self, can_id, bitrate, mode=None):
        self.made = FakeCan(can_id, bitrate, mode)
        return self.made


class MemStore:
    def __init__(self, files):
        self.files = files

    def exists(self, name):
        return name in self.files

    def read(self, name, limit=None):
        if name not in self.files:
            raise OSError(2)
        text = self.files[name]
        if limit is not None and len(text) > limit:
            raise ValueError("larger than %d bytes" % limit)
        return text

    def write_atomic(self, name, text):
        self.files[name] = text

    def remove(self, name):
        self.files.pop(name, None)


class Wdt:
    def __init__(self):
        self.fed = 0

    def feed(self):
        self.fed += 1


def _quiet(line):
    pass


def ble_radio(replies_path):
    """The simulated radio with a JK on air (its frames from the replies file:
    device info, settings, cell info), and the shims aioble needs on this
    runtime; the fake bluetooth module itself stands in for firmware, so it
    is loaded here, before the baseline."""
    sys.path.insert(0, "/probe/fakeble")
    from fakeble import env

    env._shims()
    import bluetooth
    from jk_peripheral import FrameSource, JkPeripheral

    frames = {}
    with open(replies_path) as f:
        for line in f:
            parts = line.split()
            if len(parts) == 2:
                frames[parts[0]] = parts[1]
    src = FrameSource(frames["device"], frames["settings"], frames["cell"])
    bluetooth.radio.reset()
    return bluetooth.radio.add(JkPeripheral(CONFIGS["jk-ble+mcp2515"]["ble_mac"], frames=src, per_event=4,
                                            period_ms=200))


class Fakes:
    """Everything main.py would take from the hardware, built before the
    baseline. out: where the gateway's event lines go."""

    def __init__(self, name, replies_path, out=_quiet):
        self.name = name
        self.ble = CONFIGS[name].get("bms_transport") == "ble"
        self.net = None
        if net_outputs(name):
            import ram_net

            self.net = ram_net.NetFakes(_here() + "/fakenet")
        self.peripheral = ble_radio(replies_path) if self.ble else None
        self.uart = FakeUart(load_replies(replies_path)) if not self.ble else None
        self.store = MemStore({"gateway.json": config_json(name)})
        self.wdt = Wdt()
        self.out = out
        self.model = None
        self.can_cls = None
        if CONFIGS[name].get("can_backend", "mcp2515") == "mcp2515":
            from mcp2515_model import MCP2515Model

            self.model = MCP2515Model(8000000)
            self.model.record = False  # count frames only: recording allocates
        else:
            self.can_cls = FakeCanClass()

    def frames_sent(self):
        if self.model is not None:
            return self.model.tx_count
        return self.can_cls.made.sent if self.can_cls.made is not None else 0


async def build_and_run(f):
    """firmware/main.py's main() with f's adapters, then POLLS BMS polls and
    one CAN cycle (run_tx's body). Returns the gateway."""
    from app import boot
    from app import gateway as A
    from canport import base as canbase
    from canport.nocan import NoCan
    from compat import ticks_ms
    from outputs import events as E

    events = E.Events(f.out)
    cfg = boot.load_config(f.store, events)

    def build_can():
        if cfg["can_backend"] == "twai":
            from canport.machine_can import MachineCanPort

            return MachineCanPort(1, cfg["can_bitrate"], can_cls=f.can_cls)
        from canport.mcp2515 import MCP2515

        return MCP2515(f.model.spi, f.model.cs, cfg["can_bitrate"], cfg["mcp2515_xtal_hz"])

    can = NoCan(build_can)
    boot.bring_up_can(can, cfg, events)
    boot.unload("app.boot")  # as firmware/main.py does
    del boot
    recovery = canbase.BusOffRecovery(can)
    console = A.make_stdin_console()
    gw = A.Gateway(cfg, f.uart, can, recovery, f.wdt, f.store, console, events=events)
    if f.ble:
        await ble_connect(gw)
    elif gw.battery is not None:
        await bus_cycles(gw, f)
    else:
        for _ in range(POLLS):
            await gw.source.poll_once()
    now = ticks_ms()
    gw.tx.burst(now)
    recovery.poll(now)
    if f.net is not None:
        import ram_net

        await ram_net.steady(gw, f.net, net_outputs(f.name))
    return gw


async def bus_cycles(gw, f):
    """Several packs: POLLS + 1 cycles of the bus task (master: every pack's
    status, settings, then device info; listener: the master's period heard
    that many times), then the aggregate, so every pack is online."""
    from compat import ticks_ms

    link = gw.links[0]
    for _ in range(POLLS + 1):
        if hasattr(link, "cycle"):
            await link.cycle(gw.cfg["bms_poll_ms"])
        else:
            f.uart.rewind()
            for _ in range(10000):
                link.read_once()
                if f.uart._pos >= len(f.uart._out):
                    break
    gw.battery.update(ticks_ms())


async def ble_connect(gw):
    """The BLE source's task (left running: the connection is part of the
    figure) until it has taken a few cell frames and the settings."""
    import asyncio

    from compat import ticks_diff, ticks_ms
    src = gw.source
    gw.ble_task = asyncio.create_task(src.run())
    t0 = ticks_ms()
    while src.frames < 6 and ticks_diff(ticks_ms(), t0) < 10000:
        await asyncio.sleep_ms(50)


def check(gw, f):
    """The run did what it should: every request answered, the data set
    accepted (FRESH) and the whole frame set on the bus."""
    from compat import ticks_ms
    from sources.base import FRESH

    if f.uart is not None and f.uart.unanswered:
        raise AssertionError("%d BMS requests had no recorded reply" % f.uart.unanswered)
    now = ticks_ms()
    for p in gw.packs:
        if p.fresh.state(now) != FRESH:
            raise AssertionError("BMS data not accepted: %s: %s" % (p.name, p.last_error))
    if gw.battery is not None:
        want = len(CONFIGS[f.name]["bms_addresses"])
        if gw.battery.online != want or len(gw.packs) != want:
            raise AssertionError("%d of %d packs online" % (gw.battery.online, want))
        if not listens(f.name) and [p for p in gw.packs if p.device is None]:
            raise AssertionError("a pack's device info was not read")
    want = len(gw.tx.enc.ids)
    if f.frames_sent() != want or gw.tx.sent != want:
        raise AssertionError("CAN burst: %d of %d frames on the bus" % (f.frames_sent(), want))
    if f.net is not None:
        import ram_net

        ram_net.check(gw, f.net)


async def settle():
    """gc.collect(), finished, then the heap in use. On the webassembly port
    gc.collect() only marks a collection due, which runs once control is back
    in JS (no C stack to scan), and Python objects JS still references (timer
    callbacks) are let go only after a JS garbage collection (js.gc, which
    host/ram_wasm.mjs provides)."""
    import asyncio

    if sys.platform == "webassembly":
        import js

        for _ in range(2):  # JS runs finalizers some time after its collection
            js.gc()
            await asyncio.sleep_ms(10)
        gc.collect()
        await asyncio.sleep_ms(0)  # the collection runs
    else:
        gc.collect()
    return gc.mem_alloc()


async def held(f):
    """The heap in use at the end of a measurement: settle(); with the
    network tasks running it varies by ~0.4 KB as they take turns (what one
    of them holds between two awaits), so the largest of samples over a
    second and a bit (the Wi-Fi task's period) counts."""
    if f.net is None:
        return await settle()
    import asyncio

    most = 0
    for _ in range(10):
        a = await settle()
        if a > most:
            most = a
        await asyncio.sleep_ms(113)
    return most


def _qstr_info():
    # one "qstr pool: n_pool=.., n_qstr=.., n_str_data_bytes=.., n_total_bytes=.."
    # line on stdout, which host/ram_wasm.mjs collects (no heap allocation)
    if sys.platform == "webassembly":
        import micropython

        micropython.qstr_info()


async def warm_up(f):
    # The webassembly port keeps the Python objects JS references in a table
    # that grows and never shrinks: make it big enough for a poll's timers
    # (~30) before the baseline, so its growth is not counted -- for the
    # network configurations, whose ten tasks run for seconds, for as many
    # timers as they make between two JS collections.
    import asyncio

    for _ in range(3000 if f.net is not None else 300):
        await asyncio.sleep_ms(0)


async def measure(name, replies_path, out=_quiet):
    """Heap bytes the firmware holds for configuration name (asyncio is
    imported before the baseline: see asyncio_cost())."""
    f = Fakes(name, replies_path, out)
    await warm_up(f)
    base = await settle()
    _qstr_info()
    gw = await build_and_run(f)
    check(gw, f)
    used = await held(f) - base
    _qstr_info()
    await quiet(gw, f)
    return used


async def quiet(gw, f):
    """Stop what the measurement left running (the network outputs' tasks)."""
    if f.net is not None:
        import ram_net

        await ram_net.stop(gw)


def asyncio_cost():
    """Bytes `import asyncio` holds (unix port; host/ram_wasm.mjs measures
    it in three steps, for the collections to run in between)."""
    gc.collect()
    a0 = gc.mem_alloc()
    import asyncio  # noqa: F401

    gc.collect()
    return gc.mem_alloc() - a0


# -- per-module breakdown ---------------------------------------------------------
# Pass 1 records the order in which modules finish loading (a module's own
# imports finish first) while the app is built; pass 2, in a fresh
# interpreter, imports them one at a time in that order, so each step loads
# exactly one module, and measures each; what remains is the app's objects.


def _finished(args):
    """Modules an __import__(name, globals, locals, fromlist, level) call
    has completely loaded, parents first."""
    name = args[0]
    if len(args) > 4 and args[4]:
        return []  # relative import: the firmware has none
    parts = name.split(".")
    out = []
    for i in range(len(parts)):
        out.append(".".join(parts[: i + 1]))
    fromlist = args[3] if len(args) > 3 else None
    if fromlist and fromlist is not True:  # True: "import a.b as c"
        for item in fromlist:
            out.append(name + "." + item)
    return [m for m in out if m in sys.modules]


async def import_order(name, replies_path):
    """Modules in the order they finished loading while the app was built and
    ran (list of names; modules enter sys.modules before their body runs, so
    the order comes from the import calls returning)."""
    import builtins

    f = Fakes(name, replies_path)
    await warm_up(f)
    order = []
    seen = set(sys.modules)
    real = builtins.__import__

    def hook(*args):
        m = real(*args)
        for k in _finished(args):
            if k not in seen:
                seen.add(k)
                order.append(k)
        return m

    builtins.__import__ = hook
    try:
        gw = await build_and_run(f)
    finally:
        builtins.__import__ = real
    check(gw, f)
    await quiet(gw, f)
    return order


async def breakdown(name, replies_path, order):
    """[(module, bytes)] in load order, then ("(app objects and data)",
    bytes) and ("total", bytes). A step that loaded more modules than its own
    (the order was not a dependency order) is marked "(+N more)". After each
    measurement the qstr pool's figures are printed (_qstr_info), so that the
    driver can tell names and strings (interned in shared pools that grow in
    steps) from objects."""
    f = Fakes(name, replies_path)
    await warm_up(f)
    n = len(order)
    sizes = [0] * (n + 1)  # preallocated: the probe's own rows must not count
    loaded = bytearray(n)  # modules each step loaded
    base = await settle()
    _qstr_info()
    last = base
    for i in range(n):
        mod = order[i]
        if mod in sys.modules:
            _qstr_info()  # unchanged: one line per row all the same
            continue
        k0 = len(sys.modules)
        __import__(mod)
        loaded[i] = len(sys.modules) - k0
        now = await settle()
        _qstr_info()
        sizes[i] = now - last
        last = now
    gw = await build_and_run(f)
    check(gw, f)
    now = await held(f)
    _qstr_info()
    await quiet(gw, f)
    sizes[n] = now - last
    total = now - base
    rows = []
    group = ""
    for i in range(n):
        label = order[i]
        if loaded[i] > 1:
            group = label
            label += " (+%d more)" % (loaded[i] - 1)
        elif not loaded[i]:
            label += " (in %s)" % group  # e.g. a submodule its package imports
        rows.append((label, sizes[i]))
    rows.append(("(app objects and data)", sizes[n]))
    rows.append(("total", total))
    return rows


def _cli(argv):
    if len(argv) > 2:
        sys.path.insert(0, argv[2])
    here = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."
    sys.path.append(here + "/../host_tests/portable")
    cost = asyncio_cost()
    import asyncio

    used = asyncio.run(measure(argv[0], argv[1]))
    print("ram %s: %d bytes (%s; asyncio %d of them)" % (argv[0], cost + used, sys.platform, cost))


if __name__ == "__main__":
    _cli(sys.argv[1:])
