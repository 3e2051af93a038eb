# JK02 / JK-PB settings (55AA frame type 0x01, Modbus block 0x1000): the BMS's
# own protection thresholds and current limits, which bound everything the
# gateway may ask of the inverter (docs/charge-control.md "Limits from the BMS").
#
# Only decode() is here, what the gateway runs. The table of every settings
# field by name, describe(), is jkbms.settings_fields (tools and the console):
# a device never loads it. TABLE and describe stay reachable from this module
# for the tools (module __getattr__, loaded on first use).

from codec.binary import i32be, i32le, u32be, u32le
from codec.errors import DecodeError
from compat import const
from pack import snapshot as S

BLOCK_BYTES = const(292)  # the block settings_fields.TABLE covers (it checks)

# Plausible temperature thresholds, 0.1 degC (docs/jk-bms.md "Settings frames")
_OTP_MIN = const(-400)
_OTP_MAX = const(1200)
_UTP_MIN = const(-600)
_UTP_MAX = const(600)


def _otp(v, why):
    if not v:
        return S.NO_TEMP
    if not _OTP_MIN <= v <= _OTP_MAX:
        raise DecodeError(why)
    return v


def decode(buf, snap, base=6, be=False):
    """Copy the limits the inverter side needs into snap (mV / mA / mAh /
    0.1 degC), after checking they make sense; raises DecodeError otherwise
    (snap untouched). Allocation-free for an accepted block."""
    if len(buf) < base + BLOCK_BYTES:
        raise DecodeError("settings block too short")
    r = u32be if be else u32le
    t = i32be if be else i32le
    uvp = r(buf, base + 4)
    uvpr = r(buf, base + 8)
    ovp = r(buf, base + 12)
    ovpr = r(buf, base + 16)
    cells = r(buf, base + 108)
    chg = r(buf, base + 44)
    dsg = r(buf, base + 56)
    rcv = r(buf, base + 32)
    rfv = r(buf, base + 36)
    chg_otp = t(buf, base + 76)
    dsg_otp = t(buf, base + 84)
    chg_utp = t(buf, base + 92)
    mos_otp = t(buf, base + 100)
    # discharge UTP / recovery: i8 whole degC, single bytes (same position in
    # the 55AA frame and the big-endian register image)
    dsg_utp = buf[base + 290]
    dsg_utpr = buf[base + 291]
    if not 1 <= cells <= 32:
        raise DecodeError("implausible cell count in settings")
    if not 1000 <= uvp < ovp <= 5000 or ovpr > ovp or uvpr < uvp:
        raise DecodeError("implausible cell voltage thresholds")
    if rcv > ovp or rfv > ovp:
        raise DecodeError("charge voltage setting above OVP")
    if chg > 1000000 or dsg > 1000000:
        raise DecodeError("implausible current limit")
    # 0 = not reported (docs/jk-bms.md "Settings frames"): an OTP of 0 degC is
    # no setting, a 0 degC charge UTP only together with a 0 charge OTP, and a
    # discharge UTP only with its recovery 0 too (every real capture)
    if not chg_otp and not chg_utp:
        chg_utp = S.NO_TEMP
    chg_otp = _otp(chg_otp, "implausible charge OTP in settings")
    dsg_otp = _otp(dsg_otp, "implausible discharge OTP in settings")
    mos_otp = _otp(mos_otp, "implausible MOSFET OTP in settings")
    if chg_utp != S.NO_TEMP and (not _UTP_MIN <= chg_utp <= _UTP_MAX
                                 or (chg_otp != S.NO_TEMP and chg_utp >= chg_otp)):
        raise DecodeError("implausible charge UTP in settings")
    if dsg_utp or dsg_utpr:
        dsg_utp = (dsg_utp - 256 if dsg_utp & 0x80 else dsg_utp) * 10
        if not _UTP_MIN <= dsg_utp <= _UTP_MAX or (dsg_otp != S.NO_TEMP and dsg_utp >= dsg_otp):
            raise DecodeError("implausible discharge UTP in settings")
    else:
        dsg_utp = S.NO_TEMP
    snap.set_cell_count = cells
    snap.cell_uvp_mv = uvp
    snap.cell_uvpr_mv = uvpr
    snap.cell_ovp_mv = ovp
    snap.cell_ovpr_mv = ovpr
    snap.rcv_mv = rcv
    snap.rfv_mv = rfv
    snap.max_charge_ma = chg
    snap.max_discharge_ma = dsg
    snap.charge_switch = 1 if r(buf, base + 112) else 0
    snap.discharge_switch = 1 if r(buf, base + 116) else 0
    snap.design_mah = r(buf, base + 124)
    snap.charge_otp_dc = chg_otp
    snap.charge_utp_dc = chg_utp
    snap.discharge_otp_dc = dsg_otp
    snap.discharge_utp_dc = dsg_utp
    snap.mos_otp_dc = mos_otp
    snap.settings_ok = 1


def __getattr__(name):
    if name == "TABLE" or name == "describe":
        from jkbms import settings_fields

        return getattr(settings_fields, name)
    raise AttributeError(name)
