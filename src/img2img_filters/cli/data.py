"""``img2img data``: fetch and inspect datasets."""

from __future__ import annotations

import argparse

from img2img_filters.data.sources import list_data_sources


def _sources_text() -> str:
    """The data sources, one sentence each, for ``data --help``."""
    return " ".join(f"{source.name}: {source.description}." for source in list_data_sources())


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``data`` sub-command."""
    parser = subparsers.add_parser(
        "data",
        help="download Tiny ImageNet, or show where each data source is read",
        description="The photos `train --data` learns from. " + _sources_text() + " "
        "`data download` fetches and checks a dataset; `data info` shows where each source "
        "is looked for and whether it is there.",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    downloadable = [source.name for source in list_data_sources() if source.downloadable]
    download = actions.add_parser(
        "download",
        help="download and extract a dataset",
        description="Download a dataset, check its MD5 checksum and extract it; a dataset "
        "already in place is left as it is.",
    )
    download.add_argument("name", choices=downloadable, help="the dataset")
    download.add_argument(
        "--root", default=None, help="where to put it (default: the cache folder)"
    )
    download.set_defaults(handler=run_download)
    info = actions.add_parser(
        "info",
        help="where datasets are looked for, and what is there",
        description="Print the cache folder and, for each data source, where it is read.",
    )
    info.set_defaults(handler=run_info)


def run_download(args: argparse.Namespace) -> int:
    """Handle ``img2img data download``."""
    # loaded when the command runs, so that `img2img --help` stays fast
    from img2img_filters.data import cache_dir, download_tiny_imagenet

    root = args.root or str(cache_dir())
    path = download_tiny_imagenet(root)
    print(f"Tiny ImageNet is ready in {path}")
    return 0


def run_info(args: argparse.Namespace) -> int:
    """Handle ``img2img data info``."""
    # loaded when the command runs, so that `img2img --help` stays fast
    from img2img_filters.data import cache_dir, find_tiny_imagenet, is_tiny_imagenet_layout

    print(f"cache folder     {cache_dir()}")
    root = find_tiny_imagenet()
    if is_tiny_imagenet_layout(root):
        print(f"tiny-imagenet    {root}")
    else:
        print(f"tiny-imagenet    not found at {root}; run `img2img data download tiny-imagenet`")
    print("samples          built in (scikit-image's photos)")
    return 0
