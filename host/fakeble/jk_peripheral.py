# A simulated JK-BMS BLE module for the fake radio (bluetooth.py beside this file), after
# the JK BLE protocol (docs/jk-bms.md "BLE link"): service FFE0, FFE1 characteristic(s) + CCCD,
# 20-byte AA 55 90 EB requests, 300-byte 55 AA EB 90 frames split into notifications.
# Put one on air with bluetooth.radio.add(JkPeripheral(...)).  Runs under MicroPython too.
#
# Options (constructor keywords, or p.set(...) at run time; see README.md for each fault):
#   period_ms=1000        cell-info frame period once 0x96 was received
#   chunk=None            notification payload size cap (None: MTU - 3)
#   per_event=1           notifications per connection event (bursts: 8-16)
#   refuse_connect=False  another app holds the module: not advertising, connect never completes
#   refuse_mtu=False      answers the MTU exchange with 23
#   mtu_max=247           the MTU it answers otherwise
#   silent=False          accepts the link and writes, sends nothing
#   slow_ms=0             delay before a request is answered
#   confirm=True          the 20-byte C8 confirmation before each answer
#   at=None               "own": AT\r\n as its own notification after each frame; "suffix": glued
#                         behind the frame (on its last chunk when it fits, else the next one)
#   glue_confirm=False    the device-info frame and the C8 confirmation as one 320-byte stream
#   disconnect_after_chunks=None  drop the link after N more notifications (e.g. mid-frame)
#   adv_interval_ms=100   advertising interval
#   on_frame=None         callable(kind, data): the last notification of a frame ("frame" or "cell",
#                         data the whole stream) was produced; called at the end of the connection
#                         event, right before the radio delivers its notifications (benchmarks
#                         time the data age from here: tools/bench_ble.py)
_OPTIONS = {
    "period_ms": 1000,
    "chunk": None,
    "per_event": 1,
    "refuse_connect": False,
    "refuse_mtu": False,
    "mtu_max": 247,
    "silent": False,
    "slow_ms": 0,
    "confirm": True,
    "at": None,
    "glue_confirm": False,
    "disconnect_after_chunks": None,
    "adv_interval_ms": 100,
    "on_frame": None,
}

CONFIRM = b"\xaa\x55\x90\xeb\xc8\x01\x01" + bytes(12) + b"\x44"
AT = b"AT\r\n"
_REQ_HEADER = b"\xaa\x55\x90\xeb"
_FLAG_READ = 0x02
_FLAG_WNR = 0x04
_FLAG_WRITE = 0x08
_FLAG_NOTIFY = 0x10


def _unhex(s):
    s = "".join(s.split())
    out = bytearray(len(s) // 2)
    for i in range(len(out)):
        out[i] = int(s[2 * i : 2 * i + 2], 16)
    return bytes(out)


def _as_bytes(x):
    return _unhex(x) if isinstance(x, str) else bytes(x)


def request(cmd):
    """The 20-byte request frame for command cmd (0x97 device info, 0x96 cell info)."""
    b = bytearray(20)
    b[0:4] = _REQ_HEADER
    b[4] = cmd
    b[19] = sum(b[:19]) & 0xFF
    return bytes(b)


class FrameSource:
    """The frames a JkPeripheral answers with (bytes or hex strings, 300 bytes each).

    Any object with device_info(), settings() and cell_info() serves as a JkPeripheral's frames
    (e.g. remote_frames.RemoteFrames); each may return None = nothing fresh: the peripheral then
    sends nothing for that request (no C8 confirmation either) or skips that cell-info frame, and
    counts it in frames_missing.

    cell_info may be one frame or a list of frames (used in turn).  With vary=True every
    cell-info frame after the first has its rolling counter (byte 5) bumped and the byte-299
    sum8 recomputed, so consecutive frames differ."""

    def __init__(self, device_info, settings, cell_info, vary=True):
        self._dev = _as_bytes(device_info)
        self._set = _as_bytes(settings)
        if isinstance(cell_info, (list, tuple)):
            self._cells = [bytearray(_as_bytes(c)) for c in cell_info]
        else:
            self._cells = [bytearray(_as_bytes(cell_info))]
        self.vary = vary
        self.cell_count = 0

    @classmethod
    def from_fixtures(
        cls,
        device_id="ble_jk02_32s_v11_device_info",
        cell_id="ble_jk02_32s_v11_cell_info",
        settings_id="ble_jk02_32s_v11_17_settings",
    ):
        """Frames from host_tests/fixtures/jk_frames.json by fixture id (cell_id: id or list of ids)."""
        fixtures = _fixtures()
        cells = cell_id if isinstance(cell_id, (list, tuple)) else [cell_id]
        return cls(
            fixtures.find_frame(device_id)["hex"],
            fixtures.find_frame(settings_id)["hex"],
            [fixtures.find_frame(c)["hex"] for c in cells],
        )

    def device_info(self):
        return self._dev

    def settings(self):
        return self._set

    def cell_info(self):
        f = self._cells[self.cell_count % len(self._cells)]
        if self.vary and self.cell_count >= len(self._cells) and len(f) >= 300:
            f[5] = (f[5] + 1) & 0xFF
            f[299] = sum(f[:299]) & 0xFF
        self.cell_count += 1
        return bytes(f)


def _fixtures():
    try:
        import fixtures

        if hasattr(fixtures, "find_frame"):
            return fixtures
    except ImportError:
        pass
    import sys

    here = __file__.replace("\\", "/")
    root = here[: here.rfind("/")]  # host/fakeble
    root = root[: root.rfind("/")]  # host
    root = root[: root.rfind("/")] if "/" in root else "."  # repository root
    sys.path.insert(0, (root or ".") + "/host_tests/portable")
    sys.modules.pop("fixtures", None)
    import fixtures

    return fixtures


def _addr_bytes(addr):
    if isinstance(addr, str):
        return _unhex(addr.replace(":", ""))
    b = bytes(addr)
    if len(b) != 6:
        raise ValueError("addr: 6 bytes or 'AA:BB:CC:DD:EE:FF'")
    return b


class JkPeripheral:
    """A JK-BMS BLE module: new two-FFE1 layout (two_ffe1=True) or the old single FFE1."""

    def __init__(self, addr, name="JK-B2A24S15P", frames=None, two_ffe1=True, rssi=-62, addr_type=0, **options):
        self.addr = _addr_bytes(addr)
        self.addr_type = addr_type
        self.name = name
        self.frames = frames if frames is not None else FrameSource.from_fixtures()
        self.two_ffe1 = two_ffe1
        self.rssi = rssi
        for k in _OPTIONS:
            setattr(self, k, _OPTIONS[k])
        self._chunks_left = None
        self.set(**options)
        if two_ffe1:
            # handles as in syssi's dump: write-only FFE1 at 0x03, notify FFE1 at 0x05
            self._table = [
                (1, "svc", 0xFFE0, 6),
                (2, "chr", 0x2803, 0),
                (3, "val", 0xFFE1, _FLAG_WRITE | _FLAG_WNR),
                (4, "chr", 0x2803, 0),
                (5, "val", 0xFFE1, _FLAG_NOTIFY),
                (6, "dsc", 0x2902, 0),
                (7, "svc", 0x1800, 9),
                (8, "chr", 0x2803, 0),
                (9, "val", 0x2A00, _FLAG_READ),
            ]
            self.write_handle, self.notify_handle, self.cccd_handle = 3, 5, 6
        else:
            self._table = [
                (1, "svc", 0xFFE0, 4),
                (2, "chr", 0x2803, 0),
                (3, "val", 0xFFE1, _FLAG_NOTIFY | _FLAG_WRITE | _FLAG_WNR),
                (4, "dsc", 0x2902, 0),
                (5, "svc", 0x1800, 7),
                (6, "chr", 0x2803, 0),
                (7, "val", 0x2A00, _FLAG_READ),
            ]
            self.write_handle, self.notify_handle, self.cccd_handle = 3, 3, 4
        self._build_adv()
        self.connects = 0
        self.writes = []  # every value written to the FFE1 write characteristic, in order
        self.cccd_writes = []  # every value written to the CCCD
        self.chunks_sent = 0
        self.chunks_dropped = 0  # produced while notifications were off
        self.frames_sent = 0
        self.requests = 0  # valid 0x97 / 0x96 requests accepted
        self.frames_missing = 0  # frames due that the source had none of (it returned None)
        self._conn = None  # the radio's link object while connected
        self.drop_link = False
        self._rssi_step = 0
        self._reset_link()

    # ----- options and faults

    def set(self, **options):
        for k in options:
            if k not in _OPTIONS:
                raise TypeError("unknown JkPeripheral option: " + k)
            if k == "at" and options[k] not in (None, "own", "suffix"):
                raise ValueError("at: None, 'own' or 'suffix'")
            setattr(self, k, options[k])
            if k == "disconnect_after_chunks":
                self._chunks_left = options[k]
        return self

    def disconnect(self):
        """Drop the link from the peripheral side (the central sees it at the next event)."""
        if self._conn is not None:
            self.drop_link = True

    def is_connected(self):
        return self._conn is not None

    # ----- what the radio asks

    def _build_adv(self):
        name = self.name.encode() if isinstance(self.name, str) else bytes(self.name)
        nfield = bytes([len(name) + 1, 0x09]) + name
        mfr = b"\x65\x0b" + self.addr  # company 0x0B65, then the module's address
        adv = b"\x02\x01\x06" + b"\x03\x03\xe0\xff" + bytes([len(mfr) + 1, 0xFF]) + mfr
        if len(adv) + len(nfield) <= 31:
            self._adv = adv[:3] + nfield + adv[3:]
            self._resp = b""
        else:  # the name goes into the scan response (seen by an active scan only)
            self._adv = adv
            self._resp = nfield

    def advertising(self):
        return self._conn is None and not self.refuse_connect

    def accept_connect(self):
        return self._conn is None and not self.refuse_connect

    def adv_data(self):
        return self._adv

    def resp_data(self):
        return self._resp

    def rssi_now(self):
        self._rssi_step = (self._rssi_step + 1) % 3
        return self.rssi + self._rssi_step - 1

    def peer_mtu(self):
        return 23 if self.refuse_mtu else self.mtu_max

    def gatt_table(self):
        return self._table

    def _reset_link(self):
        self.notify_on = False
        self._cccd = b"\x00\x00"
        self._q = []  # outgoing streams: [data, offset, kind]
        self._req = []  # accepted requests: [due_ms, cmd]
        self._streaming = False
        self._next_cell = 0
        self.drop_link = False

    def connected(self, now):
        self.connects += 1
        self._reset_link()

    def disconnected(self):
        self._reset_link()

    def gatt_read(self, handle):
        if handle == self.cccd_handle:
            return self._cccd
        if handle == self._table[-1][0]:  # GAP device name
            return self.name.encode() if isinstance(self.name, str) else bytes(self.name)
        return b""

    def gatt_write(self, handle, data, now):
        data = bytes(data)
        if handle == self.cccd_handle:
            self.cccd_writes.append(data)
            self._cccd = (data + b"\x00\x00")[:2]
            self.notify_on = bool(data and data[0] & 1)
            return 0
        if handle == self.write_handle:
            self.writes.append(data)
            if (
                len(data) == 20
                and data[:4] == _REQ_HEADER
                and sum(data[:19]) & 0xFF == data[19]
                and data[4] in (0x96, 0x97)
            ):
                self.requests += 1
                self._req.append([now + self.slow_ms, data[4]])
            return 0  # anything else is ignored, as a real BMS does
        return 0

    def _push(self, data, kind):
        if self.at == "suffix" and kind != "confirm":
            data = data + AT
        self._q.append([data, 0, kind])
        if self.at == "own" and kind != "confirm":
            self._q.append([AT, 0, "at"])

    def _answer(self, cmd, now):
        f = self.frames.device_info() if cmd == 0x97 else self.frames.settings()
        if cmd == 0x96:
            self._streaming = True
            self._next_cell = now  # the first cell-info frame follows the settings at once
        if f is None:  # the source has nothing fresh: the module sends nothing, not even C8
            self.frames_missing += 1
            return
        if self.confirm and not (self.glue_confirm and cmd == 0x97):
            self._q.append([CONFIRM, 0, "confirm"])
        if cmd == 0x97:
            self._push(f + CONFIRM if self.glue_confirm else f, "frame")
        else:
            self._push(f, "frame")

    def _cell_waiting(self):
        for s in self._q:
            if s[2] == "cell" and s[1] == 0:
                return True
        return False

    def conn_event(self, now, mtu):
        """Notifications [(value_handle, bytes)] to send in this connection event."""
        while self._req and self._req[0][0] <= now:
            self._answer(self._req.pop(0)[1], now)
        if self._streaming and now >= self._next_cell:
            # on the module's own clock: period_ms on average, not rounded up to the event grid
            late = now - self._next_cell
            self._next_cell = (self._next_cell if late < self.period_ms else now) + self.period_ms
            if not self._cell_waiting():
                f = self.frames.cell_info()
                if f is None:
                    self.frames_missing += 1
                else:
                    self._push(f, "cell")
        if self.silent:
            self._q = []
            return ()
        size = mtu - 3
        if self.chunk and self.chunk < size:
            size = self.chunk
        out = []
        done = []  # streams finished in this event, for on_frame
        n = self.per_event
        while n > 0 and self._q:
            s = self._q[0]
            piece = s[0][s[1] : s[1] + size]
            s[1] += len(piece)
            if s[1] >= len(s[0]):
                self._q.pop(0)
                if self.notify_on and s[2] in ("frame", "cell"):
                    self.frames_sent += 1
                    if self.on_frame is not None:
                        done.append(s)
            if not self.notify_on:
                self.chunks_dropped += 1
                continue
            out.append((self.notify_handle, piece))
            self.chunks_sent += 1
            n -= 1
            if self._chunks_left is not None:
                self._chunks_left -= 1
                if self._chunks_left <= 0:
                    self._chunks_left = None
                    self.disconnect_after_chunks = None
                    self.drop_link = True
                    break
        for s in done:
            self.on_frame(s[2], s[0])
        return out
