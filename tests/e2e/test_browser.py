"""The real frontend (1.32.9) in headless Chromium: templates load, the schedule graph draws, redraws on edits,
and stays out of saved workflows and API prompts, in the classic canvas and in the Vue renderer (Nodes 2.0)."""

from __future__ import annotations

import json
import re

import pytest

from e2e.comfy_server import (PACK_ROOT, PACK_NODE_TYPES, SHOWN_NAMES, WORKFLOWS_DIR, api_twin, ui_workflow_files,
                              with_tiny_models)
from support import load_pure_module

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


STEP_RANGE = re.compile(r"steps (\d+)[-–](\d+)(?: of (\d+))?|the (\d+)(?:st|nd|rd|th) to the (\d+)(?:st|nd|rd|th)")


def step_ranges(text: str) -> list[tuple[int, int, int | None]]:
    """Every "steps 6-15 of 30" / "the 3rd to the 10th" a workflow's note or title claims: (first, last, of)."""
    found = []
    for match in STEP_RANGE.finditer(text):
        first, last, of = match.group(1, 2, 3) if match.group(1) else (*match.group(4, 5), None)
        found.append((int(first), int(last), int(of) if of else None))
    return found


def test_workflow_notes_claim_the_steps_the_graph_computes(loaded_templates):
    """What a note or a node title says about the window ("steps 6-15 of 30") is what the node's schedule graph
    computes from the workflow's own widgets ("negative on steps 6–15 of 30")."""
    renderer, loaded = loaded_templates
    claims_seen = 0
    for name, result in loaded["results"].items():
        nodes = json.loads((WORKFLOWS_DIR / f"{name}.json").read_text())["nodes"]
        texts = [node.get("title") or "" for node in nodes] + [
            value for node in nodes if node["type"] in ("Note", "MarkdownNote") for value in node["widgets_values"]
            if isinstance(value, str)]
        labels = [graph["drawn"]["stepsLabel"] or "" for graph in result["graphs"]]
        for first, last, of in step_ranges("\n".join(texts)):
            claims_seen += 1
            claim = f"{first}–{last}" + (f" of {of}" if of else "")
            assert any(f"steps {claim}" in label for label in labels), (
                f"{renderer} {name}: a note or title says steps {first}-{last}{f' of {of}' if of else ''}, the "
                f"graph says {labels}")
    assert claims_seen >= 3, "the notes no longer name the steps: update this test's pattern"


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
    # Classic: typed 0.3. Vue nodes: one press of "+" adds step 0.01 to 0.1667 (the widget keeps the 4 decimals of
    # the input's round; before, it kept 2 and gave 0.18).
    expected_start = 0.1767 if renderer else 0.3
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


@pytest.mark.parametrize("renderer", RENDERERS, indirect=True)
def test_typed_window_edges_keep_their_decimals(renderer, comfy_server, chromium):
    """The README's 0.1667 (and 0.167) typed into neg_start stay what was typed and start the negative at the 6th of
    30 steps; the frontend used to keep two decimals (0.17: the 7th step)."""
    result = chromium.run("type-window-edge", comfy_server.url, template="01 Delayed negative",
                          values=[0.3, 0.1667, 0.167], vueNodes=renderer)
    [moved, readme, rounded] = result["typed"]
    assert moved["value"] == pytest.approx(0.3), f"the typing did not reach the widget: {result['typed']}"
    for entry in (readme, rounded):
        assert entry["value"] == pytest.approx(entry["typed"], abs=1e-9), entry
        assert float(entry["shown"]) == pytest.approx(entry["typed"], abs=1e-9), entry
        assert entry["stepsLabel"] == "negative on steps 6–15 of 30", entry
    assert not our_page_errors(result)


@pytest.mark.parametrize("renderer", RENDERERS, indirect=True)
def test_patch_graph_follows_ksampler_edits_alone(renderer, comfy_server, chromium):
    """Nodes 2.0 on frontend 1.32.9 keeps the widget callbacks it found when it mounted a node: the graph must
    follow a KSampler edit even when no widget of the pack node changed first."""
    result = chromium.run("edit-redraw", comfy_server.url, template="01 Delayed negative",
                          samplerOnly=True, samplerCfg=5.0, samplerSteps=20, vueNodes=renderer)
    sampler = result["sampler"]
    # Classic: typed values. Vue nodes: one press of "+" on each (cfg 7.5 → 7.6, steps 30 → 31).
    assert (sampler["cfg"], sampler["steps"]) == ((7.6, 31) if renderer else (5.0, 20))
    assert sampler["drawn"]["cfg"] == pytest.approx(sampler["cfg"])
    assert sampler["drawn"]["steps"] == sampler["steps"]
    assert not our_page_errors(result)


@pytest.mark.parametrize("renderer", RENDERERS, indirect=True)
def test_neg_scale_arrows_never_make_a_refused_value(renderer, comfy_server, chromium):
    """From -1 (follow cfg) one click up is 0, not -0.9; from 0 one click down is -1, not -0.1. Every value a
    click gives is one the node accepts and means what the graph draws."""
    clicks = [1, -1, -1, 1, 1, -1, -1]
    result = chromium.run("neg-scale-arrows", comfy_server.url, template="01 Delayed negative",
                          directions=clicks, vueNodes=renderer)
    assert result["start"] == -1
    values = [click["value"] for click in result["clicks"]]
    assert values == pytest.approx([0, -1, -1, 0, 0.1, 0, -1])
    for click in result["clicks"]:
        assert click["shown"] == pytest.approx(click["value"]), "the node shows another value than it holds"
        follows = click["value"] < 0
        # Follow cfg: s⁻ = cfg − 1 = 6.5 with the template's KSampler at cfg 7.5.
        assert click["drawn"]["negativeScale"] == pytest.approx(6.5 if follows else click["value"])
    assert not our_page_errors(result)


def server_sentence(node: str, **values) -> str:
    """What nodes/validation.py says (the server's sentence) for these settings."""
    validation = load_pure_module("nodes/validation.py")
    settings = {"cfg": None, "neg_scale": -1.0, "neg_start": 0.0, "neg_end": 1.0, "window_unit": "steps",
                "ramp": "hard", "ramp_width": 0.0, **values}
    empty = settings.pop("empty", None)
    return validation.inputs_problem(node, *settings.values(), empty)


@pytest.mark.parametrize("renderer", RENDERERS, indirect=True)
@pytest.mark.parametrize("case", ["inverted", "ramp_too_wide", "guider_without_empty", "patch_without_empty"])
def test_graph_shows_the_server_sentence_for_refused_settings(renderer, case, comfy_server, chromium):
    guider = {"template": "02 Guider, negative fades in", "node": "NegativeGuidanceGuider"}
    patch = {"template": "01 Delayed negative", "node": "NegativeGuidance"}
    # The sentence names the node as the canvas shows it, with its id (filled in once the template is loaded).
    target, edits, disconnect, sentence = {
        # The guider of template 2: cfg 6, neg_scale 4, window 0.2-1, smoothstep 0.2; the patch of template 1:
        # neg_scale -1 on 0.1667-0.5, its KSampler at cfg 7.5.
        "inverted": (guider, {"neg_start": 0.8, "neg_end": 0.2}, None,
                     server_sentence("{node}", cfg=6.0, neg_scale=4.0, neg_start=0.8, neg_end=0.2,
                                     ramp="smoothstep", ramp_width=0.2)),
        "ramp_too_wide": (guider, {"neg_end": 0.5, "ramp_width": 0.2, "ramp": "linear"}, None,
                          server_sentence("{node}", neg_start=0.2, neg_end=0.5, ramp="linear",
                                          ramp_width=0.2)),
        "guider_without_empty": (guider, {}, "empty",
                                 server_sentence("{node}", cfg=6.0, neg_scale=4.0, neg_start=0.2,
                                                 ramp="smoothstep", ramp_width=0.2, empty=False)),
        "patch_without_empty": (patch, {}, "empty",
                                server_sentence("{node}", cfg=7.5, neg_start=0.1667, neg_end=0.5,
                                                empty=False)),
    }[case]
    assert sentence
    result = chromium.run("drawn-after", comfy_server.url, template=target["template"],
                          edits=[{"type": target["node"], "widgets": edits}] if edits else [],
                          disconnect=[{"type": target["node"], "input": disconnect}] if disconnect else [])
    [state] = [state for state in result["states"] if state["type"] == target["node"]]
    assert state["drawn"]["problem"] == sentence.format(node=f"{SHOWN_NAMES[target['node']]} #{state['id']}")
    assert not our_page_errors(result)


@pytest.mark.parametrize("renderer", RENDERERS, indirect=True)
def test_an_error_raised_while_sampling_points_at_the_patch(renderer, comfy_server, chromium):
    """The patch's need for ∅ depends on the sampler's cfg. Cached from a run that did not need ∅, the patch is not
    run again when only the KSampler's cfg changes, so the error comes while the KSampler samples: ComfyUI titled the
    dialog "KSampler" and outlined the KSampler. The pack's JS points both at the patch, named as the canvas shows it."""
    result = chromium.run("error-at-its-node", comfy_server.url, template="07 Try it on CPU, testbed", cfg=5.0,
                          otherCfg=6.0)
    assert (result["first"], result["second"]) == ("execution_success", "execution_error"), result
    patch = str(result["patch"])
    assert result["error"]["message"].startswith(f"Negative Guidance (patch) #{patch}: connect 'empty'"), result
    assert result["error"]["node_id"] == patch, result
    assert result["error"]["node_type"] == "Negative Guidance (patch)", result
    assert result["outlined"] == [result["patch"]], result
    # 1.32.9 shows the error in a dialog titled by node_type; 1.49.6 in its errors panel, by the same field.
    assert all(dialog.startswith("Negative Guidance (patch)") for dialog in result["dialogs"]), result["dialogs"]
    assert not our_page_errors(result)


def patch_feeding(sampler: dict, *extra_nodes, links=()) -> dict:
    """A patch (window 0.1667-0.5, `empty` connected) whose MODEL feeds `sampler`."""
    return {"nodes": [{"type": "NegativeGuidance", "widgets": {"neg_start": 0.1667, "neg_end": 0.5}}, sampler,
                      {"type": "CLIPTextEncode"}, *extra_nodes],
            "links": [[0, "MODEL", 1, "model"], [2, "CONDITIONING", 0, "empty"], *links]}


@pytest.mark.parametrize("renderer", RENDERERS, indirect=True)
@pytest.mark.parametrize("case, graph, cfg, label", [
    # KSamplerAdvanced runs steps 10-20 of 30: the window counts those 10 steps (0.1667-0.5 of 10: its 3rd to 5th).
    ("ksampler_advanced", patch_feeding({"type": "KSamplerAdvanced", "widgets": {
        "steps": 30, "start_at_step": 10, "end_at_step": 20, "cfg": 6.0}}), 6.0,
     "negative on steps 3–5 of the 10 this node runs (13–15 of 30)"),
    ("sampler_custom", patch_feeding({"type": "SamplerCustom", "widgets": {"cfg": 4.5}},
                                     {"type": "BasicScheduler", "widgets": {"steps": 12}},
                                     links=[[3, "SIGMAS", 1, "sigmas"]]), 4.5, "negative on steps 3–6 of 12"),
    ("ksampler", patch_feeding({"type": "KSampler", "widgets": {"steps": 30, "cfg": 6.0}}), 6.0,
     "negative on steps 6–15 of 30"),
])
def test_graph_facts_follow_the_sampler(renderer, case, graph, cfg, label, comfy_server, chromium):
    result = chromium.run("drawn-after", comfy_server.url, **graph)
    [state] = result["states"]
    drawn = state["drawn"]
    assert (drawn["cfg"], drawn["negativeScale"], drawn["stepsLabel"], drawn["problem"]) == (cfg, cfg - 1, label, None)
    assert not our_page_errors(result)


def dynamic_patch(empty: bool) -> dict:
    """A patch feeding a KSampler (30 steps, cfg 6), a Dynamic Negative Scale at its defaults on its `dynamic`."""
    graph = patch_feeding({"type": "KSampler", "widgets": {"steps": 30, "cfg": 6.0}},
                          {"type": "DynamicNegativeScale"}, links=[[3, "dynamic", 0, "dynamic"]])
    if not empty:
        graph["links"] = [link for link in graph["links"] if link[3] != "empty"]
    return graph


def server_refusal_without_empty_for_a_dynamic_scale(comfy_server) -> tuple[str, str]:
    """What the server says when workflow 1 runs with a dynamic scale on the patch and no `empty`, and the patch's
    id there (the message names the node by it)."""
    prompt = with_tiny_models(json.loads(api_twin(WORKFLOWS_DIR / "01 Delayed negative.json").read_text()))
    patch = next(i for i, node in prompt.items() if node["class_type"] == "NegativeGuidance")
    del prompt[patch]["inputs"]["empty"]
    prompt["90"] = {"class_type": "DynamicNegativeScale", "inputs": {
        "preset": "custom (the inputs below)", "strength": 2.0, "prior": 0.5, "temperature": 1.0, "offset": 0.0,
        "p_max": 0.99}}
    prompt[patch]["inputs"]["dynamic"] = ["90", 0]
    entry = comfy_server.run_prompt(prompt)
    assert entry["status"]["status_str"] == "error"
    [error] = [data for kind, data in entry["status"]["messages"] if kind == "execution_error"]
    return error["exception_message"].rstrip("\n"), patch  # ComfyUI's executor ends the message with a newline


@pytest.mark.parametrize("renderer", RENDERERS, indirect=True)
def test_graph_says_when_a_dynamic_scale_replaces_neg_scale(renderer, comfy_server, chromium):
    """With a Dynamic Negative Scale connected the graph draws no constant s⁻ from the ignored neg_scale (editing it
    to 3 used to redraw "s⁻ = 3"): it says the scale is dynamic, up to λ·p_max/(1 − p_max) = 2·0.99/0.01."""
    result = chromium.run("drawn-after", comfy_server.url, **dynamic_patch(empty=True),
                          edits=[{"type": "NegativeGuidance", "widgets": {"neg_scale": 3.0}}])
    [state] = result["states"]
    drawn = state["drawn"]
    assert drawn["problem"] is None and drawn["negativeScale"] is None
    assert drawn["dynamic"]["cap"] == pytest.approx(198.0)
    assert drawn["stepsLabel"] == "negative on steps 6–15 of 30"  # the window still gates it
    assert not our_page_errors(result)


@pytest.mark.parametrize("renderer", RENDERERS, indirect=True)
def test_graph_knows_a_dynamic_scale_needs_empty(renderer, comfy_server, chromium):
    """Without `empty`, the queued run fails; the graph shows the server's sentence before you queue."""
    expected, server_id = server_refusal_without_empty_for_a_dynamic_scale(comfy_server)
    result = chromium.run("drawn-after", comfy_server.url, **dynamic_patch(empty=False))
    [state] = result["states"]
    assert state["drawn"]["problem"] == expected.replace(f" #{server_id}: ", f" #{state['id']}: ", 1)
    assert not our_page_errors(result)


@pytest.mark.parametrize("renderer", RENDERERS, indirect=True)
def test_guider_graph_counts_the_steps_of_its_scheduler(renderer, comfy_server, chromium):
    # Template 2: BasicScheduler 25 steps → SamplerCustomAdvanced; smoothstep fade-in from 0.2 over 0.2, so w > 0
    # from the 7th step (the 6th, at p = 0.2, is the ramp's zero).
    result = chromium.run("drawn-after", comfy_server.url, template="02 Guider, negative fades in")
    [state] = result["states"]
    assert state["drawn"]["stepsLabel"] == "negative on steps 7–25 of 25"


@pytest.mark.parametrize("renderer", RENDERERS, indirect=True)
def test_graph_draws_the_extra_negatives(renderer, comfy_server, chromium):
    result = chromium.run("drawn-after", comfy_server.url, template="05 Several negatives",
                          edits=[{"type": "ExtraNegative", "widgets": {"neg_scale": 1.5, "neg_end": 0.6}}])
    [state] = result["states"]
    [extra] = state["drawn"]["extras"]
    assert (extra["scale"], extra["start"], extra["end"]) == (1.5, 0.0, 0.6)
    assert not our_page_errors(result)


def test_node_search_lists_the_guidance_nodes_first(comfy_server, chromium):
    """The frontend's search ranks display names that start with the query first, shorter first."""
    comfy_server.set_setting("Comfy.VueNodes.Enabled", False)
    result = chromium.run("node-search", comfy_server.url, query="negative guid")
    listed = result["listed"]
    assert sorted(listed[:2]) == ["Negative Guidance (patch)", "Negative Guidance Guider"], listed
    assert "Guidance Trace (for Negative Guidance)" in listed[2:]


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
