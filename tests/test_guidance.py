"""The two nodes on the real ComfyUI host (tiny random-weight SD1.5 UNet and CLIP), compared with ComfyUI's
stock nodes and with an independent per-step reference; model passes counted at the model call.

Conditioning indices in pass counts: 0 = positive y, 1 = negative ỹ, 2 = empty ∅ (stock CFG: 0 = cond, 1 = uncond).
"""

import math
import re

import pytest
import torch

import support
from compat_support import three_way_reference, window_of_steps
from support import PassCounter, custom_advanced, ksampler, ksampler_sigmas, patch

SAMPLERS = ["euler", "dpmpp_2m", "heun", "uni_pc"]
CFG = 6.0
STEPS = 8


@pytest.fixture(scope="module")
def stock_run(host):
    """The stock KSampler(positive, negative, cfg) on the plain model, once per (sampler, cfg, steps): what a test
    checks its feature moved the samples away from."""
    runs = {}

    def run(sampler, cfg=CFG, steps=STEPS):
        if (sampler, cfg, steps) not in runs:
            runs[sampler, cfg, steps] = ksampler(host.model, host.positive, host.negative, cfg, sampler, steps,
                                                 latent=host.latent)
        return runs[sampler, cfg, steps]

    return run


def node_classes():
    return support.pack_module("nodes.negative_guidance")


def guider(host, model, cfg, *settings, **named):
    """The pack's guider with the host's prompts (support.guider)."""
    return support.guider(model, host.positive, host.negative, cfg, *settings, **named)


def assert_one_forward_per_evaluation(ours: PassCounter, stock: PassCounter):
    """Same evaluations as the stock run (one batched forward each), each with exactly its conditionings."""
    assert [e.sigma for e in ours.evaluations] == pytest.approx([e.sigma for e in stock.evaluations])
    for evaluation in ours.evaluations:
        assert evaluation.batch == len(evaluation.conds)


# ---- 1. defaults ≡ stock KSampler(positive, negative, cfg) ----

@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.parametrize("connect_empty", [True, False])
def test_defaults_equal_stock_ksampler(host, sampler, connect_empty):
    stock_passes, our_passes = PassCounter(), PassCounter()
    stock = ksampler(stock_passes.counting(host.model), host.positive, host.negative, CFG, sampler, STEPS,
                     latent=host.latent)
    patched = patch(our_passes.counting(host.model), empty=host.empty if connect_empty else None)
    ours = ksampler(patched, host.positive, host.negative, CFG, sampler, STEPS, latent=host.latent)
    assert torch.equal(ours, stock)  # bit for bit, as the README promises
    assert_one_forward_per_evaluation(our_passes, stock_passes)
    assert {conds for _, conds in our_passes.by_sigma()} == {(0, 1)}  # ∅ drops out: s⁻ = s⁺ − 1


# ---- 2. s⁻ = 0 or an empty window ≡ stock KSampler(positive, empty) ----

@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.parametrize("settings", [{"neg_scale": 0.0}, {"start": 0.5, "end": 0.5}, {"start": 1.0, "end": 1.0}],
                         ids=["neg_scale_0", "empty_window", "window_at_end"])
def test_negative_off_equals_cfg_against_empty(host, stock_run, sampler, settings):
    stock_passes, our_passes = PassCounter(), PassCounter()
    stock = ksampler(stock_passes.counting(host.model), host.positive, host.empty, CFG, sampler, STEPS,
                     latent=host.latent)
    patched = patch(our_passes.counting(host.model), empty=host.empty, **settings)
    ours = ksampler(patched, host.positive, host.negative, CFG, sampler, STEPS, latent=host.latent)
    assert torch.equal(ours, stock)  # ∅ stands where stock's negative stands: the same arithmetic
    support.assert_changed(stock, stock_run(sampler))  # a patch ignoring the setting would give this
    assert_one_forward_per_evaluation(our_passes, stock_passes)
    assert {conds for _, conds in our_passes.by_sigma()} == {(0, 2)}  # ỹ drops out


def test_cfg_one_and_negative_off_is_one_pass(host):
    stock_passes, our_passes = PassCounter(), PassCounter()
    stock = ksampler(stock_passes.counting(host.model), host.positive, host.negative, 1.0, "euler", STEPS,
                     latent=host.latent)
    ours = ksampler(patch(our_passes.counting(host.model), neg_scale=0.0), host.positive, host.negative, 1.0,
                    "euler", STEPS, latent=host.latent)
    assert torch.equal(ours, stock)
    assert {conds for _, conds in our_passes.by_sigma()} == {(0,)}
    assert_one_forward_per_evaluation(our_passes, stock_passes)


# ---- 3. guider ≡ ComfyUI's DualCFGGuider(cond1=y, cond2=∅, negative=ỹ, cfg_conds=a, cfg_cond2_negative=b+1) ----

@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.parametrize("cfg, neg_scale", [(6.0, 2.0), (3.0, 7.5), (1.0, 3.0)])
def test_guider_equals_dual_cfg_guider(host, stock_run, sampler, cfg, neg_scale):
    from comfy_extras import nodes_custom_sampler as custom

    dual_passes, our_passes = PassCounter(), PassCounter()
    sigmas = ksampler_sigmas(host.model, sampler, STEPS)
    dual = custom.DualCFGGuider.execute(dual_passes.counting(host.model), host.positive, host.empty, host.negative,
                                        cfg, neg_scale + 1.0, "regular").result[0]
    reference = custom_advanced(dual, sampler, sigmas, host.latent)
    ours = custom_advanced(guider(host, our_passes.counting(host.model), cfg, neg_scale, empty=host.empty),
                           sampler, sigmas, host.latent)
    support.assert_close_to_scale(ours, reference)
    support.assert_changed(reference, stock_run(sampler, cfg))  # three-way is not the ordinary negative
    assert_one_forward_per_evaluation(our_passes, dual_passes)
    assert {conds for _, conds in our_passes.by_sigma()} == {(0, 1, 2)}


# ---- 4. the KSampler patch ≡ the guider at equal settings ----

@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.parametrize("settings", [
    {"neg_scale": 2.5},
    {"neg_scale": 4.0, "start": 0.25, "end": 0.75},
    {"neg_scale": 4.0, "start": 0.2, "end": 0.9, "ramp": "linear", "ramp_width": 0.3},
    {"neg_scale": 3.0, "start": 0.3, "end": 0.8, "unit": "timestep_percent", "ramp": "smoothstep", "ramp_width": 0.2},
    {"neg_scale": 3.0, "start": 0.0, "end": 0.6, "unit": "sigma"},
], ids=["three_way", "window", "linear_ramp", "percent_smoothstep", "sigma_unit"])
def test_patch_equals_guider(host, stock_run, sampler, settings):
    patch_passes, guider_passes = PassCounter(), PassCounter()
    via_patch = ksampler(patch(patch_passes.counting(host.model), empty=host.empty, **settings), host.positive,
                         host.negative, CFG, sampler, STEPS, latent=host.latent)
    sigmas = ksampler_sigmas(host.model, sampler, STEPS)
    via_guider = custom_advanced(guider(host, guider_passes.counting(host.model), CFG, empty=host.empty, **settings),
                                 sampler, sigmas, host.latent)
    support.assert_close_to_scale(via_patch, via_guider)
    support.assert_changed(via_patch, stock_run(sampler))  # both routes applied the settings
    assert patch_passes.by_sigma() == guider_passes.by_sigma()  # the KSampler route pays no extra pass
    assert [e.batch for e in patch_passes.evaluations] == [e.batch for e in guider_passes.evaluations]


# ---- 5. a partial window ≡ an independent per-step reference ----

@pytest.mark.parametrize("sampler", SAMPLERS)
def test_partial_window_equals_reference(host, sampler):
    steps, first, last, neg_scale = 10, 3, 7, 4.0  # negative on steps 3..6 of 10
    reference = three_way_reference(host.model, host.empty, CFG, neg_scale, window_of_steps(first, last))
    expected = ksampler(reference, host.positive, host.negative, CFG, sampler, steps, latent=host.latent)
    ours = ksampler(patch(host.model, neg_scale, first / steps, last / steps, empty=host.empty), host.positive,
                    host.negative, CFG, sampler, steps, latent=host.latent)
    support.assert_close_to_scale(ours, expected)
    without_window = ksampler(patch(host.model, neg_scale, empty=host.empty), host.positive, host.negative, CFG,
                              sampler, steps, latent=host.latent)
    support.assert_changed(ours, without_window)


def test_linear_ramp_equals_reference(host):
    steps, start, end, width, neg_scale = 10, 0.2, 0.9, 0.3, 4.0

    def ramp_weight(step, total):
        progress = step / total
        if not start <= progress < end:
            return 0.0
        return min(1.0, (progress - start) / width, (end - progress) / width)

    reference = three_way_reference(host.model, host.empty, CFG, neg_scale, ramp_weight)
    expected = ksampler(reference, host.positive, host.negative, CFG, "euler", steps, latent=host.latent)
    ours = ksampler(patch(host.model, neg_scale, start, end, ramp="linear", ramp_width=width, empty=host.empty),
                    host.positive, host.negative, CFG, "euler", steps, latent=host.latent)
    support.assert_close_to_scale(ours, expected)
    hard_window = ksampler(patch(host.model, neg_scale, start, end, empty=host.empty), host.positive, host.negative,
                           CFG, "euler", steps, latent=host.latent)
    support.assert_changed(ours, hard_window)


# ---- 6. pass counts: the research window, and samplers that evaluate between scheduled sigmas ----

def expected_conds(inside: bool, default_scale: bool):
    if inside:
        return (0, 1) if default_scale else (0, 1, 2)
    return (0, 2)


@pytest.mark.parametrize("neg_scale", [-1.0, 3.0])
def test_research_window_steps_5_to_15_of_30(host, neg_scale):
    passes = PassCounter()
    ksampler(patch(passes.counting(host.model), neg_scale, 0.1667, 0.5, empty=host.empty), host.positive,
             host.negative, CFG, "euler", 30, latent=host.latent)
    observed = [conds for _, conds in passes.by_sigma()]
    assert observed == [expected_conds(5 <= step < 15, neg_scale == -1.0) for step in range(30)]
    assert [e.batch for e in passes.evaluations] == [len(c) for c in observed]


def test_research_window_with_linear_ramp_as_in_the_readme(host):
    passes = PassCounter()
    ksampler(patch(passes.counting(host.model), -1.0, 0.1667, 0.5, ramp="linear", ramp_width=0.1, empty=host.empty),
             host.positive, host.negative, 7.0, "euler", 30, latent=host.latent)
    observed = [conds for _, conds in passes.by_sigma()]
    ramping = {6, 7, 13, 14}  # w = 1/3, 2/3 fading in; 2/3, 1/3 fading out: ∅ no longer drops out
    expected = [(0, 1, 2) if step in ramping else (0, 1) if 8 <= step <= 12 else (0, 2) for step in range(30)]
    assert observed == expected


@pytest.mark.parametrize("sampler", ["heun", "dpm_2", "dpmpp_2s_ancestral", "dpmpp_sde", "uni_pc"])
def test_membership_by_sigma_interval(host, sampler):
    """Evaluations at intermediate sigmas belong to the step whose interval (σ_{i+1}, σ_i] holds them."""
    steps = 12
    passes = PassCounter()
    sigmas = ksampler_sigmas(host.model, sampler, steps).tolist()
    ksampler(patch(passes.counting(host.model), 3.0, 4 / steps, 8 / steps, empty=host.empty), host.positive,
             host.negative, CFG, sampler, steps, latent=host.latent)
    lo, hi = sigmas[8], sigmas[4]
    observed = passes.by_sigma()
    between = [sigma for sigma, _ in observed if not any(math.isclose(sigma, s, rel_tol=1e-5) for s in sigmas)]
    # dpm_2 and dpmpp_sde really evaluate between scheduled sigmas (heun twice per step, at them).
    if sampler in ("dpm_2", "dpmpp_sde"):
        assert between
    for sigma, conds in observed:
        assert conds == expected_conds(lo < sigma <= hi * (1 + 1e-6), False), (sigma, conds)


@pytest.mark.parametrize("route", ["denoise", "advanced"])
def test_steps_unit_counts_this_runs_own_steps(host, route):
    """With denoise < 1 or KSamplerAdvanced start/end steps, 'steps' counts the steps this run executes."""
    import nodes

    passes = PassCounter()
    model = patch(passes.counting(host.model), 3.0, 0.5, 1.0, empty=host.empty)
    if route == "denoise":
        ksampler(model, host.positive, host.negative, CFG, "euler", 10, latent=host.latent, denoise=0.5)
    else:
        nodes.KSamplerAdvanced().sample(model, "enable", 1, 20, CFG, "euler", "normal", host.positive, host.negative,
                                        host.latent, 10, 20, "disable")
    observed = [conds for _, conds in passes.by_sigma()]
    assert observed == [expected_conds(step >= 5, False) for step in range(10)]


# ---- 7. bad input ----

def test_patch_without_empty_stops_before_the_first_pass(host):
    passes = PassCounter()
    with pytest.raises(ValueError, match=r"^Negative Guidance \(patch\): connect 'empty'.*cfg 6 "):
        ksampler(patch(passes.counting(host.model), neg_scale=2.0), host.positive, host.negative, CFG, "euler",
                 STEPS, latent=host.latent)
    assert passes.evaluations == []


def comfyui_validation(host, node_id, **kwargs) -> list:
    """The node's own errors as ComfyUI's execution.validate_inputs reports a bad prompt (before anything runs)."""
    import asyncio

    import execution
    import nodes

    for node_class in asyncio.run(asyncio.run(host.pack.comfy_entrypoint()).get_node_list()):
        nodes.NODE_CLASS_MAPPINGS[node_class.GET_SCHEMA().node_id] = node_class
    values = {"neg_scale": -1.0, "neg_start": 0.0, "neg_end": 1.0, "window_unit": "steps", "ramp": "hard",
              "ramp_width": 0.0, **kwargs}
    inputs = {"model": ["ckpt", 0], **values}
    if node_id == "NegativeGuidanceGuider":
        inputs.update({"positive": ["pos", 0], "negative": ["neg", 0], "cfg": values.get("cfg", 8.0)})
    prompt = {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "missing.safetensors"}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["ckpt", 1], "text": "a woman"}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["ckpt", 1], "text": "glasses"}},
        "node": {"class_type": node_id, "inputs": inputs},
    }
    _, errors, _ = asyncio.run(execution.validate_inputs("test", prompt, "node", {}))
    return errors


def test_patch_finds_the_cfg_of_the_samplers_it_feeds(host):
    """The patch checks its need for ∅ when it runs at the cfg of each plain-CFG sampler the API prompt shows it
    feeding, through other model nodes; not at a guider that keeps its own guidance (the patch stands aside there),
    not past a later patch (it replaces this one), not at a cfg that arrives by link (known only when sampling)."""
    link = lambda node, slot=0: [node, slot]  # noqa: E731
    prompt = {
        "patch": {"class_type": "NegativeGuidance", "inputs": {"model": link("ckpt")}},
        "lora": {"class_type": "LoraLoaderModelOnly", "inputs": {"model": link("patch"), "lora_name": "x",
                                                                 "strength_model": 1.0}},
        "through_lora": {"class_type": "KSampler", "inputs": {"model": link("lora"), "cfg": 6.0}},
        "advanced": {"class_type": "KSamplerAdvanced", "inputs": {"model": link("patch"), "cfg": 4}},
        "perp_neg": {"class_type": "PerpNegGuider", "inputs": {"model": link("patch"), "cfg": 7.0}},
        "later_patch": {"class_type": "NegativeGuidance", "inputs": {"model": link("patch")}},
        "after_later": {"class_type": "KSampler", "inputs": {"model": link("later_patch"), "cfg": 9.0}},
        "linked_cfg": {"class_type": "KSampler", "inputs": {"model": link("patch"), "cfg": link("primitive")}},
        "other_model": {"class_type": "KSampler", "inputs": {"model": link("ckpt"), "cfg": 3.0}},
    }
    cfgs = support.pack_module("nodes.negative_guidance").sampler_cfgs(prompt, "patch")
    assert sorted(cfgs) == [4.0, 6.0]


@pytest.mark.parametrize("node_id, name, value", [
    ("NegativeGuidanceGuider", "cfg", 1000.0),  # the stock KSampler refuses cfg > 100 too
    ("NegativeGuidanceGuider", "neg_scale", 500.0),
    ("NegativeGuidance", "neg_scale", -1.5),
    ("NegativeGuidance", "neg_end", 1.2),
    ("NegativeGuidance", "ramp_width", -0.5),
])
def test_comfyui_checks_every_bound_once_on_its_input(host, node_id, name, value):
    errors = comfyui_validation(host, node_id, **{name: value})
    assert [e["extra_info"]["input_name"] for e in errors] == [name], errors
    assert errors[0]["type"] in ("value_bigger_than_max", "value_smaller_than_min")


@pytest.mark.parametrize("node_id", ["NegativeGuidance", "NegativeGuidanceGuider"])
def test_valid_settings_pass_comfyui_validation(host, node_id):
    assert comfyui_validation(host, node_id, neg_scale=-0.9, neg_start=0.1667, neg_end=0.5, ramp="linear",
                              ramp_width=0.1) == []


@pytest.mark.parametrize("node_id, kwargs, message", [
    ("NegativeGuidanceGuider", {"neg_start": 0.7, "neg_end": 0.2}, "neg_start (0.7) must not be greater than neg_end"),
    ("NegativeGuidance", {"neg_start": 0.7, "neg_end": 0.2}, "neg_start (0.7) must not be greater than neg_end"),
    ("NegativeGuidanceGuider", {"neg_scale": math.nan}, "neg_scale must be a finite number"),
    ("NegativeGuidance", {"neg_scale": math.inf}, "neg_scale must be a finite number"),
    ("NegativeGuidanceGuider", {"cfg": math.nan}, "cfg must be a finite number"),
    ("NegativeGuidanceGuider", {"cfg": 1000.0}, "cfg must lie between 0 and 100, got 1000"),
    ("NegativeGuidance", {"neg_scale": 500.0}, "neg_scale must lie between -1 and 100"),
    ("NegativeGuidance", {"ramp": "cosine"}, "ramp must be one of hard, linear, smoothstep, got 'cosine'"),
    ("NegativeGuidance", {"neg_start": 0.4, "neg_end": 0.6, "ramp": "linear", "ramp_width": 0.2}, "too wide"),
    ("NegativeGuidanceGuider", {"neg_scale": 2.0}, "connect 'empty'"),
])
def test_node_refuses_bad_settings_when_it_runs(host, node_id, kwargs, message):
    """Values that arrive through links are None in validate_inputs: every setting is checked when the node runs,
    before the model is touched, with a sentence naming node and input."""
    values = {"cfg": 8.0, "neg_scale": -1.0, "neg_start": 0.0, "neg_end": 1.0, "window_unit": "steps",
              "ramp": "hard", "ramp_width": 0.0, **kwargs}
    classes = node_classes()
    shown = {"NegativeGuidanceGuider": "Negative Guidance Guider", "NegativeGuidance": "Negative Guidance (patch)"}
    with pytest.raises(ValueError, match=rf"^{re.escape(shown[node_id])}: .*{re.escape(message)}"):
        if node_id == "NegativeGuidanceGuider":
            classes.NegativeGuidanceGuider.execute(host.model, host.positive, host.negative, **values)
        else:
            del values["cfg"]
            classes.NegativeGuidance.execute(host.model, **values)


# ---- playing well with the rest of ComfyUI ----

def test_patch_stands_aside_for_other_guiders_and_says_so_once(host, caplog):
    from comfy_extras import nodes_custom_sampler as custom

    sigmas = ksampler_sigmas(host.model, "euler", STEPS)
    patched = patch(host.model, neg_scale=2.0, empty=host.empty)
    results = []
    for model in (host.model, patched, patched):
        dual = custom.DualCFGGuider.execute(model, host.positive, host.empty, host.negative, CFG, 3.0,
                                            "regular").result[0]
        results.append(custom_advanced(dual, "euler", sigmas, host.latent))
    assert torch.equal(results[1], results[0])  # the patch does nothing under another guider
    assert torch.equal(results[2], results[0])
    said = [r for r in caplog.records if "stands aside" in r.getMessage()]
    assert len(said) == 1 and "Guider_DualCFG" in said[0].getMessage()


def test_pack_loads_through_its_entrypoint(host):
    import asyncio

    extension = asyncio.run(host.pack.comfy_entrypoint())
    node_ids = [n.GET_SCHEMA().node_id for n in asyncio.run(extension.get_node_list())]
    assert node_ids[:2] == ["NegativeGuidance", "NegativeGuidanceGuider"]
    assert host.pack.WEB_DIRECTORY == "./js"
