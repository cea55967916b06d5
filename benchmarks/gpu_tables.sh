#!/usr/bin/env bash
# The README's GPU tables: benchmarks/guiders.py at SD1.5 size (batch 1 and 4) and SDXL size (batch 1), fp16, on one
# CUDA GPU (20 euler steps, ROUNDS interleaved rounds each). Writes docs/benchmark_guiders_gpu.md (and, when $OUT is
# set, each finished part and the result under $OUT). With ROUNDS=7 it took 7 min 20 s on an H100, install included.
#
#   benchmarks/gpu_tables.sh                 # STEPS=20 ROUNDS=15 by default
#   benchmarks/gpu_tables.sh --slim-tree D   # copy .host/ComfyUI to D without tests, temp files, tokenizer data
#
# What the GPU machine needs: Python with a CUDA torch, a ComfyUI tree and ComfyUI's Python dependencies. A bare
# GPU machine (torch, numpy, pytest, ... but no network) lacks ComfyUI itself, torchsde (and its trampoline) and av.
# Bring them along as ignored folders of the checkout. How the README's run was made (a runner that copies the
# working tree plus named ignored paths, 64 MiB in all):
#   benchmarks/gpu_tables.sh --slim-tree .host/gpu/ComfyUI          # 6 MB instead of 30
#   pip download -d .host/wheels --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 torchsde==0.2.6 trampoline==0.1.2 av==18.1.0     # av is 35 MB
#   carry [".host/gpu", ".host/wheels"]; there:
#   COMFYUI_PATH=$PWD/.host/gpu/ComfyUI ROUNDS=7 benchmarks/gpu_tables.sh
# (match --python-version to the GPU machine's python3.)
set -euo pipefail

PACK_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$PACK_ROOT"

if [ "${1:-}" = "--slim-tree" ]; then
  mkdir -p "${2:?--slim-tree DEST}"
  dest=$(cd "$2" && pwd)
  # Python sources and small files only: the benchmark's models need no tokenizer data, tests or temp files.
  (cd .host/ComfyUI && find . \( -path ./temp -o -path ./tests -o -path ./tests-unit -o -name __pycache__ \) -prune \
     -o -type f \( -name '*.py' -o -size -200k \) -print0 | tar --null -T - -cf - | tar -xf - -C "$dest")
  du -sh "$dest"; exit 0
fi
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
          "sentencepiece", "yaml", "PIL", "psutil", "tqdm", "aiohttp", "numpy", "matplotlib"]
print(" ".join(m for m in needed if importlib.util.find_spec(m) is None))
EOF
)
if [ -n "$missing" ]; then
  echo "[gpu_tables] missing: $missing; installing from $WHEELS" >&2
  [ -d "$WHEELS" ] || { echo "no $WHEELS (see this script's header)" >&2; exit 2; }
  # Into a folder on PYTHONPATH, not a venv: the machine's python3 may itself be a venv, whose packages (the CUDA
  # torch) a --system-site-packages venv made from it would not see.
  SITE="${TMPDIR:-/tmp}/negguide-gpu-site"
  "$PY" -m pip install --quiet --no-index --no-deps --no-compile --upgrade --target "$SITE" "$WHEELS"/*.whl
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
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
  # Each finished part at once, so that a run stopped by a time limit still returns what it measured.
  if [ -n "${OUT:-}" ]; then cp "$part" "$OUT/"; fi
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
