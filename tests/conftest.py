import pytest


@pytest.fixture(scope="session")
def host():
    import support

    return support.make_host()
