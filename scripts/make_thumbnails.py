"""Draws the Templates browser's picture of each example workflow: workflows/<name>.jpg beside workflows/<name>.json.

    scripts/host.sh python scripts/make_thumbnails.py

ComfyUI shows a custom node pack's templates with the thumbnail `<name>.jpg` from the same folder. No trained model
is at hand to render a real result, so each picture shows what the template is about instead: per sampler in the
workflow, the negative's strength s⁻·w(t) on each step (one colour per negative prompt, the dashed line is s⁺ = cfg)
and how many model evaluations each step costs. Both come from the workflow's API twin through nodes/schedule.py,
the pack's own maths. Each picture carries what it shows as JSON in its JPEG comment (`picture_data`), so that
tests/e2e/test_templates.py tells exactly when a workflow no longer matches its picture. Run it after editing a
workflow.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

PACK_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PACK_ROOT / "tests"))

from support import load_pure_module  # noqa: E402

WORKFLOWS_DIR = PACK_ROOT / "workflows"
schedule = load_pure_module("nodes/schedule.py", "negguide_schedule_thumbnails")

SIZE_INCHES, DPI = 4.0, 128  # 512 x 512 pixels: the browser shows it as a square card
BACKGROUND, TEXT, FAINT = "#1e1e1e", "#ececec", "#9a9a9a"
NEGATIVE_COLOURS = ("#f0a030", "#b57cff", "#4cc9a0")  # the main negative, then each extra negative
CFG_COLOUR, EVALUATION_COLOUR = "#5aa0ff", "#7d7d7d"
FAMILIES = (("flux", "Flux"), ("xl", "SDXL"), ("", "SD1.5"))


@dataclass
class Run:
    """One sampler of the workflow: its steps, s⁺, and each negative's label and scale per step."""

    label: str
    steps: int
    cfg: float
    negatives: list[tuple[str, list[float]]]
    evaluations: list[int]


def source(prompt: dict, link) -> tuple[str, dict]:
    node_id = link[0]
    return node_id, prompt[node_id]


def text_of(prompt: dict, link) -> str:
    """The prompt text behind a CONDITIONING link (through FluxGuidance and the like)."""
    _, node = source(prompt, link)
    while node["class_type"] != "CLIPTextEncode":
        _, node = source(prompt, node["inputs"]["conditioning"])
    return node["inputs"]["text"]


def window_of(inputs: dict) -> schedule.Window:
    if inputs["window_unit"] != "steps":
        raise ValueError("the thumbnails place steps at i/N: only window_unit 'steps' is drawn")
    return schedule.Window(inputs["neg_start"], inputs["neg_end"], inputs["ramp"], inputs["ramp_width"])


def extra_negatives(prompt: dict, inputs: dict) -> list[tuple[str, schedule.NegativeTerm]]:
    """The chain of Extra Negative nodes feeding `extra_negatives`, in the order the pack applies them."""
    chain = []
    link = inputs.get("extra_negatives")
    while link:
        _, node = source(prompt, link)
        extra = node["inputs"]
        chain.append((text_of(prompt, extra["negative"]),
                      schedule.NegativeTerm(extra["neg_scale"], window_of(extra), extra["window_unit"])))
        link = extra.get("extra_negatives")
    return chain[::-1]


def run_of(prompt: dict, label: str, steps: int, cfg: float, negative_text: str, guidance: dict | None) -> Run:
    """Per step, each negative's s·w(t) and the number of prompts the pack evaluates (as in nodes/guidance.py).
    Without the pack (guidance None) the sampler uses ComfyUI's ordinary negative: s⁻ = cfg − 1 on every step."""
    if guidance is None:
        main = schedule.NegativeTerm.main(schedule.NEG_SCALE_FOLLOWS_CFG, schedule.Window())
        settings, labels = schedule.GuidanceSettings(cfg, (main,)), []
    else:
        extras = extra_negatives(prompt, guidance)
        main = schedule.NegativeTerm.main(guidance["neg_scale"], window_of(guidance))
        settings = schedule.GuidanceSettings(cfg, (main, *(term for _, term in extras)))
        labels = [text for text, _ in extras]
    per_step, evaluations = [], []
    for step in range(steps):
        coefficients = settings.at([term.window.weight(step / steps) for term in settings.negatives])
        per_step.append(coefficients.negatives)
        evaluations.append(int(coefficients.needs_positive) + sum(coefficients.needs_negatives)
                           + int(coefficients.needs_empty))
    names = [negative_text, *labels]
    return Run(label, steps, cfg, [(name, [s[i] for s in per_step]) for i, name in enumerate(names)], evaluations)


def runs_of(prompt: dict, ui_titles: dict) -> list[Run]:
    runs = []
    for node_id, node in prompt.items():
        inputs = node["inputs"]
        if node["class_type"] == "KSampler":
            _, model = source(prompt, inputs["model"])
            guidance = model["inputs"] if model["class_type"] == "NegativeGuidance" else None
            label = ui_titles.get(node_id) or ("KSampler + Negative Guidance" if guidance else "KSampler")
            runs.append(run_of(prompt, label, inputs["steps"], inputs["cfg"], text_of(prompt, inputs["negative"]),
                               guidance))
        elif node["class_type"] == "SamplerCustomAdvanced":
            _, guider = source(prompt, inputs["guider"])
            _, sigmas = source(prompt, inputs["sigmas"])
            guidance = guider["inputs"]
            runs.append(run_of(prompt, "Negative Guidance Guider", sigmas["inputs"]["steps"], guidance["cfg"],
                               text_of(prompt, guidance["negative"]), guidance))
    return runs


def family_of(prompt: dict) -> str:
    if any(node["class_type"] == "NegativeGuidanceTestbed" for node in prompt.values()):
        return "the pack's testbed, no download"
    names = [node["inputs"]["ckpt_name"].lower() for node in prompt.values()
             if node["class_type"] == "CheckpointLoaderSimple"]
    return next(family for key, family in FAMILIES if all(key in name for name in names))


def draw_run(schedule_axes, cost_axes, run: Run, top: float):
    steps = range(1, run.steps + 1)
    bottom = [0.0] * run.steps
    for (name, values), colour in zip(run.negatives, NEGATIVE_COLOURS):
        schedule_axes.bar(steps, values, bottom=bottom, width=0.85, color=colour, label=f'"{name}"')
        bottom = [b + v for b, v in zip(bottom, values)]
    # s⁺ is named in the legend, never written on the plot, where bars would cover it (s⁺ = cfg 1 under Flux's bars).
    schedule_axes.axhline(run.cfg, color=CFG_COLOUR, linestyle="--", linewidth=2, label=f"s⁺ = cfg {run.cfg:g}")
    schedule_axes.set_ylim(0, top)
    schedule_axes.set_title(run.label, color=TEXT, fontsize=11, loc="left", pad=3)
    # One row, so that it takes little of the head room above the bars.
    schedule_axes.legend(loc="upper right", fontsize=9, labelcolor=TEXT, handlelength=1, borderaxespad=0.2,
                         ncols=len(run.negatives) + 1, columnspacing=1.0, handletextpad=0.4, borderpad=0.2,
                         facecolor=BACKGROUND, edgecolor=BACKGROUND, framealpha=0.9)
    cost_axes.bar(steps, run.evaluations, width=0.85, color=EVALUATION_COLOUR)
    most = max(run.evaluations)
    cost_axes.set_ylim(0, most + 0.3)
    cost_axes.set_yticks(sorted({1, most}))
    cost_axes.set_title(f"model evaluations per step: {sum(run.evaluations)} in all", color=FAINT, fontsize=10,
                        loc="left", pad=2)
    for axes in (schedule_axes, cost_axes):
        axes.set_facecolor(BACKGROUND)
        axes.set_xlim(0.4, run.steps + 0.6)
        axes.tick_params(colors=FAINT, labelsize=9, length=2)
        for spine in axes.spines.values():
            spine.set_color("#444444")
    schedule_axes.set_xticks([])
    cost_axes.set_xticks([1, run.steps])
    cost_axes.set_xticklabels(["step 1", str(run.steps)])


def picture_data(ui_file: Path) -> dict:
    """Everything the picture of a workflow shows, as JSON-ready values: its number, caption, model family and each
    sampler's run."""
    prompt = json.loads((WORKFLOWS_DIR / "api" / ui_file.name).read_text())
    ui_titles = {str(node["id"]): node.get("title") for node in json.loads(ui_file.read_text())["nodes"]}
    number, _, caption = ui_file.stem.partition(" ")
    # Through JSON and back (tuples become lists), so that it compares equal to the copy read from a picture.
    return json.loads(json.dumps({"number": number, "caption": caption, "family": family_of(prompt),
                                  "runs": [asdict(run) for run in runs_of(prompt, ui_titles)]}))


# Newer frontends (1.49) lay a "Node graph" chip over the top left corner of each template card: nothing is drawn
# there (figure fractions: left, bottom, right, top).
CHIP_CORNER = (0.0, 0.86, 0.45, 1.0)


def highest_value(run: Run) -> float:
    return max(run.cfg, *(sum(values) for values in zip(*(v for _, v in run.negatives))))


def compose(data: dict):
    """The picture of one workflow's data, as a matplotlib figure."""
    runs = [Run(**run) for run in data["runs"]]
    top = 1.5 * max(highest_value(run) for run in runs)
    figure = plt.figure(figsize=(SIZE_INCHES, SIZE_INCHES), dpi=DPI, facecolor=BACKGROUND)
    # The caption starts below the chip corner.
    title = figure.text(0.05, CHIP_CORNER[1] - 0.01, data["caption"], color=TEXT, fontsize=17, fontweight="bold",
                        va="top")
    width = title.get_window_extent(figure.canvas.get_renderer()).width / (SIZE_INCHES * DPI)
    title.set_fontsize(17 * min(1.0, 0.9 / width))  # a long caption shrinks to the picture's width
    figure.text(0.05, CHIP_CORNER[1] - 0.075, f"{data['family']}  ·  example {data['number']}", color=FAINT,
                fontsize=12, va="top")
    # Each run gets a block: its schedule over its evaluation counts.
    block = 0.68 / len(runs)
    schedules = []
    for index, run in enumerate(runs):
        block_top = 0.72 - index * block
        schedule_share, cost_height = (0.62, 0.15) if len(runs) == 1 else (0.52, 0.06)
        schedule_axes = figure.add_axes((0.10, block_top - schedule_share * block, 0.86,
                                         schedule_share * block - 0.035))
        cost_axes = figure.add_axes((0.10, block_top - block + 0.05, 0.86, cost_height))
        draw_run(schedule_axes, cost_axes, run, top)
        schedules.append((schedule_axes, run))
    # Head room for the legend above the tallest bar and the s⁺ line: raise the common top until every legend
    # clears its plot's data.
    renderer = figure.canvas.get_renderer()
    for _ in range(8):
        needed = top
        for axes, run in schedules:
            legend_bottom = axes.get_legend().get_window_extent(renderer).y0
            axes_box = axes.get_window_extent(renderer)
            free_share = (legend_bottom - axes_box.y0) / axes_box.height  # below the legend, as a share of the axes
            needed = max(needed, 1.08 * highest_value(run) / max(free_share, 0.05))
        if needed <= top * 1.001:
            break
        top = needed
        for axes, _ in schedules:
            axes.set_ylim(0, top)
    return figure


def draw(ui_file: Path, out_file: Path):
    data = picture_data(ui_file)
    figure = compose(data)
    figure.savefig(out_file, format="jpg", dpi=DPI, facecolor=BACKGROUND,
                   pil_kwargs={"quality": 88, "comment": json.dumps(data, ensure_ascii=False)})
    plt.close(figure)


def main() -> int:
    for ui_file in sorted(WORKFLOWS_DIR.glob("*.json")):
        out_file = ui_file.with_suffix(".jpg")
        draw(ui_file, out_file)
        print(f"wrote {out_file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
