# One BMS UART shared by the sources that poll over it. The UART is any
# object with non-blocking write(buf) and readinto(buf) -> count or None
# (machine.UART with timeout=0 on the ESP32, a socket adapter on the host).
#
# Every poll has a budget: its period. Attempts (and retries) start only
# while a whole reply time is left, so only the drain after a timeout can run
# past it, and with poll + (2 + LATE_FACTOR) x reply + gap <= the stale
# timeout (app.config) one lost poll never makes the data stale
# (docs/jk-bms.md "Polling").
#
# Modbus RTU and 4E 57 have no transaction ids, so a reply that comes after
# its timeout could be taken for the reply to the next request. A reply must
# match the request (the sources check function, register and frame type),
# and whatever arrives after a timeout, or before the next request, is
# drained for LATE_FACTOR reply times. An accepted reply is dated with its
# request's send time, not its arrival. A reply later than the drain window
# can still land in a later request's window: see docs/jk-bms.md "Polling"
# for that limit.

from codec.errors import DecodeError
from compat import sleep_ms, ticks_add, ticks_diff, ticks_ms

GAP_MS = 100  # JK-PB: keep >= 100 ms between requests
_RX_POLL_MS = 5
# 5: a BMS answering 2.2-2.6 s late with the default 500 ms reply time is
# drained (0.5 s + 2.5 s), not taken for the next request's answer
LATE_FACTOR = 5

NO_REPLY = "no reply from the BMS"
GARBLED = "bytes received but no valid frame (baud rate? address?)"


class UartBus:
    def __init__(self, uart, reply_ms, retries, gap_ms=GAP_MS):
        self.uart = uart
        self.reply_ms = reply_ms
        self.retries = retries
        self.gap_ms = gap_ms
        self.rx = bytearray(256)
        self.beat_ms = ticks_ms()  # last progress of whichever source uses the bus
        self.sniff = None  # fn(buf, n): sees the bytes drained outside our exchanges
        self.pb = None  # buffers the JK-PB packs on this bus share (sources.jk_pb)
        # reply times drained after a timeout; sources.pb_bus lowers it for a
        # bus of several packs, whose replies name their pack
        self.late = LATE_FACTOR
        self.rx_bytes = 0  # bytes received in the last exchange's reply window
        self.deadline = ticks_ms()  # end of the current poll's budget
        self.stamp_ms = 0  # send time the last accepted reply is dated with

    def begin_poll(self, period_ms):
        """Start a poll that must be over before the next one, period_ms on
        (less the gap the BMS needs between requests)."""
        self.deadline = ticks_add(ticks_ms(), period_ms - self.gap_ms)

    def time_left(self, extra=0):
        """True while one more attempt (after extra ms) fits the poll's budget."""
        return ticks_diff(self.deadline, ticks_ms()) >= self.reply_ms + extra

    def _drain(self):
        # discard whatever arrived outside an exchange (late replies, noise,
        # another master's traffic: sources.pb_bus looks at it through sniff)
        while True:
            n = self.uart.readinto(self.rx)
            if not n:
                return
            if self.sniff is not None:
                self.sniff(self.rx, n)

    def _beat(self, src):
        self.beat_ms = src.heartbeat_ms = ticks_ms()

    async def exchange(self, src, request, feed, done, late=0):
        """Send request, feed replies to feed(buf, n) until done() is true or
        the reply time is up, then drain late replies for late reply times.
        True on success (self.stamp_ms then dates the reply); src.heartbeat_ms
        is kept current meanwhile."""
        self._drain()
        self.uart.write(request)
        self.rx_bytes = 0
        t0 = ticks_ms()
        while True:
            n = self.uart.readinto(self.rx)
            if n:
                self.rx_bytes += n
                feed(self.rx, n)
                if done():
                    self.stamp_ms = t0
                    return True
            elif ticks_diff(ticks_ms(), t0) > self.reply_ms:
                await self._discard_late(src, late or self.late)
                return False
            self._beat(src)
            await sleep_ms(_RX_POLL_MS)

    async def _discard_late(self, src, late):
        # the whole drain window even past the poll's budget: a late reply
        # must not reach the next request (app.config's fit rule counts it)
        t0 = ticks_ms()
        wait = late * self.reply_ms
        while ticks_diff(ticks_ms(), t0) < wait:
            self._drain()
            self._beat(src)
            await sleep_ms(_RX_POLL_MS)
        self._drain()

    async def retrying(self, src, fn, arg, attempts=0):
        """await fn(arg) until it returns True, at most 1 + retries times (or
        attempts), retrying only while an attempt fits the poll's budget;
        every failure is counted on src with its reason."""
        for i in range(attempts or self.retries + 1):
            if i:  # the first attempt always goes; callers check the budget for optional reads
                if not self.time_left(self.gap_ms):
                    return False
                await sleep_ms(self.gap_ms)
            try:
                if await fn(arg):
                    return True
                src.timeouts += 1
                src.last_error = GARBLED if self.rx_bytes else NO_REPLY
                if not self.rx_bytes and self.late < LATE_FACTOR:
                    # with the short drain a late reply could land in the
                    # retry's window: a silent pack waits for its next turn
                    return False
            except DecodeError as e:
                # modbus.rtu.ModbusExceptionReply carries .code (not imported
                # here: a 4E 57 bus needs no Modbus code in RAM)
                if hasattr(e, "code"):
                    src.exceptions += 1
                else:
                    src.decode_errors += 1
                src.last_error = e.args[0]
        return False

    async def gap(self):
        await sleep_ms(self.gap_ms)


async def poll_forever(src, period):
    """Poll on a fixed schedule (not "period after the last poll"): keeps a
    constant phase to the CAN bursts, which app.can_io locks onto."""
    due = ticks_ms()
    gap = src.bus.gap_ms
    while True:
        src.heartbeat_ms = ticks_ms()
        await src.poll_once()
        now = ticks_ms()
        src.heartbeat_ms = now
        due = ticks_add(due, period)
        if ticks_diff(due, now) < gap:  # a slow poll: never hammer the BMS
            due = ticks_add(now, gap)
        await sleep_ms(ticks_diff(due, now))
