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
