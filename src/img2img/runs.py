"""A training run, end to end, in its own folder: data, model, training, metrics, figures.

A run folder holds ``model.safetensors`` (the best model), ``state.pt`` (the
resumable training state), ``config.json``, ``history.csv``, ``metrics.json``,
the figures and ``report.html``; nothing is written outside it. A lock file
keeps two runs from writing to one folder.
"""

from __future__ import annotations

import csv
import io
import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from img2img.auto import AutoChoice, choose_arch, default_model, fit_auto
from img2img.checkpoint import atomic_write, save_model
from img2img.distributed import setup_distributed
from img2img.filters import CommandFilter, create_filter
from img2img.solve import gauss_newton, lbfgs_refine

__all__ = ["DataConfig", "ModelConfig", "RunFolder", "RunResult", "train_run"]

MODEL_FILE = "model.safetensors"
STATE_FILE = "state.pt"
CONFIG_FILE = "config.json"
HISTORY_FILE = "history.csv"
METRICS_FILE = "metrics.json"
LOCK_FILE = ".lock"


@dataclass
class DataConfig:
    """Which photos and which filter."""

    data: str = "samples"  # "samples", "tiny-imagenet", or a folder
    filter: str = "study-sobel"  # a filter spec (see `img2img filters`)
    val_fraction: float = 0.2  # share of photos held out (sources without a val split)
    seed: int = 0  # split and random-filter seed
    crop_size: int = 64  # side of the crops cut from photos
    limit: int | None = None  # at most this many training images
    download: bool = False  # fetch Tiny ImageNet when missing
    targets: str | None = None  # a folder of targets paired by name with the `data` folder
    teacher_timeout: float = 60.0  # seconds per photo for a `cmd:` filter's program


@dataclass
class ModelConfig:
    """Which network."""

    arch: str = "auto"  # "auto", or a registered architecture (`img2img archs`)
    options: dict[str, Any] = field(default_factory=dict)  # architecture options


@dataclass
class RunResult:
    """What a run produced."""

    folder: Path
    model: nn.Module
    train_losses: list[float]
    val_losses: list[float]
    metrics: dict[str, Any]


class RunFolder:
    """A run's folder: the names of its files and a lock against concurrent writers.

    Args:
        path: The folder (created if needed).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def file(self, name: str) -> Path:
        """The path of a file in the run folder."""
        return self.path / name

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the folder's lock; a second live writer is refused with ``RuntimeError``."""
        self.path.mkdir(parents=True, exist_ok=True)
        lock = self.file(LOCK_FILE)
        record = f"{os.getpid()} {socket.gethostname()}"
        for _ in range(2):
            try:
                descriptor = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                owner = lock.read_text(errors="replace").split()
                if owner and _alive(owner):
                    raise RuntimeError(
                        f"run folder {str(self.path)!r} is in use by process {owner[0]}"
                        f"{' on ' + owner[1] if len(owner) > 1 else ''}; choose another --out"
                    ) from None
                lock.unlink(missing_ok=True)  # left by a process that died
                continue
            with os.fdopen(descriptor, "w") as stream:
                stream.write(record)
            break
        try:
            yield
        finally:
            lock.unlink(missing_ok=True)

    def write_json(self, name: str, payload: dict[str, Any]) -> Path:
        """Write a JSON file atomically."""
        text = json.dumps(payload, indent=2, sort_keys=True, default=_jsonable)
        return atomic_write(self.file(name), lambda tmp: tmp.write_text(text + "\n"))

    def write_history(self, train_losses: list[float], val_losses: list[float]) -> Path:
        """Write ``history.csv``: ``epoch,train_loss,val_loss``."""
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["epoch", "train_loss", "val_loss"])
        for epoch, (train, val) in enumerate(zip(train_losses, val_losses, strict=True), start=1):
            writer.writerow([epoch, repr(float(train)), repr(float(val))])
        return atomic_write(self.file(HISTORY_FILE), lambda tmp: tmp.write_text(buffer.getvalue()))


def _alive(owner: list[str]) -> bool:
    """Whether the process that wrote a lock still runs (other hosts: assume it does)."""
    if len(owner) > 1 and owner[1] != socket.gethostname():
        return True
    try:
        os.kill(int(owner[0]), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters of a model."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def train_run(
    out: str | Path,
    data: DataConfig | None = None,
    model: ModelConfig | None = None,
    train: dict[str, Any] | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    figures: bool = True,
    log: Callable[[str], None] = print,
) -> RunResult:
    """Train (or fit) a model for a filter and write a complete run folder.

    Args:
        out: The run folder.
        data: Photos and filter (default: the built-in photos, the study's Sobel).
        model: Architecture (default ``auto``).
        train: Options of :func:`img2img.train_model` (``max_epochs``, ``batch_size``...).
        resume: Continue the run in ``out`` from its ``state.pt``, with the configuration
            saved in its ``config.json`` (``data``, ``model`` and ``train`` are then
            ignored, except the device, progress and worker options).
        overwrite: Replace a finished run in ``out``.
        figures: Draw the loss curves, predictions and kernels.
        log: Where progress lines go.

    Returns:
        The run's folder, model, losses and metrics.

    Raises:
        RuntimeError: If ``out`` holds a finished run (without ``overwrite``/``resume``)
            or another process is writing to it.
    """
    from img2img.data import load_filtered_dataset
    from img2img.metrics import compute_metrics
    from img2img.train import train_model

    folder = RunFolder(out)
    if resume:
        data, model, train = _saved_config(folder, train or {})
    data = data or DataConfig()
    model_config = model or ModelConfig()
    train = dict(train or {})
    rank, world, device = setup_distributed(train.get("device", "auto"))
    if world > 1:
        train["device"] = str(device)
    writer = rank == 0
    # a `cmd:` filter runs only when given in this call; a resumed run's recorded one reads its cache
    filter = None if data.targets else create_filter(data.filter, allow_commands=not resume)
    if isinstance(filter, CommandFilter):
        filter.timeout = float(data.teacher_timeout)

    if writer and folder.file(MODEL_FILE).exists() and not (resume or overwrite):
        raise RuntimeError(
            f"run folder {str(folder.path)!r} already holds a model; pass --resume to continue it, "
            "--overwrite to replace it, or choose another --out"
        )
    lock = folder.lock() if writer else _nothing()
    with lock:
        started = time.perf_counter()
        train_set, val_set = load_filtered_dataset(
            data=data.data,
            filter=filter,
            targets=data.targets,
            val_fraction=data.val_fraction,
            seed=data.seed,
            crop_size=data.crop_size,
            limit=data.limit,
            download=data.download,
        )
        filter = filter or train_set.filter
        log(
            f"data: {len(train_set)} training and {len(val_set)} validation images "
            f"{train_set.image_size[0]}x{train_set.image_size[1]} from {data.data!r}; "
            f"filter {filter.describe()}"
        )
        if writer:
            folder.write_json(CONFIG_FILE, _config_record(data, model_config, train))
        choice = None
        if model_config.arch == "auto":
            choice = choose_arch(filter, train_set)
            if choice.probe_line:
                log(choice.probe_line)
            log(f"arch auto: {choice.reason}")
            arch, options = choice.arch, {**choice.options, **model_config.options}
        else:
            arch, options = model_config.arch, dict(model_config.options)
        metadata = {
            "filter": filter.canonical,
            "data": data.data,
            "data_config": asdict(data),
            "method": choice.method if choice else "gradient",
        }
        if choice is not None and choice.method == "exact":
            network, train_losses, val_losses = fit_auto(
                train_set,
                val_set,
                choice,
                device=str(device),
                progress=train.get("progress", True),
            )
        else:
            if choice is not None:
                for key, value in choice.train.items():
                    train.setdefault(key, value)
            torch.manual_seed(int(train.get("seed", 0)))  # the same start for every process count
            network = default_model(filter, arch, options)
            refine = _refine_plan(network, choice)
            budget = train.get("time_budget")
            options = dict(train)
            if refine and budget is not None:  # the polish takes the end of the budget
                options["time_budget"] = budget * (1.0 - refine["share"])
            train_losses, val_losses = train_model(
                network,
                train_set,
                val_set,
                save_best=writer,
                save_path=folder.file(MODEL_FILE) if writer else None,
                state_path=str(folder.file(STATE_FILE)) if writer else None,
                resume=str(folder.file(STATE_FILE)) if resume else None,
                metadata=metadata,
                **options,
            )
            if refine and writer:  # one process polishes the model it writes
                spent = getattr(network, "training_summary", {}).get("seconds", 0.0)
                if refine["method"] == "gauss-newton":
                    finish = gauss_newton
                    limits = {}
                else:
                    finish = lbfgs_refine
                    limits = {"seconds": None if budget is None else max(0.0, budget - spent)}
                finish(
                    network,
                    train_set,
                    steps=refine["steps"],
                    images=refine["images"],
                    device=str(device),
                    **limits,
                )
                log(
                    "{method} polish: MSE {loss_before:.3e} -> {loss_after:.3e} in {iterations} "
                    "iterations, {seconds:.1f} s".format(**network.refine_report)
                )
        seconds = time.perf_counter() - started
        if not writer:
            return RunResult(folder.path, network, train_losses, val_losses, {})
        metrics = _evaluate(network, val_set, filter, seconds, compute_metrics, str(device))
        save_model(network, folder.file(MODEL_FILE), **metadata, metrics=metrics)
        record = _config_record(data, model_config, train)
        record["resolved"] = {
            "arch": arch,
            "options": network.config["options"],
            "method": metadata["method"],
            "filter": filter.canonical,
        }
        if choice is not None:
            record["resolved"]["auto"] = choice.to_dict()
            if choice.probe is not None:
                metrics["probe"] = {"line": choice.probe_line, **choice.probe}
        folder.write_json(CONFIG_FILE, record)
        folder.write_history(train_losses, val_losses)
        folder.write_json(METRICS_FILE, metrics)
        if figures:
            _draw_figures(folder, network, val_set, filter, train_losses, val_losses, str(device))
            from img2img.report import write_run_report

            write_run_report(folder.path)
        log(format_summary(folder.path, metrics))
        return RunResult(folder.path, network, train_losses, val_losses, metrics)


#: The finish of a linear model trained by gradient: its MSE is a quadratic whose weakest
#: directions (how the kernel splits between the correlated R, G and B) first-order methods
#: in float32 never resolve; a Gauss-Newton step in float64 lands on its exact minimum.
LINEAR_REFINE = {"method": "gauss-newton", "steps": 3, "images": 16, "share": 0.0}


def _refine_plan(network: nn.Module, choice: AutoChoice | None) -> dict[str, Any]:
    """The polish after gradient training: always for linear models, else as ``auto`` chose."""
    if getattr(network, "is_linear", False):
        plan = dict(LINEAR_REFINE)
        if count_parameters(network) > 1000:  # large kernels: fewer photos bound the Jacobian
            plan["images"] = 4
        return plan
    if choice is not None and choice.refine:
        return {"method": "l-bfgs", "share": 0.0, **choice.refine}
    return {}


#: Training options that may change when a run is resumed (they do not change results).
RESUME_OVERRIDES = ("device", "progress", "num_workers")


def _config_record(data: DataConfig, model: ModelConfig, train: dict[str, Any]) -> dict[str, Any]:
    return {
        "data": asdict(data),
        "model": asdict(model),
        "train": {k: v for k, v in train.items() if k != "metadata"},
        "img2img_version": _version(),
    }


def _saved_config(
    folder: RunFolder, overrides: dict[str, Any]
) -> tuple[DataConfig, ModelConfig, dict[str, Any]]:
    """The configuration of the run to resume, with device and progress from ``overrides``."""
    path = folder.file(CONFIG_FILE)
    if not folder.file(STATE_FILE).is_file() or not path.is_file():
        raise FileNotFoundError(
            f"cannot resume {str(folder.path)!r}: it has no {STATE_FILE} and {CONFIG_FILE} "
            "(was it started by `img2img train`? exact fits finish at once and need no resume)"
        )
    record = json.loads(path.read_text())
    train = dict(record.get("train", {}))
    train.update({k: v for k, v in overrides.items() if k in RESUME_OVERRIDES})
    return DataConfig(**record["data"]), ModelConfig(**record["model"]), train


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def _version() -> str:
    from img2img import __version__

    return __version__


def _evaluate(
    network: nn.Module,
    val_set: Any,
    filter: Any,
    seconds: float,
    compute_metrics: Callable[..., dict[str, Any]],
    device: str,
) -> dict[str, Any]:
    metrics = dict(compute_metrics(network, val_set, device=device))
    summary = getattr(network, "training_summary", {})
    refine = getattr(network, "refine_report", None)
    metrics.update(
        {
            # the fit or the training and its polish, without loading data
            "train_seconds": summary.get("seconds", 0.0) + (refine or {}).get("seconds", 0.0),
            "arch": network.config["arch"],
            "filter": filter.canonical,
            "filter_spec": filter.spec,
            "parameters": count_parameters(network),
            "seconds": seconds,
            "epochs": summary.get("epochs"),
            "best_epoch": summary.get("best_epoch"),
            "stopped": summary.get("stopped"),
            "refine": refine,
            "kernel_error": None,
        }
    )
    if filter.linear and getattr(network, "is_linear", False):
        from img2img.solve import kernel_error

        metrics["kernel_error"] = kernel_error(network, filter)
    return metrics


def _draw_figures(
    folder: RunFolder,
    network: nn.Module,
    val_set: Any,
    filter: Any,
    train_losses: list[float],
    val_losses: list[float],
    device: str,
) -> None:
    import matplotlib.pyplot as plt

    from img2img import viz

    figure = viz.plot_losses(train_losses, val_losses, folder.file("losses.png"))
    plt.close(figure)
    figure = viz.preview_predictions(
        network, val_set, num_images=4, path=folder.file("predictions.png"), device=device
    )
    plt.close(figure)
    if filter.linear and getattr(network, "is_linear", False):
        figure = viz.plot_kernels(network, filter, folder.file("kernels.png"))
        plt.close(figure)


def format_summary(folder: Path, metrics: dict[str, Any]) -> str:
    """A small table of a run's results, for the terminal."""
    rows = [
        ("run folder", str(folder)),
        ("filter", str(metrics.get("filter"))),
        ("architecture", f"{metrics.get('arch')} ({metrics.get('parameters')} parameters)"),
        ("epochs", f"{metrics.get('epochs')} ({metrics.get('stopped')})"),
        ("validation L1", f"{metrics.get('l1', float('nan')):.3e}"),
        (
            "validation PSNR",
            f"{metrics.get('psnr', float('nan')):.2f} dB (data range {metrics.get('data_range', 0):.4g})",
        ),
        ("validation SSIM", f"{metrics.get('ssim', float('nan')):.6f}"),
        ("time", f"{metrics.get('seconds', 0):.1f} s"),
    ]
    error = metrics.get("kernel_error")
    if error:
        rows.append(("kernel max error", f"{error['max_abs']:.3e}"))
    width = max(len(name) for name, _ in rows)
    lines = [f"  {name.ljust(width)}  {value}" for name, value in rows]
    rule = "  " + "-" * (width + 2 + max(len(v) for _, v in rows))
    return "\n".join([rule, *lines, rule])
