# Property-based robustness tests for every decoder in firmware/lib (hypothesis).
#
# Contract under test (codec/errors.py, pack/snapshot.py):
#   * malformed input raises codec.errors.DecodeError and nothing else: no IndexError, TypeError,
#     struct.error, ZeroDivisionError, KeyError, OverflowError ... escapes a decoder;
#   * a rejected frame leaves the PackSnapshot byte-for-byte unchanged (every attribute, including
#     the cells / temps arrays);
#   * stream reassembly (Reassembler in BLE and UART mode, FrameExtractor, TriggerReply) delivers
#     exactly the embedded valid frames, in order and byte-identical, for any chunking.
#
# Inputs: random bytes, and real fixture frames (host_tests/fixtures/jk_frames.json) mutated by bit
# flips, byte writes, truncation, extension, insertion / deletion and "interesting" field values,
# with the integrity check RE-FIXED afterwards (sum8 for 55AA, 16-bit sum for 4E 57, CRC-16 for
# Modbus) so that the mutated frames reach the field decoders and their plausibility checks.
import json
import struct
import sys
from array import array
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

_REPO = Path(__file__).resolve().parents[2]
if str(_REPO / "firmware" / "lib") not in sys.path:
    sys.path.insert(0, str(_REPO / "firmware" / "lib"))

from codec.errors import DecodeError  # noqa: E402
from codec.stream import FrameExtractor  # noqa: E402
from jkbms import cellinfo, devinfo, dispatch, jk04, logbook, nw, pb_modbus  # noqa: E402
from jkbms import frame as J  # noqa: E402
from jkbms import settings as jk_settings  # noqa: E402
from jkbms.reassembler import Reassembler  # noqa: E402
from modbus import rtu  # noqa: E402
from modbus.crc import crc16  # noqa: E402
from pack import flags as F  # noqa: E402
from pack import snapshot as S  # noqa: E402
from protocols import base as protocol_base  # noqa: E402
from protocols import pylon  # noqa: E402

FIXTURES = json.loads((_REPO / "host_tests" / "fixtures" / "jk_frames.json").read_text())

# The firmware modules as this file imported them. Other test files may drop firmware modules from
# sys.modules (to measure fresh imports); a module the firmware imports lazily (jkbms.settings_fields
# behind jkbms.settings.describe, ...) would then come with a second codec.errors, whose DecodeError
# is not the one the contract here is checked against. Every test below runs with these modules.
_LIB = str(_REPO / "firmware" / "lib")
_OWN_MODULES = {n: m for n, m in sys.modules.items() if str(getattr(m, "__file__", "")).startswith(_LIB)}


@pytest.fixture(autouse=True)
def _one_firmware_image():
    for name, mod in list(sys.modules.items()):
        if name not in _OWN_MODULES and str(getattr(mod, "__file__", "")).startswith(_LIB):
            del sys.modules[name]  # imported after a purge: re-imported against _OWN_MODULES on demand
    sys.modules.update(_OWN_MODULES)
    yield
RAW = {f["id"]: bytes.fromhex(f["hex"]) for f in FIXTURES}

F55 = [b[:300] for b in RAW.values() if len(b) >= 300 and b[:4] == J.HEADER]
CELL55 = [b for b in F55 if b[4] == J.TYPE_CELL_INFO]
JK02_32_CELL = [b for b in CELL55 if J.detect_layout(b) == J.LAYOUT_JK02_32S]
NW_FRAMES = [RAW[f["id"]] for f in FIXTURES if f["layout"] == "4E57"]
NW_RESP = [b for b in NW_FRAMES if b[10] != 0]
MB_FRAMES = [RAW[f["id"]] for f in FIXTURES if f["layout"] == "MODBUS"]
MB_FRAMES += [b[300:] for b in RAW.values() if len(b) == 308]  # FC10 ACKs glued to 55AA frames
C8 = RAW["ble_command_confirmation_c8"]
AT = b"AT\r\n"

assert len(F55) >= 30 and len(CELL55) >= 15 and len(NW_RESP) == 4 and len(MB_FRAMES) >= 14

PROP = settings(deadline=None, max_examples=200, suppress_health_check=[HealthCheck.too_slow])
FEW = settings(deadline=None, max_examples=120, suppress_health_check=[HealthCheck.too_slow])


# ----------------------------------------------------------------------------------- helpers


def _template():
    s = S.PackSnapshot()
    b = RAW["ble_jk02_32s_v11_17_cell_info_alarm_bit4"]
    cellinfo.decode(b, 6, J.detect_layout(b), s)
    jk_settings.decode(RAW["ble_jk02_32s_v11_17_settings"], s)
    return s


_TEMPLATE = _template()


def primed_snapshot():
    """A snapshot holding real, non-default values (so 'unchanged' means something)."""
    s = S.PackSnapshot()
    for k, v in vars(_TEMPLATE).items():
        if isinstance(v, array):
            getattr(s, k)[:] = v
        else:
            setattr(s, k, v)
    return s


def state(snap):
    """Full copy of a snapshot's attributes; arrays as (typecode, bytes)."""
    out = {}
    for k, v in vars(snap).items():
        out[k] = (v.typecode, v.tobytes()) if isinstance(v, array) else v
    return out


def accepts(fn, *args, snap=None):
    """Run one decoder call. DecodeError -> False (and snap must be unchanged); any other
    exception propagates and fails the test."""
    before = state(snap) if snap is not None else None
    try:
        fn(*args)
    except DecodeError:
        if snap is not None:
            assert state(snap) == before, "%s changed the snapshot on a rejected frame" % fn.__qualname__
        return False
    return True


def snapshot_sane(s):
    assert 1 <= s.cell_count <= S.MAX_CELLS
    assert all(c <= 5000 for c in s.cells)
    assert not any(s.cells[s.cell_count:])
    assert s.soc_pct <= 100 and s.soh_pct <= 100
    if s.cell_count:
        assert s.cell_min_mv <= s.cell_avg_mv <= s.cell_max_mv
    assert s.flags == F.from_jk02(s.alarms)  # the neutral flags always follow the BMS's own word


def sum8_fix(b):
    if len(b) >= 300:
        b[299] = sum(b[:299]) & 0xFF
    return b


def crc_fix(b):
    if len(b) >= 4:
        c = crc16(b, 0, len(b) - 2)
        b[-2] = c & 0xFF
        b[-1] = c >> 8
    return b


def nw_fix(b):
    """Make a (mutated) 4E 57 frame self-consistent again: length field, end mark, checksum."""
    if len(b) >= 21:
        struct.pack_into(">H", b, 2, (len(b) - 2) & 0xFFFF)
        b[-5] = 0x68
        b[-4] = b[-3] = 0
        struct.pack_into(">H", b, len(b) - 2, sum(b[:-4]) & 0xFFFF)
    return b


# Offsets (in a 55AA frame) of fields with plausibility checks or other special handling.
_HOT55 = sorted({6 + o for o in cellinfo.OFFSETS_32S + cellinfo.OFFSETS_24S if o >= 0}
                | {6 + o for o in (4, 8, 12, 16, 32, 36, 44, 56, 108, 112, 116, 124)}
                | {4, 6, 8, 34, 38, 74, 98, 106, 110, 118, 150, 202, 206, 214, 220, 222, 286})
_INTERESTING = (0, 1, 2, 99, 100, 101, 140, 141, 255, 0x7F, 0x80, 0xFF, 4999, 5000, 5001, 0x7FFF,
                0x8000, 0xF830, 0xFFFF, 1000, 999, 0x3F00, 0x40B0, 0x7F800000, 0xFFFFFFFF,
                0x80000000, 1000000, 1000001)

# flip a bit, set a byte, write an (interesting) 1/2/4-byte value LE or BE, truncate, extend,
# insert, delete; length-changing operations are rarer so that most frames keep their layout
_OP = st.sampled_from("fffffsssvvvvvvtxid")


@st.composite
def mutations(draw, frames, fixer, hot=(), lo=0):
    """A fixture frame with 1..6 random mutations, then its integrity check re-fixed (usually).
    lo: first byte index mutations may touch (keeps headers intact for deeper coverage)."""
    b = bytearray(draw(st.sampled_from(frames)))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(_OP)
        span = max(1, len(b) - lo)
        i = lo + draw(st.integers(0, 10 ** 6)) % span
        if op == "f" and i < len(b):
            b[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "s" and i < len(b):
            b[i] = draw(st.integers(0, 255))
        elif op == "v":
            o = draw(st.sampled_from(hot)) if hot and draw(st.booleans()) else i
            v = draw(st.sampled_from(_INTERESTING) | st.integers(0, 0xFFFFFFFF))
            w = draw(st.sampled_from((1, 2, 4)))
            fmt = draw(st.sampled_from("<>"))
            if o + w <= len(b):
                struct.pack_into(fmt + {1: "B", 2: "H", 4: "I"}[w], b, o, v & ((1 << 8 * w) - 1))
        elif op == "t":
            del b[len(b) - draw(st.integers(0, len(b))):]
        elif op == "x":
            b += draw(st.binary(min_size=1, max_size=40))
        elif op == "i":
            b[i:i] = draw(st.binary(min_size=1, max_size=6))
        elif op == "d":
            del b[i:i + draw(st.integers(1, 6))]
    if draw(st.integers(0, 9)) < 9:  # 1 in 10 keeps the broken check (hypothesis favours 0)
        fixer(b)
    return bytes(b)


# 300-byte 55AA frames with a random body (header, type and checksum valid)
@st.composite
def random55(draw):
    b = bytearray(J.HEADER) + bytearray(draw(st.binary(min_size=296, max_size=296)))
    b[4] = draw(st.sampled_from((1, 2, 3, 5, draw(st.integers(0, 255)))))
    return bytes(sum8_fix(b))


def decoders55(b, snap):
    """Every decoder that takes 55AA-frame data, on b (any length). Returns what accepted."""
    ok = {}
    n = len(b)
    ok["check_frame"] = accepts(J.check_frame, b, n)
    ok["detect_layout"] = accepts(J.detect_layout, b)
    for layout in (J.LAYOUT_JK02_24S, J.LAYOUT_JK02_32S, J.LAYOUT_PB_FC03, J.LAYOUT_JK04, 0):
        ok["cell%d" % layout] = accepts(cellinfo.decode, b, 6, layout, snap, snap=snap)
        snap = primed_snapshot()
    ok["cell_be0"] = accepts(cellinfo.decode, b[6:], 0, J.LAYOUT_PB_FC03, snap, snap=snap)
    snap = primed_snapshot()
    ok["settings"] = accepts(jk_settings.decode, b, snap, snap=snap)
    snap = primed_snapshot()
    ok["settings_be0"] = accepts(jk_settings.decode, b[6:], snap, 0, True, snap=snap)
    snap = primed_snapshot()
    ok["settings_describe"] = accepts(jk_settings.describe, b)
    ok["settings_describe_be"] = accepts(jk_settings.describe, b[6:], 0, True)
    ok["devinfo"] = accepts(devinfo.describe, b)
    ok["devinfo_be"] = accepts(devinfo.describe, b[6:], 0, True)
    ok["jk04"] = accepts(jk04.decode, b, snap, snap=snap)
    ok["jk04_cells"] = accepts(jk04.describe_cells, b)
    ok["jk04_settings"] = accepts(jk04.describe_settings, b)
    ok["logbook"] = accepts(logbook.describe, b)
    return ok


def pipeline55(b, snap):
    """What the firmware does with a reassembled frame: check, dispatch on type, decode."""
    if not accepts(J.check_frame, b, len(b)):
        return None
    t = b[4]
    if t == J.TYPE_CELL_INFO:
        try:
            layout = J.detect_layout(b)
        except DecodeError:
            return None
        if layout == J.LAYOUT_JK04:
            good = accepts(jk04.decode, b, snap, snap=snap)
        else:
            good = accepts(cellinfo.decode, b, 6, layout, snap, snap=snap)
            if good:
                accepts(cellinfo.describe_extra, b, 6, layout)
        if good:
            snapshot_sane(snap)
        return good
    if t == J.TYPE_SETTINGS:
        accepts(jk_settings.describe, b)
        jk04_ok = accepts(jk04.describe_settings, b)  # which one applies depends on the device
        return accepts(jk_settings.decode, b, snap, snap=snap) or jk04_ok
    if t == J.TYPE_DEVICE_INFO:
        d = devinfo.describe(b)  # a checked 300-byte frame always holds the whole table
        devinfo.layout_from_version(d["sw_version"])
        return True
    if t == J.TYPE_LOGBOOK:
        return accepts(logbook.describe, b)
    return None


# ------------------------------------------------------------------------------- 55AA decoders


def test_fixtures_pass_pipeline():
    for b in F55:
        snap = primed_snapshot()
        assert pipeline55(b, snap) in (True, None), b[:6].hex()


@PROP
@given(st.binary(max_size=400))
def test_random_bytes_55aa_decoders(b):
    decoders55(b, primed_snapshot())
    pipeline55(b, primed_snapshot())


@PROP
@given(random55())
def test_random_checksummed_55aa_frames(b):
    decoders55(b, primed_snapshot())
    pipeline55(b, primed_snapshot())


@PROP
@given(mutations(F55, sum8_fix, _HOT55, lo=4))
def test_mutated_55aa_frames(b):
    pipeline55(b, primed_snapshot())
    decoders55(b, primed_snapshot())


@PROP
@given(mutations(CELL55, sum8_fix, _HOT55, lo=6))
def test_mutated_cell_info_frames(b):
    # deeper coverage of the JK02 / JK04 status decoders (header and type kept intact)
    pipeline55(b, primed_snapshot())
    for layout in (J.LAYOUT_JK02_24S, J.LAYOUT_JK02_32S):
        snap = primed_snapshot()
        if accepts(cellinfo.decode, b, 6, layout, snap, snap=snap):
            snapshot_sane(snap)


# Big-endian FC03 status image <-> little-endian 55AA frame. Multi-byte fields of the 0x1200
# block per docs/jk-bms.md "JK-PB" (u8/u8 pairs keep their byte order).
_WIDE_FIELDS = ([(2 * i, 2) for i in range(32)] + [(64, 4), (68, 2), (70, 2)]
                + [(74 + 2 * i, 2) for i in range(32)]
                + [(138, 2), (140, 4), (144, 4), (148, 4), (152, 4), (156, 2), (158, 2), (160, 4),
                   (164, 2), (168, 4), (172, 4), (176, 4), (180, 4), (186, 2), (188, 4), (194, 2)]
                + [(196 + 2 * i, 2) for i in range(6)]
                + [(210, 2), (212, 2), (214, 2), (216, 2), (218, 2), (220, 4), (224, 2), (226, 2),
                   (228, 2), (230, 2), (240, 4), (244, 4), (248, 2), (250, 2), (252, 2), (256, 4),
                   (260, 4), (264, 4), (272, 2)])


def le_frame_to_be_block(frame):
    blk = bytearray(frame[6:6 + 294])
    for o, w in _WIDE_FIELDS:
        blk[o:o + w] = blk[o:o + w][::-1]
    return bytes(blk)


@PROP
@given(mutations(JK02_32_CELL, sum8_fix, _HOT55, lo=6))
def test_fc03_be_block_decodes_like_55aa_frame(b):
    # differential: the same status data as a 55AA frame (LE, base 6) and as an FC03 block image
    # (BE, base 0) must be accepted / rejected alike and give identical snapshots
    assume(len(b) >= 300)
    s_le, s_be = primed_snapshot(), primed_snapshot()
    a = accepts(cellinfo.decode, b, 6, J.LAYOUT_JK02_32S, s_le, snap=s_le)
    c = accepts(cellinfo.decode, le_frame_to_be_block(b), 0, J.LAYOUT_PB_FC03, s_be, snap=s_be)
    assert a == c
    if a:
        d_le, d_be = state(s_le), state(s_be)
        assert d_be.pop("layout") == J.LAYOUT_PB_FC03 and d_le.pop("layout") == J.LAYOUT_JK02_32S
        assert d_le == d_be


def test_fc03_be_block_of_every_fixture():
    for b in JK02_32_CELL:
        s_le, s_be = S.PackSnapshot(), S.PackSnapshot()
        cellinfo.decode(b, 6, J.LAYOUT_JK02_32S, s_le)
        cellinfo.decode(le_frame_to_be_block(b), 0, J.LAYOUT_PB_FC03, s_be)
        s_be.layout = s_le.layout
        assert state(s_le) == state(s_be)


# --------------------------------------------------------------------------------- 4E 57 decoders

_NW_IDS = sorted(nw._LEN)


@st.composite
def nw_cell_block(draw):
    if draw(st.integers(0, 4)) == 4:  # 1 in 5 blocks may hold implausible cells
        cell = st.tuples(st.integers(1, 32) | st.integers(0, 255), st.integers(2000, 4200) | st.integers(0, 0xFFFF))
    else:
        cell = st.tuples(st.integers(1, 32), st.integers(0, 5000))
    cells = draw(st.lists(cell, min_size=0 if draw(st.integers(0, 9)) == 9 else 1, max_size=33))
    return bytes([0x79, 3 * len(cells) & 0xFF]) + b"".join(struct.pack(">BH", n, v) for n, v in cells)


@st.composite
def nw_item(draw):
    ident = draw(st.integers(0, 255) if draw(st.integers(0, 30)) == 30 else st.sampled_from(_NW_IDS + [0x79]))
    if ident == 0x79:
        return draw(nw_cell_block())
    n = nw._LEN.get(ident, draw(st.integers(0, 4)))
    if n == 1:
        v = bytes([draw(st.integers(0, 120) | st.integers(0, 255))])
    elif n == 2:
        v = struct.pack(">H", draw(st.integers(0, 160) | st.integers(0, 0xFFFF)))
    else:
        v = draw(st.binary(min_size=n, max_size=n))
    return bytes([ident]) + v


@st.composite
def nw_frames(draw):
    items = draw(st.lists(nw_item(), max_size=30))
    if draw(st.integers(0, 4)) < 4:  # usually a cell block somewhere (hypothesis favours 0)
        items.insert(draw(st.integers(0, len(items))), draw(nw_cell_block()))
    data = b"".join(items)
    cmd = draw(st.sampled_from((3, 1, 2))) if draw(st.integers(0, 19)) == 19 else 6
    tt = draw(st.sampled_from((0, 2))) if draw(st.integers(0, 9)) == 9 else 1
    b = bytearray(b"\x4e\x57\x00\x00\x00\x00\x00\x00" + bytes([cmd, 0, tt]) + data + bytes(9))
    return bytes(nw_fix(b))


def decoders_nw(b):
    n = len(b)
    accepts(nw.check_frame, b, n)
    snap = primed_snapshot()
    ok = accepts(nw.decode, b, n, snap, snap=snap)
    if ok:
        snapshot_sane(snap)
    d = accepts(nw.describe, b, n)
    assert ok == d or b[10] == 0 and n >= 21
    for k in range(1, min(n, 24)):  # the stream judge on every prefix / suffix position
        nw.frame_len_at(b, 0, k)
        nw.frame_len_at(b, k, n)
    # 4E57 fed to the 55AA decoders and vice versa must be rejected cleanly
    accepts(J.check_frame, b, n)
    return ok


def test_nw_fixtures_decode():
    for b in NW_RESP:
        assert decoders_nw(b)


@PROP
@given(st.binary(max_size=300))
def test_random_bytes_nw(b):
    decoders_nw(b)
    decoders_nw(b"\x4e\x57" + b)


@PROP
@given(nw_frames())
def test_generated_nw_frames(b):
    decoders_nw(b)


@PROP
@given(mutations(NW_RESP, nw_fix, lo=11))
def test_mutated_nw_frames(b):
    decoders_nw(b)


@FEW
@given(mutations(NW_RESP, nw_fix, lo=0))
def test_mutated_nw_frames_header(b):
    decoders_nw(b)


# ------------------------------------------------------------------ any capture (jkbms.dispatch)

CAPTURES = list(RAW.values()) + [RAW["modbus_fc10_trigger_status_addr1"] + F55[0]]


def check_decode_any(b):
    for layout in (0, J.LAYOUT_JK02_24S, J.LAYOUT_JK02_32S, J.LAYOUT_JK04, J.LAYOUT_PB_FC03, J.LAYOUT_4E57):
        snap = primed_snapshot()
        accepts(dispatch.decode_any, b, snap, layout, snap=snap)


def test_decode_any_fixtures():
    for b in CAPTURES:
        dispatch.decode_any(b, S.PackSnapshot())


@PROP
@given(st.binary(max_size=340) | st.sampled_from((J.HEADER, J.COMMAND_HEADER, b"NW")).flatmap(
    lambda h: st.binary(max_size=340).map(lambda t: h + t)))
def test_random_bytes_decode_any(b):
    check_decode_any(b)


def _capture_fix(b):
    # re-fix whichever integrity checks the capture carries
    if b[:4] == J.HEADER or b[11:15] == J.HEADER:
        o = 11 if b[11:15] == J.HEADER else 0
        if len(b) >= o + 300:
            b[o + 299] = sum(b[o:o + 299]) & 0xFF
        if o:
            c = crc16(b, 0, 9)
            b[9], b[10] = c & 0xFF, c >> 8
        t = o + 300
        if len(b) >= t + 20 and b[t:t + 4] == J.COMMAND_HEADER:
            b[t + 19] = sum(b[t:t + 19]) & 0xFF
        elif len(b) >= t + 8:
            p = t + (1 if b[t] == 0 else 0)
            if len(b) >= p + 8:
                c = crc16(b, p, p + 6)
                b[p + 6], b[p + 7] = c & 0xFF, c >> 8
    elif b[:4] == J.COMMAND_HEADER and len(b) >= 20:
        b[19] = sum(b[:19]) & 0xFF
    elif b[:2] == b"NW":
        nw_fix(b)
    else:
        crc_fix(b)
    return b


@PROP
@given(mutations(CAPTURES, _capture_fix, _HOT55, lo=4))
def test_mutated_captures_decode_any(b):
    check_decode_any(b)


JK04_CELL = [b for b in CELL55 if J.detect_layout(b) == J.LAYOUT_JK04]
_HOT_JK04 = [6 + 4 * i for i in range(24)] + [102 + 4 * i for i in range(24)] + [202, 206, 214, 222, 286]


@PROP
@given(mutations(JK04_CELL, sum8_fix, _HOT_JK04, lo=6))
def test_mutated_jk04_cell_frames(b):
    # the float layout: decode() checks cells and balance current, describe_cells() also the
    # resistances and the BMS's own average / delta fields
    pipeline55(b, primed_snapshot())
    accepts(jk04.describe_cells, b)
    check_decode_any(b)


# --------------------------------------------------------------------------------- Modbus / JK-PB


@st.composite
def parse_args(draw):
    return (draw(st.integers(0, 255)), draw(st.sampled_from((3, 6, 16, 1, 0x83)) | st.integers(0, 255)),
            draw(st.sampled_from((-1, 0x1620, 0x161E, 0x161C, 0x1200)) | st.integers(-1, 0xFFFF)),
            draw(st.sampled_from((-1, 1, 2, 32)) | st.integers(-1, 130)))


def check_parse_reply(b, args):
    slave, function, reg, count = args
    for n in {len(b), max(0, len(b) - 1), len(b) + 1, 5, 8}:
        accepts(rtu.parse_reply, b, n, slave, function, reg, count)
        accepts(rtu.describe, b, n)
    for k in range(min(len(b), 12)):
        rtu.frame_len_at(b, k, len(b))
        pb_modbus.frame_len_at(b, k, len(b))


def test_modbus_every_short_length():
    # exhaustive over small frames: every function code we know (and its exception form) at every
    # length 0..12 with a valid CRC, and every fixture frame truncated to every length (CRC re-fixed)
    bodies = [bytes([1, fc]) + bytes(range(2, 12)) for fc in (3, 6, 0x10, 0x83, 0x86, 0x90, 0x01, 0x7F)]
    bodies += [bytes([3, 0x10, 0x16, 0x20, 0, 1, 2, 0, 0, 0, 0]), bytes([3, 3, 2, 0, 0, 0, 0])]
    for body in bodies + MB_FRAMES:
        for k in range(len(body) + 1):
            b = bytes(crc_fix(bytearray(body[:k])))
            check_parse_reply(b, (b[0] if b else 1, b[1] & 0x7F if len(b) > 1 else 3, -1, -1))
            check_decode_any(b) if b else None


@PROP
@given(st.binary(max_size=300), parse_args())
def test_random_bytes_parse_reply(b, args):
    check_parse_reply(b, args)
    check_parse_reply(bytes(crc_fix(bytearray(b))), args)


@PROP
@given(mutations(MB_FRAMES, crc_fix), parse_args())
def test_mutated_modbus_frames(b, args):
    check_parse_reply(b, args)
    check_parse_reply(b, (b[0] if b else 1, b[1] & 0x7F if len(b) > 1 else 3, -1, -1))


@st.composite
def fc03_replies(draw, slave, count):
    regs = draw(st.sampled_from((count, count, count - 1, count + 1, 1)))
    body = bytearray([draw(st.sampled_from((slave, slave, slave + 1))), 3, (2 * max(regs, 0)) & 0xFF])
    body += draw(st.binary(min_size=2 * max(regs, 0), max_size=2 * max(regs, 0))) + b"\0\0"
    return bytes(crc_fix(body))


@FEW
@given(st.data())
def test_block_image_store(data):
    base, nbytes = data.draw(st.sampled_from(((pb_modbus.STATUS_BASE, cellinfo.NEED_32S),
                                              (pb_modbus.SETTINGS_BASE, jk_settings.BLOCK_BYTES),
                                              (pb_modbus.ABOUT_BASE, 37))))
    img = pb_modbus.BlockImage(base, nbytes)
    img.data[:] = data.draw(st.binary(min_size=len(img.data), max_size=len(img.data)))
    slave = 4
    for _ in range(data.draw(st.integers(1, 5))):
        idx = data.draw(st.integers(0, len(img.plan) - 1))
        reg, count = img.plan[idx]
        if data.draw(st.integers(0, 4)) == 0:
            reg = data.draw(st.integers(0, 0xFFFF))
        reply = data.draw(fc03_replies(slave, count) | mutations(MB_FRAMES, crc_fix) | st.binary(max_size=80))
        if data.draw(st.booleans()):
            reply = data.draw(mutations([reply if len(reply) >= 5 else b"\x04\x03\x00\x00\x00"], crc_fix))
        n = data.draw(st.sampled_from((len(reply), len(reply), max(0, len(reply) - 1), len(reply) + 2)))
        before = (bytes(img.data), img._got, img.complete)
        try:
            img.store(reg, reply, n, slave)
        except DecodeError:
            assert (bytes(img.data), img._got, img.complete) == before
            continue
        count = dict(img.plan)[reg]  # store() uses the planned count of that register
        off = reg - base
        assert bytes(img.data[off:off + 2 * count]) == bytes(reply[3:3 + 2 * count])
        assert bytes(img.data[:off]) == before[0][:off]
        assert bytes(img.data[off + 2 * count:]) == before[0][off + 2 * count:]
        assert img._got & (1 << img.plan.index((reg, count)))


def _ack(slave, reg):
    return bytes(crc_fix(bytearray(struct.pack(">BBHH", slave, 0x10, reg, 1) + b"\0\0")))


def _exc(slave, fc, code):
    return bytes(crc_fix(bytearray([slave, fc | 0x80, code, 0, 0])))


@st.composite
def bus_traffic(draw):
    parts = []
    for _ in range(draw(st.integers(1, 8))):
        k = draw(st.integers(0, 7))
        if k == 0:
            parts.append(draw(st.sampled_from(F55)))
        elif k == 1:
            parts.append(_ack(draw(st.sampled_from((1, 3, 7))),
                              draw(st.sampled_from((0x1620, 0x161E, 0x161C, 0x1200)))))
        elif k == 2:
            parts.append(_exc(draw(st.sampled_from((1, 3))), draw(st.sampled_from((3, 6, 16))),
                              draw(st.integers(0, 255))))
        elif k == 3:
            parts.append(draw(mutations(F55, sum8_fix, _HOT55)))
        elif k == 4:
            parts.append(draw(mutations(MB_FRAMES, crc_fix)))
        elif k == 5:
            parts.append(draw(st.binary(max_size=60)))
        elif k == 6:
            parts.append(draw(st.sampled_from(MB_FRAMES)))
        else:
            parts.append(b"\x00")
    return b"".join(parts)


@st.composite
def chunked(draw, stream, max_chunk=244):
    out = []
    i = 0
    while i < len(stream):
        k = draw(st.integers(1, max_chunk))
        out.append(stream[i:i + k])
        i += k
    return out


@PROP
@given(st.data())
def test_trigger_reply_random_traffic(data):
    tr = pb_modbus.TriggerReply()
    tr.start(data.draw(st.sampled_from((1, 3, 7))), data.draw(st.sampled_from(rtu.TRIGGER_REGISTERS)))
    stream = data.draw(bus_traffic())
    for chunk in data.draw(chunked(stream, 300)):
        tr.feed(chunk)
        for _ in range(8):
            try:
                tr.poll()
                break
            except DecodeError:
                continue


_SAFE_NOISE = st.binary(max_size=40).map(lambda b: bytes(0xF8 | (x & 7) if x & 1 else 0 for x in b))


@PROP
@given(st.data())
def test_trigger_reply_collects_any_chunking(data):
    # [optional echo][noise][55AA frame of the right type][0x00?][ACK][0x00?], any chunking
    slave = data.draw(st.sampled_from((1, 3, 7, 15)))
    reg = data.draw(st.sampled_from(rtu.TRIGGER_REGISTERS))
    want = pb_modbus.TRIGGER_TYPE[reg]
    frame = data.draw(st.sampled_from([b for b in F55 if b[4] == want]))
    req = bytearray(11)
    pb_modbus.build_trigger(req, slave, reg)
    pad = b"\x00" if data.draw(st.booleans()) else b""
    stream = ((bytes(req) if data.draw(st.booleans()) else b"") + data.draw(_SAFE_NOISE) + frame
              + pad + _ack(slave, reg) + pad + data.draw(_SAFE_NOISE))
    # another slave's complete answer before ours must not be taken for ours
    if data.draw(st.booleans()):
        other = data.draw(st.sampled_from([b for b in F55 if b[4] == want and b != frame] or [frame]))
        stream = other + _ack(slave % 15 + 1, reg) + stream
    tr = pb_modbus.TriggerReply()
    tr.start(slave, reg)
    done = False
    for chunk in data.draw(chunked(stream, 244)):
        tr.feed(chunk)
        done = tr.poll() or done
    assert done and tr.frame_ok and tr.ack_ok
    assert bytes(tr.frame) == frame


@FEW
@given(st.data())
def test_trigger_reply_rejects_other_slaves_frame(data):
    # a frame acknowledged by another slave is not ours, even when our ACK follows on its own
    slave, reg = 3, data.draw(st.sampled_from(rtu.TRIGGER_REGISTERS))
    frame = data.draw(st.sampled_from([b for b in F55 if b[4] == pb_modbus.TRIGGER_TYPE[reg]]))
    stream = frame + _ack(data.draw(st.sampled_from((1, 2, 7, 15))), reg) + _ack(slave, reg)
    tr = pb_modbus.TriggerReply()
    tr.start(slave, reg)
    done = False
    for chunk in data.draw(chunked(stream, 244)):
        tr.feed(chunk)
        done = tr.poll() or done
    assert not done and not tr.ack_ok


@PROP
@given(st.data())
def test_trigger_reply_exception_and_wrong_type(data):
    slave, reg = 3, data.draw(st.sampled_from(rtu.TRIGGER_REGISTERS))
    tr = pb_modbus.TriggerReply()
    tr.start(slave, reg)
    if data.draw(st.booleans()):
        tr.feed(_exc(slave, 0x10, data.draw(st.integers(1, 4))))
        with pytest.raises(rtu.ModbusExceptionReply):
            tr.poll()
    else:
        wrong = [b for b in F55 if b[4] != pb_modbus.TRIGGER_TYPE[reg]]
        tr.feed(data.draw(st.sampled_from(wrong)))
        with pytest.raises(DecodeError):
            tr.poll()
    assert not tr.frame_ok or not tr.ack_ok


# ----------------------------------------------------------------------------- inverter (CAN rx)


@PROP
@given(st.integers(0, 0x7FF) | st.sampled_from((0x305, 0x305)), st.binary(max_size=12),
       st.integers(0, 12) | st.just(8), st.integers(0, 7))
def test_parse_inverter(can_id, payload, n, flags):
    # the Encoder contract (protocols.base): on_rx classifies any frame without raising; only an
    # 11-bit data frame 0x305 with 8 bytes is the heartbeat (flags: 1 RTR, 2 extended id)
    rx = pylon.PylonEncoder().on_rx(can_id, payload, n, flags)
    heartbeat = can_id == pylon.ID_INVERTER and n == 8 and not flags & 3
    assert rx == (protocol_base.RX_HEARTBEAT if heartbeat else protocol_base.RX_IGNORED)
    try:
        r = pylon.parse_inverter(can_id, payload, n)
    except DecodeError:
        assert can_id == pylon.ID_INVERTER
        return
    assert r in (0, pylon.ID_INVERTER)
    assert (r == pylon.ID_INVERTER) == (can_id == pylon.ID_INVERTER)


# ----------------------------------------------------------------------- stream reassembly


def _no_false_markers(stream, frames, ble):
    """The only header occurrences are the frames' own; in BLE mode the only confirmation and
    AT markers are the inserted ones (noise is drawn without 0x0A / 0x90 / 0xEB, this guards the
    joins)."""
    if stream.count(J.HEADER) != len(frames):
        return False
    if ble and stream.count(J.COMMAND_HEADER) != stream.count(C8):
        return False
    return True


@st.composite
def ble_stream(draw):
    noise = st.binary(max_size=50).map(lambda b: bytes(x for x in b if x not in (0x0A, 0x90, 0xEB)))
    items, frames = [], []
    for _ in range(draw(st.integers(1, 6))):
        k = draw(st.integers(0, 5))
        if k <= 1:
            f = draw(st.sampled_from(F55))
            frames.append(f)
            items.append(f + (C8 if draw(st.booleans()) else b""))  # some firmwares glue the C8
        elif k == 2:
            items.append(AT)
        elif k == 3:
            items.append(C8)
        else:
            items.append(draw(noise))
    return b"".join(items), frames


@st.composite
def uart_stream(draw):
    items, frames = [], []
    for _ in range(draw(st.integers(1, 6))):
        if draw(st.booleans()):
            f = draw(st.sampled_from(F55))
            frames.append(f)
            items.append(f)
        items.append(draw(st.binary(max_size=80) | st.sampled_from((AT, C8, b"\x55\xaa", b"\x55\xaa\xeb"))))
    return b"".join(items), frames


def _reassemble(r, chunks):
    got = []
    for c in chunks:
        r.feed(c)
        while r.next_frame():
            got.append(bytes(r.frame[:J.FRAME_LEN]))
    return got


@PROP
@given(st.data())
def test_reassembler_ble_any_chunking(data):
    stream, frames = data.draw(ble_stream())
    assume(_no_false_markers(stream, frames, True))
    chunks = data.draw(chunked(stream, 244))
    assert _reassemble(Reassembler(ble=True), chunks) == frames


@PROP
@given(st.data())
def test_reassembler_ble_notification_sized_chunks(data):
    # realistic BLE: every frame split into MTU-sized notifications; AT / C8 as whole chunks,
    # or AT glued as prefix / suffix of a notification
    mtu = data.draw(st.sampled_from((20, 128, 244)))
    chunks, frames = [], []
    for _ in range(data.draw(st.integers(1, 5))):
        k = data.draw(st.integers(0, 3))
        if k <= 1:
            f = data.draw(st.sampled_from(F55))
            frames.append(f)
            parts = [f[i:i + mtu] for i in range(0, 300, mtu)]
            if data.draw(st.booleans()):
                parts[0] = AT + parts[0]
            if data.draw(st.booleans()):
                parts[-1] = parts[-1] + AT
            chunks += parts
        elif k == 2:
            chunks.append(C8)
        else:
            chunks.append(AT)
    assert _reassemble(Reassembler(ble=True), chunks) == frames


@PROP
@given(st.data())
def test_reassembler_uart_any_chunking(data):
    stream, frames = data.draw(uart_stream())
    assume(_no_false_markers(stream, frames, False))
    chunks = data.draw(chunked(stream, 244))
    assert _reassemble(Reassembler(ble=False), chunks) == frames


@PROP
@given(st.data())
def test_reassembler_random_input(data):
    # arbitrary bytes and mutated frames: never an exception, every output frame checksums
    r = Reassembler(ble=data.draw(st.booleans()))
    parts = data.draw(st.lists(st.binary(max_size=300) | mutations(F55, sum8_fix) | st.sampled_from(F55),
                               max_size=5))
    for c in data.draw(chunked(b"".join(parts), 244)):
        r.feed(c)
        while r.next_frame():
            f = bytes(r.frame[:J.FRAME_LEN])
            assert f[:4] == J.HEADER and sum(f[:299]) & 0xFF == f[299]
            pipeline55(f, primed_snapshot())


@PROP
@given(st.data())
def test_frame_extractor_4e57_any_chunking(data):
    noise = st.binary(max_size=40).map(lambda b: bytes(x for x in b if x != 0x4E))
    items, frames = [], []
    for _ in range(data.draw(st.integers(1, 5))):
        f = data.draw(st.sampled_from(NW_FRAMES))
        frames.append(f)
        items += [data.draw(noise), f]
    items.append(data.draw(noise))
    x = FrameExtractor(nw.frame_len_at, 2048, nw.MAX_FRAME)
    got = []
    for c in data.draw(chunked(b"".join(items), 244)):
        x.feed(c)
        while True:
            n = x.next_frame()
            if not n:
                break
            got.append(bytes(x.frame[:n]))
            nw.check_frame(x.frame, n)
    assert got == frames


@PROP
@given(st.data())
def test_frame_extractor_modbus_random(data):
    x = FrameExtractor(pb_modbus.frame_len_at, 2 * J.FRAME_LEN + 64, J.FRAME_LEN)
    stream = data.draw(bus_traffic())
    for c in data.draw(chunked(stream, 244)):
        x.feed(c)
        while True:
            n = x.next_frame()
            if not n:
                break
            f = x.frame
            if n == J.FRAME_LEN and f[0] == 0x55:
                J.check_frame(f, n)
            else:
                assert n <= rtu.MAX_FRAME
                accepts(rtu.parse_reply, f, n, f[0], f[1] & 0x7F)
