"""The example workflows against the server's own node definitions: what a user's ComfyUI checks on load."""

from __future__ import annotations

import json
from itertools import combinations

import pytest

from e2e.comfy_server import PACK_NODE_TYPES, api_twin, ui_workflow_files
from e2e.make_workflows import OPEN_VIEWPORT, node_boxes

# What the frontend draws over the top left of the canvas: the side bar, the tab bar and the breadcrumb / Run bar.
COVERED_LEFT, COVERED_TOP = 60, 130
OUTPUT_PREFIX = "negguide/"

# Nodes the frontend alone knows (no Python class): they never reach /object_info or an API prompt.
FRONTEND_ONLY_TYPES = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
EXPECTED_CHECKPOINTS = {
    "01 Delayed negative.json": {"v1-5-pruned-emaonly.safetensors"},
    "02 Guider, negative fades in.json": {"v1-5-pruned-emaonly.safetensors"},
    "03 SDXL, ramped window.json": {"sd_xl_base_1.0.safetensors"},
    "04 Stock vs delayed negative.json": {"v1-5-pruned-emaonly.safetensors"},
    "05 Several negatives.json": {"v1-5-pruned-emaonly.safetensors"},
    "06 Flux negative at cfg 1.json": {"flux1-dev-fp8.safetensors"},
    "07 Try it on CPU, testbed.json": set(),  # the pack's Negative Guidance Testbed: nothing to download
}

UI_FILES = ui_workflow_files()


def test_every_example_is_here():
    assert [path.name for path in UI_FILES] == sorted(EXPECTED_CHECKPOINTS)


def widget_inputs(info: dict) -> list[tuple[str, str, dict]]:
    """The inputs that become widgets, in the order the frontend creates them (required, then optional)."""
    inputs = []
    for section in ("required", "optional"):
        for name, spec in info["input"].get(section, {}).items():
            kind = spec[0]
            options = spec[1] if len(spec) > 1 else {}
            kind = "COMBO" if isinstance(kind, list) else kind
            if kind in WIDGET_TYPES and not options.get("forceInput"):
                inputs.append((name, kind, options if isinstance(spec[0], str) else {**options, "options": spec[0]}))
    return inputs


def check_widget_value(node_type, name, kind, options, value):
    where = f"{node_type}.{name} = {value!r}"
    if kind == "FLOAT":
        assert isinstance(value, (int, float)) and not isinstance(value, bool), where
    elif kind == "INT":
        assert isinstance(value, int) and not isinstance(value, bool), where
    elif kind == "STRING":
        assert isinstance(value, str), where
    elif kind == "BOOLEAN":
        assert isinstance(value, bool), where
    if kind in ("FLOAT", "INT"):
        assert options.get("min", value) <= value <= options.get("max", value), f"{where} out of range"
    if kind == "COMBO":
        choices = options.get("options", [])
        if name != "ckpt_name":  # model files are the user's: the test server has none
            assert value in choices, f"{where} is not one of {choices}"


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.stem)
def test_ui_workflow_nodes_and_widget_values_fit_the_server(path, object_info):
    workflow = json.loads(path.read_text())
    types = [node["type"] for node in workflow["nodes"]]
    assert "Note" in types, f"{path.name} has no Note node explaining what to try"
    assert set(PACK_NODE_TYPES) & set(types), f"{path.name} uses none of the pack's nodes"
    for node in workflow["nodes"]:
        if node["type"] in FRONTEND_ONLY_TYPES:
            continue
        assert node["type"] in object_info, f"{path.name}: node type {node['type']} is unknown to the server"
        expected = widget_inputs(object_info[node["type"]])
        values = list(node.get("widgets_values") or [])
        for name, kind, options in expected:
            if not values:  # inputs added since the file was saved load with their defaults
                break
            value = values.pop(0)
            check_widget_value(node["type"], name, kind, options, value)
            if options.get("control_after_generate"):
                assert values.pop(0) in ("fixed", "increment", "decrement", "randomize"), name
        assert not values, f"{path.name}: {node['type']} #{node['id']} has extra widget values {values}"
    checkpoints = {node["widgets_values"][0] for node in workflow["nodes"] if node["type"] == "CheckpointLoaderSimple"}
    assert checkpoints == EXPECTED_CHECKPOINTS[path.name]


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.stem)
def test_api_twin_names_only_real_inputs(path, object_info):
    prompt = json.loads(api_twin(path).read_text())
    ui_nodes = {str(node["id"]): node for node in json.loads(path.read_text())["nodes"]}
    for node_id, node in prompt.items():
        assert ui_nodes[node_id]["type"] == node["class_type"]
        info = object_info[node["class_type"]]["input"]
        known = {**info["required"], **info.get("optional", {})}
        unknown = set(node["inputs"]) - set(known)
        # The schedule graph is display only: it must never reach a prompt.
        assert not unknown, f"{path.name}: {node['class_type']} #{node_id} sends unknown inputs {unknown}"
    frontend_only = {i for i, n in ui_nodes.items() if n["type"] in FRONTEND_ONLY_TYPES}
    assert set(prompt) == set(ui_nodes) - frontend_only


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.stem)
def test_no_two_nodes_overlap(path):
    """Boxes as the canvas draws them, title bar included: no node hides part of another."""
    boxes = node_boxes(json.loads(path.read_text()))
    overlapping = [(a[0], b[0]) for a, b in combinations(boxes, 2)
                   if a[1] < b[3] and b[1] < a[3] and a[2] < b[4] and b[2] < a[4]]
    assert not overlapping, f"{path.name}: nodes overlap (ids) {overlapping}"


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.stem)
def test_saved_view_shows_every_node_clear_of_the_menus(path):
    workflow = json.loads(path.read_text())
    view = workflow["extra"]["ds"]
    scale, (offset_x, offset_y) = view["scale"], view["offset"]
    for node_id, left, top, right, bottom in node_boxes(workflow):
        on_screen = [(left + offset_x) * scale, (top + offset_y) * scale, (right + offset_x) * scale,
                     (bottom + offset_y) * scale]
        assert on_screen[0] >= COVERED_LEFT and on_screen[1] >= COVERED_TOP, (
            f"{path.name}: node {node_id} opens under the menus at {on_screen}")
        assert on_screen[2] <= OPEN_VIEWPORT[0] and on_screen[3] <= OPEN_VIEWPORT[1], (
            f"{path.name}: node {node_id} opens outside a {OPEN_VIEWPORT} window at {on_screen}")


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.stem)
def test_images_are_saved_under_the_packs_output_folder(path):
    prompt = json.loads(api_twin(path).read_text())
    prefixes = [node["inputs"]["filename_prefix"] for node in prompt.values() if node["class_type"] == "SaveImage"]
    assert prefixes and all(prefix.startswith(OUTPUT_PREFIX) for prefix in prefixes), prefixes
