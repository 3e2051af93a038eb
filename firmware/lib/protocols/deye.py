# Deye / Sunsynk / Sol-Ark ("Lithium 00"): Deye's LV document is Pylontech
# V1.2 under another name; Sol-Ark V1.3 adds 0x379, the bank's capacity
# (docs/inverter-can.md "Deye"). Deye's quirks are handled in charge/, not
# here: the CVL slew (it discharges towards a CVL below the pack voltage) and
# link_loss "stop" (it keeps using a battery at 0 A limits).

import struct

from compat import const
from protocols.base import clamp
from protocols.pylon import FRAME_IDS, PylonEncoder

ID_CAPACITY = const(0x379)
IDS = FRAME_IDS + (ID_CAPACITY,)


class DeyeEncoder(PylonEncoder):
    # NAME "PYLON" (inherited): Deye shows the SOH only for that name; 0x305
    # (Deye answers each 0x356 with it) is the Pylon heartbeat

    def __init__(self, name="PYLON", modules=0):
        PylonEncoder.__init__(self, name, modules)
        self.ids = IDS
        self.frames.append(bytearray(8))

    def encode(self, snap, lim, flags):
        PylonEncoder.encode(self, snap, lim, flags)
        # 0x379 bytes 0-1: capacity Ah of the whole bank; unused bytes 0
        struct.pack_into("<HHHH", self.frames[6], 0, clamp(lim.capacity_ah, 0, 0xFFFF), 0, 0, 0)


ENCODER = DeyeEncoder
