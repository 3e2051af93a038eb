# Config keys of canport/ (format: sources.schema). Imported by app.config
# only, and out of RAM again once the config is read.

from board import pins

SCHEMA = {
    "can_backend": ("mcp2515", "str", None, ("twai", "mcp2515")),
    "can_bitrate": (500000, "int", 125000, 1000000),
    "can_period_ms": (1000, "int", 200, 5000),
    "mcp2515_xtal_hz": (pins.MCP2515_XTAL_HZ, "int", 8000000, 16000000),
    "inverter_timeout_s": (10, "int", 3, 600),
}
