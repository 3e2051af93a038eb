# The Encoder contract every inverter protocol implements (docs/design.md
# "Protocols"). An encoder only places values into frames: every decision
# (limits, enables, link loss) is made by charge.policy before encode().
#
#   enc.ids          CAN ids of the frame set, in send order (11-bit)
#   enc.frames       one preallocated bytearray(8) per id, rewritten by encode
#   enc.period_ms    how often the protocol wants the set (None: can_period_ms)
#   enc.encode(pack, lim, flags)
#                    pack: pack.snapshot.PackSnapshot; lim: charge.limits.Limits;
#                    flags: pack.flags to report (lim.flags). Allocation-free.
#   enc.on_rx(can_id, data, n, flags) -> RX_*
#                    classify a frame received from the inverter (and keep
#                    what it says for rx_text); allocation-free
#   enc.rx_filters   acceptance filters for the CAN port, ((id, mask, flags), ...),
#                    or None for everything
#   enc.rx_text()    lines for the console's `frames`: what the inverter
#                    said last (may allocate: console only)
#   enc.command      what an RX_COMMAND frame asked for, in words
#
# Class attributes: NAME, the battery name sent when battery_name is "" (the
# default); SILENT_S, the inverter_timeout_s used when that is 0 (the
# default); HEARTBEAT, how the console and the events name the inverter's
# keep-alive frame (docs/inverter-can.md "Safe defaults").

RX_IGNORED = 0
RX_HEARTBEAT = 1  # the inverter's keep-alive (app.can_io.InverterLink counts it)
RX_REQUEST = 2  # a keep-alive that also asks for the set (Growatt 0x301): the burst follows it
RX_COMMAND = 3  # a command the gateway does not carry out (it never writes to the BMS): reported

# canport.base FLAG_RTR | FLAG_EXT_ID (the receive flags of machine.CAN)
RTR_OR_EXT = 1 | 2


class Encoder:
    NAME = "PYLON"
    SILENT_S = 10
    HEARTBEAT = "0x305"
    ids = ()
    frames = ()
    period_ms = None
    rx_filters = None
    command = ""

    @classmethod
    def from_config(cls, cfg):
        return cls(cfg["battery_name"] or cls.NAME, cfg["modules"])

    def encode(self, pack, lim, flags):
        raise NotImplementedError

    def on_rx(self, can_id, data, n, flags):
        return RX_IGNORED

    def rx_text(self):
        return []


def set_ascii(buf, off, size, text):
    """text (str or bytes, printable ASCII, at most size characters) into
    buf[off:off+size], space-padded; ValueError otherwise. Not in the cycle."""
    data = text.encode() if isinstance(text, str) else bytes(text)
    if len(data) > size or not data:
        raise ValueError("battery name must be 1-%d ASCII characters" % size)
    for c in data:
        if c < 32 or c > 126:
            raise ValueError("battery name must be printable ASCII")
    for i in range(size):
        buf[off + i] = data[i] if i < len(data) else 0x20


def clamp(v, lo, hi):
    return lo if v < lo else (hi if v > hi else v)


def u16(v):
    """v clamped to an unsigned 16-bit field."""
    return clamp(v, 0, 0xFFFF)


def s16(v):
    """v clamped to a signed 16-bit field."""
    return clamp(v, -32768, 32767)


def div_round(x, d):
    """x / d rounded half away from zero (integers, symmetric for x < 0)."""
    return (x + d // 2) // d if x >= 0 else -((-x + d // 2) // d)
