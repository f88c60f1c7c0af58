"""``img2img apply``: filter an image, or a folder of images, with a trained model."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from img2img.cli.common import add_device, batch_size, positive_int, tile_int

_FORMATS = {"png": (".png",), "npy": (".npy",), "tif": (".tif", ".tiff")}


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``apply`` sub-command."""
    parser = subparsers.add_parser(
        "apply",
        help="filter an image or a folder of images with a trained model",
        description="Filter an image of any size, or every image of a folder (sub-folders "
        "mirrored), with a trained model. Output: a float32 .npy (exact), or a PNG/TIFF whose "
        "values are mapped from the filter's output range (from the model's metadata; [0, 1] "
        "without) to 0..255 or 0..65535. Inputs: 8- and 16-bit, gray (repeated to RGB), RGBA "
        "(alpha dropped). Large images are filtered in tiles, in bounded memory; linear "
        "models of one convolution run as one OpenCV filter.",
    )
    parser.add_argument("model", help="a checkpoint (model.safetensors, .pt) or a run folder")
    parser.add_argument("input", help="an image file, or a folder of images")
    parser.add_argument(
        "-o",
        "--output",
        required=True,
        help="output file (.npy, .png, .tif) for an image; output folder for a folder",
    )
    parser.add_argument(
        "--format",
        choices=sorted(_FORMATS),
        default=None,
        help="output format for a folder (default png); for a file, the extension decides",
    )
    parser.add_argument(
        "--bit-depth", type=int, choices=(8, 16), default=8, help="PNG/TIFF bit depth (default 8)"
    )
    parser.add_argument(
        "--tile",
        type=tile_int,
        default=None,
        help="tile side in pixels, at least the model's receptive field "
        "(default: chosen from the memory available)",
    )
    parser.add_argument(
        "--batch",
        type=batch_size,
        default=1,
        help="folder: filter up to N images of one size together when each fits a tile",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="folder: replace existing outputs (else skipped)"
    )
    parser.add_argument(
        "--max-pixels",
        type=positive_int,
        default=None,
        help="refuse images of more pixels (default: $IMG2IMG_MAX_PIXELS or 178956970)",
    )
    parser.add_argument(
        "--fast",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="--fast folds any linear model into one OpenCV filter (a deeper stack is then "
        "exact only away from the borders); --no-fast always runs the network "
        "(default: fold when exact)",
    )
    add_device(parser)
    parser.set_defaults(handler=run)


def resolve_model_path(path: str | Path) -> Path:
    """A checkpoint path from a checkpoint or a run folder."""
    path = Path(path)
    if path.is_dir():
        candidate = path / "model.safetensors"
        if not candidate.is_file():
            raise FileNotFoundError(f"run folder {str(path)!r} has no model.safetensors")
        return candidate
    return path


def output_range(model) -> tuple[float, float] | None:
    """The output range of the filter a model learned, from its metadata."""
    from img2img.infer import model_output_range

    return model_output_range(model)


def _single_output(output: str, format: str | None) -> Path:
    """The output file for one image: ``--format`` must agree with its extension."""
    path = Path(output)
    suffix = path.suffix.lower()
    if not suffix:
        return path.with_suffix(_FORMATS[format or "png"][0])
    if format is not None and suffix not in _FORMATS[format]:
        raise ValueError(
            f"--format {format} disagrees with the output file {output!r} (expected an "
            f"extension of {list(_FORMATS[format])})"
        )
    return path


def _run_folder(args: argparse.Namespace, model) -> int:
    from tqdm.auto import tqdm

    from img2img.infer import apply_folder
    from img2img.infer.folder import failure_line

    def report(path: Path, reason: str) -> None:
        tqdm.write(f"img2img: failed: {failure_line(path, reason)}", file=sys.stderr)

    summary = apply_folder(
        model,
        args.input,
        args.output,
        format=args.format or "png",
        bit_depth=args.bit_depth,
        overwrite=args.overwrite,
        tile=args.tile,
        device=args.device,
        fast=args.fast,
        batch=args.batch,
        max_pixels=args.max_pixels,
        progress=sys.stderr.isatty(),
        on_failure=report,
    )
    print(summary.format())
    return 0 if summary.ok else 1


def run(args: argparse.Namespace) -> int:
    """Handle ``img2img apply``."""
    from img2img.checkpoint import load_model
    from img2img.imageio import write_image
    from img2img.infer import apply_filter

    model = load_model(resolve_model_path(args.model))
    if Path(args.input).is_dir():
        return _run_folder(args, model)
    output = _single_output(args.output, args.format)
    result = apply_filter(
        args.input,
        model,
        tile=args.tile,
        device=args.device,
        fast=args.fast,
        max_pixels=args.max_pixels,
        progress=sys.stderr.isatty(),
    )
    write_image(output, result, bit_depth=args.bit_depth, value_range=output_range(model))
    print(f"wrote {output} ({result.shape[1]}x{result.shape[0]})")
    return 0
