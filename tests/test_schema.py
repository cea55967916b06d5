"""Saved workflows store widget values by position: pin every node's inputs, in order.

Append new inputs at the end (optional) and add them here; never reorder or rename.
"""

import pytest

import support

WINDOW = ["neg_start", "neg_end", "window_unit", "ramp", "ramp_width"]
PINNED = {
    "NegativeGuidance": ["model", "empty", "neg_scale", *WINDOW, "extra_negatives", "evaluation", "trace", "dynamic"],
    "NegativeGuidanceGuider": ["model", "positive", "negative", "empty", "cfg", "neg_scale", *WINDOW,
                               "extra_negatives", "evaluation", "trace", "dynamic"],
    "ExtraNegative": ["negative", "neg_scale", *WINDOW, "extra_negatives", "dynamic"],
    "DynamicNegativeScale": ["preset", "strength", "prior", "temperature", "offset", "p_max", "update"],
    "NegativeGuidanceTestbed": [],
}
FIRST_RELEASE_OPTIONAL = {"empty", "extra_negatives", "evaluation", "trace", "dynamic"}
ADDED_OPTIONAL = {"update"}  # appended after the first release: optional, so older workflows load unchanged


def schemas():
    extension = support.pack_module("nodes.extension")
    import asyncio

    node_list = asyncio.run(asyncio.run(extension.comfy_entrypoint()).get_node_list())
    return {node.GET_SCHEMA().node_id: node.GET_SCHEMA() for node in node_list}


@pytest.mark.parametrize("node_id", sorted(PINNED))
def test_inputs_keep_their_names_and_order(host, node_id):
    schema = schemas()[node_id]
    names = [i.id for i in schema.inputs]
    assert names[:len(PINNED[node_id])] == PINNED[node_id]
    for extra in schema.inputs[len(PINNED[node_id]):]:
        assert extra.optional, f"{node_id}: input '{extra.id}' added after the pinned ones must be optional"
    for i in schema.inputs[:len(PINNED[node_id])]:
        assert i.optional == (i.id in FIRST_RELEASE_OPTIONAL | ADDED_OPTIONAL), i.id
    for i in schema.inputs:
        assert i.tooltip, f"{node_id}: input '{i.id}' needs a tooltip"
    for output in schema.outputs:
        assert output.tooltip, f"{node_id}: output '{output.display_name or output.io_type}' needs a tooltip"


def test_the_dynamic_scale_is_experimental_the_comfyui_way(host):
    """ComfyUI's server marks a node experimental from its class's EXPERIMENTAL (the V3 schema's is_experimental),
    on 0.3.75 and 0.33.0 alike; the frontend then tags it. Its name no longer says so."""
    extension = support.pack_module("nodes.extension")
    import asyncio

    node_list = asyncio.run(asyncio.run(extension.comfy_entrypoint()).get_node_list())
    marked = sorted(node.GET_SCHEMA().node_id for node in node_list if node.EXPERIMENTAL)
    assert marked == ["DynamicNegativeScale"]
    assert "experimental" not in schemas()["DynamicNegativeScale"].display_name.lower()


@pytest.mark.parametrize("node_id", ["NegativeGuidance", "NegativeGuidanceGuider", "ExtraNegative"])
def test_neg_scale_tooltip_says_a_dynamic_scale_replaces_it(host, node_id):
    [neg_scale] = [i for i in schemas()[node_id].inputs if i.id == "neg_scale"]
    assert "Dynamic Negative Scale on 'dynamic' replaces it" in neg_scale.tooltip
