"""Nodes that show when and how much the negative prompt acts: the guidance trace and the r_t attention probe.

Wiring (it follows ComfyUI's data flow): a handle node makes an empty recorder; the sampler fills it while it
samples; a plot node that takes the handle AND the sampler's output LATENT therefore runs after sampling and shows
the plot in the UI.

    NegativeGuidanceTrace ─trace─▶ NegativeGuidance / NegativeGuidanceGuider ─▶ KSampler / SamplerCustomAdvanced
             └──────────trace──────────▶ NegativeGuidanceTracePlot ◀──LATENT──┘

    MODEL ─▶ NegativeGuidanceProbe ─MODEL─▶ (NegativeGuidance ─▶) KSampler ─LATENT─▶ NegativeGuidanceProbePlot
                        └──────────────────────probe──────────────────────────────────────▲
"""

from __future__ import annotations

import json

import comfy.patcher_extension
from comfy_api.latest import io, ui

from . import log, validation
from . import probe as probe_lib
from .sockets import NAMING_INPUTS, ProbeHandle, TraceHandle
from .trace import GuidanceTrace, figure_to_image, render_run
from .validation import DISPLAY_NAMES, running_node_name, schema_bounds

LATENT_TOOLTIP = ("The sampler's output LATENT. Connect it so that this node runs after sampling has filled the "
                  "handle; it is passed through unchanged.")
LATENT_OUT_TOOLTIP = "The sampler's LATENT, unchanged: decode or save it after the plot."
X_AXES = ("step", "sigma")


def message_image(message: str, width: int = 900, height: int = 240):
    """`message` drawn as a picture (an IMAGE tensor), in place of a plot."""
    import textwrap

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width / 100, height / 100), dpi=100)
    canvas = FigureCanvasAgg(figure)
    figure.text(0.04, 0.9, "\n".join(textwrap.wrap(message, 100)), va="top", ha="left", fontsize=11, wrap=False)
    return figure_to_image(canvas)


def nothing_to_plot(cls, latent, message: str) -> io.NodeOutput:
    """A plot node with no run to show: the sentence as its picture and as its JSON, the latent passed on. The node
    no longer shows an earlier run, and the rest of the prompt (decoding, saving the image) still runs."""
    log.warning(message)
    image = message_image(message)
    return io.NodeOutput(image, json.dumps({"nothing_recorded": message}), latent,
                         ui=ui.PreviewImage(image, cls=cls))


class NegativeGuidanceTrace(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="NegativeGuidanceTrace",
            display_name=DISPLAY_NAMES["NegativeGuidanceTrace"],
            category="advanced/guidance/inspect",
            description=("Records what the negative guidance does at each step of a run: its strengths, the model "
                         "passes, how strongly the negative pulled. Connect it to the 'trace' input of a guidance "
                         "node and to Guidance Trace Plot. Recording changes no pixel."),
            inputs=[],
            outputs=[TraceHandle.Output(display_name="trace",
                                        tooltip="Connect to the 'trace' input of a guidance node and to Guidance "
                                                "Trace Plot.")],
        )

    @classmethod
    def execute(cls) -> io.NodeOutput:
        return io.NodeOutput(GuidanceTrace())


class NegativeGuidanceTracePlot(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="NegativeGuidanceTracePlot",
            display_name=DISPLAY_NAMES["NegativeGuidanceTracePlot"],
            category="advanced/guidance/inspect",
            description=("Plots, step by step, what the negative guidance did in the run the trace recorded: the "
                         "strengths s⁺ and s⁻·w(t), the model passes, how far the positive and the negative pulled "
                         "(‖eps(y)−eps(∅)‖, ‖eps(ỹ)−eps(∅)‖, their cosine) and the negative/positive ratio; "
                         "also as JSON."),
            inputs=[
                TraceHandle.Input("trace", tooltip="The NegativeGuidanceTrace handle wired to the guidance node."),
                io.Latent.Input("latent", tooltip=LATENT_TOOLTIP),
                io.Combo.Input("x_axis", options=list(X_AXES), default="step",
                               tooltip="step: the sampler's steps (second-order samplers' extra evaluations sit "
                                       "between steps). sigma: the noise level, log scale, noisy on the left."),
            ],
            outputs=[io.Image.Output(display_name="plot", tooltip="The plot as an image (also shown on the node)."),
                     io.String.Output(display_name="json", tooltip="The recorded numbers, per evaluation, as JSON."),
                     io.Latent.Output(display_name="latent", tooltip=LATENT_OUT_TOOLTIP)],
            is_output_node=True,
        )

    @classmethod
    def validate_inputs(cls, x_axis=None):
        # ComfyUI 0.3.75 does not check a V3 combo's value itself. One input only: ComfyUI shows the sentence once
        # per input this function takes.
        return validation.choice_problem(DISPLAY_NAMES["NegativeGuidanceTracePlot"], "x_axis", x_axis, X_AXES) or True

    @classmethod
    def execute(cls, trace, latent, x_axis="step") -> io.NodeOutput:
        run = trace.run_for(latent) if isinstance(trace, GuidanceTrace) else None
        if run is None or not run.evaluations:
            return nothing_to_plot(cls, latent, (
                "Guidance Trace Plot: no run was recorded for the sampling that made this latent, so there is "
                "nothing to plot (an earlier run of this trace belongs to another sampling and is not shown). "
                "Connect the same Guidance Trace to the 'trace' input of Negative Guidance (patch) or Negative "
                "Guidance Guider, and this node's latent to that sampler's output."))
        image = render_run(run, x_axis)
        return io.NodeOutput(image, trace.to_json(run), latent, ui=ui.PreviewImage(image, cls=cls))


class NegativeGuidanceProbe(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="NegativeGuidanceProbe",
            display_name=DISPLAY_NAMES["NegativeGuidanceProbe"],
            category="advanced/guidance/inspect",
            description=("Measures, at each step, how much attention the model pays to a word of the negative "
                         "prompt compared with the positive-prompt word it relates to (r_t of Ban et al. 2024: the "
                         "summed Frobenius norms of the words' cross-attention maps). For UNet models (SD1.x, "
                         "SD2.x, SDXL). Sample the MODEL it returns; the probe only reads attention and changes no "
                         "pixel."),
            inputs=[
                io.Model.Input("model", tooltip="The UNet model to sample (SD1.x, SD2.x, SDXL), with any other "
                                                "model nodes before this one."),
                io.Clip.Input("clip", tooltip="The CLIP that encodes the prompts: its tokenizer maps the words to "
                                              "token positions."),
                io.String.Input("positive_text", multiline=True, default="",
                                tooltip="The positive prompt text, exactly as encoded for the sampler."),
                io.String.Input("negative_text", multiline=True, default="",
                                tooltip="The negative prompt text, exactly as encoded for the sampler."),
                io.String.Input("positive_word", default="",
                                tooltip="The positive-prompt word the negative word relates to most (e.g. 'woman')."),
                io.String.Input("negative_word", default="",
                                tooltip="The negative-prompt word to follow (e.g. 'glasses')."),
                io.Int.Input("map_size", default=64, **schema_bounds("map_size"),
                             tooltip="Maps are upsampled to this side before their Frobenius norm (64 as Ban et al.)."),
                io.Combo.Input("layers", options=list(probe_lib.LAYER_RULES), default="non_middle",
                               tooltip="non_middle: every cross-attention layer of the input and output blocks (the "
                                       "authors' 15 layers on SD1.x at 512²). all: the middle block too."),
            ],
            outputs=[io.Model.Output(tooltip="The model with the probe; sample this one."),
                     ProbeHandle.Output(display_name="probe",
                                        tooltip="Connect to Negative Prompt Attention Probe Plot.")],
            hidden=NAMING_INPUTS,
        )

    @classmethod
    def validate_inputs(cls, layers=None):
        # Only `layers` (ComfyUI 0.3.75 does not check a V3 combo's value): ComfyUI shows the sentence once per input
        # this function takes, and checks min/max (map_size) only of inputs it does not take. Empty or unknown words
        # are refused when the node runs (probe.find_word), naming the input.
        return validation.choice_problem(DISPLAY_NAMES["NegativeGuidanceProbe"], "layers", layers,
                                          probe_lib.LAYER_RULES) or True

    @classmethod
    def execute(cls, model, clip, positive_text, negative_text, positive_word, negative_word, map_size=64,
                layers="non_middle") -> io.NodeOutput:
        probed, probe = make_probe(model, clip, positive_text, negative_text, positive_word, negative_word,
                                   map_size, layers, node=running_node_name(cls))
        return io.NodeOutput(probed, probe)


def make_probe(model, clip, positive_text, negative_text, positive_word, negative_word, map_size=64,
               layers="non_middle", node: str = DISPLAY_NAMES["NegativeGuidanceProbe"]):
    """(a clone of `model` with the probe's attn2 patch and run wrapper, the AttentionProbe); problems name `node`."""
    # ComfyUI checks the schema's bounds and options only on widget values: linked ones are checked here.
    problem = (validation.numbers_problem(node, {"map_size": map_size})
               or validation.choice_problem(node, "layers", layers, probe_lib.LAYER_RULES))
    if problem:
        raise ValueError(problem)
    diffusion_model = model.get_model_object("diffusion_model")
    if not probe_lib.is_unet(diffusion_model):
        raise ValueError(f"{node}: the r_t probe reads a UNet's cross-attention (SD1.x, SD2.x, SDXL); this model "
                         f"is a {type(diffusion_model).__name__}.")
    positive_positions = probe_lib.find_word(clip, node, "positive_word", positive_word, "positive", positive_text)
    negative_positions = probe_lib.find_word(clip, node, "negative_word", negative_word, "negative", negative_text)
    probe = probe_lib.AttentionProbe(
        diffusion_model, probe_lib.prompt_tokens(clip, positive_text), positive_positions,
        probe_lib.prompt_tokens(clip, negative_text), negative_positions, map_size, layers,
        words=(positive_word.strip(), negative_word.strip()))
    probed = model.clone()
    probed.set_model_attn2_patch(probe)  # the probe is its own attn2_patch and survives clones as itself
    probed.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, probe_lib.WRAPPER_KEY,
                                probe.outer_sample)
    log.debug("%s: '%s' at %s vs '%s' at %s", node, negative_word, negative_positions, positive_word,
              positive_positions)
    return probed, probe


class NegativeGuidanceProbePlot(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="NegativeGuidanceProbePlot",
            display_name=DISPLAY_NAMES["NegativeGuidanceProbePlot"],
            category="advanced/guidance/inspect",
            description=("Plots, per step, how much attention the negative word drew compared with the positive "
                         "word (r_t, plain and word-restricted) in the run the probe saw; also as JSON."),
            inputs=[
                ProbeHandle.Input("probe", tooltip="The probe handle from NegativeGuidanceProbe."),
                io.Latent.Input("latent", tooltip=LATENT_TOOLTIP),
            ],
            outputs=[io.Image.Output(display_name="plot", tooltip="The plot as an image (also shown on the node)."),
                     io.String.Output(display_name="json", tooltip="r_t per step, as JSON."),
                     io.Latent.Output(display_name="latent", tooltip=LATENT_OUT_TOOLTIP)],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, probe, latent) -> io.NodeOutput:
        run = probe.run_for(latent) if isinstance(probe, probe_lib.AttentionProbe) else None
        if run is None or not run.evaluations:
            return nothing_to_plot(cls, latent, (
                "Negative Prompt Attention Probe Plot: the probe saw no run of the sampling that made this latent, "
                "so there is nothing to plot (an earlier run belongs to another sampling and is not shown). Sample "
                "the MODEL that Negative Prompt Attention Probe returns, and connect that sampler's output to "
                "'latent'."))
        image = probe_lib.render_probe(probe, run)
        return io.NodeOutput(image, probe.to_json(run), latent, ui=ui.PreviewImage(image, cls=cls))


NODES = [NegativeGuidanceTrace, NegativeGuidanceTracePlot, NegativeGuidanceProbe, NegativeGuidanceProbePlot]
