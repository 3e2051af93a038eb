# Config keys of sources/: key -> (default, kind, low, high or choices),
# documented in the README's configuration table. Imported by app.config
# only, and out of RAM again once the config is read.

from board import pins

SCHEMA = {
    # "uart+ble": the packs on the RS485 bus and one more over BLE
    "bms_transport": ("uart", "str", None, ("uart", "ble", "uart+ble")),
    "bms_protocol": ("jk-pb", "str", None, ("jk-pb", "jk-nw")),
    "bms_address": (1, "int", 1, 15),
    # several packs on one bus (docs/jk-bms.md "Several packs on one bus"):
    # [] = bms_address alone, a list of DIP addresses, or "scan" (probe 1..15
    # at boot); "listen": a pack at address 0 is the bus master, we only hear
    "bms_addresses": ([], "addrs", 0, 15),
    "bms_bus_role": ("master", "str", None, ("master", "listen")),
    "bms_gap_ms": (100, "int", 10, 1000),
    "bms_read": ("trigger", "str", None, ("trigger", "fc03")),
    "bms_uart": (pins.BMS_UART_ID, "int", 1, 2),
    "bms_rx": (pins.BMS_UART_RX, "int", 0, 39),
    "bms_tx": (pins.BMS_UART_TX, "int", 0, 33),
    "bms_baud": (115200, "int", 9600, 115200),
    "bms_poll_ms": (1000, "int", 200, 10000),
    "bms_reply_ms": (500, "int", 50, 3000),
    "bms_retries": (2, "int", 0, 5),
    "bms_settings_s": (300, "int", 10, 3600),
    "bms_timeout_s": (5, "int", 2, 60),
    # BLE (bms_transport "ble"): the BMS by MAC, else by advertised name
    "ble_mac": ("", "str", None, None),
    "ble_name": ("", "str", None, None),
    "ble_layout": ("auto", "str", None, ("auto", "JK02_24S", "JK02_32S", "JK04")),
}
