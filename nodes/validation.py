"""Every rule a node's settings must follow, each with the one sentence that names the node and the input.

`problem` is the entry point, over the settings objects the nodes build (GuidanceSettings, an ExtraNegative's
NegativeTerm, a DynamicNegative). The nodes call it when they run and sampling calls it again when it starts, since
values that arrive through links are not known to ComfyUI's own checks. js/schedule.js `validationProblem` mirrors
`inputs_problem` (tests/vectors/validation_vectors.json). No ComfyUI and no torch here.
"""

from __future__ import annotations

import math

from . import schedule

# The schema bounds of the number inputs (the node files declare them from here). ComfyUI checks them for widget
# values; `problem` checks them again for values that arrive through links.
BOUNDS = {"cfg": (0.0, 100.0), "neg_scale": (-1.0, 100.0), "neg_start": (0.0, 1.0), "neg_end": (0.0, 1.0),
          "ramp_width": (0.0, 1.0),
          # Dynamic Negative Scale
          "strength": (0.0, 100.0), "prior": (0.0001, 0.99), "temperature": (0.0, 10.0), "offset": (-1.0, 1.0),
          "p_max": (0.5, 0.999),
          # the r_t probe's map side: 64 in the authors' setup; larger only costs memory
          "map_size": (1, 256)}
BOUND_NOTES = {"neg_scale": " (any negative value follows cfg)", "neg_start": " (a fraction of sampling)",
               "neg_end": " (a fraction of sampling)"}
GUIDANCE_NUMBERS = ("cfg", "neg_scale", "neg_start", "neg_end", "ramp_width")
DYNAMIC_NUMBERS = ("strength", "prior", "temperature", "offset", "p_max")
# The names the canvas shows for the pack's nodes; their schemas read them from here, and every message starts with
# one (with the node's id where ComfyUI gives it): the user looks for the node by what it shows, not by its class.
DISPLAY_NAMES = {
    "NegativeGuidance": "Negative Guidance (patch)",
    "NegativeGuidanceGuider": "Negative Guidance Guider",
    "ExtraNegative": "Extra Negative (for Negative Guidance)",
    "DynamicNegativeScale": "Dynamic Negative Scale",
    "NegativeGuidanceTrace": "Guidance Trace (for Negative Guidance)",
    "NegativeGuidanceTracePlot": "Guidance Trace Plot (for Negative Guidance)",
    "NegativeGuidanceProbe": "Negative Prompt Attention Probe (r_t)",
    "NegativeGuidanceProbePlot": "Negative Prompt Attention Probe Plot",
    "NegativeGuidanceTestbed": "Negative Guidance Testbed (tiny demo model)",
}
# The node an extra negative's problem is named after when the guidance node finds it (its settings reach that node
# as a NegativeTerm, without the ExtraNegative node's id).
EXTRA_NEGATIVE_NODE = DISPLAY_NAMES["ExtraNegative"]


def node_name(node_id: str, unique_id=None, title=None) -> str:
    """How a message names a node: as the canvas shows it (its display name, and the title the user gave it if any)
    and by its id, as ComfyUI's node id badges write it: 'Negative Guidance (patch) "delayed" #12'.
    js/schedule.js `nodeName` writes the same; js/negative_guidance.js finds the node again by the id."""
    shown = DISPLAY_NAMES.get(node_id, node_id)
    if title and title != shown:
        shown = f'{shown} "{title}"'
    return shown if unique_id is None or unique_id == "" else f"{shown} #{unique_id}"


def running_node_name(node_class) -> str:
    """`node_name` for a V3 node class while ComfyUI runs it: its hidden inputs give the id and the workflow (with
    the node's title). Called directly (tests, scripts) there are none, and the display name alone is given."""
    hidden = getattr(node_class, "hidden", None)
    unique_id = getattr(hidden, "unique_id", None)
    # The schema's node_id: ComfyUI runs a copy of the class under another name (e.g. NegativeGuidanceClone).
    node_id = node_class.define_schema().node_id
    return node_name(node_id, unique_id, workflow_title(getattr(hidden, "extra_pnginfo", None), unique_id))


def workflow_title(extra_pnginfo, unique_id) -> str | None:
    """The title of node `unique_id` in the workflow the frontend sent along, or None (no workflow: an API prompt)."""
    workflow = extra_pnginfo.get("workflow") if isinstance(extra_pnginfo, dict) else None
    nodes = workflow.get("nodes") if isinstance(workflow, dict) else None
    for node in nodes if isinstance(nodes, list) else ():
        if isinstance(node, dict) and str(node.get("id")) == str(unique_id):
            title = node.get("title")
            return title if isinstance(title, str) and title.strip() else None
    return None


def input_bounds(name: str, follows_cfg: bool = True) -> tuple:
    """(min, max) of a number input; ExtraNegative's neg_scale has no "follow cfg" and starts at 0."""
    low, high = BOUNDS[name]
    return (0.0, high) if name == "neg_scale" and not follows_cfg else (low, high)


def schema_bounds(name: str, follows_cfg: bool = True) -> dict:
    """min= and max= of a number input's schema, from the bounds `problem` checks linked values against."""
    low, high = input_bounds(name, follows_cfg)
    return {"min": low, "max": high}


def format_number(value: float) -> str:
    """A number in a message, written as js/schedule.js `formatNumber` writes it (shortest form, 4 decimals)."""
    rounded = round(float(value), 4) + 0.0  # + 0.0: no "-0"
    text = repr(rounded)
    return text[:-2] if text.endswith(".0") else text


def connect_empty(node: str, why: str) -> str:
    """The sentence for every case where ∅ is needed but not connected (js/schedule.js `connectEmpty`)."""
    return f"{node}: connect 'empty' (the empty prompt ∅, e.g. CLIPTextEncode with no text): {why}"


def choice_problem(node: str, name: str, value, options) -> str | None:
    """A choice input whose value is not one of its options, or None (also when unknown). ComfyUI 0.3.75 does not
    check a V3 combo's value itself, so every node checks its own."""
    if value is None or value in options:
        return None
    return f"{node}: {name} must be one of {', '.join(options)}, got '{value}'."


def numbers_problem(node: str, values: dict, follows_cfg: bool = True) -> str | None:
    """The first number that is not finite, else the first outside its bounds (None values are unknown)."""
    for name, value in values.items():
        if value is not None and not math.isfinite(value):
            return f"{node}: {name} must be a finite number."
    for name, value in values.items():
        low, high = input_bounds(name, follows_cfg)
        if value is not None and not low <= value <= high:
            note = BOUND_NOTES.get(name, "") if follows_cfg or name != "neg_scale" else ""
            return (f"{node}: {name} must lie between {format_number(low)} and {format_number(high)}{note}, "
                    f"got {format_number(value)}.")
    return None


def empty_problem(node: str, settings: schedule.GuidanceSettings) -> str | None:
    """Why these settings cannot run without ∅, or None."""
    if any(term.dynamic is not None for term in settings.negatives):
        return connect_empty(node, "a dynamic negative scale tracks its probability from eps(∅).")
    if not settings.needs_empty():
        return None
    extras = " (and the extra negatives)" if len(settings.negatives) > 1 else ""
    return connect_empty(node, f"with cfg {format_number(settings.cfg)} and neg_scale "
                               f"{format_number(settings.main.scale)} over this window{extras} the formula uses "
                               "eps(∅). Only the ordinary negative prompt (neg_scale = cfg - 1, or -1, over the whole "
                               "run) works without it.")


def inputs_problem(node: str, cfg, neg_scale, neg_start, neg_end, window_unit, ramp, ramp_width,
                   empty_connected: bool | None, *, follows_cfg: bool = True) -> str | None:
    """The first problem with one negative's inputs as the node shows them, or None. Any value may be None (not
    known, as a linked value is to the graph) and is then not checked; `follows_cfg` False for ExtraNegative."""
    values = dict(zip(GUIDANCE_NUMBERS, (cfg, neg_scale, neg_start, neg_end, ramp_width)))
    problem = (numbers_problem(node, values, follows_cfg)
               or choice_problem(node, "window_unit", window_unit, schedule.WINDOW_UNITS)
               or choice_problem(node, "ramp", ramp, schedule.RAMPS))
    if problem:
        return problem
    if neg_start is not None and neg_end is not None and neg_start > neg_end:
        return (f"{node}: neg_start ({format_number(neg_start)}) must not be greater than neg_end "
                f"({format_number(neg_end)}); the negative acts from neg_start to neg_end.")
    if None in (neg_start, neg_end, ramp, ramp_width):
        return None
    # The edges compared as sampling will compare them: exactly for timestep_percent (NegativeTerm sets that).
    term = schedule.NegativeTerm.main(neg_scale if neg_scale is not None else 0.0,
                                      schedule.Window(neg_start, neg_end, ramp, ramp_width), window_unit or "steps")
    window = term.window
    fades = int(window.fades_in) + int(window.fades_out)
    if fades and fades * ramp_width > (neg_end - neg_start) + schedule.EDGE_TOLERANCE:
        return (f"{node}: ramp_width ({format_number(ramp_width)}) is too wide for the window "
                f"{format_number(neg_start)}-{format_number(neg_end)}: its {fades} ramp(s) need "
                f"{format_number(fades * ramp_width)} of it. Narrow the ramp or widen the window.")
    if empty_connected is False and None not in (cfg, neg_scale):
        return empty_problem(node, schedule.GuidanceSettings(cfg, (term,)))
    return None


def _term_problem(node: str, cfg, term: schedule.NegativeTerm, follows_cfg: bool) -> str | None:
    window = term.window
    return inputs_problem(node, cfg, term.scale, window.start, window.end, term.window_unit, window.ramp,
                          window.ramp_width, None, follows_cfg=follows_cfg)


def dynamic_problem(node: str, settings) -> str | None:
    """A Dynamic Negative Scale's settings (a dynamic.DynamicNegative)."""
    values = {name: getattr(settings, name) for name in DYNAMIC_NUMBERS}
    problem = numbers_problem(node, values)
    if problem:
        return problem
    if settings.prior > settings.p_max:
        return f"{node}: prior ({format_number(settings.prior)}) must not be greater than p_max " \
               f"({format_number(settings.p_max)})."
    return None


def problem(node: str, settings, empty_connected: bool | None = None) -> str | None:
    """The first problem with a node's settings, as a sentence naming the node and the input, or None.

    Args:
        node: the node to name, as `node_name` writes it (an extra negative is named EXTRA_NEGATIVE_NODE).
        settings: a GuidanceSettings (every negative, main first), a NegativeTerm (one ExtraNegative node's), or a
            DynamicNegative.
        empty_connected: whether ∅ is connected; None where that is not known yet (the patch node, whose cfg is
            the sampler's).
    """
    if isinstance(settings, schedule.NegativeTerm):
        return _term_problem(node, None, settings, follows_cfg=False)
    if not isinstance(settings, schedule.GuidanceSettings):
        return dynamic_problem(node, settings)
    main, *extras = settings.negatives
    found = _term_problem(node, settings.cfg, main, follows_cfg=True)
    for term in extras:
        found = found or _term_problem(EXTRA_NEGATIVE_NODE, None, term, follows_cfg=False)
    if found or empty_connected is not False:
        return found
    return empty_problem(node, settings)
