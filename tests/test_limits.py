"""Bounds on every size an option, a filter spec or a checkpoint sets, and the errors they give."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

import img2img_filters.cli.train as cli_train
from img2img_filters import create_img2img_model
from img2img_filters.border import pad2d
from img2img_filters.checkpoint import CheckpointError, load_model, save_model
from img2img_filters.cli import main
from img2img_filters.export import export_model
from img2img_filters.filters import create_filter
from img2img_filters.filters.chain import _stage_kernel, compose_kernels
from img2img_filters.infer import apply_filter
from img2img_filters.limits import MAX_FILTER_STAGES
from img2img_filters.models.layers import BorderConv2d


@pytest.fixture
def no_training(monkeypatch: pytest.MonkeyPatch) -> None:
    """``train``'s handler fails the test if reached: the checks must stop it first."""

    def reached(args: object) -> int:
        raise AssertionError("the train handler ran: the arguments were not refused")

    monkeypatch.setattr(cli_train, "run", reached)


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--arch", "linear", "--option", "kernel_size=20001"], "kernel_size"),
        (["--arch", "linear", "--option", "depth=100000"], "depth"),
        (["--arch", "linear", "--option", "kernel_size=nan"], "kernel_size"),
        (["--arch", "linear", "--option", "kernel_size=2.5"], "kernel_size"),
        (["--seed", "99999999999999999999"], "argument --seed"),
        (["--crop-size", "1"], "argument --crop-size: expected an integer from 7"),
        (["--arch", "cann"], "arch must be one of ['box_cascade', 'can', 'clipped_linear'"),
        (["--option", "width=8"], "--option width"),
        (["--arch", "can", "--option", "width=1024", "--option", "depth=64"], "MAX_PARAMETERS"),
        (["--filter", "|".join(["gray"] * (MAX_FILTER_STAGES + 1))], "MAX_FILTER_STAGES"),
        (["--filter", "|".join(["gaussian:ksize=31"] * 4)], "MAX_SOLVE_BYTES"),
    ],
)
def test_train_refuses_out_of_bound_arguments_before_any_data_loads(
    argv: list[str], words: str, capsys: pytest.CaptureFixture, no_training: None
) -> None:
    try:
        code = main(["train", "--out", "unused", *argv])
    except SystemExit as exit:  # argparse's own checks exit; the later checks return
        code = exit.code
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("img2img train: error: ") and err.count("\n") == 1, err
    assert words in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("options", "error", "words"),
    [
        ({"kernel_size": 20001}, ValueError, "kernel_size must be an odd integer from 1 to 255"),
        ({"depth": 100000}, ValueError, "depth must be an integer from 1 to 64; got 100000"),
        ({"kernel_size": float("nan")}, TypeError, "kernel_size must be an odd integer"),
        ({"kernel_size": 2.5}, TypeError, "kernel_size must be an odd integer"),
        ({"width": 10**5000}, ValueError, "width must be an integer from 1 to 1024"),
        ({"bias": "no"}, TypeError, "bias must be a bool"),
    ],
)
def test_create_refuses_options_out_of_bounds(options: dict, error: type, words: str) -> None:
    with pytest.raises(error, match=words):
        create_img2img_model(3, 1, "linear", **options)


def test_create_counts_parameters_before_allocating() -> None:
    with pytest.raises(ValueError, match=r"594,768,001 parameters.*MAX_PARAMETERS"):
        create_img2img_model(3, 1, "can", width=1024, depth=64)


def _linear_checkpoint(folder: Path, **metadata: object) -> Path:
    path = folder / "model.safetensors"
    save_model(create_img2img_model(3, 1, "linear", kernel_size=3), path, **metadata)
    return path


def _rewrite_metadata(path: Path, target: Path, change) -> Path:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as handle:
        record = handle.metadata()["img2img"]
    save_file(load_file(str(path)), str(target), metadata={"img2img": change(record)})
    return target


def test_a_checkpoint_with_out_of_bound_options_is_refused_naming_file_and_field(
    tmp_path: Path,
) -> None:
    good = _linear_checkpoint(tmp_path)
    bad = _rewrite_metadata(
        good,
        tmp_path / "bad.safetensors",
        lambda text: json.dumps({**json.loads(text), "options": {"kernel_size": 20001}}),
    )
    with pytest.raises(CheckpointError, match=r"bad\.safetensors.*'options'.*kernel_size"):
        load_model(bad)


@pytest.mark.timeout(120)
def test_filter_chains_in_checkpoints_are_bounded_and_a_long_one_is_fast(tmp_path: Path) -> None:
    long = "|".join(["gaussian:ksize=31"] * 16)
    path = _linear_checkpoint(tmp_path, filter=long)
    spec = load_model(path).metadata["filter"]
    low, high = create_filter(spec, allow_files=False).output_range  # was 26 s, 5.5 GB
    assert low == pytest.approx(0.0, abs=1e-9) and high == pytest.approx(1.0, abs=1e-5)
    too_long = _rewrite_metadata(
        path,
        tmp_path / "forty.safetensors",
        lambda text: json.dumps({**json.loads(text), "filter": "|".join(["box:ksize=31"] * 40)}),
    )
    with pytest.raises(CheckpointError, match=r"forty\.safetensors.*'filter' chains 40 stages"):
        load_model(too_long)


def test_a_long_chain_kernel_composed_by_fft_equals_the_direct_composition() -> None:
    f = create_filter("|".join(["gaussian:ksize=7", "sobel:dx=1,dy=0,ksize=5", "box:ksize=9"] * 4))
    direct = torch.eye(3, dtype=torch.float64).view(3, 3, 1, 1)
    channels = 3
    for stage in f.stages:
        direct = compose_kernels(direct, _stage_kernel(stage, channels))
        channels = stage.out_channels(channels)
    assert f.kernel.shape == direct.shape == (1, 3, 73, 73)
    torch.testing.assert_close(f.kernel, direct, rtol=0, atol=1e-9 * direct.abs().max().item())


@pytest.mark.parametrize(
    ("name", "change", "words"),
    [
        ("nested", lambda text: "[" * 100_000 + "]" * 100_000, "nests 100000 levels"),
        (
            "digits",
            lambda text: text.replace('"in_channels": 3', '"in_channels": ' + "9" * 5000),
            "unreadable img2img metadata",
        ),
        (  # a valid record, but 2 MiB of it
            "large",
            lambda text: json.dumps({**json.loads(text), "note": "x" * (2 * 1024 * 1024)}),
            "MAX_METADATA_BYTES",
        ),
    ],
)
def test_hostile_metadata_json_is_a_checkpoint_error(
    tmp_path: Path, name: str, change, words: str
) -> None:
    target = _rewrite_metadata(
        _linear_checkpoint(tmp_path), tmp_path / f"{name}.safetensors", change
    )
    with pytest.raises(CheckpointError, match=rf"{name}\.safetensors.*{words}"):
        load_model(target)


def test_a_sparse_tensor_is_a_checkpoint_error(tmp_path: Path) -> None:
    path = tmp_path / "sparse.pt"
    torch.save({"conv1.weight": torch.zeros(1, 3, 3, 3).to_sparse()}, path)
    with pytest.raises(CheckpointError, match=r"sparse\.pt.*sparse"):
        load_model(path)


class _Call:
    def __reduce__(self) -> tuple:
        return (os.getcwd, ())


def test_a_pickle_refusal_names_the_refused_global(tmp_path: Path) -> None:
    path = tmp_path / "call.pt"
    torch.save({"state_dict": {}, "x": _Call()}, path)
    with pytest.raises(CheckpointError) as excinfo:
        load_model(path)
    message = str(excinfo.value)
    assert "GLOBAL" in message and "getcwd" in message and "()" not in message


def test_a_safetensors_file_named_pt_loads(tmp_path: Path) -> None:
    path = _linear_checkpoint(tmp_path)
    renamed = tmp_path / "model.pt"
    shutil.copy(path, renamed)
    x = torch.rand(1, 3, 9, 9)
    torch.testing.assert_close(load_model(renamed)(x), load_model(path)(x))


def test_save_refuses_non_finite_weights(tmp_path: Path) -> None:
    model = create_img2img_model(3, 1, "linear", kernel_size=3)
    with torch.no_grad():
        model.layers[0].weight[0, 0, 1, 1] = float("inf")
    with pytest.raises(ValueError, match=r"'layers\.0\.weight' contains NaN or Inf"):
        save_model(model, tmp_path / "m.safetensors")
    assert not (tmp_path / "m.safetensors").exists()


@pytest.mark.parametrize(
    ("spec", "param"),
    [
        ("laplacian:scale=1e308", "scale"),
        ("sobel:scale=-1e300", "scale"),
        ("sharpen:amount=1e308", "amount"),
        ("gaussian:sigma=1e300", "sigma"),
        ("clip:min=-1e308,max=1e308", "min"),
        ("threshold:maxval=1e308", "maxval"),
        ("kernel:rows=1e300 1;1 1", "rows"),
    ],
)
def test_filter_numbers_are_bounded_so_kernels_stay_finite(spec: str, param: str) -> None:
    with pytest.raises(ValueError, match=rf"parameter '{param}'.*1e\+06"):
        create_filter(spec)


@pytest.mark.parametrize("border", ["reflect101", "reflect", "replicate", "constant", "wrap"])
def test_a_dilation_wider_than_the_image_gives_the_padded_convolution(border: str) -> None:
    torch.manual_seed(0)
    for dilation in (5, 9, 13, 40):
        conv = BorderConv2d(2, 3, 3, border, dilation=dilation).double()
        x = torch.rand(1, 2, 7, 5, dtype=torch.float64)
        h = conv.halo
        expected = F.conv2d(pad2d(x, h, h, h, h, border), conv.weight, conv.bias, dilation=dilation)
        torch.testing.assert_close(conv(x), expected)


@pytest.mark.timeout(120)
def test_a_depth_20_can_applies_to_a_small_image(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = create_img2img_model(3, 1, "can", depth=20).eval()  # a 1,048,577-pixel field
    path = tmp_path / "deep.safetensors"
    save_model(model, path)
    model = load_model(path)
    image = np.random.default_rng(0).random((48, 40, 3), dtype=np.float32)
    out = apply_filter(image, model, device="cpu")
    with torch.no_grad():
        expected = model(torch.from_numpy(image).permute(2, 0, 1)[None])[0].permute(1, 2, 0)
    np.testing.assert_allclose(out.reshape(expected.shape), expected.numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="receptive field is 1048577 pixels"):
        export_model(model, tmp_path / "deep.onnx")


def test_export_refuses_unknown_extensions(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as excinfo:
        main(["export", str(tmp_path / "m.safetensors"), "-o", str(tmp_path / "x.tflite")])
    err = capsys.readouterr().err
    assert excinfo.value.code == 2 and err.count("\n") == 1
    assert "argument -o/--output" in err and ".onnx" in err and "x.tflite" in err
    model = create_img2img_model(3, 1, "linear", kernel_size=3)
    with pytest.raises(ValueError, match=r"format 'onnx' must end in \.onnx"):
        export_model(model, tmp_path / "x.tflite")
