# The Source contract: one object per BMS link (a UART slave, later a BLE
# connection) that keeps one PackSnapshot filled. The app only ever sees
# this interface, so a new transport or BMS protocol is a new module here
# (docs/design.md "Sources"):
#
#   src.name             short label for the console ("jk-pb@1", ...)
#   src.snap             the PackSnapshot it fills in place
#   src.fresh            Freshness of that snapshot (per source)
#   src.heartbeat_ms     last time its task made progress (watchdog)
#   src.polls_ok, timeouts, decode_errors, exceptions, last_error
#   src.resync_bytes()   noise skipped by its frame extractors
#   src.raw, raw_len     the last accepted frame, for the console
#   await src.run()      its task: poll / listen forever
#
# Freshness: WAIT until the first complete valid data set, FRESH while the
# newest one is younger than the timeout, then STALE -- and STALE is latched
# until new data arrives. ticks_diff() on the 30-bit tick counter wraps after
# 2**29 ms (6.2 days): without the latch an unplugged BMS would read fresh
# again a week later (docs/charge-control.md "Link loss").

from compat import ticks_diff, ticks_ms
from pack import snapshot as S

WAIT = 0
FRESH = 1
STALE = 2
STATE_NAMES = ("waiting for first BMS data", "fresh", "STALE")
AGE_UNKNOWN = -2  # stale for longer than the tick counter can tell


class Freshness:
    """notify(old, new) is called on every change of state, at the moment it
    is seen: data_ok() makes data fresh at once; staleness is seen by the
    first state() call after the timeout (the CAN burst asks every period)."""

    def __init__(self, timeout_ms, notify=None):
        self.timeout_ms = timeout_ms
        self.notify = notify
        self.have_data = False
        self.data_ms = 0
        self.stale = False

    def _changed(self, old, new):
        if self.notify is not None:
            self.notify(old, new)

    def data_ok(self, stamp, now=None):
        """A complete, valid data set dated stamp (the send time of the
        request it answers) was accepted at now. Data already too old when it
        arrives changes nothing: it never makes a stale link fresh."""
        if now is not None:
            age = ticks_diff(now, stamp)
            if age < 0 or age > self.timeout_ms:
                return
        old = STALE if self.stale else (FRESH if self.have_data else WAIT)
        self.have_data = True
        self.data_ms = stamp
        self.stale = False
        if old != FRESH:
            self._changed(old, FRESH)

    def state(self, now):
        if not self.have_data:
            return WAIT
        if not self.stale:
            age = ticks_diff(now, self.data_ms)
            # a negative age is a wrapped counter (or a clock jump): not fresh
            if age < 0 or age > self.timeout_ms:
                self.stale = True
                self._changed(FRESH, STALE)
        return STALE if self.stale else FRESH

    def age_ms(self, now):
        """Age of the newest data (ms), -1 without data, AGE_UNKNOWN when the
        outage is too long for the tick counter."""
        if not self.have_data:
            return -1
        age = ticks_diff(now, self.data_ms)
        if self.state(now) == STALE and age <= self.timeout_ms:
            return AGE_UNKNOWN
        return age


class Source:
    def __init__(self, name, cfg, snap, log, raw=None):
        self.name = name
        self.cfg = cfg
        self.snap = snap
        self.log = log
        self.fresh = Freshness(cfg["bms_timeout_s"] * 1000)
        self.heartbeat_ms = ticks_ms()
        self.polls_ok = 0
        self.timeouts = 0
        self.decode_errors = 0
        self.exceptions = 0
        self.last_error = ""
        # last accepted BMS frame, for the console; the packs on one bus share
        # one buffer (512 B each would cost 8 KB for 16 packs)
        self.raw = raw if raw is not None else bytearray(512)
        self.raw_len = 0

    def resync_bytes(self):
        return 0

    def complete(self):
        """Live data AND the BMS settings: what the inverter side needs."""
        s = self.snap
        return (s.have & S.HAVE_FOR_INVERTER) == S.HAVE_FOR_INVERTER and s.settings_ok == 1

    def accepted(self, stamp):
        """Call after every successful poll, with the live data's date."""
        self.polls_ok += 1
        if self.complete():
            self.fresh.data_ok(stamp, ticks_ms())

    def keep_raw(self, src, n):
        k = n if n < len(self.raw) else len(self.raw)
        raw = self.raw
        for i in range(k):
            raw[i] = src[i]
        self.raw_len = k

    async def run(self):
        raise NotImplementedError
