# Serial-console commands (USB REPL) while the gateway runs. Pure: execute()
# takes one input line and returns the output lines; the app's console task
# reads characters without blocking and prints the result, so typing never
# delays the CAN output.

from gateway import config as C
from gateway import link as L
from gateway.clock import ticks_diff, ticks_ms
from pack import limits
from pack import snapshot as S

HELP = (
    "commands:",
    "  status          BMS link, pack values, limits, alarms, CAN, inverter, uptime, heap",
    "  frames          last CAN frames sent, with their age, and the inverter's 0x305 timing",
    "  cells           cell voltages",
    "  get [KEY]       show the configuration (or one key)",
    "  set KEY VALUE   change a key (validated; 'save' stores it, it applies at the next boot)",
    "  save            write the configuration to flash (atomic)",
    "  raw             hex of the last BMS frame (paste into tools/jk_decode.py)",
    "  help            this text",
)

# JK02 alarm bit names (spec jk-bms-protocols 5.1)
ALARM_NAMES = (
    "wire resistance", "MOSFET over-temp", "cell count", "current sensor", "cell OVP", "pack OVP",
    "charge OCP", "charge SCP", "charge OTP", "charge UTP", "internal comms", "cell UVP", "pack UVP",
    "discharge OCP", "discharge SCP", "discharge OTP", "charge MOSFET", "discharge MOSFET",
    "GPS disconnected", "change password", "discharge on failed", "battery over-temp",
    "temperature sensor", "PCL module",
)


def _v(mv):
    return "%d.%03d V" % (mv // 1000, mv % 1000)


def _signed(value, div, digits, unit):
    sign = "-" if value < 0 else ""
    value = -value if value < 0 else value
    fmt = "%s%d.%0" + str(digits) + "d %s"
    return fmt % (sign, value // div, value % div, unit)


def _temp(dc):
    return "-" if dc == S.NO_TEMP else _signed(dc, 10, 1, "C")


def alarm_text(bits):
    names = []
    for i in range(len(ALARM_NAMES)):
        if bits & (1 << i):
            names.append(ALARM_NAMES[i])
    if bits >> len(ALARM_NAMES):
        names.append("bits 0x%x" % (bits >> len(ALARM_NAMES) << len(ALARM_NAMES)))
    return ", ".join(names) if names else "none"


class Console:
    def __init__(self, app):
        self.app = app
        self.pending = {}  # set but not yet in effect (applies after save + reboot)

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
        if cmd == "get":
            return self.get(args)
        if cmd == "set":
            return self.set(args)
        if cmd == "save":
            return self.save()
        if cmd == "raw":
            return self.raw()
        return ["unknown command '%s' (try help)" % cmd]

    def status(self):
        a = self.app
        s = a.snap
        now = ticks_ms()
        st = a.link.bms_state(now)
        out = []
        age = a.link.age_ms(now)
        out.append("BMS: %s (%s, %s), data age %s, polls ok %d, timeouts %d, bad frames %d, exceptions %d, resync bytes %d"
                   % (L.STATE_NAMES[st], a.cfg["bms_protocol"], a.cfg["bms_read"] if a.cfg["bms_protocol"] == "jk-pb" else "read-all",
                      ("%d ms" % age) if age >= 0 else "-", a.poller.polls_ok, a.poller.timeouts,
                      a.poller.decode_errors, a.poller.exceptions, a.poller.resync_bytes))
        if a.poller.last_error:
            out.append("  last BMS error: " + a.poller.last_error)
        if s.have & S.HAVE_PACK_V:
            out.append("pack: %s  %s  SOC %d %%  SOH %s  cells %d  min %s max %s" % (
                _v(s.pack_mv), _signed(s.current_ma, 1000, 3, "A"), s.soc_pct,
                ("%d %%" % s.soh_pct) if s.have & S.HAVE_SOH else "-", s.cell_count,
                _v(s.cell_min_mv), _v(s.cell_max_mv)))
            out.append("  temps: MOS %s  T1 %s  T2 %s  T4 %s  T5 %s  FETs charge %s discharge %s" % (
                _temp(s.temps[S.T_MOS]), _temp(s.temps[1]), _temp(s.temps[2]), _temp(s.temps[4]),
                _temp(s.temps[5]), "on" if s.charge_fet else "OFF", "on" if s.discharge_fet else "OFF"))
            out.append("  BMS alarms: " + alarm_text(s.alarms))
        lim = a.tx.lim
        out.append("limits: CVL %s  CCL %s (%s)  DCL %s (%s)  DVL %s%s" % (
            _signed(lim.cvl_dv, 10, 1, "V"), _signed(lim.ccl_da, 10, 1, "A"), limits.REASONS[lim.charge_reason],
            _signed(lim.dcl_da, 10, 1, "A"), limits.REASONS[lim.discharge_reason], _signed(lim.dvl_dv, 10, 1, "V"),
            "  [BMS link lost: 0 A + alarms sent]" if a.tx.link_lost and not a.tx.stopped else
            ("  [BMS link lost: CAN stopped]" if a.tx.stopped else "")))
        c = a.can.get_counters()
        out.append("CAN: %s, sent %d frames in %d bursts, queue full %d, errors %d, bus-off recoveries %d, TEC %d REC %d"
                   % (a.can_state_name(), a.tx.sent, a.tx.bursts, a.tx.tx_full, a.tx.tx_errors,
                      a.recovery.recoveries, c[0], c[1]))
        silent = a.link.inverter_silent(now, a.tx.started_ms)
        out.append("inverter: %s, 0x305 seen %d times%s" % (
            "SILENT" if silent else "ok", a.link.hb_count,
            (", last %d ms ago" % ticks_diff(now, a.link.hb_ms)) if a.link.hb_count else ""))
        out.append("uptime %d s, free heap %s" % (ticks_diff(now, a.started_ms) // 1000, a.free_heap()))
        return out

    def frames(self):
        a = self.app
        now = ticks_ms()
        out = []
        if not a.tx.bursts:
            out.append("no frames sent yet (%s)" % L.STATE_NAMES[a.link.bms_state(now)])
        else:
            out.append("last burst %d ms ago%s:" % (ticks_diff(now, a.tx.sent_ms),
                                                 " (stale BMS data: 0 A + alarms)" if a.tx.link_lost else ""))
            enc = a.tx.enc
            for i in range(len(enc.ids)):
                out.append("  %03X#%s" % (enc.ids[i], "".join("%02X" % b for b in enc.frames[i])))
        lk = a.link
        if lk.hb_count:
            out.append("0x305: %d received, last %d ms ago, gaps %d..%d ms" % (
                lk.hb_count, ticks_diff(now, lk.hb_ms), lk.hb_min_gap, lk.hb_max_gap))
        else:
            out.append("0x305: none received")
        return out

    def cells(self):
        s = self.app.snap
        if not s.have & S.HAVE_CELLS:
            return ["no cell data yet"]
        out = []
        for i in range(s.cell_count):
            mark = " max" if i == s.cell_max_idx else (" min" if i == s.cell_min_idx else "")
            out.append("  %2d  %s%s" % (i + 1, _v(s.cells[i]), mark))
        out.append("delta %d mV, average %s" % (s.cell_delta_mv, _v(s.cell_avg_mv)))
        return out

    def get(self, args):
        cfg = self.app.cfg
        keys = args if args else sorted(cfg)
        out = []
        for k in keys:
            if k not in C.SCHEMA:
                out.append("unknown key '%s'" % k)
                continue
            line = "%s = %r" % (k, cfg[k])
            if k in self.pending:
                line += "  (set to %r, after save + reboot)" % self.pending[k]
            if args:
                line += "    # " + C.SCHEMA[k][4]
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
        self.pending[key] = value
        return ["%s = %r (pending: 'save', then reboot)" % (key, value)]

    def save(self):
        cfg = {}
        for k in self.app.cfg:
            cfg[k] = self.app.cfg[k]
        for k in self.pending:
            cfg[k] = self.pending[k]
        try:
            C.save(self.app.store, self.app.config_name, cfg)
        except (OSError, ValueError) as e:
            return ["save failed: %s" % e]
        return ["saved %s (%d changed keys apply after reboot)" % (self.app.config_name, len(self.pending))]

    def raw(self):
        p = self.app.poller
        if not p.raw_len:
            return ["no BMS frame received yet"]
        return ["".join("%02x" % p.raw[i] for i in range(p.raw_len))]
