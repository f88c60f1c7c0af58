"""The operator probe: verdicts and radii of operators whose kind is known by construction."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from skimage import exposure

from img2img_filters.cli import main
from img2img_filters.filters import create_filter
from img2img_filters.imageio import write_image
from img2img_filters.probe import ProbeReport, probe_operator, read_pair_folders
from img2img_filters.probe.inputs import as_operator, default_photos

SEPIA = np.array([[0.393, 0.769, 0.189], [0.349, 0.686, 0.168], [0.272, 0.534, 0.131]])


def sepia(image: np.ndarray) -> np.ndarray:
    return image.astype(np.float64) @ SEPIA.T


def gamma(image: np.ndarray) -> np.ndarray:
    return (255 * (image / 255) ** 0.5).astype(np.uint8)


def median3(image: np.ndarray) -> np.ndarray:
    return cv2.medianBlur(image, 3)


def median5(image: np.ndarray) -> np.ndarray:
    return cv2.medianBlur(image, 5)


def dilate3(image: np.ndarray) -> np.ndarray:
    return cv2.dilate(image, np.ones((3, 3), np.uint8))


def equalize_skimage(image: np.ndarray) -> np.ndarray:
    return np.stack([exposure.equalize_hist(image[..., c]) for c in range(3)], axis=-1)


def equalize_opencv(image: np.ndarray) -> np.ndarray:
    return np.stack([cv2.equalizeHist(np.ascontiguousarray(image[..., c])) for c in range(3)], -1)


def auto_levels(image: np.ndarray) -> np.ndarray:
    """Stretch each channel so that its own min and max become 0 and 1."""
    image = image.astype(np.float64)
    low, high = image.min(axis=(0, 1)), image.max(axis=(0, 1))
    return (image - low) / np.maximum(high - low, 1)


@pytest.fixture(scope="module")
def photos() -> list[np.ndarray]:
    """Four built-in photos, 64x64, so each probe stays fast."""
    return default_photos(side=64)


def kernel_half(spec: str) -> int:
    """The true radius of a linear filter: half its exact kernel's size."""
    return create_filter(spec).kernel_size[0] // 2


@pytest.mark.parametrize(
    ("operator", "verdict", "radius"),
    [
        ("gaussian:ksize=5", "linear", kernel_half("gaussian:ksize=5")),
        ("sobel", "linear", kernel_half("sobel")),
        (sepia, "linear", 0),
        (gamma, "pointwise", 0),
        (median3, "local", 1),
        (median5, "local", 2),
        (dilate3, "local", 1),
        ("dilate:ksize=5", "local", 2),
        (equalize_skimage, "global", None),
        (equalize_opencv, "global", None),
        (auto_levels, "global", None),
    ],
    ids=lambda v: v if isinstance(v, str) else getattr(v, "__name__", repr(v)),
)
def test_verdict_and_radius_of_known_operators(photos, operator, verdict, radius):
    report = probe_operator(operator, photos)
    assert report.verdict == verdict, report.summary
    assert report.support_radius == radius, report.summary
    assert report.summary.startswith(verdict)
    local = verdict != "global"
    assert report.global_.holds is not local
    assert report.shift_invariant.holds is local  # global lookups change with the crop
    if verdict == "linear":
        assert report.linear.error < 1e-6  # float outputs: superposition up to rounding
    else:
        assert report.linear.holds is False


def test_radius_matches_the_kernel_for_longer_kernels(photos):
    spec = "box:ksize=9"
    assert probe_operator(spec, photos).support_radius == kernel_half(spec) == 4


def test_channels_and_output_range(photos):
    report = probe_operator("sobel", photos)
    assert (report.channels_in, report.channels_out) == (3, 1)
    assert report.channel_map == ((True, True, True),)
    outputs = [as_operator("sobel")[0](p) for p in photos]
    low, high = report.output_range
    assert low <= min(o.min() for o in outputs) and high >= max(o.max() for o in outputs)
    assert -4 <= low < 0 < high <= 4  # the Sobel kernel's bound for inputs in [0, 1]

    green = probe_operator(lambda x: x[..., 1], photos)
    assert green.verdict == "linear" and green.support_radius == 0
    assert green.channels_in == 1 and green.channel_map == ((False, True, False),)
    assert green.output_range == (0.0, 255.0)  # the probes' noise spans the green channel


def test_position_dependent_operator_is_not_shift_invariant(photos):
    ramp = np.linspace(0.5, 1.5, photos[0].shape[1])[None, :, None]
    report = probe_operator(lambda x: x * ramp[:, : x.shape[1]], photos)
    assert report.verdict == "linear"
    assert report.shift_invariant.holds is False
    assert report.pointwise.holds is False  # a colour alone does not fix the output


def test_json_report_has_the_documented_keys(photos):
    data = json.loads(json.dumps(probe_operator(median3, photos).to_dict()))
    for key in ("pointwise", "linear", "shift_invariant", "global"):
        assert set(data[key]) >= {"error", "holds"}
    assert data["verdict"] == "local" and data["support_radius"] == 1
    assert data["channels_in"] == 3 and data["channels_out"] == 3
    assert data["output_range"] == [0.0, 255.0]
    assert data["summary"].startswith("local, non-linear, shift-invariant, radius 1 px, 3->3")


# -- pairs only --------------------------------------------------------------------------------
def pairs_of(operator, photos):
    return [(p, np.asarray(operator(p), dtype=np.float64)) for p in photos]


@pytest.fixture(scope="module")
def large_photos() -> list[np.ndarray]:
    return default_photos()


def test_pairs_of_a_gaussian_are_linear_with_its_radius(large_photos):
    operator, _ = as_operator("gaussian:ksize=5")
    report = probe_operator(pairs=pairs_of(operator, large_photos))
    assert report.source == "pairs"
    assert report.verdict == "linear" and report.support_radius == kernel_half("gaussian:ksize=5")
    assert report.shift_invariant is None and report.to_dict()["shift_invariant"] is None
    assert report.pointwise.holds is False


def test_pairs_of_8bit_gaussian_targets_are_linear_within_rounding(large_photos):
    report = probe_operator(
        pairs=pairs_of(lambda x: cv2.GaussianBlur(x, (7, 7), 0) / 255.0, large_photos)
    )
    assert report.verdict == "linear" and report.support_radius == 3


def test_pairs_of_a_gamma_curve_are_pointwise(large_photos):
    report = probe_operator(pairs=pairs_of(lambda x: gamma(x) / 255.0, large_photos))
    assert report.verdict == "pointwise" and report.support_radius == 0
    assert report.linear.holds is False


def test_pairs_of_histogram_equalisation_are_global_and_median_local(large_photos):
    equalised = probe_operator(pairs=pairs_of(lambda x: equalize_opencv(x) / 255.0, large_photos))
    assert equalised.verdict == "global" and equalised.support_radius is None
    median = probe_operator(pairs=pairs_of(lambda x: median5(x) / 255.0, large_photos))
    assert median.verdict == "local" and median.support_radius == 2


# -- bad input ---------------------------------------------------------------------------------
def test_bad_arguments_raise_one_line_errors(photos):
    with pytest.raises(ValueError, match="not neither"):
        probe_operator()
    with pytest.raises(ValueError, match="not both"):
        probe_operator("sobel", pairs=pairs_of(gamma, photos))
    with pytest.raises(TypeError, match="operator_or_spec"):
        probe_operator(42)
    with pytest.raises(TypeError, match=r"photos\[0\]"):
        probe_operator("sobel", [p.astype(np.float32) for p in photos])
    with pytest.raises(ValueError, match=r"photos\[1\].*>= 48"):
        probe_operator("sobel", [photos[0], photos[1][:20]])
    with pytest.raises(ValueError, match="must return"):
        probe_operator(lambda x: x[1:], photos)
    with pytest.raises(ValueError, match="NaN"):
        probe_operator(lambda x: np.full(x.shape, np.nan), photos)
    with pytest.raises(ValueError, match=r"pairs\[0\] target"):
        probe_operator(pairs=[(photos[0], np.zeros((5, 5)))])
    with pytest.raises(ValueError, match="seed"):
        probe_operator("sobel", photos, seed=-1)


def test_an_operator_that_writes_to_its_input_does_not_change_the_photos(photos):
    kept = [p.copy() for p in photos]

    def invert_in_place(image: np.ndarray) -> np.ndarray:
        np.subtract(255, image, out=image)
        return image

    assert probe_operator(invert_in_place, photos).verdict == "linear"  # affine: 255 - x
    for photo, copy in zip(photos, kept, strict=True):
        np.testing.assert_array_equal(photo, copy)


def test_public_names():
    import img2img_filters
    from img2img_filters.certificate import fidelity_certificate

    assert img2img_filters.probe_operator is probe_operator
    assert img2img_filters.fidelity_certificate is fidelity_certificate


def test_report_is_frozen(photos):
    report = probe_operator(gamma, photos)
    assert isinstance(report, ProbeReport)
    with pytest.raises(AttributeError):
        report.verdict = "linear"


# -- pair folders and the command line ---------------------------------------------------------
def write_pairs(root, photos, operator):
    (root / "in" / "sub").mkdir(parents=True)
    (root / "out" / "sub").mkdir(parents=True)
    for index, photo in enumerate(photos):
        name = f"sub/p{index}" if index % 2 else f"p{index}"
        write_image(root / "in" / f"{name}.png", photo)
        write_image(root / "out" / f"{name}.png", operator(photo))


def test_read_pair_folders_matches_by_name_and_keeps_gray_targets(tmp_path, photos):
    write_pairs(tmp_path, photos, lambda x: cv2.cvtColor(x, cv2.COLOR_RGB2GRAY))
    pairs = read_pair_folders(tmp_path / "in", tmp_path / "out")
    assert len(pairs) == len(photos)
    for (image, target), photo in zip(
        pairs, [photos[0], photos[2], photos[1], photos[3]], strict=True
    ):
        np.testing.assert_array_equal(image, photo)  # sorted: p0, p2, sub/p1, sub/p3
        assert target.shape == (*photo.shape[:2], 1)
        np.testing.assert_allclose(target[..., 0], cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY) / 255)
    (tmp_path / "out" / "p0.png").rename(tmp_path / "out" / "q0.png")
    with pytest.raises(ValueError, match="no partner"):
        read_pair_folders(tmp_path / "in", tmp_path / "out")


def test_pairs_keep_16_bit_and_float_targets_at_their_depth(tmp_path, photos):
    """A gamma curve stored at 16 bits (PNG) and as float32 (.npy): read exactly, still pointwise."""
    curve = [(photo / 255.0) ** 0.5 for photo in photos]
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    for index, (photo, values) in enumerate(zip(photos, curve, strict=True)):
        cv2.imwrite(str(tmp_path / "in" / f"p{index}.png"), cv2.cvtColor(photo, cv2.COLOR_RGB2BGR))
        sixteen = np.round(values * 65535).astype(np.uint16)
        if index % 2:
            np.save(tmp_path / "out" / f"p{index}.npy", values.astype(np.float32))
        else:
            cv2.imwrite(str(tmp_path / "out" / f"p{index}.png"), sixteen[..., ::-1])
    pairs = read_pair_folders(tmp_path / "in", tmp_path / "out")
    for index, (_, target) in enumerate(pairs):
        if index % 2:
            np.testing.assert_array_equal(target, curve[index].astype(np.float32))
        else:
            np.testing.assert_array_equal(target, np.round(curve[index] * 65535) / 65535)
    assert probe_operator(pairs=pairs).verdict == "pointwise"


def test_cli_probe_filter_json_and_text(capsys):
    assert main(["probe", "--filter", "gaussian:ksize=3", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["verdict"] == "linear" and data["support_radius"] == 1
    assert main(["probe", "--filter", "median:ksize=3"]) == 0
    out = capsys.readouterr().out
    assert "verdict: local, non-linear, shift-invariant, radius 1 px" in out


def test_cli_probe_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["probe", "--help"])
    assert exit_info.value.code == 0 and "usage: img2img probe" in capsys.readouterr().out


def test_cli_probe_pairs_and_errors(tmp_path, capsys, large_photos):
    write_pairs(tmp_path, large_photos, gamma)
    assert main(["probe", "--data", str(tmp_path / "in"), "--targets", str(tmp_path / "out")]) == 0
    assert "verdict: pointwise" in capsys.readouterr().out
    for argv, message in [
        (["probe"], "give --filter SPEC"),
        (["probe", "--data", str(tmp_path / "in")], "--data and --targets go together"),
        (["probe", "--data", str(tmp_path / "none"), "--targets", str(tmp_path)], "--data:"),
        (["probe", "--filter", "nonsense"], "unknown filter"),
    ]:
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert err.startswith("img2img: error:") and message in err and err.count("\n") == 1
