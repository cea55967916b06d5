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

/** s⁻ with "follow cfg" resolved; null when it follows a cfg that is not known here (the patch node). */
export function negativeScale(cfg, negScale) {
  if (negScale === NEG_SCALE_FOLLOWS_CFG) return cfg == null ? null : cfg - 1.0;
  return negScale;
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
