"""The timestep_percent and sigma window units end to end, against references that do not come from the pack:

- timestep_percent with neg_scale = -1 is, bit for bit, ComfyUI's stock KSampler with the negative prompt made of
  ConditioningSetTimestepRange(ỹ, start, end) combined with ConditioningSetTimestepRange(∅, 0, start) and
  (∅, end, 1). (Exactly at sigma = percent_to_sigma(edge) both ranges of the stock pair apply and ComfyUI averages
  them; the windows below keep evaluations off the edges themselves.)
- with a three-way scale, both units against compat_support.three_way_reference, the window decided here per step
  from the model's own sigmas: percent_to_sigma(end) < σ ≤ percent_to_sigma(start), resp.
  start ≤ (σ_max − σ)/(σ_max − σ_min) < end.
Each three-way case also checks that its unit puts the window on other steps than the `steps` unit would, and that
the pack evaluated the negative on exactly the unit's steps, so that these tests fail if a unit is handled as steps.
"""

import pytest
import torch

import support
from compat_support import three_way_reference
from support import PassCounter, ksampler, ksampler_sigmas, patch

CFG = 6.0
STEPS = 8


def timestep_range(conditioning, start, end):
    import nodes

    return nodes.ConditioningSetTimestepRange().set_range(conditioning, start, end)[0]


def stock_windowed_negative(host, start, end):
    """ỹ on [start, end] and ∅ outside it, with ComfyUI's own nodes."""
    import nodes

    combined = timestep_range(host.negative, start, end)
    for range_start, range_end in ((0.0, start), (end, 1.0)):
        if range_end > range_start:
            combined = nodes.ConditioningCombine().combine(combined, timestep_range(host.empty, range_start,
                                                                                    range_end))[0]
    return combined


def steps_inside(sigmas, inside):
    return [i for i, sigma in enumerate(sigmas[:-1]) if inside(sigma)]


def percent_membership(model, start, end):
    model_sampling = model.get_model_object("model_sampling")
    high, low = model_sampling.percent_to_sigma(start), model_sampling.percent_to_sigma(end)
    return lambda sigma: low < sigma <= high


def sigma_membership(model, start, end):
    model_sampling = model.get_model_object("model_sampling")
    sigma_min, sigma_max = float(model_sampling.sigma_min), float(model_sampling.sigma_max)
    progress = lambda sigma: (sigma_max - sigma) / (sigma_max - sigma_min)  # noqa: E731
    # 0 and 1 mean the first and last evaluation, even where a scheduler's sigma lies a rounding beyond the model's.
    return lambda sigma: (start == 0.0 or start <= progress(sigma)) and (end == 1.0 or progress(sigma) < end)


def steps_membership(sigmas, start, end):
    steps = len(sigmas) - 1
    return lambda sigma: start <= sigmas.index(sigma) / steps < end


PERCENT_WINDOWS = [
    (0.002, 0.6, "normal"),      # neg_start just above 0: ConditioningSetTimestepRange leaves step 0 out
    (0.0035, 0.45, "karras"),
    (0.0, 0.35, "karras"),
    (0.3, 0.9996, "karras"),     # neg_end just below 1: karras' last sigma (σ_min) lies beyond it
    (0.27, 0.81, "normal"),
]


@pytest.mark.parametrize("sampler", ["euler", "heun"])
@pytest.mark.parametrize("start, end, scheduler", PERCENT_WINDOWS)
def test_percent_window_equals_stock_timestep_ranges(host, start, end, scheduler, sampler):
    stock_passes, our_passes = PassCounter(), PassCounter()
    stock = ksampler(stock_passes.counting(host.model), host.positive, stock_windowed_negative(host, start, end), CFG,
                     sampler, STEPS, latent=host.latent, scheduler=scheduler)
    ours = ksampler(patch(our_passes.counting(host.model), -1.0, start, end, "timestep_percent", empty=host.empty),
                    host.positive, host.negative, CFG, sampler, STEPS, latent=host.latent, scheduler=scheduler)
    assert torch.equal(ours, stock)
    assert [e.batch for e in our_passes.evaluations] == [e.batch for e in stock_passes.evaluations]
    # No evaluation sits exactly on an edge (where the stock pair of ranges overlaps).
    model_sampling = host.model.get_model_object("model_sampling")
    edges = {model_sampling.percent_to_sigma(start), model_sampling.percent_to_sigma(end)}
    assert not edges & {e.sigma for e in our_passes.evaluations}


@pytest.mark.parametrize("cfg", [1.0, 1.5])
@pytest.mark.parametrize("sampler", ["euler_cfg_pp", "dpmpp_2m_cfg_pp"])
def test_percent_window_with_cfg_pp_equals_stock_timestep_ranges(host, sampler, cfg):
    """CFG++ samplers read the unconditional prediction: inside the window u* = eps(ỹ), outside eps(∅), at cfg 1
    too (the limit of u* as s⁺ → 1), as the stock negative made of timestep ranges hands them."""
    start, end = 0.27, 0.81
    stock_passes, our_passes = PassCounter(), PassCounter()
    stock = ksampler(stock_passes.counting(host.model), host.positive, stock_windowed_negative(host, start, end), cfg,
                     sampler, STEPS, latent=host.latent)
    ours = ksampler(patch(our_passes.counting(host.model), -1.0, start, end, "timestep_percent", empty=host.empty),
                    host.positive, host.negative, cfg, sampler, STEPS, latent=host.latent)
    assert torch.equal(ours, stock)
    assert [e.batch for e in our_passes.evaluations] == [e.batch for e in stock_passes.evaluations]
    assert {tuple(sorted(e.conds)) for e in our_passes.evaluations} == {(0, 1), (0, 2)}


UNIT_CASES = [
    ("timestep_percent", 0.002, 0.6, "karras"),
    ("timestep_percent", 0.1, 0.4, "exponential"),
    ("sigma", 0.0, 0.5, "karras"),
    ("sigma", 0.7, 1.0, "normal"),
]


@pytest.mark.parametrize("unit, start, end, scheduler", UNIT_CASES)
def test_three_way_window_unit_equals_reference(host, unit, start, end, scheduler):
    neg_scale = 3.0
    sigmas = ksampler_sigmas(host.model, "euler", STEPS, scheduler).tolist()
    membership = (percent_membership if unit == "timestep_percent" else sigma_membership)(host.model, start, end)
    inside = steps_inside(sigmas, membership)
    assert inside != steps_inside(sigmas, steps_membership(sigmas, start, end))
    reference_model = three_way_reference(host.model, host.empty, CFG, neg_scale,
                                          lambda step, total: 1.0 if step in inside else 0.0)
    expected = ksampler(reference_model, host.positive, host.negative, CFG, "euler", STEPS, latent=host.latent,
                        scheduler=scheduler)
    passes = PassCounter()
    ours = ksampler(patch(passes.counting(host.model), neg_scale, start, end, unit, empty=host.empty), host.positive,
                    host.negative, CFG, "euler", STEPS, latent=host.latent, scheduler=scheduler)
    support.assert_close_to_scale(ours, expected)
    # The negative was evaluated on exactly the unit's steps, which are not the steps unit's (checked above).
    assert [i for i, (_, conds) in enumerate(passes.by_sigma()) if 1 in conds] == inside


def test_percent_table_asks_the_model_only_for_its_edges(host):
    """The percent table comes from a host copy of the model's sampling object; the model's own percent_to_sigma
    (a host–device synchronisation each on a GPU) is asked only for the window's edges and ramp ends, as
    ConditioningSetTimestepRange asks it for its range."""
    import copy

    model_sampling = host.model.get_model_object("model_sampling")
    calls = []
    counted = copy.deepcopy(model_sampling)

    def percent_to_sigma(self, percent):
        if self is counted:  # not its copies
            calls.append(percent)
        return type(model_sampling).percent_to_sigma(self, percent)

    counted.__class__ = type("CountedModelSampling", (type(model_sampling),), {"percent_to_sigma": percent_to_sigma})
    model = host.model.clone()
    model.add_object_patch("model_sampling", counted)
    patched = patch(model, 3.0, 0.2, 0.7, "timestep_percent", "linear", 0.1, empty=host.empty)
    ksampler(patched, host.positive, host.negative, CFG, "euler", STEPS, latent=host.latent)
    assert sorted(calls) == pytest.approx([0.2, 0.3, 0.6, 0.7])
