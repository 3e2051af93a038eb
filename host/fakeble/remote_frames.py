# A frame source for jk_peripheral.JkPeripheral (beside this file) whose frames come from the
# CPython JK-BMS simulator tools/jkbms_sim.py (protocol jk-pb) over its TCP port: the FC10
# trigger requests (docs/jk-bms.md "JK-PB") 0x161C device info, 0x161E settings, 0x1620 cell
# info, each answered by a 300-byte 55AA frame and the 8-byte FC10 ACK, which is stripped. So the
# simulator's state file, drift and faults (bms-silent, bms-garbage, bms-slow, bms-partial) reach
# the BLE peripheral unchanged: a reply that is not a frame + ACK is passed on as it came (the
# BLE source must reject it), and where the simulator sent nothing fresh the peripheral gets
# None = nothing to send. Used by host/sim_firmware.py --ble; runs under MicroPython (unix port)
# and CPython.
#
#   frames = RemoteFrames("127.0.0.1", port, address=1)
#   asyncio.create_task(frames.run())     # pumps the socket; never blocks the event loop
#   p = bluetooth.radio.add(JkPeripheral(mac, frames=frames))
#
# The socket is non-blocking (only the connect to 127.0.0.1 is a plain call: it completes or is
# refused at once). One request is outstanding at a time; cell info is asked for every
# cell_ms, settings every settings_ms, device info every device_ms. A cell-info frame is handed
# out once, and only while it is younger than fresh_ms (so the module passes on no frame the
# simulator served more than fresh_ms before a fault began); settings and device info while
# younger than keep_ms (a missed refresh is tolerated).
import socket

# the firmware's Modbus RTU builders (firmware/lib is on the path of every caller: sim_firmware.py)
from jkbms import pb_modbus as pb
from modbus.crc import put_crc

try:
    from time import ticks_diff, ticks_ms
except ImportError:  # CPython
    from time import monotonic

    def ticks_ms():
        return int(monotonic() * 1000)

    def ticks_diff(a, b):
        return a - b


try:
    import asyncio

    _sleep_ms = asyncio.sleep_ms
except AttributeError:  # CPython

    async def _sleep_ms(ms):
        await asyncio.sleep(ms / 1000)


DEVICE = pb.TRIGGER_ABOUT
SETTINGS = pb.TRIGGER_SETTINGS
CELL = pb.TRIGGER_STATUS
_HEADER = b"\x55\xaa\xeb\x90"
_EAGAIN = (11, 35, 115)  # EAGAIN, EWOULDBLOCK (BSD), EINPROGRESS


def trigger(address, register):
    """The 11-byte FC10 write of 0x0000 to a trigger register (the firmware's own builder)."""
    buf = bytearray(16)
    return bytes(buf[:pb.build_trigger(buf, address, register)])


def ack(address, register):
    """The 8-byte FC10 ACK the simulator sends behind the frame."""
    buf = bytearray((address, 0x10, register >> 8, register & 0xFF, 0, 1, 0, 0))
    return bytes(buf[:put_crc(buf, 6)])


class RemoteFrames:
    def __init__(self, host, port, address=1, cell_ms=200, settings_ms=2000, device_ms=10000,
                 fresh_ms=400, keep_ms=5000, reply_ms=2000, idle_ms=100, retry_ms=500):
        self.addr = socket.getaddrinfo(host, port)[0][-1]
        self.address = address
        self.cell_ms = cell_ms
        self.settings_ms = settings_ms
        self.device_ms = device_ms
        self.fresh_ms = fresh_ms
        self.keep_ms = keep_ms
        self.reply_ms = reply_ms
        self.idle_ms = idle_ms
        self.retry_ms = retry_ms
        self.sock = None
        self._closed_ms = None
        self._buf = bytearray()
        self._want = None  # register of the outstanding request
        self._sent_ms = 0
        self._rx_ms = 0  # last byte of the reply in progress
        self._asked = {DEVICE: None, SETTINGS: None, CELL: None}  # last request per register
        self._latest = {DEVICE: None, SETTINGS: None, CELL: None}  # [data, received ms, handed out]
        # records
        self.requests = 0
        self.frames = 0  # replies that were a 300-byte 55AA frame + its ACK
        self.junk = 0  # replies passed on as they came (garbled, cut, random bytes)
        self.timeouts = 0  # requests without any reply in reply_ms
        self.connects = 0
        self.handed = {DEVICE: 0, SETTINGS: 0, CELL: 0}
        self.none = {DEVICE: 0, SETTINGS: 0, CELL: 0}  # asked for, nothing fresh to give

    # ----- what the peripheral asks (synchronously, from the radio's task)

    def device_info(self):
        return self._take(DEVICE, self.keep_ms, False)

    def settings(self):
        return self._take(SETTINGS, self.keep_ms, False)

    def cell_info(self):
        return self._take(CELL, self.fresh_ms, True)

    def _take(self, reg, max_age, once):
        e = self._latest[reg]
        if e is None or (once and e[2]) or ticks_diff(ticks_ms(), e[1]) > max_age:
            self.none[reg] += 1
            return None
        e[2] = True
        self.handed[reg] += 1
        return e[0]

    # ----- the link to the simulator

    def _open(self, now):
        s = socket.socket()
        try:
            s.connect(self.addr)
        except OSError:
            s.close()
            self._closed_ms = now
            return
        s.setblocking(False)
        self.sock = s
        self.connects += 1
        self._buf = bytearray()
        self._want = None

    def _close(self, now):
        if self.sock is not None:
            self.sock.close()
        self.sock = None
        self._closed_ms = now
        self._want = None

    def _recv(self, now):
        try:
            data = self.sock.recv(512)
        except OSError as e:
            if e.args and e.args[0] in _EAGAIN:
                return False
            self._close(now)
            return False
        if data is None:  # MicroPython: non-blocking stream, nothing there
            return False
        if not data:  # the simulator closed the connection
            self._close(now)
            return False
        if self._want is not None:
            self._buf.extend(data)
            self._rx_ms = now
        return True  # bytes between replies (bms-garbage noise) are dropped

    def _due(self, now):
        for reg, every in ((DEVICE, self.device_ms), (SETTINGS, self.settings_ms), (CELL, self.cell_ms)):
            t = self._asked[reg]
            if t is None or ticks_diff(now, t) >= every:
                return reg
        return None

    def _done(self, now, data):
        reg = self._want
        self._want = None
        self._buf = bytearray()
        if data:
            self._latest[reg] = [data, now, False]

    def poll(self):
        """One non-blocking step: (re)connect, read, finish or time out the reply in progress,
        send the next request that is due."""
        now = ticks_ms()
        if self.sock is None:
            if self._closed_ms is not None and ticks_diff(now, self._closed_ms) < self.retry_ms:
                return
            self._open(now)
            if self.sock is None:
                return
        while self.sock is not None and self._recv(now):
            pass
        if self.sock is None:
            return
        if self._want is not None:
            buf = self._buf
            a = ack(self.address, self._want)
            k = bytes(buf).find(a)
            if k >= 0:
                data = bytes(buf[:k])
                if len(data) == 301 and data[300] == 0:  # --pad: 0x00 before (and after) the ACK
                    data = data[:300]
                if len(data) == 300 and data[:4] == _HEADER:
                    self.frames += 1
                else:
                    self.junk += 1
                self._done(now, data)
            elif buf and ticks_diff(now, self._rx_ms) >= self.idle_ms:
                self.junk += 1  # no ACK behind it: passed on as it came
                self._done(now, bytes(buf))
            elif not buf and ticks_diff(now, self._sent_ms) >= self.reply_ms:
                self.timeouts += 1
                self._done(now, None)
            else:
                return
        reg = self._due(now)
        if reg is None:
            return
        try:
            self.sock.send(trigger(self.address, reg))
        except OSError:
            self._close(now)
            return
        self.requests += 1
        self._asked[reg] = now
        self._want = reg
        self._sent_ms = now
        self._buf = bytearray()

    async def run(self, every_ms=10):
        while True:
            self.poll()
            await _sleep_ms(every_ms)

    def close(self):
        self._close(ticks_ms())
