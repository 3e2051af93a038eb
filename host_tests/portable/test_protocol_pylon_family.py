# The Pylontech family: protocols.luxpower and protocols.deye on top of
# protocols.pylon (docs/inverter-can.md "Luxpower", "Deye"). Field placement
# for hand-built states, byte by byte from the spec tables; the bytes the
# variants leave alone equal Pylon's; Luxpower's 0x300 command and malformed
# frames; encode and on_rx allocation-free under heap_lock; each built by
# protocols.make from the app.config defaults. CPython and MicroPython.

from fakes import load_pb_pack
from mpcompat import collect, run_locked

import protocols
from app import config as C
from canport.base import filter_accepts
from charge.limits import Limits
from charge.policy import ChargePolicy
from pack import flags as F
from pack import snapshot as S
from protocols.base import RX_COMMAND, RX_HEARTBEAT, RX_IGNORED
from protocols.deye import DeyeEncoder
from protocols.luxpower import LuxpowerEncoder
from protocols.pylon import PylonEncoder
from sources.base import FRESH

I_NAME, I_LIMITS, I_SOC, I_MEASURE, I_ALARMS, I_REQUEST = 0, 1, 2, 3, 4, 5


def u16(b, off):
    return b[off] | (b[off + 1] << 8)


def s16(b, off):
    v = u16(b, off)
    return v - 0x10000 if v & 0x8000 else v


def state(temps=(251, 238, 244, S.NO_TEMP, S.NO_TEMP), mos=415):
    s = S.PackSnapshot()
    s.cell_count = 16
    for i in range(16):
        s.cells[i] = 3300 + (i * 7) % 23
    s.cells[5] = 3412  # the highest cell
    s.cells[11] = 3271  # the lowest
    s.cell_stats()
    s.pack_mv = 52916
    s.current_ma = -27349
    s.soc_pct = 77
    s.soh_pct = 96
    s.cycles = 412
    s.temps[S.T_MOS] = mos  # never reported: the battery sensors only
    for i in range(5):
        s.temps[1 + i] = temps[i]
    s.have = S.HAVE_FOR_INVERTER | S.HAVE_SOH | S.HAVE_TEMPS | S.HAVE_CYCLES | S.HAVE_CELLS
    s.modules = 2
    return s


def limits(capacity_ah=280):
    lim = Limits()
    lim.cvl_dv, lim.ccl_da, lim.dcl_da, lim.dvl_dv = 552, 1234, 1500, 470
    lim.charge_enable = True
    lim.discharge_enable = True
    lim.force_charge = True
    lim.soc_pct = 76
    lim.capacity_ah = capacity_ah
    lim.flags = F.CELL_OV | F.LINK_LOST
    return lim


def encoded(cls, snap, lim, name="PYLON", modules=0):
    enc = cls(name, modules)
    enc.encode(snap, lim, lim.flags)
    return enc


def pylon_frames(snap, lim, name="PYLON", modules=0):
    return [bytes(f) for f in encoded(PylonEncoder, snap, lim, name, modules).frames]


# ------------------------------------------------------------------ Luxpower


def test_luxpower_places_every_field():
    snap = state()
    lim = limits()
    enc = encoded(LuxpowerEncoder, snap, lim)
    f = enc.frames
    assert list(enc.ids) == [0x35E, 0x351, 0x355, 0x356, 0x359, 0x35C]
    assert bytes(f[I_NAME]) == b"PYLON   "
    # 0x351 as Pylon: CVL, CCL, DCL, DVL (Luxpower: discharge cut-off voltage)
    b = f[I_LIMITS]
    assert (u16(b, 0), s16(b, 2), s16(b, 4), u16(b, 6)) == (552, 1234, 1500, 470)
    # 0x355: SOC, SOH, max cell mV, min cell mV
    assert (u16(f[I_SOC], 0), u16(f[I_SOC], 2), u16(f[I_SOC], 4), u16(f[I_SOC], 6)) == (76, 96, 3412, 3271)
    # 0x356: 0.01 V, 0.1 A, max / min battery temperature (MOSFET excluded)
    assert (s16(f[I_MEASURE], 0), s16(f[I_MEASURE], 2)) == (5292, -273)
    assert (s16(f[I_MEASURE], 4), s16(f[I_MEASURE], 6)) == (251, 238)
    # 0x359: Pylon's alarm bits, module count, capacity Ah instead of 'P' 'N', byte 7 zero
    a = f[I_ALARMS]
    assert a[0] == 0x02 and a[1] == 0x08 and a[2] == 0 and a[3] == 0x08  # OV, system error, comm fail
    assert a[4] == 2 and u16(a, 5) == 280 and a[7] == 0
    # 0x35C: enables + force charge (bit 4, Luxpower's "forced charge request 1"), cycles in bytes 2-3
    r = f[I_REQUEST]
    assert r[0] == 0x80 | 0x40 | 0x10 and r[1] == 0 and u16(r, 2) == 412
    assert bytes(r[4:8]) == bytes(4)


def test_luxpower_differs_from_pylon_only_where_the_document_says():
    for modules in (0, 1, 7):
        snap = state()
        lim = limits()
        lux = [bytes(b) for b in encoded(LuxpowerEncoder, snap, lim, "EG4-LL", modules).frames]
        pyl = pylon_frames(snap, lim, "EG4-LL", modules)
        changed = {I_SOC: (4, 5, 6, 7), I_MEASURE: (4, 5, 6, 7), I_ALARMS: (5, 6), I_REQUEST: (2, 3)}
        for i in range(6):
            for k in range(8):
                if k not in changed.get(i, ()):
                    assert lux[i][k] == pyl[i][k], (i, k)
        assert lux[I_ALARMS][4] == (modules or 2)


def test_luxpower_temperatures():
    lim = limits()
    # one sensor: max = min + 0.1 degC (YamBMS's EG4 workaround), never below the reading
    f = encoded(LuxpowerEncoder, state((-53, S.NO_TEMP, S.NO_TEMP, S.NO_TEMP, S.NO_TEMP)), lim).frames
    assert (s16(f[I_MEASURE], 4), s16(f[I_MEASURE], 6)) == (-52, -53)
    # equal readings on several sensors: the same
    f = encoded(LuxpowerEncoder, state((300, 300, S.NO_TEMP, 300, S.NO_TEMP)), lim).frames
    assert (s16(f[I_MEASURE], 4), s16(f[I_MEASURE], 6)) == (301, 300)
    # different readings: as they are; the hot MOSFET is not a battery temperature
    f = encoded(LuxpowerEncoder, state((-12, 87, 40, 3, 86), mos=900), lim).frames
    assert (s16(f[I_MEASURE], 4), s16(f[I_MEASURE], 6)) == (87, -12)
    # no battery sensor: 0 / 0 (as Pylon's 0 average), whatever the MOSFET says
    none = (S.NO_TEMP,) * 5
    f = encoded(LuxpowerEncoder, state(none, mos=500), lim).frames
    assert bytes(f[I_MEASURE][4:8]) == bytes(4)
    # the top of the 16-bit range does not overflow
    f = encoded(LuxpowerEncoder, state((32767,) + none[1:]), lim).frames
    assert (s16(f[I_MEASURE], 4), s16(f[I_MEASURE], 6)) == (32767, 32767)


def test_luxpower_clamps_capacity_and_cycles_to_16_bits():
    snap = state()
    snap.cycles = 70000
    f = encoded(LuxpowerEncoder, snap, limits(capacity_ah=65536)).frames
    assert u16(f[I_ALARMS], 5) == 0xFFFF and u16(f[I_REQUEST], 2) == 0xFFFF
    snap.cycles = 0
    f = encoded(LuxpowerEncoder, snap, limits(capacity_ah=0)).frames
    assert u16(f[I_ALARMS], 5) == 0 and u16(f[I_REQUEST], 2) == 0


def test_luxpower_reencodes_in_place():
    # a second state overwrites every byte the first wrote (no leftovers)
    enc = LuxpowerEncoder()
    enc.encode(state(), limits(), F.CELL_OV)
    snap = state((S.NO_TEMP,) * 5)
    snap.cycles = 0
    snap.cell_count = 0
    snap.cell_stats()
    lim = limits(capacity_ah=0)
    lim.flags = 0
    enc.encode(snap, lim, 0)
    fresh = encoded(LuxpowerEncoder, snap, lim)
    for i in range(6):
        assert bytes(enc.frames[i]) == bytes(fresh.frames[i]), i
    assert bytes(enc.frames[I_SOC][4:8]) == bytes(4)


def _rx(enc, can_id, data, n=None, flags=0):
    buf = memoryview(bytearray(data))
    return enc.on_rx(can_id, buf, len(data) if n is None else n, flags)


def test_luxpower_0x300_command_classification():
    enc = LuxpowerEncoder()
    assert enc.rx_text() == []
    assert _rx(enc, 0x300, [1, 0, 0, 0, 0, 0, 0, 0]) == RX_COMMAND
    assert "shutdown" in enc.command and "0x300" in enc.command
    assert enc.rx_text() == ["last 0x300: 01 00 00 00 00 00 00 00"]
    assert _rx(enc, 0x300, [0xFF]) == RX_COMMAND  # bit 0 set, any other bits, any length 1-8
    assert enc.rx_text() == ["last 0x300: FF"]
    assert _rx(enc, 0x300, [0x03, 0x55]) == RX_COMMAND
    # bit 0 clear: not a command (kept for the console all the same)
    assert _rx(enc, 0x300, [0, 0, 0, 0, 0, 0, 0, 0]) == RX_IGNORED
    assert _rx(enc, 0x300, [0xFE, 1, 1, 1, 1, 1, 1, 1]) == RX_IGNORED
    assert enc.rx_text() == ["last 0x300: FE 01 01 01 01 01 01 01"]
    # malformed: no byte 0, longer than 8, n beyond the buffer, RTR, 29-bit
    assert _rx(enc, 0x300, []) == RX_IGNORED
    assert _rx(enc, 0x300, [1] * 9) == RX_IGNORED
    assert _rx(enc, 0x300, [1, 0], n=3) == RX_IGNORED
    assert _rx(enc, 0x300, [1] * 8, flags=1) == RX_IGNORED
    assert _rx(enc, 0x300, [1] * 8, flags=2) == RX_IGNORED
    assert enc.rx_text() == ["last 0x300: FE 01 01 01 01 01 01 01"]  # none of them recorded
    # 0x305 stays the heartbeat (8 bytes, 11-bit data frame); other ids are ignored
    assert _rx(enc, 0x305, [0] * 8) == RX_HEARTBEAT
    assert _rx(enc, 0x305, [0] * 7) == RX_IGNORED
    assert _rx(enc, 0x305, [0] * 8, flags=1) == RX_IGNORED
    assert _rx(enc, 0x301, [1] * 8) == RX_IGNORED
    assert _rx(enc, 0x200, [1] * 8) == RX_IGNORED


def test_luxpower_filters_pass_0x300_and_0x305_only():
    f = LuxpowerEncoder().rx_filters
    assert filter_accepts(f, 0x300, 0) and filter_accepts(f, 0x305, 0)
    for can_id in (0x301, 0x304, 0x306, 0x351, 0x000, 0x7FF):
        assert not filter_accepts(f, can_id, 0), hex(can_id)
    assert not filter_accepts(f, 0x300, 2)  # a 29-bit id


def test_pylon_and_deye_ignore_0x300():
    for cls in (PylonEncoder, DeyeEncoder):
        enc = cls()
        assert _rx(enc, 0x300, [1] * 8) == RX_IGNORED
        assert _rx(enc, 0x305, [0] * 8) == RX_HEARTBEAT
        assert not filter_accepts(enc.rx_filters, 0x300, 0) and filter_accepts(enc.rx_filters, 0x305, 0)


# ---------------------------------------------------------------------- Deye


def test_deye_is_pylon_plus_0x379():
    snap = state()
    lim = limits()
    enc = encoded(DeyeEncoder, snap, lim)
    assert list(enc.ids) == [0x35E, 0x351, 0x355, 0x356, 0x359, 0x35C, 0x379]
    assert len(enc.frames) == 7 and all(len(b) == 8 for b in enc.frames)
    pyl = pylon_frames(snap, lim)
    for i in range(6):
        assert bytes(enc.frames[i]) == pyl[i], i
    assert bytes(enc.frames[I_MEASURE][4:6]) == pyl[I_MEASURE][4:6]  # the battery sensors' mean
    assert bytes(enc.frames[I_ALARMS][5:7]) == b"PN"
    assert DeyeEncoder.NAME == "PYLON" and bytes(enc.frames[I_NAME]) == b"PYLON   "
    b = enc.frames[6]
    assert u16(b, 0) == 280 and bytes(b[2:8]) == bytes(6)


def test_deye_capacity_clamped_and_rewritten():
    enc = DeyeEncoder()
    enc.encode(state(), limits(capacity_ah=123456), 0)
    assert bytes(enc.frames[6]) == b"\xff\xff" + bytes(6)
    enc.encode(state(), limits(capacity_ah=0), 0)
    assert bytes(enc.frames[6]) == bytes(8)
    enc.encode(state(), limits(capacity_ah=1000), 0)
    assert bytes(enc.frames[6]) == b"\xe8\x03" + bytes(6)


# ------------------------------------------------------------ no allocation


def _encode_all(enc, snaps, lim):
    for i in range(len(snaps)):
        enc.encode(snaps[i], lim, lim.flags)
    return enc.frames[1][0]


def _rx_all(enc, frames):
    total = 0
    for i in range(len(frames)):
        fr = frames[i]
        total += enc.on_rx(fr[0], fr[1], fr[2], fr[3])
    return total


def test_encode_and_on_rx_allocate_nothing():
    snaps = [state(), state((S.NO_TEMP,) * 5), state((77, S.NO_TEMP, S.NO_TEMP, S.NO_TEMP, S.NO_TEMP))]
    lim = limits(capacity_ah=70000)
    m = memoryview(bytearray([1, 0, 0, 0, 0, 0, 0, 0]))
    z = memoryview(bytearray(8))
    frames = [(0x300, m, 8, 0), (0x300, z, 8, 0), (0x300, m, 0, 0), (0x300, m, 9, 0), (0x300, m, 8, 1),
              (0x300, m, 8, 2), (0x300, m, 1, 0), (0x305, z, 8, 0), (0x305, z, 5, 0), (0x123, z, 8, 0)]
    for cls in (PylonEncoder, LuxpowerEncoder, DeyeEncoder):
        enc = cls()
        collect()
        run_locked(_encode_all, enc, snaps, lim)
        got = run_locked(_rx_all, enc, frames)
        if cls is LuxpowerEncoder:
            assert got == 2 * RX_COMMAND + RX_HEARTBEAT, got
        else:
            assert got == RX_HEARTBEAT, (cls, got)


# --------------------------------------------------- built from the config


def test_make_from_config_defaults():
    for name, cls in (("pylon", PylonEncoder), ("luxpower", LuxpowerEncoder), ("deye", DeyeEncoder)):
        cfg = C.defaults()
        cfg["protocol"] = name
        enc = protocols.make(cfg)
        # by name: another test may have re-imported the protocol modules (a new class object)
        assert type(enc) is protocols.load(name) and type(enc).__name__ == cls.__name__, name
        assert enc.SILENT_S == 10 and enc.HEARTBEAT == "0x305" and enc.NAME == "PYLON", name
        assert bytes(enc.frames[0]) == b"PYLON   " and enc.modules == cfg["modules"], name
        # and from the firmware's own decision on a real pack
        snap = S.PackSnapshot()
        load_pb_pack(snap)
        pol = ChargePolicy(cfg, 0)
        for t in range(0, 60000, 1000):
            assert pol.decide(snap, FRESH, t)
        lim = pol.lim
        enc.encode(snap, lim, lim.flags)
        f = enc.frames
        assert u16(f[I_LIMITS], 0) == lim.cvl_dv and u16(f[I_LIMITS], 6) == lim.dvl_dv, name
        assert s16(f[I_MEASURE], 0) == (snap.pack_mv + 5) // 10, name
        if name == "luxpower":
            assert u16(f[I_SOC], 4) == snap.cell_max_mv and u16(f[I_SOC], 6) == snap.cell_min_mv
            assert u16(f[I_ALARMS], 5) == lim.capacity_ah > 0
            assert u16(f[I_REQUEST], 2) == snap.cycles
        elif name == "deye":
            assert u16(f[6], 0) == lim.capacity_ah > 0
        else:
            assert bytes(f[I_ALARMS][5:7]) == b"PN"
        cfg["battery_name"] = "JK-BANK"
        assert bytes(protocols.make(cfg).frames[0]) == b"JK-BANK ", name
