# net.telemetry: the state and pack JSON of the network outputs, built on a
# real gateway (fakes for the hardware, a real JK-PB capture decoded into
# its snapshot): valid JSON always, the tggo/jkbms-poll names with exact
# fixed-point values, the limits / charge words / links / alarms / device
# sections, pure ASCII, bounded size with the largest snapshot and a full
# events ring. CPython and MicroPython (unix and webassembly ports).
# The field-by-field comparison with tools/state_json.snapshot_to_dict() on
# every capture is host_tests/cpython/test_net_telemetry_schema.py.
# unix heap: 384k -- the several-packs gateway compiles app.packs and the bus task from source

import gc
import json

from fakes import CountingWdt, FakeCan, FakeRecovery, FakeUart, MemStore, load_pb_pack

from app import config as C
from app import gateway as G
from charge import texts
from compat import ticks_ms
from net import telemetry as T
from net.hub import Net
from outputs import events as E
from pack import snapshot as S


class Wlan:
    """A station that is up (net.wifi only asks it)."""

    def active(self, *a):
        return True

    def isconnected(self):
        return True

    def ifconfig(self):
        return ("192.168.1.9", "255.255.255.0", "192.168.1.1", "192.168.1.1")

    def status(self):
        return 1010


def gateway(cfg=None):
    cfg = cfg or C.defaults()
    out = []
    gw = G.Gateway(cfg, FakeUart({}), FakeCan(), FakeRecovery(), CountingWdt(), MemStore(), None,
                   "gateway.json", out.append)
    return gw


def with_net(gw):
    gw.status.net = Net(gw.status, wlan=Wlan(), dev_id="a1b2c3d4e5f6")
    return gw.status.net


def loaded():
    """A gateway on the real JK-PB capture, data fresh, one frame set decided."""
    gw = gateway()
    load_pb_pack(gw.source.snap)
    now = ticks_ms()
    gw.source.fresh.data_ok(now)
    gw.tx.burst(now)
    return gw, now


def test_fix_prints_fixed_point_exactly_with_the_sign():
    assert T.fix(3300, 3) == "3.3"
    assert T.fix(3345, 3) == "3.345"
    assert T.fix(0, 3) == "0.0"
    assert T.fix(5, 3) == "0.005"
    assert T.fix(-5, 3) == "-0.005"
    assert T.fix(-1000, 3) == "-1.0"
    assert T.fix(-12345, 3) == "-12.345"
    assert T.fix(-253, 1) == "-25.3"
    assert T.fix(120, 1) == "12.0"
    assert T.fix(52123 * -12345, 6) == "-643.458435"
    assert T.fix(65535 * 400000, 6) == "26214.0"  # beyond 2**30: a big int on the ESP32
    assert T.fix(1, 6) == "0.000001"


def test_strings_are_escaped_and_pure_ascii():
    assert T.q("plain text") == '"plain text"'
    assert T.q('a "b" \\ c') == '"a \\"b\\" \\\\ c"'
    assert T.q("tab\there\nnl") == '"tab\\u0009here\\u000anl"'
    assert T.q("25 \u00b0C") == '"25 \\u00b0C"'
    assert T.q("\U0001f50b") == '"\\ud83d\\udd0b"'  # a surrogate pair, as JSON has it
    for s in ('a "b" \\ c', "tab\there\nnl", "25 \u00b0C", "\x7f"):
        assert json.loads(T.q(s)) == s


def test_the_firmwares_own_words_need_no_escaping():
    # telemetry puts them into the JSON as they are (no per-character walk every period)
    from outputs.alarms import ALARM_NAMES
    from outputs.status import _CAN_STATES
    from sources.base import STATE_NAMES

    for table in (texts.STATES, texts.WHY, texts.REASONS, texts.PLAUSIBLE, STATE_NAMES, _CAN_STATES, T.PACK_STATES,
                  ALARM_NAMES, ("bits 0x%x" % 0xFF000000, "state 7")):
        for word in table:
            assert T.q(word) == '"%s"' % word, word


def test_state_before_any_data_holds_no_battery_fields():
    gw = gateway()
    net = with_net(gw)
    d = json.loads(T.state(gw.status, ticks_ms()))
    for k in ("num_cells", "battery_voltage_v", "soc_percent", "cell_ovp_v"):
        assert k not in d
    assert d["links"]["bms"] == "waiting for first BMS data" and d["links"]["bms_age_ms"] is None
    assert d["links"]["wifi"] == "down"  # net.wifi has not looked at the station yet
    assert d["links"]["mqtt"] == "off" and d["links"]["can"] == "active"
    assert d["alarms"] == [] and d["device"] == "a1b2c3d4e5f6"
    assert d["packs"] == {"configured": 1, "online": 0}
    assert d["limits"]["ccl_a"] == 0 and d["limits"]["charge_enable"] is False
    assert d["charge"]["state"] == texts.STATES[0] and d["charge"]["charge_reason"] == texts.REASONS[1]
    assert "events" not in d
    net.wifi._check()
    assert json.loads(T.state(gw.status, ticks_ms()))["links"]["wifi"] == "up"


def test_state_of_a_real_pack_has_the_snapshot_values():
    gw, now = loaded()
    with_net(gw)
    s = gw.source.snap
    text = T.state(gw.status, now)
    d = json.loads(text)
    n = s.cell_count
    assert d["num_cells"] == n and len(d["cell_voltages_v"]) == n
    for i in range(n):
        assert abs(d["cell_voltages_v"][i] * 1000 - s.cells[i]) < 0.01
    assert d["battery_voltage_v"] == 26.852 and d["soc_percent"] == 88
    assert d["cell_min_num"] == s.cell_min_idx + 1 and d["cell_max_num"] == s.cell_max_idx + 1
    assert abs(d["battery_power_w"] * 1e6 - s.pack_mv * s.current_ma) < 1
    assert abs(d["cell_ovp_v"] * 1000 - s.cell_ovp_mv) < 0.01
    assert d["charge_switch"] is bool(s.charge_switch)
    if s.temps[1] != S.NO_TEMP:
        assert abs(d["t1_c"] * 10 - s.temps[1]) < 0.01
    lim = gw.policy.lim
    L = d["limits"]
    assert abs(L["cvl_v"] * 10 - lim.cvl_dv) < 0.01 and abs(L["dcl_a"] * 10 - lim.dcl_da) < 0.01
    assert L["charge_enable"] is bool(lim.charge_enable) and L["soc_sent_percent"] == lim.soc_pct
    c = d["charge"]
    assert c["cvl_reason"] == texts.REASONS[lim.cvl_reason]
    assert c["discharge_reason"] == texts.REASONS[lim.discharge_reason]
    assert c["why"] == texts.WHY[gw.policy.ctl.why] and c["data"] == texts.PLAUSIBLE[gw.policy.implausible]
    assert d["links"]["bms"] == "fresh" and 0 <= d["links"]["bms_age_ms"] < 1000
    assert d["links"]["inverter"] == "ok"  # not silent yet: its timeout has not run out
    assert d["packs"] == {"configured": 1, "online": 1}
    for ch in text:
        assert " " <= ch <= "~"


def test_alarm_names_are_the_consoles():
    gw, now = loaded()
    s = gw.source.snap
    s.have |= S.HAVE_ALARMS
    s.alarms = (1 << 4) | (1 << 11) | (1 << 30)
    d = json.loads(T.state(gw.status, now))
    assert d["alarms"] == ["cell OVP", "cell UVP", "bits 0x40000000"]
    assert d["error_bitmask"] == s.alarms
    assert d["device"] == ""  # no network: no device id to give


def largest(gw):
    """Every field at its longest: 32 cells, negative values, all sensors,
    settings, every alarm bit, a full ring of long events with escapes."""
    s = gw.source.snap
    load_pb_pack(s)
    s.cell_count = S.MAX_CELLS
    for i in range(S.MAX_CELLS):
        s.cells[i] = 3001 + i * 7
    s.cell_stats()
    s.pack_mv = 65535
    s.current_ma = -399999
    for i in range(S.TEMP_SLOTS):
        s.temps[i] = -401 + i
    s.have = 0xFFF
    s.alarms = 0xFFFFFFFF
    s.set_cell_count = 32
    s.settings_ok = 1
    for i in range(20):
        gw.events.emit(E.NET_WARN, 'a "quoted" \\ text \u00b0 %d ' % i + "x" * 300)


def test_the_largest_state_is_valid_bounded_ascii():
    gw = gateway()
    with_net(gw)
    largest(gw)
    now = ticks_ms()
    plain = len(T.state(gw.status, now))
    gc.collect()  # the unix port's test heap is small: the parts of the last text are garbage now
    full = T.state(gw.status, now, events=True)
    d = json.loads(full)
    assert len(d["cell_voltages_v"]) == 32 and d["battery_current_a"] == -399.999
    assert d["power_tube_temp_c"] == -40.1 and d["t5_c"] == -39.6
    assert len(d["events"]) == 16  # the ring, not the 20 emitted
    t, level, text = d["events"][-1]
    assert level == "WARN" and text.startswith('network: a "quoted" \\ text \u00b0 19 ')
    assert len(text) == T.EVENT_TEXT_MAX and text.endswith("...") and t >= 0
    assert plain < 2600, plain
    assert len(full) < plain + 16 * 200, len(full)
    for ch in full:
        assert " " <= ch <= "~"


def test_events_list_the_ring_oldest_first():
    gw = gateway()
    gw.events.emit(E.BMS_STALE, "no reply")
    gw.events.emit(E.NET, "MQTT connected")
    d = json.loads(T.state(gw.status, ticks_ms(), events=True))
    ev = d["events"]
    assert [e[1] for e in ev[-2:]] == ["ALARM", "info"]
    assert ev[-2][2] == "BMS data STALE (no reply)" and ev[-1][2] == "network: MQTT connected"
    assert ev[-1][0] >= ev[-2][0] >= 0


async def test_several_packs_each_have_their_own_json():
    from test_app_packs import make_gw

    gw, _, _ = make_gw()
    await gw.links[0].cycle(1000)
    now = ticks_ms()
    st = gw.status
    d = json.loads(T.state(st, now))
    assert d["packs"] == {"configured": 3, "online": 3}
    assert d["battery_voltage_v"] * 1000 == st.snap.pack_mv
    for i in range(3):
        p = json.loads(T.pack(st, i, now))
        assert p["name"] == st.packs[i].name and p["state"] == "online"
        assert p["battery_voltage_v"] == st.packs[i].snap.pack_mv / 1000
        assert 0 <= p["age_ms"] < 5000 and p["num_cells"] == st.packs[i].snap.cell_count


def test_a_single_pack_names_its_link_state():
    gw, now = loaded()
    p = json.loads(T.pack(gw.status, 0, now))
    assert p["state"] == "fresh" and p["name"] == gw.source.name and p["soc_percent"] == 88
