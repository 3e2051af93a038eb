# Listener mode of the RS485 bus (bms_bus_role "listen"): a JK-PB bank whose
# pack at DIP address 0 is the bus master. It triggers every pack itself, so
# the gateway transmits NOTHING (a second master would collide) and builds
# each pack's snapshot from the replies it hears, attributed by
# jkbms.pb_sniff (docs/jk-bms.md "Listening to a JK master").
#
# One task (JkListener.run) reads the bus for all packs; each pack is a
# HeardPack, a Source without a task of its own. The packs share one raw
# buffer (the console's `raw`: only the pack whose frame is in it shows one).

from codec.errors import DecodeError
from compat import const, sleep_ms, ticks_add, ticks_diff, ticks_ms
from jkbms import cellinfo, settings
from jkbms import frame as J
from jkbms import pb_modbus as pb
from jkbms.pb_sniff import ADDRS, PbSniffer
from pack.snapshot import PackSnapshot
from sources.base import Source

_READ_MS = const(5)
_REQ_WITHIN_MS = const(1000)  # a reply dated by its request only if that came this recently
_SILENT_MS = const(5000)  # longer than the master's ~4.4 s cycle
_SETTINGS_ADDR = const(270)  # settings frame: the pack's own RS485 address (u32)

_NOT_ITS_ADDRESS = "settings frame names another address"


class HeardPack(Source):
    """One pack of the bank, filled by JkListener (it has no task: run() is
    the listener's)."""

    def __init__(self, listener, addr, cfg, log, raw):
        self._listener = listener
        Source.__init__(self, "jk-pb@%d (heard)" % addr, cfg, PackSnapshot(), log, raw)
        self.address = addr
        self.status_ms = 0  # date of the last status frame taken
        self.have_status = False
        self.asked = False  # a request to this address not answered yet

    # the task that makes progress for this pack is the listener's: a pack
    # that falls silent goes stale, it must not starve the watchdog
    @property
    def heartbeat_ms(self):
        return self._listener.heartbeat_ms

    @heartbeat_ms.setter
    def heartbeat_ms(self, ms):
        pass


class JkListener:
    def __init__(self, uart, cfg, log, on_pack):
        self.name = "listen"
        self.uart = uart  # its write() is never called
        self.cfg = cfg
        self.log = log
        self.on_pack = on_pack
        self.heartbeat_ms = ticks_ms()
        self.wire_ms = J.FRAME_LEN * 10 * 1000 // cfg["bms_baud"]
        self.sniff = PbSniffer(self._on_frame, self._on_request)
        self._buf = bytearray(256)
        self._raw = bytearray(512)
        self._raw_owner = None
        self._by_addr = [None] * ADDRS
        self.packs = []
        self.ignored = 0  # frames of addresses that are not configured
        self.exceptions = 0
        self.last_error = ""
        addrs = cfg["bms_addresses"]
        # [] (or a word such as "scan"): take every address that is heard
        self.take_all = isinstance(addrs, str) or not addrs
        if not self.take_all:
            for a in addrs:
                self._add(a)

    def _add(self, addr):
        if not 0 <= addr < ADDRS:
            raise ValueError("JK-PB address must be 0..15")
        p = self._by_addr[addr]
        if p is None:
            p = HeardPack(self, addr, self.cfg, self.log, self._raw)
            self._by_addr[addr] = p
            self.packs.append(p)
            self.on_pack(p)
        return p

    def pack(self, addr):
        return self._by_addr[addr]

    # -- counters -----------------------------------------------------------------
    def resync_bytes(self):
        return self.sniff.noise_bytes()

    def link_text(self, now):
        s = self.sniff
        if not s.rx_bytes:
            quiet = ", nothing heard yet"
        elif ticks_diff(now, s.rx_ms) > _SILENT_MS:
            quiet = ", no traffic for %d s" % (ticks_diff(now, s.rx_ms) // 1000)
        else:
            quiet = ""
        return "RS485: listener (transmits nothing), frames %d, orphans %d, bad %d (sum %d, CRC %d), " \
            "requests seen %d, lone ACKs %d, not configured %d, packs %d%s" % (
                s.attributed, s.orphans, s.bad(), s.bad_sum, s.bad_crc, s.requests, s.lone_acks,
                self.ignored, len(self.packs), quiet)

    # -- what the sniffer hears ---------------------------------------------------
    def _on_request(self, addr, reg, now):
        p = self._by_addr[addr]
        if p is not None:
            if p.asked:
                p.timeouts += 1  # the previous request got no attributed reply
            p.asked = True

    def _on_frame(self, addr, f, frame_ms):
        p = self._by_addr[addr]
        if p is None:
            if not self.take_all:
                self.ignored += 1
                return
            p = self._add(addr)
        p.asked = False
        t = f[4]
        try:
            if t == J.TYPE_CELL_INFO:
                cellinfo.decode(f, 6, J.LAYOUT_JK02_32S, p.snap)
            elif t == J.TYPE_SETTINGS:
                # the one field that says whose frame it is: a second check
                # on top of the ACK (docs/jk-bms.md "Listening to a JK master")
                if f[_SETTINGS_ADDR] != addr or f[_SETTINGS_ADDR + 1] or f[_SETTINGS_ADDR + 2] \
                        or f[_SETTINGS_ADDR + 3]:
                    raise DecodeError(_NOT_ITS_ADDRESS)
                settings.decode(f, p.snap)
            else:
                return  # device info: the master never asks for it
        except DecodeError as e:
            p.decode_errors += 1
            p.last_error = e.args[0]
            return
        self._keep_raw(p, f)
        if t == J.TYPE_CELL_INFO:
            stamp = self.sniff.request_ms(addr, pb.TRIGGER_STATUS, frame_ms, _REQ_WITHIN_MS)
            if stamp < 0:
                stamp = ticks_add(frame_ms, -self.wire_ms)
            p.status_ms = stamp
            p.have_status = True
            p.accepted(stamp)
        else:
            p.polls_ok += 1
            if p.have_status and p.complete():
                # the settings completed a data set: fresh as of its status
                p.fresh.data_ok(p.status_ms, ticks_ms())

    def _keep_raw(self, p, f):
        o = self._raw_owner
        if o is not None and o is not p:
            o.raw_len = 0  # the shared buffer no longer holds its frame
        self._raw_owner = p
        p.keep_raw(f, J.FRAME_LEN)

    # -- the task -------------------------------------------------------------------
    def read_once(self):
        """Drain what the UART holds into the sniffer; never writes."""
        buf = self._buf
        uart = self.uart
        while True:
            n = uart.readinto(buf)
            now = ticks_ms()
            self.heartbeat_ms = now
            if not n:
                return
            self.sniff.feed(buf, n, now)
            if n < len(buf):
                return

    async def run(self):
        self.sniff.reset()
        while True:
            self.read_once()
            await sleep_ms(_READ_MS)
