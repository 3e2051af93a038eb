#!/usr/bin/env python3
"""JK-BMS simulator: serves a battery state over TCP (127.0.0.1) or a pty.

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

Replies come after a random 10-40 ms (--delay-ms). Faults (--fault
NAME@SECONDS[:DURATION], e.g. bms-silent@8:5 = silent from 8 s to 13 s after
start; repeatable; without a duration the fault lasts to the end):
  bms-silent   no replies at all
  bms-garbage  random bytes, or the reply with a broken CRC / 55AA / 4E57
               checksum, instead of each reply (alternating), plus bursts of
               random noise between frames
  bms-slow     replies after --slow-s seconds (default 1.5, beyond a typical
               timeout)
  bms-partial  replies cut short (a 55AA frame is cut inside its 300 bytes)

On start one line goes to stdout: "LISTEN tcp 127.0.0.1:PORT" or
"LISTEN pty /dev/pts/N". Runs until SIGINT / SIGTERM or --duration.

Python use (tests, tools/simulate.py):
  sim = JkBmsSim(state, protocol="jk-pb").start()   # sim.port / sim.pty_path
  sim.set_state({"soc_percent": 40}); sim.add_fault("bms-silent", duration=2)
  sim.stop()
  JkBmsSim(..., on_reply=fn): fn(time.monotonic(), request, reply) after each
  reply has been sent in full (tools/bench_sim.py times data age with it)
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
    """CRC-16/MODBUS (init 0xFFFF, reflected 0xA001), as an int."""
    c = 0xFFFF
    for b in data:
        c ^= b
        for _ in range(8):
            c = (c >> 1) ^ 0xA001 if c & 1 else c >> 1
    return c


def with_crc(body):
    c = crc16(body)
    return bytes(body) + bytes((c & 0xFF, c >> 8))


def crc_ok(frame):
    return len(frame) >= 4 and crc16(frame[:-2]) == (frame[-2] | (frame[-1] << 8))


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


def parse_fault(text, names=FAULTS):
    """'NAME@SECONDS[:DURATION]' -> (name, at, duration or None); NAME one of
    names. ValueError with a one-line reason."""
    name, sep, when = text.partition("@")
    if name not in names:
        raise ValueError("unknown fault %r (one of %s)" % (name, ", ".join(names)))
    at, duration = 0.0, None
    if sep:
        a, colon, d = when.partition(":")
        try:
            at = float(a)
            duration = float(d) if colon else None
        except ValueError:
            raise ValueError("bad fault %r: the format is %s (seconds after start), e.g. %s@8:5"
                             % (text, FAULT_FORMAT, name)) from None
    if not (0 <= at < float("inf")) or (duration is not None and not 0 < duration < float("inf")):
        raise ValueError("fault time must be >= 0 and its duration > 0: %r" % text)
    return name, at, duration


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

class JkBmsSim:
    """A simulated JK-BMS. start() / stop() (or use it as a context manager);
    everything else is thread-safe and may be called while it runs."""

    def __init__(self, state=None, protocol="jk-pb", address=1, transport="tcp", host="127.0.0.1", port=0,
                 delay_ms=(10, 40), slow_delay_s=1.5, pad=False, echo=False, baud=0, drift=False,
                 seed=None, faults=(), pty_link=None, gap_ms=30, noise_interval_s=0.15, log=None,
                 on_reply=None):
        if protocol not in PROTOCOLS:
            raise ValueError("protocol must be one of %s" % ", ".join(PROTOCOLS))
        if transport not in ("tcp", "pty"):
            raise ValueError("transport must be tcp or pty")
        if not 1 <= address <= 247:
            raise ValueError("slave address must be 1..247")
        self.protocol = protocol
        self.address = address
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
        self._rng = random.Random(seed)
        self._noise_rng = random.Random(None if seed is None else seed + 1)
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._threads = []
        self._links = []
        self._listener = None
        self._pty_fds = ()
        self._t0 = None
        self._drift_t0 = 0.0
        self._counter = 0
        self._garble_n = 0
        self._faults = []  # [name, start (s after start()), end or None]
        self._user = {}
        self.stats = {"requests": 0, "replies": 0, "ignored": 0, "exceptions": 0, "suppressed": 0,
                      "garbled": 0, "truncated": 0, "slowed": 0, "noise": 0, "connections": 0}
        self.set_state(state or {}, replace=True)
        for f in faults:
            self.add_fault(*(parse_fault(f) if isinstance(f, str) else f))

    # ---------------------------------------------------------- state
    def set_state(self, state, replace=False):
        """Merge state (schema of tools/jk_decode.py, plus settings and
        device-info keys) into the served state, or replace it. Values
        nobody set fall back to the defaults. Raises ValueError."""
        with self._lock:
            user = {} if replace else dict(self._user)
            for k, v in state.items():
                if k not in _NOT_STATE:
                    user[k] = v
            eff = self._effective(user)
            _check_state(eff)
            self._user = user
            self._drift_t0 = self.elapsed()

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

    def get_state(self):
        """The state as served right now (defaults filled in, drift applied)."""
        with self._lock:
            s = self._effective(self._user)
            s["device_address"] = self.address
            if self.drift:
                self._apply_drift(s, self.elapsed() - self._drift_t0)
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
    def frame(self, ftype, counter=None):
        """The current 55AA frame of type 0x02 (status), 0x01 (settings) or
        0x03 (device info), checksummed."""
        s = self.get_state()
        if counter is None:
            with self._lock:
                self._counter = (self._counter + 1) & 0xFF
                counter = self._counter
        if ftype == 0x02:
            return B.cell_info_32s(s, extra=True, counter=counter)
        if ftype == 0x01:
            return B.settings_32s(s, extra=True, counter=counter)
        if ftype == 0x03:
            return B.device_info_32s(s, counter=counter)
        raise ValueError("frame type must be 1, 2 or 3")

    def image(self, base):
        """The current FC03 register block at base 0x1200 / 0x1000 / 0x1400."""
        return register_image(self.frame(BLOCKS[base], counter=0))

    def nw_response(self):
        """The current 4E 57 read-all response."""
        return B.response_4e57(self.get_state())

    # ---------------------------------------------------------- faults
    def elapsed(self):
        return 0.0 if self._t0 is None else time.monotonic() - self._t0

    def add_fault(self, name, at=None, duration=None):
        """Schedule a fault at `at` seconds after start() (None = now) for
        `duration` seconds (None = to the end)."""
        if name not in FAULTS:
            raise ValueError("unknown fault %r" % name)
        with self._lock:
            start = self.elapsed() if at is None else float(at)
            self._faults.append([name, start, None if duration is None else start + duration])

    def clear_faults(self, name=None):
        """End all faults (or all of one name), including scheduled ones."""
        with self._lock:
            self._faults = [f for f in self._faults if name is not None and f[0] != name]

    def active_faults(self):
        with self._lock:
            if self._t0 is None:
                return set()
            t = self.elapsed()
            return {n for n, a, e in self._faults if a <= t and (e is None or t < e)}

    # ---------------------------------------------------------- replies
    def reply_to(self, request):
        """The fault-free reply bytes to one complete request, or None for
        silence (not addressed to us, or not a request we answer)."""
        if self.protocol == "jk-nw":
            return self._reply_nw(request)
        return self._reply_pb(request)

    def _exception(self, fc, code):
        self.stats["exceptions"] += 1
        return with_crc(bytes((self.address, fc | 0x80, code)))

    def _reply_pb(self, req):
        if len(req) < 4 or req[0] != self.address:
            return None  # another slave (or a broadcast): stay silent
        fc = req[1]
        if fc == FC_READ and len(req) == 8:
            reg, count = struct.unpack_from(">HH", req, 2)
            if not 1 <= count <= 125:
                return self._exception(fc, EXC_VALUE)
            for base in BLOCKS:
                off = reg - base
                if 0 <= off and off + 2 * count <= BLOCK_BYTES:
                    data = self.image(base)[off:off + 2 * count]
                    return with_crc(bytes((self.address, fc, 2 * count)) + data)
            return self._exception(fc, EXC_ADDRESS)
        if fc == FC_WRITE_MULTIPLE and len(req) >= 9:
            reg, count = struct.unpack_from(">HH", req, 2)
            if not 1 <= count <= 123 or req[6] != 2 * count or len(req) != 9 + req[6]:
                return self._exception(fc, EXC_VALUE)
            if reg in TRIGGERS and count == 1 and req[7] == 0 and req[8] == 0:
                ack = with_crc(bytes((self.address, fc)) + struct.pack(">HH", reg, 1))
                frame = self.frame(TRIGGERS[reg])
                return frame + (b"\x00" + ack + b"\x00" if self.pad else ack)
            return self._exception(fc, EXC_ADDRESS)  # refused: nothing is written
        return self._exception(fc, EXC_FUNCTION)

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

    def _handle(self, link, req):
        with self._lock:
            self.stats["requests"] += 1
            faults = self.active_faults()
            reply = self.reply_to(req)
            if reply is None:
                self.stats["ignored"] += 1
            elif FAULT_SILENT in faults:
                self.stats["suppressed"] += 1
                reply = None
            elif FAULT_GARBAGE in faults:
                self.stats["garbled"] += 1
                reply = self._garble(reply)
            elif FAULT_PARTIAL in faults:
                self.stats["truncated"] += 1
                reply = self._truncate(reply)
            if FAULT_SLOW in faults and reply is not None:
                self.stats["slowed"] += 1
                delay = self.slow_delay_s
            else:
                delay = self._rng.uniform(*self.delay_s)
        self._say("request %s -> %s (faults: %s)" % (req.hex(), "silence" if reply is None else
                                                     "%d bytes after %.0f ms" % (len(reply), delay * 1000),
                                                     ",".join(sorted(faults)) or "none"))
        if self.echo:
            link.send(req)
        if reply is None:
            return
        if delay > 0 and self._stop.wait(delay):
            return
        with self._lock:  # counted before sending: a client that saw the reply sees the count
            self.stats["replies"] += 1
        self._send(link, reply)
        if self.on_reply is not None:
            self.on_reply(time.monotonic(), req, reply)

    def _send(self, link, data):
        if self.baud <= 0:
            link.send(data)
            return
        chunk = 32
        for i in range(0, len(data), chunk):
            part = data[i:i + chunk]
            link.send(part)
            if self._stop.wait(len(part) * 10.0 / self.baud):
                return

    # ---------------------------------------------------------- serving
    def _say(self, msg):
        if self._log is not None:
            self._log("jkbms_sim: " + msg)

    def _serve(self, link):
        parser = (_NwRequests if self.protocol == "jk-nw" else _RtuRequests)(self.gap_s)
        last_tx = time.monotonic()
        try:
            while not self._stop.is_set():
                data = link.recv(0.01)
                if data is None:
                    break
                now = time.monotonic()
                reqs = parser.feed(data, now) if data else parser.idle(now)
                for req in reqs:
                    self._handle(link, req)
                    last_tx = time.monotonic()
                if not reqs and now - last_tx >= self.noise_interval_s and FAULT_GARBAGE in self.active_faults():
                    rng = self._noise_rng
                    noise = bytes(rng.randrange(256) for _ in range(rng.randint(1, 24)))
                    link.send(noise)
                    with self._lock:
                        self.stats["noise"] += len(noise)
                    last_tx = now
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
        self._drift_t0 = 0.0
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
    ap.add_argument("--address", type=cli.number(int, 1, 247, "a slave address"), default=1,
                    help="JK-PB Modbus slave address, 1..247 (default 1)")
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
    ap.add_argument("--fault", action="append", default=[], metavar=FAULT_FORMAT,
                    help="inject a fault (repeatable): " + ", ".join(FAULTS))
    ap.add_argument("--duration", type=cli.number(float, 0), help="exit after this many seconds")
    ap.add_argument("-v", "--verbose", action="store_true", help="log requests and replies to stderr")
    args = ap.parse_args(argv)
    if args.pty_link and not args.pty:
        ap.error("--pty-link needs --pty")
    try:
        faults = [parse_fault(f) for f in args.fault]
        state = state_json.load(args.state) if args.state else {}
        sim = JkBmsSim(state, protocol=args.protocol, address=args.address,
                       transport="pty" if args.pty else "tcp", host=args.host, port=args.port,
                       delay_ms=args.delay_ms, slow_delay_s=args.slow_s, pad=args.pad, echo=args.echo,
                       baud=args.baud, drift=args.drift, seed=args.seed, faults=faults,
                       pty_link=args.pty_link,
                       log=(lambda m: print(m, file=sys.stderr, flush=True)) if args.verbose else None)
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
