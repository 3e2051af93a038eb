"""host/slcan.py's SlcanSocketPort (a host-only CAN port backend, never shipped to the device)
against python-can's slcan interface (socket:// channel, i.e. a TCP client) and against a raw TCP
client: the port runs in-process under CPython (in a thread or interleaved) and in a subprocess
under the real MicroPython unix port.  Loopback only; every wait is bounded; subprocesses and
sockets are cleaned up."""
import queue
import socket
import subprocess
import threading
import time
from pathlib import Path

import can
import pytest
from slcan import SlcanSocketPort

from canport import base as B

ROOT = Path(__file__).resolve().parents[2]
LIB = ROOT / "firmware" / "lib"
HOST = ROOT / "host"
MICROPYTHON = ROOT / ".venv" / "bin" / "micropython"

# The device loop, shared verbatim by the CPython thread and the MicroPython subprocess: once a
# client opens the channel, send FRAMES; print every received frame and echo it back with id + 1;
# stop on id 0x7FF.
DEVICE_SRC = r'''
import time
import binascii
from canport.base import new_recv_list, FLAG_EXT_ID, FLAG_RTR

FRAMES = (
    (0x35E, b"PYLON   ", 0),
    (0x351, b"\x14\x02\xe8\x03\xe8\x03\xa0\x01", 0),
    (0x355, b"\x50\x00\x64\x00\x00\x00\x00\x00", 0),
    (0x356, b"\x4e\x14\x02\x00\xfa\x00\x00\x00", 0),
    (0x359, b"\x00\x00\x00\x00\x01\x50\x4e\x00", 0),
    (0x35C, b"\xc0\x00\x00\x00\x00\x00\x00\x00", 0),
    (0x18FF50E5, b"\x01\x02\x03", FLAG_EXT_ID),
    (0x123, b"\x00\x00\x00\x00", FLAG_RTR),
)


def _ms():
    f = getattr(time, "ticks_ms", None)
    return f() if f else int(time.monotonic() * 1000)


def _sleep_ms(ms):
    f = getattr(time, "sleep_ms", None)
    if f:
        f(ms)
    else:
        time.sleep(ms / 1000)


def run_device(port, timeout_ms, out, stop=None):
    arg = new_recv_list()
    t0 = _ms()
    sent = False
    while _ms() - t0 < timeout_ms:
        if stop is not None and stop():
            return 2
        port.poll()
        if port.is_open() and not sent:
            sent = True
            idx = [port.send(i, d, f) for (i, d, f) in FRAMES]
            out("SENT " + " ".join([str(x) for x in idx]))
        r = port.recv(arg)
        if r is None:
            _sleep_ms(1)
            continue
        data = bytes(r[1])
        out("RX %x %d %d %s" % (r[0], r[2], len(data), binascii.hexlify(data).decode()))
        if r[0] == 0x7FF:
            for _ in range(20):
                port.poll()
                _sleep_ms(1)
            out("BYE")
            return 0
        port.send(r[0] + 1, data, r[2])
    out("TIMEOUT")
    return 1
'''

EXPECTED = [
    (0x35E, False, False, b"PYLON   "),
    (0x351, False, False, b"\x14\x02\xe8\x03\xe8\x03\xa0\x01"),
    (0x355, False, False, b"\x50\x00\x64\x00\x00\x00\x00\x00"),
    (0x356, False, False, b"\x4e\x14\x02\x00\xfa\x00\x00\x00"),
    (0x359, False, False, b"\x00\x00\x00\x00\x01\x50\x4e\x00"),
    (0x35C, False, False, b"\xc0\x00\x00\x00\x00\x00\x00\x00"),
    (0x18FF50E5, True, False, b"\x01\x02\x03"),
    (0x123, False, True, b"\x00\x00\x00\x00"),
]


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def open_bus(port, bitrate=500000):
    return can.Bus(interface="slcan", channel="socket://127.0.0.1:%d" % port, bitrate=bitrate,
                   sleep_after_open=0)


def collect(bus, n, timeout=5.0, pump=None):
    """Up to n messages within timeout seconds (pump() is called between reads, if given)."""
    out = []
    end = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < end:
        if pump is not None:
            pump()
        msg = bus.recv(timeout=0.02 if pump is not None else 0.2)
        if msg is not None:
            out.append(msg)
    return out


def key(msg):
    data = b"\x00" * msg.dlc if msg.is_remote_frame else bytes(msg.data)
    return (msg.arbitration_id, msg.is_extended_id, msg.is_remote_frame, data)


def exercise(port_number, device_lines):
    """The python-can side of the conversation; device_lines(n, timeout) -> the device's output."""
    bus = open_bus(port_number)
    try:
        got = collect(bus, len(EXPECTED))
        assert [key(m) for m in got] == EXPECTED
        assert all(m.dlc == len(e[3]) for m, e in zip(got, EXPECTED, strict=True))
        assert bus.get_version(2.0) == (10, 13)
        assert bus.get_serial_number(2.0) == "JKGW"
        bus.send(can.Message(arbitration_id=0x305, data=bytes(8), is_extended_id=False))
        bus.send(can.Message(arbitration_id=0x1806E5F4, data=b"\xaa\xbb", is_extended_id=True))
        bus.send(can.Message(arbitration_id=0x310, is_remote_frame=True, dlc=2, is_extended_id=False))
        echoes = collect(bus, 3)
        assert [key(m) for m in echoes] == [
            (0x306, False, False, bytes(8)),
            (0x1806E5F5, True, False, b"\xaa\xbb"),
            (0x311, False, True, b"\x00\x00"),
        ]
        bus.send(can.Message(arbitration_id=0x7FF, data=b"\x01", is_extended_id=False))
        lines = device_lines(6, 10.0)
    finally:
        bus.shutdown()
    assert lines[0] == "SENT 0 0 0 0 0 0 0 0"  # each frame left at once: buffer 0 every time
    assert lines[1:] == [
        "RX 305 0 8 0000000000000000",
        "RX 1806e5f4 %d 2 aabb" % B.FLAG_EXT_ID,
        "RX 310 %d 2 0000" % B.FLAG_RTR,
        "RX 7ff 0 1 01",
        "BYE",
    ]


def test_port_is_host_only_and_reachable_through_can_soft():
    import can_soft

    assert can_soft.SlcanSocketPort is SlcanSocketPort  # loaded lazily by name
    assert issubclass(SlcanSocketPort, can_soft.SoftPort)
    assert not (LIB / "canport" / "slcan.py").exists() and not (LIB / "canport" / "host.py").exists()


def test_python_can_talks_to_the_port_in_a_cpython_thread():
    ns = {}
    exec(DEVICE_SRC, ns)
    port = SlcanSocketPort(0)
    assert port.port
    out = queue.Queue()
    stop = threading.Event()
    result = []
    t = threading.Thread(target=lambda: result.append(ns["run_device"](port, 20000, out.put, stop.is_set)),
                         daemon=True)
    t.start()

    def device_lines(n, timeout):
        lines = []
        end = time.monotonic() + timeout
        while len(lines) < n and time.monotonic() < end:
            try:
                lines.append(out.get(timeout=0.1))
            except queue.Empty:
                pass
        return lines

    try:
        exercise(port.port, device_lines)
    finally:
        stop.set()
        t.join(5.0)
        port.close()
    assert not t.is_alive() and result == [0]
    assert port.connections == 1


def _start_micropython_device(tmp_path):
    """(process, port, line queue); retries with another port if binding fails."""
    script = "\n".join([
        "import sys",
        "sys.path.insert(0, %r)" % str(LIB),
        "sys.path.insert(0, %r)" % str(HOST),
        DEVICE_SRC,
        "from slcan import SlcanSocketPort",
        "p = SlcanSocketPort(int(sys.argv[1]))",
        "print('READY')",
        "rc = run_device(p, 20000, print)",
        "p.close()",
        "sys.exit(rc)",
    ])
    path = tmp_path / "slcan_device.py"
    path.write_text(script)
    for _ in range(3):
        port = free_port()
        proc = subprocess.Popen([str(MICROPYTHON), str(path), str(port)], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        lines = queue.Queue()

        def reader(stream=proc.stdout, q=lines):
            for line in stream:
                q.put(line.rstrip("\n"))
            q.put(None)

        threading.Thread(target=reader, daemon=True).start()
        try:
            first = lines.get(timeout=10)
        except queue.Empty:
            first = None
        if first == "READY":
            return proc, port, lines
        proc.kill()
        proc.wait(5)
    pytest.fail("the MicroPython SLCAN device did not start: %r" % first)


@pytest.mark.skipif(not MICROPYTHON.exists(), reason="MicroPython unix port not installed")
def test_python_can_talks_to_the_port_under_micropython(tmp_path):
    proc, port, out = _start_micropython_device(tmp_path)

    def device_lines(n, timeout):
        got = []
        end = time.monotonic() + timeout
        while len(got) < n and time.monotonic() < end:
            try:
                line = out.get(timeout=0.1)
            except queue.Empty:
                continue
            if line is None:
                break
            got.append(line)
        return got

    try:
        exercise(port, device_lines)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def test_frames_wait_for_a_client_and_no_ack_means_error_passive():
    port = SlcanSocketPort(0)
    bus = None
    try:
        assert port.send(0x351, b"\x01") == 0
        assert port.send(0x355, b"\x02") == 1
        for _ in range(40):  # nobody acknowledges: TEC climbs to error-passive and stays
            port.poll()
        assert port.state() == B.STATE_PASSIVE
        c = port.get_counters()
        assert c[0] == 128 and c[5] == 2 and c[4] == 0
        for i in range(6):
            assert port.send(0x360 + i, b"") is not None
        assert port.send(0x370, b"") is None  # 8 buffers busy: refused, never blocks
        bus = open_bus(port.port)
        got = collect(bus, 8, pump=port.poll)
        assert [m.arbitration_id for m in got] == [0x351, 0x355] + [0x360 + i for i in range(6)]
        assert port.get_counters()[0] == 120 and port.state() == B.STATE_WARNING
        assert port.send(0x370, b"\x03") is not None
        got = collect(bus, 1, pump=port.poll)
        assert got[0].arbitration_id == 0x370 and bytes(got[0].data) == b"\x03"
    finally:
        if bus is not None:
            bus.shutdown()
        port.close()


def test_bitrate_mismatch_and_reconnect():
    port = SlcanSocketPort(0, bitrate=500000)
    try:
        bus = open_bus(port.port, bitrate=250000)  # S5: the client sits on another bit rate
        try:
            for _ in range(20):
                port.poll()
            assert port.is_open() and port.client_bitrate == 250000
            port.send(0x351, b"\x01")
            assert collect(bus, 1, timeout=0.5, pump=port.poll) == []
            bus.send(can.Message(arbitration_id=0x305, data=bytes(8), is_extended_id=False))
            for _ in range(20):
                port.poll()
            assert port.recv() is None and port.bad_commands >= 1
        finally:
            bus.shutdown()
        for _ in range(50):
            port.poll()
            if not port.connected():
                break
            time.sleep(0.01)
        assert not port.connected()
        bus = open_bus(port.port, bitrate=500000)  # the right bit rate: the frame goes out
        try:
            got = collect(bus, 1, pump=port.poll)
            assert [m.arbitration_id for m in got] == [0x351]
            bus.send(can.Message(arbitration_id=0x305, data=bytes(8), is_extended_id=False))
            r = None
            end = time.monotonic() + 5
            while r is None and time.monotonic() < end:
                r = port.recv()
                time.sleep(0.005)
            assert r[0] == 0x305 and bytes(r[1]) == bytes(8)
        finally:
            bus.shutdown()
        assert port.connections == 2
    finally:
        port.close()


class RawClient:
    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.buf = b""

    def cmd(self, dev, text, replies=1):
        """Send text (CR appended), pump the device, return the next `replies` reply tokens."""
        self.s.sendall(text.encode() + b"\r")
        out = []
        end = time.monotonic() + 5
        while len(out) < replies and time.monotonic() < end:
            dev.poll()
            self.s.settimeout(0.01)
            try:
                chunk = self.s.recv(4096)
            except socket.timeout:
                chunk = b""
            self.buf += chunk
            while True:
                cut = [i for i in (self.buf.find(b"\r"), self.buf.find(b"\a")) if i >= 0]
                if not cut:
                    break
                i = min(cut)
                out.append(self.buf[: i + 1].decode())
                self.buf = self.buf[i + 1:]
        return out

    def close(self):
        self.s.close()


def test_slcan_commands_from_a_raw_client():
    port = SlcanSocketPort(0)
    cl = RawClient(port.port)
    try:
        assert cl.cmd(port, "V") == ["V1013\r"]
        assert cl.cmd(port, "N") == ["NJKGW\r"]
        assert cl.cmd(port, "t30580000000000000000") == ["\a"]  # channel closed
        assert cl.cmd(port, "S9") == ["\r"] and port.client_bitrate == 83300
        assert cl.cmd(port, "S6") == ["\r"] and port.client_bitrate == 500000
        assert cl.cmd(port, "SX") == ["\a"]
        assert cl.cmd(port, "O") == ["\r"] and port.is_open()
        assert cl.cmd(port, "O") == ["\a"]  # already open
        assert cl.cmd(port, "S5") == ["\a"]  # bit rate only while closed
        assert cl.cmd(port, "t30580000000000000000") == ["z\r"]
        assert cl.cmd(port, "T1FFFFFFF2ABCD") == ["Z\r"]
        assert cl.cmd(port, "r1230") == ["z\r"]
        assert cl.cmd(port, "R000000018") == ["Z\r"]
        for bad in ("t3058000", "t80000", "t12390000000000000000000", "tXYZ0", "t1232GG11",
                    "T2000000000", "d1238", "Y2", "?", "x" * 60):
            assert cl.cmd(port, bad) == ["\a"], bad
        frames = []
        r = port.recv()
        while r is not None:
            frames.append((r[0], r[2], bytes(r[1])))
            r = port.recv()
        assert frames == [
            (0x305, 0, bytes(8)),
            (0x1FFFFFFF, B.FLAG_EXT_ID, b"\xab\xcd"),
            (0x123, B.FLAG_RTR, b""),
            (0x00000001, B.FLAG_EXT_ID | B.FLAG_RTR, bytes(8)),
        ]
        assert cl.cmd(port, "F") == ["F00\r"]
        port.send(0x352, b"\xff")
        assert cl.cmd(port, "C", replies=2) == ["t3521FF\r", "\r"]
        assert not port.is_open()
        assert cl.cmd(port, "X") == ["\r"]
        assert cl.cmd(port, "\n\rV") == ["V1013\r"]  # LF and empty lines: no reply
    finally:
        cl.close()
        port.close()


def test_slcan_timestamps():
    port = SlcanSocketPort(0, ticks_ms=lambda: 61234)  # 61234 % 60000 = 1234 = 0x04D2
    cl = RawClient(port.port)
    try:
        assert cl.cmd(port, "O") == ["\r"]
        assert cl.cmd(port, "Z1") == ["\r"]
        port.send(0x351, b"\x01\x02")
        port.send(0x18FF50E5, b"", B.FLAG_EXT_ID)
        port.send(0x7FF, b"\x00\x00\x00", B.FLAG_RTR)
        assert cl.cmd(port, "Z0", replies=4) == ["t3512010204D2\r", "T18FF50E5004D2\r", "r7FF304D2\r", "\r"]
    finally:
        cl.close()
        port.close()

