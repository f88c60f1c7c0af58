"""``img2img train``: train or fit a model for a filter and write a run folder."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from img2img_filters.cli.common import (
    add_device,
    batch_size,
    crop_size,
    epochs_int,
    fraction,
    parse_options,
    patience_int,
    positive_float,
    positive_int,
    seed_int,
    validate_train,
    workers_int,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``train`` sub-command."""
    parser = subparsers.add_parser(
        "train",
        help="learn a filter from photos and write a run folder",
        description="Learn a filter from photos. Writes OUT/model.safetensors, state.pt, "
        "config.json, history.csv, metrics.json, figures and report.html. "
        "Under torchrun, trains with DistributedDataParallel.",
    )
    parser.add_argument(
        "--data", default="samples", help="samples (built-in photos), tiny-imagenet, or a folder"
    )
    parser.add_argument(
        "--filter",
        default=None,
        help="filter spec, e.g. 'sobel:dx=1,ksize=5' (see `img2img filters`; default study-sobel), "
        "or an external program: 'cmd:PROGRAM ARGS... {in} ... {out}' (run without a shell, "
        "once per photo, outputs cached)",
    )
    parser.add_argument(
        "--targets",
        default=None,
        help="a folder of targets paired by name with the photos of --data (learn photo pairs)",
    )
    parser.add_argument(
        "--teacher-timeout",
        type=positive_float,
        default=60.0,
        help="seconds a cmd: filter's program may take per photo (default 60)",
    )
    parser.add_argument(
        "--arch", default="auto", help="auto, or an architecture from `img2img archs`"
    )
    parser.add_argument(
        "--option", action="append", metavar="KEY=VALUE", help="architecture option (repeatable)"
    )
    parser.add_argument(
        "--epochs", type=epochs_int, default=None, help="maximum epochs (default 100)"
    )
    parser.add_argument(
        "--batch-size",
        type=batch_size,
        default=None,
        help="images per step (default 128; auto may choose)",
    )
    parser.add_argument(
        "--lr",
        type=positive_float,
        default=None,
        help="learning rate (default 0.001; auto may choose)",
    )
    parser.add_argument(
        "--patience",
        type=patience_int,
        default=5,
        help="early-stopping patience in epochs (0: off)",
    )
    parser.add_argument(
        "--loss",
        choices=("l1", "mse"),
        default=None,
        help="training loss (default l1; auto may choose)",
    )
    parser.add_argument(
        "--seed", type=seed_int, default=0, help="seed for the split, random filters and training"
    )
    parser.add_argument("--workers", type=workers_int, default=0, help="processes making batches")
    parser.add_argument(
        "--limit", type=positive_int, default=None, help="use at most this many training images"
    )
    parser.add_argument(
        "--val-fraction", type=fraction, default=0.2, help="share of photos for validation"
    )
    parser.add_argument(
        "--crop-size", type=crop_size, default=64, help="side of the crops (default 64, at least 7)"
    )
    parser.add_argument(
        "--time-budget",
        type=positive_float,
        default=None,
        help="seconds for the whole run: data loading, training and its polish",
    )
    parser.add_argument("--download", action="store_true", help="download Tiny ImageNet if missing")
    parser.add_argument("--out", default=None, help="run folder (default runs/<time>-<filter>)")
    parser.add_argument(
        "--resume",
        metavar="RUN_DIR",
        default=None,
        help="continue an interrupted run with its own settings; only --epochs (more than "
        "it asked for also continues a finished run), --time-budget, --device, --workers, "
        "--no-progress and --no-figures may be given with it, any other option is refused",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run in --out (its files are put back if the new run fails)",
    )
    parser.add_argument("--amp", choices=("bf16",), default=None, help="mixed precision (CUDA)")
    parser.add_argument(
        "--channels-last",
        action="store_true",
        help="channels_last memory format (CUDA; on the CPU it speeds up wide networks such as can)",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the model; on the CPU the study and zero-border linear networks "
        "train as fused loops, 1.5-2x as fast (needs a C++ compiler; the first step compiles)",
    )
    parser.add_argument(
        "--engine",
        choices=("auto", "eager", "ddp", "opencv", "fused", "compile"),  # train.config.ENGINES
        default="auto",
        help="how each step runs (default auto: fused compiled loops for a long enough run of "
        "the study network on the CPU, else OpenCV's convolutions on the CPU, else eager)",
    )
    parser.add_argument(
        "--no-progress", action="store_true", help="no progress bars (the per-epoch lines stay)"
    )
    parser.add_argument("--no-figures", action="store_true", help="skip figures and report")
    add_device(parser)
    parser.set_defaults(handler=run, validate=validate_train)


def default_run_name(filter_spec: str) -> str:
    """``runs/20261128-101500-study-sobel``: a time stamp and a file-safe filter name."""
    safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in filter_spec)[:40].strip("-")
    return str(Path("runs") / f"{time.strftime('%Y%m%d-%H%M%S')}-{safe}")


#: Options that ``--resume`` takes; every other one is the run's own and refused with it.
RESUME_OPTIONS = (
    "resume",
    "epochs",
    "time_budget",
    "device",
    "workers",
    "no_progress",
    "no_figures",
)


def _given(args: argparse.Namespace) -> list[str]:
    """The options of ``args`` set to other values than their defaults, as ``--name``."""
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    defaults = vars(parser.parse_args(["train"]))
    return [
        "--" + name.replace("_", "-")
        for name, value in vars(args).items()
        if name in defaults and name != "handler" and value != defaults[name]
    ]


def run(args: argparse.Namespace) -> int:
    """Handle ``img2img train``."""
    # loaded when the command runs, so that `img2img --help` stays fast
    from img2img_filters.distributed import cleanup_distributed
    from img2img_filters.runs import DataConfig, ModelConfig, train_run

    if args.resume is not None:
        refused = [o for o in _given(args) if o[2:].replace("-", "_") not in RESUME_OPTIONS]
        if refused:
            raise ValueError(
                f"--resume continues a run with its own settings; {', '.join(refused)} "
                "cannot change on resume (allowed with it: --epochs, --time-budget, --device, "
                "--workers, --no-progress, --no-figures)"
            )
    if args.targets is not None and args.filter is not None:
        raise ValueError(
            "--filter and --targets exclude each other: the targets are what is learnt"
        )
    spec = "pairs" if args.targets is not None else args.filter or "study-sobel"
    out = args.resume or args.out or default_run_name(spec)
    train = {
        "max_epochs": args.epochs if args.epochs is not None else 100,
        "early_stopping_patience": args.patience,
        "seed": args.seed,
        "num_workers": args.workers,
        "device": args.device,
        "progress": not args.no_progress,
        "time_budget": args.time_budget,
        "amp": args.amp,
        "channels_last": args.channels_last,
        "compile": args.compile,
        "engine": args.engine,
    }
    if args.resume is not None and args.epochs is None:
        del train["max_epochs"]  # the run's own
    if args.lr is not None:
        train["learning_rate"] = args.lr
    if args.loss is not None:
        train["loss"] = args.loss
    if args.batch_size is not None:
        train["batch_size"] = args.batch_size
    try:
        train_run(
            out,
            DataConfig(
                data=args.data,
                filter=spec,
                targets=args.targets,
                teacher_timeout=args.teacher_timeout,
                val_fraction=args.val_fraction,
                seed=args.seed,
                crop_size=args.crop_size,
                limit=args.limit,
                download=args.download,
            ),
            ModelConfig(arch=args.arch, options=parse_options(args.option)),
            train,
            resume=args.resume is not None,
            overwrite=args.overwrite,
            figures=not args.no_figures,
        )
    finally:
        cleanup_distributed()  # under torchrun: leave the process group
    return 0
