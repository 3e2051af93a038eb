# Builds checksummed 300-byte 55AA frames from arbitrary chunks: BLE
# notifications (20-244 bytes) or UART reads of any size.
#
# BLE mode adds the chunk-level rules (docs/jk-bms.md "55AA frames"): the
# BLE module's "AT\r\n" (whole chunk, prefix or suffix) is removed, a chunk
# that is a 20-byte C8 command confirmation is dropped, and a chunk starting
# with the 55AA header restarts the frame (a notification was lost). A UART
# stream has no chunk boundaries, so there only the byte-level scan applies.

from codec.binary import has_prefix
from codec.stream import FrameExtractor
from jkbms.frame import COMMAND_HEADER, FRAME_LEN, HEADER, frame_len_at

_AT = b"AT\r\n"
_CONFIRM_LEN = 20


class Reassembler:
    def __init__(self, ble=False):
        self.ble = ble
        self._x = FrameExtractor(frame_len_at, 2 * FRAME_LEN + 64, FRAME_LEN)
        self.frame = self._x.frame  # the last complete frame (300 bytes)
        self.bad = 0  # 300 bytes after a 55AA header that failed the checksum

    @property
    def dropped(self):
        return self._x.dropped

    def reset(self):
        self._x.reset()

    def feed(self, chunk, start=0, end=-1):
        """Add chunk[start:end]; then call next_frame() until it returns 0."""
        if end < 0:
            end = len(chunk)
        if self.ble:
            if has_prefix(chunk, start, end, _AT):
                start += 4
            if end - start >= 4 and has_prefix(chunk, end - 4, end, _AT):
                end -= 4
            if has_prefix(chunk, start, end, COMMAND_HEADER):
                start += _CONFIRM_LEN if end - start >= _CONFIRM_LEN else end - start
            if has_prefix(chunk, start, end, HEADER):
                self._x.reset()
        self._x.feed(chunk, start, end)

    def next_frame(self):
        """300 when a frame is ready in self.frame (its type at frame[4]), else 0.
        A whole frame's worth after a header that is not taken failed its
        checksum: counted in bad (the extractor then skips it as noise)."""
        x = self._x
        full = x.n >= FRAME_LEN and has_prefix(x.buf, 0, x.n, HEADER)
        d0 = x.dropped
        r = x.next_frame()
        if full and x.dropped != d0:
            self.bad += 1
        return r
