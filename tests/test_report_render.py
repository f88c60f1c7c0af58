"""The report's templates: autoescaping, loss labels, ranking within one filter, links, residuals.

The run folders here are written by hand (a configuration, metrics and a history), so
each test says exactly what the folder records; the reports are built without drawing.
"""

from __future__ import annotations

import importlib.resources
import json
import re
from pathlib import Path

import numpy as np
import pytest
from markupsafe import Markup

from img2img_filters.report import RunFiles, read_run, write_comparison_report, write_run_report
from img2img_filters.report.figures import plot_loss_comparison
from img2img_filters.report.render import environment, spec_html

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 32
SCRIPT = "<script>alert('x')</script>"


def make_run(
    folder: Path,
    *,
    filter: str = "study-sobel",
    train: dict | None = None,
    resolved: dict | None = None,
    metrics: dict | None = None,
    history: list[tuple[float, float]] = ((0.5, 0.6), (0.2, 0.25)),
) -> Path:
    """A run folder written by hand: config.json, metrics.json, history.csv."""
    folder.mkdir(parents=True)
    config = {
        "data": {"data": "samples", "filter": filter},
        "model": {"arch": "study", "options": {}},
        "train": train or {},
    }
    if resolved is not None:
        config["resolved"] = {"arch": "study", "method": "gradient", **resolved}
    (folder / "config.json").write_text(json.dumps(config))
    record = {"l1": 0.1, "mse": 0.02, "psnr": 20.0, "ssim": 0.5, "epochs": len(history)}
    (folder / "metrics.json").write_text(json.dumps({**record, **(metrics or {})}))
    rows = "".join(f"{i},{t!r},{v!r}\n" for i, (t, v) in enumerate(history, start=1))
    (folder / "history.csv").write_text("epoch,train_loss,val_loss\n" + rows)
    return folder


def cells(html: str) -> list[list[str]]:
    """The table rows of the comparison's results table as lists of ``<td ...>`` openings+text."""
    table = html.split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    return [re.findall(r"<td[^>]*>.*?</td>", row, re.S) for row in table.split("<tr>")[1:]]


# -- autoescaping ------------------------------------------------------------------------------
def test_a_run_name_and_filter_spec_holding_script_are_escaped(tmp_path):
    run = make_run(tmp_path / SCRIPT.replace("/", "|"), filter=SCRIPT, resolved={"loss": "l1"})
    config = json.loads((run / "config.json").read_text())
    config["train"] = {"note": SCRIPT}
    (run / "config.json").write_text(json.dumps(config))
    for page in (
        write_run_report(run, draw_missing=False),
        write_comparison_report([run], tmp_path / "compare.html", title=SCRIPT),
    ):
        html = page.read_text()
        assert "<script" not in html.lower()  # never markup ...
        assert "&lt;script&gt;alert(&#39;x&#39;)" in html  # ... always text
        assert html.count("&lt;script&gt;") >= 2  # the name and the spec, at least


def test_the_environment_escapes_and_the_templates_ship_in_the_package():
    env = environment()
    assert env.autoescape is True
    assert (
        env.from_string("{{ x }}").render(x=SCRIPT)
        == "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"
    )
    templates = importlib.resources.files("img2img_filters.report").joinpath("templates")
    names = {item.name for item in templates.iterdir()}
    assert {"base.html.j2", "run.html.j2", "comparison.html.j2", "report.css"} <= names


def test_spec_html_escapes_and_adds_break_chances_only():
    html = spec_html("gray|sobel:dx=1,dy=0<b>")
    assert isinstance(html, Markup)
    assert str(html) == "gray|<wbr>sobel:dx=1,<wbr>dy=0&lt;b&gt;"
    assert str(spec_html("a/b")) == "a/<wbr>b"


# -- loss labels -------------------------------------------------------------------------------
def test_run_folders_tell_the_loss_of_their_history():
    def run(config):
        return RunFiles(Path("r"), config=config)

    assert run({"resolved": {"loss": "mse"}}).loss == "mse"
    assert run({"resolved": {"loss": "mse"}}).loss_recorded
    old_mse = run({"train": {"loss": "mse"}})  # written before the record
    assert old_mse.loss == "mse" and not old_mse.loss_recorded
    chosen = run({"train": {}, "resolved": {"auto": {"train": {"loss": "mse"}}}})
    assert chosen.loss == "mse"
    assert run({"train": {"loss": "mse"}, "resolved": {"method": "exact"}}).loss == "l1"
    assert run({"train": {}}).loss == "l1"  # the training default
    assert run(None).loss is None  # no configuration: it cannot be told


def test_a_run_report_labels_every_loss_with_its_kind(tmp_path):
    run = make_run(tmp_path / "mse", train={"loss": "mse"}, resolved={"loss": "mse"})
    page = write_run_report(run).read_text()
    assert "Final training loss (MSE)" in page and "Final validation loss (MSE)" in page
    assert "MSE loss (mean squared error)" in page
    assert "Mean MSE loss per epoch" in page
    assert "training loss (MSE)" in page and "validation loss (MSE)" in page  # per-epoch table
    assert "Final validation loss<" not in page and "L1 loss" not in page
    assert "Validation L1 (mean absolute error)" in page  # the metric, named as such


def test_an_old_losses_png_that_calls_mse_l1_is_drawn_anew(tmp_path):
    run = make_run(tmp_path / "old", train={"loss": "mse"})
    (run / "losses.png").write_bytes(PNG)
    page = write_run_report(run).read_text()
    assert "losses.png labels the run&#39;s MSE losses as L1" in page
    assert "Drawn for this report" in page
    assert read_run(run).loss == "mse"


def test_comparison_draws_one_panel_per_loss():
    fig = plot_loss_comparison(
        {"a": ([0.5, 0.2], [0.6, 0.3]), "b": ([0.05, 0.02], [0.06, 0.03]), "c": ([0.4], [0.5])},
        losses={"a": "l1", "b": "mse", "c": "l1"},
    )
    assert [ax.get_ylabel() for ax in fig.axes] == [
        "L1 loss (mean absolute error)",
        "MSE loss (mean squared error)",
    ]
    assert [ax.get_title() for ax in fig.axes] == ["L1 loss", "MSE loss"]
    l1, mse = fig.axes
    assert len(l1.get_lines()) == 4 and len(mse.get_lines()) == 2  # training and validation
    assert np.allclose(mse.get_lines()[0].get_ydata(), [0.05, 0.02])
    assert [text.get_text() for text in fig.legends[0].get_texts()] == ["a", "b", "c"]
    with pytest.raises(ValueError, match=r"losses\['a'\] must be one of \['l1', 'mse'\]"):
        plot_loss_comparison({"a": ([0.5], None)}, losses={"a": "huber"})


# -- ranking, links, residuals -----------------------------------------------------------------
def test_best_is_marked_only_among_runs_of_the_same_filter(tmp_path):
    runs = [
        make_run(tmp_path / "a1", metrics={"l1": 0.1, "psnr": 20.0, "ssim": 0.5}),
        make_run(tmp_path / "a2", metrics={"l1": 0.2, "psnr": 19.0, "ssim": 0.6}),
        make_run(
            tmp_path / "b", filter="median:ksize=3", metrics={"l1": 1e-4, "psnr": 60.0, "ssim": 1.0}
        ),
    ]
    html = write_comparison_report(runs, tmp_path / "c.html").read_text()
    rows = cells(html)
    best = [[i for i, cell in enumerate(row) if 'class="num best"' in cell] for row in rows]
    columns = {"val L1": 6, "PSNR": 7, "SSIM": 8}
    assert best == [[columns["val L1"], columns["PSNR"]], [columns["SSIM"]], []]
    assert "among runs of the same filter" in html


def test_comparison_links_each_run_to_its_own_page(tmp_path):
    with_page = make_run(tmp_path / "runs" / "one")
    (with_page / "report.html").write_text("<!DOCTYPE html>")
    without = make_run(tmp_path / "runs" / "two")
    page = write_comparison_report([with_page, without], tmp_path / "out" / "c.html")
    html = page.read_text()
    links = re.findall(r'<a href="([^"#]+)">', html)
    assert links == ["../runs/one/report.html"]
    assert (page.parent / links[0]).resolve() == (with_page / "report.html").resolve()


def test_an_exact_fit_shows_its_residual_not_a_loss_curve(tmp_path):
    run = make_run(
        tmp_path / "fit",
        resolved={"method": "exact", "arch": "linear", "loss": "l1"},
        metrics={"stopped": "closed-form least-squares fit"},
        history=[(3.25e-08, 3.5e-08)],
    )
    (run / "losses.png").write_bytes(PNG)
    html = write_run_report(run, draw_missing=False).read_text()
    assert "Residual of the fit" in html
    assert "Training residual (L1, mean absolute error)" in html and "3.2500e-08" in html
    assert "Validation residual (L1, mean absolute error)" in html and "3.5000e-08" in html
    assert "data:image/png" not in html  # the one-point losses.png is not shown
    assert "Final training loss" not in html and "Losses per epoch" not in html
