"""The example workflows as ComfyUI's Templates browser shows them.

ComfyUI (0.3.75 and 0.33) lists a pack's templates from its workflows/ folder by file name, and the frontend
(1.32.9 and 1.49) shows each one with the file name as its title, the same name as its description (dashes and
underscores read as spaces) and `<name>.jpg` from the same folder as its picture; it offers no other title,
description or order for a custom node pack's templates. So the file names are the titles, numbered in the order
to read them, and every template has its picture (drawn by scripts/make_thumbnails.py).
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
import urllib.parse
import urllib.request

from itertools import combinations

import pytest
from PIL import Image, ImageChops, ImageStat

from e2e.comfy_server import PACK_FOLDER, PACK_ROOT, ui_workflow_files

UI_FILES = ui_workflow_files()
# A card shows its title on one line, about 28 characters wide (the dialog test measures it).
LONGEST_TITLE = 28
TITLE = re.compile(r"^(\d\d) [^_-]+$")  # "01 Delayed negative": no dashes or underscores
UI_SCRIPT = PACK_ROOT / "tests" / "e2e" / "templates_ui.mjs"


def thumbnail_url(server_url: str, name: str) -> str:
    return f"{server_url}/api/workflow_templates/{PACK_FOLDER}/{urllib.parse.quote(name)}.jpg"


def run_in_browser(chromium, server_url: str, scenario: str) -> dict:
    """One scenario of tests/e2e/templates_ui.mjs against the server, in the session's Chromium."""
    request = {"scenario": scenario, "cdp": chromium.endpoint, "server": server_url}
    result = subprocess.run(["node", str(UI_SCRIPT)], input=json.dumps(request), cwd=PACK_ROOT,
                            capture_output=True, text=True, timeout=240)
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    assert result.returncode == 0 and lines, f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return json.loads(lines[-1])


@pytest.fixture(scope="module")
def listed(comfy_server) -> list[str]:
    return comfy_server.get("/workflow_templates")[PACK_FOLDER]


def test_template_names_read_as_numbered_titles(listed):
    assert sorted(listed) == [path.stem for path in UI_FILES]
    numbers = []
    for name in sorted(listed):
        match = TITLE.match(name)
        assert match, f"{name!r} does not read as a title"
        assert len(name) <= LONGEST_TITLE, f"{name!r} is cut in the card's one-line title"
        numbers.append(int(match.group(1)))
    assert numbers == list(range(1, len(listed) + 1)), "the numbers give the reading order: 01, 02, ... without gaps"


def test_every_template_has_its_picture_served(comfy_server, listed):
    for name in listed:
        with urllib.request.urlopen(thumbnail_url(comfy_server.url, name), timeout=30) as response:
            assert response.status == 200
            assert response.headers["Content-Type"] == "image/jpeg"
            picture = response.read()
        assert picture.startswith(b"\xff\xd8"), f"{name}.jpg is not a JPEG"
        assert 10_000 < len(picture) < 200_000, f"{name}.jpg: {len(picture)} bytes"


def thumbnail_script():
    """scripts/make_thumbnails.py as a module."""
    spec = importlib.util.spec_from_file_location("negguide_make_thumbnails", PACK_ROOT / "scripts" / "make_thumbnails.py")
    thumbnails = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = thumbnails  # its dataclass looks its module up there
    spec.loader.exec_module(thumbnails)
    return thumbnails


# Frontend 1.49 lays a "Node graph" chip over the top left of each card (about 40 % of its width and 12 % of its
# height); nothing the picture says may sit there.
CHIP_CORNER = (0.0, 0.0, 0.45, 0.14)  # left, top, right, bottom as fractions of the picture, from the top left


def test_pictures_leave_the_chip_corner_empty():
    for ui_file in UI_FILES:
        picture = Image.open(ui_file.with_suffix(".jpg")).convert("L")
        width, height = picture.size
        corner = picture.crop((int(CHIP_CORNER[0] * width), int(CHIP_CORNER[1] * height),
                               int(CHIP_CORNER[2] * width), int(CHIP_CORNER[3] * height)))
        low, high = corner.getextrema()
        assert high - low < 24, f"{ui_file.stem}.jpg draws under the frontend's chip (grey {low}-{high} there)"


def test_picture_labels_cover_no_bar():
    """Every caption, label and legend of a picture sits clear of the bars and of the other labels (the s⁺ label
    of 06 once sat behind the Flux negative's bars)."""
    thumbnails = thumbnail_script()
    for ui_file in UI_FILES:
        figure = thumbnails.compose(thumbnails.picture_data(ui_file))
        renderer = figure.canvas.get_renderer()
        labels = [text.get_window_extent(renderer) for text in figure.texts]
        bars = []
        for axes in figure.axes:
            if axes.get_legend():
                labels.append(axes.get_legend().get_window_extent(renderer))
            bars += [patch.get_window_extent(renderer) for patch in axes.patches if patch.get_height() > 0]
            labels += [text.get_window_extent(renderer) for text in axes.texts]
        for label in labels:
            assert not [bar for bar in bars if label.overlaps(bar)], f"{ui_file.stem}: a label covers a bar"
        for first, second in combinations(labels, 2):
            assert not first.overlaps(second), f"{ui_file.stem}: two labels overlap"
        thumbnails.plt.close(figure)


def test_pictures_show_the_workflows_as_they_are(tmp_path):
    """scripts/make_thumbnails.py draws each picture from its workflow and stores what it drew (per sampler: steps,
    s⁺, each negative's s·w per step, evaluations per step; titles) in the JPEG's comment. That must be exactly what
    the script computes from the workflow now: a picture left stale by a workflow edit fails here however few pixels
    it changes (a window one step longer changes 0.6 % of the pixels, a mean difference of 0.8/255, which a pixel
    bound loose enough for other font renderers would let through).

    The fresh drawing is also compared pixel by pixel, for changes of the drawing code itself. That bound stays coarse
    (mean difference < 2/255): the same data drawn by other matplotlib and FreeType releases differs in the
    anti-aliasing of every glyph. On the machine that drew the pictures the redraw is identical."""
    thumbnails = thumbnail_script()
    redraw = "run scripts/host.sh python scripts/make_thumbnails.py"
    for ui_file in UI_FILES:
        committed_file = Image.open(ui_file.with_suffix(".jpg"))
        drawn_from = committed_file.info.get("comment")
        assert drawn_from, f"{ui_file.stem}.jpg does not say what it shows: {redraw}"
        assert json.loads(drawn_from) == thumbnails.picture_data(ui_file), (f"{ui_file.stem}.jpg is out of date: "
                                                                            f"{redraw}")
        fresh = tmp_path / f"{ui_file.stem}.jpg"
        thumbnails.draw(ui_file, fresh)
        committed = committed_file.convert("RGB")
        redrawn = Image.open(fresh).convert("RGB")
        assert committed.size == redrawn.size == (512, 512)
        difference = max(ImageStat.Stat(ImageChops.difference(committed, redrawn)).mean)
        assert difference < 2.0, (f"{ui_file.stem}.jpg was drawn differently (mean difference {difference:.1f}/255): "
                                  f"{redraw}")


def test_templates_dialog_shows_titles_and_pictures(comfy_server, chromium, listed):
    """The real frontend's Templates browser, opened on the pack's category."""
    comfy_server.set_setting("Comfy.VueNodes.Enabled", False)
    shown = run_in_browser(chromium, comfy_server.url, "dialog")
    cards = {card["name"]: card for card in shown["cards"]}
    # In their numbered order, whatever order the server's directory listing gives.
    assert [card["name"] for card in shown["cards"]] == sorted(listed)
    # The frontend fetches each picture and shows it from a blob: URL; its placeholder is a PNG of another size.
    fetched = {item["url"].rsplit("/", 1)[-1]: item["status"] for item in shown["fileRequests"]}
    for name, card in cards.items():
        assert card["title"] == name and not card["titleCut"], card
        assert fetched.get(f"{name}.jpg") == 200, (name, fetched)
        [picture] = card["pictures"]
        assert "default-template" not in picture["src"] and picture["width"] == 512, card
    assert all(status == 200 for status in fetched.values()), fetched


@pytest.mark.parametrize("renderer", ["classic", "nodes2"], indirect=True)
def test_no_node_covers_another_when_a_template_opens(renderer, comfy_server, chromium):
    """Boxes on the screen, title bars included, as each renderer lays the template out (Nodes 2.0 draws nodes
    larger than the classic canvas and rescales the layout when it opens a classic workflow)."""
    boxes = run_in_browser(chromium, comfy_server.url, "node-boxes")["boxes"]
    assert sorted(boxes) == [path.stem for path in UI_FILES]
    for name, nodes in boxes.items():
        if renderer:
            assert all(node["dom"] for node in nodes), f"{name}: a node has no Nodes 2.0 element"
        overlapping = [(a["id"], b["id"]) for a, b in combinations(nodes, 2)
                       if a["box"][0] < b["box"][2] - 1 and b["box"][0] < a["box"][2] - 1
                       and a["box"][1] < b["box"][3] - 1 and b["box"][1] < a["box"][3] - 1]
        assert not overlapping, f"{'nodes2' if renderer else 'classic'} {name}: nodes overlap (ids) {overlapping}"
