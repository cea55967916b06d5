"""A random family of exact-score mixtures for the dynamic negative (issue 16): the tracker against the exact-p oracle.

Each toy is a mixture of isotropic Gaussians (random positions, weights and spreads) with concepts as soft memberships
of the modes: concept c holds the share m_c,k of mode k's data, so its density is Σ_k π_k·m_c,k·N_k / Σ_k π_k·m_c,k
and p(ỹ | x_t) = Σ_k π_k·m_ỹ,k·N_k(x_t) / Σ_k π_k·N_k(x_t) exactly (N_k with variance s_k² + σ²). The model is the
exact denoiser, run through ComfyUI's samplers and the pack's guider (benchmarks/exact_score.py builds it).

The oracle is the same guidance with that exact p in place of the tracked one (same λ, p_min, p_max). It is the
reference: a tracker cannot do better than the scale it estimates.

Negative classes (round robin over the family), memberships 1 or ½:
- inside:  ỹ covers wanted modes only (at least one wanted mode stays free of it);
- partial: ỹ covers some wanted modes and some modes outside y;
- outside: ỹ covers only modes the positive never visits;
- issue:   ỹ covers one wanted mode fully, another half, and modes outside y (the issue's geometry).
The positive holds its wanted modes fully or (one in three) half.

Per run (one toy, one model kind EDM/flow, one sampler):
- forbidden: share of samples on a mode fully in ỹ (nearest mode in units of its spread, within 3 spreads);
- off: share more than 3 spreads from every mode;
- fidelity: 1 − share on a mode outside y (within 3 spreads);
- kept: per half-covered wanted mode, its share of the samples; its λ-target is the share of that mode in
  p(x|y)·(p(x|¬ỹ)/p(x))^λ ∝ π_k·m_y,k·(1 − m_ỹ,k)^λ (λ = 1: the exact p(x | y, ¬ỹ)).

Pass (issue 16, item 2), fixed before any result was seen: forbidden ≤ max(0.03, oracle + 0.01), off ≤ max(0.03,
oracle + 0.01), fidelity ≥ 0.98.

    scripts/host.sh python benchmarks/exact_score_family.py --samples 1000           # the family table
    scripts/host.sh python benchmarks/exact_score_family.py --trace 0                # p tracked vs exact, toy 0
    scripts/host.sh python benchmarks/exact_score_family.py --two-negatives          # item 3: a second negative
    scripts/host.sh python benchmarks/exact_score_family.py --two-negatives --trace 0  # where ỹ's extra mass comes from

Two negatives (item 3): see the section of that name below for the subset, the second concept and the runs.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import random
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

PACK_ROOT = Path(__file__).resolve().parents[1]
for folder in ("tests", "benchmarks"):
    if str(PACK_ROOT / folder) not in sys.path:
        sys.path.insert(0, str(PACK_ROOT / folder))

import exact_score as bench  # noqa: E402  (the model, the nodes, the samplers)
import support  # noqa: E402

FAMILY_SEED = 16
FAMILY = [FAMILY_SEED]  # the family drawn (--family-seed: a held-out family, drawn by the same rules)
FAMILY_SIZE = 36  # 30 in 2-D, then 6 in higher dimension
HIGH_DIMS = (4, 8)
CLASSES = ("inside", "partial", "outside", "issue")
SAMPLERS = ("heun", "euler", "dpmpp_2m", "euler_ancestral")
SAMPLE_SEED = 0
LIMIT, MARGIN, FIDELITY = 0.03, 0.01, 0.98


@dataclass(frozen=True)
class FamilyToy:
    index: int
    kind: str  # negative class
    toy: object  # exact_score.Toy (positions in `dims` dimensions)


def _positions(rng: random.Random, count: int, dims: int, stds) -> list:
    """Mode positions in a box, each pair at least 3·(s_i + s_j) + 1 apart (modes separable by the nearest-mode test)."""
    box = 5.0 if dims == 2 else 4.0
    while True:
        points = []
        for k in range(count):
            for _ in range(200):
                candidate = tuple(rng.uniform(-box, box) for _ in range(dims))
                if all(math.dist(candidate, q) >= 3.0 * (stds[k] + stds[j]) + 1.0 for j, q in enumerate(points)):
                    points.append(candidate)
                    break
            else:
                break
        if len(points) == count:
            return points


def make_toy(index: int, dims: int, rng: random.Random) -> FamilyToy:
    kind = CLASSES[index % len(CLASSES)]
    count = rng.randint(4, 7)
    stds = [round(rng.uniform(0.2, 0.6), 3) for _ in range(count)]
    weights = [rng.uniform(0.5, 2.0) for _ in range(count)]
    weights = [round(w / sum(weights), 4) for w in weights]
    modes = [tuple(round(c, 3) for c in p) for p in _positions(rng, count, dims, stds)]
    order = list(range(count))
    rng.shuffle(order)
    wanted_count = rng.randint(2, max(2, count - 2))
    wanted, outside = order[:wanted_count], order[wanted_count:]
    positive = [0.0] * count
    for k in wanted:
        positive[k] = 0.5 if rng.random() < 1 / 3 else 1.0
    negative = [0.0] * count
    free = wanted[0]  # one wanted mode the negative never touches
    others = wanted[1:]
    if kind == "inside":
        for k in rng.sample(others, rng.randint(1, len(others))):
            negative[k] = rng.choice((0.5, 1.0))
    elif kind == "partial":
        for k in rng.sample(others, rng.randint(1, len(others))):
            negative[k] = rng.choice((0.5, 1.0))
        for k in rng.sample(outside, rng.randint(1, len(outside))):
            negative[k] = rng.choice((0.5, 1.0))
    elif kind == "outside":
        for k in rng.sample(outside, rng.randint(1, len(outside))):
            negative[k] = rng.choice((0.5, 1.0))
    else:  # issue: one wanted mode fully, another half (if there is one), and modes outside y
        negative[others[0]] = 1.0
        if len(others) > 1:
            negative[others[1]] = 0.5
        for k in rng.sample(outside, rng.randint(1, len(outside))):
            negative[k] = 1.0
    toy = bench.Toy(f"family {index} ({kind}, {dims}-D)", tuple(modes), tuple(stds), tuple(weights),
                    {"positive": tuple(positive), "negative": tuple(negative), "empty": (1.0,) * count},
                    forbidden="nearest")
    return FamilyToy(index, kind, toy)


def family(seed: int | None = None, size: int = FAMILY_SIZE) -> tuple:
    """The family (seed: FAMILY_SEED, or another family drawn by the same rules, --family-seed)."""
    return _family(FAMILY[0] if seed is None else seed, size)


@functools.lru_cache(maxsize=None)
def _family(seed: int, size: int) -> tuple:
    rng = random.Random(seed)
    two_d = size - 2 * len(HIGH_DIMS) if size > 2 * len(HIGH_DIMS) else size
    return tuple(make_toy(i, 2 if i < two_d else HIGH_DIMS[(i - two_d) % len(HIGH_DIMS)], rng) for i in range(size))


# ---- exact quantities ----

def exact_log_p(toy, x, sigma, concept="negative"):
    """log p(c | x_σ) of the toy's concept c, ỹ by default (x: (N, D) variance-exploding units, float64; σ = inf:
    the prior)."""
    import torch

    m = torch.tensor(toy.concepts[concept], dtype=torch.float64)
    pi = torch.tensor(toy.weights, dtype=torch.float64)
    if not math.isfinite(sigma):
        return torch.full((x.shape[0],), math.log(float((pi * m).sum() / pi.sum())), dtype=torch.float64)
    log_n = _log_components(toy, x, sigma) + torch.log(pi)[None]
    with torch.no_grad():
        numerator = torch.logsumexp(log_n + torch.log(m.clamp_min(1e-300))[None], dim=1)
        return numerator - torch.logsumexp(log_n, dim=1)


def _log_components(toy, x, sigma):
    import torch

    modes = torch.tensor(toy.modes, dtype=torch.float64)
    variance = torch.tensor(toy.stds, dtype=torch.float64) ** 2 + sigma ** 2
    squares = ((x[:, None, :] - modes[None]) ** 2).sum(-1)
    return -squares / (2 * variance[None]) - 0.5 * x.shape[1] * torch.log(variance)[None]


def exact_laplacian_difference(toy, x, sigma, concept="negative"):
    """Δ log q_σ(x | c) − Δ log q_σ(x), c = ỹ by default: the divergence term an ODE path lacks (exact, from the
    mixture)."""
    import torch

    def laplacian(weights):
        # log q = logsumexp_k(a_k), a_k = log w_k + log N_k; ∇a_k = −(x − μ_k)/v_k, Δa_k = −D/v_k.
        # Δ log q = Σ γ_k(Δa_k + ‖∇a_k‖²) − ‖Σ γ_k ∇a_k‖².
        modes = torch.tensor(toy.modes, dtype=torch.float64)
        variance = torch.tensor(toy.stds, dtype=torch.float64) ** 2 + sigma ** 2
        log_a = _log_components(toy, x, sigma) + torch.log(weights.clamp_min(1e-300))[None]
        gamma = torch.softmax(log_a, dim=1)
        grads = -(x[:, None, :] - modes[None]) / variance[None, :, None]
        first = (gamma * (-x.shape[1] / variance[None] + (grads ** 2).sum(-1))).sum(1)
        mean = (gamma[:, :, None] * grads).sum(1)
        return first - (mean ** 2).sum(1)

    pi = torch.tensor(toy.weights, dtype=torch.float64)
    m = torch.tensor(toy.concepts[concept], dtype=torch.float64)
    return laplacian(pi * m) - laplacian(pi)


# ---- oracle and instrumentation: hooks on the pack's DynamicNegativeState ----

ORACLE = "oracle"
RECORD = []  # (σ_ve, x_ve, tracked p) per evaluation while recording


def install_hooks():
    """Route states whose settings name a toy (`oracle_toy`) to the exact p of their concept (`oracle_concept`, ỹ by
    default), and record evaluations when asked."""
    state_class = support.pack_module("nodes.dynamic").DynamicNegativeState
    if getattr(state_class, "_family_hooked", False):
        return
    original = state_class.update_from

    def update_from(self, evaluation, negative_pred, laplacian=None):
        toy = getattr(self.settings, "oracle_toy", None)
        if toy is not None and getattr(self.settings, "oracle_kind", ORACLE) == ORACLE:
            import torch

            s = self.settings
            concept = getattr(s, "oracle_concept", "negative")
            p = exact_log_p(toy, evaluation.x.double(), evaluation.sigma, concept).exp().clamp(s.p_min, s.p_max)
            self.log_odds = (torch.log(p) - torch.log1p(-p)).to(evaluation.x.dtype)
            self._previous = None
            result = self.scale()
        else:
            result = original(self, evaluation, negative_pred, laplacian)
        if RECORDING[0]:
            RECORD.append((evaluation.sigma, evaluation.x.double().clone(), self.p.double().clone()))
        return result

    kernel_evidence = state_class._kernel_evidence

    def kernel_with_divergence(self, previous, current, p, laplacian=None):
        # An ODE path lacks the Itô term −½(σ_a² − σ_b²)·τ·(Δlog q_ỹ − Δlog q_∅). 'divergence': the Itô update with the
        # exact Laplacian difference from the mixture in place of its estimate (the left point); 'trapezoid-exact':
        # that Laplacian at both ends of the step in the pack's trapezoid (Stratonovich) form.
        kind = getattr(self.settings, "oracle_kind", None)
        if kind not in ("divergence", "trapezoid-exact") or not math.isfinite(previous[1]):
            return kernel_evidence(self, previous, current, p, laplacian)
        toy, concept = self.settings.oracle_toy, self.settings.oracle_concept
        exact_a = exact_laplacian_difference(toy, previous[0].double(), previous[1], concept).to(previous[0].dtype)
        if kind == "divergence":
            return kernel_evidence(self, previous, current, p, exact_a)
        exact_b = exact_laplacian_difference(toy, current[0].double(), current[1], concept).to(current[0].dtype)
        return self._trapezoid_evidence(previous, current, exact_a, exact_b)

    state_class.update_from = update_from
    state_class._kernel_evidence = kernel_with_divergence
    state_class._family_hooked = True


RECORDING = [False]


STOCHASTIC = ("euler_ancestral", "dpmpp_sde", "dpmpp_2s_ancestral")


def method_settings(method: str, toy, sampler: str, concept: str = "negative"):
    """The dynamic negative's settings at the defaults for one method and the toy's concept c (ỹ by default):
    'oracle': the exact p(c | x_t); 'ito+divergence', 'ito+trapezoid-exact': the Itô update with the exact
    Laplacian difference on ODE samplers (kernel_with_divergence); 'M@prior': method M told P(c) as its prior."""
    dynamic = bench.dynamic_module()
    if method.endswith("@prior"):  # the same method told the toy's exact p(c) as its prior (calibration apart)
        settings = method_settings(method.removesuffix("@prior"), toy, sampler, concept)
        exact = replace(settings, prior=min(max(concept_share(toy, concept), 1e-4), settings.p_max))
        for name in ("oracle_toy", "oracle_kind", "oracle_concept"):
            if hasattr(settings, name):
                object.__setattr__(exact, name, getattr(settings, name))
        return exact
    if method == ORACLE:
        return _tagged(dynamic.DynamicNegative(), toy, ORACLE, concept)
    for suffix, kind in (("+divergence", "divergence"), ("+trapezoid-exact", "trapezoid-exact")):
        if method.endswith(suffix):  # the Itô update on ODE samplers (an SDE path needs no Laplacian)
            settings = dynamic.DynamicNegative(method=method.removesuffix(suffix))
            return settings if sampler in STOCHASTIC else _tagged(settings, toy, kind, concept)
    return dynamic.DynamicNegative(method=method)


def _tagged(settings, toy, kind, concept="negative"):
    # A plain attribute on a frozen dataclass instance: the pack reads only the fields it knows.
    object.__setattr__(settings, "oracle_toy", toy)
    object.__setattr__(settings, "oracle_kind", kind)
    object.__setattr__(settings, "oracle_concept", concept)
    return settings


# ---- metrics ----

def metrics(points, toy) -> dict:
    import torch

    points = points.double()[:, :len(toy.modes[0])]
    modes = torch.tensor(toy.modes, dtype=torch.float64)
    stds = torch.tensor(toy.stds, dtype=torch.float64)
    distance = (points[:, None, :] - modes[None]).norm(dim=-1) / stds[None]
    nearest = distance.min(dim=1)
    on = nearest.values <= 3.0
    positive = toy.concepts["positive"]
    share = [float(((nearest.indices == k) & on).double().mean()) for k in range(len(toy.modes))]
    out = {"forbidden": forbidden_mass(share, toy.concepts["negative"]),
           "off": float((~on).double().mean()),
           "fidelity": 1.0 - sum(share[k] for k in range(len(share)) if positive[k] == 0.0),
           "shares": share}
    if SECOND in toy.concepts:
        out["forbidden_2"] = forbidden_mass(share, toy.concepts[SECOND])
    return out


def forbidden_mass(shares, memberships) -> float:
    """The share of the samples on modes fully in a concept."""
    return sum(share for share, m in zip(shares, memberships) if m >= 1.0)


def kept_targets(toy, strength: float) -> dict:
    """Per half-covered wanted mode: its share in p(x|y)·(p(x|¬ỹ)/p(x))^λ (λ = strength) and at λ = 1."""
    weights, pos, neg = toy.weights, toy.concepts["positive"], toy.concepts["negative"]
    out = {}
    for lam in (1.0, strength):
        mass = [w * p * (1 - n) ** lam for w, p, n in zip(weights, pos, neg)]
        total = sum(mass)
        for k in range(len(mass)):
            if pos[k] > 0 and 0 < neg[k] < 1:
                out.setdefault(k, {})[lam] = mass[k] / total
    return out


# ---- runs ----

def sweep(members, samples: int, samplers, kinds, runs, seed=SAMPLE_SEED, progress=True) -> list:
    """One row per run: for each toy, model kind (EDM/flow) and sampler, the runs `runs(toy, sampler)` yields as
    (the row's own fields, the Setting to sample)."""
    support.load_pack()
    install_hooks()
    rows = []
    started = time.perf_counter()
    for member in members:
        for kind in kinds:
            toy = replace(member.toy, flow=kind == "flow", name=f"{member.toy.name} {kind}")
            model = bench.build_model(toy)
            for sampler in samplers:
                for fields, setting in runs(toy, sampler):
                    points = bench.sample(model, setting, samples, fields.pop("seed", seed))
                    rows.append({"toy": member.index, "class": member.kind, "dims": len(toy.modes[0]),
                                 "model": kind, "sampler": sampler, **fields, **metrics(points, toy)})
        if progress:
            print(f"toy {member.index} done, {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    return rows


def run_family(methods, samples: int, toys=None, samplers=SAMPLERS, kinds=("edm", "flow"), seed=SAMPLE_SEED,
               progress=True) -> list:
    def runs(toy, sampler):
        for method in methods:
            name, noise = split_seed(method, seed)
            yield {"method": method, "seed": noise}, bench.Setting(
                f"{method}", "dynamic", sampler=sampler, toy=toy, dynamic=method_settings(name, toy, sampler),
                panel=False)

    return sweep(toys if toys is not None else family(), samples, samplers, kinds, runs, seed, progress)


def split_seed(method: str, seed: int) -> tuple:
    """'M@seedN' → (M, N): method M with other noise (the oracle at another seed measures the criterion's noise
    floor: how often the exact p itself fails the bound against its own run on seed 0)."""
    name, _, other = method.partition("@seed")
    return name, int(other) if other else seed


def judge(rows, method: str, reference: str = ORACLE) -> list:
    """Per run of `method`: (row, oracle row, passes, what failed)."""
    oracle = {(r["toy"], r["model"], r["sampler"]): r for r in rows if r["method"] == reference}
    out = []
    for r in rows:
        if r["method"] != method:
            continue
        o = oracle[(r["toy"], r["model"], r["sampler"])]
        failed = []
        if r["forbidden"] > max(LIMIT, o["forbidden"] + MARGIN):
            failed.append("forbidden")
        if r["off"] > max(LIMIT, o["off"] + MARGIN):
            failed.append("off")
        if r["fidelity"] < FIDELITY:
            failed.append("fidelity")
        out.append((r, o, not failed, failed))
    return out


def quantiles(values, qs=(0.5, 0.9, 1.0)):
    values = sorted(values)
    return [values[min(len(values) - 1, int(math.ceil(q * len(values))) - 1 if q > 0 else 0)] for q in qs]


def summary_table(rows, methods) -> str:
    lines = ["| method | runs passing item 2 | forbidden: median / 90 % / max | excess over oracle (forbidden): "
             "median / 90 % / max | off: median / 90 % / max | fidelity: min |", "|---|---:|---:|---:|---:|---:|"]
    for method in methods:
        judged = judge(rows, method) if method != ORACLE else [(r, r, True, []) for r in rows if r["method"] == ORACLE]
        if not judged:
            continue
        passing = sum(1 for j in judged if j[2])
        f = quantiles([j[0]["forbidden"] for j in judged])
        e = quantiles([j[0]["forbidden"] - j[1]["forbidden"] for j in judged])
        o = quantiles([j[0]["off"] for j in judged])
        lines.append(f"| {method} | {passing}/{len(judged)} | {f[0]:.3f} / {f[1]:.3f} / {f[2]:.3f} | "
                     f"{e[0]:+.3f} / {e[1]:+.3f} / {e[2]:+.3f} | {o[0]:.3f} / {o[1]:.3f} / {o[2]:.3f} | "
                     f"{min(j[0]['fidelity'] for j in judged):.3f} |")
    return "\n".join(lines)


def breakdown_table(rows, methods, key) -> str:
    """Passing runs per method and per value of `key` (class, sampler, model)."""
    values = sorted({r[key] for r in rows}, key=str)
    lines = [f"| method | " + " | ".join(str(v) for v in values) + " |", "|---|" + "---:|" * len(values)]
    for method in methods:
        if method == ORACLE:
            continue
        judged = judge(rows, method)
        cells = []
        for v in values:
            chosen = [j for j in judged if j[0][key] == v]
            cells.append(f"{sum(1 for j in chosen if j[2])}/{len(chosen)}")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def failures(rows, method, limit=12) -> str:
    judged = [j for j in judge(rows, method) if not j[2]]
    judged.sort(key=lambda j: -(j[0]["forbidden"] - j[1]["forbidden"]))
    lines = [f"| toy | class | model | sampler | forbidden (oracle) | off (oracle) | fidelity | failed |",
             "|---:|---|---|---|---:|---:|---:|---|"]
    for r, o, _, failed in judged[:limit]:
        lines.append(f"| {r['toy']} | {r['class']} | {r['model']} | {r['sampler']} | {r['forbidden']:.3f} "
                     f"({o['forbidden']:.3f}) | {r['off']:.3f} ({o['off']:.3f}) | {r['fidelity']:.3f} | "
                     f"{', '.join(failed)} |")
    return "\n".join(lines)


def criterion_table(rows, methods) -> str:
    """Per method: how many runs fail each criterion of item 2."""
    lines = ["| method | runs failing forbidden | failing off-manifold | failing fidelity |", "|---|---:|---:|---:|"]
    for method in methods:
        if method == ORACLE:
            continue
        judged = judge(rows, method)
        counts = [sum(1 for j in judged if name in j[3]) for name in ("forbidden", "off", "fidelity")]
        lines.append(f"| {method} | " + " | ".join(str(c) for c in counts) + " |")
    return "\n".join(lines)


def toy_table(rows, methods) -> str:
    """Passing runs per toy and method (of the toy's runs: samplers × model kinds)."""
    methods = [m for m in methods if m != ORACLE]
    judged = {m: judge(rows, m) for m in methods}
    lines = ["| toy | class | dims | " + " | ".join(methods) + " |", "|---:|---|---:|" + "---:|" * len(methods)]
    for member in family():
        cells = []
        for m in methods:
            chosen = [j for j in judged[m] if j[0]["toy"] == member.index]
            cells.append(f"{sum(1 for j in chosen if j[2])}/{len(chosen)}" if chosen else "–")
        if any(c != "–" for c in cells):
            lines.append(f"| {member.index} | {member.kind} | {len(member.toy.modes[0])} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def kept_table(rows, methods, strength=2.0) -> str:
    """Half-covered wanted modes: kept share per method against the λ-target and the oracle (median |difference|)."""
    lines = ["| method | half-covered modes × runs | median kept − oracle | max |kept − oracle| | "
             "median kept − λ-target |", "|---|---:|---:|---:|---:|"]
    members = {m.index: m for m in family()}
    oracle = {(r["toy"], r["model"], r["sampler"]): r for r in rows if r["method"] == ORACLE}
    for method in methods:
        diffs, target_diffs = [], []
        for r in rows:
            if r["method"] != method:
                continue
            targets = kept_targets(members[r["toy"]].toy, strength)
            for k, t in targets.items():
                diffs.append(r["shares"][k] - oracle[(r["toy"], r["model"], r["sampler"])]["shares"][k])
                target_diffs.append(r["shares"][k] - t[strength])
        if diffs:
            lines.append(f"| {method} | {len(diffs)} | {sorted(diffs)[len(diffs) // 2]:+.3f} | "
                         f"{max(abs(d) for d in diffs):.3f} | {sorted(target_diffs)[len(target_diffs) // 2]:+.3f} |")
    return "\n".join(lines)


# ---- two negatives (issue 16, item 3): a second negative beside the first, each against the exact-p oracle ----
#
# Fixed before any result was seen. The subset: the toys of the family where ỹ (the first negative) fully covers a
# wanted mode (it has something to remove) and at least two wanted modes are untouched by it. The free wanted mode
# is the untouched one of largest share π·m_y (no negative touches it); the second negative ỹ₂ fully covers one
# other untouched wanted mode (drawn, seed SECOND_SEED + toy index), so ỹ₂ is disjoint from ỹ; on every second toy
# of the subset (odd positions, in index order) it also holds half of one wanted mode that ỹ fully covers (drawn):
# partly overlapping. Configurations (the first negative always dynamic at the defaults, on the main node):
#   alone:            the first negative only;
#   + constant:       ỹ₂ on an ExtraNegative at its default neg_scale 3, whole run;
#   + constant early: the same on steps 0-⅓ (the README's setting that keeps samples on the data);
#   + dynamic:        ỹ₂ on an ExtraNegative with its own Dynamic Negative Scale at the defaults.
# Each runs with the pack's default update for every dynamic negative ("pack") and with the exact p(ỹᵢ | x_t) for
# every dynamic negative ("oracle": the constant one stays constant). Item 3's bound: each negative's forbidden mass
# ≤ the oracle's + MARGIN.

SECOND = "second"  # the second negative's concept name in a toy's concepts
SECOND_SEED = 1600
SECOND_CONSTANT = 3.0  # ExtraNegative's default neg_scale
TWO_NEGATIVE_CONFIGS = {  # name → None (no second negative) or (dynamic?, window start, window end)
    "alone": None,
    "+ constant": (False, 0.0, 1.0),
    "+ constant early": (False, 0.0, 1 / 3),
    "+ dynamic": (True, 0.0, 1.0),
}
TWO_NEGATIVE_METHODS = ("pack", "oracle")


def second_negative(member: FamilyToy, overlap: bool):
    """ỹ₂'s memberships by the rule above, or None where the toy is not in the subset."""
    pos, neg = member.toy.concepts["positive"], member.toy.concepts["negative"]
    modes = range(len(pos))
    untouched = [k for k in modes if pos[k] > 0 and neg[k] == 0]
    removed = [k for k in modes if pos[k] > 0 and neg[k] >= 1.0]
    if len(untouched) < 2 or not removed:
        return None
    free = max(untouched, key=lambda k: (member.toy.weights[k] * pos[k], -k))
    rng = random.Random(SECOND_SEED + member.index)
    second = [0.0] * len(pos)
    second[rng.choice([k for k in untouched if k != free])] = 1.0
    if overlap:
        second[rng.choice(removed)] = 0.5
    return tuple(second)


@functools.lru_cache(maxsize=None)
def two_negative_family() -> tuple:
    """The subset, each toy with its second concept (FamilyToy; overlap: any mode in both concepts)."""
    eligible = [m for m in family() if second_negative(m, False) is not None]
    out = []
    for position, member in enumerate(eligible):
        second = second_negative(member, overlap=position % 2 == 1)
        toy = replace(member.toy, concepts={**member.toy.concepts, SECOND: second})
        out.append(FamilyToy(member.index, member.kind, toy))
    return tuple(out)


def overlaps(toy) -> bool:
    return any(a > 0 and b > 0 for a, b in zip(toy.concepts["negative"], toy.concepts[SECOND]))


PACK_METHOD = ["mixture"]  # --pack-method: the pack's update for every dynamic negative (a method of the family),
# in the --two-negatives runs and in --two-negatives --trace


def concept_share(toy, concept: str) -> float:
    """P(c): the share of the toy's data in concept c."""
    weights, members = toy.weights, toy.concepts[concept]
    return sum(w * m for w, m in zip(weights, members)) / sum(weights)


def two_negative_setting(toy, sampler: str, config: str, method: str):
    """One run's setting: the first negative dynamic on the main node, the second (if any) on an ExtraNegative."""
    dynamic = bench.dynamic_module()

    def scale_for(concept):
        if method == "pack":  # the defaults (mixture update), or --pack-method
            return method_settings(PACK_METHOD[0], toy, sampler, concept)
        return method_settings(ORACLE, toy, sampler, concept)

    second = TWO_NEGATIVE_CONFIGS[config]
    extras = ()
    if second is not None:
        is_dynamic, start, end = second
        extras = ((SECOND, SECOND_CONSTANT, start, end, scale_for(SECOND) if is_dynamic else None),)
    return bench.Setting(f"{config}, {method}", "dynamic", sampler=sampler, toy=toy, dynamic=scale_for("negative"),
                         panel=False, extra_negatives=extras)


def run_two_negatives(samples: int, toys=None, samplers=SAMPLERS, kinds=("edm", "flow"),
                      configs=tuple(TWO_NEGATIVE_CONFIGS), seed=SAMPLE_SEED, progress=True) -> list:
    def runs(toy, sampler):
        for config in configs:
            for method in TWO_NEGATIVE_METHODS:
                yield ({"overlap": overlaps(toy), "config": config, "method": method},
                       two_negative_setting(toy, sampler, config, method))

    return sweep(toys if toys is not None else two_negative_family(), samples, samplers, kinds, runs, seed, progress)


def two_negative_judge(rows) -> list:
    """Per pack run: (row, its oracle row, the pack's alone row, the oracle's alone row, meets item 3)."""
    by_key = {(r["toy"], r["model"], r["sampler"], r["config"], r["method"]): r for r in rows}
    out = []
    for r in rows:
        if r["method"] != "pack":
            continue
        key = (r["toy"], r["model"], r["sampler"])
        o = by_key[(*key, r["config"], "oracle")]
        meets = r["forbidden"] <= o["forbidden"] + MARGIN and (
            TWO_NEGATIVE_CONFIGS[r["config"]] is None or r["forbidden_2"] <= o["forbidden_2"] + MARGIN)
        out.append((r, o, by_key.get((*key, "alone", "pack")), by_key.get((*key, "alone", "oracle")), meets))
    return out


def _median_max(values) -> str:
    values = sorted(values)
    return f"{values[(len(values) - 1) // 2]:.3f} / {values[-1]:.3f}"


def _median_worst(values) -> str:
    values = sorted(values)
    return f"{values[(len(values) - 1) // 2]:+.3f} / {values[-1]:+.3f}"


def two_negative_table(rows) -> str:
    """Per configuration, pack (oracle): each negative's forbidden mass, off-manifold, fidelity, the change of ỹ's
    forbidden mass when ỹ₂ is added, and the runs and toys meeting item 3."""
    judged = two_negative_judge(rows)
    lines = ["| configuration | runs | ỹ forbidden: median / max | ỹ₂ forbidden: median / max | off: median / max | "
             "fidelity: min | ỹ forbidden − alone: median / worst | runs meeting item 3 (failing on ỹ / on ỹ₂) | "
             "toys meeting it on every run |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for config in TWO_NEGATIVE_CONFIGS:
        chosen = [j for j in judged if j[0]["config"] == config]
        if not chosen:
            continue
        has_second = TWO_NEGATIVE_CONFIGS[config] is not None
        cells = []
        for side in (0, 1):  # pack, oracle
            cell = {"f1": _median_max([j[side]["forbidden"] for j in chosen]),
                    "f2": _median_max([j[side]["forbidden_2"] for j in chosen]) if has_second else "–",
                    "off": _median_max([j[side]["off"] for j in chosen]),
                    "fid": f"{min(j[side]['fidelity'] for j in chosen):.3f}",
                    "delta": (_median_worst([j[side]["forbidden"] - j[2 + side]["forbidden"] for j in chosen
                                             if j[2 + side] is not None]) if has_second else "–")}
            cells.append(cell)
        toys = sorted({j[0]["toy"] for j in chosen})
        every = sum(1 for t in toys if all(j[4] for j in chosen if j[0]["toy"] == t))
        failing_first = sum(1 for j in chosen if j[0]["forbidden"] > j[1]["forbidden"] + MARGIN)
        failing_second = sum(1 for j in chosen if has_second and j[0]["forbidden_2"] > j[1]["forbidden_2"] + MARGIN)
        lines.append(f"| {config} | {len(chosen)} | " + " | ".join(
            f"{cells[0][k]} ({cells[1][k]})" if cells[0][k] != "–" else "–"
            for k in ("f1", "f2", "off", "fid", "delta"))
            + f" | {sum(1 for j in chosen if j[4])}/{len(chosen)} ({failing_first} / {failing_second}) | "
              f"{every}/{len(toys)} |")
    return "\n".join(lines)


def two_negative_toy_table(rows) -> str:
    """Per toy and configuration: runs meeting item 3, and ỹ's forbidden mass pack (oracle), median over runs."""
    judged = two_negative_judge(rows)
    configs = [c for c in TWO_NEGATIVE_CONFIGS if any(j[0]["config"] == c for j in judged)]
    lines = ["| toy | class | dims | ỹ₂ overlaps ỹ | " + " | ".join(configs) + " |",
             "|---:|---|---:|---|" + "---:|" * len(configs)]
    for toy in sorted({j[0]["toy"] for j in judged}):
        mine = [j for j in judged if j[0]["toy"] == toy]
        first = mine[0][0]
        cells = []
        for config in configs:
            chosen = [j for j in mine if j[0]["config"] == config]
            pack = sorted(j[0]["forbidden"] for j in chosen)[(len(chosen) - 1) // 2]
            oracle = sorted(j[1]["forbidden"] for j in chosen)[(len(chosen) - 1) // 2]
            cells.append(f"{sum(1 for j in chosen if j[4])}/{len(chosen)}: {pack:.3f} ({oracle:.3f})")
        lines.append(f"| {toy} | {first['class']} | {first['dims']} | {'yes' if first['overlap'] else 'no'} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


def two_negative_failures(rows, limit=16) -> str:
    judged = [j for j in two_negative_judge(rows) if not j[4]]
    judged.sort(key=lambda j: -max(j[0]["forbidden"] - j[1]["forbidden"],
                                   j[0].get("forbidden_2", 0.0) - j[1].get("forbidden_2", 0.0)))
    lines = ["| toy | model | sampler | configuration | ỹ forbidden (oracle) | ỹ₂ forbidden (oracle) | off (oracle) |",
             "|---:|---|---|---|---:|---:|---:|"]
    for r, o, _, _, _ in judged[:limit]:
        second = (f"{r['forbidden_2']:.3f} ({o['forbidden_2']:.3f})" if TWO_NEGATIVE_CONFIGS[r["config"]] is not None
                  else "–")
        lines.append(f"| {r['toy']} | {r['model']} | {r['sampler']} | {r['config']} | {r['forbidden']:.3f} "
                     f"({o['forbidden']:.3f}) | {second} | {r['off']:.3f} ({o['off']:.3f}) |")
    return "\n".join(lines)


def two_negative_origins(index: int, sampler: str, kind: str, samples: int, config: str = "+ dynamic"):
    """Why ỹ's forbidden mass changes when ỹ₂ is added, on toy `index`: the same noise with and without ỹ₂ (pack and
    oracle), where the samples that end on a mode fully in ỹ with ỹ₂ end without it, and, for the pack, p(ỹ | x_t)
    tracked vs exact along the path of those that end there only with ỹ₂."""
    import collections
    import torch

    support.load_pack()
    install_hooks()
    member = next(m for m in two_negative_family() if m.index == index)
    toy = replace(member.toy, flow=kind == "flow")
    model = bench.build_model(toy)
    negative, second, positive = (toy.concepts[c] for c in ("negative", SECOND, "positive"))

    def where(points):
        modes = torch.tensor(toy.modes, dtype=torch.float64)
        stds = torch.tensor(toy.stds, dtype=torch.float64)
        nearest = ((points.double()[:, None, :modes.shape[1]] - modes[None]).norm(dim=-1) / stds).min(1)
        return [k if d <= 3.0 else -1 for k, d in zip(nearest.indices.tolist(), nearest.values.tolist())]

    def label(k):
        return ("off the data" if k < 0 else "a mode fully in ỹ" if negative[k] >= 1 else "ỹ₂'s mode"
                if second[k] >= 1 else "outside y" if positive[k] == 0 else "another wanted mode")

    for method in TWO_NEGATIVE_METHODS:
        ends = {}
        for chosen in ("alone", config):
            RECORD.clear()
            RECORDING[0] = True
            points = bench.sample(model, two_negative_setting(toy, sampler, chosen, method), samples, SAMPLE_SEED)
            RECORDING[0] = False
            ends[chosen] = where(points)
            if chosen == config:  # p per evaluation of the main negative, and of ỹ₂ where it is dynamic
                both = TWO_NEGATIVE_CONFIGS[config][0]
                first, second_p = (RECORD[0::2], RECORD[1::2]) if both else (list(RECORD), None)
        alone = [label(k) == "a mode fully in ỹ" for k in ends["alone"]]
        added = [label(k) == "a mode fully in ỹ" for k in ends[config]]
        origins = collections.Counter(label(k) for k, bad in zip(ends["alone"], added) if bad)
        print(f"\n{method}: ỹ forbidden alone {sum(alone) / samples:.3f}, {config} {sum(added) / samples:.3f}; of the "
              f"latter, alone they end on: " + ", ".join(f"{name} {n}" for name, n in origins.most_common()))
        new = torch.tensor([b and not a for a, b in zip(alone, added)])
        if method == "pack" and new.any():
            print(f"p(ỹ | x_t) and p(ỹ₂ | x_t) of the {int(new.sum())} samples that end on a mode fully in ỹ only "
                  f"with ỹ₂ (mean):")
            shown = [*range(0, len(first), 3), len(first) - 1]
            print("| σ (VE) | " + " | ".join(f"{first[i][0]:.3g}" for i in shown) + " |")
            print("|---|" + "---:|" * len(shown))
            for name, records, concept in (("ỹ tracked", first, None), ("ỹ exact", first, "negative"),
                                           ("ỹ₂ tracked", second_p, None), ("ỹ₂ exact", first, SECOND)):
                if records is None:
                    continue
                values = [records[i][2] if concept is None else exact_log_p(toy, records[i][1], records[i][0], concept).exp()
                          for i in shown]
                print(f"| {name} | " + " | ".join(f"{float(v[new].mean()):.2f}" for v in values) + " |")


def trace(index: int, methods, samples: int, sampler: str, kind: str):
    """p tracked vs exact along the trajectories of toy `index`, for samples ending on a fully forbidden wanted mode."""
    import torch

    support.load_pack()
    install_hooks()
    member = family()[index]
    toy = replace(member.toy, flow=kind == "flow")
    model = bench.build_model(toy)
    for method in methods:
        RECORD.clear()
        RECORDING[0] = True
        setting = bench.Setting(method, "dynamic", sampler=sampler, toy=toy, dynamic=method_settings(method, toy, sampler))
        points = bench.sample(model, setting, samples, SAMPLE_SEED)
        RECORDING[0] = False
        m = metrics(points, toy)
        neg, pos = toy.concepts["negative"], toy.concepts["positive"]
        modes = torch.tensor(toy.modes, dtype=torch.float64)
        stds = torch.tensor(toy.stds, dtype=torch.float64)
        nearest = ((points.double()[:, None, :modes.shape[1]] - modes[None]).norm(dim=-1) / stds).min(1)
        bad = torch.zeros(samples, dtype=torch.bool)
        for k in range(len(neg)):
            if neg[k] >= 1 and pos[k] > 0:
                bad |= (nearest.indices == k) & (nearest.values <= 3)
        print(f"\n{method}: forbidden {m['forbidden']:.3f}, off {m['off']:.3f}; {int(bad.sum())} samples end on a "
              f"fully forbidden wanted mode")
        print("sigma_ve | tracked p (those samples: mean) | exact p (mean) | all samples: mean |tracked − exact|")
        for sigma, x, p in RECORD:
            exact = exact_log_p(toy, x, sigma).exp()
            if bad.any():
                print(f"{sigma:8.3f} | {float(p[bad].mean()):.3f} | {float(exact[bad].mean()):.3f} | "
                      f"{float((p - exact).abs().mean()):.3f}")
            else:
                print(f"{sigma:8.3f} | - | - | {float((p - exact).abs().mean()):.3f}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--methods", default="oracle,mixture,published")
    parser.add_argument("--toys", default="", help="comma-separated indices (default: the whole family)")
    parser.add_argument("--samplers", default=",".join(SAMPLERS))
    parser.add_argument("--kinds", default="edm,flow")
    parser.add_argument("--seed", type=int, default=SAMPLE_SEED, help="the samples' noise seed")
    parser.add_argument("--trace", type=int, help="trace p tracked vs exact on this toy instead")
    parser.add_argument("--sampler", default="heun", help="sampler of --trace")
    parser.add_argument("--kind", default="edm", help="model kind of --trace")
    parser.add_argument("--out", type=Path, help="save the rows (JSON)")
    parser.add_argument("--describe", action="store_true", help="print the family")
    parser.add_argument("--load", default="", help="comma-separated JSON files of saved rows to tabulate (no run); "
                                                   "'FILE:OLD=NEW' renames method OLD of that file")
    parser.add_argument("--two-negatives", action="store_true",
                        help="item 3 instead: a second negative beside the first on the subset of the family "
                             "(--toys: indices of the family)")
    parser.add_argument("--pack-method", default="mixture",
                        help="with --two-negatives: the update of every dynamic negative of the 'pack' runs, as in "
                             "--methods (mixture@prior: each told its concept's exact share as its prior)")
    parser.add_argument("--probe-step", type=float,
                        help="the divergence probe's step h (× σ) of the ito-probe update (default: the pack's)")
    parser.add_argument("--steps", type=int, default=bench.STEPS, help="sampler steps of every run")
    parser.add_argument("--family-seed", type=int, default=FAMILY_SEED,
                        help="draw another family by the same rules (a held-out check of a choice made on seed 16)")
    args = parser.parse_args(argv)
    FAMILY[0] = args.family_seed
    bench.STEPS = args.steps
    bench.set_probe_step(args.probe_step)
    methods = args.methods.split(",")
    PACK_METHOD[0] = args.pack_method
    if args.two_negatives and args.trace is not None:
        two_negative_origins(args.trace, args.sampler, args.kind, args.samples)
        return
    if args.two_negatives:
        two_negatives(args)
        return
    if args.describe:
        for m in family():
            print(m.index, m.kind, m.toy.modes, m.toy.stds, m.toy.weights, m.toy.concepts["positive"],
                  m.toy.concepts["negative"])
        return
    if args.trace is not None:
        trace(args.trace, methods, args.samples, args.sampler, args.kind)
        return
    if args.load:
        rows = []
        for item in args.load.split(","):
            path, _, rename = item.partition(":")
            old, _, new = rename.partition("=")
            rows += [{**r, "method": new if old and r["method"] == old else r["method"]}
                     for r in json.loads(Path(path).read_text())]
        rows = [r for r in rows if r["method"] in methods]
    else:
        toys = [family()[int(i)] for i in args.toys.split(",")] if args.toys else None
        rows = run_family(methods, args.samples, toys, args.samplers.split(","), args.kinds.split(","), args.seed)
    if args.out:
        args.out.write_text(json.dumps(rows))
    print(summary_table(rows, methods))
    for key in ("class", "sampler", "model"):
        print()
        print(breakdown_table(rows, methods, key))
    print()
    print(kept_table(rows, [m for m in methods if m != ORACLE]))
    print()
    print(criterion_table(rows, methods))
    print()
    print(toy_table(rows, methods))
    for method in methods:
        if method != ORACLE:
            print(f"\nfailing runs, {method}:\n{failures(rows, method)}")


def two_negatives(args):
    if args.load:
        rows = [r for path in args.load.split(",") for r in json.loads(Path(path).read_text())]
    else:
        members = two_negative_family()
        toys = [m for m in members if str(m.index) in args.toys.split(",")] if args.toys else members
        rows = run_two_negatives(args.samples, toys, args.samplers.split(","), args.kinds.split(","), seed=args.seed)
    if args.out:
        args.out.write_text(json.dumps(rows))
    print(two_negative_table(rows))
    for overlap, title in ((False, "ỹ₂ disjoint from ỹ"), (True, "ỹ₂ partly overlapping ỹ")):
        print(f"\n{title}:\n")
        print(two_negative_table([r for r in rows if r["overlap"] == overlap]))
    print()
    print(two_negative_toy_table(rows))
    print()
    print(two_negative_failures(rows))


if __name__ == "__main__":
    main()
