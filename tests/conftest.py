import os
import re
from pathlib import Path

import pytest

# Results must not depend on how many threads BLAS happens to use: pin them (NEGGUIDE_TEST_THREADS, default 1; the
# suite passes with 2 as well). One thread, because on a shared 2-core machine two threads per process spin against
# the other processes: the host-level tests took 2 minutes with 1 thread and over 10 with 2 there.
TEST_THREADS = int(os.environ.get("NEGGUIDE_TEST_THREADS", "1"))


def pytest_configure(config):
    try:
        import torch
    except ImportError:  # the pure tests run without torch
        return
    torch.set_num_threads(TEST_THREADS)


def pytest_report_header(config):
    """Which ComfyUI release the host-level tests run on (scripts/host.sh test runs two)."""
    root = os.environ.get("COMFYUI_PATH")
    version_file = Path(root or ".") / "comfyui_version.py"
    found = re.search(r'__version__ = "([^"]+)"', version_file.read_text()) if version_file.is_file() else None
    release = found.group(1) if found else "unknown version"
    return f"ComfyUI {release} at {root or '(COMFYUI_PATH unset)'}; torch threads: {TEST_THREADS}"


def missing_host() -> str | None:
    """Why the host-level tests cannot run here (no torch, no ComfyUI), or None."""
    import support

    try:
        import torch  # noqa: F401
    except ImportError:
        return "torch is not installed"
    return support.missing_comfyui()


class HostLevelModule(pytest.Module):
    """A test module that imports torch or ComfyUI when collected: skipped, with the reason, on a machine without
    them, so that the pure tests (test_schedule.py, test_js_vectors.py) still run there."""

    def collect(self):
        try:
            return super().collect()
        except self.CollectError:
            reason = missing_host()
            if reason:
                raise pytest.skip.Exception(f"{self.path.name}, host-level tests: {reason} (scripts/host.sh test sets them up)",
                                            _use_item_location=True) from None
            raise


def pytest_pycollect_makemodule(module_path, parent):
    return HostLevelModule.from_parent(parent, path=module_path)


@pytest.fixture(scope="session")
def host():
    import support

    reason = missing_host()
    if reason:
        pytest.skip(f"host-level tests: {reason} (scripts/host.sh test sets them up)")
    return support.make_host()
