"""The command line when its output pipe closes early: quiet, no BrokenPipeError."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _env() -> dict[str, str]:
    path = os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path}


def test_a_closed_pipe_ends_the_command_quietly() -> None:
    # The reader closes its end before the command has written anything (the
    # interpreter is still starting), so every write meets a closed pipe.
    process = subprocess.Popen(
        [sys.executable, "-m", "img2img_filters", "filters"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(),
    )
    process.stdout.close()
    stderr = process.stderr.read().decode()
    status = process.wait(timeout=120)
    assert stderr == ""
    assert status == 141


def test_head_reads_the_first_line() -> None:
    done = subprocess.run(
        f"{sys.executable} -m img2img_filters filters | head -1",
        shell=True,
        capture_output=True,
        text=True,
        env=_env(),
        timeout=120,
    )
    assert done.returncode == 0 and done.stderr == ""
    assert len(done.stdout.splitlines()) == 1 and done.stdout.strip()
