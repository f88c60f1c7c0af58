"""The command line: train writes a complete run folder; eval, filters, archs, data; one-line errors."""

from __future__ import annotations

import csv
import json
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from img2img_filters.checkpoint import load_model
from img2img_filters.cli import main


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def exact_run(tmp_path_factory) -> Path:
    """An `auto` run on the built-in photos: the exact fit of the study's Sobel."""
    out = tmp_path_factory.mktemp("runs") / "sobel-auto"
    code = main(
        ["train", "--filter", "study-sobel", "--limit", "200", "--out", str(out), "--no-progress"]
    )
    assert code == 0
    return out


def test_train_auto_writes_a_complete_run_folder(exact_run: Path) -> None:
    for name in (
        "model.safetensors",
        "config.json",
        "history.csv",
        "metrics.json",
        "losses.png",
        "predictions.png",
        "kernels.png",
    ):
        assert (exact_run / name).is_file(), name
    metrics = json.loads((exact_run / "metrics.json").read_text())
    assert metrics["arch"] == "linear"
    assert metrics["kernel_error"]["max_abs"] <= 1e-4
    assert metrics["l1"] < 1e-5
    assert metrics["data_range_source"] == "filter"
    config = json.loads((exact_run / "config.json").read_text())
    assert config["resolved"]["method"] == "exact"
    assert config["data"]["limit"] == 200
    with open(exact_run / "history.csv") as stream:
        rows = list(csv.DictReader(stream))
    assert len(rows) == 1 and float(rows[0]["val_loss"]) == pytest.approx(metrics["l1"], rel=1e-6)
    model = load_model(exact_run / "model.safetensors")
    assert model.metadata["filter"].startswith("gray")
    assert model.metadata["metrics"]["psnr"] == pytest.approx(metrics["psnr"])


def test_train_prints_a_summary_and_refuses_to_overwrite(exact_run: Path, capsys) -> None:
    code, _, err = run_cli(
        capsys,
        "train",
        "--filter",
        "study-sobel",
        "--limit",
        "50",
        "--out",
        str(exact_run),
        "--no-progress",
    )
    assert code == 1
    assert err.count("\n") == 1 and "already holds a model" in err and "Traceback" not in err


def test_train_gradient_run_with_the_study_network(tmp_path: Path, capsys) -> None:
    out = tmp_path / "study"
    code, stdout, _ = run_cli(
        capsys,
        "train",
        "--arch",
        "study",
        "--epochs",
        "2",
        "--limit",
        "64",
        "--batch-size",
        "32",
        "--out",
        str(out),
        "--no-progress",
    )
    assert code == 0
    assert "validation PSNR" in stdout and "architecture" in stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["arch"] == "study" and metrics["parameters"] == 48 and metrics["epochs"] == 2
    assert (out / "state.pt").is_file()
    with open(out / "history.csv") as stream:
        assert len(list(csv.DictReader(stream))) == 2
    resolved = json.loads((out / "config.json").read_text())["resolved"]["train"]
    assert (resolved["max_epochs"], resolved["batch_size"]) == (2, 32)  # given
    assert (resolved["learning_rate"], resolved["loss"]) == (0.001, "l1")  # TrainConfig's


def test_eval_reproduces_the_runs_metrics(exact_run: Path, capsys) -> None:
    code, out, _ = run_cli(capsys, "eval", str(exact_run), "--json")
    assert code == 0
    result = json.loads(out)
    recorded = json.loads((exact_run / "metrics.json").read_text())
    assert result["psnr"] == pytest.approx(recorded["psnr"], rel=1e-9)
    assert result["images"] == recorded["images"]


def test_filters_and_archs_list_everything(capsys) -> None:
    from img2img_filters.filters import list_filters
    from img2img_filters.models import list_archs

    code, out, _ = run_cli(capsys, "filters")
    assert code == 0
    for entry in list_filters():
        assert entry.name in out
    assert "ksize" in out and "reflect101" in out
    code, out, _ = run_cli(capsys, "archs")
    assert code == 0
    for entry in list_archs():
        assert entry.name in out


def test_filter_preview_writes_a_figure(tmp_path: Path, capsys, large_photo) -> None:
    import cv2

    photo = tmp_path / "photo.png"
    cv2.imwrite(str(photo), cv2.cvtColor(large_photo, cv2.COLOR_RGB2BGR))
    out = tmp_path / "preview.png"
    code, stdout, _ = run_cli(
        capsys, "filters", "--preview", str(photo), "--filter", "magnitude", "-o", str(out)
    )
    assert code == 0 and out.stat().st_size > 1000 and "magnitude" in stdout


def test_data_info(capsys, monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("IMG2IMG_CACHE", str(tmp_path))
    monkeypatch.setenv("IMG2IMG_DATA", str(tmp_path))
    code, out, _ = run_cli(capsys, "data", "info")
    assert code == 0 and "not found" in out and str(tmp_path) in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--filter", "sobel:ksize=4", "--out", "{tmp}/a"], "ksize"),
        (["train", "--filter", "nosuch", "--out", "{tmp}/b"], "unknown filter 'nosuch'"),
        (["train", "--arch", "resnet", "--limit", "10", "--out", "{tmp}/c"], "arch must be one of"),
        (["train", "--data", "{tmp}/missing", "--out", "{tmp}/d"], "missing"),
        (["eval", "{tmp}/nothing.safetensors"], "not found"),
        (["apply", "{tmp}/nothing.safetensors", "{tmp}/x.png", "-o", "{tmp}/y.png"], "not found"),
        (["train", "--resume", "{tmp}"], "cannot resume"),
    ],
)
def test_bad_input_is_one_line_without_traceback(tmp_path: Path, capsys, argv, message) -> None:
    code, _, err = run_cli(capsys, *(a.replace("{tmp}", str(tmp_path)) for a in argv))
    # checks of the arguments (before any data loads) are usage errors, status 2
    usage = err.startswith("img2img train: error: ")
    assert code == (2 if usage else 1)
    assert (usage or err.startswith("img2img: error: ")) and err.count("\n") == 1, err
    assert message in err
    assert "Traceback" not in err


def test_help_everywhere() -> None:
    from img2img_filters.cli import COMMANDS  # noqa: F401  (all sub-commands load)

    for command in ("train", "apply", "eval", "filters", "archs", "data", "demo"):
        result = subprocess.run(
            [sys.executable, "-m", "img2img_filters", command, "--help"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, (command, result.stderr)
        assert "usage: img2img" in result.stdout


def test_missing_tiny_imagenet_is_worded_for_where_it_was_asked_for(
    tmp_path: Path, capsys, monkeypatch, exact_run: Path
) -> None:
    from img2img_filters.data import TinyImageNetNotFoundError, load_filtered_dataset

    monkeypatch.setenv("IMG2IMG_DATA", str(tmp_path / "nothing"))
    with pytest.raises(TinyImageNetNotFoundError) as python:
        load_filtered_dataset(data="tiny-imagenet")
    assert isinstance(python.value, FileNotFoundError)
    assert "pass download=True" in str(python.value) and "--download" not in str(python.value)
    again = pickle.loads(pickle.dumps(python.value))  # from a worker process, unchanged
    assert (type(again), str(again)) == (type(python.value), str(python.value))
    code, _, err = run_cli(capsys, "train", "--data", "tiny-imagenet", "--out", str(tmp_path / "r"))
    assert code == 1 and err.count("\n") == 1
    assert python.value.problem in err
    assert "pass --download" in err and "download=True" not in err
    code, _, err = run_cli(capsys, "eval", str(exact_run), "--data", "tiny-imagenet")
    assert code == 1 and "run `img2img data download tiny-imagenet`" in err
    assert "download=True" not in err
