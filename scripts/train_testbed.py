"""Train the testbed (testbed/model.py) on the scene generator (testbed/scenes.py): reproduces testbed/testbed.safetensors.

    scripts/host.sh python scripts/train_testbed.py                 # the shipped run (see testbed/MODEL_CARD.md)
    scripts/host.sh python scripts/train_testbed.py --steps 3 --out out/smoke   # a smoke run

UNet and text encoder are trained together with the v-prediction loss through ComfyUI's own `BaseModel.apply_model`
and `SDClipModel.forward`, so that what is trained is exactly what ComfyUI samples from. Two threads by default, as
the shipped run used (both cores of the 2-core machine, 0.55 s per step); pass `--threads 1` when something else
runs beside it, since two threads spin against a busy second core. A checkpoint every 250 steps
(out/testbed/) lets an interrupted run resume where it stopped; each step's batch depends on the seed and the
step only, so a resumed run draws the same data.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

PACK_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PACK_ROOT / "tests"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from support import boot_comfyui, load_pack, load_pure_module, pack_module, reset_weights  # noqa: E402


def out_of_place_clip_layers():
    """ComfyUI's CLIPLayer adds its residuals in place, which autograd refuses; the same maths out of place."""
    import comfy.clip_model

    def forward(self, x, mask=None, optimized_attention=None):
        x = x + self.self_attn(self.layer_norm1(x), mask, optimized_attention)
        return x + self.mlp(self.layer_norm2(x))

    comfy.clip_model.CLIPLayer.forward = forward


def token_ids(clip, caption: str, cache: dict) -> list[int]:
    if caption not in cache:
        cache[caption] = [token for token, _ in clip.tokenize(caption)["l"][0]]
    return cache[caption]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ema", type=float, default=0.999)
    parser.add_argument("--out", type=Path, default=PACK_ROOT / "out" / "testbed",
                        help="checkpoints and the training log; the weights go to testbed/ unless --weights")
    parser.add_argument("--weights", type=Path, default=None)
    parser.add_argument("--plot", action="store_true",
                        help="only redraw the loss curve beside the weights from --out's training_log.json")
    parser.add_argument("--export", action="store_true",
                        help="write the averaged weights of the last checkpoint to --weights and stop (a preview)")
    args = parser.parse_args()
    shipped = load_pure_module("testbed/model.py", "negguide_testbed_model_paths").WEIGHTS
    weights_path = args.weights or (shipped if args.out == parser.get_default("out")
                                    else args.out / "testbed.safetensors")
    if args.plot:
        publish_log(args.out / "training_log.json", weights_path.parent)
        return 0
    torch.set_num_threads(args.threads)
    boot_comfyui()
    load_pack()
    testbed_model = pack_module("testbed.model")
    scenes = pack_module("testbed.scenes")
    out_of_place_clip_layers()
    args.out.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(args.seed)
    unet = testbed_model.build_unet()
    clip = testbed_model.build_clip()
    text_model = clip.cond_stage_model.clip_l
    reset_weights(unet.diffusion_model)
    torch.manual_seed(args.seed + 1)
    reset_weights(clip.cond_stage_model)
    modules = torch.nn.ModuleDict({"unet": unet.diffusion_model, "clip": clip.cond_stage_model})
    modules.train()
    modules.requires_grad_(True)  # newer ComfyUI (0.33.0) makes its layers' parameters without gradients
    parameters = list(modules.parameters())
    optimizer = torch.optim.AdamW(parameters, lr=args.lr, weight_decay=0.01)
    warmup = 200
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup) * (
        0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(step, args.steps) / args.steps))))
    ema = [p.detach().clone() for p in parameters]
    sigmas = unet.model_sampling.sigmas.float()
    log = {"steps": [], "loss": [], "seconds": []}
    start_step = 0
    checkpoint = args.out / "checkpoint.pt"
    if checkpoint.is_file():
        state = torch.load(checkpoint, weights_only=False)
        modules.load_state_dict(state["modules"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        for mine, saved in zip(ema, state["ema"]):
            mine.copy_(saved)
        log, start_step = state["log"], state["step"]
        print(f"resuming at step {start_step}", flush=True)
    if args.export:
        args.steps = start_step

    cache: dict = {}
    started = time.time() - (log["seconds"][-1] if log["seconds"] else 0.0)
    running = []
    for step in range(start_step, args.steps):
        rng = np.random.default_rng([args.seed, step])
        latents, captions = scenes.training_batch(rng, args.batch)
        x0 = torch.from_numpy(latents)
        generator = torch.Generator().manual_seed(args.seed * 1_000_003 + step)
        timesteps = torch.randint(0, len(sigmas), (args.batch,), generator=generator)
        sigma = sigmas[timesteps]
        noise = torch.randn(x0.shape, generator=generator)
        context, _ = text_model([token_ids(clip, caption, cache) for caption in captions])
        denoised = unet.apply_model(x0 + sigma[:, None, None, None] * noise, sigma, c_crossattn=context)
        # v-prediction's loss, written on the denoised output: ||v - v*||² = (σ² + 1)/σ² · ||D - x0||².
        weight = (sigma ** 2 + 1) / sigma ** 2
        loss = (weight[:, None, None, None] * (denoised - x0) ** 2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        schedule.step()
        decay = min(args.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for average, parameter in zip(ema, parameters):
                average.lerp_(parameter.detach(), 1 - decay)
        running.append(loss.item())
        if (step + 1) % 50 == 0 or step + 1 == args.steps:
            log["steps"].append(step + 1)
            log["loss"].append(float(np.mean(running)))
            log["seconds"].append(time.time() - started)
            running = []
            print(f"step {step + 1}/{args.steps}  loss {log['loss'][-1]:.4f}  "
                  f"{log['seconds'][-1] / 60:.1f} min", flush=True)
        if (step + 1) % 250 == 0 and step + 1 < args.steps:
            torch.save({"modules": modules.state_dict(), "optimizer": optimizer.state_dict(),
                        "schedule": schedule.state_dict(), "ema": ema, "log": log, "step": step + 1},
                       checkpoint.with_suffix(".tmp"))
            checkpoint.with_suffix(".tmp").replace(checkpoint)

    with torch.no_grad():
        for average, parameter in zip(ema, parameters):
            parameter.copy_(average)
    save(modules, weights_path, testbed_model)
    (args.out / "training_log.json").write_text(json.dumps({**log, "args": {
        k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}}, indent=1))
    print(f"wrote {weights_path}", flush=True)
    if not args.export:
        publish_log(args.out / "training_log.json", weights_path.parent)
    return 0


def publish_log(log_path: Path, folder: Path) -> None:
    """The training log and its loss curve beside the weights (the model card shows both)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    log = json.loads(log_path.read_text())
    if folder.resolve() != log_path.parent.resolve():
        (folder / "training_log.json").write_text(json.dumps(log, indent=1))
    fig, axis = plt.subplots(figsize=(6, 3.2))
    axis.plot(log["steps"], log["loss"])
    axis.set_yscale("log")
    axis.set_xlabel("step (batch 64)")
    axis.set_ylabel("v-prediction loss (mean of 50 steps)")
    threads = log.get("args", {}).get("threads", 1)
    axis.set_title(f"Testbed training: {log['seconds'][-1] / 60:.0f} min on {threads} CPU thread{'s' * (threads > 1)}")
    axis.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(folder / "loss_curve.png", dpi=100)
    plt.close(fig)


def save(modules, path: Path, testbed_model) -> None:
    import safetensors.torch

    state = {testbed_model.UNET_PREFIX + k: v for k, v in modules["unet"].state_dict().items()}
    state.update({testbed_model.CLIP_PREFIX + k: v for k, v in modules["clip"].state_dict().items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    safetensors.torch.save_file({k: v.detach().half().contiguous() for k, v in state.items()}, str(path),
                                metadata={"format": "pt", "negguide_testbed": "1"})


if __name__ == "__main__":
    sys.exit(main())
