"""What the Comfy Registry and ComfyUI-Manager ship (the repository minus .comfyignore) must be a consistent set:
no shipped code imports what is not shipped, and every image or page a shipped document links to is shipped."""

import ast
import fnmatch
import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Modules that live only in unshipped folders (tests/ is on pytest's pythonpath, so they import as top-level names).
UNSHIPPED_MODULES = {"tests", "support", "compat_support", "benchmarks", "scripts"}


def ignored(path: str, patterns: list[str]) -> bool:
    """.comfyignore's gitignore-style patterns as used there: 'folder/' anywhere in the path, or a glob on the
    whole path (no '/' crossing)."""
    parts = path.split("/")
    for pattern in patterns:
        if pattern.endswith("/"):
            if pattern.rstrip("/") in parts[:-1]:
                return True
        elif re.fullmatch(fnmatch.translate(pattern).replace(".*", "[^/]*"), path) or (
                "/" not in pattern and fnmatch.fnmatch(parts[-1], pattern)):
            return True
    return False


def shipped_files() -> list[str]:
    try:
        listing = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: cannot list the committed files")
    lines = (ROOT / ".comfyignore").read_text().splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    return [path for path in listing.splitlines() if not ignored(path, patterns)]


def test_ignore_patterns_behave_as_written():
    assert ignored("tests/support.py", ["tests/"]) and ignored("a/node_modules/x.js", ["node_modules/"])
    assert ignored("docs/a.png", ["docs/*.png"]) and not ignored("docs/sub/a.png", ["docs/*.png"])
    assert not ignored("nodes/guidance.py", ["tests/", "docs/*.png"])


def test_shipped_code_imports_nothing_unshipped():
    for path in shipped_files():
        if not path.endswith(".py"):
            continue
        tree = ast.parse((ROOT / path).read_text(), path)
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in UNSHIPPED_MODULES, f"{path} imports {name}, which is not shipped"


def test_shipped_documents_link_only_shipped_files():
    shipped = set(shipped_files())
    for path in shipped:
        if not path.endswith(".md"):
            continue
        for target in re.findall(r"\]\(([^)\s]+)\)", (ROOT / path).read_text()):
            if re.match(r"[a-z]+:|#", target):
                continue  # a web address or an anchor
            resolved = os.path.normpath(os.path.join(os.path.dirname(path), target.split("#")[0]))
            assert resolved in shipped, f"{path} links {target}, which is not shipped"
