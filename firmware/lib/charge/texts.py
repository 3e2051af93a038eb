# The words for charge/'s codes: loaded by the console, the events of
# app.supervisor and the tools only, never in the control cycle (their text
# would cost RAM on the device for nothing; docs/design.md "RAM").

# charge.limits reason codes
REASONS = ("user maximum", "no live BMS data", "no BMS settings yet", "MOSFET off", "switched off in the BMS",
           "BMS alarm", "cell voltage at its limit", "BMS data stale", "implausible BMS data",
           "0.9 x BMS maximum", "outside the temperature window", "temperature derating", "cell voltage taper",
           "MOSFET temperature", "pack voltage protection", "pack at DVL", "hold after a block", "ramping up",
           "bulk voltage", "float voltage", "cells x (OVP - margin) / OVPR", "auto CVL (runner cell)",
           "ramped (not below the pack voltage)", "last valid value")

# charge.plausible codes
PLAUSIBLE = ("ok", "cell count disagrees with the BMS settings", "a cell voltage is outside the physical range",
             "pack voltage disagrees with the cell sum", "a temperature is outside the physical range",
             "no battery temperature sensor", "BMS settings are inconsistent", "battery capacity unknown",
             "current outside the physical range",
             "pack voltages of the parallel packs differ too much (a pack not connected?)")

# charge.battery: why a pack is (not) in the battery (Battery.why_of, R_*)
PACK_WHY = ("no complete data yet", "in the battery", "data stale", "waiting for live data and fresh settings",
            "cell count differs from the battery's (or from its own settings)")

# charge.state states and transition reasons
STATES = ("no data", "bulk", "absorption", "float")
WHY = ("start", "first valid BMS data", "pack reached the bulk voltage", "current tapered off (cut-off rule)",
       "absorption time limit", "discharging well below bulk", "highest cell at the re-bulk voltage",
       "SOC at the re-bulk SOC", "cell difference too large", "days since the last full charge",
       "force-charge request")
