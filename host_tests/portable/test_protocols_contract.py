# Every registered inverter protocol against the Encoder contract
# (protocols/base.py, docs/design.md "Protocols"): it builds from the config
# alone, loads no other protocol's module, keeps preallocated 8-byte frames
# with unique 11-bit ids, encodes and classifies its inverter's keep-alive
# without allocating, and its filters let that keep-alive through. Plus the
# gateway-side rules every protocol relies on: the per-protocol safe defaults
# (docs/inverter-can.md "Safe defaults"), a query answered with a set, an
# inverter command reported and never carried out. CPython and MicroPython.

import sys

from fakes import FakeCan, FakeRecovery, load_pb_pack
from mpcompat import collect, run_locked

import protocols
from app import config as C
from app.can_io import CanTx
from canport.base import filter_accepts
from charge.policy import ChargePolicy
from outputs import events as E
from pack.snapshot import PackSnapshot
from protocols.base import RX_COMMAND, RX_HEARTBEAT, RX_IGNORED, RX_REQUEST, Encoder
from sources.base import FRESH, Freshness

# the inverter's keep-alive per protocol: (id, data) as the inverter sends it
KEEPALIVE = {
    "pylon": (0x305, bytes(8)),
    "pylon_plus": (0x305, bytes(8)),
    "deye": (0x305, bytes(8)),
    "luxpower": (0x305, bytes(8)),
    "victron": (0x305, bytes(8)),
    "sma": (0x305, bytes([0x14, 0x02, 0x64, 0x00, 0xFA, 0x00, 0x20, 0x03])),
    "growatt": (0x301, bytes([0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88])),
}


def cfg_for(name, **kw):
    cfg = C.defaults()
    cfg["protocol"] = name
    for k in kw:
        cfg[k] = kw[k]
    return cfg


def test_every_name_has_a_module_and_a_keepalive():
    assert sorted(KEEPALIVE) == sorted(protocols.NAMES)
    try:
        protocols.load("pylontech")
        raise AssertionError("an unknown protocol must raise KeyError")
    except KeyError:
        pass


def _loaded_protocols():
    return [n for n in protocols.NAMES if ("protocols." + n) in sys.modules]


def test_a_protocol_loads_no_other_protocol_but_the_pylon_base():
    for name in protocols.NAMES:
        for n in protocols.NAMES:
            sys.modules.pop("protocols." + n, None)
        protocols.load(name)
        extra = [n for n in _loaded_protocols() if n != name and n != "pylon"]
        assert extra == [], (name, extra)


def test_every_encoder_keeps_the_contract():
    for name in protocols.NAMES:
        enc = protocols.make(cfg_for(name))
        assert isinstance(enc, Encoder) and isinstance(enc, protocols.load(name))
        ids = list(enc.ids)
        assert ids and len(ids) == len(enc.frames), name
        for i in range(len(ids)):
            assert 0 < ids[i] <= 0x7FF and ids[i] not in ids[:i], (name, hex(ids[i]))
            assert isinstance(enc.frames[i], bytearray) and len(enc.frames[i]) == 8, (name, hex(ids[i]))
        assert 1 <= len(enc.NAME) <= 8, name
        if name == "victron":
            assert not enc.NAME.upper().startswith("PYLON")  # Venus OS would clip the CVL to 52.4 V
        assert 3 <= enc.SILENT_S <= 600 and enc.HEARTBEAT.startswith("0x"), name
        assert enc.period_ms is None or 200 <= enc.period_ms <= 5000, name
        kid, data = KEEPALIVE[name]
        assert enc.HEARTBEAT == "0x%03X" % kid or enc.HEARTBEAT == "0x%03x" % kid, name
        assert filter_accepts(enc.rx_filters, kid, 0), name
        assert not filter_accepts(enc.rx_filters, 0x123, 0) or enc.rx_filters is None, name


def _fresh_lim(name):
    cfg = cfg_for(name, hold_s=0)
    snap = PackSnapshot()
    load_pb_pack(snap)
    pol = ChargePolicy(cfg, 0)
    for t in range(0, 60000, 1000):  # past the start's hold and ramp
        assert pol.decide(snap, FRESH, t)
    return cfg, snap, pol.lim


def test_encode_and_keepalive_allocate_nothing_in_every_protocol():
    for name in protocols.NAMES:
        cfg, snap, lim = _fresh_lim(name)
        enc = protocols.make(cfg)
        kid, data = KEEPALIVE[name]
        buf = memoryview(bytearray(data))
        collect()
        run_locked(enc.encode, snap, lim, lim.flags)
        code = run_locked(enc.on_rx, kid, buf, 8, 0)
        assert code in (RX_HEARTBEAT, RX_REQUEST), (name, code)
        assert enc.on_rx(kid, buf, 8, 0) == code
        # an RTR or a 29-bit frame with the keep-alive's id is not the keep-alive
        assert enc.on_rx(kid, buf, 8, 1) == RX_IGNORED and enc.on_rx(kid, buf, 8, 2) == RX_IGNORED, name
        assert any(f != bytearray(8) for f in enc.frames), name


def test_battery_name_is_the_protocols_own_unless_set():
    for name in protocols.NAMES:
        enc = protocols.make(cfg_for(name))
        if 0x35E not in enc.ids:
            continue
        f = enc.frames[list(enc.ids).index(0x35E)]
        assert bytes(f).rstrip(b" \x00").decode() == enc.NAME, name
        enc = protocols.make(cfg_for(name, battery_name="MY-BANK"))
        f = enc.frames[list(enc.ids).index(0x35E)]
        assert bytes(f) == b"MY-BANK ", name


def test_victron_never_gets_the_pylon_name():
    msgs = []
    cfg = C.validate({"protocol": "victron", "battery_name": "PYLON"}, msgs)
    assert cfg["battery_name"] == "" and "52.4 V" in " ".join(msgs)
    msgs = []
    assert C.validate({"protocol": "pylon", "battery_name": "PYLON"}, msgs)["battery_name"] == "PYLON" and not msgs


def test_inverter_timeout_is_the_protocols_unless_set():
    msgs = []
    assert C.validate({"inverter_timeout_s": 2}, msgs)["inverter_timeout_s"] == 0 and "0 (the protocol" in msgs[0]
    for name in protocols.NAMES:
        tx, _, _ = make_tx(cfg_for(name))
        assert tx.inverter.timeout_ms == tx.enc.SILENT_S * 1000
        tx, _, _ = make_tx(cfg_for(name, inverter_timeout_s=45))
        assert tx.inverter.timeout_ms == 45000


def test_link_loss_auto_is_the_protocols_safe_default():
    for name in protocols.NAMES:
        pol = ChargePolicy(cfg_for(name), 0)
        assert pol.stop_on_loss == (name == "deye"), name  # Deye ignores 0 A limits: the frames stop
        assert not ChargePolicy(cfg_for(name, link_loss="zeros"), 0).stop_on_loss
        assert ChargePolicy(cfg_for(name, link_loss="stop"), 0).stop_on_loss


# --- the gateway side of RX_REQUEST / RX_COMMAND, with a protocol of our own


class Asking(Encoder):
    """0x301 asks for the set, 0x300 is a command, 0x305 a plain keep-alive."""

    HEARTBEAT = "0x301"
    command = "battery shutdown"

    def __init__(self):
        self.ids = (0x351, 0x355, 0x356)
        self.frames = [bytearray(8) for _ in self.ids]

    def encode(self, snap, lim, flags):
        self.frames[0][0] = lim.cvl_dv & 0xFF

    def on_rx(self, can_id, data, n, flags):
        if can_id == 0x301:
            return RX_REQUEST
        if can_id == 0x300:
            return RX_COMMAND
        return RX_HEARTBEAT if can_id == 0x305 else RX_IGNORED


def make_tx(cfg=None, enc=None):
    cfg = cfg or C.defaults()
    snap = PackSnapshot()
    fresh = Freshness(cfg["bms_timeout_s"] * 1000)
    tx = CanTx(FakeCan(), FakeRecovery(), cfg, snap, fresh, ChargePolicy(cfg, 0), enc or protocols.make(cfg))
    return tx, snap, fresh


def test_a_query_is_answered_with_a_set_at_most_once_per_half_period():
    tx, snap, fresh = make_tx(enc=Asking())
    load_pb_pack(snap)
    fresh.data_ok(0)
    tx.can.inbox.append((0x301, bytes(8)))
    tx.receive(100)
    assert [f[0] for f in tx.can.sent] == [0x351, 0x355, 0x356] and tx.requests == tx.answered == 1
    assert tx.inverter.count == 1 and tx.due == 1600  # periodic only 1.5 periods after the last query
    tx.can.sent = []
    tx.can.inbox.append((0x301, bytes(8)))
    tx.receive(400)  # 300 ms later: less than half a period
    assert tx.can.sent == [] and tx.requests == 2 and tx.answered == 1 and tx.due == 1900
    tx.can.inbox.append((0x301, bytes(8)))
    tx.receive(700)
    assert len(tx.can.sent) == 3 and tx.due == 2200 and tx.answered == 2


def test_an_answered_set_is_followed_by_a_collection_once_it_is_handed_over():
    # run_tx collects right after its own bursts; a set sent from receive() gets the same, from
    # the receive task, once the set is all with the controller (never inside the send path).
    # The CanTx and the gc patched come from the same module object: other tests re-import the
    # firmware's modules, so the CanTx imported above may belong to another copy
    from app import can_io

    class CountingGc:
        n = 0

        def collect(self):
            self.n += 1

    saved = can_io.gc
    can_io.gc = counting = CountingGc()
    try:
        can = FakeCan(capacity=1)  # one frame per pump: the set takes three passes
        cfg = C.defaults()
        snap = PackSnapshot()
        fresh = Freshness(cfg["bms_timeout_s"] * 1000)
        tx = can_io.CanTx(can, FakeRecovery(), cfg, snap, fresh, ChargePolicy(cfg, 0), Asking())
        load_pb_pack(snap)
        fresh.data_ok(0)
        can.inbox.append((0x301, bytes(8)))
        tx.receive(100)
        assert len(can.sent) == 1 and tx.pending()
        for _ in range(2):
            can.capacity += 1
            assert not tx.after_receive() and counting.n == 0  # frames still waiting: no collection
        assert len(can.sent) == 3 and not tx.pending()
        assert tx.after_receive() and counting.n == 1  # handed over: collected once
        assert not tx.after_receive() and counting.n == 1  # and only once per answered set
    finally:
        can_io.gc = saved


def test_a_query_before_the_first_data_sends_nothing():
    tx, snap, fresh = make_tx(enc=Asking())
    tx.can.inbox.append((0x301, bytes(8)))
    tx.receive(100)
    assert tx.can.sent == [] and tx.requests == 1 and tx.answered == 0


def test_an_inverter_command_is_reported_at_most_once_a_minute_and_never_acted_on():
    tx, snap, fresh = make_tx(enc=Asking())
    said = []
    tx.on_command = said.append
    for t in range(0, 130000, 1000):
        tx.can.inbox.append((0x300, bytes([1, 0, 0, 0, 0, 0, 0, 0])))
        tx.receive(t)
    assert tx.commands == 130 and said == ["battery shutdown"] * 3  # at 0, 60 and 120 s
    assert tx.inverter.count == 0  # a command is not a keep-alive


def test_the_gateway_reports_an_inverter_command_as_an_event():
    from fakes import CountingWdt, FakeUart, MemStore

    from app import gateway as G

    out = []
    gw = G.Gateway(cfg_for("luxpower"), FakeUart({}), FakeCan(), FakeRecovery(), CountingWdt(), MemStore(),
                   None, "gateway.json", out.append)
    gw.tx.can.inbox.append((0x300, bytes([1, 0, 0, 0, 0, 0, 0, 0])))
    gw.tx.receive(1000)
    last = gw.events.recent()[-1]
    assert last[1] == E.INV_COMMAND and "not carried out" in out[-1] and "0x300" in out[-1]
    assert "inverter commands not carried out: 1" in "\n".join(gw.execute("frames"))
