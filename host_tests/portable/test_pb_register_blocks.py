# JK-PB Modbus FC03 register blocks carry the same fields as the 55AA frames,
# at block offset = frame offset - 6, but big-endian per field (docs/jk-bms.md "JK-PB").
# These tests rebuild block images from real 55AA captures, field by field in
# big-endian order, and check that the block decoders agree with the frame
# decoders; plus the 4E 57 current encodings.

from fixtures import find_frame, unhex

from codec.errors import DecodeError
from jkbms import devinfo, fields, nw, settings
from pack.snapshot import PackSnapshot


def to_be_block(frame, table):
    """Block image of a 55AA frame with every table field byte-swapped."""
    block = bytearray(fields.need(table))
    for _name, off, kind in table:
        size = fields.size_of(kind)
        src = 6 + off
        if kind.startswith("text") or size == 1:
            for i in range(size):
                block[off + i] = frame[src + i]
        else:
            for i in range(size):
                block[off + i] = frame[src + size - 1 - i]
    return block


def test_settings_block_decodes_like_the_frame():
    frame = unhex(find_frame("rs485_pb_settings_response_with_ack_mpp")["hex"])[:300]
    block = to_be_block(frame, settings.TABLE)
    assert settings.describe(block, 0, True) == settings.describe(frame)
    a = PackSnapshot()
    b = PackSnapshot()
    settings.decode(frame, a)
    settings.decode(block, b, 0, True)
    for attr in ("cell_ovp_mv", "cell_ovpr_mv", "cell_uvp_mv", "cell_uvpr_mv", "rcv_mv", "rfv_mv",
                 "max_charge_ma", "max_discharge_ma", "charge_switch", "discharge_switch",
                 "design_mah", "set_cell_count", "settings_ok"):
        assert getattr(a, attr) == getattr(b, attr), attr
    assert b.settings_ok == 1


def test_settings_block_read_little_endian_is_rejected():
    # a byte-order mistake must not produce limits: cell count 16 read as
    # 0x10000000 fails the plausibility checks
    frame = unhex(find_frame("rs485_pb_settings_response_with_ack_mpp")["hex"])[:300]
    block = to_be_block(frame, settings.TABLE)
    snap = PackSnapshot()
    try:
        settings.decode(block, snap, 0, False)
        raise AssertionError("should have raised DecodeError (settings block read little-endian)")
    except DecodeError:
        pass
    assert snap.settings_ok == 0


def test_device_info_block_decodes_like_the_frame():
    frame = unhex(find_frame("rs485_pb_about_response_with_ack_mpp")["hex"])[:300]
    block = to_be_block(frame, devinfo.TABLE)
    d = devinfo.describe(block, 0, True)
    assert d == devinfo.describe(frame)
    assert d["model"] == "JK_PB2A16S15P" and d["power_on_count"] == 452


def _with_current(frame, raw, version):
    b = bytearray(frame)
    p = 11
    while p < len(b) - 9:
        n = nw._item_len(b, p, len(b) - 9)
        if b[p] == 0x84:
            b[p + 1] = raw >> 8
            b[p + 2] = raw & 0xFF
        if b[p] == 0xC0:
            b[p + 1] = version
        p += 1 + n
    s = 0
    for i in range(len(b) - 4):
        s += b[i]
    b[-2] = (s >> 8) & 0xFF
    b[-1] = s & 0xFF
    return b


def test_4e57_current_encodings_follow_the_protocol_version():
    frame = unhex(find_frame("rs485_4e57_read_all_response_14s")["hex"])
    snap = PackSnapshot()
    for raw, version, want_ma in ((0x80D0, 1, 2080), (0x0045, 1, -690), (0x8000, 1, 0),
                                  (9000, 0, 10000), (10500, 0, -5000), (10000, 0, 0)):
        b = _with_current(frame, raw, version)
        nw.decode(b, len(b), snap)
        assert snap.current_ma == want_ma, (raw, version, snap.current_ma)


def test_4e57_corrupt_checksum_is_rejected_and_snapshot_kept():
    frame = unhex(find_frame("rs485_4e57_read_all_response_14s")["hex"])
    snap = PackSnapshot()
    nw.decode(frame, len(frame), snap)
    before = (snap.pack_mv, snap.current_ma, snap.updates)
    bad = bytearray(frame)
    bad[20] ^= 0x01
    try:
        nw.decode(bad, len(bad), snap)
        raise AssertionError("should have raised DecodeError (bad checksum)")
    except DecodeError:
        pass
    assert (snap.pack_mv, snap.current_ma, snap.updates) == before
