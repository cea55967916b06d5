"""Several negatives, each with its own scale and window, and the sequential (low-memory) evaluation switch.

Conditioning indices in pass counts: 0 = y, 1 = ỹ (main negative), 2 = ∅, 3 = first extra negative, ...
"""

import pytest
import torch

import support
from compat_support import three_way_reference, window_of_steps
from support import PassCounter, custom_advanced, guider, ksampler, ksampler_sigmas, patch

CFG = 5.0
STEPS = 10


def node_classes():
    return support.pack_module("nodes.negative_guidance")


def extra(conditioning, scale, start=0.0, end=1.0, ramp="hard", width=0.0, unit="steps", previous=None):
    return node_classes().ExtraNegative.execute(conditioning, scale, start, end, unit, ramp, width,
                                                extra_negatives=previous).result[0]


@pytest.fixture(scope="module")
def blurry(host):
    return host.encode("blurry, low quality")


@pytest.fixture(scope="module")
def hat(host):
    return host.encode("a hat")


@pytest.mark.parametrize("sampler", ["euler", "heun"])
def test_two_extra_negatives_equal_reference(host, blurry, hat, sampler):
    # Main negative everywhere at 2.0; "blurry" everywhere at 1.5; "a hat" late and weak: steps 6..9 at 0.8.
    chain = extra(hat, 0.8, 0.6, 1.0, previous=extra(blurry, 1.5))
    reference = three_way_reference(host.model, host.empty, CFG, 2.0, extras=[
        (blurry, 1.5, window_of_steps(0, STEPS)), (hat, 0.8, window_of_steps(6, STEPS))])
    expected = ksampler(reference, host.positive, host.negative, CFG, sampler, STEPS, latent=host.latent)

    passes = PassCounter()
    ours = ksampler(patch(passes.counting(host.model), 2.0, empty=host.empty, extra_negatives=chain), host.positive,
                    host.negative, CFG, sampler, STEPS, latent=host.latent)
    support.assert_close_to_scale(ours, expected)
    without_extras = ksampler(patch(host.model, 2.0, empty=host.empty), host.positive, host.negative, CFG, sampler,
                              STEPS, latent=host.latent)
    support.assert_changed(ours, without_extras)

    sigmas = ksampler_sigmas(host.model, sampler, STEPS).tolist()
    for evaluation in passes.evaluations:
        late = evaluation.sigma <= sigmas[6] * (1 + 1e-6)
        assert tuple(sorted(evaluation.conds)) == ((0, 1, 2, 3, 4) if late else (0, 1, 2, 3))
        assert evaluation.batch == len(evaluation.conds)  # all of them in one forward


def test_patch_equals_guider_with_extra_negatives(host, blurry, hat):
    chain = extra(hat, 2.0, 0.2, 0.7, ramp="linear", width=0.2, previous=extra(blurry, 1.0, unit="timestep_percent"))
    patch_passes, guider_passes = PassCounter(), PassCounter()
    via_patch = ksampler(patch(patch_passes.counting(host.model), -1.0, 0.3, empty=host.empty, extra_negatives=chain),
                         host.positive, host.negative, CFG, "euler", STEPS, latent=host.latent)
    via_guider = custom_advanced(guider(guider_passes.counting(host.model), host.positive, host.negative, CFG, -1.0,
                                        0.3, empty=host.empty, extra_negatives=chain),
                                 "euler", ksampler_sigmas(host.model, "euler", STEPS), host.latent)
    support.assert_close_to_scale(via_patch, via_guider)
    without_extras = ksampler(patch(host.model, -1.0, 0.3, empty=host.empty), host.positive, host.negative, CFG,
                              "euler", STEPS, latent=host.latent)
    support.assert_changed(via_patch, without_extras)  # both routes applied the extra negatives
    assert patch_passes.by_sigma() == guider_passes.by_sigma()


def test_extra_negatives_with_zero_scale_are_not_evaluated(host, blurry):
    stock_passes, our_passes = PassCounter(), PassCounter()
    stock = ksampler(stock_passes.counting(host.model), host.positive, host.negative, CFG, "euler", STEPS,
                     latent=host.latent)
    ours = ksampler(patch(our_passes.counting(host.model), -1.0, empty=host.empty, extra_negatives=extra(blurry, 0.0)),
                    host.positive, host.negative, CFG, "euler", STEPS, latent=host.latent)
    assert torch.equal(ours, stock)
    assert {conds for _, conds in our_passes.by_sigma()} == {(0, 1)}


@pytest.mark.parametrize("route", ["patch", "guider"])
def test_sequential_equals_batched(host, blurry, route):
    chain = extra(blurry, 1.5, 0.3, 0.8)
    results, counters = {}, {}
    for evaluation in ("batched", "sequential"):
        counters[evaluation] = passes = PassCounter()
        model = passes.counting(host.model)
        if route == "patch":
            results[evaluation] = ksampler(patch(model, 2.0, empty=host.empty, extra_negatives=chain,
                                                 evaluation=evaluation),
                                           host.positive, host.negative, CFG, "euler", STEPS, latent=host.latent)
        else:
            guide = guider(model, host.positive, host.negative, CFG, 2.0, empty=host.empty, extra_negatives=chain,
                           evaluation=evaluation)
            results[evaluation] = custom_advanced(guide, "euler", ksampler_sigmas(host.model, "euler", STEPS),
                                                  host.latent)
    # Equal within rounding: batch layout changes float32 rounding a little; the random UNet amplifies it over the
    # steps.
    support.assert_close_to_scale(results["sequential"], results["batched"])
    stock = ksampler(host.model, host.positive, host.negative, CFG, "euler", STEPS, latent=host.latent)
    support.assert_changed(results["batched"], stock)  # the guidance acted (the pass counts below show the extra)
    batched, sequential = counters["batched"].evaluations, counters["sequential"].evaluations
    assert all(e.batch == 1 for e in sequential)
    assert len(sequential) == sum(e.batch for e in batched)  # same conditionings, one call each
    assert max(e.batch for e in batched) == 4


def test_extra_negative_validation(host):
    classes = node_classes()
    # Checked when the node runs: values that arrive through links are not known to validate_inputs.
    with pytest.raises(ValueError, match=r"^Extra Negative \(for Negative Guidance\): neg_scale must lie between 0 and 100, got -1\.$"):
        classes.ExtraNegative.execute(None, -1.0, 0.0, 1.0, "steps", "hard", 0.0)
    with pytest.raises(ValueError, match=r"^Extra Negative \(for Negative Guidance\): neg_start \(0\.9\) must not be greater than neg_end"):
        classes.ExtraNegative.execute(None, 1.0, 0.9, 0.1, "steps", "hard", 0.0)


def test_extra_negatives_need_empty(host, blurry):
    passes = PassCounter()
    model = patch(passes.counting(host.model), -1.0, extra_negatives=extra(blurry, 1.0))
    with pytest.raises(ValueError, match=r"^Negative Guidance \(patch\): connect 'empty'"):
        ksampler(model, host.positive, host.negative, CFG, "euler", STEPS, latent=host.latent)
    assert passes.evaluations == []
