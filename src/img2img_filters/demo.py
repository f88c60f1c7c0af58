"""The demo: the study's two targets, learned by the study's network and by ``--arch auto``.

Four runs on the built-in photos, then one page comparing them, so a newcomer
sees both the study's result and how far beyond it exact fitting goes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from img2img_filters.report import plot_loss_comparison, read_run, write_comparison_report
from img2img_filters.runs import DataConfig, ModelConfig, RunResult, train_run

__all__ = ["DEMO_RUNS", "run_demo"]

_log = logging.getLogger(__name__)

#: (run name, filter, architecture): the study's targets with its network and with auto.
DEMO_RUNS: tuple[tuple[str, str, str], ...] = (
    ("sobel-study", "study-sobel", "study"),
    ("sobel-auto", "study-sobel", "auto"),
    ("random-study", "study-random", "study"),
    ("random-auto", "study-random", "auto"),
)

#: The study's network is trained by the study's recipe (L1, Adam 1e-3, cosine annealing,
#: early stopping) with small batches: the study's loop stepped on one photo at a time, and
#: with the 1,076 built-in crops, batches of 128 would leave it too few steps to learn.
STUDY_BATCH_SIZE = 8


def run_demo(
    out: str | Path = "runs/demo",
    *,
    epochs: int = 30,
    limit: int | None = None,
    overwrite: bool = True,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train the four demo runs; write ``out/report.html`` comparing them and ``out/losses.png``.

    Args:
        out: The demo folder; each run gets a sub-folder.
        epochs: Epochs of the study's recipe, in batches of :data:`STUDY_BATCH_SIZE`
            (the auto runs fit in closed form).
        limit: At most this many training photos (for quick checks).
        overwrite: Replace earlier demo runs in ``out``.
        progress: Show progress bars (only when stderr is a terminal); the per-epoch
            lines are logged either way.
        log: Where the notices and the tables go (default: notices to this module's
            logger at ``INFO``, each run's summary and the final table to stdout).

    Returns:
        ``{"runs": {name: RunResult}, "report": path, "seconds": wall time}``.
    """
    started = time.perf_counter()
    out = Path(out)
    results: dict[str, RunResult] = {}
    notice, show = log or _log.info, log or print
    for name, spec, arch in DEMO_RUNS:
        notice(f"== {name}: {spec} with arch {arch}")
        results[name] = train_run(
            out / name,
            DataConfig(data="samples", filter=spec, limit=limit),
            ModelConfig(arch=arch),
            {
                "max_epochs": epochs,
                "progress": progress,
                "early_stopping_patience": 5,
                **({"batch_size": STUDY_BATCH_SIZE} if arch == "study" else {}),
            },
            overwrite=overwrite,
            log=log,
        )
    from img2img_filters.viz import save_figure  # matplotlib: loaded only when a figure is drawn

    curves = {name: (r.train_losses, r.val_losses) for name, r in results.items()}
    losses = {name: read_run(r.folder).loss for name, r in results.items()}
    save_figure(
        plot_loss_comparison(
            curves, title="The study's network against exact fitting", losses=losses
        ),
        out / "losses.png",
    )
    report = write_comparison_report(
        [results[name].folder for name, _, _ in DEMO_RUNS],
        out / "report.html",
        title="img2img demo: the study's network against exact fitting",
    )
    seconds = time.perf_counter() - started
    show(format_demo_table(results))
    notice(f"demo finished in {seconds:.1f} s; open {report}")
    return {"runs": results, "report": report, "seconds": seconds}


def format_demo_table(results: dict[str, RunResult]) -> str:
    """The four runs as a Markdown table: validation L1, PSNR, SSIM, parameters, time."""
    lines = [
        "| run | filter | arch | params | val L1 | val PSNR (dB) | val SSIM | time (s) |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for name, result in results.items():
        m = result.metrics
        lines.append(
            f"| {name} | {m.get('filter_spec', '')} | {m.get('arch')} | "
            f"{m.get('parameters')} | {m.get('l1', float('nan')):.3e} | {m.get('psnr', float('nan')):.2f} | "
            f"{m.get('ssim', float('nan')):.5f} | {m.get('seconds', 0):.1f} |"
        )
    return "\n".join(lines)
