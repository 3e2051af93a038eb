# The charge state machine (docs/charge-control.md "State machine"):
#
#   NO_DATA --first valid data--> BULK --pack at the bulk voltage--> ABSORPTION
#   ABSORPTION --cut-off rule held / time limit--> FLOAT
#   ABSORPTION --discharging well below bulk--> BULK
#   FLOAT --cell voltage, SOC, cell difference, days since full, force charge--> BULK
#
# Conditions on measured values must hold for confirm_s (cutoff_s for the
# cut-off rule) before a transition: a brief dip or spike changes nothing.
# Without fresh, plausible data the machine stands still. The seconds since
# the last full charge (and since the last top balance) survive a reboot
# through app.charge_memory.

from charge import presets as PR
from charge.limiters import cutoff_mv
from compat import const, ticks_diff

NO_DATA = const(0)
BULK = const(1)
ABSORPTION = const(2)
FLOAT = const(3)

# why the last transition happened (ChargeState.why)
W_BOOT = const(0)
W_FIRST = const(1)
W_AT_BULK = const(2)
W_CUTOFF = const(3)
W_TIMEOUT = const(4)
W_DISCHARGE = const(5)
W_CELL = const(6)
W_SOC = const(7)
W_DELTA = const(8)
W_DAYS = const(9)
W_FORCE = const(10)


DAY_S = const(86400)
AGE_MAX_S = const(400 * 86400)  # counters stop here: small ints on the ESP32
SAVE_EVERY_S = const(6 * 3600)  # flash writes: at each full charge and 4 x a day


class ChargeState:
    def __init__(self, now):
        self.state = NO_DATA
        self.why = W_BOOT
        self.since_ms = now
        self.last_ms = now
        self.full_s = 0  # since the last end of absorption
        self.balance_s = 0  # since the last finished top balance
        self.balancing = False  # this absorption waits for the cells to balance
        self.save_due = False
        self.notify = None  # called with (state, why) on each transition
        self._ms = 0
        self._cond = -1  # the transition being confirmed (a W_* code), -1 none
        self._cond_ms = now

    def restore(self, full_s, balance_s):
        self.full_s = full_s if 0 <= full_s <= AGE_MAX_S else 0
        self.balance_s = balance_s if 0 <= balance_s <= AGE_MAX_S else 0

    def _tick(self, now):
        dt = ticks_diff(now, self.last_ms)
        self.last_ms = now
        if dt <= 0:
            return
        self._ms += dt
        s = self._ms // 1000
        if not s:
            return
        self._ms -= s * 1000
        before = self.full_s
        if self.full_s < AGE_MAX_S:
            self.full_s += s
        if self.balance_s < AGE_MAX_S:
            self.balance_s += s
        if before // SAVE_EVERY_S != self.full_s // SAVE_EVERY_S:
            self.save_due = True

    def _go(self, state, why, now):
        self.state = state
        self.why = why
        self.since_ms = now
        self._cond = -1
        if self.notify is not None:
            self.notify(state, why)

    def _held(self, code, now, hold_ms):
        """True once `code`'s condition has held for hold_ms."""
        if self._cond != code:
            self._cond = code
            self._cond_ms = now
        return ticks_diff(now, self._cond_ms) >= hold_ms

    def _full(self, why, now):
        self.full_s = 0
        if self.balancing:
            self.balance_s = 0
        self.balancing = False
        self.save_due = True
        self._go(FLOAT, why, now)

    def update(self, snap, c, pre, now, ok, bulk_mv, cap_dah, force):
        """One step; c: the config, pre: its chemistry preset; ok = the
        data is fresh and plausible. bulk_mv: the bulk voltage per cell in
        force; cap_dah: capacity (0.1 Ah, > 0)."""
        self._tick(now)
        if not ok:
            self._cond = -1
            return
        st = self.state
        if st == NO_DATA:
            self._go(BULK, W_FIRST, now)
            return
        cells = snap.cell_count
        if st == BULK:
            if snap.pack_mv >= (bulk_mv - c["absorption_entry_mv"]) * cells or snap.cell_max_mv >= bulk_mv:
                if self._held(W_AT_BULK, now, c["confirm_s"] * 1000):
                    days = c["top_balance_days"]
                    self.balancing = days > 0 and self.balance_s >= days * DAY_S
                    self._go(ABSORPTION, W_AT_BULK, now)
            else:
                self._cond = -1
            return
        if st == ABSORPTION:
            limit = (c["top_balance_max_min"] if self.balancing else c["absorption_max_min"]) * 60000
            if ticks_diff(now, self.since_ms) >= limit:
                self._full(W_TIMEOUT, now)
            elif snap.current_ma < -1000:
                # discharging: the cut-off rule says nothing (YamBMS's grey
                # zone), unless the cells fell well below bulk
                if snap.cell_max_mv < bulk_mv - c["absorption_exit_mv"]:
                    if self._held(W_DISCHARGE, now, c["confirm_s"] * 1000):
                        self._go(BULK, W_DISCHARGE, now)
                else:
                    self._cond = -1
            elif cutoff_mv(snap, pre, cap_dah) >= pre[PR.CV_MIN] and (
                    not self.balancing or snap.cell_delta_mv <= c["top_balance_mv"]):
                if self._held(W_CUTOFF, now, c["cutoff_s"] * 1000):
                    self._full(W_CUTOFF, now)
            else:
                self._cond = -1
            return
        # FLOAT: re-bulk
        if force:
            self._go(BULK, W_FORCE, now)
        elif c["rebulk_days"] and self.full_s >= c["rebulk_days"] * DAY_S:
            self._go(BULK, W_DAYS, now)
        elif c["top_balance_days"] and self.balance_s >= c["top_balance_days"] * DAY_S:
            self._go(BULK, W_DAYS, now)
        else:
            code = -1
            if snap.cell_max_mv <= c["rebulk_cell_mv"]:
                code = W_CELL
            elif c["rebulk_soc"] and snap.soc_pct <= c["rebulk_soc"]:
                code = W_SOC
            elif c["rebulk_delta_mv"] and snap.cell_delta_mv >= c["rebulk_delta_mv"]:
                code = W_DELTA
            if code < 0:
                self._cond = -1
            elif self._held(code, now, c["confirm_s"] * 1000):
                self._go(BULK, code, now)


def __getattr__(name):
    if name == "NAMES" or name == "WHY":
        from charge import texts

        return texts.STATES if name == "NAMES" else texts.WHY
    raise AttributeError(name)
