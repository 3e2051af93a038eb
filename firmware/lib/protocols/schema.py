# Config keys of protocols/ (format: sources.schema). Imported by app.config
# only, and out of RAM again once the config is read.

from protocols import NAMES

SCHEMA = {
    "protocol": ("pylon", "str", None, NAMES),
    # "": the protocol's own default (protocols.base Encoder.NAME)
    "battery_name": ("", "str", None, None),
    # 0: the number of packs online (1 for a single pack)
    "modules": (0, "int", 0, 32),
}
