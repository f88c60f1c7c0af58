"""Run folders filled with random JSON and CSV: every command works or fails in one line naming the file."""

from __future__ import annotations

import collections
import contextlib
import copy
import io
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from img2img_filters.cli import main

#: Examples per command, shared by its three files (``eval`` takes about a second each).
EXAMPLES = int(os.environ.get("IMG2IMG_FUZZ_EXAMPLES", "100"))
PER_FILE = -(-EXAMPLES // 3)
TINY = ["--data", "samples", "--filter", "study-sobel", "--arch", "study", "--limit", "8"]
TINY += ["--crop-size", "16", "--no-progress", "--device", "cpu"]
COMMANDS = {
    "resume": lambda run: ["train", "--resume", str(run), "--no-progress", "--device", "cpu"],
    "eval": lambda run: ["eval", str(run), "--device", "cpu"],
    "report": lambda run: ["report", str(run)],
}
FILES = ("config.json", "metrics.json", "history.csv")

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["samples", "study", "auto", "/", "..", "cpu", "max_epochs reached"]),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)


def _paths(record: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key path of a nested JSON object."""
    paths = []
    if isinstance(record, dict):
        for key, value in record.items():
            paths.append((*prefix, key))
            paths.extend(_paths(value, (*prefix, key)))
    return paths


@st.composite
def mutated(draw: st.DrawFn, original: dict[str, Any]) -> Any:
    """The real record with one to three fields replaced, removed or added."""
    record = copy.deepcopy(original)
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(record)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = record
        for key in path[:-1]:
            parent = parent[key]
        action = draw(st.sampled_from(["replace", "remove", "add"]))
        if action == "remove":
            del parent[path[-1]]
        elif action == "add" and isinstance(parent.get(path[-1]), dict):
            parent[path[-1]][draw(st.text(max_size=8))] = draw(json_values)
        else:
            parent[path[-1]] = draw(json_values)
    return record


def json_texts(original: dict[str, Any]) -> st.SearchStrategy[str]:
    """JSON text: a random value, or the real record mutated; sometimes not JSON at all."""
    values = st.one_of(json_values, mutated(original))
    return st.one_of(
        values.map(lambda v: json.dumps(v, allow_nan=True)),
        st.text(max_size=40),
    )


cells = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers().map(str),
    st.text(max_size=8),
)
csv_texts = st.one_of(
    st.text(max_size=80),
    st.builds(
        lambda header, rows: "\n".join([header, *(",".join(row) for row in rows)]) + "\n",
        st.sampled_from(
            ["epoch,train_loss,val_loss", "epoch,train_loss", "train_loss", "a,b,c", ""]
        ),
        st.lists(st.lists(cells, max_size=4), max_size=5),
    ),
)


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished one-epoch run of the study's network on 16x16 crops of the built-in photos."""
    out = tmp_path_factory.mktemp("runs") / "tiny"
    assert main(["train", *TINY, "--epochs", "1", "--out", str(out)]) == 0
    return out


def run_command(finished: Path, command: str, name: str, text: str) -> tuple[int, str]:
    with tempfile.TemporaryDirectory() as scratch:
        run = Path(shutil.copytree(finished, Path(scratch) / "run"))
        (run / name).write_text(text, encoding="utf-8")
        err, out = io.StringIO(), io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            code = main(COMMANDS[command](run))
    return code, err.getvalue()


def check(code: int, err: str, name: str, command: str) -> None:
    """Success, or one error line naming the file (resume may also refuse the finished run)."""
    assert "Traceback" not in err, err
    assert code in (0, 1), (code, err)
    if code == 1:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("img2img: error:"), err
        finished = command == "resume" and "is finished" in lines[0]
        assert name in lines[0] or finished, err


FUZZ = settings(
    max_examples=PER_FILE,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("name", FILES)
def test_random_run_files(finished: Path, command: str, name: str) -> None:
    original = {} if name == "history.csv" else json.loads((finished / name).read_text())
    texts = csv_texts if name == "history.csv" else json_texts(original)

    outcomes: collections.Counter[str] = collections.Counter()

    @FUZZ
    @given(text=texts)
    def one(text: str) -> None:
        code, err = run_command(finished, command, name, text)
        check(code, err, name, command)
        outcomes["worked" if code == 0 else "refused in one line"] += 1

    one()
    print(f"{command} with a random {name}: {dict(outcomes)}")  # shown with pytest -s
    assert sum(outcomes.values()) >= 1


def test_nan_and_huge_numbers_round_trip_through_the_checks() -> None:
    """The strategies do produce the values the checks must survive."""
    assert math.isnan(json.loads(json.dumps(float("nan"), allow_nan=True)))
    assert json.loads(json.dumps(10**40)) == 10**40
