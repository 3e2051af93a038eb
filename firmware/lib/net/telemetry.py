# The one JSON builder of the network outputs
# (docs/network.md "State JSON"): MQTT's state and pack topics and the web page's /api/status all
# send these texts, so every consumer sees the same names and units.
# The battery fields follow the tggo/jkbms-poll schema exactly as
# tools/state_json.snapshot_to_dict() writes them (V, A, W, Ah, degC, %, s;
# only what the snapshot holds), then the gateway's own sections: limits,
# charge, links, alarms, device, uptime, packs (and events for the web page).
# Integers only: fixed-point values are printed with "%d.%03d" (trailing
# zeros cut: the same number), never through floats (single precision on
# the ESP32, and every float allocates). The text is pure ASCII (anything
# else is \u-escaped): mqtt_as sizes a packet by len(str), which counts
# characters, not UTF-8 bytes. Size is bounded: at most 32 cells, event
# texts cut to EVENT_TEXT_MAX characters, at most the events ring.

import gc

from charge import texts
from compat import ticks_diff
from outputs import events as E
from outputs.alarms import alarm_names
from pack import snapshot as S
from sources.base import FRESH, STATE_NAMES

EVENT_TEXT_MAX = 160
# charge.battery P_* as words (the console's, in lower case: names, not shouting)
PACK_STATES = ("waiting for data", "online", "offline", "rejected")
_TEMP_KEYS = ("power_tube_temp_c", "t1_c", "t2_c", "t3_c", "t4_c", "t5_c")  # state_json.TEMP_KEYS
# state_json.SETTINGS: (name, snapshot attribute), all in thousandths (mV, mA, mAh)
_SETTINGS = (
    ("cell_ovp_v", "cell_ovp_mv"), ("cell_ovpr_v", "cell_ovpr_mv"), ("cell_uvp_v", "cell_uvp_mv"),
    ("cell_uvpr_v", "cell_uvpr_mv"), ("rcv_v", "rcv_mv"), ("rfv_v", "rfv_mv"),
    ("max_charge_current_a", "max_charge_ma"), ("max_discharge_current_a", "max_discharge_ma"),
    ("design_capacity_ah", "design_mah"),
)
_POW10 = (1, 10, 100, 1000, 10000, 100000, 1000000)
_FMT = ("%s%d", "%s%d.%01d", "%s%d.%02d", "%s%d.%03d", "%s%d.%04d", "%s%d.%05d", "%s%d.%06d")


def fix(v, digits):
    """v / 10**digits as a JSON number: exact, no float, trailing zeros cut
    (3300 mV -> 3.3), one decimal kept so that it reads as a real."""
    sign = ""
    if v < 0:
        sign = "-"
        v = -v
    d = _POW10[digits]
    i = v // d
    f = v % d
    if not f:
        return "%s%d.0" % (sign, i)
    while f % 10 == 0:
        f //= 10
        digits -= 1
    return _FMT[digits] % (sign, i, f)


def q(s):
    """s as a JSON string, pure ASCII."""
    for ch in s:
        if ch < " " or ch > "~" or ch == '"' or ch == "\\":
            break
    else:
        return '"' + s + '"'  # the usual case: nothing to escape, one allocation
    out = []
    for ch in s:
        c = ord(ch)
        if ch == '"' or ch == "\\":
            out.append("\\" + ch)
        elif 32 <= c < 127:
            out.append(ch)
        elif c > 0xFFFF:  # outside the BMP: a UTF-16 surrogate pair, as JSON wants
            c -= 0x10000
            out.append("\\u%04x\\u%04x" % (0xD800 + (c >> 10), 0xDC00 + (c & 0x3FF)))
        else:
            out.append("\\u%04x" % c)
    return '"' + "".join(out) + '"'


def _b(v):
    return "true" if v else "false"


def snap_fields(o, s):
    """Append the tggo/jkbms-poll fields of snapshot s to the list o
    ("key":value texts), as tools/state_json.snapshot_to_dict() names them."""
    have = s.have
    if have & S.HAVE_CELLS:
        n = s.cell_count if s.cell_count <= S.MAX_CELLS else S.MAX_CELLS
        cells = s.cells
        o.append('"num_cells":%d' % n)
        o.append('"cell_voltages_v":[' + ",".join([fix(cells[i], 3) for i in range(n)]) + "]")
        o.append('"cell_min_v":' + fix(s.cell_min_mv, 3))
        o.append('"cell_max_v":' + fix(s.cell_max_mv, 3))
        o.append('"cell_delta_v":' + fix(s.cell_delta_mv, 3))
        o.append('"cell_avg_v":' + fix(s.cell_avg_mv, 3))
        o.append('"cell_min_num":%d,"cell_max_num":%d' % (s.cell_min_idx + 1, s.cell_max_idx + 1))
    if have & S.HAVE_PACK_V:
        o.append('"battery_voltage_v":' + fix(s.pack_mv, 3))
    if have & S.HAVE_CURRENT:
        o.append('"battery_current_a":' + fix(s.current_ma, 3))
        if have & S.HAVE_PACK_V:
            # mV x mA = uW: exact; beyond 2**30 a big int on the ESP32, once per message
            o.append('"battery_power_w":' + fix(s.pack_mv * s.current_ma, 6))
    if have & S.HAVE_TEMPS:
        for i in range(S.TEMP_SLOTS):
            t = s.temps[i]
            if t != S.NO_TEMP:
                o.append('"%s":%s' % (_TEMP_KEYS[i], fix(t, 1)))
    if have & S.HAVE_BALANCE:
        o.append('"balance_current_a":%s,"balance_status":%d' % (fix(s.balance_ma, 3), s.balancing))
    if have & S.HAVE_ALARMS:
        o.append('"error_bitmask":%d' % s.alarms)
    if have & S.HAVE_SOC:
        o.append('"soc_percent":%d' % s.soc_pct)
    if have & S.HAVE_SOH:
        o.append('"soh_percent":%d' % s.soh_pct)
    if have & S.HAVE_CAPACITY:
        o.append('"remaining_capacity_ah":%s,"nominal_capacity_ah":%s' % (fix(s.remaining_mah, 3),
                                                                          fix(s.full_mah, 3)))
    if have & S.HAVE_CYCLES:
        o.append('"cycle_count":%d,"cycle_capacity_ah":%s' % (s.cycles, fix(s.cycle_mah, 3)))
    if have & S.HAVE_RUNTIME:
        o.append('"total_runtime_s":%d' % s.runtime_s)
    if have & S.HAVE_FETS:
        o.append('"charging":%s,"discharging":%s' % (_b(s.charge_fet), _b(s.discharge_fet)))
    if s.settings_ok:
        if s.set_cell_count:
            o.append('"cell_count":%d' % s.set_cell_count)
        for name, attr in _SETTINGS:
            o.append('"%s":%s' % (name, fix(getattr(s, attr), 3)))
        o.append('"charge_switch":%s,"discharge_switch":%s' % (_b(s.charge_switch), _b(s.discharge_switch)))


def _age(ms):
    return "null" if ms < 0 else "%d" % ms  # -1: no data yet, AGE_UNKNOWN: longer than the clock tells


def mqtt_state(net):
    """"connected", "down" or "off" (no MQTT output)."""
    if net is not None:
        for out in net.outputs:
            if out.name == "mqtt":
                return "connected" if out.connected else "down"
    return "off"


def state(status, now, events=False):
    """The battery as decided (status.snap) and the gateway's state: JSON text."""
    st = status
    o = []
    snap_fields(o, st.snap)
    lim = st.policy.lim
    o.append('"limits":{"cvl_v":%s,"ccl_a":%s,"dcl_a":%s,"dvl_v":%s,"charge_enable":%s,'
             '"discharge_enable":%s,"force_charge":%s,"soc_sent_percent":%d}' % (
                 fix(lim.cvl_dv, 1), fix(lim.ccl_da, 1), fix(lim.dcl_da, 1), fix(lim.dvl_dv, 1),
                 _b(lim.charge_enable), _b(lim.discharge_enable), _b(lim.force_charge), lim.soc_pct))
    pol = st.policy
    ctl = pol.ctl
    # the firmware's own words (charge.texts, the state names) are plain ASCII
    # without quotes (test_net_telemetry checks every one): no escaping, which
    # would walk each of them character by character every period
    o.append('"charge":{"state":"%s","why":"%s","cvl_reason":"%s","charge_reason":"%s","discharge_reason":"%s",'
             '"data":"%s"}' % (texts.STATES[ctl.state], texts.WHY[ctl.why], texts.REASONS[lim.cvl_reason],
                               texts.REASONS[lim.charge_reason], texts.REASONS[lim.discharge_reason],
                               texts.PLAUSIBLE[pol.implausible]))
    net = st.net
    bms = st.bms_state(now)
    o.append('"links":{"bms":"%s","bms_age_ms":%s,"inverter":"%s","can":"%s","wifi":"%s","mqtt":"%s"}' % (
        STATE_NAMES[bms], _age(st.link.age_ms(now)), "silent" if st.tx.inverter.silent(now) else "ok",
        st.can_state_name(), "off" if net is None else ("up" if net.wifi.up else "down"), mqtt_state(net)))
    o.append('"alarms":[' + ",".join(['"%s"' % n for n in alarm_names(st.snap.alarms)]) + "]"
             if st.snap.have & S.HAVE_ALARMS else '"alarms":[]')
    b = st.battery
    online = b.online if b is not None else (1 if bms == FRESH else 0)
    o.append('"device":%s,"uptime_s":%d,"task_restarts":%d,"packs":{"configured":%d,"online":%d}' % (
        q(net.device_id if net is not None else ""), st.uptime_s(now), st.task_restarts, len(st.packs), online))
    if hasattr(gc, "mem_free"):
        o.append('"heap_free":%d' % gc.mem_free())
    if events:
        o.append('"events":' + events_json(st.events))
    return "{" + ",".join(o) + "}"


def events_json(ev):
    """The kept events as [[seconds since boot, "level", "text"], ...], oldest first."""
    out = []
    for t_ms, code, arg in ev.recent():
        t = ticks_diff(t_ms, ev.started_ms)
        text = ev.text(code, arg)
        if len(text) > EVENT_TEXT_MAX:
            text = text[:EVENT_TEXT_MAX - 3] + "..."
        out.append('[%s,"%s",%s]' % (fix(t // 100, 1), E.LEVELS[E.TEXT[code][0]], q(text)))
    return "[" + ",".join(out) + "]"


def pack(status, i, now):
    """Pack i's own JSON (several packs): its tggo fields, name, state, data age."""
    st = status
    p = st.packs[i]
    b = st.battery
    o = ['"name":' + q(p.name)]
    if b is not None:
        word = PACK_STATES[b.state_of(i)]
    else:
        word = STATE_NAMES[p.fresh.state(now)]
    o.append('"state":"%s","age_ms":%s' % (word, _age(p.fresh.age_ms(now))))
    snap_fields(o, p.snap)
    return "{" + ",".join(o) + "}"
