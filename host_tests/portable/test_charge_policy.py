# charge/: every reason a current limit is 0 has its own test, on a real
# JK-PB pack decoded from captures, through the firmware's one policy
# (charge.policy.ChargePolicy) -- and the encoder only places what the
# policy decided. CPython and MicroPython.

from fakes import load_pb_pack

from app import config as C
from charge import limits as L
from charge.policy import ChargePolicy
from pack import flags as F
from pack.snapshot import PackSnapshot
from sources.base import FRESH, STALE, WAIT


def decided(snap, state=FRESH, **over):
    cfg = C.defaults()
    for k in over:
        cfg[k] = over[k]
    pol = ChargePolicy(cfg)
    send = pol.decide(snap, state)
    return pol.lim, send, pol


def pack():
    snap = PackSnapshot()
    load_pb_pack(snap)
    return snap


def test_a_healthy_pack_gets_its_bms_limits_and_both_enables():
    snap = pack()
    lim, send, _ = decided(snap)
    assert send
    assert lim.charge_reason == L.OK and lim.discharge_reason == L.OK
    assert lim.ccl_da == 1000 and lim.dcl_da == 1000  # 0.9 x 150 A, capped by the 100 A default
    assert lim.charge_enable and lim.discharge_enable and lim.flags == 0
    # CVL never above the BMS's cell OVP recovery voltage x cells
    assert lim.cvl_dv * 100 <= snap.cell_ovpr_mv * snap.cell_count


def test_no_data_yet_sends_nothing():
    lim, send, _ = decided(PackSnapshot(), WAIT)
    assert not send and lim.ccl_da == 0 and lim.dcl_da == 0
    assert lim.charge_reason == L.NO_DATA and not lim.charge_enable and not lim.discharge_enable


def test_no_live_data_means_zero_limits():
    snap = PackSnapshot()
    snap.settings_ok = 1
    snap.cell_count = 8
    lim, _, _ = decided(snap)
    assert (lim.ccl_da, lim.dcl_da) == (0, 0) and lim.charge_reason == L.NO_DATA == lim.discharge_reason


def test_no_settings_means_zero_limits():
    snap = pack()
    snap.settings_ok = 0
    lim, _, _ = decided(snap)
    assert (lim.ccl_da, lim.dcl_da) == (0, 0)
    assert lim.charge_reason == L.NO_SETTINGS == lim.discharge_reason
    assert not lim.charge_enable and not lim.discharge_enable


def test_fet_off_blocks_its_direction_only():
    snap = pack()
    snap.charge_fet = 0
    lim, _, _ = decided(snap)
    assert lim.ccl_da == 0 and lim.charge_reason == L.FET_OFF and not lim.charge_enable
    assert lim.dcl_da > 0 and lim.discharge_enable
    snap = pack()
    snap.discharge_fet = 0
    lim, _, _ = decided(snap)
    assert lim.dcl_da == 0 and lim.discharge_reason == L.FET_OFF and not lim.discharge_enable
    assert lim.ccl_da > 0 and lim.charge_enable


def test_switch_off_in_the_bms_blocks_its_direction_only():
    snap = pack()
    snap.charge_switch = 0
    lim, _, _ = decided(snap)
    assert lim.ccl_da == 0 and lim.charge_reason == L.SWITCH_OFF and lim.dcl_da > 0
    snap = pack()
    snap.discharge_switch = 0
    lim, _, _ = decided(snap)
    assert lim.dcl_da == 0 and lim.discharge_reason == L.SWITCH_OFF and lim.ccl_da > 0


def _all_flags():
    out = []
    for name in dir(F):
        v = getattr(F, name)
        if name.isupper() and isinstance(v, int) and name != "LINK_LOST":
            out.append((name, v))
    return out


def test_each_blocking_alarm_blocks_exactly_its_directions():
    blocked_both = 0
    for name, flag in _all_flags():
        snap = pack()
        snap.flags = flag
        lim, _, _ = decided(snap)
        charge_blocked = bool(flag & L.CHARGE_BLOCKING)
        discharge_blocked = bool(flag & L.DISCHARGE_BLOCKING)
        assert (lim.ccl_da == 0) == charge_blocked, name
        assert (lim.dcl_da == 0) == discharge_blocked, name
        assert (lim.charge_reason == L.ALARM) == charge_blocked, name
        assert (lim.discharge_reason == L.ALARM) == discharge_blocked, name
        assert lim.charge_enable != charge_blocked and lim.discharge_enable != discharge_blocked, name
        if charge_blocked and discharge_blocked:
            blocked_both += 1
    assert blocked_both >= 5  # MOSFET OT, cell count, current sensor, internal comms, temp sensor


def test_the_protection_flags_named_in_the_docs_block():
    for flag in (F.CELL_OV, F.PACK_OV, F.CHARGE_OC, F.CHARGE_SC, F.CHARGE_OT, F.CHARGE_UT, F.MOS_OT):
        assert flag & L.CHARGE_BLOCKING
    for flag in (F.CELL_UV, F.PACK_UV, F.DISCHARGE_OC, F.DISCHARGE_SC, F.DISCHARGE_OT, F.MOS_OT):
        assert flag & L.DISCHARGE_BLOCKING
    for flag in (F.CELL_UV, F.PACK_UV, F.DISCHARGE_OC, F.DISCHARGE_SC, F.DISCHARGE_OT):
        assert not flag & L.CHARGE_BLOCKING  # discharging trips do not stop charging


def test_jk02_alarm_words_map_to_the_neutral_flags():
    assert F.from_jk02(1 << 4) == F.CELL_OV
    assert F.from_jk02(1 << 11) == F.CELL_UV
    assert F.from_jk02((1 << 9) | (1 << 15)) == F.CHARGE_UT | F.DISCHARGE_OT
    assert F.from_jk02(1 << 18) == 0  # "GPS disconnected" has no safety meaning
    snap = pack()
    assert snap.flags == F.from_jk02(snap.alarms)  # the decoder sets both


def test_highest_cell_at_ovp_blocks_charging():
    snap = pack()
    snap.cell_max_mv = snap.cell_ovp_mv
    lim, _, _ = decided(snap)
    assert lim.ccl_da == 0 and lim.charge_reason == L.CELL_LIMIT and lim.dcl_da > 0
    snap.cell_max_mv = snap.cell_ovp_mv - 1
    lim, _, _ = decided(snap)
    assert lim.ccl_da > 0


def test_lowest_cell_at_uvp_blocks_discharging():
    snap = pack()
    snap.cell_min_mv = snap.cell_uvp_mv
    lim, _, _ = decided(snap)
    assert lim.dcl_da == 0 and lim.discharge_reason == L.CELL_LIMIT and lim.ccl_da > 0
    snap.cell_min_mv = snap.cell_uvp_mv + 1
    lim, _, _ = decided(snap)
    assert lim.dcl_da > 0


def test_pack_at_or_below_dvl_is_not_discharge_enabled():
    snap = pack()
    lim, _, _ = decided(snap)
    snap.pack_mv = lim.dvl_dv * 100
    lim, _, _ = decided(snap)
    assert lim.dcl_da > 0 and not lim.discharge_enable  # today only the enable bit drops (see docs)
    snap.pack_mv += 1
    lim, _, _ = decided(snap)
    assert lim.discharge_enable


def test_stale_data_zeros_policy_zeroes_both_limits_and_raises_link_lost():
    snap = pack()
    lim, send, pol = decided(snap, STALE)
    assert send and pol.link_lost and not pol.stopped
    assert (lim.ccl_da, lim.dcl_da) == (0, 0)
    assert lim.charge_reason == L.STALE == lim.discharge_reason
    assert not lim.charge_enable and not lim.discharge_enable
    assert lim.flags & F.LINK_LOST
    assert pol.decide(snap, FRESH) and not pol.link_lost and not lim.flags & F.LINK_LOST and lim.ccl_da > 0


def test_stale_data_stop_policy_sends_nothing():
    snap = pack()
    lim, send, pol = decided(snap, STALE, link_loss="stop")
    assert not send and pol.stopped and lim.ccl_da == 0 and lim.dcl_da == 0
    assert pol.decide(snap, FRESH) and not pol.stopped


def test_user_caps_limit_the_current():
    snap = pack()
    lim, _, _ = decided(snap, max_charge_a=20, max_discharge_a=0)
    assert lim.ccl_da == 200 and lim.dcl_da == 0 and not lim.discharge_enable


def test_the_encoder_places_the_policy_values_and_decides_nothing():
    import protocols
    snap = pack()
    cfg = C.defaults()
    enc = protocols.make(cfg)
    lim = L.Limits()
    lim.cvl_dv, lim.ccl_da, lim.dcl_da, lim.dvl_dv = 552, 123, 45, 464
    lim.charge_enable = False  # contradicts ccl > 0 on purpose: the encoder must not "fix" it
    lim.discharge_enable = True
    enc.encode(snap, lim, F.LINK_LOST)
    f = enc.frames
    assert bytes(f[1]) == bytes((552 & 0xFF, 552 >> 8, 123, 0, 45, 0, 464 & 0xFF, 464 >> 8))
    assert f[5][0] == 0x40  # discharge enable only, as decided
    assert f[4][1] & 0x08 and f[4][3] & 0x08  # LINK_LOST -> system error + communication failure
