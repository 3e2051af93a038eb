# The gateway runtime's pure parts: configuration validation and atomic save,
# link supervision, the CAN burst policy, the console, and the BMS poller
# against a fake UART that answers with real JK-PB captures. Runs under
# CPython and real MicroPython.

import asyncio

from fixtures import find_frame, unhex

from gateway import config as C
from gateway import link as L
from gateway.bms_poller import BmsPoller
from gateway.can_tx import CanTx
from gateway.console import Console
from inverter import pylontech
from jkbms import pb_modbus as pb
from pack import limits
from pack.snapshot import PackSnapshot


class MemStore:
    def __init__(self, files=None):
        self.files = files or {}
        self.writes = 0

    def read(self, name):
        if name not in self.files:
            raise OSError(2)
        return self.files[name]

    def write_atomic(self, name, text):
        self.writes += 1
        self.files[name] = text


class FakeCan:
    def __init__(self, capacity=100):
        self.sent = []
        self.capacity = capacity
        self.bus_off = False
        self.inbox = []

    def send(self, can_id, data, flags=0):
        if self.bus_off:
            raise OSError(5)
        if len(self.sent) >= self.capacity:
            return None
        self.sent.append((can_id, bytes(data)))
        return 0

    def recv(self, arg=None):
        if not self.inbox:
            return None
        can_id, data = self.inbox.pop(0)
        arg[0] = can_id
        arg[2] = 0
        arg[3] = 0
        return arg


class FakeRecovery:
    recoveries = 0
    state = 1

    def poll(self, now):
        return self.state


def test_defaults_are_valid_and_documented():
    cfg = C.defaults()
    for key in cfg:
        assert C.check(key, cfg[key]) == cfg[key]
        assert len(C.SCHEMA[key][4]) > 10  # every key has its help text
    assert cfg["bms_rx"] == 16 and cfg["bms_tx"] == 17 and cfg["bms_baud"] == 115200
    assert cfg["bms_timeout_s"] == 5 and cfg["inverter_timeout_s"] == 10
    assert cfg["link_loss"] == "zeros" and cfg["can_period_ms"] == 1000


def test_missing_or_broken_config_gives_defaults_and_says_why():
    msgs = []
    assert C.load(MemStore(), "gateway.json", msgs) == C.defaults()
    assert "no gateway.json" in msgs[0]
    msgs = []
    assert C.load(MemStore({"gateway.json": "{not json"}), "gateway.json", msgs) == C.defaults()
    assert "not valid JSON" in msgs[0]
    msgs = []
    assert C.load(MemStore({"gateway.json": "[1, 2]"}), "gateway.json", msgs) == C.defaults()
    assert msgs


def test_invalid_keys_fall_back_one_by_one():
    msgs = []
    text = '{"can_period_ms": 50, "bms_protocol": "jk-nw", "battery_name": "TOO-LONG-NAME", "bogus": 1, "modules": true}'
    cfg = C.load(MemStore({"gateway.json": text}), "gateway.json", msgs)
    assert cfg["bms_protocol"] == "jk-nw"  # the valid key is kept
    assert cfg["can_period_ms"] == 1000 and cfg["battery_name"] == "PYLON" and cfg["modules"] == 1
    joined = " | ".join(msgs)
    assert "can_period_ms" in joined and "bogus" in joined and "battery_name" in joined and "modules" in joined
    assert len(msgs) == 4


def test_save_round_trips_and_refuses_invalid_values():
    store = MemStore()
    cfg = C.defaults()
    cfg["can_period_ms"] = 500
    C.save(store, "gateway.json", cfg)
    msgs = []
    assert C.load(store, "gateway.json", msgs) == cfg and not msgs
    cfg["can_period_ms"] = 10
    try:
        C.save(store, "gateway.json", cfg)
        assert False
    except ValueError:
        pass
    assert store.writes == 1  # the bad config never reached the flash


def test_link_monitor_states_and_recovery():
    lk = L.LinkMonitor(5000, 10000)
    assert lk.bms_state(1000) == L.WAIT
    lk.data_ok(1000)
    assert lk.bms_state(6000) == L.FRESH
    assert lk.bms_state(6001) == L.STALE
    lk.data_ok(7000)
    assert lk.bms_state(7001) == L.FRESH
    # across the ticks wrap-around (2**30 on the ESP32; the period is port-specific)
    from gateway.clock import ticks_add
    lk.data_ok(ticks_add(0, -200))
    assert lk.age_ms(300) == 500 and lk.bms_state(300) == L.FRESH
    assert lk.inverter_silent(10001, 0)
    lk.heartbeat(20000)
    lk.heartbeat(21000)
    lk.heartbeat(26000)
    assert (lk.hb_count, lk.hb_min_gap, lk.hb_max_gap) == (3, 1000, 5000)
    assert not lk.inverter_silent(35000, 0) and lk.inverter_silent(36001, 0)


def make_tx(cfg=None, can=None):
    cfg = cfg or C.defaults()
    snap = PackSnapshot()
    link = L.LinkMonitor(cfg["bms_timeout_s"] * 1000, cfg["inverter_timeout_s"] * 1000)
    tx = CanTx(can or FakeCan(), FakeRecovery(), cfg, snap, link, print)
    return tx, snap, link


def load_pb_pack(snap):
    from jkbms import cellinfo, settings
    from jkbms import frame as J
    settings.decode(unhex(find_frame("rs485_pb_settings_response_with_ack_mpp")["hex"])[:300], snap)
    cellinfo.decode(unhex(find_frame("rs485_pb_status_response_with_ack_mpp")["hex"])[:300], 6,
                    J.LAYOUT_JK02_32S, snap)


def test_no_frame_before_the_first_complete_data_set():
    tx, snap, link = make_tx()
    assert tx.burst(0) == 0 and tx.can.sent == []
    load_pb_pack(snap)
    link.data_ok(100)
    assert tx.burst(200) == 6
    assert [f[0] for f in tx.can.sent] == [0x35E, 0x351, 0x355, 0x356, 0x359, 0x35C]


def test_stale_data_zeros_policy_then_recovery():
    tx, snap, link = make_tx()
    load_pb_pack(snap)
    link.data_ok(0)
    tx.burst(1000)
    f351 = tx.can.sent[1][1]
    assert f351[2] | (f351[3] << 8) > 0  # fresh: a charge limit
    tx.can.sent = []
    tx.burst(6001)  # data now 6 s old
    f351 = tx.can.sent[1][1]
    f359 = tx.can.sent[4][1]
    f35c = tx.can.sent[5][1]
    assert f351[2:6] == b"\x00\x00\x00\x00"  # CCL = DCL = 0
    assert f359[1] & 0x08 and f359[3] & 0x08  # system error + communication failure
    assert f35c[0] == 0  # neither charge nor discharge enabled
    assert tx.link_lost
    link.data_ok(6500)
    tx.can.sent = []
    tx.burst(7000)
    assert tx.can.sent[4][1][1] == 0 and not tx.link_lost


def test_stale_data_stop_policy():
    cfg = C.defaults()
    cfg["link_loss"] = "stop"
    tx, snap, link = make_tx(cfg)
    load_pb_pack(snap)
    link.data_ok(0)
    assert tx.burst(1000) == 6
    assert tx.burst(6001) == 0 and tx.stopped
    link.data_ok(7000)
    assert tx.burst(7100) == 6 and not tx.stopped


def test_full_queue_and_bus_off_never_raise():
    tx, snap, link = make_tx(can=FakeCan(capacity=3))
    load_pb_pack(snap)
    link.data_ok(0)
    assert tx.burst(10) == 3 and tx.tx_full == 3
    tx.can.bus_off = True
    assert tx.burst(20) == 0 and tx.tx_errors == 1


def test_inverter_heartbeat_is_recorded():
    tx, snap, link = make_tx()
    tx.can.inbox = [(0x305, b"\x00" * 8), (0x123, b"\x01"), (0x305, b"\x00" * 8)]
    assert tx.receive(500) == 3
    assert link.hb_count == 2


class FakeApp:
    def __init__(self):
        self.cfg = C.defaults()
        self.store = MemStore()
        self.config_name = "gateway.json"
        self.tx, self.snap, self.link = make_tx(self.cfg)
        self.can = self.tx.can
        self.recovery = self.tx.recovery
        self.started_ms = 0

        class P:
            polls_ok = 3
            timeouts = 1
            decode_errors = 0
            exceptions = 0
            resync_bytes = 0
            last_error = ""
            raw = bytearray(b"\x55\xaa\xeb\x90")
            raw_len = 4
        self.poller = P()
        self.can.get_counters = lambda *a: [0, 0, 0, 0, 0, 0, 0, 0]

    def can_state_name(self):
        return "active"

    def free_heap(self):
        return "n/a"


def test_console_commands():
    app = FakeApp()
    con = Console(app)
    assert con.execute("help")[0] == "commands:"
    assert "unknown command" in con.execute("frobnicate")[0]
    assert con.execute("") == []
    assert "no frames sent yet" in con.execute("frames")[0]
    assert con.execute("cells") == ["no cell data yet"]
    load_pb_pack(app.snap)
    app.link.data_ok(0)
    app.tx.burst(0)
    status = "\n".join(con.execute("status"))
    assert "26.852 V" in status and "SOC 88 %" in status and "CVL" in status and "CAN: active" in status
    frames = con.execute("frames")
    assert frames[1].startswith("  35E#50594C4F4E202020")
    cells = con.execute("cells")
    assert len(cells) == 9 and "3.3" in cells[0]
    assert con.execute("raw") == ["55aaeb90"]
    assert "must be 200..5000" in con.execute("set can_period_ms 50")[0]
    assert "pending" in con.execute("set can_period_ms 250")[0]
    assert "after save + reboot" in con.execute("get can_period_ms")[0]
    assert app.cfg["can_period_ms"] == 1000  # the running value is unchanged
    assert "saved" in con.execute("save")[0]
    msgs = []
    assert C.load(app.store, "gateway.json", msgs)["can_period_ms"] == 250 and not msgs


class FakeUart:
    """Answers JK-PB FC10 triggers with real captures (slave 1)."""

    def __init__(self, replies, noise=b""):
        self.replies = replies
        self.noise = noise
        self.pending = bytearray()
        self.requests = []

    def write(self, buf):
        req = bytes(buf)
        self.requests.append(req)
        reply = self.replies.get(req)
        if reply is not None:
            self.pending += self.noise + req + reply  # our own echo first
        return len(req)

    def readinto(self, buf):
        if not self.pending:
            return None
        n = min(len(buf), len(self.pending), 37)
        buf[:n] = self.pending[:n]
        self.pending = self.pending[n:]
        return n


def pb_replies():
    b = bytearray(16)
    out = {}
    for reg, fid in ((pb.TRIGGER_STATUS, "rs485_pb_status_response_with_ack_mpp"),
                     (pb.TRIGGER_SETTINGS, "rs485_pb_settings_response_with_ack_mpp"),
                     (pb.TRIGGER_ABOUT, "rs485_pb_about_response_with_ack_mpp")):
        n = pb.build_trigger(b, 1, reg)
        out[bytes(b[:n])] = unhex(find_frame(fid)["hex"])
    return out


def run(coro):
    if hasattr(asyncio, "run"):
        return asyncio.run(coro)
    return coro  # not reached on the runtimes we test


async def test_poller_reads_a_jk_pb_pack_through_noise():
    cfg = C.defaults()
    cfg["bms_reply_ms"] = 300
    snap = PackSnapshot()
    link = L.LinkMonitor(5000, 10000)
    uart = FakeUart(pb_replies(), noise=b"\x00\xff\x13")
    p = BmsPoller(uart, cfg, snap, link, print)
    assert await p.poll_once()
    assert p.device["model"] == "JK_PB2A16S15P"
    assert snap.settings_ok == 1 and snap.max_charge_ma == 150000
    assert snap.pack_mv == 26852 and snap.soc_pct == 88
    assert link.have_data and p.polls_ok == 1
    assert p.raw_len == 300 and p.raw[4] == 0x02
    assert len(uart.requests) == 3  # about, settings, status


async def test_poller_survives_a_silent_bms_without_touching_the_snapshot():
    cfg = C.defaults()
    cfg["bms_reply_ms"] = 60
    cfg["bms_retries"] = 1
    snap = PackSnapshot()
    link = L.LinkMonitor(5000, 10000)
    p = BmsPoller(FakeUart({}), cfg, snap, link, print)
    assert not await p.poll_once()
    assert p.timeouts >= 2 and not link.have_data and snap.updates == 0
    assert p.last_error == "no reply from the BMS"


async def test_poller_rejects_a_corrupted_status_frame():
    cfg = C.defaults()
    cfg["bms_reply_ms"] = 100
    cfg["bms_retries"] = 0
    replies = pb_replies()
    b = bytearray(16)
    n = pb.build_trigger(b, 1, pb.TRIGGER_STATUS)
    bad = bytearray(replies[bytes(b[:n])])
    bad[150] ^= 0x40  # pack voltage byte: checksum now wrong
    replies[bytes(b[:n])] = bytes(bad)
    snap = PackSnapshot()
    link = L.LinkMonitor(5000, 10000)
    p = BmsPoller(FakeUart(replies), cfg, snap, link, print)
    assert not await p.poll_once()
    assert snap.updates == 0 and snap.settings_ok == 1  # settings read, status refused
    assert not link.have_data


def test_burst_phase_locks_onto_the_bms_poll():
    tx, snap, link = make_tx()
    load_pb_pack(snap)
    # BMS data lands every 1000 ms at phase 40; bursts start at phase 940 -> age 900 ms
    for start in (940, 1020, 1050):
        ages = lock_in(tx, link, start)
        assert 75 <= ages[-1] <= 150 and 75 <= ages[-2] <= 150, (start, ages)
    assert lock_in(tx, link, 940)[0] == 900
    # different poll and CAN periods: no phase to lock onto, no nudging
    cfg = C.defaults()
    cfg["bms_poll_ms"] = 2000
    tx2, snap2, link2 = make_tx(cfg)
    link2.data_ok(0)
    assert tx2.phase_step(900, 1000) == 0


def lock_in(tx, link, burst_at):
    ages = []
    for _ in range(40):
        link.data_ok((burst_at - 40) // 1000 * 1000 + 40)  # the newest data at that time
        step = tx.phase_step(burst_at, 1000)
        assert -50 <= step <= 50  # cadence stays within 5 %
        ages.append(link.age_ms(burst_at))
        burst_at += 1000 + step
    return ages


class CountingWdt:
    feeds = 0

    def feed(self):
        self.feeds += 1


def make_gateway():
    from canport.base import BusOffRecovery
    from canport.host import LoopbackPort
    from gateway.app import Gateway
    can = LoopbackPort()
    out = []
    gw = Gateway(C.defaults(), FakeUart({}), can, BusOffRecovery(can), CountingWdt(), MemStore(),
                 None, "gateway.json", out.append)
    return gw, out


def test_watchdog_is_fed_only_while_every_task_progresses():
    from gateway.clock import ticks_add, ticks_ms
    gw, out = make_gateway()
    now = ticks_ms()
    gw.poller.heartbeat_ms = now
    gw.tx.tx_heartbeat_ms = now
    gw.tx.rx_heartbeat_ms = now
    assert gw._stalled(now) == ""
    assert gw._stalled(ticks_add(now, 3500)) == "can-rx"  # the receiver polls every 10 ms
    gw.tx.rx_heartbeat_ms = ticks_add(now, 3500)
    assert gw._stalled(ticks_add(now, 3500)) == ""
    assert gw._stalled(ticks_add(now, 4100)) == "bms-poller"  # poll period 1 s + 3 s


async def test_watch_task_stops_feeding_a_stalled_gateway():
    import asyncio
    from gateway.clock import ticks_add, ticks_ms
    gw, out = make_gateway()
    gw.poller.heartbeat_ms = ticks_add(ticks_ms(), -60000)  # the poller hung a minute ago
    task = asyncio.create_task(gw.watch())
    await asyncio.sleep(0.05)
    task.cancel()
    assert gw.wdt.feeds == 0
    assert gw.wdt_starved == "bms-poller"
    assert any("bms-poller made no progress" in line for line in out)
    gw2, _ = make_gateway()
    task = asyncio.create_task(gw2.watch())
    await asyncio.sleep(0.05)
    task.cancel()
    assert gw2.wdt.feeds == 1


async def test_supervisor_restarts_a_crashing_task():
    import asyncio
    gw, out = make_gateway()
    runs = []

    async def flaky():
        runs.append(1)
        if len(runs) < 2:
            raise ValueError("boom")
        await asyncio.sleep(10)

    task = asyncio.create_task(gw.supervise("flaky", flaky))
    await asyncio.sleep(0.7)  # first restart back-off is 500 ms
    task.cancel()
    assert len(runs) == 2 and gw.task_restarts == 1
    assert any("task flaky crashed" in line for line in out)


def _fresh_dir(name):
    import os
    for d in ("build", name):  # build/ is git-ignored
        try:
            os.mkdir(d)
        except OSError:
            pass
    for f in ("gateway.json", "gateway.json.new"):
        try:
            os.remove(name + "/" + f)
        except OSError:
            pass
    return name


def test_file_store_saves_atomically_and_survives_a_torn_write():
    import os
    from gateway.storage import FileStore
    store = FileStore(_fresh_dir("build/store_test"))
    cfg = C.defaults()
    cfg["modules"] = 3
    C.save(store, "gateway.json", cfg)
    assert "gateway.json.new" not in os.listdir("build/store_test")  # renamed over, nothing left behind
    # a power cut while the next save was writing: a torn .new file, the old file intact
    with open("build/store_test/gateway.json.new", "w") as f:
        f.write('{"modules": 5, "can_peri')
    msgs = []
    assert C.load(store, "gateway.json", msgs)["modules"] == 3 and not msgs
    cfg["modules"] = 4
    C.save(store, "gateway.json", cfg)  # the next save replaces both
    assert C.load(store, "gateway.json", msgs)["modules"] == 4 and not msgs
