"""The one prediction routine, and the two ways ComfyUI reaches it: a CFGGuider subclass and a MODEL patch.

Both faces call `predict`, which evaluates only the conditionings whose coefficient is non-zero at this
evaluation, all in one `calc_cond_batch` call, and then hands the result to ComfyUI's own `cfg_function` as
plain CFG with a blended unconditional prediction, so RescaleCFG-style patches keep working (see README).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import torch

import comfy.patcher_extension
import comfy.sampler_helpers
import comfy.samplers
import node_helpers

from . import schedule

log = logging.getLogger("comfyui-negative-guidance")

# The extra conditioning key (for ∅) and the wrapper key, both unique to this pack.
EMPTY_KEY = "negative_guidance_empty"
WRAPPER_KEY = "negative_guidance"


@dataclass(frozen=True)
class RunSchedule:
    """The settings of one sampling run, with its sigma ↔ progress map resolved once before the first step."""

    settings: schedule.GuidanceSettings
    progress_map: schedule.ProgressMap

    def coefficients(self, sigma: float) -> schedule.StepCoefficients:
        window = self.settings.window
        return self.settings.at(window.weight(self.progress_map.progress(sigma)))


def begin_run(settings: schedule.GuidanceSettings, model_patcher, sigmas: torch.Tensor) -> RunSchedule:
    unit = settings.window_unit
    if unit == "steps":
        progress_map = schedule.steps_progress_map(sigmas.tolist())
    else:
        model_sampling = model_patcher.get_model_object("model_sampling")
        if unit == "timestep_percent":
            progress_map = schedule.percent_progress_map(model_sampling.percent_to_sigma, settings.window)
        else:
            progress_map = schedule.sigma_progress_map(float(model_sampling.sigma_min), float(model_sampling.sigma_max))
    return RunSchedule(settings, progress_map)


def empty_conds(empty):
    # ∅ takes the unconditional side's model-specific conditioning, as in ComfyUI's PerpNegGuider/DualCFGGuider.
    return comfy.sampler_helpers.convert_cond(node_helpers.conditioning_set_values(empty, {"prompt_type": "negative"}))


def current_sigma(timestep: torch.Tensor) -> float:
    return float(timestep.reshape(-1)[0])


def predict(model, positive, negative, empty, coefficients: schedule.StepCoefficients, x, timestep,
            model_options: dict, node: str):
    """eps = e + s⁺(c − e) − s(n − e) for one evaluation, returned as ComfyUI's denoised prediction."""
    if coefficients.needs_empty and empty is None:
        raise ValueError(f"{node}: connect 'empty' (the empty prompt): at sigma {current_sigma(timestep):.4g} "
                         f"with cfg {coefficients.cond_scale} the formula uses eps(∅).")
    batch = [positive, negative, empty]
    if not model_options.get("disable_cfg1_optimization", False):
        # A conditioning whose coefficient is zero is not evaluated; calc_cond_batch returns zeros in its place,
        # which the weights below multiply by zero.
        needed = (coefficients.needs_positive, coefficients.needs_negative, coefficients.needs_empty)
        batch = [conds if need else None for conds, need in zip(batch, needed)]
    if "sampler_calc_cond_batch_function" in model_options:
        args = {"conds": batch, "input": x, "sigma": timestep, "model": model, "model_options": model_options}
        cond_pred, negative_pred, empty_pred = model_options["sampler_calc_cond_batch_function"](args)
    else:
        cond_pred, negative_pred, empty_pred = comfy.samplers.calc_cond_batch(model, batch, x, timestep, model_options)

    if coefficients.has_cfg_term:
        # Plain CFG against u* = e + α(n − e): ComfyUI's cfg_function does the final combination, so
        # sampler_cfg_function / post-CFG patches see (cond, uncond = u*, cond_scale = s⁺).
        alpha = coefficients.blend
        uncond_pred = empty_pred + alpha * (negative_pred - empty_pred)
        uncond = batch[1] if alpha != 0.0 else batch[2]
    else:
        # s⁺ = 1: no CFG term. The guided prediction goes in as "cond" at cond_scale 1 (which every CFG patch
        # leaves unchanged) and eps(∅) as "uncond" where it was evaluated.
        if coefficients.needs_negative:
            cond_pred = cond_pred - coefficients.negative * (negative_pred - empty_pred)
        uncond_pred = empty_pred
        uncond = batch[2]
    cond = batch[0]

    for pre_cfg in model_options.get("sampler_pre_cfg_function", []):
        args = {"conds": [cond, uncond], "conds_out": [cond_pred, uncond_pred], "cond_scale": coefficients.cond_scale,
                "timestep": timestep, "input": x, "sigma": timestep, "model": model, "model_options": model_options}
        cond_pred, uncond_pred = pre_cfg(args)
    return comfy.samplers.cfg_function(model, cond_pred, uncond_pred, coefficients.cond_scale, x, timestep,
                                       model_options=model_options, cond=cond, uncond=uncond)


class NegativeGuider(comfy.samplers.CFGGuider):
    """GUIDER for SamplerCustomAdvanced: positive y, negative ỹ, empty ∅."""

    node = "NegativeGuidanceGuider"

    def __init__(self, model_patcher, settings: schedule.GuidanceSettings):
        super().__init__(model_patcher)
        self.settings = settings
        self.cfg = settings.cfg
        self.run_schedule = None

    def set_conds(self, positive, negative, empty=None):
        conds = {"positive": positive, "negative": negative}
        if empty is not None:
            conds[EMPTY_KEY] = node_helpers.conditioning_set_values(empty, {"prompt_type": "negative"})
        self.inner_set_conds(conds)

    def outer_sample(self, noise, latent_image, sampler, sigmas, *args, **kwargs):
        self.run_schedule = begin_run(self.settings, self.model_patcher, sigmas)
        try:
            return super().outer_sample(noise, latent_image, sampler, sigmas, *args, **kwargs)
        finally:
            self.run_schedule = None

    def predict_noise(self, x, timestep, model_options={}, seed=None):
        coefficients = self.run_schedule.coefficients(current_sigma(timestep))
        return predict(self.inner_model, self.conds.get("positive"), self.conds.get("negative"),
                       self.conds.get(EMPTY_KEY), coefficients, x, timestep, model_options, self.node)


class NegativeGuidancePatch:
    """MODEL patch for KSampler & co.: positive = y, negative = ỹ, cfg = s⁺, and ∅ from the patch.

    OUTER_SAMPLE adds ∅ to the guider's conditionings before ComfyUI processes them (areas, masks, ControlNet,
    model-specific conditioning all apply to it), and PREDICT_NOISE replaces CFGGuider.predict_noise with
    `predict`, so the three predictions come from one batched forward, as in the guider.
    """

    node = "NegativeGuidance"

    def __init__(self, settings: schedule.GuidanceSettings, empty=None):
        self.settings = settings
        self.empty = empty
        self._said_standing_aside = False

    def apply_to(self, model):
        patched = model.clone()
        for wrapper_type, wrapper in ((comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, self.outer_sample),
                                      (comfy.patcher_extension.WrappersMP.PREDICT_NOISE, self.predict_noise)):
            if patched.get_wrappers(wrapper_type, WRAPPER_KEY):
                log.info("%s: replacing an earlier NegativeGuidance patch on this model", self.node)
                patched.remove_wrappers_with_key(wrapper_type, WRAPPER_KEY)
            patched.add_wrapper_with_key(wrapper_type, WRAPPER_KEY, wrapper)
        return patched

    def outer_sample(self, executor, noise, latent_image, sampler, sigmas, *args, **kwargs):
        guider = executor.class_obj
        if type(guider) is not comfy.samplers.CFGGuider:
            if not self._said_standing_aside:
                log.warning("%s: the model is sampled by %s, not plain CFG; the patch stands aside and that "
                            "guider's own guidance applies.", self.node, type(guider).__name__)
                self._said_standing_aside = True
            return executor(noise, latent_image, sampler, sigmas, *args, **kwargs)

        settings = replace(self.settings, cfg=float(guider.cfg))
        if self.empty is None and settings.needs_empty():
            raise ValueError(
                f"{self.node}: connect 'empty' (the empty prompt ∅): with the sampler's cfg {guider.cfg} and "
                f"neg_scale {self.settings.neg_scale} over this window the formula uses eps(∅). Without it only "
                "neg_scale = -1 (cfg - 1) over the whole run works.")
        if self.empty is not None:
            added = {EMPTY_KEY: empty_conds(self.empty)}
            # Hooks on ∅ were not registered by CFGGuider.sample (it ran before this wrapper): drop them.
            comfy.samplers.filter_registered_hooks_on_conds(added, guider.model_options)
            guider.conds.update(added)
        guider.negative_guidance_run = begin_run(settings, guider.model_patcher, sigmas)
        try:
            return executor(noise, latent_image, sampler, sigmas, *args, **kwargs)
        finally:
            guider.negative_guidance_run = None

    def predict_noise(self, executor, x, timestep, model_options={}, seed=None):
        guider = executor.class_obj
        run = getattr(guider, "negative_guidance_run", None)
        if run is None:
            return executor(x, timestep, model_options, seed)
        coefficients = run.coefficients(current_sigma(timestep))
        return predict(guider.inner_model, guider.conds.get("positive"), guider.conds.get("negative"),
                       guider.conds.get(EMPTY_KEY), coefficients, x, timestep, model_options, self.node)
