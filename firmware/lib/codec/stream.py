# Incremental frame extraction from a byte stream that may hold line noise,
# partial frames, other devices' traffic and echoes of our own requests.
#
# One mechanism serves every wire protocol: a protocol supplies
# frame_len_at(buf, pos, end), which judges the bytes at buf[pos:end]:
#   > 0      a complete frame of that length, integrity check passed;
#   PENDING  could be a frame start, more bytes are needed;
#   HOLD     a strong frame start (a 4-byte header): more bytes are needed and
#            nothing after it may be taken as a frame meanwhile;
#   NONE     no frame starts here.
# No allocation after construction: bytes are copied with index loops.

from compat import const

NONE = const(-1)
PENDING = const(0)
HOLD = const(-2)


class FrameExtractor:
    def __init__(self, frame_len_at, size, max_frame):
        self._judge = frame_len_at
        self.buf = bytearray(size)
        self.n = 0
        self.frame = bytearray(max_frame)  # last extracted frame
        self.frame_len = 0
        self.dropped = 0  # bytes discarded as noise or overflow (diagnostics)

    def reset(self):
        self.n = 0
        self.frame_len = 0

    def feed(self, data, start=0, end=-1):
        """Append data[start:end] (to its end when end < 0). Call next_frame()
        between feeds of more than size - max_frame bytes: on overflow the
        oldest half of the buffer is discarded."""
        if end < 0:
            end = len(data)
        buf = self.buf
        size = len(buf)
        for i in range(start, end):
            if self.n == size:
                # Overflow: the oldest bytes cannot belong to a frame that
                # still fits, so they go.
                self._shift(size // 2)
                self.dropped += size // 2
            buf[self.n] = data[i]
            self.n += 1

    def _shift(self, k):
        # discard the first k buffered bytes
        buf = self.buf
        n = self.n
        for i in range(n - k):
            buf[i] = buf[i + k]
        self.n = n - k

    def next_frame(self):
        """Length of the next complete frame (now in self.frame), or 0."""
        buf = self.buf
        n = self.n
        judge = self._judge
        keep = n  # first position that must be kept for a later call
        p = 0
        while p < n:
            r = judge(buf, p, n)
            if r > 0:
                frame = self.frame
                for i in range(r):
                    frame[i] = buf[p + i]
                self.frame_len = r
                self.dropped += p  # bytes before the frame were noise
                self._shift(p + r)
                return r
            if r != NONE and keep == n:
                keep = p
            if r == HOLD:
                break
            p += 1
        if keep > 0:
            self.dropped += keep
            self._shift(keep)
        return 0
