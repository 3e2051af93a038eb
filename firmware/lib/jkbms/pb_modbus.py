# JK-PB inverter BMS over RS485 Modbus RTU (docs/jk-bms.md "JK-PB").
#
# Two ways to read a pack:
# * FC10 "trigger" writes of 0x0000 to 0x1620 / 0x161E / 0x161C, answered by
#   a 300-byte JK02_32S 55AA frame followed by the normal FC10 ACK (with or
#   without 0x00 padding). The ACK names the responder, the 55AA frame does not.
# * FC03 reads of the register blocks 0x1200 / 0x1000 / 0x1400, <= 32
#   registers per request. JK registers are *byte* offsets: N registers return
#   2N bytes starting at that byte offset, so the next read starts at reg + 2N.
# Only the triggers are ever written (modbus.rtu refuses anything else).
#
# A source uses one of the two ways, so each has a module of its own, loaded
# on first use from here: TriggerReply is jkbms.pb_trigger, read_plan and
# BlockImage are jkbms.pb_blocks.

from compat import const
from jkbms import frame as J
from modbus import rtu

TRIGGER_STATUS = const(0x1620)    # -> frame type 0x02
TRIGGER_SETTINGS = const(0x161E)  # -> frame type 0x01
TRIGGER_ABOUT = const(0x161C)     # -> frame type 0x03
TRIGGER_TYPE = {TRIGGER_STATUS: J.TYPE_CELL_INFO, TRIGGER_SETTINGS: J.TYPE_SETTINGS,
                TRIGGER_ABOUT: J.TYPE_DEVICE_INFO}

STATUS_BASE = const(0x1200)
SETTINGS_BASE = const(0x1000)
ABOUT_BASE = const(0x1400)
MAX_REGS_PER_READ = const(32)

_ZERO = (0,)


def build_trigger(buf, slave, register):
    """11-byte FC10 trigger request; register must be one of the triggers."""
    if register not in TRIGGER_TYPE:
        raise ValueError("not a JK-PB trigger register")
    return rtu.build_write_multiple(buf, slave, register, _ZERO)


def frame_len_at(buf, pos, end):
    """codec.stream judge for a JK-PB bus: 55AA frames and RTU frames."""
    r = J.frame_len_at(buf, pos, end)
    if r != J.NONE:
        return r
    return rtu.frame_len_at(buf, pos, end)


def __getattr__(name):
    if name == "TriggerReply":
        from jkbms.pb_trigger import TriggerReply

        return TriggerReply
    if name == "BlockImage" or name == "read_plan":
        from jkbms import pb_blocks

        return getattr(pb_blocks, name)
    raise AttributeError(name)
