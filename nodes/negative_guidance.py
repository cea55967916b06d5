"""The two nodes: schemas and validation only; the work is in guidance.py and schedule.py.

Saved workflows store widget values by position: never reorder or rename these inputs; add new ones at the end
or as optional (tests/test_schema.py pins them).
"""

from __future__ import annotations

from dataclasses import replace

from comfy_api.latest import io

from . import schedule, validation
from .dynamic_nodes import DYNAMIC_TOOLTIP
from .guidance import GuidancePlan, NegativeGuidancePatch, NegativeGuider
from .sockets import NAMING_INPUTS, DynamicNegativeSettings, ExtraNegatives, TraceHandle
from .validation import DISPLAY_NAMES, running_node_name
from .validation import schema_bounds as bounds

EMPTY_TOOLTIP = ("The empty prompt ∅ (CLIPTextEncode with no text, or ConditioningZeroOut). Needed whenever the "
                 "formula uses eps(∅): any setting other than neg_scale = cfg - 1 over the whole run, and any "
                 "Dynamic Negative Scale.")
NEG_SCALE_TOOLTIP = ("s⁻, how hard the negative prompt pushes away. -1 (any negative value) follows cfg: s⁻ = cfg - 1, "
                     "exactly ComfyUI's ordinary negative prompt. 0 switches the negative off (plain CFG against ∅). "
                     "The arrows go from 0 straight to -1 and from -1 straight to 0. A Dynamic Negative Scale on "
                     "'dynamic' replaces it.")


def window_inputs() -> list:
    """neg_start … ramp_width, shared by both nodes in the same order."""
    return [
        io.Float.Input("neg_start", default=0.0, **bounds("neg_start"), step=0.01, round=0.0001,
                       tooltip="Where the negative switches on: the fraction of sampling done before it acts (in "
                               "window_unit; 0 = from the first, noisiest step). Steps count from 1: to act on "
                               "steps 6-15 of 30, neg_start = 5/30 = 0.1667 and neg_end = 15/30 = 0.5."),
        io.Float.Input("neg_end", default=1.0, **bounds("neg_end"), step=0.01, round=0.0001,
                       tooltip="Where the negative switches off again: the fraction of sampling done when it stops "
                               "(1 = to the end). For steps 6-15 of 30: 15/30 = 0.5."),
        io.Combo.Input("window_unit", options=list(schedule.WINDOW_UNITS), default="steps",
                       tooltip="How neg_start/neg_end count. steps: fraction of this run's own steps. "
                               "timestep_percent: ComfyUI's percent, as ConditioningSetTimestepRange uses it. "
                               "sigma: linear in sigma between the model's largest (0) and smallest (1) sigma."),
        io.Combo.Input("ramp", options=list(schedule.RAMPS), default="hard",
                       tooltip="How the negative fades in after neg_start and out before neg_end "
                               "(not at 0 or 1). hard: no fade."),
        io.Float.Input("ramp_width", default=0.0, **bounds("ramp_width"), step=0.01, round=0.0001,
                       tooltip="Length of each fade, in the same unit as the window, inside the window. "
                               "Ignored with ramp = hard."),
    ]


EVALUATIONS = ("batched", "sequential")


def options_inputs() -> list:
    """Inputs added after the first release: optional and at the end, so saved workflows keep loading."""
    return [
        ExtraNegatives.Input("extra_negatives", optional=True,
                             tooltip="More negative prompts, each with its own scale and window (ExtraNegative "
                                     "nodes, chained)."),
        io.Combo.Input("evaluation", options=list(EVALUATIONS), default="batched", optional=True,
                       tooltip="batched: every prompt of a step in one model call (fastest). sequential: one call "
                               "per prompt, for low VRAM; equal to batched up to floating-point rounding."),
        TraceHandle.Input(
            "trace", optional=True,
            tooltip="Optional: the handle of a Guidance Trace node. The sampler fills it with per-step numbers "
                    "(scales, norms, ratio); plot it with Guidance Trace Plot after the sampler. Changes no pixel."),
        DynamicNegativeSettings.Input("dynamic", optional=True, tooltip=DYNAMIC_TOOLTIP),
    ]


def check(node: str, settings, empty_connected: bool | None = None):
    """Refuses the node's settings with the sentence validation.problem gives, naming node and input.

    Checked here, when the node runs, and not in validate_inputs: ComfyUI attaches a validate_inputs sentence to
    every input that function takes (one mistake would show once per input, on inputs that are not wrong) and
    stops checking those inputs' min/max itself; values arriving through links are only known here.
    """
    problem = validation.problem(node, settings, empty_connected)
    if problem:
        raise ValueError(problem)


def check_samplers(plan: GuidancePlan, hidden) -> None:
    """Refuses the patch here, before any sampling, where the prompt shows a sampler whose cfg it cannot run at (∅
    needed but not connected): the error then names and outlines this node, not the sampler. A cfg that arrives by
    link, or a sampler this search does not reach, is checked when sampling starts (GuidancePlan.begin_run)."""
    for cfg in sampler_cfgs(getattr(hidden, "prompt", None), getattr(hidden, "unique_id", None)):
        problem = validation.problem(plan.node, replace(plan.settings, cfg=cfg), plan.empty is not None)
        if problem:
            raise ValueError(problem)  # the sentence sampling would stop with, and the graph shows, at that cfg


# The stock nodes that sample a MODEL with ComfyUI's plain CFGGuider at their own cfg input: the patch acts there
# (other guiders, e.g. PerpNegGuider, keep their own guidance and the patch stands aside).
PLAIN_CFG_SAMPLERS = ("KSampler", "KSamplerAdvanced", "SamplerCustom", "CFGGuider")


def sampler_cfgs(prompt, patch_id) -> list[float]:
    """The cfg of each plain-CFG sampler of the API prompt that takes this patch's MODEL and has its cfg typed in,
    followed through the other nodes that give a MODEL on (LoRA loaders, other patches)."""
    import nodes as comfy_nodes  # ComfyUI's registry (this package's own `nodes` is only imported relatively)

    if not isinstance(prompt, dict) or patch_id is None:
        return []
    found, frontier, seen = [], [(str(patch_id), 0)], set()
    while frontier:
        source = frontier.pop()
        if source in seen:
            continue
        seen.add(source)
        for node_id, node in prompt.items():
            inputs = node.get("inputs") if isinstance(node, dict) else None
            if not isinstance(inputs, dict) or not any(
                    isinstance(value, list) and len(value) == 2 and (str(value[0]), value[1]) == source
                    for value in inputs.values()):
                continue
            class_type = node.get("class_type")
            if class_type in PLAIN_CFG_SAMPLERS:
                cfg = inputs.get("cfg")
                if isinstance(cfg, (int, float)) and not isinstance(cfg, bool):
                    found.append(float(cfg))
                continue
            if class_type == "NegativeGuidance":
                continue  # a later patch replaces this one on the model it gives
            outputs = getattr(comfy_nodes.NODE_CLASS_MAPPINGS.get(class_type), "RETURN_TYPES", None) or ()
            frontier.extend((str(node_id), slot) for slot, kind in enumerate(outputs) if kind == "MODEL")
    return found


def term_from(neg_scale, neg_start, neg_end, window_unit, ramp, ramp_width, dynamic=None, main=True
              ) -> schedule.NegativeTerm:
    window = schedule.Window(float(neg_start), float(neg_end), ramp, float(ramp_width))
    if main:
        return schedule.NegativeTerm.main(neg_scale, window, window_unit, dynamic)
    return schedule.NegativeTerm(float(neg_scale), window, window_unit, dynamic)


def plan_from(node, cfg, neg_scale, neg_start, neg_end, window_unit, ramp, ramp_width, empty, extra_negatives,
              evaluation, trace=None, dynamic=None) -> GuidancePlan:
    extras = tuple(extra_negatives or ())
    main = term_from(neg_scale, neg_start, neg_end, window_unit, ramp, ramp_width, dynamic)
    settings = schedule.GuidanceSettings(cfg, (main, *(term for _, term in extras)))
    return GuidancePlan(node, settings, empty, tuple(conditioning for conditioning, _ in extras),
                        sequential=evaluation == "sequential", trace=trace)


class NegativeGuidance(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="NegativeGuidance",
            display_name=DISPLAY_NAMES["NegativeGuidance"],
            category="advanced/guidance",
            description=("Gives the negative prompt its own strength (neg_scale) and its own part of the run "
                         "(neg_start to neg_end) on the ordinary KSampler. Keep positive, negative and cfg on the "
                         "KSampler as usual; the defaults change nothing until you turn a knob. "
                         "eps = eps(∅) + cfg·(eps(y) - eps(∅)) - neg_scale·w(t)·(eps(ỹ) - eps(∅))."),
            inputs=[
                io.Model.Input("model", tooltip="The model to patch (from the checkpoint loader or other model "
                                                "nodes); sample the patched one with KSampler."),
                io.Conditioning.Input("empty", optional=True, tooltip=EMPTY_TOOLTIP),
                io.Float.Input("neg_scale", default=schedule.NEG_SCALE_FOLLOWS_CFG, **bounds("neg_scale"), step=0.1,
                               round=0.01, tooltip=NEG_SCALE_TOOLTIP),
                *window_inputs(),
                *options_inputs(),
            ],
            outputs=[io.Model.Output(tooltip="The model with negative guidance; sample it with KSampler (or "
                                             "KSamplerAdvanced, SamplerCustom), whose cfg is s⁺.")],
            # the prompt: the samplers this patch feeds, whose cfg decides whether ∅ is needed (check_samplers)
            hidden=[*NAMING_INPUTS, io.Hidden.prompt],
        )

    @classmethod
    def execute(cls, model, neg_scale, neg_start, neg_end, window_unit, ramp, ramp_width, empty=None,
                extra_negatives=None, evaluation="batched", trace=None, dynamic=None) -> io.NodeOutput:
        # cfg (s⁺) is the sampler's, read when sampling starts; 1.0 stands in until then, and whether ∅ is needed
        # (which depends on it) is checked there.
        plan = plan_from(running_node_name(cls), 1.0, neg_scale, neg_start, neg_end, window_unit, ramp, ramp_width,
                         empty, extra_negatives, evaluation, trace, dynamic)
        check(plan.node, plan.settings)
        check_samplers(plan, cls.hidden)
        return io.NodeOutput(NegativeGuidancePatch(plan).apply_to(model))


class NegativeGuidanceGuider(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="NegativeGuidanceGuider",
            display_name=DISPLAY_NAMES["NegativeGuidanceGuider"],
            category="sampling/custom_sampling/guiders",
            description=("A guider for SamplerCustomAdvanced that gives the positive prompt (cfg) and the negative "
                         "prompt (neg_scale) separate strengths, and the negative its own part of the run "
                         "(neg_start to neg_end)."),
            inputs=[
                io.Model.Input("model", tooltip="The model to sample."),
                io.Conditioning.Input("positive", tooltip="The positive prompt y."),
                io.Conditioning.Input("negative", tooltip="The negative prompt ỹ."),
                io.Conditioning.Input("empty", optional=True, tooltip=EMPTY_TOOLTIP),
                io.Float.Input("cfg", default=8.0, **bounds("cfg"), step=0.1, round=0.01,
                               tooltip="s⁺, the usual CFG scale of the positive against ∅."),
                io.Float.Input("neg_scale", default=schedule.NEG_SCALE_FOLLOWS_CFG, **bounds("neg_scale"), step=0.1,
                               round=0.01, tooltip=NEG_SCALE_TOOLTIP),
                *window_inputs(),
                *options_inputs(),
            ],
            outputs=[io.Guider.Output(tooltip="Connect to the guider input of SamplerCustomAdvanced.")],
            hidden=NAMING_INPUTS,
        )

    @classmethod
    def execute(cls, model, positive, negative, cfg, neg_scale, neg_start, neg_end, window_unit, ramp, ramp_width,
                empty=None, extra_negatives=None, evaluation="batched", trace=None, dynamic=None) -> io.NodeOutput:
        plan = plan_from(running_node_name(cls), cfg, neg_scale, neg_start, neg_end, window_unit, ramp,
                         ramp_width, empty, extra_negatives, evaluation, trace, dynamic)
        check(plan.node, plan.settings, empty is not None)
        guider = NegativeGuider(model, plan)
        guider.set_conds(positive, negative)
        return io.NodeOutput(guider)


class ExtraNegative(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="ExtraNegative",
            display_name=DISPLAY_NAMES["ExtraNegative"],
            category="advanced/guidance",
            description=("One more negative prompt with its own strength and its own part of the run, for "
                         "Negative Guidance (patch) or the Negative Guidance Guider: eps -= sᵢ·wᵢ(t)·(eps(ỹᵢ) - "
                         "eps(∅)). Chain several. Needs 'empty' connected on the main node."),
            inputs=[
                io.Conditioning.Input("negative", tooltip="This negative prompt ỹᵢ."),
                io.Float.Input("neg_scale", default=3.0, **bounds("neg_scale", follows_cfg=False), step=0.1,
                               round=0.01, tooltip="sᵢ, how hard this negative pushes away. 0 switches it off. A Dynamic "
                                       "Negative Scale on 'dynamic' replaces it."),
                *window_inputs(),
                ExtraNegatives.Input("extra_negatives", optional=True, tooltip="Earlier ExtraNegative nodes."),
                DynamicNegativeSettings.Input("dynamic", optional=True, tooltip=DYNAMIC_TOOLTIP),
            ],
            outputs=[ExtraNegatives.Output(display_name="extra_negatives",
                                           tooltip="This negative and the earlier ones: connect to extra_negatives "
                                                   "of a guidance node or of another Extra Negative.")],
            hidden=NAMING_INPUTS,
        )

    @classmethod
    def execute(cls, negative, neg_scale, neg_start, neg_end, window_unit, ramp, ramp_width,
                extra_negatives=None, dynamic=None) -> io.NodeOutput:
        term = term_from(neg_scale, neg_start, neg_end, window_unit, ramp, ramp_width, dynamic, main=False)
        check(running_node_name(cls), term)
        return io.NodeOutput((*(extra_negatives or ()), (negative, term)))


NODES = [NegativeGuidance, NegativeGuidanceGuider, ExtraNegative]
