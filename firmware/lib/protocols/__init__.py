# Inverter CAN protocols behind the protocols.base Encoder contract, loaded
# lazily by name: protocol NAME is module protocols.NAME, whose ENCODER is
# its class; a configuration imports only its own protocol module
# (docs/inverter-can.md lists which inverter wants which).

NAMES = ("pylon", "pylon_plus", "growatt", "sma", "victron", "luxpower", "deye")


def load(name):
    """The encoder class of protocol name (KeyError for an unknown one)."""
    import sys

    if name not in NAMES:
        raise KeyError(name)
    mod = "protocols." + name
    __import__(mod)
    return sys.modules[mod].ENCODER


def make(cfg):
    return load(cfg["protocol"]).from_config(cfg)
