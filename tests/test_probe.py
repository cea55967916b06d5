"""The r_t attention probe on the tiny SD1.5 UNet and the real SD1 tokenizer (tiny random CLIP)."""

import dataclasses
import json
import math

import pytest
import torch

import support
from support import ksampler, patch

POSITIVE_TEXT = "a woman in a garden, photo"  # host.positive
NEGATIVE_TEXT = "glasses, blurry"  # host.negative
STEPS = 4
CFG = 5.0


def probe_lib():
    return support.pack_module("nodes.probe")


def trace_nodes():
    return support.pack_module("nodes.trace_nodes")


def make(host, model=None, positive_word="woman", negative_word="glasses", layers="non_middle", map_size=64):
    return trace_nodes().make_probe(model or host.model, host.clip, POSITIVE_TEXT, NEGATIVE_TEXT, positive_word,
                                    negative_word, map_size, layers)


# ---- words → token positions ----

def test_words_map_to_their_token_positions(host):
    lib = probe_lib()
    # The SD1 tokenizer: start token at 0, then one token per word here ("a", "woman", "in", "a", "garden", ",").
    assert lib.find_word(host.clip, "N", "w", "woman", "positive", POSITIVE_TEXT) == (2,)
    assert lib.find_word(host.clip, "N", "w", "garden", "positive", POSITIVE_TEXT) == (5,)
    assert lib.find_word(host.clip, "N", "w", "glasses", "negative", NEGATIVE_TEXT) == (1,)
    assert lib.find_word(host.clip, "N", "w", " Blurry ", "negative", NEGATIVE_TEXT) == (3,)  # case, spaces
    tokens = lib.prompt_tokens(host.clip, POSITIVE_TEXT)
    woman = host.clip.tokenizer.clip_l.tokenizer("woman")["input_ids"][1:-1]
    assert [tokens.ids[2]] == woman
    assert tokens.word_positions == (1, 2, 3, 4, 5, 6, 7) and tokens.length == 77


def test_multi_token_word_maps_to_all_its_tokens(host):
    lib = probe_lib()
    text = "a portrait, photorealistic"
    ids = lib.word_token_ids(host.clip, "photorealistic")
    assert len(ids) >= 2
    positions = lib.find_word(host.clip, "N", "w", "photorealistic", "positive", text)
    assert len(positions) == len(ids) and positions == tuple(range(positions[0], positions[0] + len(ids)))


def test_word_not_in_prompt_or_empty_gets_a_clear_message(host):
    with pytest.raises(ValueError, match=r"Negative Prompt Attention Probe \(r_t\): negative_word 'hat' is not in the negative prompt"):
        make(host, negative_word="hat")
    with pytest.raises(ValueError, match="positive_word 'man' is not in the positive prompt"):
        make(host, positive_word="man")  # "woman" is one token: "man" is not part of it
    with pytest.raises(ValueError, match="negative_word ',,,' is not in the negative prompt"):
        make(host, negative_word="   ,,, ")
    with pytest.raises(ValueError, match="positive_word is empty"):
        make(host, positive_word=" ")
    schema_node = trace_nodes().NegativeGuidanceProbe
    assert schema_node.validate_inputs(layers="some").startswith("Negative Prompt Attention Probe (r_t): layers must be one of")


def test_map_size_by_link_is_checked_when_the_node_runs(host):
    # ComfyUI checks the schema bounds of widget values only; a linked map_size reaches execute unchecked.
    with pytest.raises(ValueError, match=r"Negative Prompt Attention Probe \(r_t\): map_size must lie between 1 and 256, got 100000"):
        make(host, map_size=100000)


# ---- the probe on a sampling run ----

def test_probe_changes_no_sample(host):
    probed, probe = make(host)
    plain = ksampler(host.model, host.positive, host.negative, CFG, "euler", STEPS, latent=host.latent)
    with_probe = ksampler(probed, host.positive, host.negative, CFG, "euler", STEPS, latent=host.latent)
    assert torch.equal(plain, with_probe)
    # The probe lives on the clone only: the original model has no attn2 patch.
    assert "attn2_patch" not in host.model.model_options.get("transformer_options", {}).get("patches", {})
    assert len(probe.last_run.evaluations) == STEPS


@pytest.mark.parametrize("layers, count", [("non_middle", 6), ("all", 7)])
def test_r_t_per_evaluation_over_the_selected_layers(host, layers, count):
    probed, probe = make(host, layers=layers)
    ksampler(probed, host.positive, host.negative, CFG, "heun", STEPS, latent=host.latent)
    evaluations = probe.last_run.evaluations
    assert len(evaluations) == 2 * STEPS - 1
    for e in evaluations:
        assert e.layers == count  # tiny UNet: input 1, 3 and output 0-3 (8² and 4²), + middle with "all"
        r, r_restricted = e.ratio(False), e.ratio(True)
        assert math.isfinite(r) and r > 0 and math.isfinite(r_restricted) and r_restricted > 0
        assert r == pytest.approx(e.negative[0] / e.positive[0])
    # Heun evaluates at σ_i, then at σ_{i+1} (which places it in step i+1, as the pack's windows do).
    assert [e.step for e in evaluations] == [1, 2, 2, 3, 3, 4, 4]  # numbered from 1


def test_r_t_is_none_where_the_negative_is_not_evaluated(host):
    probed, probe = make(host)
    patched = patch(probed, 3.0, 0.0, 0.5, empty=host.empty)
    ksampler(patched, host.positive, host.negative, CFG, "euler", STEPS, latent=host.latent)
    ratios = [e.ratio() for e in probe.last_run.evaluations]
    assert all(r is not None for r in ratios[:2]) and ratios[2:] == [None, None]


def test_the_dynamic_negatives_divergence_probe_is_not_an_evaluation(host):
    """With the dynamic negative's 'Itô + divergence probe' update, the extra forward of ỹ and ∅ at a shifted x is
    not recorded as an evaluation: r_t has one entry per sampler evaluation, the same ones as with the Itô update."""
    dynamic = support.pack_module("nodes.dynamic")

    def ratios(method):
        probed, probe = make(host)
        patched = patch(probed, -1.0, empty=host.empty, dynamic=dynamic.DynamicNegative(method=method, temperature=0.0))
        ksampler(patched, host.positive, host.negative, CFG, "euler", STEPS, latent=host.latent)
        return [e.ratio() for e in probe.last_run.evaluations]

    with_probe = ratios("ito-probe")
    assert len(with_probe) == STEPS
    assert with_probe == ratios("ito")  # τ 0: p stays at the prior, so the samples, and r_t, are the same


def test_sequential_evaluation_gives_the_same_r_t(host):
    """One prompt per forward (evaluation = sequential) still tells the probe which prompt each forward is."""
    ratios = {}
    for evaluation in ("batched", "sequential"):
        probed, probe = make(host)
        patched = patch(probed, 3.0, empty=host.empty, evaluation=evaluation)
        ksampler(patched, host.positive, host.negative, CFG, "euler", STEPS, latent=host.latent)
        ratios[evaluation] = [e.ratio() for e in probe.last_run.evaluations]
    assert len(ratios["sequential"]) == STEPS
    assert ratios["sequential"] == pytest.approx(ratios["batched"], rel=support.RELATIVE_TOLERANCE)


def test_one_layer_map_equals_independent_softmax(host, monkeypatch):
    """Layer input_blocks[1] (8×8): the probe's map of 'glasses' in the negative branch against softmax(QKᵀ/√d)
    computed here from the layer's weights and its captured inputs."""
    lib = probe_lib()
    probed, probe = make(host)
    attn2 = host.model.model.diffusion_model.input_blocks[1][1].transformer_blocks[0].attn2
    # What the probe computes for this layer, in order: its attention probabilities (per prompt) and the maps it
    # takes the norm of (the word's map first, then the word-restricted one).
    seen, original_probabilities, original_norm = [], lib.attention_probabilities, lib.frobenius_upsampled

    def probabilities(module, n, context, heads, dim_head):
        if module is attn2:
            seen.append(("context", context.detach().clone()))
        return original_probabilities(module, n, context, heads, dim_head)

    def norm(maps, height, width, size):
        seen.append(("map", maps.detach().clone()))
        return original_norm(maps, height, width, size)

    monkeypatch.setattr(lib, "attention_probabilities", probabilities)
    monkeypatch.setattr(lib, "frobenius_upsampled", norm)
    captured = []

    def capture(module, args, kwargs):
        captured.append((args[0].detach().clone(), kwargs["context"].detach().clone()))

    handle = attn2.register_forward_pre_hook(capture, with_kwargs=True)
    try:
        ksampler(probed, host.positive, host.negative, CFG, "euler", 1, latent=host.latent)
    finally:
        handle.remove()
    x, context = captured[0]
    negative_context = host.negative[0][0]
    rows = [i for i in range(context.shape[0]) if torch.equal(context[i], negative_context[0])]
    assert len(rows) == 1
    q = x[rows[0]] @ attn2.to_q.weight.T  # (64, heads·d)
    k = context[rows[0]] @ attn2.to_k.weight.T  # (77, heads·d)
    heads, d = attn2.heads, attn2.dim_head
    q = q.reshape(-1, heads, d).transpose(0, 1)
    k = k.reshape(-1, heads, d).transpose(0, 1)
    probabilities = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(d), dim=-1).mean(0)  # (64, 77)
    expected = probabilities[:, 1].reshape(8, 8).detach()  # 'glasses' is token 1 of the negative prompt

    negative_calls = [i for i, (kind, value) in enumerate(seen)
                      if kind == "context" and torch.equal(value[0], negative_context[0])]
    assert len(negative_calls) == 1
    kind, probe_map = seen[negative_calls[0] + 1]  # the word's map, the first norm taken after it
    assert kind == "map"
    torch.testing.assert_close(probe_map[0].reshape(8, 8), expected, rtol=1e-5, atol=1e-6)
    assert float(expected.sum()) > 0  # a real map, not zeros
    # Its Frobenius norm after upsampling to 64×64, as summed into r_t:
    upsampled = torch.nn.functional.interpolate(expected[None, None], size=(64, 64), mode="bilinear")
    assert float(original_norm(probe_map, 8, 8, 64)[0]) == pytest.approx(float(upsampled.norm()), rel=1e-5)


def test_plot_node(host):
    probed, probe = trace_nodes().NegativeGuidanceProbe.execute(
        host.model, host.clip, POSITIVE_TEXT, NEGATIVE_TEXT, "woman", "glasses", 64, "non_middle").result
    latent = {"samples": ksampler(probed, host.positive, host.negative, CFG, "euler", STEPS, latent=host.latent)}
    output = trace_nodes().NegativeGuidanceProbePlot.execute(probe, latent)
    image, text, passed = output.result
    assert image.shape[0] == 1 and image.shape[-1] == 3
    # Both r_t curves are drawn, against the same plot of the run with no evaluations (their legend entries only).
    empty = probe_lib().render_probe(probe, dataclasses.replace(probe.last_run, pending=[], recorded=[]))
    for colour in ("tab:red", "tab:purple"):
        assert support.colour_pixels(image, colour) > support.colour_pixels(empty, colour) + 200, colour
    data = json.loads(text)
    assert data["negative_word"] == "glasses" and len(data["run"]["evaluations"]) == STEPS
    assert all(e["r_t"] > 0 for e in data["run"]["evaluations"])
    assert output.ui.as_dict()["images"] and passed is latent
