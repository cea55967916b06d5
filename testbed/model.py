"""The testbed model, built from ComfyUI's own SD1.5 classes, scaled down: UNet, CLIP text encoder, fixed decoder.

One builder for the training script, the loader node, the demo and the tests. The UNet is ComfyUI's
`openaimodel.UNetModel` with cross-attention (so the r_t probe hooks it as on Stable Diffusion) behind
`BaseModel` in v-prediction on the SD1 discrete schedule; the text encoder is `SD1ClipModel` with the real SD1
tokenizer; the VAE is ComfyUI's TAESD with fixed weights that upsample the 16×16 picture-latent ×8 (no training,
nothing stored): VAEDecode → SaveImage shows the picture, VAEEncode gives the latent back.
"""

from __future__ import annotations

from pathlib import Path

import torch

WEIGHTS = Path(__file__).resolve().parent / "testbed.safetensors"

UNET_CONFIG = {
    "model_channels": 32, "in_channels": 4, "out_channels": 4, "num_res_blocks": [1, 1, 1],
    "channel_mult": [1, 2, 2], "transformer_depth": [0, 1, 1], "transformer_depth_output": [0, 0, 1, 1, 1, 1],
    "transformer_depth_middle": 1, "context_dim": 64, "use_linear_in_transformer": False,
    "adm_in_channels": None, "num_head_channels": 16, "image_size": 32, "use_spatial_transformer": True,
    "legacy": False,
}
CLIP_CONFIG = {"hidden_size": 64, "intermediate_size": 256, "num_hidden_layers": 3, "num_attention_heads": 2,
               "projection_dim": 64}
UNET_PREFIX = "model.diffusion_model."
CLIP_PREFIX = "cond_stage_model."


def build_unet(device=None):
    """The UNet as ComfyUI wraps a checkpoint's (BaseModel, v-prediction), weights not initialised."""
    import comfy.model_base
    import comfy.supported_models

    config = comfy.supported_models.SD15(dict(UNET_CONFIG))
    config.set_inference_dtype(torch.float32, None)
    return comfy.model_base.BaseModel(config, model_type=comfy.model_base.ModelType.V_PREDICTION,
                                      device=device or torch.device("cpu"))


def build_clip():
    """ComfyUI's CLIP object: the real SD1 tokenizer in front of the small text model, float32."""
    import comfy.sd
    import comfy.sd1_clip
    from comfy.supported_models_base import ClipTarget

    target = ClipTarget(comfy.sd1_clip.SD1Tokenizer, comfy.sd1_clip.SD1ClipModel)
    return comfy.sd.CLIP(target=target, model_options={"clip_l_model_config": dict(CLIP_CONFIG),
                                                       "dtype": torch.float32})


def taesd_state_dict(model_scale: float = 0.18215) -> dict:
    """TAESD weights that decode the picture-latent exactly (the latent's R, G, B upsampled ×8) and encode a picture
    back (each 8×8 block's top-left pixel), for ComfyUI's comfy.sd.VAE.

    Args:
        model_scale: the SD1.5 latent format's scale_factor; VAEDecode gets latent / model_scale.
    Every Block's last conv is zero, so each Block is a ReLU on non-negative activations (the identity); the other
    convs pass the first three channels through at their centre tap. TAESD's input clamp tanh(x/3)·3 is made
    near-linear (relative error < 1e-4) by a small vae_scale.
    """
    from comfy.taesd.taesd import Decoder, Encoder

    shrink = 0.03
    rgb = torch.arange(3)
    decoder = _pass_through(Decoder(latent_channels=4))
    decoder["1.weight"][rgb, rgb, 1, 1] = 1.0 / (2.0 * shrink)  # u = shrink·x_model → picture (x_model + 1) / 2
    decoder["1.bias"][rgb] = 0.5
    encoder = _pass_through(Encoder(latent_channels=4))
    last = f"{len(Encoder(latent_channels=4)) - 1}"
    encoder[f"{last}.weight"][rgb, rgb, 1, 1] = 2.0 * shrink    # picture p → shrink·(2p − 1) = shrink·x_model
    encoder[f"{last}.weight"][3, rgb, 1, 1] = 2.0 * shrink / 3  # the fourth channel: the mean of R, G, B
    encoder[f"{last}.bias"][:] = -shrink
    out = {f"taesd_decoder.{name}": value for name, value in decoder.items()}
    out.update({f"taesd_encoder.{name}": value for name, value in encoder.items()})
    out["vae_scale"] = torch.tensor(shrink * model_scale)
    out["vae_shift"] = torch.tensor(0.0)
    return out


def _pass_through(network) -> dict:
    """Zero weights, except a centre tap 1 from channel c to channel c for every plain (non-Block) conv."""
    state = {name: torch.zeros_like(value) for name, value in network.state_dict().items()}
    for name, value in state.items():
        # Block parameters are named "<index>.conv.<k>.weight" (or ".skip."); the plain convs "<index>.weight".
        if value.dim() == 4 and ".conv." not in name and ".skip." not in name:
            channels = torch.arange(min(value.shape[0], value.shape[1]))
            value[channels, channels, 1, 1] = 1.0
    return state


def build_vae():
    import comfy.sd

    vae = comfy.sd.VAE(sd=taesd_state_dict())
    vae.first_stage_model.requires_grad_(False)  # fixed weights; ComfyUI samples under inference mode anyway
    return vae


def split_state_dict(state: dict) -> tuple[dict, dict]:
    unet = {k[len(UNET_PREFIX):]: v for k, v in state.items() if k.startswith(UNET_PREFIX)}
    clip = {k[len(CLIP_PREFIX):]: v for k, v in state.items() if k.startswith(CLIP_PREFIX)}
    return unet, clip


def load(weights: Path = WEIGHTS):
    """(MODEL, CLIP, VAE) as ComfyUI's checkpoint loader returns them, from the shipped weights."""
    import comfy.model_management
    import comfy.model_patcher
    import comfy.utils

    if not Path(weights).is_file():
        raise FileNotFoundError(f"Negative Guidance testbed: the weights file {weights} is missing; reinstall the "
                                f"pack or retrain it with scripts/train_testbed.py")
    unet_state, clip_state = split_state_dict(comfy.utils.load_torch_file(str(weights), safe_load=True))
    unet = build_unet()
    unet.diffusion_model.load_state_dict({k: v.float() for k, v in unet_state.items()}, strict=True)
    unet.diffusion_model.eval()
    model = comfy.model_patcher.ModelPatcher(unet, load_device=comfy.model_management.get_torch_device(),
                                             offload_device=comfy.model_management.unet_offload_device())
    clip = build_clip()
    clip.cond_stage_model.load_state_dict({k: v.float() for k, v in clip_state.items()}, strict=True)
    return model, clip, build_vae()
