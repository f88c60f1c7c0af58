"""Logs for terminals and batch jobs: notices through logging, plain lines per epoch, 80 columns."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from bars import RecordingBar
from img2img_filters.cli import (
    PACKAGE_LOGGER,
    NoticeHandler,
    build_parser,
    install_notices,
    main,
    remove_notices,
)
from img2img_filters.data import FilteredDataset, cache
from img2img_filters.models import create_img2img_model
from img2img_filters.run.train import SUMMARY_WIDTH, format_summary
from img2img_filters.solve import fit_linear
from img2img_filters.train import train_model

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "src" / "img2img_filters"
EPOCH_LINE = re.compile(r"^img2img: epoch +\d+/2  train \S+  val \S+  lr \S+$")


def _cli(*argv: str) -> subprocess.CompletedProcess:
    path = os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", "img2img_filters", *argv],
        capture_output=True,  # stderr is a pipe, not a terminal: no bars
        text=True,
        env={**os.environ, "PYTHONPATH": path},
        timeout=300,
    )


def _train_argv(out: Path, *more: str) -> list[str]:
    return [
        "train", "--data", "samples", "--filter", "study-sobel", "--arch", "study",
        "--epochs", "2", "--limit", "16", "--batch-size", "8", "--crop-size", "32",
        "--out", str(out), "--no-figures", "--device", "cpu", *more,
    ]  # fmt: skip


# -- the command line ------------------------------------------------------------------------------


@pytest.mark.parametrize("progress", [True, False])
def test_train_tells_one_plain_line_per_epoch_without_file_or_line(
    tmp_path: Path, progress: bool
) -> None:
    flags = [] if progress else ["--no-progress"]
    done = _cli(*_train_argv(tmp_path / "run", "--amp", "bf16", *flags))
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert all(line.startswith("img2img: ") for line in lines), lines
    assert "\r" not in done.stderr  # no bar: stderr is not a terminal
    assert len([line for line in lines if EPOCH_LINE.match(line)]) == 2, lines
    assert "img2img: warning: amp='bf16' applies on CUDA only; training in float32" in lines
    # a notice, not a Python warning: no "file.py:123: UserWarning" and no source line
    assert ".py:" not in done.stderr and "Warning" not in done.stderr
    assert any(line.startswith("img2img: training engine: ") for line in lines)
    # the command's output, the summary table, is on stdout and fits 80 columns
    assert "validation PSNR" in done.stdout and "img2img: " not in done.stdout
    assert max(len(line) for line in done.stdout.splitlines()) <= 80


def test_main_shows_notices_on_stderr_while_it_runs(capsys) -> None:
    logger = logging.getLogger(PACKAGE_LOGGER)
    level = logger.level
    handler = install_notices()
    try:
        child = logging.getLogger("img2img_filters.data.cache")
        child.warning("cannot write %r", "here")
        child.info("decoded %d photos", 3)
        child.debug("not shown")
        child.error("bad %s", "thing")
    finally:
        remove_notices(handler)
    assert capsys.readouterr().err.splitlines() == [
        "img2img: warning: cannot write 'here'",
        "img2img: decoded 3 photos",
        "img2img: error: bad thing",
    ]
    assert logger.level == level and not any(isinstance(h, NoticeHandler) for h in logger.handlers)
    assert main(["archs"]) == 0  # main installs its handler and leaves none behind
    assert not any(isinstance(h, NoticeHandler) for h in logger.handlers)


def test_demo_and_train_share_no_progress(monkeypatch) -> None:
    import img2img_filters.demo
    import img2img_filters.runs

    seen: dict[str, Any] = {}
    monkeypatch.setattr(
        img2img_filters.demo, "run_demo", lambda out, **kw: seen.update(demo=kw["progress"])
    )

    def fake_train_run(out: Any, data: Any, model: Any, train: dict, **kw: Any) -> None:
        seen["train"] = train["progress"]

    monkeypatch.setattr(img2img_filters.runs, "train_run", fake_train_run)
    parser = build_parser()
    for command in ("demo", "train"):
        for argv, progress in (([], True), (["--no-progress"], False)):
            args = parser.parse_args([command, *argv])
            assert args.no_progress is not progress
            assert args.handler(args) == 0
            assert seen[command] is progress


# -- the library -----------------------------------------------------------------------------------


def test_the_package_logger_is_quiet_until_an_application_configures_logging() -> None:
    handlers = logging.getLogger(PACKAGE_LOGGER).handlers
    assert any(isinstance(h, logging.NullHandler) for h in handlers)


def test_the_library_logs_notices_instead_of_warning(caplog) -> None:
    gray = np.full((4, 3, 16, 16), 128, dtype=np.uint8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with caplog.at_level(logging.WARNING, logger=PACKAGE_LOGGER):
            fit_linear(FilteredDataset(gray, "gaussian:ksize=3"), 3)
    assert [str(w.message) for w in caught if "rank-deficient" in str(w.message)] == []
    (record,) = [r for r in caplog.records if "rank-deficient" in r.getMessage()]
    assert record.name == "img2img_filters.solve.least_squares"
    assert record.levelno == logging.WARNING


def test_no_user_notice_is_a_python_warning() -> None:
    """Every ``warnings.warn`` in the package is gone: its notices are log records."""
    found = [
        f"{path.relative_to(SOURCE)}:{number}"
        for path in sorted(SOURCE.rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if "warnings.warn(" in line
    ]
    assert found == []


@pytest.mark.parametrize("progress", [True, False])
def test_training_logs_one_line_per_epoch_bars_or_not(caplog, capsys, progress: bool) -> None:
    photos = np.random.default_rng(0).integers(0, 256, (6, 3, 24, 24), dtype=np.uint8)
    train = FilteredDataset(photos, "study-sobel", indices=np.arange(4))
    val = FilteredDataset(photos, "study-sobel", indices=np.arange(4, 6))
    with caplog.at_level(logging.INFO, logger="img2img_filters.train.loop"):
        train_model(
            create_img2img_model(3, 1, "study"),
            train,
            val,
            max_epochs=2,
            batch_size=2,
            device="cpu",
            progress=progress,
        )
    epochs = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch")]
    assert len(epochs) == 2 and epochs[1].startswith("epoch   2/2  train ")
    assert capsys.readouterr().err == ""  # no bar off a terminal, and no handler of its own


@pytest.mark.parametrize("progress", [True, False])
def test_decoding_many_photos_shows_progress(tmp_path: Path, monkeypatch, progress: bool) -> None:
    rng = np.random.default_rng(0)
    paths = []
    for index in range(5):
        paths.append(tmp_path / f"{index}.png")
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(paths[-1])
    monkeypatch.setattr(cache, "tqdm", RecordingBar)
    RecordingBar.made = []
    decoded = cache.decode_images(paths, crop_size=16, cache=False, progress=progress)
    assert len(decoded.images) == 5 * 4
    (bar,) = RecordingBar.made
    assert bar.kwargs["total"] == 5 and bar.n == 5 and bar.closed
    assert bar.kwargs["disable"] is (None if progress else True)  # None: on a terminal


# -- the summary table -----------------------------------------------------------------------------


def test_the_summary_table_fits_80_columns() -> None:
    chain = (
        "gray|gaussian:ksize=3,sigma=0.0,sigma_y=0.0,border=reflect101,channels=gray|"
        "sobel:dx=1,dy=1,ksize=3,scale=1.0,border=reflect101,channels=gray"
    )
    folder = Path("/data/runs") / ("a-very-long-run-name-" * 6) / "run"
    metrics = {
        "filter": chain,
        "arch": "neighbourhood",
        "parameters": 1234,
        "epochs": 12,
        "stopped": "time budget of 52.125 s reached",
        "l1": 1e-3,
        "psnr": 45.3,
        "data_range": 2.25,
        "ssim": 0.99,
        "seconds": 12.3,
        "kernel_error": {"max_abs": 1e-7},
    }
    lines = format_summary(folder, metrics).splitlines()
    assert SUMMARY_WIDTH == 80 and max(len(line) for line in lines) <= 80
    assert lines[0] == lines[-1] and set(lines[0].strip()) == {"-"}
    filter_parts = _value_lines(lines[1:-1], "filter")
    assert "".join(filter_parts) == chain  # cut after separators, nothing lost
    assert len(filter_parts) > 1 and all(p.endswith((",", "|")) for p in filter_parts[:-1])
    folder_parts = _value_lines(lines[1:-1], "run folder")
    assert "".join(folder_parts) == str(folder) and len(folder_parts) > 2
    assert _value_lines(lines[1:-1], "time") == ["12.3 s"]


def _value_lines(rows: list[str], name: str) -> list[str]:
    """The lines of the value of row ``name`` in a summary table (the first and those that continue it)."""
    column = len(rows[0]) - len(rows[0][2:].split("  ", 1)[1].lstrip()) if rows else 0
    start = next(i for i, row in enumerate(rows) if row[2:column].strip() == name)
    parts = [rows[start][column:]]
    for row in rows[start + 1 :]:
        if row[:column].strip():
            break
        parts.append(row[column:])
    return parts
