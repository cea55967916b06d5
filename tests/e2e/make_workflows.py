"""Regenerates what the real frontend derives from the example workflows.

    scripts/host.sh python tests/e2e/make_workflows.py          API twins (workflows/api/) from the UI files
    scripts/host.sh python tests/e2e/make_workflows.py --ui     first rebuild the UI files from workflow_specs.mjs
    scripts/host.sh python tests/e2e/make_workflows.py --docs   also refresh the README screenshots in docs/

The API twins are exactly what `app.graphToPrompt()` gives for each UI file served as a template;
tests/e2e/test_browser.py regenerates them the same way and fails when the committed files differ.
--ui also gives each UI file a saved view that opens the whole graph clear of the frontend's menus. After a change
to a workflow, redraw its Templates picture with `scripts/host.sh python scripts/make_thumbnails.py`.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from e2e.browser import Chromium, browser_tools_missing  # noqa: E402
from e2e.comfy_server import API_WORKFLOWS_DIR, PACK_ROOT, WORKFLOWS_DIR, ComfyServer  # noqa: E402

DOCS_DIR = PACK_ROOT / "docs"
TITLE_HEIGHT = 30  # LiteGraph.NODE_TITLE_HEIGHT in the classic canvas
# Where a saved workflow opens: a 1600x1000 window, the graph starting right of the side bar (60 px) and below the
# tab bar and the breadcrumb / Run bar (about 130 px, more with a banner over them).
OPEN_VIEWPORT = (1600, 1000)
VIEW_MARGIN = (90, 160)
# (template, node type, file, include the nodes it feeds): the README's screenshots.
README_SHOTS = [
    {"template": "01 Delayed negative", "nodeType": "NegativeGuidance",
     "file": "schedule_graph_patch.png", "withNeighbours": True},
    {"template": "02 Guider, negative fades in", "nodeType": "NegativeGuidanceGuider",
     "file": "schedule_graph_guider_fade_in.png", "withNeighbours": False},
    {"template": "03 SDXL, ramped window", "nodeType": "NegativeGuidanceGuider",
     "file": "schedule_graph_guider_sdxl.png", "withNeighbours": False},
]


def node_boxes(workflow: dict) -> list[tuple[int, float, float, float, float]]:
    """(id, left, top, right, bottom) of every node as the canvas draws it: the title bar sits above `pos`."""
    return [(node["id"], node["pos"][0], node["pos"][1] - TITLE_HEIGHT, node["pos"][0] + node["size"][0],
             node["pos"][1] + node["size"][1]) for node in workflow["nodes"]]


def opening_view(workflow: dict) -> dict:
    """The saved view (extra.ds): the whole graph at the largest scale up to 0.8 that fits OPEN_VIEWPORT, its top
    left corner at VIEW_MARGIN, clear of the menu, tab and side bars that the frontend draws over the canvas."""
    boxes = node_boxes(workflow)
    left, top = min(box[1] for box in boxes), min(box[2] for box in boxes)
    width, height = max(box[3] for box in boxes) - left, max(box[4] for box in boxes) - top
    room = [OPEN_VIEWPORT[0] - VIEW_MARGIN[0] - 20, OPEN_VIEWPORT[1] - VIEW_MARGIN[1] - 20]
    scale = math.floor(min(0.8, room[0] / width, room[1] / height) * 100) / 100
    return {"scale": scale, "offset": [round(VIEW_MARGIN[0] / scale - left, 1), round(VIEW_MARGIN[1] / scale - top, 1)]}


def write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ui", action="store_true", help="rebuild the UI workflows from workflow_specs.mjs first")
    parser.add_argument("--docs", action="store_true", help="refresh the screenshots in docs/")
    options = parser.parse_args()
    missing = browser_tools_missing()
    if missing:
        print(f"cannot run the browser: {missing}; run bash scripts/setup_e2e.sh", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="negguide-make-") as base, ComfyServer(Path(base)) as server, \
            Chromium() as browser:
        server.set_setting("Comfy.VueNodes.Enabled", False)
        if options.ui:
            for name, workflow in browser.run("build", server.url)["built"].items():
                workflow["extra"]["ds"] = opening_view(workflow)
                write_json(WORKFLOWS_DIR / name, workflow)
                print(f"wrote {WORKFLOWS_DIR / name}")
        loaded = browser.run("load-templates", server.url)
        for name, result in loaded["results"].items():
            write_json(API_WORKFLOWS_DIR / f"{name}.json", result["prompt"])
            print(f"wrote {API_WORKFLOWS_DIR / name}.json")
        if options.docs:
            for vue_nodes, suffix in ((False, ""), (True, "_nodes2")):
                server.set_setting("Comfy.VueNodes.Enabled", vue_nodes)
                shots = [{**shot, "file": shot["file"].replace(".png", f"{suffix}.png")} for shot in README_SHOTS]
                for item in browser.run("screenshots", server.url, outDir=str(DOCS_DIR), shots=shots,
                                        deviceScaleFactor=1.5)["files"]:
                    print(f"wrote {item['file']}")
            server.set_setting("Comfy.VueNodes.Enabled", False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
