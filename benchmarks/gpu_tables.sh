#!/usr/bin/env bash
# The README's GPU tables: benchmarks/guiders.py at SD1.5 size (batch 1 and 4) and SDXL size (batch 1), fp16, on one
# CUDA GPU, in about 8 minutes (20 euler steps, 15 interleaved rounds each). Writes docs/benchmark_guiders_gpu.md
# (and a copy under $OUT when that is set).
#
#   benchmarks/gpu_tables.sh                 # STEPS=20 ROUNDS=15 by default
#
# What the GPU machine needs: Python with a CUDA torch, a ComfyUI tree and ComfyUI's Python dependencies. A bare
# GPU machine (torch, numpy, ... but no network) lacks ComfyUI itself and at least torchsde (and its trampoline) and
# av (and pytest, which the benchmark's model builders in tests/support.py import). Bring them along as ignored folders of the checkout; a remote runner that copies the working tree plus named
# ignored paths (64 MiB in all) carries these two:
#   .host/ComfyUI   the ComfyUI tree (scripts/host.sh setup extracts ComfyUI 0.3.75 there; about 26 MB)
#   .host/wheels    wheels of what the machine lacks, made beforehand on a machine with network, e.g.
#                     pip download -d .host/wheels --only-binary=:all: --python-version 3.12 \
#                       --platform manylinux_2_28_x86_64 torchsde==0.2.6 trampoline==0.1.2 av==14.4.0 \
#                       pytest pluggy iniconfig
#                   (av is the big one, about 35 MB; match --python-version to the GPU machine's python3)
# e.g. with this project's device runner: carry [".host/ComfyUI", ".host/wheels"], command
# "benchmarks/gpu_tables.sh", timeout 600.
# Modules still missing are installed from .host/wheels into a throw-away venv that sees the system's packages
# (the system's CUDA torch stays the one used); nothing is downloaded.
set -euo pipefail

PACK_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$PACK_ROOT"
export COMFYUI_PATH="${COMFYUI_PATH:-$PACK_ROOT/.host/ComfyUI}"
WHEELS="${WHEELS:-$PACK_ROOT/.host/wheels}"
STEPS="${STEPS:-20}"
ROUNDS="${ROUNDS:-15}"
RESULT="${RESULT:-$PACK_ROOT/docs/benchmark_guiders_gpu.md}"
PY="${PYTHON:-python3}"

if [ ! -f "$COMFYUI_PATH/comfy/samplers.py" ]; then
  echo "no ComfyUI at $COMFYUI_PATH: bring the tree along (see this script's header)" >&2; exit 2
fi

missing=$("$PY" - <<'EOF'
import importlib.util
needed = ["torchsde", "trampoline", "av", "pytest", "scipy", "einops", "safetensors", "transformers", "tokenizers",
          "sentencepiece", "yaml", "PIL", "psutil", "tqdm", "aiohttp", "numpy", "matplotlib", "pydantic"]
print(" ".join(m for m in needed if importlib.util.find_spec(m) is None))
EOF
)
if [ -n "$missing" ]; then
  echo "[gpu_tables] missing: $missing; installing from $WHEELS" >&2
  [ -d "$WHEELS" ] || { echo "no $WHEELS (see this script's header)" >&2; exit 2; }
  VENV="${TMPDIR:-/tmp}/negguide-gpu-venv"
  "$PY" -m venv --system-site-packages "$VENV"
  "$VENV/bin/pip" install --quiet --no-index --find-links "$WHEELS" "$WHEELS"/*.whl
  PY="$VENV/bin/python"
fi
"$PY" -c 'import torch; assert torch.cuda.is_available(), "no CUDA device"; print(torch.cuda.get_device_name())'

parts=()
for config in "sd15 1" "sd15 4" "sdxl 1"; do
  set -- $config
  part="${TMPDIR:-/tmp}/negguide-gpu-$1-b$2.md"
  command="benchmarks/guiders.py --device cuda --model-size $1 --batch $2 --steps $STEPS --rounds $ROUNDS"
  echo "[gpu_tables] $command" >&2
  "$PY" $command --out "$part" --command "benchmarks/gpu_tables.sh ($command)" >/dev/null
  parts+=("$part")
done

{
  echo "# Negative Guidance against ComfyUI's own guiders on a GPU"
  echo
  echo "Made by \`benchmarks/gpu_tables.sh\` (STEPS=$STEPS, ROUNDS=$ROUNDS). Each section is one run of"
  echo "benchmarks/guiders.py; its header names the device."
  for part in "${parts[@]}"; do echo; sed 's/^# /## /' "$part"; done
} >"$RESULT"
if [ -n "${OUT:-}" ]; then cp "$RESULT" "$OUT/"; fi
echo "[gpu_tables] written to $RESULT" >&2
