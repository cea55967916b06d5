"""Model nodes that wrap ComfyUI's PREDICT_NOISE executor keep working next to the patch, in either order: ComfyUI's
LazyCache (which skips model evaluations), EasyCache (which skips the diffusion model per conditioning) and
wrappers that change guider.cfg for some evaluations (ComfyUI's CFGOverride on newer releases; an equivalent wrapper
here on releases without it).

At the defaults the reference is the stock KSampler under the same node (bit for bit). With a three-way window it is
compat_support.three_way_reference (the stock KSampler with the formula computed outside the pack) under the same
node.

Conditioning indices in pass counts: 0 = positive y, 1 = negative ỹ, 2 = empty ∅.
"""

import pytest
import torch

import support
from compat_support import three_way_reference, window_of_steps
from support import PassCounter, ksampler, ksampler_sigmas, patch

STEPS = 12
CFG = 6.0
NEG_SCALE = 3.0  # three-way: s⁻ ≠ s⁺ − 1 at cfg 6 and at the override's cfg 2, so y, ỹ and ∅ all take part
# The negative acts on steps 2..7 (0-based) of 12. It opens on a step both caches evaluate: EasyCache keeps one cached
# difference per conditioning and has none for a prompt first evaluated on a step it skips (KeyError), as with a
# negative delayed by ComfyUI's own ConditioningSetTimestepRange.
WINDOW = (2, 8)


def three_way(model, empty):
    """The patch with s⁻ = NEG_SCALE over WINDOW."""
    return patch(model, NEG_SCALE, WINDOW[0] / STEPS, WINDOW[1] / STEPS, empty=empty)


def three_way_expected(model, empty, cfg_follows_guider=False):
    """What `three_way` computes, from the stock KSampler's CFG and compat_support.three_way_reference."""
    return three_way_reference(model, empty, CFG, NEG_SCALE, window_of_steps(*WINDOW), cfg_follows_guider)


def assert_negative_only_in_the_window(passes: PassCounter, model):
    """ỹ (1) is evaluated, with y and ∅, exactly on the window's steps; y and ∅ alone elsewhere."""
    sigmas = ksampler_sigmas(model, "euler", STEPS).tolist()
    inside = [sigmas[WINDOW[1]] < sigma <= sigmas[WINDOW[0]] for sigma, _ in passes.by_sigma()]
    assert [conds for _, conds in passes.by_sigma()] == [(0, 1, 2) if i else (0, 2) for i in inside]
    assert any(inside)  # the window was evaluated at least once


def lazy_cache(model):
    from comfy_extras.nodes_easycache import LazyCacheNode

    return LazyCacheNode.execute(model, 3.0, 0.15, 0.95, False).result[0]


def easy_cache(model):
    from comfy_extras.nodes_easycache import EasyCacheNode

    return EasyCacheNode.execute(model, 3.0, 0.15, 0.95, False).result[0]


@pytest.mark.parametrize("order", ["patch_then_easycache", "easycache_then_patch"])
def test_easycache_runs_as_with_the_stock_ksampler(host, order):
    """EasyCache skips the diffusion model inside calc_cond_batch, per conditioning: same samples as stock."""
    stock = ksampler(easy_cache(host.model), host.positive, host.negative, 6.0, "euler", STEPS, latent=host.latent)
    model = (easy_cache(patch(host.model, empty=host.empty)) if order == "patch_then_easycache"
             else patch(easy_cache(host.model), empty=host.empty))
    ours = ksampler(model, host.positive, host.negative, 6.0, "euler", STEPS, latent=host.latent)
    assert torch.equal(ours, stock)
    uncached = ksampler(host.model, host.positive, host.negative, 6.0, "euler", STEPS, latent=host.latent)
    support.assert_changed(stock, uncached)  # EasyCache really reused cached steps


ORDERS = {
    "patch_then_lazycache": lambda model, empty: lazy_cache(patch(model, empty=empty)),
    "lazycache_then_patch": lambda model, empty: patch(lazy_cache(model), empty=empty),
}


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("cfg", [1.0, 6.0])
def test_lazycache_runs_as_with_the_stock_ksampler(host, order, cfg):
    stock_passes, our_passes = PassCounter(), PassCounter()
    stock = ksampler(lazy_cache(stock_passes.counting(host.model)), host.positive, host.negative, cfg, "euler", STEPS,
                     latent=host.latent)
    ours = ksampler(ORDERS[order](our_passes.counting(host.model), host.empty), host.positive, host.negative, cfg,
                    "euler", STEPS, latent=host.latent)
    assert torch.equal(ours, stock)
    assert [e.sigma for e in our_passes.evaluations] == [e.sigma for e in stock_passes.evaluations]
    assert len(stock_passes.evaluations) < STEPS  # LazyCache really skipped evaluations


def cfg_override(model, cfg, first_step, last_step):
    """ComfyUI's CFGOverride where the release has it, else a PREDICT_NOISE wrapper doing what it does: set
    guider.cfg for the evaluations in a sigma range, and call the executor."""
    import comfy.patcher_extension
    from comfy_extras import nodes_custom_sampler as custom

    sigmas = support.ksampler_sigmas(model, "euler", STEPS).tolist()
    sigma_hi, sigma_lo = sigmas[first_step], sigmas[last_step]
    if hasattr(custom, "CFGOverride"):
        model_sampling = model.get_model_object("model_sampling")
        percent = lambda sigma: float(model_sampling.timestep(torch.tensor(sigma))) / 999.0  # noqa: E731
        return custom.CFGOverride.execute(model, cfg, 1.0 - percent(sigma_hi) - 1e-6,
                                          1.0 - percent(sigma_lo) + 1e-6).result[0]

    def override(executor, *args, **kwargs):
        sigma = float(args[1].flatten()[0])
        if not sigma_lo <= sigma <= sigma_hi:
            return executor(*args, **kwargs)
        guider = executor.class_obj
        saved, guider.cfg = guider.cfg, cfg
        try:
            return executor(*args, **kwargs)
        finally:
            guider.cfg = saved

    overridden = model.clone()
    overridden.add_wrapper(comfy.patcher_extension.WrappersMP.PREDICT_NOISE, override)
    return overridden


@pytest.mark.parametrize("order", ["patch_first", "override_first"])
def test_a_wrapper_changing_cfg_changes_s_plus(host, order):
    """s⁺ is read from guider.cfg at each evaluation: with the defaults the result is the stock KSampler's under the
    same override (cfg 1 on steps 4-7: one pass each there, as stock)."""
    stock_passes, our_passes = PassCounter(), PassCounter()
    stock = ksampler(cfg_override(stock_passes.counting(host.model), 1.0, 4, 7), host.positive, host.negative, 6.0,
                     "euler", STEPS, latent=host.latent)
    counted = our_passes.counting(host.model)
    model = (cfg_override(patch(counted), 1.0, 4, 7) if order == "patch_first"
             else patch(cfg_override(counted, 1.0, 4, 7)))
    ours = ksampler(model, host.positive, host.negative, 6.0, "euler", STEPS, latent=host.latent)
    assert torch.equal(ours, stock)
    assert [e.batch for e in our_passes.evaluations] == [e.batch for e in stock_passes.evaluations]
    assert 1 in [e.batch for e in stock_passes.evaluations]  # the override acted


CACHES = {"LazyCache": lazy_cache, "EasyCache": easy_cache}


@pytest.mark.parametrize("order", ["patch_first", "cache_first"])
@pytest.mark.parametrize("name", CACHES)
def test_caches_with_a_three_way_window_equal_the_reference_under_the_same_cache(host, name, order):
    """s⁻ = 3 ≠ cfg − 1 on steps 3-8 of 12, under the cache, equals the three-way reference under the same cache:
    the cache decided on the same evaluations (it sees the same predictions) and the negative took part only in the
    window."""
    cache = CACHES[name]
    reference_passes, our_passes = PassCounter(), PassCounter()
    expected = ksampler(cache(three_way_expected(reference_passes.counting(host.model), host.empty)), host.positive,
                        host.negative, CFG, "euler", STEPS, latent=host.latent)
    counted = our_passes.counting(host.model)
    model = (cache(three_way(counted, host.empty)) if order == "patch_first"
             else three_way(cache(counted), host.empty))
    ours = ksampler(model, host.positive, host.negative, CFG, "euler", STEPS, latent=host.latent)
    support.assert_close_to_scale(ours, expected)
    assert [e.sigma for e in our_passes.evaluations] == [e.sigma for e in reference_passes.evaluations]
    assert_negative_only_in_the_window(our_passes, host.model)
    uncached = ksampler(three_way(host.model, host.empty), host.positive, host.negative, CFG, "euler", STEPS,
                        latent=host.latent)
    support.assert_changed(expected, uncached)  # the cache really reused cached results


@pytest.mark.parametrize("order", ["patch_first", "override_first"])
def test_a_wrapper_changing_cfg_with_a_three_way_window(host, order):
    """cfg 2 on steps 3-6 of 12 (6 elsewhere; ComfyUI's CFGOverride rounds its range to the model's timesteps) with
    s⁻ = 3 on steps 3-8: α = s⁻/(s⁺ − 1) follows the override (3 there, 3/5 elsewhere), as in the three-way reference
    under the same override, which takes s⁺ from the guider at each evaluation."""
    override_cfg, first, last = 2.0, 2, 5
    expected = ksampler(cfg_override(three_way_expected(host.model, host.empty, cfg_follows_guider=True),
                                     override_cfg, first, last),
                        host.positive, host.negative, CFG, "euler", STEPS, latent=host.latent)
    passes = PassCounter()
    counted = passes.counting(host.model)
    model = (cfg_override(three_way(counted, host.empty), override_cfg, first, last) if order == "patch_first"
             else three_way(cfg_override(counted, override_cfg, first, last), host.empty))
    ours = ksampler(model, host.positive, host.negative, CFG, "euler", STEPS, latent=host.latent)
    support.assert_close_to_scale(ours, expected)
    assert_negative_only_in_the_window(passes, host.model)
    without_override = ksampler(three_way(host.model, host.empty), host.positive, host.negative, CFG, "euler", STEPS,
                                latent=host.latent)
    support.assert_changed(ours, without_override)  # the override acted on the three-way steps
