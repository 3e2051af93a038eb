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
    bus = UartBus(uart, cfg["bms_reply_ms"], cfg["bms_retries"], cfg["bms_gap_ms"])
    return getattr(sys.modules[mod], cls)(bus, cfg, snap, log)


def several(cfg):
    """True when more than one pack is possible: the packs then go through
    the battery aggregate (charge.battery); a single pack's source is used
    as it is (docs/jk-bms.md "Several packs on one bus")."""
    a = cfg["bms_addresses"]
    return (cfg["bms_transport"] == "uart+ble" or cfg["bms_bus_role"] == "listen" or a == "scan"
            or (cfg["bms_transport"] == "uart" and len(a) > 1))
