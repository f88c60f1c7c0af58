"""Shared fixtures: the mini Tiny ImageNet (or a stand-in built here), real photos, determinism."""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path

# Idle OpenMP threads sleep instead of spinning: on a 2-core machine shared with
# subprocesses (data workers, distributed ranks), spinning threads slow torch 10-50x.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import pytest
import torch

from tiny_imagenet import build_tiny_imagenet

ROOT = Path(__file__).resolve().parents[1]
#: The mini Tiny ImageNet beside the clone; ``IMG2IMG_MINI_ROOT`` points elsewhere.
MINI_ROOT = Path(
    os.environ.get("IMG2IMG_MINI_ROOT", ROOT.parent / "shared" / "data" / "tiny-imagenet-200-mini")
)


def _has_mini_set() -> bool:
    return (MINI_ROOT / "wnids.txt").is_file()


def pytest_report_header() -> str:
    if _has_mini_set():
        return f"tiny imagenet: the mini set at {MINI_ROOT}"
    return f"tiny imagenet: none at {MINI_ROOT}; a stand-in is built from scikit-image's photos"


torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def mini_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ten-class Tiny ImageNet in its original layout: 5000 train, 500 val, 200 test images.

    The mini set at :data:`MINI_ROOT` when it is there; otherwise a tree with the same
    layout and counts, built once per session from scikit-image's built-in photos
    (see ``tests/tiny_imagenet.py``).
    """
    if _has_mini_set():
        return MINI_ROOT
    return build_tiny_imagenet(tmp_path_factory.mktemp("tiny-imagenet") / "tiny-imagenet-200-mini")


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
    from img2img_filters.backends.cpu import torch_threads

    with torch_threads(1):
        yield


#: A minimal, valid EPS file: what Pillow hands to Ghostscript whatever the file is named.
EPS_BYTES = (
    b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n"
    b"newpath 0 0 moveto 8 8 lineto stroke\nshowpage\n%%EOF\n"
)


@pytest.fixture
def fake_ghostscript(tmp_path_factory, monkeypatch) -> Path:
    """A ``gs`` first on ``PATH`` that only records its arguments in a marker file; the marker's path.

    Pillow's EPS reader runs Ghostscript: a test that gives an entry point an EPS file
    (:data:`EPS_BYTES`, under any name) and then finds no marker shows that no such
    program ran. Pillow's cached lookup of ``gs`` is reset, so it would find this one.
    """
    from PIL import EpsImagePlugin

    folder = tmp_path_factory.mktemp("fake-gs")
    marker = folder / "ghostscript-ran"
    script = folder / "gs"
    script.write_text(
        f'#!/bin/sh\necho "$@" >> \'{marker}\'\n[ "$1" = --version ] && echo 10.0 && exit 0\nexit 1\n'
    )
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setattr(EpsImagePlugin, "gs_binary", None)
    return marker


@pytest.fixture(autouse=True)
def _seeded() -> None:
    torch.manual_seed(0)
    np.random.seed(0)


class _Notices:
    """``with notices("pattern") as records:``: the block must log a matching notice.

    The library's notices are :mod:`logging` records of the ``img2img_filters`` loggers,
    ``WARNING`` and above unless ``level`` says otherwise; ``records`` holds those that
    match once the block has run (as ``pytest.warns(...) as record`` does for warnings).
    """

    def __init__(self, caplog: pytest.LogCaptureFixture) -> None:
        self.caplog = caplog

    @contextlib.contextmanager
    def __call__(
        self, match: str = "", level: int = logging.WARNING
    ) -> Iterator[list[logging.LogRecord]]:
        found: list[logging.LogRecord] = []
        self.caplog.clear()
        with self.caplog.at_level(level, logger="img2img_filters"):
            yield found
        found.extend(
            record
            for record in self.caplog.records
            if record.name.startswith("img2img_filters")
            and record.levelno >= level
            and re.search(match, record.getMessage())
        )
        logged = [f"{r.levelname} {r.getMessage()}" for r in self.caplog.records]
        assert found, f"no notice at {logging.getLevelName(level)} matching {match!r}; {logged}"


@pytest.fixture
def notices(caplog: pytest.LogCaptureFixture) -> _Notices:
    """Check that a block logs a notice: ``with notices("rank-deficient"):`` (see :class:`_Notices`)."""
    return _Notices(caplog)
