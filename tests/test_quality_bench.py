"""benchmarks/quality.py: runs end to end and writes well-formed Markdown and JSON tables."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def quality() -> ModuleType:
    """The benchmark script, imported as a module."""
    spec = importlib.util.spec_from_file_location("quality", ROOT / "benchmarks" / "quality.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["quality"] = module
    spec.loader.exec_module(module)
    return module


def test_the_full_run_covers_the_required_filters(quality: ModuleType) -> None:
    required = {
        "study-sobel",
        "study-random",
        "sobel:dx=1,dy=0,ksize=5",
        "gaussian:ksize=5",
        "laplacian:ksize=3",
        "unsharp",
        "magnitude",
        "median:ksize=3",
        "bilateral",
        "dilate:ksize=3",
        "canny",
    }
    assert required <= set(quality.FILTERS)
    args = quality.parse_args([])
    assert (args.budget, args.limit) == (120.0, None)
    small = quality.parse_args(["--small"])
    assert (small.budget, small.limit) == (10.0, 500)
    assert small.filters == quality.SMALL_FILTERS
    assert quality.parse_args(["--filter", "sobel:dx=1,dy=0"]).filters == ["sobel:dx=1,dy=0"]


def test_pixel_f1(quality: ModuleType) -> None:
    target = torch.tensor([[[[1.0, 1.0, 0.0, 0.0]]]])
    assert quality.pixel_f1(target, target) == 1.0
    assert quality.pixel_f1(torch.tensor([[[[0.9, 0.2, 0.7, 0.1]]]]), target) == 0.5
    assert quality.pixel_f1(torch.zeros(1, 1, 1, 4), torch.zeros(1, 1, 1, 4)) == 1.0


def test_small_run_writes_markdown_and_json(
    quality: ModuleType, mini_root: Path, tmp_path: Path
) -> None:
    argv = ["--small", "--budget", "1.5", "--limit", "24", "--root", str(mini_root)]
    argv += ["--filter", "study-sobel", "--filter", "canny", "--out", str(tmp_path)]
    quality.main(argv)

    result = json.loads((tmp_path / "quality.json").read_text())
    assert result["config"]["budget"] == 1.5 and result["config"]["train_images"] == 24
    rows = {row["filter"]: row for row in result["rows"]}
    assert set(rows) == {"study-sobel", "canny"}
    for row in rows.values():
        for side in ("auto", "study"):
            assert {"arch", "parameters", "train_seconds", "psnr", "ssim", "l1"} <= set(row[side])
        assert row["study"]["arch"] == "study" and row["study"]["parameters"] == 48
    sobel, canny = rows["study-sobel"], rows["canny"]
    assert sobel["method"] == "exact" and sobel["auto"]["arch"] == "linear"
    assert sobel["auto"]["kernel_max_error"] <= 1e-4 and sobel["auto"]["psnr"] >= 100
    assert sobel["target"]["met"] is True
    assert canny["method"] == "gradient" and canny["auto"]["kernel_max_error"] is None
    assert 0.0 <= canny["auto"]["f1"] <= 1.0 and 0.0 <= canny["study"]["f1"] <= 1.0
    assert canny["target"]["metric"] == "f1" and isinstance(canny["target"]["met"], bool)

    markdown = (tmp_path / "quality.md").read_text()
    header = next(line for line in markdown.splitlines() if line.startswith("| filter"))
    for column in (
        "auto arch",
        "params",
        "train s",
        "PSNR dB",
        "SSIM",
        "L1",
        "kernel max err",
        "F1",
        "study PSNR dB",
        "study SSIM",
        "study L1",
        "study F1",
        "target",
    ):
        assert f"| {column} |" in header
    table = [line for line in markdown.splitlines() if line.startswith("| `")]
    assert len(table) == 2
    assert all(line.count("|") == header.count("|") for line in table)
