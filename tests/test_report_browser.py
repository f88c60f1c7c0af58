"""Reports in a real browser: headless Chromium loads every image, logs no error, fits 1280 px.

Chromium is driven from its command line: a copy of the page gets a small script
(first in its head) that records console errors and failed loads, waits for the
page to load, measures it and writes the results into the DOM as JSON, which
``--dump-dom`` prints. A screenshot of each page is kept under ``tests/artifacts/``.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from img2img_filters.report import write_comparison_report
from img2img_filters.runs import DataConfig, ModelConfig, train_run

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed")

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
WIDTH = 1280
RESULT_ID = "img2img-browser-check"

#: Runs first in the page: records errors, then measures the loaded page into the DOM.
PROBE = """
<script>
(() => {
  const errors = [];
  const original = console.error;
  console.error = (...args) => { errors.push("console.error: " + args.join(" ")); original(...args); };
  window.addEventListener("error", (event) => {
    const target = event.target;
    errors.push(target && target !== window
      ? "failed to load <" + target.tagName.toLowerCase() + ">"
      : "uncaught: " + event.message);
  }, true);
  window.addEventListener("unhandledrejection", (event) => errors.push("rejection: " + event.reason));
  window.addEventListener("load", () => {
    const images = [...document.images].map((img) => ({
      alt: img.alt, loaded: img.complete && img.naturalWidth > 0, width: img.naturalWidth,
      shown: img.getBoundingClientRect().width,
    }));
    const root = document.documentElement;
    const wide = [...document.querySelectorAll("body *")]
      .filter((e) => e.getBoundingClientRect().right > window.innerWidth + 0.5)
      .filter((e) => !e.closest(".table-box"))
      .map((e) => e.tagName.toLowerCase() + (e.className ? "." + e.className : ""));
    const boxes = [...document.querySelectorAll(".table-box")]
      .filter((e) => e.scrollWidth > e.clientWidth + 1)
      .map((e) => e.textContent.trim().slice(0, 80));
    let zoom = null;
    const toggle = document.querySelector(".zoom input");
    if (toggle) {
      toggle.checked = true;
      const img = toggle.nextElementSibling;
      const box = img.getBoundingClientRect();
      zoom = { position: getComputedStyle(img).position, width: box.width, height: box.height };
      toggle.checked = false;
    }
    const out = document.createElement("pre");
    out.id = "%s";
    out.textContent = JSON.stringify({
      errors, images, zoom, wide, boxes,
      innerWidth: window.innerWidth, scrollWidth: root.scrollWidth, clientWidth: root.clientWidth,
      links: [...document.querySelectorAll("a[href]")].map((a) => a.getAttribute("href")),
    });
    document.body.appendChild(out);
  });
})();
</script>
""".replace("%s", RESULT_ID)


def chromium(*arguments: str, profile: Path) -> subprocess.CompletedProcess[str]:
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",  # the tests may run as root in a container
        "--disable-gpu",
        "--disable-extensions",
        "--no-first-run",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        *arguments,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def check_in_browser(page: Path, tmp_path: Path, screenshot: str) -> dict:
    """Load ``page`` in Chromium at 1280 px; its measurements, and a screenshot kept."""
    text = page.read_text(encoding="utf-8")
    probed = tmp_path / f"probed-{page.name}"
    probed.write_text(text.replace("<head>", "<head>" + PROBE, 1), encoding="utf-8")
    done = chromium(
        f"--window-size={WIDTH},900",
        "--virtual-time-budget=5000",
        "--dump-dom",
        probed.as_uri(),
        profile=tmp_path / "profile",
    )
    found = re.search(rf'<pre id="{RESULT_ID}">(.*?)</pre>', done.stdout, re.S)
    assert found, f"the page's measurements are missing; chromium said: {done.stderr[-2000:]}"
    result = json.loads(
        found.group(1).replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    )
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / screenshot
    shot.unlink(missing_ok=True)
    chromium(
        f"--window-size={WIDTH},3000",
        f"--screenshot={shot}",
        page.as_uri(),
        profile=tmp_path / "profile",
    )
    assert shot.is_file() and shot.read_bytes().startswith(b"\x89PNG"), "no screenshot"
    return result


def assert_sound(result: dict, images: int) -> None:
    assert result["errors"] == []
    assert len(result["images"]) == images
    for image in result["images"]:
        assert image["loaded"], image["alt"]
        assert image["shown"] >= min(image["width"], 400), image  # not shrunk to a stamp
    assert result["innerWidth"] == WIDTH
    assert result["scrollWidth"] <= result["clientWidth"] == WIDTH  # no horizontal scroll
    assert result["wide"] == []  # nothing sticks out of the window ...
    assert result["boxes"] == []  # ... and no table needs a scroll bar of its own
    zoom = result["zoom"]  # a click enlarges a figure to the window
    assert zoom["position"] == "fixed" and zoom["width"] == WIDTH


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """A short L1 run of the study's network and a short MSE run on another filter."""
    root = tmp_path_factory.mktemp("browser-runs")
    options = {"max_epochs": 2, "progress": False, "device": "cpu"}
    study = train_run(
        root / "study",
        DataConfig(data="samples", filter="study-sobel", limit=64),
        ModelConfig(arch="study"),
        options,
        log=lambda _: None,
    )
    mse = train_run(
        root / "mse",
        DataConfig(data="samples", filter="gaussian:ksize=3", limit=64),
        ModelConfig(arch="study"),
        {**options, "loss": "mse"},
        log=lambda _: None,
    )
    return {"study": study.folder, "mse": mse.folder}


def test_run_report_in_a_browser(runs, tmp_path):
    result = check_in_browser(runs["study"] / "report.html", tmp_path, "run-report.png")
    # losses, predictions, the validation photo (a non-linear model: no kernels)
    assert_sound(result, images=3)


def test_comparison_report_in_a_browser(runs, tmp_path):
    page = write_comparison_report([runs["study"], runs["mse"]], tmp_path / "compare.html")
    result = check_in_browser(page, tmp_path, "comparison-report.png")
    assert_sound(result, images=3)  # the loss curves, each run's predictions
    for name in ("study", "mse"):  # each run's own page is linked and exists
        href = next(link for link in result["links"] if link.endswith(f"{name}/report.html"))
        assert (page.parent / href).resolve() == (runs[name] / "report.html").resolve()
