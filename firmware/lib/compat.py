# The only interpreter shims in the firmware: MicroPython names with CPython
# stand-ins, so every module under lib/ runs unchanged on the ESP32, under the
# MicroPython unix / webassembly ports and under CPython (docs/design.md).
# CPython ticks wrap at 2**30 like the ESP32's, so wrap-around bugs show on
# the host too.

import sys

try:
    from micropython import const
except ImportError:
    def const(x):
        return x

try:
    from time import ticks_add, ticks_diff, ticks_ms
except ImportError:
    import time

    _PERIOD = 1 << 30
    _HALF = _PERIOD // 2

    def ticks_ms():
        return int(time.monotonic() * 1000) & (_PERIOD - 1)

    def ticks_add(t, delta):
        return (t + delta) & (_PERIOD - 1)

    def ticks_diff(a, b):
        return ((a - b + _HALF) & (_PERIOD - 1)) - _HALF

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
