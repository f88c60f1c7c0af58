"""``img2img train``: train or fit a model for a filter and write a run folder."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

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
    with_default,
    workers_int,
)
from img2img_filters.run.config import DataConfig, ModelConfig
from img2img_filters.train.config import ENGINES, TrainConfig

#: The configurations the options fall through to: each default lives in its dataclass.
DATA, MODEL, TRAIN = DataConfig(), ModelConfig(), TrainConfig()


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``train`` sub-command.

    Every option defaults to ``None`` and falls through to the field of :class:`DataConfig`,
    :class:`ModelConfig` or :class:`~img2img_filters.train.TrainConfig` that it sets; its help
    states that field's default. ``auto`` may choose the training options left unset.
    """
    parser = subparsers.add_parser(
        "train",
        help="learn a filter from photos and write a run folder",
        description="Learn a filter from photos. Writes OUT/model.safetensors, "
        "config.json, history.csv, metrics.json, figures and report.html; a run trained by "
        "gradient also writes state.pt, from which --resume continues it. "
        "Under torchrun, trains with DistributedDataParallel.",
    )
    _add_data_options(parser.add_argument_group("data", "the photos and the filter to learn"))
    _add_model_options(parser.add_argument_group("model", "what learns it"))
    _add_training_options(parser.add_argument_group("training", "the recipe"))
    engine = parser.add_argument_group("engine", "where and how each step runs")
    _add_engine_options(engine)
    add_device(engine, falls_through_to=TRAIN.device)
    _add_run_options(parser.add_argument_group("run folder and output"))
    parser.set_defaults(handler=run, validate=validate_train)


def _add_data_options(group: argparse._ArgumentGroup) -> None:
    """The photos, the filter or program that makes the targets, and the split."""
    group.add_argument(
        "--data",
        default=None,
        help=with_default("samples (built-in photos), tiny-imagenet, or a folder", DATA.data),
    )
    group.add_argument(
        "--filter",
        default=None,
        help=with_default(
            "filter spec, e.g. 'sobel:dx=1,ksize=5' (see `img2img filters`), "
            "or an external program: 'cmd:PROGRAM ARGS... {in} ... {out}' (run without a "
            "shell, once per photo, outputs cached)",
            DATA.filter,
        ),
    )
    group.add_argument(
        "--targets",
        default=None,
        help=with_default(
            "a folder of targets paired by name with the photos of --data (learn photo pairs)",
            DATA.targets,
        ),
    )
    group.add_argument(
        "--teacher-timeout",
        type=positive_float,
        default=None,
        help=with_default(
            "seconds a cmd: filter's program may take per photo", DATA.teacher_timeout
        ),
    )
    group.add_argument(
        "--limit",
        type=positive_int,
        default=None,
        help=with_default("use at most this many training images (none: all)", DATA.limit),
    )
    group.add_argument(
        "--val-fraction",
        type=fraction,
        default=None,
        help=with_default("share of photos for validation", DATA.val_fraction),
    )
    group.add_argument(
        "--crop-size",
        type=crop_size,
        default=None,
        help=with_default("side of the crops (at least 7)", DATA.crop_size),
    )
    group.add_argument(
        "--seed",
        type=seed_int,
        default=None,
        help=with_default("seed for the split, random filters and training", DATA.seed),
    )
    group.add_argument(
        "--download",
        action="store_true",
        default=None,
        help=with_default("download Tiny ImageNet if missing", DATA.download),
    )


def _add_model_options(group: argparse._ArgumentGroup) -> None:
    """The architecture and its options."""
    group.add_argument(
        "--arch",
        default=None,
        help=with_default("auto, or an architecture from `img2img archs`", MODEL.arch),
    )
    group.add_argument(
        "--option",
        action="append",
        metavar="KEY=VALUE",
        help=with_default(
            "architecture option (repeatable; `img2img archs` lists each one's)", MODEL.options
        ),
    )


def _add_training_options(group: argparse._ArgumentGroup) -> None:
    """The training recipe: epochs, batches, learning rate, stopping, loss, time budget."""
    group.add_argument(
        "--epochs",
        type=epochs_int,
        default=None,
        help=with_default("maximum epochs", TRAIN.max_epochs),
    )
    group.add_argument(
        "--batch-size",
        type=batch_size,
        default=None,
        help=with_default("images per step; auto may choose", TRAIN.batch_size),
    )
    group.add_argument(
        "--lr",
        type=positive_float,
        default=None,
        help=with_default("learning rate; auto may choose", TRAIN.learning_rate),
    )
    group.add_argument(
        "--patience",
        type=patience_int,
        default=None,
        help=with_default(
            "early-stopping patience in epochs (0: off)", TRAIN.early_stopping_patience
        ),
    )
    group.add_argument(
        "--loss",
        choices=("l1", "mse"),
        default=None,
        help=with_default("training loss; auto may choose", TRAIN.loss),
    )
    group.add_argument(
        "--time-budget",
        type=positive_float,
        default=None,
        help=with_default(
            "seconds for the whole run: data loading, training and its polish (none: no limit)",
            TRAIN.time_budget,
        ),
    )


def _add_engine_options(group: argparse._ArgumentGroup) -> None:
    """Where and how each step runs: batch workers, precision, memory format, engine."""
    group.add_argument(
        "--workers",
        type=workers_int,
        default=None,
        help=with_default("processes making batches", TRAIN.num_workers),
    )
    group.add_argument(
        "--amp",
        choices=("bf16",),
        default=None,
        help=with_default("mixed precision (CUDA; none: float32)", TRAIN.amp),
    )
    group.add_argument(
        "--channels-last",
        action="store_true",
        default=None,
        help=with_default(
            "channels_last memory format (CUDA; on the CPU it speeds up wide networks such as can)",
            TRAIN.channels_last,
        ),
    )
    group.add_argument(
        "--compile",
        action="store_true",
        default=None,
        help=with_default(
            "torch.compile the model; on the CPU the study and zero-border linear networks "
            "train as fused loops, 1.5-2x as fast (needs a C++ compiler; the first step "
            "compiles)",
            TRAIN.compile,
        ),
    )
    group.add_argument(
        "--engine",
        choices=ENGINES,
        default=None,
        help=with_default(
            "how each step runs (auto: fused compiled loops for a long enough run of the "
            "study network on the CPU, else OpenCV's convolutions on the CPU, else eager)",
            TRAIN.engine,
        ),
    )


def _add_run_options(group: argparse._ArgumentGroup) -> None:
    """Where the run goes, resuming, and what it shows."""
    group.add_argument("--out", default=None, help="run folder (default: runs/<time>-<filter>)")
    group.add_argument(
        "--resume",
        metavar="RUN_DIR",
        default=None,
        help="continue an interrupted run with its own settings; only --epochs (more than "
        "it asked for also continues a finished run), --time-budget, --device, --workers, "
        "--no-progress and --no-figures may be given with it, any other option is refused "
        "(default: none, a new run)",
    )
    group.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run in --out (its files are put back if the new run fails)",
    )
    group.add_argument(
        "--no-progress", action="store_true", help="no progress bars (the per-epoch lines stay)"
    )
    group.add_argument("--no-figures", action="store_true", help="skip figures and report")


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


def _given_fields(args: argparse.Namespace, **options: str) -> dict[str, Any]:
    """``{field: value}`` of the options given: ``field=option`` pairs whose value is not ``None``."""
    values = {name: getattr(args, option) for name, option in options.items()}
    return {name: value for name, value in values.items() if value is not None}


def run(args: argparse.Namespace) -> int:
    """Handle ``img2img train``."""
    # loaded when the command runs, so that `img2img --help` stays fast
    from img2img_filters.data.tinyimagenet import TinyImageNetNotFoundError
    from img2img_filters.distributed import cleanup_distributed
    from img2img_filters.runs import train_run

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
    data = _given_fields(
        args,
        data="data",
        filter="filter",
        targets="targets",
        teacher_timeout="teacher_timeout",
        val_fraction="val_fraction",
        seed="seed",
        crop_size="crop_size",
        limit="limit",
        download="download",
    )
    if args.targets is not None:
        data["filter"] = "pairs"
    out = args.resume or args.out or default_run_name(data.get("filter", DATA.filter))
    # only what was given: the rest falls through to TrainConfig, or to what auto chooses
    train = _given_fields(
        args,
        max_epochs="epochs",
        batch_size="batch_size",
        learning_rate="lr",
        loss="loss",
        early_stopping_patience="patience",
        seed="seed",
        num_workers="workers",
        device="device",
        time_budget="time_budget",
        amp="amp",
        channels_last="channels_last",
        compile="compile",
        engine="engine",
    )
    train["progress"] = not args.no_progress
    try:
        train_run(
            out,
            DataConfig(**data),
            ModelConfig(**_given_fields(args, arch="arch"), options=parse_options(args.option)),
            train,
            resume=args.resume is not None,
            overwrite=args.overwrite,
            figures=not args.no_figures,
        )
    except TinyImageNetNotFoundError as error:  # worded for the command line
        raise FileNotFoundError(
            f"{error.problem}; pass --download, or run `img2img data download tiny-imagenet`"
        ) from None
    finally:
        cleanup_distributed()  # under torchrun: leave the process group
    return 0
