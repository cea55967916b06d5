"""The exact-score benchmark's first rows, on a smaller sample than the docs' 20 000: the real nodes and ComfyUI's
samplers on a Gaussian mixture, against `numpy_reference`, an independent numpy integration of the same design
(Heun's method written out, its own karras schedule and exact mixture denoiser; no ComfyUI, no pack code). A wrong
sign, a swapped scale or a misplaced window moves a row by far more than the tolerance (four standard errors).
"""

import math

import numpy as np
import pytest
import torch

import support

SAMPLES = 2000
SEED = 0
REFERENCE_SAMPLES = 5000
# label → (s⁻, window start, window end); s⁺ = 1 throughout (s⁻ 0: the positive prompt alone).
REFERENCE_SETTINGS = {
    "positive only (BasicGuider)": (0.0, 0.0, 1.0),
    "three-way s⁺ 1, s⁻ 1": (1.0, 0.0, 1.0),
    "three-way s⁺ 1, s⁻ 3": (3.0, 0.0, 1.0),
    "three-way s⁻ 3, early window 0-⅓": (3.0, 0.0, 1 / 3),
    "three-way s⁻ 3, middle window ⅓-⅔": (3.0, 1 / 3, 2 / 3),
    "three-way s⁻ 3, late window ⅔-1": (3.0, 2 / 3, 1.0),
}


def numpy_reference(neg_scale, start, end, samples=REFERENCE_SAMPLES, seed=1, steps=32):
    """(forbidden, off-manifold) mass of eps = eps(y) − s⁻·w·(eps(ỹ) − eps(∅)) on the four-Gaussian mixture,
    integrated with Heun's method (EDM, Karras et al. 2022, Algorithm 1 without churn) on the karras schedule
    σ 80 → 0.002 (ρ 7); w = 1 on the evaluations whose step fraction i/steps lies in [start, end)."""
    modes = np.array([[2.0, 2.0], [2.0, -2.0], [-2.0, 2.0], [-2.0, -2.0]])
    std = 0.3
    weights = {"y": np.array([1.0, 1.0, 0.0, 0.0]), "n": np.array([1.0, 0.0, 1.0, 0.0]), "e": np.ones(4)}

    def denoised(x, sigma, w):
        variance = std ** 2 + sigma ** 2
        offsets = x[:, None, :] - modes[None]
        with np.errstate(divide="ignore"):
            log_w = np.log(w)[None] - (offsets ** 2).sum(-1) / (2 * variance)
        log_w -= log_w.max(axis=1, keepdims=True)
        gamma = np.exp(log_w)
        gamma /= gamma.sum(axis=1, keepdims=True)
        return (gamma[:, :, None] * (modes[None] + std ** 2 / variance * offsets)).sum(1)

    def guided(x, sigma, progress):
        d = denoised(x, sigma, weights["y"])
        s = neg_scale if start <= progress and (progress < end or end >= 1) else 0.0
        if s:
            d = d - s * (denoised(x, sigma, weights["n"]) - denoised(x, sigma, weights["e"]))
        return d

    ramp = np.linspace(0, 1, steps)
    sigmas = (80.0 ** (1 / 7) + ramp * (0.002 ** (1 / 7) - 80.0 ** (1 / 7))) ** 7
    sigmas = np.append(sigmas, 0.0)
    x = np.random.default_rng(seed).standard_normal((samples, 2)) * sigmas[0]
    for i in range(steps):
        slope = (x - guided(x, sigmas[i], i / steps)) / sigmas[i]
        step = sigmas[i + 1] - sigmas[i]
        if sigmas[i + 1] == 0:
            x = x + slope * step
        else:
            proposal = x + slope * step
            slope_next = (proposal - guided(proposal, sigmas[i + 1], (i + 1) / steps)) / sigmas[i + 1]
            x = x + 0.5 * (slope + slope_next) * step
    distance = np.linalg.norm(x[:, None, :] - modes[None], axis=-1).min(axis=1)
    return float((x[:, 1] > 0).mean()), float((distance > 3 * std).mean())


@pytest.fixture(scope="module")
def bench():
    support.load_pack()
    return support.load_pure_module("benchmarks/exact_score.py", "negguide_exact_score")


@pytest.fixture(scope="module")
def results(bench):
    wanted = set(REFERENCE_SETTINGS) | {"ordinary negative, cfg 1 (eq. 9)", "three-way s⁺ 1, s⁻ 1 (guider)"}
    settings = [s for s in bench.SETTINGS if s.label in wanted]
    return {setting.label: (points, forbidden, off)
            for setting, points, forbidden, off, _ in bench.run_all(SAMPLES, SEED, settings)}


def tolerance(ours, reference):
    """Four standard errors of the difference of two sampled fractions, from their pooled fraction (at least one
    sample in all), so that a row near 0 is held as tightly as its sample allows: a fixed floor of p(1 − p) = 0.01
    let 0.002 pass as 0.012."""
    pooled = (ours * SAMPLES + reference * REFERENCE_SAMPLES) / (SAMPLES + REFERENCE_SAMPLES)
    floor = 1 / (SAMPLES + REFERENCE_SAMPLES)
    return 4 * math.sqrt(max(pooled * (1 - pooled), floor) * (1 / SAMPLES + 1 / REFERENCE_SAMPLES))


@pytest.mark.parametrize("label", list(REFERENCE_SETTINGS))
def test_rows_match_independent_computation(results, label):
    _, forbidden, off = results[label]
    expected_forbidden, expected_off = numpy_reference(*REFERENCE_SETTINGS[label])
    assert forbidden == pytest.approx(expected_forbidden, abs=tolerance(forbidden, expected_forbidden))
    assert off == pytest.approx(expected_off, abs=tolerance(off, expected_off))


def test_ordinary_negative_at_cfg_one_is_positive_only(results):
    # ComfyUI's negative prompt with w = cfg = 1 is eps(y) alone: the same samples as the positive-only guider.
    assert torch.equal(results["ordinary negative, cfg 1 (eq. 9)"][0], results["positive only (BasicGuider)"][0])


def test_patch_and_guider_routes_agree(results):
    # The same arithmetic on two routes: equal up to rounding, relative to the samples' scale (an elementwise
    # tolerance would depend on BLAS threading).
    support.assert_close_to_scale(results["three-way s⁺ 1, s⁻ 1 (guider)"][0], results["three-way s⁺ 1, s⁻ 1"][0])


def test_model_is_the_exact_denoiser(bench):
    """At σ → 0 the denoiser returns the point itself; at large σ the mixture's mean; via ComfyUI's apply_model."""
    model = bench.build_model()
    model_sampling = model.get_model_object("model_sampling")
    assert float(model_sampling.sigma_max) == pytest.approx(80.0) and float(model_sampling.sigma_min) == pytest.approx(0.002, rel=1e-4)
    x = torch.tensor([[1.0, -0.5], [2.1, 1.9]]).reshape(2, 2, 1, 1)
    context = bench.concept("positive")[0][0].repeat(2, 1, 1)
    for sigma, expected in ((1e-3, x.reshape(2, 2)), (1e4, torch.tensor([[2.0, 0.0], [2.0, 0.0]]))):
        t = torch.full((2,), sigma)
        out = model.model.apply_model(x, t, c_crossattn=context, transformer_options={"sigmas": t})
        torch.testing.assert_close(out.reshape(2, 2), expected, atol=2e-3, rtol=1e-3)


# ---- the dynamic negative: the targets (20 000 samples in the docs), on a smaller sample ----

DYNAMIC_SAMPLES = 1000


@pytest.fixture(scope="module")
def dynamic_results(bench):
    settings = (*bench.dynamic_settings([bench.FOUR], ["heun"]), *bench.dynamic_settings([bench.FLOW], ["euler"]),
                *bench.dynamic_settings([bench.ASYMMETRIC], ["euler_ancestral"]))
    return bench.run_all(DYNAMIC_SAMPLES, SEED, settings)


def test_dynamic_negative_removes_the_concept_and_stays_on_the_data(bench, dynamic_results):
    """Forbidden ≤ 0.03 and off-manifold ≤ 0.03 (asymmetric: ≤ 0.05) with positive fidelity ≥ 0.99, where a
    constant s⁻ = 3 leaves 0.97 off the data and an early window 0.3 in the forbidden region."""
    for setting, points, forbidden, off, _ in dynamic_results:
        limit = 0.05 if setting.toy is bench.ASYMMETRIC else 0.03
        assert forbidden <= limit and off <= limit, (setting.label, forbidden, off)
        assert bench.positive_fidelity(points) >= 0.99, setting.label


# ---- the random family (benchmarks/exact_score_family.py, issue 16): a CI sample against the exact-p oracle ----

FAMILY_TOYS = (0, 1, 2, 3)  # the first toy of each negative class: inside, partial, outside, issue
FAMILY_SAMPLERS = ("heun", "euler_ancestral")
FAMILY_UPDATES = ("mixture", "ito-probe")  # the default, and the option with the divergence probe
# Known failures on this sample, measured at 1000 samples (docs/dynamic_negative.md): strict, so that a fix shows.
# Toy 1 (partial): off-manifold 0.077 (Heun) and 0.050 (Euler ancestral) with the default update, 0.098 and 0.096 with
# the probe, against the oracle's 0.061 / 0.008 (+ 0.01).
FAMILY_KNOWN_FAILURES = {(1, "heun"), (1, "euler_ancestral")}


@pytest.fixture(scope="module")
def family_rows():
    family = support.load_pure_module("benchmarks/exact_score_family.py", "negguide_exact_score_family")
    toys = [family.family()[i] for i in FAMILY_TOYS]
    return family, family.run_family((family.ORACLE, *FAMILY_UPDATES), DYNAMIC_SAMPLES, toys, FAMILY_SAMPLERS,
                                     ("edm",), progress=False)


@pytest.mark.parametrize("update, toy, sampler", [
    pytest.param(u, t, s, marks=pytest.mark.xfail(strict=True, reason="known failure, see FAMILY_KNOWN_FAILURES"))
    if (t, s) in FAMILY_KNOWN_FAILURES else (u, t, s)
    for u in FAMILY_UPDATES for t in FAMILY_TOYS for s in FAMILY_SAMPLERS])
def test_family_sample_meets_the_oracle_bounds(family_rows, update, toy, sampler):
    """Issue 16, item 2 at the defaults: forbidden and off-manifold ≤ max(0.03, oracle + 0.01), fidelity ≥ 0.98."""
    family, rows = family_rows
    (row, oracle, passes, failed), = [j for j in family.judge(rows, update)
                                     if j[0]["toy"] == toy and j[0]["sampler"] == sampler]
    assert passes, (failed, {k: row[k] for k in ("forbidden", "off", "fidelity")},
                    {k: oracle[k] for k in ("forbidden", "off")})


def test_family_oracle_p_is_the_closed_form(family_rows):
    """The oracle's p(ỹ | x) on a 2-mode limit: far from every mode but one, p is that mode's ỹ-membership."""
    family, _ = family_rows
    toy = family.family()[3].toy
    modes = torch.tensor(toy.modes, dtype=torch.float64)
    p = family.exact_log_p(toy, modes, 0.01).exp()
    torch.testing.assert_close(p, torch.tensor(toy.concepts["negative"], dtype=torch.float64), atol=1e-9, rtol=0)
