"""Reading a run folder for a report: what is there, what is missing, what could not be read.

Nothing here raises for a damaged run folder: a file that is missing or
unreadable becomes a line in :attr:`RunFiles.missing` or :attr:`RunFiles.notes`,
so the report can show what exists. Only a path that is not a folder at all,
or a folder with none of a run's files, is an error.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from img2img_filters.run.folder import (
    CONFIG_FILE,
    FIGURE_FILES,
    HISTORY_FILE,
    METRICS_FILE,
    MODEL_FILE,
    REPORT_FILE,
    STATE_FILE,
    RunFolderError,
    read_history,
    read_json_object,
)

__all__ = [
    "FIGURE_FILES",
    "REPORT_FILE",
    "RunFiles",
    "input_files",
    "lookup",
    "one_line",
    "read_run",
    "unique_names",
]

#: The losses a run's history can hold.
LOSS_KINDS = ("l1", "mse")
#: The files that make a folder a run folder, with what each holds.
RUN_FILES = {
    CONFIG_FILE: "the configuration",
    METRICS_FILE: "the metrics",
    HISTORY_FILE: "the loss history",
    MODEL_FILE: "the checkpoint",
}


@dataclass
class RunFiles:
    """The readable contents of a run folder.

    Attributes:
        path: The folder.
        config: ``config.json``, or ``None`` when missing or unreadable.
        metrics: ``metrics.json``, or ``None``.
        train_losses: Training loss per epoch from ``history.csv``, or ``None``.
        val_losses: Validation loss per epoch, or ``None``.
        checkpoint: ``model.safetensors``, else ``state.pt`` (an interrupted run), else ``None``.
        figures: PNG files in the folder by name: the run's figures first, then others.
        missing: One line per missing file, saying what is lost without it.
        notes: One line per file that exists but could not be read.
    """

    path: Path
    config: dict[str, Any] | None = None
    metrics: dict[str, Any] | None = None
    train_losses: list[float] | None = None
    val_losses: list[float] | None = None
    checkpoint: Path | None = None
    figures: dict[str, Path] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        """The folder's name."""
        return self.path.name or str(self.path)

    @property
    def filter_spec(self) -> str | None:
        """The filter as it was asked for (``"study-sobel"``), else its canonical spec."""
        spec = lookup(self.config, "data", "filter") or lookup(self.metrics, "filter")
        return str(spec) if spec is not None else None

    @property
    def canonical_filter(self) -> str | None:
        """The filter with every parameter written out, when recorded."""
        spec = lookup(self.config, "resolved", "filter") or lookup(self.metrics, "filter")
        return str(spec) if spec is not None else None

    @property
    def arch(self) -> str | None:
        """The architecture trained (``auto`` resolved), when recorded."""
        arch = (
            lookup(self.config, "resolved", "arch")
            or lookup(self.metrics, "arch")
            or lookup(self.config, "model", "arch")
        )
        return str(arch) if arch is not None else None

    @property
    def method(self) -> str | None:
        """``"exact"`` (closed-form fit) or ``"gradient"``, when recorded."""
        method = lookup(self.config, "resolved", "method")
        return str(method) if method is not None else None

    @property
    def loss(self) -> str | None:
        """The loss of ``history.csv``: ``"l1"`` or ``"mse"``; ``None`` when it cannot be told.

        Run folders record it under ``resolved``; for older ones it is read from the
        training options (``train``, then what ``auto`` chose), an exact fit's history
        being its L1 residual and a run without the option having trained with the
        default L1. Without a configuration it cannot be told.
        """
        recorded = lookup(self.config, "resolved", "loss")
        if recorded in LOSS_KINDS:
            return str(recorded)
        if not isinstance(self.config, dict):
            return None
        if self.method == "exact":
            return "l1"
        for keys in (("train", "loss"), ("resolved", "auto", "train", "loss")):
            value = lookup(self.config, *keys)
            if value in LOSS_KINDS:
                return str(value)
        return "l1"

    @property
    def loss_recorded(self) -> bool:
        """Whether ``config.json`` records the loss of its history (newer run folders do)."""
        return lookup(self.config, "resolved", "loss") in LOSS_KINDS

    @property
    def has_history(self) -> bool:
        """Whether at least one epoch of losses was read."""
        return bool(self.train_losses)


def lookup(record: dict[str, Any] | None, *keys: str) -> Any:
    """``record[k1][k2]...`` or ``None`` when any level is missing."""
    value: Any = record
    for key in keys:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def read_run(run_dir: str | Path) -> RunFiles:
    """Read what a run folder holds.

    Args:
        run_dir: A folder written by :func:`img2img_filters.runs.train_run` (``img2img train``).

    Returns:
        Its contents; missing and unreadable files are listed, not raised.

    Raises:
        FileNotFoundError: If ``run_dir`` does not exist.
        NotADirectoryError: If it is not a folder.
        ValueError: If it holds none of a run's files.
    """
    path = Path(run_dir)
    if not path.exists():
        raise FileNotFoundError(f"run folder {str(path)!r} not found")
    if not path.is_dir():
        raise NotADirectoryError(
            f"{str(path)!r} is not a folder; pass a run folder written by `img2img train`"
        )
    run = RunFiles(path)
    run.figures = _figures(path)
    run.config = _read_json(path / CONFIG_FILE, run)
    run.metrics = _read_json(path / METRICS_FILE, run)
    _read_history(path / HISTORY_FILE, run)
    if (path / MODEL_FILE).is_file():
        run.checkpoint = path / MODEL_FILE
    elif (path / STATE_FILE).is_file():
        run.checkpoint = path / STATE_FILE
        run.notes.append(f"{MODEL_FILE} is missing; the model is read from {STATE_FILE}")
    present = [name for name in (*RUN_FILES, STATE_FILE) if (path / name).is_file()]
    if not present and not run.figures:
        raise ValueError(
            f"{str(path)!r} is not a run folder: it holds none of "
            f"{', '.join([*RUN_FILES, STATE_FILE])} (pass the folder of one run, "
            "as written by `img2img train`)"
        )
    for name, content in RUN_FILES.items():
        if not (path / name).is_file() and not (name == MODEL_FILE and run.checkpoint):
            run.missing.append(f"{name} ({content})")
    return run


def input_files(run: RunFiles) -> list[Path]:
    """Every file of a run folder that a report reads (existing or not): never an output."""
    names = [CONFIG_FILE, METRICS_FILE, HISTORY_FILE, MODEL_FILE, STATE_FILE, *FIGURE_FILES]
    return [run.path / name for name in names] + list(run.figures.values())


def _figures(path: Path) -> dict[str, Path]:
    """The PNG files of a folder: the run's figures in order, then the others by name."""
    files = {
        item.name: item
        for item in path.iterdir()
        if item.suffix.lower() == ".png" and not item.name.startswith(".") and item.is_file()
    }
    ordered = {name: files.pop(name) for name in FIGURE_FILES if name in files}
    ordered.update(sorted(files.items()))
    return ordered


def _read_json(path: Path, run: RunFiles) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        return read_json_object(path)
    except RunFolderError as error:
        run.notes.append(f"{_named(error, path)}; it is ignored")
        return None


def _read_history(path: Path, run: RunFiles) -> None:
    """``history.csv`` (``epoch,train_loss,val_loss``) into the run's loss lists."""
    if not path.is_file():
        return
    try:
        train, val = read_history(path)
    except RunFolderError as error:
        run.notes.append(_named(error, path))
        return
    run.train_losses = train
    run.val_losses = val if any(not math.isnan(v) for v in val) else []


def _named(error: RunFolderError, path: Path) -> str:
    """An error about a run folder's file, naming the file by its name, not its whole path."""
    return " ".join(str(error).split()).replace(repr(str(path)), path.name)


def one_line(error: BaseException) -> str:
    """An exception as ``"TypeName: message"`` on one line."""
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def unique_names(runs: Sequence[RunFiles]) -> list[str]:
    """Short distinct names for runs: folder names, with parent folders added where they clash.

    Example:
        >>> unique_names([RunFiles(Path("a/run")), RunFiles(Path("b/run")), RunFiles(Path("c"))])
        ['a/run', 'b/run', 'c']
    """
    parts = [run.path.resolve().parts for run in runs]
    depth = [1] * len(runs)
    while True:
        names = ["/".join(p[-d:]) for p, d in zip(parts, depth, strict=True)]
        clashes = {name for name in names if names.count(name) > 1}
        grow = [i for i, name in enumerate(names) if name in clashes and depth[i] < len(parts[i])]
        if not grow:
            return names
        for i in grow:
            depth[i] += 1
