"""The maths of three-way negative guidance, with no ComfyUI and no torch.

    eps = eps(∅) + s⁺·(eps(y) − eps(∅)) − s⁻·w(t)·(eps(ỹ) − eps(∅))

This module decides, for one model evaluation at noise level sigma, the weight w of each negative's window and
the coefficients of the predictions; the torch side (guidance.py) only multiplies tensors. A dynamic negative's
per-sample factor, known only after the model pass, is multiplied in like a number (StepCoefficients.with_factors),
so nothing here imports torch. js/schedule.js mirrors `Window.weight`; tests/test_js_vectors.py checks they agree.

"Progress" p runs from 0 (first, noisiest evaluation) to 1 (end of sampling). Each window unit is a monotone map
between p and sigma, so an evaluation is placed by its sigma, never by matching a step's sigma exactly: samplers
that evaluate the model at intermediate sigmas (heun, dpm_2, uni_pc, ...) land where they belong.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Callable, Sequence

WINDOW_UNITS = ("steps", "timestep_percent", "sigma")
RAMPS = ("hard", "linear", "smoothstep")

# Window edges are compared with this slack so that a value rounded in the UI still means the step the user
# counted: 0.167 is step 5 of 30 (5/30 = 0.16667), 0.5 excludes step 15 of 30.
EDGE_TOLERANCE = 5e-4
# timestep_percent has no slack: there an edge means exactly what it means to ConditioningSetTimestepRange (the
# negative acts from sigma = percent_to_sigma(neg_start) down, so 0.1667 does not include the step at 1/6).
EDGE_TOLERANCES = {"steps": EDGE_TOLERANCE, "timestep_percent": 0.0, "sigma": EDGE_TOLERANCE}

# One notion of "zero" for every coefficient, the one ComfyUI's own CFG uses to skip the unconditional pass
# (math.isclose(cfg, 1.0): relative tolerance 1e-9): a value is zero when it is within ZERO_RELATIVE_TOLERANCE of
# the guidance's own scale, max(1, |s⁺|). A coefficient that is zero is treated as exactly zero and its
# conditioning is not evaluated.
ZERO_RELATIVE_TOLERANCE = 1e-9

# The value of neg_scale that means "follow cfg": s⁻ = s⁺ − 1, ComfyUI's ordinary negative prompt.
NEG_SCALE_FOLLOWS_CFG = -1.0


# Blends αᵢ = sᵢ/(s⁺ − 1) grow without bound as s⁺ → 1, and float32 rounds u* + s⁺(c − u*) to about |α|·2⁻²⁴·|n − e|,
# absolute (GuidanceSettings.blends_lose_precision). Within NEAR_ONE of s⁺ = 1, a run whose largest possible |α|
# exceeds MAX_BLEND goes without u*. Only a cfg from a link or the API gets that close: the widget steps by 0.01.
NEAR_ONE = 0.01
MAX_BLEND = 10000.0


def is_zero(value: float, cond_scale: float = 1.0) -> bool:
    """Whether a coefficient is zero next to a CFG scale s⁺ (the same test as math.isclose(s⁺, 1.0) for s⁺ − 1)."""
    return abs(value) <= ZERO_RELATIVE_TOLERANCE * max(1.0, abs(cond_scale))


def is_one(cond_scale: float) -> bool:
    """s⁺ = 1, where CFG has no guidance term: exactly ComfyUI's test for skipping the unconditional pass."""
    return math.isclose(cond_scale, 1.0)


def ramp_shape(ramp: str, u: float) -> float:
    """The fade curve on u ∈ [0, 1] (0 at the window's edge, 1 once fully faded in)."""
    u = min(max(u, 0.0), 1.0)
    if ramp == "linear":
        return u
    if ramp == "smoothstep":
        return u * u * (3.0 - 2.0 * u)
    return 1.0


@dataclass(frozen=True)
class Window:
    """The part of sampling, in progress p ∈ [0, 1], during which the negative acts: [start, end).

    Ramps fade the negative in after `start` and out before `end`, inside the window, over `ramp_width`;
    an edge at 0 or 1 (the start or end of sampling) has no ramp, since nothing lies beyond it to fade from.
    """

    start: float = 0.0
    end: float = 1.0
    ramp: str = "hard"
    ramp_width: float = 0.0
    # The slack of every edge comparison: EDGE_TOLERANCE for units that count steps, 0 where the edges must agree
    # exactly with ComfyUI's own comparisons (timestep_percent, as ConditioningSetTimestepRange).
    edge_tolerance: float = EDGE_TOLERANCE

    @property
    def fades_in(self) -> bool:
        return self.ramp != "hard" and self.ramp_width > 0.0 and self.start > self.edge_tolerance

    @property
    def fades_out(self) -> bool:
        return self.ramp != "hard" and self.ramp_width > 0.0 and self.end < 1.0 - self.edge_tolerance

    @property
    def is_empty(self) -> bool:
        return self.end - self.start <= self.edge_tolerance / 2 or self.start >= 1.0 - self.edge_tolerance / 2

    @property
    def is_full(self) -> bool:
        """True when w = 1 for every evaluation of every run."""
        return self.start <= self.edge_tolerance and self.end >= 1.0 - self.edge_tolerance

    def weight(self, progress: float) -> float:
        """w at progress p: 0 outside [start, end), 1 inside, fading over the ramps."""
        if self.is_empty:
            return 0.0
        inside_start = self.start <= self.edge_tolerance or progress >= self.start - self.edge_tolerance
        inside_end = self.end >= 1.0 - self.edge_tolerance or progress < self.end - self.edge_tolerance
        if not (inside_start and inside_end):
            return 0.0
        weight = 1.0
        if self.fades_in:
            weight = min(weight, self._fade(progress - self.start))
        if self.fades_out:
            weight = min(weight, self._fade(self.end - progress))
        return weight

    def _fade(self, distance_inside: float) -> float:
        """The ramp at a distance from the window's edge; within the edge tolerance of either end of the ramp it is
        exactly 0 or 1, so that a rounded neg_start (0.1667 for 5/30) leaves whole steps fully on or off."""
        if distance_inside <= self.edge_tolerance:
            return 0.0
        if distance_inside >= self.ramp_width - self.edge_tolerance:
            return 1.0
        return ramp_shape(self.ramp, distance_inside / self.ramp_width)


@dataclass(frozen=True)
class NegativeTerm:
    """One negative prompt ỹᵢ: its scale sᵢ, its window wᵢ and the unit the window counts in. A run's negatives
    are a tuple of these, the main negative (the guidance node's own) first."""

    scale: float  # sᵢ as set on the node (for a term that follows cfg, the node's neg_scale, unused)
    window: Window = Window()
    window_unit: str = "steps"
    # The settings of a dynamic scale (a dynamic.DynamicNegative, of which this module reads largest_scale()), or
    # None for the constant scale `scale`. A dynamic term's coefficient is wᵢ(t)·fᵢ, fᵢ = λp/(1 − p) per sample,
    # known only once the model has been evaluated (StepCoefficients.with_factors); `scale` is then not used.
    dynamic: object = None
    # sᵢ = s⁺ − 1 (ComfyUI's ordinary negative prompt): only the main negative, with a negative neg_scale.
    follows_cfg: bool = False

    def __post_init__(self):
        # The unit decides how exactly the edges are compared (see EDGE_TOLERANCES).
        tolerance = EDGE_TOLERANCES.get(self.window_unit, EDGE_TOLERANCE)
        if self.window.edge_tolerance != tolerance:
            object.__setattr__(self, "window", replace(self.window, edge_tolerance=tolerance))
        if self.dynamic is not None and self.follows_cfg:  # a dynamic scale replaces neg_scale, "follow cfg" too
            object.__setattr__(self, "follows_cfg", False)

    @classmethod
    def main(cls, neg_scale: float, window: Window, window_unit: str = "steps", dynamic=None) -> "NegativeTerm":
        """The guidance node's own negative: any negative neg_scale follows cfg (follows_cfg_value)."""
        return cls(float(neg_scale), window, window_unit, dynamic, follows_cfg_value(neg_scale))

    def scale_at(self, cfg: float) -> float:
        """sᵢ at the cfg s⁺: the one place where "follow cfg" becomes a number."""
        return cfg - 1.0 if self.follows_cfg else self.scale

    def acts(self, cfg: float) -> bool:
        """Whether this negative can have a non-zero coefficient (inside its window)."""
        return self.dynamic is not None or not is_zero(self.scale_at(cfg), cfg)


@dataclass(frozen=True)
class GuidanceSettings:
    """What the user set on the nodes: s⁺ (cfg) and every negative, the main one first:
    eps = e + s⁺(c − e) − Σᵢ sᵢ·wᵢ(t)·(nᵢ − e)."""

    cfg: float
    negatives: tuple  # NegativeTerm, main negative first

    @property
    def main(self) -> NegativeTerm:
        return self.negatives[0]

    @cached_property  # read at every model evaluation
    def scales(self) -> tuple:
        """Each negative's sᵢ at this cfg (a dynamic one's is not used)."""
        return tuple(term.scale_at(self.cfg) for term in self.negatives)

    @property
    def dynamic_terms(self) -> tuple:
        """Per negative, main first: its dynamic scale's settings, or None for a constant scale."""
        return tuple(term.dynamic for term in self.negatives)

    @cached_property
    def blends_lose_precision(self) -> bool:
        """Whether this run's steps go without u* although s⁺ ≠ 1 (StepCoefficients.blends): s⁺ within NEAR_ONE of 1
        and some negative of fixed or dynamic scale (at its largest, λ·p_max/(1 − p_max)) that would need a blend
        beyond MAX_BLEND. Decided once per run (and cfg), so that a ramp does not switch ways within a run; a
        negative that follows cfg has α = w ≤ 1 and never counts."""
        if is_one(self.cfg) or abs(self.cfg - 1.0) >= NEAR_ONE:
            return False
        largest = max((term.dynamic.largest_scale() if term.dynamic is not None else abs(term.scale)
                       for term in self.negatives if not term.follows_cfg), default=0.0)
        return largest > MAX_BLEND * abs(self.cfg - 1.0)

    @cached_property
    def _dynamic(self) -> tuple:
        dynamic = tuple(term.dynamic is not None for term in self.negatives)
        return dynamic if any(dynamic) else ()

    def at(self, window_weights) -> "StepCoefficients":
        """Coefficients for one evaluation, given each negative's window weight (main negative first)."""
        # A term that follows cfg has α = sᵢwᵢ / (s⁺ − 1) = wᵢ whatever s⁺ is: at s⁺ = 1 that is its value by
        # continuity (the stock negative prompt at cfg 1: u* = eps(ỹ)). Any other term has a fixed sᵢ, zero there
        # (or u* does not exist, see StepCoefficients.blends).
        limit_blends = tuple(float(w) if term.follows_cfg else 0.0 for term, w in zip(self.negatives, window_weights))
        # A dynamic term's coefficient before its per-sample factor is its window weight.
        negatives = tuple(w if term.dynamic is not None else s * w
                          for term, s, w in zip(self.negatives, self.scales, window_weights))
        return StepCoefficients(self.cfg, negatives, limit_blends, self._dynamic, self.blends_lose_precision)

    @cached_property  # read at every model evaluation
    def constant_weights(self) -> tuple | None:
        """Each negative's window weight when no window opens or closes during sampling (every window full or empty,
        or the term switched off by a fixed scale 0), so that every evaluation has the same coefficients; None when
        they depend on the sigma. (A term that follows cfg is never switched off: a wrapper may change cfg.)"""
        weights = []
        for term in self.negatives:
            switched_off = not term.follows_cfg and not term.acts(self.cfg)
            if term.window.is_full and not switched_off:
                weights.append(1.0)
            elif term.window.is_empty or switched_off:
                weights.append(0.0)
            else:
                return None
        return tuple(weights)

    def needs_empty(self) -> bool:
        """Whether eps(∅) can have a non-zero coefficient at some evaluation of some run."""
        active = [t.acts(self.cfg) and not t.window.is_empty for t in self.negatives]
        if not any(active):
            return not is_one(self.cfg)
        if all(t.window.is_full for t, act in zip(self.negatives, active) if act):
            return self.at([1.0 if act else 0.0 for act in active]).needs_empty
        # Some wᵢ takes 0 and 1 (or a ramp in between): the coefficient 1 − s⁺ + Σ sᵢwᵢ cannot vanish throughout.
        return True


@dataclass(frozen=True)
class StepCoefficients:
    """One evaluation's guidance: eps = e + s⁺(c − e) − Σᵢ sᵢ(nᵢ − e), with sᵢ = scaleᵢ·wᵢ(t), main negative first.

    Written as weights on the predictions: eps = s⁺·c − Σᵢ sᵢ·nᵢ + (1 − s⁺ + Σᵢ sᵢ)·e.
    Every "is it zero" below is the one test of `is_zero` / `is_one` (ComfyUI's math.isclose), taken in the order
    s⁺ = 1 first, then the blends αᵢ, so that no division by a vanishing sum can happen.
    """

    cond_scale: float  # s⁺
    negatives: tuple  # sᵢ = scaleᵢ·wᵢ(t); for a dynamic negative wᵢ(t), which its per-sample factor fᵢ multiplies
    # αᵢ of u* at s⁺ = 1 by continuity in s⁺ (GuidanceSettings.at): wᵢ for a term that follows cfg, else 0.
    limit_blends: tuple | None = None
    # Per negative: whether its coefficient is sᵢ·fᵢ, fᵢ = λp/(1 − p) a per-sample factor known only once the model
    # has been evaluated (a dynamic negative scale, see with_factors); () when none is.
    dynamic: tuple = ()
    # Go without u* although s⁺ ≠ 1 (GuidanceSettings.blends_lose_precision).
    blends_lose_precision: bool = False

    @property
    def positive_weight(self) -> float:
        return self.cond_scale

    @property
    def has_cfg_term(self) -> bool:
        """False at s⁺ = 1 (ComfyUI's math.isclose(cfg, 1.0)), where there is no CFG term."""
        return not is_one(self.cond_scale)

    @property
    def needs_positive(self) -> bool:
        return not is_zero(self.positive_weight, self.cond_scale)

    @cached_property
    def needs_negatives(self) -> tuple:
        return tuple(not is_zero(s, self.cond_scale) for s in self.negatives)

    @cached_property
    def needs_factors(self) -> tuple:
        """Per negative: whether this evaluation uses its per-sample factor fᵢ (a dynamic negative that acts)."""
        dynamic = self.dynamic or (False,) * len(self.negatives)
        return tuple(is_dynamic and need for is_dynamic, need in zip(dynamic, self.needs_negatives))

    @cached_property
    def needs_empty(self) -> bool:
        """Whether the formula itself uses eps(∅) at this evaluation."""
        if any(self.needs_factors):
            # A dynamic negative's factor is tracked from eps(∅), and ∅'s weight 1 − s⁺ + Σ sᵢfᵢ varies per sample.
            return True
        if not self.has_cfg_term:
            # eps = c − Σ sᵢ(nᵢ − e): ∅ takes part exactly when some negative does.
            return any(self.needs_negatives)
        # (1 − s⁺ + Σ sᵢ) = (1 − s⁺)(1 − Σ αᵢ): zero exactly when the blends sum to one.
        raw = [s / (self.cond_scale - 1.0) for s, need in zip(self.negatives, self.needs_negatives) if need]
        return not math.isclose(sum(raw), 1.0)

    @cached_property
    def blends(self) -> tuple | None:
        """αᵢ in u* = e + Σᵢ αᵢ(nᵢ − e), the unconditional prediction that makes this step plain CFG:
        e + s⁺(c − e) − Σ sᵢ(nᵢ − e) = u* + s⁺(c − u*) with αᵢ = sᵢ / (s⁺ − 1). A single negative with α = 1 is
        the ordinary negative prompt (u* = n); all α = 0 is CFG against the empty prompt (u* = e).

        At s⁺ = 1 the CFG term vanishes and u* is its limit as s⁺ → 1, which exists when every negative with a
        non-zero coefficient follows cfg (`limit_blends`; a term that follows cfg has α = w at any s⁺). With a
        fixed sᵢwᵢ ≠ 0 at s⁺ = 1 no u* exists: None.

        Near s⁺ = 1 (but not at it, by ComfyUI's math.isclose) the αᵢ grow as 1/(s⁺ − 1), and float32 rounds
        u* + s⁺(c − u*) to about |α|·2⁻²⁴·|n − e| (at s⁺ = 1 + 10⁻⁶ and s⁻ 2, 12 % of the negative term). A run
        with `blends_lose_precision` goes as where no u* exists (None): the formula's value without the
        cancellation; the hooks then see eps(∅) and cond_scale s⁺, and the negative term comes after them.
        """
        if not self.has_cfg_term:
            if any(self.needs_negatives):
                return None
            return self.limit_blends if self.limit_blends is not None else tuple(0.0 for _ in self.negatives)
        if self.blends_lose_precision:
            return None
        active = [s if need else 0.0 for s, need in zip(self.negatives, self.needs_negatives)]
        # Where ∅ drops out, Σ αᵢ = 1 within the tolerance: normalise so that u* is exactly Σ αᵢnᵢ with Σ αᵢ = 1 (a
        # single negative gives u* = n bit for bit, as ComfyUI's own CFG does). Σ sᵢ is then (s⁺ − 1)·Σ αᵢ ≠ 0.
        denominator = sum(active) if not self.needs_empty else self.cond_scale - 1.0
        return tuple(s / denominator for s in active)

    def with_factors(self, factors) -> tuple:
        """(sᵢ, αᵢ) of this evaluation with each dynamic negative's per-sample factor multiplied in: `factors` holds,
        per negative, fᵢ (a tensor of one value per sample, e.g. (N,)) where needs_factors, else anything (None).
        An acting dynamic negative has sᵢ·fᵢ and αᵢ = sᵢ·fᵢ / (s⁺ − 1) (∅ is then evaluated: needs_empty); the
        others keep `negatives` and `blends`. The αᵢ are None where no u* exists (see blends)."""
        if not any(self.needs_factors):
            return self.negatives, self.blends
        negatives = tuple(s * f if need else s for s, f, need in zip(self.negatives, factors, self.needs_factors))
        blends = self.blends
        if blends is not None:
            blends = tuple(s / (self.cond_scale - 1.0) if need else alpha
                           for s, alpha, need in zip(negatives, blends, self.needs_factors))
        return negatives, blends

    @property
    def blend_needs_negatives(self) -> tuple:
        """Which negatives u* is made of (what a hook reading the unconditional prediction needs evaluated)."""
        if self.blends is None:
            return tuple(False for _ in self.negatives)
        return tuple(not is_zero(alpha) for alpha in self.blends)

    @property
    def blend_needs_empty(self) -> bool:
        """Whether u* uses eps(∅); without u* (see blends) the hooks are handed eps(∅)."""
        if self.blends is None:
            return True
        if self.has_cfg_term:
            return self.needs_empty
        return not math.isclose(sum(self.blends), 1.0)


class ProgressMap:
    """A monotone, piecewise-linear map between progress p (rising) and sigma (falling); a single point is a
    constant map."""

    def __init__(self, progress: Sequence[float], sigmas: Sequence[float]):
        if len(progress) != len(sigmas) or not progress:
            raise ValueError("a progress map needs matching points")
        # Sorted by rising progress, i.e. falling sigma; bisect works on the negated sigmas (rising).
        self._progress = [float(p) for p in progress]
        self._negated_sigmas = [-float(s) for s in sigmas]

    def progress(self, sigma: float) -> float:
        points = self._negated_sigmas
        key = -float(sigma)
        # The interval (σ_{i+1}, σ_i] belongs to point i: an evaluation at exactly σ_i starts step i.
        i = bisect.bisect_right(points, key) - 1
        if i < 0:
            return self._progress[0]
        if i >= len(points) - 1:
            return self._progress[-1]
        lo, hi = points[i], points[i + 1]
        if hi == lo:
            return self._progress[i]
        fraction = (key - lo) / (hi - lo)
        below, above = self._progress[i], self._progress[i + 1]
        value = below + fraction * (above - below)
        # A sigma above the next point lies strictly before it, even where rounding would land on it: an edge that
        # is a point of the map is then decided exactly as ComfyUI compares sigmas (sigma <= percent_to_sigma(p)).
        return min(value, math.nextafter(above, -math.inf)) if above > below else value


def step_number(run_sigmas: Sequence[float], sigma: float) -> int:
    """The step an evaluation at `sigma` belongs to, numbered from 1 as the graph and README name steps: the k-th step
    holds the sigmas in (σₖ, σₖ₋₁] (σ₀ the run's first sigma; anything below the last interval counts as the last)."""
    i = bisect.bisect_right([-float(s) for s in run_sigmas], -float(sigma)) - 1
    return min(max(i, 0), max(len(run_sigmas) - 2, 0)) + 1


def step_position(run_sigmas: Sequence[float], sigma: float) -> float:
    """step_number, with a second-order sampler's extra evaluations placed between their step and the next one
    (linearly in sigma): the x coordinate of the trace and probe plots."""
    k = step_number(run_sigmas, sigma)
    if k >= len(run_sigmas) or run_sigmas[k - 1] == run_sigmas[k]:
        return float(k)
    high, low = float(run_sigmas[k - 1]), float(run_sigmas[k])
    return k + (high - float(sigma)) / (high - low)


def steps_progress_map(run_sigmas: Sequence[float]) -> ProgressMap:
    """Progress as the fraction of this run's own steps: σ_i (the i-th scheduled sigma of N) is p = i/N.

    An evaluation between σ_i and σ_{i+1} (a second-order sampler's midpoint) is placed linearly in sigma.
    """
    sigmas = [float(s) for s in run_sigmas]
    steps = len(sigmas) - 1
    if steps < 1:
        # A single sigma (SplitSigmas at the last step): no step is sampled, as in ComfyUI; one point at p = 0.
        return ProgressMap([0.0] * len(sigmas), sigmas)
    return ProgressMap([i / steps for i in range(steps + 1)], sigmas)


def sigma_progress_map(sigma_min: float, sigma_max: float) -> ProgressMap:
    """Progress linear in sigma over the model's range: p = (σ_max − σ) / (σ_max − σ_min)."""
    return ProgressMap([0.0, 1.0], [sigma_max, sigma_min])


def percent_progress_map(edge_sigma: Callable[[float], float], grid_sigma: Callable[[float], float],
                         sigma_max: float, window: Window, points: int = 256) -> ProgressMap:
    """ComfyUI's timestep percent (as ConditioningSetTimestepRange uses it), tabulated once per run.

    `edge_sigma` is the model's own `percent_to_sigma`, called only for the window's edges and ramp ends, which
    become exact points of the table: an evaluation is inside from neg_start exactly when
    sigma <= percent_to_sigma(neg_start), ConditioningSetTimestepRange's own test. `grid_sigma` gives the same
    map from host values (a CPU copy of the model's sampling) for the points in between, which only place
    evaluations within a ramp. p = 0 is at sigma_max, the limit of percent_to_sigma at 0 (percent_to_sigma(0)
    itself is a sentinel, 999999999.9, that would pull step 0 to p ≈ 1/points).
    """
    edges = {0.0: float(sigma_max), 1.0: 0.0}
    for edge in (window.start, window.end, window.start + window.ramp_width, window.end - window.ramp_width):
        if 0.0 < edge < 1.0:
            edges[edge] = float(edge_sigma(edge))
    edge_progress = sorted(edges)
    table = dict(edges)
    for i in range(1, points):
        p = i / points
        if p in table:
            continue
        sigma = float(grid_sigma(p))
        # Keep a host value only where it lies strictly between the exact values of the edges around it.
        after = bisect.bisect_right(edge_progress, p)
        if edges[edge_progress[after]] < sigma < edges[edge_progress[after - 1]]:
            table[p] = sigma
    progress = sorted(table)
    return ProgressMap(progress, [table[p] for p in progress])


def follows_cfg_value(neg_scale: float) -> bool:
    """Any negative neg_scale means "follow cfg" (s⁻ = s⁺ − 1): the widget's arrows step from 0 to −0.1, and
    from −1 to −0.9, and each must keep a meaning the node accepts. −1 is the value saved workflows hold."""
    return neg_scale < 0

