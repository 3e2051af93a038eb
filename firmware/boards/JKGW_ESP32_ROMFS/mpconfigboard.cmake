# Same base as ESP32_GENERIC (WROOM-32, 4 MB flash, BLE), with a
# 4 MiB partition table of its own: the port's layout, a 256 KB "romfs" partition (sdkconfig.board).
set(IDF_TARGET esp32)

set(SDKCONFIG_DEFAULTS
    boards/sdkconfig.base
    boards/sdkconfig.ble
    ${MICROPY_BOARD_DIR}/sdkconfig.board
)

set(MICROPY_FROZEN_MANIFEST ${MICROPY_BOARD_DIR}/manifest.py)
