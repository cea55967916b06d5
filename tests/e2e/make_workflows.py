"""Regenerates what the real frontend derives from the example workflows.

    scripts/host.sh python tests/e2e/make_workflows.py          API twins (workflows/api/) from the UI files
    scripts/host.sh python tests/e2e/make_workflows.py --ui     first rebuild the UI files from workflow_specs.mjs
    scripts/host.sh python tests/e2e/make_workflows.py --docs   also refresh the README screenshots in docs/

The API twins are exactly what `app.graphToPrompt()` gives for each UI file served as a template;
tests/e2e/test_browser.py regenerates them the same way and fails when the committed files differ.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from e2e.browser import Chromium, browser_tools_missing  # noqa: E402
from e2e.comfy_server import API_WORKFLOWS_DIR, PACK_ROOT, WORKFLOWS_DIR, ComfyServer  # noqa: E402

DOCS_DIR = PACK_ROOT / "docs"
# (template, node type, file, include the nodes it feeds): the README's screenshots.
README_SHOTS = [
    {"template": "01_sd15_ksampler_delayed_negative", "nodeType": "NegativeGuidance",
     "file": "schedule_graph_patch.png", "withNeighbours": True},
    {"template": "02_custom_sampler_guider_fade_in", "nodeType": "NegativeGuidanceGuider",
     "file": "schedule_graph_guider_fade_in.png", "withNeighbours": False},
    {"template": "03_sdxl_guider", "nodeType": "NegativeGuidanceGuider",
     "file": "schedule_graph_guider_sdxl.png", "withNeighbours": False},
]


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
