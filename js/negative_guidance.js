// The schedule graph on NegativeGuidance and NegativeGuidanceGuider: s⁻·w(t) (and s⁺, and each extra negative's
// sᵢ·wᵢ(t)) over the course of sampling, with the window shaded. The node's own widgets are the single source of
// truth: the graph is a DOM widget with serialize:false, so it never enters a saved workflow or an API prompt, and
// it works in the classic canvas and in the Vue node renderer ("Nodes 2.0") alike.
//
// Steps are named 1-based and inclusive everywhere ("steps 6–15 of 30": the 6th to the 15th step the sampler
// takes), which is neg_start = 5/30, neg_end = 15/30 in window_unit = steps.

import { api } from "../../scripts/api.js";
import { app } from "../../scripts/app.js";
import { EDGE_TOLERANCE, EDGE_TOLERANCES, NEG_SCALE_FOLLOWS_CFG, Window, followsCfg, formatNumber, samplePoints,
  connectEmpty, nodeName, scaleAt, validationProblem } from "./schedule.js";

// ComfyUI lists a pack's example workflows in directory order (an unsorted glob), which scatters ours in the
// Templates browser; their names are numbered, so sort this pack's list. The original request still runs.
const PACK_FOLDER = decodeURIComponent(new URL(import.meta.url).pathname.split("/")[2] ?? "");
const listWorkflowTemplates = api.getWorkflowTemplates.bind(api);
api.getWorkflowTemplates = async () => {
  const templates = await listWorkflowTemplates();
  templates?.[PACK_FOLDER]?.sort();
  return templates;
};

const NODE_TYPES = new Set(["NegativeGuidance", "NegativeGuidanceGuider"]);
const EXTRA_NEGATIVE_TYPE = "ExtraNegative";
const DYNAMIC_TYPE = "DynamicNegativeScale";
const DYNAMIC_CUSTOM_PRESET = "custom (the inputs below)";
const GRAPH_WIDGET_NAME = "schedule_graph";
const WINDOW_WIDGETS = ["neg_scale", "neg_start", "neg_end", "window_unit", "ramp", "ramp_width"];
const WATCHED_WIDGETS = ["cfg", ...WINDOW_WIDGETS];
// Widgets of other nodes the graph reads: the sampler's cfg and steps, KSamplerAdvanced's step range, a
// scheduler's steps, and the extra negatives' own settings.
const FOLLOWED_WIDGETS = new Set(["cfg", "steps", "start_at_step", "end_at_step", ...WINDOW_WIDGETS,
  "preset", "strength", "p_max"]);
const GRAPH_MIN_HEIGHT = 130;
const GRAPH_MAX_HEIGHT = 220;
// How far to follow the patch's MODEL output (through other model patches) to find the sampler holding cfg.
const SAMPLER_SEARCH_DEPTH = 6;
const MAX_EXTRA_NEGATIVES = 8;

// An error the patch (or the guider) raises once sampling has started comes from the sampler node: ComfyUI titles
// its dialog and outlines that node. The message starts with the pack node's name and id (validation.node_name), so
// point the error at that node instead, the one whose settings to fix. Registered when this file is imported, before
// the app's own listener shows the dialog; the execution store has recorded the same object already, so write
// through its reactive copy first (tests/e2e/test_browser.py, frontends 1.32.9 and 1.49.6).
const NAMED_NODE = /^.+? #([\w:]+): /;
api.addEventListener("execution_error", ({ detail }) => {
  try {
    const id = NAMED_NODE.exec(detail?.exception_message ?? "")?.[1];
    if (!id || String(detail.node_id) === id) return;
    const node = nodeByExecutionId(id);
    if (!node || !NODE_TYPES.has(node.type)) return;
    const stored = app.lastExecutionError;
    const same = stored && stored.prompt_id === detail.prompt_id && stored.exception_message === detail.exception_message;
    for (const error of same ? [stored, detail] : [detail]) {
      error.node_id = id;
      error.node_type = displayName(node);
    }
    app.graph?.setDirtyCanvas?.(true, true);
  } catch (error) {
    console.warn("[negative-guidance] could not point the error at its node", error);
  }
});

/** The node of a ComfyUI execution id ("12", or "5:12" inside a subgraph), or null. */
function nodeByExecutionId(id) {
  let graph = app.graph;
  let node = null;
  for (const part of String(id).split(":")) {
    if (node) graph = node.subgraph;
    node = graph?.getNodeById?.(part) ?? null;
    if (!node) return null;
  }
  return node;
}

const UNIT_LABELS = {
  steps: "fraction of steps",
  timestep_percent: "timestep percent",
  sigma: "sigma, max → min",
};

const COLORS = {
  background: "rgba(16, 18, 24, 0.85)",
  problemBackground: "rgba(70, 18, 18, 0.92)",
  problemText: "#ffb4a8",
  grid: "rgba(255, 255, 255, 0.10)",
  text: "#c9ccd3",
  window: "rgba(246, 160, 77, 0.16)",
  negative: "#f6a04d",
  negativeFill: "rgba(246, 160, 77, 0.28)",
  extras: ["#c58af9", "#7fd18b", "#f28fb1", "#8fd3f2"],
  positive: "#6fa8dc",
  stepDot: "#ffd7ae",
};

function widgetValue(node, name) {
  return node.widgets?.find((widget) => widget.name === name)?.value;
}

function hasWidget(node, name) {
  return !!node.widgets?.some((widget) => widget.name === name);
}

function linkById(graph, linkId) {
  return graph.getLink?.(linkId) ?? graph.links?.get?.(linkId) ?? graph.links?.[linkId];
}

/** The node whose output feeds `node`'s input `name`, if it is linked. */
function inputOrigin(node, name) {
  const input = node.inputs?.find((candidate) => candidate.name === name);
  const link = input?.link != null && node.graph ? linkById(node.graph, input.link) : null;
  return link ? node.graph.getNodeById(link.origin_id) : null;
}

/** The nearest node downstream of `node`'s outputs of type `type` that `accept`s, breadth first. */
function findDownstream(node, type, accept) {
  const graph = node.graph;
  if (!graph) return null;
  const seen = new Set([node.id]);
  let frontier = [node];
  for (let depth = 0; depth < SAMPLER_SEARCH_DEPTH && frontier.length; depth++) {
    const next = [];
    for (const current of frontier) {
      for (const output of current.outputs ?? []) {
        if (output.type !== type) continue;
        for (const linkId of output.links ?? []) {
          const link = linkById(graph, linkId);
          const target = link && graph.getNodeById(link.target_id);
          if (!target || seen.has(target.id)) continue;
          seen.add(target.id);
          if (accept(target)) return target;
          next.push(target);
        }
      }
    }
    frontier = next;
  }
  return null;
}

/**
 * The steps a sampling node runs, as far as the graph says: {total, first, count} (first is 0-based), or null.
 * KSampler: its steps. KSamplerAdvanced: steps start_at_step … end_at_step of `steps` (the window then counts the
 * steps this node runs, as sampling does). SamplerCustom(Advanced): the steps of the scheduler feeding `sigmas`.
 */
function runSteps(sampler) {
  if (!sampler) return null;
  let total = Number(widgetValue(sampler, "steps"));
  if (!hasWidget(sampler, "steps")) {
    const scheduler = inputOrigin(sampler, "sigmas");
    total = scheduler && hasWidget(scheduler, "steps") ? Number(widgetValue(scheduler, "steps")) : NaN;
  }
  if (!(total > 0)) return null;
  if (hasWidget(sampler, "start_at_step")) {
    const first = Math.max(0, Number(widgetValue(sampler, "start_at_step")));
    const last = Math.min(total, Number(widgetValue(sampler, "end_at_step")));
    return { total, first, count: Math.max(0, last - first) };
  }
  return { total, first: 0, count: total };
}

/** The ExtraNegative nodes chained into `node`'s extra_negatives input, nearest first. */
function extraNegativeNodes(node) {
  const found = [];
  let current = inputOrigin(node, "extra_negatives");
  while (current && current.type === EXTRA_NEGATIVE_TYPE && found.length < MAX_EXTRA_NEGATIVES &&
    !found.includes(current)) {
    found.push(current);
    current = inputOrigin(current, "extra_negatives");
  }
  return found;
}

function windowOf(node) {
  return new Window(Number(widgetValue(node, "neg_start")), Number(widgetValue(node, "neg_end")),
    widgetValue(node, "ramp"), Number(widgetValue(node, "ramp_width")),
    EDGE_TOLERANCES[widgetValue(node, "window_unit")] ?? EDGE_TOLERANCE);
}

/**
 * The Dynamic Negative Scale feeding `node`'s `dynamic` input: {cap} with cap = λ·p_max/(1 − p_max), the largest
 * scale it can reach (null for a preset, whose numbers live on the server), or null when none is connected.
 */
function dynamicScaleOf(node) {
  const source = inputOrigin(node, "dynamic");
  if (!source) return null;
  if (source.type !== DYNAMIC_TYPE || widgetValue(source, "preset") !== DYNAMIC_CUSTOM_PRESET) return { cap: null };
  const strength = Number(widgetValue(source, "strength"));
  const pMax = Number(widgetValue(source, "p_max"));
  return { cap: strength * pMax / (1 - pMax) };
}

/** The sampling code's sentence (nodes/guidance.py begin_run) for a dynamic scale without `empty`. */
function dynamicNeedsEmpty(name) {
  return connectEmpty(name, "a dynamic negative scale tracks its probability from eps(∅).");
}

/** The node's display name as the node library shows it ("Negative Guidance (patch)"), its type where none. */
function displayName(node) {
  return node.constructor?.title || node.type;
}

/** A node as the server's messages name it (validation.node_name): display name, the user's title, id. */
function describeNode(node) {
  return nodeName(displayName(node), node.id, node.title);
}

/** What the graph shows, read from the widgets (and from the sampler, scheduler and extra negatives linked). */
function readSettings(node) {
  const isGuider = hasWidget(node, "cfg");
  // The patch: cfg lives on the sampler that samples the patched model (KSampler, KSamplerAdvanced,
  // SamplerCustom, CFGGuider…). The guider: the steps on the scheduler of the SamplerCustomAdvanced it feeds.
  const sampler = isGuider
    ? findDownstream(node, "GUIDER", (target) => target.inputs?.some((input) => input.name === "sigmas"))
    : findDownstream(node, "MODEL", (target) => hasWidget(target, "cfg"));
  const cfg = isGuider ? Number(widgetValue(node, "cfg")) : sampler ? Number(widgetValue(sampler, "cfg")) : null;
  const negScale = Number(widgetValue(node, "neg_scale"));
  const window = windowOf(node);
  const unit = widgetValue(node, "window_unit");
  const emptyConnected = node.inputs?.find((input) => input.name === "empty")?.link != null;
  const values = { cfg, neg_scale: negScale, neg_start: window.start, neg_end: window.end, window_unit: unit,
    ramp: window.ramp, ramp_width: window.rampWidth };
  const extraNodes = extraNegativeNodes(node);
  const extras = extraNodes.map((extra) => ({
    id: extra.id, scale: Number(widgetValue(extra, "neg_scale")), window: windowOf(extra),
    problem: validationProblem(describeNode(extra), {
      neg_scale: Number(widgetValue(extra, "neg_scale")), neg_start: Number(widgetValue(extra, "neg_start")),
      neg_end: Number(widgetValue(extra, "neg_end")), window_unit: widgetValue(extra, "window_unit"),
      ramp: widgetValue(extra, "ramp"), ramp_width: Number(widgetValue(extra, "ramp_width")) }, null, false),
  }));
  // A dynamic scale replaces neg_scale (it follows each sample; the window still gates it).
  const dynamic = dynamicScaleOf(node);
  const anyDynamic = !!dynamic || extraNodes.some((extra) => inputOrigin(extra, "dynamic"));
  return {
    cfg, negScale, window, unit, extras, dynamic,
    followsCfg: !dynamic && followsCfg(negScale),
    negativeScale: dynamic ? null : scaleAt(cfg, negScale),
    run: runSteps(sampler),
    cfgSource: isGuider ? "node" : sampler ? describeNode(sampler) : null,
    // The sentence the server would refuse these settings with (for the patch, cfg is the sampler's), in the
    // order it checks them: the node's own inputs when it runs (the guider's `empty` there too), then, when
    // sampling starts, a dynamic scale without `empty`, then (the patch) the rest of `empty`'s need.
    problem: validationProblem(describeNode(node), values, isGuider ? emptyConnected : null)
      ?? extras.find((extra) => extra.problem)?.problem
      ?? (anyDynamic && !emptyConnected ? dynamicNeedsEmpty(describeNode(node)) : null)
      ?? (!isGuider && sampler && !anyDynamic ? validationProblem(describeNode(node), values, emptyConnected) : null),
  };
}

/** Which steps the negative acts on, 1-based and inclusive ("steps 6–15 of 30"). */
function stepsLabel(settings) {
  const { run, window: win } = settings;
  if (!run || !run.count) return null;
  const active = [];
  for (let i = 0; i < run.count; i++) if (win.weight(i / run.count) > 0) active.push(i + 1);
  const partial = run.count !== run.total;
  const of = partial ? `of the ${run.count} this node runs` : `of ${run.count}`;
  if (!active.length) return `negative on none of the ${run.count} steps${partial ? " this node runs" : ""}`;
  const first = active[0];
  const last = active[active.length - 1];
  const range = (a, b) => (a === b ? `${a}` : `${a}–${b}`);
  const overall = partial ? ` (${range(run.first + first, run.first + last)} of ${run.total})` : "";
  if (active.length === run.count && !partial) return `negative on all ${run.count} steps`;
  return `negative on step${first === last ? "" : "s"} ${range(first, last)} ${of}${overall}`;
}

/** `text` broken into lines no wider than `width`. */
function wrapText(ctx, text, width) {
  const lines = [];
  let line = "";
  for (const word of text.split(" ")) {
    const candidate = line ? `${line} ${word}` : word;
    if (line && ctx.measureText(candidate).width > width) {
      lines.push(line);
      line = word;
    } else {
      line = candidate;
    }
  }
  if (line) lines.push(line);
  return lines;
}

function drawProblem(ctx, settings, cssWidth, cssHeight) {
  ctx.fillStyle = COLORS.problemBackground;
  ctx.beginPath();
  ctx.roundRect(0, 0, cssWidth, cssHeight, 6);
  ctx.fill();
  ctx.fillStyle = COLORS.problemText;
  ctx.font = "bold 11px sans-serif";
  ctx.textBaseline = "top";
  ctx.textAlign = "left";
  ctx.fillText("⚠ These settings will be refused:", 8, 8);
  ctx.font = "11px sans-serif";
  wrapText(ctx, settings.problem, cssWidth - 16).forEach((line, i) => ctx.fillText(line, 8, 26 + i * 14));
}

function draw(canvas, settings) {
  const cssWidth = canvas.clientWidth;
  const cssHeight = canvas.clientHeight;
  if (cssWidth < 10 || cssHeight < 10) return false;
  const ratio = window.devicePixelRatio || 1;
  canvas.width = Math.round(cssWidth * ratio);
  canvas.height = Math.round(cssHeight * ratio);
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, cssWidth, cssHeight);
  if (settings.problem) {
    // Never a curve for settings the server refuses: the sentence it would give, on the node.
    drawProblem(ctx, settings, cssWidth, cssHeight);
    return true;
  }

  const { window: win, cfg, negativeScale: sNeg, extras } = settings;
  // With neg_scale following cfg on the patch and no sampler found, s⁻ = cfg − 1 is not known here: draw w(t) on
  // a scale whose top is labelled "cfg − 1" rather than inventing a number.
  // A dynamic scale has no one value either: w(t) on a scale labelled "dynamic", its largest value in the legend.
  const dynamic = settings.dynamic;
  const symbolic = sNeg == null;
  const curveScale = symbolic ? 1 : sNeg;
  const levels = [0, curveScale, ...(symbolic || cfg == null ? [] : [cfg]), ...extras.map((extra) => extra.scale)];
  const yMax = Math.max(...levels, symbolic ? 1 : 0.5) * 1.15;
  const yMin = Math.min(...levels) * 1.15;

  ctx.font = "10px sans-serif";
  const ticks = symbolic ? [[0, "0"], [1, dynamic ? "dynamic" : "cfg − 1"]]
    : [[0, "0"], [curveScale, formatNumber(curveScale)]];
  // s⁺ and each extra negative's scale, where there is room between the labels.
  for (const value of [...(symbolic || cfg == null ? [] : [cfg]), ...extras.map((extra) => extra.scale)]) {
    if (ticks.every(([tick]) => Math.abs(value - tick) > (yMax - yMin) * 0.08)) ticks.push([value, formatNumber(value)]);
  }
  const tickWidth = Math.max(...ticks.map(([, label]) => ctx.measureText(label).width));
  const legendLines = extras.length ? 2 : 1;
  const pad = { left: Math.ceil(tickWidth) + 8, right: 8, top: 8 + 13 * legendLines, bottom: 18 };
  const plotWidth = cssWidth - pad.left - pad.right;
  const plotHeight = cssHeight - pad.top - pad.bottom;
  ctx.fillStyle = COLORS.background;
  ctx.beginPath();
  ctx.roundRect(0, 0, cssWidth, cssHeight, 6);
  ctx.fill();
  const x = (p) => pad.left + p * plotWidth;
  const y = (value) => pad.top + plotHeight * (yMax - value) / (yMax - yMin);

  ctx.lineWidth = 1;
  ctx.strokeStyle = COLORS.grid;
  ctx.fillStyle = COLORS.text;
  ctx.textBaseline = "middle";
  ctx.textAlign = "right";
  for (const [value, label] of ticks) {
    ctx.beginPath();
    ctx.moveTo(pad.left, y(value));
    ctx.lineTo(pad.left + plotWidth, y(value));
    ctx.stroke();
    ctx.fillText(label, pad.left - 3, y(value));
  }

  // The window, shaded where w > 0 can happen.
  if (!win.isEmpty) {
    ctx.fillStyle = COLORS.window;
    const start = Math.max(0, Math.min(1, win.start));
    const end = Math.max(start, Math.min(1, win.end));
    ctx.fillRect(x(start), pad.top, x(end) - x(start), plotHeight);
  }

  // s⁺: flat at cfg.
  if (cfg != null && !symbolic) {
    ctx.strokeStyle = COLORS.positive;
    ctx.setLineDash([4, 3]);
    ctx.lineWidth = 1.5;
    ctx.beginPath();
    ctx.moveTo(x(0), y(cfg));
    ctx.lineTo(x(1), y(cfg));
    ctx.stroke();
    ctx.setLineDash([]);
  }

  // Each extra negative's sᵢ·wᵢ(t), thinner, under the main curve.
  extras.forEach((extra, i) => {
    const points = samplePoints(extra.window, Math.max(2, Math.round(plotWidth)));
    ctx.beginPath();
    points.forEach((p, j) => (j ? ctx.lineTo : ctx.moveTo).call(ctx, x(p), y(extra.scale * extra.window.weight(p))));
    ctx.strokeStyle = COLORS.extras[i % COLORS.extras.length];
    ctx.lineWidth = 1.5;
    ctx.stroke();
  });

  // s⁻·w(t), sampled at every pixel column and on both sides of each edge.
  const points = samplePoints(win, Math.max(2, Math.round(plotWidth)));
  ctx.beginPath();
  ctx.moveTo(x(0), y(0));
  for (const p of points) ctx.lineTo(x(p), y(curveScale * win.weight(p)));
  ctx.lineTo(x(1), y(0));
  ctx.closePath();
  ctx.fillStyle = COLORS.negativeFill;
  ctx.fill();
  ctx.beginPath();
  points.forEach((p, i) => (i ? ctx.lineTo : ctx.moveTo).call(ctx, x(p), y(curveScale * win.weight(p))));
  ctx.strokeStyle = COLORS.negative;
  ctx.lineWidth = 2;
  ctx.stroke();

  // The steps the sampler will take (those of this node's run), when the window counts steps.
  const run = settings.run;
  if (settings.unit === "steps" && run && run.count > 0 && run.count <= 200) {
    ctx.fillStyle = COLORS.stepDot;
    for (let i = 0; i < run.count; i++) {
      const p = i / run.count;
      ctx.beginPath();
      ctx.arc(x(p), y(curveScale * win.weight(p)), run.count > 60 ? 1 : 1.8, 0, 2 * Math.PI);
      ctx.fill();
    }
  }

  // Legend on top (the main negative and s⁺; the extra negatives on a second line), the axis below.
  ctx.textBaseline = "alphabetic";
  ctx.textAlign = "left";
  ctx.fillStyle = COLORS.negative;
  const follow = settings.followsCfg ? (symbolic ? "cfg − 1 (follows cfg)" : `cfg − 1 = ${formatNumber(sNeg)}`) : null;
  const followsSample = dynamic
    ? `λ·p/(1 − p) per sample${dynamic.cap == null ? " (preset)" : `, ≤ ${formatNumber(dynamic.cap)}`}` : null;
  ctx.fillText(`s⁻·w(t), s⁻ = ${followsSample ?? follow ?? formatNumber(sNeg)}`, 6, 14);
  ctx.textAlign = "right";
  ctx.fillStyle = COLORS.positive;
  if (cfg != null && !symbolic) {
    const source = settings.cfgSource && settings.cfgSource !== "node" ? ` (${settings.cfgSource})` : "";
    ctx.fillText(`s⁺ = cfg = ${formatNumber(cfg)}${source}`, cssWidth - pad.right, 14);
  } else if (symbolic && !dynamic) {
    ctx.fillText("s⁺ = the sampler's cfg", cssWidth - pad.right, 14);
  }
  if (extras.length) {
    ctx.textAlign = "left";
    let left = 6;
    extras.forEach((extra, i) => {
      const label = `extra #${extra.id}: s = ${formatNumber(extra.scale)}  `;
      ctx.fillStyle = COLORS.extras[i % COLORS.extras.length];
      ctx.fillText(label, left, 27);
      left += ctx.measureText(label).width;
    });
  }
  ctx.fillStyle = COLORS.text;
  const axisY = cssHeight - 5;
  ctx.textAlign = "left";
  ctx.fillText("0", x(0), axisY);
  ctx.textAlign = "right";
  ctx.fillText("1", x(1), axisY);
  ctx.textAlign = "center";
  const steps = settings.unit === "steps" ? stepsLabel(settings) : null;
  ctx.fillText(steps ?? `progress (${UNIT_LABELS[settings.unit] ?? String(settings.unit)}) →`, x(0.5), axisY);
  settings.stepsLabel = steps;
  return true;
}

/**
 * neg_scale: any negative value means "follow cfg", shown as −1. The widget's arrows step by 0.1, so from 0 one
 * click down gives −0.1 and from −1 one click up gives −0.9: snap those to −1 and 0, so every click lands on a
 * value with a meaning the user can see.
 */
function snapNegScale(widget, previous) {
  const value = Number(widget.value);
  if (!followsCfg(value) || value === NEG_SCALE_FOLLOWS_CFG) return value;
  const snapped = followsCfg(previous) ? 0 : NEG_SCALE_FOLLOWS_CFG;
  widget.value = snapped;
  // Once more through the callback, after this one: the Vue renderer shows the value its own wrapper of the
  // callback was given, so hand it the snapped one (a no-op for the snap itself, a redraw in the classic canvas).
  queueMicrotask(() => widget.callback?.(snapped));
  return snapped;
}

/** Redraws every schedule graph in the graph (a sampler, scheduler or extra negative may feed any of them). */
function redrawAll(graph) {
  for (const candidate of graph?.nodes ?? []) candidate.negguideRequestRedraw?.();
}

function chainCallback(object, name, after) {
  const original = object[name];
  object[name] = function (...args) {
    const result = original?.apply(this, args);
    after.apply(this, args);
    return result;
  };
}

function addScheduleGraph(node) {
  const container = document.createElement("div");
  container.className = "negguide-schedule-graph";
  container.style.cssText = "width:100%;height:100%;min-height:" + GRAPH_MIN_HEIGHT + "px;box-sizing:border-box;";
  const canvas = document.createElement("canvas");
  canvas.style.cssText = "display:block;width:100%;height:100%;min-height:" + GRAPH_MIN_HEIGHT + "px;";
  container.appendChild(canvas);
  container.dataset.drawCount = "0";

  const widget = node.addDOMWidget(GRAPH_WIDGET_NAME, "negguide_schedule", container, {
    serialize: false, // API prompt: graphToPrompt skips widgets whose options say so
    hideOnZoom: false,
    getMinHeight: () => GRAPH_MIN_HEIGHT,
    getMaxHeight: () => GRAPH_MAX_HEIGHT,
    getValue: () => undefined,
    setValue: () => {},
  });
  widget.serialize = false; // saved workflow: LGraphNode.serialize skips widgets with serialize === false

  let frame = 0;
  const redraw = () => {
    frame = 0;
    const settings = readSettings(node);
    if (!draw(canvas, settings)) return;
    // Read by the browser tests: that the graph redrew, and for which inputs.
    container.dataset.drawCount = String(Number(container.dataset.drawCount) + 1);
    container.dataset.drawn = JSON.stringify({
      cfg: settings.cfg, negativeScale: settings.negativeScale, start: settings.window.start,
      end: settings.window.end, ramp: settings.window.ramp, rampWidth: settings.window.rampWidth,
      unit: settings.unit, steps: settings.run?.count ?? null, run: settings.run, stepsLabel: settings.stepsLabel ?? null,
      cfgSource: settings.cfgSource, problem: settings.problem, dynamic: settings.dynamic,
      extras: settings.extras.map((extra) => ({ id: extra.id, scale: extra.scale, start: extra.window.start,
        end: extra.window.end })),
    });
  };
  const requestRedraw = () => {
    if (!frame) frame = requestAnimationFrame(redraw);
  };
  node.negguideRequestRedraw = requestRedraw;

  for (const name of WATCHED_WIDGETS) {
    const watched = node.widgets?.find((candidate) => candidate.name === name);
    if (!watched) continue;
    if (name === "neg_scale") {
      let previous = Number(watched.value);
      chainCallback(watched, "callback", function () {
        previous = snapNegScale(watched, previous);
      });
      chainCallback(node, "onConfigure", () => {
        previous = Number(watched.value);
      });
    }
    chainCallback(watched, "callback", requestRedraw);
  }
  // Loading a workflow sets widget values without callbacks; links decide which sampler gives cfg.
  chainCallback(node, "onConfigure", requestRedraw);
  chainCallback(node, "onConnectionsChange", requestRedraw);
  new ResizeObserver(requestRedraw).observe(canvas);
  // Grow the new node to hold the graph (a loaded workflow then applies its own saved size).
  const needed = node.computeSize();
  node.setSize([Math.max(node.size[0], needed[0]), Math.max(node.size[1], needed[1])]);
  requestRedraw();
  return widget;
}

/**
 * Other nodes' widgets the graphs read (a KSampler's cfg and steps, an ExtraNegative's window…): their callbacks
 * are chained when the node is created, before any renderer reads them (the Vue renderer keeps the callback it
 * found when it mounted the node, so chaining later would go unseen there).
 */
function followWidgets(node) {
  if (NODE_TYPES.has(node.type)) return;
  for (const widget of node.widgets ?? []) {
    if (FOLLOWED_WIDGETS.has(widget.name)) chainCallback(widget, "callback", () => redrawAll(node.graph));
  }
  if (node.type === EXTRA_NEGATIVE_TYPE) chainCallback(node, "onConnectionsChange", () => redrawAll(node.graph));
}

// The pack's nodes with float inputs whose `round` is finer than their arrows' step.
const FLOAT_NODE_TYPES = new Set([...NODE_TYPES, EXTRA_NEGATIVE_TYPE, "DynamicNegativeScale"]);

/**
 * The frontend keeps a float widget to the decimals of its step (neg_start steps by 0.01, so a typed 0.1667 became
 * 0.17: the 7th of 30 steps instead of the 6th), not to the input's own `round` (0.0001). Both renderers read
 * options.precision for the value kept; the classic canvas also draws that many decimals. Nodes 2.0 hands the other
 * options to PrimeVue's InputNumber, which takes no decimal point and shows 3 decimals unless told its fraction
 * digits. Give each float widget its round's decimals.
 */
function keepRoundPrecision(node) {
  for (const widget of node.widgets ?? []) {
    const round = Number(widget.options?.round);
    if (!(round > 0) || typeof widget.options.precision !== "number") continue;
    const decimals = Math.max(widget.options.precision, -Math.floor(Math.log10(round) + 1e-9));
    widget.options.precision = decimals;
    widget.options.minFractionDigits = 0;
    widget.options.maxFractionDigits = decimals;
  }
}

app.registerExtension({
  name: "comfyui-negative-guidance.ScheduleGraph",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (FLOAT_NODE_TYPES.has(nodeData.name)) {
      chainCallback(nodeType.prototype, "onNodeCreated", function () {
        keepRoundPrecision(this);
      });
    }
    if (!NODE_TYPES.has(nodeData.name)) return;
    chainCallback(nodeType.prototype, "onNodeCreated", function () {
      addScheduleGraph(this);
    });
  },
  nodeCreated(node) {
    followWidgets(node);
  },
});
