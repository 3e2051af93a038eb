# net.wifi.Wifi, the one owner of the radio, against the stub WLAN of host/fakenet (the ESP32's
# STAT_* numbers, connect() that returns at once, the wifi-down / wifi-storm faults) on a virtual
# clock: the module's ticks_ms / sleep_ms and the stub's clock are one counter that the test moves
# on 10 ms at a time, letting every task run at each step, so minutes of back-off take a moment.
# Connect, loss and reconnect, the back-off steps and their reset, the reasons (no access point,
# wrong password, no address, radio and connect errors), the storm counted but its events
# rate-limited. Each test runs as a task of its own (in_task: the webassembly port's top-level
# coroutine would never resume while the tasks only yield).
# CPython and MicroPython.

import asyncio

from fakenet import env

env.setup()
import network  # noqa: E402 - host/fakenet/network.py, put on the path by env.setup()

from app import config as C  # noqa: E402
from net import wifi as W  # noqa: E402
from outputs.events import Events  # noqa: E402

STEP_MS = 10  # the virtual clock's step: every task runs at each


class Clock:
    def __init__(self):
        self.t = 1000
        self.sleeps = 0

    def ticks(self):
        return self.t

    async def sleep(self, ms):
        wake = self.t + ms
        self.sleeps += 1
        while self.t < wake:  # the test moves the clock on (World.until)
            await asyncio.sleep(0)


class Recorder(network.WLAN):
    """The stub interface, recording the clock at each connect() (and failing on demand)."""

    def __init__(self, clock):
        network.WLAN.__init__(self, network.STA_IF)
        self.clock = clock
        self.at = []
        self.raise_connect = None
        self.raise_active = None

    def connect(self, ssid=None, key=None, bssid=None):
        self.at.append(self.clock.t)
        if self.raise_connect is not None:
            raise self.raise_connect
        network.WLAN.connect(self, ssid, key)

    def active(self, on=None):
        if on is not None and self.raise_active is not None:
            raise self.raise_active
        return network.WLAN.active(self, on)


class World:
    """A Wifi on the stub and the virtual clock; run() starts it, until(ms) lets it run."""

    def __init__(self, ssid="sim", password="pw"):
        self.clock = Clock()
        network.link.reset()
        network.link.clock = self.clock.ticks
        self._saved = (W.ticks_ms, W.sleep_ms)
        W.ticks_ms = self.clock.ticks
        W.sleep_ms = self.clock.sleep
        cfg = C.defaults()
        cfg["wifi_ssid"] = ssid
        cfg["wifi_password"] = password
        self.events = Events(out=lambda line: None)
        self.wlan = Recorder(self.clock)
        self.wifi = W.Wifi(cfg, self.events, self.wlan)
        self.task = None

    def start(self):
        self.task = asyncio.create_task(self.wifi.run())

    async def until(self, t):
        """Let the station run until the virtual clock reaches t (ms after the start)."""
        end = 1000 + t
        while self.clock.t < end:
            self.clock.t += STEP_MS
            await asyncio.sleep(0)
            await asyncio.sleep(0)

    def texts(self):
        return [self.events.line(t, c, a) for t, c, a in self.events.recent()]

    def close(self):
        if self.task is not None:
            self.task.cancel()
        W.ticks_ms, W.sleep_ms = self._saved
        network.link.reset()
        network.link.clock = network._clock


async def _stop(w):
    w.close()
    await asyncio.sleep(0)


def in_task(body):
    """The test body as a task of its own: on the webassembly port the top-level coroutine only
    resumes when the loop goes idle, which a virtual clock never lets it do."""
    async def test():
        await asyncio.create_task(body())
    return test


@in_task
async def test_connects_and_reports_the_address():
    w = World()
    try:
        assert not w.wifi.up and w.wifi.why == "not started"
        w.start()
        await w.until(1000)
        assert w.wifi.up and w.wifi.ip == "127.0.0.1" and w.wifi.connects == 1
        assert len(w.wlan.at) == 1 and w.wlan.at[0] <= 1000 + STEP_MS  # one attempt, at once
        assert network.link.active and network.link.up
        assert any("Wi-Fi connected to 'sim', address 127.0.0.1" in t for t in w.texts()), w.texts()
        line = w.wifi.lines(w.clock.t)[0]
        assert line.startswith("Wi-Fi 'sim' up for 0 s, address 127.0.0.1") and "connects 1, losses 0" in line
        assert await w.wifi.wait_up(10) is True
    finally:
        await _stop(w)


@in_task
async def test_loss_back_off_and_reconnect():
    w = World()
    try:
        w.start()
        await w.until(2000)
        assert w.wifi.up
        network.fault("wifi-down", True)
        await w.until(3100)  # seen within a watch period (1 s)
        assert not w.wifi.up and w.wifi.losses == 1
        await w.until(60000)
        # every attempt gives up after the stub's 1.5 s (STAT_NO_AP_FOUND), then waits its step
        at = [t - 1000 for t in w.wlan.at]
        gaps = [b - a for a, b in zip(at, at[1:])][1:]  # from the first failed attempt on
        steps = W.BACKOFF_MS
        assert len(gaps) >= 4, at
        for k in range(len(gaps)):
            want = network.link.fail_ms + steps[k if k < len(steps) else -1]
            assert want <= gaps[k] <= want + W.POLL_MS, (k, gaps, at)
        assert w.wifi.why == "no access point with that name" and w.wifi.failures == len(at) - 1
        assert "DOWN" in w.wifi.lines(w.clock.t)[0] and "(no access point with that name)" in w.wifi.lines(w.clock.t)[0]
        waiting = asyncio.create_task(w.wifi.wait_up(500))
        await w.until(w.clock.t - 1000 + 800)
        assert waiting.done() and await waiting is False
        network.fault("wifi-down", False)
        last = w.wlan.at[-1]
        f = w.wifi.failures
        await w.until(w.clock.t - 1000 + 125000)  # the longest step is 2 min
        assert w.wifi.up and w.wifi.connects == 2 and w.wifi.failures == f and len(w.wlan.at) == f + 2
        # the attempt after the outage comes at the back-off's next step, not earlier
        want = network.link.fail_ms + steps[min(f - 1, len(steps) - 1)]
        assert want <= w.wlan.at[-1] - last <= want + W.POLL_MS, (w.wlan.at, want)
        # a loss after a good link starts the back-off from its first step again
        network.fault("wifi-down", True)
        n = len(w.wlan.at)
        await w.until(w.clock.t - 1000 + 8000)
        again = w.wlan.at[n:]
        assert len(again) >= 2 and again[1] - again[0] <= network.link.fail_ms + W.BACKOFF_MS[0] + W.POLL_MS, again
    finally:
        await _stop(w)


@in_task
async def test_a_reconnect_storm_is_counted_and_its_events_rate_limited():
    w = World()
    try:
        w.start()
        await w.until(2000)
        network.fault("wifi-storm", True)
        await w.until(62000)  # a minute of flapping
        network.fault("wifi-storm", False)
        await w.until(65000)
        assert w.wifi.up
        assert w.wifi.losses >= 20 and w.wifi.connects == w.wifi.losses + 1, (w.wifi.losses, w.wifi.connects)
        assert network.link.drops >= w.wifi.losses  # some flaps pass between two looks
        texts = w.texts()
        ups = [t for t in texts if "Wi-Fi connected" in t]
        downs = [t for t in texts if "Wi-Fi link lost" in t or "no connection" in t]
        # QUIET_MS 10 s: at most one up and one down event per 10 s of the 63 s
        assert 2 <= len(ups) <= 8 and 1 <= len(downs) <= 7, texts
        assert "losses %d" % w.wifi.losses in w.wifi.lines(w.clock.t)[0]
    finally:
        await _stop(w)


@in_task
async def test_reasons_wrong_password_and_no_access_point():
    for attr, value, why in (("password", "secret", "wrong password"),
                             ("ssid", "other", "no access point with that name")):
        w = World(password="wrong")
        try:
            setattr(network.link, attr, value)
            w.start()
            await w.until(5000)
            assert not w.wifi.up and w.wifi.why == why and w.wifi.failures >= 1, (attr, w.wifi.why)
            assert "DOWN" in w.wifi.lines(w.clock.t)[0] and "(%s)" % why in w.wifi.lines(w.clock.t)[0]
            assert any("no connection to 'sim' (%s), retry in 2 s" % why in t for t in w.texts()), w.texts()
        finally:
            await _stop(w)


@in_task
async def test_an_attempt_without_an_address_times_out():
    w = World()
    try:
        network.link.connect_ms = 10 ** 7  # associates, never gets an address
        w.start()
        await w.until(W.CONNECT_MS + 1000)
        assert not w.wifi.up and w.wifi.failures == 1
        assert w.wifi.why == "no address after %d s" % (W.CONNECT_MS // 1000)
        assert network.link.status == network.STAT_IDLE  # the station gave the attempt up (disconnect)
    finally:
        await _stop(w)


@in_task
async def test_radio_and_connect_errors_are_reasons_not_crashes():
    w = World()
    try:
        w.wlan.raise_active = OSError("Wifi Invalid Mode")
        w.wlan.raise_connect = OSError("Wifi Internal State Error")
        w.start()
        await w.until(40000)
        assert not w.task.done()  # still running: nothing escaped
        assert not w.wifi.up and w.wifi.failures >= 2
        assert w.wifi.why.startswith("connect: OSError(") and "Internal State" in w.wifi.why, w.wifi.why
    finally:
        await _stop(w)
