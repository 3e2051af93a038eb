# net.ha: the Home Assistant discovery configs, checked as HA reads them -- every payload valid
# JSON and ASCII, topics <prefix>/<component>/jkgw_<id>/<object>/config, unique ids unique, the
# availability and state topics and the device block in each, units that fit their device class,
# one sensor per cell and per temperature sensor present, only the changes when the layout
# changes (an empty payload removes an entity), and every value template reading a field that
# net.telemetry's state of a real pack really has. CPython and MicroPython (unix and webassembly).

import json

from fakes import CountingWdt, FakeCan, FakeRecovery, FakeUart, MemStore, load_pb_pack

from app import config as C
from app import gateway as G
from compat import ticks_ms
from net import ha
from net import telemetry as T
from pack import snapshot as S

DEV = "240ac4123456"
# device class -> the units HA accepts for it (the subset used here)
UNITS = {"voltage": ("V",), "current": ("A",), "power": ("W",), "battery": ("%",), "temperature": ("\u00b0C",),
         "duration": ("s",), "": ("", "%", "Ah")}
STATE_CLASSES = ("measurement", "total", "total_increasing")


def cfg(**over):
    c = C.defaults()
    for k in over:
        c[k] = over[k]
    return c


def all_configs(cells=16, temps=0b000111, c=None):
    return list(ha.configs(c or cfg(), DEV, cells, temps))


def test_topics_and_payloads_are_what_ha_reads():
    out = all_configs()
    uids = set()
    topics = set()
    for topic, payload in out:
        parts = topic.split("/")
        assert len(parts) == 5 and parts[0] == "homeassistant" and parts[2] == "jkgw_" + DEV, topic
        assert parts[1] in ("sensor", "binary_sensor") and parts[4] == "config", topic
        assert len(payload) < 600, (topic, len(payload))
        for ch in payload:
            assert " " <= ch <= "~", topic
        d = json.loads(payload)
        assert d["uniq_id"] == "jkgw_%s_%s" % (DEV, parts[3]) and d["uniq_id"] not in uids
        uids.add(d["uniq_id"])
        assert topic not in topics
        topics.add(topic)
        assert d["~"] == "jkgw/" + DEV and d["avty_t"] == "~/availability"
        assert d["stat_t"] in ("~/state", "~/event") and d["name"]
        dev = d["dev"]
        assert dev["ids"] == ["jkgw_" + DEV] and dev["sw"] == ha.SW_VERSION
        assert dev["name"] == "JK-BMS gateway 123456" and dev["mf"] and "pylon" in dev["mdl"]
        dcla = d.get("dev_cla", "")
        if parts[1] == "sensor":
            assert d.get("unit_of_meas", "") in UNITS[dcla], d
            assert d.get("stat_cla", "measurement") in STATE_CLASSES
        else:
            assert dcla in ("", "connectivity", "problem") and "unit_of_meas" not in d
            assert d["val_tpl"].startswith("{{'ON' if ") and d["val_tpl"].endswith(" else 'OFF'}}")
    names = [t.split("/")[3] for t, _ in out]
    for must in ("voltage", "current", "power", "soc", "soh", "remaining", "full", "cycles", "cell_min",
                 "cell_max", "cell_delta", "cell_avg", "cvl", "ccl", "dcl", "dvl", "charge_state", "temp_mos",
                 "temp_1", "temp_2", "bms_link", "inverter_link", "can_bus", "alarms", "charge_enable",
                 "discharge_enable", "cell_1", "cell_16"):
        assert must in names, must
    assert "cell_17" not in names and "temp_3" not in names
    cycles = json.loads([p for t, p in out if "/cycles/" in t][0])
    assert cycles["stat_cla"] == "total_increasing"
    soc = json.loads([p for t, p in out if "/soc/" in t][0])
    assert soc["dev_cla"] == "battery" and soc["unit_of_meas"] == "%"
    t1 = json.loads([p for t, p in out if "/temp_1/" in t][0])
    assert t1["unit_of_meas"] == "\u00b0C" and t1["dev_cla"] == "temperature"


def test_prefixes_from_the_config_and_escaped_text():
    c = cfg(ha_prefix="ha", mqtt_prefix='my"gw')
    out = all_configs(4, 1, c)
    assert all(t.startswith("ha/") for t, _ in out)
    assert json.loads(out[0][1])["~"] == 'my"gw/' + DEV


def _path(d, expr):
    """The value a template's value_json.a.b[3] reads in d (KeyError / IndexError when absent)."""
    v = d
    for part in expr.split("."):
        if "[" in part:
            name, idx = part[:-1].split("[")
            v = v[name][int(idx)]
        else:
            v = v[part]
    return v


def test_every_template_reads_a_field_of_the_real_state():
    gw = G.Gateway(C.defaults(), FakeUart({}), FakeCan(), FakeRecovery(), CountingWdt(), MemStore(), None,
                   "gateway.json", [].append)
    snap = gw.source.snap
    load_pb_pack(snap)
    now = ticks_ms()
    gw.source.fresh.data_ok(now)
    gw.tx.burst(now)
    state = json.loads(T.state(gw.status, now))
    cells, temps = ha.layout(snap)
    assert cells == snap.cell_count and temps
    n = 0
    for _, payload in ha.configs(gw.cfg, DEV, cells, temps):
        d = json.loads(payload)
        tpl = d.get("val_tpl")
        if tpl is None:
            assert d["stat_t"] == "~/event"
            continue
        if tpl.startswith("{{value_json."):
            expr = tpl[len("{{value_json."):-len("|default(None)}}")]
        else:  # binary: {{'ON' if value_json.X... else 'OFF'}}
            expr = tpl.split("value_json.")[1].split(" ")[0].split("=")[0]
        _path(state, expr)  # raises when the state lacks it
        n += 1
    assert n > 30


def test_a_new_layout_sends_only_what_changed():
    out = list(ha.configs(cfg(), DEV, 16, 0b011, 8, 0b101, full=False))
    topics = [t.split("/")[3] for t, _ in out]
    assert topics == ["cell_%d" % i for i in range(9, 17)] + ["temp_1", "temp_2"]
    assert [p for t, p in out if t.split("/")[3] == "temp_2"] == [""]  # gone: HA removes it
    assert all(p for t, p in out if "/cell_" in t)
    out = list(ha.configs(cfg(), DEV, 4, 0b1, 8, 0b1, full=False))
    assert [(t.split("/")[3], p) for t, p in out] == [("cell_%d" % i, "") for i in range(5, 9)]
    # a full round also removes what was announced before and is gone now
    out = list(ha.configs(cfg(), DEV, 4, 0b1, 8, 0b11))
    gone = [t.split("/")[3] for t, p in out if not p]
    assert gone == ["cell_5", "cell_6", "cell_7", "cell_8", "temp_1"]


def test_layout_of_a_snapshot():
    s = S.PackSnapshot()
    assert ha.layout(s) == (0, 0)
    load_pb_pack(s)
    cells, temps = ha.layout(s)
    assert cells == s.cell_count
    for i in range(S.TEMP_SLOTS):
        assert bool(temps & (1 << i)) == (s.temps[i] != S.NO_TEMP)


def test_configs_come_one_at_a_time():
    g = ha.configs(cfg(), DEV, 32, 0b111111)
    first = next(g)
    assert first[0].endswith("/voltage/config")  # built on demand, not as a list
    assert len(list(g)) == 20 + 1 + 6 + 32 + 6 - 1
