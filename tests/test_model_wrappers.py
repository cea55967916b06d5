"""Model nodes that wrap ComfyUI's PREDICT_NOISE executor keep working next to the patch, in either order: ComfyUI's
LazyCache (which skips model evaluations), EasyCache (which skips the diffusion model per conditioning) and wrappers that change guider.cfg for some evaluations (ComfyUI's
CFGOverride on newer releases; an equivalent wrapper here on releases without it).
"""

import pytest
import torch

import support
from support import PassCounter, ksampler

STEPS = 12


def patch(model, neg_scale=-1.0, empty=None):
    nodes = support.pack_module("nodes.negative_guidance")
    return nodes.NegativeGuidance.execute(model, neg_scale, 0.0, 1.0, "steps", "hard", 0.0, empty=empty).result[0]


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
