"""Counting host–device synchronisations on the CPU (tests/test_sync.py says how): a counting tensor subclass, a
sampler that counts per model evaluation, and a stock guider whose model sampling counts reads."""

import copy

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

    def __deepcopy__(self, memo):
        # A copy is a plain tensor: the pack's once-per-run host copy of model_sampling then reads host memory.
        return copy.deepcopy(self.as_subclass(torch.Tensor), memo)


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
        sigmas = support.ksampler_sigmas(host.model, "euler", STEPS).as_subclass(SyncCounted)
        sampler = comfy.samplers.KSAMPLER(self)
        custom.SamplerCustomAdvanced.execute(noise, guider, sampler, sigmas, host.latent)
        assert len(self.per_evaluation) == STEPS
        return self.per_evaluation


def with_counted_sampling(model):
    """The model with a copy of its model_sampling whose buffers count host reads, as a model node patches it
    (ModelSamplingDiscrete and the like use the same object patch)."""
    counted = copy.deepcopy(model.get_model_object("model_sampling"))
    for name, buffer in list(counted.named_buffers()):
        counted.register_buffer(name, buffer.as_subclass(SyncCounted))
    buffers = dict(counted.named_buffers())
    assert buffers and all(isinstance(buffer, SyncCounted) for buffer in buffers.values())
    patched_model = model.clone()
    patched_model.add_object_patch("model_sampling", counted)
    return patched_model


def stock_guider(host, model):
    from comfy_extras import nodes_custom_sampler as custom

    return custom.CFGGuider.execute(with_counted_sampling(model), host.positive, host.negative, CFG).result[0]
