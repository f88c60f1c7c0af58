"""Packaging: the distribution's name and metadata, one version, install hints that install img2img.

The name ``img2img`` on PyPI is another project's, so img2img is distributed as
``img2img-filters``; every hint must name that (or a source checkout's ``-e .``).
"""

from __future__ import annotations

import importlib.metadata
import importlib.resources
import importlib.util
import re
import sys
from pathlib import Path

import pytest

import img2img_filters

ROOT = Path(__file__).resolve().parents[1]
DIST_NAME = "img2img-filters"
#: ``pip install img2img``, ``pip install 'img2img[export]'`` and the like: the other project.
WRONG_HINT = re.compile(r"""pip install\s+(?:-U\s+|--upgrade\s+)?["']?img2img(?![\w-])""")

if sys.version_info >= (3, 11):
    import tomllib
else:  # the standard library's TOML reader is 3.11+ (the dev extra installs tomli before)
    import tomli as tomllib


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def _installed() -> importlib.metadata.Distribution:
    try:
        return importlib.metadata.distribution(DIST_NAME)
    except importlib.metadata.PackageNotFoundError:
        pytest.fail(f"{DIST_NAME} is not installed; install it with pip install -e '.[dev]'")


def test_the_distribution_name_is_ours() -> None:
    assert img2img_filters.DIST_NAME == DIST_NAME == _pyproject()["project"]["name"]
    assert _installed().metadata["Name"] == DIST_NAME


def test_installed_metadata_declares_pillow() -> None:
    requires = _installed().requires or []
    names = {
        re.split(r"[\s<>=!~;\[]", r, maxsplit=1)[0].lower() for r in requires if "extra" not in r
    }
    assert "pillow" in names, requires


def test_one_version_string() -> None:
    assert img2img_filters.__version__ == importlib.metadata.version(DIST_NAME)
    assert img2img_filters.__version__ == _pyproject()["project"]["version"]
    source = (ROOT / "src" / "img2img_filters" / "__init__.py").read_text(encoding="utf-8")
    assert _pyproject()["project"]["version"] not in source


def test_typed_and_the_extras() -> None:
    assert importlib.resources.files("img2img_filters").joinpath("py.typed").is_file()
    project = _pyproject()
    assert project["tool"]["setuptools"]["package-data"]["img2img_filters"] == [
        "py.typed",
        "report/templates/*.j2",
        "report/templates/*.css",
    ]
    extras = project["project"]["optional-dependencies"]
    assert f"{DIST_NAME}[export,notebook]" in extras["dev"]
    copied = set(extras["dev"]) & (set(extras["export"]) | set(extras["notebook"]))
    assert not copied, f"dev copies {sorted(copied)} instead of naming the extras"
    assert any(r.startswith("ipywidgets") for r in extras["notebook"])
    scripts = project["project"]["scripts"]
    assert scripts["img2img-filters"] == scripts["img2img"] == "img2img_filters.cli:main"


def test_project_urls_name_our_distribution() -> None:
    declared = _pyproject()["project"]["urls"]
    assert {"Homepage", "Documentation"} <= set(declared)
    for url in declared.values():
        assert url.startswith("https://") and f"/{DIST_NAME}/" in url, url
    installed = _installed().metadata.get_all("Project-URL") or []
    assert sorted(installed) == sorted(f"{key}, {url}" for key, url in declared.items())


def test_no_hint_installs_the_other_project() -> None:
    files = [ROOT / "README.md", ROOT / "Makefile", *sorted((ROOT / "src").rglob("*.py"))]
    files += sorted((ROOT / "docs").rglob("*.md")) + sorted((ROOT / "examples").rglob("*.ipynb"))
    wrong = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in files
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if WRONG_HINT.search(line)
    ]
    assert wrong == []
    assert WRONG_HINT.search("pip install 'img2img[export]'")
    assert WRONG_HINT.search("pip install img2img")
    assert not WRONG_HINT.search("pip install 'img2img-filters[export]'")


def test_no_name_collides_with_the_pypi_project_img2img() -> None:
    """PyPI's ``img2img`` (an image-format converter) installs a top-level ``img2img`` package."""
    assert importlib.util.find_spec("img2img") is None  # ours imports as img2img_filters
    assert importlib.util.find_spec("img2img_filters") is not None
    scripts = _pyproject()["project"]["scripts"]
    assert not {"jpg2png", "png2jpg", "jpg2ico", "ico2jpg", "png2ico", "ico2png"} & set(scripts)
