"""Every CUDA path of img2img, checked against the CPU, with its time: one results file.

Each check runs on its own, so that one failure does not hide the others; each
records ``ok``, its figures (the largest difference from the CPU result, seconds)
and, on failure, the error's last line. The checks:

* ``targets``: a batch of 128 photos filtered on the GPU (``study-sobel``, a
  Gaussian, a Laplacian) against the same filters on the CPU;
* ``train-eager``, ``train-bf16``, ``train-channels-last``, ``train-compile``:
  ``train_model`` on the GPU for two epochs (plain, ``amp="bf16"``,
  ``channels_last=True``, ``compile=True``), each with its final validation loss
  and photos per second;
* ``gauss-newton``: the Gauss-Newton polish of a linear model on the GPU, its
  loss before and after, against the same polish on the CPU;
* ``tiled-inference``: ``apply_filter`` of a ``can`` model on a 1536x1536 photo on
  the GPU, tiled, against the CPU;
* ``onnx-cuda``: the exported model under ONNX Runtime's CUDA provider, where it
  is installed, against PyTorch.

Usage::

    python benchmarks/gpu_check.py --out benchmarks/results     # writes gpu_check.md/.json

``benchmarks/gpu_check.sh`` runs this, then the three speed benchmarks on the GPU.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from img2img_filters import apply_filter, create_img2img_model, load_filtered_dataset, train_model
from img2img_filters.export import export_model
from img2img_filters.filters import create_filter
from img2img_filters.solve.refine import gauss_newton

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
#: Where the checks run: "cuda" on a GPU machine; "cpu" runs the same code as a smoke test.
DEVICE = "cuda"


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _photos(count: int, size: int = 64) -> torch.Tensor:
    """``(count, 3, size, size)`` float32 photos from the built-in samples, on the CPU."""
    train, _ = load_filtered_dataset(val_fraction=0.0, crop_size=size, seed=0)
    inputs = [train[i][0] for i in range(min(count, len(train)))]
    while len(inputs) < count:
        inputs.extend(inputs[: count - len(inputs)])
    return torch.stack(inputs)


def check_targets() -> dict[str, Any]:
    batch = _photos(128)
    figures: dict[str, Any] = {}
    for spec in ("study-sobel", "gaussian:ksize=5", "laplacian:ksize=3"):
        operator = create_filter(spec)
        expected = operator(batch)
        on_gpu = batch.to(DEVICE)
        operator(on_gpu)
        _sync()
        started = time.perf_counter()
        result = operator(on_gpu)
        _sync()
        seconds = time.perf_counter() - started
        figures[spec] = {
            "device": str(result.device),
            "max_abs_diff": float((result.cpu() - expected).abs().max()),
            "photos_per_s": round(batch.shape[0] / seconds),
        }
    worst = max(item["max_abs_diff"] for item in figures.values())
    return {"ok": worst < 1e-4, "filters": figures}


def _train(**options: Any) -> dict[str, Any]:
    train, val = load_filtered_dataset(crop_size=64, seed=0)
    torch.manual_seed(0)
    model = create_img2img_model(3, 1)
    started = time.perf_counter()
    train_losses, val_losses = train_model(
        model, train, val, max_epochs=2, batch_size=64, device=DEVICE, progress=False, **options
    )
    _sync()
    seconds = time.perf_counter() - started
    weights_device = str(next(model.parameters()).device)
    finite = bool(np.isfinite(val_losses).all())
    return {
        "ok": finite and len(val_losses) == 2,
        "val_losses": [float(v) for v in val_losses],
        "train_losses": [float(v) for v in train_losses],
        "seconds": round(seconds, 2),
        "photos_per_s": round(2 * len(train) / seconds),
        "weights_on": weights_device,
    }


def check_gauss_newton() -> dict[str, Any]:
    train, _ = load_filtered_dataset(filter="gaussian:ksize=3", crop_size=32, seed=0)
    results = {}
    for device in ("cpu", DEVICE):
        torch.manual_seed(0)
        model = create_img2img_model(3, 1, arch="linear", kernel_size=3)
        started = time.perf_counter()
        gauss_newton(model, train, steps=3, images=16, device=device)
        _sync()
        results[device] = {
            "seconds": round(time.perf_counter() - started, 3),
            "weights": torch.cat([p.detach().double().cpu().flatten() for p in model.parameters()]),
        }
    difference = float((results["cpu"]["weights"] - results[DEVICE]["weights"]).abs().max())
    return {
        "ok": difference < 1e-6,
        "max_weight_diff_vs_cpu": difference,
        "seconds": {device: results[device]["seconds"] for device in results},
    }


def _big_photo(size: int) -> np.ndarray:
    batch = _photos(4, 256)
    tiles = (batch.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    row = np.concatenate([tiles[0], tiles[1]], axis=1)
    mosaic = np.concatenate([row, np.concatenate([tiles[2], tiles[3]], axis=1)], axis=0)
    return np.tile(mosaic, (size // 512 + 1, size // 512 + 1, 1))[:size, :size]


def check_tiled_inference() -> dict[str, Any]:
    torch.manual_seed(0)
    model = create_img2img_model(3, 1, arch="can")
    image = _big_photo(1536)
    expected = apply_filter(image, model, device="cpu", tile=512)
    apply_filter(image[:256, :256], model, device=DEVICE, tile=128)
    _sync()
    started = time.perf_counter()
    result = apply_filter(image, model, device=DEVICE, tile=512)
    _sync()
    seconds = time.perf_counter() - started
    difference = float(np.abs(result - expected).max())
    return {
        "ok": difference < 1e-3,
        "max_abs_diff_vs_cpu": difference,
        "seconds": round(seconds, 3),
    }


def check_onnx_cuda() -> dict[str, Any]:
    try:
        import onnxruntime  # optional extra: only where it is installed
    except ImportError:
        return {"ok": None, "skipped": "onnxruntime is not installed"}
    providers = onnxruntime.get_available_providers()
    if DEVICE == "cpu":
        return {"ok": None, "skipped": "the CUDA provider is checked on a GPU only"}
    if "CUDAExecutionProvider" not in providers:
        return {"ok": None, "skipped": f"no CUDAExecutionProvider (providers: {providers})"}
    torch.manual_seed(0)
    model = create_img2img_model(3, 1, arch="can").eval()
    photo = _photos(1, 256)
    with torch.no_grad():
        expected = model(photo).numpy()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.onnx"
        export_model(model, path, format="onnx")
        session = onnxruntime.InferenceSession(str(path), providers=["CUDAExecutionProvider"])
        name = session.get_inputs()[0].name
        result = session.run(None, {name: photo.numpy()})[0]
    difference = float(np.abs(result - expected).max())
    return {"ok": difference < 1e-3, "max_abs_diff_vs_torch": difference, "providers": providers}


CHECKS: dict[str, Callable[[], dict[str, Any]]] = {
    "targets": check_targets,
    "train-eager": lambda: _train(),
    "train-bf16": lambda: _train(amp="bf16"),
    "train-channels-last": lambda: _train(channels_last=True),
    "train-compile": lambda: _train(compile=True),
    "gauss-newton": check_gauss_newton,
    "tiled-inference": check_tiled_inference,
    "onnx-cuda": check_onnx_cuda,
}


def _environment() -> dict[str, Any]:
    cuda = torch.cuda.is_available()
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda_available": cuda,
        "device": torch.cuda.get_device_name(0) if cuda else None,
        "cuda": torch.version.cuda,
    }


def _markdown(environment: dict[str, Any], results: dict[str, dict[str, Any]]) -> str:
    lines = [
        "# GPU check",
        "",
        f"torch {environment['torch']}, CUDA {environment['cuda']}, device: {environment['device']}",
        "",
        "| check | result | figures |",
        "|---|---|---|",
    ]
    for name, result in results.items():
        state = {True: "ok", False: "FAILED", None: "skipped"}[result.get("ok")]
        figures = {key: value for key, value in result.items() if key != "ok"}
        lines.append(f"| {name} | {state} | `{json.dumps(figures, default=str)[:400]}` |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for gpu_check.md/.json")
    parser.add_argument("--only", nargs="*", choices=sorted(CHECKS), help="run only these checks")
    parser.add_argument("--device", default="cuda", help="cuda (default); cpu for a smoke test")
    args = parser.parse_args(argv)
    global DEVICE
    DEVICE = args.device
    environment = _environment()
    print(json.dumps(environment), flush=True)
    results: dict[str, dict[str, Any]] = {}
    for name in args.only or CHECKS:
        if DEVICE.startswith("cuda") and not environment["cuda_available"]:
            results[name] = {"ok": False, "error": "CUDA is not available"}
            continue
        started = time.perf_counter()
        try:
            results[name] = CHECKS[name]()
        except Exception as error:  # a check's failure is its result; the others still run
            lines = traceback.format_exc().strip().splitlines()
            results[name] = {"ok": False, "error": f"{type(error).__name__}: {error}"[:500]}
            results[name]["where"] = lines[-3:-1]
        results[name]["wall_s"] = round(time.perf_counter() - started, 2)
        print(name, json.dumps(results[name], default=str)[:600], flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    record = {"environment": environment, "checks": results}
    (args.out / "gpu_check.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    (args.out / "gpu_check.md").write_text(_markdown(environment, results))
    return 0 if all(result.get("ok") is not False for result in results.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
