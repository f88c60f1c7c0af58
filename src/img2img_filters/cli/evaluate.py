"""``img2img eval``: PSNR, SSIM and L1 of a trained model on validation photos."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from img2img_filters.cli.common import add_device, positive_int
from img2img_filters.run.config import RunFolderError, check_data_config

_log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``eval`` sub-command."""
    parser = subparsers.add_parser(
        "eval",
        help="measure a trained model (PSNR, SSIM, L1)",
        description="Measure a trained model on the validation split of a dataset.",
    )
    parser.add_argument("model", help="a checkpoint or a run folder")
    parser.add_argument(
        "--data",
        default=None,
        help="samples, tiny-imagenet or a folder (default: a folder inside the run folder that "
        "the run recorded, else the built-in photos; paths recorded elsewhere are not read)",
    )
    parser.add_argument(
        "--targets",
        default=None,
        help="for a model learnt from photo pairs: the folder of targets matching --data by name",
    )
    parser.add_argument(
        "--filter", default=None, help="filter spec (default: the one the model learned)"
    )
    parser.add_argument(
        "--limit", type=positive_int, default=None, help="at most this many images (none: all)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON")
    add_device(parser)
    parser.set_defaults(handler=run)


def _recorded_config(model_arg: str, metadata: dict) -> Any:
    """The model's recorded ``data_config`` once checked, or ``None`` (said on stderr)."""
    try:
        return check_data_config(metadata.get("data_config"), f"{model_arg!r}: data_config")
    except RunFolderError as error:
        _log.warning("eval: %s; using the default split", error)
        return None


def _recorded_split(config: Any) -> dict[str, Any]:
    """The split the run recorded: numbers checked against their bounds, safe to reuse."""
    if config is None:
        return {}
    return {
        "val_fraction": config.val_fraction,
        "seed": config.seed,
        "crop_size": config.crop_size,
        "limit": config.limit,
    }


def _recorded_source(model_arg: str, metadata: dict, config: Any) -> str:
    """The data ``eval`` measures on without ``--data``.

    A data path recorded in a checkpoint is information, not an instruction: only a
    folder inside the run folder given on the command line, or the built-in photos,
    is read; anything else is replaced by the built-in photos (said on stderr).
    """
    recorded = config.data if config is not None else metadata.get("data")
    run_dir = Path(model_arg)
    if recorded == "samples":
        source = "samples"
    elif isinstance(recorded, str) and run_dir.is_dir() and _inside(run_dir / recorded, run_dir):
        source = str(run_dir / recorded)
    else:
        _log.warning(
            "eval: the model records its data as %r, which is not inside its run folder; "
            "measuring on the built-in photos (pass --data to choose)",
            str(recorded)[:80],
        )
        return "samples"
    _log.info("eval: measuring on %r, the run's own validation split", source)
    return source


def _inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` (links followed) is ``folder`` or lies under it."""
    try:
        return path.resolve().is_relative_to(folder.resolve())
    except (OSError, RuntimeError, ValueError):
        return False


def run(args: argparse.Namespace) -> int:
    """Handle ``img2img eval``."""
    # loaded when the command runs, so that `img2img --help` stays fast
    from img2img_filters.checkpoint import load_model
    from img2img_filters.cli.apply import resolve_model_path
    from img2img_filters.data import load_filtered_dataset
    from img2img_filters.data.tinyimagenet import TinyImageNetNotFoundError
    from img2img_filters.filters import create_filter
    from img2img_filters.filters.external import PAIRS_PREFIX
    from img2img_filters.metrics import compute_metrics

    model = load_model(resolve_model_path(args.model))
    metadata = getattr(model, "metadata", {}) or {}
    if not isinstance(metadata, dict):
        metadata = {}
    spec = args.filter or metadata.get("filter")
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"the model {args.model!r} does not record its filter; pass --filter")
    if args.targets is not None and args.data is None:
        raise ValueError("--targets needs --data: the input photos the targets pair with")
    if args.targets is None and args.filter is None and spec.startswith(PAIRS_PREFIX):
        raise ValueError(
            f"the model {args.model!r} was learnt from photo pairs; pass --data INPUTS --targets "
            "TARGETS to measure it (folders recorded in a model are not read)"
        )
    config = _recorded_config(args.model, metadata)
    data = args.data or _recorded_source(args.model, metadata, config)
    split = _recorded_split(config)
    # a recorded filter may neither read local files nor run a program (a `cmd:` one reads its cache)
    given = args.filter is not None
    filt = None if args.targets else create_filter(spec, allow_files=given, allow_commands=given)
    try:
        _, val = load_filtered_dataset(data=data, filter=filt, targets=args.targets, **split)
    except TinyImageNetNotFoundError as error:  # worded for the command line
        raise FileNotFoundError(
            f"{error.problem}; run `img2img data download tiny-imagenet`"
        ) from None
    metrics = compute_metrics(model, val, device=args.device, max_images=args.limit)
    if args.json:
        print(json.dumps(metrics, indent=2, default=str))
    else:
        print(f"images           {metrics['images']}")
        print(
            f"PSNR             {metrics['psnr']:.3f} dB "
            f"(data range {metrics['data_range']:.4g}, from the {metrics['data_range_source']})"
        )
        print(f"SSIM             {metrics['ssim']:.6f}")
        print(f"L1               {metrics['l1']:.4e}")
    return 0
