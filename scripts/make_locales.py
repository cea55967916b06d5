"""Writes locales/en/nodeDefs.json from the live node schemas (ComfyUI's custom-node i18n convention).

    scripts/host.sh python scripts/make_locales.py

ComfyUI serves every `locales/<lang>/nodeDefs.json` of a pack at /i18n, and the frontend shows those strings in
place of the schema's: the English file must therefore say exactly what the schemas say (tests/test_locales.py
checks it and that every other language has an entry for every node, input and output). Run it after changing a
display name, description, tooltip or input; then translate what changed in the other languages' files.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

PACK_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PACK_ROOT / "tests"))

import support  # noqa: E402


def node_schemas() -> list:
    extension = support.pack_module("nodes.extension")
    return [node.GET_SCHEMA() for node in asyncio.run(asyncio.run(extension.comfy_entrypoint()).get_node_list())]


def english_entry(schema) -> dict:
    """One node's entry as the frontend reads it: nodeDefs.<NodeId>.{display_name, description, inputs.<name>.
    {name, tooltip}, outputs.<index>.{name, tooltip}}."""
    entry = {"display_name": schema.display_name, "description": schema.description,
             "inputs": {i.id: {"name": i.id, **({"tooltip": i.tooltip} if i.tooltip else {})} for i in schema.inputs},
             "outputs": {}}
    for index, output in enumerate(schema.outputs):
        name = output.display_name or output.io_type
        entry["outputs"][str(index)] = {"name": name, **({"tooltip": output.tooltip} if output.tooltip else {})}
    return entry


def english() -> dict:
    return {schema.node_id: english_entry(schema) for schema in sorted(node_schemas(), key=lambda s: s.node_id)}


def main() -> int:
    path = PACK_ROOT / "locales" / "en" / "nodeDefs.json"
    path.write_text(json.dumps(english(), indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
