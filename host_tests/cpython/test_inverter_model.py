"""tools/inverter_model.py, the inverter of the closed-loop simulation: its Pylontech decoding (struct, from the
wire tables -- checked against frames built by hand and against the firmware's own encoder), and its
behaviour: nothing before the first 0x351, CC limited by CCL / PV / its own maximum with a ramp, CV at CVL
as its meter sees it, the enable bits, DCL and DVL with hysteresis, force charge from the grid, the CAN
timeout, and the Deye "discharge towards CVL" quirk."""
import struct

import pytest

import protocols
from app import config as gwconfig
from charge import limits as L
from pack import snapshot as S
from tools import battery_model as B
from tools import inverter_model as I


def frames(cvl=55.2, ccl=100.0, dcl=100.0, dvl=46.4, req=0xC0, soc=50, soh=100, v=53.0, a=10.0, t=25.0,
           alarms=0):
    """A Pylontech frame set built by hand (docs/inverter-can.md "Pylontech")."""
    return [
        (0x35E, b"PYLON   "),
        (0x351, struct.pack("<HhhH", round(cvl * 10), round(ccl * 10), round(dcl * 10), round(dvl * 10))),
        (0x355, struct.pack("<HHHH", soc, soh, 0, 0)),
        (0x356, struct.pack("<hhhH", round(v * 100), round(a * 10), round(t * 10), 0)),
        (0x359, struct.pack("<I", alarms) + bytes((1, 0x50, 0x4E, 0))),
        (0x35C, bytes((req, 0, 0, 0, 0, 0, 0, 0))),
    ]


def pack(soc=0.5, n=16):
    return B.Pack.build(n, 280.0, soc=soc, seed=2)


def run(inv, p, seconds, t0=0.0, dt=1.0, bms=None, resend=None):
    """Drive the inverter for `seconds`; resend: a frame set received again every tick (else none)."""
    t = t0
    out = []
    while t < t0 + seconds - 1e-9:
        if resend is not None:
            inv.receive(t, resend)
        i = inv.control(t, p, dt)
        if bms is not None:
            i = bms.step(i, dt)
        else:
            p.step(i, dt)
        out.append(i)
        t += dt
    return out


# -------------------------------------------------------------- decoding

def test_decodes_a_hand_built_frame_set():
    rx = I.PylonState()
    for cid, data in frames(cvl=55.2, ccl=87.5, dcl=120.0, dvl=46.4, req=0x80 | 0x10, soc=73, soh=98, v=53.21,
                            a=-12.3, t=-4.5, alarms=(1 << 1) | (1 << 27)):
        assert rx.decode(cid, data)
    assert (rx.cvl_v, rx.ccl_a, rx.dcl_a, rx.dvl_v) == (55.2, 87.5, 120.0, 46.4)
    assert (rx.soc_pct, rx.soh_pct) == (73, 98)
    assert rx.pack_v == pytest.approx(53.21) and rx.pack_a == pytest.approx(-12.3) and rx.temp_c == -4.5
    assert rx.alarms == (1 << 1) | (1 << 27) and rx.modules == 1 and rx.name == "PYLON"
    assert rx.charge_enable and not rx.discharge_enable and rx.force_charge
    assert not rx.decode(0x305, bytes(8))
    with pytest.raises(ValueError):
        rx.decode(0x351, b"\x00\x01")


def test_agrees_with_the_firmware_encoder():
    cfg = gwconfig.defaults()
    enc = protocols.make(cfg)
    snap = S.PackSnapshot()
    snap.have = S.HAVE_FOR_INVERTER | S.HAVE_SOH | S.HAVE_TEMPS
    snap.soc_pct, snap.soh_pct, snap.pack_mv, snap.current_ma = 64, 97, 53284, -23450
    snap.temps[1] = 213
    lim = L.Limits()
    lim.cvl_dv, lim.ccl_da, lim.dcl_da, lim.dvl_dv = 552, 875, 1000, 464
    lim.charge_enable, lim.discharge_enable = True, False
    lim.soc_pct = 64  # the shaped SOC the controller sends
    enc.encode(snap, lim, 0)
    rx = I.PylonState()
    for cid, f in zip(enc.ids, enc.frames, strict=True):
        rx.decode(cid, bytes(f))
    assert (rx.cvl_v, rx.ccl_a, rx.dcl_a, rx.dvl_v) == (55.2, 87.5, 100.0, 46.4)
    assert (rx.soc_pct, rx.soh_pct) == (64, 97)
    assert rx.pack_v == pytest.approx(53.28) and rx.pack_a == pytest.approx(-23.5) and rx.temp_c == 21.3
    assert rx.charge_enable and not rx.discharge_enable and not rx.force_charge


# ------------------------------------------------------------ behaviour

def test_waits_for_the_first_limits_frame():
    inv = I.Inverter(pv_w=8000.0, load_w=500.0)
    p = pack()
    assert run(inv, p, 30) == [0.0] * 30 and inv.mode == "waiting for BMS"
    inv.receive(30.0, [f for f in frames() if f[0] != 0x351])
    assert run(inv, p, 5, t0=30.0) == [0.0] * 5


def test_cc_limited_by_ccl_and_ramped():
    inv = I.Inverter(pv_w=8000.0, load_w=400.0, ramp_up_a_s=5.0)
    p = pack(0.3)
    inv.receive(0.0, frames(ccl=60.0))
    out = run(inv, p, 40)
    assert out[0] == pytest.approx(5.0) and out[1] == pytest.approx(10.0)  # 5 A/s
    assert max(out) == pytest.approx(60.0) and out[-1] == pytest.approx(60.0)
    inv.receive(40.0, frames(ccl=20.0))
    out = run(inv, p, 3, t0=40.0)
    assert out[0] == pytest.approx(20.0)  # decreases within the fast ramp (50 A/s)


def test_cc_limited_by_pv_surplus_and_hardware():
    p = pack(0.3)
    inv = I.Inverter(pv_w=2000.0, load_w=400.0, efficiency=0.96, ramp_up_a_s=1000.0)
    inv.receive(0.0, frames(ccl=100.0))
    i = run(inv, p, 5)[-1]
    assert i == pytest.approx(1600.0 * 0.96 / p.voltage(), rel=0.02)
    inv2 = I.Inverter(pv_w=20000.0, load_w=0.0, max_charge_a=150.0, ramp_up_a_s=1000.0)
    inv2.receive(0.0, frames(ccl=300.0))
    assert run(inv2, pack(0.3), 3)[-1] == pytest.approx(150.0)


def test_charge_enable_off_means_no_charge():
    inv = I.Inverter(pv_w=8000.0, load_w=0.0)
    inv.receive(0.0, frames(ccl=100.0, req=0x40))
    assert max(run(inv, pack(0.3), 20)) == 0.0


def test_cv_holds_the_measured_voltage_at_cvl():
    for offset in (0.0, -0.1):
        p = pack(0.985)
        inv = I.Inverter(pv_w=8000.0, load_w=0.0, ramp_up_a_s=1000.0, meter_offset_v=offset, cable_ohm=0.001)
        out = run(inv, p, 1800, resend=frames(cvl=55.2, ccl=100.0))
        assert inv.cv_active and inv.mode == "CV"
        assert out[0] > 50.0 and out[-1] < out[0] / 3  # the current tapers under CV
        measured = inv.measured_v(p.voltage(), p.current_a)
        assert measured == pytest.approx(55.2, abs=0.005)
        # a meter reading low charges the pack higher
        assert p.voltage() == pytest.approx(55.2 - offset - p.current_a * 0.001, abs=0.005)


def test_discharge_covers_the_deficit_within_dcl():
    p = pack(0.5)
    inv = I.Inverter(pv_w=0.0, load_w=3000.0, efficiency=0.96)
    inv.receive(0.0, frames(dcl=100.0))
    i = run(inv, p, 3)[-1]
    assert i == pytest.approx(-3000.0 / 0.96 / p.voltage(), rel=0.02) and inv.mode == "discharge"
    inv.receive(3.0, frames(dcl=20.0))
    assert run(inv, p, 2, t0=3.0)[-1] == pytest.approx(-20.0)
    inv.receive(5.0, frames(dcl=100.0, req=0x80))  # discharge enable off
    assert run(inv, p, 2, t0=5.0)[-1] == 0.0
    inv.receive(7.0, frames(dcl=100.0, req=0xC0, ccl=100.0))
    inv.load = B.Profile(100.0)
    inv.pv = B.Profile(0.0)
    assert run(inv, p, 2, t0=7.0)[-1] < 0  # a small load is still served from the battery


def test_dvl_stops_discharge_with_hysteresis():
    p = pack(0.5)
    v = p.voltage()
    inv = I.Inverter(pv_w=0.0, load_w=2000.0, dvl_hyst_v=0.5)
    inv.receive(0.0, frames(dcl=100.0, dvl=v + 0.1))  # DVL above the pack: no discharge
    assert run(inv, p, 3) == [0.0] * 3 and inv.dvl_stopped and "below DVL" in inv.mode
    inv.receive(3.0, frames(dcl=100.0, dvl=v - 0.3))  # inside the hysteresis: still stopped
    assert run(inv, p, 3, t0=3.0) == [0.0] * 3
    inv.receive(6.0, frames(dcl=100.0, dvl=v - 0.6))
    assert run(inv, p, 3, t0=6.0)[-1] < 0


def test_force_charge_from_the_grid():
    p = pack(0.1)
    inv = I.Inverter(pv_w=0.0, load_w=500.0, grid_charge_a=20.0, ramp_up_a_s=1000.0)
    inv.receive(0.0, frames(ccl=100.0, req=0xC0 | 0x10))
    out = run(inv, p, 3)
    assert out[-1] == pytest.approx(20.0) and "force charge" in inv.mode and inv.grid_w > 500.0
    inv.receive(3.0, frames(ccl=10.0, req=0xC0 | 0x20))  # bit 5 counts too, within CCL
    assert run(inv, p, 2, t0=3.0)[-1] == pytest.approx(10.0)
    inv_off = I.Inverter(pv_w=0.0, load_w=500.0, honour_force_charge=False)
    inv_off.receive(0.0, frames(ccl=100.0, req=0xC0 | 0x10))
    assert run(inv_off, pack(0.1), 3)[-1] < 0  # ignored: the load is served from the battery


def test_can_silence_keeps_the_last_limits_then_stops():
    p = pack(0.3)
    inv = I.Inverter(pv_w=8000.0, load_w=0.0, can_timeout_s=60.0, ramp_up_a_s=1000.0)
    inv.receive(0.0, frames(ccl=50.0))
    out = run(inv, p, 60)
    assert out[-1] == pytest.approx(50.0)  # last values kept for can_timeout_s
    out = run(inv, p, 5, t0=61.0)
    assert out == [0.0] * 5 and "CAN silent" in inv.mode
    inv.receive(70.0, frames(ccl=50.0))
    assert run(inv, p, 2, t0=70.0)[-1] == pytest.approx(50.0)


def test_deye_quirk_discharges_towards_cvl():
    p = pack(0.995)
    p.step(0.0, 1.0)
    v = p.voltage()
    normal = I.Inverter(pv_w=0.0, load_w=0.0)
    normal.receive(0.0, frames(cvl=v - 1.0, ccl=100.0))
    assert run(normal, p, 3) == [0.0] * 3
    deye = I.Inverter(pv_w=0.0, load_w=0.0, discharge_above_cvl=True)
    deye.receive(0.0, frames(cvl=v - 1.0, ccl=100.0, dcl=100.0))
    assert run(deye, pack(0.995), 3)[-1] < -10.0


def test_the_bms_mosfet_overrides_the_inverter():
    p = pack(0.5)
    bms = B.JkBms(p, settings={"charge_switch": False})
    inv = I.Inverter(pv_w=8000.0, load_w=0.0, ramp_up_a_s=1000.0)
    inv.receive(0.0, frames(ccl=100.0))
    assert run(inv, p, 3, bms=bms) == [0.0] * 3
    assert bms.blocked_charge_s == 3.0
