"""benchmarks/operators.py: third-party operators, probed, learnt and certified; well-formed tables."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from skimage import filters

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def operators() -> ModuleType:
    """The benchmark script, imported as a module."""
    return _load("operators")


def test_the_full_run_covers_twelve_operators_of_four_tools(operators: ModuleType) -> None:
    third_party = sys.modules["third_party"]
    names = [op.name for op in third_party.OPERATORS]
    assert len(names) >= 12 and len(set(names)) == len(names)
    assert {op.tool for op in third_party.OPERATORS} == {
        "ImageMagick",
        "Pillow",
        "scikit-image",
        "OpenCV",
    }
    assert {op.kind for op in third_party.OPERATORS} == set(operators.TARGETS)
    commands = [op.teacher for op in third_party.OPERATORS if isinstance(op.teacher, str)]
    assert all(c.startswith("cmd:convert {in} ") and c.endswith(" {out}") for c in commands)
    args = operators.parse_args([])
    assert (args.budget, args.limit, len(args.operators)) == (180.0, 1000, len(names))
    small = operators.parse_args(["--small"])
    assert (small.budget, small.limit) == (10.0, 24)
    assert [op.name for op in small.operators] == third_party.SMALL_OPERATORS
    with pytest.raises(SystemExit):
        operators.parse_args(["--operator", "no-such-operator"])


def test_callables_map_uint8_photos_to_uint8_photos(operators: ModuleType) -> None:
    third_party = sys.modules["third_party"]
    photo = np.random.default_rng(0).integers(0, 256, (48, 48, 3), dtype=np.uint8)
    for op in third_party.OPERATORS:
        if callable(op.teacher):
            output = op.teacher(photo.copy())
            assert output.dtype == np.uint8 and output.shape == photo.shape, op.name
            assert 0 < output.mean() < 255, op.name  # not saturated by a wrong range


def test_unsharp_mask_is_scikit_images_in_the_unit_range(operators: ModuleType) -> None:
    third_party = sys.modules["third_party"]
    photo = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    got = third_party.sk_unsharp(photo)
    for c in range(3):
        channel = np.ascontiguousarray(photo[..., c] / 255.0)
        expected = filters.unsharp_mask(channel, radius=2, amount=1.0)
        assert expected.min() >= 0.0 and expected.max() <= 1.0
        assert np.abs(got[..., c] / 255.0 - expected).max() <= 0.5 / 255 + 1e-12


def test_missing_tools_are_named(operators: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    third_party = sys.modules["third_party"]
    monkeypatch.setattr(third_party.shutil, "which", lambda program: None)
    assert third_party.missing_tools(third_party.OPERATORS) == ["convert"]
    callables = [op for op in third_party.OPERATORS if op.program is None]
    assert third_party.missing_tools(callables) == []


def test_small_run_writes_markdown_and_json(
    operators: ModuleType, mini_root: Path, tmp_path: Path
) -> None:
    operators.main(["--small", "--budget", "2", "--root", str(mini_root), "--out", str(tmp_path)])

    result = json.loads((tmp_path / "operators.json").read_text())
    assert result["config"]["budget"] == 2 and result["config"]["train_images"] == 24
    rows = {row["operator"]: row for row in result["rows"]}
    assert list(rows) == sys.modules["third_party"].SMALL_OPERATORS
    for row in rows.values():
        for side in ("auto", "study"):
            assert set(operators.CERTIFICATE_KEYS) <= set(row[side])
            assert 0.0 <= row[side]["exact_share"] <= 1.0
        assert row["study"]["arch"] == "study" and row["channels"] == 3
        photos = result["config"]["train_images"] + result["config"]["val_images"]
        assert row["teacher_throughput"]["photos"] == photos
        assert row["probe_line"].startswith(f"probe: {row['verdict']}")
        assert isinstance(row["target"]["met"], bool)
    assert rows["pil-gaussian"]["verdict"] == "linear"
    assert rows["pil-gaussian"]["auto"]["method"] == "exact"
    assert rows["sk-gamma"]["verdict"] == "pointwise"
    assert rows["pil-contour"]["verdict"] == "local"
    # Pillow's CONTOUR is a 3x3 kernel clipped to 8 bits, its outer ring left as it was
    assert rows["pil-contour"]["auto"]["arch"] == "clipped_linear"
    assert rows["pil-contour"]["auto"]["exact_share"] == 1.0

    markdown = (tmp_path / "operators.md").read_text()
    header = next(line for line in markdown.splitlines() if line.startswith("| operator"))
    for column in operators.HEADER:
        assert f"| {column} |" in header
    table = [line for line in markdown.splitlines() if line.startswith("| `")]
    assert len(table) == 3
    assert all(line.count("|") == header.count("|") for line in table)


def test_update_runs_some_operators_again_and_keeps_the_rest(
    operators: ModuleType, mini_root: Path, tmp_path: Path
) -> None:
    common = ["--budget", "2", "--limit", "24", "--root", str(mini_root), "--out", str(tmp_path)]
    operators.main(["--operator", "pil-gaussian", "--operator", "sk-gamma", *common])
    before = json.loads((tmp_path / "operators.json").read_text())
    operators.main(["--update", "--operator", "sk-gamma", *common])
    after = json.loads((tmp_path / "operators.json").read_text())
    assert [row["operator"] for row in after["rows"]] == ["pil-gaussian", "sk-gamma"]
    assert after["rows"][0] == before["rows"][0]  # not run again
    assert after["config"]["rerun"].startswith("sk-gamma: run again on ")
    assert "Run again: sk-gamma: run again on " in (tmp_path / "operators.md").read_text()
    with pytest.raises(SystemExit, match="budget differs"):
        operators.main(["--update", "--operator", "sk-gamma", *common[:-6], "--budget", "3",
                        "--limit", "24", "--root", str(mini_root), "--out", str(tmp_path)])  # fmt: skip


def test_merged_says_which_rows_were_run_again_and_which_were_added(
    operators: ModuleType,
) -> None:
    config = {"budget": 5, "train_images": 8, "val_images": 2, "root_name": "mini"}
    previous = {
        "config": {**config, "date": "d0", "load_average": 1.0},
        "rows": [{"operator": "a", "v": 0}, {"operator": "b", "v": 0}],
        "failed": [],
    }
    update = {
        "config": {**config, "date": "d1", "load_average": 2.5},
        "rows": [{"operator": "b", "v": 1}, {"operator": "c", "v": 1}],
        "failed": [],
    }
    merged = operators._merged(previous, update)
    assert merged["rows"] == [
        {"operator": "a", "v": 0},
        {"operator": "b", "v": 1},
        {"operator": "c", "v": 1},
    ]
    assert merged["config"]["rerun"] == (
        "b: run again; c: added on d1 with the same budget and photos (load average 2.5)"
    )
    assert merged["config"]["date"] == "d0"  # the table's own run


def test_on_photos_called_defined_opencvs_normalised_convolution_is_the_filter(
    operators: ModuleType,
) -> None:
    import cv2
    import torch
    from skimage import data

    from img2img_filters.models import create_img2img_model

    defined = sys.modules["third_party"].opencv_normalised_convolution_defined
    model = create_img2img_model(
        3, 3, "domain_transform", transform="normalised", sigma_s=60.0, sigma_r=0.45
    )
    for name in ("astronaut", "coffee", "chelsea"):
        photo = np.ascontiguousarray(getattr(data, name)()[:64, :64])
        assert defined(photo)
        x = torch.from_numpy(photo).permute(2, 0, 1)[None].float() / 255
        with torch.no_grad():
            filtered = np.round(model(x)[0].permute(1, 2, 0).numpy() * 255)
        bgr = cv2.edgePreservingFilter(
            np.ascontiguousarray(photo[..., ::-1]), flags=cv2.NORMCONV_FILTER, sigma_s=60,
            sigma_r=0.45,
        )  # fmt: skip
        assert (np.abs(filtered - bgr[..., ::-1]) <= 1).mean() > 0.999
    # The retina photo's black corner: rows whose whole transformed length is within the first
    # window. There OpenCV reads a window's sums from outside them: its output is undefined.
    corner = np.ascontiguousarray(data.retina()[:64, :64])
    across = 1 + (60 / 0.45) * np.abs(np.diff(corner / 255.0, axis=1)).sum(axis=2)
    assert across.sum(axis=1).min() <= 3 * 60 * 4 / np.sqrt(63)
    assert not defined(corner)


def test_a_tool_defined_on_some_photos_is_also_certified_on_those(
    operators: ModuleType, mini_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dataclasses

    third_party = sys.modules["third_party"]
    calls = iter(range(10**6))

    def every_other(photo: np.ndarray) -> bool:  # a tool "defined" on every other photo
        return next(calls) % 2 == 0

    partly = [
        dataclasses.replace(op, defined=every_other) if op.name == "sk-gamma" else op
        for op in third_party.OPERATORS
    ]
    monkeypatch.setattr(operators, "OPERATORS", partly)
    argv = ["--small", "--budget", "2", "--operator", "sk-gamma", "--root", str(mini_root)]
    operators.main([*argv, "--out", str(tmp_path)])
    result = json.loads((tmp_path / "operators.json").read_text())
    defined = result["rows"][0]["defined"]
    assert defined["of"] == result["config"]["val_images"] >= 2
    assert defined["photos"] == (defined["of"] + 1) // 2
    for side in ("auto", "study"):
        assert set(operators.CERTIFICATE_KEYS) <= set(defined[side])
    markdown = (tmp_path / "operators.md").read_text()
    assert f"- `sk-gamma`: defined on {defined['photos']} of {defined['of']} validation" in markdown
