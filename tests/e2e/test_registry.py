"""Comfy Registry packaging: `comfy node validate` (comfy-cli, in its own venv) must pass without warnings."""

from __future__ import annotations

import subprocess
import tomllib

import pytest

from e2e.comfy_server import PACK_ROOT

COMFY_CLI = PACK_ROOT / ".host" / "comfy-cli-venv" / "bin" / "comfy"


def test_comfy_node_validate_passes_without_warnings():
    if not COMFY_CLI.exists():
        pytest.fail(f"{COMFY_CLI} is missing: scripts/setup_e2e.sh installs comfy-cli")
    result = subprocess.run([str(COMFY_CLI), "--skip-prompt", "--no-enable-telemetry", "node", "validate"],
                            cwd=PACK_ROOT, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    output = result.stdout + result.stderr
    # comfy-cli exits 0 on most problems: its words are the verdict.
    assert result.returncode == 0, output
    assert "Warning" not in output, output
    assert "Security warnings" not in output, output
    assert "All validation checks passed" in output, output


def test_registry_metadata():
    project = tomllib.loads((PACK_ROOT / "pyproject.toml").read_text())
    assert project["project"]["name"] == "comfyui-negative-guidance"
    assert project["project"]["license"] == {"file": "LICENSE"}
    assert "GNU GENERAL PUBLIC LICENSE" in (PACK_ROOT / "LICENSE").read_text()[:200]
    comfy = project["tool"]["comfy"]
    for key in ("PublisherId", "DisplayName", "Icon", "requires-comfyui"):
        assert key in comfy
    # ComfyUI-Manager installs requirements.txt; the registry reads [project].dependencies: keep them equal.
    requirements = [line.strip() for line in (PACK_ROOT / "requirements.txt").read_text().splitlines()
                    if line.strip() and not line.startswith("#")]
    assert requirements == project["project"]["dependencies"]


def test_comfyignore_keeps_tests_and_dev_files_out():
    ignored = {line.strip() for line in (PACK_ROOT / ".comfyignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    assert {"tests/", "scripts/", ".host/", ".venv-host/", "node_modules/", "out/"} <= ignored
