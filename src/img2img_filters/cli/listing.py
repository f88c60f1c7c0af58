"""``img2img filters`` and ``img2img archs``: what can be learned, and with what."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``filters`` and ``archs`` sub-commands."""
    filters = subparsers.add_parser(
        "filters",
        help="list the filters and their parameters, or preview one on a photo",
        description="List every filter with its parameters, defaults and a description. "
        "With --preview IMAGE, draw what --filter does to that photo.",
    )
    filters.add_argument(
        "--preview", metavar="IMAGE", default=None, help="a photo to preview --filter on"
    )
    filters.add_argument("--filter", default="study-sobel", help="the spec to preview")
    filters.add_argument(
        "-o", "--output", default="filter-preview.png", help="where the preview goes"
    )
    filters.set_defaults(handler=run_filters)
    archs = subparsers.add_parser(
        "archs",
        help="list the architectures and their options",
        description="List every architecture `train --arch` takes, with a description and "
        "its options' defaults; set an option with `train --arch NAME --option KEY=VALUE`. "
        "The default, --arch auto, chooses one from the filter: an exact least-squares "
        "kernel for a linear filter, else the network its recipe names.",
    )
    archs.set_defaults(handler=run_archs)


def run_filters(args: argparse.Namespace) -> int:
    """Handle ``img2img filters``."""
    # loaded when the command runs, so that `img2img --help` stays fast
    from img2img_filters.filters import create_filter, format_filter_table

    if args.preview is None:
        print(format_filter_table())
        return 0
    # loaded when the command runs, so that `img2img --help` stays fast
    from img2img_filters.viz import preview_filter

    filter = create_filter(args.filter)
    preview_filter(filter, args.preview, args.output)
    print(f"wrote {args.output}: {filter.describe()}")
    return 0


def run_archs(args: argparse.Namespace) -> int:
    """Handle ``img2img archs``."""
    # loaded when the command runs, so that `img2img --help` stays fast
    from img2img_filters.models import list_archs

    entries = list_archs()
    width = max(len(entry.name) for entry in entries) + 2
    for entry in entries:
        options = ", ".join(f"{key}={value!r}" for key, value in entry.defaults.items())
        print(f"{entry.name:{width}s}{entry.description}")
        print(f"{'':{width}s}options: {options or 'none'}")
    return 0
