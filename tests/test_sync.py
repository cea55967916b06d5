"""Host–device synchronisations per model evaluation, counted on the CPU.

On a GPU, every conversion of a device tensor to a Python value (`float(t)`, `.item()`, `.tolist()`, `bool(t)`
in an `if`, ...) and every operation whose output size depends on the data makes the CPU wait until the GPU has
caught up; ComfyUI's own sampling loop makes none per model evaluation, so the CPU queues work ahead. Here the
sampler hands the model a timestep and a latent of a tensor subclass that counts such conversions; everything
computed from them (the predictions, the attention inputs the probe reads) is of the subclass too, so the
pack's conversions are counted wherever they happen. The run's sigmas (transformer_options["sample_sigmas"]) and
the model's sampling buffers (model_sampling: sigmas, log_sigmas, sigma_min/max, behind percent_to_sigma) are of
the subclass too, so reading them during an evaluation counts as well; reading them once per run, before the first
evaluation (as the pack does to resolve its windows), does not. The pack may read the sigma once per evaluation
where a window opens or closes during the run (its windows need it as a number, as ComfyUI's own timestep ranges
do), and reads nothing where every window is full or empty; the trace and the r_t probe add nothing while
sampling and convert once per run, when the run is read.
"""

import pytest

import support
from sync_support import CFG, STEPS, CountingEuler, SyncCounted, stock_guider, with_counted_sampling


def pack():
    return support.pack_module("nodes.negative_guidance")


def new_trace():
    return support.pack_module("nodes.trace_nodes").NegativeGuidanceTrace.execute().result[0]


def probed(host, model):
    return support.pack_module("nodes.trace_nodes").make_probe(
        model, host.clip, "a woman in a garden, photo", "glasses, blurry", "woman", "glasses")


# s⁻ = 3 over the first half: 3 passes, then 2 (the window and pass skipping both read the sigma).
WINDOW = {"neg_scale": 3.0, "start": 0.0, "end": 0.5}


def patched(host, model, trace=None, evaluation="batched", unit="steps"):
    return support.patch(model, **WINDOW, unit=unit, empty=host.empty, trace=trace, evaluation=evaluation)


def pack_guider(host, model, trace=None):
    return support.guider(with_counted_sampling(model), host.positive, host.negative, CFG, **WINDOW, empty=host.empty,
                          trace=trace)


def test_stock_cfg_guider_makes_none(host):
    assert CountingEuler().sample(host, stock_guider(host, host.model)) == [0] * STEPS


def test_counter_sees_a_sigma_read(host):
    """With a window that closes during the run the pack reads the sigma once per evaluation: the counter sees a
    conversion of the timestep."""
    assert CountingEuler().sample(host, stock_guider(host, patched(host, host.model))) == [1] * STEPS


@pytest.mark.parametrize("neg_scale, start, end", [(-1.0, 0.0, 1.0), (3.0, 0.0, 1.0), (3.0, 1.0, 1.0)],
                         ids=["ordinary negative", "full three-way window", "empty window"])
@pytest.mark.parametrize("route", ["patch", "guider"])
def test_windows_that_never_change_read_no_sigma(host, route, neg_scale, start, end):
    """Where no window opens or closes during sampling the coefficients are the same at every evaluation: the
    pack makes no synchronisation at all, as the stock guider (on a GPU the CPU keeps queueing work ahead)."""
    window = {"neg_scale": neg_scale, "start": start, "end": end}
    if route == "guider":
        guider = support.guider(with_counted_sampling(host.model), host.positive, host.negative, CFG, **window,
                                empty=host.empty)
    else:
        guider = stock_guider(host, support.patch(host.model, **window, empty=host.empty))
    assert CountingEuler().sample(host, guider) == [0] * STEPS


def test_a_negative_switched_off_by_scale_zero_reads_no_sigma(host):
    """neg_scale 0 on the main negative and an Extra Negative at scale 0, both with windows that close during the
    run: their coefficients are 0 at every evaluation whatever the window says, so the pack reads nothing."""
    extra = support.pack_module("nodes.negative_guidance").ExtraNegative.execute(
        host.negative, 0.0, 0.2, 0.6, "steps", "hard", 0.0).result[0]
    model = support.patch(host.model, 0.0, 0.0, 0.5, empty=host.empty, extra_negatives=extra)
    assert CountingEuler().sample(host, stock_guider(host, model)) == [0] * STEPS


def test_counter_sees_reads_of_the_run_sigmas_and_the_model_sampling(host):
    """A wrapper that reads the run's sigmas and the model's percent_to_sigma at every evaluation (a pack doing
    that would make the GPU wait twice more per step) is seen: the counter is not blind to them."""
    import comfy.patcher_extension

    def reads_per_evaluation(executor, x, timestep, model_options, *args, **kwargs):
        float(model_options["transformer_options"]["sample_sigmas"][0])
        executor.class_obj.inner_model.model_sampling.percent_to_sigma(0.5)
        return executor(x, timestep, model_options, *args, **kwargs)

    model = host.model.clone()
    model.add_wrapper(comfy.patcher_extension.WrappersMP.PREDICT_NOISE, reads_per_evaluation)
    assert CountingEuler().sample(host, stock_guider(host, model)) == [2] * STEPS


@pytest.mark.parametrize("unit", ["timestep_percent", "sigma"])
def test_windows_from_the_model_sampling_read_it_once_per_run(host, unit):
    """These units place the window with the model's sampling (percent_to_sigma, sigma_min/max): resolved before the
    first evaluation, so sampling still reads only the sigma."""
    assert CountingEuler().sample(host, stock_guider(host, patched(host, host.model, unit=unit))) == [1] * STEPS


@pytest.mark.parametrize("route", ["patch", "guider", "patch_sequential"])
def test_trace_adds_no_sync_while_sampling(host, route):
    trace = new_trace()
    if route == "guider":
        guider = pack_guider(host, host.model, trace)
    else:
        evaluation = "sequential" if route == "patch_sequential" else "batched"
        guider = stock_guider(host, patched(host, host.model, trace, evaluation))
    assert CountingEuler().sample(host, guider) == [1] * STEPS
    run = trace.last_run
    before = SyncCounted.count
    evaluations = run.evaluations
    assert SyncCounted.count - before == 1  # the whole run crosses to the host at once, when read
    assert len(evaluations) == STEPS and all(e.positive_norm > 0 for e in evaluations)


def test_probe_adds_no_sync_while_sampling(host):
    model, probe = probed(host, host.model)
    assert CountingEuler().sample(host, stock_guider(host, model)) == [0] * STEPS
    before = SyncCounted.count
    evaluations = probe.last_run.evaluations
    assert SyncCounted.count - before == 1
    assert len(evaluations) == STEPS and all(e.ratio() > 0 for e in evaluations)


def test_pack_with_trace_and_probe_reads_only_the_sigma(host):
    trace = new_trace()
    model, probe = probed(host, host.model)
    assert CountingEuler().sample(host, stock_guider(host, patched(host, model, trace))) == [1] * STEPS
    assert len(trace.last_run.evaluations) == len(probe.last_run.evaluations) == STEPS
