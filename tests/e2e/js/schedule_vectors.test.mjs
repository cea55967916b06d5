// js/schedule.js against w(p) as nodes/schedule.py computes it (tests/vectors/schedule_vectors.json).
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import * as schedule from "../../../js/schedule.js";

const vectors = JSON.parse(readFileSync(new URL("../../vectors/schedule_vectors.json", import.meta.url), "utf8"));

test("constants match the Python core", () => {
  assert.equal(schedule.EDGE_TOLERANCE, vectors.constants.EDGE_TOLERANCE);
  assert.deepEqual(schedule.WINDOW_UNITS, vectors.constants.WINDOW_UNITS);
  assert.deepEqual(schedule.RAMPS, vectors.constants.RAMPS);
  assert.equal(schedule.NEG_SCALE_FOLLOWS_CFG, vectors.constants.NEG_SCALE_FOLLOWS_CFG);
});

for (const c of vectors.cases) {
  test(`window ${c.start}-${c.end} ${c.ramp} ${c.ramp_width}`, () => {
    const window = new schedule.Window(c.start, c.end, c.ramp, c.ramp_width);
    assert.equal(window.fadesIn, c.fades_in);
    assert.equal(window.fadesOut, c.fades_out);
    assert.equal(window.isEmpty, c.is_empty);
    c.progress.forEach((p, i) => {
      const got = window.weight(p);
      // Same IEEE arithmetic in the same order: equal to the last bit in practice; allow rounding noise.
      assert.ok(Math.abs(got - c.weight[i]) <= 1e-12, `w(${p}) = ${got}, Python says ${c.weight[i]}`);
    });
  });
}

test("samplePoints puts a sample on both sides of each hard edge", () => {
  const window = new schedule.Window(0.1667, 0.5, "hard", 0);
  const points = schedule.samplePoints(window, 100);
  const weights = points.map((p) => window.weight(p));
  const rises = weights.filter((w, i) => i && w !== weights[i - 1]);
  assert.equal(rises.length, 2);
  const startIndex = weights.findIndex((w) => w === 1);
  assert.ok(points[startIndex] - points[startIndex - 1] < 1e-6, "the rise is vertical, not spread over a column");
});

