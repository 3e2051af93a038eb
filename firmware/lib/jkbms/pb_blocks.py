# JK-PB read by FC03: the register blocks 0x1200 / 0x1000 / 0x1400 in reads of
# <= 32 registers, assembled into block images (docs/jk-bms.md "JK-PB"). JK
# registers are byte offsets: N registers return 2N bytes from that offset.

from codec.errors import DecodeError
from jkbms.pb_modbus import MAX_REGS_PER_READ
from modbus import rtu


def read_plan(base, nbytes):
    """[(register, count)] covering nbytes of a block, <= 32 registers each."""
    plan = []
    off = 0
    while off < nbytes:
        regs = (nbytes - off + 1) // 2
        if regs > MAX_REGS_PER_READ:
            regs = MAX_REGS_PER_READ
        plan.append((base + off, regs))
        off += 2 * regs
    return plan


class BlockImage:
    """A register block assembled from several FC03 replies."""

    def __init__(self, base, nbytes):
        self.base = base
        self.plan = read_plan(base, nbytes)
        self.data = bytearray(2 * ((nbytes + 1) // 2))
        self._got = 0  # bit i = plan entry i stored

    def reset(self):
        self._got = 0

    @property
    def complete(self):
        return self._got == (1 << len(self.plan)) - 1

    def store(self, register, reply, n, slave):
        """Check an FC03 reply to (register, its planned count) and copy its
        data into the image. Raises DecodeError (image unchanged) if bad."""
        for i in range(len(self.plan)):
            reg, count = self.plan[i]
            if reg == register:
                size = rtu.parse_reply(reply, n, slave, rtu.READ_HOLDING, -1, count)
                off = reg - self.base
                d = self.data
                for k in range(size):
                    d[off + k] = reply[3 + k]
                self._got |= 1 << i
                return
        raise DecodeError("register not in this block's read plan")
