"""Turn kicad-cli SVG/PDF exports into PNG images (PyMuPDF, no system tools needed).

usage: render_images.py INPUT.(svg|pdf) OUTPUT.png [DPI]
"""

import sys

import pymupdf


def main():
    src, dst = sys.argv[1], sys.argv[2]
    dpi = int(sys.argv[3]) if len(sys.argv) > 3 else 150
    doc = pymupdf.open(src)
    page = doc[0]
    pix = page.get_pixmap(dpi=dpi, alpha=False)
    pix.save(dst)
    print(f"{dst}: {pix.width}x{pix.height}")


if __name__ == "__main__":
    main()
