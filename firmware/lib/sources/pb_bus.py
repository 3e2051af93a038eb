# Master role on a JK-PB RS485 bus with several packs (docs/jk-bms.md
# "Several packs on one bus"): one task polls every pack in turn, one cycle
# per bms_poll_ms, over one UartBus. Each pack is a JkPbSource with its own
# snapshot and freshness; the reply extractor and the raw buffer are shared.
#
# * The cycle keeps a fixed schedule like poll_forever. Pack i may use the
#   time of the cycle that the packs after it do not need, so a settings
#   read goes where there is room.
# * A pack without fresh data whose poll got no reply is asked again only
#   after 1, 2, 4 ... cycles (at most every _RETRY_MAX_MS), and only one such
#   pack per cycle: a silent pack costs a reply time and the drain after it
#   (one reply time on a bus of several), which must not make the packs that
#   do answer stale.
# * bms_addresses "scan": addresses 1..15 are probed once at boot (one
#   status read each, short drain) and the cycle polls those that answered;
#   with none found the scan repeats every _RESCAN_MS.
# * Another master on the bus (a pack at DIP address 0, or a second gateway)
#   collides with ours: its trigger requests, or an ACK from address 0, seen
#   between our exchanges are reported once per _FOREIGN_MS.

from codec.errors import DecodeError
from compat import const, sleep_ms, ticks_add, ticks_diff, ticks_ms
from jkbms import pb_modbus as pb
from modbus.crc import crc_ok
from sources.base import FRESH
from sources.jk_pb import JkPbSource
from sources.uart_bus import LATE_FACTOR, UartBus

_READ_MS = const(60)  # one status read and its ACK at 115200 baud, reply delay included
_SCAN_REPLY_MS = const(200)
_RESCAN_MS = const(30000)
_RETRY_MAX_MS = const(30000)
_FOREIGN_MS = const(60000)
_WIN = const(11)  # an FC10 trigger request is 11 bytes, its ACK 8


class PbBus:
    def __init__(self, uart, cfg, log, on_pack):
        self.cfg = cfg
        self.log = log
        self.on_pack = on_pack  # fn(src): a pack is known (the battery aggregate registers it)
        self.on_cycle = None  # fn(now, fits) after each full cycle (the battery rebuilds its aggregate)
        self.warn = None  # fn(msg): a warning event (RS485 trouble); None: log
        self.bus = UartBus(uart, cfg["bms_reply_ms"], cfg["bms_retries"], cfg["bms_gap_ms"])
        self.bus.sniff = self._sniff
        self.name = "jk-pb bus"
        self.packs = []
        self.cycles = 0
        self.cycle_ms = 0  # duration of the last cycle
        self.foreign = 0  # another master's frames seen
        self._foreign_said = 0
        self._foreign_at = 0
        self._win = bytearray(_WIN)
        self._wlen = 0
        self.scanning = cfg["bms_addresses"] == "scan"
        self.found = None  # addresses the last scan found
        self._hb = ticks_ms()
        if not self.scanning:
            for a in cfg["bms_addresses"] or (cfg["bms_address"],):
                self._add(a)

    def _add(self, address):
        src = JkPbSource(self.bus, self.cfg, _snapshot(), self.log, address)
        src.silent = False  # its last poll got no byte at all
        src.skip = 0  # cycles to leave it out (while its data is not fresh)
        src.wait = 1  # the next back-off, in cycles
        self.packs.append(src)
        self.on_pack(src)

    def _beat(self):
        self._hb = ticks_ms()

    # the watchdog's view: this task, or any pack's exchange on the bus (a
    # poll that waits for a silent pack beats through the bus)
    @property
    def heartbeat_ms(self):
        b = self.bus.beat_ms
        return b if ticks_diff(b, self._hb) > 0 else self._hb

    @heartbeat_ms.setter
    def heartbeat_ms(self, v):
        self._hb = v

    def link_text(self, now):
        role = "scanning 1..15" if self.scanning else "master of %d pack(s)" % len(self.packs)
        if self.found is not None:
            role += ", scan found %s" % (", ".join("%d" % a for a in self.found) or "none")
        return "RS485: %s, cycle %d ms, cycles %d, gap %d ms%s" % (
            role, self.cycle_ms, self.cycles, self.bus.gap_ms,
            (", ANOTHER MASTER seen %d times" % self.foreign) if self.foreign else "")

    # -- another master ---------------------------------------------------------
    def _sniff(self, buf, n):
        """Bytes drained outside our exchanges, slid through an 11-byte
        window: a valid trigger request or an ACK from address 0 there was
        not ours."""
        w = self._win
        for i in range(n):
            for k in range(_WIN - 1):
                w[k] = w[k + 1]
            w[_WIN - 1] = buf[i]
            if self._wlen < _WIN:
                self._wlen += 1
            if self._wlen >= 8 and w[3] == 0 and w[4] == 0x10 and w[5] == 0x16 and crc_ok(w, 3, _WIN):
                self._seen_foreign()  # an ACK of address 0: a JK master answering itself
            elif (self._wlen == _WIN and w[1] == 0x10 and w[2] == 0x16 and w[0] <= 15
                  and crc_ok(w, 0, _WIN)):
                self._seen_foreign()  # a trigger request we did not send

    def _seen_foreign(self):
        self.foreign += 1
        self._wlen = 0
        now = ticks_ms()
        if not self._foreign_said or ticks_diff(now, self._foreign_at) >= _FOREIGN_MS:
            self._foreign_said = 1
            self._foreign_at = now
            (self.warn or self.log)("another bus master is polling (a pack set to DIP address 0?): our "
                                    "requests collide with it; set bms_bus_role to \"listen\"")

    # -- scan -------------------------------------------------------------------
    def _feed(self, buf, n):
        self._r.feed(buf, 0, n)

    async def _scan(self):
        """Probe 1..15 once with a status trigger; keep those that answer."""
        bus = self.bus
        t0 = ticks_ms()
        req = bytearray(16)
        self._r = r = pb.TriggerReply()  # its own: FC03 packs keep other buffers on the bus
        found = []
        reply = bus.reply_ms
        bus.reply_ms = _SCAN_REPLY_MS if reply > _SCAN_REPLY_MS else reply
        try:
            for a in range(1, 16):
                n = pb.build_trigger(req, a, pb.TRIGGER_STATUS)
                r.start(a, pb.TRIGGER_STATUS)
                self._beat()
                try:
                    if await bus.exchange(self, memoryview(req)[:n], self._feed, r.poll, 1):
                        found.append(a)
                except DecodeError as e:  # something answers there, but not as a JK-PB
                    self.log("RS485 scan: address %d: %s" % (a, e.args[0]))
                await bus.gap()
        finally:
            bus.reply_ms = reply
        self.found = found
        for a in found:
            self._add(a)
        self._r = None
        self.log("RS485 scan of 1..15 in %d ms: %s" % (
            ticks_diff(ticks_ms(), t0),
            ("JK-PB packs at " + ", ".join("%d" % a for a in found)) if found
            else "no JK-PB pack answered (DIP addresses, baud rate, A/B wires?); again in %d s" % (
                _RESCAN_MS // 1000)))
        self.scanning = not found

    # -- the cycle --------------------------------------------------------------
    async def cycle(self, period):
        """Poll every pack once (those in back-off excepted) within period."""
        bus = self.bus
        start = ticks_ms()
        end = ticks_add(start, period)
        per = bus.gap_ms + _READ_MS
        packs = self.packs
        n = len(packs)
        # several packs: every reply names its pack (the ACK's or the FC03
        # reply's address), so another pack's late reply cannot be taken for
        # ours, and the next request to the same pack comes a cycle later:
        # one reply time of drain is enough, not five (docs/jk-bms.md
        # "Several packs on one bus")
        bus.late = 1 if n > 1 else LATE_FACTOR
        retried = False
        extra = False
        for i in range(n):
            src = packs[i]
            fresh = src.fresh.state(ticks_ms()) == FRESH
            if src.silent:  # its last poll got no byte at all
                if src.skip and not fresh:
                    src.skip -= 1
                    continue
                if retried:
                    continue  # one silent pack per cycle
                retried = True
            self._beat()
            now = ticks_ms()
            budget = ticks_diff(end, now) - (n - 1 - i) * per + bus.gap_ms
            room = 2 * bus.reply_ms + 3 * bus.gap_ms  # the status read, then one more read
            if budget < room and src.device is None and not src.fc03 and not extra:
                # a full bus leaves no pack room for its one device-info
                # read: one pack per cycle gets that room, until all have it
                extra = True
                budget = room
            ok = await src.poll_once(budget if budget > per else per)
            self._beat()
            if ok or bus.rx_bytes:
                src.silent = False
                src.skip = 0
                src.wait = 1
            else:
                src.silent = True
                retried = True
                if fresh:  # just fell silent: asked every cycle until its data is stale
                    src.skip = 0
                    src.wait = 1
                else:  # no data to keep fresh: back off, 1, 2, 4 ... cycles
                    src.skip = src.wait
                    top = _RETRY_MAX_MS // period if period < _RETRY_MAX_MS else 1
                    src.wait = src.wait * 2 if src.wait * 2 < top else top
            if i < n - 1:
                await bus.gap()
        self.cycles += 1
        now = ticks_ms()
        self.cycle_ms = ticks_diff(now, start)
        if self.on_cycle is not None:
            self.on_cycle(now, self.cycle_ms + bus.gap_ms <= period)

    async def run(self):
        period = self.cfg["bms_poll_ms"]
        due = ticks_ms()
        gap = self.bus.gap_ms
        while True:
            self._beat()
            if self.scanning:
                await self._scan()
                if self.scanning:
                    due = ticks_add(ticks_ms(), _RESCAN_MS)
                    while ticks_diff(due, ticks_ms()) > 0:
                        self._beat()
                        await sleep_ms(500)
                    continue
                due = ticks_ms()
            await self.cycle(period)
            now = ticks_ms()
            self._beat()
            due = ticks_add(due, period)
            if ticks_diff(due, now) < gap:  # an overlong cycle: never hammer the packs
                due = ticks_add(now, gap)
            await sleep_ms(ticks_diff(due, now))


def _snapshot():
    from pack.snapshot import PackSnapshot
    return PackSnapshot()
