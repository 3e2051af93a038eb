# Default ESP32 (DevKitC V4, WROOM-32) pin plan of the gateway PCB.
# Single source of truth: the firmware's default configuration and the PCB
# design-rule tests (hardware/) both read these numbers, so the board and the
# firmware cannot drift apart. Plain ints (not const) so host tools can read
# them by name. Rationale per pin: hardware/README.md "ESP32 pins".

BMS_UART_ID = 2
BMS_UART_RX = 16  # <- BMS TX (GPS port pin 3)
BMS_UART_TX = 17  # -> BMS RX (GPS port pin 2)

CAN_TWAI_TX = 23  # -> transceiver TXD (solder jumper "TWAI")
CAN_TWAI_RX = 22  # <- transceiver RXD through the 5 V -> 3.3 V divider

MCP2515_SCK = 18
MCP2515_MISO = 19
MCP2515_MOSI = 13
MCP2515_CS = 4
MCP2515_INT = 27
MCP2515_XTAL_HZ = 8000000

STATUS_LED = 26  # not a strapping pin, unlike the DevKit's own LED on GPIO2

# name -> GPIO, for tools and tests (never iterated in firmware hot paths;
# dict order differs between CPython and MicroPython, so sort when listing).
ALL = {
    "BMS_UART_RX": BMS_UART_RX,
    "BMS_UART_TX": BMS_UART_TX,
    "CAN_TWAI_TX": CAN_TWAI_TX,
    "CAN_TWAI_RX": CAN_TWAI_RX,
    "MCP2515_SCK": MCP2515_SCK,
    "MCP2515_MISO": MCP2515_MISO,
    "MCP2515_MOSI": MCP2515_MOSI,
    "MCP2515_CS": MCP2515_CS,
    "MCP2515_INT": MCP2515_INT,
    "STATUS_LED": STATUS_LED,
}
