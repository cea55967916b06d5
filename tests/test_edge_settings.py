"""Settings at the edges of what the nodes accept, on the real host: coefficients within the zero tolerance, and
runs with a single sigma (nothing to sample).

Conditioning indices in pass counts: 0 = positive y, 1 = negative ỹ, 2 = empty ∅.
"""

import pytest
import torch

import support
from support import PassCounter, custom_advanced, ksampler, ksampler_sigmas

STEPS = 4


def node_classes():
    return support.pack_module("nodes.negative_guidance")


def patch(model, neg_scale=-1.0, empty=None):
    return node_classes().NegativeGuidance.execute(model, neg_scale, 0.0, 1.0, "steps", "hard", 0.0,
                                                   empty=empty).result[0]


def guider(host, model, cfg, neg_scale=-1.0, empty=None):
    return node_classes().NegativeGuidanceGuider.execute(model, host.positive, host.negative, cfg, neg_scale, 0.0, 1.0,
                                                          "steps", "hard", 0.0, empty=empty).result[0]


# ---- coefficients within the zero tolerance ----

@pytest.mark.parametrize("route", ["patch", "guider"])
def test_cfg_just_above_one_with_a_tiny_negative_scale(host, route):
    """cfg = 1 + 1.8e-6 (not 1 for ComfyUI's math.isclose) and s⁻ = 9e-7 = (cfg − 1)/2: every coefficient is
    decided by the same test, so nothing divides by a vanishing sum; the result is the formula (DualCFGGuider)."""
    from comfy_extras import nodes_custom_sampler as custom

    cfg, neg_scale = 1.0 + 1.8e-6, 9e-7
    sigmas = ksampler_sigmas(host.model, "euler", STEPS)
    dual = custom.DualCFGGuider.execute(host.model, host.positive, host.empty, host.negative, cfg, neg_scale + 1.0,
                                        "regular").result[0]
    reference = custom_advanced(dual, "euler", sigmas, host.latent)
    passes = PassCounter()
    if route == "patch":
        ours = ksampler(patch(passes.counting(host.model), neg_scale, empty=host.empty), host.positive, host.negative,
                        cfg, "euler", STEPS, latent=host.latent)
    else:
        ours = custom_advanced(guider(host, passes.counting(host.model), cfg, neg_scale, empty=host.empty), "euler",
                               sigmas, host.latent)
    support.assert_close_to_scale(ours, reference)
    assert {tuple(sorted(e.conds)) for e in passes.evaluations} == {(0, 1, 2)}


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
