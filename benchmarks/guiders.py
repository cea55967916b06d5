"""Benchmark: this pack's guider and patch against ComfyUI's own guiders, in one process, interleaved.

    scripts/host.sh python benchmarks/guiders.py [--repeats 9] [--out docs/benchmark_guiders.md]

Same seed, sigmas (30 euler steps, normal scheduler) and prompts for every run, on a 64-channel SD1.5-architecture
UNet with random weights (32×32 latent, batch 1) and the tiny CLIP of the test suite, on the CPU. Every run goes
through ComfyUI's SamplerCustomAdvanced; the patch is sampled by the stock CFGGuider, which is what KSampler uses.

Settings (s⁺ = cfg, s⁻ = neg_scale):
  (a) ordinary negative: the defaults (s⁻ follows cfg)          -> y, ỹ every step            (2 passes)
  (b) full three-way window: s⁻ = 3                             -> y, ỹ, ∅ every step         (3 passes)
  (c) research window: s⁻ = 3 on steps 5-15 of 30               -> 10 steps × 3, 20 steps × 2
  (d) s⁺ = 1 with a late negative: s⁻ = 3 on steps 15-30        -> 15 steps × 1, 15 steps × 3

Reported per row: model evaluations per run (conditionings × batch, counted at the APPLY_MODEL wrapper) and
forward calls; median wall time as a ratio to DualCFGGuider's; the bound that ComfyUI's own guiders set for the same
pass pattern (steps needing 3 passes at DualCFGGuider's time per step, 2 at CFGGuider's, 1 at CFGGuider's with
cfg 1), all measured in this run; peak tensor memory (torch.profiler's CPU allocator events, in a separate untimed
run); the time outside the model forward per step (APPLY_MODEL wrapper timer), and the pack's own overhead: that
time minus the same quantity of ComfyUI's guiders for the same pass pattern, as a share of a step.
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

import support  # noqa: E402  (tests/support.py: boots ComfyUI on the CPU, loads the pack as ComfyUI does)

STEPS = 30
CFG = 6.0
NEG_SCALE = 3.0
SEED = 1


def build_unet_64():
    """support.build_tiny_sd15 with 64 channels (the issue's benchmark model)."""
    import torch
    import comfy.model_patcher
    import comfy.supported_models

    unet_config = {
        "model_channels": 64, "in_channels": 4, "out_channels": 4, "num_res_blocks": [1, 1],
        "channel_mult": [1, 2], "transformer_depth": [1, 1], "transformer_depth_output": [1, 1, 1, 1],
        "transformer_depth_middle": 1, "context_dim": 64, "use_linear_in_transformer": False,
        "adm_in_channels": None, "num_head_channels": 16,
        "image_size": 32, "use_spatial_transformer": True, "legacy": False,
    }
    config = comfy.supported_models.SD15(unet_config)
    config.set_inference_dtype(torch.float32, None)
    model = config.get_model({}, "", device=torch.device("cpu"))
    support.reset_weights(model.diffusion_model)
    model.diffusion_model.eval()
    return comfy.model_patcher.ModelPatcher(model, load_device=torch.device("cpu"), offload_device=torch.device("cpu"))


class ForwardMeter:
    """APPLY_MODEL wrapper: counts forward calls and evaluations (batch rows) and times the forward itself."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.calls = 0
        self.rows = 0
        self.seconds = 0.0

    def __call__(self, executor, x, *args, **kwargs):
        start = time.perf_counter()
        out = executor(x, *args, **kwargs)
        self.seconds += time.perf_counter() - start
        self.calls += 1
        self.rows += x.shape[0]
        return out


@dataclass
class Method:
    label: str
    setting: str  # "stock" or a, b, c, d
    make_guider: object  # () -> guider
    pattern: tuple = ()  # number of steps needing (1, 2, 3) passes, for the bound
    walls: list = field(default_factory=list)
    forwards: list = field(default_factory=list)
    calls: int = 0
    rows: int = 0
    peak_bytes: int = 0


def peak_tensor_bytes(run) -> int:
    """Peak of live CPU tensor memory during run(), above what was live when it started (torch.profiler's
    allocator events: + on allocation, - on free, in time order)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        run()
    records = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
                     key=lambda e: e.start_ns())
    live = peak = 0
    for record in records:
        live += record.nbytes()
        peak = max(peak, live)
    return peak


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--out", default=str(PACK_ROOT / "docs" / "benchmark_guiders.md"))
    options = parser.parse_args()

    support.boot_comfyui()
    import torch

    import comfy.patcher_extension
    import comfy.utils
    import nodes
    from comfy_extras import nodes_custom_sampler as custom
    from comfy_extras import nodes_perpneg

    classes = support.pack_module("nodes.negative_guidance")
    comfy.utils.PROGRESS_BAR_ENABLED = False

    meter = ForwardMeter()
    model = build_unet_64()
    model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, "benchmark_meter", meter)
    clip = support.build_tiny_clip()
    encode = nodes.CLIPTextEncode().encode
    positive, negative, empty = (encode(clip, text)[0] for text in ("a woman in a garden, photo", "glasses, blurry", ""))
    latent = {"samples": torch.zeros(1, 4, 32, 32)}
    sigmas = custom.BasicScheduler.execute(model, "normal", STEPS, 1.0).result[0]
    sampler = custom.KSamplerSelect.execute("euler").result[0]
    noise = custom.RandomNoise.execute(SEED).result[0]

    def pack_guider(cfg, neg_scale, start=0.0, end=1.0):
        return lambda: classes.NegativeGuidanceGuider.execute(model, positive, negative, cfg, neg_scale, start, end,
                                                              "steps", "hard", 0.0, empty=empty).result[0]

    def pack_patch(cfg, neg_scale, start=0.0, end=1.0):
        patched = classes.NegativeGuidance.execute(model, neg_scale, start, end, "steps", "hard", 0.0,
                                                   empty=empty).result[0]
        return lambda: custom.CFGGuider.execute(patched, positive, negative, cfg).result[0]

    research = (5 / 30, 15 / 30)
    late = (15 / 30, 1.0)
    settings = {
        "a": ("(a) ordinary negative (defaults), cfg 6", dict(cfg=CFG, neg_scale=-1.0), (0, STEPS, 0)),
        "b": ("(b) full three-way window, cfg 6, s⁻ 3", dict(cfg=CFG, neg_scale=NEG_SCALE), (0, 0, STEPS)),
        "c": ("(c) research window steps 5-15 of 30, cfg 6, s⁻ 3",
              dict(cfg=CFG, neg_scale=NEG_SCALE, start=research[0], end=research[1]), (0, 20, 10)),
        "d": ("(d) s⁺ = 1, s⁻ 3 on steps 15-30", dict(cfg=1.0, neg_scale=NEG_SCALE, start=late[0], end=late[1]),
              (15, 0, 15)),
    }
    methods = [
        Method("CFGGuider (cfg 6)", "stock", lambda: custom.CFGGuider.execute(model, positive, negative, CFG).result[0]),
        Method("CFGGuider (cfg 1)", "stock", lambda: custom.CFGGuider.execute(model, positive, negative, 1.0).result[0]),
        Method("DualCFGGuider", "stock", lambda: custom.DualCFGGuider.execute(
            model, positive, empty, negative, CFG, NEG_SCALE + 1.0, "regular").result[0]),
        Method("PerpNegGuider", "stock", lambda: nodes_perpneg.PerpNegGuider.execute(
            model, positive, negative, empty, CFG, 1.0).result[0]),
    ]
    for key, (_, kwargs, pattern) in settings.items():
        methods.append(Method("NegativeGuidanceGuider", key, pack_guider(**kwargs), pattern))
        methods.append(Method("NegativeGuidance patch + KSampler's CFGGuider", key, pack_patch(**kwargs), pattern))

    def run(method):
        guider = method.make_guider()
        return custom.SamplerCustomAdvanced.execute(noise, guider, sampler, sigmas, latent).result[0]["samples"]

    # Warm-up, pass counts, and peak memory (untimed).
    for method in methods:
        run(method)
        meter.reset()
        method.peak_bytes = peak_tensor_bytes(lambda: run(method))
        method.calls, method.rows = meter.calls, meter.rows

    shuffler = random.Random(0)
    for _ in range(options.repeats):
        order = methods[:]
        shuffler.shuffle(order)
        for method in order:
            meter.reset()
            start = time.perf_counter()
            run(method)
            method.walls.append(time.perf_counter() - start)
            method.forwards.append(meter.seconds)

    def wall(method):
        # The fastest round: other processes on a shared machine only ever add time (medians were skewed by 2-5x
        # under load on a 2-core box; the outside-forward time below stays a median).
        return min(method.walls)

    def outside(method):
        return statistics.median(w - f for w, f in zip(method.walls, method.forwards))

    stock = {m.label: m for m in methods if m.setting == "stock"}
    by_passes = {1: stock["CFGGuider (cfg 1)"], 2: stock["CFGGuider (cfg 6)"], 3: stock["DualCFGGuider"]}
    dual_wall = wall(stock["DualCFGGuider"])

    def bound(pattern, measure):
        return sum(count * measure(by_passes[passes]) for passes, count in zip((1, 2, 3), pattern))

    lines = [
        "| setting | route | evaluations / run (forward calls) | minimum | wall / DualCFGGuider | bound | "
        "vs bound | peak tensor memory | outside forward / step | pack's own overhead (% of a step) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]

    def row(setting, method, minimum="", bound_ratio=None, own=""):
        step_ms = wall(method) / STEPS * 1000
        outside_ms = outside(method) / STEPS * 1000
        vs = f"{(wall(method) / bound_ratio / dual_wall - 1) * 100:+.1f} %" if bound_ratio else ""
        lines.append(
            f"| {setting} | {method.label} | {method.rows} ({method.calls}) | {minimum} | "
            f"{wall(method) / dual_wall:.3f} | {f'{bound_ratio:.3f}' if bound_ratio else ''} | {vs} | "
            f"{method.peak_bytes / 2**20:.1f} MiB | {outside_ms:.2f} ms ({outside_ms / step_ms * 100:.1f} %) | {own} |")

    for label, method in stock.items():
        row("ComfyUI", method)
    for key, (title, _, pattern) in settings.items():
        minimum = sum(passes * count for passes, count in zip((1, 2, 3), pattern))
        bound_ratio = bound(pattern, lambda m: wall(m) / STEPS) / dual_wall
        bound_outside = bound(pattern, lambda m: outside(m) / STEPS)
        for method in (m for m in methods if m.setting == key):
            own = (outside(method) - bound_outside) / (wall(method) / STEPS) * 100
            row(title, method, str(minimum), bound_ratio, f"{own:+.2f} %")

    header = [
        "# Negative Guidance against ComfyUI's own guiders",
        "",
        f"Command: `scripts/host.sh python benchmarks/guiders.py --repeats {options.repeats}` "
        f"({platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, torch "
        f"{torch.__version__}, CPU). 64-channel SD1.5-architecture UNet with random weights, 32×32 latent, batch 1, "
        f"{STEPS} euler steps, normal scheduler, same seed for every run, {options.repeats} interleaved rounds in "
        "random order; wall time: fastest round, outside forward: median. DualCFGGuider fastest: "
        f"{dual_wall * 1000:.0f} ms per run.",
        "",
        "- evaluations: conditionings × batch rows through the model per run (counted at the APPLY_MODEL wrapper); "
        "minimum: the fewest the setting allows.",
        "- bound: steps needing 3 passes at DualCFGGuider's time per step, 2 at CFGGuider's (cfg 6), 1 at "
        "CFGGuider's with cfg 1, as a ratio to DualCFGGuider; vs bound: this row's wall time against it.",
        "- peak tensor memory: torch.profiler CPU allocator events (profile_memory), peak above the start of the run, "
        "one separate untimed run (not tracemalloc: torch's allocations bypass it).",
        "- outside forward: wall time minus the time inside the model's forward (APPLY_MODEL wrapper timer), per "
        "step; pack's own overhead: that, minus the same for ComfyUI's guiders with the same pass pattern, as a "
        "share of this row's time per step.",
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
