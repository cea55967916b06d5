// The negative-activation window, mirrored from nodes/schedule.py (Window.weight and what it needs).
// Pure: no DOM, no ComfyUI, so node's test runner checks it against vectors the Python core wrote
// (tests/vectors/schedule_vectors.json). Change both files together.

export const WINDOW_UNITS = ["steps", "timestep_percent", "sigma"];
export const RAMPS = ["hard", "linear", "smoothstep"];

// Window edges are compared with this slack so that a value rounded in the UI still means the step the user
// counted (0.167 is step 5 of 30).
export const EDGE_TOLERANCE = 5e-4;
// timestep_percent has no slack: its edges mean exactly what they mean to ConditioningSetTimestepRange.
export const EDGE_TOLERANCES = { steps: EDGE_TOLERANCE, timestep_percent: 0.0, sigma: EDGE_TOLERANCE };

// neg_scale = -1 means s⁻ = cfg − 1, ComfyUI's ordinary negative prompt.
export const NEG_SCALE_FOLLOWS_CFG = -1.0;

/** The fade curve on u ∈ [0, 1] (0 at the window's edge, 1 once fully faded in). */
export function rampShape(ramp, u) {
  u = Math.min(Math.max(u, 0.0), 1.0);
  if (ramp === "linear") return u;
  if (ramp === "smoothstep") return u * u * (3.0 - 2.0 * u);
  return 1.0;
}

/** [start, end) in progress p ∈ [0, 1]; ramps fade inside the window, never at an edge of 0 or 1. */
export class Window {
  constructor(start = 0.0, end = 1.0, ramp = "hard", rampWidth = 0.0, edgeTolerance = EDGE_TOLERANCE) {
    this.start = start;
    this.end = end;
    this.ramp = ramp;
    this.rampWidth = rampWidth;
    this.edgeTolerance = edgeTolerance; // EDGE_TOLERANCES[window_unit], as Python's Window.edge_tolerance
  }

  get fadesIn() {
    return this.ramp !== "hard" && this.rampWidth > 0.0 && this.start > this.edgeTolerance;
  }

  get fadesOut() {
    return this.ramp !== "hard" && this.rampWidth > 0.0 && this.end < 1.0 - this.edgeTolerance;
  }

  /** w = 1 for every evaluation of every run (Window.is_full). */
  get isFull() {
    return this.start <= this.edgeTolerance && this.end >= 1.0 - this.edgeTolerance;
  }

  get isEmpty() {
    return this.end - this.start <= this.edgeTolerance / 2 || this.start >= 1.0 - this.edgeTolerance / 2;
  }

  /** w at progress p: 0 outside [start, end), 1 inside, fading over the ramps. */
  weight(progress) {
    if (this.isEmpty) return 0.0;
    const insideStart = this.start <= this.edgeTolerance || progress >= this.start - this.edgeTolerance;
    const insideEnd = this.end >= 1.0 - this.edgeTolerance || progress < this.end - this.edgeTolerance;
    if (!(insideStart && insideEnd)) return 0.0;
    let weight = 1.0;
    if (this.fadesIn) weight = Math.min(weight, this.fade(progress - this.start));
    if (this.fadesOut) weight = Math.min(weight, this.fade(this.end - progress));
    return weight;
  }

  /** The ramp at a distance inside the window's edge, snapped to exactly 0 or 1 within the edge tolerance of its ends
   *  (as Python's Window._fade), so a rounded neg_start leaves whole steps fully on or off. */
  fade(distanceInside) {
    if (distanceInside <= this.edgeTolerance) return 0.0;
    if (distanceInside >= this.rampWidth - this.edgeTolerance) return 1.0;
    return rampShape(this.ramp, distanceInside / this.rampWidth);
  }
}

/**
 * The progress values at which to sample the curve for a plot `columns` wide: an even grid plus both sides of
 * every edge and ramp end, so a hard edge is drawn as a vertical step where Python switches, not between samples.
 */
export function samplePoints(window, columns) {
  const points = new Set();
  for (let i = 0; i <= columns; i++) points.add(i / columns);
  const edges = [window.start - window.edgeTolerance, window.end - window.edgeTolerance];
  if (window.fadesIn) edges.push(window.start + window.edgeTolerance, window.start + window.rampWidth - window.edgeTolerance);
  if (window.fadesOut) edges.push(window.end - window.rampWidth + window.edgeTolerance, window.end - window.edgeTolerance);
  for (const edge of edges) {
    for (const p of [edge - 1e-9, edge]) if (p >= 0 && p <= 1) points.add(p);
  }
  return [...points].sort((a, b) => a - b);
}

// ---- validation: the sentences nodes/validation.py `inputs_problem` gives (tests/vectors/validation_vectors.json) ----

// The number inputs' bounds (validation.BOUNDS) and what a bound's message adds.
export const BOUNDS = { cfg: [0, 100], neg_scale: [-1, 100], neg_start: [0, 1], neg_end: [0, 1], ramp_width: [0, 1] };
const BOUND_NOTES = { cfg: "", neg_scale: " (any negative value follows cfg)", neg_start: " (a fraction of sampling)",
  neg_end: " (a fraction of sampling)", ramp_width: "" };
// "Zero" as schedule.is_zero / is_one: within 1e-9 of max(1, |cfg|), ComfyUI's math.isclose(cfg, 1.0).
const ZERO_RELATIVE_TOLERANCE = 1e-9;

/** Any negative neg_scale means "follow cfg" (s⁻ = cfg − 1), as schedule.follows_cfg_value. */
export function followsCfg(negScale) {
  return negScale < 0;
}

/** s⁻ at cfg (NegativeTerm.scale_at): the one place "follow cfg" becomes a number; null when it follows a cfg that
 *  is not known here (the patch node with no sampler found). */
export function scaleAt(cfg, negScale) {
  if (!followsCfg(negScale)) return negScale;
  return cfg == null ? null : cfg - 1;
}

/** How a message names a node (validation.node_name): as the canvas shows it, its display name and the title the
 *  user gave it if any, then its id as ComfyUI's node id badges write it. */
export function nodeName(displayName, id, title) {
  const shown = title && title.trim() && title !== displayName ? `${displayName} "${title}"` : displayName;
  return id === null || id === undefined || id === "" ? shown : `${shown} #${id}`;
}

/** The sentence for ∅ needed but not connected (validation.connect_empty). */
export function connectEmpty(node, why) {
  return `${node}: connect 'empty' (the empty prompt ∅, e.g. CLIPTextEncode with no text): ${why}`;
}

/** A number as schedule.format_number writes it in a message: at most 4 decimals, shortest form. */
export function formatNumber(value) {
  const rounded = Math.round(value * 1e4) / 1e4;
  return String(Object.is(rounded, -0) ? 0 : rounded);
}

const isClose = (a, b) => Math.abs(a - b) <= ZERO_RELATIVE_TOLERANCE * Math.max(Math.abs(a), Math.abs(b));

/** Whether eps(∅) gets a non-zero coefficient somewhere (GuidanceSettings.needs_empty, main negative only). */
function needsEmpty(cfg, negScale, window) {
  const scale = scaleAt(cfg, negScale);
  const isZero = (value) => Math.abs(value) <= ZERO_RELATIVE_TOLERANCE * Math.max(1, Math.abs(cfg));
  const isOne = isClose(cfg, 1);
  if (isZero(scale) || window.isEmpty) return !isOne;
  if (!window.isFull) return true;
  // StepCoefficients.needs_empty with w = 1: at s⁺ = 1 ∅ acts with the negative; else unless α = s⁻/(s⁺ − 1) is 1.
  return isOne ? true : !isClose(scale / (cfg - 1), 1);
}

/**
 * The first problem with a node's settings, as the sentence the server gives (validation.inputs_problem), or null.
 * `values`: {cfg, neg_scale, neg_start, neg_end, window_unit, ramp, ramp_width}; null/undefined means unknown.
 * `emptyConnected`: true, false, or null (unknown).
 */
export function validationProblem(node, values, emptyConnected, followsCfgAllowed = true) {
  const known = (value) => value !== null && value !== undefined;
  const numbers = ["cfg", "neg_scale", "neg_start", "neg_end", "ramp_width"];
  for (const name of numbers) {
    if (known(values[name]) && !Number.isFinite(values[name])) return `${node}: ${name} must be a finite number.`;
  }
  for (const name of numbers) {
    const value = values[name];
    const [low, high] = name === "neg_scale" && !followsCfgAllowed ? [0, BOUNDS[name][1]] : BOUNDS[name];
    if (known(value) && !(low <= value && value <= high)) {
      const note = followsCfgAllowed || name !== "neg_scale" ? BOUND_NOTES[name] : "";
      return `${node}: ${name} must lie between ${formatNumber(low)} and ${formatNumber(high)}${note}, ` +
        `got ${formatNumber(value)}.`;
    }
  }
  const { cfg, neg_scale: negScale, neg_start: start, neg_end: end, window_unit: unit, ramp,
    ramp_width: rampWidth } = values;
  if (known(unit) && !WINDOW_UNITS.includes(unit)) {
    return `${node}: window_unit must be one of ${WINDOW_UNITS.join(", ")}, got '${unit}'.`;
  }
  if (known(ramp) && !RAMPS.includes(ramp)) return `${node}: ramp must be one of ${RAMPS.join(", ")}, got '${ramp}'.`;
  if (known(start) && known(end) && start > end) {
    return `${node}: neg_start (${formatNumber(start)}) must not be greater than neg_end (${formatNumber(end)}); ` +
      "the negative acts from neg_start to neg_end.";
  }
  if (![start, end, ramp, rampWidth].every(known)) return null;
  const window = new Window(start, end, ramp, rampWidth, EDGE_TOLERANCES[unit] ?? EDGE_TOLERANCE);
  const fades = Number(window.fadesIn) + Number(window.fadesOut);
  if (fades && fades * rampWidth > end - start + EDGE_TOLERANCE) {
    return `${node}: ramp_width (${formatNumber(rampWidth)}) is too wide for the window ` +
      `${formatNumber(start)}-${formatNumber(end)}: its ${fades} ramp(s) need ${formatNumber(fades * rampWidth)} ` +
      "of it. Narrow the ramp or widen the window.";
  }
  if (emptyConnected === false && known(cfg) && known(negScale) && needsEmpty(cfg, negScale, window)) {
    return connectEmpty(node, `with cfg ${formatNumber(cfg)} and neg_scale ${formatNumber(negScale)} over this ` +
      "window the formula uses eps(∅). Only the ordinary negative prompt (neg_scale = cfg - 1, or -1, over the " +
      "whole run) works without it.");
  }
  return null;
}
