"""How a training step runs: the engine chosen once per run, forced choices, the result's record."""

from __future__ import annotations

import inspect
import logging

import numpy as np
import pytest
import torch
from torch import nn

import img2img_filters.train.engines as engines
from img2img_filters.backends.cpu import torch_threads
from img2img_filters.cli import build_parser
from img2img_filters.data import FilteredDataset
from img2img_filters.models import create_img2img_model
from img2img_filters.train import TrainConfig, TrainResult, train_model
from img2img_filters.train.config import ENGINES
from img2img_filters.train.losses import LOSSES

CPU = torch.device("cpu")
#: One epoch of the study's data: 4096 photos of 64x64 in batches of 128.
STUDY_STEP = 128 * 64 * 64


@pytest.fixture()
def datasets(mini_photos: np.ndarray) -> tuple[FilteredDataset, FilteredDataset]:
    images = np.ascontiguousarray(mini_photos.transpose(0, 3, 1, 2))
    train = FilteredDataset(images, "study-sobel", indices=np.arange(12))
    val = FilteredDataset(images, "study-sobel", indices=np.arange(12, 16))
    return train, val


def _choose(model: nn.Module, steps: int, pixels: int = STUDY_STEP, world: int = 1, **options):
    config = TrainConfig(**options)
    optimizer = torch.optim.Adam(model.parameters())
    return engines.choose_engine(
        model, optimizer, LOSSES[config.loss], config, CPU, world, steps, pixels
    )


def _wide() -> nn.Module:
    """A network with no few-channel convolution (32 x 3 channel pairs and more)."""
    return nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 1, 3, padding=1))


def test_auto_takes_the_fused_loops_only_when_a_long_run_repays_compiling(monkeypatch) -> None:
    monkeypatch.setattr(engines, "compiler_works", lambda: True)
    monkeypatch.setattr(engines, "busy_cores", lambda: False)
    study = create_img2img_model(3, 1, "study")
    long = _choose(study, 100 * 32)  # the study's 100 epochs of 32 batches
    assert long.name == "fused" and "3200 planned steps" in long.reason
    short = _choose(study, 2 * 3, pixels=4 * 64 * 64)  # a test's run
    assert short.name == "opencv" and "do not repay compiling" in short.reason
    assert engines.repays_compiling(100 * 32, STUDY_STEP)
    assert not engines.repays_compiling(1, STUDY_STEP)
    # the threshold is where the saving meets the compile time
    needed = engines.COMPILE_SECONDS / (engines.SAVED_SECONDS_PER_PIXEL * STUDY_STEP)
    assert engines.repays_compiling(int(np.ceil(needed)), STUDY_STEP)
    assert not engines.repays_compiling(int(np.floor(needed)) - 1, STUDY_STEP)


def test_auto_without_a_compiler_or_a_chain_falls_back(monkeypatch) -> None:
    monkeypatch.setattr(engines, "compiler_works", lambda: False)
    study = create_img2img_model(3, 1, "study")
    engine = _choose(study, 10**6)
    assert engine.name == "opencv" and "no working C++ compiler" in engine.reason
    monkeypatch.setattr(engines, "compiler_works", lambda: True)
    can = create_img2img_model(3, 1, "can", width=8, depth=3)  # not a plain chain
    assert _choose(can, 10**6).name == "opencv"  # its last convolution has 8 channel pairs
    engine = _choose(_wide(), 10**6)
    assert engine.name == "eager" and "no few-channel convolutions" in engine.reason
    # the fused loops sum their loss: a loss they cannot write is not fused
    assert _choose(study, 10**6, loss="mse").name == "fused"


def test_compile_true_keeps_its_meaning(monkeypatch) -> None:
    monkeypatch.setattr(engines, "compiler_works", lambda: False)  # never probed for compile=True
    study = create_img2img_model(3, 1, "study")
    assert _choose(study, 1, compile=True).name == "fused"
    compiled = _choose(_wide(), 1, compile=True)
    assert compiled.name == "compile" and compiled.evaluator is compiled.network
    assert _choose(study, 1, compile=True, engine="compile").name == "compile"
    with pytest.raises(
        ValueError, match="compile=True asks for a compiled engine; engine='opencv'"
    ):
        _choose(study, 1, compile=True, engine="opencv")


def test_forced_engines_and_impossible_ones(monkeypatch) -> None:
    monkeypatch.setattr(engines, "compiler_works", lambda: True)
    study = create_img2img_model(3, 1, "study")
    for name in ("eager", "opencv", "fused", "compile"):
        engine = _choose(study, 1, engine=name)
        assert engine.name == name and engine.reason.startswith("forced")
    with pytest.raises(ValueError, match="engine='fused' cannot train this run: the network"):
        _choose(_wide(), 10**6, engine="fused")
    with pytest.raises(ValueError, match="engine='ddp' needs several processes"):
        _choose(study, 1, engine="ddp")
    monkeypatch.setattr(engines, "compiler_works", lambda: False)
    with pytest.raises(ValueError, match="no working C\\+\\+ compiler"):
        _choose(study, 10**6, engine="fused")
    with pytest.raises(ValueError, match="engine must be one of"):
        TrainConfig(engine="fast")


def test_the_compiler_probe_is_cached() -> None:
    first = engines.compiler_works()
    assert isinstance(first, bool) and engines.compiler_works() is first
    assert engines.compiler_works.cache_info().hits >= 1


def test_train_model_reports_its_engine_and_trains_with_a_forced_one(datasets, caplog) -> None:
    train, val = datasets
    results = {}
    for engine in ("auto", "eager"):
        torch.manual_seed(3)
        model = create_img2img_model(3, 1, "study")
        with caplog.at_level(logging.INFO, logger="img2img_filters.train.loop"):
            results[engine] = train_model(
                model,
                train,
                val,
                max_epochs=2,
                batch_size=4,
                progress=False,
                engine=engine,
                return_result=True,
            )
    auto, eager = results["auto"], results["eager"]
    assert isinstance(auto, TrainResult) and auto.engine == "opencv" and eager.engine == "eager"
    assert "do not repay compiling" in auto.engine_reason
    assert "training engine: opencv" in caplog.text and "training engine: eager" in caplog.text
    assert auto.epochs == 2 and len(auto.train_losses) == 2 and auto.stopped == "max_epochs reached"
    # OpenCV's convolutions and PyTorch's compute the same training
    np.testing.assert_allclose(auto.val_losses, eager.val_losses, rtol=1e-4)
    assert auto.summary()["engine"] == "opencv"


def test_train_models_defaults_are_the_configs() -> None:
    signature = inspect.signature(train_model).parameters
    for name in ("max_epochs", "early_stopping_patience", "batch_size", "learning_rate"):
        assert signature[name].default == getattr(TrainConfig(), name), name
    assert (TrainConfig().max_epochs, TrainConfig().batch_size) == (100, 128)  # the study's


def test_the_command_line_offers_every_engine() -> None:
    args = build_parser().parse_args(["train", "--filter", "box", "--engine", "opencv"])
    assert args.engine == "opencv"
    commands = next(a for a in build_parser()._actions if a.dest == "command")
    train = commands.choices["train"]
    choices = next(a.choices for a in train._actions if a.dest == "engine")
    assert tuple(choices) == ENGINES


def test_a_resumed_run_plans_the_whole_runs_steps(datasets, tmp_path, monkeypatch) -> None:
    """The engine is chosen on the whole run's steps, so a resumed run takes the same one."""
    planned = []

    def record(steps: int, pixels: int) -> bool:
        planned.append((steps, pixels))
        return False

    monkeypatch.setattr(engines, "compiler_works", lambda: True)
    monkeypatch.setattr(engines, "repays_compiling", record)
    train, val = datasets  # 12 photos of 64x64 in batches of 4: 3 steps an epoch
    state = tmp_path / "state.pt"
    for resume in (None, str(state)):
        train_model(
            create_img2img_model(3, 1, "study"),
            train,
            val,
            max_epochs=2,
            batch_size=4,
            progress=False,
            state_path=str(state),
            resume=resume,
        )
    assert planned == [(6, 4 * 64 * 64), (6, 4 * 64 * 64)]


def test_auto_runs_the_fused_loops_on_one_thread_when_the_cores_are_busy(monkeypatch) -> None:
    monkeypatch.setattr(engines, "compiler_works", lambda: True)
    study = create_img2img_model(3, 1, "study")
    for busy, threads in ((True, 1), (False, None)):
        monkeypatch.setattr(engines, "busy_cores", lambda busy=busy: busy)
        engine = _choose(study, 100 * 32)
        assert engine.name == "fused" and engine.thread_count == threads
        assert ("one thread" in engine.reason) is busy
        with torch_threads(2), engine.threads():
            assert torch.get_num_threads() == (threads or 2)
    # compile=True keeps all threads, busy or not
    monkeypatch.setattr(engines, "busy_cores", lambda: True)
    assert _choose(study, 1, compile=True).thread_count is None


@pytest.mark.parametrize(("load", "busy"), [(9.0, True), (2.5, True), (1.5, False)])
def test_busy_cores_compares_the_load_with_the_cores(monkeypatch, load, busy) -> None:
    monkeypatch.setattr(engines.os, "getloadavg", lambda: (load, 0.0, 0.0))
    monkeypatch.setattr(engines.os, "sched_getaffinity", lambda _pid: {0, 1}, raising=False)
    assert engines.busy_cores() is busy
