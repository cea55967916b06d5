import os

import pytest

# Results must not depend on how many threads BLAS happens to use: pin them (NEGGUIDE_TEST_THREADS, default 2).
TEST_THREADS = int(os.environ.get("NEGGUIDE_TEST_THREADS", "2"))


def pytest_configure(config):
    try:
        import torch
    except ImportError:  # the pure tests run without torch
        return
    torch.set_num_threads(TEST_THREADS)


@pytest.fixture(scope="session")
def host():
    import support

    return support.make_host()
