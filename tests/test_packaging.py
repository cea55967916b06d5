"""What the Comfy Registry and ComfyUI-Manager ship (the repository minus .comfyignore) must be a consistent set:
no shipped code imports what is not shipped, and every image or page a shipped document links to is shipped."""

import ast
import fnmatch
import os
import re
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


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


def committed_files() -> list[str]:
    try:
        listing = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: cannot list the committed files")
    return listing.splitlines()


def shipped_files() -> list[str]:
    lines = (ROOT / ".comfyignore").read_text().splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    return [path for path in committed_files() if not ignored(path, patterns)]


def top_level_names(paths, search_roots) -> set[str]:
    """The top-level module names that `paths` (files, relative to the repository) give a Python whose sys.path
    holds `search_roots` (folders relative to the repository, "" for the repository itself): each module file's
    stem and each folder's name (a package, or a namespace package) directly below a root."""
    names = set()
    for path in paths:
        for root in search_roots:
            prefix = f"{root}/" if root else ""
            if not path.startswith(prefix):
                continue
            first, *rest = path[len(prefix):].split("/")
            name = first if rest else first.removesuffix(".py") if first.endswith(".py") else None
            if name and name.isidentifier():
                names.add(name)
    return names


def unshipped_modules() -> set[str]:
    """What the unshipped files (the repository minus .comfyignore) make importable where the tests, scripts and
    benchmarks run: from the repository root, and from pytest's pythonpath (tests/, which the scripts and benchmarks
    put on sys.path too). A name that shipped files provide as well is not unshipped."""
    search_roots = ["", *tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
                    .get("pythonpath", [])]
    shipped = shipped_files()
    unshipped = set(committed_files()) - set(shipped)
    return top_level_names(unshipped, search_roots) - top_level_names(shipped, search_roots)


def test_ignore_patterns_behave_as_written():
    assert ignored("tests/support.py", ["tests/"]) and ignored("a/node_modules/x.js", ["node_modules/"])
    assert ignored("docs/a.png", ["docs/*.png"]) and not ignored("docs/sub/a.png", ["docs/*.png"])
    assert not ignored("nodes/guidance.py", ["tests/", "docs/*.png"])


def test_top_level_names_are_what_each_root_makes_importable():
    paths = ["tests/support.py", "tests/e2e/browser.py", "tests/vectors/a.json", "benchmarks/guiders.py", ".ci/run",
             "package.json", "scripts/torchaudio_standin/torchaudio/__init__.py"]
    assert top_level_names(paths, [""]) == {"tests", "benchmarks", "scripts"}
    assert top_level_names(paths, ["tests"]) == {"support", "e2e", "vectors"}


def test_shipped_code_imports_nothing_unshipped():
    unshipped = unshipped_modules()
    assert {"support", "tests"} <= unshipped  # the test helpers this check exists for
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
                assert name.split(".")[0] not in unshipped, f"{path} imports {name}, which is not shipped"


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
