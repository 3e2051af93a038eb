# JK02 / JK-PB settings (55AA frame type 0x01, Modbus block 0x1000): the BMS's
# own protection thresholds and current limits, which bound everything the
# gateway may ask of the inverter. spec/jk-bms-protocols.md 2.7 and 4.4.

from codec.errors import DecodeError
from jkbms import fields as F

# (name, block offset, kind); names follow fixtures/jk_frames.json
TABLE = (
    ("smart_sleep_v", 0, F.MV), ("cell_uvp_v", 4, F.MV), ("cell_uvpr_v", 8, F.MV),
    ("cell_ovp_v", 12, F.MV), ("cell_ovpr_v", 16, F.MV), ("balance_trigger_v", 20, F.MV),
    ("soc100_v", 24, F.MV), ("soc0_v", 28, F.MV), ("rcv_v", 32, F.MV), ("rfv_v", 36, F.MV),
    ("power_off_v", 40, F.MV), ("max_charge_current_a", 44, F.MA),
    ("charge_ocp_delay_s", 48, F.U32), ("charge_ocp_recovery_s", 52, F.U32),
    ("max_discharge_current_a", 56, F.MA), ("discharge_ocp_delay_s", 60, F.U32),
    ("discharge_ocp_recovery_s", 64, F.U32), ("scp_recovery_s", 68, F.U32),
    ("max_balance_current_a", 72, F.MA), ("charge_otp_c", 76, F.DC32), ("charge_otpr_c", 80, F.DC32),
    ("discharge_otp_c", 84, F.DC32), ("discharge_otpr_c", 88, F.DC32), ("charge_utp_c", 92, F.DC32),
    ("charge_utpr_c", 96, F.DC32), ("mos_otp_c", 100, F.DC32), ("mos_otpr_c", 104, F.DC32),
    ("cell_count", 108, F.U32), ("charge_switch", 112, F.BOOL32), ("discharge_switch", 116, F.BOOL32),
    ("balancer_switch", 120, F.BOOL32), ("nominal_capacity_ah", 124, F.MAH),
    ("scp_delay_us", 128, F.U32), ("balance_start_v", 132, F.MV),
    ("device_address", 264, F.U32), ("precharge_time_s", 268, F.U32),
    ("control_bitmask", 276, F.U16), ("heating_start_c", 278, F.I8), ("heating_stop_c", 279, F.I8),
    ("smart_sleep_h", 280, F.U8), ("discharge_utp_c", 290, F.I8), ("discharge_utpr_c", 291, F.I8),
)

BLOCK_BYTES = F.need(TABLE)


def describe(buf, base=6, be=False):
    """All settings as {name: value in V / A / Ah / degC / s}."""
    return F.decode_table(buf, base, TABLE, be)


def _u32(buf, o, be):
    return F.read_raw(buf, o, F.U32, be)


def decode(buf, snap, base=6, be=False):
    """Copy the limits the inverter side needs into snap (mV / mA / mAh),
    after checking they make sense; raises DecodeError otherwise."""
    if len(buf) < base + BLOCK_BYTES:
        raise DecodeError("settings block too short")
    uvp = _u32(buf, base + 4, be)
    uvpr = _u32(buf, base + 8, be)
    ovp = _u32(buf, base + 12, be)
    ovpr = _u32(buf, base + 16, be)
    cells = _u32(buf, base + 108, be)
    chg = _u32(buf, base + 44, be)
    dsg = _u32(buf, base + 56, be)
    rcv = _u32(buf, base + 32, be)
    rfv = _u32(buf, base + 36, be)
    if not 1 <= cells <= 32:
        raise DecodeError("implausible cell count in settings")
    if not 1000 <= uvp < ovp <= 5000 or ovpr > ovp or uvpr < uvp:
        raise DecodeError("implausible cell voltage thresholds")
    if rcv > ovp or rfv > ovp:
        raise DecodeError("charge voltage setting above OVP")
    if chg > 1000000 or dsg > 1000000:
        raise DecodeError("implausible current limit")
    snap.set_cell_count = cells
    snap.cell_uvp_mv = uvp
    snap.cell_uvpr_mv = uvpr
    snap.cell_ovp_mv = ovp
    snap.cell_ovpr_mv = ovpr
    snap.rcv_mv = rcv
    snap.rfv_mv = rfv
    snap.max_charge_ma = chg
    snap.max_discharge_ma = dsg
    snap.charge_switch = 1 if _u32(buf, base + 112, be) else 0
    snap.discharge_switch = 1 if _u32(buf, base + 116, be) else 0
    snap.design_mah = _u32(buf, base + 124, be)
    snap.settings_ok = 1
