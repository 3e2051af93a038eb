# protocols.growatt (Growatt native LV CAN, "L51"): the frames as the
# protocol document's tables lay them out (big-endian, docs/inverter-can.md
# "Growatt"), checked byte by byte for a hand-built state; the pack-flag ->
# T1..T4 mapping one flag at a time; the status word, enable and force bits;
# the wire clamping; the 0x301 query (and malformed ones); no allocation in
# encode / on_rx under the heap lock; and the gateway (app.can_io.CanTx)
# answering each query with the whole set at once, never twice within half a
# period, with periodic bursts once the queries stop. CPython and MicroPython.

from fakes import FakeCan, FakeRecovery, load_pb_pack
from mpcompat import run_locked

import protocols
from app import can_io
from app import config as C
from app.can_io import CanTx
from charge.limits import Limits
from charge.policy import ChargePolicy
from pack import flags as F
from pack import snapshot as S
from protocols import growatt as G
from protocols.base import RX_IGNORED, RX_REQUEST
from sources.base import Freshness

QUERY = b"\x11\x22\x33\x44\x55\x66\x77\x88"
IDS = (0x311, 0x312, 0x313, 0x314, 0x315, 0x316, 0x317, 0x318, 0x319, 0x320, 0x321)

# pack flag -> ((0x312 byte, bit), ...) per the T1..T4 tables (T1 = byte 0 ... T4 = byte 3)
FLAG_BITS = (
    (F.CELL_OV, ((0, 4),)),
    (F.PACK_OV, ((0, 2),)),
    (F.CELL_UV, ((0, 3),)),
    (F.PACK_UV, ((0, 1),)),
    (F.CHARGE_OT, ((1, 6),)),
    (F.DISCHARGE_OT, ((1, 7),)),
    (F.MOS_OT, ((1, 6), (1, 7))),
    (F.CHARGE_UT, ((1, 4),)),
    (F.DISCHARGE_UT, ((3, 5),)),
    (F.CHARGE_OC, ((0, 6),)),
    (F.CHARGE_SC, ((0, 6),)),
    (F.DISCHARGE_OC, ((0, 7),)),
    (F.DISCHARGE_SC, ((0, 5),)),
    (F.CELL_COUNT, ((1, 3),)),
    (F.CURRENT_SENSOR, ((1, 3),)),
    (F.INTERNAL_COMM, ((1, 3), (3, 0))),
    (F.CHARGE_FET_FAULT, ((1, 3),)),
    (F.DISCHARGE_FET_FAULT, ((1, 3),)),
    (F.TEMP_SENSOR, ((1, 3),)),
    (F.BATTERY_OT_WARN, ((3, 6), (3, 7))),
    (F.WIRE_RESISTANCE, ()),
    (F.LINK_LOST, ((1, 3), (3, 0))),
    (F.IMPLAUSIBLE, ((1, 3),)),
)


def frames(enc):
    return {enc.ids[i]: bytes(enc.frames[i]) for i in range(len(enc.ids))}


def hexf(b):
    return "".join("%02X" % x for x in b)


def hand_built():
    """One 16-cell pack, discharging 12.345 A."""
    s = S.PackSnapshot()
    s.cell_count = 16
    for i in range(16):
        s.cells[i] = 3300 + i
    s.cell_stats()
    s.pack_mv = 53210
    s.current_ma = -12345
    s.temps[S.T_MOS] = 450  # hotter than any cell: must not be sent
    s.temps[1] = 251
    s.temps[2] = 287
    s.soh_pct = 97
    s.have = S.HAVE_SOH | S.HAVE_CELLS
    s.remaining_mah = 123456
    s.full_mah = 280000
    s.cycles = 321
    lim = Limits()
    lim.cvl_dv = 552
    lim.ccl_da = 1000
    lim.dcl_da = 1500
    lim.charge_enable = True
    lim.discharge_enable = True
    lim.soc_pct = 57
    return s, lim


def test_hand_built_state_byte_by_byte():
    s, lim = hand_built()
    enc = G.GrowattEncoder()
    enc.encode(s, lim, 0)
    assert tuple(enc.ids) == IDS
    assert all(len(f) == 8 for f in enc.frames)
    got = frames(enc)
    # 0x311: CV 55.2 V, CCL 100.0 A, DCL 150.0 A, status word 0x0063 (bits 0-7 in byte 7):
    # state 3 discharging, bit 5 discharge enable, bit 6 charge enable
    assert hexf(got[0x311]) == "0228" "03E8" "05DC" "0063"
    # 0x312: T1..T4 clear, 1 pack, manufacturer code "JK", 16 cells
    assert hexf(got[0x312]) == "00000000" "01" "4A4B" "10"
    # 0x313: 53.21 V, -12.3 A (two's complement FF85), max cell temp 28.7 degC (not the MOSFET's 45.0),
    # SOC 57 %, SOH 97 %
    assert hexf(got[0x313]) == "14C9" "FF85" "011F" "39" "61"
    # 0x314: 123.46 Ah (rounded to 10 mAh), 280.00 Ah, delta 15 mV, 321 cycles
    assert hexf(got[0x314]) == "303A" "6D60" "000F" "0141"
    # 0x315-0x318: cells 1..16, high byte first
    assert hexf(got[0x315]) == "0CE4" "0CE5" "0CE6" "0CE7"
    assert hexf(got[0x316]) == "0CE8" "0CE9" "0CEA" "0CEB"
    assert hexf(got[0x317]) == "0CEC" "0CED" "0CEE" "0CEF"
    assert hexf(got[0x318]) == "0CF0" "0CF1" "0CF2" "0CF3"
    # 0x319: LFP, discharge + charge enable; max 3315 mV, min 3300 mV, max cell 16, min cell 1, no faulty pack
    assert hexf(got[0x319]) == "C0" "0CF3" "0CE4" "10" "01" "00"
    # 0x320: "JK", HW 1, SW 1, no date-time; 0x321: no firmware update
    assert hexf(got[0x320]) == "4A4B" "01" "01" "00000000"
    assert hexf(got[0x321]) == "00" * 8


def test_every_pack_flag_alone():
    s, lim = hand_built()
    enc = G.GrowattEncoder()
    seen = 0
    for flag, bits in FLAG_BITS:
        seen |= flag
        enc.encode(s, lim, flag)
        b = enc.frames[1]
        want = [0, 0, 0, 0]
        for byte, bit in bits:
            want[byte] |= 1 << bit
        assert list(b[0:4]) == want, (flag, list(b[0:4]), want)
        # status bit 2 "error byte valid" exactly when a T byte carries something
        assert bool(enc.frames[0][7] & 0x04) == bool(bits), flag
        assert b[2] == 0  # T3: no pack flag is a voltage or current warning
    assert seen == (1 << 23) - 1  # every neutral flag is in the table
    enc.encode(s, lim, 0)
    assert enc.frames[1][0:4] == b"\x00\x00\x00\x00" and not enc.frames[0][7] & 0x04


def test_never_set_bits():
    s, lim = hand_built()
    enc = G.GrowattEncoder()
    enc.encode(s, lim, (1 << 23) - 1)
    b = enc.frames[1]
    assert b[0] == 0xFE  # T1 bit 0 soft-start fail never
    assert b[1] == 0xD8  # T2: no delta-V fail (b2), no under-temp discharge (b5), b0-1 undefined
    assert b[2] == 0x00
    assert b[3] == 0xE1  # T4: no UTC (b4), delta-V (b2), before-turn-off (b1)


def test_enable_and_force_bits():
    s, lim = hand_built()
    enc = G.GrowattEncoder()
    for ce in (False, True):
        for de in (False, True):
            for fc in (False, True):
                lim.charge_enable, lim.discharge_enable, lim.force_charge = ce, de, fc
                enc.encode(s, lim, 0)
                w = enc.frames[0][7]
                assert bool(w & 0x40) == ce and bool(w & 0x20) == de
                assert w & 0x98 == 0 and enc.frames[0][6] == 0  # other status bits 0
                r = enc.frames[8][0]
                assert r == (0x80 if ce else 0) | (0x40 if de else 0) | (0x20 if fc else 0)


def test_chemistry_bits():
    s, lim = hand_built()
    lim.charge_enable = lim.discharge_enable = False
    for chem, code in (("LFP", 0), ("NMC", 1), ("LTO", 2)):
        enc = G.GrowattEncoder("JK-BMS", 0, chem)
        enc.encode(s, lim, 0)
        assert enc.frames[8][0] == code
    try:
        G.GrowattEncoder("JK-BMS", 0, "LEAD")
    except ValueError:
        pass
    else:
        raise AssertionError("unknown chemistry accepted")


def test_status_state_from_the_current():
    s, lim = hand_built()
    lim.charge_enable = lim.discharge_enable = False
    enc = G.GrowattEncoder()
    for ma, state in ((0, 1), (999, 1), (-999, 1), (1000, 2), (25000, 2), (-1000, 3), (-80000, 3)):
        s.current_ma = ma
        enc.encode(s, lim, 0)
        assert enc.frames[0][7] & 0x03 == state, (ma, enc.frames[0][7])


def be16(b, off, signed=False):
    v = (b[off] << 8) | b[off + 1]
    return v - 0x10000 if signed and v >= 0x8000 else v


def test_clamping():
    s, lim = hand_built()
    enc = G.GrowattEncoder()
    lim.cvl_dv, lim.ccl_da, lim.dcl_da, lim.soc_pct = 70000, -5, 65536, 150
    s.pack_mv, s.current_ma = 400000, -5000000
    s.remaining_mah, s.full_mah = 700000, 655350  # 700 Ah saturates; 655.35 Ah is the largest value
    s.cell_delta_mv, s.cycles = 70000, 70000
    s.soh_pct = 120
    s.temps[1] = s.temps[2] = S.NO_TEMP  # only the MOSFET sensor: 0
    enc.encode(s, lim, 0)
    f = frames(enc)
    assert (be16(f[0x311], 0), be16(f[0x311], 2), be16(f[0x311], 4)) == (0xFFFF, 0, 0xFFFF)
    assert be16(f[0x313], 0, True) == 32767 and be16(f[0x313], 2, True) == -32768
    assert be16(f[0x313], 4, True) == 0 and f[0x313][6] == 100 and f[0x313][7] == 100
    assert be16(f[0x314], 0) == 0xFFFF and be16(f[0x314], 2) == 65535
    assert be16(f[0x314], 4) == 0xFFFF and be16(f[0x314], 6) == 0xFFFF
    s.pack_mv, s.current_ma = -400000, 5000000
    s.have = 0  # no SOH reported: 100
    s.soh_pct = 0
    s.temps[3] = -215
    enc.encode(s, lim, 0)
    f = frames(enc)
    assert be16(f[0x313], 0, True) == -32768 and be16(f[0x313], 2, True) == 32767
    assert be16(f[0x313], 4, True) == -215 and f[0x313][7] == 100


def test_pack_count_and_cells_several_packs():
    s, lim = hand_built()
    enc = G.GrowattEncoder()
    for mods, sent in ((0, 1), (1, 1), (3, 3), (254, 254), (300, 254)):
        s.modules = mods
        enc.encode(s, lim, 0)
        assert enc.frames[1][4] == sent
        cells = b"".join(bytes(enc.frames[i]) for i in range(4, 8))
        # an aggregate's cells[] are per-position maxima, not one pack's cells: zeros
        assert (cells != bytes(32)) == (mods == 1), mods
        assert enc.frames[8][1:7] == bytes((0x0C, 0xF3, 0x0C, 0xE4, 16, 1))  # min / max stay
    enc = G.GrowattEncoder("JK-BMS", 2)  # configured modules = 2 are reported, the cells still sent
    s.modules = 1
    enc.encode(s, lim, 0)
    assert enc.frames[1][4] == 2 and bytes(enc.frames[4])[0:2] == b"\x0C\xE4"


def test_more_than_16_cells():
    s, lim = hand_built()
    s.cell_count = 20
    for i in range(20):
        s.cells[i] = 2400 + i
    s.cell_stats()
    enc = G.GrowattEncoder()
    enc.encode(s, lim, 0)
    assert b"".join(bytes(enc.frames[i]) for i in range(4, 8)) == bytes(32)
    assert enc.frames[1][7] == 20 and enc.frames[8][5] == 20 and enc.frames[8][6] == 1
    s.cell_count = 8  # fewer than 16: the rest 0
    s.cell_stats()
    enc.encode(s, lim, 0)
    assert bytes(enc.frames[5]) == b"\x09\x64\x09\x65\x09\x66\x09\x67" and bytes(enc.frames[6]) == bytes(8)
    s.cell_count = 0
    s.cell_stats()
    enc.encode(s, lim, 0)
    assert enc.frames[8][5] == 0 and enc.frames[8][6] == 0


def test_on_rx_query_and_malformed():
    enc = G.GrowattEncoder()
    assert enc.rx_filters == ((0x301, 0x7FF, 0),)
    assert enc.rx_text() == []
    assert enc.on_rx(0x301, QUERY, 8, 0) == RX_REQUEST
    assert enc.rx_text() == ["0x301 11 22 33 44 55 66 77 88"]
    other = b"\x00\x01\x02\x03\x04\x05\x06\x07"
    assert enc.on_rx(0x301, other, 8, 0) == RX_REQUEST  # any 8 data bytes on 0x301
    assert "not the documented" in enc.rx_text()[0]
    assert enc.on_rx(0x301, QUERY[:7], 7, 0) == RX_IGNORED  # short
    assert enc.on_rx(0x301, QUERY + b"\x00", 9, 0) == RX_IGNORED  # longer than a CAN frame
    assert enc.on_rx(0x301, QUERY[:4], 8, 0) == RX_IGNORED  # n claims more than the data holds
    assert enc.on_rx(0x301, b"", 0, 1) == RX_IGNORED  # RTR
    assert enc.on_rx(0x301, QUERY, 8, 1) == RX_IGNORED  # RTR flag with data
    assert enc.on_rx(0x301, QUERY, 8, 2) == RX_IGNORED  # 29-bit id
    assert enc.on_rx(0x305, QUERY, 8, 0) == RX_IGNORED  # Pylontech heartbeat: not ours
    assert enc.on_rx(0x311, QUERY, 8, 0) == RX_IGNORED
    assert enc.queries == 2 and enc.command == ""


def test_encode_and_on_rx_allocate_nothing():
    s, lim = hand_built()
    enc = G.GrowattEncoder()
    flags = F.LINK_LOST | F.CELL_OV | F.BATTERY_OT_WARN
    lim.force_charge = True
    run_locked(enc.encode, s, lim, flags)
    want = frames(enc)
    enc.encode(s, lim, flags)
    assert frames(enc) == want
    s.modules = 3
    s.temps[1] = s.temps[2] = S.NO_TEMP
    run_locked(enc.encode, s, lim, 0)
    data = memoryview(bytearray(QUERY))
    assert run_locked(enc.on_rx, 0x301, data, 8, 0) == RX_REQUEST
    assert run_locked(enc.on_rx, 0x301, data, 7, 0) == RX_IGNORED
    assert run_locked(enc.on_rx, 0x305, data, 8, 0) == RX_IGNORED


def test_make_from_config_defaults():
    cfg = C.defaults()
    cfg["protocol"] = "growatt"
    enc = protocols.make(cfg)
    cls = protocols.load("growatt")  # by name: another test may have re-imported the module
    assert type(enc) is cls and cls.__name__ == "GrowattEncoder" and cls.__name__ == G.ENCODER.__name__
    assert enc.NAME == "JK-BMS" and 2 <= len(enc.NAME) <= 8
    assert enc.HEARTBEAT == "0x301" and enc.SILENT_S == 10 and enc.period_ms is None
    assert bytes(enc.frames[9][0:2]) == b"JK" and bytes(enc.frames[1][5:7]) == b"JK"
    cfg["battery_name"] = "GROWATT"
    cfg["chemistry"] = "NMC"
    enc = protocols.make(cfg)
    assert bytes(enc.frames[9][0:2]) == b"GR"
    s, lim = hand_built()
    enc.encode(s, lim, 0)
    assert enc.frames[8][0] & 0x03 == 1
    cfg["battery_name"] = "X"  # one character: space-padded
    assert bytes(protocols.make(cfg).frames[9][0:2]) == b"X "


# --- the gateway with this protocol ---------------------------------------------------------


class _Yield:
    """Awaitable that suspends the coroutine once (CPython and MicroPython)."""

    def __await__(self):
        yield None

    __iter__ = __await__


class Clock:
    def __init__(self):
        self.now = 0
        self.wake = 0

    def ticks_ms(self):
        return self.now

    async def sleep_ms(self, ms):
        self.wake = self.now + ms
        await _Yield()


class TimedCan(FakeCan):
    def __init__(self, clock):
        FakeCan.__init__(self, 100000)
        self.clock = clock
        self.times = []

    def send(self, can_id, data, flags=0):
        slot = FakeCan.send(self, can_id, data, flags)
        self.times.append(self.clock.now)
        return slot


def sets(can):
    """[(time, ids), ...]: the frames sent grouped by send time."""
    out = []
    for t, (can_id, _) in zip(can.times, can.sent):
        if out and out[-1][0] == t:
            out[-1][1].append(can_id)
        else:
            out.append((t, [can_id]))
    return out


def run_gateway(queries, until):
    """CanTx.run_tx on a virtual clock with queries (times, ms) handed to
    CanTx.receive as run_rx would; returns the CAN port."""
    clock = Clock()
    saved = can_io.ticks_ms, can_io.sleep_ms
    can_io.ticks_ms, can_io.sleep_ms = clock.ticks_ms, clock.sleep_ms
    try:
        cfg = C.defaults()
        cfg["protocol"] = "growatt"
        snap = S.PackSnapshot()
        load_pb_pack(snap)
        fresh = Freshness(cfg["bms_timeout_s"] * 1000)
        fresh.data_ok(0)
        can = TimedCan(clock)
        tx = CanTx(can, FakeRecovery(), cfg, snap, fresh, ChargePolicy(cfg, 0), protocols.make(cfg))
        co = tx.run_tx()
        co.send(None)  # the first burst at 0, then asleep
        qi = 0
        while clock.now < until:
            if qi < len(queries) and queries[qi] <= clock.wake:
                clock.now = queries[qi]
                qi += 1
                fresh.data_ok(clock.now - 100)
                can.inbox.append((0x301, QUERY))
                tx.receive(clock.now)
            else:
                clock.now = clock.wake
                fresh.data_ok(clock.now - 100)
                co.send(None)
        co.close()
        return can, tx
    finally:
        can_io.ticks_ms, can_io.sleep_ms = saved


def test_gateway_answers_each_query_with_the_whole_set():
    # the first burst goes at 0 (periodic: no query yet); queries at 600 ms past each second then get
    # the set at once, but not one 200 ms after another (nor one within half a period of any set)
    queries = [600, 800] + [1600 + 1000 * k for k in range(4)]
    can, tx = run_gateway(queries, 10000)
    got = sets(can)
    for t, ids in got:
        assert tuple(ids) == IDS, (t, ids)  # always the full set, in order
    times = [t for t, _ in got]
    assert times[0] == 0  # periodic from the start (no query yet)
    for q in (600, 1600, 2600, 3600, 4600):
        assert q in times, (q, times)  # answered at once
    assert 800 not in times  # not twice within half a period
    assert tx.requests == 6 and tx.inverter.count == 6
    for a, b in zip(times, times[1:]):
        assert b - a >= 500, times
    # while the queries come every second, only the answers go (the periodic burst follows the last)
    assert [t for t in times if t < 4600] == [0, 600, 1600, 2600, 3600]
    # after the last query: the periodic bursts take over 1.5 periods later (never just ahead of a
    # query that is only late), then one per period (within the 5 % phase nudge)
    after = [t for t in times if t > 4600]
    assert len(after) >= 3, times
    assert 1450 <= after[0] - 4600 <= 1550, times
    prev = after[0]
    for t in after[1:]:
        assert 950 <= t - prev <= 1050, times
        prev = t


def test_gateway_without_queries_sends_periodically():
    can, tx = run_gateway([], 5000)
    times = [t for t, _ in sets(can)]
    assert len(times) >= 5 and tx.requests == 0
    for a, b in zip(times, times[1:]):
        assert 950 <= b - a <= 1050, times


def test_stale_bms_data_sends_zeros_and_the_system_error():
    # link_loss "auto" is zeros for Growatt: an SPF in LI mode cuts its output when the frames stop
    cfg = C.defaults()
    cfg["protocol"] = "growatt"
    snap = S.PackSnapshot()
    load_pb_pack(snap)
    fresh = Freshness(cfg["bms_timeout_s"] * 1000)
    fresh.data_ok(0)
    tx = CanTx(FakeCan(), FakeRecovery(), cfg, snap, fresh, ChargePolicy(cfg, 0), protocols.make(cfg))
    assert tx.burst(100) == len(IDS)
    f311 = tx.can.sent[0][1]
    assert f311[0:2] != b"\x00\x00" and tx.can.sent[1][1][0:4] == b"\x00\x00\x00\x00"
    tx.can.sent = []
    assert tx.burst(cfg["bms_timeout_s"] * 1000 + 1001) == len(IDS)  # stale: still sent
    f = dict(tx.can.sent)
    assert f[0x311][0:2] == f311[0:2]  # CVL kept
    assert f[0x311][2:6] == b"\x00\x00\x00\x00"  # CCL = DCL = 0
    assert f[0x311][7] & 0x64 == 0x04  # enables off, error byte valid
    assert f[0x312][1] == 0x08 and f[0x312][3] == 0x01  # T2 system error, T4 internal comm fail
    assert f[0x319][0] & 0xE0 == 0 and tx.policy.link_lost
