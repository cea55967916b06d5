"""Helpers for the compatibility matrix (tests/test_compatibility.py): a tiny ControlNet and a tiny Flux-style DiT
built from ComfyUI's own classes with random weights, and an independent reference for three-way guidance.

The reference is ComfyUI's stock KSampler with a `sampler_calc_cond_batch_function` that evaluates y, ỹ and ∅
itself and returns [eps(y), u*] with u* = e + α(n − e), α = s⁻·w / (s⁺ − 1) (the three-way formula written as CFG):
stock `cfg_function` then does the combination, so RescaleCFG, CFGZeroStar, PAG and any other CFG patch receive
exactly what the pack promises them (cond = y's prediction, uncond = u*, cond_scale = s⁺), with none of the pack's
code in the loop.
"""

from __future__ import annotations

import support


def step_of(sigma: float, run_sigmas: list) -> int:
    """The step whose interval (σ_{i+1}, σ_i] holds sigma."""
    return max(i for i, s in enumerate(run_sigmas[:-1]) if s >= sigma - 1e-6)


def three_way_reference(model, empty, cfg, neg_scale, weight_of_step=lambda step, total: 1.0,
                        cfg_follows_guider=False, extras=()):
    """The tests' one reference implementation of the formula, built from stock parts only: stock KSampler(positive,
    negative, cfg) or CFGGuider on the returned model gives eps = e + s⁺(c − e) − Σᵢ sᵢwᵢ(nᵢ − e) for s⁺ = cfg ≠ 1, as
    plain CFG against u* = e + Σᵢ αᵢ(nᵢ − e), αᵢ = sᵢwᵢ/(s⁺ − 1), with the step found from sigma independently.

    Args:
        weight_of_step: w of the main negative, from (step, total steps).
        cfg_follows_guider: s⁺ is the guider's cfg at each evaluation, for a wrapper that changes it on some steps
            (ComfyUI's CFGOverride): stock CFG then combines with that cfg, and the αᵢ follow it.
        extras: (conditioning, sᵢ, weight_of_step) of each extra negative.
    """
    import comfy.patcher_extension
    import comfy.sampler_helpers
    import comfy.samplers

    assert cfg != 1.0
    others = [comfy.sampler_helpers.convert_cond(empty)]
    others += [comfy.sampler_helpers.convert_cond(conditioning) for conditioning, _, _ in extras]
    terms = [(neg_scale, weight_of_step), *((scale, weight) for _, scale, weight in extras)]
    reference = model.clone()

    def calc_cond_batch(args):
        x, sigma, inner_model, options = args["input"], args["sigma"], args["model"], args["model_options"]
        cond, negative = args["conds"]
        encoded = [comfy.samplers.encode_model_conds(inner_model.extra_conds, conds, x, x.device, "negative")
                   for conds in others]
        cond_pred, negative_pred, empty_pred, *extra_preds = comfy.samplers.calc_cond_batch(
            inner_model, [cond, negative, *encoded], x, sigma, options)
        run_sigmas = options["transformer_options"]["sample_sigmas"].tolist()
        step = step_of(float(sigma.reshape(-1)[0]), run_sigmas)
        cond_scale = float(sampling["guider"].cfg) if cfg_follows_guider else cfg
        uncond = empty_pred
        for (scale, weight), prediction in zip(terms, [negative_pred, *extra_preds]):
            alpha = scale * weight(step, len(run_sigmas) - 1) / (cond_scale - 1.0)
            if alpha:
                uncond = uncond + alpha * (prediction - empty_pred)
        return [cond_pred, uncond]

    def note_the_guider(executor, *args, **kwargs):
        sampling["guider"] = executor.class_obj  # its cfg is read inside, after every wrapper has set it
        return executor(*args, **kwargs)

    sampling = {}
    reference.model_options["sampler_calc_cond_batch_function"] = calc_cond_batch
    if cfg_follows_guider:
        reference.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.PREDICT_NOISE, "three_way_reference",
                                       note_the_guider)
    return reference


def window_of_steps(first: int, last: int):
    """w = 1 on steps first..last-1 of the run (numbered from 0), else 0."""
    return lambda step, total: 1.0 if first <= step < last else 0.0


def build_tiny_controlnet():
    """A ControlNet (comfy.cldm) matching support.build_tiny_sd15, random weights (its zero-convs too, so it acts)."""
    import torch
    import comfy.cldm.cldm
    import comfy.controlnet
    import comfy.ops

    control_model = comfy.cldm.cldm.ControlNet(
        image_size=32, in_channels=4, model_channels=32, hint_channels=3, num_res_blocks=[1, 1],
        channel_mult=[1, 2], transformer_depth=[1, 1], transformer_depth_middle=1, context_dim=64,
        use_linear_in_transformer=False, adm_in_channels=None, num_head_channels=16, use_spatial_transformer=True,
        legacy=False, dtype=torch.float32, device=torch.device("cpu"), operations=comfy.ops.disable_weight_init)
    support.reset_weights(control_model)
    control_model.eval()
    return comfy.controlnet.ControlNet(control_model, load_device=torch.device("cpu"))


def build_tiny_flux():
    """A Flux-style DiT (double + single stream blocks, RoPE, patch 2, 16 latent channels) with random weights,
    from comfy.supported_models.FluxSchnell (no guidance embedding), 64 wide; conditioning from the tiny CLIP
    (context 64, pooled 64)."""
    import torch
    import comfy.model_patcher
    import comfy.supported_models
    from comfy.ldm.flux.model import FluxParams

    dit_config = {"image_model": "flux", "in_channels": 16, "out_channels": 16, "vec_in_dim": 64,
                  "context_in_dim": 64, "hidden_size": 64, "mlp_ratio": 2.0, "num_heads": 2, "depth": 1,
                  "depth_single_blocks": 1, "axes_dim": [8, 12, 12], "theta": 10000, "patch_size": 2,
                  "qkv_bias": True, "guidance_embed": False}
    if "txt_ids_dims" in FluxParams.__dataclass_fields__:
        dit_config["txt_ids_dims"] = []  # newer ComfyUI (0.33.0): what its model detection sets for plain Flux
    config = comfy.supported_models.FluxSchnell(dit_config)
    config.set_inference_dtype(torch.float32, None)
    model = config.get_model({}, "", device=torch.device("cpu"))
    with torch.no_grad():
        for parameter in model.diffusion_model.parameters():
            parameter.fill_(1.0)  # RMSNorm scales (not a torch layer); every torch layer is re-initialised below
    support.reset_weights(model.diffusion_model)
    model.diffusion_model.eval()
    return comfy.model_patcher.ModelPatcher(model, load_device=torch.device("cpu"), offload_device=torch.device("cpu"))
