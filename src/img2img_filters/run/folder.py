"""A run folder: the names of its files, its lock, and reading and writing them.

A run folder holds ``model.safetensors`` (the best model), ``state.pt`` (the
resumable training state), ``config.json``, ``history.csv``, ``metrics.json``,
the figures and ``report.html``; nothing is written outside it. Every file is
written atomically (:mod:`img2img_filters.fileio`). A lock file keeps two runs from
writing to one folder. Files read back are untrusted: a missing, unreadable or
malformed one is a :class:`RunFolderError` whose one line names it.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import secrets
import shutil
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from img2img_filters.fileio import atomic_write, atomic_write_text

__all__ = [
    "CONFIG_FILE",
    "FIGURE_FILES",
    "HISTORY_FILE",
    "KERNELS_FIGURE",
    "LOCK_FILE",
    "LOSSES_FIGURE",
    "METRICS_FILE",
    "MODEL_FILE",
    "OUTPUT_FILES",
    "PREDICTIONS_FIGURE",
    "REPORT_FILE",
    "STATE_FILE",
    "VALIDATION_FIGURE",
    "RunFolder",
    "RunFolderError",
    "read_history",
    "read_json_object",
]

MODEL_FILE = "model.safetensors"
STATE_FILE = "state.pt"
CONFIG_FILE = "config.json"
HISTORY_FILE = "history.csv"
METRICS_FILE = "metrics.json"
REPORT_FILE = "report.html"
LOCK_FILE = ".lock"
LOSSES_FIGURE = "losses.png"
PREDICTIONS_FIGURE = "predictions.png"
KERNELS_FIGURE = "kernels.png"
VALIDATION_FIGURE = "validation_photo.png"
#: The figures a training run draws.
FIGURE_FILES = (LOSSES_FIGURE, PREDICTIONS_FIGURE, KERNELS_FIGURE, VALIDATION_FIGURE)
#: Every file a run writes (what ``--overwrite`` replaces).
OUTPUT_FILES = (
    MODEL_FILE,
    STATE_FILE,
    CONFIG_FILE,
    HISTORY_FILE,
    METRICS_FILE,
    REPORT_FILE,
    *FIGURE_FILES,
)
#: Largest JSON file of a run folder that is read back, in bytes.
MAX_JSON_BYTES = 16 * 2**20
#: Largest ``history.csv`` read back, in bytes.
MAX_HISTORY_BYTES = 64 * 2**20


class RunFolderError(ValueError):
    """A run folder's file that is missing, unreadable or malformed; the message names it."""


def _read_text(path: Path, limit: int) -> str:
    try:
        size = path.stat().st_size
        if size > limit:
            raise RunFolderError(f"{str(path)!r} is {size} bytes; at most {limit} are read")
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RunFolderError(f"{str(path)!r} is missing") from None
    except (OSError, UnicodeDecodeError) as error:
        raise RunFolderError(f"{str(path)!r} could not be read ({_one_line(error)})") from None


def read_json_object(path: str | Path) -> dict[str, Any]:
    """A JSON file that must hold an object.

    Raises:
        RunFolderError: If it is missing, unreadable, not JSON or not an object (named).
    """
    path = Path(path)
    text = _read_text(path, MAX_JSON_BYTES)
    try:
        record = json.loads(text)
    except (ValueError, RecursionError) as error:  # bad JSON, huge numbers, deep nesting
        raise RunFolderError(f"{str(path)!r} is not valid JSON ({_one_line(error)})") from None
    if not isinstance(record, dict):
        raise RunFolderError(
            f"{str(path)!r} must hold a JSON object; it holds a {type(record).__name__}"
        )
    return record


def read_history(path: str | Path) -> tuple[list[float], list[float]]:
    """``history.csv`` (``epoch,train_loss,val_loss``) as training and validation losses.

    A blank or missing ``val_loss`` is NaN (no validation photos).

    Raises:
        RunFolderError: If the file is missing, unreadable, has no ``train_loss``
            column, a value that is not a number, or no epochs (named).
    """
    path = Path(path)
    text = _read_text(path, MAX_HISTORY_BYTES)
    try:
        rows = list(csv.DictReader(io.StringIO(text, newline="")))
    except csv.Error as error:
        raise RunFolderError(f"{str(path)!r} is not valid CSV ({_one_line(error)})") from None
    train: list[float] = []
    val: list[float] = []
    for line, row in enumerate(rows, start=2):
        for column, into in (("train_loss", train), ("val_loss", val)):
            value = row.get(column)
            if value is None and column == "train_loss":
                raise RunFolderError(f"{str(path)!r} has no 'train_loss' column")
            if not isinstance(value, str):  # a missing column, or extra cells (a list)
                value = "" if value is None else "?"
            try:
                into.append(float(value) if value.strip() else math.nan)
            except ValueError:
                raise RunFolderError(
                    f"{str(path)!r} line {line}: {column} {value[:40]!r} is not a number"
                ) from None
    if not rows:
        raise RunFolderError(f"{str(path)!r} holds no epochs")
    return train, val


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())[:200]
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


class RunFolder:
    """A run's folder: the names of its files, a lock against concurrent writers, its files.

    Args:
        path: The folder (created when a writer takes the lock).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def file(self, name: str) -> Path:
        """The path of a file in the run folder."""
        return self.path / name

    def has(self, name: str) -> bool:
        """Whether the folder holds the file ``name``."""
        return self.file(name).is_file()

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the folder's lock; a second live writer is refused with ``RuntimeError``."""
        self.path.mkdir(parents=True, exist_ok=True)
        lock = self.file(LOCK_FILE)
        record = f"{os.getpid()} {socket.gethostname()}"
        for _ in range(2):
            try:
                descriptor = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = lock.read_text(errors="replace").split()
                if owner and _alive(owner):
                    raise RuntimeError(
                        f"run folder {str(self.path)!r} is in use by process {owner[0]}"
                        f"{' on ' + owner[1] if len(owner) > 1 else ''}; choose another --out"
                    ) from None
                lock.unlink(missing_ok=True)  # left by a process that died
                continue
            with os.fdopen(descriptor, "w") as stream:
                stream.write(record)
            break
        try:
            yield
        finally:
            lock.unlink(missing_ok=True)

    @contextmanager
    def set_aside(self) -> Iterator[Path | None]:
        """Move the run's files aside while a new run is written; put them back if it fails.

        The files of :data:`OUTPUT_FILES` move into a hidden sub-folder; other
        files of the folder stay where they are. When the block raises, the new
        run's files are removed and the old ones restored; when it succeeds the
        old ones are deleted. Yields the sub-folder (``None`` when nothing was there).
        """
        present = [name for name in OUTPUT_FILES if self.has(name)]
        if not present:
            yield None
            return
        aside = self.file(f".previous-{secrets.token_hex(3)}")
        aside.mkdir()
        for name in present:
            os.replace(self.file(name), aside / name)
        try:
            yield aside
        except BaseException:
            for name in OUTPUT_FILES:
                self.file(name).unlink(missing_ok=True)
            for name in present:
                os.replace(aside / name, self.file(name))
            aside.rmdir()
            raise
        shutil.rmtree(aside, ignore_errors=True)

    def read_json(self, name: str) -> dict[str, Any]:
        """A JSON object of the folder (see :func:`read_json_object`)."""
        return read_json_object(self.file(name))

    def read_history(self) -> tuple[list[float], list[float]]:
        """The folder's losses (see :func:`read_history`)."""
        return read_history(self.file(HISTORY_FILE))

    def write_json(self, name: str, payload: dict[str, Any]) -> Path:
        """Write a JSON file atomically."""
        text = json.dumps(payload, indent=2, sort_keys=True, default=_jsonable)
        return atomic_write_text(self.file(name), text + "\n")

    def write_history(self, train_losses: list[float], val_losses: list[float]) -> Path:
        """Write ``history.csv``: ``epoch,train_loss,val_loss``."""
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["epoch", "train_loss", "val_loss"])
        for epoch, (train, val) in enumerate(zip(train_losses, val_losses, strict=True), start=1):
            writer.writerow([epoch, repr(float(train)), repr(float(val))])
        return atomic_write_text(self.file(HISTORY_FILE), buffer.getvalue())

    def write_figure(self, name: str, figure: Any) -> Path:
        """Save a matplotlib figure as PNG atomically, and close it."""
        from img2img_filters.viz import DPI  # matplotlib: loaded only when figures are drawn

        path = atomic_write(self.file(name), lambda tmp: figure.savefig(tmp, dpi=DPI, format="png"))
        if getattr(figure.canvas, "manager", None) is not None:  # a pyplot figure
            import matplotlib.pyplot as plt  # as above

            plt.close(figure)
        return path


def _alive(owner: list[str]) -> bool:
    """Whether the process that wrote a lock still runs (other hosts: assume it does)."""
    if len(owner) > 1 and owner[1] != socket.gethostname():
        return True
    try:
        os.kill(int(owner[0]), 0)
    except (ValueError, ProcessLookupError, OverflowError):
        return False
    except PermissionError:
        return True
    return True


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    return str(value)
