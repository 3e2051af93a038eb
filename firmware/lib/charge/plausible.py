# Is the BMS data believable enough to drive the limits? Data that fails a
# check counts as no data: both currents 0, the reason on the console and an
# event (docs/charge-control.md "Plausibility"). A decoder already rejected
# malformed frames; this catches frames that are well-formed but wrong, or
# that contradict the BMS's own settings.

from charge import presets as PR
from compat import const
from pack import snapshot as S

OK = const(0)
CELL_COUNT = const(1)
CELL_RANGE = const(2)
PACK_SUM = const(3)
TEMP_RANGE = const(4)
NO_TEMP = const(5)
SETTINGS = const(6)
CAPACITY = const(7)
CURRENT = const(8)
PACK_SPREAD = const(9)


TEMP_LO_DC = const(-400)  # -40 degC .. +100 degC for the cells, +125 degC for the MOSFET
TEMP_HI_DC = const(1000)
MOS_HI_DC = const(1250)
CURRENT_MAX_MA = const(2000000)


def _temp_ok(t, hi):
    return t == S.NO_TEMP or TEMP_LO_DC <= t <= hi


def check(snap, c, pre, have_temp):
    """OK, or the first reason the data cannot drive limits."""
    n = snap.cell_count
    if n < 1 or (snap.set_cell_count and snap.set_cell_count != n):
        return CELL_COUNT
    if snap.cell_min_mv < pre[PR.CELL_LO] or snap.cell_max_mv > pre[PR.CELL_HI]:
        return CELL_RANGE
    # the pack voltage is measured apart from the cells: beyond 5 % + 1 V
    # off their sum, one of them is wrong
    total = snap.cell_avg_mv * n
    diff = snap.pack_mv - total
    if diff < 0:
        diff = -diff
    if diff > total // 20 + 1000:
        return PACK_SUM
    # parallel packs share one bus bar: voltages far apart mean a pack is
    # not connected (docs/charge-control.md "Several packs"); one pack: 0
    if snap.spread_mv > c["pack_spread_mv"]:
        return PACK_SPREAD
    temps = snap.temps
    for i in range(1, S.TEMP_SLOTS):
        if not _temp_ok(temps[i], TEMP_HI_DC):
            return TEMP_RANGE
    if not _temp_ok(temps[S.T_MOS], MOS_HI_DC):
        return TEMP_RANGE
    if not have_temp and c["require_temp_sensor"] == "yes":
        return NO_TEMP
    uvp = snap.cell_uvp_mv
    ovp = snap.cell_ovp_mv
    uvpr = snap.cell_uvpr_mv
    ovpr = snap.cell_ovpr_mv
    # UVP < UVPR <= OVPR < OVP (a recovery of 0 = not set), RCV / RFV inside,
    # and every threshold inside the chemistry's physical range
    if not pre[PR.CELL_LO] <= uvp < ovp <= pre[PR.CELL_HI]:
        return SETTINGS
    if uvpr and not uvp < uvpr < ovp:
        return SETTINGS
    if ovpr and not uvp < ovpr <= ovp:
        return SETTINGS
    if uvpr and ovpr and uvpr > ovpr:
        return SETTINGS
    if snap.rcv_mv and not uvp < snap.rcv_mv <= ovp:
        return SETTINGS
    if snap.rfv_mv and not uvp < snap.rfv_mv <= ovp:
        return SETTINGS
    if snap.rcv_mv and snap.rfv_mv and snap.rfv_mv > snap.rcv_mv:
        return SETTINGS
    if snap.charge_utp_dc != S.NO_TEMP and snap.charge_otp_dc != S.NO_TEMP \
            and snap.charge_utp_dc >= snap.charge_otp_dc:
        return SETTINGS
    if snap.discharge_utp_dc != S.NO_TEMP and snap.discharge_otp_dc != S.NO_TEMP \
            and snap.discharge_utp_dc >= snap.discharge_otp_dc:
        return SETTINGS
    if snap.pack_ovp_mv and snap.pack_uvp_mv and snap.pack_uvp_mv >= snap.pack_ovp_mv:
        return SETTINGS
    if not (c["capacity_ah"] or snap.full_mah or snap.design_mah):
        return CAPACITY
    if not -CURRENT_MAX_MA <= snap.current_ma <= CURRENT_MAX_MA:
        return CURRENT
    return OK


def __getattr__(name):
    if name == "WHY":
        from charge import texts

        return texts.PLAUSIBLE
    raise AttributeError(name)
