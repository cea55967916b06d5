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


def make_dynamic_guider(model, setting: Setting, positive, negative, empty):
    """Stand-in until the pack's nodes take a dynamic negative: eps = e + s⁺(c − e) − s⁻(x, t)(n − e), with y, ỹ and ∅
    in one calc_cond_batch call and DynamicNegativeState giving s⁻ per sample."""
    import comfy.samplers

    dynamic = dynamic_module()

    class DynamicGuider(comfy.samplers.CFGGuider):
        def outer_sample(self, *args, **kwargs):
            self.state = dynamic.DynamicNegativeState(setting.dynamic, flow=setting.toy.flow)
            self.history = []
            return super().outer_sample(*args, **kwargs)

        def predict_noise(self, x, timestep, model_options={}, seed=None):
            conds = [self.conds["positive"], self.conds["negative"], self.conds["empty"]]
            c, n, e = comfy.samplers.calc_cond_batch(self.inner_model, conds, x, timestep, model_options)
            sigma = float(timestep.reshape(-1)[0])
            scale = self.state.update(x, sigma, e, n)
            self.history.append((sigma, self.state.p.detach().clone(), scale.detach().clone()))
            scale = scale.to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
            return e + self.cfg * (c - e) - scale * (n - e)

    guider = DynamicGuider(model)
    guider.set_cfg(setting.cfg)
    guider.inner_set_conds({"positive": positive, "negative": negative, "empty": empty})
    return guider


def sample(model, setting: Setting, samples: int, seed: int, keep=None):
    """(samples, dims) points from one setting, through the same nodes a workflow uses. `keep`, a list, receives
    the guider (for its history) where there is one."""
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
        guider = make_dynamic_guider(model, setting, positive, negative, empty)
    else:
        if setting.kind == "three_way":
            model = guidance.NegativeGuidance.execute(model, setting.neg_scale, setting.start, setting.end, "steps",
                                                      "hard", 0.0, empty=empty).result[0]
        out = comfy_nodes.KSampler().sample(model, seed, STEPS, setting.cfg, setting.sampler, scheduler, positive,
                                            negative, latent)[0]["samples"]
        return out.reshape(samples, -1)
    if keep is not None:
        keep.append(guider)
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


def dynamic_table(results) -> str:
    lines = ["| model | sampler | forbidden | off-manifold | positive fidelity (x > 0) | partly covered mode E |",
             "|---|---|---:|---:|---:|---:|"]
    for setting, points, forbidden, off, _ in results:
        partial = f"{partial_share(points):.3f}" if setting.toy is ASYMMETRIC else ""
        lines.append(f"| {setting.toy.name} | {setting.sampler} | {forbidden:.3f} | {off:.3f} | "
                     f"{positive_fidelity(points):.3f} | {partial} |")
    return "\n".join(lines)


def figure(results, path: Path):
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
    fig.suptitle("Exact-score benchmark: want x > 0, avoid y > 0 (colour = nearest mode, black = off-manifold, dashed = 3σ)",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path)


def robust_settings(samplers=("heun", "euler", "euler_ancestral"), errors=(0.003, 0.01)):
    """The dynamic negative at the defaults and the published update, on the high-dimensional toy with model error."""
    from dataclasses import replace

    dynamic = dynamic_module()
    settings = []
    for error in errors:
        toy = replace(ROBUST, name=f"four Gaussians + 1024 dims, error {error:g}, style bias 0.003 (EDM)",
                      prediction_noise=error)
        for sampler in (samplers if error == errors[0] else samplers[:1]):
            for method, label in (("mixture", "this pack"), ("published", "published DNG")):
                settings.append(Setting(f"{label}, error {error:g}, {sampler}", "dynamic", sampler=sampler, toy=toy,
                                        dynamic=dynamic.DynamicNegative(method=method), panel=False))
    return tuple(settings)


def comparison_settings():
    """The four-Gaussian rows the README sets side by side: constant scales, windows, dynamic (Heun)."""
    dynamic = dynamic_module()
    constant = [s for s in SETTINGS if s.label in (
        "positive only (BasicGuider)", "ordinary negative, cfg 3 (eq. 9)", "three-way s⁺ 1, s⁻ 1",
        "three-way s⁺ 1, s⁻ 3", "three-way s⁻ 3, early window 0-⅓", "three-way s⁻ 3, middle window ⅓-⅔")]
    return (*constant,
            Setting("dynamic, published DNG update (λ 2, prior 0.5)", "dynamic",
                    dynamic=dynamic.DynamicNegative(method="published")),
            Setting("dynamic λ 1 (prior 0.5, τ 1)", "dynamic", dynamic=dynamic.DynamicNegative(strength=1.0)),
            Setting("dynamic, defaults (λ 2, prior 0.5, τ 1)", "dynamic", dynamic=dynamic.DynamicNegative()))


def comparison_table(results) -> str:
    lines = ["| setting (four Gaussians, Heun) | forbidden | off-manifold | positive fidelity (x > 0) |",
             "|---|---:|---:|---:|"]
    for setting, points, forbidden, off, _ in results:
        lines.append(f"| {setting.label} | {forbidden:.3f} | {off:.3f} | {positive_fidelity(points):.3f} |")
    return "\n".join(lines)


def robust_table(results) -> str:
    lines = ["| update | model error per dimension | sampler | forbidden | off-manifold |", "|---|---:|---|---:|---:|"]
    for setting, _, forbidden, off, _ in results:
        update = "this pack (mixture filter, Tweedie start)" if setting.dynamic.method == "mixture" else "published DNG"
        lines.append(f"| {update} | {setting.toy.prediction_noise:g} | {setting.sampler} | {forbidden:.3f} | {off:.3f} |")
    return "\n".join(lines)


def scale_figure(guider, reference_points, toy: Toy, path: Path, shown: int = 80):
    """s⁻(t) and p(t) per sample for one run, coloured by the mode the same sample (same initial noise) reaches
    with the positive prompt alone."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    import torch

    sigmas = [h[0] for h in guider.history]
    p = torch.stack([h[1] for h in guider.history]).float()[:, :shown]
    scale = torch.stack([h[2] for h in guider.history]).float()[:, :shown]
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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=20000)
    parser.add_argument("--robust-samples", type=int, default=1000,
                        help="samples for the 1026-dimensional robustness rows (slow on a CPU)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-write", action="store_true", help="print the tables only")
    parser.add_argument("--dynamic-only", action="store_true", help="only the dynamic-negative tables")
    args = parser.parse_args(argv)
    docs = PACK_ROOT / "docs"
    if not args.dynamic_only:
        results = run_all(args.samples, args.seed)
        text = table(results, args.samples, args.seed)
        print(text)
        if not args.no_write:
            header = ("# Exact-score benchmark\n\nGenerated by `scripts/host.sh python benchmarks/exact_score.py`; "
                      "see the module's docstring for the design.\n\n")
            (docs / "benchmark_exact_score.md").write_text(header + text + "\n\n![samples](exact_score.png)\n")
            figure(results, docs / "exact_score.png")
    keep = []
    comparison = run_all(args.samples, args.seed, comparison_settings(), keep=keep)
    print(comparison_table(comparison))
    per_sampler = run_all(args.samples, args.seed, dynamic_settings())
    print(dynamic_table(per_sampler))
    robust = run_all(args.robust_samples, args.seed, robust_settings())
    print(robust_table(robust))
    if not args.no_write:
        figure(comparison[-3:] + [r for r in per_sampler if r[0].sampler == "euler_ancestral" or
                                  (r[0].sampler == SAMPLER and r[0].toy is not FOUR)],
               docs / "exact_score_dynamic.png")
        scale_figure(keep[-1], comparison[0][1], FOUR, docs / "exact_score_dynamic_scale.png")
        with (docs / "benchmark_exact_score.md").open("a") as out:
            out.write("\n## Dynamic negative (experimental)\n\n" + comparison_table(comparison) + "\n\n"
                      + dynamic_table(per_sampler) + f"\n\n{args.samples} samples per row, seed {args.seed}; "
                      "32 steps (EDM: karras σ 80 → 0.002; flow: simple σ 1 → 0). Dynamic rows at the defaults "
                      "unless stated.\n\n" + robust_table(robust) + f"\n\n{args.robust_samples} samples per row "
                      "(1026 dimensions).\n\n![dynamic](exact_score_dynamic.png)\n\n"
                      "![s⁻ per sample](exact_score_dynamic_scale.png)\n")
        print(f"wrote {docs / 'benchmark_exact_score.md'} and the figures")


if __name__ == "__main__":
    main()
