# The port's standard frozen modules (asyncio, ...). The gateway's own code and
# aioble go into the ROMFS partition with `make deploy-romfs`, so they can be
# updated without rebuilding the firmware.
include("$(PORT_DIR)/boards/manifest.py")
