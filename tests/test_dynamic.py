"""The dynamic negative scale's state (nodes/dynamic.py) on its own: pure torch, no ComfyUI.

Each update is checked against the formula written out directly (plain norms, float64), so a sign, a missing
mixture correction or a wrong kernel variance shows; the end-to-end behaviour is in test_exact_score.py.
"""

import math

import pytest
import torch

import support

dynamic = support.load_pure_module("nodes/dynamic.py")
validation = support.load_pure_module("nodes/validation.py")


def constant_scale(settings) -> float:
    """s⁻ when p never moves (temperature 0, offset 0): λ·prior/(1 − prior), the prior clipped as p is."""
    p = min(max(settings.prior, settings.p_min), settings.p_max)
    return settings.strength * p / (1.0 - p)


def predictions(x, sigma, seed):
    """Stand-in denoised predictions D_∅, D_ỹ near x (any values will do for the algebra)."""
    generator = torch.Generator().manual_seed(seed)
    empty = x / (1 + sigma ** 2) + 0.3 * torch.randn(x.shape, generator=generator, dtype=x.dtype)
    negative = empty + 0.5 * torch.randn(x.shape, generator=generator, dtype=x.dtype)
    return empty, negative


def points(n=4, seed=0, shape=(2, 3, 3)):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn((n, *shape), generator=generator, dtype=torch.float64)


def logit(p):
    return torch.log(p) - torch.log1p(-p)


def logit_of(p: float) -> float:
    return math.log(p / (1 - p))


def test_tweedie_start_is_the_gaussian_likelihood_ratio():
    settings = dynamic.DynamicNegative(prior=0.3, temperature=0.7)
    x, sigma = points() * 3.0, 3.0
    empty, negative = predictions(x, sigma, 1)
    state = dynamic.DynamicNegativeState(settings)
    scale = state.update(x, sigma, empty, negative)
    flat = lambda t: t.reshape(t.shape[0], -1)
    eps_negative, eps_empty = flat(x - negative) / sigma, flat(x - empty) / sigma
    s2 = dynamic.DATA_SCALE ** 2
    log_ratio = -(s2 + sigma ** 2) / (2 * sigma ** 2) * ((eps_negative ** 2).sum(1) - (eps_empty ** 2).sum(1))
    expected_p = (0.3 * torch.exp(0.7 * log_ratio)).clamp(1e-6, 0.99)
    torch.testing.assert_close(state.p, expected_p, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(scale, settings.strength * expected_p / (1 - expected_p), rtol=1e-9, atol=1e-12)


def test_above_the_handoff_p_is_the_running_mean_of_tweedie_ratios_then_the_filter_takes_over():
    """σ ≥ TWEEDIE_SIGMA: logit p is the mean of each evaluation's own Tweedie logit (nothing accumulated from the
    kernels); below it, the kernel filter continues from that mean."""
    settings = dynamic.DynamicNegative(prior=0.3, temperature=0.7)
    high = (dynamic.TWEEDIE_SIGMA * 3.0, dynamic.TWEEDIE_SIGMA * 2.0, dynamic.TWEEDIE_SIGMA)
    state = dynamic.DynamicNegativeState(settings)
    tweedie_logits = []
    for i, sigma in enumerate(high):
        x = points(seed=20 + i) * sigma
        empty, negative = predictions(x, sigma, 30 + i)
        state.update(x, sigma, empty, negative)
        alone = dynamic.DynamicNegativeState(settings)  # this evaluation's Tweedie ratio on its own
        alone.update(x, sigma, empty, negative)
        tweedie_logits.append(alone.log_odds)
    torch.testing.assert_close(state.log_odds, torch.stack(tweedie_logits).mean(0), rtol=1e-9, atol=1e-9)
    mean = state.log_odds.clone()
    sigma_b = dynamic.TWEEDIE_SIGMA * 0.6
    x_b = points(seed=40) * sigma_b
    state.update(x_b, sigma_b, *predictions(x_b, sigma_b, 41))
    assert not torch.allclose(state.log_odds, mean)  # below the handoff the kernel evidence moves p


@pytest.mark.parametrize("method", dynamic.METHODS)
def test_kernel_update_is_bayes_with_gaussian_reverse_kernels(method):
    settings = dynamic.DynamicNegative(prior=0.4, temperature=0.8, offset=0.01, p_max=0.999, method=method)
    sigma_a, sigma_b = 2.0, 1.3
    x_a = points(seed=2) * 2.0
    empty_a, negative_a = predictions(x_a, sigma_a, 3)
    x_b = points(seed=4) * 1.3
    empty_b, negative_b = predictions(x_b, sigma_b, 5)
    state = dynamic.DynamicNegativeState(settings)
    state.update(x_a, sigma_a, empty_a, negative_a)
    before = state.log_odds.clone()
    p_a = state.p.clone()
    state.update(x_b, sigma_b, empty_b, negative_b)

    flat = lambda t: t.reshape(t.shape[0], -1)
    r = sigma_b ** 2 / sigma_a ** 2
    variance = sigma_b ** 2 * (1 - r)
    mu_negative = r * flat(x_a) + (1 - r) * flat(negative_a)
    mu_empty = r * flat(x_a) + (1 - r) * flat(empty_a)
    if method == "mixture":
        mu_other = (mu_empty - p_a[:, None] * mu_negative) / (1 - p_a[:, None])  # μ_¬ỹ from the mixture
    else:
        mu_other = mu_empty
    squared = ((flat(x_b) - mu_negative) ** 2).sum(1) - ((flat(x_b) - mu_other) ** 2).sum(1)
    vp_variance = variance / (1 + sigma_b ** 2)  # the offset's unit: variance-preserving
    expected = before - 0.8 * squared / (2 * variance) + 0.01 / (2 * vp_variance)
    low, high = (math.log(1e-6), math.log(0.999)) if method == "published" else (logit_of(1e-6), logit_of(0.999))
    torch.testing.assert_close(state.log_odds, expected.clamp(low, high), rtol=1e-9, atol=1e-9)


def test_same_sigma_uses_the_trapezoid_rule_on_the_logit_gradient():
    settings = dynamic.DynamicNegative(prior=0.2, temperature=1.5)
    sigma = 0.7
    x_a, x_b = points(seed=6) * 0.7, points(seed=7) * 0.7
    empty_a, negative_a = predictions(x_a, sigma, 8)
    empty_b, negative_b = predictions(x_b, sigma, 9)
    state = dynamic.DynamicNegativeState(settings)
    state.update(x_a, sigma, empty_a, negative_a)
    before, p_a = state.log_odds.clone(), state.p.clone()
    state.update(x_b, sigma, empty_b, negative_b)
    flat = lambda t: t.reshape(t.shape[0], -1)
    gradient_a = flat(negative_a - empty_a) / (sigma ** 2 * (1 - p_a[:, None]))
    gradient_b = flat(negative_b - empty_b) / (sigma ** 2 * (1 - p_a[:, None]))
    expected = before + 1.5 * (0.5 * (gradient_a + gradient_b) * flat(x_b - x_a)).sum(1)
    torch.testing.assert_close(state.log_odds, expected.clamp(logit_of(1e-6), logit_of(0.99)), rtol=1e-9, atol=1e-9)


def test_higher_sigma_keeps_p_and_restarts_the_chain_there():
    settings = dynamic.DynamicNegative(prior=0.3)
    state = dynamic.DynamicNegativeState(settings)
    x = points(seed=10)
    state.update(x, 1.0, *predictions(x, 1.0, 11))
    kept = state.log_odds.clone()
    x_high = points(seed=12) * 3
    state.update(x_high, 3.0, *predictions(x_high, 3.0, 13))  # re-noised
    assert torch.equal(state.log_odds, kept)
    # The next update starts from the re-noised point, not from the earlier one.
    restarted = dynamic.DynamicNegativeState(settings)
    restarted.log_odds = kept.clone()
    restarted.update(x_high, 3.0, *predictions(x_high, 3.0, 13))
    x_next = points(seed=14) * 2
    for s in (state, restarted):
        s.update(x_next, 2.0, *predictions(x_next, 2.0, 15))
    assert torch.equal(state.log_odds, restarted.log_odds)
    assert not torch.equal(state.log_odds, kept)


def test_skipped_evaluation_keeps_p_and_the_next_one_only_restarts():
    state = dynamic.DynamicNegativeState(dynamic.DynamicNegative(prior=0.3))
    x = points(seed=16)
    state.update(x, 1.0, *predictions(x, 1.0, 17))
    kept = state.log_odds.clone()
    state.skip()
    x_later = points(seed=18) * 0.5
    state.update(x_later, 0.5, *predictions(x_later, 0.5, 19))
    assert torch.equal(state.log_odds, kept)


@pytest.mark.parametrize("method", dynamic.METHODS)
def test_constant_p_gives_the_constant_scale(method):
    """τ = 0, δ = 0: p stays at the prior through every kind of evaluation, so s⁻ = λ·prior/(1 − prior)."""
    settings = dynamic.DynamicNegative(strength=3.0, prior=0.25, temperature=0.0, method=method)
    expected = 3.0 * 0.25 / 0.75
    assert constant_scale(settings) == pytest.approx(expected)
    state = dynamic.DynamicNegativeState(settings)
    for i, sigma in enumerate((10.0, 4.0, 4.0, 2.0, 3.0, 1.0, 0.1)):
        x = points(seed=20 + i) * sigma
        scale = state.update(x, sigma, *predictions(x, sigma, 40 + i))
        torch.testing.assert_close(scale, torch.full_like(scale, expected), rtol=1e-12, atol=0)


def test_flow_model_is_tracked_in_variance_exploding_units():
    """A flow model's (x, σ) = ((1 − σ)·x_ve/(1 + σ_ve)…): the state sees x/(1 − σ), σ/(1 − σ), and its pure-noise
    start σ = 1 keeps the prior."""
    settings = dynamic.DynamicNegative(prior=0.3)
    flow_state = dynamic.DynamicNegativeState(settings, flow=True)
    ve_state = dynamic.DynamicNegativeState(settings)
    x = points(seed=30)
    flow_state.update(x, 1.0, *predictions(x, 1.0, 31))
    torch.testing.assert_close(flow_state.p, torch.full((x.shape[0],), 0.3, dtype=x.dtype))
    first = True
    for i, flow_sigma in enumerate((0.8, 0.5, 0.5, 0.2)):
        x = points(seed=32 + i)
        empty, negative = predictions(x, flow_sigma, 50 + i)
        flow_state.update(x, flow_sigma, empty, negative)
        ve_x, ve_sigma = x / (1 - flow_sigma), flow_sigma / (1 - flow_sigma)
        if first:  # the VE run starts where the flow run stands, its first evaluation after σ = 1
            ve_state.log_odds = logit(torch.full((x.shape[0],), 0.3, dtype=x.dtype))
            ve_state._previous = (torch.zeros(x.shape[0], x[0].numel(), dtype=x.dtype), math.inf, *(
                t.reshape(x.shape[0], -1) for t in predictions(points(seed=30), 1.0, 31)), 1.0)
            first = False
        ve_state.update(ve_x, ve_sigma, empty, negative)
        torch.testing.assert_close(flow_state.log_odds, ve_state.log_odds, rtol=1e-9, atol=1e-9)


def test_batch_elements_are_independent():
    settings = dynamic.DynamicNegative(prior=0.4, temperature=0.5)
    together = dynamic.DynamicNegativeState(settings)
    alone = [dynamic.DynamicNegativeState(settings) for _ in range(3)]
    for i, sigma in enumerate((5.0, 2.0, 2.0, 0.5)):
        x = points(n=3, seed=60 + i) * sigma
        empty, negative = predictions(x, sigma, 70 + i)
        scale = together.update(x, sigma, empty, negative)
        for j, state in enumerate(alone):
            torch.testing.assert_close(state.update(x[j:j + 1], sigma, empty[j:j + 1], negative[j:j + 1]),
                                       scale[j:j + 1], rtol=1e-12, atol=1e-12)


def test_no_host_device_synchronisation():
    """On meta tensors any .item(), float() or `if tensor` raises: the update must be pure tensor arithmetic."""
    for method in dynamic.METHODS:
        state = dynamic.DynamicNegativeState(dynamic.DynamicNegative(offset=0.01, method=method))
        for sigma in (10.0, 3.0, 3.0, 5.0, 1.0):
            x = torch.empty(2, 4, 8, 8, device="meta")
            scale = state.update(x, sigma, torch.empty_like(x), torch.empty_like(x))
            assert scale.shape == (2,) and scale.device.type == "meta"


def test_scale_is_bounded_by_p_max():
    settings = dynamic.DynamicNegative(strength=2.0, prior=0.5, temperature=50.0, p_max=0.9)
    state = dynamic.DynamicNegativeState(settings)
    x = points(seed=80) * 2
    empty, negative = predictions(x, 2.0, 81)
    # Swapped, so that the evidence (×50) points strongly towards ỹ and p would pass p_max without the clip.
    scale = state.update(x, 2.0, negative, empty)
    assert torch.allclose(scale, torch.full_like(scale, 2.0 * 0.9 / 0.1))  # the bound is reached, not just respected


@pytest.mark.parametrize("inputs, message", [
    ({"strength": -1.0}, "strength must lie between 0 and 100, got -1."),
    ({"prior": 0.0}, "prior must lie between 0.0001 and 0.99, got 0."),
    ({"temperature": -0.1}, "temperature must lie between 0 and 10, got -0.1."),
    ({"p_max": 1.0}, "p_max must lie between 0.5 and 0.999, got 1."),
    ({"prior": 0.95, "p_max": 0.9}, "prior (0.95) must not be greater than p_max (0.9)."),
    ({"offset": math.nan}, "offset must be a finite number."),
])
def test_validation_names_node_and_input(inputs, message):
    values = {"strength": 2.0, "prior": 0.5, "temperature": 1.0, "offset": 0.0, "p_max": 0.99, **inputs}
    problem = validation.problem("DynamicNegativeScale", dynamic.DynamicNegative(**values))
    assert problem == f"DynamicNegativeScale: {message}"


def test_defaults_and_presets_are_valid():
    for settings in (dynamic.DynamicNegative(), *dynamic.PRESETS.values()):
        assert validation.problem("X", settings) is None


# ---- on the real host: both routes, several negatives, passes, trace ----

CFG = 5.0
STEPS = 8


def pack():
    return support.pack_module("nodes.negative_guidance"), support.pack_module("nodes.dynamic")


def constant_p(strength=24.0, p=0.25):
    """Dynamic settings whose p never moves (τ = 0): s⁻ = λ·p/(1 − p) = 8 for the defaults here (the tiny random
    model's negative is weak: a smaller scale would hardly move its samples)."""
    return pack()[1].DynamicNegative(strength=strength, prior=p, temperature=0.0)


def patched(host, neg_scale, dynamic=None, extras=None, start=0.0, end=1.0, trace=None, model=None):
    nodes = pack()[0]
    return nodes.NegativeGuidance.execute(model or host.model, neg_scale, start, end, "steps", "hard", 0.0,
                                          empty=host.empty, extra_negatives=extras, trace=trace,
                                          dynamic=dynamic).result[0]


def guided(host, neg_scale, dynamic=None, extras=None, start=0.0, end=1.0, model=None):
    nodes = pack()[0]
    return nodes.NegativeGuidanceGuider.execute(model or host.model, host.positive, host.negative, CFG, neg_scale,
                                                start, end, "steps", "hard", 0.0, empty=host.empty,
                                                extra_negatives=extras, dynamic=dynamic).result[0]


def extra_negative(host, scale, dynamic=None, start=0.0, end=1.0):
    return pack()[0].ExtraNegative.execute(host.encode("a hat"), scale, start, end, "steps", "hard", 0.0,
                                           dynamic=dynamic).result[0]


def patch_sample(host, model, cfg=CFG, latent=None):
    return support.ksampler(model, host.positive, host.negative, cfg, "euler", steps=STEPS, latent=latent or host.latent)


def guider_sample(host, guider):
    return support.custom_advanced(guider, "euler", support.ksampler_sigmas(host.model, "euler", steps=STEPS),
                                   host.latent)


@pytest.mark.parametrize("cfg, start, end", [(CFG, 0.0, 1.0), (1.0, 0.25, 0.75)])
def test_constant_p_equals_constant_scale_patch(host, cfg, start, end):
    """prior = p, τ = 0 gives s⁻ = λ·p/(1 − p) at every evaluation: the patch with neg_scale = that scale, also
    inside a window (w(t) still gates the dynamic scale)."""
    dynamic = constant_p()
    scale = constant_scale(dynamic)
    ours = patch_sample(host, patched(host, -1.0, dynamic, start=start, end=end), cfg)
    reference = patch_sample(host, patched(host, scale, start=start, end=end), cfg)
    support.assert_close_to_scale(ours, reference)
    if cfg == CFG:
        support.assert_changed(patch_sample(host, patched(host, 0.0), cfg), reference)


def test_constant_p_equals_constant_scale_guider_and_extra_negatives(host):
    dynamic = constant_p()
    scale = constant_scale(dynamic)
    extra_dynamic = constant_p(strength=40.0, p=0.5)  # s = 40
    ours = guider_sample(host, guided(host, -1.0, dynamic, extras=extra_negative(host, 0.0, extra_dynamic)))
    reference = guider_sample(host, guided(host, scale, extras=extra_negative(host, 40.0)))
    support.assert_close_to_scale(ours, reference)
    without_extra = guider_sample(host, guided(host, scale))
    support.assert_changed(reference, without_extra)


def test_dynamic_scale_moves_the_samples(host):
    """With τ > 0 p follows the sample: the result differs from the constant scale at the prior (τ 10: the tiny
    random model's predictions of ỹ and ∅ hardly differ, so its evidence is weak)."""
    nodes, dynamic = pack()
    settings = dynamic.DynamicNegative(strength=8.0, prior=0.5, temperature=10.0)
    ours = patch_sample(host, patched(host, -1.0, settings))
    reference = patch_sample(host, patched(host, constant_scale(settings)))
    support.assert_changed(ours, reference)


def test_no_extra_model_passes(host):
    """y, ỹ, ∅ (and an extra negative) in one batched forward per evaluation, as with constant scales; outside
    a dynamic negative's window it is not evaluated."""
    def passes(dynamic, scale, extras):
        counter = support.PassCounter()
        patch_sample(host, patched(host, scale, dynamic, extras=extras, start=0.0, end=0.5,
                                   model=counter.counting(host.model)))
        return counter.by_sigma()

    dynamic = constant_p()
    ours = passes(dynamic, -1.0, extra_negative(host, 0.0, constant_p(2.0, 0.5)))
    reference = passes(None, constant_scale(dynamic), extra_negative(host, 2.0))
    assert ours == reference
    assert len(ours) == STEPS and {conds for _, conds in ours[:STEPS // 2]} == {(0, 1, 2, 3)}
    assert {conds for _, conds in ours[STEPS // 2:]} == {(0, 2, 3)}


def test_dynamic_needs_empty(host):
    nodes, dynamic = pack()
    model = nodes.NegativeGuidance.execute(host.model, -1.0, 0.0, 1.0, "steps", "hard", 0.0,
                                           dynamic=dynamic.DynamicNegative()).result[0]
    with pytest.raises(ValueError, match=r"Negative Guidance \(patch\): connect 'empty'.*dynamic negative"):
        patch_sample(host, model)


def test_trace_records_p_and_scale_per_sample(host):
    import comfy.nested_tensor  # noqa: F401  (ComfyUI is booted by the host fixture)

    trace_module = support.pack_module("nodes.trace")
    nodes, dynamic = pack()
    trace = trace_module.GuidanceTrace()
    latent = {"samples": torch.zeros(2, 4, 8, 8)}
    settings = dynamic.DynamicNegative(strength=1.0, prior=0.5, temperature=1.0)
    patch_sample(host, patched(host, -1.0, settings, trace=trace), latent=latent)
    evaluations = trace.last_run.evaluations
    assert len(evaluations) == STEPS
    for e in evaluations:
        p, scales = e.dynamic_p[0], e.dynamic_scales[0]
        assert len(p) == 2 and len(scales) == 2 and all(0.0 < v < 1.0 for v in p)
        assert scales == pytest.approx([v / (1 - v) for v in p], rel=1e-5)  # λ = 1, w = 1
        assert e.negative_scale == pytest.approx(sum(scales) / 2)
    assert len({round(e.dynamic_p[0][0], 6) for e in evaluations}) > 1  # p moved along the run
    image = trace_module.render_run(trace.last_run)
    assert image.shape[-1] == 3


def test_dynamic_node_builds_settings_and_presets(host):
    nodes = support.pack_module("nodes.dynamic_nodes")
    dynamic = support.pack_module("nodes.dynamic")
    custom = nodes.DynamicNegativeScale.execute(nodes.CUSTOM, 1.5, 0.2, 0.5, 0.0, 0.9).result[0]
    assert custom == dynamic.DynamicNegative(strength=1.5, prior=0.2, temperature=0.5, offset=0.0, p_max=0.9)
    paper = nodes.DynamicNegativeScale.execute("Stable Diffusion (paper)", 1.5, 0.2, 0.5, 0.0, 0.9).result[0]
    assert paper.prior == 0.01 and paper.strength == 20.0 and paper.method == "published"
    assert nodes.DynamicNegativeScale.validate_inputs(preset="none").startswith("Dynamic Negative Scale: preset")
    with pytest.raises(ValueError, match=r"^Dynamic Negative Scale: prior must lie between 0\.0001 and 0\.99, got 1\.$"):
        nodes.DynamicNegativeScale.execute(nodes.CUSTOM, 1.0, 1.0, 1.0, 0.0, 0.9)  # as a link would bring it
    with pytest.raises(ValueError, match=r"Dynamic Negative Scale: prior \(0.95\) must not be greater than p_max"):
        nodes.DynamicNegativeScale.execute(nodes.CUSTOM, 1.0, 0.95, 1.0, 0.0, 0.9)
    with pytest.raises(ValueError, match="Dynamic Negative Scale: p_max"):
        nodes.DynamicNegativeScale.execute(nodes.CUSTOM, 1.0, 0.5, 1.0, 0.0, 1.5)


def test_dynamic_node_update_input_is_optional_and_last(host):
    """Saved workflows keep loading: `update` is an optional input after the others; absent, the default update."""
    nodes = support.pack_module("nodes.dynamic_nodes")
    dynamic = support.pack_module("nodes.dynamic")
    schema = nodes.DynamicNegativeScale.define_schema()
    assert [i.id for i in schema.inputs] == ["preset", "strength", "prior", "temperature", "offset", "p_max", "update"]
    assert schema.inputs[-1].optional
    assert nodes.DynamicNegativeScale.execute(nodes.CUSTOM, 1.5, 0.2, 0.5, 0.0, 0.9).result[0].method == "mixture"
    ito = nodes.DynamicNegativeScale.execute(nodes.CUSTOM, 1.5, 0.2, 0.5, 0.0, 0.9, update="Itô (any path)").result[0]
    assert ito == dynamic.DynamicNegative(strength=1.5, prior=0.2, temperature=0.5, offset=0.0, p_max=0.9, method="ito")
    probe = nodes.DynamicNegativeScale.execute(nodes.CUSTOM, 1.5, 0.2, 0.5, 0.0, 0.9,
                                               update="Itô + divergence probe (extra pass)").result[0]
    assert probe.method == "ito-probe" and probe.probes and not ito.probes
    # Each update on the node is one of the pack's, and each of the pack's is on the node.
    assert sorted(nodes.UPDATES.values()) == sorted(dynamic.METHODS)
    assert nodes.DynamicNegativeScale.validate_inputs(update="x").startswith("Dynamic Negative Scale: update")
    with pytest.raises(ValueError, match="Dynamic Negative Scale: update must be one of"):
        nodes.DynamicNegativeScale.execute(nodes.CUSTOM, 1.0, 0.5, 1.0, 0.0, 0.9, update="x")


def test_dynamic_adds_no_sync_while_sampling(host):
    """Only the sigma read per evaluation (as with constant scales), with a trace recording p and s⁻."""
    import sync_support as sync

    trace = support.pack_module("nodes.trace_nodes").NegativeGuidanceTrace.execute().result[0]
    model = patched(host, -1.0, pack()[1].DynamicNegative(strength=2.0), extra_negative(host, 0.0, constant_p()),
                    trace=trace)
    assert sync.CountingEuler().sample(host, sync.stock_guider(host, model)) == [1] * sync.STEPS
    before = sync.SyncCounted.count
    evaluations = trace.last_run.evaluations
    assert sync.SyncCounted.count - before == 1
    assert all(len(e.dynamic_p) == 2 and e.dynamic_p[1] is not None for e in evaluations)


@torch.no_grad()
def in_place_euler(model, x, sigmas, extra_args=None, callback=None, disable=None):
    """k-diffusion's Euler (s_churn 0), with each step written into x in place, as a sampler may do."""
    extra_args = extra_args or {}
    x = x.clone()
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        x.add_((x - denoised) / sigmas[i] * (sigmas[i + 1] - sigmas[i]))
    return x


def test_a_sampler_changing_x_in_place_leaves_the_next_update_alone(host):
    """The state keeps the last evaluation's x for the next update: a sampler that then writes its step into x in
    place samples exactly what the stock Euler (a new x each step) samples. With a constant scale the two samplers
    agree anyway (the in-place one is a faithful Euler)."""
    import comfy.samplers
    from comfy_extras import nodes_custom_sampler as custom

    def in_place_sample(guider):
        noise = custom.RandomNoise.execute(1).result[0]
        sampler = comfy.samplers.KSAMPLER(in_place_euler)
        sigmas = support.ksampler_sigmas(host.model, "euler", steps=STEPS)
        return custom.SamplerCustomAdvanced.execute(noise, guider, sampler, sigmas, host.latent).result[0]["samples"]

    nodes, dynamic = pack()
    settings = dynamic.DynamicNegative(strength=8.0, prior=0.5, temperature=10.0)
    constant = guided(host, constant_scale(settings))
    assert torch.equal(in_place_sample(constant), guider_sample(host, constant))
    dynamic_scale = guided(host, -1.0, settings)
    assert torch.equal(in_place_sample(dynamic_scale), guider_sample(host, dynamic_scale))


def test_constant_p_at_the_largest_settings_equals_constant_scale_under_a_cfg_patch(host):
    """λ 100 and p_max 0.999 (the node's largest) at cfg 5: the dynamic scale could reach 99 900, yet u* stays (only
    a cfg within NEAR_ONE of 1 goes without it), so RescaleCFG sees the same u* as with the equal constant scale."""
    from comfy_extras.nodes_model_advanced import RescaleCFG

    dynamic = pack()[1].DynamicNegative(strength=100.0, prior=0.05, temperature=0.0, p_max=0.999)
    rescaled = RescaleCFG().patch(host.model, 0.7)[0]
    ours = patch_sample(host, patched(host, -1.0, dynamic, model=rescaled))
    reference = patch_sample(host, patched(host, constant_scale(dynamic), model=rescaled))
    support.assert_close_to_scale(ours, reference)


# ---- the "ito" update: p(ỹ | x_t) along any path (issue 16) ----

TWO_MODES = (2.0, 0.5)  # modes at ±2, spread 0.5, equal weights; ỹ = the mode at +2


def two_modes(x, sigma):
    """Closed form of the two-mode case: (log p(ỹ | x_σ), D_∅, D_ỹ). log-odds = 2μx/(s² + σ²)."""
    mu, spread = TWO_MODES
    variance = spread ** 2 + sigma ** 2
    log_odds = 2 * mu * x / variance
    p = torch.sigmoid(log_odds)
    negative = mu + spread ** 2 / variance * (x - mu)
    other = -mu + spread ** 2 / variance * (x + mu)
    return torch.nn.functional.logsigmoid(log_odds).reshape(-1), p * negative + (1 - p) * other, negative


def test_ito_step_matches_the_closed_form_on_an_ode_path_with_any_drift():
    """One ODE step σ 1 → 0.98 with a drift that is not the model's (a strong negative push), from the exact p:
    the update equals the hand-derived Itô increment plus the ODE term, and that lands on the exact p(ỹ | x_b)
    within 10 % of its change (the Euler step's O(h²)); without the ODE term it misses by far more."""
    sigma_a, sigma_b = 1.0, 0.98
    x_a = torch.tensor([[-0.5], [0.2], [0.8], [1.5]], dtype=torch.float64)
    log_p_a, empty_a, negative_a = two_modes(x_a, sigma_a)
    drift = empty_a - 3.0 * (negative_a - empty_a)
    x_b = x_a + (sigma_b - sigma_a) * (x_a - drift) / sigma_a
    log_p_b, empty_b, negative_b = two_modes(x_b, sigma_b)

    settings = dynamic.DynamicNegative(method="ito", p_min=1e-12, p_max=1 - 1e-12)
    state = dynamic.DynamicNegativeState(settings)
    state.log_odds = log_p_a.clone()
    state._previous = (x_a, sigma_a, empty_a, negative_a, sigma_a)
    state._noise, state._noise_count = torch.zeros(4, dtype=torch.float64), dynamic.NOISE_STEPS  # an ODE sampler
    state.update(x_b, sigma_b, empty_b, negative_b)

    # By hand: Gaussian reverse kernels of ỹ and ∅, then +½(σ_a² − σ_b²)·p/(1 − p)·‖D_ỹ − D_∅‖²/σ_a⁴.
    r = sigma_b ** 2 / sigma_a ** 2
    v = sigma_b ** 2 * (1 - r)
    mean_negative, mean_empty = r * x_a + (1 - r) * negative_a, r * x_a + (1 - r) * empty_a
    p_a = log_p_a.exp()
    ito = -(((x_b - mean_negative) ** 2).sum(1) - ((x_b - mean_empty) ** 2).sum(1)) / (2 * v)
    ode = 0.5 * (sigma_a ** 2 - sigma_b ** 2) * p_a / (1 - p_a) * ((negative_a - empty_a) ** 2).sum(1) / sigma_a ** 4
    torch.testing.assert_close(state.log_odds, log_p_a + ito + ode, rtol=1e-10, atol=1e-12)

    change = log_p_b - log_p_a
    assert ((state.log_odds - log_p_b).abs() <= 0.1 * change.abs()).all(), (state.log_odds, log_p_b, log_p_a)
    assert ((log_p_a + ito - log_p_b).abs() > 0.3 * change.abs()).any()


@pytest.mark.parametrize("ancestral", [False, True])
def test_ito_measures_the_samplers_fresh_noise(ancestral):
    """Gaussian data, 4096 dimensions: Euler steps of the probability-flow ODE read as 0, Euler ancestral steps
    (the full reverse-SDE noise) as 1; only an ODE path gets the divergence term."""
    spread, dims = 0.5, 4096
    generator = torch.Generator().manual_seed(5)
    sigmas = (14.0, 11.0, 8.5, 6.5, 5.0, 3.8, 2.9, 2.2, 1.7, 1.3)
    x = torch.randn(2, dims, generator=generator, dtype=torch.float64) * math.sqrt(spread ** 2 + sigmas[0] ** 2)
    state = dynamic.DynamicNegativeState(dynamic.DynamicNegative(method="ito"))
    for sigma_a, sigma_b in zip(sigmas, sigmas[1:]):
        denoised = spread ** 2 / (spread ** 2 + sigma_a ** 2) * x
        state.update(x, sigma_a, denoised, denoised)
        if ancestral:
            up = sigma_b * math.sqrt(1 - sigma_b ** 2 / sigma_a ** 2)
            down = math.sqrt(sigma_b ** 2 - up ** 2)
            noise = torch.randn(x.shape, generator=generator, dtype=torch.float64)
            x = x + (down - sigma_a) * (x - denoised) / sigma_a + up * noise
        else:
            x = x + (sigma_b - sigma_a) * (x - denoised) / sigma_a
    torch.testing.assert_close(state._noise, torch.full((2,), 1.0 if ancestral else 0.0, dtype=torch.float64),
                               atol=0.05, rtol=0)


# ---- ito-probe: the divergence measured by one extra evaluation of ỹ and ∅ ----

def unequal_modes(x, sigma):
    """Two modes on the first axis of the plane with unequal spreads, equal weights, ỹ = the first: (log q_ỹ,
    log q_∅) as functions of x (N, 2), and (D_∅, D_ỹ) at x. Unequal spreads make the within-concept part of the
    Laplacian, which the Itô update's estimate leaves out, non-zero."""
    centres = torch.tensor([[1.5, 0.0], [-1.5, 0.0]], dtype=torch.float64)
    spreads = torch.tensor([0.3, 0.7], dtype=torch.float64)
    variances = spreads ** 2 + sigma ** 2

    def log_components(points):
        squares = ((points[:, None, :] - centres[None]) ** 2).sum(-1)
        return -squares / (2 * variances) - torch.log(variances)  # log N up to a shared constant (2-D)

    def log_q_negative(points):
        return log_components(points)[:, 0]

    def log_q_empty(points):
        return torch.logsumexp(log_components(points) + math.log(0.5), dim=1)

    means = (spreads[None, :, None] ** 2 * x[:, None, :] + sigma ** 2 * centres[None]) / variances[None, :, None]
    weights = torch.softmax(log_components(x), dim=1)
    return log_q_negative, log_q_empty, (weights[:, :, None] * means).sum(1), means[:, 0]


def exact_laplacian_difference(log_q_negative, log_q_empty, x):
    """Δlog q_ỹ − Δlog q_∅ at each row of x, by autograd (independent of the code under test)."""
    def laplacian(log_q, point):
        return torch.autograd.functional.hessian(lambda p: log_q(p[None])[0], point).diagonal().sum()
    return torch.stack([laplacian(log_q_negative, point) - laplacian(log_q_empty, point) for point in x])


@pytest.mark.parametrize("flow", [False, True])
def test_probe_measures_the_laplacian_difference(monkeypatch, flow):
    """The probe's one-direction finite difference of the denoisers, at a small step, equals the exact Δlog q_ỹ −
    Δlog q_∅ (from the Hessians of the log densities) where one Rademacher direction is exact: on the axis through
    both modes, where both posteriors' covariances are diagonal. (The default step, 0.3σ, chosen for robustness to
    model error, gives a smoothed value: up to 31 % off here.) The between-concept estimate (method ito) is far from
    it there."""
    monkeypatch.setattr(dynamic, "PROBE_STEP", 1e-4)
    sigma_start, sigma = 3.0, 0.8  # variance-exploding units
    x = torch.tensor([[-1.2, 0.0], [-0.2, 0.0], [0.4, 0.0], [1.1, 0.0]], dtype=torch.float64)

    def scale(sigma_ve):
        # A flow model's x = (1 − s)·x₀ + s·n is the VE state times 1 − s, s = σ/(1 + σ); the predictions D (of x₀)
        # are the same in both.
        return 1.0 / (1.0 + sigma_ve) if flow else 1.0

    def model_units(x_ve, sigma_ve):
        return scale(sigma_ve) * x_ve, (sigma_ve / (1.0 + sigma_ve) if flow else sigma_ve)

    run = dynamic.DynamicRun((dynamic.DynamicNegative(method="ito-probe", p_min=1e-12, p_max=1 - 1e-12),), flow)
    _, _, empty, negative = unequal_modes(x, sigma_start)
    run.factors(*model_units(x, sigma_start), (True,), empty, [negative])  # the start: no probe wanted
    log_q_negative, log_q_empty, empty, negative = unequal_modes(x, sigma)
    x_model, sigma_model = model_units(x, sigma)
    assert run.probing(sigma_model, (True,)) == (True,)
    probe_x = run.probe_point(x_model, sigma_model) / scale(sigma)  # back to VE units
    _, _, probe_empty, probe_negative = unequal_modes(probe_x, sigma)
    run.factors(x_model, sigma_model, (True,), empty, [negative], probe=(probe_empty, [probe_negative], (True,)))

    exact = exact_laplacian_difference(log_q_negative, log_q_empty, x)
    torch.testing.assert_close(run.states[0]._laplacian, exact, rtol=1e-2, atol=1e-3)
    p = (log_q_negative(x) - log_q_empty(x) + math.log(0.5)).exp()
    between = -p / (1 - p) * ((negative - empty) ** 2).sum(1) / sigma ** 4
    assert ((between - exact).abs() > 0.2 * exact.abs()).any()


def test_probe_step_is_the_trapezoid_rule_on_an_ode_path():
    """One ODE step σ 1 → 0.9 with a drift that is not the model's, from the exact p, with the exact Laplacians at
    both ends: the ito-probe update is the trapezoid (Stratonovich) rule written out by hand, and lands nearer the
    exact p(ỹ | x_b) than the Itô update's left point with the same Laplacian."""
    sigma_a, sigma_b = 1.0, 0.9
    x_a = torch.tensor([[-0.4, 0.0], [0.1, 0.0], [0.5, 0.0], [1.0, 0.0]], dtype=torch.float64)
    log_q_negative_a, log_q_empty_a, empty_a, negative_a = unequal_modes(x_a, sigma_a)
    drift = empty_a - 2.0 * (negative_a - empty_a)
    x_b = x_a + (sigma_b - sigma_a) * (x_a - drift) / sigma_a
    log_q_negative_b, log_q_empty_b, empty_b, negative_b = unequal_modes(x_b, sigma_b)
    log_p_a = log_q_negative_a(x_a) - log_q_empty_a(x_a) + math.log(0.5)
    log_p_b = log_q_negative_b(x_b) - log_q_empty_b(x_b) + math.log(0.5)
    laplacian_a = exact_laplacian_difference(log_q_negative_a, log_q_empty_a, x_a)
    laplacian_b = exact_laplacian_difference(log_q_negative_b, log_q_empty_b, x_b)

    def stepped(method, laplacian_b):
        state = dynamic.DynamicNegativeState(dynamic.DynamicNegative(method=method, p_min=1e-12, p_max=1 - 1e-12))
        state.log_odds = log_p_a.clone()
        state._previous = (x_a, sigma_a, empty_a, negative_a, sigma_a)
        state._laplacian = laplacian_a
        state._noise, state._noise_count = torch.zeros(4, dtype=torch.float64), dynamic.NOISE_STEPS  # an ODE
        state.update_from(dynamic.Evaluation(x_b, sigma_b, empty_b, sigma_b), negative_b, laplacian_b)
        return state.log_odds

    def ends(x, sigma, empty, negative, laplacian):
        score_difference = (negative - empty) / sigma ** 2
        squares = (((x - negative) ** 2).sum(1) - ((x - empty) ** 2).sum(1)) / sigma ** 4
        return score_difference, laplacian + squares

    g_a, h_a = ends(x_a, sigma_a, empty_a, negative_a, laplacian_a)
    g_b, h_b = ends(x_b, sigma_b, empty_b, negative_b, laplacian_b)
    by_hand = log_p_a + (0.5 * (g_a + g_b) * (x_b - x_a)).sum(1) - 0.25 * (sigma_a ** 2 - sigma_b ** 2) * (h_a + h_b)
    probe = stepped("ito-probe", laplacian_b)
    torch.testing.assert_close(probe, by_hand, rtol=1e-10, atol=1e-12)

    # The Itô update's left point, told the same exact Laplacian at x_a (what the probe gives it):
    state = dynamic.DynamicNegativeState(dynamic.DynamicNegative(method="ito", p_min=1e-12, p_max=1 - 1e-12))
    state.log_odds = log_p_a.clone()
    state._previous = (x_a, sigma_a, empty_a, negative_a, sigma_a)
    state._noise, state._noise_count = torch.zeros(4, dtype=torch.float64), dynamic.NOISE_STEPS
    state._laplacian_difference = lambda previous, p: laplacian_a
    state.update_from(dynamic.Evaluation(x_b, sigma_b, empty_b, sigma_b), negative_b)
    assert (probe - log_p_b).abs().max() < 0.5 * (state.log_odds - log_p_b).abs().max(), (probe, state.log_odds, log_p_b)


def test_divergence_probe_adds_one_evaluation_of_the_negative_and_empty_only(host):
    """update 'Itô + divergence probe' (an option): after the first evaluation (the Tweedie start needs none), every
    evaluation where the dynamic negative acts adds one forward of ỹ and ∅ only; outside its window, none. The
    default update adds none (test_no_extra_model_passes). The guidance trace's passes count both forwards."""
    _, dynamic = pack()
    counter = support.PassCounter()
    trace = support.pack_module("nodes.trace_nodes").NegativeGuidanceTrace.execute().result[0]
    settings = dynamic.DynamicNegative(method="ito-probe")
    patch_sample(host, patched(host, -1.0, settings, start=0.0, end=0.5, trace=trace,
                               model=counter.counting(host.model)))
    calls = counter.by_sigma()
    main = [sigma for sigma, conds in calls if 0 in conds]
    probes = [(sigma, conds) for sigma, conds in calls if 0 not in conds]
    assert len(main) == STEPS and all(sigma < dynamic.TWEEDIE_SIGMA for sigma in main)
    assert probes == [(sigma, (1, 2)) for sigma in main[1:STEPS // 2]]
    # The probe's forward comes first (a patch keeping the last forward's attention keeps the evaluation's own).
    assert [conds for sigma, conds in calls][:3] == [(0, 1, 2), (1, 2), (0, 1, 2)]
    # The model's inputs counted at the model, per sampler evaluation (the probe's forward precedes its evaluation's).
    per_evaluation, pending = [], 0
    for sigma, conds in calls:
        pending += len(conds)
        if 0 in conds:
            per_evaluation.append(pending)
            pending = 0
    # y, ỹ, ∅ at the start; + ỹ, ∅ probed inside the window; y, ∅ after it.
    assert [e.passes for e in trace.last_run.evaluations] == per_evaluation == (
        [3] + [5] * (STEPS // 2 - 1) + [2] * (STEPS - STEPS // 2))


def test_divergence_probe_reaches_the_tracker(host, monkeypatch):
    """Through the patch and a real sampler, every update after the first gets the probe's Laplacian difference: one
    finite value per sample. (Without it the update would fall back to the Itô estimate unnoticed.)"""
    _, dynamic = pack()
    received = []
    update_from = dynamic.DynamicNegativeState.update_from

    def recording(self, evaluation, negative_pred, laplacian=None):
        received.append(None if laplacian is None else laplacian.clone())
        return update_from(self, evaluation, negative_pred, laplacian)

    monkeypatch.setattr(dynamic.DynamicNegativeState, "update_from", recording)
    patch_sample(host, patched(host, -1.0, dynamic.DynamicNegative(method="ito-probe")))
    assert len(received) == STEPS and received[0] is None
    batch = host.latent["samples"].shape[0]
    assert all(value.shape == (batch,) and torch.isfinite(value).all() for value in received[1:])

