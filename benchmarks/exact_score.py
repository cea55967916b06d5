"""Exact-score benchmark: the pack's nodes and ComfyUI's own samplers on a model whose true answer is known.

The model is a 2-D mixture of four isotropic Gaussians at (±2, ±2), each with standard deviation σ_data = 0.3,
registered as a real ComfyUI model (comfy.model_base.BaseModel with EDM preconditioning and
ModelSamplingContinuousEDM, wrapped in a ModelPatcher), so KSampler, SamplerCustomAdvanced, NegativeGuidance and
NegativeGuidanceGuider run on it unchanged. Its "diffusion model" returns the *exact* conditional denoiser of the
mixture: a conditioning ("concept") is a (1, 1, K + 1) c_crossattn tensor holding the concept's weight on each of
the K modes (and a style flag, see the robustness toy),

    positive y  = x > 0      → modes (2, 2), (2, −2)
    negative ỹ  = y > 0      → modes (2, 2), (−2, 2)
    empty    ∅  = everything → all four modes

A latent is (N, 2, 1, 1): one 2-D point per batch entry. Sampling: 32-step Heun on the EDM (karras) schedule,
σ 80 → 0.002, every setting from the same seed (the same initial noise).

Reported per setting: forbidden mass (share of samples with y > 0, the negative concept) and off-manifold mass
(share of samples more than 3σ of its mode from every mode); for the dynamic negative also the positive fidelity
(share with x > 0).

Variants (the dynamic-negative tables):
- flow: the same mixture as a rectified-flow model (ModelSamplingDiscreteFlow, CONST: x = (1 − σ)x₀ + σ·noise),
  32 steps on the "simple" schedule σ 1 → 0;
- asymmetric: five modes with unequal weights and spreads; one wanted mode only half inside the negative concept
  (see ASYMMETRIC);
- robust: the four Gaussians embedded in 1024 extra concept-free dimensions (N(0, 0.5²) each), with i.i.d. error
  0.003 per dimension on every noise prediction and a constant "style" bias of 0.003 per extra dimension on the
  negative's noise prediction.

    scripts/host.sh python benchmarks/exact_score.py            # 20 000 samples, writes the docs
    scripts/host.sh python benchmarks/exact_score.py --samples 2000 --no-write
"""

from __future__ import annotations

import argparse
import functools
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

PACK_ROOT = Path(__file__).resolve().parents[1]
if str(PACK_ROOT / "tests") not in sys.path:
    sys.path.insert(0, str(PACK_ROOT / "tests"))

import support  # noqa: E402  (tests/support.py: boots ComfyUI on the CPU, loads the pack as ComfyUI does)

MODES = ((2.0, 2.0), (2.0, -2.0), (-2.0, 2.0), (-2.0, -2.0))
MODE_STD = 0.3  # σ_data of each Gaussian
CONCEPTS = {"positive": (1.0, 1.0, 0.0, 0.0), "negative": (1.0, 0.0, 1.0, 0.0), "empty": (1.0, 1.0, 1.0, 1.0)}
SIGMA_MIN, SIGMA_MAX = 0.002, 80.0
EDM_SIGMA_DATA = 0.5  # the EDM preconditioning's σ_data (c_skip, c_out, c_in); any value gives the same denoiser
STEPS, SAMPLER, SCHEDULER = 32, "heun", "karras"
FLOW_SCHEDULER = "simple"
OFF_MANIFOLD = 3.0 * MODE_STD
SAMPLERS = ("heun", "euler", "euler_ancestral", "dpmpp_2m", "dpmpp_sde")


@dataclass(frozen=True)
class Toy:
    """A Gaussian mixture with concepts as weights on its modes (a fractional weight: the concept holds that share
    of the mode's data), possibly embedded in extra dimensions, possibly with prediction error."""

    name: str
    modes: tuple
    stds: tuple
    weights: tuple  # π_k of the data
    concepts: dict  # name → membership of each mode in [0, 1]
    forbidden: str = "upper half"  # "upper half": y > 0; "nearest": nearest mode (in its stds) fully negative
    flow: bool = False
    extra_dims: int = 0
    extra_std: float = 0.5
    prediction_noise: float = 0.0  # i.i.d. per dimension, on every noise prediction ε
    negative_bias: float = 0.0  # per extra dimension, on the negative's ε (a fixed ± pattern)

    @property
    def dims(self) -> int:
        return len(self.modes[0]) + self.extra_dims

    def concept_weights(self, name: str) -> tuple:
        return tuple(w * m for w, m in zip(self.weights, self.concepts[name]))


FOUR = Toy("four Gaussians (EDM)", MODES, (MODE_STD,) * 4, (1.0,) * 4, CONCEPTS)
FLOW = Toy("four Gaussians (flow)", MODES, (MODE_STD,) * 4, (1.0,) * 4, CONCEPTS, flow=True)
# Five modes, unequal weights and spreads. Wanted: x > 0 = A, B, E. The negative covers A and C fully and E only
# half (half of E's data has the concept): the target p(x | y, ¬ỹ) keeps B and half of E (B 0.78, E 0.22).
ASYMMETRIC = Toy(
    "asymmetric five modes (EDM)",
    modes=((2.0, 2.0), (2.0, -2.0), (-2.0, 2.0), (-2.0, -2.0), (3.0, 0.0)),  # A, B, C, D, E
    stds=(0.3, 0.5, 0.3, 0.4, 0.4),
    weights=(0.15, 0.35, 0.2, 0.1, 0.2),
    concepts={"positive": (1.0, 1.0, 0.0, 0.0, 1.0), "negative": (1.0, 0.0, 1.0, 0.0, 0.5),
              "empty": (1.0, 1.0, 1.0, 1.0, 1.0)},
    forbidden="nearest")
PARTIAL_MODE = 4  # E
ROBUST = Toy("four Gaussians + 1024 dims, error 0.003, style bias 0.003 (EDM)", MODES, (MODE_STD,) * 4, (1.0,) * 4,
             CONCEPTS, extra_dims=1024, prediction_noise=0.003, negative_bias=0.003)


# ---- the model ----

def make_denoiser_class(toy: Toy = FOUR):
    import torch

    class GaussianMixtureDenoiser(torch.nn.Module):
        """Exact E[x₀ | x, σ, concept] of the mixture, returned as the model output ComfyUI expects."""

        def __init__(self, **kwargs):
            super().__init__()
            self.register_buffer("modes", torch.tensor(toy.modes, dtype=torch.float64))
            self.register_buffer("stds", torch.tensor(toy.stds, dtype=torch.float64))
            self.dtype = torch.float32
            self.calls = 0
            generator = torch.Generator().manual_seed(12345)
            self.style = (torch.randint(0, 2, (toy.extra_dims,), generator=generator) * 2 - 1).to(torch.float64)

        def forward(self, x, timesteps, context=None, transformer_options={}, **kwargs):
            sigma = transformer_options["sigmas"].to(torch.float64).reshape(-1, 1)  # exact σ of each row
            if sigma.shape[0] != x.shape[0]:  # one σ per chunk row; calc_cond_batch stacks the chunks
                sigma = sigma.repeat(x.shape[0] // sigma.shape[0], 1)
            context = context.to(torch.float64).reshape(x.shape[0], -1)
            weights, styled = context[:, :len(toy.modes)], context[:, len(toy.modes)]
            flat = x.to(torch.float64).reshape(x.shape[0], -1)
            if toy.flow:
                # ComfyUI hands over x = (1 − σ)x₀ + σ·noise: variance-exploding units are x/(1 − σ), σ/(1 − σ).
                flow_sigma = sigma.clamp_max(1.0 - 1e-7)
                points, ve_sigma = flat / (1.0 - flow_sigma), flow_sigma / (1.0 - flow_sigma)
            else:
                # ComfyUI hands over c_in·x = x / √(σ² + σ_d²): undo it.
                scale = (sigma ** 2 + EDM_SIGMA_DATA ** 2).sqrt()
                points, ve_sigma = flat * scale, sigma
            denoised = self.denoise(points, ve_sigma, weights, styled)
            if toy.flow:
                out = (flat - denoised) / sigma.clamp_min(1e-12)  # CONST: D = x − out·σ
            else:
                c_skip = EDM_SIGMA_DATA ** 2 / scale ** 2
                c_out = sigma * EDM_SIGMA_DATA / scale
                out = (denoised - c_skip * points) / c_out
            return out.reshape(x.shape).to(x.dtype)

        def denoise(self, points, sigma, weights, styled):
            plane = len(toy.modes[0])
            denoised = torch.empty_like(points)
            denoised[:, :plane] = exact_denoiser(points[:, :plane], sigma, weights, self.modes, self.stds)
            if toy.extra_dims:
                shrink = toy.extra_std ** 2 / (toy.extra_std ** 2 + sigma ** 2)
                denoised[:, plane:] = shrink * points[:, plane:]
            # Model error, in noise-prediction units: ε → ε + error, i.e. D → D − σ·error.
            if toy.prediction_noise:
                self.calls += 1
                generator = torch.Generator().manual_seed(self.calls)
                noise = torch.randn(points.shape, generator=generator, dtype=torch.float64)
                denoised -= sigma * toy.prediction_noise * noise
            if toy.negative_bias:
                denoised[:, plane:] -= sigma * styled[:, None] * toy.negative_bias * self.style[None]
            return denoised

    return GaussianMixtureDenoiser


def exact_denoiser(points, sigma, weights, modes, stds=None):
    """E[x₀ | x_σ = x] for a mixture of N(μ_k, s_k²I) with weights π_k: Σ_k γ_k(x)·(μ_k + s_k²/(s_k²+σ²)(x − μ_k))."""
    import torch

    if stds is None:
        stds = torch.full((modes.shape[0],), MODE_STD, dtype=modes.dtype)
    variance = stds[None, :] ** 2 + sigma ** 2  # (N, K)
    offsets = points[:, None, :] - modes[None, :, :]  # (N, K, 2)
    log_w = torch.log(weights.clamp_min(0.0)) - (offsets ** 2).sum(-1) / (2 * variance)
    if not bool((stds == stds[0]).all()):  # equal spreads: the normalisation is the same for every mode
        log_w = log_w - 0.5 * modes.shape[1] * torch.log(variance)
    responsibilities = torch.softmax(log_w, dim=1)  # (N, K)
    posterior_means = modes[None] + (stds[None, :] ** 2 / variance)[:, :, None] * offsets
    return (responsibilities[:, :, None] * posterior_means).sum(1)


def build_model(toy: Toy = FOUR):
    """The mixture as a ComfyUI model: BaseModel (EDM or flow) + ModelPatcher, CPU."""
    import torch
    import comfy.latent_formats
    import comfy.model_base
    import comfy.model_patcher
    import comfy.supported_models_base

    class PointLatent(comfy.latent_formats.LatentFormat):
        latent_channels = toy.dims

    class GaussianMixtureConfig(comfy.supported_models_base.BASE):
        unet_config = {"disable_unet_model_creation": True}
        unet_extra_config = {}
        sampling_settings = ({"shift": 1.0, "multiplier": 1000} if toy.flow else
                             {"sigma_min": SIGMA_MIN, "sigma_max": SIGMA_MAX, "sigma_data": EDM_SIGMA_DATA})
        latent_format = PointLatent
        memory_usage_factor = 1e-6  # keeps every conditioning of a step in one forward, as on a real model

    config = GaussianMixtureConfig({"disable_unet_model_creation": True})
    model_type = comfy.model_base.ModelType.FLOW if toy.flow else comfy.model_base.ModelType.EDM
    model = comfy.model_base.BaseModel(config, model_type, device=torch.device("cpu"))
    model.diffusion_model = make_denoiser_class(toy)()
    model.eval()
    return comfy.model_patcher.ModelPatcher(model, load_device=torch.device("cpu"), offload_device=torch.device("cpu"))


def concept(name: str, toy: Toy = FOUR) -> list:
    import torch

    style = 1.0 if name == "negative" else 0.0
    values = (*toy.concept_weights(name), style)
    return [[torch.tensor(values, dtype=torch.float32).reshape(1, 1, -1), {}]]


# ---- settings, sampled with ComfyUI's stock nodes and the pack's ----

@dataclass(frozen=True)
class Setting:
    label: str
    kind: str  # positive_only | ordinary | three_way | three_way_guider | dynamic
    cfg: float = 1.0
    neg_scale: float = 0.0
    start: float = 0.0
    end: float = 1.0
    panel: bool = True  # drawn in the figure
    sampler: str = SAMPLER
    toy: Toy = FOUR
    dynamic: object = None  # a dynamic.DynamicNegative for kind "dynamic"
    # kind "dynamic": more negatives through ExtraNegative nodes, each (concept name of the toy, neg_scale,
    # window start, window end, a dynamic.DynamicNegative or None for the constant neg_scale)
    extra_negatives: tuple = ()


SETTINGS = (
    Setting("positive only (BasicGuider)", "positive_only"),
    Setting("ordinary negative, cfg 1 (eq. 9)", "ordinary", cfg=1.0, panel=False),
    Setting("ordinary negative, cfg 3 (eq. 9)", "ordinary", cfg=3.0),
    Setting("ordinary negative, cfg 5 (eq. 9)", "ordinary", cfg=5.0, panel=False),
    Setting("three-way s⁺ 1, s⁻ 0.5", "three_way", neg_scale=0.5, panel=False),
    Setting("three-way s⁺ 1, s⁻ 1", "three_way", neg_scale=1.0),
    Setting("three-way s⁺ 1, s⁻ 1 (guider)", "three_way_guider", neg_scale=1.0, panel=False),
    Setting("three-way s⁺ 1, s⁻ 2", "three_way", neg_scale=2.0, panel=False),
    Setting("three-way s⁺ 1, s⁻ 3", "three_way", neg_scale=3.0),
    Setting("three-way s⁻ 3, early window 0-⅓", "three_way", neg_scale=3.0, start=0.0, end=1 / 3),
    Setting("three-way s⁻ 3, middle window ⅓-⅔", "three_way", neg_scale=3.0, start=1 / 3, end=2 / 3),
    Setting("three-way s⁻ 3, late window ⅔-1", "three_way", neg_scale=3.0, start=2 / 3, end=1.0),
)


def set_probe_step(step: float | None):
    """The ito-probe update's finite-difference step (× σ) for this process (None: the pack's PROBE_STEP)."""
    if step is not None:
        support.load_pack()
        support.pack_module("nodes.dynamic").PROBE_STEP = step


@functools.lru_cache(maxsize=None)
def dynamic_module():
    return support.load_pure_module("nodes/dynamic.py", "negguide_dynamic")


def dynamic_settings(toys=(FOUR, FLOW, ASYMMETRIC), samplers=SAMPLERS, **overrides):
    """The dynamic negative at the defaults (or with overrides), per toy and sampler."""
    dynamic = dynamic_module()
    settings = dynamic.DynamicNegative(**overrides)
    return tuple(Setting(f"dynamic ({toy.name}, {sampler})", "dynamic", sampler=sampler, toy=toy, dynamic=settings,
                         panel=sampler == SAMPLER)
                 for toy in toys for sampler in samplers)


def scheduler_for(toy: Toy) -> str:
    return FLOW_SCHEDULER if toy.flow else SCHEDULER


def sample(model, setting: Setting, samples: int, seed: int, keep=None):
    """(samples, dims) points from one setting, through the same nodes a workflow uses. `keep`, a list, receives
    a guidance trace of each dynamic run (p and s⁻ per sample and evaluation)."""
    import torch
    import nodes as comfy_nodes
    from comfy_extras import nodes_custom_sampler as custom

    guidance = support.pack_module("nodes.negative_guidance")
    toy = setting.toy
    latent = {"samples": torch.zeros(samples, toy.dims, 1, 1)}
    positive, negative, empty = (concept(name, toy) for name in ("positive", "negative", "empty"))
    scheduler = scheduler_for(toy)
    sigmas = custom.BasicScheduler.execute(model, scheduler, STEPS, 1.0).result[0]
    if setting.kind == "positive_only":
        guider = custom.BasicGuider.execute(model, positive).result[0]
    elif setting.kind == "three_way_guider":
        guider = guidance.NegativeGuidanceGuider.execute(model, positive, negative, setting.cfg, setting.neg_scale,
                                                         setting.start, setting.end, "steps", "hard", 0.0,
                                                         empty=empty).result[0]
    elif setting.kind == "dynamic":
        trace = None
        if keep is not None:
            trace = support.pack_module("nodes.trace").GuidanceTrace()
            keep.append(trace)
        extras = None
        for name, scale, start, end, dynamic in setting.extra_negatives:
            extras = guidance.ExtraNegative.execute(concept(name, toy), scale, start, end, "steps", "hard", 0.0,
                                                    extra_negatives=extras, dynamic=dynamic).result[0]
        guider = guidance.NegativeGuidanceGuider.execute(model, positive, negative, setting.cfg, 0.0, 0.0, 1.0,
                                                         "steps", "hard", 0.0, empty=empty, extra_negatives=extras,
                                                         trace=trace, dynamic=setting.dynamic).result[0]
    else:
        if setting.kind == "three_way":
            model = guidance.NegativeGuidance.execute(model, setting.neg_scale, setting.start, setting.end, "steps",
                                                      "hard", 0.0, empty=empty).result[0]
        out = comfy_nodes.KSampler().sample(model, seed, STEPS, setting.cfg, setting.sampler, scheduler, positive,
                                            negative, latent)[0]["samples"]
        return out.reshape(samples, -1)
    noise = custom.RandomNoise.execute(seed).result[0]
    sampler = custom.KSamplerSelect.execute(setting.sampler).result[0]
    out = custom.SamplerCustomAdvanced.execute(noise, guider, sampler, sigmas, latent).result[0]["samples"]
    return out.reshape(samples, -1)


def nearest_modes(points, toy: Toy):
    """(index of the nearest mode in units of its spread, whether that distance exceeds 3 spreads)."""
    import torch

    modes = torch.tensor(toy.modes, dtype=points.dtype)
    stds = torch.tensor(toy.stds, dtype=points.dtype)
    distance = (points[:, None, :2] - modes[None]).norm(dim=-1) / stds[None]
    nearest = distance.min(dim=1)
    return nearest.indices, nearest.values > 3.0


def masses(points, toy: Toy = FOUR) -> tuple:
    """(forbidden mass, off-manifold mass: > 3 spreads from every mode)."""
    nearest, off = nearest_modes(points, toy)
    if toy.forbidden == "upper half":
        forbidden = points[:, 1] > 0
    else:
        negative = toy.concepts["negative"]
        fully = [k for k, m in enumerate(negative) if m >= 1.0]
        forbidden = sum((nearest == k) & ~off for k in fully).bool()
    return float(forbidden.float().mean()), float(off.float().mean())


def positive_fidelity(points) -> float:
    """Share of samples in the positive concept's half-plane x > 0."""
    return float((points[:, 0] > 0).float().mean())


def partial_share(points, toy: Toy = ASYMMETRIC) -> float:
    """Share of samples on the partly covered mode E (target 0.22 of the samples, positive only 0.29)."""
    nearest, off = nearest_modes(points, toy)
    return float(((nearest == PARTIAL_MODE) & ~off).float().mean())


def run_all(samples: int, seed: int, settings=SETTINGS, keep=None):
    support.load_pack()
    models = {}
    results = []
    for setting in settings:
        if setting.toy.name not in models:
            models[setting.toy.name] = build_model(setting.toy)
        started = time.perf_counter()
        points = sample(models[setting.toy.name], setting, samples, seed, keep)
        forbidden, off = masses(points, setting.toy)
        results.append((setting, points, forbidden, off, time.perf_counter() - started))
    return results


# ---- output ----

def table(results, samples: int, seed: int) -> str:
    lines = [f"| setting | forbidden mass (y > 0) | off-manifold (> 3σ from every mode) |",
             "|---|---:|---:|"]
    for setting, _, forbidden, off, _ in results:
        lines.append(f"| {setting.label} | {forbidden:.3f} | {off:.3f} |")
    error = math.sqrt(0.25 / samples)
    lines.append("")
    lines.append(f"{samples} samples per setting, seed {seed} (the same initial noise for every row), {STEPS}-step "
                 f"{SAMPLER} on the EDM ({SCHEDULER}) schedule σ {SIGMA_MAX:g} → {SIGMA_MIN:g}; sampling error of a "
                 f"mass ≤ {error:.3f} (one standard error).")
    return "\n".join(lines)


def figure(results, path: Path, title: str = "Exact-score benchmark: want x > 0, avoid y > 0 (colour = nearest mode, "
                                                  "black = off-manifold, dashed = 3σ)"):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Circle
    import torch

    shown = [r for r in results if r[0].panel]
    columns = 4
    rows = math.ceil(len(shown) / columns)
    fig = Figure(figsize=(3.4 * columns, 3.9 * rows), dpi=110)
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, columns, squeeze=False)
    colours = ("tab:green", "tab:blue", "tab:red", "tab:orange", "tab:purple")  # (2,2) forbidden+wanted, (2,-2) wanted, ...
    for ax in axes.flat:
        ax.set_visible(False)
    for ax, (setting, points, forbidden, off, _) in zip(axes.flat, shown):
        toy = setting.toy
        ax.set_visible(True)
        points = points[:4000, :2].float()
        nearest, far = nearest_modes(points, toy)
        for k, colour in enumerate(colours[:len(toy.modes)]):
            chosen = (nearest == k) & ~far
            ax.scatter(points[chosen, 0], points[chosen, 1], s=1, color=colour, alpha=0.4, rasterized=True)
        ax.scatter(points[far, 0], points[far, 1], s=1, color="black", alpha=0.4, rasterized=True)
        ax.axhline(0, color="gray", linewidth=0.5)
        ax.axvline(0, color="gray", linewidth=0.5)
        # Off-manifold samples are pushed far from the modes: widen the view to hold 99.5 % of them.
        extent = min(max(4.5, float(points.abs().quantile(0.995)) * 1.1), 40.0)
        for mode, std in zip(toy.modes, toy.stds):
            ax.add_patch(Circle(mode, 3 * std, fill=False, color="gray", linewidth=0.6, linestyle="--"))
        ax.set_xlim(-extent, extent)
        ax.set_ylim(-extent, extent)
        ax.set_aspect("equal")
        ax.set_title(f"{setting.label}\nforbidden {forbidden:.3f}, off {off:.3f}", fontsize=8)
        ax.tick_params(labelsize=6)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)


UPDATE_LABELS = {"mixture": "this pack", "published": "published DNG", "ito": "Itô", "ito-probe": "Itô + probe"}


def robust_settings(samplers=("heun", "euler", "euler_ancestral"), errors=(0.003, 0.01),
                    methods=("mixture", "published")):
    """The dynamic negative at the defaults (`methods`: its updates), on the high-dimensional toy with model error."""
    from dataclasses import replace

    dynamic = dynamic_module()
    settings = []
    for error in errors:
        toy = replace(ROBUST, name=f"four Gaussians + 1024 dims, error {error:g}, style bias 0.003 (EDM)",
                      prediction_noise=error)
        for sampler in (samplers if error == errors[0] else samplers[:1]):
            for method in methods:
                settings.append(Setting(f"{UPDATE_LABELS[method]}, error {error:g}, {sampler}", "dynamic",
                                        sampler=sampler, toy=toy,
                                        dynamic=dynamic.DynamicNegative(method=method), panel=False))
    return tuple(settings)


def comparison_settings():
    """The README's side-by-side rows beside the constant scales and windows (four Gaussians, Heun): the positive
    prompt alone (same noise: the colours of the s⁻(t) figure), the published update, λ 1."""
    dynamic = dynamic_module()
    return (SETTINGS[0],
            Setting("dynamic, published DNG update (λ 2, prior 0.5, τ 1)", "dynamic",
                    dynamic=dynamic.DynamicNegative(method="published")),
            Setting("dynamic λ 1 (prior 0.5, τ 1)", "dynamic", dynamic=dynamic.DynamicNegative(strength=1.0)))


def summary(setting: Setting, points, forbidden, off) -> dict:
    """One row as plain data (kept between the parts of a long run)."""
    return {"label": setting.label, "toy": setting.toy.name, "sampler": setting.sampler, "forbidden": forbidden,
            "off": off, "fidelity": positive_fidelity(points),
            "partial": partial_share(points) if setting.toy is ASYMMETRIC else None,
            "method": setting.dynamic.method if setting.dynamic is not None else None,
            "error": setting.toy.prediction_noise, "points": points[:4000, :2].float().clone()}


def dynamic_table(rows) -> str:
    lines = ["| model | sampler | forbidden | off-manifold | positive fidelity (x > 0) | partly covered mode E |",
             "|---|---|---:|---:|---:|---:|"]
    for r in rows:
        partial = f"{r['partial']:.3f}" if r["partial"] is not None else ""
        lines.append(f"| {r['toy']} | {r['sampler']} | {r['forbidden']:.3f} | {r['off']:.3f} | {r['fidelity']:.3f} | "
                     f"{partial} |")
    return "\n".join(lines)


def comparison_table(rows) -> str:
    lines = ["| setting (four Gaussians, Heun) | forbidden | off-manifold | positive fidelity (x > 0) |",
             "|---|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['label']} | {r['forbidden']:.3f} | {r['off']:.3f} | {r['fidelity']:.3f} |")
    return "\n".join(lines)


def robust_table(rows) -> str:
    lines = ["| update | model error per dimension | sampler | forbidden | off-manifold |", "|---|---:|---|---:|---:|"]
    for r in rows:
        update = ("this pack (Tweedie ratio while σ ≥ 20, then mixture filter)" if r["method"] == "mixture"
                  else UPDATE_LABELS[r["method"]])
        lines.append(f"| {update} | {r['error']:g} | {r['sampler']} | {r['forbidden']:.3f} | {r['off']:.3f} |")
    return "\n".join(lines)


def scale_figure(trace, reference_points, toy: Toy, path: Path, shown: int = 80):
    """s⁻(t) and p(t) per sample for one run, coloured by the mode the same sample (same initial noise) reaches
    with the positive prompt alone."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    import torch

    evaluations = trace.last_run.evaluations
    sigmas = [e.sigma for e in evaluations]
    p = torch.tensor([e.dynamic_p[0][:shown] for e in evaluations])
    scale = torch.tensor([e.dynamic_scales[0][:shown] for e in evaluations])
    nearest, far = nearest_modes(reference_points[:shown, :2].float(), toy)
    colours = ("tab:green", "tab:blue", "tab:red", "tab:orange", "tab:purple")
    fig = Figure(figsize=(10, 6.5), dpi=100)
    FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1, sharex=True)
    for i in range(p.shape[1]):
        colour = "black" if bool(far[i]) else colours[int(nearest[i])]
        top.plot(sigmas, p[:, i], color=colour, alpha=0.35, linewidth=0.8)
        bottom.plot(sigmas, scale[:, i], color=colour, alpha=0.35, linewidth=0.8)
    top.set_ylabel("p = p(ỹ | x_t)")
    bottom.set_ylabel("s⁻(x, t) = λ·p/(1 − p)")
    bottom.set_yscale("symlog", linthresh=0.1)
    bottom.set_xlabel("sigma (noisy → clean)")
    for ax in (top, bottom):
        ax.set_xscale("log")
        ax.invert_xaxis()
    top.set_title(f"Dynamic negative, one run ({toy.name}, {SAMPLER}, defaults), {shown} samples. Colour: where the "
                  "same noise ends with the positive prompt alone\n(green: (2, 2), wanted but forbidden; blue: (2, −2), "
                  "wanted)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)


PARTS = ("four", "flow", "asymmetric", "robust")


def run_part(part: str, samples: int, robust_samples: int, seed: int, store: Path):
    """One part of the dynamic-negative tables (the parts can run side by side); rows saved under `store`."""
    import torch

    docs = PACK_ROOT / "docs"
    if part == "robust":
        results = run_all(robust_samples, seed, robust_settings())
    elif part == "robust-updates":  # every update side by side (docs/dynamic_negative.md), not in the assembled page
        results = run_all(robust_samples, seed, robust_settings(("heun", "euler_ancestral"), methods=tuple(
            UPDATE_LABELS)))
    else:
        toy = {"four": FOUR, "flow": FLOW, "asymmetric": ASYMMETRIC}[part]
        keep = []
        extra = comparison_settings() if toy is FOUR else ()
        results = run_all(samples, seed, (*extra, *dynamic_settings([toy])), keep=keep)
        if toy is FOUR:  # one trace per dynamic run: the two comparison rows, then one per sampler
            scale_figure(keep[2 + SAMPLERS.index(SAMPLER)], results[0][1], FOUR, docs / "exact_score_dynamic_scale.png")
    rows = [summary(setting, points, forbidden, off) for setting, points, forbidden, off, _ in results]
    store.mkdir(parents=True, exist_ok=True)
    torch.save(rows, store / f"{part}.pt")
    print(robust_table(rows) if part == "robust" else dynamic_table(rows))


def assemble(samples: int, robust_samples: int, seed: int, store: Path):
    """docs/benchmark_exact_score_dynamic.md and docs/exact_score_dynamic.png from the saved parts."""
    import torch

    parts = {part: torch.load(store / f"{part}.pt") for part in PARTS}
    comparison = parts["four"][:3]
    per_sampler = [r for part in PARTS[:3] for r in parts[part] if r["label"].startswith("dynamic (")]
    defaults = next(r for r in per_sampler if r["toy"] == FOUR.name and r["sampler"] == SAMPLER)
    comparison = [*comparison, {**defaults, "label": "dynamic, defaults (λ 2, prior 0.5, τ 1)"}]
    docs = PACK_ROOT / "docs"
    text = ("# Exact-score benchmark: the dynamic negative (experimental)\n\nGenerated by `scripts/host.sh python "
            "benchmarks/exact_score.py --dynamic all` (see the module's docstring for the toys). The constant scales and "
            "windows on the same model, seed and sample count are in [benchmark_exact_score.md]"
            "(benchmark_exact_score.md).\n\n" + comparison_table(comparison) + "\n\n" + dynamic_table(per_sampler)
            + f"\n\n{samples} samples per row, seed {seed}; 32 steps (EDM: karras σ 80 → 0.002; flow: simple σ 1 → 0);"
            " dynamic rows at the defaults. Mode E of the asymmetric toy is half inside the negative concept: the "
            "exact target keeps 0.22 of the samples there (0.29 with the positive prompt alone).\n\n"
            "Robustness (1026 dimensions, model error on every noise prediction, a style bias on the negative's):\n\n"
            + robust_table(parts["robust"]) + f"\n\n{robust_samples} samples per row (sampling error of a mass "
            f"≤ {math.sqrt(0.25 / robust_samples):.3f}).\n\n![dynamic](exact_score_dynamic.png)\n\n"
            "![s⁻ per sample](exact_score_dynamic_scale.png)\n")
    (docs / "benchmark_exact_score_dynamic.md").write_text(text)
    shown = [comparison[1], comparison[3]] + [r for r in per_sampler if r["sampler"] == "euler_ancestral"
                                              or (r["sampler"] == SAMPLER and r["toy"] != FOUR.name)]
    panels = [(Setting(f"{r['label'].replace('dynamic (', '').rstrip(')') if r['label'].startswith('dynamic (') else r['label']}",
                       "dynamic", toy=next(t for t in (FOUR, FLOW, ASYMMETRIC) if t.name == r["toy"])),
               r["points"], r["forbidden"], r["off"], 0.0) for r in shown]
    figure(panels, docs / "exact_score_dynamic.png", "Dynamic negative on the exact-score toys (colour = nearest "
           "mode, black = off-manifold, dashed = 3 spreads)")
    print(text)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=20000)
    parser.add_argument("--robust-samples", type=int, default=500,
                        help="samples for the 1026-dimensional robustness rows (slow on a CPU)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-write", action="store_true", help="print the table only")
    parser.add_argument("--dynamic", choices=(*PARTS, "robust-updates", "assemble", "all"),
                        help="the dynamic-negative tables instead: one part (parts can run side by side), "
                             "'assemble' to write the docs from the saved parts, or 'all'")
    parser.add_argument("--store", type=Path, default=PACK_ROOT / ".host" / "exact_score_parts")
    parser.add_argument("--probe-step", type=float,
                        help="the divergence probe's step h (× σ) of the ito-probe update (default: the pack's)")
    args = parser.parse_args(argv)
    set_probe_step(args.probe_step)
    docs = PACK_ROOT / "docs"
    if args.dynamic:
        for part in (PARTS if args.dynamic == "all" else () if args.dynamic == "assemble" else (args.dynamic,)):
            run_part(part, args.samples, args.robust_samples, args.seed, args.store)
        if args.dynamic in ("assemble", "all"):
            assemble(args.samples, args.robust_samples, args.seed, args.store)
        return
    results = run_all(args.samples, args.seed)
    text = table(results, args.samples, args.seed)
    print(text)
    if not args.no_write:
        header = ("# Exact-score benchmark\n\nGenerated by `scripts/host.sh python benchmarks/exact_score.py`; "
                  "see the module's docstring for the design. The dynamic negative on the same model: "
                  "[benchmark_exact_score_dynamic.md](benchmark_exact_score_dynamic.md).\n\n")
        (docs / "benchmark_exact_score.md").write_text(header + text + "\n\n![samples](exact_score.png)\n")
        figure(results, docs / "exact_score.png")
        print(f"wrote {docs / 'benchmark_exact_score.md'} and {docs / 'exact_score.png'}")


if __name__ == "__main__":
    main()
