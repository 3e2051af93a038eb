# The simulated JK-BMS radio (host/fakeble) under the real, unmodified aioble: scan, connect, MTU,
# discovery, subscribe, request / notifications, faults, and the one-slot notification queue of
# aioble's notified() (micropython-lib #934) against a raw IRQ hook.  Skipped with the reason when
# the vendor aioble folder is absent (host/fakeble/env.py).
import asyncio

import mpcompat
from fakeble import env

_WHY = env.setup()
if _WHY is None:
    import aioble
    import bluetooth
    from fixtures import find_frame, unhex
    from jk_peripheral import CONFIRM, FrameSource, JkPeripheral, request

    radio = bluetooth.radio
    ble = bluetooth.BLE()
    _FRAMES = FrameSource.from_fixtures()
    _DEV = unhex(find_frame("ble_jk02_32s_v11_device_info")["hex"])

_ADDR = "C8:47:8C:10:20:30"
_NEW = "20:21:11:40:50:60"
_IRQ_GATTC_NOTIFY = 18


def _need():
    if _WHY is not None:
        mpcompat.skip(_WHY)


async def _in_task(body):
    # aioble cancels the current task on a timeout; the top-level coroutine of the webassembly
    # port cannot be cancelled, so the body always runs in a task of its own
    await asyncio.create_task(body())


def _jk(addr=_NEW, **options):
    radio.reset()
    ble.irq(aioble.core.ble_irq)
    return radio.add(JkPeripheral(addr, frames=_FRAMES, **options))


async def _open(p, mtu=None, subscribe=True):
    """Connect to p, discover FFE0; returns (connection, write characteristic, notify characteristic)."""
    conn = await aioble.Device(p.addr_type, p.addr).connect(timeout_ms=2000)
    if mtu:
        await conn.exchange_mtu(mtu)
    svc = await conn.service(bluetooth.UUID(0xFFE0))
    wr = nt = None
    async for ch in svc.characteristics():
        if ch.properties & bluetooth.FLAG_NOTIFY:
            nt = ch
        if ch.properties & (bluetooth.FLAG_WRITE | bluetooth.FLAG_WRITE_NO_RESPONSE):
            wr = ch
    if subscribe:
        await nt.subscribe(notify=True)
    return conn, wr, nt


class _Capture:
    """Raw IRQ hook in front of aioble's handler: a copy of every notification payload."""

    def __init__(self):
        self.chunks = []

    def _hook(self, event, data):
        if event == _IRQ_GATTC_NOTIFY:
            self.chunks.append(bytes(data[2]))
        return aioble.core.ble_irq(event, data)

    def __enter__(self):
        ble.irq(self._hook)
        return self

    def __exit__(self, *exc):
        ble.irq(aioble.core.ble_irq)

    async def wait(self, nbytes, timeout_ms=1500):
        for _ in range(timeout_ms // 20):
            if sum(len(c) for c in self.chunks) >= nbytes:
                break
            await asyncio.sleep_ms(20)
        return self.chunks


async def _collect(ch, want, timeout_ms=400):
    """Concatenate ch.notified() payloads until `want` bytes or a quiet timeout_ms."""
    got = b""
    while len(got) < want:
        try:
            got += await ch.notified(timeout_ms=timeout_ms)
        except asyncio.TimeoutError:
            break
    return got


async def test_scan_finds_jk_by_name_service_and_rssi():
    _need()

    async def body():
        _jk(_ADDR)
        radio.add(JkPeripheral("11:22:33:44:55:66", name="OTHER", frames=_FRAMES, rssi=-80))
        found = None
        async with aioble.scan(1500, interval_us=30000, window_us=30000, active=True) as scanner:
            async for r in scanner:
                if r.name() == "JK-B2A24S15P":
                    found = r
                    break
        assert found is not None
        assert bluetooth.UUID(0xFFE0) in list(found.services())
        assert -64 <= found.rssi <= -60
        assert [m for m, _ in found.manufacturer()] == [0x0B65]
        assert found.device.addr_hex() == _ADDR.lower()
        assert found.connectable

    await _in_task(body)


async def test_scan_duty_cycle_misses_most_advertisements():
    # aioble's default scan parameters listen 11.25 ms every 1.28 s: in 0.5 s the JK (every
    # ~100 ms) is heard at most a few times, against ~5 with a 100 % duty cycle
    _need()

    async def body():
        _jk()
        async with aioble.scan(500) as scanner:
            async for _ in scanner:
                pass
        low = radio.stats["scan_results"]
        async with aioble.scan(500, interval_us=30000, window_us=30000) as scanner:
            async for _ in scanner:
                pass
        assert low <= 1 < radio.stats["scan_results"] - low

    await _in_task(body)


async def test_connect_and_mtu_exchange():
    _need()

    async def body():
        p = _jk()
        conn = await aioble.Device(0, p.addr).connect(timeout_ms=2000)
        assert conn.is_connected() and p.connects == 1 and p.is_connected()
        assert await conn.exchange_mtu(247) == 247
        await conn.disconnect()
        assert not p.is_connected()
        p.set(refuse_mtu=True)
        conn = await aioble.Device(0, p.addr).connect(timeout_ms=2000)
        assert await conn.exchange_mtu(247) == 23
        await conn.disconnect()

    await _in_task(body)


async def test_discovery_two_ffe1_and_old_single_ffe1():
    _need()

    async def body():
        for two, want in ((True, [0x0C, 0x10]), (False, [0x1C])):
            p = _jk(two_ffe1=two)
            conn = await aioble.Device(0, p.addr).connect(timeout_ms=2000)
            uuids = []
            async for s in conn.services():
                uuids.append(s.uuid)
            assert bluetooth.UUID(0xFFE0) in uuids and bluetooth.UUID(0x1800) in uuids
            svc = await conn.service(bluetooth.UUID(0xFFE0))
            props = []
            async for ch in svc.characteristics():
                assert ch.uuid == bluetooth.UUID(0xFFE1)
                props.append(ch.properties)
            assert sorted(props) == want
            await conn.disconnect()

    await _in_task(body)


async def test_subscribe_writes_the_cccd():
    _need()

    async def body():
        p = _jk()
        conn, wr, nt = await _open(p)
        assert p.cccd_writes == [b"\x01\x00"] and p.notify_on
        assert repr(nt.uuid) == "UUID(0xffe1)"
        await conn.disconnect()

    await _in_task(body)


async def test_device_info_request_reassembles_the_fixture_frame():
    _need()

    async def body():
        p = _jk()
        conn, wr, nt = await _open(p)
        await wr.write(request(0x97))
        got = await _collect(nt, 320)
        assert p.writes == [request(0x97)]
        assert got == CONFIRM + _DEV  # 20-byte C8, then 300 bytes in 15 notifications at MTU 23
        assert p.chunks_sent == 16 and p.frames_sent == 1
        await conn.disconnect()

    await _in_task(body)


async def test_no_notifications_before_subscribe_and_bad_requests_ignored():
    _need()

    async def body():
        p = _jk()
        conn, wr, nt = await _open(p, subscribe=False)
        await wr.write(request(0x97))
        bad = bytearray(request(0x97))
        bad[19] ^= 1
        assert await _collect(nt, 1, timeout_ms=300) == b""
        await nt.subscribe()
        await wr.write(bytes(bad))
        await wr.write(request(0x42))
        assert await _collect(nt, 1, timeout_ms=300) == b""
        assert p.requests == 1 and p.chunks_dropped == 16 and len(p.writes) == 3
        await conn.disconnect()

    await _in_task(body)


async def test_refuse_connect_times_out():
    _need()

    async def body():
        p = _jk(refuse_connect=True)
        try:
            await aioble.Device(0, p.addr).connect(timeout_ms=300)
        except asyncio.TimeoutError:
            pass
        else:
            raise AssertionError("connected to a module that another app holds")
        assert p.connects == 0

    await _in_task(body)


async def test_peripheral_disconnect_mid_frame():
    _need()

    async def body():
        p = _jk(disconnect_after_chunks=5)
        conn, wr, nt = await _open(p)
        await wr.write(request(0x97))
        got = b""
        try:
            while True:
                got += await nt.notified(timeout_ms=2000)
        except aioble.DeviceDisconnectedError:
            pass
        assert 0 < len(got) < 320 and p.chunks_sent == 5 and not conn.is_connected()

    await _in_task(body)


async def test_burst_loses_chunks_in_notified_raw_hook_gets_all():
    # micropython-lib #934: notified() keeps one pending notification, so 8 notifications in one
    # connection event collapse to the last; a raw IRQ hook in front of aioble's sees each
    _need()

    async def body():
        p = _jk(per_event=8)
        conn, wr, nt = await _open(p)
        await wr.write(request(0x97))
        got = await _collect(nt, 320, timeout_ms=300)
        assert p.chunks_sent == 16 and len(got) < 320 - 100

        with _Capture() as cap:
            await wr.write(request(0x97))
            raw = b"".join(await cap.wait(320))
        assert raw == CONFIRM + _DEV
        await conn.disconnect()

    await _in_task(body)


async def test_kept_memoryview_goes_stale():
    _need()

    async def body():
        p = _jk()
        conn, wr, nt = await _open(p)
        kept = []

        def hook(event, data):
            if event == _IRQ_GATTC_NOTIFY:
                kept.append((data[2], bytes(data[2])))
            return aioble.core.ble_irq(event, data)

        ble.irq(hook)
        try:
            await wr.write(request(0x97))
            await _collect(nt, 40)
        finally:
            ble.irq(aioble.core.ble_irq)
        view, copy = kept[0]
        assert copy == CONFIRM and bytes(view) != copy
        await conn.disconnect()

    await _in_task(body)


async def test_cell_info_stream_at_mtu_247():
    _need()

    async def body():
        p = _jk(period_ms=150, per_event=4)
        conn, wr, nt = await _open(p, mtu=247)
        with _Capture() as cap:
            await wr.write(request(0x96))
            await asyncio.sleep_ms(500)
        raw = cap.chunks
        await conn.disconnect()
        assert raw[0] == CONFIRM and [len(c) for c in raw[1:3]] == [244, 56]
        stream = b"".join(raw[1:])
        assert stream[:300] == _FRAMES.settings()
        cells = [stream[i : i + 300] for i in range(300, len(stream) - 299, 300)]
        assert len(cells) >= 3 and cells[0][4] == 2 and cells[1] != cells[0]
        for c in cells:
            assert c[:4] == b"\x55\xaa\xeb\x90" and sum(c[:299]) & 0xFF == c[299]

    await _in_task(body)


def test_frame_source_varies_the_counter():
    _need()
    fs = FrameSource.from_fixtures()
    a, b = fs.cell_info(), fs.cell_info()
    assert len(a) == len(b) == 300 and a[5] != b[5] and a[6:299] == b[6:299]
    assert sum(b[:299]) & 0xFF == b[299]


async def test_fault_options_shape_the_stream():
    _need()

    async def body():
        p = _jk(at="own")
        conn, wr, nt = await _open(p)
        with _Capture() as cap:
            await wr.write(request(0x97))
            got = await cap.wait(324)
        assert [len(c) for c in got] == [20] + [20] * 15 + [4] and got[-1] == b"AT\r\n"
        await conn.disconnect()

        p = _jk(at="suffix")
        conn, wr, nt = await _open(p, mtu=247)
        with _Capture() as cap:
            await wr.write(request(0x97))
            got = await cap.wait(324)
        assert [len(c) for c in got] == [20, 244, 60] and got[-1].endswith(b"AT\r\n")
        assert got[0] == CONFIRM and b"".join(got[1:])[:300] == _DEV

        p.set(at=None, glue_confirm=True, chunk=128)
        with _Capture() as cap:
            await wr.write(request(0x97))
            got = await cap.wait(320)
        assert [len(c) for c in got] == [128, 128, 64] and b"".join(got) == _DEV + CONFIRM

        p.set(glue_confirm=False, confirm=False, chunk=None)
        with _Capture() as cap:
            await wr.write(request(0x97))
            got = await cap.wait(300)
        assert [len(c) for c in got] == [244, 56] and b"".join(got) == _DEV
        await conn.disconnect()

    await _in_task(body)


async def test_slow_and_silent():
    _need()

    async def body():
        p = _jk(slow_ms=500)
        conn, wr, nt = await _open(p)
        await wr.write(request(0x97))
        assert await _collect(nt, 1, timeout_ms=350) == b""
        assert await _collect(nt, 320) == CONFIRM + _DEV
        p.set(silent=True, slow_ms=0)
        await wr.write(request(0x96))
        assert await _collect(nt, 1, timeout_ms=400) == b""
        assert p.writes == [request(0x97), request(0x96)] and p.chunks_sent == 16
        await conn.disconnect()

    await _in_task(body)


async def test_old_module_single_ffe1_answers():
    _need()

    async def body():
        p = _jk(_ADDR, two_ffe1=False)
        conn, wr, nt = await _open(p)
        assert wr is nt and wr.properties == 0x1C
        await wr.write(request(0x97))
        assert await _collect(nt, 320) == CONFIRM + _DEV
        await conn.disconnect()

    await _in_task(body)


async def test_peripheral_disconnect_now_and_reconnect():
    _need()

    async def body():
        p = _jk()
        conn, wr, nt = await _open(p)
        p.disconnect()
        await conn.disconnected(timeout_ms=500)
        assert not conn.is_connected() and radio.stats["disconnects"] == 1
        conn, wr, nt = await _open(p)
        assert p.connects == 2 and p.cccd_writes == [b"\x01\x00", b"\x01\x00"]
        await conn.disconnect()

    await _in_task(body)


async def test_connect_timeout_leaves_the_stack_attempt_pending():
    # aioble's timeout does not cancel the stack's connect attempt (scan_duration_ms, 2 s by
    # default): a new gap_connect meanwhile fails with EALREADY until gap_connect(None)
    _need()

    async def body():
        p = _jk(refuse_connect=True)
        try:
            await aioble.Device(0, p.addr).connect(timeout_ms=200)
        except asyncio.TimeoutError:
            pass
        p.set(refuse_connect=False)
        try:
            await aioble.Device(0, p.addr).connect(timeout_ms=200)
        except OSError as e:
            assert e.args[0] == 114  # EALREADY
        else:
            raise AssertionError("second connect accepted while one is pending")
        ble.gap_connect(None)
        await asyncio.sleep_ms(20)
        conn = await aioble.Device(0, p.addr).connect(timeout_ms=1000)
        assert conn.is_connected()
        await conn.disconnect()

    await _in_task(body)
