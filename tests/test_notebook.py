"""The example notebook: saved with its outputs, uses the public API, runs from top to bottom."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
NOTEBOOK = EXAMPLES / "Img2Img.ipynb"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# The cells that draw a figure, by the call that draws it.
FIGURE_CALLS = (
    "preview_filtered_dataset(",
    "plot_losses(",
    "preview_predictions(",
    "plot_kernels(",
    "plt.show()",
)


@pytest.fixture(scope="module")
def notebook():
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    return nb


@pytest.fixture(scope="module")
def runner():
    """examples/execute_notebook.py, imported from its file."""
    pytest.importorskip("nbclient")
    spec = importlib.util.spec_from_file_location(
        "execute_notebook", EXAMPLES / "execute_notebook.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _code(nb) -> list:
    return [cell for cell in nb.cells if cell.cell_type == "code"]


def _figure_cells(nb) -> list:
    return [cell for cell in _code(nb) if any(call in cell.source for call in FIGURE_CALLS)]


def _text(cell) -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")


def _pngs(cell) -> list:
    return [o for o in cell.outputs if "image/png" in o.get("data", {})]


def _cell(nb, call: str):
    (cell,) = [cell for cell in _code(nb) if call in cell.source]
    return cell


def test_notebook_is_saved_with_the_outputs_of_a_full_run(notebook):
    cells = _code(notebook)
    assert len(cells) >= 8
    assert [cell.execution_count for cell in cells] == list(range(1, len(cells) + 1))
    for cell in cells:
        assert cell.outputs, cell.source[:60]
        assert not [o for o in cell.outputs if o.output_type == "error"], cell.source[:60]
    figures = _figure_cells(notebook)
    assert len(figures) == 5  # data, losses, predictions, kernels, the photo
    for cell in figures:
        assert len(_pngs(cell)) == 1, cell.source[:60]
    assert sum(len(_pngs(cell)) for cell in cells) == 5
    text = "".join(_text(cell) for cell in cells)
    assert "quick mode: False; 30 epochs" in text  # the real settings, not the smoke run
    assert "48 parameters" in text and "kernel max error" in text
    assert re.search(r"validation PSNR \d+\.\d\d dB", text)
    training = _text(_cell(notebook, "train_model("))
    assert re.search(r"^epoch +1/30 +train [\d.]+ +val [\d.]+", training, re.M)  # progress=True
    assert "training_loss.png" in text and "prediction_plot.png" in text  # what the study saved
    assert NOTEBOOK.stat().st_size < 2_500_000  # small enough to read on the web


def test_committed_outputs_show_no_finished_progress_bars_or_local_paths(notebook):
    outputs = [o for cell in _code(notebook) for o in cell.outputs]
    assert not [o for o in outputs if WIDGET_VIEW in o.get("data", {})]
    assert "widgets" not in notebook.metadata
    assert notebook.metadata.kernelspec.name == "python3"
    assert str(EXAMPLES.parent) not in NOTEBOOK.read_text(encoding="utf-8")


def test_notebook_uses_the_public_api_and_explains_each_step(notebook):
    source = "\n".join(cell.source for cell in _code(notebook))
    assert re.findall(r"^[ \t]*(?:from|import) img2img\S*", source, re.M) == [
        "from img2img_filters"
    ]
    assert "img2img_filters." not in source  # no private modules
    for name in (
        "load_filtered_dataset(",
        "preview_filtered_dataset(",
        "create_img2img_model(3, 1)",
        "train_model(",
        "plot_losses(",
        "preview_predictions(",
        "compute_metrics(",
        "fit_linear(",
        "plot_kernels(",
        "kernel_error(",
        "apply_filter(",
        "IMG2IMG_NOTEBOOK_QUICK",
    ):
        assert name in source, name
    markdown = [cell for cell in notebook.cells if cell.cell_type == "markdown"]
    assert len(markdown) >= len(_code(notebook)) - 3


def test_notebook_makes_the_study_calls_as_the_study_wrote_them(notebook):
    source = "\n".join(cell.source for cell in _code(notebook))
    for call in (
        "preview_filtered_dataset(train_dataset, num_images=5, save_plot=False)",
        "plot_losses(train_losses, val_losses, save=True, trunc=5)",
        "compute_metrics(model, val_dataset)",
    ):
        assert call in source, call
    assert re.search(
        r"preview_predictions\(\s*model, val_dataset, num_images=5, save_plot=True, plot_save_path=",
        source,
    )
    assert re.search(r"train_model\([^)]*progress=True", source)
    # The figures the study saves go to a temporary folder, made the working directory.
    setup = _cell(notebook, "import os").source
    assert "tempfile.mkdtemp(" in setup and "os.chdir(OUT)" in setup


def test_drop_hidden_widgets_keeps_what_jupyter_shows_at_the_end(runner):
    nbformat = pytest.importorskip("nbformat")
    v4 = nbformat.v4

    def model(name: str, **state) -> dict:
        return {"model_name": name, "model_module": "@jupyter-widgets/controls", "state": state}

    def view(model_id: str) -> dict:
        return v4.new_output(
            "display_data",
            data={WIDGET_VIEW: {"model_id": model_id}, "text/plain": "0%|"},
        )

    states = {
        "a1": model("HBoxModel", children=["IPY_MODEL_a2"], layout="IPY_MODEL_a3"),
        "a2": model("FloatProgressModel", layout="IPY_MODEL_a4"),
        "a3": model("LayoutModel", visibility="hidden"),
        "a4": model("LayoutModel"),
        "b1": model("HBoxModel", children=["IPY_MODEL_b2"], layout="IPY_MODEL_b3"),
        "b2": model("FloatProgressModel", layout="IPY_MODEL_b4"),
        "b3": model("LayoutModel"),
        "b4": model("LayoutModel"),
        "c1": model("HBoxModel", children=[], layout="IPY_MODEL_c2"),
        "c2": model("LayoutModel", display="none"),
    }
    cell = v4.new_code_cell("train()")
    cell.outputs = [
        view("a1"),
        v4.new_output("stream", name="stdout", text="epoch 1\n"),
        view("c1"),
        v4.new_output("stream", name="stdout", text="epoch 2\n"),
        view("b1"),
        v4.new_output("stream", name="stderr", text="warning\n"),
    ]
    nb = v4.new_notebook(cells=[cell])
    nb.metadata["widgets"] = {
        "application/vnd.jupyter.widget-state+json": {"state": states, "version_major": 2}
    }
    assert runner.drop_hidden_widgets(nb) == 2
    kinds = [(o.output_type, o.get("text")) for o in cell.outputs]
    assert kinds == [
        ("stream", "epoch 1\nepoch 2\n"),
        ("display_data", None),
        ("stream", "warning\n"),
    ]
    assert cell.outputs[1].data[WIDGET_VIEW]["model_id"] == "b1"
    kept = nb.metadata.widgets["application/vnd.jupyter.widget-state+json"]["state"]
    assert sorted(kept) == ["b1", "b2", "b3", "b4"]
    # Without a widget left, the notebook keeps no widget state at all.
    cell.outputs = [o for o in cell.outputs if WIDGET_VIEW not in o.get("data", {})]
    assert runner.drop_hidden_widgets(nb) == 0
    assert "widgets" not in nb.metadata


def test_execute_notebook_refuses_a_missing_notebook(runner, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        runner.main([str(tmp_path / "missing.ipynb")])
    assert exit_info.value.code == 2
    assert "missing.ipynb" in capsys.readouterr().err


@pytest.mark.slow
def test_notebook_runs_in_quick_mode(notebook, runner, tmp_path, monkeypatch):
    pytest.importorskip("ipykernel")
    pytest.importorskip("ipywidgets")
    monkeypatch.setenv("IMG2IMG_NOTEBOOK_QUICK", "1")
    monkeypatch.setenv("MPLBACKEND", "agg")  # the notebook switches to inline itself
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    monkeypatch.setenv("TMPDIR", str(temporary))  # where the kernel's tempfile makes OUT
    work = tmp_path / "work"
    work.mkdir()
    nb = notebook.copy()
    nb.cells = [cell.copy() for cell in notebook.cells]
    for cell in _code(nb):
        cell.outputs, cell.execution_count = [], None
    runner.execute(nb, work, timeout=120)  # raises CellExecutionError when a cell fails
    outputs = [output for cell in _code(nb) for output in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(_text(cell) for cell in _code(nb))
    assert "quick mode: True; 8 epochs" in text and "48 parameters" in text
    assert "kernel max error" in text
    for cell in _figure_cells(nb):
        assert len(_pngs(cell)) == 1, cell.source[:60]
    assert sum(len(_pngs(cell)) for cell in _code(nb)) == 5
    # progress=True in a kernel: tqdm.auto draws its bars as Jupyter widgets, one per epoch.
    training = _cell(nb, "train_model(")
    bars = [o for o in training.outputs if WIDGET_VIEW in o.get("data", {})]
    assert len(bars) == 8
    assert re.search(r"^epoch +8/8 +train", _text(training), re.M)
    assert runner.drop_hidden_widgets(nb) == 8  # each bar hid itself when its epoch ended
    assert "widgets" not in nb.metadata
    # The study's save=True calls wrote their figures into OUT, and nothing else anywhere.
    assert list(work.iterdir()) == []
    (out,) = temporary.glob("img2img-study-*")
    assert sorted(p.name for p in out.iterdir()) == ["prediction_plot.png", "training_loss.png"]
    for figure in out.iterdir():
        assert figure.read_bytes()[:8] == PNG_SIGNATURE
