"""ONNX and TorchScript exports: dynamic sizes, equal to PyTorch, for every architecture."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from img2img_filters.checkpoint import save_model
from img2img_filters.cli import main
from img2img_filters.export import (
    EXPORT_SUFFIXES,
    MissingDependencyError,
    check_onnx,
    export_model,
    export_onnx,
    export_torchscript,
    min_input_size,
)
from img2img_filters.models import create_img2img_model, get_arch, list_archs

ARCHS = [entry.name for entry in list_archs()]
SIZES = [(2, 40, 57), (1, 71, 64)]


def _model(arch: str, border: str | None) -> torch.nn.Module:
    options = {} if border is None else {"border": border}
    model = create_img2img_model(3, 2, arch, **options)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.copy_(torch.rand(module.num_features, generator=generator) / 5)
                module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
    return model.eval()


def _expected(model: torch.nn.Module, batch: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return model(batch).numpy()


#: Architectures whose models ONNX cannot express for every size (their export refuses).
NOT_ONNX = [arch for arch in ARCHS if not getattr(get_arch(arch).factory, "exports_to_onnx", True)]
#: Every architecture that exports to ONNX, with each border it takes.
ONNX_CASES = [
    (arch, border)
    for arch in ARCHS
    if arch not in NOT_ONNX
    for border in (None, "wrap", "reflect")
    if border is None or "border" in get_arch(arch).defaults
]


def test_every_architecture_has_an_onnx_case() -> None:
    assert {arch for arch, _ in ONNX_CASES} | set(NOT_ONNX) == set(ARCHS)
    assert NOT_ONNX == ["box_cascade", "domain_transform", "equalisation", "stretch"]


@pytest.mark.parametrize("arch", NOT_ONNX)
def test_onnx_export_refuses_what_it_cannot_express_and_names_torchscript(
    arch: str, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match=r"cannot be exported to ONNX.*TorchScript"):
        export_onnx(_model(arch, None), tmp_path / "model.onnx")
    assert not (tmp_path / "model.onnx").exists()


@pytest.mark.parametrize(("arch", "border"), ONNX_CASES)
def test_onnx_equals_pytorch(arch: str, border: str | None, tmp_path: Path) -> None:
    import onnx
    import onnxruntime

    model = _model(arch, border)
    path = export_onnx(model, tmp_path / "model.onnx")
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    metadata = {entry.key: entry.value for entry in proto.metadata_props}
    assert metadata == {"min_input_size": str(min_input_size(model)), "arch": arch}
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for shape in SIZES:
        batch = torch.rand(*shape[:1], 3, *shape[1:])
        (output,) = session.run(None, {"image": batch.numpy()})
        expected = _expected(model, batch)
        assert output.shape == expected.shape
        np.testing.assert_allclose(output, expected, rtol=0, atol=1e-5)
    assert check_onnx(model, path) <= 1e-5


@pytest.mark.parametrize("arch", ARCHS)
def test_torchscript_equals_pytorch(arch: str, tmp_path: Path) -> None:
    model = _model(arch, None)
    loaded = torch.jit.load(str(export_torchscript(model, tmp_path / "model.pt")))
    for shape in SIZES:
        batch = torch.rand(*shape[:1], 3, *shape[1:])
        with torch.no_grad():
            output = loaded(batch).numpy()
        np.testing.assert_allclose(output, _expected(model, batch), rtol=0, atol=1e-5)


def test_smallest_input(tmp_path: Path) -> None:
    model = _model("can", None)
    size = min_input_size(model)
    assert size == 17  # receptive field 33
    loaded = torch.jit.load(str(export_torchscript(model, tmp_path / "model.pt")))
    batch = torch.rand(1, 3, size, size + 3)
    with torch.no_grad():
        np.testing.assert_allclose(loaded(batch).numpy(), _expected(model, batch), atol=1e-5)
    assert min_input_size(_model("linear", None)) == 3
    assert min_input_size(_model("study", None)) == 4


def test_missing_onnx_says_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    model = _model("linear", None)
    monkeypatch.setitem(sys.modules, "onnx", None)  # `import onnx` now raises ImportError
    with pytest.raises(MissingDependencyError, match=r"pip install 'img2img-filters\[export\]'"):
        export_onnx(model, tmp_path / "model.onnx")
    with pytest.raises(ImportError, match="'onnx'"):
        export_model(model, tmp_path / "model.onnx", "onnx")
    save_model(model, tmp_path / "model.safetensors")
    code = main(["export", str(tmp_path / "model.safetensors"), "-o", str(tmp_path / "m.onnx")])
    err = capsys.readouterr().err
    assert code == 1
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "img2img-filters[export]" in err


def test_missing_onnxruntime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = _model("linear", None)
    path = export_onnx(model, tmp_path / "model.onnx")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(MissingDependencyError, match=r"'onnxruntime'.*img2img-filters\[export\]"):
        check_onnx(model, path)


def test_bad_arguments(tmp_path: Path) -> None:
    model = _model("linear", None)
    with pytest.raises(ValueError, match="format must be one of"):
        export_model(model, tmp_path / "m.x", "tflite")
    with pytest.raises(ValueError, match="opset must be an integer >= 11; got 9"):
        export_onnx(model, tmp_path / "m.onnx", opset=9)
    with pytest.raises(ValueError, match="opset applies to ONNX only"):
        export_model(model, tmp_path / "m.pt", "torchscript", opset=17)
    with pytest.raises(TypeError, match=r"model must be a torch\.nn\.Module"):
        export_torchscript("model", tmp_path / "m.pt")


def test_export_command(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    model = _model("can", None)
    save_model(model, tmp_path / "run" / "model.safetensors", filter="study-sobel")
    out = tmp_path / "can.onnx"
    assert main(["export", str(tmp_path / "run"), "-o", str(out), "--opset", "18"]) == 0
    line = capsys.readouterr().out
    assert str(out) in line and "at least 17x17" in line and "ONNX Runtime matches" in line
    script = tmp_path / "can.pt"
    assert (
        main(["export", str(tmp_path / "run"), "--format", "torchscript", "-o", str(script)]) == 0
    )
    assert torch.jit.load(str(script))(torch.rand(1, 3, 20, 30)).shape == (1, 2, 20, 30)


def test_onnx_records_the_filter_and_its_output_range(tmp_path: Path) -> None:
    import onnx

    from img2img_filters.checkpoint import load_model
    from img2img_filters.filters import create_filter

    save_model(_model("linear", None), tmp_path / "run" / "model.safetensors", filter="sobel:dx=1")
    model = load_model(tmp_path / "run")
    path = export_onnx(model, tmp_path / "model.onnx")
    metadata = {entry.key: entry.value for entry in onnx.load(str(path)).metadata_props}
    assert metadata["filter"] == "sobel:dx=1"
    low, high = create_filter("sobel:dx=1").output_range
    assert low < 0 < high  # a signed output: the range is needed to display it
    assert json.loads(metadata["output_range"]) == [low, high]
    assert metadata["arch"] == "linear"
    assert metadata["min_input_size"] == str(min_input_size(model))


@pytest.mark.parametrize("name", ["x.tflite", "x.onnx.bak", "x"])
def test_export_command_refuses_unknown_extensions(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    save_model(_model("linear", None), tmp_path / "model.safetensors")
    with pytest.raises(SystemExit) as exit:
        main(["export", str(tmp_path / "model.safetensors"), "-o", str(tmp_path / name)])
    err = capsys.readouterr().err
    assert exit.value.code == 2 and err.count("\n") == 1
    assert "argument -o/--output: expected a file ending in .onnx, .pt, .pth, .ts" in err
    assert name in err
    assert not (tmp_path / name).exists()


def test_export_command_suffixes_are_the_librarys() -> None:
    from img2img_filters.cli.common import export_path

    for suffixes in EXPORT_SUFFIXES.values():
        for suffix in suffixes:
            assert export_path("m" + suffix.upper()) == "m" + suffix.upper()
