"""A plot shows only the run of the sampling it follows, never an earlier one.

ComfyUI caches the input-less NegativeGuidanceTrace node (and the probe node while its inputs stay the same), so
one handle lives across queued prompts. Each prompt is simulated here with ComfyUI's own execution context (the
one its executor sets around every node), as /prompt runs it: tests/e2e/test_trace_runs.py does the same through
a real server.
"""

import json

import support
from support import ksampler, patch

CFG = 5.0


def trace_nodes():
    return support.pack_module("nodes.trace_nodes")


def in_prompt(prompt_id, node_id, run):
    from comfy_execution.utils import CurrentNodeContext

    with CurrentNodeContext(prompt_id, node_id):
        return run()


def sample(host, model, steps, prompt_id):
    return in_prompt(prompt_id, "7", lambda: {"samples": ksampler(model, host.positive, host.negative, CFG, "euler",
                                                                   steps, latent=host.latent)})


def trace_plot(trace, latent, prompt_id, x_axis="step"):
    return in_prompt(prompt_id, "21", lambda: trace_nodes().NegativeGuidanceTracePlot.execute(trace, latent, x_axis))


def test_trace_plot_never_shows_an_earlier_run(host):
    trace = trace_nodes().NegativeGuidanceTrace.execute().result[0]  # cached: the same handle in every prompt
    first = sample(host, patch(host.model, 2.0, empty=host.empty, trace=trace), 3, "prompt-1")
    shown = json.loads(trace_plot(trace, first, "prompt-1").result[1])
    assert shown["neg_scale"] == 2.0 and len(shown["evaluations"]) == 3

    # The trace disconnected from the patch; the sampler runs again with other settings.
    second = sample(host, patch(host.model, 6.0, empty=host.empty), 5, "prompt-2")
    nothing = trace_plot(trace, second, "prompt-2")
    assert "no run was recorded for the sampling" in json.loads(nothing.result[1])["nothing_recorded"]
    assert nothing.result[2] is second  # passed on: the rest of the prompt runs

    # Only the plot changed (x_axis): ComfyUI reuses the cached sampler output, whose run the plot did show.
    again = json.loads(trace_plot(trace, first, "prompt-3", "sigma").result[1])
    assert again == shown

    # Wired again: the plot shows the new run, not the first.
    third = sample(host, patch(host.model, 4.0, empty=host.empty, trace=trace), 4, "prompt-4")
    shown = json.loads(trace_plot(trace, third, "prompt-4").result[1])
    assert shown["neg_scale"] == 4.0 and len(shown["evaluations"]) == 4


def test_probe_plot_never_shows_an_earlier_run(host):
    probed, probe = trace_nodes().make_probe(host.model, host.clip, "a woman in a garden, photo", "glasses, blurry",
                                             "woman", "glasses")
    plot = trace_nodes().NegativeGuidanceProbePlot
    first = sample(host, probed, 3, "prompt-1")
    shown = json.loads(in_prompt("prompt-1", "21", lambda: plot.execute(probe, first)).result[1])
    assert len(shown["run"]["evaluations"]) == 3

    # The probed MODEL no longer feeds the sampler (the probe node still feeds the plot).
    second = sample(host, host.model, 5, "prompt-2")
    nothing = in_prompt("prompt-2", "21", lambda: plot.execute(probe, second))
    assert "the probe saw no run of the sampling" in json.loads(nothing.result[1])["nothing_recorded"]
    assert json.loads(in_prompt("prompt-3", "21", lambda: plot.execute(probe, first)).result[1]) == shown
