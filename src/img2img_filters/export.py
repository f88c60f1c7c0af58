"""Export a trained model to ONNX or TorchScript, with dynamic height and width.

Both exports trace the model's inference copy (eval mode, normalisations folded
into the convolutions, see :func:`img2img_filters.infer.prepare_for_inference`) on an
example ``(1, 3, S, S)`` batch, ``S`` 64 or more, larger than every layer's padding
(a model whose receptive field passes 1023 pixels is refused: :data:`MAX_EXPORT_SIZE`).
Batch size, height and width stay dynamic: the
padding of :class:`~img2img_filters.models.BorderConv2d` is recorded as ONNX ``Pad``
(reflect, edge, constant) or as slices, flips and concatenations, whose sizes
are read from the input at run time.

One limit comes with tracing: the graph pads the way it does for images larger
than every layer's padding, so an exported model needs inputs of at least
:func:`min_input_size` pixels a side (17 for the default ``can``, 2 to 4 for the
others); :func:`img2img_filters.apply_filter` has no such limit.

``onnx`` and ``onnxruntime`` are optional (``pip install 'img2img-filters[export]'``)
and imported only here, when needed.
"""

from __future__ import annotations

import importlib
import json
import os
import warnings
from pathlib import Path
from types import ModuleType

import numpy as np
import torch
from torch import nn

from img2img_filters.infer import model_output_range, prepare_for_inference
from img2img_filters.models import receptive_field

__all__ = [
    "EXPORT_FORMATS",
    "EXPORT_SUFFIXES",
    "MAX_EXPORT_SIZE",
    "MissingDependencyError",
    "check_onnx",
    "export_model",
    "export_onnx",
    "export_torchscript",
    "min_input_size",
    "onnx_metadata",
]

#: The formats of :func:`export_model` and their usual extensions.
EXPORT_FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}
#: The file extensions each format may be written to.
EXPORT_SUFFIXES = {"onnx": (".onnx",), "torchscript": (".pt", ".pth", ".ts")}

#: The ONNX opset used when none is given.
DEFAULT_OPSET = 17

_EXAMPLE_SIZE = 64
#: The largest :func:`min_input_size` of an exported model (its receptive field at most
#: 1023 pixels): the export traces the model on an image of that side.
MAX_EXPORT_SIZE = 512
_INSTALL_HINT = (
    "pip install 'img2img-filters[export]' (from a source checkout: pip install -e '.[export]')"
)


class MissingDependencyError(ImportError, RuntimeError):
    """An optional package that a feature needs is not installed.

    Also a ``RuntimeError``, so that the command line reports it on one line.
    """


def _require(name: str, feature: str) -> ModuleType:
    """Import an optional package or raise an error that says how to install it."""
    try:
        return importlib.import_module(name)
    except ImportError:
        raise MissingDependencyError(
            f"{feature} needs the optional package {name!r}, which is not installed; "
            f"install it with: {_INSTALL_HINT}"
        ) from None


def min_input_size(model: nn.Module) -> int:
    """The smallest height and width an exported model is guaranteed to accept.

    The traced graph pads every layer the way it pads images larger than that
    layer's padding (a reflection must not reach past the opposite edge). No
    layer pads by more than the model's total reach, ``receptive_field // 2``.

    Args:
        model: The model exported.

    Returns:
        ``receptive_field(model) // 2 + 1``.
    """
    return receptive_field(model) // 2 + 1


def _prepared(model: nn.Module) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    return prepare_for_inference(model).cpu()


def _example(model: nn.Module) -> torch.Tensor:
    """The traced batch: large enough that no layer's padding reaches past the opposite edge.

    A graph traced on a smaller image would record that image's border indices as
    constants, right for no other size.

    Raises:
        ValueError: If the model needs inputs wider than :data:`MAX_EXPORT_SIZE`.
    """
    need = min_input_size(model)
    if need > MAX_EXPORT_SIZE:
        raise ValueError(
            f"cannot export a model whose receptive field is {2 * need - 1} pixels: the exported "
            f"graph would need inputs of at least {need}x{need}; the limit is "
            f"{MAX_EXPORT_SIZE} (img2img_filters.export.MAX_EXPORT_SIZE); apply it with `img2img apply`"
        )
    side = max(_EXAMPLE_SIZE, need + 1)
    generator = torch.Generator().manual_seed(0)
    return torch.rand(1, 3, side, side, generator=generator)


def export_onnx(
    model: nn.Module, path: str | os.PathLike[str], *, opset: int | None = None
) -> Path:
    """Export a model to ONNX with dynamic batch size, height and width, and check it.

    The graph has one input ``"image"`` ``(B, 3, H, W)`` float32 RGB in [0, 1] and
    one output ``"output"`` ``(B, C_out, H, W)``; ``H`` and ``W`` must be at least
    :func:`min_input_size` (stored in the model's metadata as ``min_input_size``).
    The file is checked with ``onnx.checker``. It is exported with PyTorch's
    TorchScript-based exporter (``dynamo=False``), which keeps every border mode
    dynamic (the ``torch.export``-based one cannot yet express the ``wrap`` border
    with a dynamic size).

    Args:
        model: The model.
        path: The ``.onnx`` file to write.
        opset: The ONNX opset (default :data:`DEFAULT_OPSET`; at least 11).

    Returns:
        The path written.

    Raises:
        MissingDependencyError: If ``onnx`` is not installed (an ``ImportError``).
        ValueError: For an opset below 11.
    """
    onnx = _require("onnx", "ONNX export")
    opset = DEFAULT_OPSET if opset is None else opset
    if isinstance(opset, bool) or not isinstance(opset, int) or opset < 11:
        raise ValueError(f"opset must be an integer >= 11; got {opset!r}")
    if not getattr(model, "exports_to_onnx", True):
        raise ValueError(
            f"{type(model).__name__} cannot be exported to ONNX: its recursive sweeps along "
            "each row and column would be fixed to one image size there; export it to "
            "TorchScript instead (format 'torchscript', a .pt file), which runs at every size"
        )
    prepared = _prepared(model)
    example = _example(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    axes = {0: "batch", 2: "height", 3: "width"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecation and tracer notes about shape checks
        torch.onnx.export(
            prepared,
            (example,),
            str(path),
            dynamo=False,
            opset_version=opset,
            input_names=["image"],
            output_names=["output"],
            dynamic_axes={"image": axes, "output": axes},
        )
    proto = onnx.load(str(path))
    for key, value in onnx_metadata(model).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    return path


def onnx_metadata(model: nn.Module) -> dict[str, str]:
    """What an exported ONNX file records of its model (its ``metadata_props``).

    Args:
        model: The model exported.

    Returns:
        ``min_input_size`` always; ``arch`` for a registered architecture; for a model that
        records the filter it learned (a checkpoint's ``metadata["filter"]``), ``filter``
        (its spec) and ``output_range`` (``"[low, high]"``, JSON: the filter's output
        range, which maps outputs to display values as ``img2img apply`` does).
    """
    metadata = {"min_input_size": str(min_input_size(model))}
    config = getattr(model, "config", None)
    if isinstance(config, dict) and "arch" in config:
        metadata["arch"] = str(config["arch"])
    spec = (getattr(model, "metadata", None) or {}).get("filter")
    if isinstance(spec, str) and spec:
        metadata["filter"] = spec
        low, high = model_output_range(model)
        metadata["output_range"] = json.dumps([float(low), float(high)])
    return metadata


def export_torchscript(model: nn.Module, path: str | os.PathLike[str]) -> Path:
    """Export a model to TorchScript (traced), with dynamic batch size, height and width.

    Load it with ``torch.jit.load(path)``; it maps ``(B, 3, H, W)`` float32 to
    ``(B, C_out, H, W)`` for ``H, W >= min_input_size(model)``. (PyTorch marks
    TorchScript as deprecated in favour of ``torch.export``; it still loads in C++
    and in older PyTorch versions, which is why it is offered.)

    Args:
        model: The model.
        path: The file to write (``.pt``).

    Returns:
        The path written.
    """
    prepared = _prepared(model)
    example = _example(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(prepared, (example,), check_trace=False)
        torch.jit.save(traced, str(path))
    return path


def check_onnx(
    model: nn.Module,
    path: str | os.PathLike[str],
    sizes: tuple[tuple[int, int], ...] = ((48, 80), (97, 64)),
) -> float:
    """Run an exported ONNX file with ONNX Runtime and compare it with PyTorch.

    Args:
        model: The model the file was exported from.
        path: The ``.onnx`` file.
        sizes: ``(height, width)`` of the random test images.

    Returns:
        The largest absolute difference between ONNX Runtime's output and the model's.

    Raises:
        MissingDependencyError: If ``onnxruntime`` is not installed.
    """
    ort = _require("onnxruntime", "Running an ONNX model")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(1)
    model = model.eval()
    worst = 0.0
    need = min_input_size(model)
    for height, width in sizes:
        height, width = max(height, need), max(width, need)
        batch = torch.rand(1, 3, height, width, generator=generator)
        with torch.inference_mode():
            expected = model(batch.to(next(model.parameters()).device)).float().cpu().numpy()
        (output,) = session.run(None, {"image": batch.numpy()})
        worst = max(worst, float(np.abs(output - expected).max()))
    return worst


def export_model(
    model: nn.Module,
    path: str | os.PathLike[str],
    format: str = "onnx",
    *,
    opset: int | None = None,
) -> Path:
    """Export to ``format``: ``"onnx"`` (:func:`export_onnx`) or ``"torchscript"``.

    Args:
        model: The model.
        path: The file to write.
        format: One of :data:`EXPORT_FORMATS`.
        opset: The ONNX opset (ONNX only).

    Returns:
        The path written.

    Raises:
        ValueError: For an unknown format, a path whose extension is not one of the
            format's (:data:`EXPORT_SUFFIXES`), or an opset given for TorchScript.
    """
    if format not in EXPORT_FORMATS:
        raise ValueError(f"format must be one of {sorted(EXPORT_FORMATS)}; got {format!r}")
    suffix = Path(path).suffix.lower()
    if suffix not in EXPORT_SUFFIXES[format]:
        raise ValueError(
            f"path for format {format!r} must end in {' or '.join(EXPORT_SUFFIXES[format])}; "
            f"got {str(path)!r}"
        )
    if format == "onnx":
        return export_onnx(model, path, opset=opset)
    if opset is not None:
        raise ValueError(f"opset applies to ONNX only; got opset={opset} for {format!r}")
    return export_torchscript(model, path)
