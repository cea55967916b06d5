"""The one prediction routine, and the two ways ComfyUI reaches it: a CFGGuider subclass and a MODEL patch.

Both faces call `predict`, which evaluates only the conditionings whose coefficient is non-zero at this
evaluation, all in one `calc_cond_batch` call, and then hands the result to ComfyUI's own `cfg_function` as
plain CFG with a blended unconditional prediction, so RescaleCFG-style patches keep working (see README).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from functools import cached_property

import torch

import comfy.model_sampling
import comfy.patcher_extension
import comfy.sampler_helpers
import comfy.samplers
import node_helpers

from . import log, schedule, validation
from .dynamic import PROBE_FORWARD_KEY, DynamicRun

# The extra conditioning key (for ∅) and the wrapper key, both unique to this pack.
EMPTY_KEY = "negative_guidance_empty"
EXTRA_KEY = "negative_guidance_extra_{}"
WRAPPER_KEY = "negative_guidance"


@dataclass(frozen=True)
class BatchLayout:
    """Where each prompt sits in the list handed to calc_cond_batch: [y, ỹ, ∅, ỹ₂, ỹ₃, ...].

    y and the main negative ỹ at 0 and 1, as in a stock sampler, so that what ComfyUI tells attention patches
    (transformer_options["cond_or_uncond"]: 0 the positive, 1 the negative; the r_t probe reads it) keeps its meaning;
    ∅ next, then the extra negatives.
    """

    negatives: int

    POSITIVE = 0
    EMPTY = 2

    @cached_property
    def negative_slots(self) -> tuple:
        return (1, *range(3, self.negatives + 2))

    @cached_property
    def names(self) -> tuple:
        """What the trace calls each slot."""
        return ("positive", "negative", "empty", *(f"extra_negative_{i}" for i in range(1, self.negatives)))

    def assemble(self, positive, negatives, empty) -> list:
        """The list in slot order from (positive, the negatives main first, empty)."""
        batch = [None] * (self.negatives + 2)
        batch[self.POSITIVE], batch[self.EMPTY] = positive, empty
        for slot, negative in zip(self.negative_slots, negatives):
            batch[slot] = negative
        return batch

    def split(self, batch) -> tuple:
        """(positive, [negatives, main first], empty) of a list in slot order."""
        return batch[self.POSITIVE], [batch[slot] for slot in self.negative_slots], batch[self.EMPTY]


@dataclass(frozen=True)
class RunSchedule:
    """One sampling run, resolved before its first step: the settings, each negative's sigma ↔ progress map, the
    batch layout, how to evaluate, and what observes it. Everything per run is decided here, once.

    `observer`, when set (the guidance trace), is called once per evaluation; None costs nothing.
    """

    node: str
    settings: schedule.GuidanceSettings
    progress_maps: tuple  # one per negative, main negative first
    sequential: bool = False
    observer: object = None
    dynamic: DynamicRun | None = None  # the run's dynamic negative scales, if any negative has one
    _settings_by_cfg: dict = field(default_factory=dict, compare=False, repr=False)
    _constant_by_cfg: dict = field(default_factory=dict, compare=False, repr=False)
    _conditionings: list = field(default_factory=list, compare=False, repr=False)  # [guider conds, batch]

    @cached_property
    def layout(self) -> BatchLayout:
        return BatchLayout(len(self.settings.negatives))

    @cached_property
    def reads_sigma(self) -> bool:
        """Whether an evaluation needs its sigma as a number: a window that opens or closes during the run, or a
        dynamic scale. Otherwise the coefficients are the same at every evaluation and the pack makes no host–device
        synchronisation while sampling (a stock euler run makes none)."""
        return self.dynamic is not None or self.settings.constant_weights is None

    def coefficients(self, sigma: float | None, cfg: float | None = None) -> schedule.StepCoefficients:
        """One evaluation's coefficients (`sigma` None: a run whose windows never change, see reads_sigma; they are
        then made once per cfg); `cfg`, when given, is s⁺ as it stands now (the run started at settings.cfg)."""
        settings = self.settings if cfg is None or cfg == self.settings.cfg else self._at_cfg(cfg)
        if sigma is None:
            if settings.cfg not in self._constant_by_cfg:
                self._constant_by_cfg[settings.cfg] = settings.at(settings.constant_weights)
            return self._constant_by_cfg[settings.cfg]
        weights = [term.window.weight(progress_map.progress(sigma))
                   for term, progress_map in zip(settings.negatives, self.progress_maps)]
        return settings.at(weights)

    def conditionings(self, conds: dict) -> list:
        """A guider's processed conditionings in batch order (None for ∅ when not connected), looked up once per
        run: the guider processes its conditionings once, before the first evaluation."""
        cache = self._conditionings
        if not cache or cache[0] is not conds:
            extras = [conds.get(EXTRA_KEY.format(i)) for i in range(len(self.settings.negatives) - 1)]
            batch = self.layout.assemble(conds.get("positive"), [conds.get("negative"), *extras], conds.get(EMPTY_KEY))
            cache[:] = [conds, batch]
        return cache[1]

    def _at_cfg(self, cfg: float) -> schedule.GuidanceSettings:
        cache = self._settings_by_cfg
        if cfg not in cache:
            cache[cfg] = replace(self.settings, cfg=cfg)
        return cache[cfg]


def host_copy(model_sampling):
    """A CPU copy of the model's sampling object (a small module of buffers), made once per run, so that a table of
    percent_to_sigma values costs no host–device synchronisation per point."""
    return copy.deepcopy(model_sampling).to("cpu")


def progress_map_for(term: schedule.NegativeTerm, model_patcher, run_sigmas: list, host_sampling
                     ) -> schedule.ProgressMap:
    if term.window_unit == "steps":
        return schedule.steps_progress_map(run_sigmas)
    if term.window_unit == "timestep_percent":
        model_sampling = model_patcher.get_model_object("model_sampling")
        return schedule.percent_progress_map(model_sampling.percent_to_sigma, host_sampling.percent_to_sigma,
                                             float(host_sampling.sigma_max), term.window)
    return schedule.sigma_progress_map(float(host_sampling.sigma_min), float(host_sampling.sigma_max))


def progress_maps(settings: schedule.GuidanceSettings, model_patcher, run_sigmas: list) -> tuple:
    host_sampling = None
    if any(term.window_unit != "steps" for term in settings.negatives):
        host_sampling = host_copy(model_patcher.get_model_object("model_sampling"))
    return tuple(progress_map_for(term, model_patcher, run_sigmas, host_sampling) for term in settings.negatives)


def current_sigma(timestep: torch.Tensor) -> float:
    return float(timestep.reshape(-1)[0])


# ---- one evaluation: prepare → evaluate → combine → hooks ----

def prepare(run: RunSchedule, coefficients: schedule.StepCoefficients, conds: list, model_options: dict, timestep
            ) -> list:
    """The batch for calc_cond_batch: each conditioning whose coefficient is non-zero, None elsewhere (it is not
    evaluated). With `disable_cfg1_optimization` (set by the CFG++ samplers and SAG, which read the unconditional
    prediction) the conditionings u* is made of are evaluated too, as a stock sampler evaluates the negative at
    cfg 1: never more. Stops with a clear message where ∅ is needed but not connected."""
    disable_cfg1 = model_options.get("disable_cfg1_optimization", False)
    need_negatives, need_empty = coefficients.needs_negatives, coefficients.needs_empty
    if disable_cfg1:
        need_negatives = tuple(a or b for a, b in zip(need_negatives, coefficients.blend_needs_negatives))
        need_empty = need_empty or coefficients.blend_needs_empty
    if need_empty and conds[BatchLayout.EMPTY] is None:
        reason = ("the formula uses eps(∅)" if coefficients.needs_empty else
                  "the sampler or a model patch (CFG++ samplers, SAG) reads the unconditional prediction, here eps(∅)")
        raise ValueError(validation.connect_empty(
            run.node, f"at sigma {current_sigma(timestep):.4g} with cfg {coefficients.cond_scale} {reason}."))
    needed = run.layout.assemble(coefficients.needs_positive, need_negatives, need_empty)
    return [c if need else None for c, need in zip(conds, needed)]


def evaluate(model, batch: list, x, timestep, model_options: dict, sequential: bool) -> list:
    """All non-None conditionings in one calc_cond_batch call (one batched forward when memory allows), or, to
    save memory, one call each. None entries come back as zeros, as calc_cond_batch returns them."""
    if sequential:
        outputs = []
        for i, conds in enumerate(batch):
            if conds is None:
                outputs.append(torch.zeros_like(x))
                continue
            # Keep the list's full length so that transformer_options["cond_or_uncond"] still names which prompt
            # this forward is (attention patches such as the r_t probe rely on it).
            alone = [c if j == i else None for j, c in enumerate(batch)]
            outputs.append(evaluate(model, alone, x, timestep, model_options, sequential=False)[i])
        return outputs
    if "sampler_calc_cond_batch_function" in model_options:
        args = {"conds": batch, "input": x, "sigma": timestep, "model": model, "model_options": model_options}
        return list(model_options["sampler_calc_cond_batch_function"](args))
    return list(comfy.samplers.calc_cond_batch(model, batch, x, timestep, model_options))


@dataclass
class Combined:
    """What the hooks are handed: plain CFG between cond_pred and uncond_pred (u*, or eps(∅) where no u* exists),
    and the negative term to subtract after them where there is no u* (else None)."""

    cond: list | None
    uncond: list | None
    cond_pred: torch.Tensor
    uncond_pred: torch.Tensor
    negative_term: torch.Tensor | None = None


def evaluate_probe(run: RunSchedule, coefficients: schedule.StepCoefficients, batch: list, model, x, timestep,
                   model_options: dict, sigma: float | None):
    """The dynamic negative's `Itô + divergence probe` update (an option, off by default): one more evaluation, of
    the probing negatives and ∅ only, at x + h·v (DynamicRun.probe_point); (D_∅, [D_ỹᵢ], which terms probed) there,
    or None where no negative probes at this evaluation (then nothing is evaluated)."""
    if run.dynamic is None or not run.dynamic.probes:
        return None
    sigma = current_sigma(timestep) if sigma is None else sigma
    wanted = run.dynamic.probing(sigma, coefficients.needs_factors)
    if not any(wanted):
        return None
    _, negative_conds, empty_cond = run.layout.split(batch)
    probe_batch = run.layout.assemble(None, [c if w else None for c, w in zip(negative_conds, wanted)], empty_cond)
    marked = {**model_options,
              "transformer_options": {**model_options.get("transformer_options", {}), PROBE_FORWARD_KEY: True}}
    outputs = evaluate(model, probe_batch, run.dynamic.probe_point(x, sigma), timestep, marked, run.sequential)
    _, negative_preds, empty_pred = run.layout.split(outputs)
    return empty_pred, negative_preds, wanted


def combine(run: RunSchedule, coefficients: schedule.StepCoefficients, batch: list, outputs: list, x, timestep,
            sigma: float | None, probe=None) -> Combined:
    """eps = e + s⁺(c − e) − Σᵢ sᵢ(nᵢ − e) written for the hooks: as plain CFG against the blended unconditional
    prediction u* = e + Σ αᵢ(nᵢ − e) (StepCoefficients.blends; at s⁺ = 1 its limit, eps(ỹ) at the defaults, as in a
    stock KSampler at cfg 1), or, where no u* exists (s⁺ = 1 with a fixed or dynamic negative acting, or s⁺ so
    close to 1 that u* would lose the guidance to rounding, schedule.MAX_BLEND), as CFG against eps(∅) with the
    negative term applied after the hooks, so that a post-CFG patch (PerturbedAttentionGuidance) does not scale it."""
    layout = run.layout
    cond_pred, negative_preds, empty_pred = layout.split(outputs)
    cond, negative_conds, empty_cond = layout.split(batch)
    factors = ()
    if run.dynamic is not None:
        # Dynamic negatives: fᵢ = λ·p/(1 − p) per sample, tracked from this evaluation's predictions.
        sigma = current_sigma(timestep) if sigma is None else sigma  # the caller's read: one sync, not two
        factors = run.dynamic.factors(x, sigma, coefficients.needs_factors, empty_pred, negative_preds, probe)
    scales, blends = coefficients.with_factors(factors)
    if run.observer is not None:
        evaluated = [output if conds is not None else None for conds, output in zip(batch, outputs)]
        run.observer(timestep, coefficients, tuple(n for n, c in zip(layout.names, batch) if c is not None),
                     *layout.split(evaluated),
                     *(() if run.dynamic is None else (_dynamic_record(run.dynamic.probabilities, scales),)),
                     probe_passes=0 if probe is None else 1 + sum(probe[2]))  # ∅ and each probing negative
    scales, blends = _shaped_like_x(scales, x), _shaped_like_x(blends, x)

    if blends is None:
        negative_term = None
        for s, need, negative_pred in zip(scales, coefficients.needs_negatives, negative_preds):
            if need:
                term = s * (negative_pred - empty_pred)
                negative_term = term if negative_term is None else negative_term + term
        return Combined(cond, empty_cond, cond_pred, empty_pred, negative_term)
    uncond_pred = empty_pred
    for alpha, negative_pred in zip(blends, negative_preds):
        if _acts(alpha):
            uncond_pred = uncond_pred + alpha * (negative_pred - empty_pred)
    # "uncond" for the hooks: the main negative's conditioning where it takes part, else ∅'s, else the first
    # extra negative's that takes part (None where nothing was evaluated, as in a stock KSampler at cfg 1).
    candidates = [negative_conds[0] if _acts(blends[0]) else None, empty_cond,
                  *(c for alpha, c in zip(blends[1:], negative_conds[1:]) if _acts(alpha))]
    return Combined(cond, next((c for c in candidates if c is not None), None), cond_pred, uncond_pred)


def apply_hooks(model, combined: Combined, cond_scale: float, x, timestep, model_options: dict):
    """ComfyUI's pre-CFG functions and `cfg_function` (sampler_cfg_function, post-CFG patches) on (cond, uncond,
    cond_scale = s⁺), as a stock sampler calls them; then the negative term where it comes after them."""
    cond_pred, uncond_pred = combined.cond_pred, combined.uncond_pred
    conds = [combined.cond, combined.uncond]
    for pre_cfg in model_options.get("sampler_pre_cfg_function", []):
        args = {"conds": conds, "conds_out": [cond_pred, uncond_pred], "cond_scale": cond_scale,
                "timestep": timestep, "input": x, "sigma": timestep, "model": model, "model_options": model_options}
        cond_pred, uncond_pred = pre_cfg(args)
    denoised = comfy.samplers.cfg_function(model, cond_pred, uncond_pred, cond_scale, x, timestep,
                                           model_options=model_options, cond=combined.cond, uncond=combined.uncond)
    return denoised if combined.negative_term is None else denoised - combined.negative_term


def predict(run: RunSchedule, model, conds: list, x, timestep, model_options: dict, cfg: float):
    """One evaluation, as ComfyUI's denoised prediction: eps = e + s⁺(c − e) − Σᵢ sᵢ(nᵢ − e).

    Args:
        conds: the conditionings in batch order (RunSchedule.conditionings).
        cfg: s⁺ as it stands at this evaluation (a PREDICT_NOISE wrapper such as CFGOverride may change it).
    """
    # The sigma as a number costs a host–device synchronisation: read it only where the coefficients depend on it.
    sigma = current_sigma(timestep) if run.reads_sigma else None
    coefficients = run.coefficients(sigma, cfg)
    batch = prepare(run, coefficients, conds, model_options, timestep)
    # The probe's forward (an option) first: a patch that keeps what the last forward of the negative saw (SAG's
    # attention map) then keeps the evaluation's own.
    probe = evaluate_probe(run, coefficients, batch, model, x, timestep, model_options, sigma)
    outputs = evaluate(model, batch, x, timestep, model_options, run.sequential)
    combined = combine(run, coefficients, batch, outputs, x, timestep, sigma, probe)
    return apply_hooks(model, combined, coefficients.cond_scale, x, timestep, model_options)


def _shaped_like_x(values, x):
    """Coefficients as they multiply predictions: a per-sample tensor (a dynamic negative's, (N,)) shaped (N, 1, …)
    in x's dtype; floats and None as they are."""
    if values is None:
        return None
    shape = (-1, *([1] * (x.ndim - 1)))
    return tuple(v.to(x.dtype).reshape(shape) if isinstance(v, torch.Tensor) else v for v in values)


def _dynamic_record(probabilities, scales) -> tuple:
    """What the trace records of the dynamic negatives: per term (p, sᵢ·fᵢ), each (N,), or None."""
    return tuple(None if p is None else (p, s) for p, s in zip(probabilities, scales))


def _acts(alpha) -> bool:
    """Whether a blend takes part: a per-sample tensor (a dynamic negative) always does; no host sync."""
    return isinstance(alpha, torch.Tensor) or alpha != 0.0


@dataclass(frozen=True)
class GuidancePlan:
    """Everything a node hands to sampling: its name, the settings, the conditionings it brings (∅, and the extra
    negatives' in the order of settings.negatives[1:]), whether to evaluate them one by one, and an optional trace."""

    node: str
    settings: schedule.GuidanceSettings
    empty: list | None = None
    extra_negatives: tuple = ()
    sequential: bool = False
    trace: object = None  # has start_run(settings, sigmas) -> observer; see trace.py

    def conditionings(self) -> dict:
        """The plan's own conditionings under their guider keys, marked as unconditional-side prompts."""
        conds = {}
        if self.empty is not None:
            conds[EMPTY_KEY] = self.empty
        for i, conditioning in enumerate(self.extra_negatives):
            conds[EXTRA_KEY.format(i)] = conditioning
        # All of them sit on the unconditional side: they take its model-specific conditioning, as ∅ does in
        # ComfyUI's PerpNegGuider and DualCFGGuider.
        return {key: node_helpers.conditioning_set_values(value, {"prompt_type": "negative"})
                for key, value in conds.items()}

    def begin_run(self, cfg: float, model_patcher, sigmas) -> RunSchedule:
        """Resolve the run's schedule at the sampler's cfg; stop with a clear message, before any model pass, if a
        setting is wrong (values fed by links are only known now) or if ∅ is needed but absent."""
        settings = replace(self.settings, cfg=float(cfg))
        problem = validation.problem(self.node, settings, empty_connected=self.empty is not None)
        if problem:
            raise ValueError(problem)
        run_sigmas = sigmas.reshape(-1).tolist()  # the run's sigmas as host numbers, converted once per run
        observer = self.trace.start_run(settings, run_sigmas) if self.trace is not None else None
        dynamic = None
        if any(d is not None for d in settings.dynamic_terms):
            # Flow models (CONST: x = (1 − σ)x₀ + σ·noise) are tracked in variance-exploding units.
            flow = isinstance(model_patcher.get_model_object("model_sampling"), comfy.model_sampling.CONST)
            dynamic = DynamicRun(settings.dynamic_terms, flow)  # fresh state: one per run
        return RunSchedule(self.node, settings, progress_maps(settings, model_patcher, run_sigmas), self.sequential,
                           observer, dynamic)


def predict_with(guider, run: RunSchedule, x, timestep, model_options):
    """`predict` with a CFGGuider's processed conditionings, at the guider's cfg as it stands at this evaluation."""
    return predict(run, guider.inner_model, run.conditionings(guider.conds), x, timestep, model_options,
                   float(guider.cfg))


class NegativeGuider(comfy.samplers.CFGGuider):
    """GUIDER for SamplerCustomAdvanced: positive y, negative ỹ, empty ∅, and any extra negatives."""

    def __init__(self, model_patcher, plan: GuidancePlan):
        super().__init__(model_patcher)
        self.plan = plan
        self.cfg = plan.settings.cfg
        self.run_schedule = None

    def set_conds(self, positive, negative):
        self.inner_set_conds({"positive": positive, "negative": negative, **self.plan.conditionings()})

    def outer_sample(self, noise, latent_image, sampler, sigmas, *args, **kwargs):
        self.run_schedule = self.plan.begin_run(self.cfg, self.model_patcher, sigmas)
        try:
            return super().outer_sample(noise, latent_image, sampler, sigmas, *args, **kwargs)
        finally:
            self.run_schedule = None

    def predict_noise(self, x, timestep, model_options={}, seed=None):
        return predict_with(self, self.run_schedule, x, timestep, model_options)


class NegativeGuidancePatch:
    """MODEL patch for KSampler & co.: positive = y, negative = ỹ, cfg = s⁺, and ∅ (and extra negatives) from
    the patch.

    One OUTER_SAMPLE wrapper adds the plan's conditionings to the guider's before ComfyUI processes them (areas,
    masks, ControlNet, model-specific conditioning all apply to them), and, for this run only, gives the guider
    its own `predict_noise`: `predict`, so all predictions come from one batched forward, as in the guider.
    CFGGuider builds its PREDICT_NOISE executor from `self.predict_noise` at each evaluation, so every PREDICT_NOISE
    wrapper on the model (ComfyUI's LazyCache, CFGOverride, any pack's) still wraps it, whichever order the model
    nodes come in.
    """

    def __init__(self, plan: GuidancePlan):
        self.plan = plan
        self._said_standing_aside = False

    def apply_to(self, model):
        patched = model.clone()
        outer_sample = comfy.patcher_extension.WrappersMP.OUTER_SAMPLE
        if patched.get_wrappers(outer_sample, WRAPPER_KEY):
            log.info("%s: replacing an earlier NegativeGuidance patch on this model", self.plan.node)
            patched.remove_wrappers_with_key(outer_sample, WRAPPER_KEY)
        patched.add_wrapper_with_key(outer_sample, WRAPPER_KEY, self.outer_sample)
        return patched

    def outer_sample(self, executor, noise, latent_image, sampler, sigmas, *args, **kwargs):
        guider = executor.class_obj
        if type(guider) is not comfy.samplers.CFGGuider:
            if not self._said_standing_aside:
                log.warning("%s: the model is sampled by %s, not plain CFG; the patch stands aside and that "
                            "guider's own guidance applies.", self.plan.node, type(guider).__name__)
                self._said_standing_aside = True
            return executor(noise, latent_image, sampler, sigmas, *args, **kwargs)

        run = self.plan.begin_run(guider.cfg, guider.model_patcher, sigmas)  # s⁺ is the sampler's cfg
        added = {key: comfy.sampler_helpers.convert_cond(value) for key, value in self.plan.conditionings().items()}
        # Hooks on these were not registered by CFGGuider.sample (it ran before this wrapper): drop them.
        comfy.samplers.filter_registered_hooks_on_conds(added, guider.model_options)
        guider.conds.update(added)

        def predict_noise(x, timestep, model_options={}, seed=None):
            return predict_with(guider, run, x, timestep, model_options)

        had_own = "predict_noise" in vars(guider)
        previous = vars(guider).get("predict_noise")
        guider.predict_noise = predict_noise
        try:
            return executor(noise, latent_image, sampler, sigmas, *args, **kwargs)
        finally:
            if had_own:
                guider.predict_noise = previous
            else:
                del guider.predict_noise
