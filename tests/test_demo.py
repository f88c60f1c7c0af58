"""The demo: four runs in one folder, a comparison page and a loss figure labelled by loss."""

from __future__ import annotations

from pathlib import Path

import pytest

from img2img_filters import demo
from img2img_filters.report import read_run


@pytest.mark.timeout(300)
def test_a_short_demo_writes_its_runs_and_labels_each_curve_with_its_loss(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    drawn: list[dict] = []
    plot = demo.plot_loss_comparison

    def spy(curves, **kwargs):
        drawn.append({"curves": curves, **kwargs})
        return plot(curves, **kwargs)

    monkeypatch.setattr(demo, "plot_loss_comparison", spy)
    result = demo.run_demo(tmp_path / "demo", epochs=1, limit=16, progress=False, log=None)

    names = [name for name, _, _ in demo.DEMO_RUNS]
    assert sorted(result["runs"]) == sorted(names)
    assert Path(result["report"]).is_file() and (tmp_path / "demo" / "losses.png").is_file()
    (call,) = drawn
    assert sorted(call["curves"]) == sorted(names)
    # each curve carries the loss its run folder records, so no two losses share one axis
    assert call["losses"] == {name: read_run(tmp_path / "demo" / name).loss for name in names}
    assert set(call["losses"].values()) <= {"l1", "mse"}
