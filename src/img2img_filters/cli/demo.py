"""``img2img demo``: the study's two targets, its network against ``--arch auto``, one report."""

from __future__ import annotations

import argparse

from img2img_filters.cli.common import positive_int


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``demo`` sub-command."""
    parser = subparsers.add_parser(
        "demo",
        help="train the study's targets on the built-in photos and write a comparison report",
        description="Four runs on the built-in photos (no download): the study's Sobel and "
        "random targets, each learned by the study's network and by --arch auto; then "
        "OUT/report.html compares them.",
    )
    parser.add_argument("--out", default="runs/demo", help="demo folder (default runs/demo)")
    parser.add_argument(
        "--epochs", type=positive_int, default=30, help="epochs of the study's recipe"
    )
    parser.add_argument(
        "--limit", type=positive_int, default=None, help="at most this many training photos"
    )
    parser.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bars (they show only when stderr is a terminal); the per-epoch "
        "lines stay",
    )
    # the earlier opt-in flag, still accepted: bars are now on by default, as in `train`
    parser.add_argument("--progress", action="store_true", help=argparse.SUPPRESS)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Handle ``img2img demo``."""
    # loaded when the command runs, so that `img2img --help` stays fast
    from img2img_filters.demo import run_demo

    run_demo(args.out, epochs=args.epochs, limit=args.limit, progress=not args.no_progress)
    return 0
