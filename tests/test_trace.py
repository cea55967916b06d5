"""The guidance trace on the real host: it changes no sample, works on both routes, and its numbers equal an
independent computation from the predictions captured at the model call itself."""

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

import support
from support import custom_advanced, guider, ksampler, ksampler_sigmas, patch

STEPS = 6
CFG = 5.0
NEG_SCALE = 2.0  # three-way: s⁻ ≠ s⁺ − 1, so the trace records every norm


def nodes():
    return support.pack_module("nodes.negative_guidance")


def trace_nodes():
    return support.pack_module("nodes.trace_nodes")


def new_trace():
    return trace_nodes().NegativeGuidanceTrace.execute().result[0]


class PredictionTap:
    """Captures every model call's denoised output per conditioning index (0 = y, 1 = ỹ, 2 = ∅), at the model."""

    def __init__(self):
        self.calls = []  # (sigma, {index: tensor})

    def __call__(self, executor, x, t, *args, **kwargs):
        out = executor(x, t, *args, **kwargs)
        transformer_options = kwargs.get("transformer_options", args[3] if len(args) > 3 else {})
        chunks = list(transformer_options["cond_or_uncond"])
        rows = out.shape[0] // len(chunks)
        self.calls.append((float(t.reshape(-1)[0]),
                           {c: out[i * rows:(i + 1) * rows].detach().clone() for i, c in enumerate(chunks)}))
        return out

    def tapped(self, model):
        import comfy.patcher_extension

        m = model.clone()
        m.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, "test_prediction_tap", self)
        return m


def reference_metrics(sigma, preds, cfg, negative_scale):
    """‖Δ‖ in noise units (ΔD/σ), per sample then averaged, written out with numpy."""
    def flat(i):
        return preds[i].double().numpy().reshape(preds[i].shape[0], -1) / sigma
    c, n, e = flat(0), flat(1), flat(2)
    dp, dn = c - e, n - e
    norm = lambda v: np.linalg.norm(v, axis=1)  # noqa: E731
    cosine = ((dp * dn).sum(1) / (norm(dp) * norm(dn))).mean()
    ratio = (norm(negative_scale * dn) / norm(cfg * dp)).mean()
    return norm(dp).mean(), norm(dn).mean(), cosine, ratio, norm(c - n).mean()


# ---- recording changes nothing ----

@pytest.mark.parametrize("sampler", ["euler", "heun"])
def test_patch_route_same_samples_with_and_without_trace(host, sampler):
    trace = new_trace()
    plain = ksampler(patch(host.model, NEG_SCALE, empty=host.empty), host.positive, host.negative, CFG, sampler, STEPS,
                     latent=host.latent)
    traced = ksampler(patch(host.model, NEG_SCALE, empty=host.empty, trace=trace), host.positive, host.negative, CFG,
                      sampler, STEPS, latent=host.latent)
    assert torch.equal(plain, traced)  # bit for bit
    run = trace.last_run
    assert run is not None and run.cfg == CFG  # s⁺ is the KSampler's cfg on the patch route
    assert len(run.evaluations) == (STEPS if sampler == "euler" else 2 * STEPS - 1)


def test_guider_route_same_samples_with_and_without_trace(host):
    trace = new_trace()
    sigmas = ksampler_sigmas(host.model, "heun", STEPS)
    plain = custom_advanced(guider(host.model, host.positive, host.negative, CFG, NEG_SCALE, empty=host.empty),
                            "heun", sigmas, host.latent)
    traced = custom_advanced(guider(host.model, host.positive, host.negative, CFG, NEG_SCALE, empty=host.empty,
                                    trace=trace), "heun", sigmas, host.latent)
    assert torch.equal(plain, traced)
    assert len(trace.last_run.evaluations) == 2 * STEPS - 1
    assert trace.last_run.sigmas == pytest.approx(sigmas.tolist())


def test_no_trace_means_nothing_is_measured(host, monkeypatch):
    """Without a trace the per-evaluation measurement never runs; with one it runs once per evaluation (so the
    count below sees it)."""
    trace_module = support.pack_module("nodes.trace")
    calls, original = [], trace_module.measure

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(trace_module, "measure", counted)
    ksampler(patch(host.model, NEG_SCALE, empty=host.empty), host.positive, host.negative, CFG, "euler", STEPS,
             latent=host.latent)
    assert calls == []
    ksampler(patch(host.model, NEG_SCALE, empty=host.empty, trace=new_trace()), host.positive, host.negative, CFG,
             "euler", STEPS, latent=host.latent)
    assert len(calls) == STEPS


# ---- the numbers equal an independent computation ----

@pytest.mark.parametrize("route", ["patch", "guider"])
def test_recorded_numbers_equal_independent_computation(host, route):
    trace, tap = new_trace(), PredictionTap()
    model = tap.tapped(host.model)
    neg_scale, start, end = 2.5, 0.0, 0.5  # the negative acts over the first half of the steps
    sigmas = ksampler_sigmas(host.model, "euler", STEPS)
    if route == "patch":
        ksampler(patch(model, neg_scale, start, end, empty=host.empty, trace=trace), host.positive, host.negative, CFG,
                 "euler", STEPS, latent=host.latent)
    else:
        custom_advanced(guider(model, host.positive, host.negative, CFG, neg_scale, start, end, empty=host.empty,
                               trace=trace), "euler", sigmas, host.latent)
    evaluations = trace.last_run.evaluations
    assert len(evaluations) == len(tap.calls) == STEPS
    for i, (record, (sigma, preds)) in enumerate(zip(evaluations, tap.calls)):
        assert record.step == i + 1 and record.index == i  # steps are numbered from 1
        assert record.sigma == pytest.approx(sigma) and sigma == pytest.approx(float(sigmas[i]))
        assert record.cond_scale == CFG
        inside = i / STEPS < end
        assert record.negative_scales == (pytest.approx(neg_scale if inside else 0.0),)
        assert set(record.evaluated) == {"positive", "empty", *(("negative",) if inside else ())}
        assert record.passes == len(preds)
        if inside:
            dp, dn, cosine, ratio, c_minus_n = reference_metrics(sigma, preds, CFG, neg_scale)
            assert record.positive_norm == pytest.approx(dp, rel=1e-6)
            assert record.negative_norm == pytest.approx(dn, rel=1e-6)
            assert record.cosine == pytest.approx(cosine, rel=1e-6, abs=1e-9)
            assert record.ratio == pytest.approx(ratio, rel=1e-6)
            assert record.cond_minus_negative_norm == pytest.approx(c_minus_n, rel=1e-6)
        else:
            # The negative is not evaluated: its term is exactly zero; its own norm is unknown, not invented.
            assert record.ratio == 0.0
            assert record.negative_norm is None and record.cosine is None
            assert record.positive_norm is not None and record.positive_norm > 0


def test_ordinary_negative_records_none_where_empty_is_not_evaluated(host):
    trace, tap = new_trace(), PredictionTap()
    # Defaults: neg_scale = cfg - 1 over the whole run (the ordinary negative prompt); ∅ drops out.
    ksampler(patch(tap.tapped(host.model), -1.0, empty=host.empty, trace=trace), host.positive, host.negative,
             CFG, "euler", STEPS, latent=host.latent)
    for record, (sigma, preds) in zip(trace.last_run.evaluations, tap.calls):
        assert record.evaluated == ("positive", "negative") and record.passes == 2
        assert record.negative_scale == pytest.approx(CFG - 1.0)
        assert record.positive_norm is None and record.negative_norm is None
        assert record.cosine is None and record.ratio is None
        c = preds[0].double().numpy().reshape(1, -1) / sigma
        n = preds[1].double().numpy().reshape(1, -1) / sigma
        assert record.cond_minus_negative_norm == pytest.approx(np.linalg.norm(c - n), rel=1e-6)


# ---- the plot node ----

def test_plot_node_image_json_and_ui(host):
    trace = new_trace()
    latent = {"samples": ksampler(patch(host.model, NEG_SCALE, empty=host.empty, trace=trace), host.positive,
                                  host.negative, CFG, "heun", STEPS, latent=host.latent)}
    output = trace_nodes().NegativeGuidanceTracePlot.execute(trace, latent, "step")
    image, text, passed = output.result
    assert image.shape[0] == 1 and image.shape[-1] == 3 and image.shape[1] > 200
    # The curves are drawn: s⁻·w(t) (red) and the negative/positive ratio (purple), against the same plot of the
    # run with no evaluations, which has only their legend entries.
    empty = support.pack_module("nodes.trace").render_run(dataclasses.replace(trace.last_run, pending=[], recorded=[]))
    for colour in ("tab:red", "tab:purple"):
        assert support.colour_pixels(image, colour) > support.colour_pixels(empty, colour) + 200, colour
    data = json.loads(text)
    assert len(data["evaluations"]) == 2 * STEPS - 1 and data["cfg"] == CFG
    assert all(math.isfinite(e["ratio"]) for e in data["evaluations"])
    assert passed is latent
    assert output.ui is not None and output.ui.as_dict()["images"]
    sigma_plot = trace_nodes().NegativeGuidanceTracePlot.execute(trace, latent, "sigma").result[0]
    assert sigma_plot.shape == image.shape


def test_plot_node_without_run_says_what_to_wire(host):
    """No run recorded: the sentence is the plot (shown on the node) and the JSON; the latent goes on."""
    output = trace_nodes().NegativeGuidanceTracePlot.execute(new_trace(), host.latent, "step")
    image, text, passed = output.result
    assert "no run was recorded for the sampling" in json.loads(text)["nothing_recorded"]
    assert image.shape[0] == 1 and image.shape[-1] == 3 and float(image.std()) > 0.01  # the sentence drawn
    assert passed is host.latent and output.ui.as_dict()["images"]


# ---- schemas of the new nodes (saved workflows store widget values by position) ----

PINNED = {
    "NegativeGuidanceTrace": [],
    "NegativeGuidanceTracePlot": ["trace", "latent", "x_axis"],
    "NegativeGuidanceProbe": ["model", "clip", "positive_text", "negative_text", "positive_word", "negative_word",
                              "map_size", "layers"],
    "NegativeGuidanceProbePlot": ["probe", "latent"],
}


@pytest.mark.parametrize("node_id", sorted(PINNED))
def test_new_node_schemas_pinned(host, node_id):
    import asyncio

    extension = support.pack_module("nodes.extension")
    node_list = asyncio.run(asyncio.run(extension.comfy_entrypoint()).get_node_list())
    schema = {node.GET_SCHEMA().node_id: node.GET_SCHEMA() for node in node_list}[node_id]
    assert [i.id for i in schema.inputs] == PINNED[node_id]
    for i in schema.inputs:
        if i.id not in ("model",):
            assert i.tooltip, f"{node_id}: input '{i.id}' needs a tooltip"


def test_guidance_nodes_take_the_trace_as_optional_input_after_evaluation(host):
    for node in (nodes().NegativeGuidance, nodes().NegativeGuidanceGuider):
        inputs = node.GET_SCHEMA().inputs
        names = [i.id for i in inputs]
        assert names.index("trace") == names.index("evaluation") + 1 and inputs[names.index("trace")].optional
