# Link supervision, pure logic with injected time (ms ticks):
# * BMS data age: WAIT until the first complete valid data set, FRESH while
#   the newest accepted data is younger than bms_timeout, STALE after that --
#   and back to FRESH as soon as data returns. Stale data is never sent as
#   fresh (spec/charge-control.md 7.1, 8.4).
# * Inverter heartbeat (0x305): only diagnostics. Some inverters pause for
#   seconds (Deye at midnight), so silence is reported, never acted on.

from gateway.clock import ticks_diff

WAIT = 0
FRESH = 1
STALE = 2
STATE_NAMES = ("waiting for first BMS data", "fresh", "STALE")


class LinkMonitor:
    def __init__(self, bms_timeout_ms, inverter_timeout_ms):
        self.bms_timeout_ms = bms_timeout_ms
        self.inverter_timeout_ms = inverter_timeout_ms
        self.have_data = False
        self.data_ms = 0
        self.hb_count = 0
        self.hb_ms = 0
        self.hb_min_gap = 0
        self.hb_max_gap = 0
        self.silent = False  # inverter silent (as last reported)

    def data_ok(self, now):
        """A complete, valid BMS data set was accepted at now."""
        self.have_data = True
        self.data_ms = now

    def age_ms(self, now):
        return ticks_diff(now, self.data_ms) if self.have_data else -1

    def bms_state(self, now):
        if not self.have_data:
            return WAIT
        return FRESH if ticks_diff(now, self.data_ms) <= self.bms_timeout_ms else STALE

    def heartbeat(self, now):
        if self.hb_count:
            gap = ticks_diff(now, self.hb_ms)
            if self.hb_count == 1 or gap < self.hb_min_gap:
                self.hb_min_gap = gap
            if gap > self.hb_max_gap:
                self.hb_max_gap = gap
        self.hb_count += 1
        self.hb_ms = now

    def inverter_silent(self, now, started_ms):
        """True when no 0x305 came for inverter_timeout (counted from start
        when none ever came)."""
        ref = self.hb_ms if self.hb_count else started_ms
        return ticks_diff(now, ref) > self.inverter_timeout_ms
