# JK-PB over RS485 Modbus: FC10 trigger frames (the BMS answers with a 55AA
# frame and the FC10 ACK) or FC03 register blocks (docs/jk-bms.md "JK-PB").
# Requests are built once; the steady-state poll allocates nothing but the
# exceptions of failed replies.

from codec.stream import FrameExtractor
from compat import ticks_add, ticks_diff, ticks_ms
from jkbms import cellinfo, settings
from jkbms import frame as J
from jkbms import pb_modbus as pb
from modbus import rtu
from sources.base import Source
from sources.uart_bus import poll_forever

# the device-info read is informational: after a failure, wait this long
# (doubling) before the next try
_ABOUT_MIN_MS = 10000
_ABOUT_MAX_MS = 300000


class JkPbSource(Source):
    def __init__(self, bus, cfg, snap, log, address=0):
        slave = address or cfg["bms_address"]
        fc03 = cfg["bms_read"] == "fc03"
        # (raw buffer, reply extractor): one per bus, not per pack -- the packs
        # on a bus are polled one at a time (docs/design.md "RAM")
        share = bus.pb
        if share is None:
            share = bus.pb = (bytearray(512), (FrameExtractor(rtu.frame_len_at, 512, rtu.MAX_FRAME),
                                               pb.BlockImage(pb.STATUS_BASE, cellinfo.NEED_32S))
                              if fc03 else pb.TriggerReply())
        Source.__init__(self, "jk-pb@%d" % slave, cfg, snap, log, share[0])
        self.bus = bus
        self.slave = slave
        self.fc03 = fc03
        self.device = None  # the device-info frame (trigger mode), read once; see device_info()
        self.settings_ms = 0
        self._about_next = ticks_ms()  # the device-info read backs off on its own
        self._about_wait = _ABOUT_MIN_MS
        buf = bytearray(16)
        if self.fc03:
            self._x = share[1][0]
            self._set_part = 0  # next part of the settings block (read across polls: one per pack)
            self._blocks = (share[1][1], pb.BlockImage(pb.SETTINGS_BASE, settings.BLOCK_BYTES))
            self._block_reqs = []
            for image in self._blocks:
                reqs = []
                for reg, count in image.plan:
                    n = rtu.build_read(buf, self.slave, reg, count)
                    reqs.append(bytes(buf[:n]))
                self._block_reqs.append(reqs)
        else:
            self._req = {}
            for reg in (pb.TRIGGER_STATUS, pb.TRIGGER_SETTINGS, pb.TRIGGER_ABOUT):
                n = pb.build_trigger(buf, self.slave, reg)
                self._req[reg] = bytes(buf[:n])
            self._reply = share[1]

    def device_info(self):
        """Model, versions, serial ... of the BMS as a dict, or None."""
        if self.device is None:
            return None
        from jkbms import devinfo
        return devinfo.describe(self.device)

    def resync_bytes(self):
        return self._reply._x.dropped if not self.fc03 else self._x.dropped

    # -- FC10 triggers ----------------------------------------------------------
    def _feed_reply(self, buf, n):
        self._reply.feed(buf, 0, n)

    async def _trigger(self, reg):
        r = self._reply
        r.start(self.slave, reg)
        if not await self.bus.exchange(self, self._req[reg], self._feed_reply, r.poll):
            return False
        f = r.frame
        J.check_frame(f, J.FRAME_LEN)
        if reg == pb.TRIGGER_STATUS:
            cellinfo.decode(f, 6, J.LAYOUT_JK02_32S, self.snap)
        elif reg == pb.TRIGGER_SETTINGS:
            settings.decode(f, self.snap)
        else:
            self.device = bytes(f)  # decoded only when shown: jkbms.devinfo stays out of RAM
        self.keep_raw(f, J.FRAME_LEN)
        return True

    # -- FC03 register blocks ---------------------------------------------------
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

    async def _read_part(self, which, i):
        """One FC03 read of a block; the block is decoded with its last part
        (a DecodeError then counts like any bad reply)."""
        image = self._blocks[which]
        self._x.reset()
        if not await self.bus.exchange(self, self._block_reqs[which][i], self._feed_x, self._rtu_reply):
            return False
        image.store(image.plan[i][0], self._x.frame, self._x.frame_len, self.slave)
        if i == len(image.plan) - 1:
            if which == 0:
                cellinfo.decode(image.data, 0, J.LAYOUT_PB_FC03, self.snap)
            else:
                settings.decode(image.data, self.snap, 0, True)
        return True

    async def _status_part(self, i):
        return await self._read_part(0, i)

    async def _settings_part(self, i):
        return await self._read_part(1, i)

    async def _status_block(self):
        """The whole status block, in this poll; dated by its first part."""
        bus = self.bus
        self._blocks[0].reset()
        for i in range(len(self._blocks[0].plan)):
            if i:
                await bus.gap()
            if not await bus.retrying(self, self._status_part, i):
                return False
            if i == 0:
                stamp = bus.stamp_ms
        bus.stamp_ms = stamp
        return True

    async def _settings_step(self, must):
        """As many parts of the settings block as this poll has time for (all
        of them when must); the read goes on where it stopped in the next
        poll. True once complete."""
        bus = self.bus
        image = self._blocks[1]
        n = len(image.plan)
        if self._set_part == 0:
            image.reset()
        while self._set_part < n and (must or bus.time_left(bus.gap_ms)):
            await bus.gap()
            if not await bus.retrying(self, self._settings_part, self._set_part):
                return False
            self._set_part += 1
        if self._set_part < n:
            return False
        self._set_part = 0
        return True

    # -- one poll -----------------------------------------------------------------
    def _settings_due(self, now, times=1):
        due = times * self.cfg["bms_settings_s"] * 1000
        return not self.snap.settings_ok or ticks_diff(now, self.settings_ms) > due

    async def poll_once(self, budget_ms=0):
        """The status read first, every poll; the settings (when missing or
        due) and the device info only in what is left of the poll's budget
        (bms_poll_ms, or the share of a bus cycle: sources.pb_bus), so an
        optional read that is never answered cannot delay the data the
        inverter side needs. Settings twice overdue are read anyway: on a
        full bus there may never be time left."""
        now = ticks_ms()
        bus = self.bus
        _GAP = bus.gap_ms
        bus.begin_poll(budget_ms or self.cfg["bms_poll_ms"])
        if self.fc03:
            ok = await self._status_block()
        else:
            ok = await bus.retrying(self, self._trigger, pb.TRIGGER_STATUS)
        stamp = bus.stamp_ms
        # without settings the data is not complete and nothing is sent: then
        # the settings read goes even past the budget; a re-read waits for
        # time. After a status read that got no byte at all nothing more is
        # asked: a silent pack must not hold up the others on its bus twice.
        missing = self._settings_due(now, 2)
        if not ok and not bus.rx_bytes:
            pass
        elif self._settings_due(now) and self.fc03:
            if await self._settings_step(missing):
                self.settings_ms = now
        elif self._settings_due(now) and (missing or bus.time_left(_GAP)):
            await bus.gap()
            if await bus.retrying(self, self._trigger, pb.TRIGGER_SETTINGS):
                self.settings_ms = now
        elif (not self.fc03 and self.device is None and ticks_diff(now, self._about_next) >= 0
              and bus.time_left(_GAP)):
            await bus.gap()
            if not await bus.retrying(self, self._trigger, pb.TRIGGER_ABOUT, 1):
                self._about_next = ticks_add(ticks_ms(), self._about_wait)
                self._about_wait = _ABOUT_MAX_MS if self._about_wait * 2 > _ABOUT_MAX_MS else self._about_wait * 2
        if ok:
            self.accepted(stamp)
        return ok

    async def run(self):
        await poll_forever(self, self.cfg["bms_poll_ms"])

