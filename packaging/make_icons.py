"""Render the app icon (resources/icons/esg-workbench.svg) to the PNG sizes a desktop
asks for, and to the Windows .ico and macOS .icns the bundle needs.

    python packaging/make_icons.py [OUT_DIR]      # default: build/icons

Qt draws the SVG (QtSvg is part of PySide6-Essentials, which the app needs anyway);
Pillow packs the PNGs into .ico and .icns. Generated at build time, so no binary image
has to be kept in git besides the SVG.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SVG = ROOT / "resources" / "icons" / "esg-workbench.svg"
#: the hicolor theme sizes (freedesktop icon theme spec) and what .ico/.icns hold
PNG_SIZES = (16, 24, 32, 48, 64, 128, 256, 512)
ICO_SIZES = (16, 24, 32, 48, 64, 128, 256)


def render_pngs(out_dir: Path, sizes: tuple[int, ...] = PNG_SIZES) -> dict[int, Path]:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import Qt
    from PySide6.QtGui import QGuiApplication, QImage, QPainter
    from PySide6.QtSvg import QSvgRenderer

    app = QGuiApplication.instance() or QGuiApplication(sys.argv[:1])  # noqa: F841 (painting needs one)
    renderer = QSvgRenderer(str(SVG))
    if not renderer.isValid():
        raise SystemExit(f"{SVG} is not a valid SVG")
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for size in sizes:
        image = QImage(size, size, QImage.Format.Format_ARGB32)
        image.fill(Qt.GlobalColor.transparent)
        painter = QPainter(image)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        renderer.render(painter)
        painter.end()
        path = out_dir / f"esg-workbench-{size}.png"
        if not image.save(str(path)):
            raise SystemExit(f"could not write {path}")
        written[size] = path
    return written


def pack_ico_icns(pngs: dict[int, Path], out_dir: Path) -> list[Path]:
    from PIL import Image

    largest = Image.open(pngs[max(pngs)])
    ico = out_dir / "esg-workbench.ico"
    largest.save(ico, sizes=[(s, s) for s in ICO_SIZES])
    icns = out_dir / "esg-workbench.icns"
    largest.save(icns)  # Pillow scales the 512 px image to the icns sizes it writes
    return [ico, icns]


def make_icons(out_dir: Path) -> dict[str, Path]:
    pngs = render_pngs(out_dir)
    ico, icns = pack_ico_icns(pngs, out_dir)
    return {"png": pngs[256], "ico": ico, "icns": icns, **{f"png{s}": p for s, p in pngs.items()}}


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "build" / "icons"
    for name, path in make_icons(target).items():
        print(f"{name}: {path}")
