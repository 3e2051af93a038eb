# Wi-Fi station with reconnect and back-off (docs/network.md "Wi-Fi"). The
# one owner of the radio: the outputs only ask whether it is up (MQTT's
# client is given a view that cannot disconnect it). WLAN.connect() returns
# at once on the ESP32 and the state is polled, so nothing here blocks the
# CAN tasks; a link that flaps is counted, its events are rate-limited.

from compat import sleep_ms, ticks_diff, ticks_ms
from outputs import events as E

# waits after a failed attempt (ms): quick at first, then at most every 2 min
BACKOFF_MS = (2000, 5000, 10000, 30000, 60000, 120000)
CONNECT_MS = 15000  # an attempt that has not got an address by then failed
POLL_MS = 250
WATCH_MS = 1000
QUIET_MS = 10000  # at most one up and one down event per this time; the rest are counted

# network.STAT_* on the ESP32 (the stub on the host has the same)
_WHY = {200: "beacon timeout", 201: "no access point with that name", 202: "wrong password",
        203: "association failed", 204: "handshake timeout"}


class Wifi:
    def __init__(self, cfg, events, wlan=None):
        if wlan is None:
            import network
            wlan = network.WLAN(network.STA_IF)
        self.wlan = wlan
        self.ssid = cfg["wifi_ssid"]
        self._pw = cfg["wifi_password"]
        self.events = events
        self.up = False
        self.ip = ""
        self.connects = 0  # times it came up
        self.losses = 0  # times it went down
        self.failures = 0  # attempts that got no address
        self.why = "not started"
        self.since_ms = ticks_ms()
        self.backoff = BACKOFF_MS
        self._said_up = self._said_down = ticks_ms() - 2 * QUIET_MS

    def _say(self, up, text):
        now = ticks_ms()
        last = self._said_up if up else self._said_down
        if ticks_diff(now, last) < QUIET_MS:
            return  # a flapping link: counted, not printed every time
        if up:
            self._said_up = now
        else:
            self._said_down = now
        self.events.emit(E.NET if up else E.NET_WARN, text)

    def _check(self):
        """Follow the link's state; True when it is up."""
        try:
            on = self.wlan.isconnected()
        except OSError:
            on = False
        if on and not self.up:
            self.up = True
            self.connects += 1
            self.since_ms = ticks_ms()
            try:
                self.ip = self.wlan.ifconfig()[0]
            except (OSError, IndexError):
                self.ip = "?"
            self.why = ""
            self._say(True, "Wi-Fi connected to %r, address %s" % (self.ssid, self.ip))
        elif not on and self.up:
            self.up = False
            self.losses += 1
            self.since_ms = ticks_ms()
            self.why = "link lost"
            self._say(False, "Wi-Fi link lost (%d so far): reconnecting; CAN output goes on" % self.losses)
        return on

    async def run(self):
        try:
            self.wlan.active(True)
        except OSError as e:
            self.why = "radio: %r" % (e,)
        fails = 0
        while True:
            if self._check():
                fails = 0
                await sleep_ms(WATCH_MS)
                continue
            try:
                self.wlan.connect(self.ssid, self._pw)
            except OSError as e:  # e.g. "Wifi Internal State Error" while an attempt runs
                self.why = "connect: %r" % (e,)
            t0 = ticks_ms()
            while ticks_diff(ticks_ms(), t0) < CONNECT_MS and not self._check():
                try:
                    st = self.wlan.status()
                except OSError:
                    st = 0
                if st in _WHY:
                    self.why = _WHY[st]
                    break
                await sleep_ms(POLL_MS)
            if self.up:
                continue
            self.failures += 1
            if self.why in ("", "not started", "link lost"):
                self.why = "no address after %d s" % (CONNECT_MS // 1000)
            wait = self.backoff[fails if fails < len(self.backoff) else -1]
            fails += 1
            self._say(False, "Wi-Fi: no connection to %r (%s), retry in %d s" % (self.ssid, self.why, wait // 1000))
            try:
                self.wlan.disconnect()
            except OSError:
                pass
            await sleep_ms(wait)

    async def wait_up(self, timeout_ms):
        """True once the link is up, False after timeout_ms."""
        t0 = ticks_ms()
        while not self.up:
            if ticks_diff(ticks_ms(), t0) >= timeout_ms:
                return False
            await sleep_ms(POLL_MS)
        return True

    def lines(self, now):
        s = ticks_diff(now, self.since_ms) // 1000
        if self.up:
            head = "Wi-Fi %r up for %d s, address %s" % (self.ssid, s, self.ip)
        else:
            head = "Wi-Fi %r DOWN for %d s (%s)" % (self.ssid, s, self.why)
        return [head + "; connects %d, losses %d, failed attempts %d" % (self.connects, self.losses, self.failures)]
