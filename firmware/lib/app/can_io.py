# CAN side of the gateway: sends the protocol's frame set every period and
# hands what the inverter sends back to the protocol (docs/design.md "CAN").
#
# What is sent is decided by charge.policy alone; this module only keeps the
# cadence. The frame set is queued in software and fed to the controller as
# its TX buffers free (the MCP2515 has three for a set of six), within the
# period; a send never blocks. At the next burst whatever of the previous
# set is still waiting -- in the software queue or in the controller, e.g.
# while nobody acknowledges -- is cancelled and counted: a frame never
# reaches the bus more than one period late, so an inverter that comes back
# never gets a stale set first. Bus-off is recovered with back-off
# (canport.base.BusOffRecovery); a missing inverter is only reported
# (InverterLink).

import gc

from compat import sleep_ms, ticks_add, ticks_diff, ticks_ms
from protocols.base import RX_COMMAND, RX_HEARTBEAT, RX_REQUEST
from sources.base import FRESH

_RX_POLL_MS = 10
_PUMP_MS = 2  # while frames of the set wait for a free TX buffer
# frames taken per receive pass: a flood is cut into slices with a yield in
# between, so the transmitter keeps its cadence (what is not taken waits in
# the controller, which counts what it has to drop)
RX_BATCH = 16
# window for the age of the BMS data in each burst: above the reply jitter
# (10-40 ms), well below the period
_AGE_LOW_MS = 75
_AGE_HIGH_MS = 150
# an inverter command we do not carry out (RX_COMMAND) is reported at most
# this often: an inverter repeating it every second must not flood the events
_COMMAND_REPORT_MS = 60000


class InverterLink:
    """The inverter's heartbeat: only diagnostics. Some inverters pause for
    seconds (Deye at midnight), so silence is reported, never acted on.
    notify(silent) is called when silence is first seen and when the
    heartbeat returns."""

    def __init__(self, timeout_ms, now, notify=None):
        self.timeout_ms = timeout_ms
        self.started_ms = now
        self.notify = notify
        self.count = 0
        self.last_ms = 0
        self.min_gap = 0
        self.max_gap = 0
        self.was_silent = False

    def heartbeat(self, now):
        if self.count:
            gap = ticks_diff(now, self.last_ms)
            if self.count == 1 or gap < self.min_gap:
                self.min_gap = gap
            if gap > self.max_gap:
                self.max_gap = gap
        self.count += 1
        self.last_ms = now
        if self.was_silent:
            self.was_silent = False
            if self.notify is not None:
                self.notify(False)

    def silent(self, now):
        """True when no heartbeat came for timeout_ms (counted from start
        when none ever came)."""
        ref = self.last_ms if self.count else self.started_ms
        s = ticks_diff(now, ref) > self.timeout_ms
        if s and not self.was_silent:
            self.was_silent = True
            if self.notify is not None:
                self.notify(True)
        return s


class CanTx:
    def __init__(self, can, recovery, cfg, snap, fresh, policy, enc, phase_age=None):
        self.can = can
        self.recovery = recovery
        self.snap = snap
        self.fresh = fresh
        # the age the bursts lock onto: of the newest data, or with several
        # packs the time since the last full bus cycle (charge.battery)
        self.phase_age = phase_age or fresh.age_ms
        self.policy = policy
        self.enc = enc
        self.period_ms = enc.period_ms or cfg["can_period_ms"]
        self.poll_ms = cfg["bms_poll_ms"]
        now = ticks_ms()
        self.inverter = InverterLink((cfg["inverter_timeout_s"] or enc.SILENT_S) * 1000, now)
        self.requests = 0  # RX_REQUEST frames received
        self.answered = 0  # ... answered with a set at once (at most one per half period)
        self._gc_answered = 0  # answered sets already followed by a collection
        self.due = now  # when run_tx starts the next burst
        self.commands = 0  # RX_COMMAND frames (reported, never carried out)
        self.command_ms = 0
        self.on_command = None  # called with enc.command, at most once per _COMMAND_REPORT_MS
        self.tx_heartbeat_ms = now
        self.rx_heartbeat_ms = now
        self.sent_ms = 0  # time of the last burst
        self.bursts = 0
        self.sent = 0
        self.tx_full = 0  # frames of a set not handed to the controller within its period
        self.tx_cancelled = 0  # TX buffers withdrawn at a burst (frames still waiting are aborted)
        self.tx_errors = 0
        self.rx_frames = 0
        self._rx = [0, memoryview(bytearray(8)), 0, 0]
        self._next = len(enc.ids)  # next frame of the current set to hand over (= len: none waiting)
        self._slots = 0  # bit i: TX buffer i took a frame of the current set (cancelled at the next burst)

    def _flush(self):
        """Withdraw what is left of the previous set: never sent late."""
        left = len(self.enc.ids) - self._next
        if left > 0:
            self.tx_full += left
        self._next = len(self.enc.ids)
        slots = self._slots
        i = 0
        while slots:
            if slots & 1:
                try:
                    self.can.cancel_send(i)  # a no-op for a buffer already sent
                    self.tx_cancelled += 1
                except (OSError, ValueError):
                    pass  # bus-off or a lost controller: recovery restarts it (dropping its queue)
            slots >>= 1
            i += 1
        self._slots = 0

    def pump(self):
        """Hand waiting frames of the set to the controller while it takes
        them; returns how many went."""
        ids = self.enc.ids
        frames = self.enc.frames
        n = 0
        while self._next < len(ids):
            i = self._next
            try:
                slot = self.can.send(ids[i], frames[i])
            except OSError:
                self.tx_errors += 1  # bus-off: recovery.poll() restarts the controller
                self.tx_full += len(ids) - i
                self._next = len(ids)
                break
            if slot is None:
                break  # all TX buffers busy: again in a moment
            self._slots |= 1 << slot
            self._next = i + 1
            n += 1
        self.sent += n
        return n

    def pending(self):
        return self._next < len(self.enc.ids)

    def burst(self, now):
        """Start one frame set if the policy allows; returns the frames handed
        to the controller at once (the rest follow through pump())."""
        self._flush()
        snap = self.snap
        if not self.policy.decide(snap, self.fresh.state(now), now):
            return 0
        lim = self.policy.lim
        self.enc.encode(snap, lim, lim.flags)
        self._next = 0
        self.bursts += 1
        self.sent_ms = now
        return self.pump()

    def phase_step(self, now, period):
        """Nudge (ms) for the next burst so that it follows the BMS poll by
        _AGE_LOW_MS.._AGE_HIGH_MS: with equal periods the frames then carry
        data well under 200 ms old instead of up to a whole period. At most
        period/20 per burst, so the cadence stays within 5 %; off when the
        periods differ (no fixed phase to lock onto) or the data is not fresh."""
        if self.poll_ms != period or self.fresh.state(now) != FRESH:
            return 0
        age = self.phase_age(now)
        if age < 0:
            return 0  # nothing to lock onto (a bus cycle longer than its period)
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

    def _answer(self, now):
        """A query / response protocol asked for the set: it goes now, unless
        one went less than half a period ago. The periodic bursts are only
        the fallback for queries that stop: the next is 1.5 periods after the
        last query, so it never runs just ahead of the next query (which
        would then find a set too recent to answer)."""
        period = self.period_ms
        self.due = ticks_add(now, period + period // 2)
        if self.bursts and ticks_diff(now, self.sent_ms) < period // 2:
            return
        n = self.bursts
        self.burst(now)
        if self.bursts != n:  # the policy let a set go (not before the first data, not "stop")
            self.answered += 1

    def receive(self, now):
        """Take at most RX_BATCH received frames; returns how many."""
        k = 0
        rx = self._rx
        while k < RX_BATCH:
            r = self.can.recv(rx)
            if r is None:
                return k
            k += 1
            self.rx_frames += 1
            code = self.enc.on_rx(r[0], r[1], len(r[1]), r[2])
            if code == RX_HEARTBEAT or code == RX_REQUEST:
                self.inverter.heartbeat(now)
                if code == RX_REQUEST:
                    self.requests += 1
                    self._answer(now)
            elif code == RX_COMMAND:
                first = not self.commands
                self.commands += 1
                if first or ticks_diff(now, self.command_ms) >= _COMMAND_REPORT_MS:
                    self.command_ms = now
                    if self.on_command is not None:
                        self.on_command(self.enc.command)
        return k

    async def run_tx(self):
        period = self.period_ms
        self.due = ticks_ms()
        while True:
            now = ticks_ms()
            self.tx_heartbeat_ms = now
            if ticks_diff(now, self.due) >= 0:
                self.burst(now)
                self.recovery.poll(now)  # bus-off / stopped -> restart with back-off
                due = ticks_add(self.due, period + self.phase_step(now, period))
                if ticks_diff(now, due) > 0:  # fell behind (console, GC): no catch-up burst
                    due = ticks_add(now, period)
                self.due = due
                gc.collect()  # here, right after a burst: never inside the send path
            elif self.pending():
                self.pump()
            wait = ticks_diff(self.due, ticks_ms())
            if self.pending() and wait > _PUMP_MS:
                wait = _PUMP_MS
            await sleep_ms(wait if wait > 0 else 0)

    async def run_rx(self):
        while True:
            now = ticks_ms()
            self.rx_heartbeat_ms = now
            self.receive(now)
            self.after_receive()
            await sleep_ms(_RX_POLL_MS)

    def after_receive(self):
        """The rest of a set answered from receive() (run_tx may sleep), and
        once it is all handed over the garbage collection run_tx does after
        its own bursts (whose place a query protocol's answers take).
        Returns True when it collected."""
        if self.pending():
            self.pump()
            return False
        if self.answered == self._gc_answered:
            return False
        self._gc_answered = self.answered
        gc.collect()
        return True
