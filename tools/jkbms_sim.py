#!/usr/bin/env python3
"""JK-BMS simulator: serves battery states (one JK-BMS, or JK-PB packs on one bus) over TCP or a pty.

Protocols (docs/jk-bms.md):
  jk-pb  JK-PB RS485 Modbus RTU slave (section 4). FC10 write of 0x0000 to
         0x1620 / 0x161E / 0x161C -> the 300-byte JK02_32S 55AA frame (type
         0x02 status / 0x01 settings / 0x03 device info), then the FC10 ACK
         (--pad: 0x00 before and after the ACK, 310 bytes instead of 308).
         FC03 of <= 125 registers inside blocks 0x1200 / 0x1000 / 0x1400 ->
         the same data big-endian per field, block offset = frame offset - 6
         (registers are byte offsets). FC03 elsewhere -> exception 02; any
         other write -> exception 02 (FC10) or 01 (other functions) and
         nothing changes. Wrong slave address or bad CRC -> silence.
  jk-nw  the older "4E 57" protocol (section 3): the read-all request (any
         source byte, checksum checked) -> a full read-all response.

The state is a JSON object in the schema of tools/jk_decode.py's output
(cell_voltages_v, battery_current_a, soc_percent, t1_c, ...), optionally with
the BMS settings (cell_ovp_v, cell_uvp_v, max_charge_current_a, ...) and
device-info fields (model, sw_version, ...), read by the tools' one state
loader (tools/state_json.py): one JSON object, or JSON Lines whose objects
are merged into one state (later values win; jk_decode output of a cell-info
+ settings frame pair works as is). Missing values get defaults: a 16S LFP pack of
280 Ah (tools/jkframe_build.py SAMPLE_STATE), OVP 3.65 / OVPR 3.45 / UVP 2.70 /
UVPR 2.90 V, 150 A charge / 200 A discharge.

Several JK-PB packs on one bus (--pack S1.json --pack S2.json ...,
repeatable, instead of --state / --address): the k-th --pack answers at
address k with its own state (its own cell count and capacity are just its
state file), drift and faults; only the addressed pack answers, a request to
an address without a pack gets silence, as on a real bus. One TCP connection
(or the pty) is one RS485 bus.

A JK bank with its own bus master (--bus-master, docs/jk-bms.md "JK-PB"): the
first --pack (or --state) is the master at address 0, the next packs are
slaves at 1, 2, ... The master talks on its own schedule; every
--master-period-s (default 4.4 s) it sends its status frame (55AA type 0x02)
followed by an ACK-shaped frame of address 0 (00 10 16 20 00 01 crc), its
settings frame (0x01) + 00 10 16 1E 00 01 crc, then asks each slave for
0x1620 and 0x161E (frame + ACK from the slave), one request every 0.1 s, and
probes one address without a pack (nobody answers). The gateway must only
listen: whatever it sends is counted, never answered (and logged with
--verbose). Each TCP connection is a bus of its own, its master starting at
the connect.

Replies come after a random 10-40 ms (--delay-ms). Faults (--fault
NAME@SECONDS[:DURATION[:ADDRESS]], e.g. bms-silent@8:5 = silent from 8 s to
13 s after start; bms-silent@8:5:2 = only the pack at address 2;
bms-silent@8::2 = the pack at 2 from 8 s to the end; repeatable; without a
duration the fault lasts to the end, without an address it hits every pack;
with --bus-master address 0 is the master's own broadcasts):
  bms-silent   no replies at all
  bms-garbage  random bytes, or the reply with a broken CRC / 55AA / 4E57
               checksum, instead of each reply (alternating), plus bursts of
               random noise between frames
  bms-slow     replies after --slow-s seconds (default 1.5, beyond a typical
               timeout; with --bus-master the master waits, its schedule slips)
  bms-partial  replies cut short (a 55AA frame is cut inside its 300 bytes)

On start one line goes to stdout: "LISTEN tcp 127.0.0.1:PORT" or
"LISTEN pty /dev/pts/N". Runs until SIGINT / SIGTERM or --duration.

Python use (tests, tools/simulate.py):
  sim = JkBmsSim(state, protocol="jk-pb").start()   # sim.port / sim.pty_path
  sim.set_state({"soc_percent": 40}); sim.add_fault("bms-silent", duration=2)
  sim.stop()
  JkBmsSim(packs=[s1, s2, s3])          # packs at 1, 2, 3 (or {address: state})
  JkBmsSim(packs=[m, s1], bus_master=True, master_period_s=1.0)   # 0 and 1
  sim.set_state({...}, address=2); sim.get_state(address=2)
  sim.add_fault("bms-silent", at=8, duration=5, address=2)
  sim.foreign_rx_bytes                  # bus master: bytes the gateway sent
  (with several packs, methods about one pack need address=)
  JkBmsSim(..., on_reply=fn): fn(time.monotonic(), request, reply) after each
  reply has been sent in full (tools/bench_sim.py times data age with it)
  JkBmsSim(..., on_frame=fn): fn(time.monotonic(), address, frame_type) after
  each intact 55AA frame (+ its ACK) went out, a reply or a master broadcast
"""

import argparse
import math
import os
import random
import select
import signal
import socket
import struct
import sys
import threading
import time
import tty

# run as `python tools/X.py`: the repository root (for the tools package) and
# firmware/lib (the firmware's own code) on sys.path
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for _p in (os.path.join(_ROOT, "firmware", "lib"), _ROOT):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from jkbms import pb_modbus  # noqa: E402
from modbus import crc as _crc  # noqa: E402
from tools import cli, state_json  # noqa: E402
from tools import jkframe_build as B  # noqa: E402

PROTOCOLS = ("jk-pb", "jk-nw")
FAULT_SILENT = "bms-silent"
FAULT_GARBAGE = "bms-garbage"
FAULT_SLOW = "bms-slow"
FAULT_PARTIAL = "bms-partial"
FAULTS = (FAULT_SILENT, FAULT_GARBAGE, FAULT_SLOW, FAULT_PARTIAL)

FRAME_LEN = 300
# FC10 trigger register -> 55AA frame type
TRIGGERS = {0x1620: 0x02, 0x161E: 0x01, 0x161C: 0x03}
# FC03 register block base -> 55AA frame type it mirrors
BLOCKS = {0x1200: 0x02, 0x1000: 0x01, 0x1400: 0x03}
# bytes readable per block: the frame's data bytes 6..298 (+1 pad byte)
BLOCK_BYTES = 294

FC_READ = 0x03
FC_WRITE_MULTIPLE = 0x10
EXC_FUNCTION = 1
EXC_ADDRESS = 2
EXC_VALUE = 3

# Multi-byte fields per block, (block offset, size): byte-swapped from the
# little-endian 55AA frame into the big-endian register image. Bytes outside
# these (single bytes, "u8/u8" pairs, ASCII text) are copied as they are.
# docs/jk-bms.md "JK-PB" (and docs/jk-bms.md "55AA frames" for the frame side).
STATUS_FIELDS = tuple(
    [(2 * i, 2) for i in range(32)]                        # CellVol0..31
    + [(64, 4), (68, 2), (70, 2)]                          # CellSta, CellVolAve, CellVdifMax
    + [(74 + 2 * i, 2) for i in range(32)]                 # CellWireRes0..31
    + [(138, 2), (140, 4), (144, 4), (148, 4), (152, 4),   # TempMos, WireResSta, BatVol, BatWatt, BatCurrent
       (156, 2), (158, 2), (160, 4), (164, 2),             # TempBat1/2, alarms, BalanCurrent
       (168, 4), (172, 4), (176, 4), (180, 4),             # remaining, full, cycles, cycle capacity
       (186, 2), (188, 4), (194, 2)]                       # UserAlarm, RunTime, UserAlarm2
    + [(196 + 2 * i, 2) for i in range(6)]                 # protection release countdowns
    + [(210, 2), (212, 2), (214, 2), (216, 2), (218, 2),   # reserved, emergency, corrections, sensor mV
       (220, 4), (224, 2), (226, 2), (228, 2), (230, 2),   # BatVolCorrect (f32), PWM duties, BatVol 10 mV, heater
       (240, 4), (244, 4), (248, 2), (250, 2), (252, 2),   # ticks, PVD, TempBat3/4/5
       (256, 4), (260, 4), (264, 4), (272, 2)])            # RTC, log count, sleep timer, charge-stage timer
SETTINGS_FIELDS = tuple(
    [(4 * k, 4) for k in range(34)]                        # 0x1000..0x1084: u32 / i32 settings
    + [(136 + 4 * i, 4) for i in range(32)]                # CellConWireRes0..31
    + [(264, 4), (268, 4), (276, 2)])                      # DevAddr, precharge time, control bits
ABOUT_FIELDS = ((32, 4), (36, 4), (180, 4), (196, 4)) + tuple((232 + 4 * i, 4) for i in range(7)) + ((256, 4),)
FIELDS_BY_TYPE = {0x02: STATUS_FIELDS, 0x01: SETTINGS_FIELDS, 0x03: ABOUT_FIELDS}

DEFAULT_SETTINGS = {
    "cell_ovp_v": 3.65, "cell_ovpr_v": 3.45, "cell_uvp_v": 2.70, "cell_uvpr_v": 2.90,
    "rcv_v": 3.45, "rfv_v": 3.375, "power_off_v": 2.60,
    "max_charge_current_a": 150.0, "max_discharge_current_a": 200.0,
    "charge_switch": True, "discharge_switch": True,
}
_INT_KEYS = ("soc_percent", "soh_percent", "cycle_count", "error_bitmask", "total_runtime_s", "balance_status",
             "cell_count", "power_on_count", "uptime_s", "device_address", "battery_type", "nw_warnings")
# keys of a jk_decode object that describe the frame, not the battery
_NOT_STATE = ("protocol", "layout", "frame_type", "frame_counter", "crc_ok", "raw_frame_hex", "ack",
              "confirmation", "command", "frame_source", "transport_type", "_snapshot")


# ------------------------------------------------------------------ helpers

def crc16(data):
    """CRC-16/MODBUS of data (the firmware's modbus.crc), as an int."""
    return _crc.crc16(data, 0, len(data))


def with_crc(body):
    buf = bytearray(body) + b"\x00\x00"
    _crc.put_crc(buf, len(body))
    return bytes(buf)


def crc_ok(frame):
    return _crc.crc_ok(frame, 0, len(frame))


def trigger_request(address, register):
    """The FC10 trigger request (the firmware's own builder)."""
    buf = bytearray(16)
    return bytes(buf[:pb_modbus.build_trigger(buf, address, register)])


def trigger_ack(address, register):
    """The FC10 ACK `addr 10 reg 00 01 crc` (address 0: the bus master's)."""
    return with_crc(bytes((address, FC_WRITE_MULTIPLE)) + struct.pack(">HH", register, 1))


def register_image(frame):
    """The JK-PB FC03 register block holding a 55AA frame's data: block
    offset = frame offset - 6, every multi-byte field big-endian."""
    img = bytearray(frame[6:FRAME_LEN - 1]) + bytes(BLOCK_BYTES - (FRAME_LEN - 7))
    for off, size in FIELDS_BY_TYPE[frame[4]]:
        img[off:off + size] = frame[6 + off:6 + off + size][::-1]
    return bytes(img)


def nw_checksum_ok(frame):
    s = sum(frame[:-4]) & 0xFFFF
    return frame[-4] == 0 and frame[-3] == 0 and ((frame[-2] << 8) | frame[-1]) == s


FAULT_FORMAT = "NAME@SECONDS[:DURATION]"
PACK_FAULT_FORMAT = "NAME@SECONDS[:DURATION[:ADDRESS]]"


def parse_pack_fault(text, names=FAULTS):
    """'NAME@SECONDS[:DURATION[:ADDRESS]]' -> (name, at, duration or None,
    address or None); NAME one of names. An empty DURATION (NAME@8::2) lasts
    to the end; without ADDRESS the fault applies to every pack. ValueError
    with a one-line reason."""
    return _parse_fault(text, names, True)


def parse_fault(text, names=FAULTS):
    """'NAME@SECONDS[:DURATION]' -> (name, at, duration or None): a fault
    without a pack selector (parse_pack_fault takes one)."""
    return _parse_fault(text, names, False)[:3]


def _parse_fault(text, names, selector):
    name, sep, when = text.partition("@")
    if name not in names:
        raise ValueError("unknown fault %r (one of %s)" % (name, ", ".join(names)))
    at, duration, address = 0.0, None, None
    if sep:
        parts = when.split(":")
        try:
            if len(parts) > (3 if selector else 2):
                raise ValueError
            at = float(parts[0])
            if len(parts) == 2 or (len(parts) == 3 and parts[1]):
                duration = float(parts[1])
            if len(parts) == 3:
                address = int(parts[2])
        except ValueError:
            if not selector:
                raise ValueError("bad fault %r: the format is %s (seconds after start), e.g. %s@8:5"
                                 % (text, FAULT_FORMAT, name)) from None
            raise ValueError("bad fault %r: the format is %s (every pack) or NAME@SECONDS:[DURATION]:ADDRESS "
                             "(one pack; no DURATION: to the end), seconds after start, e.g. %s@8:5, %s@8:5:2 "
                             "or %s@8::2" % (text, FAULT_FORMAT, name, name, name)) from None
    if not (0 <= at < float("inf")) or (duration is not None and not 0 < duration < float("inf")):
        raise ValueError("fault time must be >= 0 and its duration > 0: %r" % text)
    if address is not None and not 0 <= address <= 247:
        raise ValueError("fault %r: the pack address must be 0..247" % text)
    return name, at, duration, address


def _check_state(s):
    cells = s.get("cell_voltages_v")
    if not isinstance(cells, list) or not 1 <= len(cells) <= 32:
        raise ValueError("cell_voltages_v must be a list of 1..32 voltages")
    for v in cells:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 5.0:
            raise ValueError("bad cell voltage %r" % (v,))
    for key, lo, hi in (("soc_percent", 0, 100), ("soh_percent", 0, 100)):
        v = s.get(key)
        if v is not None and not (isinstance(v, (int, float)) and lo <= v <= hi):
            raise ValueError("%s must be %d..%d" % (key, lo, hi))


# ---------------------------------------------------------- request framing

class _RequestStream:
    """Requests out of a byte stream; a subclass's _scan(gap) cuts them out
    (gap: the line has been idle for gap_s, so partial data is stale)."""

    def __init__(self, gap_s):
        self.buf = bytearray()
        self.gap_s = gap_s
        self.last = 0.0
        self.dropped = 0

    def feed(self, data, now):
        self.buf += data
        self.last = now
        return self._scan(False)

    def idle(self, now):
        if self.buf and now - self.last >= self.gap_s:
            return self._scan(True)
        return []

    def _drop(self, k):
        del self.buf[:k]
        self.dropped += k


class _RtuRequests(_RequestStream):
    """Modbus RTU requests out of a byte stream: by structure (FC01-06 are 8
    bytes, FC0F / FC10 9 + byte count) and CRC; other functions, and stale
    partial frames, are judged after an idle gap."""


    @staticmethod
    def _length(b):
        if len(b) < 2:
            return 0
        fc = b[1]
        if 1 <= fc <= 6:
            return 8
        if fc in (0x0F, 0x10):
            return 9 + b[6] if len(b) >= 7 else 0
        return None


    def _scan(self, gap):
        out = []
        b = self.buf
        while b:
            n = self._length(b)
            if n is None:
                if not gap:
                    break
                if crc_ok(b):
                    out.append(bytes(b))
                    b.clear()
                else:
                    self._drop(1)
            elif n == 0 or len(b) < n:
                if not gap:
                    break
                self._drop(1)
            elif crc_ok(b[:n]):
                out.append(bytes(b[:n]))
                del b[:n]
            else:
                self._drop(1)
        return out


class _NwRequests(_RequestStream):
    """4E 57 frames out of a byte stream: header, length, 0x68 marker, sum."""



    def _scan(self, gap):
        out = []
        b = self.buf
        while b:
            if b[0] != 0x4E:
                k = b.find(b"\x4e")
                self._drop(len(b) if k < 0 else k)
                continue
            if len(b) < 4:
                if not gap:
                    break
                self._drop(1)
                continue
            total = ((b[2] << 8) | b[3]) + 2
            if b[1] != 0x57 or not 21 <= total <= 512:
                self._drop(1)
                continue
            if len(b) < total:
                if not gap:
                    break
                self._drop(1)
                continue
            f = bytes(b[:total])
            if f[total - 5] == 0x68 and nw_checksum_ok(f):
                out.append(f)
                del b[:total]
            else:
                self._drop(1)
        return out


# ------------------------------------------------------------------- links

class _TcpLink:
    def __init__(self, sock):
        self.sock = sock
        self.last_tx = time.monotonic()  # when we last sent (noise waits for a quiet line)
        sock.settimeout(2.0)
        self.closed = False
        self._done = False
        self._lock = threading.Lock()

    def recv(self, timeout):
        """Bytes received (b"" after timeout), or None once closed."""
        if self.closed:
            return None
        try:
            r, _, _ = select.select([self.sock], [], [], timeout)
            if not r:
                return b""
            data = self.sock.recv(4096)
        except (OSError, ValueError):  # closed under our feet by stop()
            data = b""
        if not data:
            self.closed = True
            return None
        return data

    def send(self, data):
        if self.closed:
            return
        try:
            self.sock.sendall(data)
        except (OSError, ValueError):
            self.closed = True

    def close(self):
        with self._lock:
            if self._done:
                return
            self._done = True
            self.closed = True
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.sock.close()


class _PtyLink:
    def __init__(self, master_fd):
        self.fd = master_fd
        self.closed = False
        self.last_tx = time.monotonic()

    def recv(self, timeout):
        if self.closed:
            return None
        try:
            r, _, _ = select.select([self.fd], [], [], timeout)
            if not r:
                return b""
            return os.read(self.fd, 4096)
        except BlockingIOError:
            return b""
        except OSError:  # EIO: no slave end open (we keep one, so rare)
            time.sleep(timeout)
            return b""

    def send(self, data):
        view = memoryview(data)
        deadline = time.monotonic() + 0.2
        while view and not self.closed and time.monotonic() < deadline:
            try:
                k = os.write(self.fd, view)
                view = view[k:]
            except BlockingIOError:
                time.sleep(0.005)  # nobody reads the slave end: drop after 0.2 s
            except OSError:
                return

    def close(self):
        self.closed = True


# --------------------------------------------------------------- simulator

class _Pack:
    """One pack on the bus: its address, the state set for it, its frame
    counter and the time its drift starts from (guarded by JkBmsSim's lock)."""

    def __init__(self, address):
        self.address = address
        self.user = {}
        self.drift_t0 = 0.0
        self.counter = 0
        self.replies = 0


HEADER = b"\x55\xaa\xeb\x90"
MASTER_ADDRESS = 0  # a JK-PB with DIP address 0 is the bus master (docs/jk-bms.md "JK-PB")
BANK_ADDRESSES = range(0, 16)  # DIP switches: the master at 0, slaves at 1..15


class JkBmsSim:
    """A simulated JK-BMS, or several JK-PB packs on one RS485 bus (packs=),
    or a JK-PB bank whose pack at address 0 is the bus master (bus_master=).
    start() / stop() (or use it as a context manager); everything else is
    thread-safe and may be called while it runs. Methods that concern one
    pack take address= (None: the only pack; an error with several)."""

    def __init__(self, state=None, protocol="jk-pb", address=None, transport="tcp", host="127.0.0.1", port=0,
                 delay_ms=(10, 40), slow_delay_s=1.5, pad=False, echo=False, baud=0, drift=False,
                 seed=None, faults=(), pty_link=None, gap_ms=30, noise_interval_s=0.15, log=None,
                 on_reply=None, packs=None, bus_master=False, master_period_s=4.4, master_gap_s=0.1,
                 on_frame=None):
        if protocol not in PROTOCOLS:
            raise ValueError("protocol must be one of %s" % ", ".join(PROTOCOLS))
        if transport not in ("tcp", "pty"):
            raise ValueError("transport must be tcp or pty")
        states = self._pack_states(state, address, packs, bus_master)
        if (len(states) > 1 or bus_master) and protocol != "jk-pb":
            raise ValueError("several packs on a bus and the bus master: protocol jk-pb only")
        if bus_master and echo:
            raise ValueError("echo: with a bus master the gateway only listens, there is nothing to echo")
        if not 0 < master_period_s < float("inf") or not 0 <= master_gap_s < float("inf"):
            raise ValueError("master_period_s must be > 0 and master_gap_s >= 0")
        self.protocol = protocol
        self.addresses = tuple(sorted(states))
        self.address = self.addresses[0]  # the first pack (the only one unless packs=)
        self.bus_master = bool(bus_master)
        self.master_period_s = float(master_period_s)
        self.master_gap_s = float(master_gap_s)
        self.foreign_rx_bytes = 0  # bytes the gateway sent while the bus master talks (it must not)
        self.transport = transport
        self.host = host
        self.port = port
        self.pty_path = None
        self.pty_link = pty_link
        lo, hi = (delay_ms, delay_ms) if isinstance(delay_ms, (int, float)) else delay_ms
        if not 0 <= lo <= hi:
            raise ValueError("delay_ms: need 0 <= min <= max")
        self.delay_s = (lo / 1000.0, hi / 1000.0)
        self.slow_delay_s = slow_delay_s
        self.pad = pad
        self.echo = echo
        self.baud = baud
        self.drift = drift
        self.gap_s = gap_ms / 1000.0
        self.noise_interval_s = noise_interval_s
        self._log = log
        self.on_reply = on_reply
        self.on_frame = on_frame
        self._rng = random.Random(seed)
        self._noise_rng = random.Random(None if seed is None else seed + 1)
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._threads = []
        self._links = []
        self._listener = None
        self._pty_fds = ()
        self._t0 = None
        self._garble_n = 0
        self._faults = []  # [name, start (s after start()), end or None, address or None (= every pack)]
        self._packs = {}
        for a in self.addresses:
            self._packs[a] = _Pack(a)
        self.stats = {"requests": 0, "replies": 0, "ignored": 0, "exceptions": 0, "suppressed": 0,
                      "garbled": 0, "truncated": 0, "slowed": 0, "noise": 0, "connections": 0,
                      "broadcasts": 0, "master_requests": 0}
        for a in self.addresses:
            try:
                self.set_state(states[a] or {}, replace=True, address=a)
            except ValueError as e:
                raise ValueError("pack at address %d: %s" % (a, e) if len(states) > 1 else str(e)) from None
        for f in faults:
            self.add_fault(*(parse_pack_fault(f) if isinstance(f, str) else f))

    @staticmethod
    def _pack_states(state, address, packs, bus_master):
        """{address: state} from the constructor's state / address / packs."""
        if packs is None:
            if bus_master:
                if address not in (None, MASTER_ADDRESS):
                    raise ValueError("bus_master: the master is at address 0")
                return {MASTER_ADDRESS: state}
            address = 1 if address is None else address
            if not 1 <= address <= 247:
                raise ValueError("slave address must be 1..247")
            return {address: state}
        if state is not None or address is not None:
            raise ValueError("packs= replaces state= and address=")
        if isinstance(packs, dict):
            states = dict(packs)
        else:  # pack k (1-based) at address k; with a bus master the first at 0
            first = MASTER_ADDRESS if bus_master else 1
            states = {}
            for k, s in enumerate(packs):
                states[first + k] = s
        if not states:
            raise ValueError("packs: at least one pack")
        for a in states:
            if isinstance(a, bool) or not isinstance(a, int):
                raise ValueError("pack address %r is not an integer" % (a,))
        if bus_master:
            if MASTER_ADDRESS not in states or not all(a in BANK_ADDRESSES for a in states):
                raise ValueError("bus_master: at most 16 packs, the master at address 0 and slaves at 1..15")
        elif not all(1 <= a <= 247 for a in states):
            raise ValueError("pack addresses must be 1..247")
        return states

    def _pack(self, address):
        if address is None:
            if len(self._packs) > 1:
                raise ValueError("%d packs on the bus: say which one (address=)" % len(self._packs))
            return self._packs[self.address]
        p = self._packs.get(address)
        if p is None:
            raise ValueError("no pack at address %r (packs at %s)" % (address, ", ".join(map(str, self.addresses))))
        return p

    # ---------------------------------------------------------- state
    def set_state(self, state, replace=False, address=None):
        """Merge state (schema of tools/jk_decode.py, plus settings and
        device-info keys) into the state the pack at address serves, or
        replace it. Values nobody set fall back to the defaults. Raises
        ValueError."""
        with self._lock:
            pack = self._pack(address)
            user = {} if replace else dict(pack.user)
            for k, v in state.items():
                if k not in _NOT_STATE:
                    user[k] = v
            eff = self._effective(user)
            _check_state(eff)
            pack.user = user
            pack.drift_t0 = self.elapsed()

    @staticmethod
    def _effective(user):
        s = dict(B.SAMPLE_STATE)
        if "cell_voltages_v" in user and "battery_voltage_v" not in user:
            s.pop("battery_voltage_v", None)
        s.update(DEFAULT_SETTINGS)
        s["cell_count"] = len(user.get("cell_voltages_v", s["cell_voltages_v"]))
        s.update(user)
        if s.get("design_capacity_ah") is None:
            s["design_capacity_ah"] = s.get("nominal_capacity_ah", 0.0)
        for key in _INT_KEYS:  # JSON may carry 57.0 where the frames need an integer
            v = s.get(key)
            if isinstance(v, float):
                s[key] = int(round(v))
        s.setdefault("uptime_s", int(s.get("total_runtime_s", 0)))
        s["device_address"] = s.get("device_address", 1)
        return s

    def get_state(self, address=None):
        """The state a pack serves right now (defaults filled in, drift applied)."""
        with self._lock:
            pack = self._pack(address)
            s = self._effective(pack.user)
            s["device_address"] = pack.address
            if self.drift:
                self._apply_drift(s, self.elapsed() - pack.drift_t0)
            return s

    @staticmethod
    def _apply_drift(s, t):
        """Current swings +-10 A around its value (period 60 s); the charge it
        moves counts 60 times (one simulated minute per second), so SOC and
        remaining capacity move visibly; cells follow the change of SOC (1 mV / %)
        and of the current (0.5 mOhm). At t = 0 the state is served as given."""
        i0 = float(s.get("battery_current_a", 0.0))
        amp, period, speed = 10.0, 60.0, 60.0
        w = 2 * math.pi / period
        current = i0 + amp * math.sin(w * t)
        full = float(s.get("nominal_capacity_ah") or 0.0)
        rem0 = float(s.get("remaining_capacity_ah", 0.0))
        ah = speed * (i0 * t + amp * (1 - math.cos(w * t)) / w) / 3600.0
        rem = min(max(rem0 + ah, 0.0), full) if full else rem0
        soc0 = int(s.get("soc_percent", 50))
        soc = int(round(100 * rem / full)) if full else soc0
        lo, hi = float(s["cell_uvp_v"]), float(s["cell_ovp_v"])
        s["cell_voltages_v"] = [round(min(max(v + 0.001 * (soc - soc0) + 0.0005 * (current - i0), lo), hi), 3)
                                for v in s["cell_voltages_v"]]
        s.pop("battery_voltage_v", None)
        s["battery_current_a"] = round(current, 3)
        s["remaining_capacity_ah"] = round(rem, 3)
        s["soc_percent"] = min(max(soc, 0), 100)
        s["total_runtime_s"] = int(s.get("total_runtime_s", 0)) + int(t)

    # ---------------------------------------------------------- frames
    def frame(self, ftype, counter=None, address=None):
        """A pack's current 55AA frame of type 0x02 (status), 0x01 (settings)
        or 0x03 (device info), checksummed."""
        with self._lock:
            pack = self._pack(address)
            s = self.get_state(pack.address)
            if counter is None:
                pack.counter = (pack.counter + 1) & 0xFF
                counter = pack.counter
        if ftype == 0x02:
            return B.cell_info_32s(s, extra=True, counter=counter)
        if ftype == 0x01:
            return B.settings_32s(s, extra=True, counter=counter)
        if ftype == 0x03:
            return B.device_info_32s(s, counter=counter)
        raise ValueError("frame type must be 1, 2 or 3")

    def image(self, base, address=None):
        """A pack's current FC03 register block at base 0x1200 / 0x1000 / 0x1400."""
        return register_image(self.frame(BLOCKS[base], counter=0, address=address))

    def nw_response(self):
        """The current 4E 57 read-all response."""
        return B.response_4e57(self.get_state())

    def replies(self, address=None):
        """How many replies (and, with a bus master, broadcasts) a pack sent."""
        with self._lock:
            return self._pack(address).replies

    # ---------------------------------------------------------- faults
    def elapsed(self):
        return 0.0 if self._t0 is None else time.monotonic() - self._t0

    def add_fault(self, name, at=None, duration=None, address=None):
        """Schedule a fault at `at` seconds after start() (None = now) for
        `duration` seconds (None = to the end), for the pack at address
        (None = every pack)."""
        if name not in FAULTS:
            raise ValueError("unknown fault %r" % name)
        with self._lock:
            if address is not None:
                try:
                    self._pack(address)
                except ValueError as e:
                    raise ValueError("fault %s: %s" % (name, e)) from None
            start = self.elapsed() if at is None else float(at)
            self._faults.append([name, start, None if duration is None else start + duration, address])

    def clear_faults(self, name=None, address=None):
        """End all faults (or all of one name; or only those given for the
        pack at address), including scheduled ones."""
        with self._lock:
            self._faults = [f for f in self._faults
                            if not ((name is None or f[0] == name) and (address is None or f[3] == address))]

    def active_faults(self, address=None):
        """The faults active now for the pack at address (those for every
        pack and its own), or with address None for any pack."""
        with self._lock:
            if self._t0 is None:
                return set()
            t = self.elapsed()
            return {n for n, a, e, sel in self._faults if a <= t and (e is None or t < e)
                    and (address is None or sel is None or sel == address)}

    # ---------------------------------------------------------- replies
    def reply_to(self, request):
        """The fault-free reply bytes to one complete request, or None for
        silence (no pack at that address, or not a request we answer)."""
        if self.protocol == "jk-nw":
            return self._reply_nw(request)
        if len(request) < 4 or request[0] == MASTER_ADDRESS:
            return None  # a broadcast (or, with a bus master, the master itself): nobody answers
        pack = self._packs.get(request[0])
        if pack is None:
            return None  # another slave: stay silent
        return self._reply_pb(pack.address, request)

    def _exception(self, address, fc, code):
        self.stats["exceptions"] += 1
        return with_crc(bytes((address, fc | 0x80, code)))

    def _trigger_reply(self, address, reg):
        """55AA frame + FC10 ACK (0x00 around the ACK with pad)."""
        ack = trigger_ack(address, reg)
        frame = self.frame(TRIGGERS[reg], address=address)
        return frame + (b"\x00" + ack + b"\x00" if self.pad else ack)

    def _reply_pb(self, address, req):
        fc = req[1]
        if fc == FC_READ and len(req) == 8:
            reg, count = struct.unpack_from(">HH", req, 2)
            if not 1 <= count <= 125:
                return self._exception(address, fc, EXC_VALUE)
            for base in BLOCKS:
                off = reg - base
                if 0 <= off and off + 2 * count <= BLOCK_BYTES:
                    data = self.image(base, address)[off:off + 2 * count]
                    return with_crc(bytes((address, fc, 2 * count)) + data)
            return self._exception(address, fc, EXC_ADDRESS)
        if fc == FC_WRITE_MULTIPLE and len(req) >= 9:
            reg, count = struct.unpack_from(">HH", req, 2)
            if not 1 <= count <= 123 or req[6] != 2 * count or len(req) != 9 + req[6]:
                return self._exception(address, fc, EXC_VALUE)
            if reg in TRIGGERS and count == 1 and req[7] == 0 and req[8] == 0:
                return self._trigger_reply(address, reg)
            return self._exception(address, fc, EXC_ADDRESS)  # refused: nothing is written
        return self._exception(address, fc, EXC_FUNCTION)

    def _reply_nw(self, req):
        # read all: command 0x06, transport type 0 (request), register 0x00
        if len(req) < 21 or req[8] != 0x06 or req[10] != 0x00 or req[11] != 0x00:
            return None
        return self.nw_response()

    def _garble(self, reply):
        self._garble_n += 1
        rng = self._rng
        if self._garble_n % 2 == 1:  # random bytes of about the reply's length
            return bytes(rng.randrange(256) for _ in range(max(4, len(reply) + rng.randint(-4, 4))))
        b = bytearray(reply)
        if b[:4] == b"\x55\xaa\xeb\x90":  # 55AA checksum and ACK CRC both broken
            i = rng.randrange(6, FRAME_LEN - 1)
            b[i] ^= 1 << rng.randrange(8)
            b[-1 if not self.pad else -2] ^= 0xA5
        elif b[:2] == b"\x4e\x57":
            b[-1] ^= 0x5A  # 16-bit sum broken
        else:
            b[-1] ^= 0xA5  # Modbus CRC broken
        return bytes(b)

    def _truncate(self, reply):
        if reply[:4] == b"\x55\xaa\xeb\x90":
            return reply[:self._rng.randint(8, FRAME_LEN - 1)]
        return reply[:self._rng.randint(1, len(reply) - 1)]

    def _apply_faults(self, address, reply, delay):
        """What the faults active for the pack at address make of a reply
        (None = silence) that would go out after delay s: (reply, delay,
        faults, intact). Call with the lock held."""
        faults = self.active_faults(address)
        intact = False
        if reply is None:
            return None, 0.0, faults, False
        if FAULT_SILENT in faults:
            self.stats["suppressed"] += 1
            reply = None
        elif FAULT_GARBAGE in faults:
            self.stats["garbled"] += 1
            reply = self._garble(reply)
        elif FAULT_PARTIAL in faults:
            self.stats["truncated"] += 1
            reply = self._truncate(reply)
        else:
            intact = True
        if FAULT_SLOW in faults and reply is not None:
            self.stats["slowed"] += 1
            delay = self.slow_delay_s
        return reply, delay, faults, intact

    def _handle(self, link, req):
        address = self.address if self.protocol == "jk-nw" else req[0]
        with self._lock:
            self.stats["requests"] += 1
            reply = self.reply_to(req)
            if reply is None:
                self.stats["ignored"] += 1
            reply, delay, faults, intact = self._apply_faults(address, reply, self._rng.uniform(*self.delay_s))
        self._say("request %s -> %s (faults: %s)" % (req.hex(), "silence" if reply is None else
                                                     "%d bytes after %.0f ms" % (len(reply), delay * 1000),
                                                     ",".join(sorted(faults)) or "none"))
        if self.echo:
            link.send(req)
        self._deliver(link, address, req, reply, delay, intact)
        link.last_tx = time.monotonic()

    def _deliver(self, link, address, req, reply, delay, intact, stat="replies"):
        """Send a reply (req None: a broadcast of the bus master) after delay
        s; then on_reply and, for an intact 55AA frame, on_frame."""
        if reply is None:
            return
        if delay > 0 and self._stop.wait(delay):
            return
        with self._lock:  # counted before sending: a client that saw the reply sees the count
            self.stats[stat] += 1
            pack = self._packs.get(address)
            if pack is not None:
                pack.replies += 1
        self._send(link, reply)
        now = time.monotonic()
        if self.on_reply is not None and req is not None:
            self.on_reply(now, req, reply)
        if self.on_frame is not None and intact and reply[:4] == HEADER:
            self.on_frame(now, address, reply[4])

    def _send(self, link, data):
        link.last_tx = time.monotonic()
        if self.baud <= 0:
            link.send(data)
            return
        chunk = 32
        for i in range(0, len(data), chunk):
            part = data[i:i + chunk]
            link.send(part)
            if self._stop.wait(len(part) * 10.0 / self.baud):
                return
        link.last_tx = time.monotonic()

    # ---------------------------------------------------------- the bus master
    def master_steps(self, period):
        """What the bus master does in its period number `period` (0, 1, ...):
        (address, trigger register) pairs, master_gap_s apart. Address 0 is
        its own broadcast (55AA frame + an ACK-shaped frame of address 0),
        any other a trigger request, answered by the pack there; one absent
        address per period is probed (nobody answers). docs/jk-bms.md "JK-PB"."""
        steps = [(MASTER_ADDRESS, 0x1620), (MASTER_ADDRESS, 0x161E)]
        for a in self.addresses:
            if a != MASTER_ADDRESS:
                steps += [(a, 0x1620), (a, 0x161E)]
        absent = [a for a in BANK_ADDRESSES if a != MASTER_ADDRESS and a not in self._packs]
        if absent:
            steps.append((absent[period % len(absent)], 0x1620))
        return steps

    def _master_step(self, link, address, reg):
        with self._lock:
            if address == MASTER_ADDRESS:
                req = None
                reply, delay, faults, intact = self._apply_faults(address, self._trigger_reply(address, reg), 0.0)
            else:
                req = trigger_request(address, reg)
                self.stats["master_requests"] += 1
        if req is not None:
            self._send(link, req)
            with self._lock:
                reply, delay, faults, intact = self._apply_faults(address, self.reply_to(req),
                                                                  self._rng.uniform(*self.delay_s))
        if self._log is not None:
            what = "broadcast 0x%02x" % TRIGGERS[reg] if req is None else "-> %d 0x%04x" % (address, reg)
            self._say("master %s: %s (faults: %s)" % (what, "silence" if reply is None else
                                                      "%d bytes after %.0f ms" % (len(reply), delay * 1000),
                                                      ",".join(sorted(faults)) or "none"))
        self._deliver(link, address, req, reply, delay, intact, "replies" if req is not None else "broadcasts")

    def _listen(self, link, until):
        """Until `until`: count (and do not answer) what the gateway sends,
        put noise on the line under bms-garbage. False once closed / stopped."""
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= until:
                return True
            data = link.recv(min(0.01, until - now))
            if data is None:
                return False
            if data:
                with self._lock:
                    self.foreign_rx_bytes += len(data)
                self._say("received %d byte(s) from the gateway, not answered: with a bus master it must "
                          "never transmit: %s" % (len(data), data.hex()))
            self._noise(link, time.monotonic())
        return False

    def _serve_master(self, link):
        period = 0
        t_next = time.monotonic()
        while self._listen(link, t_next):
            t_period = t_next
            t_step = time.monotonic()
            for address, reg in self.master_steps(period):
                if not self._listen(link, t_step):
                    return
                t0 = time.monotonic()
                self._master_step(link, address, reg)
                t_step = max(t0 + self.master_gap_s, time.monotonic())
            period += 1
            # the schedule slips (no catching up) when a period's steps took longer than the period
            t_next = max(t_period + self.master_period_s, time.monotonic())

    # ---------------------------------------------------------- serving
    def _say(self, msg):
        if self._log is not None:
            self._log("jkbms_sim: " + msg)

    def _noise(self, link, now):
        """Random bytes between frames while bms-garbage is active (any pack)."""
        if now - link.last_tx >= self.noise_interval_s and FAULT_GARBAGE in self.active_faults():
            rng = self._noise_rng
            noise = bytes(rng.randrange(256) for _ in range(rng.randint(1, 24)))
            link.send(noise)
            with self._lock:
                self.stats["noise"] += len(noise)
            link.last_tx = now

    def _serve(self, link):
        try:
            if self.bus_master:
                self._serve_master(link)
                return
            parser = (_NwRequests if self.protocol == "jk-nw" else _RtuRequests)(self.gap_s)
            while not self._stop.is_set():
                data = link.recv(0.01)
                if data is None:
                    break
                now = time.monotonic()
                reqs = parser.feed(data, now) if data else parser.idle(now)
                for req in reqs:
                    self._handle(link, req)
                if not reqs:
                    self._noise(link, now)
        finally:
            link.close()
            if self.transport == "tcp":
                with self._lock:
                    if link in self._links:
                        self._links.remove(link)

    def _spawn(self, target, *args):
        t = threading.Thread(target=target, args=args, name="jkbms-sim", daemon=True)
        with self._lock:
            self._threads = self._threads[:1] + [x for x in self._threads[1:] if x.is_alive()]
            self._threads.append(t)
        t.start()

    def _accept_loop(self, listener):
        while not self._stop.is_set():
            try:
                r, _, _ = select.select([listener], [], [], 0.05)
                if not r:
                    continue
                sock, _ = listener.accept()
            except (OSError, ValueError):  # closed by stop()
                break
            if self._stop.is_set():
                sock.close()
                break
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            link = _TcpLink(sock)
            with self._lock:
                self._links.append(link)
                self.stats["connections"] += 1
            self._say("connection")
            self._spawn(self._serve, link)

    def start(self):
        if self._t0 is not None:
            raise RuntimeError("already started")
        self._stop.clear()
        if self.transport == "tcp":
            ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            ls.bind((self.host, self.port))
            ls.listen(4)
            self._listener = ls
            self.port = ls.getsockname()[1]
            self._t0 = time.monotonic()
            self._spawn(self._accept_loop, ls)
        else:
            master, slave = os.openpty()
            tty.setraw(slave)  # no echo, no line editing, 8 bits through
            os.set_blocking(master, False)
            self._pty_fds = (master, slave)  # the slave stays open: no EIO between clients
            self.pty_path = os.ttyname(slave)
            if self.pty_link:
                if os.path.islink(self.pty_link):
                    os.unlink(self.pty_link)
                os.symlink(self.pty_path, self.pty_link)
            link = _PtyLink(master)
            self._links.append(link)
            self._t0 = time.monotonic()
            self._spawn(self._serve, link)
        for pack in self._packs.values():
            pack.drift_t0 = 0.0
        return self

    def stop(self, timeout=5.0):
        """Stop serving, close everything, join the threads (bounded)."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        with self._lock:
            threads = list(self._threads)
        if threads:
            threads[0].join(max(0.0, deadline - time.monotonic()))  # the accept / pty loop
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        with self._lock:
            links = list(self._links)
            threads = list(self._threads)
        for link in links:
            link.close()
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        for fd in self._pty_fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self._pty_fds = ()
        if self.pty_link and os.path.islink(self.pty_link):
            os.unlink(self.pty_link)
        alive = [t for t in threads if t.is_alive()]
        if alive:
            raise RuntimeError("%d simulator thread(s) did not stop" % len(alive))

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def endpoint(self):
        if self.transport == "tcp":
            return "tcp %s:%d" % (self.host, self.port)
        return "pty %s" % self.pty_path


# --------------------------------------------------------------------- CLI

def _delay(text):
    lo, colon, hi = text.partition(":")
    try:
        rng = (float(lo), float(hi) if colon else float(lo))
    except ValueError:
        raise argparse.ArgumentTypeError("%r is not MIN[:MAX] in ms, e.g. 10:40" % text) from None
    if not 0 <= rng[0] <= rng[1] < float("inf"):
        raise argparse.ArgumentTypeError("%r: need 0 <= MIN <= MAX" % text)
    return rng


def main(argv=None):
    ap = cli.ArgumentParser(prog="jkbms_sim.py", description=__doc__.split("\n\n", 1)[0],
                            epilog=__doc__.split("\n\n", 1)[1],
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--protocol", choices=PROTOCOLS, default="jk-pb")
    ap.add_argument("--state", metavar="STATE.json", help="battery state (default: a sample 16S LFP pack)")
    ap.add_argument("--address", type=cli.number(int, 1, 247, "a slave address"),
                    help="JK-PB Modbus slave address, 1..247 (default 1)")
    ap.add_argument("--pack", action="append", default=[], metavar="STATE.json",
                    help="JK-PB: one pack on the bus (repeatable): the k-th --pack answers at address k "
                         "(with --bus-master: the first is the master at 0, the next at 1, 2, ...)")
    ap.add_argument("--bus-master", action="store_true",
                    help="JK-PB: play a bank whose pack at address 0 is the bus master (the gateway listens)")
    ap.add_argument("--master-period-s", type=cli.number(float, 0.01, 3600),
                    help="with --bus-master: the master's polling period (default 4.4 s)")
    ap.add_argument("--host", default="127.0.0.1", help="TCP listen address (default 127.0.0.1)")
    ap.add_argument("--port", type=cli.number(int, 0, 65535, "a TCP port number"), default=0,
                    help="TCP port (default 0 = pick a free one)")
    ap.add_argument("--pty", action="store_true", help="serve on a pseudo-terminal instead of TCP")
    ap.add_argument("--pty-link", metavar="PATH", help="with --pty: also make PATH a symlink to the pty")
    ap.add_argument("--delay-ms", type=_delay, default=(10.0, 40.0), metavar="MIN[:MAX]",
                    help="reply delay range in ms (default 10:40)")
    ap.add_argument("--slow-s", type=cli.number(float, 0), default=1.5,
                    help="reply delay under bms-slow (default 1.5 s)")
    ap.add_argument("--pad", action="store_true", help="JK-PB: 0x00 before and after the FC10 ACK")
    ap.add_argument("--echo", action="store_true", help="send each request back first (RS485 TX echo)")
    ap.add_argument("--baud", type=cli.number(int, 0), default=0,
                    help="pace replies at this baud rate (default 0 = off)")
    ap.add_argument("--drift", action="store_true", help="let current, SOC and cells change slowly")
    ap.add_argument("--seed", type=cli.number(int, what="an integer"), help="random seed (delays, garbage)")
    ap.add_argument("--fault", action="append", default=[], metavar=PACK_FAULT_FORMAT,
                    help="inject a fault (repeatable): " + ", ".join(FAULTS) + "; ADDRESS: only that pack")
    ap.add_argument("--duration", type=cli.number(float, 0), help="exit after this many seconds")
    ap.add_argument("-v", "--verbose", action="store_true", help="log requests and replies to stderr")
    args = ap.parse_args(argv)
    if args.pty_link and not args.pty:
        ap.error("--pty-link needs --pty")
    if args.pack and (args.state or args.address is not None):
        ap.error("--pack replaces --state and --address (the k-th --pack answers at address k)")
    if args.bus_master and args.address is not None:
        ap.error("--bus-master: the master is at address 0 (and the packs after it at 1, 2, ...)")
    if (args.pack or args.bus_master) and args.protocol != "jk-pb":
        ap.error("--pack and --bus-master need --protocol jk-pb")
    if args.bus_master and args.echo:
        ap.error("--echo: with --bus-master the gateway only listens, there is nothing to echo")
    if args.master_period_s is not None and not args.bus_master:
        ap.error("--master-period-s needs --bus-master")
    log = (lambda m: print(m, file=sys.stderr, flush=True)) if args.verbose else None
    try:
        faults = [parse_pack_fault(f) for f in args.fault]
        if args.pack:
            bus = dict(packs=[state_json.load(p) for p in args.pack])
        else:
            bus = dict(state=state_json.load(args.state) if args.state else {}, address=args.address)
        sim = JkBmsSim(protocol=args.protocol, transport="pty" if args.pty else "tcp", host=args.host,
                       port=args.port, delay_ms=args.delay_ms, slow_delay_s=args.slow_s, pad=args.pad,
                       echo=args.echo, baud=args.baud, drift=args.drift, seed=args.seed, faults=faults,
                       pty_link=args.pty_link, log=log, bus_master=args.bus_master,
                       master_period_s=args.master_period_s or 4.4, **bus)
    except (OSError, ValueError) as e:
        return cli.fail("jkbms_sim", e)
    try:
        sim.start()
    except OSError as e:  # port in use, no such address, pty link not creatable
        where = ("the pty link %s" % args.pty_link) if args.pty else "%s:%d" % (args.host, args.port)
        return cli.fail("jkbms_sim", "cannot serve on %s: %s" % (where, e.strerror or e))
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    print("LISTEN " + sim.endpoint, flush=True)
    done.wait(args.duration)
    sim.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
