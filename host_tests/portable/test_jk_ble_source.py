# The BLE source (sources/jk_ble.py) with the real, unmodified aioble on the simulated JK radio
# (host/fakeble): connect by MAC or name, MTU, the two FFE1 characteristics, device info then cell
# info, layouts JK02_24S / JK02_32S / JK04, bursts of notifications with nothing lost, the C8
# confirmation and AT\r\n, link loss mid-frame and reconnect with back-off, a silent BMS, a
# refused connection, MTU refusal, scan, and the allocation-free drain. Skipped with the reason
# when the vendor aioble folder is absent (host/fakeble/env.py).
# unix heap: 384k -- the 64-bit unix port compiles aioble, the fake radio, the
# config and the console (its scan test) from source in this one process
import asyncio

import mpcompat
from fakeble import env

from app import config as C
from compat import sleep_ms, ticks_diff, ticks_ms
from jkbms.frame import LAYOUT_JK02_24S, LAYOUT_JK02_32S, LAYOUT_JK04
from pack.snapshot import PackSnapshot
from sources import base as B

_WHY = env.setup()
if _WHY is None:
    import aioble
    import bluetooth
    from fixtures import find_frame, unhex
    from jk_peripheral import FrameSource, JkPeripheral

    radio = bluetooth.radio
    ble = bluetooth.BLE()
    # read once: parsing the fixture file per test fragments a small MicroPython heap
    _FRAMES = {"32s": FrameSource.from_fixtures(),
               "24s": FrameSource.from_fixtures("ble_jk02_24s_v10_device_info", "ble_jk02_24s_v10_cell_info"),
               "jk04": FrameSource.from_fixtures("ble_jk04_device_info", "ble_jk04_cell_info",
                                                 "ble_jk04_b5a24s_settings")}
    _EXP32 = find_frame("ble_jk02_32s_v11_cell_info")["expected"]
    _EXP24_MV = round(find_frame("ble_jk02_24s_v10_cell_info")["expected"]["total_voltage_v"] * 1000)
    _SW32 = find_frame("ble_jk02_32s_v11_device_info")["expected"]["sw_version"]
    _CELL32 = unhex(find_frame("ble_jk02_32s_v11_cell_info")["hex"])
    _SET32 = unhex(find_frame("ble_jk02_32s_v11_17_settings")["hex"])

_MAC = "20:21:11:40:50:60"


def _need():
    if _WHY is not None:
        mpcompat.skip(_WHY)


def _setup(kind="32s", name=None, cfg=None, **options):
    radio.reset()
    ble.irq(aioble.core.ble_irq)
    options.setdefault("period_ms", 250)  # a cell frame every 250 ms: short tests
    p = radio.add(JkPeripheral(_MAC, name=name or "JK-B2A24S15P", frames=_FRAMES[kind], **options))
    raw = {"bms_transport": "ble", "ble_mac": _MAC, "bms_timeout_s": 2}
    for k in cfg or {}:
        raw[k] = cfg[k]
    msgs = []
    c = C.validate(raw, msgs)
    assert not msgs, msgs
    import sources
    log = []
    src = sources.make(c, None, PackSnapshot(), log.append)
    src.backoff_ms = (100, 200, 400)
    src.stream_gap_ms = 700  # > the frame period, as 5 s is on the device (~1 s)
    src.device_info_ms = 500
    return p, src, log


class _Watch:
    """Runs src.run() as a task; records the longest heartbeat gap seen."""

    def __init__(self, src):
        self.src = src
        self.max_gap = 0
        self.task = None

    async def run_for(self, ms, until=None):
        if self.task is None:
            self.task = asyncio.create_task(self.src.run())
        end = ticks_ms() + ms
        while ticks_diff(end, ticks_ms()) > 0:
            await sleep_ms(50)
            gap = ticks_diff(ticks_ms(), self.src.heartbeat_ms)
            if gap > self.max_gap:
                self.max_gap = gap
            if until is not None and until():
                return True
        return until is None

    async def stop(self):
        self.task.cancel()
        await sleep_ms(20)
        await self.src._close()  # leave no link behind for the next test
        await radio.settle(300)
        ble.irq(aioble.core.ble_irq)


async def _in_task(body):
    # aioble cancels the current task on a timeout; the webassembly port's top-level coroutine
    # cannot be cancelled, so each test body runs in a task of its own
    await asyncio.create_task(body())


def _expected_32s(snap):
    e = _EXP32
    assert snap.cell_count == e["cell_count"]
    assert snap.pack_mv == round(e["total_voltage_v"] * 1000)
    assert snap.cells[0] == round(e["cells_v"]["1"] * 1000)
    assert snap.cells[10] == round(e["cells_v"]["11"] * 1000)
    assert snap.soc_pct == e["soc_pct"]
    assert snap.cell_min_idx + 1 == e["cell_min_index"]


async def test_connects_by_mac_and_decodes_bursts_without_loss():
    _need()

    async def body():
        p, src, log = _setup(per_event=12, chunk=20)  # 15 chunks per frame, 12 per connection event
        w = _Watch(src)
        ok = await w.run_for(4000, lambda: src.frames >= 6)
        assert ok, (src.link_text(ticks_ms()), log)
        await w.stop()
        assert p.writes[0][4] == 0x97 and p.writes[1][4] == 0x96, [bytes(x).hex() for x in p.writes]
        assert src.ring.lost == 0 and src.decode_errors == 0 and src.rx.dropped == 0, src.link_text(ticks_ms())
        assert src.layout == LAYOUT_JK02_32S
        _expected_32s(src.snap)
        assert src.snap.settings_ok == 1 and src.snap.cell_ovp_mv == 3600
        assert src.fresh.state(ticks_ms()) == B.FRESH
        assert src.device_info()["sw_version"] == _SW32
        assert src.mtu == 247 and src.connects == 1
        assert w.max_gap < 500, w.max_gap
        text = src.link_text(ticks_ms())
        for part in ("BLE: connected to " + _MAC, "MTU 247", "layout JK02_32S", "lost chunks 0", "connects 1"):
            assert part in text, text
    await _in_task(body)


async def test_settings_are_asked_for_again_every_bms_settings_s():
    _need()

    async def body():
        p, src, log = _setup(per_event=8)
        src.cfg["bms_settings_s"] = 1  # (10 s at least in a config file)
        w = _Watch(src)
        assert await w.run_for(6000, lambda: len([x for x in p.writes if x[4] == 0x96]) >= 3), (
            [bytes(x).hex() for x in p.writes], log)
        first = src.settings_ms
        await w.run_for(2000)  # > bms_settings_s + the stream gap: one more refresh
        await w.stop()
        assert src.settings_ms != first  # a new settings frame was taken
        assert src.requests == 0  # these were refreshes, not a stopped stream
        assert src.fresh.state(ticks_ms()) == B.FRESH
    await _in_task(body)


async def test_aioble_queue_would_have_lost_the_same_bursts():
    # the pitfall the ring avoids: the same peripheral read through aioble's notified()
    _need()

    async def body():
        p, _, _ = _setup(per_event=12, chunk=20)
        conn = await aioble.Device(0, p.addr).connect(timeout_ms=2000)
        svc = await conn.service(bluetooth.UUID(0xFFE0))
        nt = wr = None
        async for ch in svc.characteristics():
            if ch.properties & 0x10:
                nt = ch
            if ch.properties & 0x0C:
                wr = ch
        await nt.subscribe(notify=True)
        from jk_peripheral import request
        await wr.write(request(0x97))
        got = 0
        try:
            while True:
                got += len(await nt.notified(timeout_ms=500))
        except asyncio.TimeoutError:
            pass
        await conn.disconnect()
        assert got < 300, got  # most chunks of the 300-byte frame were overwritten
    await _in_task(body)


async def test_finds_the_bms_by_name_and_two_layouts():
    _need()

    async def body():
        p, src, log = _setup("24s", name="JK-B2A24S20P", cfg={"ble_mac": "", "ble_name": "JK-B2A24S20P"})
        w = _Watch(src)
        assert await w.run_for(5000, lambda: src.snap.have and src.frames >= 3), (src.link_text(ticks_ms()), log)
        await w.stop()
        assert src.layout == LAYOUT_JK02_24S
        assert src.snap.cell_count == 24 and src.snap.pack_mv == _EXP24_MV
        assert src.addr == bytes(p.addr) and src.rssi is not None
    await _in_task(body)


async def test_jk04_is_decoded_but_never_serves_the_inverter():
    _need()

    async def body():
        _, src, log = _setup("jk04")
        w = _Watch(src)
        assert await w.run_for(4000, lambda: src.snap.cell_count > 0), (src.link_text(ticks_ms()), log)
        await w.run_for(600)
        await w.stop()
        assert src.layout == LAYOUT_JK04
        assert src.fresh.state(ticks_ms()) == B.WAIT  # no current, SOC or temperatures: nothing is sent
        assert src.decode_errors == 0, src.last_error  # its float settings frame is recognised, not "bad"
    await _in_task(body)


async def test_confirmation_at_and_glued_frames_are_ignored():
    _need()

    async def body():
        _, src, log = _setup(at="suffix", glue_confirm=True, per_event=4)
        w = _Watch(src)
        assert await w.run_for(4000, lambda: src.frames >= 5), (src.link_text(ticks_ms()), log)
        await w.stop()
        assert src.decode_errors == 0, src.last_error
        _expected_32s(src.snap)
        _, src, log = _setup(at="own", confirm=True, per_event=3)
        w = _Watch(src)
        assert await w.run_for(4000, lambda: src.frames >= 5), (src.link_text(ticks_ms()), log)
        await w.stop()
        assert src.decode_errors == 0, src.last_error
    await _in_task(body)


async def test_link_lost_mid_frame_reconnects_and_never_keeps_stale_data_fresh():
    _need()

    async def body():
        p, src, log = _setup(per_event=2, chunk=40)
        w = _Watch(src)
        assert await w.run_for(4000, lambda: src.fresh.state(ticks_ms()) == B.FRESH), log
        before = src.snap.updates
        p.set(disconnect_after_chunks=3)  # inside the next frame
        assert await w.run_for(3000, lambda: src.link_losses >= 1), (src.link_text(ticks_ms()), log)
        assert src.snap.updates - before <= 1  # the cut frame added nothing
        p.set(disconnect_after_chunks=None, refuse_connect=True)  # and it does not come back at once
        await w.run_for(2600)
        assert src.fresh.state(ticks_ms()) == B.STALE  # bms_timeout_s 2: stale, latched
        tries = p.connects
        p.set(refuse_connect=False)
        assert await w.run_for(4000, lambda: src.fresh.state(ticks_ms()) == B.FRESH), (src.link_text(ticks_ms()), log)
        await w.stop()
        assert src.connects == 2 and p.connects == tries + 1
        assert w.max_gap < 500, w.max_gap
    await _in_task(body)


async def test_silent_bms_is_asked_again_then_dropped():
    _need()

    async def body():
        p, src, log = _setup()
        w = _Watch(src)
        assert await w.run_for(3000, lambda: src.fresh.state(ticks_ms()) == B.FRESH), log
        p.set(silent=True)
        await w.run_for(100)
        updates = src.snap.updates
        assert await w.run_for(5000, lambda: src.link_losses >= 1), (src.link_text(ticks_ms()), log)
        assert src.requests == 3  # 0x96 again three times, then a new connection
        assert "silent" in src.last_error
        # bms_timeout_s 2 after the last frame: stale (and latched), whatever the link does
        assert await w.run_for(2500, lambda: src.fresh.state(ticks_ms()) == B.STALE)
        assert src.snap.updates == updates
        await w.stop()
    await _in_task(body)


async def test_refused_connection_backs_off_and_heartbeat_keeps_beating():
    _need()

    async def body():
        p, src, log = _setup(refuse_connect=True)
        src.backoff_ms = (300, 600, 1200)
        w = _Watch(src)
        await w.run_for(6000)
        await w.stop()
        # each try waits up to the connect deadline (4 s) or fails at once, then backs off
        assert 1 <= src.timeouts <= 3, src.timeouts
        assert src.connects == 0 and src.fresh.state(ticks_ms()) == B.WAIT
        assert w.max_gap < 500, w.max_gap
        assert "BLE" in src.last_error
    await _in_task(body)


async def test_mtu_refused_works_with_20_byte_chunks():
    _need()

    async def body():
        _, src, log = _setup(refuse_mtu=True, per_event=15)
        w = _Watch(src)
        assert await w.run_for(4000, lambda: src.frames >= 4), (src.link_text(ticks_ms()), log)
        await w.stop()
        assert src.mtu == 23 and src.ring.lost == 0 and src.decode_errors == 0
        _expected_32s(src.snap)
    await _in_task(body)


async def test_old_module_with_one_ffe1():
    _need()

    async def body():
        _, src, log = _setup(two_ffe1=False, per_event=8)
        w = _Watch(src)
        assert await w.run_for(4000, lambda: src.frames >= 3), (src.link_text(ticks_ms()), log)
        await w.stop()
        _expected_32s(src.snap)
    await _in_task(body)


async def test_without_target_nothing_connects_and_scan_lists_devices():
    _need()

    async def body():
        p, src, log = _setup(cfg={"ble_mac": ""})
        w = _Watch(src)
        await w.run_for(300)
        assert "no BMS configured" in src.link_text(ticks_ms())
        src.request_scan()
        assert await w.run_for(6000, lambda: src.scan_results is not None), log
        await w.stop()
        assert p.connects == 0
        assert src.scan_results[0][1] == _MAC and src.scan_results[0][0] == "JK-B2A24S15P", src.scan_results
        assert [m for m in log if _MAC in m], log
    await _in_task(body)


def test_drain_is_allocation_free():
    _need()
    _, src, _ = _setup()
    f = _CELL32
    s = _SET32
    src.layout = LAYOUT_JK02_32S
    chunks = [memoryview(s)[i:i + 20] for i in range(0, 300, 20)] + [memoryview(f)[i:i + 20] for i in range(0, 300, 20)]
    for c in chunks:
        src.ring.put(c)
    src.drain()  # warm-up: first frame of each kind
    assert src.snap.settings_ok == 1 and src.frames == 2
    chunks = chunks[15:]
    mpcompat.collect()
    mpcompat.heap_lock()
    try:
        for c in chunks:
            src.ring.put(c)
        src.drain()
    finally:
        mpcompat.heap_unlock()
    assert src.frames == 3 and src.ring.lost == 0 and src.decode_errors == 0
    _expected_32s(src.snap)


def test_console_scan_asks_the_ble_source_and_refuses_on_the_uart():
    _need()
    from outputs.console import Console

    _, src, _ = _setup(cfg={"ble_mac": ""})

    class St:
        links = [src]
        pending = {}

    out = Console(St()).execute("scan")
    assert src.scan_wanted and "listening" in out[0], out

    class Uart:
        links = [object()]
        pending = {}

    assert "only over BLE" in Console(Uart()).execute("scan")[0]


async def test_a_lost_settings_frame_is_asked_for_again():
    # without the settings nothing may be sent: the source must not wait bms_settings_s (300 s)
    _need()

    async def body():
        bad = bytearray(_SET32)
        bad[299] ^= 0xFF  # checksum broken: the reassembler drops it
        frames = FrameSource(_FRAMES["32s"].device_info(), bytes(bad), _CELL32)
        _, src, log = _setup()
        radio.reset()
        p = radio.add(JkPeripheral(_MAC, frames=frames, period_ms=250))
        w = _Watch(src)
        assert await w.run_for(4000, lambda: len([x for x in p.writes if x[4] == 0x96]) >= 3), log
        assert src.snap.settings_ok == 0 and src.fresh.state(ticks_ms()) == B.WAIT
        assert src.snap.cell_count > 0  # the cell frames were taken all along
        frames._set = _SET32  # the BMS answers properly again
        assert await w.run_for(3000, lambda: src.fresh.state(ticks_ms()) == B.FRESH), log
        await w.stop()
        assert src.snap.cell_ovp_mv == 3600
    await _in_task(body)


async def test_a_scan_while_connected_does_not_stall_the_link():
    _need()

    async def body():
        _, src, log = _setup(per_event=8, chunk=20)
        w = _Watch(src)
        assert await w.run_for(3000, lambda: src.fresh.state(ticks_ms()) == B.FRESH), log
        frames = src.frames
        src.request_scan()
        stale = [False]

        def done():
            if src.fresh.state(ticks_ms()) != B.FRESH:
                stale[0] = True
            return src.scan_results is not None

        assert await w.run_for(6000, done), log
        await w.stop()
        assert not stale[0] and src.ring.lost == 0 and src.decode_errors == 0
        assert src.frames >= frames + 10  # frames went on during the 4 s scan
    await _in_task(body)


def test_a_corrupted_frame_is_a_bad_frame_and_changes_nothing():
    _need()
    _, src, _ = _setup()
    src.layout = LAYOUT_JK02_32S
    good = _CELL32
    bad = bytearray(good)
    bad[40] ^= 0x01  # one bit flipped in the air: the checksum fails
    for frame in (good, bad):
        for i in range(0, 300, 20):
            src.ring.put(memoryview(frame)[i:i + 20])
        src.drain()
    assert src.frames == 1 and src.decode_errors == 1 and src.rx.bad == 1
    assert src.last_error == "55AA checksum mismatch"
    updates = src.snap.updates
    _expected_32s(src.snap)  # the values of the good frame, untouched
    for i in range(0, 300, 20):  # and a good frame after it is taken again
        src.ring.put(memoryview(good)[i:i + 20])
    src.drain()
    assert src.frames == 2 and src.decode_errors == 1 and src.snap.updates == updates + 1


async def test_a_slow_bms_is_waited_for_and_still_read():
    # every answer comes 800 ms late, after the source's wait for the device info (500 ms here):
    # it goes on with 0x96, takes the late frames as they come, and the data is fresh
    _need()

    async def body():
        p, src, log = _setup(slow_ms=800, per_event=4)
        w = _Watch(src)
        assert await w.run_for(5000, lambda: src.fresh.state(ticks_ms()) == B.FRESH), (src.link_text(ticks_ms()), log)
        await w.run_for(1500, lambda: src.device is not None)
        await w.stop()
        assert src.device is not None  # the late device info was taken too
        assert src.connects == 1 and src.decode_errors == 0
        _expected_32s(src.snap)
        assert w.max_gap < 500, w.max_gap
    await _in_task(body)
