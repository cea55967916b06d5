"""js/schedule.js must draw the curve nodes/schedule.py computes.

The Python core writes w(p) for a set of windows and progress values into tests/vectors/schedule_vectors.json;
node's test runner checks js/schedule.js against that file (tests/e2e/js/schedule_vectors.test.mjs).
Regenerate after changing the schedule: `scripts/host.sh python tests/test_js_vectors.py`.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:  # run as a script
    sys.path.insert(0, str(TESTS))

from support import PACK_ROOT, load_pure_module  # noqa: E402

VECTORS_FILE = TESTS / "vectors" / "schedule_vectors.json"
VALIDATION_FILE = TESTS / "vectors" / "validation_vectors.json"
JS_TESTS = [TESTS / "e2e" / "js" / "schedule_vectors.test.mjs", TESTS / "e2e" / "js" / "validation_vectors.test.mjs"]

# Windows that exercise every branch of Window.weight: edges at 0 and 1 (no ramp there), edges a user types
# rounded (0.1667 for step 5 of 30), values within EDGE_TOLERANCE of an edge, empty and inverted windows.
WINDOWS = [
    (0.0, 1.0, "hard", 0.0),
    (0.1667, 0.5, "hard", 0.0),
    (0.1667, 0.5, "linear", 0.1),
    (0.1667, 0.5, "smoothstep", 0.05),
    (0.0, 0.5, "linear", 0.2),
    (0.3, 1.0, "smoothstep", 0.3),
    (0.0, 1.0, "linear", 0.25),
    (0.0004, 0.9996, "linear", 0.1),
    (0.2, 0.2, "hard", 0.0),
    (0.2, 0.2002, "linear", 0.1),
    (0.9998, 1.0, "hard", 0.0),
    (0.999, 1.0, "hard", 0.0),
    (0.5, 0.25, "hard", 0.0),
    (0.25, 0.75, "linear", 0.0),
    (0.25, 0.75, "hard", 0.5),
    (0.1, 0.9, "smoothstep", 0.4),
]


def progress_values(start: float, end: float, ramp_width: float) -> list[float]:
    grid = [i / 240 for i in range(241)] + [i / 30 for i in range(31)] + [i / 7 for i in range(8)]
    edges = [start, end, start + ramp_width, end - ramp_width]
    near = [e + d for e in edges for d in (-6e-4, -5e-4, -4e-4, -1e-9, 0.0, 1e-9, 4e-4, 5e-4, 6e-4)]
    return sorted({p for p in grid + near if -0.01 <= p <= 1.01})


def build_vectors() -> dict:
    schedule = load_pure_module("nodes/schedule.py")
    cases = []
    for start, end, ramp, ramp_width in WINDOWS:
        window = schedule.Window(start, end, ramp, ramp_width)
        progress = progress_values(start, end, ramp_width)
        cases.append({"start": start, "end": end, "ramp": ramp, "ramp_width": ramp_width,
                      "fades_in": window.fades_in, "fades_out": window.fades_out, "is_empty": window.is_empty,
                      "progress": progress, "weight": [window.weight(p) for p in progress]})
    return {
        "generated_by": "tests/test_js_vectors.py from nodes/schedule.py",
        "constants": {"EDGE_TOLERANCE": schedule.EDGE_TOLERANCE, "WINDOW_UNITS": list(schedule.WINDOW_UNITS),
                      "RAMPS": list(schedule.RAMPS), "NEG_SCALE_FOLLOWS_CFG": schedule.NEG_SCALE_FOLLOWS_CFG},
        "cases": cases,
    }


# Settings for validation.inputs_problem: each problem it names (the graph shows the same sentence on the node), values
# the UI rounds, "follow cfg" values, and unknown (linked) values.
VALID = {"cfg": 7.5, "neg_scale": -1.0, "neg_start": 0.0, "neg_end": 1.0, "window_unit": "steps", "ramp": "hard",
         "ramp_width": 0.0}
VALIDATION_CASES = [
    ({}, True), ({}, False), ({}, None), ({"neg_scale": -0.9}, False), ({"neg_scale": -0.1, "cfg": 1.0}, False),
    ({"neg_start": 0.8, "neg_end": 0.2}, True), ({"neg_start": 0.1667, "neg_end": 0.1666}, None),
    ({"neg_start": 0.4, "neg_end": 0.6, "ramp": "linear", "ramp_width": 0.15}, True),
    ({"neg_start": 0.0, "neg_end": 0.6, "ramp": "smoothstep", "ramp_width": 0.61}, True),
    ({"neg_start": 0.5, "neg_end": 1.0, "ramp": "linear", "ramp_width": 0.5}, True),
    ({"neg_start": 0.2, "neg_end": 0.7, "ramp": "linear", "ramp_width": 0.25}, True),
    ({"neg_scale": 3.0}, False), ({"neg_scale": 6.5}, False), ({"neg_scale": 0.0, "cfg": 1.0}, False),
    ({"neg_scale": 0.0}, False), ({"neg_start": 0.1667, "neg_end": 0.5}, False),
    ({"neg_start": 0.1667, "neg_end": 0.5}, True), ({"cfg": 1.0, "neg_scale": 2.0, "neg_end": 0.5}, False),
    ({"cfg": None, "neg_scale": 3.0}, False), ({"neg_start": None}, False),
    ({"cfg": 1000.0}, True), ({"cfg": -0.5}, True), ({"neg_scale": 500.0}, True), ({"neg_scale": -1.5}, True),
    ({"neg_start": 1.5}, True), ({"neg_end": -0.25}, True), ({"ramp_width": 1.2}, True),
    ({"window_unit": "minutes"}, True), ({"ramp": "cosine"}, True), ({"neg_start": 0.33333333}, True),
    # timestep_percent compares edges exactly: a start of 0.0003 already leaves the first evaluation out.
    ({"neg_start": 0.0003, "window_unit": "timestep_percent"}, False), ({"neg_start": 0.0003}, False),
    # "zero" is ComfyUI's math.isclose, not a fixed 1e-6.
    ({"cfg": 1.0000018, "neg_scale": 0.0000009}, False), ({"cfg": 1.0000018, "neg_scale": 0.0}, False),
]


def build_validation_vectors() -> list:
    validation = load_pure_module("nodes/validation.py")
    cases = []
    # Each message names its node as the canvas shows it (validation.node_name; js/schedule.js nodeName).
    for node_id, unique_id, title, follows_cfg in (("NegativeGuidanceGuider", 12, None, True),
                                                   ("ExtraNegative", "7:3", "no red", False)):
        node = validation.node_name(node_id, unique_id, title)
        for changes, empty in VALIDATION_CASES + [({"neg_scale": -1.0}, None), ({"neg_scale": 2.0}, None)]:
            values = {**VALID, **changes}
            problem = validation.inputs_problem(node, *values.values(), empty, follows_cfg=follows_cfg)
            cases.append({"node": node, "display_name": validation.DISPLAY_NAMES[node_id], "unique_id": unique_id,
                          "title": title, "follows_cfg": follows_cfg, "values": values, "empty_connected": empty,
                          "problem": problem})
    return cases


def render(vectors) -> str:
    return json.dumps(vectors, indent=1) + "\n"


def test_vector_file_is_what_the_python_core_computes():
    assert VECTORS_FILE.read_text() == render(build_vectors()), (
        "tests/vectors/schedule_vectors.json is stale: regenerate it with "
        "`scripts/host.sh python tests/test_js_vectors.py` and check js/schedule.js still passes")


def test_validation_vector_file_is_what_the_python_core_says():
    assert VALIDATION_FILE.read_text() == render(build_validation_vectors()), (
        "tests/vectors/validation_vectors.json is stale: regenerate it with `scripts/host.sh python "
        "tests/test_js_vectors.py`")


def test_js_schedule_matches_python_vectors():
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is needed to check js/schedule.js (Debian package nodejs)")
    result = subprocess.run([node, "--test", *map(str, JS_TESTS)], cwd=PACK_ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "# fail 0" in result.stdout


if __name__ == "__main__":
    VECTORS_FILE.parent.mkdir(exist_ok=True)
    VECTORS_FILE.write_text(render(build_vectors()))
    VALIDATION_FILE.write_text(render(build_validation_vectors()))
    print(f"wrote {VECTORS_FILE} and {VALIDATION_FILE}")
