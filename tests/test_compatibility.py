"""The compatibility matrix on the real ComfyUI host: the patch and the guider next to ComfyUI's model
patches (RescaleCFG, CFGZeroStar, PerturbedAttentionGuidance), a ControlNet, area and mask conditioning,
KSamplerAdvanced, denoise < 1, an inpainting noise mask, batch size > 1 and a Flux-style DiT.

References: the stock nodes where the settings make the pack an identity (defaults ≡ KSampler(positive, negative),
neg_scale = 0 ≡ KSampler(positive, empty), guider ≡ DualCFGGuider), and elsewhere compat_support.three_way_reference,
ComfyUI's stock KSampler (or CFGGuider) with the three-way formula computed outside the pack. Every test also checks
that the feature it is about changed the samples, so it could not pass with that feature ignored.

Conditioning indices in pass counts: 0 = positive y, 1 = negative ỹ, 2 = empty ∅.
"""

import pytest
import torch

import support
from compat_support import (build_tiny_controlnet, build_tiny_flux, three_way_reference, window_of_steps)
from support import PassCounter, custom_advanced, guider, ksampler, ksampler_sigmas, patch

CFG = 6.0
STEPS = 6
NEG_SCALE = 3.0  # three-way: s⁻ ≠ s⁺ − 1, so ∅ takes part


assert_close_to_scale, assert_changed = support.assert_close_to_scale, support.assert_changed
BIT_EXACT_CHANGE = 1e-7  # assert_changed's tolerance after a torch.equal comparison: any change ≥ 1e-5 of the scale


def cfg_guider(model, positive, negative, cfg):
    from comfy_extras import nodes_custom_sampler as custom

    return custom.CFGGuider.execute(model, positive, negative, cfg).result[0]


def dual_cfg_guider(model, positive, negative, empty, cfg, neg_scale):
    """ComfyUI's DualCFGGuider with the settings at which it computes the three-way formula over the whole run."""
    from comfy_extras import nodes_custom_sampler as custom

    return custom.DualCFGGuider.execute(model, positive, empty, negative, cfg, neg_scale + 1.0, "regular").result[0]


def batches(counter: PassCounter):
    """Per model call: (sigma, batch size); conditioning indices differ between guiders, batch layouts must not."""
    return [(round(e.sigma, 5), e.batch) for e in counter.evaluations]


# ---- ComfyUI's model patches: RescaleCFG, CFGZeroStar, PerturbedAttentionGuidance ----

def rescale_cfg(model):
    from comfy_extras.nodes_model_advanced import RescaleCFG

    return RescaleCFG().patch(model, 0.7)[0]


def cfg_zero_star(model):
    from comfy_extras.nodes_cfg import CFGZeroStar

    return CFGZeroStar.execute(model).result[0]


def perturbed_attention(model):
    from comfy_extras.nodes_pag import PerturbedAttentionGuidance

    return PerturbedAttentionGuidance.execute(model, 3.0).result[0]


MODEL_PATCHES = {"RescaleCFG": rescale_cfg, "CFGZeroStar": cfg_zero_star, "PerturbedAttentionGuidance": perturbed_attention}


@pytest.mark.parametrize("order", ["pack_first", "pack_last"])
@pytest.mark.parametrize("name", MODEL_PATCHES)
def test_model_patch_with_defaults_equals_stock(host, name, order):
    """KSampler(positive, negative, cfg) + that node, with or without the pack's patch at its defaults."""
    apply = MODEL_PATCHES[name]
    stock_passes, our_passes = PassCounter(), PassCounter()
    stock = ksampler(apply(stock_passes.counting(host.model)), host.positive, host.negative, CFG, "euler", STEPS,
                     latent=host.latent)
    counted = our_passes.counting(host.model)
    ours_model = apply(patch(counted, empty=host.empty)) if order == "pack_first" else patch(apply(counted),
                                                                                              empty=host.empty)
    ours = ksampler(ours_model, host.positive, host.negative, CFG, "euler", STEPS, latent=host.latent)
    assert torch.equal(ours, stock)
    assert batches(our_passes) == batches(stock_passes)  # PAG: its own extra forward, as in the stock run
    # Compared bit for bit, so a change far above float rounding shows the node acted (RescaleCFG moves these
    # tiny models' samples by only ~1e-4 of their scale).
    assert_changed(stock, ksampler(host.model, host.positive, host.negative, CFG, "euler", STEPS, latent=host.latent),
                   tolerance=BIT_EXACT_CHANGE)


@pytest.mark.parametrize("name", MODEL_PATCHES)
def test_model_patch_with_guider_defaults_equals_cfg_guider(host, name):
    """The guider at neg_scale = -1 (ordinary negative) + that node ≡ ComfyUI's CFGGuider + that node."""
    apply = MODEL_PATCHES[name]
    sigmas = ksampler_sigmas(host.model, "euler", STEPS)
    stock_passes, our_passes = PassCounter(), PassCounter()
    stock = custom_advanced(cfg_guider(apply(stock_passes.counting(host.model)), host.positive, host.negative, CFG),
                            "euler", sigmas, host.latent)
    ours = custom_advanced(guider(apply(our_passes.counting(host.model)), host.positive, host.negative, CFG,
                                  empty=host.empty), "euler", sigmas, host.latent)
    assert torch.equal(ours, stock)
    assert batches(our_passes) == batches(stock_passes)


@pytest.mark.parametrize("route", ["patch", "guider"])
@pytest.mark.parametrize("name", MODEL_PATCHES)
def test_model_patch_sees_cfg_against_blended_negative(host, name, route):
    """Three-way with a window: the node receives (cond = eps(y), uncond = u*, cond_scale = s⁺), as the stock
    KSampler would hand it if u* were the negative's prediction."""
    apply = MODEL_PATCHES[name]
    first, last = 1, 4
    expected = ksampler(apply(three_way_reference(host.model, host.empty, CFG, NEG_SCALE,
                                                  window_of_steps(first, last))),
                        host.positive, host.negative, CFG, "euler", STEPS, latent=host.latent)
    start, end = first / STEPS, last / STEPS
    if route == "patch":
        ours = ksampler(apply(patch(host.model, NEG_SCALE, start, end, empty=host.empty)), host.positive,
                        host.negative, CFG, "euler", STEPS, latent=host.latent)
        without_node = ksampler(patch(host.model, NEG_SCALE, start, end, empty=host.empty), host.positive,
                                host.negative, CFG, "euler", STEPS, latent=host.latent)
    else:
        sigmas = ksampler_sigmas(host.model, "euler", STEPS)
        ours = custom_advanced(guider(apply(host.model), host.positive, host.negative, CFG, NEG_SCALE, start, end,
                                      empty=host.empty), "euler", sigmas, host.latent)
        without_node = custom_advanced(guider(host.model, host.positive, host.negative, CFG, NEG_SCALE, start, end,
                                              empty=host.empty), "euler", sigmas, host.latent)
    # RescaleCFG moves these samples by ~1e-3 of their scale; both routes match the reference to rounding.
    assert_close_to_scale(ours, expected, tolerance=1e-6)
    assert_changed(ours, without_node, tolerance=1e-6)


@pytest.mark.parametrize("name", ["RescaleCFG", "CFGZeroStar"])
def test_cfg_patches_leave_cfg_one_unchanged(host, name):
    """At s⁺ = 1 there is no CFG term: the guided prediction goes in as cond at cond_scale 1, which RescaleCFG and
    CFGZeroStar leave as it is (so the negative still acts), exactly as they leave the stock KSampler at cfg 1."""
    apply = MODEL_PATCHES[name]
    sigmas = ksampler_sigmas(host.model, "euler", STEPS)
    plain = custom_advanced(guider(host.model, host.positive, host.negative, 1.0, NEG_SCALE, empty=host.empty),
                            "euler", sigmas, host.latent)
    with_node = custom_advanced(guider(apply(host.model), host.positive, host.negative, 1.0, NEG_SCALE,
                                       empty=host.empty), "euler", sigmas, host.latent)
    assert_close_to_scale(with_node, plain)
    stock_cfg_one = ksampler(host.model, host.positive, host.negative, 1.0, "euler", STEPS, latent=host.latent)
    assert_close_to_scale(ksampler(apply(host.model), host.positive, host.negative, 1.0, "euler", STEPS,
                                   latent=host.latent), stock_cfg_one)
    assert_changed(plain, stock_cfg_one)  # the negative acts at s⁺ = 1


# ---- ControlNet on the conditionings ----

@pytest.fixture(scope="module")
def controlled(host):
    """positive, negative and ∅ with a tiny random ControlNet, applied by the stock ControlNetApplyAdvanced:
    once to (positive, negative) as a workflow does, once more to ∅."""
    import nodes

    control_net = build_tiny_controlnet()
    torch.manual_seed(3)
    image = torch.rand(1, 64, 64, 3)
    apply = nodes.ControlNetApplyAdvanced().apply_controlnet
    positive, negative = apply(host.positive, host.negative, control_net, image, 1.0, 0.0, 1.0)
    empty, _ = apply(host.empty, host.empty, control_net, image, 1.0, 0.0, 1.0)
    return positive, negative, empty


def test_controlnet_defaults_equal_stock(host, controlled):
    positive, negative, empty = controlled
    stock_passes, our_passes = PassCounter(), PassCounter()
    stock = ksampler(stock_passes.counting(host.model), positive, negative, CFG, "euler", STEPS, latent=host.latent)
    ours = ksampler(patch(our_passes.counting(host.model), empty=empty), positive, negative, CFG, "euler", STEPS,
                    latent=host.latent)
    assert torch.equal(ours, stock)
    assert batches(our_passes) == batches(stock_passes) == [(s, 2) for s, _ in batches(stock_passes)]
    assert_changed(stock, ksampler(host.model, host.positive, host.negative, CFG, "euler", STEPS, latent=host.latent))


def test_controlnet_negative_off_equals_stock_against_empty(host, controlled):
    import nodes

    positive, negative, empty = controlled
    # The stock run needs y and ∅ under one ControlNet apply, as a workflow would wire it.
    control_net = build_tiny_controlnet()
    torch.manual_seed(3)
    image = torch.rand(1, 64, 64, 3)
    stock_positive, stock_empty = nodes.ControlNetApplyAdvanced().apply_controlnet(host.positive, host.empty,
                                                                                   control_net, image, 1.0, 0.0, 1.0)
    stock = ksampler(host.model, stock_positive, stock_empty, CFG, "euler", STEPS, latent=host.latent)
    ours = ksampler(patch(host.model, 0.0, empty=empty), positive, negative, CFG, "euler", STEPS, latent=host.latent)
    # Not bit-exact: ∅ carries its own ControlNet object here, so it runs as a forward of its own.
    assert_close_to_scale(ours, stock)
    assert_changed(stock, ksampler(host.model, positive, negative, CFG, "euler", STEPS, latent=host.latent))


def three_way_against_dual_cfg(host, conds, route):
    """The pack (patch or guider) at three-way settings and DualCFGGuider(y, ∅, ỹ) on the same conditionings,
    both sampled and pass-counted; asserts the samples agree and returns both pass counters."""
    positive, negative, empty = conds
    sigmas = ksampler_sigmas(host.model, "euler", STEPS)
    dual_passes, our_passes = PassCounter(), PassCounter()
    reference = custom_advanced(dual_cfg_guider(dual_passes.counting(host.model), positive, negative, empty, CFG,
                                                NEG_SCALE), "euler", sigmas, host.latent)
    if route == "patch":
        ours = ksampler(patch(our_passes.counting(host.model), NEG_SCALE, empty=empty), positive, negative, CFG,
                        "euler", STEPS, latent=host.latent)
    else:
        ours = custom_advanced(guider(our_passes.counting(host.model), positive, negative, CFG, NEG_SCALE,
                                      empty=empty), "euler", sigmas, host.latent)
    assert_close_to_scale(ours, reference)
    assert_changed(reference, ksampler(host.model, positive, negative, CFG, "euler", STEPS, latent=host.latent))
    return ours, sigmas, our_passes, dual_passes


@pytest.mark.parametrize("route", ["patch", "guider"])
def test_controlnet_three_way_equals_dual_cfg_guider(host, controlled, route):
    _, _, our_passes, dual_passes = three_way_against_dual_cfg(host, controlled, route)
    # ∅ carries its own ControlNet object, so calc_cond_batch cannot stack it with y and ỹ: two calls per step
    # (batch 2 + batch 1), exactly as for DualCFGGuider.
    assert sorted(batches(our_passes)) == sorted(batches(dual_passes))
    assert sorted({b for _, b in batches(our_passes)}) == [1, 2]


# ---- area and mask conditioning ----

@pytest.fixture(scope="module")
def regional(host):
    """positive with an area, negative with a mask, ∅ with a mask, all from ComfyUI's stock nodes."""
    import nodes

    positive = nodes.ConditioningSetArea().append(host.positive, 32, 64, 0, 0, 1.0)[0]
    positive = nodes.ConditioningCombine().combine(positive, host.encode("a red hat"))[0]
    mask = torch.zeros(1, 64, 64)
    mask[:, :, 32:] = 1.0
    negative = nodes.ConditioningSetMask().append(host.negative, mask, "default", 1.0)[0]
    empty = nodes.ConditioningSetMask().append(host.empty, 1.0 - mask * 0.5, "default", 1.0)[0]
    return positive, negative, empty


def test_area_and_mask_defaults_equal_stock(host, regional):
    positive, negative, empty = regional
    stock_passes, our_passes = PassCounter(), PassCounter()
    stock = ksampler(stock_passes.counting(host.model), positive, negative, CFG, "euler", STEPS, latent=host.latent)
    ours = ksampler(patch(our_passes.counting(host.model), empty=empty), positive, negative, CFG, "euler", STEPS,
                    latent=host.latent)
    assert torch.equal(ours, stock)
    assert batches(our_passes) == batches(stock_passes)
    assert_changed(stock, ksampler(host.model, host.positive, host.negative, CFG, "euler", STEPS, latent=host.latent))


@pytest.mark.parametrize("route", ["patch", "guider"])
def test_area_and_mask_three_way_equals_dual_cfg_guider(host, regional, route):
    ours, sigmas, our_passes, dual_passes = three_way_against_dual_cfg(host, regional, route)
    assert sorted(batches(our_passes)) == sorted(batches(dual_passes))
    assert_changed(ours, custom_advanced(guider(host.model, host.positive, host.negative, CFG, NEG_SCALE,
                                                empty=host.empty), "euler", sigmas, host.latent))


# ---- KSamplerAdvanced, denoise < 1, inpainting noise mask, batch > 1: defaults ≡ stock, three-way ≡ reference ----

def noisy_latent(batch=1):
    torch.manual_seed(11)
    return {"samples": torch.randn(batch, 4, 8, 8)}


def masked_latent():
    import nodes

    mask = torch.zeros(1, 64, 64)
    mask[:, :, :32] = 1.0  # repaint the left half
    return nodes.SetLatentNoiseMask().set_mask(noisy_latent(), mask)[0]


def run_advanced(model, host, latent, steps=10, start=3, end=8):
    import nodes

    return nodes.KSamplerAdvanced().sample(model, "enable", 1, steps, CFG, "euler", "normal", host.positive,
                                           host.negative, latent, start, end, "enable")[0]["samples"]


SAMPLING_ROUTES = {
    # name: (run(model, host, latent), latent, the run's own number of steps)
    "ksampler_advanced_3_to_8_of_10": (lambda m, h, lat: run_advanced(m, h, lat), noisy_latent, 5),
    "denoise_0.6": (lambda m, h, lat: ksampler(m, h.positive, h.negative, CFG, "euler", 10, latent=lat, denoise=0.6),
                    noisy_latent, 10),  # KSampler keeps 10 steps: the last 10 of a 16-step schedule
    "noise_mask": (lambda m, h, lat: ksampler(m, h.positive, h.negative, CFG, "euler", STEPS, latent=lat),
                   masked_latent, STEPS),
    "batch_2": (lambda m, h, lat: ksampler(m, h.positive, h.negative, CFG, "euler", STEPS, latent=lat),
                lambda: noisy_latent(2), STEPS),
}


@pytest.mark.parametrize("name", SAMPLING_ROUTES)
def test_sampling_route_defaults_equal_stock(host, name):
    run, latent, _ = SAMPLING_ROUTES[name]
    stock_passes, our_passes = PassCounter(), PassCounter()
    stock = run(stock_passes.counting(host.model), host, latent())
    ours = run(patch(our_passes.counting(host.model), empty=host.empty), host, latent())
    assert torch.equal(ours, stock)
    assert batches(our_passes) == batches(stock_passes)


@pytest.mark.parametrize("name", SAMPLING_ROUTES)
def test_sampling_route_window_equals_reference(host, name):
    """A window over the second half of the run's own steps; passes per step are the minimum for each step."""
    run, latent, run_steps = SAMPLING_ROUTES[name]
    first = run_steps // 2
    expected = run(three_way_reference(host.model, host.empty, CFG, NEG_SCALE, window_of_steps(first, run_steps)),
                   host, latent())
    passes = PassCounter()
    ours = run(patch(passes.counting(host.model), NEG_SCALE, first / run_steps, 1.0, empty=host.empty), host,
               latent())
    assert_close_to_scale(ours, expected)
    assert_changed(ours, run(patch(host.model, empty=host.empty), host, latent()))
    batch = latent()["samples"].shape[0]
    observed = [conds for _, conds in passes.by_sigma()]
    assert observed == [(0, 1, 2) if step >= first else (0, 2) for step in range(run_steps)]
    assert [e.batch for e in passes.evaluations] == [batch * len(conds) for conds in observed]


# The same routes for the guider (SamplerCustomAdvanced): a slice of the sigmas stands for KSamplerAdvanced's start
# and end steps (as SplitSigmas gives it), KSampler's denoise sigmas for denoise < 1.
GUIDER_ROUTES = {
    # name: (sigmas(model), latent, the run's own number of steps)
    "sigmas_3_to_8_of_10": (lambda m: ksampler_sigmas(m, "euler", 10)[3:9], noisy_latent, 5),
    "denoise_0.6": (lambda m: ksampler_sigmas(m, "euler", 10, denoise=0.6), noisy_latent, 10),
    "noise_mask": (lambda m: ksampler_sigmas(m, "euler", STEPS), masked_latent, STEPS),
    "batch_2": (lambda m: ksampler_sigmas(m, "euler", STEPS), lambda: noisy_latent(2), STEPS),
}


@pytest.mark.parametrize("name", GUIDER_ROUTES)
def test_guider_route_defaults_equal_cfg_guider(host, name):
    sigmas_of, latent, _ = GUIDER_ROUTES[name]
    sigmas = sigmas_of(host.model)
    stock_passes, our_passes = PassCounter(), PassCounter()
    stock = custom_advanced(cfg_guider(stock_passes.counting(host.model), host.positive, host.negative, CFG), "euler",
                            sigmas, latent())
    ours = custom_advanced(guider(our_passes.counting(host.model), host.positive, host.negative, CFG,
                                  empty=host.empty), "euler", sigmas, latent())
    assert torch.equal(ours, stock)
    assert batches(our_passes) == batches(stock_passes)


@pytest.mark.parametrize("name", GUIDER_ROUTES)
def test_guider_route_window_equals_reference(host, name):
    """A window over the second half of the run's own steps, against CFGGuider on the independent reference."""
    sigmas_of, latent, run_steps = GUIDER_ROUTES[name]
    sigmas = sigmas_of(host.model)
    first = run_steps // 2
    reference = three_way_reference(host.model, host.empty, CFG, NEG_SCALE, window_of_steps(first, run_steps))
    expected = custom_advanced(cfg_guider(reference, host.positive, host.negative, CFG), "euler", sigmas, latent())
    passes = PassCounter()
    ours = custom_advanced(guider(passes.counting(host.model), host.positive, host.negative, CFG, NEG_SCALE,
                                  first / run_steps, 1.0, empty=host.empty), "euler", sigmas, latent())
    assert_close_to_scale(ours, expected)
    assert_changed(ours, custom_advanced(guider(host.model, host.positive, host.negative, CFG, empty=host.empty),
                                         "euler", sigmas, latent()))
    batch = latent()["samples"].shape[0]
    observed = [conds for _, conds in passes.by_sigma()]
    assert observed == [(0, 1, 2) if step >= first else (0, 2) for step in range(run_steps)]
    assert [e.batch for e in passes.evaluations] == [batch * len(conds) for conds in observed]


def test_noise_mask_keeps_the_unmasked_region(host):
    latent = masked_latent()
    ours = ksampler(patch(host.model, NEG_SCALE, empty=host.empty), host.positive, host.negative, CFG, "euler", STEPS,
                    latent=latent)
    # Not bit for bit: the latent goes through the model's latent scaling in and out.
    assert_close_to_scale(ours[..., 4:], latent["samples"][..., 4:])
    assert_changed(ours[..., :4], latent["samples"][..., :4])


# ---- a non-UNet family: a tiny Flux-style DiT ----

@pytest.fixture(scope="module")
def flux(host):
    torch.manual_seed(5)
    return build_tiny_flux(), {"samples": torch.zeros(1, 16, 8, 8)}


def test_flux_defaults_equal_stock(host, flux):
    model, latent = flux
    stock_passes, our_passes = PassCounter(), PassCounter()
    stock = ksampler(stock_passes.counting(model), host.positive, host.negative, CFG, "euler", STEPS,
                     scheduler="simple", latent=latent)
    ours = ksampler(patch(our_passes.counting(model), empty=host.empty), host.positive, host.negative, CFG, "euler",
                    STEPS, scheduler="simple", latent=latent)
    assert torch.equal(ours, stock)
    assert batches(our_passes) == batches(stock_passes) == [(s, 2) for s, _ in batches(stock_passes)]


def test_flux_negative_off_equals_stock_against_empty(host, flux):
    model, latent = flux
    our_passes = PassCounter()
    stock = ksampler(model, host.positive, host.empty, CFG, "euler", STEPS, scheduler="simple", latent=latent)
    ours = ksampler(patch(our_passes.counting(model), 0.0, empty=host.empty), host.positive, host.negative, CFG,
                    "euler", STEPS, scheduler="simple", latent=latent)
    assert torch.equal(ours, stock)
    assert {conds for _, conds in our_passes.by_sigma()} == {(0, 2)}
    assert_changed(ours, ksampler(model, host.positive, host.negative, CFG, "euler", STEPS, scheduler="simple",
                                  latent=latent))


@pytest.mark.parametrize("route", ["patch", "guider"])
def test_flux_three_way_equals_dual_cfg_guider(host, flux, route):
    model, latent = flux
    sigmas = ksampler_sigmas(model, "euler", STEPS, scheduler="simple")
    reference = custom_advanced(dual_cfg_guider(model, host.positive, host.negative, host.empty, CFG, NEG_SCALE),
                                "euler", sigmas, latent)
    passes = PassCounter()
    if route == "patch":
        ours = ksampler(patch(passes.counting(model), NEG_SCALE, empty=host.empty), host.positive, host.negative, CFG,
                        "euler", STEPS, scheduler="simple", latent=latent)
    else:
        ours = custom_advanced(guider(passes.counting(model), host.positive, host.negative, CFG, NEG_SCALE,
                                      empty=host.empty), "euler", sigmas, latent)
    assert_close_to_scale(ours, reference)
    assert_changed(reference, ksampler(model, host.positive, host.negative, CFG, "euler", STEPS, scheduler="simple",
                                       latent=latent))
    assert [(conds, e.batch) for (_, conds), e in zip(passes.by_sigma(), passes.evaluations)] == [((0, 1, 2), 3)] * STEPS


def test_flux_window_equals_reference(host, flux):
    model, latent = flux
    expected = ksampler(three_way_reference(model, host.empty, CFG, NEG_SCALE, window_of_steps(2, 4)), host.positive,
                        host.negative, CFG, "euler", STEPS, scheduler="simple", latent=latent)
    ours = ksampler(patch(model, NEG_SCALE, 2 / STEPS, 4 / STEPS, empty=host.empty), host.positive, host.negative,
                    CFG, "euler", STEPS, scheduler="simple", latent=latent)
    assert_close_to_scale(ours, expected)
    assert_changed(ours, ksampler(patch(model, NEG_SCALE, empty=host.empty), host.positive, host.negative, CFG,
                                  "euler", STEPS, scheduler="simple", latent=latent))
