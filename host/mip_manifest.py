#!/usr/bin/env python3
"""Print firmware/package.json, the manifest micropython's mip reads, so that

    mpremote mip install github:<owner>/<repo>/firmware

installs the firmware library (every .py under firmware/lib, and the web
page's files beside them: *.html, which net/web.py streams from the flash)
into the device's /lib. Regenerate after adding, moving or removing a module:

    python host/mip_manifest.py > firmware/package.json

host_tests/cpython/test_mip_package.py fails while the committed file differs
from this script's output.

Format (mpremote's mip.py, _install_json): "urls" is a list of [dest, src];
dest is relative to the install target (the device's /lib), src is relative
to the directory holding package.json (here firmware/), so
["app/gateway.py", "lib/app/gateway.py"]. "deps" lists other mip packages:
none, the firmware needs only modules built into MicroPython. The output is
sorted by path (byte order, like the Makefile's LC_ALL=C sort) and carries
no timestamp, so it only changes when the module list does.

CPython only (pathlib); never deployed.
"""
import json
import sys
from pathlib import Path

VERSION = "0.1.0"
ROOT = Path(__file__).resolve().parent.parent
FIRMWARE = ROOT / "firmware"
LIB = FIRMWARE / "lib"


# what the device needs from firmware/lib: the modules, and the web page (net/page.html)
PATTERNS = ("*.py", "*.html")


def modules(lib=LIB):
    """Paths of the library's files (PATTERNS) relative to lib, as POSIX strings, sorted."""
    out = []
    for pattern in PATTERNS:
        for p in lib.rglob(pattern):
            rel = p.relative_to(lib)
            if any(part == "__pycache__" or part.startswith(".") for part in rel.parts):
                continue
            out.append(rel.as_posix())
    return sorted(out, key=lambda s: s.encode())


def urls(lib=LIB):
    """[dest, src] pairs: dest under the device's /lib, src relative to firmware/."""
    src_dir = lib.relative_to(lib.parent).as_posix()  # "lib"
    return [[m, "%s/%s" % (src_dir, m)] for m in modules(lib)]


def render(lib=LIB):
    """The text of firmware/package.json: one [dest, src] pair per line."""
    pairs = urls(lib)
    lines = ["{", '  "urls": [']
    for i, (dest, src) in enumerate(pairs):
        sep = "," if i < len(pairs) - 1 else ""
        lines.append("    [%s, %s]%s" % (json.dumps(dest), json.dumps(src), sep))
    lines.append("  ],")
    lines.append('  "deps": [],')
    lines.append('  "version": %s' % json.dumps(VERSION))
    lines.append("}")
    return "\n".join(lines) + "\n"


def main(argv):
    if len(argv) > 1:
        sys.stderr.write("usage: python host/mip_manifest.py > firmware/package.json\n")
        return 2
    sys.stdout.write(render())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
