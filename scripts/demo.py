"""The pack's main job, headless, on an embedded default: `scripts/host.sh demo`.

Starts the pinned ComfyUI server (main.py --cpu on a free loopback port) with this pack installed, and queues one
prompt through /prompt: the pack's own trained testbed (Negative Guidance Testbed node, testbed/MODEL_CARD.md) draws
"a big red circle on grass, left" for the same 8 seeds three times: positive only, with the ordinary negative
prompt "a hat" (stock KSampler), and with the negative on steps 6-15 of 30 only (Negative Guidance patch, s⁻ 8).
Writes a labelled contact sheet, the three image batches and a printout (hat rates read by the testbed's reader,
the delayed negative's schedule) under out/demo/. No model download, no GPU, no browser; about a minute.
"""

from __future__ import annotations

import io
import json
import shutil
import sys
import time
from pathlib import Path

PACK_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PACK_ROOT / "tests"))

import numpy as np  # noqa: E402

from e2e.comfy_server import ComfyServer  # noqa: E402
from support import load_pure_module  # noqa: E402

OUT_DIR = PACK_ROOT / "out" / "demo"
POSITIVE, NEGATIVE, SEEDS = "a big red circle on grass, left", "a hat", 8
SAMPLER = {"seed": 0, "steps": 30, "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}
DELAYED = {"neg_scale": 8.0, "neg_start": 5 / 30, "neg_end": 0.5, "window_unit": "steps", "ramp": "hard",
           "ramp_width": 0.0}
ROWS = {"positive only": "positive_only", "ordinary negative 'a hat'": "ordinary_negative",
        "'a hat' on steps 6-15 (s⁻ 8)": "delayed_negative"}


def demo_prompt() -> dict:
    """The API-format prompt: one testbed, three KSamplers on the same seeds, one SaveImage each."""
    prompt = {
        "testbed": {"class_type": "NegativeGuidanceTestbed", "inputs": {}},
        "positive": {"class_type": "CLIPTextEncode", "inputs": {"text": POSITIVE, "clip": ["testbed", 1]}},
        "negative": {"class_type": "CLIPTextEncode", "inputs": {"text": NEGATIVE, "clip": ["testbed", 1]}},
        "empty": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["testbed", 1]}},
        "latent": {"class_type": "EmptyLatentImage", "inputs": {"width": 128, "height": 128, "batch_size": SEEDS}},
        "delayed": {"class_type": "NegativeGuidance",
                    "inputs": {"model": ["testbed", 0], "empty": ["empty", 0], **DELAYED}},
    }
    routes = {"positive_only": (["testbed", 0], "empty"), "ordinary_negative": (["testbed", 0], "negative"),
              "delayed_negative": (["delayed", 0], "negative")}
    for name, (model, negative) in routes.items():
        prompt[f"sample_{name}"] = {"class_type": "KSampler", "inputs": {
            "model": model, "positive": ["positive", 0], "negative": [negative, 0], "latent_image": ["latent", 0],
            **SAMPLER}}
        prompt[f"decode_{name}"] = {"class_type": "VAEDecode",
                                    "inputs": {"samples": [f"sample_{name}", 0], "vae": ["testbed", 2]}}
        prompt[f"save_{name}"] = {"class_type": "SaveImage", "inputs": {"images": [f"decode_{name}", 0],
                                                                        "filename_prefix": f"negguide_demo_{name}"}}
    return prompt


def schedule_table(patch_inputs: dict, sampler_inputs: dict) -> list[str]:
    """Per step: the window weight w and the negative scale s⁻·w the guidance uses (nodes/schedule.py)."""
    schedule = load_pure_module("nodes/schedule.py", "negguide_schedule_demo")
    window = schedule.Window(patch_inputs["neg_start"], patch_inputs["neg_end"], patch_inputs["ramp"],
                             patch_inputs["ramp_width"])
    settings = schedule.GuidanceSettings(sampler_inputs["cfg"],
                                         (schedule.NegativeTerm.main(patch_inputs["neg_scale"], window),))
    negative_scale = settings.scales[0]
    steps = sampler_inputs["steps"]
    lines = [f"cfg (s+) = {settings.cfg}, neg_scale = {patch_inputs['neg_scale']} -> s- = {negative_scale}",
             f"window [{window.start}, {window.end}) in {patch_inputs['window_unit']}, ramp {window.ramp}",
             "step  progress  w     s-*w   (steps numbered from 1; progress = fraction of steps done before it)"]
    for step in range(steps):
        weight = window.weight(step / steps)
        bar = "#" * round(weight * 20)
        lines.append(f"{step + 1:4d}  {step / steps:8.4f}  {weight:4.2f}  {negative_scale * weight:5.2f}  {bar}")
    return lines


def main() -> int:
    from PIL import Image

    import testbed_support

    scenes = load_pure_module("testbed/scenes.py", "negguide_scenes_demo")
    base_dir = OUT_DIR / "comfyui-base"
    shutil.rmtree(base_dir, ignore_errors=True)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    print(f"Starting ComfyUI (log: {base_dir / 'server.log'}) ...", flush=True)
    rows = {}
    with ComfyServer(base_dir) as server:
        started = time.monotonic()
        entry = server.run_prompt(demo_prompt())
        elapsed = time.monotonic() - started
        if entry["status"].get("status_str") != "success":
            print(json.dumps(entry["status"], indent=1), file=sys.stderr)
            return 1
        for label, name in ROWS.items():
            images = entry["outputs"][f"save_{name}"]["images"]
            pictures = []
            for index, image in enumerate(images):
                data = server.fetch_output(image)
                (OUT_DIR / f"{name}_{index}.png").write_bytes(data)
                pictures.append(np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.float32) / 255.0)
            rows[label] = np.stack(pictures)[:, ::8, ::8, :]
    sheet = OUT_DIR / "contact_sheet.png"
    testbed_support.contact_sheet(rows, sheet, columns=SEEDS)
    rates = {label: np.mean([scenes.read(p).hat for p in pictures]) for label, pictures in rows.items()}
    lines = [
        "Model: the Negative Guidance Testbed (testbed/MODEL_CARD.md), 128x128 image from a 16x16 latent",
        f"Prompt: '{POSITIVE}', cfg {SAMPLER['cfg']}, {SAMPLER['steps']} steps {SAMPLER['sampler_name']}, "
        f"seeds: one batch of {SEEDS} (noise seed {SAMPLER['seed']}); sampled in {elapsed:.1f} s",
        *(f"  {label:32s} hat in {round(rate * SEEDS)} of {SEEDS}" for label, rate in rates.items()),
        f"({SEEDS} seeds: one standard error is up to 0.18; docs/testbed.md has the rates on 128 seeds.)",
        "The delayed negative's schedule:",
        *schedule_table(DELAYED, SAMPLER),
        f"Contact sheet: {sheet.relative_to(PACK_ROOT)} (rows: {', '.join(ROWS)}; the same seed in each column)",
    ]
    report = "\n".join(lines) + "\n"
    (OUT_DIR / "demo.txt").write_text(report)
    print(report, end="")
    print(f"Printout saved to {(OUT_DIR / 'demo.txt').relative_to(PACK_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
