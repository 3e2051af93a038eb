# MicroPython's wrapping millisecond ticks, with a CPython stand-in so the
# gateway logic runs unchanged in host tests. ticks wrap at 2**30, like the
# ESP32's, so wrap-around bugs show up on the host too.

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
