"""The prepared GPU check runs its own code on the CPU, so a GPU machine is not spent on a typo."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_runs_its_checks_on_the_cpu(tmp_path: Path) -> None:
    command = [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--device", "cpu"]
    command += ["--only", "targets", "gauss-newton", "onnx-cuda", "--out", str(tmp_path)]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr[-2000:]
    record = json.loads((tmp_path / "gpu_check.json").read_text())
    checks = record["checks"]
    assert checks["targets"]["ok"] is True
    assert set(checks["targets"]["filters"]) == {
        "study-sobel",
        "gaussian:ksize=5",
        "laplacian:ksize=3",
    }
    assert checks["gauss-newton"]["ok"] is True
    assert checks["onnx-cuda"]["ok"] is None  # the CUDA provider is only checked on a GPU
    assert "| targets | ok |" in (tmp_path / "gpu_check.md").read_text()


def test_gpu_check_script_is_executable_bash() -> None:
    script = ROOT / "benchmarks" / "gpu_check.sh"
    assert script.stat().st_mode & 0o111
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
