# Config keys of protocols/ (format: sources.schema). Imported by app.config
# only, and out of RAM again once the config is read.

from protocols import NAMES

SCHEMA = {
    "protocol": ("pylon", "str", None, NAMES),
    "battery_name": ("PYLON", "str", None, None),
    "modules": (1, "int", 1, 32),
}
