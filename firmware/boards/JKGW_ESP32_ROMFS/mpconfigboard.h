// JK-BMS -> inverter CAN gateway: ESP32-DevKitC (WROOM-32) as ESP32_GENERIC,
// plus a ROMFS partition, so the gateway's .mpy files (and aioble) run from
// flash instead of being copied into the heap: `make ram` measures about 40 KB
// less heap, which BLE needs (README "BLE"). Deploy with `make deploy-romfs`.
// Stock MicroPython >= 1.25 (ROMFS support); not built in our CI (no ESP-IDF).
#define MICROPY_HW_BOARD_NAME               "JK-BMS CAN gateway (ESP32, ROMFS)"
#define MICROPY_HW_MCU_NAME                 "ESP32"

#define MICROPY_VFS_ROM                     (1)
