"""Soak: 1,000 consecutive ``apply_filter`` calls on varied images without memory growth.

The resident set size (``VmRSS`` of ``/proc/self/status``) is read after a warm-up
that makes each of the 48 calls used once (allocator pools, oneDNN and OpenCV caches
keyed by shape, lazily imported code), and again after 1,000 calls drawn at random
from them; it may grow by at most :data:`RSS_GROWTH_BOUND`, 16 MB. Measured growth is
under 1 MB; keeping each call's output alive (a leak of one result per call, 26 MB in
all here) exceeds the bound, and so would any leaked tile, converted input or model
copy.

The calls mix the paths of inference: the folded OpenCV path of a ``linear`` model and
the network path of three architectures, whole images and tiles, uint8, uint16 and
float inputs, gray, RGB and RGBA, arrays and files (8- and 16-bit PNG), sizes from 1x1
to 128x128.
"""

from __future__ import annotations

import gc
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from img2img.imageio import write_image
from img2img.infer import apply_filter
from img2img.models import create_img2img_model, receptive_field

RSS_GROWTH_BOUND = 16 * 2**20  # bytes
CALLS = 1000
WARM_UP = 48  # every combination of image, model and tiling once

pytestmark = [
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status"),
    pytest.mark.timeout(120),
]


def _rss() -> int:
    """This process's resident set size in bytes (``VmRSS``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def _models() -> list[torch.nn.Module]:
    torch.manual_seed(0)
    models = [
        create_img2img_model(3, 1, "linear", kernel_size=5),  # folded: one OpenCV filter
        create_img2img_model(3, 1, "study"),
        create_img2img_model(3, 3, "can", width=8, depth=3),
        create_img2img_model(3, 1, "structured"),
    ]
    with torch.no_grad():
        for model in models:
            for parameter in model.parameters():
                parameter.add_(torch.randn_like(parameter) * 0.05)
    return [model.eval() for model in models]


def _inputs(folder: Path, rng: np.random.Generator) -> list[np.ndarray | Path]:
    """12 images of random size (1 to 128 a side), dtype and layout; every fourth is a file."""
    inputs: list[np.ndarray | Path] = []
    for index in range(12):
        height, width = (int(v) for v in rng.integers(1, 129, size=2))
        if index == 0:
            height, width = 1, 1
        layout = index % 4
        shape = [(height, width), (height, width, 3), (height, width, 4), (height, width, 1)][
            layout
        ]
        kind = index % 3
        if kind == 0:
            image = rng.integers(0, 256, shape, dtype=np.uint8)
        elif kind == 1:
            image = rng.integers(0, 65536, shape, dtype=np.uint16)
        else:
            image = rng.random(shape, dtype=np.float32)
        if index % 4 == 3:
            path = folder / f"{index}.png"
            write_image(path, image, bit_depth=16 if kind == 1 else 8)
            inputs.append(path)
        else:
            inputs.append(image)
    return inputs


def test_memory_does_not_grow_over_a_thousand_calls(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    models = _models()
    inputs = _inputs(tmp_path, rng)
    # Each (image, model) pair, with tiles or not: 48 combinations. The warm-up calls each
    # once, so that caches keyed by shape (oneDNN's primitives, OpenCV's buffers) are full
    # before the measure; the 1,000 calls then draw from the same combinations at random.
    combinations = [
        (image, model, bool((image + model) % 2))
        for image in range(len(inputs))
        for model in range(len(models))
    ]
    plan = combinations + [
        combinations[int(i)] for i in rng.integers(len(combinations), size=CALLS)
    ]
    started = time.perf_counter()
    checked = 0

    def call(step: int) -> None:
        nonlocal checked
        image_index, model_index, tiled = plan[step]
        model = models[model_index]
        tile = receptive_field(model) + 9 if tiled else None
        result = apply_filter(inputs[image_index], model, tile=tile, device="cpu")
        out = model.config["out_channels"]
        assert result.shape[-1] == out if out > 1 else result.ndim == 2
        if step % 25 == 0:  # a full check now and then
            assert np.isfinite(result).all()
            checked += 1

    for step in range(WARM_UP):
        call(step)
    gc.collect()
    before = _rss()
    for step in range(WARM_UP, WARM_UP + CALLS):
        call(step)
    gc.collect()
    growth = _rss() - before
    seconds = time.perf_counter() - started
    assert checked == (WARM_UP + CALLS + 24) // 25
    assert growth < RSS_GROWTH_BOUND, (
        f"resident memory grew by {growth / 2**20:.1f} MB over {CALLS} calls "
        f"(bound {RSS_GROWTH_BOUND / 2**20:.0f} MB)"
    )
    assert seconds < 90, f"{CALLS + WARM_UP} calls took {seconds:.1f} s"
