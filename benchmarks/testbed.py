"""What negative prompts do on the trained testbed: the tables and figures of docs/testbed.md.

    scripts/host.sh python benchmarks/testbed.py              # about 33 minutes on one free CPU core
                                                              # (the shipped run: 57, sharing 2 cores with other work)
    scripts/host.sh python benchmarks/testbed.py --seeds 4    # a quick look (numbers too noisy to quote)

Everything is fixed here, before any result was seen: cfg 5 (s⁺), 30 steps, euler / normal (and euler_ancestral),
eight prompts drawn from the scene generator with seed 2026 that name every attribute but never the hat,
16 seeds per prompt (one KSampler batch, noise seed 0), negative prompt "a hat", the windows of the issue (steps
6-15 of 30, 1-5, 16-30, the whole run) at s⁻ 4 (the ordinary strength at cfg 5), 8 and 16, and the dynamic scale's
grid. "Matched removal": the smallest s⁻ of a window whose hat rate is within 0.02 of the ordinary negative's.
Each pack setting runs through the pack's nodes and ComfyUI's stock KSampler; positive only and the ordinary
negative are the stock KSampler alone. Pictures are read by testbed/scenes.py's reader (its accuracy is tested in
tests/test_testbed.py); "kept" and "change" compare each picture with the positive-only picture of the same seed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

PACK_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PACK_ROOT / "tests"))

import numpy as np  # noqa: E402

import support  # noqa: E402
import testbed_support as tb  # noqa: E402

SCALES = (4.0, 8.0, 16.0)
MATCH_TOLERANCE = 0.02
DYNAMIC_GRID = [{"strength": strength, "temperature": temperature} for strength in (2.0, 8.0)
                for temperature in (0.25, 1.0, 4.0)]
# The node's other updates (how p is tracked) on learned scores, at the node's defaults (λ 2, τ 1) and at the grid's
# strongest setting (λ 8, τ 0.25); the default update's rows are the grid's own. Fixed before any of them was run.
UPDATE_GRID = [{"strength": 2.0, "temperature": 1.0}, {"strength": 8.0, "temperature": 0.25}]
ANCESTRAL = "euler_ancestral"
COLOUR_NEGATIVE = "red"


def window_settings(sampler: str = tb.SAMPLER) -> list[tb.Setting]:
    out = []
    for name, window in tb.WINDOWS.items():
        for scale in SCALES:
            if name == "full run" and scale == tb.CFG - 1:
                continue  # the ordinary negative itself (stock)
            out.append(tb.Setting(f"{name}, s⁻ {scale:g}", neg_scale=scale, window=window, sampler=sampler))
    return out


def dynamic_label(grid: dict) -> str:
    return f"dynamic, λ {grid['strength']:g}, τ {grid['temperature']:g}"


def dynamic_settings(grid_points=DYNAMIC_GRID, update: str | None = None) -> list[tb.Setting]:
    """The Dynamic Negative Scale at each grid point; `update` one of the node's update labels (None: its default)."""
    dynamic_nodes = support.pack_module("nodes.dynamic_nodes")
    out = []
    for grid in grid_points:
        inputs = {"preset": dynamic_nodes.CUSTOM, "strength": grid["strength"],
                  "prior": 0.5, "temperature": grid["temperature"], "offset": 0.0, "p_max": 0.99}
        label = dynamic_label(grid)
        if update is not None:
            inputs["update"] = update
            label += f", update {dynamic_nodes.UPDATES[update]}"
        out.append(tb.Setting(label, dynamic=inputs))
    return out


def update_settings() -> list[tb.Setting]:
    """UPDATE_GRID with every update but the default (whose rows the grid has)."""
    updates = support.pack_module("nodes.dynamic_nodes").UPDATES
    default = support.pack_module("nodes.dynamic").DynamicNegative.method
    return [s for label, method in updates.items() if method != default for s in dynamic_settings(UPDATE_GRID, label)]


def row(setting: tb.Setting, comparison: tb.Comparison, extra: dict | None = None) -> dict:
    hat, kept, change = comparison.hat_rate(), comparison.kept(), comparison.change_outside_hat()
    return {"setting": setting.label, "sampler": setting.sampler, "hat": hat, "kept": kept, "change": change,
            **(extra or {})}


def fmt(pair) -> str:
    return f"{pair[0]:.3f} ± {pair[1]:.3f}"


def table(rows: list[dict], columns=("hat", "kept", "change")) -> list[str]:
    names = {"hat": "hat rate", "kept": "attributes kept", "change": "RMS change outside the hat", "red": "red rate"}
    lines = ["| setting | " + " | ".join(names[c] for c in columns) + " |",
             "|---|" + "---|" * len(columns)]
    for r in rows:
        lines.append(f"| {r['setting']} | " + " | ".join(fmt(r[c]) for c in columns) + " |")
    return lines


def matched(rows: list[dict], ordinary: dict) -> list[str]:
    """Per window, the smallest s⁻ that reaches the ordinary negative's hat rate (within MATCH_TOLERANCE)."""
    lines = ["| window | s⁻ at matched removal | hat rate | attributes kept | RMS change outside the hat |",
             "|---|---|---|---|---|",
             f"| ordinary negative (every step, s⁻ {tb.CFG - 1:g}) | {tb.CFG - 1:g} | {fmt(ordinary['hat'])} | "
             f"{fmt(ordinary['kept'])} | {fmt(ordinary['change'])} |"]
    for name in tb.WINDOWS:
        candidates = [r for r in rows if r["setting"].startswith(f"{name},")
                      and r["hat"][0] <= ordinary["hat"][0] + MATCH_TOLERANCE]
        if not candidates:
            lines.append(f"| {name} | none of {', '.join(f'{s:g}' for s in SCALES)} reaches it | | | |")
            continue
        best = candidates[0]
        lines.append(f"| {name} | {best['setting'].split('s⁻ ')[1]} | {fmt(best['hat'])} | {fmt(best['kept'])} | "
                     f"{fmt(best['change'])} |")
    return lines


def probe_curves(testbed: tb.Testbed, seeds: int) -> dict:
    """r_t per step for a noun ("hat") and an adjective ("red") negative, each its prompt's mean over `seeds`."""
    trace_nodes = support.pack_module("nodes.trace_nodes")
    cases = {"noun: negative 'a hat'": ("a big red circle on grass, left", "a hat", "circle", "hat"),
             "adjective: negative 'red'": ("a big circle on grass, left", "red", "circle", "red")}
    curves = {}
    for label, (positive, negative, positive_word, negative_word) in cases.items():
        probed, probe = trace_nodes.NegativeGuidanceProbe.execute(
            testbed.model, testbed.clip, positive, negative, positive_word, negative_word, 64, "non_middle").result
        latent = tb.empty_latent(seeds)
        out = support.ksampler(probed, testbed.encode(positive), testbed.encode(negative), tb.CFG, tb.SAMPLER,
                               steps=tb.STEPS, seed=0, latent=latent, scheduler=tb.SCHEDULER)
        evaluations = json.loads(probe.to_json())["run"]["evaluations"]
        pictures = testbed.pictures(out)
        read = support.pack_module("testbed.scenes").read
        readings = [read(p) for p in pictures]
        curves[label] = {"step": [e["step"] for e in evaluations], "r_t": [e["r_t"] for e in evaluations],
                         "hat rate": float(np.mean([r.hat for r in readings])),
                         "red rate": float(np.mean([r.colour == "red" for r in readings]))}
    return curves


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=16, help="seeds per prompt")
    parser.add_argument("--weights", type=Path, default=None, help="other weights than the shipped ones")
    parser.add_argument("--out", type=Path, default=PACK_ROOT / "docs")
    parser.add_argument("--report-only", action="store_true",
                        help="only rewrite the tables and the plots from --out's testbed_results.json")
    args = parser.parse_args()
    if args.report_only:
        results = json.loads((args.out / "testbed_results.json").read_text())
        (args.out / "testbed_results.md").write_text(report(results))
        write_figures(results, None, args.out)
        return 0
    support.load_pack()
    import comfy.utils
    import torch

    comfy.utils.PROGRESS_BAR_ENABLED = False
    torch.set_num_threads(1)
    started = time.time()
    testbed = tb.load_testbed(args.weights)
    prompts = tb.prompts(8)
    results: dict = {"prompts": prompts, "seeds_per_prompt": args.seeds, "cfg": tb.CFG, "steps": tb.STEPS}

    def measure(setting, prompt_list=prompts, reference=None):
        comparison = tb.run(testbed, setting, prompt_list, args.seeds, reference=reference)
        print(f"{time.time() - started:6.0f} s  {setting.sampler:16s} {setting.label}: hat {fmt(comparison.hat_rate())}",
              flush=True)
        return comparison

    sheets = {}
    for sampler in (tb.SAMPLER, ANCESTRAL):
        positive = measure(replace(tb.POSITIVE_ONLY, sampler=sampler))
        ordinary = measure(replace(tb.ORDINARY, sampler=sampler), reference=positive.reference)
        settings = window_settings(sampler) if sampler == tb.SAMPLER else [
            s for s in window_settings(sampler) if s.neg_scale == 8.0 or s.label == "steps 6-15, s⁻ 4"]
        comparisons = {s.label: measure(s, reference=positive.reference) for s in settings}
        rows = [row(s, comparisons[s.label]) for s in settings]
        results[sampler] = {"positive only": row(tb.POSITIVE_ONLY, positive, {"adherence": tb.adherence(positive)}),
                            "ordinary": row(tb.ORDINARY, ordinary), "windows": rows}
        if sampler == tb.SAMPLER:
            sheets = {"positive only": positive.pictures, "ordinary negative": ordinary.pictures,
                      "steps 6-15, s⁻ 8": comparisons["steps 6-15, s⁻ 8"].pictures}
            dynamic = [(s, measure(s, reference=positive.reference)) for s in dynamic_settings()]
            results["dynamic"] = [row(s, c) for s, c in dynamic]
            results["dynamic updates"] = [row(s, measure(s, reference=positive.reference)) for s in update_settings()]

    no_colour = tb.prompts(8, drop=("colour",))
    red = lambda reading: reading.colour == COLOUR_NEGATIVE  # noqa: E731
    positive_setting = tb.Setting("positive only (colour not named)", negative=None)
    positive = measure(positive_setting, no_colour)
    results["two negatives"] = [row(positive_setting, positive, {"red": positive.rate(red)})]
    for setting in (tb.Setting("ordinary negative 'a hat'"),
                    tb.Setting(f"'a hat' (ordinary) + extra negative '{COLOUR_NEGATIVE}' (s⁻ 4, every step)",
                               neg_scale=tb.CFG - 1, extra=((COLOUR_NEGATIVE, 4.0, (0.0, 1.0)),))):
        comparison = measure(setting, no_colour, positive.reference)
        results["two negatives"].append(row(setting, comparison, {"red": comparison.rate(red)}))
    results["probe"] = probe_curves(testbed, 2 * args.seeds)
    results["seconds"] = time.time() - started
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "testbed_results.json").write_text(json.dumps(results, indent=1))
    (args.out / "testbed_results.md").write_text(report(results))
    write_figures(results, sheets, args.out)
    print(f"done in {results['seconds'] / 60:.1f} min; wrote {args.out / 'testbed_results.json'}")
    return 0


def report(results: dict) -> str:
    """docs/testbed_results.md: every table, generated (docs/testbed.md reads them)."""
    lines = ["# Testbed results (generated by benchmarks/testbed.py; do not edit)", "",
             f"cfg {results['cfg']:g}, {results['steps']} steps, normal scheduler, {len(results['prompts'])} prompts × "
             f"{results['seeds_per_prompt']} seeds = {len(results['prompts']) * results['seeds_per_prompt']} samples "
             "per row, negative prompt 'a hat'. Each cell: mean ± one standard error over the samples. "
             "'attributes kept': background, colour, shape, size and position all read as in the positive-only "
             "picture of the same seed. Prompts: " + "; ".join(f"'{p}'" for p in results["prompts"]) + ".", ""]
    for sampler in (tb.SAMPLER, ANCESTRAL):
        part = results[sampler]
        adherence = part["positive only"]["adherence"]
        lines += [f"## {sampler}", "",
                  "Prompt adherence, positive only (share of samples showing what the prompt names): " +
                  ", ".join(f"{name} {fmt(value)}" for name, value in adherence.items()) + ".", ""]
        lines += table([part["positive only"], part["ordinary"], *part["windows"]]) + [""]
        lines += ["Matched removal:", ""] + matched(part["windows"], part["ordinary"]) + [""]
    lines += ["## Dynamic negative scale (euler; prior 0.5, offset 0, p_max 0.99)", ""]
    lines += table(results["dynamic"]) + [""]
    if "dynamic updates" in results:  # absent from runs before the update rows were added
        rows = []
        for grid in UPDATE_GRID:  # per grid point: the default update's row from the grid, then the others
            label = dynamic_label(grid)
            rows += [{**r, "setting": f"{label}, update mixture (the default)"} for r in results["dynamic"]
                     if r["setting"] == label]
            rows += [r for r in results["dynamic updates"] if r["setting"].startswith(f"{label}, ")]
        lines += ["### The four updates (how p is tracked; euler, prior 0.5)", ""] + table(rows) + [""]
    lines += ["## Two negatives (euler; prompts without their colour: " +
              "; ".join(f"'{p}'" for p in tb.prompts(8, drop=("colour",))) + ")", ""]
    lines += table(results["two negatives"], ("hat", "red", "kept", "change")) + [""]
    lines += ["## r_t (ordinary negative, euler, one prompt, "
              f"{2 * results['seeds_per_prompt']} seeds; probe layers non_middle)", "",
              "| step | " + " | ".join(results["probe"]) + " |", "|---|" + "---|" * len(results["probe"])]
    curves = list(results["probe"].values())
    for index, step in enumerate(curves[0]["step"]):
        lines.append(f"| {step} | " + " | ".join(
            "" if c["r_t"][index] is None else f"{c['r_t'][index]:.3f}" for c in curves) + " |")
    lines += [""] + [f"{label}: hat rate {c['hat rate']:.3f}, red rate {c['red rate']:.3f}."
                     for label, c in results["probe"].items()]
    lines += ["", f"Run time: {results['seconds'] / 60:.1f} min."]
    return "\n".join(lines) + "\n"


def write_figures(results: dict, sheets: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if sheets is not None:
        tb.contact_sheet(sheets, out / "testbed_contact_sheet.png", columns=12)
    fig, (trade, rt) = plt.subplots(1, 2, figsize=(11, 4.2))
    euler = results[tb.SAMPLER]
    for name in tb.WINDOWS:
        rows = [r for r in euler["windows"] if r["setting"].startswith(f"{name},")]
        if name == "full run":
            rows = [euler["ordinary"] | {"setting": "full run, s⁻ 4"}, *rows]
        trade.errorbar([r["change"][0] for r in rows], [r["hat"][0] for r in rows],
                       xerr=[r["change"][1] for r in rows], yerr=[r["hat"][1] for r in rows], marker="o",
                       label=name, capsize=2)
        for r in rows:
            trade.annotate(r["setting"].split("s⁻ ")[1], (r["change"][0], r["hat"][0]), fontsize=7,
                           xytext=(3, 3), textcoords="offset points")
    positive = euler["positive only"]
    trade.axhline(positive["hat"][0], color="grey", linestyle=":", label="positive only")
    trade.set_xlabel("RMS change outside the hat (vs positive only)")
    trade.set_ylabel("hat rate")
    trade.set_title("Removal against change, per window (labels: s⁻)")
    trade.legend(fontsize=8)
    for label, curve in results["probe"].items():
        rt.plot(curve["step"], curve["r_t"], marker=".", label=label)
    rt.set_xlabel("step (of 30)")
    rt.set_ylabel("r_t (negative word / positive word)")
    rt.set_title("r_t on the testbed, ordinary negative")
    rt.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "testbed_windows.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
