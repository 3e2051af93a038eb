# Pylontech V1.3 / Goodwe V1.5 / YamBMS "PYLON V2" encoder ("PYLON+",
# docs/inverter-can.md "Pylontech"): the union of both generations, so an
# inverter that reads either finds its frames. The Pylon V1.2 set as
# protocols.pylon sends it (0x35E, 0x351, 0x355, 0x356, 0x359, 0x35C), with
# the 0.01 % SOC in 0x355 bytes 4-5, then the SMA / Victron layouts of
# 0x35A alarm pairs, 0x35F, 0x372 modules, 0x373 cell extremes and 0x379
# capacity. Like Pylon it listens to 0x305 only.

from array import array

from compat import const
from protocols import pairs
from protocols import sma_frames as W
from protocols.base import u16
from protocols.pylon import ID_SOC, PylonEncoder

ID_ALARMS = const(0x35A)
ID_INFO = const(0x35F)
ID_MODULES = const(0x372)
ID_CELLS = const(0x373)
ID_CAPACITY = const(0x379)
EXTRA_IDS = (ID_ALARMS, ID_INFO, ID_MODULES, ID_CELLS, ID_CAPACITY)

BAT_TYPE_LI = const(0x494C)  # 'L' 'I', as a Pylontech pack on V1.3 firmware sends


class PylonPlusEncoder(PylonEncoder):
    NAME = "PYLON"

    def __init__(self, name="PYLON", modules=0):
        PylonEncoder.__init__(self, name, modules)
        n = len(self.ids)
        self.ids = tuple(self.ids) + EXTRA_IDS
        self.frames = [b for b in self.frames] + [bytearray(8) for _ in EXTRA_IDS]
        self._soc = self.ids.index(ID_SOC)
        self._x = n  # the first extra frame
        self._t = array("h", (0, 0))

    def encode(self, snap, lim, flags):
        PylonEncoder.encode(self, snap, lim, flags)
        f = self.frames
        s = f[self._soc]
        hi = u16(lim.soc_pct * 100)
        s[4] = hi & 0xFF
        s[5] = hi >> 8
        x = self._x
        pairs.write(f[x], 0, flags)
        W.info(f[x + 1], BAT_TYPE_LI, lim.capacity_ah, 0)
        W.modules(f[x + 2], snap, lim)
        W.cells(f[x + 3], snap, self._t)
        W.capacity(f[x + 4], lim.capacity_ah)


ENCODER = PylonPlusEncoder
