"""``img2img export``: write a trained model as ONNX or TorchScript."""

from __future__ import annotations

import argparse
from pathlib import Path

from img2img_filters.cli.common import export_path, positive_int, with_default
from img2img_filters.export import DEFAULT_OPSET


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``export`` sub-command."""
    parser = subparsers.add_parser(
        "export",
        help="export a trained model to ONNX or TorchScript",
        description="Export a trained model with dynamic batch size, height and width. "
        "ONNX needs the optional packages onnx and onnxruntime "
        "(pip install 'img2img-filters[export]', or pip install -e '.[export]' from a source "
        "checkout); the file is checked with onnx.checker and its "
        "output compared with PyTorch's under ONNX Runtime.",
    )
    parser.add_argument("model", help="a checkpoint (model.safetensors, .pt) or a run folder")
    parser.add_argument(
        "--format", choices=("onnx", "torchscript"), default="onnx", help="the file's format"
    )
    parser.add_argument(
        "-o",
        "--output",
        type=export_path,
        required=True,
        help="the file to write: .onnx (ONNX), .pt, .pth or .ts (TorchScript)",
    )
    parser.add_argument(
        "--opset",
        type=positive_int,
        default=None,
        help=with_default("ONNX opset (at least 11)", DEFAULT_OPSET),
    )
    parser.add_argument(
        "--no-check",
        action="store_true",
        help="skip running the ONNX file with ONNX Runtime after export",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Handle ``img2img export``."""
    # loaded when the command runs, so that `img2img --help` stays fast
    from img2img_filters.checkpoint import load_model
    from img2img_filters.cli.apply import resolve_model_path
    from img2img_filters.export import check_onnx, export_model, min_input_size
    from img2img_filters.fileio import check_not_input
    from img2img_filters.run.folder import OUTPUT_FILES

    checkpoint = resolve_model_path(args.model)
    inputs = [checkpoint]
    if Path(args.model).is_dir():  # a run folder: none of its files is an output
        inputs += [Path(args.model) / name for name in OUTPUT_FILES]
    check_not_input(args.output, inputs, "--output")
    model = load_model(checkpoint)
    path = export_model(model, args.output, args.format, opset=args.opset)
    size = min_input_size(model)
    line = f"wrote {path} ({args.format}; dynamic height and width, at least {size}x{size})"
    if args.format == "onnx" and not args.no_check:
        error = check_onnx(model, path)
        line += f"; ONNX Runtime matches PyTorch to {error:.1e}"
    print(line)
    return 0
