# CAN side of the gateway: sends the inverter frame set every period and
# records what the inverter sends back (0x305).
#
# Rules (spec/charge-control.md 7-8): nothing is sent before the first
# complete valid BMS data set; stale BMS data is sent with CCL = DCL = 0 and
# the system-error / communication alarm bits ("zeros"), or not at all
# ("stop"), as configured; a send never blocks (a full queue just counts);
# bus-off is recovered with back-off; a missing inverter is only reported.

import gc

from gateway.clock import sleep_ms, ticks_add, ticks_diff, ticks_ms
from gateway import link as L
from inverter import pylontech
from pack import limits

_RX_POLL_MS = 10
# window for the age of the BMS data in each burst: above the reply jitter
# (10-40 ms), well below the period
_AGE_LOW_MS = 75
_AGE_HIGH_MS = 150


class CanTx:
    def __init__(self, can, recovery, cfg, snap, link, log):
        self.can = can
        self.recovery = recovery
        self.cfg = cfg
        self.snap = snap
        self.link = link
        self.log = log
        self.enc = pylontech.PylonEncoder(cfg["battery_name"], cfg["modules"])
        self.lim = limits.Limits()
        self.lcfg = limits.LimitConfig()
        self.lcfg.bulk_cell_mv = cfg["bulk_cell_mv"]
        self.lcfg.max_charge_da = cfg["max_charge_a"] * 10
        self.lcfg.max_discharge_da = cfg["max_discharge_a"] * 10
        self.tx_heartbeat_ms = ticks_ms()
        self.rx_heartbeat_ms = ticks_ms()
        self.started_ms = ticks_ms()
        self.sent_ms = 0  # time of the last burst
        self.bursts = 0
        self.sent = 0
        self.tx_full = 0
        self.tx_errors = 0
        self.rx_frames = 0
        self.link_lost = False  # last burst was sent as "stale"
        self.stopped = False  # "stop" policy active
        self._rx = [0, memoryview(bytearray(8)), 0, 0]

    def burst(self, now):
        """Send one frame set if the link state allows; returns frames sent."""
        state = self.link.bms_state(now)
        if state == L.WAIT:
            return 0
        stale = state == L.STALE
        self.link_lost = stale
        if stale and self.cfg["link_loss"] == "stop":
            self.stopped = True
            return 0
        self.stopped = False
        limits.compute(self.snap, self.lcfg, self.lim)
        self.enc.encode(self.snap, self.lim, stale)
        ids = self.enc.ids
        frames = self.enc.frames
        n = 0
        for i in range(len(ids)):
            try:
                if self.can.send(ids[i], frames[i]) is None:
                    self.tx_full += 1
                else:
                    n += 1
            except OSError:
                self.tx_errors += 1  # bus-off: recovery() restarts the controller
                break
        self.sent += n
        self.bursts += 1
        self.sent_ms = now
        return n

    def phase_step(self, now, period):
        """Nudge (ms) for the next burst so that it follows the BMS poll by
        _AGE_LOW_MS.._AGE_HIGH_MS: with equal periods the frames then carry
        data well under 200 ms old instead of up to a whole period. At most
        period/20 per burst, so the cadence stays within 5 %; off when the
        periods differ (no fixed phase to lock onto) or the data is not fresh."""
        if self.cfg["bms_poll_ms"] != period or self.link.bms_state(now) != L.FRESH:
            return 0
        age = self.link.age_ms(now)
        limit = period // 20
        if age > period // 2:  # the data lands just after our bursts: go later
            step = period - age + _AGE_LOW_MS
        elif age < _AGE_LOW_MS:  # too close behind the data (reply jitter): go later
            step = _AGE_LOW_MS - age
        elif age > _AGE_HIGH_MS:  # the data waits long for our burst: go earlier
            step = _AGE_HIGH_MS - age
        else:
            return 0
        return limit if step > limit else (-limit if step < -limit else step)

    def receive(self, now):
        """Drain received frames; returns how many there were."""
        k = 0
        while True:
            r = self.can.recv(self._rx)
            if r is None:
                return k
            k += 1
            self.rx_frames += 1
            if r[0] == pylontech.ID_INVERTER:
                self.link.heartbeat(now)

    async def run_tx(self):
        period = self.cfg["can_period_ms"]
        due = ticks_ms()
        while True:
            now = ticks_ms()
            self.tx_heartbeat_ms = now
            if ticks_diff(now, due) >= 0:
                self.burst(now)
                self.recovery.poll(now)  # bus-off / stopped -> restart with back-off
                due = ticks_add(due, period + self.phase_step(now, period))
                if ticks_diff(now, due) > 0:  # fell behind (console, GC): no catch-up burst
                    due = ticks_add(now, period)
                gc.collect()  # here, right after a burst: never inside the send path
            wait = ticks_diff(due, ticks_ms())
            await sleep_ms(wait if wait > 0 else 0)

    async def run_rx(self):
        while True:
            now = ticks_ms()
            self.rx_heartbeat_ms = now
            self.receive(now)
            await sleep_ms(_RX_POLL_MS)
