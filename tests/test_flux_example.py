"""Example workflow 6 (a negative prompt on a guidance-distilled, Flux-style model at cfg 1) on the real host: its
own settings, read from its API file, on the suite's tiny Flux DiT, through ComfyUI's stock CLIPTextEncode,
FluxGuidance and KSampler. At cfg 1 the pack computes eps(y) − s⁻·w(t)·(eps(ỹ) − eps(∅)): one model evaluation
per step outside the window (y alone, as plain Flux), three inside (y, ỹ, ∅ in one batched call). The samples equal
ComfyUI's own guiders computing the same: BasicGuider outside the window, DualCFGGuider inside.
"""

import json
from fractions import Fraction

import pytest
import torch

import support
from compat_support import build_tiny_flux
from support import PACK_ROOT, PassCounter, ksampler

WORKFLOW = PACK_ROOT / "workflows" / "api" / "06 Flux negative at cfg 1.json"


def nodes_of(prompt: dict, class_type: str) -> list[dict]:
    return [node["inputs"] for node in prompt.values() if node["class_type"] == class_type]


@pytest.fixture(scope="module")
def example():
    prompt = json.loads(WORKFLOW.read_text())
    [sampler] = nodes_of(prompt, "KSampler")
    [patch] = nodes_of(prompt, "NegativeGuidance")
    [flux_guidance] = nodes_of(prompt, "FluxGuidance")
    texts = {node_id: node["inputs"]["text"] for node_id, node in prompt.items() if node["class_type"] == "CLIPTextEncode"}
    return {
        "sampler": sampler, "flux_guidance": flux_guidance,
        "patch": {name: value for name, value in patch.items() if not isinstance(value, list)},  # widgets, not links
        # Which prompt feeds what, from the links: FluxGuidance carries y; ∅ goes to the patch; ỹ to the KSampler.
        "positive": texts[flux_guidance["conditioning"][0]],
        "negative": texts[sampler["negative"][0]],
        "empty": texts[patch["empty"][0]],
    }


def test_example_runs_at_cfg_1_with_a_window(example):
    """What the README and the note promise: cfg 1, a negative scale of its own, on part of the run."""
    assert example["sampler"]["cfg"] == 1.0
    assert example["patch"]["neg_scale"] > 0
    assert 0 < example["patch"]["neg_start"] < example["patch"]["neg_end"] < 1
    assert example["empty"] == "" and example["negative"]


def stock_reference(model, positive, negative, empty, settings, neg_scale, inside, latent):
    """The same run from ComfyUI's own nodes: its sigmas split where the window opens and closes (as SplitSigmas
    splits them), BasicGuider(y) outside the window (what a KSampler at cfg 1 computes) and, inside, DualCFGGuider(cond1
    = y, cond2 = ∅, negative = ỹ, cfg_conds = 1, cfg_cond2_negative = s⁻ + 1), which is ỹ + (s⁻ + 1)(∅ − ỹ) + (y − ∅)
    = y − s⁻(ỹ − ∅). Each part continues the previous part's latent without new noise (DisableNoise), as chained
    samplers do; euler keeps no state between steps."""
    from comfy_extras import nodes_custom_sampler as custom

    sigmas = support.ksampler_sigmas(model, settings["sampler_name"], settings["steps"], settings["scheduler"])
    plain = custom.BasicGuider.execute(model, positive).result[0]
    dual = custom.DualCFGGuider.execute(model, positive, empty, negative, 1.0, neg_scale + 1.0, "regular").result[0]
    edges = [0, inside[0], inside[-1] + 1, settings["steps"]]
    noise = custom.RandomNoise.execute(settings["seed"]).result[0]
    sampler = custom.KSamplerSelect.execute(settings["sampler_name"]).result[0]
    for first, end in zip(edges, edges[1:]):
        guider = dual if first in inside else plain
        latent = custom.SamplerCustomAdvanced.execute(noise, guider, sampler, sigmas[first:end + 1], latent).result[0]
        noise = custom.DisableNoise.execute().result[0]
    return latent["samples"]


def test_one_pass_outside_the_window_three_inside(example):
    support.load_pack()
    import nodes
    from comfy_extras.nodes_flux import FluxGuidance

    torch.manual_seed(5)
    model, clip = build_tiny_flux(), support.build_tiny_clip()
    encode = lambda text: nodes.CLIPTextEncode().encode(clip, text)[0]  # noqa: E731
    positive = FluxGuidance.execute(encode(example["positive"]), example["flux_guidance"]["guidance"]).result[0]
    negative, empty = encode(example["negative"]), encode(example["empty"])
    latent = {"samples": torch.zeros(1, 16, 8, 8)}
    settings = example["sampler"]
    steps = settings["steps"]
    run = lambda patched: ksampler(patched, positive, negative, settings["cfg"], settings["sampler_name"], steps,  # noqa: E731
                                   seed=settings["seed"], latent=latent, scheduler=settings["scheduler"])

    passes = PassCounter()
    patched = support.pack_module("nodes.negative_guidance").NegativeGuidance.execute(
        model=passes.counting(model), empty=empty, **example["patch"]).result[0]
    ours = run(patched)

    start, end = Fraction(str(example["patch"]["neg_start"])), Fraction(str(example["patch"]["neg_end"]))
    inside = [step for step in range(steps) if start <= Fraction(step, steps) < end]
    assert 0 < len(inside) < steps
    # One model call per euler step: y alone outside the window, y, ỹ and ∅ batched inside.
    assert [(conds, evaluation.batch) for (_, conds), evaluation in zip(passes.by_sigma(), passes.evaluations)] == [
        ((0, 1, 2), 3) if step in inside else ((0,), 1) for step in range(steps)]

    # The formula, from ComfyUI's own guiders; a stock KSampler at cfg 1 ignores its negative prompt, and the pack's
    # negative moves the samples far more than the comparison's tolerance.
    expected = stock_reference(model, positive, negative, empty, settings, example["patch"]["neg_scale"], inside,
                               latent)
    support.assert_close_to_scale(ours, expected)
    support.assert_changed(ours, run(model))
