"""Writes efface's demo sample into a scratch folder.

Public-domain pictures that ship with scikit-image (the astronaut Eileen Collins, NASA; the
"cameraman" test image) and a group photo composed from them, plus an EXIF-rotated copy carrying
metadata that the output must not keep. Usage: ``python examples/make_sample.py FOLDER``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data


def group_photo() -> Image.Image:
    """A 1600x900 picture with five faces of several sizes."""
    canvas = Image.new("RGB", (1600, 900), (196, 202, 210))
    astronaut = Image.fromarray(data.astronaut())
    cameraman = Image.fromarray(np.repeat(data.camera()[:, :, None], 3, axis=2))
    canvas.paste(astronaut, (40, 300))
    canvas.paste(astronaut.resize((256, 256)).transpose(Image.Transpose.FLIP_LEFT_RIGHT), (620, 80))
    canvas.paste(cameraman.resize((384, 384)), (620, 420))
    canvas.paste(astronaut.resize((384, 384)), (1120, 40))
    canvas.paste(astronaut.resize((192, 192)), (1200, 600))
    return canvas


def main(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(data.astronaut()).save(folder / "astronaut.jpg", quality=95)
    group_photo().save(folder / "group.png")
    # The same portrait stored sideways, as a phone does: EXIF orientation 6 (rotate 90 deg clockwise to
    # view), an artist tag and an embedded thumbnail-free EXIF block that efface must strip.
    sideways = Image.fromarray(data.astronaut()).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x013B] = "Jane Photographer"
    sideways.save(folder / "phone_portrait.jpg", quality=95, exif=exif.tobytes())
    Image.fromarray(data.coffee()).save(folder / "no_face.webp", quality=90)
    print(f"sample written to {folder}: {', '.join(sorted(p.name for p in folder.iterdir()))}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python examples/make_sample.py FOLDER")
    main(Path(sys.argv[1]))
