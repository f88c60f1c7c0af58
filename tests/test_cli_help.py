"""The command line's help and defaults: every option states its default, read from the dataclasses."""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import re
from dataclasses import asdict
from pathlib import Path

import pytest

import img2img_filters.cli.train as cli_train
import img2img_filters.run.train as run_train
from img2img_filters.cli import build_parser, main
from img2img_filters.data import DATA_SOURCES, list_data_sources
from img2img_filters.run.config import DataConfig, ModelConfig
from img2img_filters.train.config import TrainConfig

README = Path(__file__).parents[1] / "README.md"
DATA, MODEL, TRAIN = DataConfig(), ModelConfig(), TrainConfig()

#: What each `train` option sets, and so the default its help must state: the dataclass field's.
TRAIN_OPTION_DEFAULTS = {
    "--data": DATA.data,
    "--filter": DATA.filter,
    "--targets": DATA.targets,
    "--teacher-timeout": DATA.teacher_timeout,
    "--seed": DATA.seed,
    "--limit": DATA.limit,
    "--val-fraction": DATA.val_fraction,
    "--crop-size": DATA.crop_size,
    "--download": DATA.download,
    "--arch": MODEL.arch,
    "--option": MODEL.options,
    "--epochs": TRAIN.max_epochs,
    "--batch-size": TRAIN.batch_size,
    "--lr": TRAIN.learning_rate,
    "--patience": TRAIN.early_stopping_patience,
    "--loss": TRAIN.loss,
    "--workers": TRAIN.num_workers,
    "--time-budget": TRAIN.time_budget,
    "--amp": TRAIN.amp,
    "--channels-last": TRAIN.channels_last,
    "--compile": TRAIN.compile,
    "--engine": TRAIN.engine,
    "--device": TRAIN.device,
}
#: `train` options that set no dataclass field: where the run goes and how it is written.
TRAIN_RUN_OPTIONS = {"--out", "--resume", "--overwrite", "--no-figures", "--no-progress"}


def _shown(value: object) -> str:
    """How a default reads in help: ``none`` for ``None`` and empty options."""
    return "none" if value is None or value == {} else str(value)


def _sub_parsers(
    parser: argparse.ArgumentParser, name: str = "img2img"
) -> list[tuple[str, argparse.ArgumentParser]]:
    """Every (sub-)command's parser, nested ones (``data download``) included."""
    found = [(name, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub, child in action.choices.items():
                found += _sub_parsers(child, f"{name} {sub}")
    return found


def _help_entries(text: str) -> dict[str, str]:
    """``{--option: its help on one line}`` from a ``--help`` text."""
    entries: dict[str, str] = {}
    current = None
    for line in text.splitlines():
        match = re.match(r"^  (?:-\w(?: \S+)?, )?(--[\w-]+)", line)
        if match:
            current = match.group(1)
            entries[current] = line[match.end() :]
        elif current is not None and line.startswith("    "):
            entries[current] += " " + line.strip()
        else:
            current = None
    return {key: " ".join(value.split()) for key, value in entries.items()}


def _help_text(capsys: pytest.CaptureFixture, *command: str) -> str:
    with pytest.raises(SystemExit) as exit:
        main([*command, "--help"])
    assert exit.value.code == 0
    return capsys.readouterr().out


def test_every_option_of_every_command_states_its_default(
    capsys: pytest.CaptureFixture,
) -> None:
    checked = 0
    for name, parser in _sub_parsers(build_parser()):
        command = name.split()[1:]
        entries = _help_entries(_help_text(capsys, *command))
        for action in parser._actions:
            if not action.option_strings or argparse.SUPPRESS in (action.default, action.help):
                continue  # positionals, --help, --version, options hidden from the help
            option = next(o for o in action.option_strings if o.startswith("--"))
            if action.required:
                assert "(default" not in entries[option], (name, option)
                continue
            assert re.search(r"\(default[: ]", entries[option]), (name, option, entries[option])
            checked += 1
    assert checked > 50  # every sub-command's options were read


def test_train_help_states_the_dataclass_defaults(capsys: pytest.CaptureFixture) -> None:
    entries = _help_entries(_help_text(capsys, "train"))
    assert set(entries) == set(TRAIN_OPTION_DEFAULTS) | TRAIN_RUN_OPTIONS | {"--help"}
    for option, value in TRAIN_OPTION_DEFAULTS.items():
        stated = re.findall(r"\(default: ([^()]*)\)$", entries[option])
        assert stated == [_shown(value)], (option, entries[option])
    assert DATA.seed == TRAIN.seed  # --seed sets both
    assert entries["--no-progress"].endswith(f"(default: {not TRAIN.progress})")


def test_train_options_default_to_none_and_fall_through() -> None:
    args = build_parser().parse_args(["train"])
    for option in TRAIN_OPTION_DEFAULTS:
        assert getattr(args, option[2:].replace("-", "_")) is None, option


def test_the_library_receives_only_the_options_given(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    monkeypatch.setattr(
        "img2img_filters.runs.train_run", lambda out, *args, **kwargs: calls.append(args)
    )
    assert main(["train", "--out", "unused"]) == 0
    data, model, train = calls[-1]
    assert (data, model) == (DataConfig(), ModelConfig())
    assert train == {"progress": True}  # what auto or TrainConfig decides is left to them
    argv = ["train", "--out", "unused", "--epochs", "3", "--lr", "0.01", "--seed", "4"]
    assert main([*argv, "--crop-size", "32", "--download", "--device", "cpu"]) == 0
    data, model, train = calls[-1]
    assert data == DataConfig(seed=4, crop_size=32, download=True)
    assert train == {
        "max_epochs": 3,
        "learning_rate": 0.01,
        "seed": 4,
        "device": "cpu",
        "progress": True,
    }


def test_a_run_without_options_records_the_dataclass_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = run_train.load_filtered_dataset

    def fewer_photos(**kwargs):  # the run's own options; fewer photos, to stay fast
        return original(**{**kwargs, "limit": 48})

    monkeypatch.setattr(run_train, "load_filtered_dataset", fewer_photos)
    monkeypatch.chdir(tmp_path)
    assert main(["train"]) == 0
    (run,) = (tmp_path / "runs").iterdir()
    config = json.loads((run / "config.json").read_text())
    assert config["data"] == asdict(DataConfig())
    assert config["model"] == asdict(ModelConfig())
    settings = asdict(TrainConfig())
    for name in ("metadata", "state_path", "resume"):
        del settings[name]
    assert config["resolved"]["train"] == settings
    # the exact fit trains nothing: no resumable state (README: only gradient runs have one)
    assert config["resolved"]["method"] == "exact"
    assert not (run / "state.pt").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--arch", "cann"], "--arch: arch must be one of"),
        (["--arch", "cann", "--filter", "cmd:true {in} {out}"], "--arch: arch must be one of"),
        (["--arch", "cann", "--data", "{tmp}", "--targets", "{tmp}"], "--arch: arch must be"),
        (["--option", "width=8"], "--option width: arch auto fits the linear filter"),
        (["--option", "width=8"], "'study-sobel' exactly"),
        (["--arch", "study", "--option", "width=8"], "unknown option 'width'"),
        (["--filter", "median", "--option", "kernel_size=3"], "unknown option 'kernel_size'"),
        (["--data", "{tmp}", "--targets", "{tmp}", "--option", "width=8"], "--option width"),
        (["--filter", "cmd:true {in} {out}", "--option", "width=8"], "pass --arch NAME"),
    ],
)
def test_arch_and_options_are_checked_before_data_loads(
    argv: list[str],
    message: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reached = []
    monkeypatch.setattr(cli_train, "run", lambda args: reached.append(args) or 0)
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    code = main(["train", "--out", str(tmp_path / "run"), *argv])
    err = capsys.readouterr().err
    assert (code, reached) == (2, [])
    assert err.startswith("img2img train: error: ") and err.count("\n") == 1
    assert message in err


def test_archs_and_data_are_described(capsys: pytest.CaptureFixture) -> None:
    parsers = dict(_sub_parsers(build_parser()))
    commands = next(
        a for a in parsers["img2img"]._actions if isinstance(a, argparse._SubParsersAction)
    )
    summaries = {action.dest: action.help for action in commands._choices_actions}
    with pytest.raises(SystemExit):
        main(["--help"])
    top = " ".join(capsys.readouterr().out.split())
    for name in ("archs", "data"):
        assert summaries[name] and summaries[name] in top
        description = parsers[f"img2img {name}"].description
        assert description and len(description) > 80
        own = " ".join(_help_text(capsys, name).split())
        assert " ".join(description.split()) in own
    for source in list_data_sources():
        assert f"{source.name}: {source.description}" in parsers["img2img data"].description
    for action in ("download", "info"):
        assert parsers[f"img2img data {action}"].description


def test_data_sources_list_the_named_ones_then_folders() -> None:
    sources = list_data_sources()
    assert tuple(s.name for s in sources[: len(DATA_SOURCES)]) == DATA_SOURCES
    assert [s.name for s in sources[len(DATA_SOURCES) :]] == ["FOLDER"]
    assert [s.name for s in sources if s.downloadable] == ["tiny-imagenet"]
    assert all(s.description for s in sources)


def _readme_commands(section: str, pattern: str) -> list[str]:
    """Command lines of a README section matching ``pattern``, continuation lines joined."""
    text = README.read_text().split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    text = text.replace("\\\n", " ")
    return [line for line in text.splitlines() if re.search(pattern, line)]


@pytest.mark.parametrize(
    ("section", "pattern"),
    [
        ("The command line", r"^img2img train .*--data tiny-imagenet"),
        ("Training on several processes or machines", r"^torchrun .* train"),
    ],
)
def test_readme_long_runs_carry_a_time_budget(section: str, pattern: str) -> None:
    lines = _readme_commands(section, pattern)
    assert lines
    for line in lines:
        assert "--time-budget" in line, line
        assert re.search(r"#.*\b(minutes?|hours?)\b", line), line


def test_readme_says_which_runs_hold_state_pt() -> None:
    text = " ".join(README.read_text().split())
    assert "A run folder holds `model.safetensors`, `state.pt` (resumable)" not in text
    assert "a run trained by gradient also holds `state.pt`" in text


def test_help_shows_no_python_repr_of_empty_options(capsys: pytest.CaptureFixture) -> None:
    text = _help_text(capsys, "train")
    assert "(default: {})" not in text and "(default: None)" not in text


@pytest.mark.parametrize(
    ("command", "function", "pairs"),
    [
        (
            "apply",
            "img2img_filters.infer:apply_folder",
            {"bit_depth": "bit_depth", "batch": "batch", "device": "device", "tile": "tile"},
        ),
        (
            "apply",
            "img2img_filters.infer:apply_filter",
            {"fast": "fast", "max_pixels": "max_pixels"},
        ),
        (
            "eval",
            "img2img_filters.metrics:compute_metrics",
            {"device": "device", "limit": "max_images"},
        ),
        ("probe", "img2img_filters.probe:probe_operator", {"seed": "seed"}),
        ("probe", "img2img_filters.probe:read_pair_folders", {"limit": "limit"}),
    ],
)
def test_other_commands_default_as_the_functions_they_call(
    command: str, function: str, pairs: dict[str, str]
) -> None:
    module, name = function.split(":")
    signature = inspect.signature(getattr(importlib.import_module(module), name)).parameters
    args = build_parser().parse_args([command, *_REQUIRED[command]])
    for option, parameter in pairs.items():
        assert getattr(args, option) == signature[parameter].default, (command, option)


#: The positional arguments and required options each command needs to parse.
_REQUIRED = {"apply": ["model", "input", "-o", "out"], "eval": ["model"], "probe": []}
