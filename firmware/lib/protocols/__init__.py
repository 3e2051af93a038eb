# Inverter CAN protocols behind the protocols.base Encoder contract, loaded
# lazily by name: a configuration imports only its own protocol module.

# protocol name -> (module, class)
_REGISTRY = {"pylon": ("protocols.pylon", "PylonEncoder")}
NAMES = ("pylon",)


def load(name):
    """The encoder class registered under name (KeyError for an unknown one)."""
    import sys

    mod, cls = _REGISTRY[name]
    __import__(mod)
    return getattr(sys.modules[mod], cls)


def make(cfg):
    return load(cfg["protocol"])(cfg["battery_name"], cfg["modules"])
