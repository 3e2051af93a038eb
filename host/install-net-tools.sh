#!/usr/bin/env bash
# The real parts the network-output tests start themselves (docs/network.md "Tests"): the
# mosquitto broker, InfluxDB 1.x (its UDP input) and headless Chromium, from Debian's packages,
# installed when missing. Non-interactive; needs root (or sudo). The packages' own services are
# not used: each test starts its instance on free loopback ports with a config of its own.
set -euo pipefail

missing=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || missing+=(mosquitto)
command -v influxd >/dev/null 2>&1 || missing+=(influxdb)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
# a font for the page's text in the screenshots
[ -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || missing+=(fonts-dejavu-core)

if [ ${#missing[@]} -eq 0 ]; then
    echo "install-net-tools: mosquitto, influxd and chromium already installed"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
# policy-rc.d 101: the packages' services are not started by their install scripts
# (the tests run their own instances)
rc=/usr/sbin/policy-rc.d
made_rc=0
if [ ! -e "$rc" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$rc" >/dev/null && $SUDO chmod +x "$rc" && made_rc=1
fi
$SUDO apt-get update -qq || true
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
[ "$made_rc" = 1 ] && $SUDO rm -f "$rc"
echo "install-net-tools: installed ${missing[*]}"
