"""Host–device synchronisations per model evaluation, counted on the CPU.

On a GPU, every conversion of a device tensor to a Python value (`float(t)`, `.item()`, `.tolist()`, `bool(t)`
in an `if`, ...) and every operation whose output size depends on the data makes the CPU wait until the GPU has
caught up; ComfyUI's own sampling loop makes none per model evaluation, so the CPU queues work ahead. Here the
sampler hands the model a timestep and a latent of a tensor subclass that counts such conversions; everything
computed from them (the predictions, the attention inputs the probe reads) is of the subclass too, so the
pack's conversions are counted wherever they happen. The pack may read the sigma once per evaluation where a
window opens or closes during the run (its windows need it as a number, as ComfyUI's own timestep ranges do), and
reads nothing where every window is full or empty; the trace and the r_t probe add nothing while
sampling and convert once per run, when the run is read.
"""

import pytest
import torch

import support

STEPS = 4
CFG = 5.0


class SyncCounted(torch.Tensor):
    """A tensor that counts conversions to Python values and data-dependent shapes (each a sync on a GPU)."""

    count = 0

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if func in CONVERSIONS or (func in INDEXING and _boolean_index(args)):
            SyncCounted.count += 1
        return super().__torch_function__(func, types, args, kwargs or {})


CONVERSIONS = {
    torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.__float__, torch.Tensor.__int__, torch.Tensor.__bool__,
    torch.Tensor.__index__, torch.Tensor.__complex__, torch.Tensor.numpy, torch.Tensor.__array__, torch.Tensor.cpu,
    torch.Tensor.__format__, torch.Tensor.equal, torch.equal, torch.Tensor.allclose, torch.allclose,
    torch.is_nonzero, torch.Tensor.is_nonzero, torch.nonzero, torch.Tensor.nonzero, torch.argwhere,
    torch.masked_select, torch.Tensor.masked_select, torch.unique, torch.Tensor.unique,
}
INDEXING = {torch.Tensor.__getitem__, torch.Tensor.__setitem__}


def _boolean_index(args) -> bool:
    index = args[1] if len(args) > 1 else None
    indices = index if isinstance(index, tuple) else (index,)
    return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in indices)


class CountingEuler:
    """Euler steps that make no synchronisation of their own and count those made inside each model call."""

    def __init__(self):
        self.per_evaluation = []

    def __call__(self, model, x, sigmas, extra_args=None, callback=None, disable=None):
        extra_args = extra_args or {}
        x = x.as_subclass(SyncCounted)
        ones = x.new_ones([x.shape[0]]).as_subclass(torch.Tensor)
        for i in range(len(sigmas) - 1):
            timestep = (sigmas[i] * ones).as_subclass(SyncCounted)
            before = SyncCounted.count
            denoised = model(x, timestep, **extra_args)
            self.per_evaluation.append(SyncCounted.count - before)
            assert isinstance(denoised, SyncCounted)  # the predictions carry the counter
            x = x + (x - denoised) / sigmas[i] * (sigmas[i + 1] - sigmas[i])
        return x.as_subclass(torch.Tensor)

    def sample(self, host, guider):
        import comfy.samplers
        from comfy_extras import nodes_custom_sampler as custom

        noise = custom.RandomNoise.execute(1).result[0]
        sigmas = support.ksampler_sigmas(host.model, "euler", STEPS)
        sampler = comfy.samplers.KSAMPLER(self)
        custom.SamplerCustomAdvanced.execute(noise, guider, sampler, sigmas, host.latent)
        assert len(self.per_evaluation) == STEPS
        return self.per_evaluation


def pack():
    return support.pack_module("nodes.negative_guidance")


def new_trace():
    return support.pack_module("nodes.trace_nodes").NegativeGuidanceTrace.execute().result[0]


def probed(host, model):
    return support.pack_module("nodes.trace_nodes").make_probe(
        model, host.clip, "a woman in a garden, photo", "glasses, blurry", "woman", "glasses")


def stock_guider(host, model):
    from comfy_extras import nodes_custom_sampler as custom

    return custom.CFGGuider.execute(model, host.positive, host.negative, CFG).result[0]


def patched(host, model, trace=None, evaluation="batched"):
    # s⁻ = 3 over the first half: 3 passes, then 2 (the window and pass skipping both read the sigma).
    return pack().NegativeGuidance.execute(model, 3.0, 0.0, 0.5, "steps", "hard", 0.0, empty=host.empty,
                                           trace=trace, evaluation=evaluation).result[0]


def pack_guider(host, model, trace=None):
    return pack().NegativeGuidanceGuider.execute(model, host.positive, host.negative, CFG, 3.0, 0.0, 0.5, "steps",
                                                 "hard", 0.0, empty=host.empty, trace=trace).result[0]


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
    if route == "guider":
        guider = pack().NegativeGuidanceGuider.execute(host.model, host.positive, host.negative, CFG, neg_scale,
                                                       start, end, "steps", "hard", 0.0, empty=host.empty).result[0]
    else:
        model = pack().NegativeGuidance.execute(host.model, neg_scale, start, end, "steps", "hard", 0.0,
                                                empty=host.empty).result[0]
        guider = stock_guider(host, model)
    assert CountingEuler().sample(host, guider) == [0] * STEPS


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
