# Listener mode (sources.jk_listen, jkbms.pb_sniff): a JK-PB bank whose pack at
# address 0 is the bus master, heard from the bus only. A bus byte stream is
# built from real captures (the master's broadcasts with their address-0 ACKs,
# requests and replies of slaves 1 and 2 with 0x00 pads and an echoed request,
# probes of absent addresses) and fed in random-sized chunks. CPython and
# MicroPython.

from fakes import pb_ack, pb_request
from fixtures import find_frame, unhex
from mpcompat import IS_MICROPYTHON, IS_WASM, bytes_allocated, run_locked

from compat import sleep_ms, ticks_add, ticks_diff, ticks_ms
from jkbms import cellinfo, pb_sniff, settings
from jkbms import frame as J
from jkbms import pb_modbus as pb
from pack.snapshot import PackSnapshot
from sources import base as B
from sources.jk_listen import JkListener

ST = pb.TRIGGER_STATUS
SE = pb.TRIGGER_SETTINGS
_F = {}


def with_byte(frame, off, value):
    """A copy of a 55AA frame with one byte changed, its sum8 made right again."""
    f = bytearray(frame[:300])
    f[off] = value
    s = 0
    for i in range(299):
        s += f[i]
    f[299] = s & 0xFF
    return bytes(f)


def frames():
    """addr -> (status frame, settings frame): three different packs. The settings name their
    address at byte 270 (as the captures do: 1 in the address-1 capture, 3 in the DSB one)."""
    if not _F:
        st_a = unhex(find_frame("rs485_pb_status_response_with_ack_mpp")["hex"])[:300]
        se_a = unhex(find_frame("rs485_pb_settings_response_with_ack_mpp")["hex"])[:300]
        st_b = unhex(find_frame("rs485_pb_status_0x1620_response_dsb")["hex"])[:300]
        se_b = unhex(find_frame("rs485_pb_settings_0x161e_response_dsb")["hex"])[:300]
        _F[0] = (with_byte(st_a, 6 + 167, 70), with_byte(se_a, 270, 0))  # SOC 70 %
        _F[1] = (st_a, se_a)
        _F[2] = (st_b, with_byte(se_b, 270, 2))
    return _F


ack = pb_ack
req = pb_request


def reply(addr, reg, frame, pads=True):
    """A slave's answer: 55AA frame, then its ACK, with a 0x00 before and after the ACK."""
    z = b"\x00" if pads else b""
    return frame + z + ack(addr, reg) + z


def cycle(packs=(0, 1, 2), probes=True):
    """One poll cycle of the master, as heard on the bus."""
    f = frames()
    out = bytearray()
    if 0 in packs:  # the master's own frames, each followed by an address-0 ACK
        out += f[0][0] + ack(0, ST) + f[0][1] + ack(0, SE)
    for a in (1, 2):
        for reg, frame in ((ST, f[a][0]), (SE, f[a][1])):
            r = req(a, reg)
            out += r
            if a == 2:
                out += r  # the request echoed
            if a in packs:
                out += reply(a, reg, frame, a == 1)
    if probes:
        for a in range(3, 16):  # absent addresses: asked, never answered
            out += req(a, ST)
    return bytes(out)


def expected(addr):
    s = PackSnapshot()
    st, se = frames()[addr]
    settings.decode(se, s)
    cellinfo.decode(st, 6, J.LAYOUT_JK02_32S, s)
    return s


class NoWriteUart:
    """Scripted bus: readinto hands out the queued chunks; write raises."""

    def __init__(self, chunks=()):
        self.chunks = list(chunks)
        self.reads = 0

    def write(self, buf):
        raise AssertionError("the listener transmitted")

    def readinto(self, buf):
        self.reads += 1
        if not self.chunks:
            return None
        c = self.chunks.pop(0)
        n = len(c)
        if n > len(buf):
            self.chunks.insert(0, c[len(buf):])
            n = len(buf)
        for i in range(n):
            buf[i] = c[i]
        return n


def chunks(data, seed=1, most=97):
    out = []
    i = 0
    x = seed
    while i < len(data):
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        k = 1 + (x >> 8) % most
        out.append(data[i:i + k])
        i += k
    return out


def listener(addrs=None, timeout_s=10, baud=115200):
    made = []
    cfg = {"bms_addresses": [] if addrs is None else addrs, "bms_timeout_s": timeout_s, "bms_baud": baud}
    li = JkListener(NoWriteUart(), cfg, print, made.append)
    return li, made


def feed(li, data, now=None, seed=1):
    t = ticks_ms() if now is None else now
    for c in chunks(data, seed):
        li.sniff.feed(c, len(c), t)


def same_values(a, b):
    return (a.pack_mv == b.pack_mv and a.soc_pct == b.soc_pct and a.cell_count == b.cell_count
            and a.current_ma == b.current_ma and a.max_charge_ma == b.max_charge_ma
            and list(a.cells) == list(b.cells) and a.settings_ok == b.settings_ok)


# -- the frame judge -------------------------------------------------------------------

def test_trigger_requests_and_acks_are_recognised_whole():
    r = req(1, ST)
    a = ack(1, ST)
    assert len(r) == 11 and pb.frame_len_at(r, 0, 11) == 11  # the shared judge knows the request
    assert pb_sniff.judge(r, 0, 11) == 11 and pb_sniff.judge(a, 0, 8) == 8
    assert pb_sniff.judge(r, 0, 9) == 0  # PENDING: not taken for an ACK with a wrong CRC
    bad_r = bytearray(r)
    bad_r[10] ^= 1
    bad_a = bytearray(a)
    bad_a[6] ^= 1
    # corrupted ones are handed over whole (to be counted), where the shared judge skips them
    assert pb.frame_len_at(bad_r, 0, 11) <= 0 and pb_sniff.judge(bad_r, 0, 11) == 11
    assert pb.frame_len_at(bad_a, 0, 8) <= 0 and pb_sniff.judge(bad_a, 0, 8) == 8
    # no ACK of a trigger, of any address, has a CRC that reads as the start of a request
    for addr in range(16):
        for reg in (0x161C, 0x161E, 0x1620):
            k = ack(addr, reg)
            assert not (k[6] == 2 and k[7] == 0), (addr, reg)


# -- attribution ---------------------------------------------------------------------------

def test_each_address_gets_its_own_pack_values():
    li, made = listener()
    assert li.packs == [] and made == []
    for seed in (1, 2, 3):
        feed(li, cycle(), seed=seed)
    s = li.sniff
    assert [p.address for p in li.packs] == [0, 1, 2] and made == li.packs
    assert [p.name for p in li.packs] == ["jk-pb@0 (heard)", "jk-pb@1 (heard)", "jk-pb@2 (heard)"]
    for p in li.packs:
        assert same_values(p.snap, expected(p.address)), p.name
        assert p.polls_ok == 6 and p.decode_errors == 0 and p.fresh.have_data
    assert li.packs[0].snap.soc_pct == 70 and li.packs[1].snap.soc_pct == 88 and li.packs[2].snap.soc_pct == 55
    assert s.attributed == 18 and s.orphans == 0 and s.bad() == 0
    assert s.requests == 3 * (4 + 13) and s.echoes == 3 * 2 and s.req_count[2] == 6 and s.req_count[5] == 3
    assert li.packs[1].timeouts == 0  # every request to 1 was answered
    assert li.ignored == 0


def test_a_frame_without_its_ack_is_never_attributed():
    f = frames()
    cases = (
        # no ACK: the next request orphans it
        f[1][0] + req(2, ST),
        # the ACK of the other trigger (a settings ACK after a status frame)
        f[1][0] + ack(1, SE),
        # a request between frame and ACK
        f[1][0] + req(2, ST) + ack(1, ST),
        # another Modbus frame between them (an FC03 read)
        f[1][0] + bytes(b"\x01\x03\x12\x90\x00\x02\xc1\x5e") + ack(1, ST),
    )
    for k in range(len(cases)):
        li, _ = listener()
        feed(li, cases[k], seed=k + 5)
        s = li.sniff
        assert s.attributed == 0 and s.orphans == 1 and li.packs == [], k
    # a frame whose ACK was lost, then a frame with a bad sum and that one's ACK: the first frame
    # must not be taken for the ACK's (pack 2 would show pack 1's cells)
    li, _ = listener([1, 2])
    bad = bytearray(f[2][0])
    bad[20] ^= 0x01
    feed(li, f[1][0] + bytes(bad) + ack(2, ST))
    assert li.sniff.attributed == 0 and li.sniff.bad_sum == 1 and li.sniff.orphans == 1
    assert li.pack(2).snap.updates == 0 and li.pack(1).snap.updates == 0
    # an ACK more than a second after its frame (read in a later pass) is not trusted
    li, _ = listener([1])
    t = ticks_ms()
    feed(li, req(1, ST) + f[1][0], ticks_add(t, -2000))
    feed(li, ack(1, ST), t)
    assert li.sniff.attributed == 0 and li.sniff.orphans == 1 and li.pack(1).snap.updates == 0
    # two frames, one ACK: the first is orphaned, the second is the ACK's
    li, _ = listener([1, 2])
    feed(li, f[2][0] + f[1][0] + ack(1, ST))
    assert li.sniff.attributed == 1 and li.sniff.orphans == 1
    assert li.pack(1).snap.pack_mv == expected(1).pack_mv and li.pack(2).snap.updates == 0


def test_corrupted_frames_and_acks_leave_every_snapshot_unchanged():
    li, _ = listener([0, 1, 2])
    feed(li, cycle())
    before = [(p.snap.updates, p.snap.pack_mv, p.snap.soc_pct, p.polls_ok) for p in li.packs]
    f = frames()
    bad_frame = bytearray(f[1][0])
    bad_frame[150] ^= 0x40  # pack voltage: sum now wrong
    bad_ack = bytearray(ack(1, ST))
    bad_ack[7] ^= 0x01
    # a bad-sum frame is not held: its ACK finds nothing to attribute
    feed(li, req(1, ST) + bytes(bad_frame) + ack(1, ST))
    # a good frame behind a corrupted ACK, and a good ACK straight after: still never attributed
    feed(li, req(1, ST) + f[2][0] + bytes(bad_ack) + ack(1, ST) + ack(2, ST))
    s = li.sniff
    assert s.bad_sum == 1 and s.bad_crc == 1 and s.attributed == 6 and s.orphans == 1
    assert s.lone_acks == 3
    after = [(p.snap.updates, p.snap.pack_mv, p.snap.soc_pct, p.polls_ok) for p in li.packs]
    assert after == before
    assert "bad 2 (sum 1, CRC 1)" in li.link_text(ticks_ms())


def test_only_configured_addresses_get_packs():
    li, made = listener([1])
    assert [p.address for p in made] == [1]  # created at once, registered through on_pack
    feed(li, cycle())
    assert [p.address for p in li.packs] == [1] and len(made) == 1
    assert li.ignored == 4  # the status and settings frames of 0 and 2
    assert same_values(li.pack(1).snap, expected(1)) and li.pack(0) is None and li.pack(2) is None


def test_a_settings_frame_naming_another_address_is_refused():
    li, _ = listener([1])
    f = frames()
    feed(li, req(1, SE) + with_byte(f[1][1], 270, 2) + ack(1, SE))
    p = li.pack(1)
    assert li.sniff.attributed == 1 and p.decode_errors == 1 and p.snap.settings_ok == 0
    assert "another address" in p.last_error and p.polls_ok == 0


def test_unanswered_requests_count_as_timeouts_of_the_pack():
    li, _ = listener([5])
    t = ticks_ms()
    for k in range(4):
        feed(li, req(5, ST), ticks_add(t, -4000 + 1000 * k))
    assert li.pack(5).timeouts == 3 and li.sniff.req_count[5] == 4


# -- dating, freshness --------------------------------------------------------------------------

def test_data_is_dated_by_the_request_else_by_its_wire_time():
    li, _ = listener([0, 1], baud=115200)
    f = frames()
    t = ticks_ms()
    t_req = ticks_add(t, -300)
    # settings first, so the status frame completes the data set and dates it
    feed(li, f[0][1] + ack(0, SE), ticks_add(t, -400))
    feed(li, req(1, SE) + reply(1, SE, f[1][1]), ticks_add(t, -400))
    feed(li, req(1, ST), t_req)
    feed(li, reply(1, ST, f[1][0]), ticks_add(t_req, 40))
    feed(li, f[0][0] + ack(0, ST), ticks_add(t, -200))  # the master's own: no request
    p0, p1 = li.pack(0), li.pack(1)
    assert p1.fresh.data_ms == t_req
    assert li.wire_ms == 26 and p0.fresh.data_ms == ticks_add(t, -200 - 26)
    # a request more than a second before the frame dates nothing
    li2, _ = listener([1], baud=9600)
    feed(li2, req(1, SE) + reply(1, SE, f[1][1]), ticks_add(t, -3000))
    feed(li2, req(1, ST), ticks_add(t, -2500))
    feed(li2, reply(1, ST, f[1][0]), ticks_add(t, -1000))
    assert li2.wire_ms == 312 and li2.pack(1).fresh.data_ms == ticks_add(t, -1312)


def test_status_before_settings_is_fresh_as_of_the_status_once_settings_come():
    li, _ = listener([1])
    f = frames()
    t = ticks_ms()
    feed(li, req(1, ST), ticks_add(t, -500))
    feed(li, reply(1, ST, f[1][0]), ticks_add(t, -480))
    p = li.pack(1)
    assert not p.fresh.have_data  # no settings yet: not complete
    feed(li, req(1, SE) + reply(1, SE, f[1][1]), ticks_add(t, -300))
    assert p.fresh.have_data and p.fresh.data_ms == ticks_add(t, -500)


def test_a_pack_whose_traffic_stops_goes_stale_alone():
    li, _ = listener([1, 2], timeout_s=10)
    t = ticks_ms()
    feed(li, cycle(), ticks_add(t, -9000))
    feed(li, cycle(packs=(0, 1)), ticks_add(t, -100))  # pack 2 stops answering
    p1, p2 = li.pack(1), li.pack(2)
    assert p1.fresh.state(t) == B.FRESH and p2.fresh.state(t) == B.FRESH
    later = ticks_add(t, 2000)
    assert p1.fresh.state(later) == B.FRESH and p2.fresh.state(later) == B.STALE
    # an unanswered request counts when the next one comes: the settings request of this
    # cycle is counted in the next
    assert p2.timeouts == 1 and p1.timeouts == 0
    feed(li, cycle(packs=(0, 1)), ticks_add(t, -50))
    assert p2.timeouts == 3
    assert "no traffic for 12 s" in li.link_text(ticks_add(t, 12000 - 50))
    assert "no traffic" not in li.link_text(ticks_add(t, 1000))


def test_link_text_before_anything_is_heard():
    li, _ = listener()
    text = li.link_text(ticks_ms())
    assert "listener" in text and "nothing heard yet" in text and "packs 0" in text


# -- RAM, allocation ---------------------------------------------------------------------------------

def _feed_chunked(sniff, data, chunk, now):
    # feeds data in chunks of 1..97 bytes through one preallocated buffer (no slices)
    n = len(data)
    i = 0
    x = 7
    while i < n:
        x = (x * 75 + 74) % 65537
        k = 1 + x % 97
        if k > n - i:
            k = n - i
        for j in range(k):
            chunk[j] = data[i + j]
        sniff.feed(chunk, k, now)
        i += k
    return sniff.attributed


def test_feed_and_the_decoders_allocate_nothing_in_the_steady_state():
    li, _ = listener()
    data = cycle()
    chunk = bytearray(100)
    t = ticks_ms()
    _feed_chunked(li.sniff, data, chunk, t)  # first cycle: the packs are created
    assert len(li.packs) == 3
    got = run_locked(_feed_chunked, li.sniff, data, chunk, t)
    assert got == 12 and li.sniff.orphans == 0
    if IS_MICROPYTHON:
        assert bytes_allocated(_feed_chunked, li.sniff, data, chunk, t) == 0
    for p in li.packs:
        assert same_values(p.snap, expected(p.address)) and p.polls_ok >= 4


def test_bytes_per_pack():
    # the RAM one more heard pack costs (PackSnapshot, Freshness, counters; the raw buffer is shared)
    import gc
    li, _ = listener()
    gc.collect()
    a0 = gc.mem_alloc() if IS_MICROPYTHON else 0
    for a in range(16):
        li._add(a)
    gc.collect()
    per = ((gc.mem_alloc() - a0) // 16) if IS_MICROPYTHON else 0
    print("bytes per heard pack:", per)
    assert len(li.packs) == 16
    assert li.packs[0].raw is li.packs[15].raw  # one raw buffer for all
    if IS_MICROPYTHON:
        # measured 1161 B on the webassembly port (32-bit, as the ESP32: 899 of them the
        # PackSnapshot), 1670 B on the 64-bit unix port
        assert per < (1400 if IS_WASM else 2100)


# -- the task ---------------------------------------------------------------------------------------

async def test_the_task_hears_the_whole_bank_and_never_writes():
    import asyncio
    data = cycle() + cycle()
    li, made = listener()
    uart = NoWriteUart(chunks(data, 9, 300))
    li.uart = uart
    task = asyncio.create_task(li.run())
    t0 = ticks_ms()
    while uart.chunks and ticks_diff(ticks_ms(), t0) < 3000:
        await sleep_ms(20)
    await sleep_ms(30)
    beat = li.heartbeat_ms
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    assert not uart.chunks and uart.reads > 1
    assert [p.address for p in li.packs] == [0, 1, 2] and made == li.packs
    for p in li.packs:
        assert same_values(p.snap, expected(p.address)) and p.fresh.state(ticks_ms()) == B.FRESH
        assert p.heartbeat_ms == beat  # the packs' progress is the listener's
    assert li.sniff.attributed == 12 and ticks_diff(ticks_ms(), beat) < 500
    assert "frames 12, orphans 0, bad 0" in li.link_text(ticks_ms())
