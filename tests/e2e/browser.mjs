// One browser scenario against a running ComfyUI, in headless Chromium through playwright-core.
// Reads {scenario, cdp, server, ...} as JSON on stdin, attaches to the browser tests/e2e/browser.py started,
// does the scenario in a fresh browser context and prints one line of JSON with what it found.
// The assertions live in the Python tests; this file only acts and reports.

import { mkdirSync } from "node:fs";
import { join } from "node:path";

import { chromium } from "playwright-core";

import { WORKFLOWS } from "./workflow_specs.mjs";

const PACK = "comfyui-negative-guidance";
const PACK_NODE_TYPES = ["NegativeGuidance", "NegativeGuidanceGuider"];
const GRAPH_WIDGET = "schedule_graph";
const VIEWPORT = { width: 1600, height: 1000 };

async function readStdin() {
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  return JSON.parse(Buffer.concat(chunks).toString("utf8"));
}

async function openApp(context, server) {
  const page = await context.newPage();
  const pageErrors = [];
  page.on("pageerror", (error) => pageErrors.push(String(error.stack || error.message)));
  // Two cores shared with other jobs: the first load can take well over playwright's default 30 s.
  await page.goto(server, { waitUntil: "domcontentloaded", timeout: 120000 });
  await page.waitForFunction(
    () => window.app?.graph && window.app?.canvas && window.LiteGraph?.registered_node_types?.NegativeGuidance,
    null, { timeout: 120000 });
  // Extensions register asynchronously after the node definitions arrive.
  await page.waitForFunction(() => {
    const node = window.LiteGraph.createNode("NegativeGuidance");
    return node?.widgets?.some((widget) => widget.name === "schedule_graph");
  }, null, { timeout: 60000 });
  await closeBanners(page);
  return { page, pageErrors };
}

async function closeBanners(page) {
  // "Introducing Nodes 2.0" and similar toasts sit over the canvas in screenshots.
  await page.evaluate(() => {
    for (const button of document.querySelectorAll("button")) {
      if (button.closest(".p-toast, [class*='banner'], [class*='announcement']") && /close|dismiss/i.test(
        button.getAttribute("aria-label") || "")) button.click();
    }
  });
}

/** Loads a workflow as the templates dialog does; reports dialogs that opened (missing nodes and the like). */
async function loadWorkflow(page, workflow, name) {
  await page.evaluate(async ({ workflow, name }) => {
    await window.app.loadGraphData(workflow, true, true, name);
  }, { workflow, name });
  await page.waitForTimeout(400);
  return page.evaluate(() => [...document.querySelectorAll(".p-dialog")]
    .filter((dialog) => dialog.offsetParent !== null)
    .map((dialog) => dialog.innerText.slice(0, 500)));
}

/** Frames the given nodes (all when none given) in the viewport, at most at `maxScale`. */
async function frameNodes(page, nodeIds = null, maxScale = 1.0) {
  await page.evaluate(({ nodeIds, maxScale, viewport }) => {
    const { app, LiteGraph } = window;
    const nodes = app.graph.nodes.filter((node) => !nodeIds || nodeIds.includes(node.id));
    const title = LiteGraph.NODE_TITLE_HEIGHT;
    const left = Math.min(...nodes.map((n) => n.pos[0])) - 30;
    const top = Math.min(...nodes.map((n) => n.pos[1] - title)) - 30;
    const right = Math.max(...nodes.map((n) => n.pos[0] + n.size[0])) + 30;
    const bottom = Math.max(...nodes.map((n) => n.pos[1] + n.size[1])) + 30;
    const canvasRect = app.canvas.canvas.getBoundingClientRect();
    const scale = Math.min(maxScale, canvasRect.width / (right - left), (canvasRect.height - 80) / (bottom - top));
    app.canvas.ds.scale = scale;
    app.canvas.ds.offset = [-left + 90 / scale, -top + 150 / scale]; // clear of the menus over the canvas
    app.canvas.setDirty(true, true);
  }, { nodeIds, maxScale, viewport: VIEWPORT });
  await page.waitForTimeout(500);
}

/** Per pack node: its graph's draw count and what it drew, and whether its element is laid out. */
function graphStates(page) {
  return page.evaluate(({ types, widgetName }) => window.app.graph.nodes
    .filter((node) => types.includes(node.type))
    .map((node) => {
      const element = node.widgets.find((widget) => widget.name === widgetName)?.element;
      const canvas = element?.querySelector("canvas");
      return {
        id: node.id, type: node.type, drawCount: Number(element?.dataset.drawCount ?? -1),
        drawn: element?.dataset.drawn ? JSON.parse(element.dataset.drawn) : null,
        width: canvas?.clientWidth ?? 0, height: canvas?.clientHeight ?? 0,
        pixels: canvas && canvas.width ? canvas.toDataURL() : null,
        widgets: Object.fromEntries(node.widgets.filter((w) => w.name !== widgetName).map((w) => [w.name, w.value])),
      };
    }), { types: PACK_NODE_TYPES, widgetName: GRAPH_WIDGET });
}

async function waitForGraphs(page) {
  await page.waitForFunction(({ types, widgetName }) => window.app.graph.nodes
    .filter((node) => types.includes(node.type))
    .every((node) => Number(node.widgets.find((w) => w.name === widgetName)?.element?.dataset.drawCount) > 0),
  { types: PACK_NODE_TYPES, widgetName: GRAPH_WIDGET }, { timeout: 20000 });
}

async function templates(page, server) {
  const listing = await (await page.request.get(`${server}/api/workflow_templates`)).json();
  const names = (listing[PACK] ?? []).sort();
  const found = {};
  for (const name of names) {
    const response = await page.request.get(`${server}/api/workflow_templates/${PACK}/${name}.json`);
    found[name] = await response.json();
  }
  return found;
}

// ---- scenarios ----

/** Every template of the pack: loads, dialogs, graphs drawn, graphToPrompt and serialize() as the app does. */
async function loadTemplates({ page, pageErrors }, request) {
  const results = {};
  const listed = await templates(page, request.server);
  for (const [name, workflow] of Object.entries(listed)) {
    const dialogs = await loadWorkflow(page, workflow, name);
    await frameNodes(page);
    let drawnInTime = true;
    try {
      await waitForGraphs(page);
    } catch {
      drawnInTime = false;
    }
    const graphs = (await graphStates(page)).map(({ pixels, ...rest }) => ({ ...rest, hasPixels: !!pixels }));
    const exported = await page.evaluate(async () => {
      const { output, workflow } = await window.app.graphToPrompt();
      return { prompt: output, workflow, serialized: window.app.graph.serialize() };
    });
    const unknownTypes = await page.evaluate(() => window.app.graph.nodes
      .filter((node) => !window.LiteGraph.registered_node_types[node.type]).map((node) => node.type));
    results[name] = { dialogs, drawnInTime, graphs, unknownTypes, ...exported };
  }
  return { templates: Object.keys(listed), results, pageErrors };
}

/** The negative control for the dialog check: a workflow naming a node type nobody has. */
async function missingNodeControl({ page, pageErrors }, request) {
  const workflow = structuredClone(Object.values(await templates(page, request.server))[0]);
  workflow.nodes[0].type = "NoSuchNodeNegGuideControl";
  const dialogs = await loadWorkflow(page, workflow, "control");
  return { dialogs, pageErrors };
}

/** Nodes 2.0: the row of a node's widget (its label and its input). */
function vueWidgetRow(page, nodeId, widgetName) {
  return page.locator(`[data-node-id="${nodeId}"] .lg-node-widget`).filter({
    has: page.locator("p", { hasText: new RegExp(`^${widgetName}$`) }) });
}

/**
 * Changes a number widget as a user does. Classic canvas: click the middle of the widget and type the value
 * into the canvas's prompt. Vue nodes: press the widget's "+" button (PrimeVue's InputNumber in frontend 1.32.9
 * refuses a typed decimal point), so the value moves by one step2 instead of to `value`.
 */
async function editWidget(page, nodeId, widgetName, value, vueNodes) {
  if (vueNodes) {
    const row = vueWidgetRow(page, nodeId, widgetName);
    await row.locator(".p-inputnumber-increment-button").first().click();
  } else {
    const point = await page.evaluate(({ nodeId, widgetName }) => {
      const { app, LiteGraph } = window;
      const node = app.graph.getNodeById(nodeId);
      const widget = node.widgets.find((w) => w.name === widgetName);
      const [x, y] = app.canvas.ds.convertOffsetToCanvas(
        [node.pos[0] + node.size[0] / 2, node.pos[1] + widget.y + LiteGraph.NODE_WIDGET_HEIGHT / 2]);
      const rect = app.canvas.canvas.getBoundingClientRect();
      return { x: rect.left + x, y: rect.top + y };
    }, { nodeId, widgetName });
    await page.mouse.click(point.x, point.y);
    const input = page.locator(".graphdialog input").first();
    await input.waitFor({ timeout: 5000 });
    await input.fill(String(value));
    await input.press("Enter");
  }
  await page.waitForTimeout(400);
  return page.evaluate(({ nodeId, widgetName }) => window.app.graph.getNodeById(nodeId).widgets
    .find((w) => w.name === widgetName).value, { nodeId, widgetName });
}

/** Edits neg_start through the UI on the first pack node of a template and reports the graph before/after. */
async function editRedraw({ page, pageErrors }, request) {
  const listed = await templates(page, request.server);
  const workflow = listed[request.template];
  await loadWorkflow(page, workflow, request.template);
  const [target] = await graphStates(page);
  await frameNodes(page, [target.id]);
  await waitForGraphs(page);
  await page.waitForTimeout(300);
  const before = (await graphStates(page)).find((state) => state.id === target.id);
  // samplerOnly: no edit on the pack node first, so nothing but the sampler's own widget can trigger the redraw.
  const negStart = request.samplerOnly ? before.widgets.neg_start
    : await editWidget(page, target.id, "neg_start", request.value, request.vueNodes);
  const after = (await graphStates(page)).find((state) => state.id === target.id);
  let sampler = null;
  if (request.samplerCfg !== undefined) {
    // The patch node draws with the cfg of the KSampler it feeds: edit that too.
    const samplerId = await page.evaluate(() => window.app.graph.nodes.find((n) => n.type === "KSampler").id);
    await frameNodes(page, [target.id, samplerId]);
    const cfg = await editWidget(page, samplerId, "cfg", request.samplerCfg, request.vueNodes);
    const steps = request.samplerSteps === undefined ? null
      : await editWidget(page, samplerId, "steps", request.samplerSteps, request.vueNodes);
    sampler = { cfg, steps, ...(await graphStates(page)).find((state) => state.id === target.id) };
  }
  const strip = ({ pixels, ...rest }) => ({ ...rest });
  return {
    negStart, before: strip(before), after: strip(after), sampler: sampler && strip(sampler),
    pixelsChanged: before.pixels !== after.pixels, pageErrors,
  };
}

/** Loads request.template, frames its first pack node and waits for the graphs; returns that node's state. */
async function openAtFirstPackNode(page, request) {
  const listed = await templates(page, request.server);
  await loadWorkflow(page, listed[request.template], request.template);
  const [target] = await graphStates(page);
  await frameNodes(page, [target.id]);
  await waitForGraphs(page);
  return target;
}

/**
 * Types a value into neg_start of the first pack node of a template, as a user does: classic canvas, the canvas's
 * prompt; Vue nodes, the InputNumber's text field (select all, type, Enter). Reports the value kept, the value shown
 * and what the graph drew.
 */
async function typeWindowEdge({ page, pageErrors }, request) {
  const target = await openAtFirstPackNode(page, request);
  const typed = [];
  for (const value of request.values) {
    let shown;
    if (request.vueNodes) {
      const row = vueWidgetRow(page, target.id, "neg_start");
      const input = row.locator("input").first();
      await input.click();
      await input.press("Control+a");
      await input.pressSequentially(String(value));
      await input.press("Enter");
      await page.waitForTimeout(400);
      shown = await input.inputValue();
    } else {
      await editWidget(page, target.id, "neg_start", value, false);
      shown = await page.evaluate(({ nodeId }) => {
        const widget = window.app.graph.getNodeById(nodeId).widgets.find((w) => w.name === "neg_start");
        return Number(widget.value).toFixed(widget.options.precision ?? 3);  // as the canvas draws it
      }, { nodeId: target.id });
    }
    await page.waitForTimeout(300);
    const state = (await graphStates(page)).find((candidate) => candidate.id === target.id);
    typed.push({ typed: value, value: state.widgets.neg_start, shown, stepsLabel: state.drawn.stepsLabel });
  }
  return { typed, pageErrors };
}

/**
 * Clicks a number widget's arrow as a user does: classic canvas, the arrow drawn at either end of the widget;
 * Vue nodes, the InputNumber's increment/decrement button. Returns the widget's value after the click and the
 * value the node shows.
 */
async function clickArrow(page, nodeId, widgetName, direction, vueNodes) {
  if (vueNodes) {
    const row = vueWidgetRow(page, nodeId, widgetName);
    const button = row.locator(`.p-inputnumber-${direction > 0 ? "increment" : "decrement"}-button`).first();
    // At the widget's min or max the button is disabled: a click does nothing, as for a user.
    if (!/p-disabled/.test(await button.getAttribute("class"))) await button.click();
    await page.waitForTimeout(400);
    return { value: await page.evaluate(({ nodeId, widgetName }) => window.app.graph.getNodeById(nodeId).widgets
      .find((w) => w.name === widgetName).value, { nodeId, widgetName }),
    shown: Number(await row.locator("input").first().inputValue()) };
  } else {
    const point = await page.evaluate(({ nodeId, widgetName, direction }) => {
      const { app, LiteGraph } = window;
      const node = app.graph.getNodeById(nodeId);
      const widget = node.widgets.find((w) => w.name === widgetName);
      const inset = 22; // inside the arrow drawn 15-20 px from the widget's edge
      const nodeX = direction > 0 ? node.size[0] - inset : inset;
      const [x, y] = app.canvas.ds.convertOffsetToCanvas(
        [node.pos[0] + nodeX, node.pos[1] + widget.y + LiteGraph.NODE_WIDGET_HEIGHT / 2]);
      const rect = app.canvas.canvas.getBoundingClientRect();
      return { x: rect.left + x, y: rect.top + y };
    }, { nodeId, widgetName, direction });
    await page.mouse.click(point.x, point.y);
  }
  await page.waitForTimeout(400);
  const value = await page.evaluate(({ nodeId, widgetName }) => window.app.graph.getNodeById(nodeId).widgets
    .find((w) => w.name === widgetName).value, { nodeId, widgetName });
  return { value, shown: value }; // the canvas draws widget.value itself
}

/** neg_scale's arrows on the first pack node of a template: each click's value and what the graph drew. */
async function negScaleArrows({ page, pageErrors }, request) {
  const target = await openAtFirstPackNode(page, request);
  const clicks = [];
  for (const direction of request.directions) {
    const { value, shown } = await clickArrow(page, target.id, "neg_scale", direction, request.vueNodes);
    await page.waitForTimeout(200);
    const { drawn } = (await graphStates(page)).find((state) => state.id === target.id);
    clicks.push({ direction, value, shown, drawn });
  }
  return { start: target.widgets.neg_scale, clicks, pageErrors };
}

/** Changes widgets as the UI does (value, then the widget's callback) and removes links, on the first node of
 * each type named: edits [{type, widgets}], disconnect [{type, input}]. */
async function applyEdits(page, edits, disconnect) {
  await page.evaluate(({ edits, disconnect }) => {
    const { app } = window;
    const first = (type) => app.graph.nodes.find((node) => node.type === type);
    for (const { type, input } of disconnect ?? []) {
      const node = first(type);
      node.disconnectInput(node.inputs.findIndex((i) => i.name === input));
    }
    for (const { type, widgets } of edits ?? []) {
      const node = first(type);
      for (const [name, value] of Object.entries(widgets)) {
        const widget = node.widgets.find((w) => w.name === name);
        widget.value = value;
        widget.callback?.(value, app.canvas, node);
      }
    }
  }, { edits, disconnect });
  await page.waitForTimeout(500);
}

/**
 * Builds a small graph (or loads a template), changes widgets as the UI does (value, then the widget's callback)
 * and removes links; reports what each pack node's graph drew.
 * request.nodes: [{type, widgets}], request.links: [[from, output, to, input]] by index into nodes;
 * request.edits: [{type, widgets}] for the first node of that type; request.disconnect: [{type, input}].
 */
async function drawnAfter({ page, pageErrors }, request) {
  if (request.template) {
    const listed = await templates(page, request.server);
    await loadWorkflow(page, listed[request.template], request.template);
  } else {
    await page.evaluate(({ nodes, links }) => {
      const { app, LiteGraph } = window;
      app.graph.clear();
      const created = nodes.map(({ type, widgets }, i) => {
        const node = LiteGraph.createNode(type);
        node.pos = [40 + 420 * i, 80];
        app.graph.add(node);
        for (const [name, value] of Object.entries(widgets ?? {})) node.widgets.find((w) => w.name === name).value = value;
        return node;
      });
      for (const [from, output, to, input] of links) {
        const source = created[from];
        source.connect(source.outputs.findIndex((o) => o.name === output || o.type === output), created[to],
          created[to].inputs.findIndex((i) => i.name === input));
      }
    }, { nodes: request.nodes, links: request.links ?? [] });
  }
  await frameNodes(page);
  await waitForGraphs(page);
  await applyEdits(page, request.edits, request.disconnect);
  const states = (await graphStates(page)).map(({ pixels, ...rest }) => rest);
  return { states, pageErrors };
}

/** Types a query into the node search box (double-click on the empty canvas) and reports the listed nodes. */
async function nodeSearch({ page, pageErrors }, request) {
  await page.evaluate(() => window.app.graph.clear());
  const rect = await page.evaluate(() => {
    const r = window.app.canvas.canvas.getBoundingClientRect();
    return { x: r.left + r.width / 2, y: r.top + r.height / 2 };
  });
  const input = page.locator(".comfy-vue-node-search-box input, .p-autocomplete-input").first();
  // The canvas tells a double-click from two clicks by the time between them; on a loaded machine the two clicks can
  // arrive too far apart and no search box opens, so double-click again until it does.
  for (let attempt = 1; ; attempt++) {
    await page.mouse.dblclick(rect.x, rect.y);
    try {
      await input.waitFor({ timeout: 5000 });
      break;
    } catch (error) {
      if (attempt === 4) throw error;
    }
  }
  await input.fill(request.query);
  await page.waitForTimeout(1000);
  const listed = await page.evaluate(() => [...document.querySelectorAll(".p-autocomplete-option, [role=option]")]
    .map((option) => option.innerText.split("\n")[0].trim()).filter(Boolean));
  return { listed, pageErrors };
}

/** Screenshots of each pack node with its graph, for the README. */
async function screenshots({ page, pageErrors }, request) {
  mkdirSync(request.outDir, { recursive: true });
  const listed = await templates(page, request.server);
  const files = [];
  for (const { template, nodeType, file, withNeighbours, edits } of request.shots) {
    await loadWorkflow(page, listed[template], template);
    if (edits) await applyEdits(page, edits);
    const ids = await page.evaluate(({ nodeType, withNeighbours }) => {
      const node = window.app.graph.nodes.find((n) => n.type === nodeType);
      const ids = [node.id];
      if (withNeighbours) {
        for (const output of node.outputs) for (const linkId of output.links ?? []) {
          ids.push(window.app.graph.getLink(linkId).target_id);
        }
      }
      return ids;
    }, { nodeType, withNeighbours });
    const measure = () => page.evaluate((ids) => {
      const { app, LiteGraph } = window;
      const rect = app.canvas.canvas.getBoundingClientRect();
      const boxes = ids.map((id) => {
        const node = app.graph.getNodeById(id);
        const element = document.querySelector(`[data-node-id="${id}"]`);
        if (element) return element.getBoundingClientRect();
        // The classic canvas draws the node's source badge above its title: keep it in the picture.
        const badge = 1.6 * LiteGraph.NODE_TITLE_HEIGHT;
        const [x0, y0] = app.canvas.ds.convertOffsetToCanvas(
          [node.pos[0], node.pos[1] - LiteGraph.NODE_TITLE_HEIGHT - badge]);
        const [x1, y1] = app.canvas.ds.convertOffsetToCanvas([node.pos[0] + node.size[0], node.pos[1] + node.size[1]]);
        return { left: rect.left + x0, top: rect.top + y0, right: rect.left + x1, bottom: rect.top + y1 };
      });
      const left = Math.min(...boxes.map((b) => b.left)) - 12;
      const top = Math.min(...boxes.map((b) => b.top)) - 12;
      return { x: Math.max(0, left), y: Math.max(0, top),
        width: Math.max(...boxes.map((b) => b.right)) + 12 - Math.max(0, left),
        height: Math.max(...boxes.map((b) => b.bottom)) + 12 - Math.max(0, top) };
    }, ids);
    // Vue nodes can be taller on screen than node.size says: shrink until the nodes fit in the viewport.
    let scale = 1.25;
    let clip = null;
    for (let attempt = 0; attempt < 4; attempt++) {
      await frameNodes(page, ids, scale);
      await waitForGraphs(page);
      await page.waitForTimeout(600);
      clip = await measure();
      const room = VIEWPORT.height - 8 - clip.y;
      if (clip.height <= room) break;
      scale = (await page.evaluate(() => window.app.canvas.ds.scale)) * room / clip.height * 0.97;
    }
    const path = join(request.outDir, file);
    await page.screenshot({ path, clip });
    files.push({ file: path, graphs: (await graphStates(page)).map(({ pixels, widgets, ...rest }) => rest) });
  }
  return { files, pageErrors };
}

/** Builds the example workflows from workflow_specs.mjs with the real frontend; returns what it serializes. */
async function build({ page, pageErrors }) {
  const built = {};
  for (const spec of WORKFLOWS) {
    built[spec.file] = await page.evaluate((spec) => {
      const { app, LiteGraph } = window;
      app.graph.clear();
      const nodes = {};
      for (const { key, type, title, pos, size, widgets } of spec.nodes) {
        const node = LiteGraph.createNode(type);
        if (!node) throw new Error(`unknown node type ${type}`);
        if (title) node.title = title;
        node.pos = pos;
        for (const [name, value] of Object.entries(widgets ?? {})) {
          const widget = node.widgets.find((w) => w.name === name);
          if (!widget) throw new Error(`${type} has no widget ${name}`);
          widget.value = value;
        }
        app.graph.add(node);
        if (size) node.setSize([size[0], Math.max(size[1], node.computeSize()[1])]);
        nodes[key] = node;
      }
      for (const [from, output, to, input] of spec.links) {
        const source = nodes[from];
        const slot = typeof output === "number" ? output : source.outputs.findIndex((o) => o.name === output);
        const targetSlot = nodes[to].inputs.findIndex((i) => i.name === input);
        if (slot < 0 || targetSlot < 0) throw new Error(`bad link ${from}.${output} -> ${to}.${input}`);
        source.connect(slot, nodes[to], targetSlot);
      }
      const note = LiteGraph.createNode("Note");
      note.pos = spec.note.pos;
      note.widgets[0].value = spec.note.text;
      app.graph.add(note);
      note.setSize(spec.note.size);
      app.canvas.ds.scale = 0.75;
      app.canvas.ds.offset = [20, 60];
      const workflow = app.graph.serialize();
      workflow.extra = { ...(workflow.extra ?? {}), ds: { scale: 0.75, offset: [20, 60] } };
      return workflow;
    }, spec);
  }
  return { built, pageErrors };
}

/**
 * Runs a template twice from the page, as a user queues it: first with its patch as the ordinary negative (neg_scale
 * = cfg - 1 over the whole run, so no ∅: `empty` disconnected), then with its KSampler at another cfg. The patch,
 * unchanged, is cached, so the second run fails while the KSampler samples. Reports where the error points: the
 * app's last execution error, the dialogs shown, the nodes outlined.
 */
async function errorAtItsNode({ page, pageErrors }, request) {
  const listed = await templates(page, request.server);
  await loadWorkflow(page, listed[request.template], request.template);
  const ids = await page.evaluate(({ cfg }) => {
    const { app, api } = window;
    window.negguideEvents = [];
    for (const type of ["execution_success", "execution_error"]) {
      app.api?.addEventListener?.(type, ({ detail }) => window.negguideEvents.push({ type, detail }));
    }
    const patch = app.graph.nodes.find((node) => node.type === "NegativeGuidance");
    const sampler = patch.getOutputNodes(0).find((node) => node.type === "KSampler");
    const set = (node, name, value) => {
      const widget = node.widgets.find((w) => w.name === name);
      widget.value = value;
      widget.callback?.(value, app.canvas, node);
    };
    patch.disconnectInput(patch.inputs.findIndex((input) => input.name === "empty"));
    for (const [name, value] of Object.entries({ neg_scale: cfg - 1, neg_start: 0, neg_end: 1 })) set(patch, name, value);
    set(sampler, "cfg", cfg);
    for (const node of app.graph.nodes) {
      if (node.type === "KSampler") set(node, "steps", 3);
      if (node.type === "EmptyLatentImage") set(node, "batch_size", 1);
    }
    return { patch: patch.id, sampler: sampler.id };
  }, { cfg: request.cfg });
  const run = async (count) => {
    await page.evaluate(() => window.app.queuePrompt(0));
    await page.waitForFunction((n) => window.negguideEvents.length >= n, count, { timeout: 180000 });
    return page.evaluate((n) => window.negguideEvents[n - 1].type, count);
  };
  const first = await run(1);
  await page.evaluate(({ sampler, cfg }) => {
    const node = window.app.graph.getNodeById(sampler);
    const widget = node.widgets.find((w) => w.name === "cfg");
    widget.value = cfg;
    widget.callback?.(cfg, window.app.canvas, node);
  }, { sampler: ids.sampler, cfg: request.otherCfg });
  const second = await run(2);
  await page.waitForTimeout(800);
  const shown = await page.evaluate(() => {
    const { app } = window;
    const error = app.lastExecutionError;
    const outlined = app.graph.nodes.filter((node) => {
      try {
        return !!node.strokeStyles?.executionError?.call(node);
      } catch {
        return false;
      }
    }).map((node) => node.id);
    const dialogs = [...document.querySelectorAll(".p-dialog")].filter((dialog) => dialog.offsetParent !== null)
      .map((dialog) => dialog.innerText.slice(0, 800));
    return { error: error && { node_id: String(error.node_id), node_type: error.node_type,
      message: error.exception_message }, outlined, dialogs };
  });
  return { ...ids, first, second, ...shown, pageErrors };
}

const SCENARIOS = { "load-templates": loadTemplates, "missing-node-control": missingNodeControl,
  "edit-redraw": editRedraw, "type-window-edge": typeWindowEdge, "neg-scale-arrows": negScaleArrows, "drawn-after": drawnAfter,
  "node-search": nodeSearch, "error-at-its-node": errorAtItsNode, screenshots, build };

const request = await readStdin();
const browser = await chromium.connectOverCDP(request.cdp);
const context = await browser.newContext({ viewport: VIEWPORT, deviceScaleFactor: request.deviceScaleFactor ?? 1 });
try {
  const app = await openApp(context, request.server);
  const result = await SCENARIOS[request.scenario](app, request);
  process.stdout.write(JSON.stringify(result) + "\n");
} finally {
  await context.close();
  await browser.close();
}
process.exit(0);
