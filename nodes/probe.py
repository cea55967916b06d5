"""The r_t attention probe (the ratio Ban et al. 2024 measure) for UNet models.

    r_t = Σ_k ‖F⁽ᵗ⁾_k,p₋(i)‖_F / Σ_k ‖F⁽ᵗ⁾_k,p₊(r(i))‖_F

F_k,w is the cross-attention map of word w at cross-attention layer k: for every spatial position, the
attention probability softmax(QKᵀ/√d) it gives to w's token(s), averaged over all heads, upsampled (bilinear)
to map_size × map_size (64 in the authors' setup). The negative word's map comes from the forward pass
conditioned on the negative prompt, the positive word's map from the pass conditioned on the positive prompt.
A word of several tokens has the sum of its tokens' probabilities as its map (the attention mass on the word).

Two variants are recorded:
- plain: the probabilities as the model computes them, over all 77·k context positions (start/end/padding
  tokens included; they take most of the mass in SD models);
- word_restricted: renormalised over the prompt's own word tokens only (start, end and padding left out), so
  the map is the share of the attention *among the prompt's words* that goes to the chosen word.

Layer selection rule ("non_middle", the default): every cross-attention layer of the UNet's input and output
blocks; the middle block is left out. On SD1.x/SD2.x at 512² this is exactly the authors' 15 layers (input
1, 2, 4, 5, 7, 8 and output 3-11 at 64², 32², 16²), the skipped 8×8 level being the middle block's. On SDXL it
is every transformer block of the input and output levels (the middle level is skipped as well). On the tests'
tiny UNet (8×8 latent) it is 2 input (1, 3) + 4 output (0-3) layers at 8² and 4². "all" adds the middle block.

The probe reads the maps through ComfyUI's `attn2_patch` hook and returns the hook's inputs unchanged, so the
sampled result is the same with or without it; it lives on the model clone the probe node returns and nowhere
else. Which batch chunk is which prompt comes from ComfyUI's `cond_or_uncond`: 0 = positive, 1 = negative, as
the stock KSampler and this pack's nodes (batched evaluation) hand them over.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from . import schedule
from .dynamic import PROBE_FORWARD_KEY
from .trace import DeferredRun, RunStore, executing_prompt, figure_to_image, mean

LAYER_RULES = ("non_middle", "all")
POSITIVE_CHUNK, NEGATIVE_CHUNK = 0, 1
WRAPPER_KEY = "negative_guidance_probe"


# ---- words → token positions, with the model's own tokenizer ----

@dataclass(frozen=True)
class PromptTokens:
    """A prompt's token ids in context order (all chunks of 77 concatenated) and which of them are its words."""

    ids: tuple  # token id per context position (None for an embedding vector)
    word_positions: tuple  # positions holding the prompt's own tokens (not start/end/padding)

    @property
    def length(self) -> int:
        return len(self.ids)


def _flatten(tokenized: dict) -> list:
    """(token, word_id) per context position from clip.tokenize(..., return_word_ids=True)."""
    key = sorted(tokenized)[0]  # SDXL has "g" and "l" with the same positions; SD1 "l", SD2 "h"
    out = []
    for chunk in tokenized[key]:
        for entry in chunk:
            token, word_id = entry[0], entry[2] if len(entry) > 2 else 0
            out.append((int(token) if isinstance(token, int) else None, word_id))
    return out


def prompt_tokens(clip, text: str) -> PromptTokens:
    flat = _flatten(clip.tokenize(text, return_word_ids=True))
    return PromptTokens(tuple(t for t, _ in flat), tuple(i for i, (_, w) in enumerate(flat) if w > 0))


def word_token_ids(clip, word: str) -> tuple:
    return tuple(t for t, w in _flatten(clip.tokenize(word, return_word_ids=True)) if w > 0 and t is not None)


def find_word(clip, node: str, input_name: str, word: str, prompt_name: str, text: str) -> tuple:
    """Context positions of `word` in `text`, or a ValueError that says what is wrong."""
    word = word.strip()
    if not word:
        raise ValueError(f"{node}: {input_name} is empty; give a word of the {prompt_name} prompt.")
    ids = word_token_ids(clip, word)
    if not ids:
        raise ValueError(f"{node}: {input_name} '{word}' gives no token with this model's tokenizer "
                         "(only punctuation or spaces?); give a word of the " + prompt_name + " prompt.")
    tokens = prompt_tokens(clip, text)
    words = set(tokens.word_positions)
    for start in range(tokens.length - len(ids) + 1):
        span = range(start, start + len(ids))
        if all(p in words for p in span) and tuple(tokens.ids[p] for p in span) == ids:
            return tuple(span)
    raise ValueError(f"{node}: {input_name} '{word}' is not in the {prompt_name} prompt "
                     f"'{_shorten(text)}' (compared as tokens of this model's tokenizer: {list(ids)}). "
                     "Type the word as it appears in the prompt.")


def _shorten(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


# ---- the probe ----

@dataclass
class ProbeEvaluation:
    index: int
    step: int  # numbered from 1 (schedule.step_number)
    sigma: float
    layers: int = 0  # layers that contributed to the negative branch
    positive: list = field(default_factory=list)  # Σ_k ‖F_k,pos‖_F per sample (plain)
    negative: list = field(default_factory=list)
    positive_restricted: list = field(default_factory=list)
    negative_restricted: list = field(default_factory=list)

    def ratio(self, restricted: bool = False) -> float | None:
        top = self.negative_restricted if restricted else self.negative
        bottom = self.positive_restricted if restricted else self.positive
        if not top or not bottom or len(top) != len(bottom) or any(b == 0 for b in bottom):
            return None
        return sum(t / b for t, b in zip(top, bottom)) / len(top)

    def to_dict(self) -> dict:
        return {"index": self.index, "step": self.step, "sigma": self.sigma, "layers": self.layers,
                "r_t": self.ratio(False), "r_t_word_restricted": self.ratio(True),
                "positive_norm_sum": mean(self.positive), "negative_norm_sum": mean(self.negative),
                "positive_norm_sum_word_restricted": mean(self.positive_restricted),
                "negative_norm_sum_word_restricted": mean(self.negative_restricted)}


SUMS = ("positive", "negative", "positive_restricted", "negative_restricted")


@dataclass(eq=False)
class LiveEvaluation:
    """An evaluation while sampling: its timestep tensor and the norm sums as tensors on the model's device (no
    number is converted to Python while sampling; each conversion would make the CPU wait for the GPU)."""

    timestep: torch.Tensor  # the tensor ComfyUI hands every layer of this evaluation (transformer_options["sigmas"])
    layers: int = 0
    sums: dict = field(default_factory=dict)  # name in SUMS -> (batch,) tensor
    seen: set = field(default_factory=set)  # layer calls recorded (block, index, chunks)

    def add(self, name: str, values: torch.Tensor):
        current = self.sums.get(name)
        if current is None:
            self.sums[name] = values
        elif current.shape == values.shape:
            self.sums[name] = current + values


@dataclass(eq=False, kw_only=True)
class ProbeRun(DeferredRun):
    """One probed sampling run: LiveEvaluation while sampling, ProbeEvaluation once read."""

    def _finish(self, pending: list) -> list:
        flat = [t.reshape(-1).float() for live in pending
                for t in (live.timestep.reshape(-1)[:1], *(live.sums[name] for name in SUMS if name in live.sums))]
        device = flat[0].device
        values = torch.cat([t.to(device) for t in flat]).tolist()  # the one host-device synchronisation
        out, at = [], 0
        for live in pending:
            sigma = values[at]
            at += 1
            evaluation = ProbeEvaluation(len(self.recorded) + len(out), schedule.step_number(self.sigmas, sigma), sigma,
                                         live.layers)
            for name in SUMS:
                if name in live.sums:
                    count = live.sums[name].numel()
                    setattr(evaluation, name, values[at:at + count])
                    at += count
            out.append(evaluation)
        return out

    def to_dict(self) -> dict:
        return {"sigmas": self.sigmas, "evaluations": [e.to_dict() for e in self.evaluations]}


class AttentionProbe(RunStore):
    """Records Σ_k ‖F_k‖_F of a positive and a negative word per model evaluation, through an attn2_patch."""

    JSON_ALLOWS_NAN = True

    def __init__(self, diffusion_model, positive: PromptTokens, positive_word: tuple, negative: PromptTokens,
                 negative_word: tuple, map_size: int = 64, layers: str = "non_middle", words=("", "")):
        super().__init__()
        self.diffusion_model = diffusion_model
        self.positive, self.negative = positive, negative
        self.positive_word, self.negative_word = positive_word, negative_word
        self.map_size, self.layers = int(map_size), layers
        self.words = words
        self._modules = {}
        self._positions = {}

    # -- ComfyUI hooks --

    def __deepcopy__(self, memo):
        # ModelPatcher.clone deep-copies model_options, patches included: every clone must fill this same probe
        # (the handle the plot node reads), and a copy would drag the whole diffusion model along.
        return self

    def __call__(self, n, context, value, extra_options):
        return self.attn2_patch(n, context, value, extra_options)

    def outer_sample(self, executor, noise, latent_image, sampler, sigmas, *args, **kwargs):
        self._start_run(sigmas.reshape(-1).tolist())
        return executor(noise, latent_image, sampler, sigmas, *args, **kwargs)

    def _start_run(self, sigmas: list) -> ProbeRun:
        return self.add_run(ProbeRun(sigmas=[float(s) for s in sigmas], prompt_id=executing_prompt()))

    def attn2_patch(self, n, context, value, extra_options):
        """ComfyUI's attn2_patch signature; returns its inputs untouched."""
        block = extra_options.get("block")
        if block is None or (block[0] == "middle" and self.layers == "non_middle"):
            return n, context, value
        if extra_options.get(PROBE_FORWARD_KEY):  # the dynamic negative's divergence probe, not an evaluation
            return n, context, value
        chunks = list(extra_options.get("cond_or_uncond", ()))
        if NEGATIVE_CHUNK not in chunks and POSITIVE_CHUNK not in chunks:
            return n, context, value
        module = self.attn2_module(block, extra_options.get("block_index", 0))
        if module is None:
            return n, context, value
        shape = extra_options.get("activations_shape")
        with torch.no_grad():
            self._record(module, n, context, chunks, shape, extra_options, block)
        return n, context, value

    # -- internals --

    def attn2_module(self, block, block_index):
        key = (block[0], block[1], block_index)
        if key not in self._modules:
            self._modules[key] = find_attn2(self.diffusion_model, block, block_index)
        return self._modules[key]

    def _evaluation(self, extra_options, layer_key) -> LiveEvaluation:
        """The evaluation this layer call belongs to. ComfyUI hands every layer of one evaluation the same timestep
        tensor (also when it splits the batch into several forwards, or the pack evaluates the prompts one by
        one); a new tensor, or a layer already seen for this prompt, starts the next evaluation."""
        if not self.runs:  # sampled without OUTER_SAMPLE (should not happen with ComfyUI's samplers)
            sample_sigmas = extra_options.get("sample_sigmas")
            self._start_run(sample_sigmas.reshape(-1).tolist() if sample_sigmas is not None
                            else extra_options["sigmas"].reshape(-1)[:1].tolist())
        run = self.runs[-1]
        timestep = extra_options["sigmas"]
        current = run.pending[-1] if run.pending else None
        if current is None or current.timestep is not timestep or layer_key in current.seen:
            current = LiveEvaluation(timestep)
            run.pending.append(current)
        current.seen.add(layer_key)
        return current

    def _word_indices(self, branch: int, keys: int, device) -> tuple:
        """The word's and the prompt's word positions as index tensors on the device, made once per shape (a
        Python list as an index would be copied to the device at every call)."""
        key = (branch, keys, device)
        if key not in self._positions:
            prompt = self.positive if branch == POSITIVE_CHUNK else self.negative
            word = self.positive_word if branch == POSITIVE_CHUNK else self.negative_word
            positions, word_positions = context_positions(prompt, word, keys)
            self._positions[key] = (torch.tensor(positions, dtype=torch.long, device=device),
                                    torch.tensor(word_positions, dtype=torch.long, device=device))
        return self._positions[key]

    def _record(self, module, n, context, chunks, shape, extra_options, block):
        layer_key = (block[0], block[1], extra_options.get("block_index", 0), tuple(chunks))
        evaluation = self._evaluation(extra_options, layer_key)
        heads, dim_head = extra_options["n_heads"], extra_options["dim_head"]
        rows = n.shape[0] // len(chunks)
        height, width = (shape[2], shape[3]) if shape is not None else _square(n.shape[1])
        for chunk_index, branch in enumerate(chunks):
            if branch not in (POSITIVE_CHUNK, NEGATIVE_CHUNK):
                continue
            part = slice(chunk_index * rows, (chunk_index + 1) * rows)
            probs = attention_probabilities(module, n[part], context[part], heads, dim_head)  # (b, HW, T)
            positions, word_positions = self._word_indices(branch, probs.shape[-1], probs.device)
            plain = probs.index_select(-1, positions).sum(-1)
            restricted_mass = probs.index_select(-1, word_positions).sum(-1).clamp_min(1e-30)
            restricted = plain / restricted_mass
            name = "positive" if branch == POSITIVE_CHUNK else "negative"
            evaluation.add(name, frobenius_upsampled(plain, height, width, self.map_size))
            evaluation.add(name + "_restricted", frobenius_upsampled(restricted, height, width, self.map_size))
            if branch == NEGATIVE_CHUNK:
                evaluation.layers += 1

    def payload(self, run: ProbeRun | None) -> dict:
        return {"positive_word": self.words[0], "negative_word": self.words[1], "map_size": self.map_size,
                "layers": self.layers, "run": run.to_dict() if run is not None else None}


def _square(tokens: int):
    side = int(round(math.sqrt(tokens)))
    return side, tokens // side


def attention_probabilities(module, n, context, heads, dim_head) -> torch.Tensor:
    """softmax(QKᵀ/√d) of a CrossAttention module, averaged over heads: (batch, queries, keys), float32."""
    q = module.to_q(n).float()
    k = module.to_k(context).float()
    b, queries, _ = q.shape
    q = q.reshape(b, queries, heads, dim_head).transpose(1, 2)
    k = k.reshape(b, k.shape[1], heads, dim_head).transpose(1, 2)
    scores = torch.matmul(q, k.transpose(-1, -2)) * dim_head ** -0.5
    return scores.softmax(dim=-1).mean(dim=1)


def context_positions(prompt: PromptTokens, word: tuple, keys: int):
    """The word's and the prompt's word positions in a context of `keys` positions. ComfyUI repeats a shorter
    conditioning to a common length when prompts of different lengths share a batch: every copy counts."""
    copies = max(keys // prompt.length, 1) if keys % prompt.length == 0 else 1
    positions = [p + c * prompt.length for c in range(copies) for p in word if p + c * prompt.length < keys]
    words = [p + c * prompt.length for c in range(copies) for p in prompt.word_positions if p + c * prompt.length < keys]
    return positions, words


def frobenius_upsampled(maps: torch.Tensor, height: int, width: int, size: int) -> torch.Tensor:
    """‖F‖_F per sample of (b, HW) maps reshaped to (b, h, w) and upsampled bilinearly to size × size."""
    grid = maps.reshape(-1, 1, height, width).float()
    if (height, width) != (size, size):
        grid = F.interpolate(grid, size=(size, size), mode="bilinear", align_corners=False)
    return grid.flatten(1).norm(dim=1)


def find_attn2(diffusion_model, block, block_index):
    """The CrossAttention module ComfyUI's transformer_options["block"], ["block_index"] point at in a UNet."""
    kind, number = block[0], block[1]
    if kind == "input":
        container = diffusion_model.input_blocks[number]
    elif kind == "output":
        container = diffusion_model.output_blocks[number]
    elif kind == "middle":
        container = diffusion_model.middle_block
    else:
        return None
    for module in container.modules():
        transformer_blocks = getattr(module, "transformer_blocks", None)
        if transformer_blocks is not None and block_index < len(transformer_blocks):
            return transformer_blocks[block_index].attn2
    return None


def is_unet(diffusion_model) -> bool:
    return all(hasattr(diffusion_model, name) for name in ("input_blocks", "middle_block", "output_blocks"))


def render_probe(probe: AttentionProbe, run: ProbeRun | None = None, width: int = 900, height: int = 480):
    """r_t per step (plain and word-restricted) as an IMAGE tensor (1, H, W, 3)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    run = run if run is not None else probe.last_run
    evaluations = run.evaluations if run is not None else []
    xs = [schedule.step_position(run.sigmas, e.sigma) for e in evaluations]
    dpi = 100
    figure = Figure(figsize=(width / dpi, height / dpi), dpi=dpi)
    canvas = FigureCanvasAgg(figure)
    axes = figure.subplots(1, 1)
    for restricted, label, colour in ((False, "r_t (plain)", "tab:red"),
                                      (True, "r_t (word-restricted)", "tab:purple")):
        ys = [e.ratio(restricted) for e in evaluations]
        axes.plot(xs, [y if y is not None else float("nan") for y in ys], marker=".", label=label, color=colour)
    axes.set_xlabel("step (1 = first)")
    axes.set_ylabel("r_t = Σ‖F(negative word)‖ / Σ‖F(positive word)‖")
    axes.set_title(f"Attention probe: '{probe.words[1]}' (negative) vs '{probe.words[0]}' (positive), "
                   f"{probe.layers} layers, maps at {probe.map_size}²")
    axes.legend(fontsize=8)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    return figure_to_image(canvas)


