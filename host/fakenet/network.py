# Stub `network` module for host tests and the whole-firmware simulation (README.md beside this
# file): the station-interface subset of MicroPython's network.WLAN that net.wifi and mqtt_as use,
# with the ESP32's STAT_* numbers. Runs under CPython, the MicroPython unix port and the
# webassembly port. Import it as the top-level module `network` (env.setup() puts this folder on
# sys.path), never as fakenet.network: a second copy would be a second radio.
#
# What behaves like the ESP32's (ports/esp32/network_wlan.c):
# * every WLAN(STA_IF) is the same interface (one radio, `link`): mqtt_as's and net.wifi's agree;
# * connect() returns at once; status() is STAT_CONNECTING until the address comes (connect_ms
#   later), then STAT_GOT_IP and isconnected() is True; ifconfig() is 127.0.0.1 then (the sockets
#   are the host's: a broker on 127.0.0.1 is reachable);
# * connect() while not active raises OSError("Wifi Not Started"), as the ESP32 does;
# * a link that is lost reports STAT_BEACON_TIMEOUT (200); an attempt that finds no access point
#   gives up after fail_ms with STAT_NO_AP_FOUND (201); a wrong password (link.password set):
#   STAT_WRONG_PASSWORD (202).
# Faults (fault(name, on); sim_firmware.py --net-fault applies them on a schedule):
#   wifi-down   the access point is gone: the link drops, every attempt fails (201) until it ends
#   wifi-storm  the link flaps: up and down every 150-450 ms for as long as a connection is
#               wanted (connect() called, no disconnect()), as an access point at the edge of
#               range or one that keeps deauthenticating does
# Not modelled: the host's sockets keep working while the stub's link is down (the outputs must
# look at the link, as they do on the ESP32 where a socket then fails or hangs).
try:
    from time import ticks_add, ticks_diff, ticks_ms

    def _clock():
        return ticks_ms()

except ImportError:  # CPython
    from time import monotonic

    def _clock():
        return int(monotonic() * 1000)

    def ticks_diff(a, b):
        return a - b

    def ticks_add(a, b):
        return a + b


STA_IF = 0
AP_IF = 1
STAT_IDLE = 1000
STAT_CONNECTING = 1001
STAT_GOT_IP = 1010
STAT_BEACON_TIMEOUT = 200
STAT_NO_AP_FOUND = 201
STAT_WRONG_PASSWORD = 202
STAT_ASSOC_FAIL = 203
STAT_HANDSHAKE_TIMEOUT = 204
FAULTS = ("wifi-down", "wifi-storm")
ADDRESS = ("127.0.0.1", "255.0.0.0", "127.0.0.1", "127.0.0.1")
NO_ADDRESS = ("0.0.0.0", "0.0.0.0", "0.0.0.0", "0.0.0.0")
MAC = b"\x24\x0a\xc4\x12\x34\x56"  # machine.unique_id() of host/fakenet/machine.py: the same chip


class Link:
    """The one station interface and its access point. Times in ms of clock() (settable: a test
    may give it a virtual clock). Records: connects (connect() calls), ups (times an address
    came), drops (times an up link went down), attempts_failed."""

    def __init__(self):
        self.clock = _clock
        self.reset()

    def reset(self):
        """Back to power-on: inactive, no faults, the settings below, records zero (call between
        tests; the clock stays)."""
        self.connect_ms = 300  # connect() -> address
        self.fail_ms = 1500  # connect() -> STAT_NO_AP_FOUND while the access point is gone
        self.flap_ms = (150, 450)  # wifi-storm: each up or down phase lasts this long
        self.ssid = None  # the access point's name; None: any name connects
        self.password = None  # None: any password is right
        self.active = False
        self.wanted = False  # connect() called and not disconnect()ed since
        self.up = False
        self.status = STAT_IDLE
        self.since = self.clock()  # start of the attempt, or of the storm's current phase
        self.down = False
        self.storm = False
        self.joined = ""  # the ssid of the current attempt
        self._pw = ""
        self.connects = self.ups = self.drops = self.attempts_failed = 0
        self._seed = 12345
        self._phase_ms = 0

    def _rand(self, lo, hi):
        self._seed = (self._seed * 1103515245 + 12345) & 0x7FFFFFFF
        return lo + (self._seed >> 8) % (hi - lo + 1)

    def _set_up(self, on, why=STAT_BEACON_TIMEOUT):
        if on and not self.up:
            self.ups += 1
        elif not on and self.up:
            self.drops += 1
        self.up = on
        self.status = STAT_GOT_IP if on else why

    def update(self):
        """Bring the state up to the clock (every WLAN method calls it)."""
        now = self.clock()
        age = ticks_diff(now, self.since)
        if not self.active or not self.wanted:
            return
        if self.down:
            if self.up:
                self._set_up(False)
                self.status = STAT_CONNECTING  # the ESP32 keeps trying on its own until told otherwise
                self.since = now
            elif self.status == STAT_CONNECTING and age >= self.fail_ms:
                self.status = STAT_NO_AP_FOUND
                self.wanted = False
                self.attempts_failed += 1
            return
        if self.storm:
            while age >= self._phase_ms:  # every phase that ended since the last look counts
                self._set_up(not self.up)
                if not self.up:
                    self.status = STAT_CONNECTING
                age -= self._phase_ms
                self.since = ticks_add(now, -age)
                self._phase_ms = self._rand(self.flap_ms[0], self.flap_ms[1])
            return
        if self.status == STAT_CONNECTING and age >= self.connect_ms:
            if self.ssid is not None and self.joined != self.ssid:
                self.status = STAT_NO_AP_FOUND
                self.wanted = False
                self.attempts_failed += 1
            elif self.password is not None and self._pw != self.password:
                self.status = STAT_WRONG_PASSWORD
                self.wanted = False
                self.attempts_failed += 1
            else:
                self._set_up(True)

    def fault(self, name, on):
        """Start (on) or end a fault of FAULTS."""
        if name not in FAULTS:
            raise ValueError("unknown network fault %r (one of %s)" % (name, ", ".join(FAULTS)))
        self.update()
        if name == "wifi-down":
            self.down = on
            if not on and self.wanted and not self.up:
                self.status = STAT_CONNECTING  # the attempt under way now finds the access point
                self.since = self.clock()
        else:
            self.storm = on
            self.since = self.clock()
            self._phase_ms = self._rand(self.flap_ms[0], self.flap_ms[1]) if on else 0
            if not on and self.wanted and not self.up:
                self.status = STAT_CONNECTING
        self.update()

    def text(self):
        return "stub WLAN: %s; connect() %d, up %d, drops %d, failed attempts %d" % (
            "up" if self.up else "down (status %d)" % self.status, self.connects, self.ups, self.drops,
            self.attempts_failed)


link = Link()


def fault(name, on):
    link.fault(name, on)


class WLAN:
    """network.WLAN(STA_IF): every instance is the one interface `link`."""

    PM_NONE = 0
    PM_PERFORMANCE = 1
    PM_POWERSAVE = 2

    def __init__(self, interface=STA_IF):
        if interface != STA_IF:
            raise ValueError("the stub has the station interface only")
        self._l = link

    def active(self, on=None):
        lk = self._l
        if on is None:
            return lk.active
        if not on:
            lk._set_up(False, STAT_IDLE)
            lk.wanted = False
            lk.status = STAT_IDLE
        lk.active = bool(on)
        return None

    def connect(self, ssid=None, key=None, bssid=None):
        lk = self._l
        if not lk.active:
            raise OSError("Wifi Not Started")
        lk.update()
        lk._set_up(False, STAT_CONNECTING)  # a new attempt drops the link first
        lk.connects += 1
        lk.wanted = True
        lk.joined = ssid or ""
        lk._pw = key or ""
        lk.since = lk.clock()
        if lk.storm:
            lk._phase_ms = lk._rand(lk.flap_ms[0], lk.flap_ms[1])

    def disconnect(self):
        lk = self._l
        lk.update()
        lk._set_up(False, STAT_IDLE)
        lk.wanted = False
        lk.status = STAT_IDLE

    def isconnected(self):
        self._l.update()
        return self._l.up

    def status(self, param=None):
        self._l.update()
        if param is None:
            return self._l.status
        if param == "rssi":
            if not self._l.up:
                raise OSError("not connected")
            return -58
        raise ValueError("unknown status param %r" % (param,))

    def ifconfig(self, config=None):
        if config is not None:
            return None
        self._l.update()
        return ADDRESS if self._l.up else NO_ADDRESS

    def ipconfig(self, key):
        self._l.update()
        if key == "addr4":
            a = ADDRESS if self._l.up else NO_ADDRESS
            return a[0], a[1]
        raise ValueError("unknown ipconfig key %r" % (key,))

    def config(self, *args, **kw):
        if kw:
            return None  # setters (pm=, reconnects=, dhcp_hostname=, ...) are accepted
        if len(args) != 1:
            raise TypeError("config(name) or config(name=value)")
        name = args[0]
        if name == "mac":
            return MAC
        if name in ("essid", "ssid"):
            return self._l.joined
        if name == "hostname" or name == "dhcp_hostname":
            return "jkgw"
        if name == "txpower":
            return 20
        raise ValueError("unknown config param %r" % (name,))

    def scan(self):
        return [(b"sim", MAC, 6, -58, 3, False)]
