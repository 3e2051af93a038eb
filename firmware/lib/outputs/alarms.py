# The JK-BMS's alarm bit names, shared by the console and the network
# outputs (net.telemetry): one table, so the words on the serial console,
# in MQTT and on the web page are the same (docs/jk-bms.md "Alarm bits").

# JK02 alarm bit names, bit 0 first
ALARM_NAMES = (
    "wire resistance", "MOSFET over-temp", "cell count", "current sensor", "cell OVP", "pack OVP",
    "charge OCP", "charge SCP", "charge OTP", "charge UTP", "internal comms", "cell UVP", "pack UVP",
    "discharge OCP", "discharge SCP", "discharge OTP", "charge MOSFET", "discharge MOSFET",
    "GPS disconnected", "change password", "discharge on failed", "battery over-temp",
    "temperature sensor", "PCL module",
)


def alarm_names(bits):
    """The names of the bits set, then the unknown bits above the table as one 'bits 0x..'."""
    names = []
    n = len(ALARM_NAMES)
    for i in range(n):
        if bits & (1 << i):
            names.append(ALARM_NAMES[i])
    if bits >> n:
        names.append("bits 0x%x" % (bits >> n << n))
    return names


def alarm_text(bits):
    names = alarm_names(bits)
    return ", ".join(names) if names else "none"
