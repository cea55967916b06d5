"""The dynamic negative scale s⁻(x, t) = λ·p/(1 − p), p = p(ỹ | x_t) tracked along the run (pure torch, no ComfyUI).

Why. Split the data as p(x) = p(ỹ)·p(x|ỹ) + (1 − p(ỹ))·p(x|¬ỹ). Then
    ∇log p(x|¬ỹ) = ∇log p(x) − p/(1 − p)·(∇log p(x|ỹ) − ∇log p(x)),   p = p(ỹ | x_t),
so the negative scale that removes ỹ is λ·p/(1 − p): large for a sample heading for the negative concept, about 0
for one that is not, and a constant p gives back the ordinary three-way negative (Dynamic Negative Guidance,
Koulischer et al., ICLR 2025).

How p is tracked, from the denoised predictions D_∅ and D_ỹ that the guidance already computes (no model pass):
- Units. Everything below is in variance-exploding units, x_t = x_0 + σ·noise. Flow models (x_t = (1 − σ)x_0 + σ·n)
  are converted: x/(1 − σ), σ/(1 − σ); their first evaluation at σ = 1 is pure noise, where the prior is exact.
- Start (first evaluation): at high σ every concept density is close to a Gaussian, so Tweedie's formula gives the
  likelihood ratio:  log p = log prior − τ·(s² + σ²)/(2σ²)·(‖ε_ỹ‖² − ‖ε_∅‖²),  ε_c = (x − D_c)/σ,  s = DATA_SCALE.
- While σ ≥ TWEEDIE_SIGMA (every evaluation there, not only the first): logit p is the running mean of every
  evaluation's own Tweedie ratio so far. There the Gaussian approximation is accurate, and a ratio does not add up
  model error (the mean keeps that error from swinging s⁻), whereas the filter below sums, over every step, the
  squared error of D_ỹ − D_∅ in every dimension (the guidance pushes the sample along that error and the filter
  reads the push as evidence against ỹ), a drift that grows with the dimension and switches the negative off before
  the concepts have separated.
- Next evaluation at a lower σ_b < TWEEDIE_SIGMA (from x_a at σ_a): Bayes with the Gaussian reverse kernels
  q(x_b | x_a, c) = N(μ_c, v): μ_c = r·x_a + (1 − r)·D_c(x_a), r = σ_b²/σ_a², v = σ_b²(1 − r), and
      logit p += −τ·(‖x_b − μ_ỹ‖² − ‖x_b − μ_¬ỹ‖²)/(2v) + δ/(2v·c²).
  The empty prompt's kernel is a mixture of the ỹ and ¬ỹ kernels; Tweedie linearity gives the ¬ỹ mean
  μ_¬ỹ = (μ_∅ − p·μ_ỹ)/(1 − p). (The published update compares with μ_∅ and updates log p instead of logit p; on
  samples that do commit to ỹ its p stalls near 0.8.) c² converts v to variance-preserving units, where the
  published offset δ is defined (c² = 1/(1 + σ_b²); flow models: (1 − σ_b)²).
- Next evaluation at the same σ (Heun's corrector, then the next step's first evaluation): the kernel degenerates;
  the trapezoid rule on ∇logit p = (D_ỹ − D_∅)/(σ²(1 − p)) along x_b − x_a.
- Next evaluation at a higher σ (a sampler that re-noises): the state is kept and the chain restarts from there.
- An evaluation where the negative was not evaluated (outside its window): p is kept, the chain restarts at the
  next one.
p is clipped to [p_min, p_max], so s⁻ ≤ λ·p_max/(1 − p_max).

Other updates (the node's optional `update` input; docs/dynamic_negative.md derives and measures them): "published"
(DNG as published), "ito" (the Itô density estimator: the kernel step against μ_∅, state log p, plus the term an ODE
path lacks, −½(σ_a² − σ_b²)·(Δlog q_ỹ − Δlog q_∅), with that Laplacian difference estimated from the predictions) and
"ito-probe" (that Laplacian difference measured: one more evaluation of ỹ and ∅ per model evaluation at x + h·v, v a Rademacher
direction, Hutchinson's one-probe trace of the denoisers' Jacobians; and on ODE paths the trapezoid rule with both ends'
predictions instead of the kernel's left point). ito-probe is the only update with a model pass of its own.

No host–device synchronisation: every step is tensor arithmetic on the device; the only branches are on the sigma
float the guidance already reads and on Python state. The state lives per run (one object per negative per run)
and holds one value per batch element.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

# Data scale s of the Tweedie start: the spread of a concept's data. The start is insensitive to it (0.3 to 1 give
# the same figures on the exact-score benchmark); 0.5 is the EDM σ_data.
DATA_SCALE = 0.5

# At and above this sigma (variance-exploding units) logit p is the running mean of the evaluations' Tweedie ratios,
# below it the filter takes over from the last such value (mixture method). 40 data scales: the Gaussian approximation's error ~ (spread/σ)² is small
# there even for concepts a few data scales wide. On the exact-score toy a handoff at 10 already costs the ODE
# samplers forbidden mass (Heun 0.018 against 0.001); a higher one gives back robustness to model error.
TWEEDIE_SIGMA = 20.0

# Two sigmas closer than this (relative) are "the same" (Heun's corrector and the next step's first evaluation).
SAME_SIGMA = 1e-6

# The state of the "ito" method is log p, kept within ±this (a safety bound far outside any p that changes s⁻): p itself
# is clipped to [p_min, p_max] only where it is used, so evidence beyond p_max is not thrown away.
LOG_P_BOUND = 30.0

# ito: the first steps, over which the sampler's fresh noise per step is measured (see _measure_noise).
NOISE_STEPS = 8

# ito-probe: the finite-difference step of the divergence probe, relative to σ (VE units). A model's error differs
# between the two evaluations (float16 rounding, or any error that is not smooth in x) and the probe divides it by the
# step: on the robustness toy (i.i.d. error 0.003 per dimension, Heun) 0.001σ leaves 0.99 of the samples off the data,
# 0.1σ 0.16, 0.3σ 0.014 (the default update: 0.016; at error 0.01: 0.110 against 0.022), 1σ 0.016 (0.018). A larger
# step measures a smoother divergence: on the exact random family the 90th percentile of the forbidden mass is 0.015
# at 0.001σ and 0.1σ, 0.036 at 0.3σ, 0.088 at 1σ (the default update: 0.081). docs/dynamic_negative.md has the table.
PROBE_STEP = 0.3

# ito-probe: the seed of the probe directions (Rademacher): fixed, so every run draws the same directions and is
# reproducible.
PROBE_SEED = 0

# ito-probe: set in transformer_options for the probe's extra forward, so that a patch that watches forwards (the pack's
# r_t probe) can tell it from an evaluation of the sampler.
PROBE_FORWARD_KEY = "negative_guidance_divergence_probe"

METHODS = ("mixture", "published", "ito", "ito-probe")
ITO_METHODS = ("ito", "ito-probe")  # state log p, unclipped (LOG_P_BOUND); the sampler's noise measured


@dataclass(frozen=True)
class DynamicNegative:
    """What a user sets: s⁻(x, t) = strength·p/(1 − p), p starting from `prior` and sharpened by `temperature`."""

    strength: float = 2.0  # λ
    prior: float = 0.5  # p(ỹ) before any evidence
    temperature: float = 1.0  # τ, the calibration of every likelihood ratio (0: p stays at the prior)
    offset: float = 0.0  # δ, a constant drift of the evidence per step (the published code's offset)
    p_max: float = 0.99
    p_min: float = 1e-6
    method: str = "mixture"  # mixture: Tweedie ratio while σ ≥ TWEEDIE_SIGMA, then the mixture-corrected filter;
    # published: DNG as published; ito: the Itô density estimator; ito-probe: the same with the divergence measured
    # by an extra evaluation of ỹ and ∅ (see DynamicNegativeState.wants_probe)

    @property
    def probes(self) -> bool:
        """Whether this update needs the divergence probe's extra evaluation."""
        return self.method == "ito-probe"

    def largest_scale(self) -> float:
        """The largest s⁻ can be: λ·p_max/(1 − p_max)."""
        return self.strength * self.p_max / (1.0 - self.p_max)


# The paper's Stable Diffusion settings as quoted by a reimplementation ("Table 3": prior 0.01, τ 0.2–0.3,
# δ 0.002–0.004, λ 12–27), at the middle of each range; the published p_max.
PRESETS = {
    "exact-score defaults": DynamicNegative(),
    "Stable Diffusion (paper)": DynamicNegative(strength=20.0, prior=0.01, temperature=0.25, offset=0.003,
                                                p_max=0.99, method="published"),
}


def variance_exploding_sigma(sigma: float, flow: bool) -> float:
    """σ in variance-exploding units: a flow model's σ/(1 − σ), inf at its pure-noise point σ = 1."""
    if not flow:
        return sigma
    return math.inf if sigma >= 1.0 else sigma / (1.0 - sigma)


def variance_exploding(x: torch.Tensor, sigma: float, flow: bool):
    """(x, σ) in variance-exploding units; a flow model's pure-noise point σ = 1 has σ = inf (x then unused: 0)."""
    if not flow:
        return x, sigma
    if sigma >= 1.0:
        return torch.zeros_like(x), math.inf
    return x / (1.0 - sigma), variance_exploding_sigma(sigma, flow)


def _flat(t: torch.Tensor) -> torch.Tensor:
    """(N, ...) → (N, D) in at least float32."""
    t = t.reshape(t.shape[0], -1)
    return t if t.dtype == torch.float64 else t.float()


@dataclass(frozen=True)
class Evaluation:
    """One model evaluation as every dynamic negative reads it, converted once: the sample and the ∅ prediction
    flattened to (N, D) in variance-exploding units.

    The state keeps it until the next evaluation, so `x` is never a view of the sampler's x, which a sampler may
    change in place. The predictions are calc_cond_batch's fresh outputs of this evaluation, which nothing in the
    pack writes to: they are kept as they are.
    """

    x: torch.Tensor  # x_ve, (N, D), owned
    sigma: float  # σ in VE units (inf at a flow model's pure-noise point)
    empty_pred: torch.Tensor  # D_∅, (N, D)
    model_sigma: float  # σ in the model's own units

    @classmethod
    def of(cls, x: torch.Tensor, sigma: float, empty_pred: torch.Tensor, flow: bool) -> "Evaluation":
        flat = _flat(x)
        x_ve, sigma_ve = variance_exploding(flat, sigma, flow)
        if x_ve.data_ptr() == x.data_ptr():  # a view of the sampler's x (not a flow model's x/(1 − σ), no cast)
            x_ve = x_ve.detach().clone()
        return cls(x_ve, sigma_ve, _flat(empty_pred), sigma)


class DynamicNegativeState:
    """One negative's p along one run, one value per batch element. Create one per run (that is the reset)."""

    def __init__(self, settings: DynamicNegative, flow: bool = False):
        self.settings = settings
        self.flow = flow
        self.log_odds = None  # (N,) tensor: logit p (mixture) or log p (published); None before the first evaluation
        self._previous = None  # (x, σ, D_∅, D_ỹ, σ in model units) of the last evaluation, VE units; None: restart
        self._tweedie_count = 1  # Tweedie ratios averaged into log_odds so far (the start is the first)
        self._noise = None  # ito: the sampler's share of fresh noise per step, (N,) (0: an ODE, 1: the full SDE)
        self._noise_count = 0
        self._laplacian = None  # ito-probe: the last evaluation's probe of Δlog q_ỹ − Δlog q_∅, (N,), or None

    # ---- what guidance reads ----

    @property
    def log_odds(self) -> torch.Tensor | None:
        return self._log_odds

    @log_odds.setter
    def log_odds(self, value: torch.Tensor | None):
        # p is computed here, once per change of log_odds, and read as often as needed.
        self._log_odds = value
        if value is None:
            self.p = None
        elif self.settings.method in ITO_METHODS:
            self.p = value.exp().clamp(self.settings.p_min, self.settings.p_max)
        else:
            self.p = value.exp() if self.settings.method == "published" else torch.sigmoid(value)

    def scale(self) -> torch.Tensor:
        """s⁻ = λ·p/(1 − p) per batch element, (N,)."""
        p = self.p
        return self.settings.strength * p / (1.0 - p)

    # ---- updates ----

    def update(self, x: torch.Tensor, sigma: float, empty_pred: torch.Tensor, negative_pred: torch.Tensor
               ) -> torch.Tensor:
        """Take in one evaluation (the sample x at `sigma`, model units, and the denoised predictions of ∅ and ỹ
        there) and return s⁻ per batch element for this evaluation."""
        return self.update_from(Evaluation.of(x, sigma, empty_pred, self.flow), negative_pred)

    def update_from(self, evaluation: Evaluation, negative_pred: torch.Tensor,
                    laplacian: torch.Tensor | None = None) -> torch.Tensor:
        """`update` with the evaluation already converted (DynamicRun converts it once for all its negatives).
        `laplacian`: ito-probe, the probe's Δlog q_ỹ − Δlog q_∅ at this evaluation, (N,), where wants_probe asked
        for it (else None)."""
        x_ve, sigma_ve = evaluation.x, evaluation.sigma
        current = (x_ve, sigma_ve, evaluation.empty_pred, _flat(negative_pred), evaluation.model_sigma)
        previous = self._previous
        previous_laplacian, self._laplacian = self._laplacian, laplacian
        if self.log_odds is None or self.log_odds.shape[0] != x_ve.shape[0]:
            if self.log_odds is not None:  # another batch: nothing measured per sample carries over
                self._noise, self._noise_count, self._laplacian = None, 0, None
            self.log_odds = self._start(*current[:4])
            self._tweedie_count = 1
        elif previous is not None and previous[0].shape == x_ve.shape:
            if self.settings.method in ITO_METHODS and sigma_ve < previous[1] * (1.0 - SAME_SIGMA):
                self._measure_noise(previous, current)
            if sigma_ve > previous[1] * (1.0 + SAME_SIGMA):
                pass  # A higher sigma (the sampler re-noised): keep p, restart the chain from here.
            elif self.settings.method != "published" and sigma_ve >= TWEEDIE_SIGMA:
                # The running mean of the ratios so far: p(ỹ | x_t) moves little up there, and the mean averages the
                # model's error out where the latest ratio alone would let it swing s⁻ (and push samples off the data).
                self._tweedie_count += 1
                ratio = self._start(*current[:4])
                self.log_odds = self._clip(self.log_odds + (ratio - self.log_odds) / self._tweedie_count)
            elif sigma_ve < previous[1] * (1.0 - SAME_SIGMA) and laplacian is not None:
                evidence = self._probe_evidence(previous, current, self.p, previous_laplacian, laplacian)
                self.log_odds = self._clip(self.log_odds + evidence)
            elif sigma_ve < previous[1] * (1.0 - SAME_SIGMA):
                self.log_odds = self._clip(self.log_odds + self._kernel_evidence(previous, current, self.p))
            else:
                self.log_odds = self._clip(self.log_odds + self._path_evidence(previous, current, self.p))
        self._previous = current
        return self.scale()

    def wants_probe(self, sigma: float) -> bool:
        """ito-probe: whether this evaluation (at `sigma`, model units) needs the divergence probe: every evaluation
        the filter steps from, below TWEEDIE_SIGMA (above, the Tweedie ratio needs none), after the first."""
        if not self.settings.probes or self.log_odds is None:
            return False
        sigma_ve = variance_exploding_sigma(sigma, self.flow)
        return sigma_ve < TWEEDIE_SIGMA

    def _probe_evidence(self, previous, current, p, laplacian_a, laplacian_b) -> torch.Tensor:
        """ito-probe, a step to a lower σ with the probe's Laplacian difference L at both ends (at the start of the
        filter only at b: L_a = L_b). Two exact forms of d log p along any path (docs/dynamic_negative.md), blended
        by the measured fresh noise a:
        - Itô (left point, the kernel step): needs −½(σ_a² − σ_b²)·(1 − a)·L_a; exact for the reverse SDE (a = 1);
        - Stratonovich (trapezoid rule with both ends' predictions):
              ½(g_a + g_b)·(x_b − x_a) − ¼(σ_a² − σ_b²)·(h_a + h_b),  g = (D_ỹ − D_∅)/σ², h = L + ‖s_ỹ‖² − ‖s_∅‖²;
          second order along a smooth (ODE) path, where the left point lags a sample that commits late."""
        laplacian_a = laplacian_b if laplacian_a is None else laplacian_a
        ito = self._kernel_evidence(previous, current, p, laplacian_a)
        if not math.isfinite(previous[1]):
            return ito
        trapezoid = self._trapezoid_evidence(previous, current, laplacian_a, laplacian_b)
        noise = self._noise.clamp(0.0, 1.0) if self._noise is not None else torch.zeros_like(trapezoid)
        return noise * ito + (1.0 - noise) * trapezoid

    def _trapezoid_evidence(self, previous, current, laplacian_a, laplacian_b) -> torch.Tensor:
        """The Stratonovich form of a step to a lower σ, scaled by τ, plus the offset: the trapezoid rule on
        ½(g_a + g_b)·(x_b − x_a) − ¼(σ_a² − σ_b²)·(h_a + h_b), g = (D_ỹ − D_∅)/σ², h = L + ‖s_ỹ‖² − ‖s_∅‖², with the
        Laplacian difference L at both ends."""
        def ends(x, sigma, empty, negative, laplacian):
            g = (negative - empty) / sigma ** 2
            squares = ((empty - negative) * (2.0 * x - negative - empty)).sum(dim=1) / sigma ** 4
            return g, laplacian + squares

        (x_a, sigma_a, empty_a, negative_a, _), (x_b, sigma_b, empty_b, negative_b, _) = previous, current
        g_a, h_a = ends(x_a, sigma_a, empty_a, negative_a, laplacian_a)
        g_b, h_b = ends(x_b, sigma_b, empty_b, negative_b, laplacian_b)
        trapezoid = (0.5 * (g_a + g_b) * (x_b - x_a)).sum(dim=1) - 0.25 * (sigma_a ** 2 - sigma_b ** 2) * (h_a + h_b)
        return self.settings.temperature * trapezoid + self._offset_evidence(previous, current)

    def _measure_noise(self, previous, current):
        """ito: how much fresh noise the sampler adds per step, from the first NOISE_STEPS steps to a lower σ (the
        guidance's own push is small there): ‖x_b − μ_∅‖² over the batch against the reverse kernel's N·D·v, about 1
        on a sampler that adds the full reverse-SDE noise (Euler ancestral) and (1 − σ_b/σ_a)/(1 + σ_b/σ_a) on an
        ODE, rescaled so that these are 1 and 0. Per sample, averaged over the steps (in a few dimensions one step's
        noise is a poor measure of its variance; in a latent of thousands it is exact); a tensor: no host sync."""
        if self._noise_count >= NOISE_STEPS or not math.isfinite(previous[1]):
            return
        x_a, sigma_a, empty_a, _, _ = previous
        x_b, sigma_b = current[0], current[1]
        ratio = (sigma_b / sigma_a) ** 2
        variance = sigma_b ** 2 * (1.0 - ratio)
        residual = x_b - ratio * x_a - (1.0 - ratio) * empty_a
        # An ODE step (x_b = ρ·x_a + (1 − ρ)·D, ρ = σ_b/σ_a) leaves (ρ − ρ²)²·‖x_a − D‖² ≈ (ρ − ρ²)²·σ_a²·D of it,
        # i.e. (1 − ρ)/(1 + ρ) of N·D·v: measured from there, 0 is an ODE and 1 the full reverse-SDE noise.
        rho = sigma_b / sigma_a
        ode = (1.0 - rho) / (1.0 + rho)
        share = ((residual ** 2).mean(dim=1) / variance - ode) / (1.0 - ode)
        self._noise_count += 1
        self._noise = share if self._noise is None else self._noise + (share - self._noise) / self._noise_count

    def skip(self):
        """This evaluation did not evaluate the negative: keep p, restart the chain at the next one."""
        self._previous = None

    # ---- the pieces ----

    def _clip(self, log_odds: torch.Tensor) -> torch.Tensor:
        s = self.settings
        if s.method in ITO_METHODS:
            return log_odds.clamp(-LOG_P_BOUND, LOG_P_BOUND)
        if s.method == "published":
            return log_odds.clamp(math.log(s.p_min), math.log(s.p_max))
        return log_odds.clamp(math.log(s.p_min / (1.0 - s.p_min)), math.log(s.p_max / (1.0 - s.p_max)))

    def _prior(self, like: torch.Tensor) -> torch.Tensor:
        prior = self.settings.prior
        value = math.log(prior) if self.settings.method != "mixture" else math.log(prior / (1.0 - prior))
        return torch.full((like.shape[0],), value, dtype=like.dtype, device=like.device)

    def _start(self, x, sigma, empty_pred, negative_pred) -> torch.Tensor:
        if self.settings.method == "published" or not math.isfinite(sigma) or self.settings.temperature == 0.0:
            return self._clip(self._prior(x))
        # log p = log prior + log p(x|ỹ) − log p(x), with ‖ε_ỹ‖² − ‖ε_∅‖² = (D_∅ − D_ỹ)·(2x − D_ỹ − D_∅)/σ²
        squares = ((empty_pred - negative_pred) * (2.0 * x - negative_pred - empty_pred)).sum(dim=1)
        coefficient = (DATA_SCALE ** 2 + sigma ** 2) / (2.0 * sigma ** 4)
        log_p = math.log(self.settings.prior) - self.settings.temperature * coefficient * squares
        if self.settings.method in ITO_METHODS:
            return self._clip(log_p)
        # logit from log p: p clipped first, so that log(1 − p) stays finite.
        p = log_p.exp().clamp(self.settings.p_min, self.settings.p_max)
        return self._clip(torch.log(p) - torch.log1p(-p))

    def _kernel_evidence(self, previous, current, p, laplacian=None) -> torch.Tensor:
        """log q(x_b | x_a, ỹ) − log q(x_b | x_a, ¬ỹ) (or ∅), scaled by τ, plus the offset. `p`: p(ỹ | x_a), the
        state's p before this evaluation; `laplacian`: the Itô methods' Δlog q_ỹ − Δlog q_∅ at x_a where measured
        (ito-probe), else estimated (_laplacian_difference)."""
        x_a, sigma_a, empty_a, negative_a, _ = previous
        x_b, sigma_b = current[:2]
        s = self.settings
        ratio = (sigma_b / sigma_a) ** 2  # r (0 when σ_a = inf: a flow model's pure-noise start)
        variance = sigma_b ** 2 * (1.0 - ratio)
        mean_negative = negative_a if ratio == 0.0 else ratio * x_a + (1.0 - ratio) * negative_a
        # d = μ_other − μ_ỹ, with μ_other = μ_¬ỹ (mixture) or μ_∅ (published).
        d = (1.0 - ratio) * (empty_a - negative_a)
        if s.method == "mixture":
            d = d / (1.0 - p)[:, None]  # ito and published: μ_∅, no tracked p in the evidence
        # ‖x_b − μ_ỹ‖² − ‖x_b − μ_other‖² = d·(2(x_b − μ_ỹ) − d), without cancelling two large norms.
        difference = (d * (2.0 * (x_b - mean_negative) - d)).sum(dim=1)
        evidence = -s.temperature * difference / (2.0 * variance)
        if s.method in ITO_METHODS and ratio != 0.0:
            # The Itô term an ODE path lacks: −½(σ_a² − σ_b²)·(Δlog q_ỹ − Δlog q_∅), weighted by the missing noise.
            missing = 1.0 - (self._noise.clamp(0.0, 1.0) if self._noise is not None else 0.0)
            if laplacian is None:
                laplacian = self._laplacian_difference(previous, p)
            evidence = evidence - s.temperature * 0.5 * (sigma_a ** 2 - sigma_b ** 2) * missing * laplacian
        return evidence + self._offset_evidence(previous, current)

    def _offset_evidence(self, previous, current):
        """The published offset δ of one step to a lower σ: δ/(2v·c²), c² converting v to variance-preserving units
        (0 at the default δ = 0)."""
        if self.settings.offset == 0.0:
            return 0.0
        sigma_a, (sigma_b, sigma_b_model) = previous[1], current[1::3]
        ratio = (sigma_b / sigma_a) ** 2
        variance = sigma_b ** 2 * (1.0 - ratio)
        model_scale_sq = (1.0 - sigma_b_model) ** 2 if self.flow else 1.0 / (1.0 + sigma_b ** 2)
        return self.settings.offset / (2.0 * variance * model_scale_sq)

    def _laplacian_difference(self, previous, p) -> torch.Tensor:
        """The Itô update's estimate of Δlog q_ỹ − Δlog q_∅ at x_a = (tr Cov[x₀|x, ỹ] − tr Cov[x₀|x, ∅])/σ⁴, kept to
        its between-concept part (the law of total covariance with equal spreads inside each concept):
        −p·‖D_ỹ − D_∅‖²/((1 − p)·σ⁴)."""
        _, sigma_a, empty_a, negative_a, _ = previous
        return -p / (1.0 - p) * ((negative_a - empty_a) ** 2).sum(dim=1) / sigma_a ** 4

    def _path_evidence(self, previous, current, p) -> torch.Tensor:
        """τ·∫∇log-odds·dx from x_a to x_b at one σ (trapezoid rule): ∇logit p = (D_ỹ − D_∅)/(σ²(1 − p)). `p`: the
        state's p before this evaluation."""
        x_a, sigma, empty_a, negative_a, _ = previous
        x_b, _, empty_b, negative_b, _ = current
        if not math.isfinite(sigma):
            return torch.zeros_like(self.log_odds)
        gradient = (negative_a - empty_a + negative_b - empty_b) / (2.0 * sigma ** 2)
        if self.settings.method == "mixture":
            gradient = gradient / (1.0 - p)[:, None]
        return self.settings.temperature * (gradient * (x_b - x_a)).sum(dim=1)


class DynamicRun:
    """The dynamic negatives of one run: one state per negative term, main negative first (None: a constant scale).

    Each evaluation, `factors` gives every acting dynamic negative's factor fᵢ = λ·p/(1 − p) per sample, which
    StepCoefficients.with_factors multiplies into that negative's coefficient wᵢ(t).
    """

    def __init__(self, settings_per_term, flow: bool = False):
        self.flow = flow
        self.states = tuple(DynamicNegativeState(s, flow) if s is not None else None for s in settings_per_term)
        self.probabilities = ()  # per term: p of the latest evaluation, (N,), or None
        self.probes = any(s is not None and s.probes for s in settings_per_term)
        self._direction = None  # the probe direction v of this evaluation, flattened (N, D)
        self._generator = self._generator_device = None

    # ---- ito-probe: one extra evaluation of the probing negatives and ∅ at x + h·v ----

    def probing(self, sigma: float, acting) -> tuple:
        """Per term, whether this evaluation needs its divergence probe (`acting`: as in `factors`)."""
        return tuple(state is not None and act and state.wants_probe(sigma) for state, act in zip(self.states, acting))

    def probe_point(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        """x + h·v in model units: v Rademacher (one per element, drawn from this run's generator), h = PROBE_STEP·σ
        in variance-exploding units (times 1 − σ for a flow model)."""
        if self._generator is None or self._generator_device != x.device:
            # On the device, so drawing v needs no copy from the host (a backend without device generators, such as
            # DirectML, fails here: the probe is an option).
            self._generator = torch.Generator(device=x.device).manual_seed(PROBE_SEED)
            self._generator_device = x.device
        direction = torch.randint(0, 2, x.shape, generator=self._generator, device=x.device).to(x.dtype) * 2 - 1
        self._direction = _flat(direction)
        sigma_ve = variance_exploding_sigma(sigma, self.flow)
        step = PROBE_STEP * sigma_ve * ((1.0 - sigma) if self.flow else 1.0)
        return x + step * direction

    def _probed_laplacian(self, sigma: float, empty_pred, negative_pred, probe_empty, probe_negative):
        """Δlog q_ỹ − Δlog q_∅ ≈ v·((D_ỹ(x + h·v) − D_ỹ(x)) − (D_∅(x + h·v) − D_∅(x)))/(h·σ²) (VE units; Hutchinson's
        trace estimate of the denoisers' Jacobians, one probe, the same v for both)."""
        sigma_ve = variance_exploding_sigma(sigma, self.flow)
        change = (_flat(probe_negative) - _flat(negative_pred)) - (_flat(probe_empty) - _flat(empty_pred))
        return (self._direction * change).sum(dim=1) / (PROBE_STEP * sigma_ve ** 3)

    def factors(self, x, sigma: float, acting, empty_pred, negative_preds, probe=None) -> tuple:
        """Per term, fᵢ = λ·p/(1 − p) per sample, (N,), where `acting` (StepCoefficients.needs_factors) says the
        term's factor is used at this evaluation, else None. The evaluation is converted once for all of them.
        `probe`: (D_∅, [D_ỹᵢ], which terms probed) at probe_point(x), where `probing` asked for it."""
        evaluation = None
        factors, probabilities = [], []
        wanted = probe[2] if probe is not None else (False,) * len(self.states)
        for i, (state, act, prediction) in enumerate(zip(self.states, acting, negative_preds)):
            if state is None or not act:
                if state is not None:
                    state.skip()
                factors.append(None)
                probabilities.append(None)
                continue
            if evaluation is None:
                evaluation = Evaluation.of(x, sigma, empty_pred, self.flow)
            laplacian = (self._probed_laplacian(sigma, empty_pred, prediction, probe[0], probe[1][i])
                         if wanted[i] else None)
            factors.append(state.update_from(evaluation, prediction, laplacian))
            probabilities.append(state.p)
        self.probabilities = tuple(probabilities)
        return tuple(factors)
