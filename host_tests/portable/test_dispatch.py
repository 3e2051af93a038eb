# jkbms.dispatch.decode_any on a 55AA frame followed by the FC10 ACK of a pack
# at address 0 (the bus master of a JK-PB bank): its zero address byte is not
# padding. CPython and MicroPython.

from fixtures import find_frame, unhex

from jkbms import dispatch
from modbus import crc
from pack.snapshot import PackSnapshot


def _ack(slave, reg):
    b = bytearray(8)
    b[0], b[1], b[2], b[3], b[4], b[5] = slave, 0x10, reg >> 8, reg & 0xFF, 0, 1
    crc.put_crc(b, 6)
    return bytes(b)


def test_a_55aa_frame_with_the_ack_of_address_0_decodes():
    frame = unhex(find_frame("rs485_pb_status_response_with_ack_mpp")["hex"])[:300]
    for pad in (b"", b"\x00", b"\x00\x00"):
        out = dispatch.decode_any(frame + pad + _ack(0, 0x1620) + pad, PackSnapshot())
        assert out["ack"]["slave"] == 0 and out["ack"]["register"] == 0x1620, out["ack"]
    out = dispatch.decode_any(frame + b"\x00" + _ack(1, 0x1620), PackSnapshot())  # padding, then slave 1
    assert out["ack"]["slave"] == 1
