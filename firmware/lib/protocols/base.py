# The Encoder contract every inverter protocol implements (docs/design.md
# "Protocols"). An encoder only places values into frames: every decision
# (limits, enables, link loss) is made by charge.policy before encode().
#
#   enc.ids          CAN ids of the frame set, in send order
#   enc.frames       one preallocated bytearray(8) per id, rewritten by encode
#   enc.period_ms    how often the protocol wants the set (None: as configured)
#   enc.encode(pack, lim, flags)
#                    pack: pack.snapshot.PackSnapshot; lim: charge.limits.Limits;
#                    flags: pack.flags to report (lim.flags). Allocation-free.
#   enc.on_rx(can_id, data, n, flags) -> RX_*
#                    classify a frame received from the inverter
#   enc.rx_filters   acceptance filters for the CAN port, ((id, mask, flags), ...),
#                    or None for everything

RX_IGNORED = 0
RX_HEARTBEAT = 1


class Encoder:
    ids = ()
    frames = ()
    period_ms = None
    rx_filters = None

    def encode(self, pack, lim, flags):
        raise NotImplementedError

    def on_rx(self, can_id, data, n, flags):
        return RX_IGNORED
