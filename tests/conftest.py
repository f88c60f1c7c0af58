"""Shared fixtures: the mini Tiny ImageNet, real photos, determinism."""

from __future__ import annotations

import os
from pathlib import Path

# Idle OpenMP threads sleep instead of spinning: on a 2-core machine shared with
# subprocesses (data workers, distributed ranks), spinning threads slow torch 10-50x.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
MINI_ROOT = Path(
    os.environ.get("IMG2IMG_MINI_ROOT", ROOT.parent / "shared" / "data" / "tiny-imagenet-200-mini")
)

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def mini_root() -> Path:
    """The ten-class Tiny ImageNet in its original layout (skipped locally when absent, a failure in CI)."""
    if not (MINI_ROOT / "wnids.txt").is_file():
        if os.environ.get("CI"):
            pytest.fail(f"the mini Tiny ImageNet is missing at {MINI_ROOT} (required in CI)")
        pytest.skip(f"the mini Tiny ImageNet is not at {MINI_ROOT}")
    return MINI_ROOT


@pytest.fixture(scope="session")
def mini_photos(mini_root: Path) -> np.ndarray:
    """Sixteen real 64x64 photos from the mini set's validation images, uint8 ``(16, 64, 64, 3)`` RGB."""
    import cv2

    paths = sorted((mini_root / "val" / "images").glob("*.JPEG"))[:16]
    photos = [cv2.cvtColor(cv2.imread(str(p), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB) for p in paths]
    return np.stack(photos)


@pytest.fixture(scope="session")
def train_photos(mini_root: Path) -> np.ndarray:
    """96 real 64x64 photos spread over the mini set's ten training classes, uint8 ``(96, 3, 64, 64)``."""
    import cv2

    paths = sorted((mini_root / "train").glob("*/images/*.JPEG"))[::50][:96]
    photos = [cv2.cvtColor(cv2.imread(str(p), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB) for p in paths]
    return np.ascontiguousarray(np.stack(photos).transpose(0, 3, 1, 2))


@pytest.fixture(scope="session")
def large_photo() -> np.ndarray:
    """A real non-square photo, uint8 ``(200, 300, 3)`` RGB (scikit-image's astronaut, cropped)."""
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[100:300, 100:400])


@pytest.fixture(scope="module")
def one_torch_thread():
    """Run a module's small tensors on one PyTorch thread, then restore the session's setting.

    Such batches are too small for threads to pay off, and OpenMP threads that spin
    while they wait make every op 10-50x slower on cores other processes share.
    """
    from img2img.backends.cpu import torch_threads

    with torch_threads(1):
        yield


@pytest.fixture(autouse=True)
def _seeded() -> None:
    torch.manual_seed(0)
    np.random.seed(0)
