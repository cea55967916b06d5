"""Session-wide fixtures for the end-to-end tests: one ComfyUI server, one headless Chromium."""

from __future__ import annotations

import pytest

from e2e.browser import Chromium, browser_tools_missing
from e2e.comfy_server import ComfyServer


@pytest.fixture(scope="session")
def comfy_server(tmp_path_factory):
    from conftest import missing_host

    reason = missing_host()
    if reason:
        pytest.skip(f"end-to-end tests: {reason} (scripts/host.sh test sets them up)")
    with ComfyServer(tmp_path_factory.mktemp("comfyui-base")) as server:
        yield server


@pytest.fixture(scope="session")
def object_info(comfy_server):
    return comfy_server.get("/object_info", timeout=120)


@pytest.fixture(scope="session")
def chromium():
    missing = browser_tools_missing()
    if missing:
        pytest.fail(f"browser tests need {missing}: scripts/setup_e2e.sh installs it (scripts/host.sh test runs it)")
    with Chromium() as browser:
        yield browser


@pytest.fixture
def renderer(request, comfy_server):
    """Sets the frontend's node renderer (classic canvas or Vue "Nodes 2.0") before a page loads."""
    vue_nodes = request.param == "nodes2"
    comfy_server.set_setting("Comfy.VueNodes.Enabled", vue_nodes)
    yield vue_nodes
    comfy_server.set_setting("Comfy.VueNodes.Enabled", False)
