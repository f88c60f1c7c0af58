"""Run the example notebook from top to bottom and save it with its outputs.

The kernel is this interpreter (the virtual environment running the script), from a
kernel spec written to a temporary folder: nothing is installed. Cells run in the
notebook's own folder, as in Jupyter, and the saved notebook keeps its ``python3``
kernel spec. It shows what Jupyter shows once the run ends: progress bars that hid
themselves when done (tqdm's ``leave=False``) are left out, with their widget state;
widgets still shown keep theirs.

Usage::

    python examples/execute_notebook.py                        # examples/Img2Img.ipynb in place
    python examples/execute_notebook.py --output /tmp/run.ipynb
    IMG2IMG_NOTEBOOK_QUICK=1 python examples/execute_notebook.py --output /tmp/quick.ipynb

Needs the ``notebook`` extra (``pip install -e ".[notebook]"``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().with_name("Img2Img.ipynb")
#: The kernel spec's name while the notebook runs (in a temporary folder only).
KERNEL_NAME = "img2img-notebook-python"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
_MODEL_REFERENCE = re.compile(r"IPY_MODEL_([0-9a-f]+)")


def kernel_manager(folder: Path, python: str = sys.executable) -> KernelManager:
    """A kernel manager for ``python``, from a kernel spec written under ``folder``.

    Args:
        folder: An empty folder for the kernel spec (``folder/kernels/<name>/kernel.json``).
        python: The interpreter the kernel runs (default: this one).

    Returns:
        A manager that starts that kernel; nothing is installed in Jupyter's own paths.
    """
    spec = folder / "kernels" / KERNEL_NAME
    spec.mkdir(parents=True, exist_ok=True)
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [python, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "img2img notebook",
                "language": "python",
            }
        )
    )
    specs = KernelSpecManager(kernel_dirs=[str(folder / "kernels")])
    return KernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=specs)


def execute(nb: Any, working_dir: Path, *, timeout: int = 600) -> Any:
    """Run every cell of ``nb`` in a fresh kernel of this interpreter, outputs in place.

    Args:
        nb: The notebook (an ``nbformat`` node); its cells get their outputs.
        working_dir: The kernel's working directory.
        timeout: The most seconds one cell may run.

    Returns:
        ``nb``, executed.

    Raises:
        nbclient.exceptions.CellExecutionError: If a cell fails (with its traceback).
    """
    kernelspec = dict(nb.metadata.get("kernelspec", {}))
    with tempfile.TemporaryDirectory(prefix="img2img-kernel-") as folder:
        client = NotebookClient(
            nb,
            km=kernel_manager(Path(folder)),
            timeout=timeout,
            resources={"metadata": {"path": str(working_dir)}},
        )
        client.execute()
    if kernelspec:  # keep the notebook's own kernel spec, not the temporary one
        nb.metadata["kernelspec"] = kernelspec
    return nb


def _references(value: Any) -> Iterator[str]:
    """The model ids a widget's state refers to (``"IPY_MODEL_<id>"`` strings, nested)."""
    if isinstance(value, str):
        yield from _MODEL_REFERENCE.findall(value)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _references(item)
    elif isinstance(value, list):
        for item in value:
            yield from _references(item)


def _hidden(model_id: str, states: dict[str, Any]) -> bool:
    """Whether a widget ended hidden: its layout has ``visibility: hidden`` or ``display: none``."""
    state = states.get(model_id, {}).get("state", {})
    layout_ids = list(_references(state.get("layout", "")))
    layout = states.get(layout_ids[0], {}).get("state", {}) if layout_ids else {}
    return layout.get("visibility") == "hidden" or layout.get("display") == "none"


def _same_stream(first: Any, second: Any) -> bool:
    """Whether two outputs are text of the same stream (stdout or stderr)."""
    both_streams = first.get("output_type") == second.get("output_type") == "stream"
    return both_streams and first.get("name") == second.get("name")


def drop_hidden_widgets(nb: Any) -> int:
    """Leave out the widget views that ended hidden, and the state of every widget no view shows.

    A progress bar made with ``leave=False`` hides itself when done: Jupyter shows nothing
    for it once the run ends, while a viewer without its state (or a saved notebook
    reopened) would show its first frame. Text the views stood between joins up again.
    The widget state kept in the notebook's metadata is that of the views left, with
    every model they refer to.

    Args:
        nb: An executed notebook (an ``nbformat`` node), changed in place.

    Returns:
        How many widget views were left out.
    """
    widgets = nb.metadata.get("widgets", {}).get(WIDGET_STATE, {})
    states: dict[str, Any] = widgets.get("state", {})
    dropped = 0
    shown: list[str] = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        kept = []
        for output in cell.outputs:
            view = output.get("data", {}).get(WIDGET_VIEW)
            if view is not None and _hidden(view["model_id"], states):
                dropped += 1
                continue
            if view is not None:
                shown.append(view["model_id"])
            if kept and _same_stream(kept[-1], output):  # text the bars stood between
                kept[-1]["text"] += output["text"]
            else:
                kept.append(output)
        cell.outputs = kept
    reachable: set[str] = set()
    while shown:
        model_id = shown.pop()
        if model_id not in reachable:
            reachable.add(model_id)
            shown.extend(_references(states.get(model_id, {}).get("state", {})))
    if reachable:
        widgets["state"] = {key: value for key, value in states.items() if key in reachable}
    else:
        nb.metadata.pop("widgets", None)
    return dropped


def main(argv: list[str] | None = None) -> int:
    """Execute the notebook given on the command line; see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "notebook", nargs="?", type=Path, default=NOTEBOOK, help="default: %(default)s"
    )
    parser.add_argument(
        "-o", "--output", type=Path, help="where to save the executed notebook (default: in place)"
    )
    parser.add_argument(
        "--timeout", type=int, default=600, help="the most seconds one cell may run (%(default)s)"
    )
    args = parser.parse_args(argv)
    if not args.notebook.is_file():
        parser.error(f"notebook: no such file: {args.notebook}")
    if args.timeout < 1:
        parser.error(f"--timeout must be a positive number of seconds; got {args.timeout}")
    os.environ.setdefault("MPLBACKEND", "agg")  # the notebook switches to inline itself
    nb = nbformat.read(args.notebook, as_version=4)
    execute(nb, args.notebook.resolve().parent, timeout=args.timeout)
    hidden = drop_hidden_widgets(nb)
    output = args.output or args.notebook
    output.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, output)
    print(f"executed {args.notebook} -> {output} ({hidden} finished progress bars left out)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
