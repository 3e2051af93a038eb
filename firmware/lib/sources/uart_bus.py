# One BMS UART shared by the sources that poll over it. The UART is any
# object with non-blocking write(buf) and readinto(buf) -> count or None
# (machine.UART with timeout=0 on the ESP32, a socket adapter on the host).
#
# Modbus RTU and 4E 57 have no transaction ids, so a reply that comes after
# its timeout would be taken for the reply to the next request: a slow BMS
# would count as fresh, and the late reply to one FC03 read could land at
# the offset of the next read of the same size. So after a timeout, whatever
# arrives during _LATE_FACTOR reply times is read and thrown away before the
# next request goes out (docs/jk-bms.md "Polling").

from codec.errors import DecodeError
from compat import sleep_ms, ticks_add, ticks_diff, ticks_ms

_GAP_MS = 100  # JK-PB: keep >= 100 ms between requests
_RX_POLL_MS = 5
_LATE_FACTOR = 3

NO_REPLY = "no reply from the BMS"
GARBLED = "bytes received but no valid frame (baud rate? address?)"


class UartBus:
    def __init__(self, uart, reply_ms, retries):
        self.uart = uart
        self.reply_ms = reply_ms
        self.retries = retries
        self.rx = bytearray(256)
        self.rx_bytes = 0  # bytes received in the last exchange's reply window

    def _drain(self):
        # discard whatever arrived outside an exchange (late replies, noise)
        while True:
            n = self.uart.readinto(self.rx)
            if not n:
                return

    async def exchange(self, src, request, feed, done):
        """Send request, feed replies to feed(buf, n) until done() is true or
        the reply time is up. True on success; src.heartbeat_ms is kept
        current meanwhile."""
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
                    return True
            elif ticks_diff(ticks_ms(), t0) > self.reply_ms:
                await self._discard_late(src)
                return False
            src.heartbeat_ms = ticks_ms()
            await sleep_ms(_RX_POLL_MS)

    async def _discard_late(self, src):
        t0 = ticks_ms()
        wait = _LATE_FACTOR * self.reply_ms
        while ticks_diff(ticks_ms(), t0) < wait:
            self._drain()
            src.heartbeat_ms = ticks_ms()
            await sleep_ms(_RX_POLL_MS)
        self._drain()

    async def retrying(self, src, fn, arg):
        """await fn(arg) until it returns True, at most 1 + retries times;
        every failure is counted on src with its reason."""
        for _ in range(self.retries + 1):
            try:
                if await fn(arg):
                    return True
                src.timeouts += 1
                src.last_error = GARBLED if self.rx_bytes else NO_REPLY
            except DecodeError as e:
                # modbus.rtu.ModbusExceptionReply carries .code (not imported
                # here: a 4E 57 bus needs no Modbus code in RAM)
                if hasattr(e, "code"):
                    src.exceptions += 1
                else:
                    src.decode_errors += 1
                src.last_error = e.args[0]
            await sleep_ms(_GAP_MS)
        return False

    async def gap(self):
        await sleep_ms(_GAP_MS)


async def poll_forever(src, period):
    """Poll on a fixed schedule (not "period after the last poll"): keeps a
    constant phase to the CAN bursts, which app.can_io locks onto."""
    due = ticks_ms()
    while True:
        src.heartbeat_ms = ticks_ms()
        await src.poll_once()
        now = ticks_ms()
        src.heartbeat_ms = now
        due = ticks_add(due, period)
        if ticks_diff(due, now) < _GAP_MS:  # a slow poll: never hammer the BMS
            due = ticks_add(now, _GAP_MS)
        await sleep_ms(ticks_diff(due, now))
