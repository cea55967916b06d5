"""Benchmark: this pack's guider and patch against ComfyUI's own guiders, in one process, interleaved.

    scripts/host.sh python benchmarks/guiders.py                       # CPU, 64-channel UNet, 6 steps
    python benchmarks/guiders.py --device cuda --model-size sd15 --batch 4 --out /tmp/sd15_b4.md
    benchmarks/gpu_tables.sh                                           # the README's GPU tables

Same seed, sigmas (euler, normal scheduler) and prompts for every run. Models have random weights and are built
from ComfyUI's own classes: `tiny` is a 64-channel SD1.5-architecture UNet (32×32 latent) with the tiny CLIP of the
test suite; `sd15` is SD1.5's UNet (320 channels, channel_mult 1,2,4,4, context 768, 64×64 latent); `sdxl` is
ComfyUI's SDXL UNet config (128×128 latent, pooled output and size conditioning). sd15 and sdxl get random
conditioning tensors of the right shapes (the r_t probe still tokenizes the prompts with the SD1 tokenizer: same
77 positions). Every run goes through ComfyUI's SamplerCustomAdvanced; the patch is sampled by the stock
CFGGuider, which is what KSampler uses.

Settings (s⁺ = cfg, s⁻ = neg_scale; steps numbered from 1, ranges inclusive):
  (a) ordinary negative: the defaults (s⁻ follows cfg)          -> y, ỹ every step            (2 passes)
  (b) full three-way window: s⁻ = 3                             -> y, ỹ, ∅ every step         (3 passes)
  (c) research window: s⁻ = 3 on steps 6–15 of 30               -> 10 steps × 3, 20 steps × 2
  (d) s⁺ = 1 with a late negative: s⁻ = 3 on steps 16–30 of 30  -> 15 steps × 1, 15 steps × 3
  (c) once more with the guidance trace connected, once with the r_t probe connected, and once with the main
  negative's scale dynamic (DynamicNegativeScale at its defaults).
With other step counts the windows keep their share of the run.

Timing: every method runs once per round, in a new random order each round; a GPU is synchronised only before
and after each whole run. Per round, each method's wall time is divided by its reference's in the same round
(paired ratios: a machine that is slower for a while slows both): ComfyUI's guiders against DualCFGGuider; a pack
setting against the stock guiders with the same pass pattern (steps needing 3 passes at DualCFGGuider's time per
step, 2 at CFGGuider's with cfg 6, 1 at CFGGuider's with cfg 1, all from the same round); the trace, probe and dynamic rows
against the same setting without them. Reported: the median and interquartile range of these ratios, and the
ratio of the fastest runs. Peak memory: torch.cuda.max_memory_allocated on CUDA, torch.profiler's CPU allocator
events on the CPU, above what was allocated when the run started, in an untimed run.
"""

from __future__ import annotations

import argparse
import platform
import random
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

PACK_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PACK_ROOT / "tests"))

import support  # noqa: E402  (tests/support.py: finds ComfyUI, loads the pack as ComfyUI does)

CFG = 6.0
NEG_SCALE = 3.0
SEED = 1
# What the diagnostic and dynamic rows add to setting (c), in the table's first column.
ADDED_LABELS = {"c+trace": " + trace", "c+probe": " + r_t probe", "c+dynamic": " + dynamic scale"}
POSITIVE_TEXT, NEGATIVE_TEXT = "a woman in a garden, photo", "glasses, blurry"

TINY_UNET = {
    "model_channels": 64, "in_channels": 4, "out_channels": 4, "num_res_blocks": [1, 1],
    "channel_mult": [1, 2], "transformer_depth": [1, 1], "transformer_depth_output": [1, 1, 1, 1],
    "transformer_depth_middle": 1, "context_dim": 64, "use_linear_in_transformer": False,
    "adm_in_channels": None, "num_head_channels": 16, "image_size": 32, "use_spatial_transformer": True,
    "legacy": False,
}
# ComfyUI's own configs (comfy/model_detection.py, unet_config_from_diffusers_unet: SD15, SDXL).
SD15_UNET = {
    "use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True, "legacy": False,
    "adm_in_channels": None, "in_channels": 4, "model_channels": 320, "num_res_blocks": [2, 2, 2, 2],
    "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0], "channel_mult": [1, 2, 4, 4], "transformer_depth_middle": 1,
    "use_linear_in_transformer": False, "context_dim": 768, "num_heads": 8,
    "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0], "use_temporal_attention": False,
    "use_temporal_resblock": False,
}
SDXL_UNET = {
    "use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True, "legacy": False,
    "num_classes": "sequential", "adm_in_channels": 2816, "in_channels": 4, "model_channels": 320,
    "num_res_blocks": [2, 2, 2], "transformer_depth": [0, 0, 2, 2, 10, 10], "channel_mult": [1, 2, 4],
    "transformer_depth_middle": 10, "use_linear_in_transformer": True, "context_dim": 2048, "num_head_channels": 64,
    "transformer_depth_output": [0, 0, 0, 2, 2, 2, 10, 10, 10], "use_temporal_attention": False,
    "use_temporal_resblock": False,
}
# model size -> (ComfyUI model class name, UNet config, latent side, description)
MODEL_SIZES = {
    "tiny": ("SD15", TINY_UNET, 32, "64-channel SD1.5-architecture UNet"),
    "sd15": ("SD15", SD15_UNET, 64, "SD1.5 UNet (320 channels)"),
    "sdxl": ("SDXL", SDXL_UNET, 128, "SDXL UNet"),
}


def boot(device: str):
    """Import ComfyUI as its main.py would, on the CPU or on the GPU."""
    root = str(support.comfyui_path())
    if root not in sys.path:
        sys.path.insert(0, root)
    from comfy.cli_args import args

    args.cpu = device == "cpu"  # before comfy.model_management is first imported
    import comfy.model_management  # noqa: F401

    support._host_ready = True  # support.boot_comfyui would force the CPU


def build_model(size: str, device, dtype):
    import comfy.model_patcher
    import comfy.supported_models

    class_name, unet_config, _, _ = MODEL_SIZES[size]
    config = getattr(comfy.supported_models, class_name)(dict(unet_config))
    config.set_inference_dtype(dtype, None)
    model = config.get_model({}, "", device=device)
    support.reset_weights(model.diffusion_model)
    model.diffusion_model.eval()
    return comfy.model_patcher.ModelPatcher(model, load_device=device, offload_device=device)


def conditionings(size: str, clip):
    """(positive, negative, empty): CLIP-encoded for tiny, random tensors of the model's shapes otherwise."""
    import torch
    import nodes

    if size == "tiny":
        encode = nodes.CLIPTextEncode().encode
        return tuple(encode(clip, text)[0] for text in (POSITIVE_TEXT, NEGATIVE_TEXT, ""))
    generator = torch.Generator().manual_seed(SEED)
    width = MODEL_SIZES[size][2] * 8

    def conditioning():
        if size == "sd15":
            return [[torch.randn(1, 77, 768, generator=generator), {}]]
        return [[torch.randn(1, 77, 2048, generator=generator),
                 {"pooled_output": torch.randn(1, 1280, generator=generator), "width": width, "height": width,
                  "crop_w": 0, "crop_h": 0, "target_width": width, "target_height": width}]]

    return conditioning(), conditioning(), conditioning()


class PassMeter:
    """APPLY_MODEL wrapper: counts forward calls and evaluations (batch rows). Reads only shapes (no sync)."""

    def __init__(self):
        self.calls = self.rows = 0

    def __call__(self, executor, x, *args, **kwargs):
        self.calls += 1
        self.rows += x.shape[0]
        return executor(x, *args, **kwargs)


@dataclass
class Method:
    label: str
    setting: str  # "stock", a key of the settings, or "<key>+trace" / "<key>+probe"
    make_guider: object  # () -> guider
    reference: str = ""  # what its paired ratio divides by: "dual", "bound" or the label of the same run without
    walls: list = field(default_factory=list)  # seconds, one per round
    calls: int = 0
    rows: int = 0
    peak_bytes: int = 0


def quartiles(values):
    q1, median, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, median, q3


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--model-size", choices=list(MODEL_SIZES), default="tiny")
    parser.add_argument("--dtype", choices=["fp32", "fp16", "bf16"], default=None, help="fp32 on CPU, fp16 on CUDA")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--steps", type=int, default=None, help="30 on CUDA; 6 on the CPU (a short run)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads on the CPU (1: steadiest on a shared machine)")
    parser.add_argument("--latent", type=int, default=None, help="latent side (default: the model size's)")
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds (at least 15 for the stats)")
    parser.add_argument("--out", default=str(PACK_ROOT / "docs" / "benchmark_guiders.md"))
    parser.add_argument("--command", default=None, help="the command line to print in the table's header")
    options = parser.parse_args()
    on_gpu = options.device != "cpu"
    steps = options.steps or (30 if on_gpu else 6)
    dtype_name = options.dtype or ("fp16" if on_gpu else "fp32")
    latent_side = options.latent or MODEL_SIZES[options.model_size][2]

    boot(options.device)
    import torch

    if not on_gpu:
        torch.set_num_threads(options.threads)

    import comfy.patcher_extension
    import comfy.utils
    from comfy_extras import nodes_custom_sampler as custom
    from comfy_extras import nodes_perpneg

    classes = support.pack_module("nodes.negative_guidance")
    trace_nodes = support.pack_module("nodes.trace_nodes")
    comfy.utils.PROGRESS_BAR_ENABLED = False
    device = torch.device(options.device)
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[dtype_name]

    def synchronize():
        if on_gpu:
            torch.cuda.synchronize(device)

    meter = PassMeter()
    model = build_model(options.model_size, device, dtype)
    model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, "benchmark_meter", meter)
    clip = support.build_tiny_clip()  # tiny's text encoder; at every size, the probe's tokenizer
    positive, negative, empty = conditionings(options.model_size, clip)
    latent = {"samples": torch.zeros(options.batch, 4, latent_side, latent_side)}
    sigmas = custom.BasicScheduler.execute(model, "normal", steps, 1.0).result[0]
    sampler = custom.KSamplerSelect.execute("euler").result[0]
    noise = custom.RandomNoise.execute(SEED).result[0]
    probed_model = trace_nodes.make_probe(model, clip, POSITIVE_TEXT, NEGATIVE_TEXT, "woman", "glasses")[0]

    def pack_guider(cfg, neg_scale, start=0.0, end=1.0):
        return lambda: classes.NegativeGuidanceGuider.execute(model, positive, negative, cfg, neg_scale, start, end,
                                                              "steps", "hard", 0.0, empty=empty).result[0]

    def pack_patch(cfg, neg_scale, start=0.0, end=1.0, base=None, traced=False, dynamic=None):
        def make():
            trace = trace_nodes.NegativeGuidanceTrace.execute().result[0] if traced else None
            patched = classes.NegativeGuidance.execute(base or model, neg_scale, start, end, "steps", "hard", 0.0,
                                                       empty=empty, trace=trace, dynamic=dynamic).result[0]
            return custom.CFGGuider.execute(patched, positive, negative, cfg).result[0]
        return make

    # Windows as whole steps: research = steps (S/6, S/2], late = steps (S/2, S] (1-based, inclusive).
    research = (round(steps / 6), steps // 2)
    late = (steps // 2, steps)

    def span(first, last):
        return f"steps {first + 1}–{last} of {steps}"

    settings = {
        "a": ("(a) ordinary negative (defaults), cfg 6", dict(cfg=CFG, neg_scale=-1.0), (0, steps, 0)),
        "b": ("(b) full three-way window, cfg 6, s⁻ 3", dict(cfg=CFG, neg_scale=NEG_SCALE), (0, 0, steps)),
        "c": (f"(c) research window {span(*research)}, cfg 6, s⁻ 3",
              dict(cfg=CFG, neg_scale=NEG_SCALE, start=research[0] / steps, end=research[1] / steps),
              (0, steps - (research[1] - research[0]), research[1] - research[0])),
        "d": (f"(d) s⁺ = 1, s⁻ 3 on {span(*late)}",
              dict(cfg=1.0, neg_scale=NEG_SCALE, start=late[0] / steps, end=late[1] / steps),
              (steps - (late[1] - late[0]), 0, late[1] - late[0])),
    }
    methods = [
        Method("CFGGuider (cfg 6)", "stock", lambda: custom.CFGGuider.execute(model, positive, negative, CFG).result[0],
               "dual"),
        Method("CFGGuider (cfg 1)", "stock", lambda: custom.CFGGuider.execute(model, positive, negative, 1.0).result[0],
               "dual"),
        Method("DualCFGGuider", "stock", lambda: custom.DualCFGGuider.execute(
            model, positive, empty, negative, CFG, NEG_SCALE + 1.0, "regular").result[0], "dual"),
        Method("PerpNegGuider", "stock", lambda: nodes_perpneg.PerpNegGuider.execute(
            model, positive, negative, empty, CFG, 1.0).result[0], "dual"),
    ]
    patch_label = "NegativeGuidance patch + KSampler's CFGGuider"
    for key, (_, kwargs, _) in settings.items():
        methods.append(Method("NegativeGuidanceGuider", key, pack_guider(**kwargs), "bound"))
        methods.append(Method(patch_label, key, pack_patch(**kwargs), "bound"))
    base_c = next(m for m in methods if m.setting == "c" and m.label == patch_label)
    methods.append(Method(patch_label + ", trace connected", "c+trace",
                          pack_patch(**settings["c"][1], traced=True), base_c.label + "|c"))
    methods.append(Method(patch_label + ", r_t probe connected", "c+probe",
                          pack_patch(**settings["c"][1], base=probed_model), base_c.label + "|c"))
    # The dynamic negative's own work (its per-sample filter) on the same window and passes.
    dynamic_settings = support.pack_module("nodes.dynamic").DynamicNegative()
    methods.append(Method(patch_label + ", dynamic scale", "c+dynamic",
                          pack_patch(**settings["c"][1], dynamic=dynamic_settings), base_c.label + "|c"))

    def run(method):
        guider = method.make_guider()
        return custom.SamplerCustomAdvanced.execute(noise, guider, sampler, sigmas, latent).result[0]["samples"]

    def peak_bytes(method) -> int:
        if on_gpu:
            synchronize()
            torch.cuda.reset_peak_memory_stats(device)
            start = torch.cuda.memory_allocated(device)
            run(method)
            synchronize()
            return torch.cuda.max_memory_allocated(device) - start
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            run(method)
        records = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
                         key=lambda e: e.start_ns())
        live = peak = 0
        for record in records:  # + on allocation, - on free, in time order
            live += record.nbytes()
            peak = max(peak, live)
        return peak

    # Warm-up, pass counts and peak memory (untimed).
    for method in methods:
        run(method)
        meter.calls = meter.rows = 0
        method.peak_bytes = peak_bytes(method)
        method.calls, method.rows = meter.calls, meter.rows

    shuffler = random.Random(0)
    started = time.perf_counter()
    for _ in range(options.rounds):
        order = methods[:]
        shuffler.shuffle(order)
        for method in order:
            synchronize()
            start = time.perf_counter()
            run(method)
            synchronize()
            method.walls.append(time.perf_counter() - start)
    total_s = time.perf_counter() - started

    stock = {m.label: m for m in methods if m.setting == "stock"}
    by_passes = {1: stock["CFGGuider (cfg 1)"], 2: stock["CFGGuider (cfg 6)"], 3: stock["DualCFGGuider"]}
    by_key = {(m.label, m.setting): m for m in methods}

    def reference_walls(method) -> list:
        """The reference's wall time in each round (see the module docstring)."""
        if method.reference == "dual":
            return stock["DualCFGGuider"].walls
        if method.reference == "bound":
            pattern = settings[method.setting][2]
            return [sum(count * by_passes[p].walls[r] for p, count in zip((1, 2, 3), pattern)) / steps
                    for r in range(options.rounds)]
        label, setting = method.reference.split("|")
        return by_key[(label, setting)].walls

    reference_names = {"dual": "DualCFGGuider", "bound": "ComfyUI's guiders, same passes"}
    lines = [
        "| setting | route | evaluations / run (forward calls) | fewest | fastest run | paired ratio: median "
        "[IQR] | ratio of fastest runs | against | peak memory |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for method in methods:
        reference = reference_walls(method)
        ratios = [w / r for w, r in zip(method.walls, reference)]
        q1, median, q3 = quartiles(ratios)
        if method.setting == "stock":
            setting, fewest = "ComfyUI", ""
        else:
            key = method.setting.split("+")[0]
            setting = settings[key][0] + ADDED_LABELS.get(method.setting, "")
            fewest = str(sum(p * count for p, count in zip((1, 2, 3), settings[key][2])) * options.batch)
        against = reference_names.get(method.reference, "same without")
        lines.append(
            f"| {setting} | {method.label} | {method.rows} ({method.calls}) | {fewest} | "
            f"{min(method.walls) * 1000:.0f} ms | {median:.3f} [{q1:.3f}–{q3:.3f}] | "
            f"{min(method.walls) / min(reference):.3f} | {against} | {method.peak_bytes / 2**20:.1f} MiB |")

    model_text = MODEL_SIZES[options.model_size][3]
    if on_gpu:
        machine = f"{torch.cuda.get_device_name(device)}, CUDA {torch.version.cuda}"
    else:
        machine = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, CPU"
    command = options.command or "scripts/host.sh python benchmarks/guiders.py " + " ".join(sys.argv[1:])
    header = [
        f"# Negative Guidance against ComfyUI's own guiders ({options.model_size}, batch {options.batch}, "
        f"{options.device})",
        "",
        f"Command: `{command.strip()}` ({machine}, torch {torch.__version__}). {model_text} with random weights, "
        f"{dtype_name}, {latent_side}×{latent_side} latent, batch {options.batch}, {steps} euler steps, normal "
        f"scheduler, same seed for every run; {options.rounds} interleaved rounds in random order "
        f"({total_s:.0f} s of timed runs).",
        "",
        "- evaluations: conditionings × batch rows through the model per run (counted at the APPLY_MODEL wrapper); "
        "fewest: the fewest the setting allows.",
        "- paired ratio: this row's wall time over its reference's in the same round, median and interquartile "
        "range over the rounds. Against: DualCFGGuider for ComfyUI's guiders; for the pack, ComfyUI's guiders with "
        "the same pass pattern (steps needing 3 passes at DualCFGGuider's time per step, 2 at CFGGuider's with "
        "cfg 6, 1 at CFGGuider's with cfg 1, same round); for the trace, probe and dynamic rows, the same setting and "
        "route without them.",
        "- ratio of fastest runs: this row's fastest run over its reference's fastest.",
        "- peak memory: " + ("torch.cuda.max_memory_allocated" if on_gpu else
                             "torch.profiler CPU allocator events (profile_memory)")
        + ", above what was allocated when the run started, in an untimed run.",
        "",
    ]
    text = "\n".join(header + lines) + "\n"
    print(text)
    out = Path(options.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
