"""Through /prompt: the trace plot never shows an earlier run.

ComfyUI caches the input-less trace node, so its handle lives across queued prompts. Workflow 1 with a trace
wired (neg_scale 2, 12 steps), then with the patch's trace input disconnected (neg_scale 6, 20 steps): the plot
must not show the first run: it shows, as its picture, that no run was recorded, and the prompt
still finishes (the image is saved). The plot's JSON reaches the history through ComfyUI's PreviewAny node.
"""

from __future__ import annotations

import copy
import json

from e2e.comfy_server import API_WORKFLOWS_DIR, with_tiny_models

TRACE, PLOT, SHOW = "20", "21", "22"


def traced_workflow(neg_scale: float, steps: int, wired: bool = True, x_axis: str = "step") -> dict:
    prompt = with_tiny_models(json.loads((API_WORKFLOWS_DIR / "01 Delayed negative.json").read_text()))
    patch = next(i for i, node in prompt.items() if node["class_type"] == "NegativeGuidance")
    sampler = next(i for i, node in prompt.items() if node["class_type"] == "KSampler")
    prompt[patch]["inputs"]["neg_scale"] = neg_scale
    prompt[sampler]["inputs"]["steps"] = steps
    if wired:
        prompt[patch]["inputs"]["trace"] = [TRACE, 0]
    prompt[TRACE] = {"class_type": "NegativeGuidanceTrace", "inputs": {}}
    prompt[PLOT] = {"class_type": "NegativeGuidanceTracePlot",
                    "inputs": {"trace": [TRACE, 0], "latent": [sampler, 0], "x_axis": x_axis}}
    prompt[SHOW] = {"class_type": "PreviewAny", "inputs": {"source": [PLOT, 1]}}
    return copy.deepcopy(prompt)


def shown_run(entry: dict) -> dict:
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"], indent=1)[:3000]
    return json.loads(entry["outputs"][SHOW]["text"][0])


def test_plot_shows_only_the_run_of_the_sampling_it_follows(comfy_server):
    first = shown_run(comfy_server.run_prompt(traced_workflow(2.0, 12)))
    assert first["neg_scale"] == 2.0 and len(first["evaluations"]) == 12

    # Disconnected from the guidance node: nothing to plot. The sentence is the plot (and the JSON), and the rest of
    # the prompt still runs: the image is saved.
    unwired = traced_workflow(6.0, 20, wired=False)
    entry = comfy_server.run_prompt(unwired)
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"], indent=1)[:3000]
    shown = json.loads(entry["outputs"][SHOW]["text"][0])
    assert "no run was recorded for the sampling that made this latent" in shown["nothing_recorded"]
    assert len(entry["outputs"][PLOT]["images"]) == 1
    [save] = [i for i, node in unwired.items() if node["class_type"] == "SaveImage"]
    assert entry["outputs"][save]["images"], "the image was not saved"

    # Wired again: sampled and shown anew. Then only the plot's x_axis changes: ComfyUI reuses the sampler's
    # cached output, and the plot shows the run that made it.
    assert shown_run(comfy_server.run_prompt(traced_workflow(2.0, 12))) == first
    again = shown_run(comfy_server.run_prompt(traced_workflow(2.0, 12, x_axis="sigma")))
    assert again == first

    third = shown_run(comfy_server.run_prompt(traced_workflow(4.0, 8)))
    assert third["neg_scale"] == 4.0 and len(third["evaluations"]) == 8
