// The schedule graph on NegativeGuidance and NegativeGuidanceGuider: s⁻·w(t) (and s⁺) over the course of
// sampling, with the window shaded. The node's own widgets are the single source of truth: the graph is a DOM
// widget with serialize:false, so it never enters a saved workflow or an API prompt, and it works in the classic
// canvas and in the Vue node renderer ("Nodes 2.0") alike.

import { app } from "../../scripts/app.js";
import { Window, negativeScale, samplePoints } from "./schedule.js";

const NODE_TYPES = new Set(["NegativeGuidance", "NegativeGuidanceGuider"]);
const GRAPH_WIDGET_NAME = "schedule_graph";
const WATCHED_WIDGETS = ["cfg", "neg_scale", "neg_start", "neg_end", "window_unit", "ramp", "ramp_width"];
const SAMPLER_WIDGETS = ["cfg", "steps"];
const GRAPH_MIN_HEIGHT = 130;
const GRAPH_MAX_HEIGHT = 220;
// How far to follow the patch's MODEL output (through other model patches) to find the KSampler holding cfg.
const SAMPLER_SEARCH_DEPTH = 6;

const UNIT_LABELS = {
  steps: "fraction of steps",
  timestep_percent: "timestep percent",
  sigma: "sigma, max → min",
};

const COLORS = {
  background: "rgba(16, 18, 24, 0.85)",
  grid: "rgba(255, 255, 255, 0.10)",
  text: "#c9ccd3",
  window: "rgba(246, 160, 77, 0.16)",
  negative: "#f6a04d",
  negativeFill: "rgba(246, 160, 77, 0.28)",
  positive: "#6fa8dc",
  stepDot: "#ffd7ae",
};

const wrappedSamplerWidgets = new WeakSet();

function widgetValue(node, name) {
  return node.widgets?.find((widget) => widget.name === name)?.value;
}

function linkById(graph, linkId) {
  return graph.getLink?.(linkId) ?? graph.links?.get?.(linkId) ?? graph.links?.[linkId];
}

/** The nearest downstream node with cfg and steps widgets (a KSampler), following MODEL outputs. */
function findSampler(node) {
  const graph = node.graph;
  if (!graph) return null;
  const seen = new Set([node.id]);
  let frontier = [node];
  for (let depth = 0; depth < SAMPLER_SEARCH_DEPTH && frontier.length; depth++) {
    const next = [];
    for (const current of frontier) {
      for (const output of current.outputs ?? []) {
        if (output.type !== "MODEL") continue;
        for (const linkId of output.links ?? []) {
          const link = linkById(graph, linkId);
          const target = link && graph.getNodeById(link.target_id);
          if (!target || seen.has(target.id)) continue;
          seen.add(target.id);
          const names = new Set((target.widgets ?? []).map((widget) => widget.name));
          if (SAMPLER_WIDGETS.every((name) => names.has(name))) return target;
          next.push(target);
        }
      }
    }
    frontier = next;
  }
  return null;
}

/** What the graph shows, read from the widgets (and, for the patch, from the KSampler it feeds, if any). */
function readSettings(node) {
  const settings = {
    cfg: widgetValue(node, "cfg"),
    negScale: Number(widgetValue(node, "neg_scale")),
    window: new Window(Number(widgetValue(node, "neg_start")), Number(widgetValue(node, "neg_end")),
      widgetValue(node, "ramp"), Number(widgetValue(node, "ramp_width"))),
    unit: widgetValue(node, "window_unit"),
    steps: null,
    cfgSource: "node",
  };
  if (settings.cfg === undefined) {
    // The patch: cfg and steps live on the KSampler that samples the patched model.
    const sampler = findSampler(node);
    settings.cfg = sampler ? Number(widgetValue(sampler, "cfg")) : null;
    settings.steps = sampler ? Number(widgetValue(sampler, "steps")) : null;
    settings.cfgSource = sampler ? `KSampler #${sampler.id}` : null;
    if (sampler) watchSampler(sampler, node);
  } else {
    settings.cfg = Number(settings.cfg);
  }
  settings.negativeScale = negativeScale(settings.cfg, settings.negScale);
  return settings;
}

function watchSampler(sampler, node) {
  for (const widget of sampler.widgets ?? []) {
    if (!SAMPLER_WIDGETS.includes(widget.name) || wrappedSamplerWidgets.has(widget)) continue;
    wrappedSamplerWidgets.add(widget);
    const original = widget.callback;
    widget.callback = function (...args) {
      const result = original?.apply(this, args);
      // Every schedule graph downstream of this sampler's model may depend on it.
      for (const candidate of sampler.graph?.nodes ?? []) candidate.negguideRequestRedraw?.();
      return result;
    };
  }
}

function formatNumber(value) {
  return Number.isInteger(value) ? String(value) : value.toFixed(2).replace(/0+$/, "").replace(/\.$/, "");
}

/** The x axis's unit; with a known step count, which steps the negative acts on, counted as the tooltips do
 * ("steps 5-15 of 30": from step 5 up to, not including, step 15, steps numbered from 0). */
function axisLabel(settings) {
  const { unit, steps, window: win } = settings;
  if (unit !== "steps" || !(steps > 0)) return UNIT_LABELS[unit] ?? String(unit);
  const active = [];
  for (let i = 0; i < steps; i++) if (win.weight(i / steps) > 0) active.push(i);
  if (!active.length) return `negative on none of ${steps} steps`;
  if (active.length === steps) return `negative on all ${steps} steps`;
  return `negative on steps ${active[0]}–${active[active.length - 1] + 1} of ${steps}`;
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

  const pad = { left: 30, right: 8, top: 18, bottom: 18 };
  const plotWidth = cssWidth - pad.left - pad.right;
  const plotHeight = cssHeight - pad.top - pad.bottom;
  ctx.fillStyle = COLORS.background;
  ctx.beginPath();
  ctx.roundRect(0, 0, cssWidth, cssHeight, 6);
  ctx.fill();

  const { window: win, cfg, negativeScale: sNeg } = settings;
  // With neg_scale = -1 on the patch and no KSampler found, s⁻ = cfg − 1 is not known here: draw w(t) on a
  // scale whose top is labelled "cfg − 1" rather than inventing a number.
  const symbolic = sNeg == null;
  const curveScale = symbolic ? 1 : sNeg;
  const yMax = symbolic ? 1.2 : Math.max(cfg ?? 0, sNeg, 1) * 1.15;
  const x = (p) => pad.left + p * plotWidth;
  const y = (value) => pad.top + plotHeight * (1 - value / yMax);

  ctx.font = "10px sans-serif";
  ctx.lineWidth = 1;
  ctx.strokeStyle = COLORS.grid;
  ctx.fillStyle = COLORS.text;
  ctx.textBaseline = "middle";
  ctx.textAlign = "right";
  const ticks = symbolic ? [[0, "0"], [1, "cfg−1"]] : [[0, "0"], [curveScale, formatNumber(curveScale)]];
  if (!symbolic && cfg != null && Math.abs(cfg - curveScale) > yMax * 0.08) ticks.push([cfg, formatNumber(cfg)]);
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

  // The steps a KSampler will actually take, when the window counts steps and the sampler is known.
  if (settings.unit === "steps" && settings.steps > 0 && settings.steps <= 200) {
    ctx.fillStyle = COLORS.stepDot;
    for (let i = 0; i < settings.steps; i++) {
      const p = i / settings.steps;
      ctx.beginPath();
      ctx.arc(x(p), y(curveScale * win.weight(p)), settings.steps > 60 ? 1 : 1.8, 0, 2 * Math.PI);
      ctx.fill();
    }
  }

  // Labels: the legend on top, the axis below.
  ctx.textBaseline = "alphabetic";
  ctx.textAlign = "left";
  ctx.fillStyle = COLORS.negative;
  const negLabel = symbolic ? "s⁻·w(t), s⁻ = cfg − 1" : `s⁻·w(t), s⁻ = ${formatNumber(sNeg)}`;
  ctx.fillText(negLabel, pad.left, 12);
  ctx.textAlign = "right";
  if (cfg != null && !symbolic) {
    ctx.fillStyle = COLORS.positive;
    const source = settings.cfgSource && settings.cfgSource !== "node" ? ` (${settings.cfgSource})` : "";
    ctx.fillText(`s⁺ = cfg = ${formatNumber(cfg)}${source}`, cssWidth - pad.right, 12);
  } else if (symbolic) {
    ctx.fillStyle = COLORS.positive;
    ctx.fillText("s⁺ = cfg on the KSampler", cssWidth - pad.right, 12);
  }
  ctx.fillStyle = COLORS.text;
  const axisY = cssHeight - 5;
  ctx.textAlign = "left";
  ctx.fillText("0", x(0), axisY);
  ctx.textAlign = "right";
  ctx.fillText("1", x(1), axisY);
  ctx.textAlign = "center";
  ctx.fillText(`progress (${axisLabel(settings)}) →`, x(0.5), axisY);
  return true;
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
      unit: settings.unit, steps: settings.steps,
    });
  };
  const requestRedraw = () => {
    if (!frame) frame = requestAnimationFrame(redraw);
  };
  node.negguideRequestRedraw = requestRedraw;

  for (const name of WATCHED_WIDGETS) {
    const watched = node.widgets?.find((candidate) => candidate.name === name);
    if (!watched) continue;
    const original = watched.callback;
    watched.callback = function (...args) {
      const result = original?.apply(this, args);
      requestRedraw();
      return result;
    };
  }
  // Loading a workflow sets widget values without callbacks; links decide which KSampler gives cfg.
  const onConfigure = node.onConfigure;
  node.onConfigure = function (...args) {
    const result = onConfigure?.apply(this, args);
    requestRedraw();
    return result;
  };
  const onConnectionsChange = node.onConnectionsChange;
  node.onConnectionsChange = function (...args) {
    const result = onConnectionsChange?.apply(this, args);
    requestRedraw();
    return result;
  };
  new ResizeObserver(requestRedraw).observe(canvas);
  // Grow the new node to hold the graph (a loaded workflow then applies its own saved size).
  const needed = node.computeSize();
  node.setSize([Math.max(node.size[0], needed[0]), Math.max(node.size[1], needed[1])]);
  requestRedraw();
  return widget;
}

app.registerExtension({
  name: "comfyui-negative-guidance.ScheduleGraph",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!NODE_TYPES.has(nodeData.name)) return;
    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function (...args) {
      const result = onNodeCreated?.apply(this, args);
      addScheduleGraph(this);
      return result;
    };
  },
});

