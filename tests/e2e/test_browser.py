"""The real frontend (1.32.9) in headless Chromium: templates load, the schedule graph draws, redraws on edits,
and stays out of saved workflows and API prompts, in the classic canvas and in the Vue renderer (Nodes 2.0)."""

from __future__ import annotations

import json

import pytest

from e2e.comfy_server import PACK_ROOT, PACK_NODE_TYPES, WORKFLOWS_DIR, api_twin, ui_workflow_files

RENDERERS = ["classic", "nodes2"]
SCREENSHOT_DIR = PACK_ROOT / "out" / "screenshots"
GRAPH_WIDGET = "schedule_graph"


def our_page_errors(result: dict) -> list[str]:
    return [error for error in result["pageErrors"] if "comfyui-negative-guidance" in error]


@pytest.fixture(scope="module", params=RENDERERS)
def loaded_templates(request, comfy_server, chromium):
    comfy_server.set_setting("Comfy.VueNodes.Enabled", request.param == "nodes2")
    try:
        return request.param, chromium.run("load-templates", comfy_server.url)
    finally:
        comfy_server.set_setting("Comfy.VueNodes.Enabled", False)


def test_every_template_loads_without_missing_nodes(loaded_templates):
    renderer, loaded = loaded_templates
    assert sorted(loaded["templates"]) == [path.stem for path in ui_workflow_files()]
    for name, result in loaded["results"].items():
        assert not result["unknownTypes"], f"{renderer} {name}: unknown node types {result['unknownTypes']}"
        assert not [d for d in result["dialogs"] if "missing" in d.lower()], f"{renderer} {name}: {result['dialogs']}"
    assert not our_page_errors(loaded)


def test_schedule_graph_draws_on_every_pack_node(loaded_templates):
    renderer, loaded = loaded_templates
    for name, result in loaded["results"].items():
        assert result["drawnInTime"], f"{renderer} {name}: a schedule graph never drew"
        assert result["graphs"], f"{renderer} {name}: no pack node"
        for graph in result["graphs"]:
            assert graph["drawCount"] > 0 and graph["hasPixels"], f"{renderer} {name}: {graph}"
            assert graph["width"] > 150 and graph["height"] >= 120, f"{renderer} {name}: graph laid out {graph}"
            drawn, widgets = graph["drawn"], graph["widgets"]
            # It drew the node's own settings.
            assert (drawn["start"], drawn["end"], drawn["ramp"], drawn["unit"]) == (
                widgets["neg_start"], widgets["neg_end"], widgets["ramp"], widgets["window_unit"])


def test_graph_is_not_saved_into_the_workflow(loaded_templates):
    renderer, loaded = loaded_templates
    for name, result in loaded["results"].items():
        committed = {node["id"]: node for node in json.loads((WORKFLOWS_DIR / f"{name}.json").read_text())["nodes"]}
        for serialized in (result["serialized"], result["workflow"]):
            for node in serialized["nodes"]:
                if node["type"] in PACK_NODE_TYPES:
                    # Exactly the node's real widget values, as committed: no slot for the graph.
                    assert node["widgets_values"] == committed[node["id"]]["widgets_values"], (renderer, name)
                    assert GRAPH_WIDGET not in json.dumps(node)


def test_api_twins_are_what_the_frontend_produces(loaded_templates):
    """workflows/api/*.json must equal app.graphToPrompt() of the UI files (tests/e2e/make_workflows.py)."""
    renderer, loaded = loaded_templates
    for name, result in loaded["results"].items():
        committed = json.loads(api_twin(WORKFLOWS_DIR / f"{name}.json").read_text())
        assert result["prompt"] == committed, (
            f"{renderer}: workflows/api/{name}.json differs from graphToPrompt(); regenerate with "
            "`scripts/host.sh python tests/e2e/make_workflows.py`")
        for node in result["prompt"].values():
            assert GRAPH_WIDGET not in node["inputs"]


def test_missing_node_dialog_is_detected(comfy_server, chromium):
    """The control for the check above: a workflow with an unknown node type does raise the dialog."""
    comfy_server.set_setting("Comfy.VueNodes.Enabled", False)
    result = chromium.run("missing-node-control", comfy_server.url)
    assert any("missing" in dialog.lower() or "NoSuchNodeNegGuideControl" in dialog for dialog in result["dialogs"])


@pytest.mark.parametrize("renderer", RENDERERS, indirect=True)
def test_editing_neg_start_redraws_the_graph(renderer, comfy_server, chromium):
    result = chromium.run("edit-redraw", comfy_server.url, template="01 Delayed negative",
                          value=0.3, samplerCfg=5.0, vueNodes=renderer)
    before, after, sampler = result["before"], result["after"], result["sampler"]
    assert before["drawn"]["start"] == pytest.approx(0.1667)
    # Classic: typed 0.3. Vue nodes: one press of "+"; its InputNumber first rounds 0.1667 to the 2 decimals it
    # shows, then adds step 0.01, giving 0.18.
    expected_start = 0.18 if renderer else 0.3
    assert result["negStart"] == pytest.approx(expected_start), "the edit did not reach the widget"
    assert after["drawCount"] > before["drawCount"], "no redraw after the edit"
    assert after["drawn"]["start"] == pytest.approx(result["negStart"])
    assert result["pixelsChanged"]
    # The patch draws s⁻ = cfg − 1 with the cfg of the KSampler it feeds, and follows edits there too.
    assert before["drawn"]["cfg"] == pytest.approx(7.5) and before["drawn"]["negativeScale"] == pytest.approx(6.5)
    assert sampler["cfg"] == pytest.approx(7.6 if renderer else 5.0)
    assert sampler["drawn"]["cfg"] == pytest.approx(sampler["cfg"])
    assert sampler["drawn"]["negativeScale"] == pytest.approx(sampler["cfg"] - 1)
    assert not our_page_errors(result)


SHOTS = [
    {"template": "01 Delayed negative", "nodeType": "NegativeGuidance", "withNeighbours": True},
    {"template": "02 Guider, negative fades in", "nodeType": "NegativeGuidanceGuider", "withNeighbours": False},
    {"template": "03 SDXL, ramped window", "nodeType": "NegativeGuidanceGuider", "withNeighbours": False},
]


@pytest.mark.parametrize("renderer", RENDERERS, indirect=True)
def test_screenshots_of_the_nodes_with_their_graph(renderer, comfy_server, chromium):
    """Written to out/screenshots/ on every run; tests/e2e/make_workflows.py --docs refreshes docs/."""
    suffix = "nodes2" if renderer else "classic"
    shots = [{**shot, "file": f"{shot['template']}_{suffix}.png"} for shot in SHOTS]
    result = chromium.run("screenshots", comfy_server.url, outDir=str(SCREENSHOT_DIR), shots=shots,
                          deviceScaleFactor=1.5)
    for item in result["files"]:
        png = open(item["file"], "rb").read()
        assert png.startswith(b"\x89PNG") and len(png) > 20_000, item["file"]
        assert all(graph["drawCount"] > 0 for graph in item["graphs"])
