"""Writes the default int8 calibration set that ships in export/calibration_images/: two crops of
each public-domain / CC0 photograph that scikit-image bundles, and one coloured-shape picture per
demo class (the project's own). Rerun only to change the set (needs scikit-image, a dev
dependency):

    python -m export.build_calibration_set
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import skimage.data
from PIL import Image

from demo.shapes import CLASSES, sample_picture

OUT = Path(__file__).with_name("calibration_images")
SIDE = 256  # shortest side written; CLIP resizes to 224 anyway
# scikit-image's sample photographs whose documentation states no copyright restrictions
# (public domain or CC0), with what they show: the label the accuracy gate's agreement uses.
PHOTOS = {
    "astronaut": "an astronaut",
    "brick": "a brick wall",
    "camera": "a man with a camera",
    "cell": "cells under a microscope",
    "chelsea": "a cat",
    "clock": "a clock",
    "coffee": "a cup of coffee",
    "coins": "old coins",
    "grass": "grass",
    "gravel": "gravel",
    "horse": "a horse",
    "hubble_deep_field": "galaxies in space",
    "immunohistochemistry": "stained tissue under a microscope",
    "microaneurysms": "an eye's retina",
    "retina": "an eye's retina",
    "rocket": "a rocket launch",
    "text": "printed text",
}
LICENCE = """# Calibration images (int8 export)

Written by `python -m export.build_calibration_set`. Photographs: crops of scikit-image's sample
data ({names}), each documented there as having no copyright restrictions (public domain or
CC0). Shapes: rendered by this project's `demo/shapes.py`. `labels.txt` holds the labels the
accuracy gate ranks (one per line).
"""


def _rgb(array: np.ndarray[Any, Any]) -> Image.Image:
    image = Image.fromarray(array)
    return image.convert("RGB")


def _scaled(image: Image.Image) -> Image.Image:
    scale = SIDE / min(image.size)
    return image.resize((max(SIDE, round(image.width * scale)), max(SIDE, round(image.height * scale))))


def crops(image: Image.Image) -> list[Image.Image]:
    """The whole picture, and its centre at twice the zoom."""
    width, height = image.size
    centre = image.crop((width // 4, height // 4, width - width // 4, height - height // 4))
    return [_scaled(image), _scaled(centre)]


def main() -> None:
    OUT.mkdir(exist_ok=True)
    for old in OUT.glob("*.jpg"):
        old.unlink()
    for name in PHOTOS:
        for index, crop in enumerate(crops(_rgb(getattr(skimage.data, name)()))):
            crop.save(OUT / f"{name}_{index}.jpg", "JPEG", quality=88)
    for label in CLASSES:
        sample_picture(label, seed=11).convert("RGB").save(OUT / f"shape_{label.replace(' ', '_')}.jpg", quality=88)
    labels = sorted(set(PHOTOS.values()) | set(CLASSES))
    (OUT / "labels.txt").write_text("\n".join(labels) + "\n")
    (OUT / "README.md").write_text(LICENCE.format(names=", ".join(PHOTOS)))
    print(f"wrote {len(list(OUT.glob('*.jpg')))} images to {OUT}")


if __name__ == "__main__":
    main()
