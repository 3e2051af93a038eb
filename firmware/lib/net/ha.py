# Home Assistant MQTT discovery (docs/network.md "Home Assistant"): the
# config of every entity, built one at a time by a generator so that only
# one payload (~450 bytes) exists at once, and net.mqtt sends one per await.
# Topics <ha_prefix>/<component>/jkgw_<device id>/<object>/config, retained;
# every entity reads the state topic (net.telemetry's JSON) through a value
# template and is available while <base>/availability says "online" (the
# LWT says "offline"). HA's abbreviations keep the payloads small ("~" is
# the base topic). Payloads are pure ASCII (the degree sign is \u-escaped):
# mqtt_as sizes a packet by len(str).
# The values the templates read are the state's names (net.telemetry);
# `|default(None)` makes a field the state lacks (no BMS data yet, a sensor
# not fitted) "unknown" in HA instead of a template error.

from net.telemetry import q
from pack import snapshot as S

SW_VERSION = "0.1.0"  # firmware/package.json "version" (test_net_mqtt_broker compares them)
_TEMP = "\\u00b0C"  # the JSON escape of "°C", so the payload stays ASCII
_M = "measurement"

# sensors: (object id, name, value in the state, unit, device class, state
# class, display precision; -1: none, -2: none and a diagnostic entity)
SENSORS = (
    ("voltage", "Voltage", "battery_voltage_v", "V", "voltage", _M, 2),
    ("current", "Current", "battery_current_a", "A", "current", _M, 1),
    ("power", "Power", "battery_power_w", "W", "power", _M, 0),
    ("soc", "State of charge", "soc_percent", "%", "battery", _M, 0),
    ("soh", "State of health", "soh_percent", "%", "", _M, 0),
    ("remaining", "Remaining capacity", "remaining_capacity_ah", "Ah", "", _M, 1),
    ("full", "Full capacity", "nominal_capacity_ah", "Ah", "", _M, 1),
    ("cycles", "Cycles", "cycle_count", "", "", "total_increasing", 0),
    ("cell_min", "Cell minimum", "cell_min_v", "V", "voltage", _M, 3),
    ("cell_max", "Cell maximum", "cell_max_v", "V", "voltage", _M, 3),
    ("cell_avg", "Cell average", "cell_avg_v", "V", "voltage", _M, 3),
    ("cell_delta", "Cell difference", "cell_delta_v", "V", "voltage", _M, 3),
    ("cvl", "Charge voltage limit", "limits.cvl_v", "V", "voltage", _M, 1),
    ("ccl", "Charge current limit", "limits.ccl_a", "A", "current", _M, 1),
    ("dcl", "Discharge current limit", "limits.dcl_a", "A", "current", _M, 1),
    ("dvl", "Discharge voltage limit", "limits.dvl_v", "V", "voltage", _M, 1),
    ("soc_sent", "SOC sent to the inverter", "limits.soc_sent_percent", "%", "battery", _M, 0),
    ("charge_state", "Charge state", "charge.state", "", "", "", -1),
    ("charge_reason", "Charge current limited by", "charge.charge_reason", "", "", "", -1),
    ("uptime", "Uptime", "uptime_s", "s", "duration", "total_increasing", -2),
)
# binary sensors: (object id, name, condition on value_json, device class, diagnostic)
BINARY = (
    ("bms_link", "BMS link", "value_json.links.bms=='fresh'", "connectivity", 1),
    ("inverter_link", "Inverter link", "value_json.links.inverter=='ok'", "connectivity", 1),
    ("can_bus", "CAN bus", "value_json.links.can not in ('active','warning')", "problem", 1),
    ("alarms", "BMS alarms", "value_json.alarms", "problem", 0),
    ("charge_enable", "Charge enabled", "value_json.limits.charge_enable", "", 0),
    ("discharge_enable", "Discharge enabled", "value_json.limits.discharge_enable", "", 0),
)
TEMP_NAMES = ("MOSFET temperature", "Temperature 1", "Temperature 2", "Temperature 3", "Temperature 4",
              "Temperature 5")
TEMP_KEYS = ("power_tube_temp_c", "t1_c", "t2_c", "t3_c", "t4_c", "t5_c")  # net.telemetry's


def node(dev_id):
    return "jkgw_" + dev_id


def _head(cfg, dev_id, protocol):
    """The part every payload shares: base topic, availability, device block."""
    base = "%s/%s" % (cfg["mqtt_prefix"], dev_id)
    return ('{"~":%s,"avty_t":"~/availability","dev":{"ids":["%s"],"name":"JK-BMS gateway %s",'
            '"mf":"JK-BMS CAN gateway project","mdl":"ESP32 JK-BMS to inverter CAN (%s)","sw":"%s"},'
            % (q(base), node(dev_id), dev_id[-6:], protocol, SW_VERSION))


def _sensor(head, uid, obj, name, value, unit, dcla, scla, prec, topic="~/state"):
    s = '%s"name":%s,"uniq_id":"%s_%s","stat_t":"%s"' % (head, q(name), uid, obj, topic)
    if value:
        s += ',"val_tpl":"{{value_json.%s|default(None)}}"' % value
    if unit:
        s += ',"unit_of_meas":"%s"' % unit
    if dcla:
        s += ',"dev_cla":"%s"' % dcla
    if scla:
        s += ',"stat_cla":"%s"' % scla
    if prec >= 0:
        s += ',"sug_dsp_prc":%d' % prec
    elif prec == -2:
        s += ',"ent_cat":"diagnostic"'
    return s + "}"


def configs(cfg, dev_id, cells, temps, old_cells=0, old_temps=0, full=True):
    """(topic, payload) of every discovery config, one at a time.
    cells: the number of cells (one sensor each); temps: bit i set for each
    temperature sensor the snapshot has (net.telemetry TEMP_KEYS order).
    old_cells / old_temps: what was announced before: the cells and sensors
    that are gone get an empty retained payload (HA removes the entity).
    full=False: only the cells and sensors that changed (a new cell count)."""
    pre = cfg["ha_prefix"]
    nid = node(dev_id)
    head = _head(cfg, dev_id, cfg["protocol"])
    topic = "%s/%%s/%s/%%s/config" % (pre, nid)
    if full:
        for row in SENSORS:
            yield topic % ("sensor", row[0]), _sensor(head, nid, *row)
        yield topic % ("sensor", "last_event"), _sensor(head, nid, "last_event", "Last event", "", "", "", "", -1,
                                                        "~/event")
        for obj, name, cond, dcla, diag in BINARY:
            s = '%s"name":%s,"uniq_id":"%s_%s","stat_t":"~/state","val_tpl":"{{\'ON\' if %s else \'OFF\'}}"' % (
                head, q(name), nid, obj, cond)
            if dcla:
                s += ',"dev_cla":"%s"' % dcla
            if diag:
                s += ',"ent_cat":"diagnostic"'
            if obj == "alarms":  # the names, as attributes of the entity
                s += ',"json_attr_t":"~/state","json_attr_tpl":"{{ {\'alarms\': value_json.alarms}|tojson }}"'
            yield topic % ("binary_sensor", obj), s + "}"
    for i in range(0 if full else old_cells, cells):
        yield topic % ("sensor", "cell_%d" % (i + 1)), _sensor(
            # "Cell 01": Home Assistant lists a device's entities by name, so 10 would come before 2
            head, nid, "cell_%d" % (i + 1), "Cell %02d" % (i + 1), "cell_voltages_v[%d]" % i, "V", "voltage", _M, 3)
    for i in range(cells, old_cells):
        yield topic % ("sensor", "cell_%d" % (i + 1)), ""
    for i in range(len(TEMP_KEYS)):
        bit = 1 << i
        obj = "temp_mos" if i == 0 else "temp_%d" % i
        if temps & bit and (full or not old_temps & bit):
            yield topic % ("sensor", obj), _sensor(head, nid, obj, TEMP_NAMES[i], TEMP_KEYS[i], _TEMP,
                                                   "temperature", _M, 1)
        elif old_temps & bit and not temps & bit:
            yield topic % ("sensor", obj), ""


def layout(snap):
    """(cells, temps) of a snapshot, as configs() takes them: what the
    per-cell and temperature entities depend on."""
    cells = snap.cell_count if snap.have & S.HAVE_CELLS else 0
    temps = 0
    if snap.have & S.HAVE_TEMPS:
        for i in range(S.TEMP_SLOTS):
            if snap.temps[i] != S.NO_TEMP:
                temps |= 1 << i
    return cells, temps
