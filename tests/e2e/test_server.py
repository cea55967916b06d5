"""The pack installed in a real ComfyUI 0.3.75 server, as ComfyUI-Manager installs it."""

from __future__ import annotations

import re

from e2e.comfy_server import PACK_FOLDER, PACK_NODE_TYPES

# Inputs whose meaning their type already says; every other input of the pack's nodes carries a tooltip.
SELF_EXPLAINING_INPUTS = {"model"}


def test_pack_imports_without_error(comfy_server, object_info):
    log = comfy_server.log_text()
    failed = [line for line in log.splitlines() if "IMPORT FAILED" in line and PACK_FOLDER in line]
    assert not failed, "\n".join(failed)
    loaded = re.search(rf"^\s*[\d.]+ seconds: .*custom_nodes/{re.escape(PACK_FOLDER)}$", log, re.MULTILINE)
    assert loaded, f"ComfyUI did not list {PACK_FOLDER} among the loaded custom nodes:\n{log[-3000:]}"
    ours = [block for block in tracebacks(log) if PACK_FOLDER in block]
    assert not ours, "\n\n".join(ours)


def tracebacks(log: str) -> list[str]:
    """Each Python traceback in the log: the header, its indented frames and the exception line."""
    blocks, lines = [], log.splitlines()
    for index, line in enumerate(lines):
        if line.startswith("Traceback (most recent call last):"):
            end = index + 1
            while end < len(lines) and lines[end].startswith(" "):
                end += 1
            blocks.append("\n".join(lines[index:end + 1]))
    return blocks


def test_object_info_describes_both_nodes_with_tooltips(object_info):
    for node_type in PACK_NODE_TYPES:
        assert node_type in object_info, f"/object_info has no {node_type}"
        info = object_info[node_type]
        assert info["python_module"].endswith(PACK_FOLDER), info["python_module"]
        assert info["description"].strip()
        inputs = {**info["input"]["required"], **info["input"].get("optional", {})}
        for name in ("neg_scale", "neg_start", "neg_end", "window_unit", "ramp", "ramp_width"):
            assert name in inputs, f"{node_type} lacks {name}"
        for name, spec in inputs.items():
            if name in SELF_EXPLAINING_INPUTS:
                continue
            options = spec[1] if len(spec) > 1 else {}
            assert options.get("tooltip", "").strip(), f"{node_type}.{name} has no tooltip"
    assert object_info["NegativeGuidance"]["output"] == ["MODEL"]
    assert object_info["NegativeGuidanceGuider"]["output"] == ["GUIDER"]


def test_frontend_extension_is_served(comfy_server):
    extensions = comfy_server.get("/extensions")
    served = {path.rsplit("/", 1)[-1] for path in extensions if f"/extensions/{PACK_FOLDER}/" in path}
    assert {"negative_guidance.js", "schedule.js"} <= served, extensions


def test_workflows_are_listed_as_templates(comfy_server):
    listing = comfy_server.get("/workflow_templates")
    assert sorted(listing.get(PACK_FOLDER, [])) == [
        "01 Delayed negative", "02 Guider, negative fades in", "03 SDXL, ramped window",
        "04 Stock vs delayed negative", "05 Several negatives", "06 Flux negative at cfg 1"]
