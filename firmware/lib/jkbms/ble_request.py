# The 20-byte "AA 55 90 EB" requests a host sends a JK-BMS over BLE
# (docs/jk-bms.md "55AA frames"): read requests only.

from codec.binary import sum8
from compat import const
from jkbms.frame import COMMAND_HEADER

CMD_DEVICE_INFO = const(0x97)
CMD_CELL_INFO = const(0x96)
CMD_LOGBOOK = const(0xA1)


def build_command(buf, cmd):
    """20-byte BLE request (0x97 device info, 0x96 cell info, 0xA1 logbook).
    Only these read requests exist here: the gateway never writes settings."""
    if cmd != CMD_DEVICE_INFO and cmd != CMD_CELL_INFO and cmd != CMD_LOGBOOK:
        raise ValueError("only read requests are built")
    for i in range(4):
        buf[i] = COMMAND_HEADER[i]
    buf[4] = cmd
    for i in range(5, 19):
        buf[i] = 0
    buf[19] = sum8(buf, 0, 19)
    return 20
