"""The example notebook: saved without outputs, uses the public API, runs from top to bottom."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "Img2Img.ipynb"
KERNEL_NAME = "img2img-test-python"


@pytest.fixture(scope="module")
def notebook():
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    return nb


def _code(nb) -> list:
    return [cell for cell in nb.cells if cell.cell_type == "code"]


def test_notebook_is_saved_without_outputs(notebook):
    cells = _code(notebook)
    assert len(cells) >= 8
    for cell in cells:
        assert cell.outputs == [], cell.source[:60]
        assert cell.execution_count is None, cell.source[:60]


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


def _kernel_manager(folder: Path):
    """A kernel manager for this interpreter, from a kernel spec in ``folder`` (nothing installed)."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    spec = folder / "kernels" / KERNEL_NAME
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "img2img test",
                "language": "python",
            }
        )
    )
    specs = KernelSpecManager(kernel_dirs=[str(folder / "kernels")])
    return KernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=specs)


def test_notebook_runs_in_quick_mode(notebook, tmp_path, monkeypatch):
    pytest.importorskip("ipykernel")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("IMG2IMG_NOTEBOOK_QUICK", "1")
    monkeypatch.setenv("MPLBACKEND", "agg")  # the notebook switches to inline itself
    nb = notebook.copy()
    nb.cells = [cell.copy() for cell in notebook.cells]
    client = nbclient.NotebookClient(
        nb,
        km=_kernel_manager(tmp_path),
        timeout=120,
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()  # raises CellExecutionError with the traceback when a cell fails
    outputs = [output for cell in _code(nb) for output in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "quick mode: True" in text and "48 parameters" in text
    assert "kernel max error" in text
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 5  # data, losses, predictions, kernels, the photo
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kernels"]  # it writes no files
