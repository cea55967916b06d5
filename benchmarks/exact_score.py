"""Exact-score benchmark: the pack's nodes and ComfyUI's own samplers on a model whose true answer is known.

The model is a 2-D mixture of four isotropic Gaussians at (±2, ±2), each with standard deviation σ_data = 0.3,
registered as a real ComfyUI model (comfy.model_base.BaseModel with EDM preconditioning and
ModelSamplingContinuousEDM, wrapped in a ModelPatcher), so KSampler, SamplerCustomAdvanced, NegativeGuidance and
NegativeGuidanceGuider run on it unchanged. Its "diffusion model" returns the *exact* conditional denoiser of the
mixture: a conditioning ("concept") is a (1, 1, 4) c_crossattn tensor holding the weights of the four modes,

    positive y  = x > 0      → modes (2, 2), (2, −2)
    negative ỹ  = y > 0      → modes (2, 2), (−2, 2)
    empty    ∅  = everything → all four modes

A latent is (N, 2, 1, 1): one 2-D point per batch entry. Sampling: 32-step Heun on the EDM (karras) schedule,
σ 80 → 0.002, every setting from the same seed (the same initial noise).

Reported per setting: forbidden mass (share of samples with y > 0, the negative concept) and off-manifold mass
(share of samples more than 3σ_data = 0.9 from every mode).

    scripts/host.sh python benchmarks/exact_score.py            # 20 000 samples, writes the docs
    scripts/host.sh python benchmarks/exact_score.py --samples 2000 --no-write
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
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
OFF_MANIFOLD = 3.0 * MODE_STD


# ---- the model ----

def make_denoiser_class():
    import torch

    class GaussianMixtureDenoiser(torch.nn.Module):
        """Exact E[x₀ | x, σ, concept] of the mixture, returned as the EDM model output ComfyUI expects."""

        def __init__(self, **kwargs):
            super().__init__()
            self.register_buffer("modes", torch.tensor(MODES, dtype=torch.float64))
            self.dtype = torch.float32

        def forward(self, x, timesteps, context=None, transformer_options={}, **kwargs):
            sigma = transformer_options["sigmas"].to(torch.float64).reshape(-1, 1)  # exact σ of each row
            if sigma.shape[0] != x.shape[0]:  # one σ per chunk row; calc_cond_batch stacks the chunks
                sigma = sigma.repeat(x.shape[0] // sigma.shape[0], 1)
            weights = context.to(torch.float64).reshape(x.shape[0], -1)[:, :len(MODES)]
            # ComfyUI hands over c_in·x = x / √(σ² + σ_d²): undo it.
            scale = (sigma ** 2 + EDM_SIGMA_DATA ** 2).sqrt()
            points = x.to(torch.float64).reshape(x.shape[0], -1) * scale
            denoised = exact_denoiser(points, sigma, weights, self.modes)
            c_skip = EDM_SIGMA_DATA ** 2 / scale ** 2
            c_out = sigma * EDM_SIGMA_DATA / scale
            out = (denoised - c_skip * points) / c_out
            return out.reshape(x.shape).to(x.dtype)

    return GaussianMixtureDenoiser


def exact_denoiser(points, sigma, weights, modes):
    """E[x₀ | x_σ = x] for a mixture of N(μ_k, s²I) with weights π_k: Σ_k γ_k(x)·(μ_k + s²/(s²+σ²)(x − μ_k))."""
    import torch

    variance = MODE_STD ** 2 + sigma ** 2  # (N, 1)
    offsets = points[:, None, :] - modes[None, :, :]  # (N, K, 2)
    log_w = torch.log(weights.clamp_min(0.0)) - (offsets ** 2).sum(-1) / (2 * variance)
    responsibilities = torch.softmax(log_w, dim=1)  # (N, K)
    posterior_means = modes[None] + (MODE_STD ** 2 / variance)[:, :, None] * offsets
    return (responsibilities[:, :, None] * posterior_means).sum(1)


def build_model():
    """The mixture as a ComfyUI model: BaseModel (EDM) + ModelPatcher, CPU."""
    import torch
    import comfy.latent_formats
    import comfy.model_base
    import comfy.model_patcher
    import comfy.supported_models_base

    class PointLatent(comfy.latent_formats.LatentFormat):
        latent_channels = 2

    class GaussianMixtureConfig(comfy.supported_models_base.BASE):
        unet_config = {"disable_unet_model_creation": True}
        unet_extra_config = {}
        sampling_settings = {"sigma_min": SIGMA_MIN, "sigma_max": SIGMA_MAX, "sigma_data": EDM_SIGMA_DATA}
        latent_format = PointLatent
        memory_usage_factor = 1e-6  # keeps every conditioning of a step in one forward, as on a real model

    config = GaussianMixtureConfig({"disable_unet_model_creation": True})
    model = comfy.model_base.BaseModel(config, comfy.model_base.ModelType.EDM, device=torch.device("cpu"))
    model.diffusion_model = make_denoiser_class()()
    model.eval()
    return comfy.model_patcher.ModelPatcher(model, load_device=torch.device("cpu"), offload_device=torch.device("cpu"))


def concept(name: str) -> list:
    import torch

    return [[torch.tensor(CONCEPTS[name], dtype=torch.float32).reshape(1, 1, -1), {}]]


# ---- settings, sampled with ComfyUI's stock nodes and the pack's ----

@dataclass(frozen=True)
class Setting:
    label: str
    kind: str  # positive_only | ordinary | three_way | three_way_guider
    cfg: float = 1.0
    neg_scale: float = 0.0
    start: float = 0.0
    end: float = 1.0
    panel: bool = True  # drawn in the figure


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


def sample(model, setting: Setting, samples: int, seed: int):
    """(samples, 2) points from one setting, through the same nodes a workflow uses."""
    import torch
    import nodes as comfy_nodes
    from comfy_extras import nodes_custom_sampler as custom

    guidance = support.pack_module("nodes.negative_guidance")
    latent = {"samples": torch.zeros(samples, 2, 1, 1)}
    positive, negative, empty = concept("positive"), concept("negative"), concept("empty")
    sigmas = custom.BasicScheduler.execute(model, SCHEDULER, STEPS, 1.0).result[0]
    if setting.kind == "positive_only":
        guider = custom.BasicGuider.execute(model, positive).result[0]
    elif setting.kind == "three_way_guider":
        guider = guidance.NegativeGuidanceGuider.execute(model, positive, negative, setting.cfg, setting.neg_scale,
                                                         setting.start, setting.end, "steps", "hard", 0.0,
                                                         empty=empty).result[0]
    else:
        if setting.kind == "three_way":
            model = guidance.NegativeGuidance.execute(model, setting.neg_scale, setting.start, setting.end, "steps",
                                                      "hard", 0.0, empty=empty).result[0]
        out = comfy_nodes.KSampler().sample(model, seed, STEPS, setting.cfg, SAMPLER, SCHEDULER, positive, negative,
                                            latent)[0]["samples"]
        return out.reshape(samples, 2)
    noise = custom.RandomNoise.execute(seed).result[0]
    sampler = custom.KSamplerSelect.execute(SAMPLER).result[0]
    out = custom.SamplerCustomAdvanced.execute(noise, guider, sampler, sigmas, latent).result[0]["samples"]
    return out.reshape(samples, 2)


def masses(points) -> tuple:
    """(forbidden mass: y > 0, off-manifold mass: > 3σ_data from every mode)."""
    import torch

    modes = torch.tensor(MODES, dtype=points.dtype)
    distance = (points[:, None, :] - modes[None]).norm(dim=-1).min(dim=1).values
    return float((points[:, 1] > 0).float().mean()), float((distance > OFF_MANIFOLD).float().mean())


def run_all(samples: int, seed: int, settings=SETTINGS):
    support.load_pack()
    model = build_model()
    results = []
    for setting in settings:
        started = time.perf_counter()
        points = sample(model, setting, samples, seed)
        forbidden, off = masses(points)
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
    colours = ("tab:green", "tab:blue", "tab:red", "tab:orange")  # (2,2) forbidden+wanted, (2,-2) wanted, ...
    modes = torch.tensor(MODES)
    for ax in axes.flat:
        ax.set_visible(False)
    for ax, (setting, points, forbidden, off, _) in zip(axes.flat, shown):
        ax.set_visible(True)
        points = points[:4000].float()
        distance = (points[:, None, :] - modes[None]).norm(dim=-1)
        nearest = distance.argmin(dim=1)
        far = distance.min(dim=1).values > OFF_MANIFOLD
        for k, colour in enumerate(colours):
            chosen = (nearest == k) & ~far
            ax.scatter(points[chosen, 0], points[chosen, 1], s=1, color=colour, alpha=0.4, rasterized=True)
        ax.scatter(points[far, 0], points[far, 1], s=1, color="black", alpha=0.4, rasterized=True)
        ax.axhline(0, color="gray", linewidth=0.5)
        ax.axvline(0, color="gray", linewidth=0.5)
        # Off-manifold samples are pushed far from the modes: widen the view to hold 99.5 % of them.
        extent = min(max(4.5, float(points.abs().quantile(0.995)) * 1.1), 40.0)
        for mode in MODES:
            ax.add_patch(Circle(mode, OFF_MANIFOLD, fill=False, color="gray", linewidth=0.6, linestyle="--"))
        ax.set_xlim(-extent, extent)
        ax.set_ylim(-extent, extent)
        ax.set_aspect("equal")
        ax.set_title(f"{setting.label}\nforbidden {forbidden:.3f}, off {off:.3f}", fontsize=8)
        ax.tick_params(labelsize=6)
    fig.suptitle("Exact-score benchmark: want x > 0, avoid y > 0 (colour = nearest mode, black = off-manifold, dashed = 3σ)",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-write", action="store_true", help="print the table only")
    args = parser.parse_args(argv)
    results = run_all(args.samples, args.seed)
    text = table(results, args.samples, args.seed)
    print(text)
    if not args.no_write:
        docs = PACK_ROOT / "docs"
        docs.mkdir(exist_ok=True)
        header = ("# Exact-score benchmark\n\nGenerated by `scripts/host.sh python benchmarks/exact_score.py`; see the "
                  "module's docstring for the design.\n\n")
        (docs / "benchmark_exact_score.md").write_text(header + text + "\n\n![samples](exact_score.png)\n")
        figure(results, docs / "exact_score.png")
        print(f"wrote {docs / 'benchmark_exact_score.md'} and {docs / 'exact_score.png'}")


if __name__ == "__main__":
    main()
