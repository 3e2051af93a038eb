# JK02 / JK-PB settings (55AA frame type 0x01, Modbus block 0x1000): the BMS's
# own protection thresholds and current limits, which bound everything the
# gateway may ask of the inverter (docs/charge-control.md "Limits from the BMS").
#
# Only decode() is here, what the gateway runs. The table of every settings
# field by name, describe(), is jkbms.settings_fields (tools and the console):
# a device never loads it. TABLE and describe stay reachable from this module
# for the tools (module __getattr__, loaded on first use).

from codec.binary import u32be, u32le
from codec.errors import DecodeError
from compat import const

BLOCK_BYTES = const(292)  # the block settings_fields.TABLE covers (it checks)


def decode(buf, snap, base=6, be=False):
    """Copy the limits the inverter side needs into snap (mV / mA / mAh),
    after checking they make sense; raises DecodeError otherwise."""
    if len(buf) < base + BLOCK_BYTES:
        raise DecodeError("settings block too short")
    r = u32be if be else u32le
    uvp = r(buf, base + 4)
    uvpr = r(buf, base + 8)
    ovp = r(buf, base + 12)
    ovpr = r(buf, base + 16)
    cells = r(buf, base + 108)
    chg = r(buf, base + 44)
    dsg = r(buf, base + 56)
    rcv = r(buf, base + 32)
    rfv = r(buf, base + 36)
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
    snap.charge_switch = 1 if r(buf, base + 112) else 0
    snap.discharge_switch = 1 if r(buf, base + 116) else 0
    snap.design_mah = r(buf, base + 124)
    snap.settings_ok = 1


def __getattr__(name):
    if name == "TABLE" or name == "describe":
        from jkbms import settings_fields

        return getattr(settings_fields, name)
    raise AttributeError(name)
