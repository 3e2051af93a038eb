# SMA Sunny Island "LiIon_Ext-BMS" encoder (docs/inverter-can.md "SMA"):
# 0x351 limits, 0x355 SOC, 0x356 values, 0x35A alarm pairs, 0x35E name,
# 0x35F type / version / capacity, little-endian, DLC 8, one set per
# can_period_ms (the config keeps that >= 200 ms, the SI's minimum per id).
# The SI silently rejects an out-of-range value and keeps its last one, so
# the limits are moved into its ranges here, always towards the safe side.
# The SI's own 0x305 / 0x306 / 0x307 are parsed for the console.

from compat import const
from protocols import pairs
from protocols import sma_frames as W
from protocols.base import RTR_OR_EXT, RX_HEARTBEAT, RX_IGNORED, Encoder, clamp, set_ascii

ID_LIMITS = const(0x351)
ID_SOC = const(0x355)
ID_MEASURE = const(0x356)
ID_ALARMS = const(0x35A)
ID_NAME = const(0x35E)
ID_INFO = const(0x35F)
ID_SI_BATTERY = const(0x305)
ID_SI_STATE = const(0x306)
ID_SI_RELAYS = const(0x307)

# limits before values; 0x355 early (60 s without it: F952, SI to standby)
FRAME_IDS = (ID_LIMITS, ID_SOC, ID_MEASURE, ID_ALARMS, ID_NAME, ID_INFO)

# the SI's accepted ranges (0.1 V, 0.1 A)
CVL_MIN = const(410)
CVL_MAX = const(630)
DVL_MIN = const(410)
DVL_MAX = const(480)
CURRENT_MAX = const(12000)

BAT_TYPE_LI = const(0x494C)  # 'L' 'I' little-endian, as a Pylontech V1.3 pack sends

_SEEN_305 = const(1)
_SEEN_306 = const(2)
_SEEN_307 = const(4)

STATES = {1: "operating", 3: "warning", 4: "failure"}


def wire_limits(buf, lim):
    """0x351 within the SI's ranges: CVL <= 63.0 V; a CVL below 41.0 V goes
    as 41.0 V with CCL 0 (never a higher charge voltage with a current);
    DVL into 41.0..48.0 V (raising it is the safe side; one above 48.0 V is
    lowered to 48.0, the SI's maximum); CCL / DCL into 0..1200.0 A."""
    cvl = lim.cvl_dv
    ccl = clamp(lim.ccl_da, 0, CURRENT_MAX)
    if cvl < CVL_MIN:
        cvl = CVL_MIN
        ccl = 0
    elif cvl > CVL_MAX:
        cvl = CVL_MAX
    W.limits(buf, cvl, ccl, clamp(lim.dcl_da, 0, CURRENT_MAX), clamp(lim.dvl_dv, DVL_MIN, DVL_MAX))


def _u16(d, i):
    return d[i] | (d[i + 1] << 8)


def _s16(d, i):
    v = d[i] | (d[i + 1] << 8)
    return v - 0x10000 if v & 0x8000 else v


def _tenths(v):
    return "%s%d.%d" % ("-" if v < 0 else "", abs(v) // 10, abs(v) % 10)


class SmaEncoder(Encoder):
    NAME = "JK-BMS"
    SILENT_S = 10
    HEARTBEAT = "0x305"
    # 11-bit 0x304..0x307: the SI's three frames (0x304 passes too, ignored)
    rx_filters = ((0x304, 0x7FC, 0),)

    def __init__(self, name="JK-BMS", modules=0):
        self.ids = FRAME_IDS
        self.frames = [bytearray(8) for _ in FRAME_IDS]
        set_ascii(self.frames[4], 0, 8, name)
        self.modules = modules  # no module count in the SMA set
        self.seen = 0
        # 0x305 as the SI measures: 0.1 V, 0.1 A (negative = charging), 0.1 degC, 0.1 %
        self.si_dv = 0
        self.si_da = 0
        self.si_dc = 0
        self.si_soc = 0
        # 0x306
        self.si_soh = 0
        self.si_procedure = 0  # 10 = external BMS
        self.si_state = 0  # 1 operating, 3 warning, 4 failure
        self.si_error = 0
        self.si_setpoint_dv = 0
        # 0x307
        self.si_relays = 0

    def encode(self, snap, lim, flags):
        f = self.frames
        wire_limits(f[0], lim)
        W.soc(f[1], snap, lim)
        W.measure(f[2], snap)
        pairs.write(f[3], 0, flags)
        W.info(f[5], BAT_TYPE_LI, lim.capacity_ah, 0)

    def on_rx(self, can_id, data, n, flags=0):
        """0x305 (8 bytes) is the SI's keep-alive; 0x306 (8) and 0x307 (2-8)
        are only kept for rx_text (RX_IGNORED: InverterLink times one frame
        id, and the SI sends all three each second). Any other length, an RTR
        or a 29-bit id changes nothing."""
        if flags & RTR_OR_EXT or n > 8 or n > len(data):
            return RX_IGNORED
        if can_id == ID_SI_BATTERY:
            if n != 8:
                return RX_IGNORED
            self.si_dv = _u16(data, 0)
            self.si_da = _s16(data, 2)
            self.si_dc = _s16(data, 4)
            self.si_soc = _s16(data, 6)
            self.seen |= _SEEN_305
            return RX_HEARTBEAT
        if can_id == ID_SI_STATE:
            if n == 8:
                self.si_soh = _u16(data, 0)
                self.si_procedure = data[2]
                self.si_state = data[3]
                self.si_error = _u16(data, 4)
                self.si_setpoint_dv = _u16(data, 6)
                self.seen |= _SEEN_306
        elif can_id == ID_SI_RELAYS:
            if n >= 2:
                self.si_relays = _u16(data, 0)
                self.seen |= _SEEN_307
        return RX_IGNORED

    def rx_text(self):
        out = []
        if self.seen & _SEEN_305:
            out.append("SI 0x305: %s V, %s A (- = charging), %s C, SOC %s %%" % (
                _tenths(self.si_dv), _tenths(self.si_da), _tenths(self.si_dc), _tenths(self.si_soc)))
        if self.seen & _SEEN_306:
            out.append("SI 0x306: state %s, error %d, charge set-point %s V, SOH %d %%, procedure %d%s" % (
                STATES.get(self.si_state, str(self.si_state)), self.si_error, _tenths(self.si_setpoint_dv),
                self.si_soh, self.si_procedure, " (external BMS)" if self.si_procedure == 10 else ""))
        if self.seen & _SEEN_307:
            out.append("SI 0x307: relays 0x%04X" % self.si_relays)
        return out


ENCODER = SmaEncoder
