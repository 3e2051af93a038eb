# Config keys of canport/ (format: sources.schema). Imported by app.config
# only, and out of RAM again once the config is read.

from board import pins

SCHEMA = {
    "can_backend": ("mcp2515", "str", None, ("twai", "mcp2515")),
    "can_bitrate": (500000, "int", 125000, 1000000),
    "can_period_ms": (1000, "int", 200, 5000),
    "mcp2515_xtal_hz": (pins.MCP2515_XTAL_HZ, "int", 8000000, 16000000),
    # 0: the protocol's own (protocols.base Encoder.SILENT_S); else 3..600
    "inverter_timeout_s": (0, "int", 0, 600),
}
