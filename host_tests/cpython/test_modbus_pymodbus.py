# Cross-check of our Modbus RTU code (firmware/lib/modbus, jkbms/pb_modbus) against pymodbus,
# an independent implementation:
#   (a) CRC-16/MODBUS equals pymodbus's RTU framer CRC;
#   (b) every request we build decodes with pymodbus's server-side RTU framer to the same
#       function / slave / address / count / values, and is byte-identical to what pymodbus
#       builds for the same request;
#   (c) every response pymodbus builds (FC03 data, FC06 / FC10 acknowledgements, exception
#       replies) is accepted by our rtu.parse_reply with the same data, or raises
#       ModbusExceptionReply with the same code;
#   (d) end to end: a pymodbus server speaking RTU framing over TCP on 127.0.0.1 emulates a
#       JK-PB (byte-addressed register blocks, trigger registers), and our builders +
#       FrameExtractor + parse_reply + pb_modbus.BlockImage read it over a plain socket;
#   (e) the safety rule: only the three trigger registers can be written, and only with 0.
import asyncio
import socket
import struct
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pymodbus.constants import ExcCodes
from pymodbus.framer import FramerType
from pymodbus.framer.rtu import FramerRTU
from pymodbus.pdu import DecodePDU, ExceptionResponse
from pymodbus.pdu.register_message import (
    ReadHoldingRegistersRequest,
    ReadHoldingRegistersResponse,
    WriteMultipleRegistersRequest,
    WriteMultipleRegistersResponse,
    WriteSingleRegisterRequest,
    WriteSingleRegisterResponse,
)
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

# firmware/lib, on sys.path via host_tests/conftest.py (test_poller_pymodbus.py run as a script puts it there too)
from codec.errors import DecodeError
from codec.stream import FrameExtractor
from jkbms import cellinfo, devinfo, pb_modbus
from jkbms import frame as J
from jkbms import settings as jk_settings
from modbus import rtu
from modbus.crc import crc16, crc_ok, put_crc
from pack import snapshot as S

TRIGGERS = (0x161C, 0x161E, 0x1620)
SLAVES = st.integers(1, 247)
HYP = settings(deadline=None, max_examples=300)


def _request_framer():
    return FramerRTU(DecodePDU(True))  # server side: decodes requests


def _response_framer():
    return FramerRTU(DecodePDU(False))  # client side: decodes responses


def _pm_frame(pdu):
    """RTU frame of a pymodbus PDU (builder side does not depend on the decoder direction)."""
    return _response_framer().buildFrame(pdu)


def _decode_request(frame):
    used, pdu = _request_framer().handleFrame(bytes(frame), 0, 0)
    assert used == len(frame), "pymodbus did not consume exactly one frame"
    assert pdu is not None, "pymodbus rejected the frame"
    return pdu


# ---------------------------------------------------------------------------------------- (a) CRC


def test_crc_spec_check_values():
    # docs/jk-bms.md "JK-PB"
    for body, wire in ((bytes.fromhex("010312900002"), b"\xc1\x5e"),
                       (bytes.fromhex("011016200001020000"), b"\xd6\xf1")):
        c = crc16(body, 0, len(body))
        assert bytes((c & 0xFF, c >> 8)) == wire
        assert FramerRTU.compute_CRC(body).to_bytes(2, "big") == wire


@HYP
@given(st.binary(max_size=300))
def test_crc_equals_pymodbus(data):
    ours = crc16(data, 0, len(data))
    theirs = FramerRTU.compute_CRC(data)  # pymodbus returns the CRC in wire order (low byte high)
    assert ((ours & 0xFF) << 8) | (ours >> 8) == theirs
    # put_crc appends exactly what pymodbus's encoder appends
    buf = bytearray(len(data) + 2)
    buf[: len(data)] = data
    assert put_crc(buf, len(data)) == len(data) + 2
    assert bytes(buf) == data + theirs.to_bytes(2, "big")
    assert FramerRTU.check_CRC(data, theirs)
    assert crc_ok(buf, 0, len(buf)) == (len(buf) >= 4)


@HYP
@given(st.binary(min_size=1, max_size=64), st.integers(0, 63), st.integers(0, 7))
def test_crc_ok_detects_single_bit_errors(data, pos, bit):
    frame = bytearray(data + b"\0\0")
    put_crc(frame, len(data))
    if len(frame) >= 4:
        assert crc_ok(frame, 0, len(frame))
    frame[pos % len(frame)] ^= 1 << bit
    assert not crc_ok(frame, 0, len(frame))
    assert not FramerRTU.check_CRC(bytes(frame[:-2]), int.from_bytes(frame[-2:], "big"))


# ---------------------------------------------------------------------------------- (b) requests


@HYP
@given(SLAVES, st.integers(0, 0xFFFF), st.integers(1, rtu.MAX_READ_REGS))
def test_fc03_request_decoded_by_pymodbus(slave, reg, count):
    buf = bytearray(16)
    n = rtu.build_read(buf, slave, reg, count)
    assert n == 8
    pdu = _decode_request(buf[:n])
    assert isinstance(pdu, ReadHoldingRegistersRequest)
    assert (pdu.function_code, pdu.dev_id, pdu.address, pdu.count) == (3, slave, reg, count)
    # byte-identical to pymodbus's own request
    assert bytes(buf[:n]) == _pm_frame(ReadHoldingRegistersRequest(address=reg, count=count, dev_id=slave))


@HYP
@given(SLAVES, st.sampled_from(TRIGGERS))
def test_fc10_trigger_decoded_by_pymodbus(slave, reg):
    buf = bytearray(16)
    n = pb_modbus.build_trigger(buf, slave, reg)
    assert n == 11
    pdu = _decode_request(buf[:n])
    assert isinstance(pdu, WriteMultipleRegistersRequest)
    assert (pdu.function_code, pdu.dev_id, pdu.address, pdu.count) == (16, slave, reg, 1)
    assert list(pdu.registers) == [0]
    assert bytes(buf[:n]) == _pm_frame(WriteMultipleRegistersRequest(address=reg, registers=[0], dev_id=slave))
    # same through the generic builder
    buf2 = bytearray(16)
    assert rtu.build_write_multiple(buf2, slave, reg, (0,)) == n and buf2[:n] == buf[:n]


def test_fc10_trigger_matches_spec_frames():
    # docs/jk-bms.md "JK-PB", address 1
    expect = {0x1620: "01101620000102 0000 d6f1", 0x161E: "0110161e000102 0000 d22f",
              0x161C: "0110161c000102 0000 d3cd"}
    for reg, hx in expect.items():
        buf = bytearray(11)
        pb_modbus.build_trigger(buf, 1, reg)
        assert bytes(buf) == bytes.fromhex(hx.replace(" ", ""))


@HYP
@given(SLAVES, st.sampled_from(TRIGGERS), st.integers(1, 4))
def test_fc10_multi_register_zero_write_decoded_by_pymodbus(slave, reg, count):
    buf = bytearray(32)
    n = rtu.build_write_multiple(buf, slave, reg, [0] * count)
    assert n == 9 + 2 * count
    pdu = _decode_request(buf[:n])
    assert (pdu.function_code, pdu.dev_id, pdu.address, pdu.count) == (16, slave, reg, count)
    assert list(pdu.registers) == [0] * count


@HYP
@given(SLAVES, st.sampled_from(TRIGGERS))
def test_fc06_trigger_decoded_by_pymodbus(slave, reg):
    buf = bytearray(16)
    n = rtu.build_write_single(buf, slave, reg, 0)
    assert n == 8
    pdu = _decode_request(buf[:n])
    assert isinstance(pdu, WriteSingleRegisterRequest)
    assert (pdu.function_code, pdu.dev_id, pdu.address) == (6, slave, reg)
    assert list(pdu.registers) == [0]
    assert bytes(buf[:n]) == _pm_frame(WriteSingleRegisterRequest(address=reg, registers=[0], dev_id=slave))


# --------------------------------------------------------------------------------- (c) responses


@HYP
@given(SLAVES, st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=rtu.MAX_READ_REGS))
def test_fc03_reply_from_pymodbus_parsed(slave, regs):
    frame = _pm_frame(ReadHoldingRegistersResponse(registers=regs, dev_id=slave))
    n = len(frame)
    assert n == 5 + 2 * len(regs)
    size = rtu.parse_reply(frame, n, slave, rtu.READ_HOLDING, -1, len(regs))
    assert size == 2 * len(regs)
    assert list(struct.unpack(">%dH" % len(regs), frame[3:3 + size])) == regs
    # also without the count check, and in a larger buffer (frame[0:n] only)
    big = bytearray(frame) + bytearray(40)
    assert rtu.parse_reply(big, n, slave, rtu.READ_HOLDING) == size
    # the frame judge sees exactly this frame
    assert rtu.frame_len_at(big, 0, n) in (n, 8)  # an 8-byte CRC coincidence is a known RTU ambiguity
    # mismatching expectations are DecodeErrors
    with pytest.raises(DecodeError):
        rtu.parse_reply(frame, n, slave, rtu.READ_HOLDING, -1, len(regs) + 1)
    with pytest.raises(DecodeError):
        rtu.parse_reply(frame, n, slave % 247 + 1, rtu.READ_HOLDING)
    with pytest.raises(DecodeError):
        rtu.parse_reply(frame, n, slave, rtu.WRITE_MULTIPLE)
    with pytest.raises(DecodeError):
        rtu.parse_reply(frame, n - 1, slave, rtu.READ_HOLDING)


@HYP
@given(SLAVES, st.sampled_from(TRIGGERS))
def test_fc10_ack_from_pymodbus_parsed(slave, reg):
    frame = _pm_frame(WriteMultipleRegistersResponse(address=reg, count=1, dev_id=slave))
    assert len(frame) == 8
    assert rtu.parse_reply(frame, 8, slave, rtu.WRITE_MULTIPLE, reg, 1) == 0
    assert rtu.frame_len_at(frame, 0, 8) == 8
    other = TRIGGERS[(TRIGGERS.index(reg) + 1) % 3]
    with pytest.raises(DecodeError):
        rtu.parse_reply(frame, 8, slave, rtu.WRITE_MULTIPLE, other, 1)
    with pytest.raises(DecodeError):
        rtu.parse_reply(frame, 8, slave, rtu.WRITE_MULTIPLE, reg, 2)


@HYP
@given(SLAVES, st.sampled_from(TRIGGERS))
def test_fc06_ack_from_pymodbus_parsed(slave, reg):
    frame = _pm_frame(WriteSingleRegisterResponse(address=reg, registers=[0], dev_id=slave))
    assert len(frame) == 8
    assert rtu.parse_reply(frame, 8, slave, rtu.WRITE_SINGLE, reg) == 0
    assert rtu.frame_len_at(frame, 0, 8) == 8
    with pytest.raises(DecodeError):
        rtu.parse_reply(frame, 8, slave, rtu.WRITE_SINGLE, reg ^ 2)


@pytest.mark.parametrize("function", (rtu.READ_HOLDING, rtu.WRITE_SINGLE, rtu.WRITE_MULTIPLE))
@pytest.mark.parametrize("code", (1, 2, 3, 4))
@pytest.mark.parametrize("slave", (1, 7, 15, 247))
def test_exception_reply_from_pymodbus(function, code, slave):
    frame = _pm_frame(ExceptionResponse(function, code, device_id=slave))
    assert len(frame) == 5 and frame[1] == function | 0x80
    assert rtu.frame_len_at(frame, 0, 5) == 5
    with pytest.raises(rtu.ModbusExceptionReply) as ei:
        rtu.parse_reply(frame, 5, slave, function)
    assert ei.value.code == code and ei.value.function == function
    assert isinstance(ei.value, DecodeError)
    # the exception reply to another function is not ours
    other = rtu.READ_HOLDING if function != rtu.READ_HOLDING else rtu.WRITE_MULTIPLE
    with pytest.raises(DecodeError) as ei2:
        rtu.parse_reply(frame, 5, slave, other)
    assert not isinstance(ei2.value, rtu.ModbusExceptionReply)


def test_trigger_reply_collects_frame_and_pymodbus_ack():
    # a 300-byte 55AA status frame (synthetic, sum8 fixed) followed by a pymodbus-built ACK
    body = bytearray(300)
    body[0:4] = J.HEADER
    body[4] = J.TYPE_CELL_INFO
    body[299] = sum(body[:299]) & 0xFF
    ack = _pm_frame(WriteMultipleRegistersResponse(address=0x1620, count=1, dev_id=3))
    req = bytearray(11)
    pb_modbus.build_trigger(req, 3, 0x1620)
    tr = pb_modbus.TriggerReply()
    tr.start(3, 0x1620)
    tr.feed(bytes(req) + bytes(body) + b"\x00" + ack + b"\x00")  # echo, frame, padded ACK
    assert tr.poll() is True
    assert bytes(tr.frame) == bytes(body)


# ------------------------------------------------------------------- (d) end-to-end with a server
#
# JK-PB register addressing (docs/jk-bms.md "JK-PB"): a register address is the block base
# plus a *byte* offset, and a read of N registers at R returns the 2N contiguous bytes starting at
# byte offset R - base; the next read of a plan therefore starts at R + 2N. Consecutive register
# addresses overlap by one byte, so no plain table of 16-bit registers can hold such a block
# (register R+1 would have to contain the low byte of R as its high byte *and* R+2's high byte
# would have to be R+1's low byte, for every R at once).
#
# The simulated JK-PB therefore keeps each block as a byte image and uses pymodbus's device
# `action` hook: on every FC03 read of (address, count) it rewrites the requested registers from
# the image, register k = the big-endian 16-bit word at byte offset (address - base) + 2k, before
# pymodbus builds the reply. Reads beyond the image get exception 02 (illegal address), like the
# real device. Every byte offset of a block is a defined (readable) register address. The trigger
# registers 0x161C / 0x161E / 0x1620 are ordinary writable registers, so FC10 / FC06 trigger
# writes get a normal acknowledgement (a real JK-PB additionally sends a 55AA frame first, which
# pymodbus cannot emulate; TriggerReply is covered above and in test_properties.py).

STATUS_BASE = pb_modbus.STATUS_BASE
SETTINGS_BASE = pb_modbus.SETTINGS_BASE
ABOUT_BASE = pb_modbus.ABOUT_BASE
SLAVE = 5

# Values of the simulated pack, written into the status block big-endian at the byte offsets of
# docs/jk-bms.md "JK-PB" (independently of jkbms/cellinfo.py's offset table).
CELLS_MV = [3301 + (i * 7) % 15 for i in range(16)]
PACK = dict(
    pack_mv=sum(CELLS_MV) + 4, current_ma=-12345, soc=77, soh=98, remaining_mah=215600,
    full_mah=280000, cycles=42, cycle_mah=11760000, runtime_s=8640123, mos_dc=251, t1_dc=234,
    t2_dc=-55, t4_dc=199, t5_dc=-2000, sensor_mask=0x1F, alarms=0x00200010, chg=1, dsg=1,
    bal_state=2, bal_ma=-150, heating=1,
)


def _status_image(v):
    b = bytearray(300)
    for i, mv in enumerate(CELLS_MV):
        struct.pack_into(">H", b, 2 * i, mv)
    struct.pack_into(">I", b, 64, (1 << len(CELLS_MV)) - 1)   # CellSta
    struct.pack_into(">h", b, 138, v["mos_dc"])                # TempMos
    struct.pack_into(">I", b, 144, v["pack_mv"])               # BatVol
    struct.pack_into(">i", b, 152, v["current_ma"])            # BatCurrent
    struct.pack_into(">hh", b, 156, v["t1_dc"], v["t2_dc"])    # TempBat1 / 2
    struct.pack_into(">I", b, 160, v["alarms"])                # alarm bitmask
    struct.pack_into(">h", b, 164, v["bal_ma"])                # BalanCurrent
    struct.pack_into(">BB", b, 166, v["bal_state"], v["soc"])  # BalanSta / SOC
    struct.pack_into(">iIII", b, 168, v["remaining_mah"], v["full_mah"], v["cycles"], v["cycle_mah"])
    struct.pack_into(">BB", b, 184, v["soh"], 0)               # SOH / precharge
    struct.pack_into(">I", b, 188, v["runtime_s"])             # RunTime
    struct.pack_into(">BB", b, 192, v["chg"], v["dsg"])        # charge / discharge MOSFET
    struct.pack_into(">BB", b, 208, v["sensor_mask"], v["heating"])
    struct.pack_into(">hhh", b, 248, v["mos_dc"], v["t4_dc"], v["t5_dc"])  # TempBat3 / 4 / 5
    return b


SET = dict(uvp=2650, uvpr=2900, ovp=3650, ovpr=3550, rcv=3450, rfv=3375, chg_ma=100000,
           dsg_ma=150000, cells=16, cap_mah=280000)


def _settings_image(v):
    b = bytearray(300)
    struct.pack_into(">IIIII", b, 4, v["uvp"], v["uvpr"], v["ovp"], v["ovpr"], 5)
    struct.pack_into(">II", b, 32, v["rcv"], v["rfv"])
    struct.pack_into(">I", b, 44, v["chg_ma"])
    struct.pack_into(">I", b, 56, v["dsg_ma"])
    struct.pack_into(">I", b, 108, v["cells"])
    struct.pack_into(">III", b, 112, 1, 1, 1)
    struct.pack_into(">I", b, 124, v["cap_mah"])
    struct.pack_into(">I", b, 264, SLAVE)
    return b


def _about_image():
    b = bytearray(300)
    b[0:16] = b"BK-BD6A20S10P\0\0\0"
    b[16:24] = b"19A\0\0\0\0\0"
    b[24:32] = b"19.05\0\0\0"
    struct.pack_into(">II", b, 32, 123456, 77)
    b[40:56] = b"JK-PB-TEST\0\0\0\0\0\0"
    return b


class _JkPbEmulator:
    """pymodbus RTU-over-TCP server holding JK-PB byte-addressed blocks; runs in its own thread
    with its own event loop, listens on an ephemeral 127.0.0.1 port and stops by itself."""

    def __init__(self, images):
        self.images = images  # {base: bytearray}
        self.reads = []
        self.port = None
        self.error = None
        self._ready = threading.Event()
        self._loop = None
        self._server = None
        self._thread = threading.Thread(target=self._run, name="jkpb-emulator", daemon=True)

    async def _action(self, function_code, start_address, address, count, registers, set_values):
        if function_code != 3:
            return None
        for base, img in self.images.items():
            off = address - base
            if 0 <= off < len(img):
                if off + 2 * count > len(img):
                    return ExcCodes.ILLEGAL_ADDRESS
                for k in range(count):
                    registers[address - start_address + k] = (img[off + 2 * k] << 8) | img[off + 2 * k + 1]
                self.reads.append((address, count))
                return None
        return ExcCodes.ILLEGAL_ADDRESS

    def _device(self):
        data = [SimData(base, values=[0] * len(img), datatype=DataType.REGISTERS)
                for base, img in self.images.items()]
        data.append(SimData(0x161C, values=[0] * 6, datatype=DataType.REGISTERS))
        return SimDevice(SLAVE, simdata=data, action=self._action)

    def _run(self):
        try:
            asyncio.run(self._main())
        except Exception as e:  # reported by start() / stop()
            self.error = e
            self._ready.set()

    async def _main(self):
        self._loop = asyncio.get_running_loop()
        self._server = ModbusTcpServer(self._device(), framer=FramerType.RTU, address=("127.0.0.1", 0))
        await self._server.serve_forever(background=True)
        self.port = self._server.transport.sockets[0].getsockname()[1]
        self._ready.set()
        await asyncio.wait_for(self._server.serving, timeout=60)  # hard upper bound on lifetime

    def start(self):
        self._thread.start()
        assert self._ready.wait(10), "pymodbus server did not start"
        if self.error:
            raise self.error
        return self

    def stop(self):
        if self._loop is not None and self._server is not None and self._loop.is_running():
            fut = asyncio.run_coroutine_threadsafe(self._server.shutdown(), self._loop)
            try:
                fut.result(timeout=5)
            except Exception:
                pass
        self._thread.join(timeout=10)
        assert not self._thread.is_alive(), "pymodbus server thread did not stop"


class _Master:
    """Our side: request builders, FrameExtractor(rtu.frame_len_at) and parse_reply over a plain
    TCP socket carrying RTU frames."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock.settimeout(2.0)
        self.x = FrameExtractor(rtu.frame_len_at, 1024, rtu.MAX_FRAME)
        self.req = bytearray(rtu.MAX_FRAME)

    def close(self):
        self.sock.close()

    def transact(self, n):
        self.x.reset()
        self.sock.sendall(bytes(self.req[:n]))
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            got = self.x.next_frame()
            if got:
                return self.x.frame, got
            chunk = self.sock.recv(512)
            if not chunk:
                break
            self.x.feed(chunk)
        raise AssertionError("no reply from the emulated JK-PB")

    def read_block(self, image):
        """Sequential FC03 reads per image.plan, each stored in the BlockImage."""
        image.reset()
        for reg, count in image.plan:
            assert count <= pb_modbus.MAX_REGS_PER_READ
            frame, n = self.transact(rtu.build_read(self.req, SLAVE, reg, count))
            image.store(reg, frame, n, SLAVE)
        assert image.complete


@pytest.fixture(scope="module")
def jkpb():
    images = {STATUS_BASE: _status_image(PACK), SETTINGS_BASE: _settings_image(SET), ABOUT_BASE: _about_image()}
    emu = _JkPbEmulator(images).start()
    master = _Master(emu.port)
    try:
        yield emu, master
    finally:
        master.close()
        emu.stop()


def test_read_plan_is_byte_addressed():
    plan = pb_modbus.read_plan(STATUS_BASE, cellinfo.NEED_32S)
    assert all(c <= 32 for _, c in plan)
    for (r0, c0), (r1, _) in zip(plan, plan[1:], strict=False):  # consecutive pairs
        assert r1 == r0 + 2 * c0  # JK registers are byte offsets
    assert plan[-1][0] + 2 * plan[-1][1] - STATUS_BASE >= cellinfo.NEED_32S


def test_e2e_status_block_fc03(jkpb):
    emu, m = jkpb
    img = pb_modbus.BlockImage(STATUS_BASE, cellinfo.NEED_32S)
    emu.reads.clear()
    m.read_block(img)
    assert emu.reads == img.plan  # the server saw exactly our plan, in order
    assert bytes(img.data) == bytes(emu.images[STATUS_BASE][: len(img.data)])

    snap = S.PackSnapshot()
    cellinfo.decode(img.data, 0, J.LAYOUT_PB_FC03, snap)
    v = PACK
    assert snap.cell_count == 16
    assert list(snap.cells[:16]) == CELLS_MV and not any(snap.cells[16:])
    assert snap.cell_min_mv == min(CELLS_MV) and snap.cell_max_mv == max(CELLS_MV)
    assert snap.pack_mv == v["pack_mv"]
    assert snap.current_ma == v["current_ma"]
    assert (snap.soc_pct, snap.soh_pct) == (v["soc"], v["soh"])
    assert (snap.remaining_mah, snap.full_mah) == (v["remaining_mah"], v["full_mah"])
    assert (snap.cycles, snap.cycle_mah, snap.runtime_s) == (v["cycles"], v["cycle_mah"], v["runtime_s"])
    assert snap.temps[S.T_MOS] == v["mos_dc"]
    assert (snap.temps[1], snap.temps[2]) == (v["t1_dc"], v["t2_dc"])
    assert snap.temps[3] == S.NO_TEMP  # TempBat3 duplicates the MOSFET sensor: not used
    assert snap.temps[4] == v["t4_dc"]
    assert snap.temps[5] == S.NO_TEMP  # sensor 5 absent (presence mask bit 5 clear, -200.0 degC)
    assert snap.alarms == v["alarms"]
    assert (snap.charge_fet, snap.discharge_fet) == (v["chg"], v["dsg"])
    assert (snap.balancing, snap.balance_ma, snap.heating) == (v["bal_state"], v["bal_ma"], v["heating"])
    assert snap.layout == J.LAYOUT_PB_FC03


def test_e2e_settings_and_about_blocks_fc03(jkpb):
    emu, m = jkpb
    img = pb_modbus.BlockImage(SETTINGS_BASE, jk_settings.BLOCK_BYTES)
    m.read_block(img)
    snap = S.PackSnapshot()
    jk_settings.decode(img.data, snap, base=0, be=True)
    assert (snap.cell_uvp_mv, snap.cell_uvpr_mv, snap.cell_ovp_mv, snap.cell_ovpr_mv) == (
        SET["uvp"], SET["uvpr"], SET["ovp"], SET["ovpr"])
    assert (snap.rcv_mv, snap.rfv_mv) == (SET["rcv"], SET["rfv"])
    assert (snap.max_charge_ma, snap.max_discharge_ma) == (SET["chg_ma"], SET["dsg_ma"])
    assert (snap.set_cell_count, snap.design_mah, snap.settings_ok) == (SET["cells"], SET["cap_mah"], 1)
    assert jk_settings.describe(img.data, 0, True)["device_address"] == SLAVE

    about = pb_modbus.BlockImage(ABOUT_BASE, devinfo.BLOCK_BYTES)
    m.read_block(about)
    info = devinfo.describe(about.data, 0, True)
    assert info["model"] == "BK-BD6A20S10P"
    assert info["sw_version"] == "19.05"
    assert (info["uptime_s"], info["power_on_count"]) == (123456, 77)
    assert info["device_name"] == "JK-PB-TEST"


def test_e2e_single_field_read_uses_byte_offsets(jkpb):
    # BatVol is byte offset 0x90 of the status block -> register 0x1290, u32 = 2 registers
    _, m = jkpb
    frame, n = m.transact(rtu.build_read(m.req, SLAVE, 0x1290, 2))
    assert rtu.parse_reply(frame, n, SLAVE, rtu.READ_HOLDING, 0x1290, 2) == 4
    assert struct.unpack_from(">I", frame, 3)[0] == PACK["pack_mv"]
    # an odd byte offset is just as addressable: 0x12A7 = SOC (low byte of BalanSta / SOC)
    frame, n = m.transact(rtu.build_read(m.req, SLAVE, 0x12A7, 1))
    rtu.parse_reply(frame, n, SLAVE, rtu.READ_HOLDING, 0x12A7, 1)
    assert frame[3] == PACK["soc"]


def test_e2e_trigger_writes_acknowledged(jkpb):
    _, m = jkpb
    for reg in TRIGGERS:
        frame, n = m.transact(pb_modbus.build_trigger(m.req, SLAVE, reg))
        assert n == 8
        assert rtu.parse_reply(frame, n, SLAVE, rtu.WRITE_MULTIPLE, reg, 1) == 0
        frame, n = m.transact(rtu.build_write_single(m.req, SLAVE, reg, 0))
        assert rtu.parse_reply(frame, n, SLAVE, rtu.WRITE_SINGLE, reg) == 0


def test_e2e_exception_reply(jkpb):
    _, m = jkpb
    # outside every block: illegal data address
    frame, n = m.transact(rtu.build_read(m.req, SLAVE, 0x3000, 4))
    with pytest.raises(rtu.ModbusExceptionReply) as ei:
        rtu.parse_reply(frame, n, SLAVE, rtu.READ_HOLDING, 0x3000, 4)
    assert ei.value.code == rtu.ILLEGAL_ADDRESS
    # BlockImage.store rejects it and keeps its data
    img = pb_modbus.BlockImage(STATUS_BASE, 64)
    before = bytes(img.data)
    frame, n = m.transact(rtu.build_read(m.req, SLAVE, STATUS_BASE + 0x180, 32))  # gap after the status block
    with pytest.raises(rtu.ModbusExceptionReply):
        img.store(STATUS_BASE, frame, n, SLAVE)
    assert bytes(img.data) == before and not img.complete


# --------------------------------------------------------------------------------- (e) safety rule


def test_only_trigger_registers_are_writable():
    buf = bytearray(b"\xee" * 32)
    pristine = bytes(buf)
    for reg in range(0x10000):
        if reg in TRIGGERS:
            continue
        try:
            rtu.build_write_single(buf, 1, reg, 0)
        except ValueError:
            pass
        else:
            raise AssertionError("FC06 to 0x%04x was built" % reg)
        try:
            rtu.build_write_multiple(buf, 1, reg, (0,))
        except ValueError:
            pass
        else:
            raise AssertionError("FC10 to 0x%04x was built" % reg)
    assert bytes(buf) == pristine  # nothing was written into the request buffer
    # the control block in particular (shutdown, calibration, factory presets)
    for reg in range(0x1600, 0x1616):
        with pytest.raises(ValueError):
            rtu.build_write_multiple(buf, 1, reg, (0, 0))
    for reg in range(0x10000):
        if reg in TRIGGERS:
            continue
        try:
            pb_modbus.build_trigger(buf, 1, reg)
        except ValueError:
            pass
        else:
            raise AssertionError("trigger to 0x%04x was built" % reg)


def test_trigger_registers_take_only_zero():
    buf = bytearray(b"\xee" * 32)
    pristine = bytes(buf)
    for reg in TRIGGERS:
        for value in range(1, 0x10000):
            try:
                rtu.build_write_single(buf, 1, reg, value)
            except ValueError:
                pass
            else:
                raise AssertionError("FC06 0x%04x=%d was built" % (reg, value))
        for values in ((1,), (0, 1), (0x8000,), (0, 0, 0xFFFF)):
            with pytest.raises(ValueError):
                rtu.build_write_multiple(buf, 1, reg, values)
        with pytest.raises(ValueError):
            rtu.build_write_single(buf, 1, reg, -1)
    assert bytes(buf) == pristine
    # and the zero writes do build
    assert rtu.build_write_single(buf, 1, 0x1620, 0) == 8


@HYP
@given(st.integers(-5, 300), st.integers(0, 0xFFFF))
def test_bad_slave_refused(slave, reg):
    buf = bytearray(16)
    if 1 <= slave <= 247:
        return
    for call in (lambda: rtu.build_read(buf, slave, reg, 1),
                 lambda: rtu.build_write_single(buf, slave, 0x1620, 0),
                 lambda: rtu.build_write_multiple(buf, slave, 0x161E, (0,)),
                 lambda: pb_modbus.build_trigger(buf, slave, 0x161C)):
        with pytest.raises(ValueError):
            call()
