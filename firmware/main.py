# ESP32 entry point: builds the hardware adapters from the configuration and
# runs the gateway application (firmware/lib/gateway). Nothing here decides
# anything: a missing CAN controller, a bad config or a silent BMS are all
# reported on the console while the rest keeps running.
import sys
import time

import machine

try:
    import asyncio
except ImportError:  # MicroPython before 1.21
    import uasyncio as asyncio

from board import pins
from canport import base as canbase
from gateway import app as A
from gateway.storage import FileStore


class NoCan:
    """Stands in when no CAN controller could be brought up: the BMS side
    and the console keep working, BusOffRecovery keeps trying restart()."""

    tx_queue_len = 0

    def __init__(self, build):
        self._build = build
        self.port = None

    def send(self, can_id, data, flags=0):
        if self.port is None:
            raise OSError(canbase.ENODEV)
        return self.port.send(can_id, data, flags)

    def recv(self, arg=None):
        return None if self.port is None else self.port.recv(arg)

    def state(self):
        return canbase.STATE_STOPPED if self.port is None else self.port.state()

    def restart(self):
        if self.port is None:
            self.port = self._build()  # raises OSError while still absent
        else:
            self.port.restart()

    def set_filters(self, filters):
        if self.port is not None:
            self.port.set_filters(filters)

    def get_counters(self, lst=None):
        if self.port is None:
            return [0, 0, 0, 0, 0, 0, 0, 0]
        return self.port.get_counters(lst)

    def deinit(self):
        if self.port is not None:
            self.port.deinit()


def build_can(cfg):
    if cfg["can_backend"] == "twai":
        from canport.machine_can import MachineCanPort
        return MachineCanPort(1, cfg["can_bitrate"])
    from canport.mcp2515 import MCP2515
    spi = machine.SPI(2, baudrate=8000000, sck=machine.Pin(pins.MCP2515_SCK),
                      mosi=machine.Pin(pins.MCP2515_MOSI), miso=machine.Pin(pins.MCP2515_MISO))
    cs = machine.Pin(pins.MCP2515_CS, machine.Pin.OUT, value=1)
    return MCP2515(spi, cs, cfg["can_bitrate"], cfg["mcp2515_xtal_hz"])


def main():
    store = FileStore("")
    cfg = A.load_config(store)
    uart = machine.UART(cfg["bms_uart"], cfg["bms_baud"], tx=cfg["bms_tx"], rx=cfg["bms_rx"],
                        timeout=0, timeout_char=0, rxbuf=1024, txbuf=256)
    can = NoCan(lambda: build_can(cfg))
    try:
        can.restart()
    except Exception as e:  # noqa: BLE001 - a missing controller must not stop the gateway
        print("CAN: no %s controller (%r); BMS and console keep running, retrying" % (cfg["can_backend"], e))
    recovery = canbase.BusOffRecovery(can)
    wdt = machine.WDT(timeout=cfg["wdt_ms"])
    console = A.make_stdin_console()
    gw = A.Gateway(cfg, uart, can, recovery, wdt, store, console)
    asyncio.run(gw.run())


try:
    main()
except KeyboardInterrupt:
    print("gateway stopped (Ctrl-C): REPL")
except Exception as e:  # noqa: BLE001
    # Last resort, should never happen: every task is supervised. Wait, so a
    # persistent fault cannot turn into a fast reboot loop, then reset.
    sys.print_exception(e)
    print("gateway: fatal error, reset in 10 s")
    time.sleep(10)
    machine.reset()
