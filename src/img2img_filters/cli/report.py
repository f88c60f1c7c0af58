"""``img2img report``: rebuild a run's HTML report, or compare several runs in one page."""

from __future__ import annotations

import argparse

#: Where a comparison goes without ``--out``.
DEFAULT_COMPARISON = "comparison.html"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``report`` sub-command."""
    parser = subparsers.add_parser(
        "report",
        help="rebuild a run's report.html, or compare runs in one page",
        description="With one run folder, rebuild RUN_DIR/report.html: configuration, metrics, "
        "loss curves, predictions and kernels in one self-contained HTML page. With several, "
        "write one page comparing them: a table of results, their loss curves on one plot "
        "and their predictions.",
    )
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders")
    parser.add_argument(
        "-o",
        "--out",
        default=None,
        help="the HTML file (default: RUN_DIR/report.html for one run, "
        f"{DEFAULT_COMPARISON} in the current folder for several)",
    )
    parser.add_argument("--title", default=None, help="the page title")
    parser.add_argument(
        "--no-draw",
        action="store_true",
        help="embed only the figures found in the run folders; draw none that are missing",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Handle ``img2img report``."""
    # loaded when the command runs, so that `img2img --help` stays fast
    from img2img_filters.report import write_comparison_report, write_run_report

    if len(args.runs) == 1:
        path = write_run_report(
            args.runs[0], args.out, title=args.title, draw_missing=not args.no_draw
        )
    else:
        path = write_comparison_report(
            args.runs,
            args.out or DEFAULT_COMPARISON,
            title=args.title,
            draw_missing=not args.no_draw,
        )
    print(f"wrote {path}")
    return 0
