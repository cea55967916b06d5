"""Test host: the real ComfyUI (scripts/host.sh puts it at $COMFYUI_PATH), tiny random-weight models built from
ComfyUI's own classes, and the routes a workflow takes through ComfyUI's stock nodes.
Pure tests (test_schedule.py) use none of it but load_pure_module.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

PACK_ROOT = Path(__file__).resolve().parents[1]
PACK_MODULE = "comfyui_negative_guidance"


PURE_NODES = "negguide_pure_nodes"


def load_pure_module(relative_path: str, name: str | None = None):
    """Import one file of the pack without ComfyUI: a module of nodes/ (schedule, validation, dynamic) as part of
    the nodes package, which imports no ComfyUI itself (so its relative imports work), any other file on its own."""
    path = PACK_ROOT / relative_path
    if path.parent == PACK_ROOT / "nodes":
        if PURE_NODES not in sys.modules:
            spec = importlib.util.spec_from_file_location(PURE_NODES, path.parent / "__init__.py",
                                                          submodule_search_locations=[str(path.parent)])
            package = importlib.util.module_from_spec(spec)
            sys.modules[PURE_NODES] = package
            spec.loader.exec_module(package)
        return importlib.import_module(f"{PURE_NODES}.{path.stem}")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def missing_comfyui() -> str | None:
    """Why there is no ComfyUI to test on, or None. Only where COMFYUI_PATH is unset: a path that was set but holds
    no ComfyUI is an error (comfyui_path), never a reason to skip."""
    if os.environ.get("COMFYUI_PATH"):
        return None
    path = PACK_ROOT / ".host" / "ComfyUI"
    return None if (path / "comfy" / "samplers.py").is_file() else f"no ComfyUI (COMFYUI_PATH unset, none at {path})"


def comfyui_path() -> Path:
    path = Path(os.environ.get("COMFYUI_PATH") or PACK_ROOT / ".host" / "ComfyUI")
    if not (path / "comfy" / "samplers.py").is_file():
        pytest.exit(f"No ComfyUI at {path}: run the tests with scripts/host.sh test", returncode=2)
    return path


_host_ready = False


def boot_comfyui():
    """Import ComfyUI as its own main.py would, on the CPU. Idempotent."""
    global _host_ready
    if _host_ready:
        return
    root = str(comfyui_path())
    if root not in sys.path:
        sys.path.insert(0, root)
    from comfy.cli_args import args

    args.cpu = True  # before comfy.model_management is first imported
    import comfy.model_management  # noqa: F401
    _host_ready = True


def load_pack():
    """Load the pack the way ComfyUI does: its folder as a package (never on sys.path: nodes/ would shadow ComfyUI's)."""
    boot_comfyui()
    if PACK_MODULE in sys.modules:
        return sys.modules[PACK_MODULE]
    spec = importlib.util.spec_from_file_location(PACK_MODULE, PACK_ROOT / "__init__.py",
                                                  submodule_search_locations=[str(PACK_ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACK_MODULE] = module
    spec.loader.exec_module(module)
    importlib.import_module(f"{PACK_MODULE}.nodes.extension")
    return module


def pack_module(name: str):
    """A module of the pack, e.g. pack_module("nodes.guidance")."""
    load_pack()
    return importlib.import_module(f"{PACK_MODULE}.{name}")


def reset_weights(module):
    """ComfyUI's layers skip weight initialisation; give every layer torch's own random init."""
    import torch

    torch.manual_seed(0)
    torch_layers = (torch.nn.Linear, torch.nn.Conv2d, torch.nn.GroupNorm, torch.nn.LayerNorm, torch.nn.Embedding)
    for layer in module.modules():
        for torch_layer in torch_layers:
            if isinstance(layer, torch_layer):
                # comfy.ops overrides reset_parameters with a no-op: call torch's own.
                torch_layer.reset_parameters(layer)
                break
    for name, parameter in module.named_parameters():
        if not torch.isfinite(parameter).all():
            raise RuntimeError(f"tiny model: {name} was left uninitialised")


def build_tiny_sd15(context_dim=64):
    """A 1.1 M-parameter SD1.5-architecture UNet with random weights, wrapped as ComfyUI wraps any checkpoint."""
    import torch
    import comfy.model_patcher
    import comfy.supported_models

    unet_config = {
        "model_channels": 32, "in_channels": 4, "out_channels": 4, "num_res_blocks": [1, 1],
        "channel_mult": [1, 2], "transformer_depth": [1, 1], "transformer_depth_output": [1, 1, 1, 1],
        "transformer_depth_middle": 1, "context_dim": context_dim, "use_linear_in_transformer": False,
        "adm_in_channels": None, "num_head_channels": 16,
        "image_size": 32, "use_spatial_transformer": True, "legacy": False,
    }
    config = comfy.supported_models.SD15(unet_config)
    config.set_inference_dtype(torch.float32, None)
    model = config.get_model({}, "", device=torch.device("cpu"))
    reset_weights(model.diffusion_model)
    model.diffusion_model.eval()
    return comfy.model_patcher.ModelPatcher(model, load_device=torch.device("cpu"), offload_device=torch.device("cpu"))


def build_tiny_clip():
    """The real SD1 tokenizer in front of a 2-layer, 64-wide CLIP text model with random weights."""
    import comfy.sd
    import comfy.sd1_clip
    from comfy.supported_models_base import ClipTarget

    target = ClipTarget(comfy.sd1_clip.SD1Tokenizer, comfy.sd1_clip.SD1ClipModel)
    clip = comfy.sd.CLIP(target=target, model_options={"clip_l_model_config": {
        "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2,
        "projection_dim": 64}})
    reset_weights(clip.cond_stage_model)
    return clip


@dataclass
class TinyHost:
    model: object
    clip: object
    positive: list
    negative: list
    empty: list
    latent: dict
    pack: object
    extra: dict = field(default_factory=dict)

    def encode(self, text):
        import nodes

        return nodes.CLIPTextEncode().encode(self.clip, text)[0]


def make_host() -> TinyHost:
    pack = load_pack()
    import torch

    model = build_tiny_sd15()
    clip = build_tiny_clip()
    host = TinyHost(model=model, clip=clip, positive=[], negative=[], empty=[],
                    latent={"samples": torch.zeros(1, 4, 8, 8)}, pack=pack)
    host.positive = host.encode("a woman in a garden, photo")
    host.negative = host.encode("glasses, blurry")
    host.empty = host.encode("")
    return host


# ---- the pack's two guidance nodes, as a workflow runs them ----

def patch(model, neg_scale=-1.0, start=0.0, end=1.0, unit="steps", ramp="hard", ramp_width=0.0, **optional):
    """Negative Guidance (patch) on `model`: the patched MODEL. `optional`: empty, extra_negatives, evaluation,
    trace, dynamic, as the node takes them."""
    return pack_module("nodes.negative_guidance").NegativeGuidance.execute(
        model, neg_scale, start, end, unit, ramp, ramp_width, **optional).result[0]


def guider(model, positive, negative, cfg, neg_scale=-1.0, start=0.0, end=1.0, unit="steps", ramp="hard",
           ramp_width=0.0, **optional):
    """Negative Guidance Guider: the GUIDER for SamplerCustomAdvanced. `optional` as for `patch`."""
    return pack_module("nodes.negative_guidance").NegativeGuidanceGuider.execute(
        model, positive, negative, cfg, neg_scale, start, end, unit, ramp, ramp_width, **optional).result[0]


# ---- routes through ComfyUI's stock nodes ----

def ksampler(model, positive, negative, cfg, sampler_name, steps=8, seed=1, latent=None, scheduler="normal",
             denoise=1.0):
    """The stock KSampler node."""
    import nodes

    return nodes.KSampler().sample(model, seed, steps, cfg, sampler_name, scheduler, positive, negative, latent,
                                   denoise=denoise)[0]["samples"]


def ksampler_sigmas(model, sampler_name, steps=8, scheduler="normal", denoise=1.0):
    """The sigmas the stock KSampler would use (it drops the penultimate sigma for uni_pc and dpm_2)."""
    import comfy.samplers

    return comfy.samplers.KSampler(model, steps=steps, device=model.load_device, sampler=sampler_name,
                                   scheduler=scheduler, denoise=denoise).sigmas


def custom_advanced(guider, sampler_name, sigmas, latent, seed=1):
    """The stock SamplerCustomAdvanced node with RandomNoise and KSamplerSelect, as a workflow wires them."""
    from comfy_extras import nodes_custom_sampler as custom

    noise = custom.RandomNoise.execute(seed).result[0]
    sampler = custom.KSamplerSelect.execute(sampler_name).result[0]
    return custom.SamplerCustomAdvanced.execute(noise, guider, sampler, sigmas, latent).result[0]["samples"]


@dataclass
class Evaluation:
    sigma: float
    conds: tuple  # indices into the conditioning list the guider handed to calc_cond_batch
    batch: int


class PassCounter:
    """Counts model forwards at the model call itself (ComfyUI's APPLY_MODEL wrapper), with their batches."""

    def __init__(self):
        self.evaluations: list[Evaluation] = []

    def __call__(self, executor, x, t, *args, **kwargs):
        transformer_options = kwargs.get("transformer_options", args[3] if len(args) > 3 else {})
        self.evaluations.append(Evaluation(float(t.reshape(-1)[0]), tuple(transformer_options["cond_or_uncond"]),
                                           x.shape[0]))
        return executor(x, t, *args, **kwargs)

    def counting(self, model):
        import comfy.patcher_extension

        counted = model.clone()
        counted.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, "test_pass_counter", self)
        return counted

    def by_sigma(self):
        """One entry per model call: (sigma, sorted conditioning indices)."""
        return [(e.sigma, tuple(sorted(e.conds))) for e in self.evaluations]


# ---- comparing samples ----
# Samples of these tiny models reach magnitudes of a few hundred, where an elementwise atol flips with BLAS
# threading. Compare the largest difference with the reference's own scale instead.
RELATIVE_TOLERANCE = 1e-5


def relative_error(ours, reference) -> float:
    """max|ours − reference| / max|reference|."""
    ours, reference = ours.detach(), reference.detach()  # some samplers hand back tensors that require grad
    scale = float(reference.abs().max())
    return float((ours - reference).abs().max()) / (scale if scale > 0 else 1.0)


def assert_close_to_scale(ours, reference, tolerance=RELATIVE_TOLERANCE):
    """Equal up to float rounding: max|ours − reference| ≤ tolerance · max|reference|."""
    assert ours.shape == reference.shape, (ours.shape, reference.shape)
    error = relative_error(ours, reference)
    assert error <= tolerance, f"relative error {error:.3g} > {tolerance:.3g}"


def assert_changed(changed, unchanged, tolerance=RELATIVE_TOLERANCE):
    """The feature under test moved the samples by far more than the comparison tolerance, so a test that compares
    `changed` with a reference could not pass with the feature ignored."""
    error = relative_error(changed, unchanged)
    assert error > 100 * tolerance, f"the samples changed by only {error:.3g} (relative)"


def colour_pixels(image, colour: str) -> int:
    """How many pixels of an IMAGE (1, H, W, 3) have this matplotlib colour (a plotted line, or its legend entry).
    A plot shows data where it has many more of them than the same plot of a run with no evaluations."""
    import matplotlib.colors
    import torch

    rgb = torch.tensor(matplotlib.colors.to_rgb(colour), dtype=image.dtype)
    return int(((image[0] - rgb).abs().amax(dim=-1) < 0.02).sum())

