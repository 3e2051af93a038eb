# JK-PB over RS485 Modbus: FC10 trigger frames (the BMS answers with a 55AA
# frame and the FC10 ACK) or FC03 register blocks (docs/jk-bms.md "JK-PB").
# Requests are built once; the steady-state poll allocates nothing but the
# exceptions of failed replies.

from codec.stream import FrameExtractor
from compat import ticks_diff, ticks_ms
from jkbms import cellinfo, devinfo, settings
from jkbms import frame as J
from jkbms import pb_modbus as pb
from modbus import rtu
from sources.base import Source
from sources.uart_bus import poll_forever


class JkPbSource(Source):
    def __init__(self, bus, cfg, snap, log):
        Source.__init__(self, "jk-pb@%d" % cfg["bms_address"], cfg, snap, log)
        self.bus = bus
        self.slave = cfg["bms_address"]
        self.fc03 = cfg["bms_read"] == "fc03"
        self.device = None  # device-info dict (trigger mode), read once
        self.settings_ms = 0
        buf = bytearray(16)
        if self.fc03:
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
        else:
            self._req = {}
            for reg in (pb.TRIGGER_STATUS, pb.TRIGGER_SETTINGS, pb.TRIGGER_ABOUT):
                n = pb.build_trigger(buf, self.slave, reg)
                self._req[reg] = bytes(buf[:n])
            self._reply = pb.TriggerReply()

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
            self.device = devinfo.describe(f)
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

    async def _read_block(self, which):
        image = self._blocks[which]
        image.reset()
        self._x.reset()
        for i in range(len(image.plan)):
            if not await self.bus.exchange(self, self._block_reqs[which][i], self._feed_x, self._rtu_reply):
                return False
            image.store(image.plan[i][0], self._x.frame, self._x.frame_len, self.slave)
            await self.bus.gap()
        if which == 0:
            cellinfo.decode(image.data, 0, J.LAYOUT_PB_FC03, self.snap)
        else:
            settings.decode(image.data, self.snap, 0, True)
        return True

    # -- one poll -----------------------------------------------------------------
    def _settings_due(self, now):
        return not self.snap.settings_ok or ticks_diff(now, self.settings_ms) > self.cfg["bms_settings_s"] * 1000

    async def poll_once(self):
        now = ticks_ms()
        bus = self.bus
        if self.fc03:
            if self._settings_due(now) and await bus.retrying(self, self._read_block, 1):
                self.settings_ms = now
            ok = await bus.retrying(self, self._read_block, 0)
        else:
            if self.device is None:
                await bus.retrying(self, self._trigger, pb.TRIGGER_ABOUT)
                await bus.gap()
            if self._settings_due(now):
                if await bus.retrying(self, self._trigger, pb.TRIGGER_SETTINGS):
                    self.settings_ms = now
                await bus.gap()
            ok = await bus.retrying(self, self._trigger, pb.TRIGGER_STATUS)
        if ok:
            self.accepted(ticks_ms())
        return ok

    async def run(self):
        await poll_forever(self, self.cfg["bms_poll_ms"])

