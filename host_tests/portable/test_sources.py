# sources/: per-source freshness (with the stale latch against the 30-bit
# tick wrap), the JK-PB source on a fake UART that answers with real
# captures, and the reasons a failed poll reports. CPython and MicroPython.

from fakes import FakeUart, pb_replies

import sources
from app import config as C
from compat import ticks_add, ticks_diff, ticks_ms
from jkbms import pb_modbus as pb
from pack.snapshot import PackSnapshot
from sources import base as B
from sources.uart_bus import GARBLED, LATE_FACTOR, NO_REPLY


def test_freshness_states_and_recovery():
    f = B.Freshness(5000)
    assert f.state(1000) == B.WAIT and f.age_ms(1000) == -1
    f.data_ok(1000)
    assert f.state(6000) == B.FRESH
    assert f.state(6001) == B.STALE
    f.data_ok(7000)
    assert f.state(7001) == B.FRESH
    # across the ticks wrap-around (2**30 on the ESP32)
    f.data_ok(ticks_add(0, -200))
    assert f.age_ms(300) == 500 and f.state(300) == B.FRESH


def test_a_stale_link_never_reads_fresh_again_for_any_outage_length():
    # ticks_diff() wraps after 2**29 ms (6.2 days): without the latch the
    # age of week-old data looks small again and the data "fresh"
    f = B.Freshness(5000)
    t0 = 123456
    f.data_ok(t0)
    t = t0
    step = 3600 * 1000  # the state is looked at every hour of a 30-day outage
    seen_stale = False
    for _ in range(30 * 24):
        t = ticks_add(t, step)
        st = f.state(t)
        assert st == B.STALE, (t, st)
        seen_stale = True
        age = f.age_ms(t)
        assert age == B.AGE_UNKNOWN or age > 5000
    assert seen_stale
    # every 2**30 ms (12.4 days) the counter is back at t0: "0 ms old"
    assert f.state(t0) == B.STALE and f.state(ticks_add(t0, 10)) == B.STALE
    f.data_ok(t)  # only new data makes it fresh
    assert f.state(ticks_add(t, 10)) == B.FRESH


def test_freshness_negative_age_is_stale_even_when_first_seen_late():
    # first look only after the counter wrapped: age negative -> stale, latched
    f = B.Freshness(5000)
    f.data_ok(0)
    t = 1 << 29  # ticks_diff(t, 0) wraps to -2**29
    assert f.state(t) == B.STALE
    assert f.state(ticks_add(t, (1 << 29) - 100)) == B.STALE  # "100 ms old" by the wrapped counter


def trigger(request):
    return (request[2] << 8) | request[3]  # FC10 register


def make_source(replies=None, noise=b"", **over):
    cfg = C.defaults()
    for k in over:
        cfg[k] = over[k]
    snap = PackSnapshot()
    uart = FakeUart(pb_replies() if replies is None else replies, noise)
    return sources.make(cfg, uart, snap, print), snap, uart


async def test_jk_pb_source_reads_a_pack_through_noise():
    src, snap, uart = make_source(noise=b"\x00\xff\x13", bms_reply_ms=300)
    assert src.name == "jk-pb@1"
    assert await src.poll_once()
    assert snap.settings_ok == 1 and snap.max_charge_ma == 150000
    assert snap.pack_mv == 26852 and snap.soc_pct == 88
    assert src.fresh.have_data and src.polls_ok == 1  # complete after the first poll
    assert src.raw_len == 300 and src.raw[4] == 0x01  # the settings frame came last
    assert await src.poll_once()
    assert src.device_info()["model"] == "JK_PB2A16S15P"
    # the status read comes first in every poll; settings, then device info, in what is left
    assert [trigger(r) for r in uart.requests] == [pb.TRIGGER_STATUS, pb.TRIGGER_SETTINGS,
                                                   pb.TRIGGER_STATUS, pb.TRIGGER_ABOUT]


async def test_a_silent_bms_leaves_the_snapshot_untouched_and_says_no_reply():
    src, snap, _ = make_source({}, bms_reply_ms=60, bms_retries=1)
    assert not await src.poll_once()
    assert src.timeouts >= 2 and not src.fresh.have_data and snap.updates == 0
    assert src.last_error == NO_REPLY


class GarbleUart(FakeUart):
    """What a wrong baud rate looks like: bytes arrive, no frame is valid."""

    def write(self, buf):
        self.requests.append(bytes(buf))
        self.pending += bytes((0x3F, 0xC0, 0x0F, 0xF3, 0xFC, 0x7E)) * 20
        return len(buf)


async def test_garbled_bytes_are_reported_as_such_not_as_silence():
    cfg = C.defaults()
    cfg["bms_reply_ms"] = 60
    cfg["bms_retries"] = 0
    src = sources.make(cfg, GarbleUart({}), PackSnapshot(), print)
    assert not await src.poll_once()
    assert src.last_error == GARBLED and "baud rate" in GARBLED
    assert src.resync_bytes() > 0 and not src.fresh.have_data


async def test_a_corrupted_status_frame_is_refused():
    replies = pb_replies()
    b = bytearray(16)
    n = pb.build_trigger(b, 1, pb.TRIGGER_STATUS)
    bad = bytearray(replies[bytes(b[:n])])
    bad[150] ^= 0x40  # pack voltage byte: checksum now wrong
    replies[bytes(b[:n])] = bytes(bad)
    src, snap, _ = make_source(replies, bms_reply_ms=100, bms_retries=0)
    assert not await src.poll_once()
    assert snap.updates == 0 and snap.settings_ok == 1  # settings read, status refused
    assert not src.fresh.have_data and src.decode_errors + src.timeouts == 1
    assert src.last_error == GARBLED or "checksum" in src.last_error, src.last_error


def test_only_the_configured_source_module_is_loaded():
    import sys
    for name in ("sources.jk_pb", "sources.jk_4e57", "jkbms.nw"):
        if name in sys.modules:
            del sys.modules[name]
    make_source()
    assert "sources.jk_pb" in sys.modules
    assert "sources.jk_4e57" not in sys.modules and "jkbms.nw" not in sys.modules
    cfg = C.defaults()
    cfg["bms_protocol"] = "jk-nw"
    src = sources.make(cfg, FakeUart({}), PackSnapshot(), print)
    assert src.name == "jk-4e57" and "sources.jk_4e57" in sys.modules


def _without(replies, reg):
    b = bytearray(16)
    n = pb.build_trigger(b, 1, reg)
    out = dict(replies)
    del out[bytes(b[:n])]
    return out


async def test_an_unanswered_device_info_read_never_delays_the_status_read():
    # the device-info trigger used to be retried first in every poll for 6.3 s: first data at 7 s,
    # then 0 A <-> 100 A flapping every ~7 s
    src, snap, uart = make_source(_without(pb_replies(), pb.TRIGGER_ABOUT), bms_reply_ms=100)
    t0 = ticks_ms()
    for _ in range(4):
        assert await src.poll_once()
        assert src.fresh.state(ticks_ms()) == B.FRESH
    assert src.device is None and src.device_info() is None
    sent = [trigger(r) for r in uart.requests]
    assert sent[0] == pb.TRIGGER_STATUS and sent.count(pb.TRIGGER_STATUS) == 4
    assert sent.count(pb.TRIGGER_ABOUT) == 1  # then it backs off on its own (10 s, doubling)
    assert ticks_diff(ticks_ms(), t0) < 4 * 1000  # every poll stayed inside its 1 s period


async def test_a_lost_settings_re_read_never_delays_the_status_read():
    src, snap, uart = make_source(bms_reply_ms=100, bms_settings_s=10)
    assert await src.poll_once()
    src.uart_replies = uart.replies
    uart.replies = _without(uart.replies, pb.TRIGGER_SETTINGS)  # the BMS stops answering settings
    src.settings_ms = ticks_add(ticks_ms(), -11000)  # a re-read is due
    for _ in range(3):
        t = ticks_ms()
        assert await src.poll_once()  # the status read succeeds first every time
        assert src.fresh.state(ticks_ms()) == B.FRESH
        # the budget stops the settings retries; only the drain after the last timeout runs past it
        assert ticks_diff(ticks_ms(), t) < 1000 + LATE_FACTOR * 100
    assert snap.settings_ok == 1  # the settings read before stay in use


async def test_retries_on_a_silent_bms_stop_at_the_poll_budget():
    src, snap, uart = make_source({}, bms_reply_ms=300, bms_retries=5, bms_poll_ms=1000)
    t = ticks_ms()
    assert not await src.poll_once()
    took = ticks_diff(ticks_ms(), t)
    # 5 retries of the status read would take 6 x (300 ms + the 1.5 s drain): the 1 s budget leaves room
    # for none; a status read that got no byte at all is not followed by the settings read (a silent
    # pack must not hold up the other packs on its bus twice per cycle)
    one = 300 + LATE_FACTOR * 300
    assert took <= one + 50, took
    assert src.timeouts == 1
    assert [trigger(r) for r in uart.requests] == [pb.TRIGGER_STATUS]


class Fc03Uart(FakeUart):
    """Answers every FC03 read of slave 1 with zeros (enough to count reads)."""

    def write(self, buf):
        from modbus import crc
        req = bytes(buf)
        self.requests.append(req)
        if len(req) == 8 and req[0] == 1 and req[1] == 3:
            count = (req[4] << 8) | req[5]
            out = bytearray(5 + 2 * count)
            out[0], out[1], out[2] = 1, 3, 2 * count
            crc.put_crc(out, 3 + 2 * count)
            self.pending += out
        return len(req)


async def test_the_fc03_status_block_fits_the_default_poll():
    # five reads of the status block with 100 ms gaps and the default 500 ms reply time: every
    # part's first attempt goes, whatever is left of the budget (only retries and optional reads
    # are held to it)
    cfg = C.defaults()
    cfg["bms_read"] = "fc03"
    uart = Fc03Uart({})
    src = sources.make(cfg, uart, PackSnapshot(), print)
    await src.poll_once()  # a zero image does not decode; the point is which reads went out
    status_reads = [r for r in uart.requests if (r[2] << 8 | r[3]) >= 0x1200]
    assert len(status_reads) == len(src._blocks[0].plan) == 5


class LateUart(FakeUart):
    """Every reply arrives late_ms after its request."""

    def __init__(self, replies, late_ms):
        FakeUart.__init__(self, replies)
        self.late_ms = late_ms
        self.queue = []

    def write(self, buf):
        req = bytes(buf)
        self.requests.append(req)
        reply = self.replies.get(req)
        if reply is not None:
            self.queue.append((ticks_add(ticks_ms(), self.late_ms), req + reply))
        return len(req)

    def readinto(self, buf):
        now = ticks_ms()
        while self.queue and ticks_diff(now, self.queue[0][0]) >= 0:
            self.pending += self.queue.pop(0)[1]
        return FakeUart.readinto(self, buf)


async def test_replies_later_than_the_reply_time_never_count_as_data():
    # a BMS answering every request 2.2-2.6 s late (reply time 0.5 s): its replies used to land in the
    # next request's window (the retry's) and be accepted -- 0 stale bursts in 20 s. Here 5.2 reply
    # times late (2.6 s at the default 500 ms), scaled to a 100 ms reply time so the test runs in seconds.
    from compat import sleep_ms
    src, snap, _ = make_source({}, bms_reply_ms=100, bms_poll_ms=1000, bms_timeout_s=2)
    uart = LateUart(pb_replies(), 520)
    src.bus.uart = uart
    t0 = ticks_ms()
    for k in range(4):  # on the poll schedule
        assert not await src.poll_once()
        await sleep_ms(ticks_diff(ticks_add(t0, (k + 1) * 1000), ticks_ms()))
    assert not src.fresh.have_data and snap.updates == 0 and src.polls_ok == 0
    assert src.timeouts >= 4 and len(uart.requests) >= 4  # every reply came, every one too late
