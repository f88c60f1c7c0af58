"""A time budget covers the whole run: data, training and the polish, which stops and says so.

Time here is a fake clock: every reading of it costs ``tick`` seconds, so "how long" is a
count of readings and the tests neither sleep nor depend on the machine's speed.
"""

from __future__ import annotations

import types
from typing import Any

import numpy as np
import pytest
import torch

from bars import RecordingBar
from img2img_filters.auto import AutoChoice, fit_auto
from img2img_filters.data import FilteredDataset
from img2img_filters.models import create_img2img_model
from img2img_filters.run import train as run_train
from img2img_filters.runs import DataConfig, ModelConfig, train_run
from img2img_filters.solve import fit_linear, gauss_newton, lbfgs_refine, least_squares, refine
from img2img_filters.train import loop


class FakeClock:
    """``perf_counter()`` that moves ``tick`` seconds forward at each reading."""

    def __init__(self, tick: float) -> None:
        self.now, self.tick = 1000.0, tick

    def perf_counter(self) -> float:
        self.now += self.tick
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def _use_clock(monkeypatch: pytest.MonkeyPatch, clock: FakeClock, *modules: Any) -> None:
    for module in modules:
        monkeypatch.setattr(module, "time", types.SimpleNamespace(perf_counter=clock.perf_counter))


@pytest.fixture
def dataset(train_photos: np.ndarray) -> FilteredDataset:
    return FilteredDataset(np.ascontiguousarray(train_photos[:8, :, :24, :24]), "median:ksize=3")


# -- the polish ------------------------------------------------------------------------------------


def test_lbfgs_polish_stops_when_time_is_up_and_says_so(dataset, monkeypatch) -> None:
    clock = FakeClock(tick=1.0)
    _use_clock(monkeypatch, clock, refine)
    torch.manual_seed(0)
    model = create_img2img_model(3, 1, "neighbourhood", window=3)
    before = [p.detach().clone() for p in model.parameters()]
    report = lbfgs_refine(model, dataset, steps=1000, images=8, batch_size=2, seconds=10.0)
    assert report.stopped == "time" and report.out_of_time and report.time_limit == 10.0
    # one reading at the start, one per chunk of 2 photos: 4 chunks an evaluation
    assert 1 <= report.iterations <= 3 and report.iterations < 1000
    assert report.loss_after <= report.loss_before
    assert report.as_dict()["time_limit"] == 10.0 and model.refine_report["stopped"] == "time"
    changed = any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert changed == (report.loss_after < report.loss_before)


def test_lbfgs_polish_without_a_limit_is_not_out_of_time(dataset) -> None:
    model = create_img2img_model(3, 1, "linear", kernel_size=3)
    report = lbfgs_refine(model, dataset, steps=3, images=4)
    assert report.stopped in ("steps", "converged") and not report.out_of_time
    assert report.time_limit is None


def test_gauss_newton_takes_its_first_step_then_stops_when_time_is_up(dataset, monkeypatch) -> None:
    clock = FakeClock(tick=1.0)
    _use_clock(monkeypatch, clock, refine)
    model = create_img2img_model(3, 1, "linear", kernel_size=3)
    report = gauss_newton(model, dataset, steps=5, images=4, seconds=0.5)
    assert report.stopped == "time" and report.out_of_time and report.time_limit == 0.5
    assert report.iterations == 1  # the first step, whatever the clock says
    assert report.loss_after < report.loss_before
    free = gauss_newton(model, dataset, steps=1, images=4, seconds=None)
    assert free.iterations == 1 and not free.out_of_time and free.time_limit is None


@pytest.mark.parametrize("finish", [lbfgs_refine, gauss_newton])
def test_the_polish_shows_a_bar_when_progress_is_on(dataset, monkeypatch, finish) -> None:
    monkeypatch.setattr(refine, "tqdm", RecordingBar)
    RecordingBar.made = []
    model = create_img2img_model(3, 1, "linear", kernel_size=3)
    report = finish(model, dataset, steps=2, images=4, progress=True)
    (bar,) = RecordingBar.made
    assert bar.kwargs["disable"] is None  # shown when stderr is a terminal
    assert bar.kwargs["desc"] == f"{report.method} polish" and bar.kwargs["total"] == 2
    assert bar.n == report.iterations and bar.closed
    RecordingBar.made = []
    finish(model, dataset, steps=2, images=4, progress=False)
    assert RecordingBar.made[0].kwargs["disable"] is True


def test_bad_time_limits_are_refused(dataset) -> None:
    model = create_img2img_model(3, 1, "linear", kernel_size=3)
    for finish in (lbfgs_refine, gauss_newton):
        with pytest.raises(ValueError, match="seconds must be a non-negative number"):
            finish(model, dataset, seconds=-1.0)
    with pytest.raises(ValueError, match="seconds must be a non-negative number"):
        fit_linear(dataset, 3, seconds="soon")


# -- the exact fit ---------------------------------------------------------------------------------


def test_the_exact_fit_reads_the_photos_it_reaches_in_time(train_photos, monkeypatch) -> None:
    clock = FakeClock(tick=1.0)
    _use_clock(monkeypatch, clock, least_squares)
    photos = FilteredDataset(np.ascontiguousarray(train_photos[:12, :, :32, :32]), "box:ksize=3")
    # readings: the start, then one before each batch of 4: the second batch starts late
    model = fit_linear(photos, 3, batch_size=4, seconds=1.5)
    assert model.fit_report["out_of_time"] and model.fit_report["images"] == 4
    whole = fit_linear(photos, 3, batch_size=4)
    assert not whole.fit_report["out_of_time"] and whole.fit_report["images"] == 12
    # a box filter is exactly linear: the first photos already give its kernel
    torch.testing.assert_close(model.layers[0].weight, whole.layers[0].weight, atol=1e-5, rtol=0)


def test_fit_auto_says_when_the_budget_cut_the_photos(train_photos, monkeypatch) -> None:
    clock = FakeClock(tick=1.0)
    _use_clock(monkeypatch, clock, least_squares)
    # more photos than fit_linear's batch of 256: the second batch starts too late
    photos = np.ascontiguousarray(np.concatenate([train_photos[:, :, :32, :32]] * 3))
    train = FilteredDataset(photos, "box:ksize=3", indices=np.arange(280))
    val = FilteredDataset(photos, "box:ksize=3", indices=np.arange(280, 288))
    choice = AutoChoice("exact", "linear", {"kernel_size": 3, "depth": 1})
    model, result = fit_auto(train, val, choice, device="cpu", progress=False, seconds=0.0)
    assert model.fit_report["images"] == 256
    assert result.stopped.endswith("on the first 256 photos (time budget reached)")


# -- a whole run -----------------------------------------------------------------------------------


def test_a_run_keeps_its_budget_from_data_loading_to_the_end_of_the_polish(
    tmp_path, monkeypatch
) -> None:
    """Data loading takes 30 s of a 100 s budget; training and the polish share the rest."""
    clock = FakeClock(tick=0.5)
    _use_clock(monkeypatch, clock, run_train, loop, refine)
    load = run_train.load_filtered_dataset

    def slow_load(*args: Any, **kwargs: Any) -> Any:
        clock.advance(30.0)
        return load(*args, **kwargs)

    monkeypatch.setattr(run_train, "load_filtered_dataset", slow_load)
    monkeypatch.setattr(refine, "tqdm", RecordingBar)
    RecordingBar.made = []
    polish_started: list[float] = []
    lbfgs = run_train.lbfgs_refine

    def timed_lbfgs(*args: Any, **kwargs: Any) -> Any:
        polish_started.append(clock.now)
        return lbfgs(*args, **kwargs)

    monkeypatch.setattr(run_train, "lbfgs_refine", timed_lbfgs)
    started = clock.now
    result = train_run(
        tmp_path / "run",
        DataConfig(data="samples", filter="median:ksize=3", limit=16, crop_size=24),
        ModelConfig(arch="auto"),
        {"device": "cpu", "time_budget": 100.0, "max_epochs": 10_000, "progress": True}
        | {"early_stopping_patience": 0},
        figures=False,
        log=lambda _: None,
    )
    metrics = result.metrics
    assert metrics["stopped"].startswith("time budget of ")
    # training had what loading left, less the polish's quarter: about 70 * 0.75 = 52.5 s
    # (less the clock's readings before it started)
    assert 51.0 <= float(metrics["stopped"].split()[3]) <= 52.5
    assert polish_started[0] - started <= 30.0 + 52.5 + 5.0  # plus the last epoch's readings
    refine_report = metrics["refine"]
    assert refine_report["method"] == "l-bfgs" and refine_report["stopped"] == "time"
    # the whole run, polish included: over by no more than the few readings that end it
    # (the polish's last check, its own and the run's final time), each a tick
    assert clock.now - started <= 100.0 + 5 * clock.tick
    bars = [bar for bar in RecordingBar.made if bar.kwargs["desc"] == "l-bfgs polish"]
    assert len(bars) == 1 and bars[0].kwargs["disable"] is None
