# MQTT output on mqtt_as (docs/network.md "MQTT"): the state JSON
# (net.telemetry) every mqtt_interval_s, per-pack topics with several packs,
# each event's text, availability with an LWT, and Home Assistant discovery
# (net.ha) after every (re)connect and when HA says it started.
# Topics, <base> = <mqtt_prefix>/<device id>:
#   <base>/state            JSON, qos 0, every mqtt_interval_s
#   <base>/availability     "online" / "offline" (the LWT), retained
#   <base>/pack/<n>/state   pack n (1 = the first configured), several packs only
#   <base>/event            each event's text, as it happens, retained (at most the ring after an
#                           outage; not the periodic status line)
#   <ha_prefix>/status      subscribed: HA's birth message "online" -> discovery again
# mqtt_as is used as it is, with four choices (docs/network.md "MQTT"):
# * net.wifi owns the radio: the client's wifi_connect() only waits for it
#   (bounded), and its WLAN is a view whose disconnect() / active(False) do
#   nothing -- mqtt_as disconnects the station on every broker outage, which
#   would take the web page down with it;
# * publish() and subscribe() try once and raise OSError when the link is
#   down: mqtt_as's own wait for the connection forever, and a state or an
#   event that cannot go out now is counted and dropped, never queued;
# * a socket the broker closed is an OSError like any other loss (mqtt_as
#   asserts on it and its reader task dies with a traceback);
# * the first connect is retried here with back-off (mqtt_as reconnects by
#   itself only after a first success); every attempt, reconnects included,
#   goes through _gate(): Wi-Fi up, back-off, and the one DNS lookup.
# Nothing here blocks: every socket operation of mqtt_as is non-blocking and
# awaits (bounded by its response_time), the TLS handshake included (see
# ssl_params below), except the DNS lookup of a host name, which blocks the
# interpreter once (net.schema.fit warns about it), and the handshake's own
# crypto steps.

from compat import sleep_ms, ticks_add, ticks_diff, ticks_ms
from net import telemetry as T
from outputs import events as E

BACKOFF_MS = (0, 2000, 5000, 10000, 30000, 60000)  # before attempt 1, 2, ... (mqtt_as adds 1 s)
WIFI_WAIT_MS = 30000  # an attempt waits this long for Wi-Fi, then fails (mqtt_as retries)
QUIET_MS = 10000  # at most one connected and one lost event per this time
FAIL_QUIET_MS = 600000  # a first connect that keeps failing: said once, then every 10 min
IDLE_MS = 200  # the loop's pace while nothing is due
GAP_MS = 20  # between discovery messages: the CAN tasks run in between
RESPONSE_S = 10  # mqtt_as: a socket that makes no progress this long is a lost connection


class _Radio:
    """The client's view of the station: it reads the link, never changes it."""

    def __init__(self, wlan):
        self._w = wlan

    def isconnected(self):
        try:
            return self._w.isconnected()
        except OSError:
            return False

    def active(self, *on):
        return True

    def disconnect(self):
        pass

    def connect(self, *a, **k):
        pass

    def status(self, *a):
        return self._w.status(*a)

    def config(self, *a, **k):
        return None


def _client_class():
    """mqtt_as's MQTTClient with the choices above, and its default config.
    ImportError when mqtt_as is not installed (net.hub says how to)."""
    from mqtt_as import MQTT_base, MQTTClient, config

    class Client(MQTTClient):
        def __init__(self, conf):
            MQTTClient.__init__(self, conf)
            self._sta_if = _Radio(conf["wlan"])
            self._gate = conf["gate"]

        async def wifi_connect(self, quick=False):
            await self._gate()

        async def publish(self, topic, msg, retain=False, qos=0, properties=None):
            if not self.isconnected():
                raise OSError(-1, "not connected")
            try:
                await MQTT_base.publish(self, topic, msg, retain, qos)
            except OSError:
                self._reconnect()  # mqtt_as's own reaction to a failed write
                raise

        async def wait_msg(self):
            # mqtt_as asserts on what a closed socket reads (b""): its reader
            # task would die with a traceback and leave the loss to the next
            # ping; as an OSError it reconnects at once
            try:
                await MQTT_base.wait_msg(self)
            except AssertionError as e:
                raise OSError(-1, "broker: %s" % e) from None

        async def subscribe(self, topic, qos=0, properties=None):
            if not self.isconnected():
                raise OSError(-1, "not connected")
            try:
                await MQTT_base.subscribe(self, topic, qos)
            except OSError:
                self._reconnect()
                raise

    return Client, config


def _text(s):
    """An event text as mqtt_as can size it: bytes unless it is ASCII."""
    if len(s) > T.EVENT_TEXT_MAX:
        s = s[:T.EVENT_TEXT_MAX - 3] + "..."
    for ch in s:
        if ch > "~":
            return s.encode()
    return s


class MqttOut:
    name = "mqtt"

    def __init__(self, net, client_cls=None):
        st = net.status
        cfg = st.cfg
        self.net = net
        self.st = st
        self.cfg = cfg
        self.host = cfg["mqtt_host"]
        self.port = cfg["mqtt_port"]
        self.base = "%s/%s" % (cfg["mqtt_prefix"], net.device_id)
        self.avail = self.base + "/availability"
        self.ha_status = cfg["ha_prefix"] + "/status"
        self._ha_topic = self.ha_status.encode()
        self.interval_ms = cfg["mqtt_interval_s"] * 1000
        self.idle_ms = IDLE_MS
        self.gap_ms = GAP_MS
        self.quiet_ms = QUIET_MS
        self.backoff = BACKOFF_MS
        self.client_id = cfg["mqtt_client_id"] or "jkgw-" + net.device_id
        self.ha = None
        if cfg["ha_discovery"] == "on":
            from net import ha
            self.ha = ha
        self.connected = False
        self.why = "not started"
        self.since_ms = ticks_ms()
        # counters (console `net`)
        self.published = 0
        self.skipped = 0  # state periods that passed while the broker was away
        self.connects = 0
        self.losses = 0
        self.failures = 0  # attempts that did not connect (first connect and reconnects)
        self.disc_sent = 0
        self.births = 0
        self.ev_sent = 0
        self.ev_dropped = 0  # events the ring no longer held when the broker came back
        self.state_bytes = 0
        self._ever = False  # a first connect succeeded: mqtt_as keeps the connection from then on
        self._resolved = False
        self._tries = 0  # attempts since the last success
        self._new = False  # connected, online / subscribe / discovery not yet sent
        self._birth = False
        self._disc = None  # the discovery generator under way
        self._cells = self._temps = 0  # the layout announced last
        self._ev_next = 0  # the count of the next event to publish (0: the boot's events too)
        self._due = ticks_ms()
        self._said_up = self._said_down = ticks_add(ticks_ms(), -2 * QUIET_MS)
        self._said_fail = None
        self._held = None  # a connection event held back by the quiet time (True: connected)
        self._last_said = None
        if client_cls is None:
            client_cls, conf = _client_class()
            conf = dict(conf)  # mqtt_as's module-level defaults stay as they are
        else:
            conf = {}
        tls = cfg["mqtt_tls"] == "on"
        for k, v in (("server", self.host), ("port", self.port), ("user", cfg["mqtt_user"]),
                     ("password", cfg["mqtt_password"]), ("client_id", self.client_id), ("ssl", tls),
                     # do_handshake False: the TLS handshake then runs in mqtt_as's
                     # non-blocking reads and writes, bounded by response_time; done
                     # in wrap_socket it spins until the broker answers, CAN and all
                     # (a server that never answers froze the gateway: no frames)
                     ("ssl_params", {"server_hostname": self.host, "do_handshake": False} if tls else {}),
                     ("will", (self.avail, "offline", True, 1)), ("keepalive", 60),
                     ("response_time", RESPONSE_S), ("clean", True), ("clean_init", True), ("queue_len", 0),
                     ("subs_cb", self._message), ("wifi_coro", self._link), ("connect_coro", self._connected),
                     ("wlan", net.wifi.wlan), ("gate", self._gate)):
            conf[k] = v
        self.client = client_cls(conf)

    # -- mqtt_as callbacks ------------------------------------------------

    def _message(self, topic, msg, retained):
        # HA's birth message; a retained one is only a replay at subscribe time
        # (discovery follows every connect anyway)
        if self.ha is not None and not retained and bytes(topic) == self._ha_topic and bytes(msg) == b"online":
            self.births += 1
            self._birth = True

    async def _link(self, up):
        if up or not self.connected:
            return
        self.connected = False
        self.losses += 1
        self.since_ms = ticks_ms()
        self.why = "broker connection lost" if self._radio_up() else "Wi-Fi down"
        self._say(False, "MQTT connection lost (%s; %d so far): reconnecting, CAN output goes on"
                  % (self.why, self.losses))

    def _radio_up(self):
        # the station itself: net.wifi looks only once a second
        try:
            return self.net.wifi.up and self.net.wifi.wlan.isconnected()
        except OSError:
            return False

    async def _connected(self, client):
        self.connected = True
        self.connects += 1
        self._tries = 0
        self._said_fail = None
        self.since_ms = ticks_ms()
        self.why = ""
        self._new = True
        self._say(True, "MQTT connected to %s:%d as %s" % (self.host, self.port, self.client_id))

    def _say(self, up, text):
        now = ticks_ms()
        if ticks_diff(now, self._said_up if up else self._said_down) < self.quiet_ms:
            # a flapping broker: counted, not printed every time; the state it
            # settles in is said when the quiet time is over (_catch_up)
            self._held = up
            return
        if up:
            self._said_up = now
        else:
            self._said_down = now
        self._held = None
        self._last_said = up
        self.st.events.emit(E.NET if up else E.NET_WARN, text)

    def _catch_up(self):
        held = self._held
        if held is None:
            return
        if held != self.connected or held == self._last_said:
            self._held = None  # changed back: what was said last is true again (the counters tell the rest)
        elif ticks_diff(ticks_ms(), self._said_up if held else self._said_down) >= self.quiet_ms:
            if held:
                self._say(True, "MQTT connected again to %s:%d (%d losses so far)" % (self.host, self.port,
                                                                                       self.losses))
            else:
                self._say(False, "MQTT still down (%s; %d losses so far): reconnecting, CAN output goes on"
                          % (self.why or "reconnecting", self.losses))

    async def _gate(self):
        """Before every connection attempt (mqtt_as calls it as wifi_connect):
        Wi-Fi up (bounded wait), the back-off, the one DNS lookup."""
        if not await self.net.wifi.wait_up(WIFI_WAIT_MS):
            self.why = "Wi-Fi down"
            raise OSError(-1, "Wi-Fi down")
        n = self._tries
        self._tries += 1
        if n:
            self.failures += 1  # the attempt before this one did not connect
        b = self.backoff
        wait = b[n if n < len(b) else -1]
        if wait:
            await sleep_ms(wait)
        if not self._resolved:
            try:
                import socket
            except ImportError:  # a port without sockets (the tests' webassembly): the client's business
                socket = None
            # blocks the interpreter while the DNS server answers (an IP
            # address resolves at once); mqtt_as then gets the address and
            # never looks the name up again
            try:
                addr = socket.getaddrinfo(self.host, self.port)[0][-1] if socket else None
            except OSError as e:
                self.why = "DNS lookup of %s failed: %r" % (self.host, e)
                raise
            if isinstance(addr, tuple):  # the ESP32's ("a.b.c.d", port); the unix port's is raw bytes
                self.client.server = addr[0]
            self._resolved = True

    # -- the task ---------------------------------------------------------

    async def run(self):
        c = self.client
        while not self._ever:
            self.why = ""  # the gate says why (Wi-Fi, DNS), else the exception does
            try:
                await c.connect()
                self._ever = True
            except OSError as e:
                if not self.why:
                    self.why = "no connection: %r" % (e,)
                now = ticks_ms()
                if self._said_fail is None or ticks_diff(now, self._said_fail) >= FAIL_QUIET_MS:
                    self._said_fail = now
                    self.st.events.emit(E.NET_WARN, "MQTT: no connection to %s:%d (%s), retrying with back-off"
                                        % (self.host, self.port, self.why))
                await sleep_ms(self.idle_ms)
        while True:
            now = ticks_ms()
            self._catch_up()
            if c.isconnected():
                # self.connected: the client's connect callback has run (online first)
                if self.connected and await self._serve(now):
                    continue  # a discovery message went: the next one after GAP_MS
            elif ticks_diff(now, self._due) >= 0:
                self.skipped += 1  # dropped, never queued: the next state is newer
                self._due = ticks_add(now, self.interval_ms)
            await sleep_ms(self.idle_ms)

    async def _pub(self, topic, msg, retain=False):
        if not self.client.isconnected():
            return False  # went down during this turn: never await mqtt_as while it is down
        try:
            await self.client.publish(topic, msg, retain, 0)
        except OSError:
            return False  # the link went down: mqtt_as reconnects, _link() says so
        self.published += 1
        return True

    def _discover(self, full):
        cells, temps = self.ha.layout(self.st.snap)
        self._disc = self.ha.configs(self.cfg, self.net.device_id, cells, temps, self._cells, self._temps, full)
        self._cells, self._temps = cells, temps

    async def _serve(self, now):
        """One turn while connected; True when a discovery message was sent."""
        st = self.st
        if self._new:
            self._new = False
            if not await self._pub(self.avail, "online", True):
                return False
            if self.ha is not None:
                try:
                    await self.client.subscribe(self.ha_status, 0)
                except OSError:
                    return False
                self._discover(True)
                # the entities first: the state goes when the round ends (or after a period)
                self._due = ticks_add(now, self.interval_ms)
        if self._birth:
            self._birth = False
            self._discover(True)  # HA restarted and forgot the non-retained state: all again
        if ticks_diff(now, self._due) >= 0:
            # a late turn does not make the next one early
            self._due = ticks_add(now, self.interval_ms)
            text = T.state(st, now)
            self.state_bytes = len(text)
            if not await self._pub(self.base + "/state", text):
                return False
            text = None
            if len(st.packs) > 1:
                for i in range(len(st.packs)):
                    if not await self._pub("%s/pack/%d/state" % (self.base, i + 1), T.pack(st, i, now)):
                        return False
            if self.ha is not None and self._disc is None and self.ha.layout(st.snap) != (self._cells, self._temps):
                self._discover(False)  # a new cell count or sensor: only what changed
        if self._disc is not None:
            try:
                topic, payload = next(self._disc)
            except StopIteration:
                self._disc = None
                self._due = now  # the entities get their values at once
                return False
            if await self._pub(topic, payload, True):
                self.disc_sent += 1
            await sleep_ms(self.gap_ms)
            return True
        await self._events()
        return False

    async def _events(self):
        ev = self.st.events
        n = ev.count
        if n == self._ev_next:
            return
        kept = ev.recent()
        first = n - len(kept)
        if self._ev_next < first:
            self.ev_dropped += first - self._ev_next
            self._ev_next = first
        for k in range(self._ev_next - first, len(kept)):
            t, code, arg = kept[k]
            if code == E.SUMMARY:
                # the console's periodic status line: what the state topic carries in full; as
                # an event it would bury the real ones (Home Assistant's "Last event")
                self._ev_next += 1
                continue
            # retained: the last event stays on the broker, so Home Assistant's "Last event" has a
            # value from its start (events are rare) and after a restart
            if not await self._pub(self.base + "/event", _text(ev.text(code, arg)), True):
                return
            self._ev_next += 1
            self.ev_sent += 1

    def lines(self, now):
        s = ticks_diff(now, self.since_ms) // 1000
        if self.connected:
            head = "MQTT %s:%d connected for %d s as %s" % (self.host, self.port, s, self.client_id)
        else:
            head = "MQTT %s:%d DOWN for %d s (%s)" % (self.host, self.port, s, self.why or "reconnecting")
        return [head, "  published %d (state %d bytes, every %d s), skipped while down %d, connects %d, losses %d, "
                "failed attempts %d" % (self.published, self.state_bytes, self.interval_ms // 1000, self.skipped,
                                        self.connects, self.losses, self.failures),
                "  discovery %s: sent %d, HA restarts %d; events sent %d, dropped %d" % (
                    "on" if self.ha is not None else "off", self.disc_sent, self.births, self.ev_sent,
                    self.ev_dropped)]
