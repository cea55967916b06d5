// js/schedule.js validationProblem against the sentences nodes/validation.py gives, and nodeName against the node
// names they start with (tests/vectors/validation_vectors.json): the graph shows on the node what the server would say.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import { nodeName, validationProblem } from "../../../js/schedule.js";

const cases = JSON.parse(readFileSync(new URL("../../vectors/validation_vectors.json", import.meta.url), "utf8"));

for (const c of cases) {
  test(`${c.node} ${JSON.stringify(c.values)} empty=${c.empty_connected}`, () => {
    assert.equal(nodeName(c.display_name, c.unique_id, c.title), c.node);
    assert.equal(validationProblem(c.node, c.values, c.empty_connected, c.follows_cfg), c.problem);
  });
}
