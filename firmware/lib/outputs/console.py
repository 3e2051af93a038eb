# Serial-console commands (USB REPL) while the gateway runs. Pure: execute()
# takes one input line and returns the output lines; it reads only the
# status model (outputs.status) and the config. The app imports this module
# on the first typed line, so it costs no RAM until someone uses it.

from app import config as C
from app import config_edit as CE
from charge import schema as charge_schema
from charge import texts
from compat import ticks_diff
from outputs import events as E
from outputs.alarms import ALARM_NAMES, alarm_text  # noqa: F401 - ALARM_NAMES: the console's name for it
from pack import snapshot as S
from sources.base import STATE_NAMES

HELP = (
    "commands:",
    "  status          BMS link, pack values, limits, alarms, CAN, inverter, uptime, heap",
    "  frames          last CAN frames sent, with their age, and the inverter's 0x305 timing",
    "  cells           cell voltages",
    "  packs           every pack: state, data age, V, I, SOC, cells, alarms, errors (several packs)",
    "  charge          charge state, each limit with its reason, the controller's parameters",
    "  events          the recent events",
    "  get [KEY]       show the configuration (or one key)",
    "  set KEY VALUE   change a key (validated; charge keys apply at once, others at the next boot;",
    "                  'save' stores them)",
    "  save            write the configuration to flash (atomic)",
    "  raw             hex of the last BMS frame (paste into tools/jk_decode.py)",
    "  scan            JK-BMS devices in BLE range: name, MAC, RSSI (bms_transport ble)",
    "  net             Wi-Fi, MQTT, web page and InfluxDB: state and counters (wifi_ssid set)",
    "  help            this text",
)

_PACK_STATES = ("waiting for data", "online", "OFFLINE", "REJECTED")  # charge.battery P_*


def _v(mv):
    return "%d.%03d V" % (mv // 1000, mv % 1000)


def _signed(value, div, digits, unit):
    sign = "-" if value < 0 else ""
    value = -value if value < 0 else value
    fmt = "%s%d.%0" + str(digits) + "d %s"
    return fmt % (sign, value // div, value % div, unit)


def _a(ma):
    """mA as amps with one decimal (truncated towards 0)."""
    return _signed(ma // 100 if ma >= 0 else -((-ma) // 100), 10, 1, "A")


def _dur(s):
    if s >= 86400:
        return "%d.%d days" % (s // 86400, s % 86400 * 10 // 86400)
    if s >= 3600:
        return "%d h %d min" % (s // 3600, s % 3600 // 60)
    return "%d min %d s" % (s // 60, s % 60) if s >= 60 else "%d s" % s


def _compact(v):
    if isinstance(v, list):
        return "[" + ",".join(_compact(x) for x in v) + "]"
    return str(v)


def _temp(dc):
    return "-" if dc == S.NO_TEMP else _signed(dc, 10, 1, "C")


def _shown(key, value):
    """A config value as the console shows it: secrets never."""
    return "'***'" if key in C.SECRETS and value else repr(value)


class Console:
    def __init__(self, status, store=None, config_name="gateway.json"):
        self.st = status
        self.store = store
        self.config_name = config_name
        # set but not yet in effect (applies after save + reboot); shared with the web page
        self.pending = status.pending

    def execute(self, line):
        words = line.split()
        if not words:
            return []
        cmd = words[0].lower()
        args = words[1:]
        if cmd == "help" or cmd == "?":
            return list(HELP)
        if cmd == "status":
            return self.status()
        if cmd == "frames":
            return self.frames()
        if cmd == "cells":
            return self.cells()
        if cmd == "packs":
            return self.packs()
        if cmd == "charge":
            return self.charge()
        if cmd == "events":
            return self.events()
        if cmd == "get":
            return self.get(args)
        if cmd == "set":
            return self.set(args)
        if cmd == "save":
            return self.save()
        if cmd == "raw":
            return self.raw()
        if cmd == "net":
            net = self.st.net
            return net.lines(self.st.now()) if net is not None else ["network: off (wifi_ssid is empty)"]
        if cmd == "scan":
            return self.scan()
        return ["unknown command '%s' (try help)" % cmd]

    def status(self):
        st = self.st
        s = st.snap
        src = st.source
        now = self.st.now()
        out = [st.summary(now)]
        for link in st.links:
            if hasattr(link, "link_text"):
                out.append("  " + link.link_text(now))
        if st.battery is not None:
            out.extend(self._limited_by())
            src = None
        elif src.last_error:
            out.append("  last BMS error: " + src.last_error)
        dev = src.device_info() if hasattr(src, "device_info") else None
        if dev:
            out.append("  BMS %s, hardware %s, software %s" % (
                dev.get("model", "?"), dev.get("hw_version", "?"), dev.get("sw_version", "?")))
        if s.have & S.HAVE_PACK_V:
            out.append("pack: %s  %s  SOC %d %%  SOH %s  cells %d  min %s max %s" % (
                _v(s.pack_mv), _signed(s.current_ma, 1000, 3, "A"), s.soc_pct,
                ("%d %%" % s.soh_pct) if s.have & S.HAVE_SOH else "-", s.cell_count,
                _v(s.cell_min_mv), _v(s.cell_max_mv)))
            out.append("  temps: MOS %s  T1 %s  T2 %s  T4 %s  T5 %s  FETs charge %s discharge %s" % (
                _temp(s.temps[S.T_MOS]), _temp(s.temps[1]), _temp(s.temps[2]), _temp(s.temps[4]),
                _temp(s.temps[5]), "on" if s.charge_fet else "OFF", "on" if s.discharge_fet else "OFF"))
            out.append("  BMS alarms: " + alarm_text(s.alarms))
        lim = st.lim
        pol = st.policy
        out.append("limits: CVL %s  CCL %s (%s)  DCL %s (%s)  DVL %s%s" % (
            _signed(lim.cvl_dv, 10, 1, "V"), _signed(lim.ccl_da, 10, 1, "A"), texts.REASONS[lim.charge_reason],
            _signed(lim.dcl_da, 10, 1, "A"), texts.REASONS[lim.discharge_reason], _signed(lim.dvl_dv, 10, 1, "V"),
            "  [BMS link lost: CAN stopped]" if pol.stopped else
            ("  [BMS link lost: 0 A + alarms sent]" if pol.link_lost else "")))
        out.append(self._charge_line(now))
        tx = st.tx
        c = st.can.get_counters()
        out.append("CAN: %s, sent %d frames in %d bursts, not sent in time %d, withdrawn %d, errors %d,"
                   " bus-off recoveries %d, TEC %d REC %d"
                   % (st.can_state_name(), tx.sent, tx.bursts, tx.tx_full, tx.tx_cancelled, tx.tx_errors,
                      st.recovery.recoveries, c[0], c[1]))
        inv = tx.inverter
        out.append("inverter: %s, %s seen %d times%s" % (
            "SILENT" if inv.silent(now) else "ok", tx.enc.HEARTBEAT, inv.count,
            (", last %d ms ago" % ticks_diff(now, inv.last_ms)) if inv.count else ""))
        out.append("uptime %d s, free heap %s, task restarts %d" % (st.uptime_s(now), st.free_heap(), st.task_restarts))
        return out

    def frames(self):
        st = self.st
        tx = st.tx
        now = self.st.now()
        out = []
        if not tx.bursts:
            out.append("no frames sent yet (%s)" % STATE_NAMES[st.bms_state(now)])
        else:
            out.append("last burst %d ms ago%s:" % (ticks_diff(now, tx.sent_ms),
                                                 " (stale BMS data: 0 A + alarms)" if st.policy.link_lost else ""))
            enc = tx.enc
            for i in range(len(enc.ids)):
                out.append("  %03X#%s" % (enc.ids[i], "".join("%02X" % b for b in enc.frames[i])))
        inv = tx.inverter
        hb = tx.enc.HEARTBEAT
        if inv.count:
            out.append("%s: %d received, last %d ms ago, gaps %d..%d ms%s" % (
                hb, inv.count, ticks_diff(now, inv.last_ms), inv.min_gap, inv.max_gap,
                (", %d were queries, %d answered at once with a set" % (tx.requests, tx.answered))
                if tx.requests else ""))
        else:
            out.append("%s: none received" % hb)
        if tx.commands:
            out.append("inverter commands not carried out: %d (%s)" % (tx.commands, tx.enc.command))
        for line in tx.enc.rx_text():
            out.append("inverter says: " + line)
        return out

    def _pack_name(self, i):
        return self.st.packs[i].name if 0 <= i < len(self.st.packs) else "-"

    def _limited_by(self):
        b = self.st.battery
        s = b.snap
        return ["  battery of %d online: CVL cap from %s, CCL input %s from %s, DCL input %s from %s, "
                "pack voltage spread %d mV" % (
                    b.online, self._pack_name(b.cvl_pack), _a(s.max_charge_ma),
                    self._pack_name(b.ccl_pack), _a(s.max_discharge_ma),
                    self._pack_name(b.dcl_pack), b.spread_mv),
                "  lowest cell %s in %s (cell %d), highest %s in %s (cell %d)" % (
                    _v(s.cell_min_mv), self._pack_name(b.cell_min_pack), s.cell_min_idx + 1,
                    _v(s.cell_max_mv), self._pack_name(b.cell_max_pack), s.cell_max_idx + 1)]

    def packs(self):
        st = self.st
        b = st.battery
        now = st.now()
        out = []
        for i in range(len(st.packs)):
            p = st.packs[i]
            s = p.snap
            state = _PACK_STATES[b.state_of(i)] if b is not None else STATE_NAMES[p.fresh.state(now)]
            if b is not None and b.state_of(i) == 3:
                state += " (%s)" % texts.PACK_WHY[b.why_of(i)]
            out.append("%-14s %s, age %s" % (p.name, state, st.age_text(now, p.fresh.age_ms(now))))
            if s.have & S.HAVE_PACK_V:
                out.append("    %s %s SOC %d %% %d cells min %s max %s  alarms: %s" % (
                    _v(s.pack_mv), _a(s.current_ma), s.soc_pct, s.cell_count,
                    _v(s.cell_min_mv), _v(s.cell_max_mv), alarm_text(s.alarms)))
            dev = p.device_info() if hasattr(p, "device_info") else None
            if dev:
                out.append("    BMS %s, hardware %s, software %s, serial %s" % (
                    dev.get("model", "?"), dev.get("hw_version", "?"), dev.get("sw_version", "?"),
                    dev.get("serial_number", "?")))
            out.append("    polls ok %d, timeouts %d, bad frames %d, exceptions %d%s" % (
                p.polls_ok, p.timeouts, p.decode_errors, p.exceptions,
                (", last error: " + p.last_error) if p.last_error else ""))
        return out or ["no pack known yet"]

    def cells(self):
        s = self.st.snap
        if not s.have & S.HAVE_CELLS:
            return ["no cell data yet"]
        out = []
        for i in range(s.cell_count):
            mark = " max" if i == s.cell_max_idx else (" min" if i == s.cell_min_idx else "")
            out.append("  %2d  %s%s" % (i + 1, _v(s.cells[i]), mark))
        out.append("delta %d mV, average %s" % (s.cell_delta_mv, _v(s.cell_avg_mv)))
        return out

    def _charge_line(self, now):
        pol = self.st.policy
        ctl = pol.ctl
        line = "charge: %s for %s (%s), CVL: %s, SOC sent %d %%%s, last full charge %s ago" % (
            texts.STATES[ctl.state], _dur(ticks_diff(now, ctl.since_ms) // 1000), texts.WHY[ctl.why],
            texts.REASONS[pol.lim.cvl_reason], pol.lim.soc_pct, ", FORCE CHARGE requested" if pol.lim.force_charge
            else "", _dur(ctl.full_s))
        if pol.implausible:
            line += "  [BMS data IMPLAUSIBLE: %s]" % texts.PLAUSIBLE[pol.implausible]
        return line

    def charge(self):
        st = self.st
        pol = st.policy
        lim = pol.lim
        cfg = st.cfg
        now = self.st.now()
        out = [self._charge_line(now)]
        out.append("  CVL %s (%s), bulk %s per cell in force" % (
            _signed(lim.cvl_dv, 10, 1, "V"), texts.REASONS[lim.cvl_reason], _v(pol.bulk_mv)))
        out.append("  CCL %s (%s), before hold/ramp %s; charge enable %s" % (
            _signed(lim.ccl_da, 10, 1, "A"), texts.REASONS[lim.charge_reason],
            _a(pol.ccl_target_ma), "on" if lim.charge_enable else "off"))
        out.append("  DCL %s (%s), before hold/ramp %s; discharge enable %s" % (
            _signed(lim.dcl_da, 10, 1, "A"), texts.REASONS[lim.discharge_reason],
            _a(pol.dcl_target_ma), "on" if lim.discharge_enable else "off"))
        out.append("  DVL %s" % _signed(lim.dvl_dv, 10, 1, "V"))
        out.append("  data: %s" % texts.PLAUSIBLE[pol.implausible])
        keys = sorted(charge_schema.SCHEMA)
        line = " "
        for k in keys:
            item = " %s=%s" % (k, _compact(cfg[k]))
            if len(line) + len(item) > 100:
                out.append(line)
                line = " "
            line += item
        out.append(line)
        return out

    def events(self):
        ev = self.st.events
        out = []
        for t_ms, code, arg in ev.recent():
            out.append("%s %s" % (ev.line(t_ms, code, arg), E.LEVELS[E.TEXT[code][0]]))
        return out or ["no events yet"]

    def get(self, args):
        cfg = self.st.cfg
        keys = args if args else sorted(cfg)
        out = []
        for k in keys:
            if k not in C.SCHEMA:
                out.append("unknown key '%s'" % k)
                continue
            line = "%s = %s" % (k, _shown(k, cfg[k]))
            if k in self.pending:
                line += "  (set to %s, after save + reboot)" % _shown(k, self.pending[k])
            if args:
                line += "    # see the README's configuration table"
            out.append(line)
        return out

    def set(self, args):
        if len(args) < 2:
            return ["usage: set KEY VALUE"]
        key = args[0]
        try:
            value = C.check(key, C.parse_value(key, " ".join(args[1:])))
        except ValueError as e:
            return ["set %s: %s" % (key, e.args[0])]
        if not CE.live(key):
            self.pending[key] = value
            return ["%s = %s (pending: 'save', then reboot)" % (key, _shown(key, value))]
        # a charge parameter applies at once -- after the same cross-key
        # rules as at boot (docs/charge-control.md "Parameters")
        msgs = CE.fit_charge(self.st.cfg, {key: value})
        if msgs:
            return ["set %s: %s" % (key, m) for m in msgs]
        CE.apply_charge(self.st, {key: value})
        self.st.events.emit(E.CONFIG, "set %s = %r, applied to the charge controller" % (key, value))
        return ["%s = %r (applied now; 'save' keeps it after a reboot)" % (key, value)]

    def save(self):
        try:
            CE.save(self.st, self.store, self.config_name)
        except (OSError, ValueError) as e:
            return ["save failed: %s" % e]
        return ["saved %s (%d changed keys apply after reboot)" % (self.config_name, len(self.pending))]

    def scan(self):
        for src in self.st.links:
            if hasattr(src, "request_scan"):
                src.request_scan()
                return ["scan: listening for 4 s; the JK devices seen follow as events"]
        return ["scan: only over BLE (set bms_transport ble, save, reboot)"]

    def raw(self):
        p = self.st.source
        if p is None or not p.raw_len:
            return ["no BMS frame received yet"]
        return ["".join("%02x" % p.raw[i] for i in range(p.raw_len))]
