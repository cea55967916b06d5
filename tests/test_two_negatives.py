"""Issue 16, item 3: two negatives, each dynamic one tracking its own p, against the exact-p oracle.

A CI sample of the two-negative runs of benchmarks/exact_score_family.py (docs/dynamic_negative.md, "Two negatives"):
the real guider with a second negative on an ExtraNegative node, ComfyUI's Heun sampler on exact-score mixtures, the
pack's default update against the same guidance with the exact p(ỹᵢ | x_t) for every dynamic negative. Toys, sampler,
sample count and the bound were fixed before any result was seen; the same seed and sample count as the benchmark, so
these runs are the benchmark's own rows.
"""

import sys

import pytest
import torch

import support

TOYS = (0, 5)  # the subset's first toy (ỹ₂ disjoint from ỹ) and its first where ỹ₂ partly overlaps ỹ
SAMPLER, KIND, SAMPLES = "heun", "edm", 1000
# "+ constant" (ỹ₂ at s⁻ 3 over the whole run) is left out: there the pack and the oracle both leave every sample off
# the data (off-manifold 1.000 on both toys), so the bound holds whatever the tracker does.
CONFIGS = ("alone", "+ constant early", "+ dynamic")
# Measured failures of item 3's bound on this sample (the benchmark's rows, docs/dynamic_negative.md): strict, so that a
# fix shows. On toy 0 the second negative pushes samples out of its own mode late, some onto ỹ's fully covered mode,
# where the tracked p(ỹ | x_t) has fallen (0.14 against an exact 1.00 at the end): ỹ's forbidden mass rises.
KNOWN_FAILURES = {
    (0, "alone"): "ỹ forbidden 0.013 against the oracle's 0.000 (the first negative alone already misses by 0.003)",
    (0, "+ constant early"): "ỹ forbidden 0.028 against 0.000, ỹ₂ forbidden 0.092 against 0.052",
    (0, "+ dynamic"): "ỹ forbidden 0.029 against the oracle's 0.000 (ỹ₂ 0.000 against 0.000)",
}


@pytest.fixture(scope="module")
def family():
    support.load_pack()
    # One module object for the whole session: the oracle's hooks on the pack's state class are installed once, by the
    # first module that loads (test_exact_score.py loads it under the same name), and record into that module.
    name = "negguide_exact_score_family"
    return sys.modules.get(name) or support.load_pure_module("benchmarks/exact_score_family.py", name)


@pytest.fixture(scope="module")
def rows(family):
    toys = [m for m in family.two_negative_family() if m.index in TOYS]
    return family.run_two_negatives(SAMPLES, toys, (SAMPLER,), (KIND,), progress=False)


def _cases():
    for toy in TOYS:
        for config in CONFIGS:
            if (toy, config) in KNOWN_FAILURES:
                yield pytest.param(toy, config, marks=pytest.mark.xfail(strict=True, reason=KNOWN_FAILURES[toy, config]))
            else:
                yield toy, config


@pytest.mark.parametrize("toy, config", list(_cases()))
def test_each_negative_is_no_worse_than_with_exact_p(family, rows, toy, config):
    """Each negative's forbidden mass ≤ the oracle's + 0.01 (the oracle: the exact p for every dynamic negative)."""
    (row, oracle, _, _, meets), = [j for j in family.two_negative_judge(rows)
                                   if j[0]["toy"] == toy and j[0]["config"] == config]
    keys = ("forbidden", "forbidden_2", "off")
    assert meets, ({k: round(row[k], 3) for k in keys}, {k: round(oracle[k], 3) for k in keys})


# The same sample with the divergence probe (update "Itô + divergence probe", an option with one extra evaluation of
# the dynamic negatives and ∅ per step) for every dynamic negative: the benchmark's rows (--pack-method ito-probe).
PROBE_KNOWN_FAILURES = {
    (0, "+ constant early"): "ỹ meets it (0.001), the constant ỹ₂ not: 0.106 against the oracle's 0.052",
}


@pytest.fixture(scope="module")
def probe_rows(family):
    toys = [m for m in family.two_negative_family() if m.index in TOYS]
    family.PACK_METHOD[0] = "ito-probe"
    try:
        return family.run_two_negatives(SAMPLES, toys, (SAMPLER,), (KIND,), progress=False)
    finally:
        family.PACK_METHOD[0] = "mixture"


@pytest.mark.parametrize("toy, config", [
    pytest.param(t, c, marks=pytest.mark.xfail(strict=True, reason=PROBE_KNOWN_FAILURES[t, c]))
    if (t, c) in PROBE_KNOWN_FAILURES else (t, c) for t in TOYS for c in CONFIGS])
def test_with_the_divergence_probe_each_negative_is_no_worse_than_with_exact_p(family, probe_rows, toy, config):
    """Item 3's bound with the probe's update: it holds where the default update fails on toy 0 (alone and with a
    second dynamic negative), since the probe sees the samples that commit to ỹ late."""
    (row, oracle, _, _, meets), = [j for j in family.two_negative_judge(probe_rows)
                                   if j[0]["toy"] == toy and j[0]["config"] == config]
    keys = ("forbidden", "forbidden_2", "off")
    assert meets, ({k: round(row[k], 3) for k in keys}, {k: round(oracle[k], 3) for k in keys})


def test_second_negative_is_a_term_of_the_same_batched_forward(family):
    """The second negative is a real second term: y, ỹ, ∅ and ỹ₂ in one forward per evaluation, and the oracle gives
    each dynamic negative the exact p of its own concept."""
    bench = family.bench
    member = next(m for m in family.two_negative_family() if m.index == TOYS[1])
    model = bench.build_model(member.toy)
    network = model.model.diffusion_model
    batches = []
    forward = network.forward

    def counted(x, *args, **kwargs):
        batches.append(x.shape[0])
        return forward(x, *args, **kwargs)

    network.forward = counted
    samples = 8
    family.install_hooks()
    family.RECORD.clear()
    family.RECORDING[0] = True
    try:
        bench.sample(model, family.two_negative_setting(member.toy, SAMPLER, "+ dynamic", "oracle"), samples, 0)
    finally:
        family.RECORDING[0] = False
    evaluations = 2 * bench.STEPS - 1  # Heun; its last step, to σ = 0, is an Euler step
    assert batches == [4 * samples] * evaluations
    # Two states per evaluation, the main negative's first; each p is its own concept's exact p (clipped).
    assert len(family.RECORD) == 2 * evaluations
    middle = 2 * (evaluations // 2)
    for first, second in (family.RECORD[0:2], family.RECORD[middle:middle + 2]):
        (sigma, x, p_first), (_, _, p_second) = first, second
        for p, concept in ((p_first, "negative"), (p_second, family.SECOND)):
            exact = family.exact_log_p(member.toy, x, sigma, concept).exp().clamp(1e-6, 0.99)
            torch.testing.assert_close(p, exact, atol=1e-6, rtol=0)
        assert not torch.allclose(p_first, p_second)
