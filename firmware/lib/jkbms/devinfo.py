# JK device-info ("about") data: 55AA frame type 0x03 and JK-PB Modbus block
# 0x1400. Text fields and counters for the console and tools; the software
# version also tells the JK02 layout (sw major >= 11 -> JK02_32S;
# docs/jk-bms.md "55AA frames").

from jkbms import fields as F
from jkbms.frame import version_layout

TABLE = (
    ("model", 0, "text16"), ("hw_version", 16, "text8"), ("sw_version", 24, "text8"),
    ("uptime_s", 32, F.U32), ("power_on_count", 36, F.U32), ("device_name", 40, "text16"),
    ("device_passcode", 56, "text16"), ("manufacturing_date", 72, "text8"),
    ("serial_number", 80, "text11"), ("passcode", 91, "text5"), ("user_data", 96, "text16"),
    ("setup_passcode", 112, "text16"), ("user_data2", 128, "text16"),
    ("uart1_protocol", 178, F.U8), ("can_protocol", 179, F.U8), ("uart2_protocol", 212, F.U8),
    ("rcv_time_h", 260, F.DH8), ("rfv_time_h", 261, F.DH8),
)

BLOCK_BYTES = F.need(TABLE)


def describe(buf, base=6, be=False):
    return F.decode_table(buf, base, TABLE, be)


def layout_from_version(sw_version):
    """JK02 layout implied by a software version text such as '11.48'."""
    b = sw_version.encode()
    return version_layout(b, 0, len(b))
