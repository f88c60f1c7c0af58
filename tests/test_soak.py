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
to 128x128. The workload is ``benchmarks/soak.py``'s, which times the same calls; this
test checks memory only.
"""

from __future__ import annotations

import gc
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from img2img_filters.infer import apply_filter
from img2img_filters.models import receptive_field

ROOT = Path(__file__).resolve().parents[1]
RSS_GROWTH_BOUND = 16 * 2**20  # bytes
CALLS = 1000
WARM_UP = 48  # every combination of image, model and tiling once

pytestmark = [
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status"),
    pytest.mark.timeout(300),
]


@pytest.fixture(scope="module")
def soak() -> ModuleType:
    """``benchmarks/soak.py``, imported as a module: the soak's models, images and plan."""
    spec = importlib.util.spec_from_file_location("soak", ROOT / "benchmarks" / "soak.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _rss() -> int:
    """This process's resident set size in bytes (``VmRSS``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def test_memory_does_not_grow_over_a_thousand_calls(soak: ModuleType, tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    models = soak.models()
    inputs = soak.inputs(tmp_path, rng)
    # Each (image, model) pair, with tiles or not: 48 combinations. The warm-up calls each
    # once, so that caches keyed by shape (oneDNN's primitives, OpenCV's buffers) are full
    # before the measure; the 1,000 calls then draw from the same combinations at random.
    plan = soak.plan(len(inputs), len(models), CALLS, rng)
    assert len(plan) == WARM_UP + CALLS
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
    assert checked == (WARM_UP + CALLS + 24) // 25
    assert growth < RSS_GROWTH_BOUND, (
        f"resident memory grew by {growth / 2**20:.1f} MB over {CALLS} calls "
        f"(bound {RSS_GROWTH_BOUND / 2**20:.0f} MB)"
    )


def test_the_soak_benchmark_times_both_ways(soak: ModuleType, tmp_path: Path) -> None:
    result = soak.main(["--calls", "12", "--rounds", "2", "--out", str(tmp_path)])
    assert result["calls"] == 12 and result["img2img_s"] > 0 and result["plain_s"] > 0
    assert result["ratio"] == pytest.approx(result["plain_s"] / result["img2img_s"], rel=0.02)
    assert json.loads((tmp_path / "soak.json").read_text()) == result
    assert f"**{result['ratio']}**" in (tmp_path / "soak.md").read_text()
