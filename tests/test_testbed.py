"""The trained testbed: its reader, its decoder, its loader, its training script, and what negative prompts do on it.

The last tests are the regression tests of what the testbed shows (docs/testbed.md): a change to the pack that
breaks what a negative prompt does on a model that learned something fails here. Small and fixed: four prompts from
the scene generator, eight seeds each, the thresholds of the issue that asked for them, chosen before any result.
Rates are checked within two standard errors of this small sample (`within_sampling_error`); the fixed 128-sample
benchmark says whether a threshold is met. The shipped testbed does not show the seed's claim that the window changes
the rest of the picture clearly less (docs/testbed.md): that test is a strict expected failure, so that a testbed
that shows it has to say so here.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import support

CI_PROMPTS, CI_SEEDS = 4, 8


def scenes_module():
    return support.load_pure_module("testbed/scenes.py", "negguide_testbed_scenes")


def test_reader_reads_held_out_scenes():
    """≥ 95 % right on every attribute, on generated scenes it never saw, with pixel noise."""
    scenes = scenes_module()
    rng = np.random.default_rng(20261207)  # not a training stream (those are default_rng([seed, step]))
    attributes = ("background", "colour", "shape", "size", "position", "hat")
    right = {name: 0 for name in attributes}
    count = 1000
    for _ in range(count):
        scene = scenes.random_scene(rng)
        picture = scenes.render(scene) + rng.normal(0.0, 0.05, (scenes.SIZE, scenes.SIZE, 3)).astype(np.float32)
        reading = scenes.read(picture)
        for name in attributes:
            right[name] += getattr(reading, name) == getattr(scene, name)
    accuracy = {name: hits / count for name, hits in right.items()}
    assert min(accuracy.values()) >= 0.95, accuracy


def test_captions_leave_the_hat_unsaid_in_most_hat_scenes():
    """The data the testbed learned from: hats in 45 % of the scenes, rarely named (so 42 % of the scenes whose caption
    is silent about the hat have one), and "a hat" alone in one caption in four, so that a negative has something to
    remove and knows what it is."""
    scenes = scenes_module()
    rng = np.random.default_rng(5)
    pairs = [scenes.random_caption(rng, scenes.random_scene(rng)) for _ in range(4000)]
    silent = [scene.hat for scene, caption in pairs if caption and "hat" not in caption]
    assert 0.39 <= np.mean(silent) <= 0.46  # 0.45·0.9 / (0.45·0.9 + 0.55) = 0.424 expected
    assert np.mean([caption == scenes.HAT_TEXT for _, caption in pairs]) == pytest.approx(scenes.HAT_ONLY_CAPTIONS,
                                                                                         abs=0.02)


@pytest.fixture(scope="module")
def testbed():
    support.load_pack()
    import comfy.utils

    comfy.utils.PROGRESS_BAR_ENABLED = False
    import testbed_support

    return testbed_support.load_testbed()


def test_vae_decode_and_encode_are_the_picture(testbed):
    """Stock VAEDecode of a scene's latent shows the generator's picture; stock VAEEncode gives the latent back."""
    import nodes
    import torch

    scenes = scenes_module()
    scale = support.pack_module("testbed.model").build_unet().latent_format.scale_factor
    picture = scenes.render(scenes.random_scene(np.random.default_rng(3), hat=True))
    latent = torch.from_numpy(scenes.to_latent(picture))[None] / scale
    image = nodes.VAEDecode().decode(testbed.vae, {"samples": latent})[0]
    assert image.shape == (1, 128, 128, 3)
    upsampled = torch.from_numpy(picture).repeat_interleave(8, 0).repeat_interleave(8, 1)
    assert float((image[0] - upsampled).abs().max()) < 1e-4
    encoded = nodes.VAEEncode().encode(testbed.vae, image)[0]["samples"]
    assert float((encoded - latent).abs().max()) < 1e-4 * float(latent.abs().max())


def test_loader_gives_comfyui_objects(testbed):
    import comfy.model_patcher

    assert isinstance(testbed.model, comfy.model_patcher.ModelPatcher)
    assert testbed.encode("a big red circle on grass, left")[0][0].shape == (1, 77, 64)


def test_training_script_runs_and_its_weights_load(tmp_path):
    """A few steps of scripts/train_testbed.py (CI does not retrain): it writes weights the loader reads."""
    done = subprocess.run([sys.executable, str(support.PACK_ROOT / "scripts" / "train_testbed.py"), "--steps", "2",
                           "--batch", "4", "--out", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    model, clip, vae = support.pack_module("testbed.model").load(tmp_path / "testbed.safetensors")
    assert model.model.diffusion_model is not None


# ---- what the testbed shows (items 5-7 of the issue that asked for it) ----

@pytest.fixture(scope="module")
def measured(testbed):
    import testbed_support as tb

    prompts = tb.prompts(CI_PROMPTS)
    positive = tb.run(testbed, tb.POSITIVE_ONLY, prompts, CI_SEEDS)
    ordinary = tb.run(testbed, tb.ORDINARY, prompts, CI_SEEDS, reference=positive.reference)
    window = tb.run(testbed, tb.Setting("steps 6-15, s⁻ 8", neg_scale=8.0, window=tb.WINDOWS["steps 6-15"]),
                    prompts, CI_SEEDS, reference=positive.reference)
    strong = tb.run(testbed, tb.Setting("full run, s⁻ 16", neg_scale=16.0), prompts, CI_SEEDS,
                    reference=positive.reference)
    return {"positive": positive, "ordinary": ordinary, "window": window, "strong": strong,
            "adherence": tb.adherence(positive)}


def test_testbed_follows_its_prompts(measured):
    """Each named attribute in ≥ 90 % of samples at cfg 5; the unnamed hat in ≥ 40 %."""
    assert min(share for share, _ in measured["adherence"].values()) >= 0.9, measured["adherence"]
    assert measured["positive"].hat_rate()[0] >= 0.4


def test_a_stronger_negative_removes_more_hats(measured):
    """Fewer hats with the ordinary negative than without, and fewer still at four times its strength (s⁻ 16 on
    every step through the patch): the guidance's direction on learned predictions, same seeds."""
    rates = [measured[name].hat_rate()[0] for name in ("positive", "ordinary", "strong")]
    assert rates[0] > rates[1] > rates[2], rates


def within_sampling_error(bound: float, samples: int) -> float:
    """The bound plus two binomial standard errors at the bound. On this test's 32 samples one standard error at a rate
    of 0.10 is 0.05, so these tests cannot tell a rate just under a bound from one just over it: whether an item is met
    is read from the fixed 128-sample benchmark (docs/testbed.md), and CI fails on a rate clearly above the bound,
    which is what a change to the pack that breaks the negative does."""
    return bound + 2.0 * float(np.sqrt(bound * (1.0 - bound) / samples))


def test_ordinary_negative_removes_the_hat(measured):
    """Negative prompt 'a hat' through the stock KSampler: hats in ≤ 10 % of samples (within this sample's error)."""
    rate = measured["ordinary"].hat_rate()[0]
    assert rate <= within_sampling_error(0.10, len(measured["ordinary"].readings)), rate


def test_research_window_removes_the_hat(measured):
    """The negative on steps 6-15 of 30 only (s⁻ 8): hats in ≤ 15 % of samples (within this sample's error)."""
    rate = measured["window"].hat_rate()[0]
    assert rate <= within_sampling_error(0.15, len(measured["window"].readings)), rate


UNMET = ("not shown by the shipped testbed: on the benchmark's 128 samples the window at s⁻ 8 changes the rest of the "
         "picture 0.98 times as much as the ordinary negative (docs/testbed.md). Strict: a testbed that shows "
         "it must drop this marker.")


@pytest.mark.xfail(strict=True, reason=UNMET)
def test_research_window_changes_the_rest_less(measured):
    """The seed's claim: the window on steps 6-15 (s⁻ 8) changes the rest of the picture at most ¾ as much as the
    full-run negative."""
    window, ordinary = measured["window"], measured["ordinary"]
    assert window.change_outside_hat()[0] <= 0.75 * ordinary.change_outside_hat()[0]
