# The BMS's temperature thresholds and the 4E 57 pack voltage protection reach
# the snapshot (for the charge controller) with the values of the real
# captures in host_tests/fixtures; an implausible settings threshold rejects
# the frame and leaves the snapshot as it was; the 4E 57 over-temperature bits
# block (docs/jk-bms.md "Settings frames", "4E 57", "Alarm bits"). Runs under
# CPython and MicroPython (unix and webassembly ports).

from fixtures import iter_frames, unhex
from mpcompat import run_locked

from codec.binary import u16be
from codec.errors import DecodeError
from jkbms import frame as J
from jkbms import nw, settings
from pack import flags as F
from pack import snapshot as S
from pack.snapshot import PackSnapshot

# fixture key -> snapshot attribute, both in the fixture's degC x 10
SETTINGS_TEMPS = (
    ("charge_otp_c", "charge_otp_dc"),
    ("discharge_otp_c", "discharge_otp_dc"),
    ("charge_utp_c", "charge_utp_dc"),
    ("mos_otp_c", "mos_otp_dc"),
)
THRESHOLDS = ("charge_otp_dc", "charge_utp_dc", "discharge_otp_dc", "discharge_utp_dc", "mos_otp_dc",
              "pack_ovp_mv", "pack_uvp_mv")
# what a settings frame writes (snapshot attributes), for "left untouched"
SETTINGS_WRITES = THRESHOLDS + ("set_cell_count", "cell_uvp_mv", "cell_uvpr_mv", "cell_ovp_mv", "cell_ovpr_mv",
                                "rcv_mv", "rfv_mv", "max_charge_ma", "max_discharge_ma", "charge_switch",
                                "discharge_switch", "design_mah", "settings_ok")

_SETTINGS = []  # (id, 300-byte frame, expected) of every JK02_32S settings capture
_NW = []  # (id, frame, expected) of every 4E 57 read-all response


def _load():
    if _SETTINGS:
        return
    for f in iter_frames():
        exp = f["expected"]
        if f["layout"] == "JK02_32S" and exp.get("frame_type") == 1:
            _SETTINGS.append((f["id"], unhex(f["hex"])[:300], exp))
        elif f["layout"] == "4E57" and "register" not in exp:
            _NW.append((f["id"], unhex(f["hex"]), exp))


def settings_frames():
    _load()
    return _SETTINGS


def nw_frames():
    _load()
    return _NW


def dc(v):
    """Fixture degC -> 0.1 degC (integer)."""
    return int(round(v * 10))


def fields(snap, names):
    return tuple(getattr(snap, n) for n in names)


def fix_sum8(b):
    b[299] = 0
    s = 0
    for i in range(299):
        s += b[i]
    b[299] = s & 0xFF
    return b


def be_image(frame):
    """The FC03 register image of a settings frame: block = frame[6:], every
    u32 / i32 field and the u16 control word byte-swapped (big-endian per
    field), single bytes where they are (docs/jk-bms.md "JK-PB")."""
    img = bytearray(frame[6:6 + settings.BLOCK_BYTES])
    offs = [4 * k for k in range(66)] + [264, 268]  # 0..135 settings, 136..263 wire resistances
    for o in offs:
        img[o], img[o + 1], img[o + 2], img[o + 3] = img[o + 3], img[o + 2], img[o + 1], img[o]
    img[276], img[277] = img[277], img[276]
    return img


# ------------------------------------------------------------------ settings


def test_settings_thresholds_match_every_capture():
    n = 0
    for fid, b, exp in settings_frames():
        snap = PackSnapshot()
        settings.decode(b, snap)
        d = settings.describe(b)
        checked = 0
        for key, attr in SETTINGS_TEMPS:
            assert key in exp, (fid, key)
            assert getattr(snap, attr) == dc(exp[key]), (fid, attr, getattr(snap, attr), exp[key])
            checked += 1
        # discharge UTP / recovery at 290 / 291: 0 / 0 in every capture = not set
        utp = exp.get("discharge_utp_c", d["discharge_utp_c"])
        utpr = exp.get("discharge_utpr_c", d["discharge_utpr_c"])
        if utp == 0 and utpr == 0:
            assert snap.discharge_utp_dc == S.NO_TEMP, fid
        else:
            assert snap.discharge_utp_dc == dc(utp), fid
        # a 55AA settings frame carries no pack-level OVP / UVP
        assert snap.pack_ovp_mv == 0 and snap.pack_uvp_mv == 0, fid
        assert snap.settings_ok == 1
        assert checked == 4
        n += 1
    assert n == 4


def test_no_real_capture_sets_the_discharge_utp():
    # what the "0 / 0 = not set" rule rests on (docs/jk-bms.md "Settings frames")
    for fid, b, _exp in settings_frames():
        assert b[6 + 290] == 0 and b[6 + 291] == 0, fid


def test_big_endian_register_image_gives_the_same_thresholds():
    for fid, b, exp in settings_frames():
        a = PackSnapshot()
        settings.decode(b, a)
        img = be_image(b)
        c = PackSnapshot()
        settings.decode(img, c, 0, True)
        assert fields(c, SETTINGS_WRITES) == fields(a, SETTINGS_WRITES), fid
        assert c.charge_utp_dc == dc(exp["charge_utp_c"])  # a negative i32 read big-endian too


def test_a_set_discharge_utp_is_read_as_signed_degc():
    fid, good, exp = settings_frames()[0]
    b = bytearray(good)
    b[6 + 290] = 0xEC  # -20 degC
    b[6 + 291] = 0xF6  # recovery -10 degC
    fix_sum8(b)
    snap = PackSnapshot()
    settings.decode(b, snap)
    assert snap.discharge_utp_dc == -200
    assert snap.charge_utp_dc == dc(exp["charge_utp_c"])
    img = be_image(b)
    snap2 = PackSnapshot()
    settings.decode(img, snap2, 0, True)
    assert snap2.discharge_utp_dc == -200
    b[6 + 290] = 5  # +5 degC with a 0 recovery: set (only 0 / 0 means unset)
    fix_sum8(b)
    settings.decode(b, snap)
    assert snap.discharge_utp_dc == 50


def _put_i32le(b, o, v):
    v &= 0xFFFFFFFF
    for k in range(4):
        b[o + k] = (v >> (8 * k)) & 0xFF


# (what is corrupted, block offset, i32 value or None for the i8 pair at 290)
CORRUPTIONS = (
    ("charge OTP 150 degC", 76, 1500),
    ("charge OTP -50 degC", 76, -500),
    ("discharge OTP 121 degC", 84, 1210),
    ("MOSFET OTP 6553.5 degC", 100, 65535),
    ("MOSFET OTP i32 max", 100, 0x7FFFFFFF),
    ("discharge OTP i32 min", 84, -0x80000000),
    ("charge UTP -70 degC", 92, -700),
    ("charge UTP 61 degC", 92, 610),
    ("charge UTP = charge OTP", 92, None),
    ("discharge UTP +70 degC", 290, 70),
    ("discharge UTP -100 degC", 290, -100),
    ("discharge UTP above the discharge OTP", 290, 60),
)


def test_implausible_threshold_rejects_the_frame_and_leaves_the_snapshot():
    frames = settings_frames()
    # the snapshot holds the first capture; the corrupted frames are built from another one
    snap = PackSnapshot()
    settings.decode(frames[0][1], snap)
    base_id, base, base_exp = frames[-1]
    assert base_exp["discharge_otp_c"] < 60  # so that a 60 degC discharge UTP is above it
    before = fields(snap, SETTINGS_WRITES)
    for what, off, value in CORRUPTIONS:
        b = bytearray(base)
        if off == 290:
            b[6 + 290] = value & 0xFF
            b[6 + 291] = (value + 5) & 0xFF
        elif value is None:  # charge UTP = the frame's own charge OTP
            for k in range(4):
                b[6 + 92 + k] = b[6 + 76 + k]
        else:
            _put_i32le(b, 6 + off, value)
        fix_sum8(b)
        assert J.check_frame(b, 300) == J.TYPE_SETTINGS
        for buf, args in ((b, ()), (be_image(b), (0, True))):
            try:
                if args:
                    settings.decode(buf, snap, args[0], args[1])
                else:
                    settings.decode(buf, snap)
                raise AssertionError("accepted: " + what)
            except DecodeError as e:
                assert "TP in settings" in str(e), (what, str(e))  # OTP / UTP, not another check
            assert fields(snap, SETTINGS_WRITES) == before, what
    # the untouched capture is still accepted and then does change the snapshot
    settings.decode(base, snap)
    assert snap.charge_otp_dc == dc(base_exp["charge_otp_c"])


def _settings_locked(c):
    settings.decode(c[0], c[2])
    settings.decode(c[1], c[2], 0, True)
    return c[2].discharge_utp_dc


def test_settings_decode_allocates_nothing():
    for fid, b, _exp in settings_frames():
        le = bytearray(b)
        le[6 + 290] = 0xEC  # the i8 path too
        le[6 + 291] = 0xF6
        fix_sum8(le)
        c = (le, be_image(le), PackSnapshot())
        assert run_locked(_settings_locked, c) == -200, fid
        c = (bytearray(b), be_image(b), PackSnapshot())
        assert run_locked(_settings_locked, c) == S.NO_TEMP, fid


# ------------------------------------------------------------------ 4E 57


def _items(b):
    """(id, value offset, value length) of every data item of a response."""
    end = len(b) - 9
    p = 11
    out = []
    while p < end:
        n = nw._item_len(b, p, end)
        out.append((b[p], p + 1, n))
        p += 1 + n
    return out


def _value_at(b, ident):
    for i, v, _n in _items(b):
        if i == ident:
            return v
    raise KeyError(ident)


def _fix_4e57(b):
    """Length field and checksum of a (modified) 4E 57 frame."""
    total = len(b)
    b[2] = (total - 2) >> 8
    b[3] = (total - 2) & 0xFF
    s = 0
    for i in range(total - 4):
        s += b[i]
    b[total - 4] = 0
    b[total - 3] = 0
    b[total - 2] = (s >> 8) & 0xFF
    b[total - 1] = s & 0xFF
    return b


def _without(b, ident):
    """The frame without data item ident (as from a firmware that omits it)."""
    v = _value_at(b, ident)
    n = nw._item_len(b, v - 1, len(b) - 9)
    return _fix_4e57(bytearray(b[:v - 1] + b[v + n:]))


def _with_u16(b, ident, value):
    out = bytearray(b)
    v = _value_at(out, ident)
    out[v] = (value >> 8) & 0xFF
    out[v + 1] = value & 0xFF
    return _fix_4e57(out)


def test_4e57_thresholds_match_every_capture():
    n = 0
    for fid, b, exp in nw_frames():
        snap = PackSnapshot()
        nw.decode(b, len(b), snap)
        # asserted by the fixture
        assert snap.pack_ovp_mv == int(round(exp["pack_ovp_v"] * 1000)), fid
        assert snap.pack_uvp_mv == int(round(exp["pack_uvp_v"] * 1000)), fid
        assert snap.charge_utp_dc == dc(exp["charge_utp_c"]), fid
        # the others are not in the fixture: against the tools' own reading of the items
        d = nw.describe(b, len(b))
        for key in ("charge_otp_c", "discharge_otp_c", "discharge_utp_c", "mos_otp_c"):
            attr = key[:-2] + "_dc"
            assert getattr(snap, attr) == dc(d[key]), (fid, attr)
        assert -400 <= snap.discharge_utp_dc < snap.discharge_otp_dc <= 1200
        # pack protection = cells x cell protection in every capture
        assert snap.pack_ovp_mv == snap.set_cell_count * snap.cell_ovp_mv, fid
        assert snap.pack_uvp_mv == snap.set_cell_count * snap.cell_uvp_mv, fid
        n += 1
    assert n == 4


def test_4e57_omitted_threshold_does_not_keep_an_old_value():
    fid, b, exp = nw_frames()[0]
    snap = PackSnapshot()
    nw.decode(b, len(b), snap)
    full = fields(snap, THRESHOLDS)
    assert S.NO_TEMP not in full and 0 not in full
    for ident, attr in ((0xA3, "charge_otp_dc"), (0xA4, "discharge_otp_dc"), (0xA5, "charge_utp_dc"),
                        (0xA7, "discharge_utp_dc"), (0x9E, "mos_otp_dc")):
        short = _without(b, ident)
        nw.decode(short, len(short), snap)
        assert getattr(snap, attr) == S.NO_TEMP, (fid, hex(ident))
        nw.decode(b, len(b), snap)
        assert fields(snap, THRESHOLDS) == full
    for ident in (0x8E, 0x8F):  # one pack limit alone means nothing
        short = _without(b, ident)
        nw.decode(short, len(short), snap)
        assert snap.pack_ovp_mv == 0 and snap.pack_uvp_mv == 0, hex(ident)
        assert snap.cell_ovp_mv == full_cell_ovp(b)  # the frame itself is accepted
        nw.decode(b, len(b), snap)


def full_cell_ovp(b):
    return u16be(b, _value_at(b, 0x90))


def test_4e57_implausible_threshold_reads_as_not_reported():
    fid, b, exp = nw_frames()[0]
    snap = PackSnapshot()
    cases = (  # (edits (id, raw u16), what reads as not reported)
        (((0xA3, 121),), ("charge_otp_dc",)),
        (((0x9E, 0xFFFF),), ("mos_otp_dc",)),
        (((0xA5, 0x10000 - 61),), ("charge_utp_dc",)),  # -61 degC
        (((0xA7, 61),), ("discharge_utp_dc",)),
        (((0xA3, 0), (0xA5, 0)), ("charge_utp_dc", "charge_otp_dc")),  # UTP = OTP: the pair
        (((0xA4, 5), (0xA7, 20)), ("discharge_utp_dc", "discharge_otp_dc")),  # UTP above OTP: the pair
        (((0x8F, 6000),), ("pack_ovp_mv", "pack_uvp_mv")),  # pack UVP 60 V above the OVP
    )
    nw.decode(b, len(b), snap)
    good = fields(snap, THRESHOLDS)
    for edits, gone in cases:
        bad = b
        for ident, raw in edits:
            bad = _with_u16(bad, ident, raw)
        nw.decode(bad, len(bad), snap)  # accepted: these are settings, not live data
        for k in range(len(THRESHOLDS)):
            attr = THRESHOLDS[k]
            want = (0 if attr.endswith("_mv") else S.NO_TEMP) if attr in gone else good[k]
            assert getattr(snap, attr) == want, (edits, attr, getattr(snap, attr))
        nw.decode(b, len(b), snap)
        assert fields(snap, THRESHOLDS) == good


# 0x8B warning bit -> neutral flags (docs/jk-bms.md "Alarm bits")
WARN_FLAGS = (
    (0, 0), (1, F.MOS_OT), (2, F.PACK_OV), (3, F.PACK_UV), (4, F.CHARGE_OT | F.DISCHARGE_OT),
    (5, F.CHARGE_OC), (6, F.DISCHARGE_OC), (7, 0), (8, F.CHARGE_OT | F.DISCHARGE_OT), (9, F.CHARGE_UT),
    (10, F.CELL_OV), (11, F.CELL_UV), (12, 0), (13, 0), (14, 0), (15, 0),
)


def test_4e57_battery_over_temperature_blocks_both_directions():
    fid, b, exp = nw_frames()[0]
    assert exp["warnings_bitmask"] == 0
    hot = _with_u16(b, 0x8B, 1 << 4)
    snap = PackSnapshot()
    nw.decode(hot, len(hot), snap)
    assert snap.alarms == (1 << 8) | (1 << 15)  # JK02 charge + discharge OTP, not the bit 21 warning
    assert snap.flags == F.CHARGE_OT | F.DISCHARGE_OT
    assert not snap.flags & F.BATTERY_OT_WARN
    nw.decode(b, len(b), snap)
    assert snap.alarms == 0 and snap.flags == 0


def test_4e57_every_warning_bit_maps_by_meaning():
    fid, b, exp = nw_frames()[0]
    snap = PackSnapshot()
    every = 0
    for bit, want in WARN_FLAGS:
        f = _with_u16(b, 0x8B, 1 << bit)
        nw.decode(f, len(f), snap)
        assert snap.flags == want, (bit, snap.flags, want)
        assert F.from_jk02(snap.alarms) == snap.flags
        every |= want
    f = _with_u16(b, 0x8B, 0xFFFF)
    nw.decode(f, len(f), snap)
    assert snap.flags == every


# ------------------------------------------------------------------ settings: 0 = not reported


def _with_i32(good, pairs):
    b = bytearray(good)
    for off, value in pairs:
        _put_i32le(b, 6 + off, value)
    return fix_sum8(b)


def test_zero_thresholds_read_as_not_reported():
    fid, good, exp = settings_frames()[0]
    snap = PackSnapshot()
    # a block whose thresholds were never filled in (as the host tools' minimal frames)
    b = _with_i32(good, ((76, 0), (84, 0), (92, 0), (100, 0)))
    settings.decode(b, snap)
    assert fields(snap, THRESHOLDS) == (S.NO_TEMP,) * 5 + (0, 0)
    assert snap.settings_ok == 1 and snap.cell_ovp_mv == int(round(exp["cell_ovp_v"] * 1000))
    # a 0 degC OTP alone is no setting either; the other thresholds stay
    for off, attr in ((76, "charge_otp_dc"), (84, "discharge_otp_dc"), (100, "mos_otp_dc")):
        settings.decode(_with_i32(good, ((off, 0),)), snap)
        assert getattr(snap, attr) == S.NO_TEMP, attr
        assert snap.charge_utp_dc == dc(exp["charge_utp_c"])
    # a 0 degC charge UTP with a real charge OTP is a real setting (common for LFP)
    settings.decode(_with_i32(good, ((92, 0),)), snap)
    assert snap.charge_utp_dc == 0 and snap.charge_otp_dc == dc(exp["charge_otp_c"])
    # a charge UTP with an unset charge OTP is still range-checked
    settings.decode(_with_i32(good, ((76, 0), (92, 50))), snap)
    assert snap.charge_utp_dc == 50 and snap.charge_otp_dc == S.NO_TEMP
    try:
        settings.decode(_with_i32(good, ((76, 0), (92, -700))), snap)
        raise AssertionError("accepted a -70 degC charge UTP")
    except DecodeError:
        pass
    assert snap.charge_utp_dc == 50
