# The port's standard frozen modules (asyncio, ...). The gateway's own code is
# deployed as .mpy files with `make deploy`, so it can be updated without
# rebuilding the firmware.
include("$(PORT_DIR)/boards/manifest.py")
