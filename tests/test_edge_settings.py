"""Settings at the edges of what the nodes accept, on the real host: coefficients within the zero tolerance, runs
with a single sigma (nothing to sample), and wrong values that arrive through links.

Conditioning indices in pass counts: 0 = positive y, 1 = negative ỹ, 2 = empty ∅.
"""

import re

import pytest
import torch

import support
from compat_support import three_way_reference
from support import PassCounter, custom_advanced, guider, ksampler, ksampler_sigmas, patch

STEPS = 4


def node_classes():
    return support.pack_module("nodes.negative_guidance")


# ---- coefficients within the zero tolerance ----

@pytest.mark.parametrize("route", ["patch", "guider"])
def test_cfg_just_above_one_with_a_tiny_negative_scale(host, route):
    """cfg = 1 + 1.8e-6 (not 1 for ComfyUI's math.isclose) and s⁻ = 9e-7 = (cfg − 1)/2: every coefficient is
    decided by the same test, so nothing divides by a vanishing sum; all three prompts are evaluated, and the step
    is plain CFG against u* = e + α(n − e) with α = s⁻/(s⁺ − 1) = 1/2.

    The guidance term moves these samples by only ~3e-7 of their scale, far below the float rounding that separates
    the pack from DualCFGGuider (which combines the same predictions in another order): a comparison within
    tolerance could not see it. So the reference is compat_support.three_way_reference, the stock KSampler (or
    CFGGuider) with u* computed outside the pack as the README writes it, then ComfyUI's own cfg_function: the same
    arithmetic in the same order, so it must agree bit for bit. A wrong α, or this step taken as s⁺ = 1 (the hooks
    then see eps(∅) and the negative term comes after them), changes the samples' last bits."""
    from comfy_extras import nodes_custom_sampler as custom

    cfg, neg_scale = 1.0 + 1.8e-6, 9e-7
    sigmas = ksampler_sigmas(host.model, "euler", STEPS)
    reference_model = three_way_reference(host.model, host.empty, cfg, neg_scale)
    passes = PassCounter()
    if route == "patch":
        reference = ksampler(reference_model, host.positive, host.negative, cfg, "euler", STEPS, latent=host.latent)
        ours = ksampler(patch(passes.counting(host.model), neg_scale, empty=host.empty), host.positive, host.negative,
                        cfg, "euler", STEPS, latent=host.latent)
    else:
        reference = custom_advanced(custom.CFGGuider.execute(reference_model, host.positive, host.negative,
                                                             cfg).result[0], "euler", sigmas, host.latent)
        ours = custom_advanced(guider(passes.counting(host.model), host.positive, host.negative, cfg, neg_scale,
                                      empty=host.empty), "euler", sigmas, host.latent)
    assert torch.equal(ours, reference)
    assert {tuple(sorted(e.conds)) for e in passes.evaluations} == {(0, 1, 2)}
    # The reference is the formula: DualCFGGuider(y, ∅, ỹ) gives it too, within float rounding.
    dual = custom.DualCFGGuider.execute(host.model, host.positive, host.empty, host.negative, cfg, neg_scale + 1.0,
                                        "regular").result[0]
    support.assert_close_to_scale(reference, custom_advanced(dual, "euler", sigmas, host.latent))
    # ... and the guidance term is there, though tiny: the reference is not the positive prompt alone.
    positive_only = ksampler(host.model, host.positive, host.negative, 1.0, "euler", STEPS, latent=host.latent)
    assert not torch.equal(reference, positive_only)


@pytest.mark.parametrize("cfg", [1.0 + 1e-4, 1.0 + 1e-6, 1.0 + 1e-8])
@pytest.mark.parametrize("route", ["patch", "guider"])
def test_cfg_near_one_with_a_fixed_negative_keeps_its_precision(host, route, cfg):
    """cfg just above 1 (not 1 for math.isclose, e.g. from a link) with s⁻ 2: u* would need α = s⁻/(s⁺ − 1) up to
    2·10⁸ and float32 would round the guidance away (relative errors of 6.6e-4 at 1 + 1e-6 and 3e-2 at 1 + 1e-8
    before); beyond schedule.MAX_BLEND the pack combines without u*. DualCFGGuider(y, ∅, ỹ) computes the same formula
    without any blend."""
    from comfy_extras import nodes_custom_sampler as custom

    neg_scale = 2.0
    sigmas = ksampler_sigmas(host.model, "euler", STEPS)
    if route == "patch":
        ours = ksampler(patch(host.model, neg_scale, empty=host.empty), host.positive, host.negative, cfg, "euler",
                        STEPS, latent=host.latent)
    else:
        ours = custom_advanced(guider(host.model, host.positive, host.negative, cfg, neg_scale, empty=host.empty),
                               "euler", sigmas, host.latent)
    dual = custom.DualCFGGuider.execute(host.model, host.positive, host.empty, host.negative, cfg, neg_scale + 1.0,
                                        "regular").result[0]
    reference = custom_advanced(dual, "euler", sigmas, host.latent)
    support.assert_close_to_scale(ours, reference)
    support.assert_changed(reference, ksampler(host.model, host.positive, host.negative, cfg, "euler", STEPS,
                                               latent=host.latent))


def test_without_u_star_near_cfg_one_the_hooks_see_the_empty_prompt(host):
    """Where a run goes without u* although s⁺ ≠ 1 (cfg 1 + 1e-6, s⁻ 2), a sampler_cfg_function receives eps(∅) as
    the unconditional prediction and cond_scale s⁺, and the negative term comes after it: a hook that returns the
    plain CFG of what it gets leaves the result of DualCFGGuider(y, ∅, ỹ)."""
    import comfy.sampler_helpers
    import comfy.samplers
    from comfy_extras import nodes_custom_sampler as custom

    cfg, neg_scale = 1.0 + 1e-6, 2.0
    empty_conds = comfy.sampler_helpers.convert_cond(host.empty)
    seen = []

    def plain_cfg(args):
        x, sigma, inner_model = args["input"], args["sigma"], args["model"]
        encoded = comfy.samplers.encode_model_conds(inner_model.extra_conds, empty_conds, x, x.device, "negative")
        empty_pred, = comfy.samplers.calc_cond_batch(inner_model, [encoded], x, sigma, args["model_options"])
        seen.append((args["cond_scale"], support.relative_error(args["uncond_denoised"], empty_pred)))
        return args["uncond"] + args["cond_scale"] * (args["cond"] - args["uncond"])

    model = host.model.clone()
    model.set_model_sampler_cfg_function(plain_cfg)
    sigmas = ksampler_sigmas(host.model, "euler", STEPS)
    ours = custom_advanced(guider(model, host.positive, host.negative, cfg, neg_scale, empty=host.empty), "euler",
                           sigmas, host.latent)
    assert len(seen) == STEPS and all(scale == cfg for scale, _ in seen)
    assert max(error for _, error in seen) < support.RELATIVE_TOLERANCE
    dual = custom.DualCFGGuider.execute(host.model, host.positive, host.empty, host.negative, cfg, neg_scale + 1.0,
                                        "regular").result[0]
    support.assert_close_to_scale(ours, custom_advanced(dual, "euler", sigmas, host.latent))


@pytest.mark.parametrize("cfg", [1.0 + 1e-10, 1.0 + 1e-6])
def test_defaults_near_cfg_one_follow_comfyuis_test(host, cfg):
    """At the defaults the pass pattern and samples are the stock KSampler's on both sides of math.isclose(cfg, 1)."""
    stock_passes, our_passes = PassCounter(), PassCounter()
    stock = ksampler(stock_passes.counting(host.model), host.positive, host.negative, cfg, "euler", STEPS,
                     latent=host.latent)
    ours = ksampler(patch(our_passes.counting(host.model)), host.positive, host.negative, cfg, "euler", STEPS,
                    latent=host.latent)
    assert torch.equal(ours, stock)
    assert [e.batch for e in our_passes.evaluations] == [e.batch for e in stock_passes.evaluations]


# ---- a run with a single sigma: nothing to sample, as in ComfyUI ----

def single_sigma(host):
    """SplitSigmas at the last step: its second output holds the final sigma alone."""
    from comfy_extras import nodes_custom_sampler as custom

    sigmas = ksampler_sigmas(host.model, "euler", STEPS)
    return custom.SplitSigmas.execute(sigmas, STEPS).result[1]


def noised_latent(host):
    return {"samples": torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))}


@pytest.mark.parametrize("route", ["guider", "patch"])
def test_split_sigmas_at_the_last_step(host, route):
    """The guider's or the patch's sampling starts with one sigma (the pack runs its run set-up on it) and, as
    ComfyUI's CFGGuider, returns the latent without a model evaluation."""
    from comfy_extras import nodes_custom_sampler as custom

    sigmas = single_sigma(host)
    assert sigmas.shape == (1,)
    latent = noised_latent(host)
    stock = custom_advanced(custom.CFGGuider.execute(host.model, host.positive, host.negative, 6.0).result[0],
                            "euler", sigmas, latent)
    passes = PassCounter()
    if route == "guider":
        ours_guider = guider(passes.counting(host.model), host.positive, host.negative, 6.0, 3.0, empty=host.empty)
    else:
        ours_guider = custom.CFGGuider.execute(patch(passes.counting(host.model), 3.0, empty=host.empty),
                                               host.positive, host.negative, 6.0).result[0]
    ours = custom_advanced(ours_guider, "euler", sigmas, latent)
    assert torch.equal(ours, stock)
    assert passes.evaluations == []


@pytest.mark.parametrize("step", [2, STEPS])
def test_ksampler_advanced_with_start_equal_to_end_never_reaches_the_patch(host, step):
    """A guard, not a test of the pack: with start_at_step = end_at_step ComfyUI's KSampler.sample (0.3.75 and 0.33.0)
    returns the latent as it came, before any guider samples, so the patch's wrapper is never called; no route of
    KSamplerAdvanced reaches it with nothing to sample. This checks that the patched model still gives exactly that,
    with no model evaluation. (test_split_sigmas_at_the_last_step is the run with nothing to sample that does reach
    the pack.)"""
    import nodes

    latent = noised_latent(host)
    passes = PassCounter()
    results = []
    for model in (host.model, patch(passes.counting(host.model), 3.0, empty=host.empty)):
        results.append(nodes.KSamplerAdvanced().sample(model, "enable", 1, STEPS, 6.0, "euler", "normal",
                                                       host.positive, host.negative, latent, step, step,
                                                       "disable")[0]["samples"])
    stock, ours = results
    assert torch.equal(stock, latent["samples"])  # ComfyUI returned before sampling
    assert torch.equal(ours, stock)
    assert passes.evaluations == []


# ---- values that reach the node through links are checked when sampling starts ----

@pytest.mark.parametrize("route", ["patch", "guider"])
@pytest.mark.parametrize("settings, message", [
    ({"neg_start": 0.7, "neg_end": 0.2}, "neg_start (0.7) must not be greater than neg_end (0.2)"),
    ({"neg_scale": -2.0}, "neg_scale must lie between -1 and 100"),  # any value in [-1, 0) follows cfg
    ({"ramp": "linear", "ramp_width": 0.6, "neg_start": 0.2, "neg_end": 0.8}, "too wide"),
])
def test_linked_values_are_checked_when_sampling_starts(host, route, settings, message):
    """validate_inputs sees None for a linked input; execute gets the value, and sampling stops on it, before any
    model call, with the sentence validate_inputs would have given."""
    values = {"neg_scale": 2.0, "neg_start": 0.0, "neg_end": 1.0, "window_unit": "steps", "ramp": "hard",
              "ramp_width": 0.0, **settings}
    passes = PassCounter()
    model = passes.counting(host.model)
    node = "Negative Guidance (patch)" if route == "patch" else "Negative Guidance Guider"
    with pytest.raises(ValueError, match=rf"^{re.escape(node)}: .*{re.escape(message)}"):
        if route == "patch":
            patched = node_classes().NegativeGuidance.execute(model, empty=host.empty, **values).result[0]
            ksampler(patched, host.positive, host.negative, 6.0, "euler", STEPS, latent=host.latent)
        else:
            guide = node_classes().NegativeGuidanceGuider.execute(model, host.positive, host.negative, 6.0,
                                                                  empty=host.empty, **values).result[0]
            custom_advanced(guide, "euler", ksampler_sigmas(host.model, "euler", STEPS), host.latent)
    assert passes.evaluations == []
