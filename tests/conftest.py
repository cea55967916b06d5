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


@pytest.fixture(scope="session")
def host():
    import support

    return support.make_host()
