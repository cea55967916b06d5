"""What one host–device synchronisation per model evaluation costs on a GPU, and that the pack makes none where its
windows never change.

ComfyUI's euler loop makes no synchronisation per step, so the CPU queues the next kernels while the GPU still runs
the last ones. Reading the sigma as a Python number (the pack does it where a window opens or closes during the
run) makes the CPU wait for the GPU at every evaluation. Four methods, interleaved, same seed, SamplerCustomAdvanced:

  CFGGuider cfg 6                           stock, no synchronisation per evaluation
  CFGGuider cfg 6 + sigma read              stock plus a PREDICT_NOISE wrapper that reads the sigma (one sync)
  pack, ordinary negative                   NegativeGuidanceGuider at its defaults: same passes, no sigma read
  pack, ordinary negative, window to 0.999  the same, with a window that reads the sigma (same passes)

    python benchmarks/sync_cost.py --device cuda --model-size sdxl      # fp16, 20 euler steps, 15 rounds
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import guiders  # noqa: E402  (the benchmark's models, conditionings and boot)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--model-size", choices=list(guiders.MODEL_SIZES), default="sdxl")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=15)
    options = parser.parse_args()
    guiders.boot(options.device)
    import torch

    import comfy.patcher_extension
    import comfy.utils
    from comfy_extras import nodes_custom_sampler as custom

    classes = guiders.support.pack_module("nodes.negative_guidance")
    comfy.utils.PROGRESS_BAR_ENABLED = False
    device = torch.device(options.device)
    on_gpu = device.type == "cuda"
    model = guiders.build_model(options.model_size, device, torch.float16 if on_gpu else torch.float32)
    clip = guiders.support.build_tiny_clip() if options.model_size == "tiny" else None
    positive, negative, empty = guiders.conditionings(options.model_size, clip)
    side = guiders.MODEL_SIZES[options.model_size][2]
    latent = {"samples": torch.zeros(1, 4, side, side)}
    sigmas = custom.BasicScheduler.execute(model, "normal", options.steps, 1.0).result[0]
    sampler = custom.KSamplerSelect.execute("euler").result[0]
    noise = custom.RandomNoise.execute(guiders.SEED).result[0]

    def read_sigma(executor, x, timestep, *args, **kwargs):
        float(timestep.reshape(-1)[0])  # what the pack does where a window needs the sigma
        return executor(x, timestep, *args, **kwargs)

    reading = model.clone()
    reading.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.PREDICT_NOISE, "sync_cost", read_sigma)

    def pack(end):
        return classes.NegativeGuidanceGuider.execute(model, positive, negative, guiders.CFG, -1.0, 0.0, end, "steps",
                                                      "hard", 0.0, empty=empty).result[0]

    methods = {
        "CFGGuider cfg 6": lambda: custom.CFGGuider.execute(model, positive, negative, guiders.CFG).result[0],
        "CFGGuider cfg 6 + sigma read": lambda: custom.CFGGuider.execute(reading, positive, negative,
                                                                         guiders.CFG).result[0],
        "pack, ordinary negative (no sigma read)": lambda: pack(1.0),
        "pack, ordinary negative, window to 0.999 (sigma read)": lambda: pack(0.999),
    }

    def run(make):
        custom.SamplerCustomAdvanced.execute(noise, make(), sampler, sigmas, latent)

    def synchronize():
        if on_gpu:
            torch.cuda.synchronize(device)

    for make in methods.values():  # warm-up
        run(make)
    walls = {name: [] for name in methods}
    shuffler = random.Random(0)
    for _ in range(options.rounds):
        order = list(methods)
        shuffler.shuffle(order)
        for name in order:
            synchronize()
            start = time.perf_counter()
            run(methods[name])
            synchronize()
            walls[name].append(time.perf_counter() - start)

    machine = torch.cuda.get_device_name(device) if on_gpu else "CPU"
    reference = walls["CFGGuider cfg 6"]
    print(f"## One sigma read per evaluation ({options.model_size}, batch 1, {options.steps} euler steps, "
          f"{machine}, torch {torch.__version__}, {options.rounds} interleaved rounds)\n")
    print("| method | fastest run | median run | paired ratio to CFGGuider cfg 6: median [IQR] |")
    print("|---|---:|---:|---|")
    for name, values in walls.items():
        ratios = [a / b for a, b in zip(values, reference)]
        q1, median, q3 = statistics.quantiles(ratios, n=4, method="inclusive")
        print(f"| {name} | {min(values) * 1000:.0f} ms | {statistics.median(values) * 1000:.0f} ms | "
              f"{median:.3f} [{q1:.3f}–{q3:.3f}] |")


if __name__ == "__main__":
    main()
