// How the example workflows in workflows/ were first laid out. `node tests/e2e/browser.mjs` (scenario "build",
// run by tests/e2e/make_workflows.py --ui) builds each with the real frontend and saves what it serializes.
// The committed UI files are the source of truth afterwards: edit them in ComfyUI and save, or edit here and
// rebuild. Checkpoint names are the usual public file names.

const SD15 = "v1-5-pruned-emaonly.safetensors";
const SDXL = "sd_xl_base_1.0.safetensors";
const FLUX_DEV = "flux1-dev-fp8.safetensors"; // ComfyUI's single-file Flux dev checkpoint (model, text encoders, VAE)

const POSITIVE = "photo of a man reading a newspaper at a cafe table by the window, morning light, detailed";
const NEGATIVE = "glasses";

/** Loader, three prompts (positive y, negative ỹ, empty ∅) and an empty latent: every example starts so. */
function promptNodes(checkpoint, size, x = 40) {
  return [
    { key: "checkpoint", type: "CheckpointLoaderSimple", pos: [x, 140], widgets: { ckpt_name: checkpoint } },
    { key: "positive", type: "CLIPTextEncode", title: "Positive prompt (y)", pos: [x + 380, 40], size: [400, 160],
      widgets: { text: POSITIVE } },
    { key: "negative", type: "CLIPTextEncode", title: "Negative prompt (ỹ)", pos: [x + 380, 240], size: [400, 120],
      widgets: { text: NEGATIVE } },
    { key: "empty", type: "CLIPTextEncode", title: "Empty prompt (∅)", pos: [x + 380, 400], size: [400, 110],
      widgets: { text: "" } },
    { key: "latent", type: "EmptyLatentImage", pos: [x + 380, 560], widgets: { width: size, height: size, batch_size: 1 } },
  ];
}

const PROMPT_LINKS = [
  ["checkpoint", "CLIP", "positive", "clip"],
  ["checkpoint", "CLIP", "negative", "clip"],
  ["checkpoint", "CLIP", "empty", "clip"],
];

function customSamplerNodes(guiderSettings, scheduler, steps, x, filenamePrefix) {
  return [
    { key: "guider", type: "NegativeGuidanceGuider", pos: [x, 40], size: [380, 0], widgets: guiderSettings },
    { key: "noise", type: "RandomNoise", pos: [x + 420, 40], widgets: { noise_seed: 42, control_after_generate: "fixed" } },
    { key: "sampler", type: "KSamplerSelect", pos: [x + 420, 180], widgets: { sampler_name: "euler" } },
    { key: "sigmas", type: "BasicScheduler", pos: [x + 420, 290], widgets: { scheduler, steps, denoise: 1.0 } },
    { key: "sample", type: "SamplerCustomAdvanced", pos: [x + 780, 40], size: [300, 330] },
    { key: "decode", type: "VAEDecode", pos: [x + 1120, 40], size: [180, 0] },
    { key: "save", type: "SaveImage", pos: [x + 1120, 150], size: [340, 380],
      widgets: { filename_prefix: filenamePrefix } },
  ];
}

const CUSTOM_SAMPLER_LINKS = [
  ["checkpoint", "MODEL", "guider", "model"],
  ["positive", 0, "guider", "positive"],
  ["negative", 0, "guider", "negative"],
  ["empty", 0, "guider", "empty"],
  ["checkpoint", "MODEL", "sigmas", "model"],
  ["noise", 0, "sample", "noise"],
  ["guider", 0, "sample", "guider"],
  ["sampler", 0, "sample", "sampler"],
  ["sigmas", 0, "sample", "sigmas"],
  ["latent", 0, "sample", "latent_image"],
  ["sample", 0, "decode", "samples"],
  ["checkpoint", "VAE", "decode", "vae"],
  ["decode", 0, "save", "images"],
];

/** A KSampler fed the MODEL from `model` ([node, output]) on the shared prompts and latent, decoded and saved. */
function samplerLinks(model, sampler, decode, save) {
  return [
    [...model, sampler, "model"],
    ["positive", 0, sampler, "positive"],
    ["negative", 0, sampler, "negative"],
    ["latent", 0, sampler, "latent_image"],
    [sampler, 0, decode, "samples"],
    ["checkpoint", "VAE", decode, "vae"],
    [decode, 0, save, "images"],
  ];
}

/** Negative Guidance (patch) on the checkpoint's model, with ∅. */
const PATCH_LINKS = [
  ["checkpoint", "MODEL", "patch", "model"],
  ["empty", 0, "patch", "empty"],
];

/** Negative Guidance (patch) on the model line of a KSampler, decoded and saved (workflows 1 and 5). */
const PATCH_KSAMPLER_LINKS = [...PATCH_LINKS, ...samplerLinks(["patch", 0], "ksampler", "decode", "save")];

/** Two KSamplers on the same prompts and latent: the stock negative, and the patch's delayed one (workflows 4, 7). */
const STOCK_VS_DELAYED_LINKS = [
  ...samplerLinks(["checkpoint", "MODEL"], "stock", "stockDecode", "stockSave"),
  ...PATCH_LINKS,
  ...samplerLinks(["patch", 0], "delayed", "delayedDecode", "delayedSave"),
];

const KSAMPLER_SETTINGS = { seed: 42, control_after_generate: "fixed", steps: 30, cfg: 7.5, sampler_name: "euler",
  scheduler: "normal", denoise: 1.0 };
// The testbed was trained for cfg 5 and 30 steps (testbed/MODEL_CARD.md).
const TESTBED_KSAMPLER_SETTINGS = { ...KSAMPLER_SETTINGS, cfg: 5.0 };
const DELAYED_WINDOW = { neg_scale: -1, neg_start: 0.1667, neg_end: 0.5, window_unit: "steps", ramp: "hard",
  ramp_width: 0 };

export const WORKFLOWS = [
  {
    file: "01 Delayed negative.json",
    nodes: [
      ...promptNodes(SD15, 512),
      { key: "patch", type: "NegativeGuidance", pos: [840, 40], size: [380, 0], widgets: DELAYED_WINDOW },
      { key: "ksampler", type: "KSampler", pos: [1260, 40], widgets: KSAMPLER_SETTINGS },
      { key: "decode", type: "VAEDecode", pos: [1600, 40], size: [180, 0] },
      { key: "save", type: "SaveImage", pos: [1600, 150], size: [340, 380],
        widgets: { filename_prefix: "negguide/sd15_delayed_negative" } },
    ],
    links: [
      ...PROMPT_LINKS,
      ...PATCH_KSAMPLER_LINKS,
    ],
    note: {
      pos: [40, 400], size: [340, 330],
      text: "Delayed negative prompt (SD1.5, plain KSampler)\n\n" +
        "The negative prompt acts only on steps 6-15 of 30 (neg_start 0.1667, neg_end 0.5): early steps lay out " +
        "the picture undisturbed, the negative then removes the one object it names, and the late steps finish " +
        "the details without it. neg_scale -1 means s⁻ = cfg - 1, the strength of ComfyUI's ordinary negative.\n\n" +
        "Try: move neg_start to 0 (the stock negative prompt from the first step) and compare how much of the " +
        "rest of the picture changes; or raise neg_scale above cfg - 1 for a stronger removal. The curve on the " +
        "node shows s⁻·w(t) and the KSampler's steps.\n\nModel: v1-5-pruned-emaonly.safetensors",
    },
  },
  {
    file: "02 Guider, negative fades in.json",
    nodes: [
      ...promptNodes(SD15, 512),
      ...customSamplerNodes({ cfg: 6.0, neg_scale: 4.0, neg_start: 0.2, neg_end: 1.0, window_unit: "steps",
        ramp: "smoothstep", ramp_width: 0.2 }, "normal", 25, 840, "negguide/sd15_guider_fade_in"),
    ],
    links: [...PROMPT_LINKS, ...CUSTOM_SAMPLER_LINKS],
    note: {
      pos: [40, 400], size: [340, 300],
      text: "Independent scales and a fade-in (SamplerCustomAdvanced)\n\n" +
        "The guider takes s⁺ (cfg = 6) and s⁻ (neg_scale = 4) separately: the positive keeps its usual strength " +
        "while the negative pushes with its own. The negative fades in with a smoothstep ramp from 20% to 40% " +
        "of the steps and then stays on to the end.\n\n" +
        "Try: ramp hard vs. smoothstep, a wider ramp_width, or window_unit timestep_percent / sigma.\n\n" +
        "Model: v1-5-pruned-emaonly.safetensors",
    },
  },
  {
    file: "03 SDXL, ramped window.json",
    nodes: [
      ...promptNodes(SDXL, 1024),
      ...customSamplerNodes({ cfg: 7.0, neg_scale: 5.0, neg_start: 0.15, neg_end: 0.6, window_unit: "steps",
        ramp: "linear", ramp_width: 0.05 }, "karras", 30, 840, "negguide/sdxl_guider"),
    ],
    links: [...PROMPT_LINKS, ...CUSTOM_SAMPLER_LINKS],
    note: {
      pos: [40, 400], size: [340, 300],
      text: "SDXL with the guider\n\n" +
        "SDXL's CLIPTextEncode gives pooled outputs along with the token embeddings; the empty prompt ∅ is " +
        "encoded with the same SDXL text encoders, so all three predictions get matching size and pooled " +
        "conditioning. Negative on 15%-60% of the 30 steps with short linear fades.\n\n" +
        "Try: neg_end 1.0 (negative to the end) and compare textures.\n\n" +
        "Model: sd_xl_base_1.0.safetensors",
    },
  },
  {
    file: "04 Stock vs delayed negative.json",
    nodes: [
      ...promptNodes(SD15, 512),
      { key: "stock", type: "KSampler", title: "KSampler: stock negative prompt (all steps)", pos: [840, 40],
        size: [380, 0], widgets: KSAMPLER_SETTINGS },
      { key: "stockDecode", type: "VAEDecode", pos: [1720, 40], size: [180, 0] },
      { key: "stockSave", type: "SaveImage", title: "Stock negative prompt", pos: [1920, 40], size: [340, 380],
        widgets: { filename_prefix: "negguide/compare_stock" } },
      { key: "patch", type: "NegativeGuidance", pos: [840, 460], size: [380, 0], widgets: DELAYED_WINDOW },
      { key: "delayed", type: "KSampler", title: "KSampler: delayed negative (steps 6-15)", pos: [1260, 460],
        size: [380, 0], widgets: KSAMPLER_SETTINGS },
      { key: "delayedDecode", type: "VAEDecode", pos: [1720, 460], size: [180, 0] },
      { key: "delayedSave", type: "SaveImage", title: "Delayed negative prompt", pos: [1920, 460], size: [340, 380],
        widgets: { filename_prefix: "negguide/compare_delayed" } },
    ],
    links: [
      ...PROMPT_LINKS,
      ...STOCK_VS_DELAYED_LINKS,
    ],
    note: {
      pos: [40, 400], size: [340, 300],
      text: "Side by side: stock negative prompt vs. delayed window\n\n" +
        "Both KSamplers use the same seed, steps, cfg and prompts. The top one is ComfyUI's ordinary negative " +
        "prompt on every step; the bottom one applies the same negative (neg_scale -1 = cfg - 1) only on " +
        "steps 6-15 of 30. Compare the two saved images: the delayed one should lose the named object while " +
        "keeping more of the composition of a run without a negative.\n\n" +
        "Model: v1-5-pruned-emaonly.safetensors",
    },
  },
  {
    file: "05 Several negatives.json",
    nodes: [
      ...promptNodes(SD15, 512),
      { key: "blurry", type: "CLIPTextEncode", title: "Extra negative (ỹ₂)", pos: [420, 740], size: [400, 110],
        widgets: { text: "blurry, low quality" } },
      { key: "extra", type: "ExtraNegative", pos: [840, 740], size: [380, 0],
        widgets: { neg_scale: 3.0, neg_start: 0.0, neg_end: 1.0, window_unit: "steps", ramp: "hard", ramp_width: 0 } },
      { key: "patch", type: "NegativeGuidance", pos: [840, 40], size: [380, 0],
        widgets: { neg_scale: 2.0, neg_start: 0.5, neg_end: 1.0, window_unit: "steps", ramp: "linear",
          ramp_width: 0.1 } },
      { key: "ksampler", type: "KSampler", pos: [1260, 40], widgets: KSAMPLER_SETTINGS },
      { key: "decode", type: "VAEDecode", pos: [1600, 40], size: [180, 0] },
      { key: "save", type: "SaveImage", pos: [1600, 150], size: [340, 380],
        widgets: { filename_prefix: "negguide/sd15_several_negatives" } },
    ],
    links: [
      ...PROMPT_LINKS,
      ["checkpoint", "CLIP", "blurry", "clip"],
      ["blurry", 0, "extra", "negative"],
      ["extra", 0, "patch", "extra_negatives"],
      ...PATCH_KSAMPLER_LINKS,
    ],
    note: {
      pos: [40, 400], size: [340, 300],
      text: "Several negatives, each with its own scale and window\n\n" +
        "The KSampler's negative (\"glasses\") acts late and weak: neg_scale 2 on the second half of the steps, " +
        "fading in. An Extra Negative (\"blurry, low quality\") acts on every step at scale 3. All prompts of a " +
        "step go through the model in one batched call; a negative outside its window costs nothing.\n\n" +
        "Try: chain another Extra Negative into the first one's extra_negatives, or set evaluation to " +
        "sequential on the patch for low VRAM (same result).\n\nModel: v1-5-pruned-emaonly.safetensors",
    },
  },
  {
    file: "06 Flux negative at cfg 1.json",
    nodes: [
      ...promptNodes(FLUX_DEV, 1024),
      { key: "fluxGuidance", type: "FluxGuidance", pos: [840, 40], size: [380, 0], widgets: { guidance: 3.5 } },
      { key: "patch", type: "NegativeGuidance", pos: [840, 170], size: [380, 0],
        widgets: { neg_scale: 2.0, neg_start: 0.1, neg_end: 0.5, window_unit: "steps", ramp: "hard", ramp_width: 0 } },
      { key: "ksampler", type: "KSampler", pos: [1260, 40],
        widgets: { ...KSAMPLER_SETTINGS, steps: 20, cfg: 1.0, scheduler: "simple" } },
      { key: "decode", type: "VAEDecode", pos: [1600, 40], size: [180, 0] },
      { key: "save", type: "SaveImage", pos: [1600, 150], size: [340, 380],
        widgets: { filename_prefix: "negguide/flux_negative_cfg1" } },
    ],
    links: [
      ...PROMPT_LINKS,
      // FluxGuidance sits between the positive prompt and the KSampler, as in any Flux dev workflow.
      ["positive", 0, "fluxGuidance", "conditioning"],
      ["fluxGuidance", 0, "ksampler", "positive"],
      ...PATCH_KSAMPLER_LINKS.filter(([from, , to]) => !(from === "positive" && to === "ksampler")),
    ],
    note: {
      pos: [40, 400], size: [340, 420],
      text: "A negative prompt on Flux dev (cfg 1)\n\n" +
        "Flux dev is guidance-distilled: it runs at cfg 1 with FluxGuidance, and at cfg 1 the KSampler's negative " +
        "prompt does nothing. Here the patch adds it with its own scale: eps(y) - neg_scale * (eps(negative) - " +
        "eps(empty)) on 8 of the 20 steps, the 3rd to the 10th (neg_start 0.1, neg_end 0.5), and plain Flux on the other 12.\n\n" +
        "Cost: one model pass per step outside the window (as plain Flux), three inside (prompt, negative and " +
        "empty prompt, in one batched call): 12 x 1 + 8 x 3 = 36 passes instead of 20.\n\n" +
        "The negative and empty prompts carry Flux's default guidance 3.5, like FluxGuidance's.\n\n" +
        "Try: neg_scale 1 to 3; a later neg_end for a stronger removal, at 3 passes per extra step.\n\n" +
        "Model: flux1-dev-fp8.safetensors",
    },
  },
  {
    file: "07 Try it on CPU, testbed.json",
    nodes: [
      { key: "checkpoint", type: "NegativeGuidanceTestbed", pos: [40, 140], size: [340, 0] },
      { key: "positive", type: "CLIPTextEncode", title: "Positive prompt (y)", pos: [420, 40], size: [400, 160],
        widgets: { text: "a big red circle on grass, left" } },
      { key: "negative", type: "CLIPTextEncode", title: "Negative prompt (ỹ)", pos: [420, 240], size: [400, 120],
        widgets: { text: "a hat" } },
      { key: "empty", type: "CLIPTextEncode", title: "Empty prompt (∅)", pos: [420, 400], size: [400, 110],
        widgets: { text: "" } },
      { key: "latent", type: "EmptyLatentImage", pos: [420, 560], widgets: { width: 128, height: 128, batch_size: 4 } },
      { key: "stock", type: "KSampler", title: "KSampler: stock negative prompt (all steps)", pos: [860, 40],
        size: [380, 0], widgets: TESTBED_KSAMPLER_SETTINGS },
      { key: "stockDecode", type: "VAEDecode", pos: [1740, 40], size: [180, 0] },
      { key: "stockSave", type: "SaveImage", title: "Stock negative prompt", pos: [1940, 40], size: [340, 380],
        widgets: { filename_prefix: "negguide/testbed_stock" } },
      { key: "patch", type: "NegativeGuidance", pos: [860, 460], size: [380, 0],
        widgets: { ...DELAYED_WINDOW, neg_scale: 8 } },
      { key: "delayed", type: "KSampler", title: "KSampler: delayed negative (steps 6-15)", pos: [1280, 460],
        size: [380, 0], widgets: TESTBED_KSAMPLER_SETTINGS },
      { key: "delayedDecode", type: "VAEDecode", pos: [1740, 460], size: [180, 0] },
      { key: "delayedSave", type: "SaveImage", title: "Delayed negative prompt", pos: [1940, 460], size: [340, 380],
        widgets: { filename_prefix: "negguide/testbed_delayed" } },
    ],
    links: [
      ...PROMPT_LINKS,
      ...STOCK_VS_DELAYED_LINKS,
    ],
    note: {
      pos: [40, 560], size: [340, 380],
      text: "Try it on CPU in seconds: the pack's own tiny model\n\n" +
        "Negative Guidance Testbed is a 5 M-parameter model this pack trained on synthetic scenes: one shape " +
        "(circle, square, triangle; red, blue, yellow, purple; small or big; left or right) on grass, sand or sky, " +
        "which in most pictures wears a black hat that the prompt never asked for. Both KSamplers draw the same " +
        "4 seeds with the negative prompt 'a hat': the top one on every step (stock), the bottom one only on " +
        "steps 6-15 of 30 (neg_start 0.1667, neg_end 0.5) with neg_scale 8.\n\n" +
        "Try: other prompts ('a small blue square on sand, right'), the negative 'red' on a prompt that names no " +
        "colour, or other windows. What it measurably does: docs/testbed.md.\n\n" +
        "Model: none to download (the Negative Guidance Testbed node loads it)",
    },
  },
];
