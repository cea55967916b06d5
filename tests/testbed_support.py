"""Sampling the trained testbed through ComfyUI's stock KSampler and the pack's nodes, and reading what comes out.

One place for the measurements that the testbed's tests (test_testbed.py), its benchmark (benchmarks/testbed.py)
and the demo (scripts/demo.py) report: a Setting says what the negative does; `sample` runs it on fixed seeds;
`compare` reads the pictures and measures them against positive-only samples of the same seeds.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import cached_property

import numpy as np

import support

CFG = 5.0          # the testbed's default cfg (s⁺), fixed before any result was seen
STEPS = 30
SAMPLER = "euler"
SCHEDULER = "normal"
NEGATIVE = "a hat"
# Steps 6-15 of 30 (the research setting), 1-5 and 16-30, as the window inputs write them (steps numbered from 1).
WINDOWS = {"full run": (0.0, 1.0), "steps 6-15": (5 / 30, 0.5), "steps 1-5": (0.0, 5 / 30),
           "steps 16-30": (0.5, 1.0)}
ATTRIBUTES = ("background", "colour", "shape", "size", "position")


def prompts(count: int, seed: int = 2026, drop: tuple = ()) -> list[str]:
    """`count` captions naming every attribute but those in `drop`, never the hat, drawn from the scene generator."""
    scenes = support.pack_module("testbed.scenes")
    rng = np.random.default_rng(seed)
    named = frozenset(ATTRIBUTES) - set(drop)
    return [scenes.random_scene(rng).caption(named) for _ in range(count)]


@dataclass(frozen=True)
class Setting:
    """What the negative does. negative None: positive only (CFG against the empty prompt, stock).
    neg_scale None: the ordinary negative prompt through the stock KSampler, no pack node."""

    label: str
    negative: str | None = NEGATIVE
    neg_scale: float | None = None
    window: tuple = (0.0, 1.0)
    extra: tuple = ()            # (text, neg_scale, window) per ExtraNegative
    dynamic: dict | None = None  # DynamicNegativeScale inputs
    sampler: str = SAMPLER


POSITIVE_ONLY = Setting("positive only", negative=None)
ORDINARY = Setting("ordinary negative, every step")


@dataclass
class Testbed:
    model: object
    clip: object
    vae: object
    _encoded: dict = field(default_factory=dict)

    def encode(self, text: str):
        if text not in self._encoded:
            import nodes

            self._encoded[text] = nodes.CLIPTextEncode().encode(self.clip, text)[0]
        return self._encoded[text]

    def sampler_model(self, setting: Setting):
        if setting.neg_scale is None and not setting.extra and setting.dynamic is None:
            return self.model
        optional = {"empty": self.encode("")}
        if setting.extra:
            nodes = support.pack_module("nodes.negative_guidance")
            chain = None
            for text, scale, (start, end) in setting.extra:
                chain = nodes.ExtraNegative.execute(self.encode(text), scale, start, end, "steps", "hard", 0.0,
                                                    extra_negatives=chain).result[0]
            optional["extra_negatives"] = chain
        if setting.dynamic is not None:
            dynamic_nodes = support.pack_module("nodes.dynamic_nodes")
            optional["dynamic"] = dynamic_nodes.DynamicNegativeScale.execute(**setting.dynamic).result[0]
        neg_scale = -1.0 if setting.neg_scale is None else setting.neg_scale
        return support.patch(self.model, neg_scale, *setting.window, **optional)

    def pictures(self, latent) -> np.ndarray:
        """What VAEDecode shows, at the latent's resolution: (N, 16, 16, 3) in [0, 1]."""
        import nodes

        images = nodes.VAEDecode().decode(self.vae, {"samples": latent})[0]
        return images[:, ::8, ::8, :].detach().float().numpy()


def load_testbed(weights=None) -> Testbed:
    """The shipped weights through the pack's loader node, as a workflow gets them (other `weights`: a preview)."""
    if weights is not None:
        return Testbed(*support.pack_module("testbed.model").load(weights))
    loader = support.pack_module("nodes.testbed_nodes").NegativeGuidanceTestbed
    model, clip, vae = loader.execute().result
    return Testbed(model, clip, vae)


def empty_latent(count: int) -> dict:
    """What EmptyLatentImage gives at the testbed's 128×128: `count` latents of the scenes' size."""
    import torch

    size = support.pack_module("testbed.scenes").SIZE
    return {"samples": torch.zeros(count, 4, size, size)}


def batched(conditionings: list, seeds: int) -> list:
    """One conditioning whose batch holds each of `conditionings` `seeds` times: a prompt per sample, so that every
    prompt and seed of a setting is one KSampler run."""
    import torch

    tensors = torch.cat([c[0][0].repeat(seeds, 1, 1) for c in conditionings])
    extras = {key: torch.cat([c[0][1][key].repeat(seeds, 1) for c in conditionings])
              for key, value in conditionings[0][0][1].items() if torch.is_tensor(value)}
    return [[tensors, {**conditionings[0][0][1], **extras}]]


def sample(testbed: Testbed, setting: Setting, prompt_list: list, seeds: int, seed: int = 0, steps: int = STEPS,
           cfg: float = CFG) -> np.ndarray:
    """`seeds` pictures of each prompt under `setting` (prompt-major), in one KSampler run (noise from `seed`)."""
    latent = empty_latent(len(prompt_list) * seeds)
    negative = testbed.encode(setting.negative if setting.negative is not None else "")
    positive = batched([testbed.encode(p) for p in prompt_list], seeds)
    out = support.ksampler(testbed.sampler_model(setting), positive, negative, cfg, setting.sampler, steps=steps,
                           seed=seed, latent=latent, scheduler=SCHEDULER)
    return testbed.pictures(out)


@dataclass
class Comparison:
    """Readings of one setting's pictures, paired by seed with positive-only pictures of the same prompts."""

    pictures: np.ndarray
    reference: np.ndarray
    prompts: list  # the prompt of each picture

    @cached_property
    def readings(self):
        read = support.pack_module("testbed.scenes").read
        return [read(p) for p in self.pictures]

    @cached_property
    def reference_readings(self):
        read = support.pack_module("testbed.scenes").read
        return [read(p) for p in self.reference]

    def rate(self, predicate) -> tuple[float, float]:
        """(share of pictures where predicate(reading) holds, its standard error)."""
        hits = np.array([bool(predicate(r)) for r in self.readings], dtype=float)
        return float(hits.mean()), float(hits.std(ddof=0) / np.sqrt(len(hits)))

    def hat_rate(self):
        return self.rate(lambda r: r.hat)

    def kept(self) -> tuple[float, float]:
        """Share of pictures whose five attributes read as in the positive-only picture of the same seed."""
        hits = np.array([all(getattr(a, name) == getattr(b, name) for name in ATTRIBUTES)
                         for a, b in zip(self.readings, self.reference_readings)], dtype=float)
        return float(hits.mean()), float(hits.std(ddof=0) / np.sqrt(len(hits)))

    def change_outside_hat(self) -> tuple[float, float]:
        """RMS pixel change (RGB in [0, 1]) against the positive-only picture, outside the hat (read in either
        picture, grown by one pixel): how much of the rest of the picture the negative changed. (mean, std error)."""
        values = []
        for a, b, ra, rb in zip(self.pictures, self.reference, self.readings, self.reference_readings):
            hat = _grow(ra.hat_pixels | rb.hat_pixels)
            outside = ~hat
            values.append(float(np.sqrt(((a - b)[outside] ** 2).mean())))
        values = np.array(values)
        return float(values.mean()), float(values.std(ddof=0) / np.sqrt(len(values)))


def _grow(mask: np.ndarray) -> np.ndarray:
    grown = mask.copy()
    grown[1:] |= mask[:-1]
    grown[:-1] |= mask[1:]
    grown[:, 1:] |= mask[:, :-1]
    grown[:, :-1] |= mask[:, 1:]
    return grown


def run(testbed: Testbed, setting: Setting, prompt_list: list, seeds: int, reference: np.ndarray | None = None,
        **kwargs) -> Comparison:
    """`setting` on every prompt (the same noise for each), against positive-only pictures (sampled if not given)."""
    pictures = sample(testbed, setting, prompt_list, seeds, **kwargs)
    if reference is None:
        positive = replace(POSITIVE_ONLY, sampler=setting.sampler)
        reference = pictures if setting == positive else sample(testbed, positive, prompt_list, seeds, **kwargs)
    return Comparison(pictures, reference, [p for p in prompt_list for _ in range(seeds)])


def adherence(comparison: Comparison) -> dict:
    """Per attribute, the share of pictures that show what their prompt names (prompts name all five)."""
    scenes = support.pack_module("testbed.scenes")
    out = {}
    for name, vocabulary in (("background", scenes.BACKGROUNDS), ("colour", scenes.COLOURS),
                             ("shape", scenes.SHAPES), ("size", scenes.SIZES), ("position", scenes.POSITIONS)):
        hits = []
        for prompt, reading in zip(comparison.prompts, comparison.readings):
            named = [word for word in vocabulary if word in prompt.replace(",", " ").split()]
            if named:
                hits.append(getattr(reading, name) == named[0])
        hits = np.array(hits, dtype=float)
        out[name] = (float(hits.mean()), float(hits.std(ddof=0) / np.sqrt(len(hits))))
    return out


def contact_sheet(rows: dict, path, columns: int = 8) -> None:
    """A labelled grid: one row per entry of `rows` (label -> pictures (N, 16, 16, 3)), its first `columns`
    pictures side by side, the same seeds in each column."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(rows), 1, figsize=(1.0 * columns, 1.3 * len(rows) + 0.2), squeeze=False)
    for axis, (label, pictures) in zip(axes[:, 0], rows.items()):
        strip = np.concatenate([np.pad(p, ((1, 1), (1, 1), (0, 0)), constant_values=1.0)
                                for p in pictures[:columns]], axis=1)
        axis.imshow(np.clip(strip, 0, 1), interpolation="nearest")
        axis.set_xticks([])
        axis.set_yticks([])
        axis.set_title(label, loc="left", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
