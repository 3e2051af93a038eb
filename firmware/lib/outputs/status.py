# The status model: the one place every output (the console, MQTT, the web
# page, InfluxDB) reads the gateway's telemetry from, so no output
# reaches into the tasks (docs/design.md "Outputs"). The composition root
# (app.gateway) builds it; its attributes are the live objects:
#   packs    the BMS sources, one per pack (sources.base contract: snap,
#            fresh, counters); source = the first (the only one unless
#            several packs are configured)
#   links    the tasks that read them (a source itself, sources.pb_bus,
#            sources.jk_listen): name, heartbeat_ms, optional link_text()
#   battery  charge.battery.Battery with several packs, else None
#   link     what says whether the data is fresh: the source's Freshness,
#            or the battery (state(now), age_ms(now))
#   snap     the snapshot the limits are decided on (the pack's, or the
#            battery's aggregate)
#   policy   charge.policy.ChargePolicy (lim: the limits last decided)
#   tx       app.can_io.CanTx (counters, enc, inverter)
#   can, recovery, events, cfg, store
#   pending  config changes made (console set, web page) that apply at the
#            next boot: key -> value
#   net      net.hub.Net with the network outputs (wifi_ssid set), else None
# The methods derive what several outputs need.

import gc

from compat import ticks_diff, ticks_ms
from sources.base import AGE_UNKNOWN, STATE_NAMES

# canport.base STATE_* values 0..4
_CAN_STATES = ("stopped", "active", "warning", "error-passive", "BUS-OFF")


class Status:
    def __init__(self, cfg, packs, links, battery, link, snap, policy, tx, can, recovery, events):
        self.cfg = cfg
        self.packs = packs
        self.links = links
        self.battery = battery
        self.link = link
        self.snap = snap
        self.policy = policy
        self.lim = policy.lim
        self.tx = tx
        self.can = can
        self.recovery = recovery
        self.events = events
        self.store = None  # app.storage.FileStore: the charge memory is written here
        self.started_ms = ticks_ms()
        self.task_restarts = 0
        self.restart_wait_ms = 0  # the supervisor's last restart wait
        self.wdt_starved = ""  # name of the task that stopped the watchdog feed
        self.pending = {}
        self.net = None

    def now(self):
        """The outputs' clock (tests of the outputs replace it)."""
        return ticks_ms()

    @property
    def source(self):
        p = self.packs
        return p[0] if p else None

    def bms_state(self, now):
        return self.link.state(now)

    def age_text(self, now, age=None):
        if age is None:
            age = self.link.age_ms(now)
        if age == AGE_UNKNOWN:
            return "> 6 days"
        return ("%d ms" % age) if age >= 0 else "-"

    def can_state_name(self):
        s = self.recovery.state
        return _CAN_STATES[s] if 0 <= s < len(_CAN_STATES) else "state %d" % s

    def uptime_s(self, now):
        return ticks_diff(now, self.started_ms) // 1000

    def free_heap(self):
        return ("%d bytes" % gc.mem_free()) if hasattr(gc, "mem_free") else "n/a"

    def summary(self, now=None):
        """One line: BMS link, data age and the sources' counters."""
        if now is None:
            now = self.now()
        if self.battery is not None:
            from app.packs import summary  # loaded with several packs only
            return summary(self, now)
        src = self.source
        return "BMS: %s (%s), data age %s, polls ok %d, timeouts %d, bad frames %d, exceptions %d, " \
            "resync bytes %d" % (STATE_NAMES[self.bms_state(now)], src.name, self.age_text(now), src.polls_ok,
                                 src.timeouts, src.decode_errors, src.exceptions, src.resync_bytes())
