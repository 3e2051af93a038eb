# Test doubles shared by the portable gateway tests (CPython and MicroPython):
# a config store in memory, a CAN port that records what is sent, a UART that
# answers JK-PB triggers with real captures, a watchdog that counts feeds.

from fixtures import find_frame, unhex

from jkbms import pb_modbus as pb


class MemStore:
    def __init__(self, files=None):
        self.files = files or {}
        self.writes = 0

    def read(self, name, limit=None):
        if name not in self.files:
            raise OSError(2)
        return self.files[name]

    def exists(self, name):
        return name in self.files

    def write_atomic(self, name, text):
        self.writes += 1
        self.files[name] = text


class FakeCan:
    def __init__(self, capacity=100):
        self.sent = []
        self.capacity = capacity
        self.bus_off = False
        self.inbox = []

    def send(self, can_id, data, flags=0):
        if self.bus_off:
            raise OSError(5)
        if len(self.sent) >= self.capacity:
            return None
        self.sent.append((can_id, bytes(data)))
        return (len(self.sent) - 1) % 8  # a TX buffer index, as a controller with 8 would give

    def recv(self, arg=None):
        if not self.inbox:
            return None
        item = self.inbox.pop(0)
        can_id, data = item[0], item[1]
        flags = item[2] if len(item) > 2 else 0
        arg[0] = can_id
        arg[1] = memoryview(bytearray(data))
        arg[2] = flags
        arg[3] = 0
        return arg

    def get_counters(self, lst=None):
        return [0, 0, 0, 0, 0, 0, 0, 0]

    def restart(self):
        pass

    def set_filters(self, filters):
        self.filters = filters

    def cancel_send(self, idx):
        self.cancelled = getattr(self, "cancelled", 0) + 1


class FakeRecovery:
    recoveries = 0
    state = 1

    def poll(self, now):
        return self.state


class FakeUart:
    """Answers JK-PB FC10 triggers with real captures (slave 1)."""

    def __init__(self, replies, noise=b""):
        self.replies = replies
        self.noise = noise
        self.pending = bytearray()
        self.requests = []

    def write(self, buf):
        req = bytes(buf)
        self.requests.append(req)
        reply = self.replies.get(req)
        if reply is not None:
            self.pending += self.noise + req + reply  # our own echo first
        return len(req)

    def readinto(self, buf):
        if not self.pending:
            return None
        n = min(len(buf), len(self.pending), 37)
        buf[:n] = self.pending[:n]
        self.pending = self.pending[n:]
        return n


class CountingWdt:
    feeds = 0

    def feed(self):
        self.feeds += 1


def pb_request(addr, reg):
    """The FC10 trigger request for register reg of the pack at addr."""
    b = bytearray(16)
    n = pb.build_trigger(b, addr, reg)
    return bytes(b[:n])


def pb_ack(addr, reg):
    """The FC10 ACK the pack at addr sends behind its 55AA frame."""
    from modbus.crc import put_crc
    b = bytearray(8)
    b[0] = addr
    b[1] = 0x10
    b[2] = reg >> 8
    b[3] = reg & 0xFF
    b[4] = 0
    b[5] = 1
    put_crc(b, 6)
    return bytes(b)


def pb_replies():
    b = bytearray(16)
    out = {}
    for reg, fid in ((pb.TRIGGER_STATUS, "rs485_pb_status_response_with_ack_mpp"),
                     (pb.TRIGGER_SETTINGS, "rs485_pb_settings_response_with_ack_mpp"),
                     (pb.TRIGGER_ABOUT, "rs485_pb_about_response_with_ack_mpp")):
        n = pb.build_trigger(b, 1, reg)
        out[bytes(b[:n])] = unhex(find_frame(fid)["hex"])
    return out


def load_pb_pack(snap):
    """A real JK-PB pack (settings + status captures) decoded into snap."""
    from jkbms import cellinfo, settings
    from jkbms import frame as J
    settings.decode(unhex(find_frame("rs485_pb_settings_response_with_ack_mpp")["hex"])[:300], snap)
    cellinfo.decode(unhex(find_frame("rs485_pb_status_response_with_ack_mpp")["hex"])[:300], 6,
                    J.LAYOUT_JK02_32S, snap)
