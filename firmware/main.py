# ESP32 entry point: builds the hardware adapters from the configuration and
# runs the gateway (firmware/lib/app). Nothing here decides anything: a
# missing CAN controller, a bad config or a silent BMS are all reported on
# the console while the rest keeps running.
#
# Safe boot: with a file named "safeboot" on the flash the gateway does not
# start (no watchdog, REPL free), so `make deploy` can copy files without the
# watchdog resetting the board mid-copy; deploy removes the flag at the end.
# The flag is checked before the library is imported, so a half-copied lib/
# cannot get in its way (docs/design.md "Supervision").
import os
import sys
import time

SAFE_BOOT = "safeboot"


def safe_boot():
    try:
        os.stat(SAFE_BOOT)
    except OSError:
        return False
    print("safe boot: gateway not started, no watchdog (remove the file 'safeboot' and reset "
          "to run it; make deploy does both)")
    return True


def build_can(cfg):
    import machine

    from board import pins
    if cfg["can_backend"] == "twai":
        from canport.machine_can import MachineCanPort
        return MachineCanPort(1, cfg["can_bitrate"])
    from canport.mcp2515 import MCP2515
    spi = machine.SPI(2, baudrate=8000000, sck=machine.Pin(pins.MCP2515_SCK),
                      mosi=machine.Pin(pins.MCP2515_MOSI), miso=machine.Pin(pins.MCP2515_MISO))
    cs = machine.Pin(pins.MCP2515_CS, machine.Pin.OUT, value=1)
    return MCP2515(spi, cs, cfg["can_bitrate"], cfg["mcp2515_xtal_hz"])


def main():
    import asyncio

    import machine

    from app import boot
    from app import gateway as A
    from app.storage import FileStore
    from canport import base as canbase
    from canport.nocan import NoCan
    from outputs import events as E

    store = FileStore("")
    events = E.Events()
    cfg = boot.load_config(store, events)
    uart = None  # over BLE (sources.jk_ble) the UART pins stay free
    if cfg["bms_transport"] != "ble":
        uart = machine.UART(cfg["bms_uart"], cfg["bms_baud"], tx=cfg["bms_tx"], rx=cfg["bms_rx"],
                            timeout=0, timeout_char=0, rxbuf=1024, txbuf=256)
    can = NoCan(lambda: build_can(cfg))
    boot.bring_up_can(can, cfg, events)
    boot.unload("app.boot")  # its job is done: out of RAM
    del boot
    recovery = canbase.BusOffRecovery(can)
    wdt = machine.WDT(timeout=cfg["wdt_ms"])
    console = A.make_stdin_console()
    gw = A.Gateway(cfg, uart, can, recovery, wdt, store, console, events=events)
    asyncio.run(gw.run())


if not safe_boot():
    try:
        main()
    except KeyboardInterrupt:
        print("gateway stopped (Ctrl-C): REPL")
    except Exception as e:  # noqa: BLE001
        # Last resort, should never happen: every task is supervised. Wait, so
        # a persistent fault (e.g. a broken lib/) cannot turn into a fast
        # reboot loop, then reset.
        sys.print_exception(e)
        print("gateway: fatal error, reset in 10 s (Ctrl-C for the REPL)")
        time.sleep(10)
        import machine
        machine.reset()
