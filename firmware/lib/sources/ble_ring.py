# Lossless capture of BLE notifications (docs/jk-bms.md "BLE link").
#
# aioble hands notifications to notified() through a one-slot queue: when
# several arrive in one connection event, all but the last are lost
# (micropython-lib issue #934) -- most of a 300-byte JK frame. So the BLE
# source takes GATTC_NOTIFY events itself, in the IRQ hook below, and copies
# each one into this preallocated ring; the source's task drains it.
#
# One writer (the IRQ handler) moves head, one reader (the task) moves tail,
# so neither needs a lock. Records are [length lo, length hi, bytes...] and
# may wrap. Neither side allocates: the IRQ's memoryview is copied byte by
# byte (a slice assignment would allocate a slice object).

from compat import const

_IRQ_GATTC_NOTIFY = const(18)
_IRQ_PERIPHERAL_DISCONNECT = const(8)


class NotifyRing:
    def __init__(self, size=1024):
        self.buf = bytearray(size)
        self.size = size
        self.head = 0  # written by put() only
        self.tail = 0  # written by get_into() only
        self.chunks = 0  # notifications taken
        self.lost = 0  # notifications dropped because the ring was full
        self.disconnects = 0  # link-loss events seen by the hook

    def clear(self):
        """Forget what is queued (called by the reader, between links)."""
        self.tail = self.head

    def free(self):
        return (self.tail - self.head - 1) % self.size

    def put(self, data):
        """Queue one notification; False (and counted as lost) when full."""
        n = len(data)
        size = self.size
        if n + 2 > self.free():
            self.lost += 1
            return False
        buf = self.buf
        h = self.head
        buf[h] = n & 0xFF
        h = h + 1 if h + 1 < size else 0
        buf[h] = n >> 8
        h = h + 1 if h + 1 < size else 0
        for i in range(n):
            buf[h] = data[i]
            h += 1
            if h == size:
                h = 0
        self.head = h  # published last: the reader only ever sees whole records
        self.chunks += 1
        return True

    def get_into(self, out):
        """Copy the oldest notification into out; its length, or -1 when the
        ring is empty. A record longer than out is cut to len(out)."""
        t = self.tail
        if t == self.head:
            return -1
        buf = self.buf
        size = self.size
        n = buf[t]
        t = t + 1 if t + 1 < size else 0
        n |= buf[t] << 8
        t = t + 1 if t + 1 < size else 0
        k = n if n < len(out) else len(out)
        for i in range(n):
            if i < k:
                out[i] = buf[t]
            t += 1
            if t == size:
                t = 0
        self.tail = t
        return k


def hook(ble, ring, forward):
    """Install an IRQ handler on ble that puts every notification into ring
    and passes all other events to forward (aioble.core.ble_irq), so aioble's
    own notification queue never sees -- and never drops -- JK data. There is
    one BLE link at a time, so every notification is the BMS's."""

    def irq(event, data):
        if event == _IRQ_GATTC_NOTIFY:
            ring.put(data[2])
            return None
        if event == _IRQ_PERIPHERAL_DISCONNECT:
            ring.disconnects += 1
        return forward(event, data)

    ble.irq(irq)
    return irq
