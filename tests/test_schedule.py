"""The pure maths, schedules and validation (nodes/schedule.py, nodes/validation.py), with no ComfyUI and no torch."""

import math

import pytest

from support import load_pure_module

schedule = load_pure_module("nodes/schedule.py")
validation = load_pure_module("nodes/validation.py")
Window = schedule.Window


def one_negative(cfg, neg_scale, window=Window(), dynamic=None):
    """The settings of a guidance node with its own negative only, as the nodes build them."""
    return schedule.GuidanceSettings(cfg, (schedule.NegativeTerm.main(neg_scale, window, "steps", dynamic),))


def research_steps(window, steps=30):
    """Which of `steps` euler steps have the negative on: step i is evaluated at p = i/steps."""
    return [i for i in range(steps) if window.weight(i / steps) > 0]


class TestWindow:
    def test_research_setting_steps_5_to_15_of_30(self):
        # The UI rounds 5/30 to 0.1667 (or 0.167): both must still mean step 5.
        for start in (5 / 30, 0.1667, 0.167):
            assert research_steps(Window(start, 0.5)) == list(range(5, 15))

    def test_full_window_is_one_everywhere(self):
        window = Window(0.0, 1.0, "linear", 0.2)  # no ramp at the ends of sampling
        assert all(window.weight(p / 100) == 1.0 for p in range(101))
        assert window.is_full

    def test_empty_window_is_zero_everywhere(self):
        for window in (Window(0.4, 0.4), Window(1.0, 1.0)):
            assert window.is_empty
            assert all(window.weight(p / 100) == 0.0 for p in range(101))

    def test_window_is_half_open(self):
        window = Window(0.25, 0.75)
        assert window.weight(0.25) == 1.0
        assert window.weight(0.75) == 0.0
        assert window.weight(0.749) == 1.0
        assert window.weight(0.2) == 0.0

    @pytest.mark.parametrize("ramp, mid", [("linear", 0.5), ("smoothstep", 0.5)])
    def test_ramps_fade_in_and_out_inside_the_window(self, ramp, mid):
        window = Window(0.2, 0.8, ramp, 0.2)
        assert window.weight(0.2) == 0.0
        assert window.weight(0.3) == pytest.approx(mid)
        assert window.weight(0.4) == 1.0
        assert window.weight(0.5) == 1.0
        assert window.weight(0.7) == pytest.approx(mid)
        assert window.weight(0.8) == 0.0

    def test_smoothstep_shape(self):
        window = Window(0.5, 1.0, "smoothstep", 0.4)
        u = 0.25
        assert window.weight(0.5 + u * 0.4) == pytest.approx(u * u * (3 - 2 * u))
        assert window.weight(0.99) == 1.0  # no fade-out at the end of sampling

    def test_hard_ramp_ignores_width(self):
        assert Window(0.2, 0.8, "hard", 0.3).weight(0.21) == 1.0


class DynamicSettings:
    """What schedule.py reads of a dynamic scale's settings (dynamic.DynamicNegative, which needs torch)."""

    def largest_scale(self) -> float:
        return 198.0  # λ 2, p_max 0.99


class TestCoefficients:
    @pytest.mark.parametrize("cfg, s, has_blend", [
        (1.5, 2.0, True), (1.01, 100.0, True), (0.99, 2.0, True),  # a cfg the widget can give: always u*
        (1.0 + 1e-4, 2.0, False), (1.0 + 1e-8, 2.0, False), (1.0 - 1e-6, 2.0, False),  # α beyond MAX_BLEND
        (1.0 + 1.8e-6, 9e-7, True),  # α = 1/2: nothing to lose
        (1.0 + 1e-4, -1.0, True),  # follows cfg: α = w
    ])
    def test_no_blend_where_it_would_lose_the_guidance_to_rounding(self, cfg, s, has_blend):
        """Near s⁺ = 1 a run whose α = s/(s⁺ − 1) would exceed MAX_BLEND goes without u* (same formula, the
        negative term after the hooks); decided per run, so a ramp (w < 1 here) does not switch ways."""
        k = one_negative(cfg, s).at([0.5])
        assert (k.blends is not None) == has_blend
        if has_blend and s >= 0:
            assert k.blends[0] == pytest.approx(0.5 * s / (cfg - 1.0))

    @pytest.mark.parametrize("cfg, has_blend", [(6.0, True), (1.5, True), (1.001, False)])
    def test_a_dynamic_scale_counts_at_its_largest(self, cfg, has_blend):
        """λ·p_max/(1 − p_max) = 198 only matters near s⁺ = 1: at any cfg the widget gives, u* stays."""
        k = one_negative(cfg, 0.0, dynamic=DynamicSettings()).at([1.0])
        assert (k.blends is not None) == has_blend

    def test_weights_reproduce_the_formula(self):
        c, n, e = 0.7, -1.3, 0.2
        for cfg, s in ((7.0, 6.0), (7.0, 2.5), (1.0, 3.0), (5.0, 0.0), (1.0, 0.0)):
            k = schedule.StepCoefficients(cfg, (s,))
            expected = e + cfg * (c - e) - s * (n - e)
            empty_weight = 1.0 - k.positive_weight + k.negatives[0]
            assert k.positive_weight * c - k.negatives[0] * n + empty_weight * e == pytest.approx(expected)

    def test_blend_makes_each_step_plain_cfg(self):
        c, n, e = 0.7, -1.3, 0.2
        for cfg, s in ((7.0, 6.0), (7.0, 2.5), (3.0, 0.0), (0.5, 1.0)):
            k = schedule.StepCoefficients(cfg, (s,))
            u = e + k.blends[0] * (n - e)
            assert u + cfg * (c - u) == pytest.approx(e + cfg * (c - e) - s * (n - e))

    @pytest.mark.parametrize("cfg, s, needed", [
        (7.0, 6.0, (True, True, False)),   # s⁻ = s⁺ − 1: the ordinary negative prompt, ∅ drops out
        (7.0, 0.0, (True, False, True)),   # negative off: CFG against ∅
        (7.0, 3.0, (True, True, True)),    # three-way
        (1.0, 0.0, (True, False, False)),  # s⁺ = 1, negative off: one pass
        (1.0, 2.0, (True, True, True)),
    ])
    def test_only_nonzero_coefficients_are_needed(self, cfg, s, needed):
        k = schedule.StepCoefficients(cfg, (s,))
        assert (k.needs_positive, k.needs_negatives[0], k.needs_empty) == needed

    @pytest.mark.parametrize("cfg, weight", [(7.0, 1.0), (7.0, 0.5), (2.0, 1.0), (1.0, 0.5), (7.0, 0.0)])
    def test_dynamic_factor_is_multiplied_into_the_coefficient(self, cfg, weight):
        """A dynamic main negative: sᵢ = wᵢ·fᵢ, fᵢ known only after the model pass (here a number per sample);
        ∅ is needed wherever it acts, even where a constant sᵢ = s⁺ − 1 would have let ∅ drop out (cfg 2)."""
        c, n, e, factor = 0.7, -1.3, 0.2, 3.0
        settings = one_negative(cfg, schedule.NEG_SCALE_FOLLOWS_CFG, dynamic=DynamicSettings())
        assert not settings.main.follows_cfg and settings.needs_empty()
        k = settings.at([weight])
        acts = weight > 0.0
        assert k.needs_factors == (acts,) and k.needs_negatives == (acts,) and k.needs_empty == (acts or cfg != 1.0)
        (s,), blends = k.with_factors([factor if acts else None])
        assert s == pytest.approx(weight * factor)
        expected = e + cfg * (c - e) - weight * factor * (n - e)
        if blends is None:  # s⁺ = 1 with the negative acting: no u*, the term is applied on its own
            assert cfg == 1.0 and acts and c - s * (n - e) == pytest.approx(expected)
        else:
            u = e + blends[0] * (n - e)
            assert u + cfg * (c - u) == pytest.approx(expected)

    def test_follow_cfg(self):
        for neg_scale in (schedule.NEG_SCALE_FOLLOWS_CFG, -0.1):  # any negative value follows cfg
            settings = one_negative(7.5, neg_scale)
            assert settings.main.follows_cfg and settings.scales == (6.5,)
            assert not settings.needs_empty()

    @pytest.mark.parametrize("cfg, neg_scale, window, needs", [
        (7.0, -1.0, Window(), False),
        (7.0, 6.0, Window(), False),
        (7.0, 3.0, Window(), True),
        (7.0, 0.0, Window(), True),
        (1.0, 0.0, Window(), False),
        (7.0, -1.0, Window(0.2, 0.5), True),   # outside the window: CFG against ∅
        (1.0, 0.0, Window(0.2, 0.5), False),
        (1.0, 2.0, Window(0.2, 0.5), True),
        (7.0, 6.0, Window(0.5, 0.5), True),     # empty window
    ])
    def test_needs_empty(self, cfg, neg_scale, window, needs):
        assert one_negative(cfg, neg_scale, window).needs_empty() == needs


class TestProgressMaps:
    sigmas = [14.6, 9.0, 5.0, 2.0, 0.5, 0.0]

    def test_steps_places_scheduled_sigmas_at_i_over_n(self):
        progress_map = schedule.steps_progress_map(self.sigmas)
        assert [progress_map.progress(s) for s in self.sigmas[:-1]] == [i / 5 for i in range(5)]

    def test_steps_places_midpoints_inside_their_step(self):
        progress_map = schedule.steps_progress_map(self.sigmas)
        assert progress_map.progress(7.0) == pytest.approx((1 + 0.5) / 5)  # halfway from 9 to 5
        assert progress_map.progress(20.0) == 0.0  # above the first sigma: clamped
        assert progress_map.progress(0.0) == 1.0

    def test_sigma_unit_is_linear_in_sigma(self):
        progress_map = schedule.sigma_progress_map(0.0292, 14.6146)
        assert progress_map.progress(14.6146) == 0.0
        assert progress_map.progress(0.0292) == 1.0
        assert progress_map.progress((14.6146 + 0.0292) / 2) == pytest.approx(0.5)

    def test_percent_unit_edges_are_exact(self):
        # A made-up monotone percent_to_sigma; the window's edges must map to exactly its values.
        percent_to_sigma = lambda p: 10.0 * (1.0 - p) ** 2  # noqa: E731
        window = Window(0.3, 0.7, "linear", 0.1)
        progress_map = schedule.percent_progress_map(percent_to_sigma, percent_to_sigma, 10.0, window)
        for edge in (0.3, 0.4, 0.6, 0.7):
            assert progress_map.progress(percent_to_sigma(edge)) == pytest.approx(edge, abs=1e-12)
        assert progress_map.progress(percent_to_sigma(0.5)) == pytest.approx(0.5, abs=1e-3)


class TestValidation:
    node = "NegativeGuidanceGuider"

    def check(self, cfg=7.0, neg_scale=-1.0, start=0.0, end=1.0, unit="steps", ramp="hard", width=0.0, empty=True):
        return validation.inputs_problem(self.node, cfg, neg_scale, start, end, unit, ramp, width, empty)

    def test_defaults_are_valid(self):
        assert self.check() is None
        assert self.check(empty=False) is None

    @pytest.mark.parametrize("kwargs, words", [
        ({"start": 0.6, "end": 0.4}, ["neg_start (0.6)", "neg_end (0.4)"]),
        ({"neg_scale": math.nan}, ["neg_scale", "finite"]),
        ({"cfg": math.inf}, ["cfg", "finite"]),
        ({"neg_scale": -1.5}, ["neg_scale", "between -1 and 100", "follows cfg"]),
        ({"neg_scale": 500.0}, ["neg_scale", "between -1 and 100", "got 500"]),
        ({"cfg": -1.0}, ["cfg", "between 0 and 100"]),
        ({"cfg": 1000.0}, ["cfg", "between 0 and 100", "got 1000"]),
        ({"width": 1.5}, ["ramp_width", "between 0 and 1"]),
        ({"start": 1.5}, ["neg_start", "between 0 and 1"]),
        ({"unit": "minutes"}, ["window_unit", "minutes"]),
        ({"ramp": "cosine"}, ["ramp", "cosine"]),
        ({"start": 0.4, "end": 0.6, "ramp": "linear", "width": 0.15}, ["ramp_width (0.15)", "too wide"]),
        ({"neg_scale": 3.0, "empty": False}, ["connect 'empty'"]),
        ({"start": 0.2, "end": 0.5, "empty": False}, ["connect 'empty'"]),
    ])
    def test_bad_input_names_node_and_input(self, kwargs, words):
        problem = self.check(**kwargs)
        assert problem is not None and problem.startswith(f"{self.node}: ")
        for word in words:
            assert word in problem

    def test_one_ramp_at_the_end_of_sampling_fits(self):
        # Window 0.5-1.0 fades in only (no fade-out at 1): a 0.5-wide ramp fills it exactly.
        assert self.check(start=0.5, end=1.0, ramp="linear", width=0.5) is None

    def test_any_negative_neg_scale_follows_cfg(self):
        # The widget's arrows step 0 → -0.1 and -1 → -0.9: both mean "follow cfg", like -1.
        assert self.check(neg_scale=-0.1, empty=False) is None
        for neg_scale in (-0.9, -1.0):
            assert "connect 'empty'" in self.check(neg_scale=neg_scale, start=0.2, empty=False)

    def test_extra_negative_scale_starts_at_zero(self):
        term = schedule.NegativeTerm(-1.0, Window())
        assert validation.problem("ExtraNegative", term) == "ExtraNegative: neg_scale must lie between 0 and 100, got -1."

    def test_unknown_values_are_not_checked(self):
        assert validation.inputs_problem(self.node, None, None, None, None, None, None, None, None) is None


def test_steps_are_numbered_from_one_and_extra_evaluations_sit_between():
    sigmas = [10.0, 5.0, 2.0, 0.0]  # three steps
    assert [schedule.step_number(sigmas, s) for s in (10.0, 7.0, 5.0, 2.0, 1.0, 0.0)] == [1, 1, 2, 3, 3, 3]
    assert schedule.step_number(sigmas, 20.0) == 1  # above the first sigma: still the first step
    assert schedule.step_position(sigmas, 10.0) == 1.0
    assert schedule.step_position(sigmas, 7.5) == 1.5  # heun's midpoint-like evaluation, halfway to step 2
    assert schedule.step_position(sigmas, 1.0) == 3.5
