"""The pack's main job, headless, on an embedded default: `scripts/host.sh demo`.

Starts the pinned ComfyUI server (main.py --cpu on a free loopback port) with this pack installed and the
test-only tiny-model checkpoint node linked in, queues example workflow 1 (SD1.5, KSampler + NegativeGuidance,
negative prompt on steps 6-15 of 30) through /prompt with tiny random-weight models in place of the checkpoint,
and writes the image and a printout of the schedule under out/demo/. No model download, no GPU, no browser.
The image is noise-like: the weights are random. With a real checkpoint, load workflows/ in ComfyUI instead.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

PACK_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PACK_ROOT / "tests"))

from e2e.comfy_server import ComfyServer, api_twin, with_tiny_models  # noqa: E402
from support import load_pure_module  # noqa: E402

WORKFLOW = PACK_ROOT / "workflows" / "01 Delayed negative.json"
OUT_DIR = PACK_ROOT / "out" / "demo"


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
    prompt = with_tiny_models(json.loads(api_twin(WORKFLOW).read_text()))
    patch = next(node for node in prompt.values() if node["class_type"] == "NegativeGuidance")
    sampler = next(node for node in prompt.values() if node["class_type"] == "KSampler")
    base_dir = OUT_DIR / "comfyui-base"
    shutil.rmtree(base_dir, ignore_errors=True)
    print(f"Starting ComfyUI (log: {base_dir / 'server.log'}) ...", flush=True)
    with ComfyServer(base_dir) as server:
        started = time.monotonic()
        entry = server.run_prompt(prompt)
        elapsed = time.monotonic() - started
        if entry["status"].get("status_str") != "success":
            print(json.dumps(entry["status"], indent=1), file=sys.stderr)
            return 1
        images = [image for output in entry["outputs"].values() for image in output.get("images", [])]
        image_path = OUT_DIR / "01_sd15_ksampler_delayed_negative.png"
        image_path.write_bytes(server.fetch_output(images[0]))
    lines = [
        f"Workflow: {WORKFLOW.relative_to(PACK_ROOT)} (API twin: {api_twin(WORKFLOW).relative_to(PACK_ROOT)})",
        "Model: tiny random-weight SD1.5-architecture stand-in (test-only node), 64x64 image",
        f"Sampled {sampler['inputs']['steps']} steps with {sampler['inputs']['sampler_name']} through "
        f"NegativeGuidance in {elapsed:.1f} s",
        *schedule_table(patch["inputs"], sampler["inputs"]),
        f"Image: {image_path.relative_to(PACK_ROOT)}",
    ]
    report = "\n".join(lines) + "\n"
    (OUT_DIR / "demo.txt").write_text(report)
    print(report, end="")
    print(f"Printout saved to {(OUT_DIR / 'demo.txt').relative_to(PACK_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
