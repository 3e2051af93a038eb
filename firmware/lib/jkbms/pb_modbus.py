# JK-PB inverter BMS over RS485 Modbus RTU (spec/jk-bms-protocols.md 4).
#
# Two ways to read a pack:
# * FC10 "trigger" writes of 0x0000 to 0x1620 / 0x161E / 0x161C, answered by
#   a 300-byte JK02_32S 55AA frame followed by the normal FC10 ACK (with or
#   without 0x00 padding). The ACK names the responder, the 55AA frame does not.
# * FC03 reads of the register blocks 0x1200 / 0x1000 / 0x1400, <= 32
#   registers per request. JK registers are *byte* offsets: N registers return
#   2N bytes starting at that byte offset, so the next read starts at reg + 2N.
# Only the triggers are ever written (modbus.rtu refuses anything else).

from codec.errors import DecodeError
from codec.stream import FrameExtractor
from compat import const
from jkbms import frame as J
from modbus import rtu

TRIGGER_STATUS = const(0x1620)    # -> frame type 0x02
TRIGGER_SETTINGS = const(0x161E)  # -> frame type 0x01
TRIGGER_ABOUT = const(0x161C)     # -> frame type 0x03
TRIGGER_TYPE = {TRIGGER_STATUS: J.TYPE_CELL_INFO, TRIGGER_SETTINGS: J.TYPE_SETTINGS,
                TRIGGER_ABOUT: J.TYPE_DEVICE_INFO}

STATUS_BASE = const(0x1200)
SETTINGS_BASE = const(0x1000)
ABOUT_BASE = const(0x1400)
MAX_REGS_PER_READ = const(32)

_ZERO = (0,)


def build_trigger(buf, slave, register):
    """11-byte FC10 trigger request; register must be one of the triggers."""
    if register not in TRIGGER_TYPE:
        raise ValueError("not a JK-PB trigger register")
    return rtu.build_write_multiple(buf, slave, register, _ZERO)


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


def frame_len_at(buf, pos, end):
    """codec.stream judge for a JK-PB bus: 55AA frames and RTU frames."""
    r = J.frame_len_at(buf, pos, end)
    if r != J.NONE:
        return r
    return rtu.frame_len_at(buf, pos, end)


class TriggerReply:
    """Collects the reply to one FC10 trigger from a byte stream that may also
    carry our own echo, padding, noise and other slaves' traffic."""

    def __init__(self):
        self._x = FrameExtractor(frame_len_at, 2 * J.FRAME_LEN + 64, J.FRAME_LEN)
        self.frame = bytearray(J.FRAME_LEN)
        self.slave = 0
        self.register = 0
        self.frame_ok = False
        self.ack_ok = False

    def start(self, slave, register):
        self._x.reset()
        self.slave = slave
        self.register = register
        self.frame_ok = False
        self.ack_ok = False

    def feed(self, data, start=0, end=-1):
        self._x.feed(data, start, end)

    def poll(self):
        """True once the 55AA frame of the expected type and our slave's ACK
        were both seen. Raises DecodeError for an exception reply or a reply
        of the wrong type; other traffic is skipped."""
        x = self._x
        while True:
            n = x.next_frame()
            if n == 0:
                return self.frame_ok and self.ack_ok
            f = x.frame
            if n == J.FRAME_LEN and f[0] == 0x55:
                if f[4] != TRIGGER_TYPE[self.register]:
                    raise DecodeError("JK-PB reply of the wrong frame type")
                for i in range(J.FRAME_LEN):
                    self.frame[i] = f[i]
                self.frame_ok = True
                continue
            if f[0] != self.slave:
                if self.frame_ok and not self.ack_ok and f[1] == rtu.WRITE_MULTIPLE and n == 8:
                    # the frame we hold was another slave's answer
                    self.frame_ok = False
                continue
            if f[1] == rtu.WRITE_MULTIPLE | 0x80:
                rtu.parse_reply(f, n, self.slave, rtu.WRITE_MULTIPLE)  # raises
            if f[1] == rtu.WRITE_MULTIPLE and n == 8:
                rtu.parse_reply(f, n, self.slave, rtu.WRITE_MULTIPLE, self.register, 1)
                self.ack_ok = self.frame_ok
            # anything else from our address is our own echo: skip


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
