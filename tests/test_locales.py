"""The interface in the user's language (ComfyUI's custom-node i18n: locales/<lang>/nodeDefs.json, served at /i18n)
and the node help pages (<WEB_DIRECTORY>/docs/<NodeId>.md, <NodeId>/<lang>.md), checked against the live schemas:
a new node, input or output cannot ship untranslated or undocumented."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LOCALES = sorted(path.parent.name for path in (ROOT / "locales").glob("*/nodeDefs.json"))
HELP_DIR = ROOT / "js" / "docs"  # WEB_DIRECTORY is ./js


def make_locales():
    spec = importlib.util.spec_from_file_location("negguide_make_locales", ROOT / "scripts" / "make_locales.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def schemas(host):
    return {schema.node_id: schema for schema in make_locales().node_schemas()}


def test_english_and_chinese_are_there():
    assert {"en", "zh"} <= set(LOCALES)


def test_english_says_what_the_schemas_say(schemas):
    """The frontend shows the locale file's English in place of the schema's: it must be the same text."""
    committed = json.loads((ROOT / "locales" / "en" / "nodeDefs.json").read_text())
    assert committed == make_locales().english(), "run scripts/host.sh python scripts/make_locales.py"


@pytest.mark.parametrize("lang", LOCALES)
def test_every_node_input_and_output_has_an_entry(schemas, lang):
    entries = json.loads((ROOT / "locales" / lang / "nodeDefs.json").read_text())
    assert set(entries) == set(schemas), f"{lang}: nodes without an entry {set(schemas) - set(entries)}, " \
                                         f"entries for no node {set(entries) - set(schemas)}"
    for node_id, schema in schemas.items():
        entry = entries[node_id]
        assert entry.get("display_name") and entry.get("description"), f"{lang} {node_id}"
        assert set(entry["inputs"]) == {i.id for i in schema.inputs}, f"{lang} {node_id}: inputs"
        for i in schema.inputs:
            assert entry["inputs"][i.id].get("name"), f"{lang} {node_id}.{i.id}: name"
            assert bool(entry["inputs"][i.id].get("tooltip")) == bool(i.tooltip), f"{lang} {node_id}.{i.id}: tooltip"
        assert set(entry["outputs"]) == {str(n) for n in range(len(schema.outputs))}, f"{lang} {node_id}: outputs"
        for n, output in enumerate(schema.outputs):
            translated = entry["outputs"][str(n)]
            assert translated.get("name") and bool(translated.get("tooltip")) == bool(output.tooltip), \
                f"{lang} {node_id} output {n}"


@pytest.mark.parametrize("lang", [None, *[lang for lang in LOCALES if lang != "en"]])
def test_every_node_has_a_help_page_naming_each_input(schemas, lang):
    for node_id, schema in schemas.items():
        page = HELP_DIR / (f"{node_id}.md" if lang is None else f"{node_id}/{lang}.md")
        assert page.is_file(), f"no help page {page.relative_to(ROOT)}"
        text = page.read_text()
        assert text.startswith("# "), page
        for i in schema.inputs:
            assert f"`{i.id}`" in text, f"{page.relative_to(ROOT)} does not describe input `{i.id}`"
