"""At the defaults (neg_scale = -1, full window) the patch is the stock KSampler with every sampler ComfyUI lists,
CFG++ samplers and anything else that sets `disable_cfg1_optimization` included: same samples, same model calls,
with and without `empty` connected, at cfg 1, 1.5 and a usual cfg. Elsewhere the CFG hooks receive u*
(guidance.predict), checked here against stock equivalents where one exists.

Conditioning indices in pass counts: 0 = positive y, 1 = negative ỹ, 2 = empty ∅ (stock CFG: 0 = cond, 1 = uncond).
"""

import pytest
import torch

import support
from support import PassCounter, ksampler, patch

STEPS = 2
CFGS = [1.0, 1.5, 6.0]
CFG_PP_SAMPLERS = ["euler_cfg_pp", "euler_ancestral_cfg_pp", "dpmpp_2m_cfg_pp", "res_multistep_cfg_pp",
                   "gradient_estimation_cfg_pp"]


def all_samplers():
    support.boot_comfyui()
    import comfy.samplers

    return list(comfy.samplers.KSampler.SAMPLERS)


def self_attention_guidance(model):
    from comfy_extras.nodes_sag import SelfAttentionGuidance

    return SelfAttentionGuidance.execute(model, 0.5, 2.0).result[0]


def pass_pattern(counter: PassCounter):
    """Per model call: its sigma, batch size and how many conditionings went in (indices differ between routes)."""
    return [(round(e.sigma, 6), e.batch, len(e.conds)) for e in counter.evaluations]


def run(host, model, negative, cfg, sampler, patched=True, **patch_settings):
    """KSampler(positive, negative, cfg) on the model, patched with the given settings unless patched=False."""
    passes = PassCounter()
    counted = passes.counting(model)
    if patched:
        counted = patch(counted, **patch_settings)
    return ksampler(counted, host.positive, negative, cfg, sampler, STEPS, latent=host.latent), passes


@pytest.mark.parametrize("cfg", CFGS)
@pytest.mark.parametrize("sampler", all_samplers())
def test_defaults_equal_stock_with_every_sampler(host, sampler, cfg):
    stock, stock_passes = run(host, host.model, host.negative, cfg, sampler, patched=False)
    for empty in (None, host.empty):
        ours, our_passes = run(host, host.model, host.negative, cfg, sampler, empty=empty)
        assert torch.equal(ours, stock), (f"empty {'connected' if empty else 'absent'}: relative error "
                                          f"{support.relative_error(ours, stock):.3g}")
        assert pass_pattern(our_passes) == pass_pattern(stock_passes)
        assert all(2 not in e.conds for e in our_passes.evaluations)  # ∅ is never evaluated at weight 0


@pytest.mark.parametrize("cfg", CFGS)
def test_defaults_equal_stock_with_self_attention_guidance(host, cfg):
    """SAG sets disable_cfg1_optimization and calls the model again on the `uncond` conditioning it is handed."""
    model = self_attention_guidance(host.model)
    stock, stock_passes = run(host, model, host.negative, cfg, "euler", patched=False)
    for empty in (None, host.empty):
        ours, our_passes = run(host, model, host.negative, cfg, "euler", empty=empty)
        assert torch.equal(ours, stock)
        assert pass_pattern(our_passes) == pass_pattern(stock_passes)
    # SAG acted: its extra pass per step is there, and the samples moved.
    assert len(stock_passes.evaluations) == 2 * STEPS
    plain, _ = run(host, host.model, host.negative, cfg, "euler", patched=False)
    support.assert_changed(stock, plain)


@pytest.mark.parametrize("cfg", [1.0, 6.0])
@pytest.mark.parametrize("sampler", CFG_PP_SAMPLERS)
def test_negative_off_equals_stock_against_empty(host, sampler, cfg):
    """neg_scale = 0: u* = eps(∅), so CFG++ samplers renoise with eps(∅), as stock KSampler(positive, empty)."""
    stock, stock_passes = run(host, host.model, host.empty, cfg, sampler, patched=False)
    ours, our_passes = run(host, host.model, host.negative, cfg, sampler, neg_scale=0.0, empty=host.empty)
    assert torch.equal(ours, stock)
    assert pass_pattern(our_passes) == pass_pattern(stock_passes)
    assert {tuple(sorted(e.conds)) for e in our_passes.evaluations} == {(0, 2)}


@pytest.mark.parametrize("sampler", CFG_PP_SAMPLERS)
def test_three_way_hands_cfg_pp_the_blended_uncond(host, sampler):
    """At s⁺ ≠ 1 a CFG++ sampler renoises with u* = e + α(n − e): checked against the stock KSampler with a
    calc_cond_batch function that hands stock CFG [eps(y), u*] (compat_support.three_way_reference)."""
    from compat_support import three_way_reference

    cfg, neg_scale = 4.0, 2.0
    reference, _ = run(host, three_way_reference(host.model, host.empty, cfg, neg_scale), host.negative, cfg, sampler,
                       patched=False)
    ours, our_passes = run(host, host.model, host.negative, cfg, sampler, neg_scale=neg_scale, empty=host.empty)
    support.assert_close_to_scale(ours, reference)
    assert {tuple(sorted(e.conds)) for e in our_passes.evaluations} == {(0, 1, 2)}
    ordinary, _ = run(host, host.model, host.negative, cfg, sampler, patched=False)
    support.assert_changed(ours, ordinary)


@pytest.mark.parametrize("sampler", ["euler_cfg_pp", "dpmpp_2m_cfg_pp"])
def test_cfg_one_with_a_fixed_negative_hands_cfg_pp_the_empty_prediction(host, sampler):
    """s⁺ = 1 with s⁻ ≠ 0: no u* exists; the sampler is handed eps(∅) and the negative term comes after the hooks.
    Reference: stock KSampler(positive, empty, cfg 1) with a post-CFG function subtracting s⁻(eps(ỹ) − eps(∅))
    after the sampler's own (which is registered later, so it sees the stock cfg-1 result)."""
    import comfy.sampler_helpers
    import comfy.samplers

    neg_scale = 1.5
    negative_conds = comfy.sampler_helpers.convert_cond(host.negative)
    reference_model = host.model.clone()

    def subtract_negative(args):
        x, sigma, inner_model = args["input"], args["sigma"], args["model"]
        encoded = comfy.samplers.encode_model_conds(inner_model.extra_conds, negative_conds, x, x.device, "negative")
        (negative_pred,) = comfy.samplers.calc_cond_batch(inner_model, [encoded], x, sigma, args["model_options"])
        return args["denoised"] - neg_scale * (negative_pred - args["uncond_denoised"])

    reference_model.set_model_sampler_post_cfg_function(subtract_negative)
    reference, _ = run(host, reference_model, host.empty, 1.0, sampler, patched=False)
    ours, our_passes = run(host, host.model, host.negative, 1.0, sampler, neg_scale=neg_scale, empty=host.empty)
    support.assert_close_to_scale(ours, reference)
    assert {tuple(sorted(e.conds)) for e in our_passes.evaluations} == {(0, 1, 2)}
