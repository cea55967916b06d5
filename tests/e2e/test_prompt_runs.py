"""Every API workflow through /prompt to completion, with tiny random-weight models in place of checkpoints."""

from __future__ import annotations

import json

import pytest

from e2e.comfy_server import PACK_NODE_TYPES, ancestors, api_twin, ui_workflow_files, with_tiny_models

API_FILES = [api_twin(path) for path in ui_workflow_files()]


@pytest.fixture(scope="module")
def runs(comfy_server):
    """Each API workflow run once; shared by the tests below."""
    results = {}
    for path in API_FILES:
        prompt = with_tiny_models(json.loads(path.read_text()))
        results[path.stem] = (prompt, comfy_server.run_prompt(prompt))
    return results


@pytest.mark.parametrize("path", API_FILES, ids=lambda p: p.stem)
def test_api_workflow_runs_to_completion_through_the_pack(path, runs, comfy_server):
    prompt, entry = runs[path.stem]
    status = entry["status"]
    assert status["completed"] and status["status_str"] == "success", json.dumps(status, indent=1)[:3000]
    savers = [node_id for node_id, node in prompt.items() if node["class_type"] == "SaveImage"]
    assert savers
    for node_id in savers:
        images = entry["outputs"][node_id]["images"]
        assert images, f"SaveImage #{node_id} saved nothing"
        png = comfy_server.fetch_output(images[0])
        assert png.startswith(b"\x89PNG"), "not a PNG"
    # These outputs could not exist without the pack's nodes having run: they feed them.
    through_pack = [node_id for node_id in savers
                    if {prompt[a]["class_type"] for a in ancestors(prompt, node_id)} & set(PACK_NODE_TYPES)]
    assert through_pack, "no saved image depends on the pack's nodes"


def test_side_by_side_images_differ(runs, comfy_server):
    """Workflow 4: same seed and prompts; only the window differs, and so must the pictures."""
    prompt, entry = runs["04 Stock vs delayed negative"]
    by_prefix = {prompt[node_id]["inputs"]["filename_prefix"]: output["images"][0]
                 for node_id, output in entry["outputs"].items()}
    stock = comfy_server.fetch_output(by_prefix["negguide/compare_stock"])
    delayed = comfy_server.fetch_output(by_prefix["negguide/compare_delayed"])
    assert stock != delayed

