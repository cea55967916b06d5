// The pack's templates as a user meets them, in the real frontend. Reads {scenario, cdp, server} as JSON on stdin,
// attaches to the test session's Chromium (tests/e2e/browser.py), and prints one line of JSON:
//   dialog:     Templates → the pack's category: each card's title, description and picture as displayed, and
//               every template file request with its HTTP status;
//   node-boxes: each template loaded as the dialog loads it: every node's box on the screen, title bar included
//               (the DOM element in Nodes 2.0, the canvas geometry in the classic renderer).
// tests/e2e/test_templates.py holds the assertions.

import { chromium } from "playwright-core";

const PACK = "comfyui-negative-guidance";

async function readStdin() {
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  return JSON.parse(Buffer.concat(chunks).toString("utf8"));
}

async function dialog(page) {
  const fileRequests = [];
  page.on("response", (response) => {
    const url = decodeURIComponent(response.url());
    if (url.includes(`/workflow_templates/${PACK}/`)) fileRequests.push({ url, status: response.status() });
  });
  await page.evaluate(() => window.app.extensionManager.command.execute("Comfy.BrowseTemplates"));
  await page.getByText(PACK, { exact: true }).first().click({ timeout: 30000 });
  const cards = page.locator("[data-testid^='template-workflow-']");
  await cards.first().waitFor({ timeout: 30000 });
  // Pictures load lazily; give them time to arrive (or to fail over to the frontend's placeholder).
  await page.waitForFunction(() => [...document.querySelectorAll("[data-testid^='template-workflow-'] img")]
    .every((image) => image.complete), null, { timeout: 30000 }).catch(() => {});
  await page.waitForTimeout(500);
  const shown = await page.evaluate(() => [...document.querySelectorAll("[data-testid^='template-workflow-']")]
    .map((card) => ({
      name: card.dataset.testid.replace("template-workflow-", ""),
      title: card.querySelector("h3")?.innerText ?? "",
      titleCut: ((title) => !!title && (title.scrollWidth > title.clientWidth || title.scrollHeight > title.clientHeight))(
        card.querySelector("h3")),
      description: card.querySelector("p")?.innerText ?? "",
      pictures: [...card.querySelectorAll("img")].map((image) => ({
        src: decodeURIComponent(image.src), width: image.complete ? image.naturalWidth : 0 })),
    })));
  return { cards: shown, fileRequests };
}

async function nodeBoxes(page, server) {
  const listing = await (await page.request.get(`${server}/api/workflow_templates`)).json();
  const boxes = {};
  for (const name of listing[PACK]) {
    const url = `${server}/api/workflow_templates/${PACK}/${encodeURIComponent(name)}.json`;
    const workflow = await (await page.request.get(url)).json();
    await page.evaluate(async ({ workflow, name }) => {
      await window.app.loadGraphData(workflow, true, true, name);
    }, { workflow, name });
    await page.waitForTimeout(1500);
    boxes[name] = await page.evaluate(() => {
      const { app, LiteGraph } = window;
      const canvas = app.canvas.canvas.getBoundingClientRect();
      return app.graph.nodes.map((node) => {
        const element = document.querySelector(`[data-node-id="${node.id}"]`);
        if (element) {
          const box = element.getBoundingClientRect();
          return { id: node.id, dom: true, box: [box.left, box.top, box.right, box.bottom] };
        }
        const [left, top] = app.canvas.ds.convertOffsetToCanvas([node.pos[0], node.pos[1] - LiteGraph.NODE_TITLE_HEIGHT]);
        const [right, bottom] = app.canvas.ds.convertOffsetToCanvas([node.pos[0] + node.size[0], node.pos[1] + node.size[1]]);
        return { id: node.id, dom: false, box: [canvas.left + left, canvas.top + top, canvas.left + right, canvas.top + bottom] };
      });
    });
  }
  return { boxes };
}

const SCENARIOS = { dialog, "node-boxes": nodeBoxes };

const request = await readStdin();
const browser = await chromium.connectOverCDP(request.cdp);
const context = await browser.newContext({ viewport: { width: 1600, height: 1000 } });
try {
  const page = await context.newPage();
  await page.goto(request.server, { waitUntil: "domcontentloaded" });
  await page.waitForFunction(() => window.app?.graph && window.app?.extensionManager?.command
    && window.LiteGraph?.registered_node_types?.NegativeGuidance, null, { timeout: 120000 });
  await page.waitForTimeout(1000);  // extensions register after the node definitions arrive
  const result = await SCENARIOS[request.scenario](page, request.server);
  process.stdout.write(JSON.stringify(result) + "\n");
} finally {
  await context.close();
  await browser.close();
}
process.exit(0);
