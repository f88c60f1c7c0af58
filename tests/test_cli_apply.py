"""``img2img apply`` on files and folders, and ``apply_folder``: outputs, skips, failures."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from img2img_filters.checkpoint import save_model
from img2img_filters.cli import main
from img2img_filters.filters import create_filter
from img2img_filters.infer import apply_filter, apply_folder
from img2img_filters.models import create_img2img_model
from pngs import png_header_only


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    """A real photo, uint8 (48, 70, 3) RGB."""
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[100:148, 150:220])


@pytest.fixture
def can_path(tmp_path: Path) -> Path:
    model = create_img2img_model(3, 1, "can", depth=3)
    return save_model(model, tmp_path / "can.safetensors", filter="study-sobel")


@pytest.fixture
def linear_path(tmp_path: Path) -> Path:
    model = create_img2img_model(3, 1, "linear")
    with torch.no_grad():
        model.layers[0].weight.copy_(create_filter("study-sobel").kernel.float())
    return save_model(model, tmp_path / "run" / "model.safetensors", filter="study-sobel")


def _folder(root: Path, photo: np.ndarray) -> dict[str, Path]:
    """Good images in sub-folders and one bad file of each kind."""
    root.mkdir(parents=True)
    (root / "a" / "b").mkdir(parents=True)
    Image.fromarray(photo).save(root / "top.png")
    Image.fromarray(photo[:, ::-1]).save(root / "a" / "left.jpg", quality=95)
    Image.fromarray(photo[::-1]).save(root / "a" / "b" / "deep.png")
    cv2.imwrite(str(root / "a" / "sixteen.png"), (photo[..., ::-1].astype(np.uint16) * 257))
    rgba = np.dstack([photo, np.full(photo.shape[:2], 128, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(root / "a" / "alpha.png")
    bad = {
        "not_image": root / "notes.png",
        "zero_bytes": root / "a" / "empty.jpg",
        "truncated": root / "a" / "cut.jpg",
        "zero_dim": root / "a" / "b" / "flat.png",
        "bomb": root / "bomb.png",
    }
    bad["not_image"].write_text("this is not an image")
    bad["zero_bytes"].write_bytes(b"")
    full = root / "full.jpg.tmp"
    Image.fromarray(photo).save(full, format="JPEG", quality=90)
    bad["truncated"].write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    full.unlink()
    bad["zero_dim"].write_bytes(png_header_only(0, 10))
    bad["bomb"].write_bytes(png_header_only(50_000, 50_000))
    return bad


def _outputs(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_folder_run(
    tmp_path: Path, photo: np.ndarray, can_path: Path, capsys: pytest.CaptureFixture
) -> None:
    bad = _folder(tmp_path / "in", photo)
    out = tmp_path / "out"
    code = main(["apply", str(can_path), str(tmp_path / "in"), "-o", str(out), "--device", "cpu"])
    captured = capsys.readouterr()
    assert code == 1  # some images failed
    assert _outputs(out) == [
        "a/alpha.png",
        "a/b/deep.png",
        "a/left.png",
        "a/sixteen.png",
        "top.png",
    ]
    failure_lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(failure_lines) == len(bad)  # one line per bad file, no traceback
    assert "Traceback" not in captured.err
    for path in bad.values():
        assert sum(str(path) in line for line in failure_lines) == 1
    assert "done 5, skipped 0, failed 5 of 10 images" in captured.out
    for path in bad.values():
        assert str(path) in captured.out  # the summary lists the failures
    assert "too large" in captured.out and "zero dimension" in captured.out
    assert "truncated" in captured.out and "empty" in captured.out

    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.png")}
    code = main(["apply", str(can_path), str(tmp_path / "in"), "-o", str(out)])
    assert code == 1
    assert "done 0, skipped 5, failed 5" in capsys.readouterr().out
    assert before == {p: p.stat().st_mtime_ns for p in out.rglob("*.png")}

    for path in bad.values():
        path.unlink()
    code = main(["apply", str(can_path), str(tmp_path / "in"), "-o", str(out), "--overwrite"])
    assert code == 0
    assert "done 5, skipped 0, failed 0 of 5 images" in capsys.readouterr().out
    assert all(p.stat().st_mtime_ns >= before[p] for p in before)


def test_folder_formats_and_values(tmp_path: Path, photo: np.ndarray, linear_path: Path) -> None:
    (tmp_path / "in" / "sub").mkdir(parents=True)
    Image.fromarray(photo).save(tmp_path / "in" / "sub" / "p.png")
    run = linear_path.parent
    for format_ in ("npy", "tif"):
        out = tmp_path / format_
        args = ["apply", str(run), str(tmp_path / "in"), "-o", str(out), "--format", format_]
        args += ["--scale", "range"]
        code = main([*args, "--bit-depth", "16"])
        assert code == 0
    exact = np.load(tmp_path / "npy" / "sub" / "p.npy")
    from img2img_filters.checkpoint import load_model

    model = load_model(linear_path)
    np.testing.assert_allclose(exact, apply_filter(photo, model, fast=False), atol=1e-5)
    low, high = create_filter("study-sobel").output_range
    tif = cv2.imread(str(tmp_path / "tif" / "sub" / "p.tif"), cv2.IMREAD_UNCHANGED)
    assert tif.dtype == np.uint16 and tif.shape == photo.shape[:2]
    expected = np.clip(np.rint((exact.astype(np.float64) - low) / (high - low) * 65535), 0, 65535)
    assert np.abs(tif.astype(np.int64) - expected).max() <= 1
    # 32 bits: a float TIFF holding the raw values, for a folder and for one image.
    args = ["apply", str(run), str(tmp_path / "in"), "-o", str(tmp_path / "f32"), "--format", "tif"]
    assert main([*args, "--bit-depth", "32"]) == 0
    single = ["apply", str(run), str(tmp_path / "in" / "sub" / "p.png"), "--bit-depth", "32"]
    assert main([*single, "-o", str(tmp_path / "one.tif")]) == 0
    for path in (tmp_path / "f32" / "sub" / "p.tif", tmp_path / "one.tif"):
        values = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        assert values.dtype == np.float32
        np.testing.assert_array_equal(values, exact)
    assert main([*single, "-o", str(tmp_path / "one.png")]) == 1  # PNG has no float samples


def test_folder_batches_equal_single_images(tmp_path: Path, photo: np.ndarray) -> None:
    model = create_img2img_model(3, 1, "structured")
    (tmp_path / "in").mkdir()
    for i in range(5):
        Image.fromarray(np.roll(photo, 7 * i, axis=1)).save(tmp_path / "in" / f"{i}.png")
    Image.fromarray(photo[:40]).save(tmp_path / "in" / "other_size.png")
    one = apply_folder(model, tmp_path / "in", tmp_path / "one", format="npy", device="cpu")
    many = apply_folder(
        model, tmp_path / "in", tmp_path / "many", format="npy", batch=2, device="cpu"
    )
    assert one.ok and many.ok and len(many.done) == 6
    for name in _outputs(tmp_path / "one"):
        np.testing.assert_allclose(
            np.load(tmp_path / "many" / name), np.load(tmp_path / "one" / name), atol=1e-6
        )


def test_apply_folder_library(tmp_path: Path, photo: np.ndarray) -> None:
    model = create_img2img_model(3, 1, "study")
    (tmp_path / "in").mkdir()
    Image.fromarray(photo).save(tmp_path / "in" / "x.png")
    Image.fromarray(photo).save(tmp_path / "in" / "x.jpg")
    (tmp_path / "in" / "broken.png").write_bytes(b"\x89PNG\r\n")
    seen = []
    inside = tmp_path / "in" / "results"  # an output folder inside the input folder
    summary = apply_folder(
        model, tmp_path / "in", inside, device="cpu", on_failure=lambda p, r: seen.append(p)
    )
    assert [p.name for p in summary.done] == ["x.jpg", "x.png"]
    assert _outputs(inside) == ["x.jpg.png", "x.png.png"]  # same stem: no output overwritten
    assert seen == [tmp_path / "in" / "broken.png"] and not summary.ok
    again = apply_folder(model, tmp_path / "in", inside, device="cpu")
    assert again.total == 3 and len(again.skipped) == 2  # outputs are not read as inputs
    text = again.format()
    assert text.splitlines()[0].startswith("done 0, skipped 2, failed 1 of 3 images")
    with pytest.raises(ValueError, match="format must be one of"):
        apply_folder(model, tmp_path / "in", tmp_path / "o", format="jpg")
    with pytest.raises(ValueError, match=r"scale must be one of \['auto', 'range', 'abs'\]"):
        apply_folder(model, tmp_path / "in", tmp_path / "o", scale="loud")
    with pytest.raises(ValueError, match="batch must be a positive integer; got 0"):
        apply_folder(model, tmp_path / "in", tmp_path / "o", batch=0)
    with pytest.raises(FileNotFoundError):
        apply_folder(model, tmp_path / "nowhere", tmp_path / "o")


def test_single_image(
    tmp_path: Path, photo: np.ndarray, linear_path: Path, capsys: pytest.CaptureFixture
) -> None:
    Image.fromarray(photo).save(tmp_path / "p.png")
    for flag, name in (("--fast", "fast.npy"), ("--no-fast", "net.npy")):
        code = main(
            ["apply", str(linear_path), str(tmp_path / "p.png"), "-o", str(tmp_path / name), flag]
        )
        assert code == 0
        assert f"wrote {tmp_path / name} (70x48)" in capsys.readouterr().out
    np.testing.assert_allclose(
        np.load(tmp_path / "fast.npy"), np.load(tmp_path / "net.npy"), atol=1e-5
    )
    code = main(["apply", str(linear_path), str(tmp_path / "p.png"), "-o", str(tmp_path / "q")])
    assert code == 0 and (tmp_path / "q.png").is_file()
    png = cv2.imread(str(tmp_path / "q.png"), cv2.IMREAD_UNCHANGED)
    assert png.dtype == np.uint8 and png.shape == photo.shape[:2]


def _one_line_error(capsys: pytest.CaptureFixture, *words: str) -> str:
    err = capsys.readouterr().err
    assert err.startswith("img2img: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for word in words:
        assert word in err, err
    return err


def test_errors_are_one_line(
    tmp_path: Path, photo: np.ndarray, can_path: Path, capsys: pytest.CaptureFixture
) -> None:
    Image.fromarray(photo).save(tmp_path / "p.png")
    image, out = str(tmp_path / "p.png"), str(tmp_path / "o.png")
    assert main(["apply", str(can_path), image, "-o", out, "--tile", "4"]) == 1
    _one_line_error(capsys, "tile", "(9 pixels)", "got 4")  # depth 3: dilations 1, 2, 1
    assert main(["apply", str(can_path), str(tmp_path / "missing.png"), "-o", out]) == 1
    _one_line_error(capsys, "missing.png", "not found")
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    assert main(["apply", str(can_path), str(tmp_path / "bad.jpg"), "-o", out]) == 1
    _one_line_error(capsys, "bad.jpg")
    assert main(["apply", str(can_path), image, "-o", out, "--max-pixels", "100"]) == 1
    _one_line_error(capsys, "p.png", "more than the limit of 100")
    assert main(["apply", str(can_path), image, "-o", out, "--format", "npy"]) == 1
    _one_line_error(capsys, "--format npy disagrees")
    assert main(["apply", str(can_path), image, "-o", out, "--fast"]) == 1
    _one_line_error(capsys, "fast=True needs a linear model")


def test_unknown_architecture_checkpoint(
    tmp_path: Path, photo: np.ndarray, capsys: pytest.CaptureFixture
) -> None:
    from safetensors.torch import save_file

    model = create_img2img_model(3, 1, "study")
    record = {"format": "img2img", "arch": "transformer", "in_channels": 3, "out_channels": 1}
    path = tmp_path / "odd.safetensors"
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()},
        str(path),
        metadata={"img2img": json.dumps(record)},
    )
    Image.fromarray(photo).save(tmp_path / "p.png")
    code = main(["apply", str(path), str(tmp_path / "p.png"), "-o", str(tmp_path / "o.png")])
    assert code == 1
    _one_line_error(capsys, "odd.safetensors", "transformer")
    (tmp_path / "run").mkdir()
    assert main(["apply", str(tmp_path / "run"), str(tmp_path / "p.png"), "-o", "x.png"]) == 1
    _one_line_error(capsys, "has no model.safetensors")


def test_scale_spreads_a_signed_output_over_the_grey_scale(
    tmp_path: Path, large_photo: np.ndarray, linear_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The study's Sobel on a real photo: ``auto`` (its default) uses most of 0..255."""
    Image.fromarray(large_photo).save(tmp_path / "p.png")
    image, run = str(tmp_path / "p.png"), str(linear_path.parent)
    assert main(["apply", run, image, "-o", str(tmp_path / "raw.npy")]) == 0
    raw = np.load(tmp_path / "raw.npy").astype(np.float64)
    for scale in ("range", "auto", "abs"):
        assert (
            main(["apply", run, image, "-o", str(tmp_path / f"{scale}.png"), "--scale", scale]) == 0
        )
    assert main(["apply", run, image, "-o", str(tmp_path / "default.png")]) == 0
    png = {
        name: cv2.imread(str(tmp_path / f"{name}.png"), cv2.IMREAD_UNCHANGED).astype(np.int64)
        for name in ("range", "auto", "abs", "default")
    }
    spread = {name: np.ptp(np.percentile(v, [1, 99])) for name, v in png.items()}
    assert spread["range"] < 100 and spread["auto"] > 240, spread  # flat grey vs. the full scale
    np.testing.assert_array_equal(png["default"], png["auto"])
    low, high = np.percentile(raw, [1, 99])
    expected = np.clip(np.rint((raw - low) / (high - low) * 255), 0, 255)
    assert np.abs(png["auto"] - expected).max() <= 1
    top = max(map(abs, create_filter("study-sobel").output_range))
    assert np.abs(png["abs"] - np.clip(np.rint(np.abs(raw) / top * 255), 0, 255)).max() <= 1
    # A folder: each image its own auto scale; .npy keeps the raw values.
    (tmp_path / "in").mkdir()
    Image.fromarray(large_photo).save(tmp_path / "in" / "p.png")
    assert main(["apply", run, str(tmp_path / "in"), "-o", str(tmp_path / "out")]) == 0
    np.testing.assert_array_equal(
        cv2.imread(str(tmp_path / "out" / "p.png"), cv2.IMREAD_UNCHANGED), png["auto"]
    )
    # A lossy format for a signed output: written, with a warning.
    with caplog.at_level("WARNING"):
        assert main(["apply", run, image, "-o", str(tmp_path / "edges.jpg")]) == 0
    assert "lossy" in caplog.text and (tmp_path / "edges.jpg").is_file()
    with caplog.at_level("WARNING"):
        caplog.clear()
        assert main(["apply", run, image, "-o", str(tmp_path / "edges2.png")]) == 0
    assert "lossy" not in caplog.text
