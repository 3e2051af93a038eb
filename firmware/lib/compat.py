# The only interpreter shims in the firmware: MicroPython names with CPython
# stand-ins, so every module under lib/ runs unchanged on the ESP32, under the
# MicroPython unix / webassembly ports and under CPython (docs/design.md).
# Ticks wrap at 2**30 on every runtime, as on the ESP32, so wrap-around bugs
# show on the host too.

import sys

try:
    from micropython import const
except ImportError:
    def const(x):
        return x

_PERIOD = 1 << 30
_MASK = _PERIOD - 1
_HALF = _PERIOD // 2

try:
    import time as _time

    _NATIVE = _time.ticks_add(0, -1) == _MASK  # ESP32, webassembly: 2**30
except AttributeError:  # CPython
    import time as _time

    _NATIVE = False

if _NATIVE:
    from time import ticks_add, ticks_diff, ticks_ms
else:
    # CPython, and the unix port (its ticks wrap at 2**62): the ESP32's 2**30
    # period everywhere, so every runtime sees the same wrap-around
    if hasattr(_time, "ticks_ms"):
        def ticks_ms():
            return _time.ticks_ms() & _MASK
    else:
        def ticks_ms():
            return int(_time.monotonic() * 1000) & _MASK

    def ticks_add(t, delta):
        return (t + delta) & _MASK

    def ticks_diff(a, b):
        return ((a - b + _HALF) & _MASK) - _HALF

try:
    from asyncio import sleep_ms
except ImportError:
    import asyncio

    async def sleep_ms(ms):
        await asyncio.sleep(ms / 1000)


def print_exception(e):
    if hasattr(sys, "print_exception"):
        sys.print_exception(e)
    else:  # CPython
        import traceback
        traceback.print_exception(type(e), e, e.__traceback__)
