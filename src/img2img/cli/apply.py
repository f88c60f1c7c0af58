"""``img2img apply``: filter images with a trained model."""

from __future__ import annotations

import argparse
from pathlib import Path

from img2img.cli.common import add_device


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``apply`` sub-command."""
    parser = subparsers.add_parser(
        "apply",
        help="filter an image with a trained model",
        description="Filter an image of any size with a trained model. The output is a "
        "float32 .npy (exact) or a PNG/TIFF scaled from the filter's output range.",
    )
    parser.add_argument("model", help="a checkpoint (model.safetensors, .pt) or a run folder")
    parser.add_argument("input", help="an image file")
    parser.add_argument("-o", "--output", required=True, help="output file: .npy, .png or .tif")
    parser.add_argument(
        "--bit-depth", type=int, choices=(8, 16), default=8, help="PNG/TIFF bit depth"
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
    from img2img.filters import create_filter

    spec = (getattr(model, "metadata", None) or {}).get("filter")
    return create_filter(spec).output_range if spec else None


def run(args: argparse.Namespace) -> int:
    """Handle ``img2img apply``."""
    from img2img.checkpoint import load_model
    from img2img.imageio import write_image
    from img2img.infer import apply_filter

    model = load_model(resolve_model_path(args.model))
    result = apply_filter(args.input, model, device=args.device)
    write_image(args.output, result, bit_depth=args.bit_depth, value_range=output_range(model))
    print(f"wrote {args.output} ({result.shape[1]}x{result.shape[0]})")
    return 0
