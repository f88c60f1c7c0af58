"""Property tests: random filter specs, architecture options and command lines fail on one line.

Each call either succeeds or raises ``TypeError``/``ValueError`` (the command line: exits
with status 2 and one line on stderr) naming what was wrong; nothing else escapes, and no
example allocates more than the bounds of :mod:`img2img_filters.limits` allow.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import img2img_filters.cli.apply as cli_apply
import img2img_filters.cli.train as cli_train
from img2img_filters import create_img2img_model
from img2img_filters.cli import main
from img2img_filters.filters import create_filter, list_filters
from img2img_filters.models import list_archs

EXAMPLES = 200
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

#: Values of every kind that a spec, an option or an argument may carry.
numbers = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**30),
    st.integers(min_value=-3, max_value=40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([math.nan, math.inf, -math.inf, 1e308, 2.5, 0.0, 10**4000]),
)
values = st.one_of(
    numbers,
    st.booleans(),
    st.none(),
    st.text(max_size=12),
    st.sampled_from(["", "reflect", "nan", "é", "1e999", "[1, 2]", "true"]),
    st.lists(st.integers(min_value=0, max_value=5), max_size=3),
)


def _one_line(error: BaseException) -> str:
    text = str(error)
    assert text and "\n" not in text.strip(), repr(text)
    return text


@st.composite
def filter_specs(draw: st.DrawFn) -> str:
    entries = list_filters()
    stages = []
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        entry = draw(st.sampled_from(entries))
        params = [p.name for p in entry.params] or ["bogus"]
        items = [
            f"{draw(st.sampled_from(params))}={draw(st.one_of(numbers, values))}"
            for _ in range(draw(st.integers(min_value=0, max_value=3)))
        ]
        stages.append(entry.name + (":" + ",".join(items) if items else ""))
    return "|".join(stages)


@FUZZ
@given(spec=st.one_of(filter_specs(), st.text(max_size=30), values))
@example(spec="laplacian:scale=1e308")  # a finite number whose kernel overflows
@example(spec="gray|sharpen:amount=1e308")
def test_filter_specs_build_or_fail_on_one_line(spec: object) -> None:
    try:
        f = create_filter(spec, allow_files=False)
    except (TypeError, ValueError) as error:
        _one_line(error)
        return
    low, high = f.output_range
    assert math.isfinite(low) and math.isfinite(high)
    if f.linear:
        assert torch.isfinite(f.kernel).all()


_ARCH_OPTIONS = sorted({name for entry in list_archs() for name in entry.defaults} | {"bogus"})


@FUZZ
@given(
    arch=st.sampled_from([entry.name for entry in list_archs()]),
    options=st.dictionaries(st.sampled_from(_ARCH_OPTIONS), values, max_size=3),
)
def test_every_architecture_builds_or_fails_on_one_line(arch: str, options: dict) -> None:
    try:
        model = create_img2img_model(3, 1, arch, **options)
    except (TypeError, ValueError) as error:
        message = _one_line(error)
        assert any(name in message for name in options) or "parameters" in message, message
        return
    assert model.config["arch"] == arch


_TEXTS = st.one_of(
    st.sampled_from(["nan", "inf", "-1", "0", "1", "2.5", "99999999999999999999", "", "é", "1e9"]),
    st.integers(min_value=-(10**25), max_value=10**25).map(str),
    st.text(max_size=8),
)
_FLAGS = ["--seed", "--crop-size", "--batch-size", "--lr", "--epochs", "--patience", "--workers"]


@st.composite
def command_lines(draw: st.DrawFn) -> list[str]:
    argv = ["train", "--out", "unused-run", "--filter", draw(st.sampled_from(["gray", "median"]))]
    argv += ["--arch", draw(st.sampled_from(["auto", "linear", "can", "cann", "structured"]))]
    for flag in draw(st.lists(st.sampled_from(_FLAGS), max_size=3, unique=True)):
        argv += [flag, draw(_TEXTS)]
    for _ in range(draw(st.integers(min_value=0, max_value=2))):
        key = draw(st.sampled_from(_ARCH_OPTIONS))
        argv += ["--option", f"{key}={draw(_TEXTS)}"]
    return argv


@FUZZ
@given(argv=command_lines())
def test_train_arguments_are_checked_on_one_line_before_data_loads(
    argv: list[str], capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    reached = []
    monkeypatch.setattr(cli_train, "run", lambda args: reached.append(args) or 0)
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exit:
        code = exit.code
    err = capsys.readouterr().err
    if reached:
        assert code == 0 and err == ""
        return
    assert code == 2, (argv, err)
    assert err.startswith("img2img train: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err


@FUZZ
@given(tile=_TEXTS, batch=_TEXTS)
def test_apply_sizes_are_checked_on_one_line(
    tile: str, batch: str, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    reached = []
    monkeypatch.setattr(cli_apply, "run", lambda args: reached.append(args) or 0)
    capsys.readouterr()
    try:
        code = main(
            ["apply", "m.safetensors", "in.png", "-o", "out.png", "--tile", tile, "--batch", batch]
        )
    except SystemExit as exit:
        code = exit.code
    err = capsys.readouterr().err
    if reached:
        assert code == 0 and 1 <= reached[0].tile <= 16384 and 1 <= reached[0].batch <= 65536
        return
    assert (
        code == 2 and err.startswith("img2img apply: error: argument --") and err.count("\n") == 1
    )
