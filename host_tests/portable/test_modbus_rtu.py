# Modbus RTU: CRC check values, request builders against the captured
# requests, reply parsing, the read-only guard, and frame extraction from a
# noisy stream. (The cross-check against pymodbus is in host_tests/cpython.)

from fixtures import load_frames, unhex

from codec.errors import DecodeError
from codec.stream import FrameExtractor
from jkbms import pb_modbus as pb
from modbus import crc, rtu


def modbus_fixtures():
    return [f for f in load_frames() if f["layout"] == "MODBUS"]


def test_crc_check_values_from_the_spec():
    assert crc.crc16(b"\x01\x03\x12\x90\x00\x02", 0, 6) == 0x5EC1
    assert crc.crc16(b"\x01\x10\x16\x20\x00\x01\x02\x00\x00", 0, 9) == 0xF1D6
    assert crc.crc16(b"123456789", 0, 9) == 0x4B37  # CRC-16/MODBUS catalogue check


def test_every_modbus_fixture_has_a_valid_crc():
    for f in modbus_fixtures():
        b = unhex(f["hex"])
        assert crc.crc_ok(b, 0, len(b)), f["id"]
        bad = bytearray(b)
        bad[2] ^= 0x01
        assert not crc.crc_ok(bad, 0, len(bad))


def test_builders_reproduce_the_captured_requests():
    buf = bytearray(32)
    n_checked = 0
    for f in modbus_fixtures():
        e = f["expected"]
        want = unhex(f["hex"])
        if e["function"] == 3:
            n = rtu.build_read(buf, e["slave"], e["register"], e["count"])
        elif e["function"] == 16 and len(want) == 11 and e["register"] in rtu.TRIGGER_REGISTERS:
            n = pb.build_trigger(buf, e["slave"], e["register"])
        else:
            continue
        assert bytes(buf[:n]) == want, f["id"]
        n_checked += 1
    assert n_checked == 6


def test_acks_parse_and_name_the_register():
    for f in modbus_fixtures():
        e = f["expected"]
        b = unhex(f["hex"])
        if len(b) == 8 and e["function"] == 16:
            assert rtu.parse_reply(b, 8, e["slave"], rtu.WRITE_MULTIPLE, e["register"], 1) == 0
            try:
                rtu.parse_reply(b, 8, e["slave"], rtu.WRITE_MULTIPLE, e["register"] + 2, 1)
                raise AssertionError("should have raised DecodeError (reply for another register)")
            except DecodeError:
                pass


def test_the_only_writes_are_the_read_triggers():
    buf = bytearray(32)
    refused = 0
    for reg in (0x0000, 0x1000, 0x1078, 0x1600, 0x1602, 0x1604, 0x1615, 0x161A, 0x161F, 0x1621, 0xFFFF):
        for build in (lambda r: rtu.build_write_single(buf, 1, r, 0),
                      lambda r: rtu.build_write_multiple(buf, 1, r, (0,))):
            try:
                build(reg)
                raise AssertionError("should have raised ValueError: write to %s" % hex(reg))
            except ValueError:
                refused += 1
    assert refused == 22
    for reg in rtu.TRIGGER_REGISTERS:
        assert rtu.build_write_multiple(buf, 1, reg, (0,)) == 11
        try:
            rtu.build_write_multiple(buf, 1, reg, (1,))
            raise AssertionError("should have raised ValueError (trigger written with 1)")
        except ValueError:
            pass
    # the captured balancer-on write is decodable but can never be built here
    f = [x for x in modbus_fixtures() if x["id"] == "modbus_fc10_write_balancer_on_addr2"][0]
    try:
        rtu.build_write_multiple(buf, 2, f["expected"]["register"], (0, 1))
        raise AssertionError("should have raised ValueError (balancer-on write)")
    except ValueError:
        pass


def test_fc03_reply_parsing_and_exceptions():
    reply = bytearray(b"\x01\x03\x04\x00\x00\xce\x6c\x00\x00")
    n = crc.put_crc(reply, 7)
    assert rtu.parse_reply(reply, n, 1, rtu.READ_HOLDING, -1, 2) == 4
    for slave, func, count in ((2, 3, 2), (1, 16, 2), (1, 3, 3)):
        try:
            rtu.parse_reply(reply, n, slave, func, -1, count)
            raise AssertionError("should have raised DecodeError (slave %d, function %d, count %d)"
                                 % (slave, func, count))
        except DecodeError:
            pass
    exc = bytearray(b"\x01\x83\x02\x00\x00")
    crc.put_crc(exc, 3)
    try:
        rtu.parse_reply(exc, 5, 1, rtu.READ_HOLDING)
        raise AssertionError("should have raised ModbusExceptionReply")
    except rtu.ModbusExceptionReply as e:
        assert e.code == 2 and e.function == 3
    bad = bytearray(reply)
    bad[4] ^= 0x10
    try:
        rtu.parse_reply(bad, n, 1, rtu.READ_HOLDING)
        raise AssertionError("should have raised DecodeError (bad CRC)")
    except DecodeError:
        pass


def test_extractor_finds_frames_in_noise_and_partial_chunks():
    acks = [unhex(f["hex"]) for f in modbus_fixtures() if f["id"].startswith("modbus_fc10_ack")]
    req = [unhex(f["hex"]) for f in modbus_fixtures() if f["id"] == "modbus_fc03_read_batvol_addr1"][0]
    reply = bytearray(b"\x05\x03\x06\x11\x22\x33\x44\x55\x66\x00\x00")
    crc.put_crc(reply, 9)
    stream = bytearray(b"\x00\xff\x13\x37") + acks[0] + b"\x99" + req + bytes(reply) + b"\x03\x10" + acks[1] + acks[2]
    want = [acks[0], req, bytes(reply), acks[1], acks[2]]
    for step in (1, 3, 7, 64):
        x = FrameExtractor(rtu.frame_len_at, 128, rtu.MAX_FRAME)
        got = []
        for i in range(0, len(stream), step):
            x.feed(stream, i, min(i + step, len(stream)))
            while True:
                n = x.next_frame()
                if not n:
                    break
                got.append(bytes(x.frame[:n]))
        assert got == want, step
        assert x.dropped >= 7


def test_trigger_reply_with_ack_and_padding():
    frames = load_frames()
    status = [unhex(f["hex"]) for f in frames if f["id"] == "rs485_pb_status_response_with_ack_mpp"][0]
    frame, ack = status[:300], status[300:]
    echo = bytearray(16)
    n = pb.build_trigger(echo, 1, pb.TRIGGER_STATUS)
    for wire in (bytes(echo[:n]) + frame + ack, bytes(echo[:n]) + frame + b"\x00" + ack + b"\x00", frame + ack):
        r = pb.TriggerReply()
        r.start(1, pb.TRIGGER_STATUS)
        done = False
        for i in range(0, len(wire), 37):
            r.feed(wire, i, min(i + 37, len(wire)))
            done = r.poll()
        assert done
        assert bytes(r.frame) == frame
    # the same frame acknowledged by slave 3: not ours
    r = pb.TriggerReply()
    r.start(1, pb.TRIGGER_STATUS)
    other_ack = bytearray(ack)
    other_ack[0] = 3
    crc.put_crc(other_ack, 6)
    r.feed(frame + bytes(other_ack))
    assert not r.poll()
    assert not r.frame_ok
    # a settings frame in answer to a status trigger is refused
    settings = [unhex(f["hex"]) for f in frames if f["id"] == "rs485_pb_settings_response_with_ack_mpp"][0]
    r.start(1, pb.TRIGGER_STATUS)
    r.feed(settings[:300])
    try:
        r.poll()
        raise AssertionError("should have raised DecodeError (settings frame for a status trigger)")
    except DecodeError:
        pass


def test_read_plan_covers_blocks_in_32_register_steps():
    plan = pb.read_plan(pb.STATUS_BASE, 276)
    assert plan[0] == (0x1200, 32) and plan[1] == (0x1240, 32)
    covered = 0
    for reg, count in plan:
        assert count <= 32
        assert reg == pb.STATUS_BASE + covered  # registers are byte offsets
        covered += 2 * count
    assert covered >= 276
