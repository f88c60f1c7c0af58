"""Every run's metrics.json and report carry the fidelity certificate of its model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from img2img_filters.certificate import certificate_for_model
from img2img_filters.checkpoint import load_model
from img2img_filters.cli import main
from img2img_filters.data import load_filtered_dataset
from img2img_filters.filters import create_filter
from img2img_filters.report.certificate import certificate_rows, certificate_section
from img2img_filters.run.train import target_bit_depth

TINY = ["--data", "samples", "--crop-size", "16", "--limit", "24", "--no-progress"]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "study"
    argv = ["train", *TINY, "--arch", "study", "--epochs", "1", "--out", str(out)]
    assert main(argv) == 0
    return out


def test_metrics_hold_the_certificate_of_the_saved_model(run: Path) -> None:
    metrics = json.loads((run / "metrics.json").read_text())
    certificate = metrics["certificate"]
    model = load_model(run / "model.safetensors")
    _, val = load_filtered_dataset(data="samples", crop_size=16, limit=24, seed=0)
    direct = certificate_for_model(model, val, data_range=metrics["data_range"], device="cpu")
    for key in ("psnr", "ssim", "max_abs_error", "exact_share", "mean_abs_error"):
        assert certificate[key] == pytest.approx(direct[key], rel=1e-6, abs=1e-9), key
    assert certificate["abs_error_percentiles"] == pytest.approx(direct["abs_error_percentiles"])
    assert certificate["images"] == len(val) and certificate["bit_depth"] == 8
    assert certificate["psnr"] == pytest.approx(metrics["psnr"], rel=1e-6)
    regions = certificate["worst_regions"]
    assert regions and regions == sorted(regions, key=lambda r: -r["mean_abs_error"])


def test_the_report_shows_the_certificate(run: Path) -> None:
    assert main(["report", str(run)]) == 0
    html = (run / "report.html").read_text()
    assert 'id="certificate"' in html and "Fidelity certificate" in html
    share = json.loads((run / "metrics.json").read_text())["certificate"]["exact_share"]
    assert f"{100 * share:.3f}% of values equal the target at 8 bits" in html
    assert "mean absolute error" in html  # the worst regions' table


def test_a_malformed_certificate_reads_as_missing() -> None:
    assert certificate_section({"certificate": "nonsense"}) is None
    assert certificate_section(None) is None
    rows = dict(certificate_rows({"psnr": "high", "exact_share": [1], "worst_regions": 3}))
    assert rows["PSNR, mean / worst image"] == "— / —"
    assert rows["Exact after rounding"].startswith("not measured")


def _sixteen_bit(photo: np.ndarray) -> np.ndarray:
    return photo[..., 0].astype(np.uint16) * 257


def _float(photo: np.ndarray) -> np.ndarray:
    return photo[..., 0].astype(np.float32) / 7.0


def _eight_bit(photo: np.ndarray) -> np.ndarray:
    return photo[..., 1]


@pytest.mark.parametrize(
    ("function", "bits"), [(_sixteen_bit, 16), (_float, None), (_eight_bit, 8)]
)
def test_the_certificate_rounds_at_the_teachers_depth(function, bits) -> None:
    teacher = create_filter(function)
    teacher(torch.rand(1, 3, 16, 16))  # the first output tells its sample type
    assert target_bit_depth(teacher) == bits


def test_library_filters_round_at_eight_bits() -> None:
    assert target_bit_depth(create_filter("study-sobel")) == 8
