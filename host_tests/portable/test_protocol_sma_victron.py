# The SMA-family encoders (protocols.sma, protocols.victron, protocols.pylon_plus) and their
# shared 0x35A alarm pairs (protocols.pairs): one pack flag at a time raises exactly its pairs
# (01), every other pair reads OK (10), all well is AA x 8; the SMA wire ranges (CVL, DVL,
# currents), the 16-bit clamping of Victron / Pylon+; what the inverters' own frames are taken
# for (malformed ones change nothing) and how the console shows them; encode() and on_rx()
# allocate nothing (heap locked under MicroPython); the registry builds each from the app.config
# defaults. CPython and MicroPython (unix + webassembly).

from mpcompat import run_locked

import protocols
from app import config as C
from canport.base import FLAG_EXT_ID, FLAG_RTR
from charge.limits import Limits
from pack import flags as F
from pack import snapshot as S
from protocols.base import RX_HEARTBEAT, RX_IGNORED
from protocols.pylon import PylonEncoder
from protocols.pylon_plus import PylonPlusEncoder
from protocols.sma import SmaEncoder
from protocols.victron import VictronEncoder

# the documented mapping (docs/inverter-can.md "SMA"), written out independently of the module:
# flag -> (alarm pairs, warning pairs)
PAIR_MAP = {
    "CELL_OV": ((1,), ()), "PACK_OV": ((1,), ()),
    "CELL_UV": ((2,), ()), "PACK_UV": ((2,), ()),
    "DISCHARGE_OT": ((3,), ()), "MOS_OT": ((3,), ()),
    "CHARGE_OT": ((5,), ()),
    "CHARGE_UT": ((6,), ()),
    "DISCHARGE_OC": ((7,), ()),
    "CHARGE_OC": ((8,), ()),
    "CHARGE_FET_FAULT": ((9,), ()), "DISCHARGE_FET_FAULT": ((9,), ()),
    "CHARGE_SC": ((10,), ()), "DISCHARGE_SC": ((10,), ()),
    "CELL_COUNT": ((11,), ()), "CURRENT_SENSOR": ((11,), ()), "INTERNAL_COMM": ((11,), ()),
    "TEMP_SENSOR": ((11,), ()), "LINK_LOST": ((11,), ()), "IMPLAUSIBLE": ((11,), ()),
    "WIRE_RESISTANCE": ((), (0,)),
    "BATTERY_OT_WARN": ((), (3,)),
    "DISCHARGE_UT": ((), (4,)),
}


def flag_names():
    return [k for k in dir(F) if k.isupper() and isinstance(getattr(F, k), int) and not k.startswith("_")]


def snap_limits():
    s = S.PackSnapshot()
    s.have = S.HAVE_FOR_INVERTER | S.HAVE_SOH | S.HAVE_TEMPS
    s.pack_mv = 52104
    s.current_ma = -10049
    s.soc_pct = 81
    s.soh_pct = 97
    s.temps[0] = 400  # MOSFET: never reported
    s.temps[1] = 251
    s.temps[2] = 262
    s.cell_count = 16
    s.cell_min_mv = 3306
    s.cell_max_mv = 3329
    s.modules = 2
    s.modules_offline = 1
    lim = Limits()
    lim.cvl_dv = 552
    lim.ccl_da = 1000
    lim.dcl_da = 1500
    lim.dvl_dv = 460
    lim.charge_enable = True
    lim.discharge_enable = True
    lim.soc_pct = 80
    lim.capacity_ah = 280
    return s, lim


def encoders():
    return (SmaEncoder(), VictronEncoder(), PylonPlusEncoder())


def frame(enc, can_id):
    return enc.frames[list(enc.ids).index(can_id)]


def u16(b, i):
    return b[i] | (b[i + 1] << 8)


def s16(b, i):
    v = u16(b, i)
    return v - 0x10000 if v & 0x8000 else v


def pair(b, half, n):
    """Pair n (0-15) of the alarm (half 0) or warning (half 1) word of a 0x35A frame."""
    return (b[4 * half + n // 4] >> (2 * (n % 4))) & 3


def encode(enc, snap, lim, flags=0):
    enc.encode(snap, lim, flags)
    for b in enc.frames:
        assert len(b) == 8
    return enc


# ------------------------------------------------------------------------------- 0x35A pairs


def test_all_ok_is_aa():
    s, lim = snap_limits()
    for enc in encoders():
        assert bytes(frame(encode(enc, s, lim, 0), 0x35A)) == b"\xaa" * 8


def test_every_flag_has_a_documented_pair_choice():
    assert sorted(flag_names()) == sorted(PAIR_MAP)


def test_one_flag_at_a_time():
    s, lim = snap_limits()
    for enc in encoders():
        for name in PAIR_MAP:
            alarms, warnings = PAIR_MAP[name]
            b = frame(encode(enc, s, lim, getattr(F, name)), 0x35A)
            for n in range(16):
                assert pair(b, 0, n) == (1 if n in alarms else 2), (name, "alarm", n)
                assert pair(b, 1, n) == (1 if n in warnings else 2), (name, "warning", n)


def test_all_flags_together_and_back():
    s, lim = snap_limits()
    enc = SmaEncoder()
    b = frame(encode(enc, s, lim, (1 << 23) - 1), 0x35A)
    active_alarms = [n for n in range(16) if pair(b, 0, n) == 1]
    active_warnings = [n for n in range(16) if pair(b, 1, n) == 1]
    assert active_alarms == [1, 2, 3, 5, 6, 7, 8, 9, 10, 11]
    assert active_warnings == [0, 3, 4]
    for n in range(16):
        assert pair(b, 0, n) in (1, 2) and pair(b, 1, n) in (1, 2)  # never 00 / 11
    encode(enc, s, lim, 0)
    assert bytes(frame(enc, 0x35A)) == b"\xaa" * 8  # cleared again: the "leave" bit is sent


# ------------------------------------------------------------------------------- SMA ranges


def sma_351(**kw):
    s, lim = snap_limits()
    for k in kw:
        setattr(lim, k, kw[k])
    b = frame(encode(SmaEncoder(), s, lim), 0x351)
    return u16(b, 0), s16(b, 2), s16(b, 4), u16(b, 6)


def test_sma_limits_in_range_pass_unchanged():
    assert sma_351() == (552, 1000, 1500, 460)
    assert sma_351(cvl_dv=410, dvl_dv=410) == (410, 1000, 1500, 410)
    assert sma_351(cvl_dv=630, dvl_dv=480) == (630, 1000, 1500, 480)


def test_sma_dvl_clamped_into_41_48_v():
    assert sma_351(dvl_dv=0)[3] == 410
    assert sma_351(dvl_dv=409)[3] == 410
    assert sma_351(dvl_dv=481)[3] == 480
    assert sma_351(dvl_dv=520)[3] == 480


def test_sma_cvl_at_most_63_v():
    assert sma_351(cvl_dv=631) == (630, 1000, 1500, 460)
    assert sma_351(cvl_dv=65535) == (630, 1000, 1500, 460)


def test_sma_cvl_below_41_v_goes_as_41_v_without_charge_current():
    assert sma_351(cvl_dv=409) == (410, 0, 1500, 460)
    assert sma_351(cvl_dv=0, ccl_da=0, dcl_da=0) == (410, 0, 0, 460)


def test_sma_currents_into_0_1200_a():
    assert sma_351(ccl_da=-5, dcl_da=-1)[1:3] == (0, 0)
    assert sma_351(ccl_da=12001, dcl_da=40000)[1:3] == (12000, 12000)
    assert sma_351(ccl_da=12000, dcl_da=0)[1:3] == (12000, 0)


def test_sma_other_frames():
    s, lim = snap_limits()
    enc = encode(SmaEncoder(), s, lim)
    b = frame(enc, 0x355)
    assert (u16(b, 0), u16(b, 2), u16(b, 4), u16(b, 6)) == (80, 97, 8000, 0)  # shaped SOC, not 81
    b = frame(enc, 0x356)
    assert (s16(b, 0), s16(b, 2), s16(b, 4), u16(b, 6)) == (5210, -100, 257, 0)  # mean of 25.1, 26.2
    assert bytes(frame(enc, 0x35E)) == b"JK-BMS  "
    b = frame(enc, 0x35F)
    assert bytes(b[0:2]) == b"LI" and (b[2], b[3]) == (1, 0) and u16(b, 4) == 280 and u16(b, 6) == 0
    assert list(enc.ids) == [0x351, 0x355, 0x356, 0x35A, 0x35E, 0x35F]
    assert enc.period_ms is None


def test_no_soh_no_sensor():
    s, lim = snap_limits()
    s.have &= ~S.HAVE_SOH
    for i in range(1, S.TEMP_SLOTS):
        s.temps[i] = S.NO_TEMP
    for enc in encoders():
        encode(enc, s, lim)
        assert u16(frame(enc, 0x355), 2) == 100
        assert s16(frame(enc, 0x356), 4) == 0  # never the MOSFET's 40.0 C
        if 0x373 in enc.ids:
            b = frame(enc, 0x373)
            assert (u16(b, 4), u16(b, 6)) == (273, 273)


# ------------------------------------------------------------------------- Victron / Pylon+


def test_victron_frames():
    s, lim = snap_limits()
    enc = encode(VictronEncoder(), s, lim)
    b = frame(enc, 0x351)
    assert (u16(b, 0), s16(b, 2), s16(b, 4), u16(b, 6)) == (552, 1000, 1500, 460)
    b = frame(enc, 0x355)
    assert (u16(b, 0), u16(b, 2), u16(b, 4)) == (80, 97, 8000)
    b = frame(enc, 0x35F)
    assert (u16(b, 0), b[2], b[3], u16(b, 4), u16(b, 6)) == (0, 1, 0, 280, 0)  # product id 0
    assert bytes(frame(enc, 0x370)) + bytes(frame(enc, 0x371)) == b"JK-BMS gateway  "
    b = frame(enc, 0x372)
    assert (u16(b, 0), u16(b, 2), u16(b, 4), u16(b, 6)) == (2, 0, 0, 1)
    b = frame(enc, 0x373)
    assert (u16(b, 0), u16(b, 2), u16(b, 4), u16(b, 6)) == (3306, 3329, 298, 299)  # 25.1 / 26.2 C
    assert u16(frame(enc, 0x379), 0) == 280
    assert bytes(frame(enc, 0x35E)) == b"JK-BMS  "
    assert 0x374 not in enc.ids and 0x378 not in enc.ids


def test_blocking_modules_follow_the_enables():
    s, lim = snap_limits()
    enc = VictronEncoder()
    for ce in (False, True):
        for de in (False, True):
            lim.charge_enable = ce
            lim.discharge_enable = de
            b = frame(encode(enc, s, lim), 0x372)
            assert (u16(b, 2), u16(b, 4)) == (0 if ce else 2, 0 if de else 2)


def test_victron_16_bit_clamping():
    s, lim = snap_limits()
    lim.ccl_da = 40000
    lim.dcl_da = -40000
    lim.soc_pct = 100
    lim.capacity_ah = 70000
    s.pack_mv = 400000
    s.current_ma = -4000000
    s.cell_max_mv = 70000
    for enc in (VictronEncoder(), PylonPlusEncoder()):
        encode(enc, s, lim)
        b = frame(enc, 0x351)
        assert (s16(b, 2), s16(b, 4)) == (32767, -32768)
        b = frame(enc, 0x356)
        assert (s16(b, 0), s16(b, 2)) == (32767, -32768)
        assert u16(frame(enc, 0x355), 4) == 10000
        assert u16(frame(enc, 0x373), 2) == 65535
        assert u16(frame(enc, 0x379), 0) == 65535
        assert u16(frame(enc, 0x35F), 4) == 65535


def test_victron_voltage_limits_clamped_to_u16():
    s, lim = snap_limits()
    lim.cvl_dv = 70000
    lim.dvl_dv = -3
    b = frame(encode(VictronEncoder(), s, lim), 0x351)
    assert (u16(b, 0), u16(b, 6)) == (65535, 0)


def test_kelvin_rounding():
    s, lim = snap_limits()
    enc = VictronEncoder()
    for dc, k in ((0, 273), (-2731, 0), (138, 287), (139, 287), (170, 290), (-200, 253), (-4, 273),
                  (-6, 273), (-7, 272), (1000, 373)):
        for i in range(1, S.TEMP_SLOTS):
            s.temps[i] = dc
        b = frame(encode(enc, s, lim), 0x373)
        assert (u16(b, 4), u16(b, 6)) == (k, k), dc


def test_byd_capture_0x373():
    # a real BYD LVS on a GX: EA 0C 01 0D 1F 01 22 01 = 3.306 / 3.329 V, 287 / 290 K
    s, lim = snap_limits()
    s.temps[1] = 140
    s.temps[2] = 170
    for i in range(3, S.TEMP_SLOTS):
        s.temps[i] = S.NO_TEMP
    for enc in (VictronEncoder(), PylonPlusEncoder()):
        assert bytes(frame(encode(enc, s, lim), 0x373)) == bytes.fromhex("EA0C010D1F012201")


def test_pylon_plus_is_pylon_plus_extras():
    s, lim = snap_limits()
    flags = F.CELL_OV | F.LINK_LOST
    plus = encode(PylonPlusEncoder("PYLON", 3), s, lim, flags)
    base = PylonEncoder("PYLON", 3)
    base.encode(s, lim, flags)
    assert list(plus.ids[:6]) == list(base.ids) == [0x35E, 0x351, 0x355, 0x356, 0x359, 0x35C]
    assert list(plus.ids[6:]) == [0x35A, 0x35F, 0x372, 0x373, 0x379]
    for i in range(6):
        want = bytearray(base.frames[i])
        if base.ids[i] == 0x355:
            want[4] = 8000 & 0xFF
            want[5] = 8000 >> 8
        assert bytes(plus.frames[i]) == bytes(want), hex(base.ids[i])
    b = frame(plus, 0x35A)
    assert pair(b, 0, 1) == 1 and pair(b, 0, 11) == 1 and pair(b, 0, 2) == 2
    b = frame(plus, 0x35F)
    assert bytes(b[0:2]) == b"LI" and u16(b, 4) == 280
    assert bytes(frame(plus, 0x35E)) == b"PYLON   "


# ------------------------------------------------------------------------- inverter frames


def sma_state(enc):
    return (enc.si_dv, enc.si_da, enc.si_dc, enc.si_soc, enc.si_soh, enc.si_procedure, enc.si_state,
            enc.si_error, enc.si_setpoint_dv, enc.si_relays, enc.seen, tuple(enc.rx_text()))


F305 = bytes.fromhex("09029CFFFA002003")  # 52.1 V, -10.0 A, 25.0 C, 80.0 %
F306 = bytes.fromhex("62000A0100002802")  # SOH 98, procedure 10, operating, 0, 55.2 V
F307 = bytes.fromhex("0300000000000000")


def test_sma_rx_frames():
    enc = SmaEncoder()
    assert enc.rx_text() == []
    assert enc.on_rx(0x305, F305, 8, 0) == RX_HEARTBEAT
    assert (enc.si_dv, enc.si_da, enc.si_dc, enc.si_soc) == (521, -100, 250, 800)
    assert enc.on_rx(0x306, F306, 8, 0) == RX_IGNORED
    assert (enc.si_soh, enc.si_procedure, enc.si_state, enc.si_error, enc.si_setpoint_dv) == (98, 10, 1, 0, 552)
    assert enc.on_rx(0x307, F307, 8, 0) == RX_IGNORED
    assert enc.si_relays == 3
    assert enc.on_rx(0x307, b"\x01\x80", 2, 0) == RX_IGNORED
    assert enc.si_relays == 0x8001
    text = enc.rx_text()
    assert text == ["SI 0x305: 52.1 V, -10.0 A (- = charging), 25.0 C, SOC 80.0 %",
                    "SI 0x306: state operating, error 0, charge set-point 55.2 V, SOH 98 %, procedure 10 "
                    "(external BMS)",
                    "SI 0x307: relays 0x8001"], text
    assert enc.on_rx(0x306, bytes.fromhex("62000A042A002802"), 8, 0) == RX_IGNORED
    assert "state failure, error 42" in enc.rx_text()[1]


def test_sma_malformed_frames_change_nothing():
    enc = SmaEncoder()
    enc.on_rx(0x305, F305, 8, 0)
    enc.on_rx(0x306, F306, 8, 0)
    enc.on_rx(0x307, F307, 8, 0)
    before = sma_state(enc)
    junk = b"\x55" * 8
    cases = [(0x305, junk, 7), (0x305, junk[:7], 7), (0x306, junk[:6], 6), (0x307, junk[:1], 1),
             (0x305, junk, 0)]
    for can_id, data, n in cases:
        assert enc.on_rx(can_id, data, n, 0) == RX_IGNORED, (hex(can_id), n)
    for can_id in (0x305, 0x306, 0x307):
        for fl in (FLAG_RTR, FLAG_EXT_ID, FLAG_RTR | FLAG_EXT_ID):
            assert enc.on_rx(can_id, junk, 8, fl) == RX_IGNORED
    for can_id in (0x304, 0x351, 0x35A, 0x1305):
        assert enc.on_rx(can_id, junk, 8, 0) == RX_IGNORED
    assert enc.on_rx(0x305, junk, 9, 0) == RX_IGNORED  # n beyond the data
    assert sma_state(enc) == before


def test_victron_rx_frames():
    enc = VictronEncoder()
    assert enc.rx_text() == []
    assert enc.on_rx(0x305, bytes(8), 8, 0) == RX_HEARTBEAT
    assert enc.on_rx(0x305, b"", 0, 0) == RX_HEARTBEAT  # content unused: any length
    assert enc.on_rx(0x305, bytes(8), 8, FLAG_RTR) == RX_IGNORED
    assert enc.on_rx(0x305, bytes(8), 8, FLAG_EXT_ID) == RX_IGNORED
    assert enc.on_rx(0x307, bytes.fromhex("1234567856495800"), 8, 0) == RX_IGNORED  # 'VIX'
    assert enc.on_rx(0x307, bytes.fromhex("12345678564943"), 7, 0) == RX_IGNORED  # short
    assert enc.on_rx(0x307, bytes.fromhex("1234567856494300"), 8, FLAG_EXT_ID) == RX_IGNORED
    assert not enc.gx and enc.rx_text() == []
    assert enc.on_rx(0x307, bytes.fromhex("1234567856494300"), 8, 0) == RX_IGNORED
    assert enc.gx
    assert enc.rx_text() == ["GX 0x307: Victron GX identified ('VIC', bytes 0-3 12 34 56 78)"]
    assert enc.on_rx(0x306, bytes(8), 8, 0) == RX_IGNORED


def test_pylon_plus_rx_is_pylons():
    enc = PylonPlusEncoder()
    assert enc.on_rx(0x305, bytes(8), 8, 0) == RX_HEARTBEAT
    assert enc.on_rx(0x305, bytes(8), 8, FLAG_RTR) == RX_IGNORED
    assert enc.on_rx(0x307, bytes(8), 8, 0) == RX_IGNORED


def accepts(filters, can_id):
    for fid, mask, fl in filters:
        if not fl & FLAG_EXT_ID and (can_id & mask) == (fid & mask):
            return True
    return False


def test_rx_filters():
    for enc in (SmaEncoder(), VictronEncoder()):
        for can_id in (0x305, 0x306, 0x307):
            assert accepts(enc.rx_filters, can_id)
        for can_id in (0x300, 0x301, 0x308, 0x351, 0x35A):
            assert not accepts(enc.rx_filters, can_id)


# ------------------------------------------------------------------------- no allocation


def test_encode_and_on_rx_allocate_nothing():
    s, lim = snap_limits()
    d305 = bytearray(F305)
    d306 = bytearray(F306)
    d307 = bytearray(b"VIC") + bytearray(5)
    vic = bytearray(bytes.fromhex("1234567856494300"))
    for enc in encoders():
        for flags in (0, (1 << 23) - 1, F.LINK_LOST):
            run_locked(enc.encode, s, lim, flags)
        assert run_locked(enc.on_rx, 0x305, d305, 8, 0) == RX_HEARTBEAT
        run_locked(enc.on_rx, 0x306, d306, 8, 0)
        run_locked(enc.on_rx, 0x307, d307, 8, 0)
        run_locked(enc.on_rx, 0x307, vic, 8, 0)
        run_locked(enc.on_rx, 0x305, d305, 8, FLAG_RTR)
        run_locked(enc.on_rx, 0x351, d305, 8, 0)
    lim.cvl_dv = 0  # the SMA "below 41 V" path
    lim.dvl_dv = 9999
    run_locked(SmaEncoder().encode, s, lim, 0)
    for i in range(1, S.TEMP_SLOTS):
        s.temps[i] = S.NO_TEMP  # the no-sensor path of 0x356 / 0x373
    for enc in encoders():
        run_locked(enc.encode, s, lim, 0)


# ------------------------------------------------------------------------- registry


def test_from_config_defaults():
    for name, cls, nm, silent in (("sma", SmaEncoder, b"JK-BMS  ", 10),
                                  ("victron", VictronEncoder, b"JK-BMS  ", 30),
                                  ("pylon_plus", PylonPlusEncoder, b"PYLON   ", 10)):
        cfg = C.defaults()
        cfg["protocol"] = name
        enc = protocols.make(cfg)
        assert type(enc) is cls and protocols.load(name) is cls
        assert bytes(frame(enc, 0x35E)) == nm
        assert enc.SILENT_S == silent and enc.HEARTBEAT == "0x305"
        assert enc.period_ms is None
        assert not enc.NAME.upper().startswith("PYLON") or name == "pylon_plus"
        cfg["battery_name"] = "BYD"
        assert bytes(frame(protocols.make(cfg), 0x35E)) == b"BYD     "
