"""Quality on operators img2img did not write: ImageMagick, Pillow, scikit-image, OpenCV.

For each operator of :mod:`third_party` (a ``cmd:`` program or a Python callable):

* **probe**: :func:`img2img_filters.probe.probe_operator`'s verdict and support radius
  (as ``--arch auto`` runs it on a teacher it does not know; see
  :mod:`img2img_filters.auto.probed`);
* **auto**: ``train_run`` with ``arch="auto"`` and ``time_budget=BUDGET``: what
  the probe's verdict chose (the exact linear fit; the exact clipped linear fit
  of a teacher that is linear up to clipping; a lookup table; a neighbourhood
  network, with the photo's histograms for a global operator);
* **study**: the study's network ``create_img2img_model(3, C)`` by the study's
  recipe (L1, Adam 1e-3, cosine, batch 128, early stopping 5) under the same budget.

Both learn from the training photos of a Tiny ImageNet folder (``--limit`` of
them, so that teacher calls stay affordable) and are certified on its
validation photos (:func:`img2img_filters.certificate.certificate_for_model`: PSNR,
SSIM, the largest and the 99th-percentile absolute error, the share of output
values exact at 8 bits). The teacher's throughput is photos per second on those
photos, first call (the program or callable runs; ``cmd:`` outputs go to a fresh
cache unless ``--cache`` is given) and cached (the outputs are looked up).
Targets, by the kind of operator: linear and pointwise >= 99.5% exact after
rounding; local non-linear >= 40 dB; wide edge-aware >= 33 dB; global >= 30 dB
and flagged global by the probe. A tool that is not installed is named and its
operators are left out.

Usage::

    python benchmarks/operators.py                     # 17 operators, 180 s each, 1000 photos
    python benchmarks/operators.py --small             # CI: 3 operators, 10 s each, 24 photos
    python benchmarks/operators.py --budget 45 --limit 400 --operator im-blur --operator sk-clahe
    python benchmarks/operators.py --update --operator cv-detail   # run one again, keep the rest

Writes ``operators.md`` and ``operators.json`` into ``--out`` (default ``benchmarks/results``).
"""

from __future__ import annotations

import os

# OpenMP threads that spin while they wait slow PyTorch down on shared cores (see quality.py).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import contextlib
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from img2img_filters.certificate import certificate_for_model
from img2img_filters.data import load_filtered_dataset
from img2img_filters.filters import create_filter
from img2img_filters.runs import DataConfig, ModelConfig, train_run
from quality import MINI_ROOT, RESULTS, _finite, _fmt, _safe_name
from third_party import OPERATORS, SMALL_OPERATORS, Operator, missing_tools

#: The target of each kind of operator: the certificate's figure and its least value.
TARGETS: dict[str, tuple[str, float]] = {
    "linear": ("exact_share", 0.995),
    "pointwise": ("exact_share", 0.995),
    "local": ("psnr", 40.0),
    "edge-aware": ("psnr", 33.0),
    "global": ("psnr", 30.0),
}
#: The study's recipe (``train_run`` options).
STUDY_TRAIN = {
    "loss": "l1",
    "learning_rate": 1e-3,
    "batch_size": 128,
    "early_stopping_patience": 5,
    "max_epochs": 100,
}
#: The certificate's figures the table keeps.
CERTIFICATE_KEYS = ("psnr", "ssim", "max_abs_error", "p99", "exact_share")


def _photos(dataset: Any) -> np.ndarray:
    """The dataset's crops, uint8 ``(N, 3, H, W)``."""
    return np.ascontiguousarray(dataset.images[dataset.indices])


def teacher_throughput(teacher: Any, photos: np.ndarray) -> dict[str, float]:
    """Photos per second through the teacher: the first call, then from its cache."""
    rates = {}
    for key in ("first", "cached"):
        started = time.perf_counter()
        failed = teacher.prepare(photos)
        seconds = max(time.perf_counter() - started, 1e-9)
        rates[f"{key}_photos_per_s"] = len(photos) / seconds
        rates[f"{key}_seconds"] = seconds
        if failed:
            raise RuntimeError(f"{teacher.spec}: failed on {len(failed)} photos: {failed[:3]}")
    rates["photos"] = len(photos)
    return rates


def _certify(model: torch.nn.Module, val_set: Any) -> dict[str, Any]:
    certificate = certificate_for_model(model.eval(), val_set, device="cpu")
    certificate["p99"] = certificate["abs_error_percentiles"]["p99"]
    return {key: certificate[key] for key in CERTIFICATE_KEYS}


def _defined_subset(val_set: Any, defined: Any) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The ``(input, target)`` pairs of ``val_set`` whose photo the tool's output is defined on."""
    inputs, targets = val_set.batch(np.arange(len(val_set)), "cpu")
    photos = (inputs * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return [(inputs[i], targets[i]) for i in range(len(photos)) if defined(photos[i])]


def _run(op: Operator, teacher: Any, flavour: str, args: argparse.Namespace, work: Path) -> Any:
    """One ``train_run`` (its log kept); returns the result and the log."""
    arch = "auto" if flavour == "auto" else "study"
    train = {"time_budget": args.budget, "device": "cpu", "progress": False}
    if flavour == "study":
        train.update(STUDY_TRAIN)
    lines: list[str] = []
    result = train_run(
        work / flavour / _safe_name(op.name),
        DataConfig(data=str(args.root), filter=teacher, limit=args.limit),
        ModelConfig(arch=arch),
        train,
        overwrite=True,
        figures=False,
        log=lines.append,
    )
    return result, lines


def _target(kind: str, verdict: str, auto: dict[str, Any]) -> dict[str, Any]:
    metric, least = TARGETS[kind]
    value = auto.get(metric)
    met = value is not None and float(value) >= least
    if kind == "global":
        met = met and verdict == "global"
    return {"metric": metric, "min": least, "needs_global_verdict": kind == "global", "met": met}


def benchmark_operator(op: Operator, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Probe, learn (auto and study) and certify one operator; return its row of the table."""
    teacher = create_filter(op.teacher, allow_commands=True)
    train_gray, val_gray = load_filtered_dataset(
        data=str(args.root), filter="gray", limit=args.limit
    )
    photos = np.concatenate([_photos(train_gray), _photos(val_gray)])
    print(f"{op.name}: teacher on {len(photos)} photos ...", flush=True)
    throughput = teacher_throughput(teacher, photos)
    _, val_set = load_filtered_dataset(data=str(args.root), filter=teacher, limit=args.limit)

    print(f"{op.name}: auto ...", flush=True)
    auto_result, auto_log = _run(op, teacher, "auto", args, work)
    probe = auto_result.metrics.get("probe", {})
    print(f"{op.name}: {probe.get('line', 'no probe')}; study ...", flush=True)
    study_result, _ = _run(op, teacher, "study", args, work)
    auto = {
        "arch": auto_result.metrics["arch"],
        "method": json.loads((auto_result.folder / "config.json").read_text())["resolved"][
            "method"
        ],
        "parameters": auto_result.metrics["parameters"],
        "train_seconds": auto_result.metrics.get("train_seconds", auto_result.metrics["seconds"]),
        **_certify(auto_result.model, val_set),
    }
    study = {
        "arch": study_result.metrics["arch"],
        "parameters": study_result.metrics["parameters"],
        "train_seconds": study_result.metrics.get("train_seconds", study_result.metrics["seconds"]),
        **_certify(study_result.model, val_set),
    }
    verdict = probe.get("verdict", "unknown")
    defined = None
    if op.defined is not None:  # the tool's output is its operator on some photos only
        subset = _defined_subset(val_set, op.defined)
        defined = {"photos": len(subset), "of": len(val_set)}
        if subset:
            defined["auto"] = _certify(auto_result.model, subset)
            defined["study"] = _certify(study_result.model, subset)
    row = {
        "operator": op.name,
        "tool": op.tool,
        "call": op.call,
        "kind": op.kind,
        "teacher": op.teacher if isinstance(op.teacher, str) else f"callable {op.teacher.__name__}",
        "channels": teacher.out_channels,
        "verdict": verdict,
        "support_radius": probe.get("support_radius"),
        "probe_line": probe.get("line"),
        "probe_summary": probe.get("summary"),
        "auto_reason": next((ln for ln in auto_log if ln.startswith("arch auto:")), None),
        "auto": auto,
        "study": study,
        "teacher_throughput": throughput,
        "train_images": auto_result.metrics.get("images"),
        "target": _target(op.kind, verdict, auto),
        "defined": defined,
    }
    print(
        f"{op.name}: auto {auto['arch']} {auto['psnr']:.2f} dB, exact {auto['exact_share']:.4f}; "
        f"study {study['psnr']:.2f} dB, exact {study['exact_share']:.4f}; target "
        f"{'met' if row['target']['met'] else 'not met'}",
        flush=True,
    )
    return row


def _target_text(kind: str, target: dict[str, Any]) -> str:
    if target["metric"] == "exact_share":
        text = f">= {100 * target['min']:g}% exact"
    else:
        text = f">= {target['min']:g} dB"
    if target["needs_global_verdict"]:
        text += " + probe global"
    return f"{kind}: {text}: {'**met**' if target['met'] else '**not met**'}"


def _cells(result: dict[str, Any]) -> list[str]:
    return [
        _fmt(result["psnr"], ".2f"),
        _fmt(result["ssim"], ".4f"),
        _fmt(result["max_abs_error"], ".4f"),
        _fmt(result["p99"], ".4f"),
        _fmt(100 * result["exact_share"], ".2f"),
    ]


HEADER = [
    "operator",
    "tool: call",
    "probe",
    "auto arch",
    "auto s",
    "PSNR dB",
    "SSIM",
    "max err",
    "p99 err",
    "exact %",
    "study PSNR dB",
    "study SSIM",
    "study max err",
    "study p99 err",
    "study exact %",
    "teacher photos/s first / cached",
    "target",
]


def write_markdown(result: dict[str, Any], path: Path) -> None:
    """The table as Markdown."""
    config = result["config"]
    missing = config["missing_tools"]
    lines = [
        "# Quality on third-party operators: `--arch auto` against the study's network",
        "",
        f"Each operator: the probe, then `train_run(arch='auto', time_budget={config['budget']:g})` "
        f"and the study's network by the study's recipe under the same budget; trained on "
        f"{config['train_images']} photos of `{config['root_name']}` (train split), certified on "
        f"{config['val_images']} validation photos (errors on outputs in [0, 1]; exact: the share "
        "of output values equal to the target's at 8 bits). Float outputs of scikit-image are "
        "rounded to uint8 by the benchmark. `auto s`: training time (gradient; the budget includes "
        "the L-BFGS polish), or the whole run with the probe and loading data (exact fits); "
        f"{config['threads']} torch threads on {config['device']}, load average "
        f"{config['load_average']} at the start ({config['cpu_count']} CPUs, shared); "
        f"torch {config['torch']}; {config['date']}; {config.get('done', '')} done in "
        f"{config.get('seconds', 0) / 60:.0f} min.",
        "",
        "Missing tools (their operators left out): " + (", ".join(missing) if missing else "none."),
        "",
        *([f"Run again: {config['rerun']}.", ""] if config.get("rerun") else []),
        "| " + " | ".join(HEADER) + " |",
        "|---|---|---|---|" + "---:|" * 12 + "---|",
    ]
    for row in result["rows"]:
        auto, study, rate = row["auto"], row["study"], row["teacher_throughput"]
        radius = row["support_radius"]
        probe = row["verdict"] + ("" if radius is None else f", r={radius}")
        lines.append(
            "| "
            + " | ".join(
                [
                    f"`{row['operator']}`",
                    f"{row['tool']}: `{row['call']}`",
                    probe,
                    f"{auto['arch']} ({auto['method']})",
                    _fmt(auto["train_seconds"], ".1f"),
                    *_cells(auto),
                    *_cells(study),
                    f"{rate['first_photos_per_s']:.0f} / {rate['cached_photos_per_s']:.0f}",
                    _target_text(row["kind"], row["target"]),
                ]
            )
            + " |"
        )
    lines += ["", "What the probe found and what `--arch auto` chose:", ""]
    for row in result["rows"]:
        lines.append(f"- `{row['operator']}`: {row['probe_line']}. {row['probe_summary']}.")
    for row in result["failed"]:
        lines.append(f"- `{row['operator']}` ({row['tool']}): **failed**: {row['error']}")
    partial = [row for row in result["rows"] if row.get("defined")]
    if partial:
        lines += [
            "",
            "Tools whose output is not their operator on some photos (the target "
            "above still counts every photo):",
            "",
        ]
    for row in partial:
        defined = row["defined"]
        text = f"- `{row['operator']}`: defined on {defined['photos']} of {defined['of']} "
        text += "validation photos"
        if "auto" in defined:
            auto, study = defined["auto"], defined["study"]
            text += (
                f"; on those, auto {auto['psnr']:.2f} dB, SSIM {auto['ssim']:.4f}, "
                f"{100 * auto['exact_share']:.2f}% exact (study {study['psnr']:.2f} dB)"
            )
        lines.append(text + ".")
    met = sum(row["target"]["met"] for row in result["rows"])
    lines += ["", f"Targets met: {met} of {len(result['rows'])}."]
    path.write_text("\n".join(lines) + "\n")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=MINI_ROOT, help="a Tiny ImageNet folder")
    parser.add_argument("--budget", type=float, default=None, help="seconds a run (180; small 10)")
    parser.add_argument("--limit", type=int, default=None, help="training photos (1000; small 24)")
    parser.add_argument(
        "--operator",
        dest="operators",
        action="append",
        metavar="NAME",
        help="an operator's name (repeatable; default: all)",
    )
    parser.add_argument(
        "--small", action="store_true", help="CI size: 3 operators, 10 s, 24 photos"
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for operators.md/.json")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--keep-runs", type=Path, default=None, help="keep the run folders here")
    parser.add_argument("--cache", type=Path, default=None, help="teacher cache (default: fresh)")
    parser.add_argument(
        "--update",
        action="store_true",
        help="run only the --operator ones again and replace their rows in --out's "
        "operators.json (the table says which were run again, when and at what load)",
    )
    args = parser.parse_args(argv)
    if args.budget is None:
        args.budget = 10.0 if args.small else 180.0
    if args.limit is None:
        args.limit = 24 if args.small else 1000
    known = {op.name: op for op in OPERATORS}
    names = args.operators or (SMALL_OPERATORS if args.small else list(known))
    unknown = [name for name in names if name not in known]
    if unknown:
        parser.error(f"--operator must be one of {sorted(known)}; got {unknown}")
    if args.update and not (args.operators and (args.out / "operators.json").is_file()):
        parser.error("--update needs --operator and an operators.json in --out to update")
    args.operators = [known[name] for name in names]
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; write ``operators.md`` and ``operators.json``; return the result."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if not args.root.is_dir():
        raise SystemExit(f"no Tiny ImageNet at {args.root}; give one with --root")
    missing = missing_tools(args.operators)
    for program in missing:
        print(f"{program} is not installed: its operators are left out", file=sys.stderr)
    operators = [op for op in args.operators if op.program not in missing]
    train_set, val_set = load_filtered_dataset(data=str(args.root), filter="gray", limit=args.limit)
    config = {
        "budget": args.budget,
        "root": str(args.root),
        "root_name": args.root.name,
        "train_images": len(train_set),
        "val_images": len(val_set),
        "limit": args.limit,
        "device": "cpu",
        "threads": args.threads,
        "cpu_count": os.cpu_count(),
        "load_average": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "missing_tools": missing,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    earlier = json.loads((args.out / "operators.json").read_text()) if args.update else None
    rows: list[dict[str, Any]] = []
    failed: list[dict[str, str]] = []
    result = {"config": config, "rows": rows, "failed": failed}
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="operators-")))
        work = args.keep_runs or scratch / "runs"
        cache = args.cache or scratch / "cache"
        previous = os.environ.get("IMG2IMG_CACHE")
        os.environ["IMG2IMG_CACHE"] = str(cache)  # teacher outputs: a cold cache unless given
        try:
            for op in operators:
                try:
                    rows.append(benchmark_operator(op, args, work))
                except (RuntimeError, ValueError, OSError) as error:  # named, and the rest goes on
                    detail = " ".join(str(error).split())[:300]
                    print(f"{op.name}: failed: {detail}", file=sys.stderr, flush=True)
                    failed.append({"operator": op.name, "tool": op.tool, "error": detail})
                config["seconds"] = time.perf_counter() - started
                config["done"] = f"{len(rows) + len(failed)} of {len(operators)} operators"
                # after every operator: a partial table survives a stop
                _write(result if earlier is None else _merged(earlier, result), args.out)
        finally:
            if previous is None:
                os.environ.pop("IMG2IMG_CACHE", None)
            else:
                os.environ["IMG2IMG_CACHE"] = previous
    if earlier is not None:
        result = _merged(earlier, result)
    print(f"wrote {args.out / 'operators.md'} and operators.json", file=sys.stderr)
    return result


def _merged(previous: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """``previous`` with the rows of ``update`` in place of its own (new operators appended).

    The budget and photos must be the same; ``config["rerun"]`` records what was run
    again, when and at what load.
    """
    old, new = previous["config"], update["config"]
    for key in ("budget", "train_images", "val_images", "root_name"):
        if old[key] != new[key]:
            raise SystemExit(f"--update: {key} differs ({old[key]} there, {new[key]} here)")
    fresh = {row["operator"]: row for row in update["rows"]}
    known = {row["operator"] for row in previous["rows"]} | {
        f["operator"] for f in previous["failed"]
    }
    rows = [fresh.pop(row["operator"], row) for row in previous["rows"]] + list(fresh.values())
    names = [row["operator"] for row in update["rows"]] + [f["operator"] for f in update["failed"]]
    failed = [f for f in previous["failed"] if f["operator"] not in names] + update["failed"]
    again = [name for name in names if name in known]
    added = [name for name in names if name not in known]
    what = [f"{', '.join(again)}: run again"] if again else []
    what += [f"{', '.join(added)}: added"] if added else []
    note = (
        f"{'; '.join(what)} on {new['date']} with the same budget and photos "
        f"(load average {new['load_average']})"
    )
    config = {**old, "rerun": "; ".join(filter(None, [old.get("rerun"), note]))}
    return {"config": config, "rows": rows, "failed": failed}


def _write(result: dict[str, Any], out: Path) -> None:
    """Write ``operators.json`` and ``operators.md`` into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "operators.json").write_text(
        json.dumps(_finite(result), indent=2, allow_nan=False) + "\n"
    )
    write_markdown(result, out / "operators.md")


if __name__ == "__main__":
    main()
