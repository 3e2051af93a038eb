# Luxpower / EG4 ("Lithium 6", Luxpower battery CAN protocol V04): Pylontech
# V1.2 with cell extremes, capacity and cycles in the bytes Pylon leaves
# unused, and a remote-shutdown command from the inverter
# (docs/inverter-can.md "Luxpower"). encode() runs the Pylon encoder and then
# overwrites those bytes; nothing here allocates.

import struct

from charge.limiters import battery_temps
from compat import const
from protocols.base import RTR_OR_EXT, RX_COMMAND, RX_IGNORED, clamp
from protocols.pylon import ID_INVERTER, PylonEncoder

ID_COMMAND = const(0x300)  # INV -> BMS: byte 0 bit 0 = shut the battery down
SHUTDOWN = const(0x01)


class LuxpowerEncoder(PylonEncoder):
    # NAME stays "PYLON": 0x35E is only a brand to show, no Luxpower / EG4 is
    # known to key on it, and the same inverters accept PYLON in "Lithium 2"
    rx_filters = ((ID_COMMAND, 0x7FF, 0), (ID_INVERTER, 0x7FF, 0))
    command = "battery shutdown (0x300 remote command)"

    def __init__(self, name="PYLON", modules=0):
        PylonEncoder.__init__(self, name, modules)
        self._t = [0, 0]  # battery_temps' (min, max), reused
        self.last_300 = bytearray(8)  # the last 0x300 as received, for rx_text
        self.n_300 = 0

    def encode(self, snap, lim, flags):
        PylonEncoder.encode(self, snap, lim, flags)
        f = self.frames
        # 0x355 bytes 4-7: max / min cell mV
        struct.pack_into("<HH", f[2], 4, snap.cell_max_mv, snap.cell_min_mv)
        # 0x356 bytes 4-7: max / min battery temperature (MOSFET excluded),
        # 0 / 0 without a sensor. Equal readings get max + 0.1 degC, as YamBMS
        # does for an EG4 that mishandles max == min: upwards, the safe side
        t = self._t
        if battery_temps(snap, t):
            lo = t[0]
            hi = t[1]
            if hi == lo and hi < 32767:
                hi += 1
        else:
            lo = hi = 0
        struct.pack_into("<hh", f[3], 4, hi, lo)
        # 0x359 bytes 5-6: capacity Ah in place of 'P' 'N'; byte 7 stays 0
        struct.pack_into("<H", f[4], 5, clamp(lim.capacity_ah, 0, 0xFFFF))
        # 0x35C bytes 2-3: cycle count
        struct.pack_into("<H", f[5], 2, clamp(snap.cycles, 0, 0xFFFF))

    def on_rx(self, can_id, data, n, flags=0):
        """0x300 with byte 0 bit 0 set is the shutdown command (reported,
        never carried out); any 11-bit data frame of 1-8 bytes counts, as
        the document gives no length for it."""
        if can_id != ID_COMMAND:
            return PylonEncoder.on_rx(self, can_id, data, n, flags)
        if flags & RTR_OR_EXT or n < 1 or n > 8 or n > len(data):
            return RX_IGNORED
        b = self.last_300
        for i in range(8):
            b[i] = data[i] if i < n else 0
        self.n_300 = n
        return RX_COMMAND if data[0] & SHUTDOWN else RX_IGNORED

    def rx_text(self):
        if not self.n_300:
            return []
        return ["last 0x300: " + " ".join("%02X" % self.last_300[i] for i in range(self.n_300))]


ENCODER = LuxpowerEncoder
