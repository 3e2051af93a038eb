# Every field of the JK02 / JK-PB settings block (55AA frame type 0x01, Modbus
# block 0x1000) by name, for tools and the console: the gateway itself only
# needs jkbms.settings.decode() (docs/jk-bms.md "55AA frames").

from jkbms import fields as F
from jkbms.settings import BLOCK_BYTES

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

if F.need(TABLE) != BLOCK_BYTES:
    raise ImportError("jkbms.settings.BLOCK_BYTES does not match the settings table")


def describe(buf, base=6, be=False):
    """All settings as {name: value in V / A / Ah / degC / s}."""
    return F.decode_table(buf, base, TABLE, be)
