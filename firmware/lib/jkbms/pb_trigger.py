# JK-PB read by FC10 trigger: the 300-byte 55AA frame and the FC10 ACK that
# answer one trigger write, picked out of the bus traffic (docs/jk-bms.md
# "JK-PB"). The requests: jkbms.pb_modbus.build_trigger.

from codec.errors import DecodeError
from codec.stream import FrameExtractor
from jkbms import frame as J
from jkbms.pb_modbus import TRIGGER_TYPE, frame_len_at
from modbus import rtu


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
