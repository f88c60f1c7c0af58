"""Quality of ``img2img train --arch auto`` against the study's network, filter by filter.

For each filter, two runs under the same time budget, trained on the training
split of a Tiny ImageNet folder and evaluated on its validation split:

* **auto**: exactly ``img2img train --arch auto --time-budget BUDGET`` (the
  command line itself is called): the exact least-squares fit for a linear
  filter, else the architecture and training settings of
  :func:`img2img_filters.auto.choose_arch`.
* **study**: the study's 48-parameter network trained by the study's recipe (L1
  loss, Adam 1e-3, cosine annealing, batch 128, early stopping after 5 epochs),
  ``img2img train --arch study --loss l1 --lr 0.001 --batch-size 128 --patience 5``.

The table gives, for each: the architecture, its parameters, the training time
(training and polish, without loading data), PSNR with the filter's output range
as data range, SSIM, L1, the kernel's largest error for linear filters, and the
pixel F1 of the edge map for Canny (prediction > 0.5 against the 0/1 target);
then whether the filter's target (:data:`TARGETS`) is met.

Usage::

    python benchmarks/quality.py                   # 11 filters, 120 s each, mini Tiny ImageNet
    python benchmarks/quality.py --small           # CI: 3 filters, 10 s each, 500 photos
    python benchmarks/quality.py --root ~/data/tiny-imagenet-200 --budget 60
    python benchmarks/quality.py --filter magnitude --filter canny --out /tmp/quality

Writes ``quality.md`` and ``quality.json`` into ``--out`` (default
``benchmarks/results``). Torch uses ``--threads`` threads (default 2), and
``OMP_WAIT_POLICY`` defaults to ``PASSIVE``.
"""

from __future__ import annotations

import os

# OpenMP threads that spin while they wait slow PyTorch down by 10-50x on a machine whose
# cores other processes share; they sleep instead unless the caller says otherwise.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import contextlib
import io
import json
import math
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
MINI_ROOT = Path(
    os.environ.get("IMG2IMG_MINI_ROOT", ROOT.parent / "shared" / "data" / "tiny-imagenet-200-mini")
)

#: The filters of the full benchmark.
FILTERS = [
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
]
#: The filters of ``--small``: one linear, one rank filter, the edge detector.
SMALL_FILTERS = ["study-sobel", "median:ksize=3", "canny"]

#: What ``--arch auto`` should reach (120 s a filter on two CPU cores): the metric, its
#: least value, and for linear filters the largest kernel error allowed.
TARGETS: dict[str, dict[str, float | str]] = {
    "magnitude": {"metric": "psnr", "min": 45.0},
    "median:ksize=3": {"metric": "psnr", "min": 35.0},
    "bilateral": {"metric": "psnr", "min": 38.0},
    "dilate:ksize=3": {"metric": "psnr", "min": 40.0},
    "canny": {"metric": "f1", "min": 0.9},
}
LINEAR_TARGET = {"metric": "psnr", "min": 100.0, "kernel_max_error": 1e-4}

#: The study's recipe, as command-line flags.
STUDY_FLAGS = ["--arch", "study", "--loss", "l1", "--lr", "0.001", "--batch-size", "128"]
STUDY_FLAGS += ["--patience", "5", "--epochs", "100"]


def _safe_name(spec: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in spec)[:60]


def _finite(value: Any) -> Any:
    """JSON-safe numbers: ``inf`` and ``nan`` become strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def pixel_f1(prediction: torch.Tensor, target: torch.Tensor, threshold: float = 0.5) -> float:
    """F1 of ``prediction > threshold`` against ``target > 0.5`` over all pixels.

    Args:
        prediction: ``(B, C, H, W)`` model outputs.
        target: ``(B, C, H, W)`` 0/1 edge maps.
        threshold: Where the prediction counts as an edge.

    Returns:
        ``2 TP / (2 TP + FP + FN)``; 1.0 when neither has an edge.
    """
    predicted, actual = prediction > threshold, target > 0.5
    tp = int((predicted & actual).sum())
    fp = int((predicted & ~actual).sum())
    fn = int((~predicted & actual).sum())
    return 1.0 if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)


def _f1_of_run(folder: Path, val_set: Any) -> float:
    """Pixel F1 of a run's model over the validation set."""
    from img2img_filters.checkpoint import load_model

    model = load_model(folder / "model.safetensors")
    predictions, targets = [], []
    with torch.no_grad():
        for start in range(0, len(val_set), 128):
            x, y = val_set.batch(np.arange(start, min(start + 128, len(val_set))), "cpu")
            predictions.append(model(x))
            targets.append(y)
    return pixel_f1(torch.cat(predictions), torch.cat(targets))


def _train(spec: str, flags: list[str], folder: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Run ``img2img train`` in this process (its output hidden); return its metrics."""
    from img2img_filters.cli import main

    argv = ["train", "--data", str(args.root), "--filter", spec, "--out", str(folder)]
    argv += ["--time-budget", str(args.budget), "--device", args.device]
    argv += ["--no-progress", "--no-figures", "--overwrite", *flags]
    if args.limit is not None:
        argv += ["--limit", str(args.limit)]
    output = io.StringIO()
    with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
        status = main(argv)
    if status != 0:
        raise RuntimeError(f"img2img {' '.join(argv)} failed ({status}):\n{output.getvalue()}")
    return json.loads((folder / "metrics.json").read_text())


def _row(metrics: dict[str, Any], f1: float | None) -> dict[str, Any]:
    error = metrics.get("kernel_error") or {}
    return {
        "arch": metrics["arch"],
        "parameters": metrics["parameters"],
        "train_seconds": metrics.get("train_seconds", metrics.get("seconds")),
        "epochs": metrics.get("epochs"),
        "stopped": metrics.get("stopped"),
        "psnr": metrics["psnr"],
        "ssim": metrics["ssim"],
        "l1": metrics["l1"],
        "kernel_max_error": error.get("max_abs"),
        "f1": f1,
    }


def _target(spec: str, linear: bool, auto: dict[str, Any]) -> dict[str, Any]:
    target = dict(LINEAR_TARGET if linear else TARGETS.get(spec, {}))
    if not target:
        return {"met": None}
    value = auto.get(str(target["metric"]))
    met = value is not None and float(value) >= float(target["min"])
    if "kernel_max_error" in target:
        error = auto.get("kernel_max_error")
        met = met and error is not None and error <= float(target["kernel_max_error"])
    return {**target, "met": bool(met)}


def benchmark_filter(spec: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Train ``auto`` and the study's network on one filter; return the row of the table."""
    from img2img_filters.auto import choose_arch
    from img2img_filters.data import load_filtered_dataset
    from img2img_filters.filters import create_filter

    filt = create_filter(spec)
    choice = choose_arch(filt)
    canny = any(stage.name == "canny" for stage in filt.stages)
    val_set = None
    if canny:
        _, val_set = load_filtered_dataset(data=str(args.root), filter=spec, limit=args.limit)
    print(f"{spec}: auto ({choice.method}, {choice.arch}) ...", flush=True)
    auto_folder = work / "auto" / _safe_name(spec)
    auto_metrics = _train(spec, ["--arch", "auto"], auto_folder, args)
    auto = _row(auto_metrics, _f1_of_run(auto_folder, val_set) if canny else None)
    print(f"{spec}: study ...", flush=True)
    study_folder = work / "study" / _safe_name(spec)
    study_metrics = _train(spec, STUDY_FLAGS, study_folder, args)
    study = _row(study_metrics, _f1_of_run(study_folder, val_set) if canny else None)
    row = {
        "filter": spec,
        "linear": filt.linear,
        "data_range": auto_metrics["data_range"],
        "method": choice.method,
        "options": {k: v for k, v in choice.options.items() if k != "border"},
        "train": choice.train,
        "refine": auto_metrics.get("refine"),
        "auto": auto,
        "study": study,
        "target": _target(spec, filt.linear, auto),
        "images": auto_metrics.get("images"),
    }
    print(f"{spec}: " + _summary(row), flush=True)
    return row


def _summary(row: dict[str, Any]) -> str:
    auto, study = row["auto"], row["study"]
    text = f"auto {auto['arch']} {auto['psnr']:.2f} dB, study {study['psnr']:.2f} dB"
    if auto["f1"] is not None:
        text += f", F1 {auto['f1']:.3f} vs {study['f1']:.3f}"
    if auto["kernel_max_error"] is not None:
        text += f", kernel error {auto['kernel_max_error']:.1e}"
    return text


def _fmt(value: Any, spec: str) -> str:
    if value is None:
        return "–"
    if isinstance(value, str):
        return value
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    return format(value, spec)


def _target_text(target: dict[str, Any]) -> str:
    if target.get("met") is None:
        return "–"
    unit = " dB" if target["metric"] == "psnr" else ""
    text = f"{target['metric'].upper()} >= {target['min']:g}{unit}"
    if "kernel_max_error" in target:
        text += f", kernel <= {target['kernel_max_error']:.0e}"
    return f"{text}: {'**met**' if target['met'] else '**not met**'}"


def write_markdown(result: dict[str, Any], path: Path) -> None:
    """The table as Markdown."""
    config = result["config"]
    lines = [
        "# Quality: `--arch auto` against the study's network",
        "",
        f"Each filter: `img2img train --arch auto --time-budget {config['budget']:g}` and the "
        f"study's network by the study's recipe (L1, Adam 1e-3, cosine, batch 128, early "
        f"stopping 5) under the same budget; trained on {config['train_images']} photos of "
        f"`{config['root_name']}` (train split), evaluated on its {config['val_images']} "
        f"validation photos. PSNR uses the filter's output range as data range. "
        f"Training time excludes loading data. {config['threads']} torch threads on "
        f"{config['device']}; load average {config['load_average']} at the start "
        f"({config['cpu_count']} CPUs); torch {config['torch']}; {config['date']}. "
        "The targets are those of a full run (120 s a filter, all 5000 photos).",
        "",
        "| filter | auto arch | params | train s | PSNR dB | SSIM | L1 | kernel max err | F1 "
        "| study PSNR dB | study SSIM | study L1 | study F1 | target |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in result["rows"]:
        auto, study = row["auto"], row["study"]
        lines.append(
            "| "
            + " | ".join(
                [
                    f"`{row['filter']}`",
                    f"{auto['arch']} ({row['method']})",
                    str(auto["parameters"]),
                    _fmt(auto["train_seconds"], ".1f"),
                    _fmt(auto["psnr"], ".2f"),
                    _fmt(auto["ssim"], ".6f"),
                    _fmt(auto["l1"], ".2e"),
                    _fmt(auto["kernel_max_error"], ".1e"),
                    _fmt(auto["f1"], ".3f"),
                    _fmt(study["psnr"], ".2f"),
                    _fmt(study["ssim"], ".4f"),
                    _fmt(study["l1"], ".2e"),
                    _fmt(study["f1"], ".3f"),
                    _target_text(row["target"]),
                ]
            )
            + " |"
        )
    lines += ["", "What `--arch auto` chose, and how each run ended:", ""]
    for row in result["rows"]:
        auto, study, refine = row["auto"], row["study"], row.get("refine")
        polish = (
            f"; {refine.get('method', 'l-bfgs')} polish {refine['iterations']} iterations, "
            f"{refine['seconds']:.1f} s"
            if refine
            else ""
        )
        lines.append(
            f"- `{row['filter']}`: {auto['arch']} {json.dumps(row['options'])}, training "
            f"{json.dumps(row['train'])}: {auto['epochs']} epochs ({auto['stopped']}){polish}. "
            f"Study: {study['epochs']} epochs in {_fmt(study['train_seconds'], '.1f')} s "
            f"({study['stopped']})."
        )
    path.write_text("\n".join(lines) + "\n")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=MINI_ROOT, help="a Tiny ImageNet folder")
    parser.add_argument("--budget", type=float, default=None, help="seconds a run (120; small 10)")
    parser.add_argument("--limit", type=int, default=None, help="training photos (small: 500)")
    parser.add_argument(
        "--filter",
        dest="filters",
        action="append",
        metavar="SPEC",
        help="a filter spec (repeatable; default: all of FILTERS)",
    )
    parser.add_argument("--small", action="store_true", help="CI size: 3 filters, 10 s, 500 photos")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for quality.md/.json")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, auto")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--keep-runs", type=Path, default=None, help="keep the run folders here")
    args = parser.parse_args(argv)
    if args.budget is None:
        args.budget = 10.0 if args.small else 120.0
    if args.limit is None and args.small:
        args.limit = 500
    if args.filters is None:
        args.filters = list(SMALL_FILTERS if args.small else FILTERS)
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; write ``quality.md`` and ``quality.json``; return the result."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if not args.root.is_dir():
        raise SystemExit(f"no Tiny ImageNet at {args.root}; give one with --root")
    from img2img_filters.data import load_filtered_dataset

    train_set, val_set = load_filtered_dataset(data=str(args.root), filter="gray", limit=args.limit)
    config = {
        "budget": args.budget,
        "root": str(args.root),
        "root_name": args.root.name,
        "train_images": len(train_set),
        "val_images": len(val_set),
        "limit": args.limit,
        "device": args.device,
        "threads": args.threads,
        "cpu_count": os.cpu_count(),
        "load_average": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    rows = []
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        if args.keep_runs is not None:
            work = args.keep_runs
        else:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="quality-")))
        for spec in args.filters:
            rows.append(benchmark_filter(spec, args, work))
    config["seconds"] = time.perf_counter() - started
    result = {"config": config, "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "quality.json").write_text(
        json.dumps(_finite(result), indent=2, allow_nan=False) + "\n"
    )
    write_markdown(result, args.out / "quality.md")
    print(f"wrote {args.out / 'quality.md'} and quality.json", file=sys.stderr)
    return result


if __name__ == "__main__":
    main()
