# Test-time environment for the network outputs (README.md here): the stub `network` and
# `machine` modules of this folder, and the real, unmodified mqtt_as.
#
#   from fakenet import env
#   why = env.setup()        # None when mqtt_as is there too, else why it is not (MQTT tests skip)
#   import network           # host/fakenet/network.py (always, whatever setup() returned)
#   import mqtt_as           # when setup() returned None
#
# setup() puts host/fakenet at the front of sys.path, and the folder holding mqtt_as/
# (../shared/vendor/micropython-mqtt beside the repository; the environment variable
# JKGW_MQTT_AS_PATH overrides it: that folder, or mqtt_as/ itself) before it when it is there.
import sys

# the path helpers of the BLE environment: the same jobs (no os.path on MicroPython)
from fakeble.env import _dirname, _exists, _front, _getenv, _normalise

_state = [False, None]  # done, reason

HERE = _normalise(_dirname(__file__.replace("\\", "/")))  # .../host/fakenet
ROOT = _dirname(_dirname(HERE))  # the repository


def vendor_path():
    """The folder that holds mqtt_as/: JKGW_MQTT_AS_PATH, else the pinned copy beside the
    repository (../shared/vendor/micropython-mqtt)."""
    p = _getenv("JKGW_MQTT_AS_PATH")
    if p:
        p = _normalise(p.replace("\\", "/").rstrip("/"))
        if p.endswith("/mqtt_as"):
            p = _dirname(p)
        return p
    return _dirname(ROOT) + "/shared/vendor/micropython-mqtt"


def missing():
    """Why mqtt_as cannot be imported from vendor_path(), or None; changes nothing."""
    vendor = vendor_path()
    if _exists(vendor + "/mqtt_as/__init__.py"):
        return None
    return ("mqtt_as not found at %s (set JKGW_MQTT_AS_PATH to the folder holding mqtt_as/; on the device: "
            "mpremote mip install github:peterhinch/micropython-mqtt)" % vendor)


def setup():
    """Put the stub network / machine modules (and mqtt_as when found) first on sys.path.

    Returns None when mqtt_as is there too, else a string saying why it is not."""
    if _state[0]:
        return _state[1]
    _state[0] = True
    why = missing()
    _front(HERE)
    if why is None:
        _front(vendor_path())
    for name in ("machine", "network"):
        m = sys.modules.get(name)
        if m is not None and not hasattr(m, "unique_id" if name == "machine" else "link"):
            del sys.modules[name]  # imported before setup() (the built-in machine): ours from now on
    _state[1] = why
    return why


def reason():
    """Why mqtt_as is unavailable (None when it is); runs setup() if it has not run."""
    return setup()
