# Frame writers shared by the SMA-family layouts (SMA Sunny Island, Victron
# CAN-bus BMS, Pylontech V1.3): little-endian, DLC 8, zero-padded, values
# clamped to their wire range only (docs/inverter-can.md "Victron"). Each
# writes into a preallocated bytearray(8) and allocates nothing.

import struct

from charge.limiters import battery_temps
from pack import snapshot as S
from protocols.base import div_round, s16, u16

# 0x35F version bytes: the gateway's frame-layout version 1.0 (major, minor)
VERSION_MAJOR = 1
VERSION_MINOR = 0


def limits(buf, cvl, ccl, dcl, dvl):
    """0x351: CVL u16 0.1 V, CCL / DCL s16 0.1 A, DVL u16 0.1 V."""
    struct.pack_into("<HhhH", buf, 0, u16(cvl), s16(ccl), s16(dcl), u16(dvl))


def soc(buf, snap, lim):
    """0x355: SOC %, SOH % (100 without one), SOC 0.01 % (the shaped SOC x 100)."""
    soh = snap.soh_pct if snap.have & S.HAVE_SOH else 100
    struct.pack_into("<HHHH", buf, 0, u16(lim.soc_pct), u16(soh), u16(lim.soc_pct * 100), 0)


def measure(buf, snap):
    """0x356: pack V s16 0.01 V, current s16 0.1 A (+ = charging), the mean
    battery temperature s16 0.1 degC; 0 without a battery sensor (never the
    MOSFET's), as docs/inverter-can.md "Pylontech" does."""
    t = snap.avg_temp_dc()
    if t == S.NO_TEMP:
        t = 0
    struct.pack_into("<hhhH", buf, 0, s16(div_round(snap.pack_mv, 10)),
                     s16(div_round(snap.current_ma, 100)), t, 0)


def info(buf, word0, capacity_ah, word3):
    """0x35F: word0 (SMA battery type / Victron product id), version
    major / minor, capacity Ah, word3 (SMA manufacturer id / Victron hardware
    version)."""
    buf[2] = VERSION_MAJOR
    buf[3] = VERSION_MINOR
    struct.pack_into("<H", buf, 0, word0)
    struct.pack_into("<HH", buf, 4, u16(capacity_ah), word3)


def modules(buf, snap, lim):
    """0x372: packs online, blocking charge, blocking discharge, offline.
    Blocking = all packs online when the policy disabled that direction."""
    n = snap.modules
    struct.pack_into("<HHHH", buf, 0, u16(n), 0 if lim.charge_enable else u16(n),
                     0 if lim.discharge_enable else u16(n), u16(snap.modules_offline))


def kelvin(dc):
    """0.1 degC -> K (+273.15), rounded half away from zero."""
    return u16(div_round(dc * 10 + 27315, 100))


def cells(buf, snap, tmp):
    """0x373: min / max cell mV, min / max battery temperature in K (273 K =
    0 degC without a battery sensor, matching 0x356). tmp: a preallocated
    array('h', 2)."""
    if not battery_temps(snap, tmp):
        tmp[0] = 0
        tmp[1] = 0
    struct.pack_into("<HHHH", buf, 0, u16(snap.cell_min_mv), u16(snap.cell_max_mv),
                     kelvin(tmp[0]), kelvin(tmp[1]))


def capacity(buf, ah):
    """0x379: installed capacity, u16 Ah."""
    struct.pack_into("<HHHH", buf, 0, u16(ah), 0, 0, 0)
