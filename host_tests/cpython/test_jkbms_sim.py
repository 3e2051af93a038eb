# tools/jkbms_sim.py (the JK-BMS simulator) checked against the FIRMWARE LIBRARY: every request is
# built and every reply is collected and decoded with firmware/lib (modbus.rtu, jkbms.pb_modbus
# TriggerReply / BlockImage / read_plan / build_trigger, jkbms.nw, jkbms.cellinfo / settings /
# devinfo), and the decoded values must equal the state the simulator was given:
#   * JK-PB: FC10 triggers (status, settings, device info; with and without 0x00 padding, with a TX
#     echo) and FC03 block reads (BlockImage per read_plan), which must agree with each other;
#   * pymodbus as an independent Modbus RTU master over the same TCP socket (RTU framing): BatVol
#     at 0x1290 as two big-endian registers, cells at 0x1200, SOC in the low byte of 0x12A6;
#   * refusals: non-trigger writes (exception, nothing changes), FC06 and other functions, reads
#     outside the blocks, wrong slave address and bad CRC (silence);
#   * "4E 57": read-all request with any source byte, checksum checked;
#   * faults: bms-silent / bms-garbage / bms-slow / bms-partial via the Python API and scheduled
#     with the CLI's --fault NAME@SECONDS[:DURATION];
#   * in-process (thread) and subprocess (CLI) use, TCP on 127.0.0.1 and a pty;
#   * several packs on one bus (packs= / --pack): each answers only at its own address with its own
#     state (other cell counts and capacities too), an absent address is silent, faults with a pack
#     selector (NAME@SECONDS:[DURATION]:ADDRESS) hit only that pack;
#   * a JK bank with its own bus master (bus_master= / --bus-master): a listen-only client receives
#     the master's broadcasts + ACK(0) and each slave's request / frame / ACK in order, bytes the
#     client sends are counted and never answered, the on_frame hook reports every frame.
# Every wait is bounded; simulators are stopped and subprocesses reaped in finally blocks.
import json
import os
import select
import socket
import struct
import subprocess
import sys
import time
import tty
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[2]
for _p in (ROOT / "firmware" / "lib", ROOT / "tools"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import jkbms_sim  # noqa: E402
from pymodbus.client import ModbusTcpClient  # noqa: E402
from pymodbus.framer import FramerType  # noqa: E402

from codec.errors import DecodeError  # noqa: E402
from codec.stream import FrameExtractor  # noqa: E402
from jkbms import cellinfo, devinfo, nw, pb_modbus  # noqa: E402
from jkbms import frame as J  # noqa: E402
from jkbms import settings as jk_settings  # noqa: E402
from modbus import rtu  # noqa: E402
from modbus.crc import crc_ok, put_crc  # noqa: E402
from pack import snapshot as S  # noqa: E402

SIM = ROOT / "tools" / "jkbms_sim.py"
FAST = (0, 2)  # reply delay (ms) for the tests that do not measure timing
QUIET = 0.3  # s of listening that counts as "no reply" (replies come within FAST)

CELLS = [3.301, 3.315, 3.322, 3.308, 3.299, 3.330, 3.312, 3.318,
         3.305, 3.321, 3.317, 3.296, 3.326, 3.310, 3.314, 3.309]
STATE = {
    "cell_voltages_v": CELLS,
    "battery_current_a": -12.34,
    "soc_percent": 57,
    "soh_percent": 96,
    "remaining_capacity_ah": 159.6,
    "nominal_capacity_ah": 280.0,
    "cycle_count": 42,
    "cycle_capacity_ah": 11760.0,
    "total_runtime_s": 8640120,
    "power_tube_temp_c": 31.2,
    "t1_c": 23.4,
    "t2_c": -5.1,
    "t4_c": 19.9,
    "error_bitmask": (1 << 4) | (1 << 13) | (1 << 21),  # cell OVP, discharge OCP, battery OT alarm
    "charging": True,
    "discharging": False,
    "balance_current_a": -0.15,
    "balance_status": 2,
    # settings
    "cell_count": 16,
    "cell_ovp_v": 3.60, "cell_ovpr_v": 3.40, "cell_uvp_v": 2.80, "cell_uvpr_v": 3.00,
    "rcv_v": 3.45, "rfv_v": 3.35,
    "max_charge_current_a": 120.0, "max_discharge_current_a": 180.0,
    "charge_switch": True, "discharge_switch": True,
    "design_capacity_ah": 300.0,
    # device info
    "model": "JK_PB2A16S20P", "hw_version": "15A", "sw_version": "15.41", "device_name": "SIM-PACK",
    "power_on_count": 9,
}


def mv(v):
    return int(round(v * 1000))


def dc(c):
    return int(round(c * 10))


# ------------------------------------------------------------------------------ client side


class Client:
    """Plain TCP socket to the simulator (RTU / 4E 57 bytes, no framing of its own)."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=2)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def close(self):
        self.sock.close()

    def send(self, data):
        self.sock.sendall(bytes(data))

    def recv(self, timeout):
        r, _, _ = select.select([self.sock], [], [], max(0.0, timeout))
        if not r:
            return b""
        data = self.sock.recv(256)  # small chunks: TriggerReply wants polls between big feeds
        assert data, "simulator closed the connection"
        return data

    def recv_exactly(self, n, timeout=1.0):
        out = bytearray()
        deadline = time.monotonic() + timeout
        while len(out) < n and time.monotonic() < deadline:
            out += self.recv(deadline - time.monotonic())
        assert len(out) == n, "expected %d bytes, got %r" % (n, bytes(out))
        return bytes(out)

    def listen(self, seconds):
        """Everything that arrives within `seconds`."""
        out = bytearray()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            out += self.recv(deadline - time.monotonic())
        return bytes(out)


class PtyClient(Client):
    def __init__(self, path):
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
        tty.setraw(self.fd)

    def close(self):
        os.close(self.fd)

    def send(self, data):
        os.write(self.fd, bytes(data))

    def recv(self, timeout):
        r, _, _ = select.select([self.fd], [], [], max(0.0, timeout))
        return os.read(self.fd, 256) if r else b""


def trigger(cli, reg, slave=1, timeout=1.0):
    """FC10 trigger with the firmware's builder; the 300-byte frame TriggerReply collected (frame
    and our slave's ACK both seen), or None on timeout. Also returns the raw bytes received."""
    req = bytearray(16)
    n = pb_modbus.build_trigger(req, slave, reg)
    tr = pb_modbus.TriggerReply()
    tr.start(slave, reg)
    cli.send(req[:n])
    raw = bytearray()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        chunk = cli.recv(deadline - time.monotonic())
        raw += chunk
        tr.feed(chunk)
        if tr.poll():
            return bytes(tr.frame), bytes(raw)
    return None, bytes(raw)


def transact_rtu(cli, req, timeout=1.0):
    """Send an RTU request; the first RTU frame the firmware's frame judge finds (or None)."""
    x = FrameExtractor(rtu.frame_len_at, 1024, rtu.MAX_FRAME)
    cli.send(req)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        x.feed(cli.recv(deadline - time.monotonic()))
        n = x.next_frame()
        if n:
            return bytes(x.frame[:n])
    return None


def read_block(cli, base, nbytes, slave=1):
    img = pb_modbus.BlockImage(base, nbytes)
    req = bytearray(16)
    for reg, count in img.plan:
        assert count <= pb_modbus.MAX_REGS_PER_READ
        frame = transact_rtu(cli, req[:rtu.build_read(req, slave, reg, count)])
        assert frame is not None, "no reply to FC03 0x%04x x %d" % (reg, count)
        img.store(reg, frame, len(frame), slave)
    assert img.complete
    return img


def raw_request(slave, fc, payload):
    """A request the firmware refuses to build (writes other than the triggers), CRC appended."""
    buf = bytearray(3 + len(payload) + 2)
    buf[0] = slave
    buf[1] = fc
    buf[2:2 + len(payload)] = payload
    return bytes(buf[:put_crc(buf, 2 + len(payload))])


def exception_code(frame, slave, fc):
    with pytest.raises(rtu.ModbusExceptionReply) as ei:
        rtu.parse_reply(frame, len(frame), slave, fc)
    return ei.value.code


def read_all_4e57(cli, request=None, timeout=1.0):
    if request is None:
        buf = bytearray(21)
        request = buf[:nw.build_read_all(buf)]
    x = FrameExtractor(nw.frame_len_at, 1024, nw.MAX_FRAME)
    cli.send(request)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        x.feed(cli.recv(deadline - time.monotonic()))
        n = x.next_frame()
        if n:
            return bytes(x.frame[:n])
    return None


# ----------------------------------------------------------------------------- assertions


def check_status(snap, state=STATE):
    cells = [mv(v) for v in state["cell_voltages_v"]]
    assert snap.cell_count == len(cells)
    assert list(snap.cells[:len(cells)]) == cells and not any(snap.cells[len(cells):])
    assert snap.pack_mv == sum(cells)
    assert snap.current_ma == mv(state["battery_current_a"])
    assert (snap.soc_pct, snap.soh_pct) == (state["soc_percent"], state["soh_percent"])
    assert snap.remaining_mah == mv(state["remaining_capacity_ah"])
    assert snap.full_mah == mv(state["nominal_capacity_ah"])
    assert (snap.cycles, snap.cycle_mah) == (state["cycle_count"], mv(state["cycle_capacity_ah"]))
    assert snap.runtime_s == state["total_runtime_s"]
    assert snap.temps[S.T_MOS] == dc(state["power_tube_temp_c"])
    assert (snap.temps[1], snap.temps[2]) == (dc(state["t1_c"]), dc(state["t2_c"]))
    assert snap.temps[4] == dc(state["t4_c"]) and snap.temps[5] == S.NO_TEMP
    assert snap.alarms == state["error_bitmask"]
    assert (snap.charge_fet, snap.discharge_fet) == (int(state["charging"]), int(state["discharging"]))
    assert (snap.balancing, snap.balance_ma) == (state["balance_status"], mv(state["balance_current_a"]))


def check_settings(snap, state=STATE):
    assert snap.settings_ok == 1
    assert snap.set_cell_count == state["cell_count"]
    assert (snap.cell_ovp_mv, snap.cell_ovpr_mv) == (mv(state["cell_ovp_v"]), mv(state["cell_ovpr_v"]))
    assert (snap.cell_uvp_mv, snap.cell_uvpr_mv) == (mv(state["cell_uvp_v"]), mv(state["cell_uvpr_v"]))
    assert (snap.rcv_mv, snap.rfv_mv) == (mv(state["rcv_v"]), mv(state["rfv_v"]))
    assert snap.max_charge_ma == mv(state["max_charge_current_a"])
    assert snap.max_discharge_ma == mv(state["max_discharge_current_a"])
    assert (snap.charge_switch, snap.discharge_switch) == (1, 1)
    assert snap.design_mah == mv(state["design_capacity_ah"])


def check_devinfo(info, address=1):
    for key in ("model", "hw_version", "sw_version", "device_name", "power_on_count"):
        assert info[key] == STATE[key], key
    assert info["uptime_s"] == STATE["total_runtime_s"]
    assert devinfo.layout_from_version(info["sw_version"]) == J.LAYOUT_JK02_32S


# -------------------------------------------------------------------------------- fixtures


@pytest.fixture
def make_sim():
    """Factory for in-process simulators (TCP on 127.0.0.1, ephemeral port); all stopped at the
    end, and the clients opened through it closed."""
    sims, clients = [], []

    def make(**kw):
        kw.setdefault("delay_ms", FAST)
        kw.setdefault("seed", 7)
        state = kw.pop("state", None if "packs" in kw else STATE)
        sim = jkbms_sim.JkBmsSim(state, **kw).start()
        sims.append(sim)
        cli = Client(sim.port) if sim.transport == "tcp" else None
        if cli:
            clients.append(cli)
        return sim, cli

    try:
        yield make
    finally:
        for c in clients:
            c.close()
        for s in sims:
            s.stop()


class SimProcess:
    """The CLI in a subprocess; the LISTEN line gives its endpoint."""

    def __init__(self, *args):
        self.proc = subprocess.Popen([sys.executable, str(SIM), *args, "--duration", "30"],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        r, _, _ = select.select([self.proc.stdout], [], [], 10)
        assert r, "simulator printed nothing"
        self.line = self.proc.stdout.readline().strip()
        self.t0 = time.monotonic()
        assert self.line.startswith("LISTEN "), self.line + self.proc.stderr.read()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            rc = self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise
        err = self.proc.stderr.read()
        self.proc.stdout.close()
        self.proc.stderr.close()
        assert rc == 0, err
        return err


# ------------------------------------------------------------------------- JK-PB: FC10 path


def test_fc10_triggers_decode_to_the_state(make_sim):
    sim, cli = make_sim()
    frame, raw = trigger(cli, pb_modbus.TRIGGER_STATUS)
    assert frame is not None and len(raw) == 308  # no padding, no echo
    assert J.check_frame(frame, len(frame)) == J.TYPE_CELL_INFO
    assert J.detect_layout(frame) == J.LAYOUT_JK02_32S
    snap = S.PackSnapshot()
    cellinfo.decode(frame, 6, J.LAYOUT_JK02_32S, snap)
    check_status(snap)

    frame, _ = trigger(cli, pb_modbus.TRIGGER_SETTINGS)
    assert J.check_frame(frame, len(frame)) == J.TYPE_SETTINGS
    jk_settings.decode(frame, snap)
    check_settings(snap)
    assert jk_settings.describe(frame)["device_address"] == 1

    frame, _ = trigger(cli, pb_modbus.TRIGGER_ABOUT)
    assert J.check_frame(frame, len(frame)) == J.TYPE_DEVICE_INFO
    check_devinfo(devinfo.describe(frame))
    assert sim.stats["replies"] == 3 and sim.stats["exceptions"] == 0


def test_fc10_padding_echo_and_other_address(make_sim):
    _, cli = make_sim(pad=True, echo=True, address=7)
    frame, raw = trigger(cli, pb_modbus.TRIGGER_STATUS, slave=7)
    assert frame is not None
    assert len(raw) == 11 + 310  # our echo, then frame 00 ACK 00
    assert raw[11 + 300] == 0 and raw[-1] == 0
    ack = raw[11 + 301:11 + 309]
    assert rtu.parse_reply(ack, 8, 7, rtu.WRITE_MULTIPLE, pb_modbus.TRIGGER_STATUS, 1) == 0
    snap = S.PackSnapshot()
    cellinfo.decode(frame, 6, J.LAYOUT_JK02_32S, snap)
    check_status(snap)
    # slave 1 is not there: only the echo of our request comes back
    frame, raw = trigger(cli, pb_modbus.TRIGGER_STATUS, slave=1, timeout=QUIET)
    assert frame is None and len(raw) == 11


def test_frame_counter_rolls_and_state_updates(make_sim):
    sim, cli = make_sim()
    f1, _ = trigger(cli, pb_modbus.TRIGGER_STATUS)
    f2, _ = trigger(cli, pb_modbus.TRIGGER_STATUS)
    assert f2[5] == (f1[5] + 1) & 0xFF
    sim.set_state({"soc_percent": 12, "battery_current_a": 55.5, "discharging": True})
    f3, _ = trigger(cli, pb_modbus.TRIGGER_STATUS)
    snap = S.PackSnapshot()
    cellinfo.decode(f3, 6, J.LAYOUT_JK02_32S, snap)
    assert (snap.soc_pct, snap.current_ma, snap.discharge_fet) == (12, 55500, 1)
    assert snap.pack_mv == sum(mv(v) for v in CELLS)  # the rest of the state is kept


# ------------------------------------------------------------------------- JK-PB: FC03 path


def test_fc03_blocks_decode_to_the_state_and_match_fc10(make_sim):
    _, cli = make_sim()
    status = read_block(cli, pb_modbus.STATUS_BASE, cellinfo.NEED_32S)
    snap = S.PackSnapshot()
    cellinfo.decode(status.data, 0, J.LAYOUT_PB_FC03, snap)
    check_status(snap)

    sets = read_block(cli, pb_modbus.SETTINGS_BASE, jk_settings.BLOCK_BYTES)
    snap = S.PackSnapshot()
    jk_settings.decode(sets.data, snap, 0, True)
    check_settings(snap)

    about = read_block(cli, pb_modbus.ABOUT_BASE, devinfo.BLOCK_BYTES)
    check_devinfo(devinfo.describe(about.data, 0, True))

    # the FC03 blocks carry exactly what the FC10 frames carry (block offset = frame offset - 6)
    f_status, _ = trigger(cli, pb_modbus.TRIGGER_STATUS)
    f_set, _ = trigger(cli, pb_modbus.TRIGGER_SETTINGS)
    f_about, _ = trigger(cli, pb_modbus.TRIGGER_ABOUT)
    assert jk_settings.describe(sets.data, 0, True) == jk_settings.describe(f_set)
    assert devinfo.describe(about.data, 0, True) == devinfo.describe(f_about)
    assert cellinfo.describe_extra(status.data, 0, J.LAYOUT_PB_FC03) == \
        cellinfo.describe_extra(f_status, 6, J.LAYOUT_JK02_32S)
    # and a little-endian reading of the block is not the same data
    with pytest.raises(DecodeError):
        jk_settings.decode(sets.data, S.PackSnapshot(), 0, False)


def test_fc03_byte_addressing_limits_and_exceptions(make_sim):
    _, cli = make_sim()
    req = bytearray(16)
    # odd byte offsets are addressable: 0x12A7 = SOC (second byte of BalanSta / SOC)
    frame = transact_rtu(cli, req[:rtu.build_read(req, 1, 0x12A7, 1)])
    assert rtu.parse_reply(frame, len(frame), 1, rtu.READ_HOLDING, -1, 1) == 2
    assert frame[3] == STATE["soc_percent"]
    # up to 125 registers in one read
    frame = transact_rtu(cli, req[:rtu.build_read(req, 1, 0x1000, 125)])
    assert rtu.parse_reply(frame, len(frame), 1, rtu.READ_HOLDING, -1, 125) == 250
    assert struct.unpack_from(">I", frame, 3 + 12)[0] == mv(STATE["cell_ovp_v"])  # 0x100C
    # outside every block, or running past a block's end: exception 02
    for reg, count in ((0x3000, 4), (0x1100 + 0x30, 32), (0x1200 + 290, 4), (0x1600, 1), (0x0FFF, 2)):
        frame = transact_rtu(cli, req[:rtu.build_read(req, 1, reg, count)])
        assert exception_code(frame, 1, rtu.READ_HOLDING) == rtu.ILLEGAL_ADDRESS, hex(reg)
    # more than 125 registers: exception 03
    frame = transact_rtu(cli, raw_request(1, 0x03, struct.pack(">HH", 0x1200, 126)))
    assert exception_code(frame, 1, rtu.READ_HOLDING) == rtu.ILLEGAL_VALUE


def test_wrong_address_and_bad_crc_are_ignored(make_sim):
    sim, cli = make_sim()
    req = bytearray(16)
    n = rtu.build_read(req, 2, 0x1290, 2)
    cli.send(req[:n])
    assert cli.listen(QUIET) == b""
    good = bytes(req[:rtu.build_read(req, 1, 0x1290, 2)])
    bad = bytearray(good)
    bad[-1] ^= 0x40
    cli.send(bad)
    assert cli.listen(QUIET) == b""
    trig = bytearray(16)
    bad = bytearray(trig[:pb_modbus.build_trigger(trig, 1, pb_modbus.TRIGGER_STATUS)])
    bad[-2] ^= 1
    cli.send(bad)
    assert cli.listen(QUIET) == b""
    # and the line is still in sync: the next good request is answered
    frame = transact_rtu(cli, good)
    assert rtu.parse_reply(frame, len(frame), 1, rtu.READ_HOLDING, -1, 2) == 4
    assert sim.stats["ignored"] == 1  # the bad-CRC frames never counted as requests


def test_writes_other_than_triggers_are_refused_and_change_nothing(make_sim):
    sim, cli = make_sim()
    before_state = sim.get_state()
    before = {base: sim.image(base) for base in jkbms_sim.BLOCKS}
    cases = (
        (0x10, struct.pack(">HHBHH", 0x1004, 2, 4, 0, 3000), rtu.ILLEGAL_ADDRESS),   # cell UVP
        (0x10, struct.pack(">HHBH", 0x1070, 1, 2, 0), rtu.ILLEGAL_ADDRESS),          # charge switch
        (0x10, struct.pack(">HHBH", 0x1604, 1, 2, 1), rtu.ILLEGAL_ADDRESS),          # shutdown
        (0x10, struct.pack(">HHBH", 0x1620, 1, 2, 1), rtu.ILLEGAL_ADDRESS),          # trigger, not 0
        (0x10, struct.pack(">HHBHH", 0x1620, 2, 4, 0, 0), rtu.ILLEGAL_ADDRESS),      # trigger, 2 regs
        (0x06, struct.pack(">HH", 0x1620, 0), rtu.ILLEGAL_FUNCTION),                 # FC06
        (0x06, struct.pack(">HH", 0x100C, 4000), rtu.ILLEGAL_FUNCTION),
        (0x04, struct.pack(">HH", 0x1200, 2), rtu.ILLEGAL_FUNCTION),                 # input registers
        (0x05, struct.pack(">HH", 0x0001, 0xFF00), rtu.ILLEGAL_FUNCTION),            # coil
    )
    for fc, payload, code in cases:
        # (the firmware's frame judge knows exception replies to FC03 / 06 / 10 only: read 5 bytes)
        cli.send(raw_request(1, fc, payload))
        frame = cli.recv_exactly(5)
        assert exception_code(frame, 1, fc) == code, (fc, payload.hex())
    assert cli.listen(0.05) == b""
    assert sim.get_state() == before_state
    assert {base: sim.image(base) for base in jkbms_sim.BLOCKS} == before
    f_set, _ = trigger(cli, pb_modbus.TRIGGER_SETTINGS)
    snap = S.PackSnapshot()
    jk_settings.decode(f_set, snap)
    check_settings(snap)


def test_pymodbus_master_reads_big_endian_fields(make_sim):
    sim, _ = make_sim()
    client = ModbusTcpClient("127.0.0.1", port=sim.port, framer=FramerType.RTU, timeout=2, retries=1)
    try:
        assert client.connect()
        rr = client.read_holding_registers(0x1290, count=2, device_id=1)  # BatVol, u32 BE
        assert not rr.isError()
        assert (rr.registers[0] << 16) | rr.registers[1] == sum(mv(v) for v in CELLS)
        assert client.convert_from_registers(rr.registers, client.DATATYPE.UINT32) == sum(mv(v) for v in CELLS)
        rr = client.read_holding_registers(0x1298, count=2, device_id=1)  # BatCurrent, i32 BE
        assert client.convert_from_registers(rr.registers, client.DATATYPE.INT32) == mv(STATE["battery_current_a"])
        rr = client.read_holding_registers(0x1200, count=16, device_id=1)  # cells 1..16
        assert rr.registers == [mv(v) for v in CELLS]
        rr = client.read_holding_registers(0x12A6, count=1, device_id=1)  # BalanSta / SOC
        assert rr.registers == [(STATE["balance_status"] << 8) | STATE["soc_percent"]]
        rr = client.read_holding_registers(0x100C, count=2, device_id=1)  # cell OVP
        assert client.convert_from_registers(rr.registers, client.DATATYPE.UINT32) == mv(STATE["cell_ovp_v"])
        # refused writes, seen by pymodbus as exception replies; nothing changes
        rr = client.write_registers(0x1004, [0, 3000], device_id=1)
        assert rr.isError() and rr.exception_code == 2
        rr = client.write_register(0x1620, 0, device_id=1)
        assert rr.isError() and rr.exception_code == 1
        rr = client.read_holding_registers(0x1004, count=2, device_id=1)
        assert client.convert_from_registers(rr.registers, client.DATATYPE.UINT32) == mv(STATE["cell_uvp_v"])
        rr = client.read_holding_registers(0x3000, count=2, device_id=1)
        assert rr.isError() and rr.exception_code == 2
    finally:
        client.close()


@hsettings(deadline=None, max_examples=40)
@given(st.lists(st.integers(2500, 3650), min_size=1, max_size=32), st.integers(-300000, 300000),
       st.integers(0, 100), st.integers(-400, 900), st.integers(0, 0xFFFFFFFF))
def test_reply_bytes_round_trip_property(cells, current_ma, soc, t_dc, alarms):
    # no socket: JkBmsSim.reply_to() is the reply a request gets (before faults)
    state = {"cell_voltages_v": [c / 1000 for c in cells], "battery_current_a": current_ma / 1000,
             "soc_percent": soc, "t1_c": t_dc / 10, "error_bitmask": alarms}
    sim = jkbms_sim.JkBmsSim(state)
    req = bytearray(16)
    reply = sim.reply_to(bytes(req[:pb_modbus.build_trigger(req, 1, pb_modbus.TRIGGER_STATUS)]))
    tr = pb_modbus.TriggerReply()
    tr.start(1, pb_modbus.TRIGGER_STATUS)
    tr.feed(reply)
    assert tr.poll()
    a = S.PackSnapshot()
    cellinfo.decode(tr.frame, 6, J.LAYOUT_JK02_32S, a)
    img = pb_modbus.BlockImage(pb_modbus.STATUS_BASE, cellinfo.NEED_32S)
    for reg, count in img.plan:
        r = sim.reply_to(bytes(req[:rtu.build_read(req, 1, reg, count)]))
        img.store(reg, r, len(r), 1)
    b = S.PackSnapshot()
    cellinfo.decode(img.data, 0, J.LAYOUT_PB_FC03, b)
    for snap in (a, b):
        assert list(snap.cells[:len(cells)]) == cells and snap.cell_count == len(cells)
        assert (snap.current_ma, snap.soc_pct, snap.temps[1], snap.alarms) == (current_ma, soc, t_dc, alarms)


# -------------------------------------------------------------------------------- "4E 57"


def check_4e57(snap, state=STATE):
    cells = [mv(v) for v in state["cell_voltages_v"]]
    assert snap.cell_count == len(cells) and list(snap.cells[:len(cells)]) == cells
    assert snap.pack_mv == (sum(cells) + 5) // 10 * 10  # 10 mV resolution
    assert snap.current_ma == mv(state["battery_current_a"])  # 10 mA resolution; STATE is a multiple
    assert snap.soc_pct == state["soc_percent"]
    # whole degC in the vendor encoding (negative: 100 + |t|)
    assert snap.temps[S.T_MOS] == 10 * round(state["power_tube_temp_c"])
    assert (snap.temps[1], snap.temps[2]) == (10 * round(state["t1_c"]), 10 * round(state["t2_c"]))
    # bits chosen to exist in the 0x8B warning word; its one battery
    # over-temperature bit stands for JK02 charge + discharge OTP (it blocks)
    want = state["error_bitmask"]
    if want & (1 << 21):
        want = (want & ~(1 << 21)) | (1 << 8) | (1 << 15)
    assert snap.alarms == want
    assert (snap.charge_fet, snap.discharge_fet) == (int(state["charging"]), int(state["discharging"]))
    assert snap.cycles == state["cycle_count"]
    assert snap.runtime_s == state["total_runtime_s"]  # minutes on the wire; STATE is a multiple of 60
    assert snap.full_mah == mv(state["nominal_capacity_ah"])
    assert snap.design_mah == mv(state["design_capacity_ah"])
    assert snap.remaining_mah == snap.full_mah * state["soc_percent"] // 100
    assert snap.settings_ok == 1 and snap.set_cell_count == state["cell_count"]
    assert (snap.cell_ovp_mv, snap.cell_ovpr_mv) == (mv(state["cell_ovp_v"]), mv(state["cell_ovpr_v"]))
    assert (snap.cell_uvp_mv, snap.cell_uvpr_mv) == (mv(state["cell_uvp_v"]), mv(state["cell_uvpr_v"]))
    assert snap.max_charge_ma == mv(state["max_charge_current_a"])
    assert snap.max_discharge_ma == mv(state["max_discharge_current_a"])


def test_4e57_read_all(make_sim):
    sim, cli = make_sim(protocol="jk-nw")
    frame = read_all_4e57(cli)
    assert frame is not None
    assert nw.check_frame(frame, len(frame)) == len(frame)
    snap = S.PackSnapshot()
    nw.decode(frame, len(frame), snap)
    check_4e57(snap)
    d = nw.describe(frame, len(frame))
    assert d["protocol_version"] == 1 and d["cell_count_field"] == 16
    assert d["pack_ovp_v"] == pytest.approx(16 * STATE["cell_ovp_v"])
    assert d["pack_uvp_v"] == pytest.approx(16 * STATE["cell_uvp_v"])
    assert d["charge_ocp_a"] == 120 and d["discharge_ocp_a"] == 180
    assert d["software_version"] and d["manufacturer_id"]
    # any source byte (syssi sends 0x02, checksum 01 28)
    req = bytearray(21)
    nw.build_read_all(req)
    req[9] = 0x02
    req[-1] = (sum(req[:-4]) & 0xFF)
    assert bytes(req[-4:]) == b"\x00\x00\x01\x28"
    assert read_all_4e57(cli, req) is not None
    # a wrong checksum or another command: silence
    bad = bytearray(req)
    bad[-1] ^= 1
    cli.send(bad)
    assert cli.listen(QUIET) == b""
    other = bytearray(req)
    other[8] = 0x03  # read one
    s = sum(other[:-4])
    other[-2:] = bytes(((s >> 8) & 0xFF, s & 0xFF))
    cli.send(other)
    assert cli.listen(QUIET) == b""
    assert sim.stats["replies"] == 2


def test_4e57_modbus_bytes_are_ignored(make_sim):
    _, cli = make_sim(protocol="jk-nw")
    trig = bytearray(16)
    cli.send(trig[:pb_modbus.build_trigger(trig, 1, pb_modbus.TRIGGER_STATUS)])
    assert cli.listen(QUIET) == b""
    assert read_all_4e57(cli) is not None


# --------------------------------------------------------------------------------- faults


def test_fault_silent(make_sim):
    sim, cli = make_sim()
    sim.add_fault("bms-silent")
    assert sim.active_faults() == {"bms-silent"}
    frame, raw = trigger(cli, pb_modbus.TRIGGER_STATUS, timeout=QUIET)
    assert frame is None and raw == b""
    req = bytearray(16)
    assert transact_rtu(cli, req[:rtu.build_read(req, 1, 0x1290, 2)], timeout=QUIET) is None
    assert sim.stats["suppressed"] == 2
    sim.clear_faults()
    frame, _ = trigger(cli, pb_modbus.TRIGGER_STATUS)
    assert frame is not None


def test_fault_garbage_is_rejected_by_the_library(make_sim):
    sim, cli = make_sim(noise_interval_s=0.05)
    sim.add_fault("bms-garbage")
    req = bytearray(16)
    for _ in range(4):  # alternates: random bytes, then the real reply with broken checksums
        frame, raw = trigger(cli, pb_modbus.TRIGGER_STATUS, timeout=QUIET)
        assert frame is None and raw  # bytes came, TriggerReply skipped them all
        with pytest.raises(DecodeError):
            J.check_frame(raw, len(raw))
        k = raw.find(J.HEADER)
        if k >= 0:  # the corrupted real frame: header present, sum8 wrong
            with pytest.raises(DecodeError):
                J.check_frame(raw[k:], len(raw) - k)
        cli.send(req[:rtu.build_read(req, 1, 0x1290, 2)])
        raw = cli.listen(QUIET)
        assert raw
        with pytest.raises(DecodeError):
            rtu.parse_reply(raw, len(raw), 1, rtu.READ_HOLDING, -1, 2)
        x = FrameExtractor(rtu.frame_len_at, 2048, rtu.MAX_FRAME)
        x.feed(raw)
        while True:  # whatever the RTU judge might pick out of the noise is not our reply
            n = x.next_frame()
            if not n:
                break
            with pytest.raises(DecodeError):
                rtu.parse_reply(x.frame, n, 1, rtu.READ_HOLDING, -1, 2)
    assert sim.stats["garbled"] == 8
    # noise between frames: bytes arrive without any request
    assert cli.listen(0.4)
    assert sim.stats["noise"] > 0
    sim.clear_faults("bms-garbage")
    cli.listen(0.1)  # drain noise sent before the fault ended
    frame, _ = trigger(cli, pb_modbus.TRIGGER_STATUS)
    assert frame is not None


def test_fault_garbage_4e57(make_sim):
    sim, cli = make_sim(protocol="jk-nw", noise_interval_s=10)
    sim.add_fault("bms-garbage")
    buf = bytearray(21)
    req = bytes(buf[:nw.build_read_all(buf)])
    for _ in range(2):
        assert read_all_4e57(cli, req, timeout=QUIET) is None  # the extractor skips it
    cli.send(req)
    raw = cli.listen(QUIET)
    with pytest.raises(DecodeError):
        nw.decode(raw, len(raw), S.PackSnapshot())


def test_fault_slow(make_sim):
    sim, cli = make_sim(slow_delay_s=1.2)
    sim.add_fault("bms-slow")
    t0 = time.monotonic()
    frame, raw = trigger(cli, pb_modbus.TRIGGER_STATUS, timeout=0.5)
    assert frame is None and raw == b""  # a 0.5 s timeout sees nothing
    frame2 = None
    tr = pb_modbus.TriggerReply()
    tr.start(1, pb_modbus.TRIGGER_STATUS)
    deadline = t0 + 3
    while time.monotonic() < deadline:
        tr.feed(cli.recv(deadline - time.monotonic()))
        if tr.poll():
            frame2 = bytes(tr.frame)
            break
    elapsed = time.monotonic() - t0
    assert frame2 is not None and 1.15 <= elapsed < 2.5  # the late reply is intact
    assert sim.stats["slowed"] == 1


def test_fault_partial(make_sim):
    sim, cli = make_sim()
    sim.add_fault("bms-partial")
    for _ in range(3):
        frame, raw = trigger(cli, pb_modbus.TRIGGER_STATUS, timeout=QUIET)
        assert frame is None
        assert raw.startswith(J.HEADER) and 8 <= len(raw) < 300
        with pytest.raises(DecodeError):
            J.check_frame(raw, len(raw))
    req = bytearray(16)
    cli.send(req[:rtu.build_read(req, 1, 0x1200, 32)])
    raw = cli.listen(QUIET)
    assert 1 <= len(raw) < 69
    with pytest.raises(DecodeError):
        rtu.parse_reply(raw, len(raw), 1, rtu.READ_HOLDING, -1, 32)
    assert sim.stats["truncated"] == 4


def test_fault_partial_4e57(make_sim):
    sim, cli = make_sim(protocol="jk-nw")
    sim.add_fault("bms-partial", duration=QUIET + 0.2)
    buf = bytearray(21)
    req = bytes(buf[:nw.build_read_all(buf)])
    cli.send(req)
    raw = cli.listen(QUIET)
    assert 0 < len(raw) < len(sim.nw_response())
    with pytest.raises(DecodeError):
        nw.decode(raw, len(raw), S.PackSnapshot())
    time.sleep(0.25)  # the fault has ended by itself
    assert sim.active_faults() == set()
    assert read_all_4e57(cli, req) is not None


# ------------------------------------------------------------------------ timing and drift


def test_reply_timing_is_realistic(make_sim):
    _, cli = make_sim(delay_ms=(10, 40), seed=None)
    req = bytearray(16)
    n = pb_modbus.build_trigger(req, 1, pb_modbus.TRIGGER_STATUS)
    for _ in range(6):
        t0 = time.monotonic()
        cli.send(req[:n])
        first = cli.recv(1.0)
        latency = time.monotonic() - t0
        assert first
        assert 0.009 <= latency <= 0.2, latency
        cli.listen(0.05)


def test_drift_changes_the_data(make_sim):
    sim, cli = make_sim(drift=True)
    f1, _ = trigger(cli, pb_modbus.TRIGGER_STATUS)
    time.sleep(1.0)
    f2, _ = trigger(cli, pb_modbus.TRIGGER_STATUS)
    a, b = S.PackSnapshot(), S.PackSnapshot()
    cellinfo.decode(f1, 6, J.LAYOUT_JK02_32S, a)
    cellinfo.decode(f2, 6, J.LAYOUT_JK02_32S, b)
    assert a.current_ma != b.current_ma
    assert a.remaining_mah != b.remaining_mah
    assert b.runtime_s > a.runtime_s


# --------------------------------------------------------------------------------------- pty


def test_pty_in_process(make_sim):
    sim, _ = make_sim(transport="pty")
    assert sim.pty_path and os.path.exists(sim.pty_path)
    cli = PtyClient(sim.pty_path)
    try:
        frame, raw = trigger(cli, pb_modbus.TRIGGER_STATUS)
        assert frame is not None and len(raw) == 308
        snap = S.PackSnapshot()
        cellinfo.decode(frame, 6, J.LAYOUT_JK02_32S, snap)
        check_status(snap)
    finally:
        cli.close()


# -------------------------------------------------------------------------------- the CLI


def _jk_decode_objects():
    """STATE as jk_decode-style objects: live data, settings (frame_type 1, whose
    nominal_capacity_ah is the design capacity) and device info."""
    live = {k: STATE[k] for k in ("cell_voltages_v", "battery_current_a", "soc_percent", "soh_percent",
                                  "remaining_capacity_ah", "nominal_capacity_ah", "cycle_count",
                                  "cycle_capacity_ah", "total_runtime_s", "power_tube_temp_c", "t1_c",
                                  "t2_c", "t4_c", "error_bitmask", "charging", "discharging",
                                  "balance_current_a", "balance_status")}
    live.update(protocol="jk_55aa", layout="JK02_32S", frame_type=2)
    sets = {k: STATE[k] for k in ("cell_count", "cell_ovp_v", "cell_ovpr_v", "cell_uvp_v", "cell_uvpr_v",
                                  "rcv_v", "rfv_v", "max_charge_current_a", "max_discharge_current_a",
                                  "charge_switch", "discharge_switch")}
    sets.update(protocol="jk_55aa", frame_type=1, nominal_capacity_ah=STATE["design_capacity_ah"])
    info = {k: STATE[k] for k in ("model", "hw_version", "sw_version", "device_name", "power_on_count")}
    info.update(protocol="jk_55aa", frame_type=3)
    return live, sets, info


def test_state_file_through_the_tools_loader(tmp_path):
    """The simulator reads its state with the tools' one loader (tools/state_json.py): JSON Lines
    are merged into one state in any order; the settings' capacity stays the design capacity."""
    from tools import state_json

    live, sets, info = _jk_decode_objects()
    served = []
    for order in ((live, sets, info), (info, sets, live), (sets, live, info)):
        path = tmp_path / "state.jsonl"
        path.write_text("\n".join(json.dumps(o) for o in order) + "\n")
        state = state_json.load(str(path))
        assert state["nominal_capacity_ah"] == STATE["nominal_capacity_ah"]
        assert state["design_capacity_ah"] == STATE["design_capacity_ah"]
        assert "protocol" not in state and "frame_type" not in state and state["layout"] == "JK02_32S"
        served.append(jkbms_sim.JkBmsSim(state).get_state())
    assert served[0] == served[1] == served[2]
    snap = S.PackSnapshot()
    jk_settings.decode(jkbms_sim.JkBmsSim(state).frame(0x01), snap)
    check_settings(snap)
    # one pretty-printed object is one state too; anything else is refused with the line
    path.write_text(json.dumps(dict(live, **sets), indent=2))
    assert state_json.load(str(path))["cell_ovp_v"] == STATE["cell_ovp_v"]
    for text, word in (("[%s]" % json.dumps(live), "array"), (json.dumps(live) + "\n{oops\n", "line 2")):
        path.write_text(text)
        with pytest.raises(state_json.StateError, match=word):
            state_json.load(str(path))


def test_cli_tcp_state_file_and_scheduled_fault(tmp_path):
    # state given as jk_decode-style JSON lines: live data, then settings and device info
    live, sets, info = _jk_decode_objects()
    path = tmp_path / "state.jsonl"
    path.write_text("\n".join(json.dumps(o) for o in (live, sets, info)) + "\n")

    p = SimProcess("--state", str(path), "--port", "0", "--delay-ms", "0:2", "--address", "3",
                   "--fault", "bms-silent@1.0:1.0", "--seed", "1")
    cli = None
    try:
        host, port = p.line.split()[2].rsplit(":", 1)
        assert p.line.split()[1] == "tcp" and host == "127.0.0.1"
        cli = Client(int(port))
        frame, _ = trigger(cli, pb_modbus.TRIGGER_STATUS, slave=3)
        snap = S.PackSnapshot()
        cellinfo.decode(frame, 6, J.LAYOUT_JK02_32S, snap)
        check_status(snap)
        frame, _ = trigger(cli, pb_modbus.TRIGGER_SETTINGS, slave=3)
        jk_settings.decode(frame, snap)
        check_settings(snap)
        assert jk_settings.describe(frame)["device_address"] == 3
        img = read_block(cli, pb_modbus.ABOUT_BASE, devinfo.BLOCK_BYTES, slave=3)
        check_devinfo(devinfo.describe(img.data, 0, True))
        # the scheduled silence (1.0 s .. 2.0 s after start)
        time.sleep(max(0.0, p.t0 + 1.3 - time.monotonic()))
        frame, raw = trigger(cli, pb_modbus.TRIGGER_STATUS, slave=3, timeout=0.4)
        assert frame is None and raw == b""
        time.sleep(max(0.0, p.t0 + 2.3 - time.monotonic()))
        frame, _ = trigger(cli, pb_modbus.TRIGGER_STATUS, slave=3)
        assert frame is not None
    finally:
        if cli:
            cli.close()
        p.stop()


def test_cli_pty_4e57(tmp_path):
    link = tmp_path / "ttyJK"
    p = SimProcess("--protocol", "jk-nw", "--pty", "--pty-link", str(link), "--delay-ms", "0:2")
    cli = None
    try:
        kind, path = p.line.split()[1:3]
        assert kind == "pty" and path.startswith("/dev/")
        assert os.path.realpath(link) == os.path.realpath(path)
        cli = PtyClient(str(link))
        frame = read_all_4e57(cli)
        assert frame is not None
        snap = S.PackSnapshot()
        nw.decode(frame, len(frame), snap)
        assert list(snap.cells[:16]) == [mv(v) for v in jkbms_sim.B.SAMPLE_STATE["cell_voltages_v"]]
        assert snap.soc_pct == jkbms_sim.B.SAMPLE_STATE["soc_percent"]
        assert (snap.cell_ovp_mv, snap.cell_uvp_mv) == (3650, 2700)  # default settings
        assert (snap.max_charge_ma, snap.max_discharge_ma) == (150000, 200000)
    finally:
        if cli:
            cli.close()
        p.stop()
    assert not os.path.lexists(link)


def test_cli_rejects_bad_arguments(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"cell_voltages_v": []}))
    for args in (["--fault", "bms-wobbly@1"], ["--fault", "bms-slow@-1"], ["--state", str(bad)],
                 ["--address", "0"], ["--port", "99999"], ["--fault", "bms-slow@soon"]):
        r = subprocess.run([sys.executable, str(SIM), *args, "--duration", "1"], capture_output=True,
                           text=True, timeout=20)
        assert r.returncode == 2 and r.stderr.startswith("jkbms_sim:"), args
        assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr


def test_parse_fault():
    with pytest.raises(ValueError, match=r"NAME@SECONDS\[:DURATION\]"):
        jkbms_sim.parse_fault("bms-slow@x")
    with pytest.raises(ValueError, match="inverter-silent"):
        jkbms_sim.parse_fault("bms-x", jkbms_sim.FAULTS + ("inverter-silent",))
    assert jkbms_sim.parse_fault("bms-slow@2.5") == ("bms-slow", 2.5, None)
    assert jkbms_sim.parse_fault("bms-garbage@0:3") == ("bms-garbage", 0.0, 3.0)
    assert jkbms_sim.parse_fault("bms-silent") == ("bms-silent", 0.0, None)
    with pytest.raises(ValueError):
        jkbms_sim.parse_fault("bms-partial@1:0")


# ------------------------------------------------------------------- several packs on one bus


def pack_state(soc, current_a, cells, capacity_ah, **extra):
    st = {"cell_voltages_v": cells, "soc_percent": soc, "battery_current_a": current_a,
          "nominal_capacity_ah": capacity_ah, "remaining_capacity_ah": capacity_ah * soc / 100,
          "design_capacity_ah": capacity_ah}
    st.update(extra)
    return st


# three different packs: 16S 280 Ah, 8S 100 Ah, 24S 50 Ah
PACKS = [
    pack_state(57, -12.34, CELLS, 280.0),
    pack_state(81, 3.5, [3.401, 3.402, 3.399, 3.403, 3.400, 3.398, 3.404, 3.397], 100.0, t1_c=30.5),
    pack_state(12, -40.0, [3.2 + 0.001 * i for i in range(24)], 50.0, error_bitmask=1 << 11),
]


def status_of(frame):
    snap = S.PackSnapshot()
    cellinfo.decode(frame, 6, J.LAYOUT_JK02_32S, snap)
    return snap


def check_pack(snap, state):
    cells = [mv(v) for v in state["cell_voltages_v"]]
    assert snap.cell_count == len(cells) and list(snap.cells[:len(cells)]) == cells
    assert not any(snap.cells[len(cells):])
    assert snap.pack_mv == sum(cells)
    assert (snap.soc_pct, snap.current_ma) == (state["soc_percent"], mv(state["battery_current_a"]))
    assert snap.full_mah == mv(state["nominal_capacity_ah"])
    assert snap.remaining_mah == mv(state["remaining_capacity_ah"])
    assert snap.alarms == state.get("error_bitmask", 0)


def check_pack_settings(frame, state, address):
    snap = S.PackSnapshot()
    jk_settings.decode(frame, snap)
    assert snap.set_cell_count == len(state["cell_voltages_v"])
    assert snap.design_mah == mv(state["design_capacity_ah"])
    assert jk_settings.describe(frame)["device_address"] == address


def trigger_bytes(slave, reg):
    """The FC10 trigger request as the firmware builds it (address 0 patched in, CRC redone)."""
    buf = bytearray(16)
    n = pb_modbus.build_trigger(buf, max(slave, 1), reg)
    buf[0] = slave
    return bytes(buf[:put_crc(buf, n - 2)])


def test_packs_answer_only_at_their_own_address(make_sim):
    sim, cli = make_sim(packs=PACKS)
    assert sim.addresses == (1, 2, 3)
    for k, state in enumerate(PACKS, 1):
        frame, raw = trigger(cli, pb_modbus.TRIGGER_STATUS, slave=k)
        assert frame is not None and len(raw) == 308  # one frame, one ACK: only pack k answered
        assert rtu.parse_reply(raw[300:], 8, k, rtu.WRITE_MULTIPLE, pb_modbus.TRIGGER_STATUS, 1) == 0
        check_pack(status_of(frame), state)
        frame, raw = trigger(cli, pb_modbus.TRIGGER_SETTINGS, slave=k)
        assert len(raw) == 308
        check_pack_settings(frame, state, k)
        # the FC03 path of the same pack carries the same data
        img = read_block(cli, pb_modbus.STATUS_BASE, cellinfo.NEED_32S, slave=k)
        snap = S.PackSnapshot()
        cellinfo.decode(img.data, 0, J.LAYOUT_PB_FC03, snap)
        check_pack(snap, state)
        assert sim.get_state(address=k)["device_address"] == k
    assert sim.stats["exceptions"] == 0
    replies = [sim.replies(k) for k in (1, 2, 3)]
    assert replies[0] == replies[1] == replies[2] > 2
    # addresses without a pack, and the broadcast address 0: silence
    req = bytearray(16)
    for a in (4, 15, 247):
        frame, raw = trigger(cli, pb_modbus.TRIGGER_STATUS, slave=a, timeout=QUIET)
        assert frame is None and raw == b"", a
        cli.send(req[:rtu.build_read(req, a, 0x1290, 2)])
        assert cli.listen(QUIET / 2) == b"", a
    cli.send(trigger_bytes(0, pb_modbus.TRIGGER_STATUS))
    assert cli.listen(QUIET) == b""
    assert [sim.replies(k) for k in (1, 2, 3)] == replies
    # several packs: a method about one pack must be told which
    with pytest.raises(ValueError, match="address="):
        sim.get_state()
    with pytest.raises(ValueError, match="no pack at address 4"):
        sim.set_state({"soc_percent": 1}, address=4)
    with pytest.raises(ValueError, match="no pack at address 9"):
        sim.add_fault("bms-silent", address=9)


def test_packs_own_state_and_selector_faults(make_sim):
    sim, cli = make_sim(packs=PACKS)
    sim.set_state({"soc_percent": 33, "battery_current_a": 7.0}, address=2)
    want = [dict(PACKS[0]), dict(PACKS[1], soc_percent=33, battery_current_a=7.0), dict(PACKS[2])]
    for k in (1, 2, 3):
        check_pack(status_of(trigger(cli, pb_modbus.TRIGGER_STATUS, slave=k)[0]), want[k - 1])
    # pack 2 silent for a window; packs 1 and 3 go on answering meanwhile
    sim.add_fault("bms-silent", duration=0.8, address=2)
    assert sim.active_faults(address=2) == {"bms-silent"} and sim.active_faults(address=1) == set()
    assert sim.active_faults() == {"bms-silent"}  # active for some pack
    t0 = time.monotonic()
    frame, raw = trigger(cli, pb_modbus.TRIGGER_STATUS, slave=2, timeout=QUIET)
    assert frame is None and raw == b""
    for k in (1, 3):
        check_pack(status_of(trigger(cli, pb_modbus.TRIGGER_STATUS, slave=k)[0]), want[k - 1])
    assert time.monotonic() - t0 < 0.8  # all of that inside the window
    time.sleep(max(0.0, t0 + 0.85 - time.monotonic()))
    check_pack(status_of(trigger(cli, pb_modbus.TRIGGER_STATUS, slave=2)[0]), want[1])
    # a fault without a selector hits every pack; one for pack 3 only garbles pack 3
    sim.add_fault("bms-partial", address=3)
    frame, raw = trigger(cli, pb_modbus.TRIGGER_STATUS, slave=3, timeout=QUIET)
    assert frame is None and raw.startswith(J.HEADER) and len(raw) < 300
    assert trigger(cli, pb_modbus.TRIGGER_STATUS, slave=1)[0] is not None
    sim.add_fault("bms-silent")
    for k in (1, 2, 3):
        assert trigger(cli, pb_modbus.TRIGGER_STATUS, slave=k, timeout=QUIET) == (None, b"")
    sim.clear_faults("bms-silent")
    assert sim.active_faults(address=3) == {"bms-partial"}
    sim.clear_faults(address=3)
    assert sim.active_faults() == set()
    check_pack(status_of(trigger(cli, pb_modbus.TRIGGER_STATUS, slave=3)[0]), want[2])


def test_packs_as_dict_drift_apart(make_sim):
    # {address: state}: any addresses; with drift each pack moves from its own state
    sim, cli = make_sim(packs={2: PACKS[1], 5: PACKS[2]}, drift=True)
    assert sim.addresses == (2, 5)
    a = status_of(trigger(cli, pb_modbus.TRIGGER_STATUS, slave=5)[0])
    b = status_of(trigger(cli, pb_modbus.TRIGGER_STATUS, slave=2)[0])
    assert (a.cell_count, b.cell_count) == (24, 8)
    time.sleep(0.6)
    a2 = status_of(trigger(cli, pb_modbus.TRIGGER_STATUS, slave=5)[0])
    assert a2.current_ma != a.current_ma and a2.cell_count == 24
    assert trigger(cli, pb_modbus.TRIGGER_STATUS, slave=1, timeout=QUIET) == (None, b"")


def test_packs_constructor_checks():
    for kw, word in ((dict(packs=[]), "at least one"), (dict(packs=[{}], state={}), "replaces"),
                     (dict(packs=[{}], address=2), "replaces"), (dict(packs={0: {}}), "1..247"),
                     (dict(packs=[{}, {}], protocol="jk-nw"), "jk-pb only"),
                     (dict(packs=[{}] * 17, bus_master=True), "at most 16"),
                     (dict(packs={1: {}}, bus_master=True), "master at address 0"),
                     (dict(packs=[{}, {"cell_voltages_v": []}]), "pack at address 2"),
                     (dict(bus_master=True, echo=True), "echo"),
                     (dict(faults=["bms-silent@1::2"]), "no pack at address 2")):
        with pytest.raises(ValueError, match=word):
            jkbms_sim.JkBmsSim(**kw)
    # the single-pack API is what it was: one pack at address 1 (or the one given)
    assert jkbms_sim.JkBmsSim().addresses == (1,)
    sim = jkbms_sim.JkBmsSim(STATE, address=7, faults=["bms-slow@2::7", ("bms-silent", 1, 2)])
    assert sim.addresses == (7,) and sim.get_state()["device_address"] == 7
    assert sorted(f[3] for f in sim._faults if f[3] is not None) == [7]


def test_parse_pack_fault():
    P = jkbms_sim.parse_pack_fault
    assert P("bms-silent@8:5:2") == ("bms-silent", 8.0, 5.0, 2)
    assert P("bms-silent@8::2") == ("bms-silent", 8.0, None, 2)
    assert P("bms-garbage@1.5:3") == ("bms-garbage", 1.5, 3.0, None)
    assert P("bms-slow@4") == ("bms-slow", 4.0, None, None)
    assert P("bms-partial") == ("bms-partial", 0.0, None, None)
    for bad, word in (("bms-silent@8:5:x", r"NAME@SECONDS:\[DURATION\]:ADDRESS"), ("bms-silent@8:5:2:1", "e.g."),
                      ("bms-silent@8:5:", "format"), ("bms-silent@8:5:300", "0..247"),
                      ("bms-silent@8:0:2", "duration > 0"), ("bms-silent@-1::2", ">= 0"),
                      ("bms-wobbly@1::2", "unknown fault")):
        with pytest.raises(ValueError, match=word):
            P(bad)
    # where no pack selector is taken, one is refused
    with pytest.raises(ValueError, match="no pack selector|NAME@SECONDS"):
        jkbms_sim.parse_fault("bms-silent@8:5:2")


def write_packs(tmp_path, states):
    paths = []
    for i, state in enumerate(states):
        path = tmp_path / ("pack%d.json" % (i + 1))
        path.write_text(json.dumps(state))
        paths.append(str(path))
    return paths


def test_cli_packs_and_selector_fault(tmp_path):
    paths = write_packs(tmp_path, PACKS)
    args = []
    for path in paths:
        args += ["--pack", path]
    p = SimProcess(*args, "--delay-ms", "0:2", "--fault", "bms-silent@0::2", "--fault", "bms-partial@0:1:3")
    cli = None
    try:
        cli = Client(int(p.line.rsplit(":", 1)[1]))
        frame, raw = trigger(cli, pb_modbus.TRIGGER_STATUS, slave=1)
        check_pack(status_of(frame), PACKS[0])
        frame, raw = trigger(cli, pb_modbus.TRIGGER_STATUS, slave=3, timeout=QUIET)
        assert frame is None and raw.startswith(J.HEADER) and len(raw) < 300  # cut short in its first second
        time.sleep(max(0.0, p.t0 + 1.1 - time.monotonic()))
        frame, raw = trigger(cli, pb_modbus.TRIGGER_SETTINGS, slave=3)
        check_pack_settings(frame, PACKS[2], 3)
        check_pack(status_of(trigger(cli, pb_modbus.TRIGGER_STATUS, slave=3)[0]), PACKS[2])
        assert trigger(cli, pb_modbus.TRIGGER_STATUS, slave=2, timeout=QUIET) == (None, b"")  # to the end
        assert trigger(cli, pb_modbus.TRIGGER_STATUS, slave=4, timeout=QUIET) == (None, b"")  # no pack
    finally:
        if cli:
            cli.close()
        p.stop()


def test_cli_rejects_bad_pack_arguments(tmp_path):
    good, = write_packs(tmp_path, [{}])
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"cell_voltages_v": [9.0]}))
    for args, word in ((["--pack", good, "--state", good], "--pack replaces"),
                       (["--pack", good, "--address", "2"], "--pack replaces"),
                       (["--pack", good, "--protocol", "jk-nw"], "jk-pb"),
                       (["--pack", good, "--pack", str(bad)], "cell voltage"),
                       (["--pack", good, "--fault", "bms-silent@1::2"], "no pack at address 2"),
                       (["--pack", good, "--fault", "bms-silent@1:2:x"], "ADDRESS"),
                       (["--master-period-s", "1"], "needs --bus-master"),
                       (["--bus-master", "--address", "1"], "address 0"),
                       (["--bus-master", "--echo"], "--echo"),
                       (["--bus-master", "--master-period-s", "0"], "--master-period-s"),
                       (["--bus-master"] + ["--pack", good] * 17, "at most 16")):
        r = subprocess.run([sys.executable, str(SIM), *args, "--duration", "1"], capture_output=True,
                           text=True, timeout=20)
        assert r.returncode == 2 and r.stderr.startswith("jkbms_sim:"), (args, r.stderr)
        assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
        assert word in r.stderr, (word, r.stderr)


def test_packs_wire_time_at_baud(make_sim):
    # --baud paces every reply on the bus: 308 bytes at 115200 8N1 take ~27 ms on the wire
    _, cli = make_sim(packs=PACKS[:2], baud=115200)
    for k in (1, 2):
        cli.send(trigger_bytes(k, pb_modbus.TRIGGER_STATUS))
        first = cli.recv(1.0)
        t_first = time.monotonic()
        rest = cli.recv_exactly(308 - len(first), timeout=1.0)
        spread = time.monotonic() - t_first
        assert J.check_frame((first + rest)[:300], 300) == J.TYPE_CELL_INFO
        assert 0.02 <= spread < 0.2, spread


# ------------------------------------------------------------------ a JK bank with its own master


def bus_items(raw):
    """The bytes of a bus with a JK master cut into what went over it, in order:
    ("frame", type, bytes) for a 55AA frame (sum8 checked by the firmware), ("ack", address,
    register) for an FC10 ACK and ("req", address, register) for an FC10 trigger request (CRC
    checked by the firmware); anything else fails the test."""
    out = []
    i = 0
    while i < len(raw):
        if raw[i:i + 4] == J.HEADER:
            assert len(raw) - i >= 300, "cut frame at %d" % i
            out.append(("frame", J.check_frame(raw[i:i + 300], 300), raw[i:i + 300]))
            i += 300
        elif raw[i + 1:i + 2] == b"\x10" and crc_ok(raw, i, i + 8):
            out.append(("ack", raw[i], struct.unpack_from(">H", raw, i + 2)[0]))
            i += 8
        elif raw[i + 1:i + 2] == b"\x10" and crc_ok(raw, i, i + 11):
            assert raw[i + 4:i + 9] == b"\x00\x01\x02\x00\x00", raw[i:i + 11].hex()
            out.append(("req", raw[i], struct.unpack_from(">H", raw, i + 2)[0]))
            i += 11
        else:
            raise AssertionError("stray bytes at %d: %s" % (i, raw[i:i + 16].hex()))
    return out


def master_period(slaves, probe):
    """What one period of the master looks like on the wire (frames as their type)."""
    items = [("frame", 2), ("ack", 0, 0x1620), ("frame", 1), ("ack", 0, 0x161E)]
    for a in slaves:
        for reg, ftype in ((0x1620, 2), (0x161E, 1)):
            items += [("req", a, reg), ("frame", ftype), ("ack", a, reg)]
    return items + [("req", probe, 0x1620)]


def shape(items):
    return [it[:2] if it[0] == "frame" else it for it in items]


def test_bus_master_listen_only(make_sim):
    period = 0.9  # 7 steps of 0.1 s fit
    bank = PACKS  # the master (address 0) and slaves at 1 and 2
    frames = []
    sim, cli = make_sim(packs=bank, bus_master=True, master_period_s=period, delay_ms=(10, 40),
                        on_frame=lambda t, a, f: frames.append((t, a, f)))
    assert sim.addresses == (0, 1, 2)
    t0 = time.monotonic()
    raw = cli.listen(0.3)
    cli.send(trigger_bytes(1, pb_modbus.TRIGGER_STATUS))  # the gateway must not: counted, not answered
    cli.send(b"\x00\xff")
    raw += cli.listen(t0 + 2 * period - 0.1 - time.monotonic())  # two periods, not the third
    items = bus_items(raw)
    assert shape(items) == master_period((1, 2), 3) + master_period((1, 2), 4)
    assert sim.foreign_rx_bytes == 13 and sim.stats["requests"] == 0
    # every frame carries the state of the pack that sent it (the master's own at 0)
    sent_by = []
    for k, it in enumerate(items):
        if it[0] == "frame":
            address = items[k + 1][1]  # the ACK after it names the sender
            sent_by.append((address, it[1]))
            if it[1] == J.TYPE_CELL_INFO:
                check_pack(status_of(it[2]), bank[address])
            else:
                check_pack_settings(it[2], bank[address], address)
    # on_frame reported each of them, in order, ~0.1 s apart and one master period later again
    assert [(a, f) for _, a, f in frames] == sent_by
    gaps = [b[0] - a[0] for a, b in zip(frames, frames[1:], strict=False)]
    assert all(0.05 < g < 0.3 for g in gaps[:5]), gaps
    assert abs(frames[6][0] - frames[0][0] - period) < 0.1, frames
    assert frames[0][0] - t0 < 0.1  # the master starts at the connect


def test_bus_master_selector_faults(make_sim):
    sim, cli = make_sim(packs=PACKS, bus_master=True, master_period_s=0.8,
                        faults=["bms-silent@0::0", "bms-silent@0::2"])
    raw = cli.listen(0.75)
    # the master's own broadcasts and slave 2's answers are gone; the requests to 2 are still there
    want = [("req", 1, 0x1620), ("frame", 2), ("ack", 1, 0x1620), ("req", 1, 0x161E), ("frame", 1),
            ("ack", 1, 0x161E), ("req", 2, 0x1620), ("req", 2, 0x161E), ("req", 3, 0x1620)]
    assert shape(bus_items(raw)) == want
    assert sim.stats["suppressed"] == 4 and sim.stats["broadcasts"] == 0


def test_cli_bus_master(tmp_path):
    paths = write_packs(tmp_path, PACKS[:2])
    p = SimProcess("--pack", paths[0], "--pack", paths[1], "--bus-master", "--master-period-s", "0.5", "-v")
    cli = None
    try:
        cli = Client(int(p.line.rsplit(":", 1)[1]))
        raw = cli.listen(0.2)
        cli.send(b"\x01\x02\x03")
        raw += cli.listen(0.25)
        items = bus_items(raw)
        assert shape(items) == master_period((1,), 2)
        check_pack(status_of(items[0][2]), PACKS[0])
        check_pack(status_of(items[5][2]), PACKS[1])
    finally:
        if cli:
            cli.close()
        err = p.stop()
    assert "received 3 byte(s) from the gateway, not answered" in err, err


# ------------------------------------------------- tools/simulate.py: its packs and faults


def test_simulate_pack_arguments(tmp_path):
    from tools import simulate

    assert simulate.bus_config(3, False) == {"bms_addresses": [1, 2, 3]}
    assert simulate.bus_config(2, True) == {"bms_addresses": [0, 1], "bms_bus_role": "listen",
                                            "bms_timeout_s": 15}
    assert simulate.parse_fault("bms-silent@8:5:2") == ("bms-silent", 8.0, 5.0, 2)
    assert simulate.parse_fault("inverter-silent@3:1") == ("inverter-silent", 3.0, 1.0, None)
    good, = write_packs(tmp_path, [{}])
    out = str(tmp_path / "x.log")
    for args, word in ((["--pack", good, "--state", good], "one of the two"),
                       ([], "one of the two"),
                       (["--pack", good, "--bms-protocol", "jk-nw"], "jk-pb"),
                       (["--pack", good, "--bms-transport", "ble"], "uart"),
                       (["--pack", good, "--fault", "inverter-silent@1::1"], "bms-* faults only"),
                       (["--pack", good, "--pack", good, "--fault", "bms-silent@1::3"], "no pack at address 3"),
                       (["--pack", good, "--fault", "bms-silent@1:2:x"], "ADDRESS")):
        r = subprocess.run([sys.executable, str(ROOT / "tools" / "simulate.py"), *args, "--candump", out],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 2 and r.stderr.startswith("simulate:"), (args, r.stderr)
        assert r.stderr.count("\n") == 1 and word in r.stderr, (word, r.stderr)
        assert not os.path.exists(out)
