# Hold-and-ramp for the current limits and the CVL slew
# (docs/charge-control.md "Hold and ramp"): decreases at once, increases
# slowly, and after any block a hold at 0 first -- a fresh full limit right
# after a trip would trip the BMS again, and a limit that follows its input
# instantly chatters at every threshold.

from compat import const, ticks_diff

DT_MAX_MS = const(5000)  # a longer gap between two cycles ramps as if it were 5 s

NORMAL = const(0)
HOLDING = const(1)
RAMPING = const(2)


def _dt(now, last):
    dt = ticks_diff(now, last)
    if dt < 0:
        return 0
    return DT_MAX_MS if dt > DT_MAX_MS else dt


class Ramp:
    """A current limit (mA): 0 at once when its target is 0, then 0 for
    hold_ms after the target came back, then up at rate_ma_s."""

    def __init__(self, now):
        self.out = 0
        self.zero_ms = now  # when the target was last 0 (boot counts as a block)
        self.last_ms = now
        self.holding = True
        self.paused = False  # pause(): present output kept, then the ramp
        self.pause_ms = now
        self.mode = HOLDING

    def pause(self, now):
        """Keep the present output for hold_ms from now before rising again:
        a pack joining the battery adds its share through the ramp, never as
        a step (docs/charge-control.md "Several packs"). Decreases still
        apply at once. Nothing to do while holding at 0 already."""
        if not self.holding:
            self.paused = True
            self.pause_ms = now

    def step(self, target, now, hold_ms, rate_ma_s):
        dt = _dt(now, self.last_ms)
        self.last_ms = now
        if target <= 0:
            self.out = 0
            self.zero_ms = now
            self.holding = True
            self.paused = False
            self.mode = HOLDING
            return 0
        if self.paused:
            held = ticks_diff(now, self.pause_ms)
            if held < hold_ms:
                if target < self.out:
                    self.out = target
                self.mode = HOLDING
                return self.out
            self.paused = False
            dt = _dt(held - hold_ms, 0)
        elif self.holding:
            held = ticks_diff(now, self.zero_ms)
            if held < hold_ms:
                self.mode = HOLDING
                return 0
            self.holding = False
            dt = _dt(held - hold_ms, 0)  # the ramp starts when the hold ended
        up = self.out + rate_ma_s * dt // 1000
        if up < target:
            self.out = up
            self.mode = RAMPING
        else:
            self.out = target
            self.mode = NORMAL
        return self.out


class Slew:
    """The CVL (mV, whole pack): up at up_mv_s; down at once while it stays
    at or above the pack voltage, below it only at down_mv_min -- Deye and
    others discharge the battery into the grid towards a CVL below the pack
    voltage (esphome-yambms #46). `free` lifts the down limit (no discharge
    allowed, or a hard cap)."""

    def __init__(self, now):
        self.out = 0  # 0: the first target passes as is
        self.last_ms = now
        self._up = 0  # sub-mV remainders of the rates
        self._down = 0

    def step(self, target, pack_mv, free, now, up_mv_s, down_mv_min):
        dt = _dt(now, self.last_ms)
        self.last_ms = now
        out = self.out
        if out == 0:
            self.out = target
            return target
        if target > out:
            self._down = 0
            self._up += up_mv_s * dt
            out += self._up // 1000
            self._up %= 1000
            self.out = target if out > target else out
            return self.out
        self._up = 0
        if target == out:
            return out
        if free or target >= pack_mv:
            self.out = target
            return target
        if out > pack_mv:
            out = pack_mv  # down to the pack voltage is no step below it
        self._down += down_mv_min * dt
        out -= self._down // 60000
        self._down %= 60000
        self.out = target if out < target else out
        return self.out
