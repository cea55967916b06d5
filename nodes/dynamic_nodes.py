"""The Dynamic Negative Scale node: settings for s⁻(x, t) = λ·p/(1 − p), to plug into a negative's `dynamic` input.

The maths is in dynamic.py; this file only declares the schema and builds a DynamicNegative.
"""

from __future__ import annotations

from comfy_api.latest import io

from . import dynamic, validation
from .sockets import NAMING_INPUTS, DynamicNegativeSettings
from .validation import DISPLAY_NAMES, schema_bounds

CUSTOM = "custom (the inputs below)"
PRESET_NAMES = (CUSTOM, *dynamic.PRESETS)
# The `update` input (optional, last): how p is tracked. Label → DynamicNegative.method.
UPDATES = {"mixture (default)": "mixture", "Itô (any path)": "ito", "published DNG": "published",
           "Itô + divergence probe (extra pass)": "ito-probe"}
NODE = "DynamicNegativeScale"

DYNAMIC_TOOLTIP = ("Optional: a Dynamic Negative Scale (experimental). This negative's scale then follows each "
                   "sample: λ·p/(1 - p), p the tracked probability that the sample is heading for this negative; "
                   "neg_scale is ignored, the window still gates it. Needs 'empty' connected on the main node.")


class DynamicNegativeScale(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        defaults = dynamic.DynamicNegative()
        return io.Schema(
            node_id=NODE,
            display_name=DISPLAY_NAMES["DynamicNegativeScale"],
            category="advanced/guidance",
            # ComfyUI's way of saying so: the server marks the node experimental and the frontend tags it.
            is_experimental=True,
            description=(
                "A negative scale that follows each sample (Dynamic Negative Guidance, Koulischer et "
                "al. 2025): s⁻ = strength·p/(1 - p), p = p(negative | current sample), tracked along the run from "
                "the predictions already computed (no extra model pass). Samples heading for the negative concept "
                "are pushed away; the others are left alone. Connect to the 'dynamic' input of Negative Guidance, "
                "Negative Guidance Guider or Extra Negative. Measured on exact-score toy models and on the pack's small "
                "trained testbed only: watch p and s⁻ in the guidance trace, and calibrate temperature (low: 0.25 "
                "to 1 suited the testbed, 4 did not)."),
            inputs=[
                io.Combo.Input("preset", options=list(PRESET_NAMES), default=CUSTOM,
                               tooltip="custom: the inputs below. 'Stable Diffusion (paper)': the paper's SD "
                                       "settings (prior 0.01, temperature 0.25, offset 0.003, strength 20, the "
                                       "published update); a preset overrides the inputs below."),
                io.Float.Input("strength", default=defaults.strength, **schema_bounds("strength"), step=0.1, round=0.01,
                               tooltip="λ: s⁻ = λ·p/(1 - p). p = 0.5 gives s⁻ = λ; at most λ·p_max/(1 - p_max)."),
                io.Float.Input("prior", default=defaults.prior, **schema_bounds("prior"), step=0.01, round=0.0001,
                               tooltip="p before any evidence: how likely a sample is to hold the negative concept "
                                       "(0.5 on the benchmark toys; the paper uses 0.01 on Stable Diffusion)."),
                io.Float.Input("temperature", default=defaults.temperature, **schema_bounds("temperature"), step=0.05,
                               round=0.001,
                               tooltip="τ, the calibration: how much each step's evidence moves p. 0 keeps p at the "
                                       "prior (a constant scale λ·prior/(1 - prior)). On real models likelihood "
                                       "ratios are sharper than on the toys: lower it if p jumps to 0 or 1 at once."),
                io.Float.Input("offset", default=defaults.offset, **schema_bounds("offset"), step=0.001, round=0.0001,
                               tooltip="δ, a constant push of the evidence per step towards the negative (> 0) or "
                                       "away from it (< 0); the published code's offset. 0 on the toys."),
                io.Float.Input("p_max", default=defaults.p_max, **schema_bounds("p_max"), step=0.01, round=0.001,
                               tooltip="p is clipped here, so s⁻ never exceeds λ·p_max/(1 - p_max)."),
                io.Combo.Input("update", options=list(UPDATES), default=next(iter(UPDATES)), optional=True,
                               tooltip="How p is tracked along the run (docs/dynamic_negative.md). mixture: this "
                                       "pack's default. Itô: the Itô density estimator, valid for a sample on any "
                                       "path, with the term an ODE sampler lacks estimated from the predictions. "
                                       "published: DNG as published. Itô + divergence probe: that term measured "
                                       "instead, by evaluating the negative and empty prompts once more at each "
                                       "model evaluation (about 2/3 more model work for one dynamic negative); it "
                                       "catches samples that turn to the negative late on exact toy models, but "
                                       "with a model whose predictions are noisy (float16, large latents) it "
                                       "pushes samples off the image, and on the pack's trained testbed it "
                                       "changed more of the picture than the default. Ignored by a preset."),
            ],
            outputs=[DynamicNegativeSettings.Output(
                display_name="dynamic",
                tooltip="Connect to the 'dynamic' input of Negative Guidance, Negative Guidance Guider or Extra "
                        "Negative.")],
            hidden=NAMING_INPUTS,
        )

    @classmethod
    def validate_inputs(cls, preset=None, update=None):
        # Only the choices (ComfyUI 0.3.75 does not check a V3 combo's value): ComfyUI repeats a sentence once per input
        # this function takes and stops checking those inputs' min/max, so the numbers are checked in execute.
        shown = validation.DISPLAY_NAMES[NODE]  # the problem is shown on this node: its id is not needed
        return (validation.choice_problem(shown, "preset", preset, PRESET_NAMES)
                or validation.choice_problem(shown, "update", update, tuple(UPDATES)) or True)

    @classmethod
    def execute(cls, preset, strength, prior, temperature, offset, p_max, update=None) -> io.NodeOutput:
        # Values that arrived through links were not checked before the run (also under a preset, as always).
        node = validation.running_node_name(cls)
        problem = validation.choice_problem(node, "update", update, tuple(UPDATES))
        method = UPDATES.get(update, dynamic.DynamicNegative.method)
        custom = dynamic.DynamicNegative(strength=float(strength), prior=float(prior), temperature=float(temperature),
                                         offset=float(offset), p_max=float(p_max), method=method)
        problem = problem or validation.problem(node, custom)
        if problem:
            raise ValueError(problem)
        return io.NodeOutput(custom if preset == CUSTOM else dynamic.PRESETS[preset])


NODES = [DynamicNegativeScale]
