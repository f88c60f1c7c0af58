"""A training run, end to end, in its own folder, with its report.

:func:`train_run` trains into a run folder (:func:`img2img_filters.run.train.train_run`)
and then writes its ``report.html`` (:mod:`img2img_filters.report`). The run folder's
files and their names are :mod:`img2img_filters.run.folder`'s.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from img2img_filters.report import write_run_report
from img2img_filters.run import train as _run
from img2img_filters.run.config import DataConfig, ModelConfig, RunFolderError
from img2img_filters.run.folder import (
    CONFIG_FILE,
    HISTORY_FILE,
    LOCK_FILE,
    METRICS_FILE,
    MODEL_FILE,
    STATE_FILE,
    RunFolder,
)
from img2img_filters.run.train import RESUME_OVERRIDES, RunResult, count_parameters, format_summary

__all__ = [
    "CONFIG_FILE",
    "HISTORY_FILE",
    "LOCK_FILE",
    "METRICS_FILE",
    "MODEL_FILE",
    "RESUME_OVERRIDES",
    "STATE_FILE",
    "DataConfig",
    "ModelConfig",
    "RunFolder",
    "RunFolderError",
    "RunResult",
    "count_parameters",
    "format_summary",
    "train_run",
]


def train_run(
    out: str | Path,
    data: DataConfig | None = None,
    model: ModelConfig | None = None,
    train: dict[str, Any] | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    figures: bool = True,
    log: Callable[[str], None] | None = None,
) -> RunResult:
    """Train (or fit) a model for a filter and write a complete run folder and its report.

    The arguments, result and errors are :func:`img2img_filters.run.train.train_run`'s; with
    ``figures`` the run's ``report.html`` is written too.
    """
    result = _run.train_run(
        out, data, model, train, resume=resume, overwrite=overwrite, figures=figures, log=log
    )
    if figures and result.metrics:  # the writing process, once the run is complete
        write_run_report(result.folder)
    return result
