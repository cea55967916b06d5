#!/usr/bin/env bash
# What the end-to-end tests need beside the host venv (scripts/host.sh test runs this before pytest):
#   - Debian's chromium at /usr/bin/chromium (never a downloaded browser build: none can be fetched here),
#   - playwright-core from the npm registry into ./node_modules (pinned by package-lock.json),
#   - comfy-cli in a venv of its own (its dependencies must not touch the host venv's pins).
# Idempotent: each part is skipped when it is already there, so a second run takes about a second.
set -euo pipefail

PACK_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
COMFY_CLI_VENV="$PACK_ROOT/.host/comfy-cli-venv"
COMFY_CLI_PIN="comfy-cli==1.23.0"

log() { printf '[e2e-setup] %s\n' "$*" >&2; }

install_chromium() {
  [ -x /usr/bin/chromium ] && return
  log "installing Debian's chromium"
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
}

install_node_packages() {
  local stamp="$PACK_ROOT/node_modules/.negguide-lock-sha1"
  local wanted
  wanted=$(sha1sum <"$PACK_ROOT/package-lock.json")
  [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$wanted" ] && return
  log "npm ci (playwright-core)"
  # PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD: playwright-core downloads nothing, but say so in case a later version does.
  (cd "$PACK_ROOT" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)
  echo "$wanted" >"$stamp"
}

install_comfy_cli() {
  local stamp="$COMFY_CLI_VENV/.negguide-ready"
  [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$COMFY_CLI_PIN" ] && return
  log "creating $COMFY_CLI_VENV with $COMFY_CLI_PIN"
  rm -rf "$COMFY_CLI_VENV"
  "${PYTHON:-python3}" -m venv "$COMFY_CLI_VENV"
  # (this machine's pip configuration names local wheel folders that may be absent: drop those notices)
  "$COMFY_CLI_VENV/bin/pip" install --quiet --disable-pip-version-check "$COMFY_CLI_PIN" 2>&1 \
    | { grep -v "^WARNING: Location" || true; }
  echo "$COMFY_CLI_PIN" >"$stamp"
}

install_chromium
install_node_packages
install_comfy_cli
log "ready"
