# A JK-BMS over Bluetooth LE with micropython-lib's aioble (docs/jk-bms.md
# "BLE link"): find the BMS by MAC or advertised name, connect, exchange the
# MTU, pick the FFE1 characteristics by their properties (new modules have
# two), subscribe, ask for the device info (0x97) and then the cell info
# (0x96: a settings frame, then cell-info frames the BMS pushes by itself).
# Notifications reach sources.ble_ring through an IRQ hook, never through
# aioble's one-slot queue. Frames are decoded by the layout the device info
# and the first cell-info frame tell (JK02_24S, JK02_32S, JK04).
#
# Link loss: freshness is the same as for the UART sources (sources.base);
# the link is retried with back-off, each try with a fresh aioble.Device.
# Setup steps run as a task watched here, so the heartbeat keeps beating
# while aioble waits and every step has a deadline. aioble and bluetooth are
# imported only by this module, i.e. only with bms_transport "ble".

import asyncio

from codec.errors import DecodeError
from compat import const, sleep_ms, ticks_add, ticks_diff, ticks_ms
from jkbms import ble_request as R
from jkbms import cellinfo, settings
from jkbms import frame as J
from jkbms.reassembler import Reassembler
from sources.base import Source
from sources.ble_ring import NotifyRing, hook

_SVC = const(0xFFE0)
_CHR = const(0xFFE1)
_NOTIFY = const(0x10)
_WRITE = const(0x08)
_WRITE_NR = const(0x04)
_MTU = const(247)

_TICK_MS = const(20)  # how often the ring is drained while connected
_SCAN_MS = const(2000)  # one scan window while looking for ble_name
_CONNECT_MS = const(4000)
_STEP_MS = const(3000)  # deadline of every other setup step
_DEVICE_INFO_MS = const(2000)  # wait for the 0x97 answer, then go on without it
_STREAM_GAP_MS = const(5000)  # no cell info for this long: ask again (0x96)
_REQUESTS_MAX = const(3)  # ... this many times, then reconnect
_BACKOFF_MS = (1000, 2000, 5000, 10000, 20000, 30000)

# link states, for the console
IDLE = const(0)
SCANNING = const(1)
CONNECTING = const(2)
SETUP = const(3)
CONNECTED = const(4)
WAITING = const(5)
NO_TARGET = const(6)
LINK_NAMES = ("idle", "scanning", "connecting", "setting up", "connected", "waiting to retry",
              "no BMS configured (set ble_mac or ble_name; 'scan' lists JK devices)")

_LAYOUTS = {"auto": 0, "JK02_24S": J.LAYOUT_JK02_24S, "JK02_32S": J.LAYOUT_JK02_32S, "JK04": J.LAYOUT_JK04}


class LinkDown(Exception):
    pass


def parse_mac(text):
    """'C8:47:8C:12:34:56' -> 6 bytes (app.config has checked the form)."""
    return bytes(int(p, 16) for p in text.split(":"))


def mac_text(addr):
    return ":".join("%02X" % b for b in addr)


class JkBleSource(Source):
    def __init__(self, cfg, snap, log):
        self.mac = parse_mac(cfg["ble_mac"]) if cfg["ble_mac"] else None
        self.target = cfg["ble_mac"] or cfg["ble_name"]
        Source.__init__(self, "ble " + (self.target or "?"), cfg, snap, log)
        self.ring = NotifyRing(1024)  # > 3 frames of 20-byte chunks; drained every 20 ms
        self.rx = Reassembler(ble=True)
        self._chunk = bytearray(256)
        self._cmd = bytearray(20)
        self.forced = _LAYOUTS[cfg["ble_layout"]]
        self.layout = self.forced
        self.link = IDLE
        self.addr = None  # bytes of the BMS's address once known
        self.rssi = None  # at the last scan that saw it
        self.mtu = 0
        self.connects = 0
        self.link_losses = 0
        self.frames = 0
        self.requests = 0  # 0x96 sent again because the stream stopped
        self.retry_ms = 0
        self.device = None  # the device-info frame, decoded only when shown
        self.scan_wanted = False
        self.scan_results = None
        self._seen_lost = 0
        # timings (tests shorten them)
        self.stream_gap_ms = _STREAM_GAP_MS
        self.device_info_ms = _DEVICE_INFO_MS
        self.backoff_ms = _BACKOFF_MS
        self.cell_ms = 0  # last cell-info frame accepted
        self.settings_ms = 0  # last settings frame accepted
        self._conn = None
        self._write = None
        self._hooked = False
        self._ble = None

    # -- console ----------------------------------------------------------------
    def device_info(self):
        if self.device is None:
            return None
        from jkbms import devinfo  # the console's: out of RAM until shown
        return devinfo.describe(self.device)

    def resync_bytes(self):
        return self.rx.dropped

    def link_text(self, now):
        r = self.ring
        state = LINK_NAMES[self.link]
        if self.link == WAITING:
            state += " in %d s" % (max(0, ticks_diff(self.retry_ms, now)) // 1000)
        return "BLE: %s%s, RSSI %s, MTU %s, layout %s, connects %d, link losses %d, frames %d, " \
            "chunks %d, lost chunks %d, re-requests %d" % (
                state, (" to " + mac_text(self.addr)) if self.addr else "",
                ("%d dBm" % self.rssi) if self.rssi is not None else "n/a", self.mtu or "-",
                J.LAYOUT_NAMES.get(self.layout, "auto"), self.connects, self.link_losses, self.frames,
                r.chunks, r.lost, self.requests)

    def request_scan(self):
        self.scan_wanted = True

    # -- frames -----------------------------------------------------------------
    def _frame(self, f):
        """One checksummed 300-byte frame from the reassembler."""
        t = f[4]
        if t == J.TYPE_CELL_INFO:
            layout = self.layout
            if not self.forced:
                # the device info gives a first guess; the cell frame decides
                # (docs/jk-bms.md "55AA frames")
                try:
                    found = J.detect_layout(f)
                except DecodeError:
                    found = 0
                if found and found != layout:
                    if layout:
                        self.log("BLE: cell frames are %s, not %s as the version said" % (
                            J.LAYOUT_NAMES[found], J.LAYOUT_NAMES[layout]))
                    self.layout = layout = found
            if not layout:
                raise DecodeError("cannot tell the cell-info layout")
            if layout == J.LAYOUT_JK04:
                from jkbms import jk04
                jk04.decode(f, self.snap)
            else:
                cellinfo.decode(f, 6, layout, self.snap)
            self.cell_ms = ticks_ms()
            self.keep_raw(f, J.FRAME_LEN)
            self.accepted(self.cell_ms)
        elif t == J.TYPE_SETTINGS:
            # JK04 settings are floats (power-off voltage and ADC calibration
            # tell them, as in jkbms.dispatch); a JK04 never serves an inverter
            jk04 = self.layout == J.LAYOUT_JK04 or (
                not self.forced and J.is_f32_cell_volts(f, 38) and J.is_f32_cell_volts(f, 74))
            if not jk04:
                settings.decode(f, self.snap)
                self.settings_ms = ticks_ms()
        elif t == J.TYPE_DEVICE_INFO:
            if self.device is None:
                self.device = bytes(f)
                if not self.forced and not self.layout:
                    self.layout = J.version_layout(f, 30, 38)  # devinfo "sw_version"
        self.frames += 1

    def drain(self):
        """Feed every queued notification to the reassembler and decode the
        frames it completes. Allocation-free for accepted data frames."""
        ring = self.ring
        rx = self.rx
        buf = self._chunk
        while True:
            if ring.lost != self._seen_lost:
                self._seen_lost = ring.lost
                rx.reset()  # the frame in progress misses a chunk
            n = ring.get_into(buf)
            if n < 0:
                return
            rx.feed(buf, 0, n)
            bad = rx.bad
            while rx.next_frame():
                try:
                    self._frame(rx.frame)
                except DecodeError as e:
                    self.decode_errors += 1
                    self.last_error = e.args[0]
            if rx.bad != bad:
                self.decode_errors += rx.bad - bad
                self.last_error = "55AA checksum mismatch"

    # -- the link -----------------------------------------------------------------
    async def _step(self, coro, limit_ms):
        """Run one aioble step as a task with a deadline, beating the
        heartbeat while it waits (setup only: this allocates)."""
        box = [None, None]
        task = asyncio.create_task(_boxed(coro, box))
        end = ticks_add(ticks_ms(), limit_ms)
        try:
            while not task.done():
                self.heartbeat_ms = ticks_ms()
                if ticks_diff(ticks_ms(), end) > 0:
                    raise LinkDown("no answer in %d ms" % limit_ms)
                await sleep_ms(_TICK_MS)
        except BaseException:  # noqa: B036 - the deadline, or this task cancelled: the step goes too
            task.cancel()
            raise
        if box[1] is not None:
            raise box[1]
        return box[0]

    async def _find(self, aioble):
        """An aioble.Device for the configured BMS, or None."""
        if self.mac:
            self.addr = self.mac
            return aioble.Device(aioble.ADDR_PUBLIC, self.mac)
        name = self.cfg["ble_name"]
        self.link = SCANNING
        return await self._step(self._scan_for(aioble, name), _SCAN_MS + 1000)

    async def _scan_for(self, aioble, name):
        async with aioble.scan(_SCAN_MS, 30000, 30000, True) as scanner:
            async for r in scanner:
                if r.name() == name:
                    self.addr = bytes(r.device.addr)
                    self.rssi = r.rssi
                    return r.device
        return None

    async def _setup(self, conn):
        self.mtu = 23
        try:
            self.mtu = await self._step(conn.exchange_mtu(_MTU, _STEP_MS - 500), _STEP_MS)
        except (LinkDown, asyncio.TimeoutError, OSError):
            self.log("BLE: MTU exchange refused, going on with 23 (20-byte chunks)")
        svc = await self._step(conn.service(_uuid(_SVC), _STEP_MS - 500), _STEP_MS)
        if svc is None:
            raise LinkDown("no FFE0 service: not a JK-BMS")
        notify, write = await self._step(self._pick(svc), _STEP_MS)
        if notify is None or write is None:
            raise LinkDown("no FFE1 characteristic to notify and write")
        await self._step(notify.subscribe(True), _STEP_MS)
        return write

    async def _pick(self, svc):
        """The FFE1 characteristic that notifies and the one to write to
        (one of each on new modules, one for both on old ones)."""
        notify = write = None
        async for c in svc.characteristics(_uuid(_CHR), _STEP_MS - 500):  # runs to completion (aioble)
            if notify is None and c.properties & _NOTIFY:
                notify = c
            if c.properties & (_WRITE | _WRITE_NR) and (write is None or c.properties & _WRITE_NR):
                write = c
        return notify, write

    async def _send(self, cmd):
        n = R.build_command(self._cmd, cmd)
        w = self._write
        await self._step(w.write(self._cmd[:n], not (w.properties & _WRITE_NR), _STEP_MS - 500), _STEP_MS)

    async def _session(self, aioble):
        self.link = CONNECTING if self.mac else SCANNING
        device = await self._find(aioble)
        if device is None:
            raise LinkDown("'%s' not found" % self.cfg["ble_name"])
        self.link = CONNECTING
        conn = await self._step(device.connect(_CONNECT_MS - 500), _CONNECT_MS)
        self._conn = conn
        self.link = SETUP
        self.ring.clear()
        self.rx.reset()
        d0 = self.ring.disconnects
        self._write = await self._setup(conn)
        self.connects += 1
        self.link = CONNECTED
        self.log("BLE: connected to %s, MTU %d" % (mac_text(self.addr) if self.addr else self.target, self.mtu))
        if self.device is None:
            await self._send(R.CMD_DEVICE_INFO)
            end = ticks_add(ticks_ms(), self.device_info_ms)
            while self.device is None and ticks_diff(end, ticks_ms()) > 0:
                await self._tick(conn, d0)
        await self._send(R.CMD_CELL_INFO)
        asked = self.cell_ms = self.settings_ms = ticks_ms()
        tries = 0
        while True:
            await self._tick(conn, d0)
            now = ticks_ms()
            gap = self.stream_gap_ms
            if ticks_diff(now, self.cell_ms) < gap:
                tries = 0
                # 0x96 again brings a settings frame: when due, and while
                # none was accepted yet (nothing is sent without them)
                due = ticks_diff(now, self.settings_ms) > self.cfg["bms_settings_s"] * 1000
                if not self.snap.settings_ok and self.layout != J.LAYOUT_JK04:
                    due = True  # (JK04 settings are never decoded)
                if due and ticks_diff(now, asked) > gap:
                    asked = now
                    await self._send(R.CMD_CELL_INFO)
            elif ticks_diff(now, asked) >= gap:
                if tries >= _REQUESTS_MAX:
                    raise LinkDown("BMS silent: no cell info after %d requests" % tries)
                tries += 1
                self.requests += 1
                asked = now
                await self._send(R.CMD_CELL_INFO)
            if self.scan_wanted:
                self._start_scan(aioble)

    async def _tick(self, conn, d0):
        await sleep_ms(_TICK_MS)
        self.heartbeat_ms = ticks_ms()
        self.drain()
        if self.ring.disconnects != d0 or not conn.is_connected():
            raise LinkDown("BLE link lost")

    def _start_scan(self, aioble):
        """The console's scan, as a task of its own: the link's drain loop
        must go on meanwhile (a 4 s pause would overflow the ring)."""
        self.scan_wanted = False
        asyncio.create_task(self._scan_job(aioble))

    async def _scan_job(self, aioble):
        from sources import ble_scan
        try:
            self.scan_results = await self._step(ble_scan.scan(aioble, self, _SCAN_MS * 2), _SCAN_MS * 2 + 1000)
        except Exception as e:  # noqa: BLE001 - a failed scan is reported, the link goes on
            self.scan_results = []
            self.log("scan failed: %r" % (e,))
            return
        ble_scan.report(self.scan_results, self.log)

    async def _close(self):
        conn = self._conn
        self._conn = None
        self._write = None
        # what is still queued came before the loss; taken later it would be
        # dated later than it is
        self.ring.clear()
        self.rx.reset()
        if conn is not None and conn.is_connected():
            try:
                await self._step(conn.disconnect(1500), 2000)
            except Exception:  # noqa: BLE001 - the link is being dropped anyway
                pass
        elif conn is None and self._ble is not None:
            # a connect that timed out stays pending in the stack (the next
            # one would fail with EALREADY): cancel it
            try:
                self._ble.gap_connect(None)
            except OSError:
                pass

    async def run(self):
        try:
            import aioble
            import bluetooth
        except ImportError as e:
            # a deploy without network leaves aioble out: say so, never crash-loop
            self.last_error = "BLE: aioble missing (%s): mpremote mip install aioble-central aioble-client" % e
            self.log(self.last_error)
            while True:
                self.heartbeat_ms = ticks_ms()
                await sleep_ms(1000)
        if not self._hooked:
            import aioble.core
            self._ble = bluetooth.BLE()
            hook(self._ble, self.ring, aioble.core.ble_irq)
            self._hooked = True
        fails = 0
        while True:
            self.heartbeat_ms = ticks_ms()
            if not self.target:
                self.link = NO_TARGET
                if self.scan_wanted:
                    self._start_scan(aioble)
                await sleep_ms(_TICK_MS * 10)
                continue
            had = self.frames
            try:
                await self._session(aioble)
            except (LinkDown, asyncio.TimeoutError, OSError, ValueError, aioble.DeviceDisconnectedError,
                    aioble.GattError) as e:
                self.timeouts += 1
                if e.args and isinstance(e.args[0], str):
                    why = e.args[0]
                elif isinstance(e, asyncio.TimeoutError):  # aioble's carry no text
                    why = "no answer while %s" % LINK_NAMES[self.link]
                else:
                    why = repr(e)
                self.last_error = "BLE: " + why
                if self.link == CONNECTED:
                    self.link_losses += 1
                self.log(self.last_error)
            await self._close()
            if self.frames != had:
                fails = 0
            b = self.backoff_ms
            wait = b[fails if fails < len(b) else -1]
            fails += 1
            self.link = WAITING
            self.retry_ms = ticks_add(ticks_ms(), wait)
            while ticks_diff(self.retry_ms, ticks_ms()) > 0:
                self.heartbeat_ms = ticks_ms()
                if self.scan_wanted:
                    self._start_scan(aioble)
                await sleep_ms(_TICK_MS * 10)


async def _boxed(coro, box):
    # the step's result or exception goes into box: a task that ends with an
    # exception nobody awaits yet would be printed as "never retrieved"
    try:
        box[0] = await coro
    except Exception as e:  # noqa: BLE001 - handed to the caller of _step
        box[1] = e


def _uuid(v):
    import bluetooth
    return bluetooth.UUID(v)
