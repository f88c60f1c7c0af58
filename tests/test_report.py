"""Reports: self-contained, well-formed HTML pages of a run and of several runs."""

from __future__ import annotations

import base64
import json
import math
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

from img2img_filters.cli import main
from img2img_filters.report import (
    read_run,
    write_comparison_report,
    write_run_report,
)
from img2img_filters.report.figures import plot_loss_comparison
from img2img_filters.report.folder import unique_names
from img2img_filters.report.page import format_float, format_psnr, format_seconds
from img2img_filters.runs import DataConfig, ModelConfig, train_run

PNG = b"\x89PNG\r\n\x1a\n"
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"}


class Page(HTMLParser):
    """Collects tags and attributes and checks that every element is closed in order."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.doctype = False
        self.text_parts: list[str] = []
        self.feed(text)
        self.close()
        if self.stack:
            self.errors.append(f"unclosed elements: {self.stack}")

    def handle_decl(self, decl: str) -> None:
        self.doctype = decl.lower() == "doctype html"

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID:
            self.errors.append(f"end tag for void element <{tag}>")
        elif not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text_parts.append(data)

    @property
    def text(self) -> str:
        return "".join(self.text_parts)

    def images(self) -> list[bytes]:
        """The decoded PNG of every ``<img>`` (each must be a PNG data URI)."""
        result = []
        for tag, attrs in self.tags:
            if tag == "img":
                src = attrs.get("src") or ""
                assert src.startswith("data:image/png;base64,"), src[:60]
                data = base64.b64decode(src.split(",", 1)[1], validate=True)
                assert data.startswith(PNG)
                assert attrs.get("alt")
                result.append(data)
        return result


def check_page(path: Path) -> Page:
    """Parse a report and check that it is well-formed and self-contained."""
    text = path.read_text(encoding="utf-8")
    page = Page(text)
    assert page.doctype
    assert page.errors == []
    names = [tag for tag, _ in page.tags]
    assert names[:2] == ["html", "head"] and "body" in names and "title" in names
    assert "script" not in names and "link" not in names  # no JavaScript, no external CSS
    for _, attrs in page.tags:
        for key in ("src", "href"):
            value = attrs.get(key) or ""
            assert not value.startswith(("http:", "https:", "//", "file:")), value
    assert "@import" not in text and "url(" not in text  # no fonts or sheets from elsewhere
    page.images()
    return page


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """A short gradient run of the study's network and an exact fit, on the built-in photos."""
    root = tmp_path_factory.mktemp("runs")
    data = DataConfig(data="samples", filter="study-sobel", limit=64)
    options = {"max_epochs": 2, "progress": False, "device": "cpu"}
    study = train_run(root / "study", data, ModelConfig(arch="study"), options, log=lambda _: None)
    auto = train_run(root / "auto", data, ModelConfig(arch="auto"), options, log=lambda _: None)
    return {"study": study.folder, "auto": auto.folder}


def copy_run(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    (target / "report.html").unlink()
    return target


def metrics_of(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


# -- one run -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["study", "auto"])
def test_training_writes_a_self_contained_report(runs, name):
    run = runs[name]
    page = check_page(run / "report.html")
    embedded = page.images()
    figures = sorted(run.glob("*.png"))
    assert {p.name for p in figures} >= {"losses.png", "predictions.png", "validation_photo.png"}
    if name == "auto":  # an exact fit shows its residual, not a one-point loss curve
        figures = [p for p in figures if p.name != "losses.png"]
        assert "Residual of the fit" in page.text
    for figure in figures:  # every figure of the folder, byte for byte
        assert figure.read_bytes() in embedded, figure.name
    assert len(embedded) == len(figures)
    m = metrics_of(run)
    text = page.text
    for value in (
        f"{m['l1']:.3e}",
        f"{m['mse']:.3e}",
        f"{m['psnr']:.2f} dB",
        f"{m['ssim']:.6f}",
        str(m["parameters"]),
        m["stopped"],
        f"{m['seconds']:.1f} s",
    ):
        assert value in text, value
    config = json.loads((run / "config.json").read_text())
    assert config["data"]["filter"] in text and "max_epochs" in text
    assert config["resolved"]["filter"] in text


def test_report_of_an_exact_fit_shows_its_kernels(runs):
    page = check_page(runs["auto"] / "report.html")
    ids = {attrs.get("id") for _, attrs in page.tags}
    assert {"summary", "losses", "predictions", "kernels", "config"} <= ids
    error = metrics_of(runs["auto"])["kernel_error"]
    assert f"{error['max_abs']:.3e}" in page.text and f"{error['relative']:.3e}" in page.text
    assert (runs["auto"] / "kernels.png").read_bytes() in page.images()


def test_report_of_a_non_linear_model_says_why_it_has_no_kernels(runs):
    page = check_page(runs["study"] / "report.html")
    assert not (runs["study"] / "kernels.png").exists()
    assert "no single kernel" in page.text


def test_report_can_be_rebuilt_elsewhere_with_a_title(runs, tmp_path):
    out = write_run_report(runs["auto"], tmp_path / "page.html", title="Sobel <exact> & co")
    assert out == tmp_path / "page.html"
    text = out.read_text()
    assert "<title>Sobel &lt;exact&gt; &amp; co</title>" in text
    check_page(out)


def test_values_from_the_folder_are_escaped_and_infinity_printed(runs, tmp_path):
    run = copy_run(runs["auto"], tmp_path / "odd<run>")
    metrics = metrics_of(run)
    metrics.update(psnr=math.inf, stopped="<script>alert('x')</script>")
    (run / "metrics.json").write_text(json.dumps(metrics))  # writes Infinity
    page = check_page(write_run_report(run))
    assert "∞ dB" in page.text
    assert "<script>alert('x')</script>" in page.text  # shown as text ...
    raw = (run / "report.html").read_text()
    assert "<script>" not in raw and "&lt;script&gt;" in raw  # ... never as markup
    assert "odd&lt;run&gt;" in raw


def test_report_of_a_folder_without_history_or_checkpoint(runs, tmp_path):
    run = copy_run(runs["study"], tmp_path / "partial")
    for name in ("history.csv", "model.safetensors", "state.pt", "predictions.png"):
        (run / name).unlink()
    page = check_page(write_run_report(run))
    text = page.text
    assert "Missing from this run folder" in text
    assert "history.csv (the loss history)" in text
    assert "model.safetensors (the checkpoint)" in text
    assert "predictions.png is missing (training draws it; a report reads no photos)" in text
    assert f"{metrics_of(run)['l1']:.3e}" in text  # what exists is still reported
    assert page.images() == [
        (run / name).read_bytes() for name in ("losses.png", "validation_photo.png")
    ]


def test_unreadable_files_become_notes(runs, tmp_path):
    run = copy_run(runs["auto"], tmp_path / "damaged")
    (run / "metrics.json").write_text("{not json")
    (run / "history.csv").write_text("epoch,train_loss,val_loss\n1,abc,0.5\n")
    (run / "kernels.png").write_bytes(b"not a png")
    page = check_page(write_run_report(run, draw_missing=False))
    assert "metrics.json is not valid JSON (JSONDecodeError" in page.text
    assert "history.csv line 2: train_loss 'abc' is not a number" in page.text
    assert "kernels.png is not a PNG image" in page.text
    page = check_page(write_run_report(run))  # the unreadable kernels are drawn anew
    # predictions, the validation photo and the kernels; an exact fit shows no loss curve
    assert len(page.images()) == 3 and page.text.count("Drawn for this report") == 1


def test_missing_figures_are_drawn_from_the_run(runs, tmp_path):
    run = copy_run(runs["auto"], tmp_path / "no-figures")
    for figure in run.glob("*.png"):
        figure.unlink()
    page = check_page(write_run_report(run))
    # kernels only: the predictions would need photos, and an exact fit has no loss curve
    assert len(page.images()) == 1
    assert page.text.count("Drawn for this report") == 1
    assert "predictions.png is missing (training draws it; a report reads no photos)" in page.text
    assert sorted(p.name for p in run.glob("*.png")) == []  # nothing written into the folder
    page = check_page(write_run_report(run, draw_missing=False))
    assert page.images() == []


def test_bad_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        write_run_report(tmp_path / "nowhere")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(NotADirectoryError, match="is not a folder"):
        write_run_report(tmp_path / "file.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="is not a run folder"):
        write_run_report(tmp_path / "empty")
    with pytest.raises(TypeError, match="sequence of run folders"):
        write_comparison_report(str(tmp_path), tmp_path / "c.html")
    with pytest.raises(ValueError, match="at least one run folder"):
        write_comparison_report([], tmp_path / "c.html")


# -- several runs ------------------------------------------------------------------------------
def test_comparison_report(runs, tmp_path):
    out = write_comparison_report(
        [runs["study"], runs["auto"]], tmp_path / "compare.html", title="Study & auto"
    )
    page = check_page(out)
    text = page.text
    assert "Study & auto" in text
    for column in ("run", "filter", "arch", "params", "epochs", "val L1", "PSNR", "SSIM"):
        assert column in text
    for name in ("study", "auto"):
        m = metrics_of(runs[name])
        for value in (f"{m['l1']:.3e}", f"{m['psnr']:.2f} dB", f"{m['ssim']:.6f}"):
            assert value in text
    kernel = metrics_of(runs["auto"])["kernel_error"]["max_abs"]
    assert f"{kernel:.3e}" in text
    images = page.images()
    assert len(images) == 3  # the overlaid loss curves, then each run's predictions
    assert images[1] == (runs["study"] / "predictions.png").read_bytes()
    assert images[2] == (runs["auto"] / "predictions.png").read_bytes()
    best = [
        attrs for tag, attrs in page.tags if tag == "td" and "best" in (attrs.get("class") or "")
    ]
    assert len(best) == 3  # the exact fit wins L1, PSNR and SSIM


def test_comparison_lists_runs_with_missing_files(runs, tmp_path):
    partial = copy_run(runs["study"], tmp_path / "partial")
    for name in ("history.csv", "model.safetensors", "state.pt", "predictions.png"):
        (partial / name).unlink()
    page = check_page(write_comparison_report([partial, runs["auto"]], tmp_path / "c.html"))
    assert "partial: missing history.csv (the loss history)" in page.text
    assert "No predictions figure." in page.text
    assert len(page.images()) == 2


def test_run_names_are_unique():
    runs = [read_run_stub(Path("a/run")), read_run_stub(Path("b/run")), read_run_stub(Path("c"))]
    assert unique_names(runs) == ["a/run", "b/run", "c"]


def read_run_stub(path: Path):
    from img2img_filters.report import RunFiles

    return RunFiles(path)


def test_read_run(runs):
    run = read_run(runs["auto"])
    assert run.filter_spec == "study-sobel" and run.arch == "linear" and run.method == "exact"
    assert run.missing == [] and run.notes == []
    assert len(run.train_losses) == len(run.val_losses) == 1
    assert list(run.figures)[:3] == ["losses.png", "predictions.png", "kernels.png"]


def test_loss_comparison_plot():
    fig = plot_loss_comparison(
        {"gradient": ([0.5, 0.2, 0.1, 0.05], [0.6, 0.25, 0.12, 0.06]), "exact": ([3e-8], [4e-8])}
    )
    ax = fig.axes[0]
    assert ax.get_yscale() == "log"
    assert ax.get_xlabel() == "Epoch" and "L1 loss" in ax.get_ylabel()
    assert ax.get_title() == "Loss curves of 2 runs"
    singles = [line for line in ax.get_lines() if len(line.get_xdata()) == 1]
    assert len(singles) == 2 and all(line.get_markersize() >= 8 for line in singles)
    assert [text.get_text() for text in fig.legends[0].get_texts()] == ["gradient", "exact"]
    styles = [text.get_text() for text in ax.get_legend().get_texts()]
    assert styles == ["validation", "training"]
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    width, height = fig.bbox.width, fig.bbox.height
    boxes = [
        ax.title.get_window_extent(renderer),
        ax.xaxis.label.get_window_extent(renderer),
        ax.yaxis.label.get_window_extent(renderer),
        fig.legends[0].get_window_extent(renderer),
    ]
    for box in boxes:  # everything inside the figure ...
        assert box.x0 >= -1 and box.y0 >= -1 and box.x1 <= width + 1 and box.y1 <= height + 1
    for i, box in enumerate(boxes):  # ... and no text on another
        assert not any(box.overlaps(other) for other in boxes[i + 1 :])
    assert not boxes[3].overlaps(ax.get_window_extent(renderer))  # the runs' legend is outside
    linear = plot_loss_comparison({"a": ([0.5, 0.4], None), "b": (None, [0.3, 0.2])})
    assert linear.axes[0].get_yscale() == "linear"
    with pytest.raises(ValueError, match="at least one run with losses"):
        plot_loss_comparison({"a": ([], [])})


def test_format_helpers():
    assert format_psnr(math.inf) == "∞ dB"
    assert format_psnr(31.234) == "31.23 dB"
    assert format_float(None, ".3e") == "—"
    assert format_float(math.nan, ".3e") == "NaN"
    assert format_float(-math.inf, ".1f") == "−∞"
    assert format_float(True, ".1f") == "—"
    assert format_seconds(3.21) == "3.2 s"
    assert format_seconds(125) == "2 min 05 s"
    assert format_seconds(7320) == "2 h 02 min"


# -- command line ------------------------------------------------------------------------------
def test_cli_rebuilds_and_compares(runs, tmp_path, capsys, monkeypatch):
    run = copy_run(runs["auto"], tmp_path / "copy")
    assert main(["report", str(run)]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {run / 'report.html'}"
    check_page(run / "report.html")
    out = tmp_path / "both.html"
    assert main(["report", str(runs["study"]), str(run), "-o", str(out), "--no-draw"]) == 0
    assert len(check_page(out).images()) == 3
    monkeypatch.chdir(tmp_path)
    assert main(["report", str(runs["study"]), str(run)]) == 0
    check_page(tmp_path / "comparison.html")


@pytest.mark.parametrize("kind", ["missing", "file", "empty"])
def test_cli_bad_path_is_one_line(tmp_path, capsys, kind):
    target = tmp_path / "target"
    if kind == "file":
        target.write_text("x")
    elif kind == "empty":
        target.mkdir()
    assert main(["report", str(target)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("img2img: error: ")
