"""A small Tiny ImageNet in the original layout, built from scikit-image's built-in photos.

The tests read the mini Tiny ImageNet (ten classes, 500 training images each, 500
validation and 200 test images) when it is beside the clone; without it they read
this tree instead, which has the same layout, file names and counts:

    wnids.txt, words.txt
    train/<wnid>/images/<wnid>_<i>.JPEG, train/<wnid>/<wnid>_boxes.txt
    val/images/val_<i>.JPEG, val/val_annotations.txt
    test/images/test_<i>.JPEG

Each class is one photo; its images are 64x64 crops of that photo at random scales,
positions (each shrunk 1.5-6x) and flips, saved as JPEG. Nothing is downloaded: only photos that ship
inside scikit-image are used.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from skimage import data as skdata

SIZE = 64
TRAIN_PER_CLASS = 500
VAL_IMAGES = 500
TEST_IMAGES = 200

#: One class per built-in photo: (wnid, the scikit-image function, the words of words.txt).
CLASSES = (
    ("n90000001", "astronaut", "astronaut, spaceman"),
    ("n90000002", "coffee", "coffee mug, cup"),
    ("n90000003", "chelsea", "tabby cat, cat"),
    ("n90000004", "rocket", "rocket, launch vehicle"),
    ("n90000005", "stereo_motorcycle", "motorcycle, motorbike"),
    ("n90000006", "hubble_deep_field", "galaxy, star field"),
    ("n90000007", "immunohistochemistry", "tissue section, stain"),
    ("n90000008", "retina", "retina, fundus"),
    ("n90000009", "camera", "cameraman, photographer"),
    ("n90000010", "coins", "coin, change"),
)


def _photo(name: str) -> np.ndarray:
    """A built-in photo as uint8 ``(H, W, 3)`` RGB."""
    image = getattr(skdata, name)()
    if isinstance(image, tuple):  # stereo_motorcycle: (left, right, disparity)
        image = image[0]
    image = np.asarray(image, dtype=np.uint8)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    return np.ascontiguousarray(image[..., :3])


def _crop(photo: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One 64x64 crop of ``photo`` at a random scale, position and flip, uint8 ``(64, 64, 3)``."""
    height, width = photo.shape[:2]
    # Shrunk 1.5-6x, as Tiny ImageNet's photos were: real detail at 64x64, not blurred up-scales.
    shortest = min(height, width)
    side = int(rng.integers(min(3 * SIZE // 2, shortest), min(6 * SIZE, shortest) + 1))
    top = int(rng.integers(0, height - side + 1))
    left = int(rng.integers(0, width - side + 1))
    crop = cv2.resize(
        photo[top : top + side, left : left + side], (SIZE, SIZE), interpolation=cv2.INTER_AREA
    )
    return crop[:, ::-1] if rng.random() < 0.5 else crop


def _box(rng: np.random.Generator) -> list[int]:
    x0, y0 = (int(v) for v in rng.integers(0, SIZE // 2, size=2))
    x1, y1 = (int(v) for v in rng.integers(SIZE // 2, SIZE, size=2))
    return [x0, y0, x1, y1]


def _save(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, encoded = cv2.imencode(".JPEG", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError(f"could not encode {path}")
    path.write_bytes(encoded.tobytes())


def build_tiny_imagenet(root: Path, seed: int = 0) -> Path:
    """Write a ten-class Tiny ImageNet of built-in photo crops under ``root``; return ``root``.

    Args:
        root: An empty or absent folder.
        seed: The seed of the crops and boxes (the tree is the same for the same seed).

    Returns:
        ``root``, holding the tree described in this module's docstring.
    """
    rng = np.random.default_rng(seed)
    photos = [_photo(name) for _, name, _ in CLASSES]
    wnids = [wnid for wnid, _, _ in CLASSES]
    root.mkdir(parents=True, exist_ok=True)
    (root / "wnids.txt").write_text("".join(f"{wnid}\n" for wnid in wnids))
    (root / "words.txt").write_text("".join(f"{wnid}\t{words}\n" for wnid, _, words in CLASSES))
    for wnid, photo in zip(wnids, photos, strict=True):
        rows = []
        for i in range(TRAIN_PER_CLASS):
            name = f"{wnid}_{i}.JPEG"
            _save(root / "train" / wnid / "images" / name, _crop(photo, rng))
            rows.append("\t".join([name, *map(str, _box(rng))]))
        (root / "train" / wnid / f"{wnid}_boxes.txt").write_text("\n".join(rows) + "\n")
    rows = []
    for i in range(VAL_IMAGES):
        label = int(rng.integers(len(CLASSES)))
        name = f"val_{i}.JPEG"
        _save(root / "val" / "images" / name, _crop(photos[label], rng))
        rows.append("\t".join([name, wnids[label], *map(str, _box(rng))]))
    (root / "val" / "val_annotations.txt").write_text("\n".join(rows) + "\n")
    for i in range(TEST_IMAGES):
        _save(root / "test" / "images" / f"test_{i}.JPEG", _crop(photos[i % len(photos)], rng))
    return root
