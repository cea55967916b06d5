"""The one prediction routine, and the two ways ComfyUI reaches it: a CFGGuider subclass and a MODEL patch.

Both faces call `predict`, which evaluates only the conditionings whose coefficient is non-zero at this
evaluation, all in one `calc_cond_batch` call, and then hands the result to ComfyUI's own `cfg_function` as
plain CFG with a blended unconditional prediction, so RescaleCFG-style patches keep working (see README).
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field, replace

import torch

import comfy.model_sampling
import comfy.patcher_extension
import comfy.sampler_helpers
import comfy.samplers
import node_helpers

from . import schedule
from .dynamic import DynamicRun

log = logging.getLogger("comfyui-negative-guidance")

# The extra conditioning key (for ∅) and the wrapper key, both unique to this pack.
EMPTY_KEY = "negative_guidance_empty"
EXTRA_KEY = "negative_guidance_extra_{}"
WRAPPER_KEY = "negative_guidance"


@dataclass(frozen=True)
class RunSchedule:
    """The settings of one sampling run, with each negative's sigma ↔ progress map resolved before the first step.

    `observer`, when set (the guidance trace), is called once per evaluation; None costs nothing.
    """

    settings: schedule.GuidanceSettings
    progress_maps: tuple  # one per negative term, main negative first
    sequential: bool = False
    observer: object = None
    dynamic: DynamicRun | None = None  # the run's dynamic negative scales, if any negative has one
    _settings_by_cfg: dict = field(default_factory=dict, compare=False, repr=False)
    _conditionings: list = field(default_factory=list, compare=False, repr=False)  # [guider conds, looked up]

    @property
    def reads_sigma(self) -> bool:
        """Whether an evaluation needs its sigma as a number: a window that opens or closes during the run, or a
        dynamic scale. Otherwise the coefficients are the same at every evaluation and the pack makes no host–device
        synchronisation while sampling (a stock euler run makes none)."""
        return self.dynamic is not None or self.settings.constant_weights is None

    def coefficients(self, sigma: float | None, cfg: float | None = None) -> schedule.StepCoefficients:
        """One evaluation's coefficients (`sigma` None: a run whose windows never change, see reads_sigma); `cfg`,
        when given, is s⁺ as it stands now (the run started at settings.cfg)."""
        settings = self.settings if cfg is None or cfg == self.settings.cfg else self._at_cfg(cfg)
        if sigma is None:
            return settings.at(settings.constant_weights)
        weights = [term.window.weight(progress_map.progress(sigma))
                   for term, progress_map in zip(settings.terms, self.progress_maps)]
        return settings.at(weights)

    def conditionings(self, conds: dict) -> tuple:
        """(positive, negatives, empty) from a guider's processed conditionings, main negative first: looked up
        once per run (the guider processes its conditionings once, before the first evaluation)."""
        cache = self._conditionings
        if not cache or cache[0] is not conds:
            extras = (conds.get(EXTRA_KEY.format(i)) for i in range(len(self.settings.extra_negatives)))
            cache[:] = [conds, (conds.get("positive"), [conds.get("negative"), *extras], conds.get(EMPTY_KEY))]
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


def resolve_run(settings: schedule.GuidanceSettings, model_patcher, run_sigmas: list, sequential=False,
                observer=None, dynamic=None) -> RunSchedule:
    host_sampling = None
    if any(term.window_unit != "steps" for term in settings.terms):
        host_sampling = host_copy(model_patcher.get_model_object("model_sampling"))
    maps = tuple(progress_map_for(term, model_patcher, run_sigmas, host_sampling) for term in settings.terms)
    return RunSchedule(settings, maps, sequential, observer, dynamic)


def current_sigma(timestep: torch.Tensor) -> float:
    return float(timestep.reshape(-1)[0])


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


def predict(model, positive, negatives: list, empty, coefficients: schedule.StepCoefficients, x, timestep,
            model_options: dict, node: str, sequential=False, observer=None, dynamic: DynamicRun | None = None,
            sigma: float | None = None):
    """eps = e + s⁺(c − e) − Σᵢ sᵢ(nᵢ − e) for one evaluation, returned as ComfyUI's denoised prediction.

    `negatives` holds the main negative ỹ first, then any extra ones, matching coefficients.negatives.
    The batch handed to calc_cond_batch is [y, ỹ, ∅, ỹ₂, ỹ₃, ...].

    What CFG hooks (sampler_cfg_function, pre/post-CFG functions, and so the CFG++ samplers and SAG, which read the
    unconditional prediction) receive: cond = eps(y), cond_scale = s⁺ and uncond = u*, the blended unconditional
    prediction that makes this evaluation plain CFG (StepCoefficients.blends; at s⁺ = 1 its limit, which for the
    defaults is eps(ỹ), as in a stock KSampler at cfg 1). Where no u* exists (s⁺ = 1 with a negative of fixed or
    dynamic scale acting), or a run so close to s⁺ = 1 that u* would lose the guidance to rounding
    (GuidanceSettings.blends_lose_precision), they receive eps(∅), and the negative term is applied after them.

    A conditioning whose coefficient is zero is not evaluated and comes back as zeros, as calc_cond_batch returns
    them. With `disable_cfg1_optimization` (set by the CFG++ samplers and SAG) the conditionings that u* is made
    of are evaluated too, as a stock sampler evaluates the negative at cfg 1: never more.
    """
    need_negatives = coefficients.needs_negatives
    need_empty = coefficients.needs_empty
    if model_options.get("disable_cfg1_optimization", False):
        need_negatives = tuple(a or b for a, b in zip(need_negatives, coefficients.blend_needs_negatives))
        need_empty = need_empty or coefficients.blend_needs_empty
    if need_empty and empty is None:
        reason = ("the formula uses eps(∅)" if coefficients.needs_empty else
                  "the sampler or a model patch (CFG++ samplers, SAG) reads the unconditional prediction, here eps(∅)")
        raise ValueError(f"{node}: connect 'empty' (the empty prompt): at sigma {current_sigma(timestep):.4g} "
                         f"with cfg {coefficients.cond_scale} {reason}.")
    needed = (coefficients.needs_positive, need_negatives[0], need_empty, *need_negatives[1:])
    batch = [conds if need else None
             for conds, need in zip([positive, negatives[0], empty, *negatives[1:]], needed)]
    outputs = evaluate(model, batch, x, timestep, model_options, sequential)
    cond_pred, empty_pred = outputs[0], outputs[2]
    negative_preds = [outputs[1], *outputs[3:]]
    negative_conds = [batch[1], *batch[3:]]
    factors = ()
    if dynamic is not None:
        # Dynamic negatives: fᵢ = λ·p/(1 − p) per sample, tracked from this evaluation's predictions.
        sigma = current_sigma(timestep) if sigma is None else sigma  # the caller's read: one sync, not two
        factors = dynamic.factors(x, sigma, coefficients.needs_factors, empty_pred, negative_preds)
    scales, blends = coefficients.with_factors(factors)
    if observer is not None:
        observer(timestep, coefficients, batch, cond_pred, negative_preds, empty_pred,
                 *(() if dynamic is None else (_dynamic_record(dynamic.probabilities, scales),)))
    scales, blends = _shaped_like_x(scales, x), _shaped_like_x(blends, x)

    negative_term = None
    if blends is not None:
        # Plain CFG against u* = e + Σ αᵢ(nᵢ − e): ComfyUI's cfg_function does the final combination, so
        # sampler_cfg_function / post-CFG patches see (cond, uncond = u*, cond_scale = s⁺).
        uncond_pred = empty_pred
        for alpha, negative_pred in zip(blends, negative_preds):
            if _acts(alpha):
                uncond_pred = uncond_pred + alpha * (negative_pred - empty_pred)
        # "uncond" for the hooks: the main negative's conditioning where it takes part, else ∅'s, else the first
        # extra negative's that takes part (None where nothing was evaluated, as in a stock KSampler at cfg 1).
        candidates = [negative_conds[0] if _acts(blends[0]) else None, batch[2],
                      *(c for alpha, c in zip(blends[1:], negative_conds[1:]) if _acts(alpha))]
        uncond = next((c for c in candidates if c is not None), None)
    else:
        # No u*: s⁺ = 1 with a fixed or dynamic negative acting (no CFG term), or s⁺ so close to 1 that u* would lose
        # the guidance to rounding (schedule.MAX_BLEND). The hooks see eps(∅) as the unconditional prediction, and
        # the negative term is applied after them, so that a post-CFG patch such as PerturbedAttentionGuidance does
        # not scale it too.
        for s, need, negative_pred in zip(scales, coefficients.needs_negatives, negative_preds):
            if need:
                term = s * (negative_pred - empty_pred)
                negative_term = term if negative_term is None else negative_term + term
        uncond_pred = empty_pred
        uncond = batch[2]
    cond = batch[0]

    for pre_cfg in model_options.get("sampler_pre_cfg_function", []):
        args = {"conds": [cond, uncond], "conds_out": [cond_pred, uncond_pred], "cond_scale": coefficients.cond_scale,
                "timestep": timestep, "input": x, "sigma": timestep, "model": model, "model_options": model_options}
        cond_pred, uncond_pred = pre_cfg(args)
    denoised = comfy.samplers.cfg_function(model, cond_pred, uncond_pred, coefficients.cond_scale, x, timestep,
                                           model_options=model_options, cond=cond, uncond=uncond)
    return denoised if negative_term is None else denoised - negative_term


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
    """Everything a node hands to sampling: the settings, the conditionings it brings (∅ and extra negatives, in
    the order of settings.extra_negatives), whether to evaluate them one by one, and an optional trace."""

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

    def settings_problem(self, settings: schedule.GuidanceSettings, node: str) -> str | None:
        """The first problem with the run's real settings, as the sentence validate_inputs would give, or None."""
        window = settings.window
        problem = schedule.validate(node, settings.cfg, settings.neg_scale, window.start, window.end,
                                    settings.window_unit, window.ramp, window.ramp_width, empty_connected=None)
        for term in settings.extra_negatives:
            if problem:
                break
            problem = schedule.validate("ExtraNegative", None, term.scale, term.window.start, term.window.end,
                                        term.window_unit, term.window.ramp, term.window.ramp_width, None,
                                        follows_cfg=False)
        return problem

    def begin_run(self, settings: schedule.GuidanceSettings, model_patcher, sigmas, node: str) -> RunSchedule:
        """Resolve the run's schedule; stop with a clear message, before any model pass, if a setting is wrong
        (values fed by links reach validate_inputs as None, so they are checked here with their real values) or if
        ∅ is needed but absent."""
        has_dynamic = any(d is not None for d in settings.dynamic_terms)
        if self.empty is None and has_dynamic:
            raise ValueError(f"{node}: connect 'empty' (the empty prompt ∅): a dynamic negative scale tracks its "
                             "probability from eps(∅).")
        problem = self.settings_problem(settings, node)
        if problem:
            raise ValueError(problem)
        if self.empty is None and settings.needs_empty():
            # The sentence schedule.validate gives (and the graph shows), extended to the extra negatives.
            raise ValueError(
                f"{node}: connect 'empty' (the empty prompt ∅, e.g. CLIPTextEncode with no text): with cfg "
                f"{schedule.format_number(settings.cfg)} and neg_scale {schedule.format_number(settings.neg_scale)} "
                "over this window (and any extra negatives) the formula uses eps(∅). Only the ordinary negative "
                "prompt (neg_scale = cfg - 1, or -1, over the whole run) works without it.")
        run_sigmas = sigmas.reshape(-1).tolist()  # the run's sigmas as host numbers, converted once per run
        observer = self.trace.start_run(settings, run_sigmas) if self.trace is not None else None
        dynamic = None
        if has_dynamic:
            # Flow models (CONST: x = (1 − σ)x₀ + σ·noise) are tracked in variance-exploding units.
            flow = isinstance(model_patcher.get_model_object("model_sampling"), comfy.model_sampling.CONST)
            dynamic = DynamicRun(settings.dynamic_terms, flow)  # fresh state: one per run
        return resolve_run(settings, model_patcher, run_sigmas, self.sequential, observer, dynamic)


def predict_for(guider, run: RunSchedule, x, timestep, model_options, node):
    """`predict` with a CFGGuider's processed conditionings, at the guider's cfg as it stands at this evaluation
    (a PREDICT_NOISE wrapper such as ComfyUI's CFGOverride may change guider.cfg for some evaluations)."""
    positive, negatives, empty = run.conditionings(guider.conds)
    # The sigma as a number costs a host–device synchronisation: read it only where the coefficients depend on it.
    sigma = current_sigma(timestep) if run.reads_sigma else None
    return predict(guider.inner_model, positive, negatives, empty, run.coefficients(sigma, float(guider.cfg)), x,
                   timestep, model_options, node,
                   run.sequential, run.observer, run.dynamic, sigma)


class NegativeGuider(comfy.samplers.CFGGuider):
    """GUIDER for SamplerCustomAdvanced: positive y, negative ỹ, empty ∅, and any extra negatives."""

    node = "NegativeGuidanceGuider"

    def __init__(self, model_patcher, plan: GuidancePlan):
        super().__init__(model_patcher)
        self.plan = plan
        self.cfg = plan.settings.cfg
        self.run_schedule = None

    def set_conds(self, positive, negative):
        self.inner_set_conds({"positive": positive, "negative": negative, **self.plan.conditionings()})

    def outer_sample(self, noise, latent_image, sampler, sigmas, *args, **kwargs):
        settings = replace(self.plan.settings, cfg=float(self.cfg))
        self.run_schedule = self.plan.begin_run(settings, self.model_patcher, sigmas, self.node)
        try:
            return super().outer_sample(noise, latent_image, sampler, sigmas, *args, **kwargs)
        finally:
            self.run_schedule = None

    def predict_noise(self, x, timestep, model_options={}, seed=None):
        return predict_for(self, self.run_schedule, x, timestep, model_options, self.node)


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

    node = "NegativeGuidance"

    def __init__(self, plan: GuidancePlan):
        self.plan = plan
        self._said_standing_aside = False

    def apply_to(self, model):
        patched = model.clone()
        outer_sample = comfy.patcher_extension.WrappersMP.OUTER_SAMPLE
        if patched.get_wrappers(outer_sample, WRAPPER_KEY):
            log.info("%s: replacing an earlier NegativeGuidance patch on this model", self.node)
            patched.remove_wrappers_with_key(outer_sample, WRAPPER_KEY)
        patched.add_wrapper_with_key(outer_sample, WRAPPER_KEY, self.outer_sample)
        return patched

    def outer_sample(self, executor, noise, latent_image, sampler, sigmas, *args, **kwargs):
        guider = executor.class_obj
        if type(guider) is not comfy.samplers.CFGGuider:
            if not self._said_standing_aside:
                log.warning("%s: the model is sampled by %s, not plain CFG; the patch stands aside and that "
                            "guider's own guidance applies.", self.node, type(guider).__name__)
                self._said_standing_aside = True
            return executor(noise, latent_image, sampler, sigmas, *args, **kwargs)

        settings = replace(self.plan.settings, cfg=float(guider.cfg))  # s⁺ is the sampler's cfg
        run = self.plan.begin_run(settings, guider.model_patcher, sigmas, self.node)
        added = {key: comfy.sampler_helpers.convert_cond(value) for key, value in self.plan.conditionings().items()}
        # Hooks on these were not registered by CFGGuider.sample (it ran before this wrapper): drop them.
        comfy.samplers.filter_registered_hooks_on_conds(added, guider.model_options)
        guider.conds.update(added)

        def predict_noise(x, timestep, model_options={}, seed=None):
            return predict_for(guider, run, x, timestep, model_options, self.node)

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
