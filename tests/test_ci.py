"""``.ci/run``: fails on pytest's "no tests" and on a skip for any reason but no CUDA or Chromium.

``make`` and ``chromium`` are stand-ins on ``PATH``: the stand-in ``make`` writes the
JUnit report that ``make test PYTEST_ARGS=--junitxml=...`` would, then exits with the
status pytest would.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

FAKE_MAKE = """#!/usr/bin/env bash
for arg in "$@"; do
    case "$arg" in PYTEST_ARGS=--junitxml=*) report="${arg#PYTEST_ARGS=--junitxml=}" ;; esac
done
printf '%s' "$FAKE_JUNIT" > "$report"
exit "$FAKE_STATUS"
"""


def _junit(*skips: str, passed: int = 2) -> str:
    cases = [f'<testcase classname="tests.test_a" name="test_{i}"/>' for i in range(passed)]
    cases += [
        f'<testcase classname="tests.test_b" name="test_skip_{i}">'
        f'<skipped type="pytest.skip" message="{reason}">tests/test_b.py:3: {reason}</skipped>'
        "</testcase>"
        for i, reason in enumerate(skips)
    ]
    return f'<testsuites><testsuite name="pytest">{"".join(cases)}</testsuite></testsuites>'


def _ci(tmp_path: Path, junit: str, status: int = 0) -> subprocess.CompletedProcess[str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(parents=True)
    for name, text in (("make", FAKE_MAKE), ("chromium", "#!/bin/sh\nexit 0\n")):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "FAKE_JUNIT": junit,
        "FAKE_STATUS": str(status),
    }
    return subprocess.run(
        ["bash", str(ROOT / ".ci" / "run")], env=env, capture_output=True, text=True, timeout=60
    )


def test_allowed_skips_pass_and_are_counted(tmp_path: Path) -> None:
    done = _ci(tmp_path, _junit("no CUDA device", "Chromium is not installed"))
    assert done.returncode == 0, done.stderr
    assert "ci: 4 tests, 2 skipped" in done.stdout
    assert "skipped tests.test_b::test_skip_0: no CUDA device" in done.stdout


@pytest.mark.parametrize(
    "reason", ["the mini Tiny ImageNet is not at /x", "could not import 'nbformat'", ""]
)
def test_other_skips_fail(tmp_path: Path, reason: str) -> None:
    done = _ci(tmp_path, _junit("no CUDA device", reason))
    assert done.returncode == 1
    assert "ci: 4 tests, 2 skipped" in done.stdout
    assert "1 tests skipped for a reason other than no CUDA or no Chromium" in done.stderr


def test_no_tests_fails(tmp_path: Path) -> None:
    done = _ci(tmp_path, _junit(passed=0), status=5)
    assert done.returncode == 1
    assert "pytest collected no tests (exit code 5)" in done.stderr
    empty = _ci(tmp_path / "again", _junit(passed=0), status=0)
    assert empty.returncode == 1 and "the report holds no tests" in empty.stderr


def test_failing_tests_fail(tmp_path: Path) -> None:
    done = _ci(tmp_path, _junit(), status=1)
    assert done.returncode == 1 and "make test failed (exit code 1)" in done.stderr
