"""The pack installed in a real ComfyUI 0.3.75 server, as ComfyUI-Manager installs it."""

from __future__ import annotations

import json
import re
import urllib.request

import pytest

from e2e.comfy_server import (API_WORKFLOWS_DIR, PACK_FOLDER, PACK_NODE_TYPES, PACK_ROOT, SHOWN_NAMES,
                              TINY_CHECKPOINT_NODE, PromptRefused, with_tiny_models)

def test_pack_imports_without_error(comfy_server, object_info):
    # The start-up part of the log: the session's server also runs prompts that fail on purpose (in any test order).
    log = comfy_server.log_text().split("To see the GUI go to")[0]
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
        inputs = {**info["input"]["required"], **info["input"].get("optional", {})}
        for name in ("neg_scale", "neg_start", "neg_end", "window_unit", "ramp", "ramp_width"):
            assert name in inputs, f"{node_type} lacks {name}"
    assert object_info["NegativeGuidance"]["output"] == ["MODEL"]
    assert object_info["NegativeGuidanceGuider"]["output"] == ["GUIDER"]


def test_every_input_and_output_of_every_pack_node_has_a_tooltip(object_info):
    ours = [name for name, info in object_info.items() if info["python_module"].endswith(PACK_FOLDER)]
    assert len(ours) >= 7, ours
    for node_type in ours:
        info = object_info[node_type]
        assert info["description"].strip(), node_type
        assert "seed" not in info["description"], f"{node_type}: a description in the user's words"
        inputs = {**info["input"]["required"], **info["input"].get("optional", {})}
        for name, spec in inputs.items():
            options = spec[1] if len(spec) > 1 else {}
            assert options.get("tooltip", "").strip(), f"{node_type}.{name} has no tooltip"
        tooltips = info.get("output_tooltips") or [None] * len(info["output"])
        for name, tooltip in zip(info["output_name"], tooltips):
            assert (tooltip or "").strip(), f"{node_type} output {name} has no tooltip"


def test_only_the_dynamic_scale_is_marked_experimental(object_info):
    """The frontend tags a node the server marks experimental ("Experimental" in the node library): the dynamic scale
    says so that way, not in its name."""
    pack = [name for name, info in object_info.items() if info["python_module"] == f"custom_nodes.{PACK_FOLDER}"]
    assert set(PACK_NODE_TYPES) <= set(pack)
    marked = sorted(name for name in pack if object_info[name].get("experimental"))
    assert marked == ["DynamicNegativeScale"]
    assert "experimental" not in object_info["DynamicNegativeScale"]["display_name"].lower()


def test_frontend_extension_is_served(comfy_server):
    extensions = comfy_server.get("/extensions")
    served = {path.rsplit("/", 1)[-1] for path in extensions if f"/extensions/{PACK_FOLDER}/" in path}
    assert {"negative_guidance.js", "schedule.js"} <= served, extensions


def test_translations_and_help_pages_are_served(comfy_server):
    """ComfyUI merges every pack's locales/<lang>/nodeDefs.json into /i18n; the frontend fetches a node's help page
    from /extensions/<pack>/docs/<NodeId>.md, or <NodeId>/<lang>.md in another language."""
    translations = comfy_server.get("/i18n")
    committed = json.loads((PACK_ROOT / "locales" / "zh" / "nodeDefs.json").read_text())
    assert translations["zh"]["nodeDefs"]["NegativeGuidance"] == committed["NegativeGuidance"]
    assert translations["en"]["nodeDefs"]["NegativeGuidance"]["display_name"] == "Negative Guidance (patch)"
    for page in ("NegativeGuidance.md", "NegativeGuidance/zh.md"):
        with urllib.request.urlopen(f"{comfy_server.url}/extensions/{PACK_FOLDER}/docs/{page}", timeout=30) as reply:
            assert reply.read().decode() == (PACK_ROOT / "js" / "docs" / page).read_text()


def test_workflows_are_listed_as_templates(comfy_server):
    listing = comfy_server.get("/workflow_templates")
    assert sorted(listing.get(PACK_FOLDER, [])) == [
        "01 Delayed negative", "02 Guider, negative fades in", "03 SDXL, ramped window",
        "04 Stock vs delayed negative", "05 Several negatives", "06 Flux negative at cfg 1",
        "07 Try it on CPU, testbed"]


# ---- bad input: each mistake once, on the input at fault; linked values checked when the node runs ----

def api_prompt(name: str) -> dict:
    return with_tiny_models(json.loads((API_WORKFLOWS_DIR / f"{name}.json").read_text()))


def node_of(prompt: dict, class_type: str) -> str:
    return next(node_id for node_id, node in prompt.items() if node["class_type"] == class_type)


def refusal(comfy_server, prompt: dict) -> dict:
    """node_errors of a prompt /prompt must refuse."""
    with pytest.raises(PromptRefused) as refused:
        comfy_server.run_prompt(prompt)
    assert refused.value.status == 400
    return refused.value.body["node_errors"]


def with_probe(prompt: dict, **inputs) -> tuple[dict, str]:
    """Workflow 1 with NegativeGuidanceProbe between the checkpoint and the patch."""
    checkpoint, patch = node_of(prompt, TINY_CHECKPOINT_NODE), node_of(prompt, "NegativeGuidance")
    prompt["probe"] = {"class_type": "NegativeGuidanceProbe", "inputs": {
        "model": [checkpoint, 0], "clip": [checkpoint, 1], "positive_text": "a man reading", "negative_text": "glasses",
        "positive_word": "man", "negative_word": "glasses", "map_size": 64, "layers": "non_middle", **inputs}}
    prompt[patch]["inputs"]["model"] = ["probe", 0]
    return prompt, "probe"


@pytest.mark.parametrize("workflow, class_type, name, value, error_type", [
    ("02 Guider, negative fades in", "NegativeGuidanceGuider", "cfg", 1000.0, "value_bigger_than_max"),
    ("01 Delayed negative", "NegativeGuidance", "neg_scale", 500.0, "value_bigger_than_max"),
    ("01 Delayed negative", "NegativeGuidance", "neg_scale", -2.0, "value_smaller_than_min"),
    ("01 Delayed negative", "NegativeGuidance", "neg_start", 1.5, "value_bigger_than_max"),
    ("02 Guider, negative fades in", "NegativeGuidanceGuider", "ramp_width", -0.1, "value_smaller_than_min"),
    ("05 Several negatives", "ExtraNegative", "neg_scale", -1.0, "value_smaller_than_min"),
])
def test_out_of_range_value_is_one_error_on_its_input(comfy_server, workflow, class_type, name, value, error_type):
    prompt = api_prompt(workflow)
    node_id = node_of(prompt, class_type)
    prompt[node_id]["inputs"][name] = value
    errors = refusal(comfy_server, prompt)
    assert list(errors) == [node_id], errors
    assert [(e["type"], e["extra_info"]["input_name"]) for e in errors[node_id]["errors"]] == [(error_type, name)]


@pytest.mark.parametrize("name, value, error_type", [
    ("map_size", 100000, "value_bigger_than_max"), ("layers", "some", "custom_validation_failed")])
def test_probe_value_is_one_error_on_its_input(comfy_server, name, value, error_type):
    prompt, probe = with_probe(api_prompt("01 Delayed negative"), **{name: value})
    errors = refusal(comfy_server, prompt)
    assert list(errors) == [probe], errors
    assert [(e["type"], e["extra_info"]["input_name"]) for e in errors[probe]["errors"]] == [(error_type, name)]


def test_unknown_option_is_one_error_naming_its_input(comfy_server):
    """ComfyUI 0.33.0 refuses a V3 combo value itself; 0.3.75 does not check it, and the node refuses it."""
    prompt = api_prompt("02 Guider, negative fades in")
    guider = node_of(prompt, "NegativeGuidanceGuider")
    prompt[guider]["inputs"]["ramp"] = "cosine"
    try:
        entry = comfy_server.run_prompt(prompt)
    except PromptRefused as refused:
        errors = refused.body["node_errors"]
        assert [(e["type"], e["extra_info"]["input_name"]) for e in errors[guider]["errors"]] == [
            ("value_not_in_list", "ramp")]
    else:
        [error] = execution_errors(entry)
        assert error["node_id"] == guider
        assert error["exception_message"].strip() == (
            f"Negative Guidance Guider #{guider}: ramp must be one of hard, linear, smoothstep, got 'cosine'.")


def execution_errors(entry: dict) -> list[dict]:
    return [message[1] for message in entry["status"]["messages"] if message[0] == "execution_error"]


INVERTED = "{node}: neg_start (0.8) must not be greater than neg_end (0.2); the negative acts from neg_start to neg_end."


@pytest.mark.parametrize("workflow, class_type", [
    ("01 Delayed negative", "NegativeGuidance"),
    ("02 Guider, negative fades in", "NegativeGuidanceGuider"),
    ("05 Several negatives", "ExtraNegative"),
])
@pytest.mark.parametrize("linked", [False, True], ids=["widget", "primitive"])
def test_inverted_window_stops_the_run_once_naming_node_and_input(comfy_server, workflow, class_type, linked):
    """ComfyUI would attach a validate_inputs sentence to every input it takes; the node refuses when it runs,
    which also covers a value that arrives through a link (None in validate_inputs)."""
    prompt = api_prompt(workflow)
    node_id = node_of(prompt, class_type)
    prompt[node_id]["inputs"].update(neg_start=0.8, neg_end=0.2)
    if linked:
        prompt["primitive"] = {"class_type": "PrimitiveFloat", "inputs": {"value": 0.8}}
        prompt[node_id]["inputs"]["neg_start"] = ["primitive", 0]
    entry = comfy_server.run_prompt(prompt)
    assert entry["status"]["status_str"] == "error"
    [error] = execution_errors(entry)
    assert error["node_id"] == node_id
    assert error["exception_message"].strip() == INVERTED.format(node=f"{SHOWN_NAMES[class_type]} #{node_id}")


def test_missing_empty_stops_the_guider_before_sampling(comfy_server):
    prompt = api_prompt("02 Guider, negative fades in")
    guider = node_of(prompt, "NegativeGuidanceGuider")
    del prompt[guider]["inputs"]["empty"]
    entry = comfy_server.run_prompt(prompt)
    [error] = execution_errors(entry)
    assert error["node_id"] == guider
    assert error["exception_message"].startswith(f"Negative Guidance Guider #{guider}: connect 'empty'")


@pytest.mark.parametrize("linked", [False, True], ids=["typed_cfg", "linked_cfg"])
def test_patch_without_empty_names_the_patch_and_stops_there_when_it_can(comfy_server, linked):
    """Whether the patch needs ∅ depends on the sampler's cfg. Typed on the KSampler, the patch refuses when it runs,
    before any sampling: the error (the dialog's title, the red outline) is the patch's, by its displayed name and
    title. Linked, the cfg is only known when sampling starts: the error comes from the KSampler, and its message
    names the patch by name and id (js/negative_guidance.js outlines that node)."""
    prompt = api_prompt("01 Delayed negative")
    patch, sampler = node_of(prompt, "NegativeGuidance"), node_of(prompt, "KSampler")
    del prompt[patch]["inputs"]["empty"]
    if linked:
        prompt["cfg"] = {"class_type": "PrimitiveFloat", "inputs": {"value": prompt[sampler]["inputs"]["cfg"]}}
        prompt[sampler]["inputs"]["cfg"] = ["cfg", 0]
    workflow = {"nodes": [{"id": int(patch), "type": "NegativeGuidance", "title": "hat, late"}]}
    entry = comfy_server.run_prompt(prompt, extra_data={"extra_pnginfo": {"workflow": workflow}})
    [error] = execution_errors(entry)
    assert error["node_id"] == (sampler if linked else patch)
    message = error["exception_message"]
    assert message.startswith(f'Negative Guidance (patch) "hat, late" #{patch}: connect \'empty\''), message
    assert "with cfg 7.5 and neg_scale -1 over this window" in message, message
