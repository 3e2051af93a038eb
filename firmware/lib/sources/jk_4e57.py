# JK-B / JK-BD "4E 57" UART protocol: one read-all request, one frame with
# live data and settings (docs/jk-bms.md "4E 57").

from codec.stream import FrameExtractor
from jkbms import nw
from sources.base import Source
from sources.uart_bus import poll_forever


class Jk4e57Source(Source):
    def __init__(self, bus, cfg, snap, log):
        Source.__init__(self, "jk-4e57", cfg, snap, log)
        self.bus = bus
        self._req = bytes(nw.READ_ALL)
        self._x = FrameExtractor(nw.frame_len_at, 1024, nw.MAX_FRAME)

    def resync_bytes(self):
        return self._x.dropped

    def _feed(self, buf, n):
        self._x.feed(buf, 0, n)

    def _done(self):
        return self._x.next_frame() > 0

    async def _read_all(self, _):
        self._x.reset()
        if not await self.bus.exchange(self, self._req, self._feed, self._done):
            return False
        nw.decode(self._x.frame, self._x.frame_len, self.snap)
        self.keep_raw(self._x.frame, self._x.frame_len)
        return True

    async def poll_once(self):
        bus = self.bus
        bus.begin_poll(self.cfg["bms_poll_ms"])
        ok = await bus.retrying(self, self._read_all, None)
        if ok:
            self.accepted(bus.stamp_ms)
        return ok

    async def run(self):
        await poll_forever(self, self.cfg["bms_poll_ms"])
