# RAM guard from the firmware's sources (the per-configuration budget on the
# ESP32's 32-bit object model, from the .mpy files, is host_tests/cpython/
# test_ram_budget.py / make ram): importing the gateway stack with the
# stock-firmware CAN backend and building the application must leave most of
# an ESP32-WROOM's ~110 KB MicroPython heap free. The unix port has 64-bit
# objects (about 1.6x the ESP32's sizes) and compiles the .py sources here, so
# its guard is looser; the figure is printed on every runtime.

import gc
import sys

from mpcompat import IS_MICROPYTHON, IS_WASM

# unix port, 64-bit objects, sources compiled on import (114.7 KB when set,
# with the charge controller; 101 KB before it; 118.8 KB with several packs,
# 120.1-120.4 KB with the protocols contract: the device figure, 0.7 KB more,
# is make ram's)
UNIX64_BUDGET = 124000

_FIRMWARE = ("app", "sources", "charge", "protocols", "outputs", "canport", "jkbms", "modbus", "pack", "codec",
             "board", "compat")


class _Uart:
    def write(self, b):
        return len(b)

    def readinto(self, b):
        return None


async def _heap_in_use():
    gc.collect()
    if IS_WASM:
        import asyncio

        await asyncio.sleep_ms(0)  # the webassembly port collects once control is back in JS
    return gc.mem_alloc() if IS_MICROPYTHON else 0


def _firmware_modules():
    return [name for name in sys.modules if name.split(".")[0] in _FIRMWARE]


async def test_gateway_stack_fits_the_esp32_heap():
    # measured from a fresh import; the modules the other tests hold come back
    # afterwards, so that their classes (DecodeError, ...) stay the same objects
    saved = {}
    for name in _firmware_modules():
        saved[name] = sys.modules.pop(name)
    try:
        await _measure()
    finally:
        for name in _firmware_modules():
            del sys.modules[name]
        sys.modules.update(saved)


async def _measure():
    import asyncio  # noqa: F401 - the runtime's, not the firmware's

    from can_soft import LoopbackPort
    from fakes import MemStore

    a0 = await _heap_in_use()
    # as firmware/main.py boots: the config read by app.boot, which unloads
    # itself, app.config and the schemas once it is done
    import app.boot
    import outputs.events

    cfg = app.boot.load_config(MemStore(), outputs.events.Events(lambda line: None))
    app.boot.unload("app.boot")
    import app.gateway
    import canport.base
    import canport.mcp2515  # noqa: F401 - the stock-firmware CAN backend

    can = LoopbackPort()
    gw = app.gateway.Gateway(cfg, _Uart(), can, canport.base.BusOffRecovery(can))
    used = await _heap_in_use() - a0
    print("gateway stack: %d bytes of heap (%s)" % (used, sys.platform))
    assert gw.source.snap is gw.tx.snap
    assert gw.tx.enc.ids  # the configured protocol's frame set
    if IS_MICROPYTHON and not IS_WASM:
        assert 0 < used < UNIX64_BUDGET, used
