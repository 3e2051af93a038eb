# Events: what happened, with a code and a level, printed on the console when
# it happens and kept in a small ring for the console's `events` command (and
# later MQTT / web). Components emit them at the moment of the change
# (docs/design.md "Outputs").

from compat import ticks_diff, ticks_ms

INFO = 0
WARN = 1
ALARM = 2
LEVELS = ("info", "WARN", "ALARM")

# codes: index into TEXT
BOOT = 0
CONFIG = 1
CAN_FOUND = 2
CAN_NONE = 3
BMS_COMPLETE = 4
BMS_BACK = 5
BMS_STALE = 6
INV_SILENT = 7
INV_BACK = 8
WDT_STARVED = 9
TASK_CRASH = 10
STATUS = 11
CHARGE = 12
IMPLAUSIBLE = 13
PLAUSIBLE = 14
PACK_ONLINE = 15
PACK_OFFLINE = 16
PACK_REJECTED = 17
BUS_WARN = 18
INV_COMMAND = 19
NET = 20
NET_WARN = 21
SUMMARY = 22  # the periodic status line (status_s)

# code -> (level, text; %s takes the event's argument)
TEXT = (
    (INFO, "JK-BMS -> inverter CAN gateway: %s"),
    (WARN, "config: %s"),
    (INFO, "CAN: %s"),
    (ALARM, "CAN: %s"),
    (INFO, "BMS data complete: CAN output starts"),
    (INFO, "BMS data back: limits return after the hold"),
    (ALARM, "BMS data STALE (%s)"),
    (WARN, "inverter silent: %s"),
    (INFO, "inverter heartbeat back"),
    (ALARM, "watchdog: %s made no progress, not feeding (reset follows)"),
    (ALARM, "task %s"),
    (INFO, "%s"),
    (INFO, "charge: %s"),
    (ALARM, "BMS data implausible (%s): 0 A limits + system error"),
    (INFO, "BMS data plausible again"),
    (INFO, "pack online: %s"),
    (ALARM, "pack OFFLINE: %s"),
    (ALARM, "pack rejected: %s"),
    (WARN, "RS485: %s"),
    (WARN, "inverter asks: %s (not carried out: the gateway only reads the BMS)"),
    (INFO, "network: %s"),
    (WARN, "network: %s"),
    (INFO, "%s"),
)

_RING = 16


class Events:
    def __init__(self, out=print):
        self._out = out
        self.started_ms = ticks_ms()
        self.count = 0
        self._t = [0] * _RING
        self._code = [0] * _RING
        self._arg = [""] * _RING

    def text(self, code, arg):
        t = TEXT[code][1]
        return t % arg if "%s" in t else t

    def line(self, t_ms, code, arg):
        t = ticks_diff(t_ms, self.started_ms)
        return "[%6d.%01d] %s" % (t // 1000, (t % 1000) // 100, self.text(code, arg))

    def emit(self, code, arg=""):
        i = self.count % _RING
        now = ticks_ms()
        self._t[i] = now
        self._code[i] = code
        self._arg[i] = arg
        self.count += 1
        self._out(self.line(now, code, arg))

    def recent(self):
        """(t_ms, code, arg) of the kept events, oldest first."""
        out = []
        n = self.count if self.count < _RING else _RING
        for k in range(self.count - n, self.count):
            i = k % _RING
            out.append((self._t[i], self._code[i], self._arg[i]))
        return out
