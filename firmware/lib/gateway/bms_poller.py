# BMS poller: asks the BMS for data over a UART and fills the pack snapshot.
#
# The UART is any object with non-blocking write(buf) and readinto(buf) ->
# count or None (machine.UART with timeout=0 on the ESP32, a socket adapter
# on the host). Replies are pulled out of the byte stream by the library's
# frame extractors, so noise, echoes and other slaves' traffic are skipped
# and the stream resynchronises by itself. Requests are built once; the
# steady-state poll allocates nothing but the exceptions of failed replies.

from codec.errors import DecodeError
from codec.stream import FrameExtractor
from gateway.clock import sleep_ms, ticks_add, ticks_diff, ticks_ms
from jkbms import cellinfo, devinfo, nw, settings
from jkbms import frame as J
from jkbms import pb_modbus as pb
from modbus import rtu
from pack import snapshot as S

_GAP_MS = 100  # JK-PB: keep >= 100 ms between requests (spec 4.7)
_RX_POLL_MS = 5
# After a reply timeout the answer may still come. Modbus RTU and 4E 57 have
# no transaction ids, so a late reply would be taken for the reply to the
# next request: a slow BMS would count as fresh, and the late reply to one
# FC03 read could be stored at the offset of the next read of the same size.
# So after a timeout, whatever arrives during this many reply times is read
# and thrown away before the next request goes out.
_LATE_FACTOR = 3


class BmsPoller:
    def __init__(self, uart, cfg, snap, link, log):
        self.uart = uart
        self.cfg = cfg
        self.snap = snap
        self.link = link
        self.log = log
        self.protocol = cfg["bms_protocol"]
        self.slave = cfg["bms_address"]
        self.rx = bytearray(256)
        self.raw = bytearray(512)  # last accepted BMS frame, for the console
        self.raw_len = 0
        self.device = None  # device-info dict (JK-PB), read once
        self.settings_ms = 0
        self.heartbeat_ms = ticks_ms()
        # counters
        self.polls_ok = 0
        self.timeouts = 0
        self.decode_errors = 0
        self.exceptions = 0
        self.last_error = ""
        buf = bytearray(16)
        self._req = {}
        if self.protocol == "jk-nw":
            self._req["all"] = bytes(nw.READ_ALL)
            self._x = FrameExtractor(nw.frame_len_at, 1024, nw.MAX_FRAME)
        else:
            for reg in (pb.TRIGGER_STATUS, pb.TRIGGER_SETTINGS, pb.TRIGGER_ABOUT):
                n = pb.build_trigger(buf, self.slave, reg)
                self._req[reg] = bytes(buf[:n])
            self._reply = pb.TriggerReply()
            self._x = FrameExtractor(rtu.frame_len_at, 512, rtu.MAX_FRAME)
            self._blocks = (pb.BlockImage(pb.STATUS_BASE, cellinfo.NEED_32S),
                            pb.BlockImage(pb.SETTINGS_BASE, settings.BLOCK_BYTES))
            self._block_reqs = []
            for image in self._blocks:
                reqs = []
                for reg, count in image.plan:
                    n = rtu.build_read(buf, self.slave, reg, count)
                    reqs.append(bytes(buf[:n]))
                self._block_reqs.append(reqs)

    @property
    def resync_bytes(self):
        n = self._x.dropped
        if self.protocol != "jk-nw":
            n += self._reply._x.dropped
        return n

    def _keep_raw(self, src, n):
        k = n if n < len(self.raw) else len(self.raw)
        for i in range(k):
            self.raw[i] = src[i]
        self.raw_len = k

    def _drain(self):
        # discard whatever arrived outside an exchange (late replies, noise)
        while True:
            n = self.uart.readinto(self.rx)
            if not n:
                return

    async def _exchange(self, request, feed, done):
        """Send request, feed replies to feed(buf, n) until done() is true or
        the reply time is up. True on success."""
        self._drain()
        self.uart.write(request)
        t0 = ticks_ms()
        while True:
            n = self.uart.readinto(self.rx)
            if n:
                feed(self.rx, n)
                if done():
                    return True
            elif ticks_diff(ticks_ms(), t0) > self.cfg["bms_reply_ms"]:
                await self._discard_late()
                return False
            self.heartbeat_ms = ticks_ms()
            await sleep_ms(_RX_POLL_MS)

    async def _discard_late(self):
        t0 = ticks_ms()
        wait = _LATE_FACTOR * self.cfg["bms_reply_ms"]
        while ticks_diff(ticks_ms(), t0) < wait:
            self._drain()
            self.heartbeat_ms = ticks_ms()
            await sleep_ms(_RX_POLL_MS)
        self._drain()

    def _fail(self, reason):
        self.last_error = reason

    async def _retrying(self, fn, arg):
        for _ in range(self.cfg["bms_retries"] + 1):
            try:
                if await fn(arg):
                    return True
                self.timeouts += 1
                self._fail("no reply from the BMS")
            except rtu.ModbusExceptionReply as e:
                self.exceptions += 1
                self._fail(e.args[0])
            except DecodeError as e:
                self.decode_errors += 1
                self._fail(e.args[0])
            await sleep_ms(_GAP_MS)
        return False

    # -- JK-PB, FC10 triggers -------------------------------------------------
    def _feed_reply(self, buf, n):
        self._reply.feed(buf, 0, n)

    async def _trigger(self, reg):
        r = self._reply
        r.start(self.slave, reg)
        if not await self._exchange(self._req[reg], self._feed_reply, r.poll):
            return False
        f = r.frame
        J.check_frame(f, J.FRAME_LEN)
        if reg == pb.TRIGGER_STATUS:
            cellinfo.decode(f, 6, J.LAYOUT_JK02_32S, self.snap)
        elif reg == pb.TRIGGER_SETTINGS:
            settings.decode(f, self.snap)
        else:
            self.device = devinfo.describe(f)
        self._keep_raw(f, J.FRAME_LEN)
        return True

    # -- JK-PB, FC03 register blocks --------------------------------------------
    def _feed_x(self, buf, n):
        self._x.feed(buf, 0, n)

    def _rtu_reply(self):
        x = self._x
        while True:
            n = x.next_frame()
            if not n:
                return False
            f = x.frame
            if f[0] == self.slave and (f[1] & 0x7F) == rtu.READ_HOLDING and n != 8:
                return True  # a reply (or exception) from our slave; 8 = our echo

    async def _read_block(self, which):
        image = self._blocks[which]
        image.reset()
        self._x.reset()
        for i in range(len(image.plan)):
            if not await self._exchange(self._block_reqs[which][i], self._feed_x, self._rtu_reply):
                return False
            image.store(image.plan[i][0], self._x.frame, self._x.frame_len, self.slave)
            await sleep_ms(_GAP_MS)
        if which == 0:
            cellinfo.decode(image.data, 0, J.LAYOUT_PB_FC03, self.snap)
        else:
            settings.decode(image.data, self.snap, 0, True)
        return True

    # -- JK-B/BD, 4E 57 ---------------------------------------------------------
    def _nw_done(self):
        return self._x.next_frame() > 0

    async def _read_all(self, _):
        self._x.reset()
        if not await self._exchange(self._req["all"], self._feed_x, self._nw_done):
            return False
        nw.decode(self._x.frame, self._x.frame_len, self.snap)
        self._keep_raw(self._x.frame, self._x.frame_len)
        return True

    # -- one poll ---------------------------------------------------------------
    def complete(self):
        """Live data AND the BMS settings: what the inverter side needs."""
        s = self.snap
        return (s.have & S.HAVE_FOR_INVERTER) == S.HAVE_FOR_INVERTER and s.settings_ok == 1

    async def poll_once(self):
        now = ticks_ms()
        ok = False
        if self.protocol == "jk-nw":
            ok = await self._retrying(self._read_all, None)
        elif self.cfg["bms_read"] == "fc03":
            due = not self.snap.settings_ok or ticks_diff(now, self.settings_ms) > self.cfg["bms_settings_s"] * 1000
            if due and await self._retrying(self._read_block, 1):
                self.settings_ms = now
            ok = await self._retrying(self._read_block, 0)
        else:
            if self.device is None:
                await self._retrying(self._trigger, pb.TRIGGER_ABOUT)
                await sleep_ms(_GAP_MS)
            due = not self.snap.settings_ok or ticks_diff(now, self.settings_ms) > self.cfg["bms_settings_s"] * 1000
            if due:
                if await self._retrying(self._trigger, pb.TRIGGER_SETTINGS):
                    self.settings_ms = now
                await sleep_ms(_GAP_MS)
            ok = await self._retrying(self._trigger, pb.TRIGGER_STATUS)
        if ok:
            self.polls_ok += 1
            if self.complete():
                self.link.data_ok(ticks_ms())
        return ok

    async def run(self):
        # fixed schedule (not "period after the last poll"): keeps a constant
        # phase to the CAN bursts, which can_tx locks onto
        period = self.cfg["bms_poll_ms"]
        due = ticks_ms()
        while True:
            self.heartbeat_ms = ticks_ms()
            await self.poll_once()
            now = ticks_ms()
            self.heartbeat_ms = now
            due = ticks_add(due, period)
            if ticks_diff(due, now) < _GAP_MS:  # a slow poll: never hammer the BMS
                due = ticks_add(now, _GAP_MS)
            await sleep_ms(ticks_diff(due, now))
