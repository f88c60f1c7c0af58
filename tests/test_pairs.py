"""Photo pairs: matched by name, skipped with reasons, targets kept at their depth, trained on."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as skdata

from img2img_filters import create_img2img_model, train_model
from img2img_filters.cli import main
from img2img_filters.data import load_filtered_dataset
from img2img_filters.data.pairs import match_pairs
from img2img_filters.data.targets import read_target
from img2img_filters.metrics import compute_metrics

SIZE = (40, 56)  # (H, W) of the test photos


@functools.cache
def _shrunk() -> tuple[np.ndarray, ...]:
    photos = [skdata.astronaut(), skdata.coffee(), skdata.chelsea(), skdata.rocket()]
    return tuple(cv2.resize(p, SIZE[::-1], interpolation=cv2.INTER_AREA) for p in photos)


def _photos() -> list[np.ndarray]:
    """Four real photos from scikit-image, shrunk to 40x56 RGB uint8 (fresh copies)."""
    return [p.copy() for p in _shrunk()]


def _write_png(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR) if rgb.ndim == 3 else rgb
    assert cv2.imwrite(str(path), pixels)


def _gray(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    """Inputs a, sub/b, c (no target), e (size mismatch); targets a, sub/b, d (no input), e."""
    inputs, targets = tmp_path / "in", tmp_path / "out"
    photos = _photos()
    _write_png(inputs / "a.png", photos[0])
    _write_png(inputs / "sub" / "b.png", photos[1])
    _write_png(inputs / "c.png", photos[2])
    _write_png(inputs / "e.png", photos[3])
    _write_png(targets / "a.png", _gray(photos[0]))
    _write_png(targets / "sub" / "b.png", _gray(photos[1]))
    _write_png(targets / "d.png", _gray(photos[2]))
    _write_png(targets / "e.png", _gray(photos[3])[:30])
    return inputs, targets


def test_pairs_match_by_relative_name_and_skip_the_rest_with_reasons(folders, notices) -> None:
    inputs, targets = folders
    pairs, skipped = match_pairs(inputs, targets)
    assert [name for name, _, _ in pairs] == ["a", "e", "sub/b"]
    assert pairs[2][1] == inputs / "sub" / "b.png" and pairs[2][2] == targets / "sub" / "b.png"
    assert ("c", "an input without a target") in skipped
    assert ("d", "a target without an input") in skipped
    with notices("skipped"):
        train, val = load_filtered_dataset(
            data=inputs, targets=targets, crop_size=16, val_fraction=0
        )
    reasons = dict(train.skipped)
    assert "input is 40x56, target 30x56" in reasons["e"]
    assert set(reasons) == {"c", "d", "e"} and train.skipped == val.skipped
    assert sorted(train.names) == ["a", "sub/b"]


def test_a_target_with_other_channels_than_most_is_skipped(folders, notices) -> None:
    inputs, targets = folders
    _write_png(inputs / "f.png", _photos()[3])
    _write_png(targets / "f.png", _photos()[3])  # RGB, the others gray
    with notices("f: target has 3 channels, most have 1"):
        train, _ = load_filtered_dataset(data=inputs, targets=targets, crop_size=16, val_fraction=0)
    assert "f" not in train.names and train.out_channels == 1


def test_no_match_at_all_names_files_of_each_side(tmp_path: Path) -> None:
    photo = _photos()[0]
    _write_png(tmp_path / "in" / "cat.png", photo)
    _write_png(tmp_path / "out" / "dog.png", _gray(photo))
    with pytest.raises(ValueError, match=r"no input .* has a target") as info:
        load_filtered_dataset(data=tmp_path / "in", targets=tmp_path / "out")
    assert "inputs: cat" in str(info.value) and "targets: dog" in str(info.value)


def test_pairs_refuse_a_filter_and_need_an_input_folder(folders) -> None:
    inputs, targets = folders
    with pytest.raises(ValueError, match="filter and targets exclude each other"):
        load_filtered_dataset(data=inputs, targets=targets, filter="study-sobel")
    with pytest.raises(ValueError, match="data must be the folder of input photos"):
        load_filtered_dataset(data="samples", targets=targets)


def _depth_targets(photo: np.ndarray) -> dict[str, np.ndarray]:
    """One gray target per depth: values an 8-bit file could not hold."""
    gray = _gray(photo).astype(np.float64)
    wide = (gray * 257 + np.arange(gray.shape[1]) % 200).astype(np.uint16)
    return {
        "png8": _gray(photo),
        "png16": wide,
        "tif32": (gray / 255.0 - 0.3).astype(np.float32) * 3.0,
        "tif32rgb": photo.astype(np.float32) / 7.0 - 5.0,
        "npy": np.dstack([gray / 100.0] * 3).astype(np.float32),
    }


@pytest.mark.parametrize("kind", ["png8", "png16", "tif32", "tif32rgb", "npy"])
def test_targets_are_kept_at_their_own_depth(tmp_path: Path, kind: str) -> None:
    photo = _photos()[1]
    expected = _depth_targets(photo)[kind]
    _write_png(tmp_path / "in" / "x.png", photo)
    folder = tmp_path / "out"
    folder.mkdir()
    if kind == "npy":
        np.save(folder / "x.npy", expected)
    elif kind == "tif32rgb":  # OpenCV writes BGR
        cv2.imwrite(str(folder / "x.tif"), np.ascontiguousarray(expected[..., ::-1]))
    else:
        cv2.imwrite(str(folder / ("x.tif" if kind == "tif32" else "x.png")), expected)
    read = read_target(next(folder.iterdir()))
    assert read.dtype == expected.dtype
    np.testing.assert_array_equal(read.reshape(expected.shape), expected)
    _, val = load_filtered_dataset(
        data=tmp_path / "in", targets=folder, crop_size=16, val_fraction=0
    )
    scale = {"png8": 255.0, "png16": 65535.0}.get(kind, 1.0)
    store = expected.reshape(*SIZE, -1).astype(np.float64) / scale
    _, targets = val.batch(np.arange(len(val)))
    positions = [(y, x) for y in (0, 16) for x in (0, 16, 32)]  # the 16-pixel grid of 40x56
    assert len(val) == len(positions)
    for item, (y, x) in enumerate(positions):
        crop = store[y : y + 16, x : x + 16].transpose(2, 0, 1)
        np.testing.assert_allclose(targets[item].numpy(), crop, rtol=1e-7, atol=0)
    metrics = compute_metrics(create_img2img_model(3, store.shape[2], "linear"), val)
    if kind in ("png8", "png16"):
        assert metrics["data_range"] == 1.0 and metrics["data_range_source"] == "filter"
    else:  # floats: measured on the data
        assert metrics["data_range"] == pytest.approx(
            float(expected.max() - expected.min()), rel=1e-6
        )


def test_npy_targets_are_checked_before_use(tmp_path: Path) -> None:
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.save(tmp_path / "four.npy", np.zeros((4, 4, 4), np.float32))
    np.save(tmp_path / "i64.npy", np.zeros((4, 4), np.int64))
    for name, reason in (("obj", "dtype object"), ("four", "shape"), ("i64", "dtype int64")):
        with pytest.raises(Exception, match=reason):
            read_target(tmp_path / f"{name}.npy")
    np.save(tmp_path / "good.npy", np.zeros((4, 4, 3), np.float32))
    raw = (tmp_path / "good.npy").read_bytes()
    (tmp_path / "cut.npy").write_bytes(raw[:-10])
    with pytest.raises(Exception, match="data bytes"):
        read_target(tmp_path / "cut.npy")


def test_inputs_gray_rgba_and_16_bit_are_read(tmp_path: Path) -> None:
    photo = _photos()[2]
    gray = _gray(photo)
    inputs, targets = tmp_path / "in", tmp_path / "t"
    inputs.mkdir()
    Image.fromarray(gray).save(inputs / "g.png")
    Image.fromarray(np.dstack([photo, np.full(SIZE, 128, np.uint8)])).save(inputs / "r.png")
    cv2.imwrite(str(inputs / "w.png"), (photo[..., ::-1].astype(np.uint16) * 257 + 3))
    for name in "grw":
        _write_png(targets / f"{name}.png", gray)
    _, val = load_filtered_dataset(data=inputs, targets=targets, crop_size=40, val_fraction=0)
    by_name = dict(zip(val.names, val.photos, strict=True))
    np.testing.assert_array_equal(by_name["g"], np.dstack([gray] * 3))
    np.testing.assert_array_equal(by_name["r"], photo)  # alpha dropped
    assert by_name["w"].dtype == np.uint16  # a 16-bit input keeps its depth
    np.testing.assert_array_equal(by_name["w"], photo.astype(np.uint16) * 257 + 3)
    inputs_w, _ = val.batch([val.names.index("w")])
    np.testing.assert_allclose(
        inputs_w[0].numpy(),
        (photo[:40, :40].astype(np.float64) * 257 + 3).transpose(2, 0, 1) / 65535,
        rtol=1e-7,
    )


def _pointwise_folders(tmp_path: Path, count: int = 6) -> tuple[Path, Path]:
    """Pairs whose target is the input's red channel: any misaligned crop would show."""
    inputs, targets = tmp_path / "in", tmp_path / "out"
    rng = np.random.default_rng(0)
    for index, photo in enumerate(_photos() * 2):
        if index >= count:
            break
        photo = np.roll(photo, int(rng.integers(0, 20)), axis=1)
        _write_png(inputs / f"p{index}.jpg", photo)
        decoded = cv2.cvtColor(cv2.imread(str(inputs / f"p{index}.jpg")), cv2.COLOR_BGR2RGB)
        _write_png(targets / f"p{index}.png", decoded[..., 0])
    return inputs, targets


def test_random_crops_are_aligned_new_each_epoch_and_split_by_pair(tmp_path: Path) -> None:
    inputs, targets = _pointwise_folders(tmp_path)
    train, val = load_filtered_dataset(
        data=inputs, targets=targets, crop_size=16, val_fraction=0.34
    )
    assert not set(train.names) & set(val.names) and len(val.names) == 2
    first = train.batch(np.arange(len(train)))
    for _ in range(2):
        inputs_t, targets_t = train.batch(np.arange(len(train)))
        torch.testing.assert_close(targets_t[:, 0], inputs_t[:, 0], rtol=0, atol=0)
    train.set_epoch(1)
    second = train.batch(np.arange(len(train)))
    torch.testing.assert_close(second[1][:, 0], second[0][:, 0], rtol=0, atol=0)
    assert not torch.equal(first[0], second[0])  # new crops


def test_train_model_learns_pairs_end_to_end(tmp_path: Path) -> None:
    inputs, targets = _pointwise_folders(tmp_path)
    train, val = load_filtered_dataset(
        data=inputs, targets=targets, crop_size=16, val_fraction=0.34
    )
    model = create_img2img_model(3, 1, "linear", kernel_size=1)
    before = compute_metrics(model, val)["l1"]
    train_losses, val_losses = train_model(
        model, train, val, max_epochs=3, batch_size=8, learning_rate=0.05, progress=False
    )
    assert len(train_losses) == 3 and val_losses[-1] < before


def test_cli_train_with_targets(tmp_path: Path, capsys) -> None:
    inputs, targets = _pointwise_folders(tmp_path)
    out = tmp_path / "run"
    argv = ["train", "--data", str(inputs), "--targets", str(targets), "--epochs", "1"]
    argv += ["--arch", "linear", "--option", "kernel_size=1", "--crop-size", "16"]
    code = main([*argv, "--out", str(out), "--no-progress", "--no-figures"])
    assert code == 0, capsys.readouterr().err
    config = json.loads((out / "config.json").read_text())
    assert config["data"]["targets"] == str(targets)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["filter"] == f"pairs:{targets}" and metrics["data_range"] == 1.0
    capsys.readouterr()
    assert main(["eval", str(out)]) == 1  # folders recorded in a model are not read
    assert "pass --data INPUTS --targets TARGETS" in capsys.readouterr().err
    assert main(["eval", str(out), "--data", str(inputs), "--targets", str(targets), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["psnr"] == pytest.approx(metrics["psnr"], rel=1e-9)
    code = main(["train", *argv[1:], "--filter", "study-sobel", "--out", str(tmp_path / "x")])
    assert code == 1 and "exclude each other" in capsys.readouterr().err
