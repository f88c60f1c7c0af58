"""Broken or hostile run folders: resume, overwrite, eval, report and export keep what they hold."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from img2img_filters.checkpoint import load_model, save_model
from img2img_filters.cli import main
from img2img_filters.data import archive as archive_module
from img2img_filters.data import download as download_module
from img2img_filters.runs import DataConfig, ModelConfig, train_run

TINY = ["--data", "samples", "--filter", "study-sobel", "--arch", "study", "--limit", "8"]
TINY += ["--crop-size", "16", "--no-progress", "--device", "cpu"]


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_line_error(err: str, *words: str) -> None:
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("img2img: error:")]
    assert len(lines) == 1, err
    for word in words:
        assert word in lines[0], (word, lines[0])


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished one-epoch run of the study's network on 16x16 crops of the built-in photos."""
    out = tmp_path_factory.mktemp("runs") / "tiny"
    assert main(["train", *TINY, "--epochs", "1", "--out", str(out)]) == 0
    return out


@pytest.fixture
def run(finished: Path, tmp_path: Path) -> Path:
    """A private copy of the finished run."""
    return Path(shutil.copytree(finished, tmp_path / "run"))


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


# -- resume: broken config.json and metrics.json -----------------------------------------------
BROKEN_CONFIGS = {
    "empty object": "{}",
    "null": "null",
    "a list": "[1]",
    "not JSON": "{data",
    "no model": '{"data": {"data": "samples", "filter": "study-sobel"}, "train": {}}',
    "data is a string": '{"data": "samples", "model": {"arch": "study"}, "train": {}}',
    "crop size a string": '{"data": {"data": "samples", "filter": "study-sobel", "crop_size": "x"},'
    ' "model": {"arch": "study"}, "train": {}}',
    "epochs negative": '{"data": {"data": "samples", "filter": "study-sobel"},'
    ' "model": {"arch": "study"}, "train": {"max_epochs": -3}}',
    "unknown option": '{"data": {"data": "samples", "filter": "study-sobel"},'
    ' "model": {"arch": "study"}, "train": {"rm": "-rf"}}',
    "huge seed": '{"data": {"data": "samples", "filter": "study-sobel"},'
    ' "model": {"arch": "study"}, "train": {"seed": 100000000000000000000000}}',
}


@pytest.mark.parametrize("text", BROKEN_CONFIGS.values(), ids=BROKEN_CONFIGS.keys())
def test_resume_of_a_broken_config_is_one_line_naming_it(run: Path, capsys, text: str) -> None:
    (run / "config.json").write_text(text)
    before = snapshot(run)
    code, _, err = run_cli(capsys, "train", "--resume", str(run))
    assert code == 1
    one_line_error(err, "config.json")
    assert snapshot(run) == before


@pytest.mark.parametrize("text", ["[]", "null", "{oops", '{"epochs": "many"}'])
def test_resume_of_a_broken_metrics_file_is_one_line_naming_it(
    run: Path, capsys, text: str
) -> None:
    (run / "metrics.json").write_text(text)
    before = snapshot(run)
    code, _, err = run_cli(capsys, "train", "--resume", str(run))
    assert code == 1
    one_line_error(err, "metrics.json")
    assert snapshot(run) == before


# -- resume: what it says, what it takes -------------------------------------------------------
def test_resume_after_a_kill_in_the_first_epoch_names_the_missing_state(run: Path, capsys) -> None:
    for name in ("state.pt", "model.safetensors", "metrics.json", "history.csv"):
        (run / name).unlink()
    code, _, err = run_cli(capsys, "train", "--resume", str(run))
    assert code == 1
    one_line_error(err, "config.json but no state.pt", "--overwrite")


def test_resume_without_config_names_it(run: Path, capsys) -> None:
    (run / "config.json").unlink()
    code, _, err = run_cli(capsys, "train", "--resume", str(run))
    assert code == 1
    one_line_error(err, "no config.json")


def test_resume_of_a_finished_run_changes_nothing(run: Path, capsys) -> None:
    before = snapshot(run)
    code, _, err = run_cli(capsys, "train", "--resume", str(run), "--no-progress")
    assert code == 1
    one_line_error(err, "is finished", "--overwrite", "--epochs")
    assert snapshot(run) == before


def test_resume_of_a_finished_run_trains_no_more_than_asked_on_the_command_line(
    run: Path, capsys
) -> None:
    config = json.loads((run / "config.json").read_text())
    config["train"]["max_epochs"] = 5  # the file asks for more epochs; the user did not
    (run / "config.json").write_text(json.dumps(config))
    before = snapshot(run)
    code, _, err = run_cli(capsys, "train", "--resume", str(run), "--no-progress")
    assert code == 1
    one_line_error(err, "is finished")
    assert snapshot(run) == before


def test_resume_refuses_options_that_cannot_change(run: Path, capsys) -> None:
    before = snapshot(run)
    code, _, err = run_cli(capsys, "train", "--resume", str(run), "--lr", "0.5", "--arch", "can")
    assert code == 1
    one_line_error(err, "--lr", "--arch")
    assert snapshot(run) == before


def test_resume_applies_time_budget_and_epochs(run: Path, capsys, monkeypatch) -> None:
    """An interrupted run resumed with --time-budget and --epochs trains under them."""
    import img2img_filters.run.train

    (run / "metrics.json").unlink()  # as if killed after epoch 1 was saved
    seen: dict = {}

    def spy(*args, **kwargs):
        seen.update(kwargs)
        raise RuntimeError("stop here")

    monkeypatch.setattr(img2img_filters.run.train, "train_model", spy)
    code, _, err = run_cli(
        capsys, "train", "--resume", str(run), "--time-budget", "7", "--epochs", "3"
    )
    assert code == 1 and "stop here" in err
    # the budget is the whole run's: training gets what loading the data left of it
    assert 0 < seen["time_budget"] < 7 and seen["max_epochs"] == 3
    assert seen["resume"] == str(run / "state.pt")


def test_resume_of_a_finished_run_with_more_epochs_continues_it(run: Path, capsys) -> None:
    code, _, err = run_cli(capsys, "train", "--resume", str(run), "--epochs", "2", "--no-progress")
    assert code == 0, err
    assert json.loads((run / "metrics.json").read_text())["epochs"] == 2
    assert len((run / "history.csv").read_text().splitlines()) == 3  # header, two epochs


# -- overwrite ---------------------------------------------------------------------------------
def test_a_failed_overwrite_restores_the_old_run(run: Path, capsys, monkeypatch) -> None:
    import img2img_filters.run.train

    (run / "notes.txt").write_text("mine")
    before = snapshot(run)

    def fail(*args, **kwargs):  # after config.json of the new run is written
        assert json.loads((run / "config.json").read_text())["data"]["seed"] == 9
        raise RuntimeError("training failed")

    monkeypatch.setattr(img2img_filters.run.train, "train_model", fail)
    code, _, err = run_cli(capsys, "train", *TINY, "--seed", "9", "--out", str(run), "--overwrite")
    assert code == 1 and "training failed" in err
    assert snapshot(run) == before
    assert sorted(p.name for p in run.iterdir() if p.is_dir()) == []  # nothing set aside is left


def test_a_successful_overwrite_replaces_the_run_and_keeps_other_files(run: Path, capsys) -> None:
    (run / "notes.txt").write_text("mine")
    code, _, err = run_cli(capsys, "train", *TINY, "--seed", "9", "--out", str(run), "--overwrite")
    assert code == 0, err
    assert json.loads((run / "config.json").read_text())["data"]["seed"] == 9
    assert (run / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in run.iterdir() if p.is_dir()) == []


def test_training_into_a_folder_with_a_started_run_is_refused(run: Path, capsys) -> None:
    (run / "model.safetensors").unlink()
    (run / "metrics.json").unlink()
    before = snapshot(run)
    code, _, err = run_cli(capsys, "train", *TINY, "--out", str(run))
    assert code == 1
    one_line_error(err, "state.pt", "--overwrite")
    assert snapshot(run) == before


# -- recorded data paths are not followed ------------------------------------------------------
@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder of photos outside the run folder."""
    import numpy as np

    from img2img_filters.imageio import write_image

    folder = tmp_path / "elsewhere"
    for i in range(3):
        write_image(folder / f"{i}.png", np.full((32, 32, 3), 0.1 * i))
    return folder


def spy_on_data(monkeypatch) -> list:
    """Record the ``data`` of every dataset loaded, and every image file read."""
    import img2img_filters.data
    import img2img_filters.data.cache
    import img2img_filters.data.loader

    asked: list = []
    real_load = img2img_filters.data.loader.load_filtered_dataset
    real_read = img2img_filters.data.cache.read_image

    def load(*args, **kwargs):
        asked.append(kwargs.get("data", args[0] if args else None))
        return real_load(*args, **kwargs)

    def read(path, *args, **kwargs):
        asked.append(str(path))
        return real_read(path, *args, **kwargs)

    monkeypatch.setattr(img2img_filters.data.loader, "load_filtered_dataset", load)
    monkeypatch.setattr(img2img_filters.data, "load_filtered_dataset", load, raising=False)
    monkeypatch.setattr(img2img_filters.data.cache, "read_image", read)
    return asked


def test_eval_does_not_read_a_data_path_recorded_in_a_checkpoint(
    run: Path, outside: Path, capsys, monkeypatch
) -> None:
    model = load_model(run / "model.safetensors")
    metadata = dict(model.metadata)
    metadata["data"] = str(outside)
    metadata["data_config"] = {**metadata["data_config"], "data": str(outside)}
    for key in ("format", "img2img_version"):
        metadata.pop(key, None)
    save_model(model, run / "model.safetensors", **metadata)
    asked = spy_on_data(monkeypatch)
    code, _, err = run_cli(capsys, "eval", str(run))
    assert code == 0, err
    assert "built-in photos" in err and str(outside)[:60] in err
    assert asked and not any(str(outside) in str(item) for item in asked)


def test_report_reads_only_the_run_folder(run: Path, outside: Path, capsys, monkeypatch) -> None:
    config = json.loads((run / "config.json").read_text())
    config["data"]["data"] = str(outside)
    (run / "config.json").write_text(json.dumps(config))
    (run / "predictions.png").unlink()
    asked = spy_on_data(monkeypatch)
    code, _, err = run_cli(capsys, "report", str(run))
    assert code == 0, err
    assert asked == []
    assert "predictions.png is missing" in (run / "report.html").read_text()


# -- outputs that would replace inputs ---------------------------------------------------------
@pytest.mark.parametrize("name", ["model.safetensors", "config.json", "losses.png"])
def test_report_refuses_to_write_over_a_file_it_reads(run: Path, capsys, name: str) -> None:
    before = snapshot(run)
    code, _, err = run_cli(capsys, "report", str(run), "-o", str(run / name))
    assert code == 1
    one_line_error(err, name, "input")
    assert snapshot(run) == before


def test_report_refuses_a_link_to_the_checkpoint(run: Path, capsys, tmp_path: Path) -> None:
    link = tmp_path / "page.html"
    link.symlink_to(run / "model.safetensors")
    before = snapshot(run)
    code, _, err = run_cli(capsys, "report", str(run), "-o", str(link))
    assert code == 1
    one_line_error(err, "input")
    assert snapshot(run) == before


@pytest.mark.parametrize("target", ["model.safetensors", "metrics.json"])
def test_export_refuses_to_write_over_the_run(run: Path, capsys, target: str) -> None:
    before = snapshot(run)
    with pytest.raises(SystemExit) as exit:  # not an export format: refused with the arguments
        main(["export", str(run), "-o", str(run / target), "--format", "torchscript"])
    err = capsys.readouterr().err
    assert exit.value.code == 2
    assert "Traceback" not in err and target in err and len(err.strip().splitlines()) == 1
    assert snapshot(run) == before


def test_export_refuses_the_checkpoint_it_reads(run: Path, capsys, tmp_path: Path) -> None:
    checkpoint = tmp_path / "model.pt"  # a safetensors file under an export name: read by content
    shutil.copy(run / "model.safetensors", checkpoint)
    code, _, err = run_cli(
        capsys, "export", str(checkpoint), "-o", str(checkpoint), "--format", "torchscript"
    )
    assert code == 1
    one_line_error(err, "input")
    assert checkpoint.read_bytes() == (run / "model.safetensors").read_bytes()


# -- atomic writes, permissions ----------------------------------------------------------------
def test_run_files_and_report_are_created_0644_under_umask_022(tmp_path: Path) -> None:
    script = (
        "import os, sys; os.umask(0o022); from img2img_filters.cli import main; "
        f"sys.exit(main(['train', *{TINY!r}, '--epochs', '1', '--out', sys.argv[1]]))"
    )
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    subprocess.run([sys.executable, "-c", script, str(out)], check=True, env=env)
    names = {p.name: p.stat().st_mode & 0o777 for p in out.iterdir()}
    assert {"model.safetensors", "state.pt", "report.html", "losses.png"} <= set(names)
    assert set(names.values()) == {0o644}, names


def test_a_full_disk_keeps_the_old_report_and_leaves_no_temporary_file(
    run: Path, monkeypatch
) -> None:
    from img2img_filters.report import write_run_report

    old = (run / "report.html").read_bytes()
    real = Path.write_text

    def full(self, text, *args, **kwargs):
        real(self, text[: len(text) // 2], *args, **kwargs)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(OSError, match="No space left"):
        write_run_report(run)
    assert (run / "report.html").read_bytes() == old
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(".")) == []


def test_a_full_disk_keeps_the_old_figure_and_leaves_no_temporary_file(
    run: Path, monkeypatch
) -> None:
    from matplotlib.figure import Figure

    old = (run / "losses.png").read_bytes()

    def full(self, path, *args, **kwargs):
        Path(path).write_bytes(b"\x89PNG half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    from img2img_filters.run.folder import RunFolder

    figure = Figure()
    monkeypatch.setattr(Figure, "savefig", full)
    with pytest.raises(OSError, match="No space left"):
        RunFolder(run).write_figure("losses.png", figure)
    assert (run / "losses.png").read_bytes() == old
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(".")) == []


def test_temporary_names_stay_short(tmp_path: Path, monkeypatch) -> None:
    long = tmp_path / ("x" * 240 + ".html")  # 245 characters: a longer temporary name fails
    import img2img_filters.fileio as fileio

    seen: list[str] = []
    fileio.atomic_write_text(long, "ok")

    monkeypatch.setattr(fileio.os, "replace", lambda a, b: seen.append(Path(a).name))
    fileio.atomic_write_text(long, "again")
    assert long.read_text() == "ok" and len(seen[0]) <= 40
    Path(tmp_path / seen[0]).unlink()


def test_every_run_file_is_named_once() -> None:
    """No module but run.folder spells out a run folder's file names."""
    from img2img_filters.run.folder import OUTPUT_FILES

    src = Path(__file__).parents[1] / "src" / "img2img_filters"
    modules = [src / "runs.py", src / "train" / "state.py", *(src / "report").glob("*.py")]
    modules += [src / "run" / name for name in ("config.py", "train.py")]
    modules += [src / "cli" / f"{name}.py" for name in ("train", "evaluate", "report", "export")]
    for path in modules:
        text = path.read_text()
        for name in OUTPUT_FILES:
            assert f'"{name}"' not in text, (path, name)


# -- archives, import layers -------------------------------------------------------------------
def test_an_archive_with_too_many_members_is_refused_before_writing(
    tmp_path: Path, monkeypatch
) -> None:
    archive = tmp_path / "many.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for i in range(11):
            zf.writestr(f"top/{i}", b"")
    monkeypatch.setattr(archive_module, "MAX_ARCHIVE_MEMBERS", 10)
    with pytest.raises(download_module.UnsafeArchiveError, match=r"11 members, more than .* 10"):
        download_module.extract_zip(archive, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["many.zip"]
    monkeypatch.setattr(archive_module, "MAX_ARCHIVE_MEMBERS", 11)
    download_module.extract_zip(archive, tmp_path / "out")
    assert len(list((tmp_path / "out" / "top").iterdir())) == 11


def test_security_notes_state_the_member_bound() -> None:
    text = (Path(__file__).parents[1] / "SECURITY.md").read_text()
    assert f"{download_module.MAX_ARCHIVE_MEMBERS:,}" in text


@pytest.mark.parametrize(
    ("module", "never"),
    [
        ("img2img_filters.data.download", "img2img_filters.data.tinyimagenet"),
        ("img2img_filters.report", "img2img_filters.runs"),
        ("img2img_filters.report", "img2img_filters.run.train"),
        ("img2img_filters.run.train", "img2img_filters.report"),
    ],
)
def test_imports_go_one_way(module: str, never: str) -> None:
    code = f"import sys, {module}; sys.exit({never!r} in sys.modules)"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    assert subprocess.run([sys.executable, "-c", code], env=env).returncode == 0


def test_options_for_an_exact_auto_fit_are_refused_in_python_too(tmp_path: Path) -> None:
    """The command line refuses them before data loads; train_run must not ignore them either."""
    with pytest.raises(ValueError, match=r"options \['width'\].*exactly.*ModelConfig\(arch="):
        train_run(
            tmp_path / "run",
            DataConfig(data="samples", filter="sobel", limit=8, crop_size=24),
            ModelConfig(arch="auto", options={"width": 8}),
            {"device": "cpu", "progress": False},
            figures=False,
            log=lambda _: None,
        )
    assert not (tmp_path / "run" / "model.safetensors").exists()
