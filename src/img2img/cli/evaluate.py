"""``img2img eval``: PSNR, SSIM and L1 of a trained model on validation photos."""

from __future__ import annotations

import argparse
import json

from img2img.cli.common import add_device, positive_int


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``eval`` sub-command."""
    parser = subparsers.add_parser(
        "eval",
        help="measure a trained model (PSNR, SSIM, L1)",
        description="Measure a trained model on the validation split of a dataset.",
    )
    parser.add_argument("model", help="a checkpoint or a run folder")
    parser.add_argument(
        "--data", default=None, help="samples, tiny-imagenet or a folder (default: the model's)"
    )
    parser.add_argument(
        "--filter", default=None, help="filter spec (default: the one the model learned)"
    )
    parser.add_argument("--limit", type=positive_int, default=None, help="at most this many images")
    parser.add_argument("--json", action="store_true", help="print JSON")
    add_device(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Handle ``img2img eval``."""
    from img2img.checkpoint import load_model
    from img2img.cli.apply import resolve_model_path
    from img2img.data import load_filtered_dataset
    from img2img.filters import create_filter
    from img2img.metrics import compute_metrics

    model = load_model(resolve_model_path(args.model))
    metadata = getattr(model, "metadata", {}) or {}
    spec = args.filter or metadata.get("filter")
    if spec is None:
        raise ValueError("the model does not record its filter; pass --filter")
    # a recorded filter may not read local files nor run a program (a `cmd:` one reads its cache)
    given = args.filter is not None
    filt = create_filter(spec, allow_files=given, allow_commands=given)
    # The run's own validation split (same source, seed, fraction and limit), unless --data says otherwise.
    config = {} if args.data else dict(metadata.get("data_config") or {})
    targets = None if given else config.get("targets")
    _, val = load_filtered_dataset(
        data=args.data or config.get("data") or metadata.get("data") or "samples",
        filter=None if targets else filt,
        targets=targets,
        val_fraction=config.get("val_fraction", 0.2),
        seed=config.get("seed", 0),
        crop_size=config.get("crop_size", 64),
        limit=config.get("limit"),
    )
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
