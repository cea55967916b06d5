"""The guidance trace: what the negative prompt did at every model evaluation of a sampling run.

A `GuidanceTrace` is the handle a graph passes around (NegativeGuidanceTrace node → the `trace` input of
NegativeGuidance / NegativeGuidanceGuider). When sampling starts, `GuidancePlan.begin_run` calls
`trace.start_run(settings, sigmas)` and gets a `RunRecorder`, which `guidance.combine` calls once per model
evaluation with the predictions it already computed. The recorder only reads those tensors (in float64 copies),
so recording cannot change the sampled result; without a trace no recorder exists and nothing is computed.
While sampling, the recorder only queues a few reductions on the model's device and never converts a number to
Python (that would make the CPU wait for the GPU at every evaluation); a run's numbers cross to the host in one
transfer when the run is first read.

Units. ComfyUI hands guidance the model's *denoised* predictions D (x₀ space). The noise prediction any model
implies is eps = (x − D)/σ, so a difference of two noise predictions is −ΔD/σ: the norms below are ‖ΔD‖/σ,
i.e. in noise units, whatever the model's parameterisation (eps, v, flow). Cosines and ratios do not depend on
the unit. Every metric is computed per sample of the batch and averaged over the batch (a batch of one: plain).

What is recorded when a prediction was not evaluated (the pack skips a conditioning whose coefficient is zero):
- ∅ not evaluated (the ordinary negative prompt, s⁻ = s⁺ − 1 over the run): eps(y) − eps(∅) and eps(ỹ) − eps(∅)
  are unknown, so `positive_norm`, `negative_norm`, `cosine` and `ratio` are None; `cond_minus_negative_norm`
  = ‖eps(y) − eps(ỹ)‖ (the direction equation 9 guides along) is recorded instead.
- ỹ not evaluated (outside its window, or s⁻ = 0): the negative term is exactly zero, so `ratio` is 0.0, and
  `negative_norm` and `cosine` are None.
- y not evaluated (s⁺ = 0): `positive_norm`, `cosine` and `ratio` are None.
"""

from __future__ import annotations

import json
import math
import weakref
from collections import deque
from dataclasses import asdict, dataclass, field

import torch

from . import log, schedule

# A handle keeps this many runs (the newest last): a graph re-queued many times keeps re-using the same handle.
MAX_RUNS = 16


@dataclass(frozen=True)
class EvaluationRecord:
    """One model evaluation (a second-order sampler makes two or more per step)."""

    index: int  # evaluation number in the run, from 0
    step: int  # the step it belongs to, numbered from 1 (schedule.step_number)
    sigma: float
    cond_scale: float  # s⁺
    negative_scales: tuple  # sᵢ·wᵢ(t), main negative first
    evaluated: tuple  # names of the conditionings evaluated ("positive", "negative", "empty", "extra_negative_1"...)
    passes: int  # how many conditionings went through the model: len(evaluated), plus the divergence probe's
    positive_norm: float | None  # ‖eps(y) − eps(∅)‖
    negative_norm: float | None  # ‖eps(ỹ) − eps(∅)‖, main negative
    cosine: float | None  # cos(eps(y) − eps(∅), eps(ỹ) − eps(∅))
    ratio: float | None  # ‖Σᵢ sᵢ(eps(ỹᵢ) − eps(∅))‖ / ‖s⁺(eps(y) − eps(∅))‖
    cond_minus_negative_norm: float | None  # ‖eps(y) − eps(ỹ)‖
    # Dynamic negatives, per negative (main first; None for one with a constant scale): p and sᵢ·wᵢ(t) of every
    # sample of the batch. negative_scales then holds the batch mean of sᵢ·wᵢ(t).
    dynamic_p: tuple = ()
    dynamic_scales: tuple = ()

    @property
    def negative_scale(self) -> float:
        return self.negative_scales[0]


@dataclass(eq=False, kw_only=True)
class DeferredRun:
    """One sampling run whose numbers stay on the model's device while it samples: `pending` holds them, and the
    first read of `evaluations` brings everything recorded since the last read to the host in one transfer, so
    recording never makes the CPU wait for the GPU (the trace's and the probe's runs)."""

    sigmas: list
    prompt_id: str | None = None  # the ComfyUI prompt it was sampled in (None outside a prompt)
    pending: list = field(default_factory=list, repr=False)  # not yet read
    recorded: list = field(default_factory=list, repr=False)  # read: host values

    @property
    def evaluations(self) -> list:
        """The evaluations in order."""
        if self.pending:
            pending, self.pending = self.pending, []
            self.recorded.extend(self._finish(pending))
        return self.recorded

    def _finish(self, pending: list) -> list:
        raise NotImplementedError


@dataclass(eq=False, kw_only=True)
class RunRecord(DeferredRun):
    """One sampling run of the guidance: its settings, scheduled sigmas and the evaluations (EvaluationRecord)."""

    cfg: float
    # Per negative, main first: {"scale": sᵢ ("follow cfg" resolved; None for a dynamic one, whose scale is per
    # sample: dynamic_scales), "follows_cfg", "window": {start, end, ramp, ramp_width}, "window_unit", "dynamic"}.
    negatives: tuple

    @classmethod
    def of(cls, settings: schedule.GuidanceSettings, sigmas: list, prompt_id=None) -> "RunRecord":
        negatives = tuple({"scale": float(s) if term.dynamic is None else None, "follows_cfg": term.follows_cfg,
                           "window": {"start": term.window.start, "end": term.window.end, "ramp": term.window.ramp,
                                      "ramp_width": term.window.ramp_width},
                           "window_unit": term.window_unit, "dynamic": term.dynamic is not None}
                          for term, s in zip(settings.negatives, settings.scales))
        return cls(cfg=float(settings.cfg), negatives=negatives, sigmas=[float(s) for s in sigmas],
                   prompt_id=prompt_id)

    # The main negative's, as the JSON has always had them at its top level.
    @property
    def neg_scale(self) -> float | None:
        return self.negatives[0]["scale"]

    @property
    def window(self) -> dict:
        return self.negatives[0]["window"]

    @property
    def window_unit(self) -> str:
        return self.negatives[0]["window_unit"]

    def _finish(self, pending: list) -> list:
        return finish(pending, self.sigmas, len(self.recorded))

    def to_dict(self) -> dict:
        return {"cfg": self.cfg, "neg_scale": self.neg_scale, "window": self.window, "window_unit": self.window_unit,
                "extra_negatives": len(self.negatives) - 1, "negatives": list(self.negatives), "sigmas": self.sigmas,
                "evaluations": [asdict(e) for e in self.evaluations]}


def _per_sample(t: torch.Tensor) -> torch.Tensor:
    # float64 where the device has it (MPS has no float64).
    dtype = torch.float32 if t.device.type == "mps" else torch.float64
    return t.detach().to(dtype).reshape(t.shape[0], -1)


def mean(values: list) -> float | None:
    """The plain mean of host numbers; None for none (a probe branch that was never evaluated)."""
    return sum(values) / len(values) if values else None


@dataclass
class PendingEvaluation:
    """One evaluation as recorded during sampling: the host-side facts, and the per-sample sums as tensors on the
    model's device. Nothing is converted to a Python number while sampling (each conversion would make the CPU
    wait for the GPU); `RunRecord` converts all pending evaluations of a run at once, when they are first read."""

    cond_scale: float
    negative_scales: tuple
    evaluated: tuple
    probe_passes: int  # conditionings in the divergence probe's extra forward (0 without it)
    # name -> per-sample tensor (batch,), in D units (not divided by sigma):
    #   sigma, cond_minus_negative, positive, negative, dot, negative_term
    tensors: dict


def measure(coefficients, evaluated: tuple, timestep, cond_pred, negative_preds: list, empty_pred,
            dynamic: tuple = (), probe_passes: int = 0) -> PendingEvaluation:
    """The per-sample sums of one evaluation from the predictions `guidance.combine` computed (never modified), on
    their device; a prediction that was not evaluated is None. Norms are taken of the denoised differences ΔD;
    `finish` divides them by sigma (eps units)."""
    c = _per_sample(cond_pred) if cond_pred is not None else None
    negatives = [_per_sample(p) if p is not None else None for p in negative_preds]
    e = _per_sample(empty_pred) if empty_pred is not None else None
    n = negatives[0]

    reference = next(t for t in (c, n, e) if t is not None)
    tensors = {"sigma": timestep.detach().reshape(-1)[:1].to(reference)}
    if c is not None and n is not None:
        tensors["cond_minus_negative"] = (c - n).norm(dim=1)
    if e is not None:
        positive_delta = c - e if c is not None else None
        negative_delta = n - e if n is not None else None
        if positive_delta is not None:
            tensors["positive"] = positive_delta.norm(dim=1)
        if negative_delta is not None:
            tensors["negative"] = negative_delta.norm(dim=1)
        if positive_delta is not None and negative_delta is not None:
            tensors["dot"] = (positive_delta * negative_delta).sum(dim=1)
        if positive_delta is not None:
            negative_term = torch.zeros_like(positive_delta)
            scales = [s if not dynamic or dynamic[i] is None else dynamic[i][1].to(positive_delta)[:, None]
                      for i, s in enumerate(coefficients.negatives)]
            for s, prediction in zip(scales, negatives):
                if prediction is not None:
                    negative_term = negative_term + s * (prediction - e)
            tensors["negative_term"] = negative_term.norm(dim=1)
    for i, entry in enumerate(dynamic):
        if entry is not None:
            tensors[f"dynamic_p_{i}"] = entry[0].detach().to(reference)
            tensors[f"dynamic_scale_{i}"] = entry[1].detach().to(reference)
    return PendingEvaluation(cond_scale=float(coefficients.cond_scale),
                             negative_scales=tuple(float(s) for s in coefficients.negatives), evaluated=evaluated,
                             probe_passes=probe_passes, tensors=tensors)


def finish(pending: list, sigmas: list, first_index: int) -> list:
    """EvaluationRecords of pending evaluations: every number of them crosses to the host in one transfer."""
    if not pending:
        return []
    flat = [t.reshape(-1) for p in pending for t in p.tensors.values()]
    device = flat[0].device
    values = torch.cat([t.to(device) for t in flat]).tolist()  # the one host-device synchronisation
    records, at = [], 0
    for offset, p in enumerate(pending):
        sums = {}
        for name, t in p.tensors.items():
            sums[name] = values[at:at + t.numel()]
            at += t.numel()
        records.append(_record(first_index + offset, sigmas, p, sums))
    return records


def _record(index: int, sigmas: list, p: PendingEvaluation, sums: dict) -> EvaluationRecord:
    sigma = sums["sigma"][0]
    scale = 1.0 / sigma if sigma > 0 else 1.0  # D → eps units (eps = (x − D)/σ; the sign drops out of norms)
    positive, negative = sums.get("positive"), sums.get("negative")
    cosine = ratio = None
    if "dot" in sums and all(v != 0 for v in positive) and all(v != 0 for v in negative):
        cosine = mean([d / (a * b) for d, a, b in zip(sums["dot"], positive, negative)])
    if "negative_term" in sums:
        bottom = [abs(p.cond_scale) * v for v in positive]
        if all(v != 0 for v in bottom):
            ratio = mean([t / b for t, b in zip(sums["negative_term"], bottom)])
    terms = range(len(p.negative_scales))
    dynamic_p = tuple(sums.get(f"dynamic_p_{i}") for i in terms)
    dynamic_scales = tuple(sums.get(f"dynamic_scale_{i}") for i in terms)
    negative_scales = tuple(mean(d) if d is not None else s for s, d in zip(p.negative_scales, dynamic_scales))
    if not any(d is not None for d in dynamic_p):
        dynamic_p = dynamic_scales = ()
    return EvaluationRecord(
        index=index, step=schedule.step_number(sigmas, sigma), sigma=sigma, cond_scale=p.cond_scale,
        negative_scales=negative_scales, evaluated=p.evaluated, passes=len(p.evaluated) + p.probe_passes,
        dynamic_p=dynamic_p, dynamic_scales=dynamic_scales,
        positive_norm=mean(positive) * scale if positive is not None else None,
        negative_norm=mean(negative) * scale if negative is not None else None,
        cosine=cosine, ratio=ratio,
        cond_minus_negative_norm=(mean(sums["cond_minus_negative"]) * scale
                                  if "cond_minus_negative" in sums else None))


class RunRecorder:
    """The observer of one run: `guidance.combine` calls it once per model evaluation. It only queues device
    work; the numbers reach the host when the run is read (`RunRecord.evaluations`)."""

    def __init__(self, record: RunRecord):
        self.record = record

    def __call__(self, timestep, coefficients, evaluated, cond_pred, negative_preds, empty_pred, dynamic=(),
                 probe_passes=0):
        self.record.pending.append(measure(coefficients, evaluated, timestep, cond_pred, negative_preds, empty_pred,
                                           dynamic, probe_passes))


def executing_prompt() -> str | None:
    """The id of the ComfyUI prompt being executed, or None outside one (direct calls)."""
    try:
        from comfy_execution.utils import get_executing_context
    except ImportError:  # a ComfyUI without execution contexts
        return None
    context = get_executing_context()
    return context.prompt_id if context is not None else None


class RunStore:
    """The runs a handle (the guidance trace, the r_t probe) has recorded, the newest MAX_RUNS, and which of them a
    plot may show. ComfyUI caches an input-less handle node, so one handle outlives many queued prompts: every run is
    stamped with the prompt it was sampled in, and `run_for` gives a plot only a run of the sampling it follows."""

    JSON_ALLOWS_NAN = False

    def __init__(self):
        self.runs: deque = deque(maxlen=MAX_RUNS)
        self.shown = LatentRuns()

    def add_run(self, run):
        self.runs.append(run)
        log.debug("%s: run %d started, %d sigmas", type(self).__name__, len(self.runs), len(run.sigmas))
        return run

    @property
    def last_run(self):
        return self.runs[-1] if self.runs else None

    def run_for(self, latent):
        """The newest run sampled in the prompt now executing (the sampling this plot follows ran in it), else the
        run already shown for this very latent (ComfyUI re-ran the plot on a cached sampler output), else None: an
        older run belongs to another sampling and is never shown."""
        prompt_id = executing_prompt()
        current = [run for run in self.runs if run.prompt_id == prompt_id]
        run = current[-1] if current else self.shown.get(latent)
        if run is not None:
            self.shown.remember(latent, run)
        return run

    def payload(self, run) -> dict | None:
        return run.to_dict() if run is not None else None

    def to_json(self, run=None) -> str:
        return json.dumps(self.payload(run if run is not None else self.last_run), indent=1,
                          allow_nan=self.JSON_ALLOWS_NAN, default=lambda value: None)


class GuidanceTrace(RunStore):
    """The handle a graph passes from NegativeGuidanceTrace to the guidance node and on to the plot node."""

    def start_run(self, settings: schedule.GuidanceSettings, sigmas: list) -> RunRecorder:
        """`sigmas`: the run's sigmas as host numbers."""
        return RunRecorder(self.add_run(RunRecord.of(settings, sigmas, executing_prompt())))


class LatentRuns:
    """The runs a plot has shown, by the latent it showed them for (held weakly: a latent ComfyUI no longer
    caches cannot come back)."""

    def __init__(self):
        self._runs = {}

    def remember(self, latent, run):
        samples = _samples(latent)
        if samples is None:
            return
        self._runs = {key: (ref, r) for key, (ref, r) in self._runs.items() if ref() is not None}
        self._runs[id(samples)] = (weakref.ref(samples), run)

    def get(self, latent):
        samples = _samples(latent)
        ref, run = self._runs.get(id(samples), (None, None))
        return run if ref is not None and ref() is samples else None


def _samples(latent):
    samples = latent.get("samples") if isinstance(latent, dict) else None
    return samples if isinstance(samples, torch.Tensor) else None


def _finite(values):
    return [v if v is not None and math.isfinite(v) else float("nan") for v in values]


def render_run(run: RunRecord, x_axis: str = "step", width: int = 900, height: int = 720):
    """The run as a three-panel figure (matplotlib, Agg canvas, no pyplot state): an IMAGE tensor (1, H, W, 3)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    evaluations = run.evaluations
    if x_axis == "sigma":
        xs = [e.sigma for e in evaluations]
        x_label = "sigma (noisy → clean)"
    else:
        xs = [schedule.step_position(run.sigmas, e.sigma) for e in evaluations]
        x_label = "step (1 = first)"
    dpi = 100
    figure = Figure(figsize=(width / dpi, height / dpi), dpi=dpi)
    canvas = FigureCanvasAgg(figure)
    dynamic = any(e.dynamic_p for e in evaluations)
    panels = figure.subplots(4 if dynamic else 3, 1, sharex=True)
    top, middle, bottom = panels[:3]

    top.step(xs, [e.cond_scale for e in evaluations], where="post", label="s⁺ (cfg)", color="tab:blue")
    top.step(xs, [e.negative_scale for e in evaluations], where="post", label="s⁻·w(t)", color="tab:red")
    for i in range(1, max((len(e.negative_scales) for e in evaluations), default=1)):
        top.step(xs, [e.negative_scales[i] if i < len(e.negative_scales) else 0.0 for e in evaluations],
                 where="post", label=f"extra negative {i}", linestyle="--")
    top.set_ylabel("scale")
    # A dynamic main negative's scale is per sample (the fourth panel).
    neg_scale = "dynamic" if run.neg_scale is None else f"{run.neg_scale:g}"
    top.set_title(f"Negative guidance trace: cfg {run.cfg:g}, neg_scale {neg_scale}, "
                  f"window {run.window['start']:g}-{run.window['end']:g} ({run.window_unit})")
    passes = top.twinx()
    passes.plot(xs, [e.passes for e in evaluations], "k.", markersize=3, label="passes")
    passes.set_ylabel("passes")
    passes.set_ylim(0, max([4, *(e.passes for e in evaluations)]) + 0.5)
    lines, labels = top.get_legend_handles_labels()
    more_lines, more_labels = passes.get_legend_handles_labels()
    top.legend(lines + more_lines, labels + more_labels, loc="upper right", fontsize=8)

    middle.plot(xs, _finite(e.positive_norm for e in evaluations), label="‖eps(y) − eps(∅)‖", color="tab:blue")
    middle.plot(xs, _finite(e.negative_norm for e in evaluations), label="‖eps(ỹ) − eps(∅)‖", color="tab:red")
    middle.plot(xs, _finite(e.cond_minus_negative_norm for e in evaluations), label="‖eps(y) − eps(ỹ)‖",
                color="tab:gray", linestyle=":")
    middle.set_ylabel("norm (noise units)")
    middle.legend(loc="upper right", fontsize=8)

    bottom.plot(xs, _finite(e.ratio for e in evaluations), label="negative term / positive term", color="tab:purple")
    bottom.plot(xs, _finite(e.cosine for e in evaluations), label="cosine", color="tab:green")
    bottom.axhline(0.0, color="black", linewidth=0.5)
    bottom.set_ylabel("ratio, cosine")
    bottom.set_xlabel(x_label)
    bottom.legend(loc="upper right", fontsize=8)
    if dynamic:
        bottom.set_xlabel("")
        _dynamic_panel(panels[3], xs, evaluations)
        panels[3].set_xlabel(x_label)
    if x_axis == "sigma":
        bottom.set_xscale("log")
        bottom.invert_xaxis()
    if not any(e.positive_norm is not None for e in evaluations) and evaluations:
        middle.text(0.5, 0.5, "∅ not evaluated (ordinary negative prompt): only ‖eps(y) − eps(ỹ)‖ is known",
                    transform=middle.transAxes, ha="center", fontsize=9)
    figure.tight_layout()
    return figure_to_image(canvas)


def _dynamic_panel(ax, xs, evaluations):
    """p and s⁻·w(t) of each dynamic negative: batch mean, and the band from the smallest to the largest sample."""
    terms = max(len(e.dynamic_p) for e in evaluations)
    scales_axis = ax.twinx()
    for i in range(terms):
        name = "negative" if i == 0 else f"extra negative {i}"
        rows = [(x, e.dynamic_p[i], e.dynamic_scales[i]) for x, e in zip(xs, evaluations)
                if i < len(e.dynamic_p) and e.dynamic_p[i] is not None]
        if not rows:
            continue
        at = [r[0] for r in rows]
        for axis, values, colour, label in ((ax, [r[1] for r in rows], "tab:orange", f"p ({name})"),
                                            (scales_axis, [r[2] for r in rows], "tab:red", f"s⁻·w ({name})")):
            axis.plot(at, [mean(v) for v in values], color=colour, label=label + ", mean",
                      linestyle="-" if i == 0 else "--")
            axis.fill_between(at, [min(v) for v in values], [max(v) for v in values], color=colour, alpha=0.15)
    ax.set_ylim(0.0, 1.0)
    ax.set_ylabel("p (min–max band)")
    scales_axis.set_ylabel("s⁻·w(t) per sample")
    lines, labels = ax.get_legend_handles_labels()
    more_lines, more_labels = scales_axis.get_legend_handles_labels()
    ax.legend(lines + more_lines, labels + more_labels, loc="upper right", fontsize=8)


def figure_to_image(canvas) -> torch.Tensor:
    import numpy as np

    canvas.draw()
    rgba = np.asarray(canvas.buffer_rgba(), dtype=np.float32)
    return torch.from_numpy(rgba[..., :3].copy() / 255.0).unsqueeze(0)


