# app.gateway (composition root) with outputs.console / outputs.events and
# app.supervisor: console commands over the status model, typed-character
# echo and line editing, the watchdog fed only while every task progresses,
# task restarts, and the boot message about the CAN controller. CPython and
# MicroPython.

import asyncio

from fakes import CountingWdt, FakeCan, FakeRecovery, FakeUart, MemStore, load_pb_pack

from app import boot as B
from app import config as C
from app import gateway as G
from app import supervisor as SV
from compat import sleep_ms, ticks_add, ticks_ms
from outputs import events as E


def make_gateway(cfg=None, console_io=None, out=None):
    if out is None:
        out = []
    gw = G.Gateway(cfg or C.defaults(), FakeUart({}), FakeCan(), FakeRecovery(), CountingWdt(), MemStore(),
                   console_io, "gateway.json", out.append)
    return gw, out


class CountUnknown:
    """An output sink that only counts 'unknown command' lines (a 64 KB paste
    would otherwise fill the test's own heap)."""

    def __init__(self):
        self.n = 0

    def append(self, line):
        if "unknown command" in line:
            self.n += 1


def test_console_commands_read_the_status_model():
    gw, out = make_gateway()
    con = gw.execute
    assert con("help")[0] == "commands:"
    assert "unknown command" in con("frobnicate")[0]
    assert con("") == []
    assert "no frames sent yet" in con("frames")[0]
    assert con("cells") == ["no cell data yet"]
    load_pb_pack(gw.source.snap)
    gw.source.fresh.data_ok(ticks_ms())
    gw.tx.burst(ticks_ms())
    status = "\n".join(con("status"))
    assert "26.852 V" in status and "SOC 88 %" in status and "CVL" in status and "CAN: active" in status
    assert "BMS: fresh (jk-pb@1)" in status
    frames = con("frames")
    assert frames[1].startswith("  35E#50594C4F4E202020")
    cells = con("cells")
    assert len(cells) == 9 and "3.3" in cells[0]
    assert "must be 200..5000" in con("set can_period_ms 50")[0]
    assert "pending" in con("set can_period_ms 250")[0]
    assert "after save + reboot" in con("get can_period_ms")[0]
    assert gw.cfg["can_period_ms"] == 1000  # the running value is unchanged
    assert "saved" in con("save")[0]
    msgs = []
    assert C.load(gw.store, "gateway.json", msgs)["can_period_ms"] == 250 and not msgs


def test_raw_shows_the_last_accepted_bms_frame():
    gw, _ = make_gateway()
    assert gw.execute("raw") == ["no BMS frame received yet"]
    gw.source.keep_raw(b"\x55\xaa\xeb\x90", 4)
    assert gw.execute("raw") == ["55aaeb90"]


def test_events_are_printed_when_they_happen_and_listed_later():
    gw, out = make_gateway()
    gw.events.emit(E.BMS_STALE, "no reply from the BMS: sending 0 A limits + alarms")
    gw.events.emit(E.BMS_BACK)
    assert "BMS data STALE (no reply from the BMS" in out[-2]
    assert out[-1].endswith("BMS data back: limits return after the hold")
    listed = gw.execute("events")
    assert len(listed) == 2 and "ALARM" in listed[0] and "STALE" in listed[0] and "info" in listed[1]
    for i in range(40):  # a bounded ring: the newest 16 are kept
        gw.events.emit(E.STATUS, "line %d" % i)
    listed = gw.execute("events")
    assert len(listed) == 16 and "line 39" in listed[-1] and "line 24" in listed[0]


class TypedIo:
    """Console io fed with typed chunks; records what the gateway echoes."""

    def __init__(self, chunks):
        self.chunks = list(chunks)
        self.echo = []

    def read(self, limit):
        if not self.chunks:
            return None
        c = self.chunks[0]
        if len(c) > limit:
            self.chunks[0] = c[limit:]
            return c[:limit]
        return self.chunks.pop(0)

    def write(self, text):
        self.echo.append(text)


async def test_typed_characters_are_echoed_and_backspace_edits_the_line():
    io = TypedIo(["stx", "\x7f", "atus", "\r", "x\x08\x08\x08", "\r"])
    gw, out = make_gateway(console_io=io)
    task = asyncio.create_task(gw.console_task())
    await asyncio.sleep(0.5)
    task.cancel()
    echoed = "".join(io.echo)
    assert echoed.startswith("stx\b \batus\r\n")  # a raw terminal sees what was typed
    assert any(line.startswith("BMS: ") for line in out)  # "status" ran after the edit
    assert echoed.endswith("x\b \b\r\n")  # backspace on an empty line echoes nothing
    assert not any("unknown command" in line for line in out)


class PasteIo:
    """A paste of `lines` lines of 200 characters + CR (64 KB for 320), served
    without holding it all in RAM; notes at each read how often another task
    ran meanwhile."""

    LINE = "x" * 200 + "\r"

    def __init__(self, lines, ticker):
        self.left = lines * len(self.LINE)
        self.pos = 0
        self.ticker = ticker
        self.reads = 0
        self.last_tick = -1
        self.no_yield = 0  # reads with no run of the other task since the previous read

    def read(self, limit):
        if not self.left:
            return None
        self.reads += 1
        if self.ticker[0] <= self.last_tick:
            self.no_yield += 1
        self.last_tick = self.ticker[0]
        n = limit if limit < self.left else self.left
        out = ""
        while len(out) < n:
            k = len(self.LINE) - self.pos
            take = n - len(out) if n - len(out) < k else k
            out += self.LINE[self.pos:self.pos + take]
            self.pos = (self.pos + take) % len(self.LINE)
        self.left -= n
        return out

    def write(self, text):
        pass


async def test_a_large_paste_never_holds_up_the_other_tasks():
    ticker = [0]
    io = PasteIo(320, ticker)
    total = io.left

    async def tick():  # another task (yielding like the CAN TX task), until the paste is consumed
        while io.left:
            ticker[0] += 1
            await sleep_ms(0)

    gw, out = make_gateway(console_io=io, out=CountUnknown())
    t1 = asyncio.create_task(tick())
    t2 = asyncio.create_task(gw.console_task())
    while io.left:
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.1)
    t1.cancel()
    t2.cancel()
    assert total >= 64000 and io.reads >= total // G.CHUNK  # taken in bounded chunks
    # between any two reads the other task ran: the console yields after every chunk
    assert io.no_yield == 0, io.no_yield
    assert out.n == 320  # every line ran, truncated to LINE_MAX


async def test_the_console_line_is_bounded():
    io = TypedIo(["a" * 500])
    gw, _ = make_gateway(console_io=io)
    task = asyncio.create_task(gw.console_task())
    await asyncio.sleep(0.1)
    task.cancel()
    assert len(gw._line) == G.LINE_MAX


def test_watchdog_is_fed_only_while_every_task_progresses():
    gw, _ = make_gateway()
    now = ticks_ms()
    gw.source.heartbeat_ms = now
    gw.tx.tx_heartbeat_ms = now
    gw.tx.rx_heartbeat_ms = now
    st = gw.status
    assert SV.stalled(st, now) == ""
    assert SV.stalled(st, ticks_add(now, 3500)) == "can-rx"  # the receiver polls every 10 ms
    gw.tx.rx_heartbeat_ms = ticks_add(now, 3500)
    assert SV.stalled(st, ticks_add(now, 3500)) == ""
    assert SV.stalled(st, ticks_add(now, 4100)) == "bms-poller"  # poll period 1 s + 3 s


async def test_watch_task_stops_feeding_a_stalled_gateway():
    gw, out = make_gateway()
    gw.source.heartbeat_ms = ticks_add(ticks_ms(), -60000)  # the poller hung a minute ago
    task = asyncio.create_task(gw._watch())
    await asyncio.sleep(0.05)
    task.cancel()
    assert gw.wdt.feeds == 0
    assert gw.status.wdt_starved == "bms-poller"
    assert any("bms-poller made no progress" in line for line in out)
    gw2, _ = make_gateway()
    task = asyncio.create_task(gw2._watch())
    await asyncio.sleep(0.05)
    task.cancel()
    assert gw2.wdt.feeds == 1


async def test_supervisor_restarts_a_crashing_task():
    gw, out = make_gateway()
    runs = []

    async def flaky():
        runs.append(1)
        if len(runs) < 2:
            raise ValueError("boom")
        await asyncio.sleep(10)

    task = asyncio.create_task(SV.supervise("flaky", flaky, gw.status))
    await asyncio.sleep(0.7)  # first restart back-off is 500 ms
    task.cancel()
    assert len(runs) == 2 and gw.status.task_restarts == 1
    assert any("task flaky crashed" in line for line in out)


class DeadCan(FakeCan):
    def restart(self):
        raise OSError(19)


def test_boot_says_which_can_controller_it_found_or_what_to_check():
    out = []
    ev = E.Events(out.append)
    cfg = C.defaults()
    assert B.bring_up_can(FakeCan(), cfg, ev)
    assert "MCP2515 found (8 MHz crystal), 500 kbit/s" in out[-1]
    assert not B.bring_up_can(DeadCan(), cfg, ev)
    assert "no MCP2515 answering" in out[-1] and "SPI wiring" in out[-1] and "jumpers" in out[-1]
    assert "retrying" in out[-1]
    cfg["can_backend"] = "twai"
    assert B.bring_up_can(FakeCan(), cfg, ev) and "TWAI controller (machine.CAN) on GPIO23/22" in out[-1]
    assert not B.bring_up_can(DeadCan(), cfg, ev)
    assert "no machine.CAN" in out[-1] and "can_backend mcp2515" in out[-1]


def test_config_problems_become_events():
    out = []
    ev = E.Events(out.append)
    cfg = B.load_config(MemStore({"gateway.json": '{"modules": 99}'}), ev)
    assert cfg["modules"] == 0 and "config: modules must be 0..32" in out[-1]


def test_link_changes_are_events_at_the_moment_they_are_seen():
    gw, out = make_gateway()
    load_pb_pack(gw.source.snap)
    fresh = gw.source.fresh
    t0 = ticks_ms()
    fresh.data_ok(t0)
    assert out[-1].endswith("BMS data complete: CAN output starts")
    gw.tx.burst(ticks_add(t0, 5001))  # the burst is the first to see the data is too old
    assert "BMS data STALE (no valid data: sending 0 A limits + alarms)" in out[-1]
    n = len(out)
    gw.tx.burst(ticks_add(t0, 5500))
    assert len(out) == n  # reported once per episode
    fresh.data_ok(ticks_add(t0, 5600))  # a 0.6 s episode: too short for a once-a-second look, still logged
    assert out[-1].endswith("BMS data back: limits return after the hold")
    listed = gw.execute("events")
    assert [("complete" in x, "STALE" in x, "back" in x) for x in listed[-3:]] == [
        (True, False, False), (False, True, False), (False, False, True)]


def test_inverter_silence_and_return_are_events():
    gw, out = make_gateway()
    inv = gw.tx.inverter
    t0 = inv.started_ms
    assert not inv.silent(ticks_add(t0, 10000)) and not out
    assert inv.silent(ticks_add(t0, 10001))
    assert "inverter silent: no 0x305 for 10 s (frames continue)" in out[-1]
    inv.silent(ticks_add(t0, 12000))
    assert len(out) == 1
    inv.heartbeat(ticks_add(t0, 12500))
    assert out[-1].endswith("inverter heartbeat back")


async def _crash_n_times(gw, n, run_ms, healthy_ms):
    waits = []
    runs = []

    async def crashing():
        runs.append(1)
        if len(runs) > 1:
            waits.append(gw.status.restart_wait_ms)
        if len(runs) > n:
            await asyncio.sleep(10)
        await asyncio.sleep(run_ms / 1000)
        raise ValueError("crash %d" % len(runs))

    task = asyncio.create_task(SV.supervise("crashy", crashing, gw.status, healthy_ms))
    while len(runs) <= n:
        await asyncio.sleep(0.02)
    task.cancel()
    return waits


async def test_supervisor_back_off_starts_over_after_a_healthy_run():
    saved = SV.RESTART_BACKOFF_MS
    SV.RESTART_BACKOFF_MS = (10, 20, 40, 80)  # the real table, scaled down for the test
    try:
        gw, _ = make_gateway()
        # crashes right after start: the back-off grows to its cap
        assert await _crash_n_times(gw, 6, 0, 10000) == [10, 20, 40, 80, 80, 80]
        gw, _ = make_gateway()
        # every crash after a healthy run: each restart waits the shortest time
        assert await _crash_n_times(gw, 5, 60, 50) == [10, 10, 10, 10, 10]
    finally:
        SV.RESTART_BACKOFF_MS = saved


def test_restart_waits_never_outlast_the_watchdog_stall_limit():
    # the 4th crash since boot used to wait 15 s: stalled for ~11 s, past the 10 s watchdog
    assert max(SV.RESTART_BACKOFF_MS) < SV.STALL_MIN_MS
    gw, _ = make_gateway()
    now = ticks_ms()
    # a CAN receiver restarting after its longest wait beats again in time
    gw.source.heartbeat_ms = gw.tx.tx_heartbeat_ms = now
    gw.tx.rx_heartbeat_ms = ticks_add(now, -max(SV.RESTART_BACKOFF_MS))
    assert SV.stalled(gw.status, now) == ""


def test_a_port_that_names_itself_is_reported_by_its_name():
    out = []

    class NamedCan(FakeCan):
        label = "SLCAN over TCP (host simulation)"

    assert B.bring_up_can(NamedCan(), C.defaults(), E.Events(out.append))
    assert "CAN: SLCAN over TCP (host simulation), 500 kbit/s" in out[-1] and "MCP2515" not in out[-1]
