"""The exact-score benchmark's first rows, on a smaller sample than the docs' 20 000: the real nodes and ComfyUI's
samplers on a Gaussian mixture whose answer was computed independently (issue 4). A wrong sign, a swapped scale
or a misplaced window moves a row by far more than the tolerance (four standard errors)."""

import math

import pytest
import torch

import support

SAMPLES = 2000
SEED = 0
# (forbidden mass, off-manifold mass) from an independent numpy computation of the same design, 20 000 samples.
EXPECTED = {
    "positive only (BasicGuider)": (0.499, 0.014),
    "three-way s⁺ 1, s⁻ 1": (0.189, 0.813),
    "three-way s⁺ 1, s⁻ 3": (0.028, 0.972),
    "three-way s⁻ 3, early window 0-⅓": (0.299, 0.024),
    "three-way s⁻ 3, middle window ⅓-⅔": (0.074, 0.927),
    "three-way s⁻ 3, late window ⅔-1": (0.499, 0.507),
}


@pytest.fixture(scope="module")
def bench():
    support.load_pack()
    return support.load_pure_module("benchmarks/exact_score.py", "negguide_exact_score")


@pytest.fixture(scope="module")
def results(bench):
    wanted = set(EXPECTED) | {"ordinary negative, cfg 1 (eq. 9)", "three-way s⁺ 1, s⁻ 1 (guider)"}
    settings = [s for s in bench.SETTINGS if s.label in wanted]
    return {setting.label: (points, forbidden, off)
            for setting, points, forbidden, off, _ in bench.run_all(SAMPLES, SEED, settings)}


def tolerance(p):
    return 4 * math.sqrt(max(p * (1 - p), 0.01) / SAMPLES)


@pytest.mark.parametrize("label", list(EXPECTED))
def test_rows_match_independent_computation(results, label):
    _, forbidden, off = results[label]
    expected_forbidden, expected_off = EXPECTED[label]
    assert forbidden == pytest.approx(expected_forbidden, abs=tolerance(expected_forbidden))
    assert off == pytest.approx(expected_off, abs=tolerance(expected_off))


def test_ordinary_negative_at_cfg_one_is_positive_only(results):
    # ComfyUI's negative prompt with w = cfg = 1 is eps(y) alone: the same samples as the positive-only guider.
    assert torch.equal(results["ordinary negative, cfg 1 (eq. 9)"][0], results["positive only (BasicGuider)"][0])


def test_patch_and_guider_routes_agree(results):
    torch.testing.assert_close(results["three-way s⁺ 1, s⁻ 1 (guider)"][0], results["three-way s⁺ 1, s⁻ 1"][0],
                               rtol=1e-5, atol=1e-5)


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
