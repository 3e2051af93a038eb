# machine.unique_id() for the host (README.md beside this file): mqtt_as imports it at import time
# and net.hub names the device by it. This file on sys.path shadows the unix port's built-in
# machine (an extensible built-in: a file of its name is found first); the built-in's names are kept
# through its alias umachine, so nothing that uses them changes.
try:
    from umachine import *  # noqa: F403 - the unix port's own machine (idle, mem8, ...)
except ImportError:  # CPython, webassembly
    pass

UID = b"\x24\x0a\xc4\x12\x34\x56"  # = network.MAC of the stub: device id 240ac4123456


def unique_id():
    return UID
