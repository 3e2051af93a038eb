"""tools/battery_model.py, the LFP pack and JK-PB BMS of the closed-loop simulation: the OCV curve's shape,
the cell equivalent circuit (sign, relaxation, coulomb counting, cold), the pack builder (top balance, the
runner cell), and the BMS protections -- each one driven past its threshold with no controller, so every trip
counter is shown to count (the closed-loop goals rely on them) -- plus what the BMS reports, through the real
JK-PB frames into the firmware's own decoder."""
import math

import pytest

from jkbms import cellinfo
from jkbms import frame as J
from pack import flags as F
from tools import battery_model as B
from tools import closed_loop as CL
from tools.jkbms_sim import JkBmsSim


def one_cell_pack(soc=0.5, temp=25.0, capacity=280.0, n=1):
    return B.Pack([B.Cell(capacity, soc) for _ in range(n)], temp=temp)


def charge_until(bms, current, stop, dt=1.0, limit_s=20 * 3600):
    """Drive the BMS with a constant requested current until stop(bms) or the time limit."""
    t = 0.0
    while t < limit_s and not stop(bms):
        bms.step(current, dt)
        t += dt
    return t


# ------------------------------------------------------------------- OCV

def test_ocv_is_strictly_increasing():
    socs = [i / 2000.0 for i in range(-40, 2041)]
    v = [B.ocv_lfp(s) for s in socs]
    assert all(b > a for a, b in zip(v[:-1], v[1:], strict=True))
    assert all(b[1] > a[1] and b[0] > a[0] for a, b in zip(B.OCV_LFP[:-1], B.OCV_LFP[1:], strict=True))


def test_ocv_has_the_lfp_plateau_and_knees():
    # the flat plateau of ~3.26-3.34 V between 20 % and 90 %
    for s in range(20, 91):
        assert 3.26 <= B.ocv_lfp(s / 100.0) <= 3.34, s
    plateau = (B.ocv_lfp(0.90) - B.ocv_lfp(0.20)) / 0.70  # V per unit SOC
    low_knee = (B.ocv_lfp(0.10) - B.ocv_lfp(0.0)) / 0.10
    high_knee = (B.ocv_lfp(1.0) - B.ocv_lfp(0.95)) / 0.05
    assert low_knee > 20 * plateau and high_knee > 20 * plateau
    assert B.ocv_lfp(0.0) == pytest.approx(2.5) and 3.5 <= B.ocv_lfp(1.0) <= 3.6
    # overcharge keeps climbing, past any LFP OVP setting
    assert B.ocv_lfp(1.01) > 3.9 and B.ocv_lfp(-0.01) < 2.3
    # clamped at the table ends
    assert B.ocv_lfp(5.0) == B.OCV_LFP[-1][1] and B.ocv_lfp(-5.0) == B.OCV_LFP[0][1]


def test_profile_is_piecewise_linear_and_constant_outside():
    p = B.Profile([(0, -5.0), (3600, 15.0)])
    assert p(-10) == -5.0 and p(0) == -5.0 and p(1800) == pytest.approx(5.0) and p(7200) == 15.0
    assert B.Profile(3.0)(1e9) == 3.0
    with pytest.raises(ValueError):
        B.Profile([])


# ------------------------------------------------------------------ cells

def test_cell_voltage_sign_and_ohmic_step():
    c = B.Cell(280.0, 0.5)
    ocv = B.ocv_lfp(0.5)
    assert c.voltage(0.0) == pytest.approx(ocv)
    assert c.voltage(100.0) == pytest.approx(ocv + 100.0 * B.R0_OHM)  # + = charging raises the voltage
    assert c.voltage(-100.0) == pytest.approx(ocv - 100.0 * B.R0_OHM)
    assert 0.2e-3 <= B.R0_OHM <= 0.5e-3


def test_polarisation_builds_up_and_relaxes():
    c = B.Cell(280.0, 0.5)
    v0 = c.voltage(100.0)
    for _ in range(600):
        c.step(100.0, 1.0)
    loaded = c.voltage(100.0)
    assert loaded > v0 + 0.01  # the RC pairs charge up under current
    rest = c.voltage(0.0)
    for _ in range(3600):
        c.step(0.0, 1.0)
    relaxed = c.voltage(0.0)
    assert relaxed < rest - 0.005  # and relax once it stops
    assert relaxed == pytest.approx(B.ocv_lfp(c.soc), abs=0.006)
    # DC resistance at mid SOC, as a 280 Ah prismatic cell: 0.3-0.8 mOhm
    dc = B.R0_OHM + B.R1_OHM + B.R2_OHM
    assert 0.3e-3 <= dc <= 0.8e-3


def test_after_predicts_step_exactly():
    c = B.Cell(280.0, 0.97)
    c.step(80.0, 30.0)
    predicted = c.after(55.0, 5.0)
    c.step(55.0, 5.0)
    assert c.voltage(55.0) == pytest.approx(predicted, abs=1e-9)


def test_coulomb_counting_and_capacity():
    c = B.Cell(280.0, 0.2)
    for _ in range(3600):
        c.step(28.0, 1.0)
    assert c.soc == pytest.approx(0.3)


def test_cold_raises_the_resistance():
    assert B.r_factor(25.0) == pytest.approx(1.0)
    assert 1.8 <= B.r_factor(0.0) <= 2.5
    warm = one_cell_pack(temp=25.0)
    cold = one_cell_pack(temp=-5.0)
    warm.step(50.0, 10.0)
    cold.step(50.0, 10.0)
    assert cold.voltage() - cold.cells[0].voltage(0.0, 1.0) > warm.voltage() - warm.cells[0].voltage(0.0, 1.0)


def test_polarisation_grows_at_the_ends_only():
    assert B.polarisation_factor(0.5) == 1.0 and B.polarisation_factor(0.1) == 1.0
    assert B.polarisation_factor(1.0) == pytest.approx(1.0 + B.POLARISATION_END_GAIN)
    assert B.polarisation_factor(0.0) == pytest.approx(1.0 + B.POLARISATION_END_GAIN)
    assert 1.0 < B.polarisation_factor(0.95) < B.polarisation_factor(0.99)


# ------------------------------------------------------------------- pack

def test_pack_top_balanced_and_runner():
    pack = B.Pack.build(16, 280.0, soc=0.2, capacity_spread=0.01, top_balanced=True, offsets_ah={6: 1.5}, seed=3)
    to_full = [(1.0 - c.soc) * c.capacity_ah for c in pack.cells]
    for k, ah in enumerate(to_full):
        assert ah == pytest.approx(0.8 * 280.0 - (1.5 if k == 6 else 0.0)), k
    caps = [c.capacity_ah for c in pack.cells]
    assert max(caps) <= 280.0 * 1.01 and min(caps) >= 280.0 * 0.99 and len(set(caps)) > 1
    assert pack.voltage() == pytest.approx(sum(pack.cell_voltages()))


def test_pack_thermal_model_warms_under_current():
    pack = B.Pack.build(16, 280.0, soc=0.5, temp=20.0, thermal_tau_s=3 * 3600.0)
    for _ in range(3600):
        pack.step(100.0, 1.0)
    assert 20.5 < pack.temp_c < 30.0  # ~100 W of losses into ~86 kJ/K
    follows = B.Pack.build(4, 280.0, temp=B.Profile([(0, -5.0), (3600, 15.0)]))
    follows.step(0.0, 1800.0)
    assert follows.temp_c == pytest.approx(5.0)


def cc_cv_runner_mv(pack, cvl=55.2, current=100.0):
    """An ordinary charger (CC current, then CV at cvl until 5 A) on the pack: the highest cell minus the
    median at the end."""
    bms = B.JkBms(pack, nominal_ah=280.0)
    i = current
    for _ in range(6 * 3600):
        i = current
        if pack.voltage_after(i, 1.0) > cvl:
            lo, hi = 0.0, i
            for _ in range(30):
                mid = (lo + hi) / 2
                lo, hi = (lo, mid) if pack.voltage_after(mid, 1.0) > cvl else (mid, hi)
            i = lo
        bms.step(i, 1.0)
        if i < 5.0:
            break
    v = sorted(pack.cell_voltages())
    return (v[-1] - v[len(v) // 2]) * 1000.0, bms


def test_the_scenarios_runner_is_about_40_mv_at_the_top():
    mv, bms = cc_cv_runner_mv(CL._charging_pack(0.20))
    assert 30.0 <= mv <= 50.0, mv
    assert bms.trips_total() == 0


# -------------------------------------------------------------------- BMS

def test_ovp_trips_opens_the_charge_fet_and_recovers():
    """A charger with no controller (100 A until the BMS stops it): the OVP trip is counted."""
    pack = CL._charging_pack(0.90)
    bms = B.JkBms(pack, nominal_ah=280.0)
    assert bms.trips_total() == 0 and bms.charge_fet and bms.discharge_fet
    charge_until(bms, 100.0, lambda b: b.trips["OVP"] > 0)
    assert bms.trips["OVP"] == 1 and bms.trips_total() == 1
    assert max(pack.cell_voltages()) >= bms.settings["cell_ovp_v"]
    assert not bms.charge_fet and bms.discharge_fet
    assert bms.alarm_word() == 1 << 4
    assert bms.step(100.0, 1.0) == 0.0  # charge current forced to 0 ...
    assert bms.blocked_charge_s >= 1.0
    assert bms.step(-20.0, 1.0) == -20.0  # ... discharge still flows
    # recovery only once every cell is below OVPR (here: a house load draws the runner down)
    charge_until(bms, -20.0, lambda b: b.charge_fet, limit_s=4 * 3600)
    assert bms.charge_fet and max(pack.cell_voltages()) < bms.settings["cell_ovpr_v"]
    assert bms.alarm_word() == 0
    # charging on trips it again: every trip counts
    charge_until(bms, 100.0, lambda b: b.trips["OVP"] > 1)
    assert bms.trips["OVP"] == 2
    assert bms.trip_log[0][1] == "OVP" and bms.trips_grouped()["OVP"] == 2


def test_uvp_trips_opens_the_discharge_fet_and_charge_still_flows():
    pack = B.Pack.build(16, 280.0, soc=0.08, capacities=[280.0] * 15 + [270.0], top_balanced=True)
    bms = B.JkBms(pack, nominal_ah=280.0)
    charge_until(bms, -100.0, lambda b: b.trips["UVP"] > 0, limit_s=3 * 3600)
    assert bms.trips["UVP"] == 1 and not bms.discharge_fet and bms.charge_fet
    assert min(pack.cell_voltages()) <= bms.settings["cell_uvp_v"]
    assert bms.alarm_word() == 1 << 11
    assert bms.step(-50.0, 1.0) == 0.0
    assert bms.step(30.0, 1.0) == 30.0
    charge_until(bms, 30.0, lambda b: b.discharge_fet, limit_s=3600)
    assert bms.discharge_fet and min(pack.cell_voltages()) >= bms.settings["cell_uvpr_v"]


def test_charge_utp_trips_on_temperature_alone():
    pack = B.Pack.build(16, 280.0, soc=0.5, temp=B.Profile([(0, 3.0), (3600, -3.0), (7200, 8.0)]))
    bms = B.JkBms(pack)  # charge UTP 0 / recovery 5 degC, the JK-PB default
    charge_until(bms, 0.0, lambda b: b.trips["charge UTP"] > 0, limit_s=3 * 3600)
    assert bms.trips["charge UTP"] == 1 and not bms.charge_fet and bms.discharge_fet
    assert bms.alarm_word() == 1 << 9
    assert bms.step(50.0, 1.0) == 0.0
    charge_until(bms, 0.0, lambda b: b.charge_fet, limit_s=3 * 3600)
    assert pack.temp_c >= 5.0 and bms.trips["charge UTP"] == 1
    # with the UTP set to -10 degC, the same morning trips nothing
    pack2 = B.Pack.build(16, 280.0, soc=0.5, temp=B.Profile([(0, 3.0), (3600, -3.0), (7200, 8.0)]))
    bms2 = B.JkBms(pack2, settings={"charge_utp_c": -10.0, "charge_utpr_c": -5.0})
    charge_until(bms2, 0.0, lambda b: False, limit_s=3 * 3600)
    assert bms2.trips_total() == 0


def test_temperature_protections_each_trip():
    hot = B.Pack.build(16, 280.0, soc=0.5, temp=B.Profile([(0, 50.0), (600, 65.0)]))
    bms = B.JkBms(hot)
    charge_until(bms, 0.0, lambda b: False, limit_s=900)
    assert bms.trips["charge OTP"] == 1 and bms.trips["discharge OTP"] == 1
    assert not bms.charge_fet and not bms.discharge_fet
    freezing = B.Pack.build(16, 280.0, soc=0.5, temp=-25.0)
    bms = B.JkBms(freezing)
    assert bms.trips["discharge UTP"] == 1 and bms.trips["charge UTP"] == 1  # judged from the start
    assert bms.trips_grouped()["UTP"] == 2


def test_ocp_trips_after_its_delay_and_recovers_after_its_time():
    pack = B.Pack.build(16, 280.0, soc=0.3)
    bms = B.JkBms(pack)  # max charge 150 A, delay 30 s, recovery 60 s
    t = charge_until(bms, 160.0, lambda b: b.trips["charge OCP"] > 0, limit_s=120)
    assert bms.trips["charge OCP"] == 1 and 29 <= t <= 32
    assert not bms.charge_fet
    charge_until(bms, 0.0, lambda b: b.charge_fet, limit_s=120)
    assert bms.charge_fet
    # a current at the limit never trips
    bms2 = B.JkBms(B.Pack.build(16, 280.0, soc=0.3))
    charge_until(bms2, 150.0, lambda b: False, limit_s=300)
    assert bms2.trips_total() == 0


def test_mos_temperature_follows_the_current():
    bms = B.JkBms(B.Pack.build(16, 280.0, soc=0.3, temp=25.0))
    charge_until(bms, 100.0, lambda b: False, limit_s=3000)
    assert 25.0 + 10.0 < bms.mos_temp_c < 25.0 + 16.0


def test_balancer_moves_charge_from_the_highest_cell():
    pack = B.Pack.build(16, 280.0, soc=0.97, top_balanced=True, offsets_ah={3: 2.0})
    bms = B.JkBms(pack)
    before = [c.soc * c.capacity_ah for c in pack.cells]
    spread0 = max(pack.cell_voltages()) - min(pack.cell_voltages())
    charge_until(bms, 10.0, lambda b: max(b.pack.cell_voltages()) >= 3.42)
    assert bms.balancing == 1 and bms.balance_a == 2.0
    for _ in range(1800):
        bms.step(0.0, 1.0)
    after = [c.soc * c.capacity_ah for c in pack.cells]
    assert after[3] - before[3] < sum(after[k] - before[k] for k in range(16) if k != 3) / 15
    assert spread0 > 0
    off = B.JkBms(B.Pack.build(16, 280.0, soc=0.97, top_balanced=True, offsets_ah={3: 2.0}),
                  settings={"balancer_switch": False})
    charge_until(off, 10.0, lambda b: max(b.pack.cell_voltages()) >= 3.42)
    assert off.balancing == 0


def test_soc_is_counted_and_calibrated_at_the_top():
    pack = B.Pack.build(16, 280.0, soc=0.5)
    bms = B.JkBms(pack, nominal_ah=280.0)
    assert bms.soc_percent() == 50
    charge_until(bms, 28.0, lambda b: False, limit_s=3600)
    assert bms.soc_percent() == 60
    charge_until(bms, 50.0, lambda b: max(b.pack.cell_voltages()) >= b.settings["soc100_v"], limit_s=6 * 3600)
    assert bms.soc_percent() == 100
    assert 0.97 < pack.soc() < 1.0  # calibrated a little early, as the JK's SOC-100% voltage does


def test_set_settings_takes_effect_at_once():
    pack = CL._charging_pack(0.95)
    bms = B.JkBms(pack)
    charge_until(bms, 20.0, lambda b: max(b.pack.cell_voltages()) >= 3.50)
    assert bms.trips_total() == 0
    bms.set_settings(cell_ovp_v=3.50, cell_ovpr_v=3.40)
    assert bms.trips["OVP"] == 1 and not bms.charge_fet
    with pytest.raises(KeyError):
        bms.set_settings(no_such_setting=1)


# ------------------------------------------------------ what the BMS reports

def test_state_goes_through_the_real_frames_into_the_firmware_decoder():
    pack = CL._charging_pack(0.90)
    bms = B.JkBms(pack, nominal_ah=280.0, cell_noise_mv=1, seed=5)
    charge_until(bms, 100.0, lambda b: b.trips["OVP"] > 0)
    st = bms.state()
    assert st["charging"] is False and st["discharging"] is True and st["error_bitmask"] == 1 << 4
    assert len(st["cell_voltages_v"]) == 16
    true = pack.cell_voltages()
    assert all(abs(a - b) <= 0.0015 for a, b in zip(st["cell_voltages_v"], true, strict=True))
    sim = JkBmsSim(st, protocol="jk-pb")
    frame = sim.frame(0x02)
    from pack import snapshot as S
    snap = S.PackSnapshot()
    J.check_frame(frame, J.FRAME_LEN)
    cellinfo.decode(frame, 6, J.LAYOUT_JK02_32S, snap)
    assert snap.charge_fet == 0 and snap.discharge_fet == 1
    assert snap.alarms == 1 << 4 and snap.flags & F.CELL_OV
    assert snap.cell_count == 16
    assert snap.cell_max_mv == round(max(st["cell_voltages_v"]) * 1000)
    assert snap.soc_pct == st["soc_percent"]
    assert snap.temps[1] == round(st["t1_c"] * 10)
    assert math.isclose(snap.current_ma / 1000.0, st["battery_current_a"], abs_tol=0.001)
