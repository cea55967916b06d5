"""TEST ONLY: a checkpoint loader that hands tiny random-weight models to real graphs.

Linked into a host's custom_nodes/ by tests/e2e and scripts/demo.py, never shipped (.comfyignore). It stands in
for CheckpointLoaderSimple: same outputs (MODEL, CLIP, VAE), the same `ckpt_name` input, and it builds from
ComfyUI's own classes a model of the architecture the name asks for (Flux when the name says "flux", SDXL when it
says "xl", else SD1.5), small enough that a 64x64 image samples in well under a second per step on a CPU.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from pathlib import Path

log = logging.getLogger("negguide.tiny_models")

# This folder is tests/e2e/tiny_models_node; tests/support.py builds the tiny SD1.5 UNet and CLIP.
TESTS_DIR = Path(__file__).resolve().parents[2]
TINY_CHECKPOINT_NODE = "NegGuideTestTinyCheckpoint"


def _test_module(module_name: str, file_name: str):
    if module_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(module_name, TESTS_DIR / file_name)
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    return sys.modules[module_name]


def _support():
    return _test_module("negguide_test_support", "support.py")


def _compat_support():
    # compat_support.py imports the test helpers as `support`, the name they have on the tests' sys.path.
    sys.modules.setdefault("support", _support())
    return _test_module("negguide_test_compat_support", "compat_support.py")


def build_tiny_sdxl():
    """SDXL architecture (two text encoders, pooled output, size conditioning) at test size."""
    import torch
    import comfy.model_patcher
    import comfy.sd
    import comfy.sdxl_clip
    import comfy.supported_models
    from comfy.supported_models_base import ClipTarget

    support = _support()
    text_width = 64
    # Three layers: SDXL reads its text encoders' penultimate hidden layer (layer_idx -2).
    clip = comfy.sd.CLIP(target=ClipTarget(comfy.sdxl_clip.SDXLTokenizer, comfy.sdxl_clip.SDXLClipModel),
                         model_options={name: {"hidden_size": text_width, "intermediate_size": 128,
                                               "num_hidden_layers": 3, "num_attention_heads": 2,
                                               "projection_dim": text_width}
                                        for name in ("clip_l_model_config", "clip_g_model_config")})
    support.reset_weights(clip.cond_stage_model)
    size_embeddings = 6 * 256  # SDXL's height, width, crop and target sizes, 256 Fourier features each
    unet_config = {
        # 64 channels: ComfyUI's SDXL config fixes 64 channels per attention head.
        "model_channels": 64, "in_channels": 4, "out_channels": 4, "num_res_blocks": [1, 1],
        "channel_mult": [1, 2], "transformer_depth": [1, 1], "transformer_depth_output": [1, 1, 1, 1],
        "transformer_depth_middle": 1, "context_dim": 2 * text_width, "use_linear_in_transformer": True,
        "adm_in_channels": text_width + size_embeddings, "num_head_channels": 16,
        "image_size": 32, "use_spatial_transformer": True, "legacy": False, "use_temporal_attention": False,
        "num_classes": "sequential",  # the pooled text and size embeddings enter as the class label y
    }
    config = comfy.supported_models.SDXL(unet_config)
    config.set_inference_dtype(torch.float32, None)
    model = config.get_model({}, "", device=torch.device("cpu"))
    support.reset_weights(model.diffusion_model)
    model.diffusion_model.eval()
    patcher = comfy.model_patcher.ModelPatcher(model, load_device=torch.device("cpu"),
                                               offload_device=torch.device("cpu"))
    return patcher, clip


def build_tiny_vae(latent_channels: int = 4):
    """TAESD's decoder/encoder shape (ComfyUI picks it from this key; the key's shape sets the latent channels),
    with random weights: 8x down/upscale."""
    import torch
    import comfy.sd

    vae = comfy.sd.VAE(sd={"taesd_decoder.1.weight": torch.zeros(64, latent_channels, 3, 3)})
    _support().reset_weights(vae.first_stage_model)
    return vae


_cache: dict[str, tuple] = {}


def architecture_of(ckpt_name: str) -> str:
    name = ckpt_name.lower()
    return "flux" if "flux" in name else "sdxl" if "xl" in name else "sd15"


def tiny_checkpoint(ckpt_name: str) -> tuple:
    architecture = architecture_of(ckpt_name)
    if architecture not in _cache:
        log.info("building a tiny random-weight %s for '%s'", architecture, ckpt_name)
        support = _support()
        if architecture == "sdxl":
            model, clip = build_tiny_sdxl()
            vae = build_tiny_vae()
        elif architecture == "flux":
            # The suite's tiny Flux DiT reads the tiny CLIP's 64-wide tokens and pooled output; 16 latent channels.
            model, clip = _compat_support().build_tiny_flux(), support.build_tiny_clip()
            vae = build_tiny_vae(latent_channels=16)
        else:
            model, clip = support.build_tiny_sd15(), support.build_tiny_clip()
            vae = build_tiny_vae()
        _cache[architecture] = (model, clip, vae)
    return _cache[architecture]


class NegGuideTestTinyCheckpoint:
    """CheckpointLoaderSimple's stand-in for tests: same input name, same outputs, tiny random models."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"ckpt_name": ("STRING", {"default": "v1-5-pruned-emaonly.safetensors"})}}

    RETURN_TYPES = ("MODEL", "CLIP", "VAE")
    FUNCTION = "load"
    CATEGORY = "testing"
    DESCRIPTION = "TEST ONLY: tiny random-weight models of the architecture ckpt_name names."

    def load(self, ckpt_name):
        return tiny_checkpoint(ckpt_name)


NODE_CLASS_MAPPINGS = {TINY_CHECKPOINT_NODE: NegGuideTestTinyCheckpoint}
NODE_DISPLAY_NAME_MAPPINGS = {TINY_CHECKPOINT_NODE: "Tiny checkpoint (negative-guidance tests only)"}
