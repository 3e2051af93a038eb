# Host adapters for running the real firmware application under the
# MicroPython unix port (and CPython): a UART that is a TCP connection to the
# BMS simulator, a watchdog that "resets" (exits) when it is not fed, and a
# non-blocking console on stdin. They mirror the interfaces the ESP32
# adapters in firmware/main.py provide.

import socket
import sys

try:
    from time import ticks_diff, ticks_ms
except ImportError:
    sys.path.insert(0, __file__.rsplit("/", 2)[0] + "/firmware/lib")
    from compat import ticks_diff, ticks_ms

WDT_EXIT_CODE = 3


class SocketUart:
    """Non-blocking write(buf) / readinto(buf) over TCP, like machine.UART
    with timeout=0. A lost connection is re-opened on the next write."""

    def __init__(self, host, port):
        self.addr = socket.getaddrinfo(host, port)[0][-1]
        self.sock = None
        self.reconnects = 0
        self._open()

    def _open(self):
        s = socket.socket()
        try:
            s.connect(self.addr)
        except OSError:
            s.close()
            self.sock = None
            return
        s.setblocking(False)
        self.sock = s

    def _close(self):
        if self.sock is not None:
            self.sock.close()
        self.sock = None

    def write(self, buf):
        if self.sock is None:
            self.reconnects += 1
            self._open()
            if self.sock is None:
                return 0  # like a UART with nothing attached
        try:
            return self.sock.send(buf)
        except OSError:
            self._close()
            return 0

    def readinto(self, buf):
        if self.sock is None:
            return None
        try:
            if hasattr(self.sock, "recv_into"):  # CPython
                n = self.sock.recv_into(buf)
            else:  # MicroPython: sockets are streams
                n = self.sock.readinto(buf)
        except OSError as e:
            if e.args and e.args[0] in (11, 35):  # EAGAIN / EWOULDBLOCK
                return None
            self._close()
            return None
        if n == 0:  # peer closed
            self._close()
            return None
        return n


class HostWdt:
    """machine.WDT stand-in: exits the process with code 3 when it has not
    been fed for timeout_ms (checked on every feed attempt and by check())."""

    def __init__(self, timeout_ms):
        self.timeout_ms = timeout_ms
        self.last = ticks_ms()
        self.feeds = 0

    def feed(self):
        self.feeds += 1
        self.last = ticks_ms()

    def check(self):
        if ticks_diff(ticks_ms(), self.last) > self.timeout_ms:
            print("WATCHDOG: not fed for %d ms -> reset" % self.timeout_ms)
            sys.exit(WDT_EXIT_CODE)
