# BMS sources (docs/design.md "Sources"): the contract is sources.base; a
# configuration imports only the modules its bms_protocol needs.

# bms_protocol -> (module, class)
_KINDS = {"jk-pb": ("sources.jk_pb", "JkPbSource"), "jk-nw": ("sources.jk_4e57", "Jk4e57Source")}


def make(cfg, uart, snap, log):
    """The configured source (on the BMS UART, or over BLE: then uart is not
    used); imports only its modules."""
    import sys

    if cfg["bms_transport"] == "ble":
        from sources.jk_ble import JkBleSource
        return JkBleSource(cfg, snap, log)
    from sources.uart_bus import UartBus

    mod, cls = _KINDS[cfg["bms_protocol"]]
    __import__(mod)
    bus = UartBus(uart, cfg["bms_reply_ms"], cfg["bms_retries"])
    return getattr(sys.modules[mod], cls)(bus, cfg, snap, log)
