"""``img2img probe``: what kind of operator a filter or a folder of example pairs is."""

from __future__ import annotations

import argparse
import json

from img2img_filters.cli.common import positive_int


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``probe`` sub-command."""
    parser = subparsers.add_parser(
        "probe",
        help="measure what kind of operator a filter or example pairs are",
        description="Measure whether an operator is pointwise, linear, shift-invariant, "
        "how far it reaches and whether it depends on the whole image; give --filter, "
        "or --data and --targets (folders of inputs and their targets, matched by "
        "relative path without extension).",
    )
    parser.add_argument("--filter", default=None, help="a filter spec, e.g. median:ksize=5")
    parser.add_argument("--data", default=None, help="a folder of input photos (with --targets)")
    parser.add_argument("--targets", default=None, help="a folder of their targets (with --data)")
    parser.add_argument("--limit", type=positive_int, default=32, help="at most this many pairs")
    parser.add_argument("--seed", type=_seed, default=0, help="seed of the probes")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(handler=run)


def _seed(text: str) -> int:
    """Parse an integer >= 0 (an argparse type)."""
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected an integer >= 0; got {text!r}")
    return int(text)


def run(args: argparse.Namespace) -> int:
    """Handle ``img2img probe``."""
    # loaded when the command runs, so that `img2img --help` stays fast
    from img2img_filters.probe import probe_operator, read_pair_folders

    pairs_given = args.data is not None or args.targets is not None
    if (args.filter is None) == (not pairs_given):
        raise ValueError("probe: give --filter SPEC, or --data INPUTS with --targets TARGETS")
    if pairs_given:
        if args.data is None or args.targets is None:
            raise ValueError("probe: --data and --targets go together; give both folders")
        pairs = read_pair_folders(args.data, args.targets, limit=args.limit)
        report = probe_operator(pairs=pairs, seed=args.seed)
    else:
        report = probe_operator(args.filter, seed=args.seed)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
        return 0
    for name in ("pointwise", "linear", "shift_invariant", "global_"):
        measure = getattr(report, name)
        label = name.rstrip("_").replace("_", "-")
        if measure is None or measure.holds is None:
            print(f"{label:16s} not measured")
            continue
        answer = "yes" if measure.holds else "no"
        print(
            f"{label:16s} {answer:4s} error {measure.error:.3g} (tolerance {measure.tolerance:g})"
        )
    radius = "unbounded" if report.support_radius is None else f"{report.support_radius} px"
    print(f"{'support radius':16s} {radius}")
    print(f"{'channels':16s} {report.channels_in} in, {report.channels_out} out")
    low, high = report.output_range
    print(f"{'output range':16s} [{low:.4g}, {high:.4g}]")
    for note in report.notes:
        print(f"note: {note}")
    print(f"verdict: {report.summary}")
    return 0
