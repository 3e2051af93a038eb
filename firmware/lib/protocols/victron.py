# Victron "CAN-bus BMS LV (500 kbit/s)" encoder (docs/inverter-can.md
# "Victron"): the layout a GX device reads from a BYD / YamBMS battery,
# little-endian, DLC 8. Not sent: 0x374-0x377 (ASCII ids of the extreme
# cells / sensors: four more frames for text the GX only displays) and 0x378
# (energy counters: the scale is 0.1 or 0.01 kWh depending on the source).
# Product id 0 in 0x35F and a name that is not PYLON keep Venus OS from
# applying its Pylontech quirk (CVL clipped to 52.4 V).

from array import array

from compat import const
from protocols import pairs
from protocols import sma_frames as W
from protocols.base import RTR_OR_EXT, RX_HEARTBEAT, RX_IGNORED, Encoder, set_ascii

ID_LIMITS = const(0x351)
ID_SOC = const(0x355)
ID_MEASURE = const(0x356)
ID_ALARMS = const(0x35A)
ID_NAME = const(0x35E)
ID_INFO = const(0x35F)
ID_BMS_NAME_1 = const(0x370)
ID_BMS_NAME_2 = const(0x371)
ID_MODULES = const(0x372)
ID_CELLS = const(0x373)
ID_CAPACITY = const(0x379)
ID_GX_KEEPALIVE = const(0x305)
ID_GX_IDENT = const(0x307)

FRAME_IDS = (ID_LIMITS, ID_SOC, ID_MEASURE, ID_ALARMS, ID_NAME, ID_INFO, ID_BMS_NAME_1,
             ID_BMS_NAME_2, ID_MODULES, ID_CELLS, ID_CAPACITY)

BMS_NAME = "JK-BMS gateway  "  # 0x370 + 0x371, 16 characters
PRODUCT_ID = const(0)  # never Pylontech's 0xB009 (see above)
HARDWARE_VERSION = const(0)


class VictronEncoder(Encoder):
    NAME = "JK-BMS"
    SILENT_S = 30
    HEARTBEAT = "0x305"
    # 11-bit 0x304..0x307: the GX's frames (0x304 / 0x306 pass, ignored)
    rx_filters = ((0x304, 0x7FC, 0),)

    def __init__(self, name="JK-BMS", modules=0):
        self.ids = FRAME_IDS
        self.frames = [bytearray(8) for _ in FRAME_IDS]
        set_ascii(self.frames[4], 0, 8, name)
        set_ascii(self.frames[6], 0, 8, BMS_NAME[:8])
        set_ascii(self.frames[7], 0, 8, BMS_NAME[8:])
        self.modules = modules  # 0x372 counts the packs in the aggregate (snap.modules)
        self._t = array("h", (0, 0))
        self.gx = False  # a 0x307 with 'V' 'I' 'C' in bytes 4-6 was seen
        self.gx_id = bytearray(4)  # its bytes 0-3

    def encode(self, snap, lim, flags):
        f = self.frames
        W.limits(f[0], lim.cvl_dv, lim.ccl_da, lim.dcl_da, lim.dvl_dv)
        W.soc(f[1], snap, lim)
        W.measure(f[2], snap)
        pairs.write(f[3], 0, flags)
        W.info(f[5], PRODUCT_ID, lim.capacity_ah, HARDWARE_VERSION)
        W.modules(f[8], snap, lim)
        W.cells(f[9], snap, self._t)
        W.capacity(f[10], lim.capacity_ah)

    def on_rx(self, can_id, data, n, flags=0):
        """0x305 (any length: its content is not used) is the keep-alive;
        an 8-byte 0x307 with 'V' 'I' 'C' in bytes 4-6 identifies a GX (kept
        for rx_text, RX_IGNORED). RTR / 29-bit frames change nothing."""
        if flags & RTR_OR_EXT or n > 8 or n > len(data):
            return RX_IGNORED
        if can_id == ID_GX_KEEPALIVE:
            return RX_HEARTBEAT
        if can_id == ID_GX_IDENT and n == 8 and data[4] == 0x56 and data[5] == 0x49 and data[6] == 0x43:
            g = self.gx_id
            for i in range(4):
                g[i] = data[i]
            self.gx = True
        return RX_IGNORED

    def rx_text(self):
        if not self.gx:
            return []
        return ["GX 0x307: Victron GX identified ('VIC', bytes 0-3 %s)" % " ".join("%02X" % b for b in self.gx_id)]


ENCODER = VictronEncoder
