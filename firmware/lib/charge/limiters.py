# The building blocks of the limiters (docs/charge-control.md "Limiters"):
# step tables, latches with hysteresis and a running minimum that remembers
# which limiter won. Integer arithmetic, no allocation per call.

from charge import presets as PR
from compat import ticks_diff
from pack import snapshot as S


def step(tab, x, scale):
    """Pessimistic step table (the config's [[x, per-mille], ...], x times
    scale in the caller's units): below the first point the first value,
    from the last point on the last value, between two points the lower of
    their two values -- never above the linear interpolation of the
    published tables it is written from."""
    if x < tab[0][0] * scale:
        return tab[0][1]
    n = len(tab)
    for i in range(n - 1):
        if x < tab[i + 1][0] * scale:
            a = tab[i][1]
            b = tab[i + 1][1]
            return a if a < b else b
    return tab[n - 1][1]


def _min4(a, b, c, d):
    if b < a:
        a = b
    if c < a:
        a = c
    return d if d < a else a


class Latch:
    """A per-mille fraction from a table that falls at once and rises only
    as far as the table would still allow with the input `hyst` worse in
    either direction, and only once that has held for `delay_ms`: a value
    hovering at a threshold -- or a cell voltage that sags because the limit
    just cut the current -- cannot make the limit chatter
    (docs/charge-control.md "Hysteresis")."""

    def __init__(self):
        self.v = -1  # the first update takes the table's value as is
        self.since_ms = 0
        self.rising = False

    def update(self, tab, scale, a, b, hyst, now, delay_ms):
        """a, b: the inputs (the same value twice for one input, or the
        lowest and highest temperature); returns the latched fraction."""
        f = step(tab, a, scale)
        g = step(tab, b, scale)
        if g < f:
            f = g
        if f <= self.v or self.v < 0:
            self.v = f
            self.rising = False
            return f
        back = _min4(f, step(tab, a - hyst, scale), step(tab, a + hyst, scale),
                     _min4(step(tab, b - hyst, scale), step(tab, b + hyst, scale), f, f))
        if back <= self.v:
            self.rising = False
        elif not self.rising:
            self.rising = True
            self.since_ms = now
        elif ticks_diff(now, self.since_ms) >= delay_ms:
            self.v = back
            self.rising = False
        return self.v


class Window:
    """Inside [lo, hi]: blocks at once when a value leaves it, releases only
    when every value is `hyst` inside again."""

    def __init__(self):
        self.blocked = True

    def update(self, lo, hi, t_min, t_max, hyst):
        if t_min < lo or t_max > hi:
            self.blocked = True
        elif self.blocked and t_min >= lo + hyst and t_max <= hi - hyst:
            self.blocked = False
        return self.blocked


class Pick:
    """The running minimum of the candidate limits and the reason of the
    one that won."""

    def __init__(self):
        self.v = 0
        self.why = 0

    def start(self, v, why):
        self.v = v
        self.why = why

    def offer(self, v, why):
        if v < self.v:
            self.v = v
            self.why = why


def battery_temps(snap, out):
    """Lowest and highest battery temperature (dC, the MOSFET sensor
    excluded) into out[0], out[1]; False when no battery sensor reports."""
    lo = 32767
    hi = -32768
    temps = snap.temps
    for i in range(1, S.TEMP_SLOTS):
        t = temps[i]
        if t != S.NO_TEMP:
            if t < lo:
                lo = t
            if t > hi:
                hi = t
    out[0] = lo
    out[1] = hi
    return hi != -32768


def cvl_cap_mv(snap, margin, cells):
    """The highest CVL any data allows: cells x min(OVP - margin, OVPR when
    set), and below the 4E 57 pack OVP by the same margin per cell
    (docs/charge-control.md "CVL")."""
    cap = snap.cell_ovp_mv - margin
    ovpr = snap.cell_ovpr_mv
    if 0 < ovpr < cap:
        cap = ovpr
    cap *= cells
    if snap.pack_ovp_mv:
        pk = snap.pack_ovp_mv - margin * cells
        if pk < cap:
            cap = pk
    return cap if cap > 0 else 0


def auto_cvl_mv(snap, bulk_mv, cells):
    """dbus-serialbattery's "penalty sum": the cell voltages summed, minus
    each cell's overshoot above bulk -- lowers the CVL when a runner cell
    passes bulk (docs/charge-control.md "CVL"). 0 = no cell above bulk."""
    over = 0
    total = 0
    cv = snap.cells
    for i in range(cells):
        v = cv[i]
        total += v
        if v > bulk_mv:
            over += v - bulk_mv
    return total - over if over else 0


def cutoff_mv(snap, pre, cap_dah):
    """YamBMS's end-of-charge rule: the highest cell minus the current times
    a virtual resistance R = (cv_max - cv_min) / (C / 20), so the cut-off
    current is C/20 at cv_max and less further down; absorption may end
    while this stays >= cv_min (docs/charge-control.md "State machine")."""
    i_da = snap.current_ma // 100
    if i_da < 0:
        i_da = 0
    return snap.cell_max_mv - (pre[PR.CV_MAX] - pre[PR.CV_MIN]) * i_da * 20 // cap_dah
