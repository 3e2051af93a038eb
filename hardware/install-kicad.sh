#!/usr/bin/env bash
# Install KiCad 9 (kicad-cli + pcbnew Python module) from Debian bookworm-backports
# when kicad-cli is missing or older than 9. Non-interactive; needs root (or sudo).
#
# The backports apt source is DERIVED from the machine's existing Debian source entry
# (same mirror URI and Signed-By, suite replaced by bookworm-backports), so no mirror
# host name is written here. See shared/spec/hardware-notes.md section 1.6.
set -euo pipefail

want_major=9

have_kicad9() {
    command -v kicad-cli >/dev/null 2>&1 || return 1
    local v
    v=$(kicad-cli version 2>/dev/null | head -n1 | sed -E 's/[^0-9]*([0-9]+).*/\1/')
    [ -n "$v" ] && [ "$v" -ge "$want_major" ]
}

setup_user_tables() {
    # A fresh account has no global sym-lib-table / fp-lib-table: ERC would then
    # report one lib_symbol_issues warning per symbol.
    local d="${HOME:-/root}/.config/kicad/9.0"
    mkdir -p "$d"
    for t in sym-lib-table fp-lib-table; do
        [ -e "$d/$t" ] || cp /usr/share/kicad/template/$t "$d/$t"
    done
}

have_venv() {
    /usr/bin/python3 -c "import ensurepip, venv" >/dev/null 2>&1
}

if have_kicad9 && have_venv; then
    echo "install-kicad: kicad-cli $(kicad-cli version | head -n1) already installed"
    setup_user_tables
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

. /etc/os-release
if [ "${VERSION_CODENAME:-}" != "bookworm" ]; then
    echo "install-kicad: this script targets Debian 12 (bookworm), found '${VERSION_CODENAME:-unknown}'" >&2
    echo "install-kicad: install KiCad >= 9 with your distribution's tools and re-run" >&2
    exit 1
fi

if ! grep -rqsE 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null; then
    if [ -f /etc/apt/sources.list.d/debian.sources ]; then
        # deb822: keep the non-security stanza(s), drop comments, switch the suite.
        awk -v RS= -v ORS='\n\n' '!/-security/' /etc/apt/sources.list.d/debian.sources \
            | sed -E -e '/^#/d' -e 's/^Suites:.*/Suites: bookworm-backports/' \
            | $SUDO tee /etc/apt/sources.list.d/bookworm-backports.sources >/dev/null
    elif [ -f /etc/apt/sources.list ]; then
        # one-line format
        grep -E '^deb [^ ]+ bookworm( |$)' /etc/apt/sources.list \
            | sed -E 's/ bookworm( |$)/ bookworm-backports\1/' \
            | $SUDO tee /etc/apt/sources.list.d/bookworm-backports.list >/dev/null
    else
        echo "install-kicad: no Debian apt source found to derive bookworm-backports from" >&2
        exit 1
    fi
    echo "install-kicad: added bookworm-backports source derived from the existing Debian entry"
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
# kicad-packages3d is deliberately not installed (several GB); the STEP export then
# holds the bare board, which is enough for the enclosure fit check.
$SUDO apt-get install -y --no-install-recommends -t bookworm-backports \
    kicad kicad-symbols kicad-footprints python3-venv

if ! have_kicad9; then
    echo "install-kicad: kicad-cli >= $want_major still not available" >&2
    exit 1
fi
setup_user_tables
echo "install-kicad: $(kicad-cli version | head -n1) installed"
