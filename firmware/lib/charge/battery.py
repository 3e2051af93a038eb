# Several JK packs in parallel, shown to the inverter as ONE battery
# (docs/charge-control.md "Several packs"). Battery.snap is the aggregate
# PackSnapshot that charge.policy and the encoders read; state() / age_ms()
# stand in for the one source's Freshness. Imported only when more than one
# pack is possible: a single-pack gateway uses its source directly.
#
# Each pack's own Freshness decides whether it may count; the Battery owns
# its notify hook, so a pack that goes stale leaves the aggregate at that
# moment. The rebuild is integer-only and allocation-free.

from compat import const, ticks_diff
from pack import snapshot as S
from pack.snapshot import PackSnapshot
from sources.base import FRESH, STALE, WAIT

MAX_PACKS = const(16)

# per-pack admission state
P_WAIT = const(0)
P_ONLINE = const(1)
P_OFFLINE = const(2)
P_REJECTED = const(3)

# why a pack has its state (words: charge.texts PACK_WHY)
R_NO_DATA = const(0)
R_ONLINE = const(1)
R_STALE = const(2)
R_INCOMPLETE = const(3)
R_CELLS = const(4)

_SPLIT_MIN_MA = const(2000)  # below this total the measured split says nothing
_BIG = const(0x3FFFFFFF)


def _complete(s):
    return (s.have & S.HAVE_FOR_INVERTER) == S.HAVE_FOR_INVERTER and s.settings_ok == 1


def _known(f):
    """A Freshness's state as last seen, without a clock (state(now) polls)."""
    if not f.have_data:
        return WAIT
    return STALE if f.stale else FRESH


class Battery:
    def __init__(self, cfg, now=None):
        self.cfg = cfg
        self.snap = PackSnapshot()
        self.snap.modules = 0
        self.packs = []
        self._st = bytearray(MAX_PACKS)
        self._why = bytearray(MAX_PACKS)
        self._was = bytearray(MAX_PACKS)  # states before a rebuild: notified after it
        self.cells = 0  # the battery's cell count (majority), 0 = none yet
        self.online = 0
        self.ever = False  # bms_min_packs were online at least once
        self._state = WAIT
        self._dirty = False
        self._busy = False
        self.notify = None
        self.pack_notify = None
        self.cvl_pack = self.ccl_pack = self.dcl_pack = -1
        self.cell_min_pack = self.cell_max_pack = -1
        self.spread_mv = 0
        self.cycle_ms = 0  # end of the last full bus cycle (sources.pb_bus)
        self.cycled = False  # ... and it fit its period: the CAN bursts lock onto it
        # some pack's data comes on another's schedule (a JK master, BLE), not
        # our bus cycle's: then the supervisor rebuilds every second and the
        # CAN bursts lock onto nothing (set by app.packs)
        self.pushed = False

    def add(self, src):
        """Register a pack (at boot or when discovered); its index."""
        i = len(self.packs)
        if i >= MAX_PACKS:
            raise ValueError("at most 16 packs")
        for p in self.packs:
            if p is src:
                raise ValueError("pack added twice")
        self.packs.append(src)
        src.fresh.notify = self._hook(i)
        self._dirty = True
        return i

    def _hook(self, i):
        def hook(old, new):
            # a change is acted on when it is seen: a pack that went stale is
            # out of the limits before the next CAN burst
            self._dirty = True
            if not self._busy:
                self._rebuild()
        return hook

    def state_of(self, i):
        return self._st[i]

    def why_of(self, i):
        return self._why[i]

    def _poll(self, now):
        # a silent pack's staleness is seen here even when no update() comes
        self._busy = True
        try:
            for p in self.packs:
                p.fresh.state(now)
        finally:
            self._busy = False

    def update(self, now):
        """New data from the packs: re-admit and rebuild the aggregate."""
        self._poll(now)
        self._rebuild()

    def cycle_done(self, now, fits):
        """The bus task has read every pack once: rebuild now, and keep the
        moment for the CAN phase lock when the cycle fit its period (the
        bursts then follow the whole data set, not its first pack)."""
        self.cycle_ms = now
        self.cycled = fits
        self.update(now)

    def since_cycle_ms(self, now):
        """ms since the last full bus cycle, -1 when there is none to lock
        onto (none yet, no pack online, or cycles longer than their period)."""
        return ticks_diff(now, self.cycle_ms) if self.cycled and self.online else -1

    def state(self, now):
        """WAIT / FRESH / STALE of the whole battery (as a Freshness)."""
        self._poll(now)
        if self._dirty:
            self._rebuild()
        return self._state

    def age_ms(self, now):
        """Age of the newest data among the online packs, -1 without."""
        return self._age(now, True)

    def oldest_ms(self, now):
        """Age of the oldest data among the online packs, -1 without."""
        return self._age(now, False)

    def _age(self, now, newest):
        out = -1
        st = self._st
        for i in range(len(self.packs)):
            if st[i] == P_ONLINE:
                a = ticks_diff(now, self.packs[i].fresh.data_ms)
                if out < 0 or (a < out if newest else a > out):
                    out = a
        return out

    # --- admission -----------------------------------------------------

    def _vote(self):
        """The battery's cell count: the majority of the packs that sent a
        complete live data set, stale or not (a pack's count does not change
        when its link drops); ties go to the lowest index."""
        packs = self.packs
        n = len(packs)
        best = 0
        votes = 0
        for i in range(n):
            s = packs[i].snap
            if (s.have & S.HAVE_FOR_INVERTER) != S.HAVE_FOR_INVERTER or s.cell_count == 0:
                continue
            c = s.cell_count
            k = 0
            for j in range(n):
                t = packs[j].snap
                if t.cell_count == c and (t.have & S.HAVE_FOR_INVERTER) == S.HAVE_FOR_INVERTER:
                    k += 1
            if k > votes:
                votes = k
                best = c
        return best

    def _admit(self):
        cells = self._vote()
        self.cells = cells
        st = self._st
        why = self._why
        packs = self.packs
        online = 0
        for i in range(len(packs)):
            p = packs[i]
            s = p.snap
            k = _known(p.fresh)
            if k == WAIT:
                new = P_WAIT
                r = R_NO_DATA
            elif k == STALE:
                new = P_OFFLINE
                r = R_STALE
            elif not _complete(s):
                new = P_OFFLINE
                r = R_INCOMPLETE
            elif s.cell_count != cells or (s.set_cell_count and s.set_cell_count != s.cell_count):
                new = P_REJECTED
                r = R_CELLS
            else:
                new = P_ONLINE
                r = R_ONLINE
                online += 1
            old = st[i]
            why[i] = r
            self._was[i] = old
            if new != old:
                st[i] = new
                if old == P_ONLINE:
                    # back only with settings read after the drop
                    # (docs/charge-control.md "Several packs")
                    s.settings_ok = 0
        self.online = online
        # told once the count is right: an event can say "2 of 3 online"
        if self.pack_notify is not None:
            was = self._was
            for i in range(len(packs)):
                if was[i] != st[i]:
                    self.pack_notify(i, was[i], st[i])
        return online

    def _rebuild(self):
        self._busy = True
        try:
            self._dirty = False
            online = self._admit()
            if online:
                self._aggregate()
            else:
                a = self.snap
                a.modules = 0
                a.modules_offline = len(self.packs)
                a.max_charge_ma = a.max_discharge_ma = 0
                self.cvl_pack = self.ccl_pack = self.dcl_pack = -1
                self.cell_min_pack = self.cell_max_pack = -1
            if online >= self.cfg["bms_min_packs"]:
                self.ever = True
                new = FRESH
            else:
                new = STALE if self.ever else WAIT
            old = self._state
            if new != old:
                self._state = new
                if self.notify is not None:
                    self.notify(old, new)
        finally:
            self._busy = False

    # --- the aggregate -------------------------------------------------

    def _aggregate(self):
        a = self.snap
        packs = self.packs
        st = self._st
        n = self.cells
        cells = a.cells
        temps = a.temps
        margin = self.cfg["ovp_margin_mv"]
        for j in range(S.MAX_CELLS):
            cells[j] = 0
        k = 0  # online packs
        first = True
        v_lo = v_hi = v_sum = 0
        cur = 0
        amps = 0  # sum of |I|
        w_sum = 0
        w_equal = False
        soc_w = soh_w = 0
        c_lo = 0xFFFF
        c_hi = -1
        c_sum = 0
        delta = 0
        t_mos = S.NO_TEMP
        t_lo = _BIG
        t_hi = S.NO_TEMP
        cap_lo = _BIG
        for i in range(len(packs)):
            if st[i] != P_ONLINE:
                continue
            s = packs[i].snap
            k += 1
            v = s.pack_mv
            v_sum += v
            if first or v < v_lo:
                v_lo = v
            if first or v > v_hi:
                v_hi = v
            cur += s.current_ma
            amps += s.current_ma if s.current_ma >= 0 else -s.current_ma
            w = s.full_mah or s.design_mah
            if w < 100:
                w_equal = True  # a pack without a capacity: equal weights
            w = w // 100  # 0.1 Ah: sums stay small ints
            w_sum += w
            soc_w += s.soc_pct * w
            soh_w += s.soh_pct * w
            if first:
                a.remaining_mah = a.full_mah = a.design_mah = a.cycle_mah = 0
                a.cycles = a.runtime_s = 0
                a.alarms = a.flags = 0
                a.charge_fet = a.discharge_fet = a.charge_switch = a.discharge_switch = 1
                a.balancing = a.balance_ma = a.heating = 0
                a.have = s.have
                a.layout = s.layout
                a.cell_ovp_mv = a.cell_uvp_mv = a.cell_ovpr_mv = a.cell_uvpr_mv = 0
                a.rcv_mv = a.rfv_mv = a.pack_ovp_mv = a.pack_uvp_mv = 0
                a.charge_otp_dc = a.discharge_otp_dc = a.mos_otp_dc = S.NO_TEMP
                a.charge_utp_dc = a.discharge_utp_dc = S.NO_TEMP
            a.remaining_mah += s.remaining_mah
            a.full_mah += s.full_mah
            a.design_mah += s.design_mah
            # lifetime throughputs can pass 2**30 summed: saturate (small ints)
            a.cycle_mah = a.cycle_mah + s.cycle_mah if s.cycle_mah < _BIG - a.cycle_mah else _BIG
            if s.cycles > a.cycles:
                a.cycles = s.cycles
            if s.runtime_s > a.runtime_s:
                a.runtime_s = s.runtime_s
            # cells: each series position at its highest (auto CVL's penalty
            # sum never below any one pack's), min / max over every cell
            pc = s.cells
            for j in range(n):
                x = pc[j]
                c_sum += x
                if x > cells[j]:
                    cells[j] = x
                if x < c_lo:
                    c_lo = x
                    a.cell_min_idx = j
                    self.cell_min_pack = i
                if x > c_hi:
                    c_hi = x
                    a.cell_max_idx = j
                    self.cell_max_pack = i
            if s.cell_delta_mv > delta:
                delta = s.cell_delta_mv
            t = s.temps[S.T_MOS]
            if t != S.NO_TEMP and t > t_mos:
                t_mos = t
            for j in range(1, S.TEMP_SLOTS):
                t = s.temps[j]
                if t != S.NO_TEMP:
                    if t < t_lo:
                        t_lo = t
                    if t > t_hi:
                        t_hi = t
            # protection in any pack blocks the direction it blocks
            a.alarms |= s.alarms
            a.flags |= s.flags
            a.have &= s.have
            if not s.charge_fet:
                a.charge_fet = 0
            if not s.discharge_fet:
                a.discharge_fet = 0
            if not s.charge_switch:
                a.charge_switch = 0
            if not s.discharge_switch:
                a.discharge_switch = 0
            if s.balancing > a.balancing:
                a.balancing = s.balancing
            if s.balance_ma > a.balance_ma:
                a.balance_ma = s.balance_ma
            if s.heating:
                a.heating = 1
            # settings: the strictest of each (0 / NO_TEMP = not reported)
            cap = s.cell_ovp_mv - margin
            if 0 < s.cell_ovpr_mv < cap:
                cap = s.cell_ovpr_mv
            if cap < cap_lo:
                cap_lo = cap
                self.cvl_pack = i
            if first or s.cell_ovp_mv < a.cell_ovp_mv:
                a.cell_ovp_mv = s.cell_ovp_mv
            a.cell_ovpr_mv = _min_set(a.cell_ovpr_mv, s.cell_ovpr_mv)
            if s.cell_uvp_mv > a.cell_uvp_mv:
                a.cell_uvp_mv = s.cell_uvp_mv
            if s.cell_uvpr_mv > a.cell_uvpr_mv:
                a.cell_uvpr_mv = s.cell_uvpr_mv
            a.rcv_mv = _min_set(a.rcv_mv, s.rcv_mv)
            a.rfv_mv = _min_set(a.rfv_mv, s.rfv_mv)
            a.pack_ovp_mv = _min_set(a.pack_ovp_mv, s.pack_ovp_mv)
            if s.pack_uvp_mv > a.pack_uvp_mv:
                a.pack_uvp_mv = s.pack_uvp_mv
            a.charge_otp_dc = _min_temp(a.charge_otp_dc, s.charge_otp_dc)
            a.discharge_otp_dc = _min_temp(a.discharge_otp_dc, s.discharge_otp_dc)
            a.mos_otp_dc = _min_temp(a.mos_otp_dc, s.mos_otp_dc)
            if s.charge_utp_dc > a.charge_utp_dc:
                a.charge_utp_dc = s.charge_utp_dc
            if s.discharge_utp_dc > a.discharge_utp_dc:
                a.discharge_utp_dc = s.discharge_utp_dc
            first = False
        a.cell_count = n
        a.set_cell_count = n
        a.settings_ok = 1
        a.pack_mv = (v_sum + k // 2) // k
        self.spread_mv = v_hi - v_lo
        a.spread_mv = self.spread_mv
        a.current_ma = cur
        equal = w_equal or w_sum == 0
        if equal:
            w_sum = 0
            soc_w = soh_w = 0
            for i in range(len(packs)):
                if st[i] == P_ONLINE:
                    s = packs[i].snap
                    soc_w += s.soc_pct
                    soh_w += s.soh_pct
                    w_sum += 1
        a.soc_pct = (soc_w + w_sum // 2) // w_sum
        a.soh_pct = (soh_w + w_sum // 2) // w_sum
        a.cell_min_mv = c_lo if n else 0
        a.cell_max_mv = c_hi if n else 0
        a.cell_avg_mv = (c_sum + k * n // 2) // (k * n) if n else 0
        a.cell_delta_mv = delta  # per pack: balancing cannot close a gap between packs
        temps[S.T_MOS] = t_mos
        for j in range(1, S.TEMP_SLOTS):
            temps[j] = S.NO_TEMP
        if t_hi != S.NO_TEMP:
            temps[1] = t_lo
            temps[2] = t_hi
        a.modules = k
        a.modules_offline = len(self.packs) - k
        self._currents(equal, w_sum, amps)
        a.updates += 1

    def _currents(self, equal, w_sum, amps):
        """CCL / DCL inputs: the sum of the packs' limits, capped so that no
        pack passes its own when the current splits unevenly: share s_k (per
        mille) = max(capacity share, measured share); limit = min over k of
        limit_k / s_k (docs/charge-control.md "Several packs")."""
        a = self.snap
        packs = self.packs
        st = self._st
        k = a.modules
        div = 1 + amps // 1000000  # keeps |I| x 1000 a small int
        measured = amps >= _SPLIT_MIN_MA
        tot = amps // div
        ccl = dcl = _BIG
        for i in range(len(packs)):
            if st[i] != P_ONLINE:
                continue
            s = packs[i].snap
            if equal:
                share = (1000 + k - 1) // k
            else:
                w = (s.full_mah or s.design_mah) // 100
                share = (w * 1000 + w_sum - 1) // w_sum
            if measured:
                x = s.current_ma if s.current_ma >= 0 else -s.current_ma
                m = ((x // div) * 1000 + tot - 1) // tot
                if m > share:
                    share = m
            if share < 1:
                share = 1
            v = _per_share(s.max_charge_ma, share)
            if v < ccl:
                ccl = v
                self.ccl_pack = i
            v = _per_share(s.max_discharge_ma, share)
            if v < dcl:
                dcl = v
                self.dcl_pack = i
        a.max_charge_ma = ccl
        a.max_discharge_ma = dcl


def _per_share(limit, share):
    # limit x 1000 / share, rounded down; no product >= 2**30
    if limit < 1000000:
        return limit * 1000 // share
    return limit // share * 1000


def _min_set(a, b):
    """The lower of two settings where 0 means not set."""
    if b and (a == 0 or b < a):
        return b
    return a


def _min_temp(a, b):
    if b != S.NO_TEMP and (a == S.NO_TEMP or b < a):
        return b
    return a
