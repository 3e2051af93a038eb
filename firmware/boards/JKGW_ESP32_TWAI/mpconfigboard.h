// JK-BMS -> inverter CAN gateway: ESP32-DevKitC (WROOM-32) with machine.CAN on
// the TWAI controller. Needs a MicroPython tree with PR micropython#19461
// ("ESP32: machine.CAN implementation"), which makes CAN opt-in per board and
// takes the pins at build time. Pins: firmware/lib/board/pins.py.
#define MICROPY_HW_BOARD_NAME               "JK-BMS CAN gateway (ESP32 TWAI)"
#define MICROPY_HW_MCU_NAME                 "ESP32"

#define MICROPY_HW_ENABLE_CAN               (1)
#define MICROPY_HW_CAN1_TX                  (23)
#define MICROPY_HW_CAN1_RX                  (22)
