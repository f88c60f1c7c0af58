#!/usr/bin/env bash
# One prepared run of every CUDA path and the three speed benchmarks, on one GPU, in under 8 minutes.
# Runs cold on a bare machine: uses the machine's own Python with PyTorch (no download), puts the
# checkout's src/ on the path, and installs nothing else when the dependencies are already there;
# otherwise it installs the package (with its dependencies) into a fresh virtual environment.
# Writes benchmarks/results/gpu_check.{md,json} (or $OUT/ when set) and the benchmarks' own tables.
#   usage: bash benchmarks/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-benchmarks/results}"
mkdir -p "$out"
python="${PYTHON:-python3}"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 MPLBACKEND=Agg
if ! "$python" -c "import torch, cv2, skimage, safetensors, seaborn, tqdm, PIL" 2>/dev/null; then
  "$python" -m venv /tmp/img2img-gpu && python=/tmp/img2img-gpu/bin/python
  "$python" -m pip install -q torch && "$python" -m pip install -q -e ".[export]" || exit 1
fi
"$python" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
status=0
timeout 300 "$python" benchmarks/gpu_check.py --out "$out" || status=1
timeout 60 "$python" benchmarks/target_speed.py --small --device cuda --out "$out" || status=1
timeout 60 "$python" benchmarks/infer_speed.py --small --threads 16 --out "$out" || status=1
timeout 90 "$python" benchmarks/train_speed.py --small --threads 16 --out "$out" || status=1
exit $status
