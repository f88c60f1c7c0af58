"""``--arch auto`` for teachers it knows nothing of: the operator probe decides the recipe."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from img2img_filters.auto import choice_from_probe, choose_arch, default_model
from img2img_filters.auto.probed import LOCAL_WINDOW_MAX, MAX_EXACT_KERNEL
from img2img_filters.data import load_filtered_dataset
from img2img_filters.filters.external import CallableFilter, GivenTargets
from img2img_filters.probe import probe_operator
from img2img_filters.runs import DataConfig, ModelConfig, train_run


def gaussian5(photo: np.ndarray) -> np.ndarray:
    """A 5x5 Gaussian blur (OpenCV)."""
    return cv2.GaussianBlur(photo, (5, 5), 0)


def gamma(photo: np.ndarray) -> np.ndarray:
    """A gamma curve, per channel."""
    return np.round(255.0 * (photo / 255.0) ** 0.6).astype(np.uint8)


def median5(photo: np.ndarray) -> np.ndarray:
    """A 5x5 median, per channel (OpenCV)."""
    return cv2.medianBlur(photo, 5)


def median3_gray(photo: np.ndarray) -> np.ndarray:
    """A 3x3 median of the gray image (OpenCV)."""
    return cv2.medianBlur(cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY), 3)


def equalize(photo: np.ndarray) -> np.ndarray:
    """Histogram equalisation of the gray image (OpenCV): every output depends on every pixel."""
    return cv2.equalizeHist(cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY))


def colour_matrix(photo: np.ndarray) -> np.ndarray:
    """A 3x3 colour matrix (OpenCV's RGB -> BGR channel swap, a permutation)."""
    return cv2.cvtColor(photo, cv2.COLOR_RGB2BGR)


def test_gaussian_teacher_gets_the_exact_fit_with_kernel_5() -> None:
    choice = choose_arch(CallableFilter(gaussian5))
    assert (choice.method, choice.arch) == ("exact", "linear")
    assert choice.options["kernel_size"] == 5
    assert choice.probe is not None and choice.probe["verdict"] == "linear"
    assert choice.probe["support_radius"] == 2
    assert choice.probe_line == "probe: linear, radius 2 -> exact linear fit (kernel_size=5)"


def test_colour_matrix_teacher_gets_a_1x1_exact_fit() -> None:
    choice = choose_arch(CallableFilter(colour_matrix))
    assert (choice.method, choice.options["kernel_size"]) == ("exact", 1)
    assert "colour matrix" in choice.reason and "colour matrix" in choice.probe_line


def test_gamma_teacher_gets_an_exact_lookup_table() -> None:
    teacher = CallableFilter(gamma)
    choice = choose_arch(teacher)
    assert choice.probe["verdict"] == "pointwise"
    assert (choice.method, choice.arch) == ("exact", "lut3d")
    assert choice.options == {"size": 17, "curve_size": 256}
    assert choice.probe_line.startswith("probe: pointwise, radius 0 -> exact lookup-table fit")
    model = default_model(teacher, choice.arch, choice.options)
    assert model.config["arch"] == "lut3d"  # the teacher's channels are known after the probe


@pytest.mark.parametrize(("function", "window"), [(median5, 5), (median3_gray, 3)])
def test_median_teacher_gets_a_local_choice_with_its_window(function, window: int) -> None:
    choice = choose_arch(CallableFilter(function))
    assert choice.probe["verdict"] == "local"
    assert choice.probe["support_radius"] == window // 2
    assert choice.arch == "neighbourhood" and choice.options["window"] == window
    assert choice.options["sort"] is True
    assert f"radius {window // 2} -> neighbourhood(window={window}" in choice.probe_line


def test_histogram_equalisation_teacher_gets_the_global_choice() -> None:
    choice = choose_arch(CallableFilter(equalize))
    assert choice.probe["verdict"] == "global"
    assert choice.probe["support_radius"] is None
    assert choice.arch == "neighbourhood" and choice.options["feature_size"] == 9
    assert choice.options["histogram"] is True  # the photo's histograms: what equalising reads
    assert choice.probe_line.startswith("probe: global, radius unbounded -> neighbourhood(")
    assert choice.probe_line.endswith(", histogram)")


def test_wide_or_unbounded_supports_get_wide_recipes() -> None:
    report = probe_operator(lambda photo: cv2.medianBlur(photo, 2 * LOCAL_WINDOW_MAX + 1))
    assert report.verdict == "local" and 2 * report.support_radius + 1 > LOCAL_WINDOW_MAX
    wide = choice_from_probe(report)
    assert wide.arch == "neighbourhood" and wide.options["window"] == 3
    assert wide.options["feature_size"] == 2 * report.support_radius - 1
    linear = probe_operator(lambda photo: cv2.blur(photo, (31, 31)))
    assert choice_from_probe(linear).options["kernel_size"] == MAX_EXACT_KERNEL


def test_given_targets_are_probed_on_the_datasets_pairs() -> None:
    train_set, _ = load_filtered_dataset(filter=gaussian5, limit=12)
    teacher = GivenTargets("pairs:targets")  # cannot be called: only the pairs exist
    choice = choose_arch(teacher, train_set)
    assert choice.probe["source"] == "pairs" and choice.probe["verdict"] == "linear"
    assert (choice.method, choice.options["kernel_size"]) == ("exact", 5)


@pytest.mark.parametrize(
    ("flag", "border"),
    [
        (cv2.BORDER_REPLICATE, "replicate"),
        (cv2.BORDER_REFLECT, "reflect"),
        (cv2.BORDER_CONSTANT, "constant"),
        (cv2.BORDER_REFLECT_101, "reflect101"),
    ],
)
def test_the_teachers_border_is_matched_on_the_data(flag: int, border: str) -> None:
    def blur(photo: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(photo, (5, 5), 0, borderType=flag)

    teacher = CallableFilter(blur)
    train_set, _ = load_filtered_dataset(filter=teacher, limit=8)
    choice = choose_arch(teacher, train_set)
    assert choice.options["border"] == border
    assert choice.probe_line.endswith(f", border {border}")


def test_a_teacher_that_cannot_be_probed_falls_back_and_says_why() -> None:
    choice = choose_arch(GivenTargets("pairs:targets"))  # neither callable nor pairs
    assert choice.arch == "can" and choice.probe is None
    assert choice.probe_line.startswith("probe: failed (")


def test_a_run_records_and_prints_the_probe(tmp_path: Path) -> None:
    lines: list[str] = []
    result = train_run(
        tmp_path / "run",
        DataConfig(data="samples", filter=gaussian5, limit=12),
        ModelConfig(arch="auto"),
        {"device": "cpu", "progress": False},
        figures=False,
        log=lines.append,
    )
    line = "probe: linear, radius 2 -> exact linear fit (kernel_size=5), border reflect101"
    assert line in lines
    metrics = json.loads((result.folder / "metrics.json").read_text())
    assert metrics["probe"]["verdict"] == "linear" and metrics["probe"]["support_radius"] == 2
    config = json.loads((result.folder / "config.json").read_text())
    assert config["resolved"]["auto"]["options"]["kernel_size"] == 5
    assert config["resolved"]["auto"]["options"]["border"] == "reflect101"
    assert metrics["psnr"] > 45.0  # the exact fit of an 8-bit Gaussian: rounding is the error


def test_a_pointwise_teacher_is_copied_exactly_at_8_bits(tmp_path: Path) -> None:
    """Probe, closed-form lookup table, certificate: a gamma curve, exact after rounding."""
    result = train_run(
        tmp_path / "run",
        DataConfig(data="samples", filter=gamma, limit=24, crop_size=32),
        ModelConfig(arch="auto"),
        {"device": "cpu", "progress": False},
        figures=False,
        log=lambda _: None,
    )
    certificate = result.metrics["certificate"]
    assert result.model.config["arch"] == "lut3d"
    assert certificate["probe"]["verdict"] == "pointwise" and certificate["bit_depth"] == 8
    assert certificate["exact_share"] >= 0.995
