// docs/openapi.yaml is the contract: it must parse, and every $ref in it must resolve. (Native tests check that
// its routes and error codes match the router and ErrorCode.)
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import path from "node:path";
import { parse } from "yaml";
import { ROOT } from "./support/harness.mjs";

test("the OpenAPI document parses and every $ref resolves", () => {
  const doc = parse(readFileSync(path.join(ROOT, "docs/openapi.yaml"), "utf8"));
  assert.equal(doc.openapi, "3.1.0");
  const refs = [];
  const walk = (node) => {
    if (Array.isArray(node)) return node.forEach(walk);
    if (node && typeof node === "object") {
      if (typeof node.$ref === "string") refs.push(node.$ref);
      Object.values(node).forEach(walk);
    }
  };
  walk(doc);
  assert.ok(refs.length > 50);
  for (const ref of refs) {
    const target = ref.replace(/^#\//, "").split("/").reduce((at, key) => at?.[key], doc);
    assert.ok(target, `${ref} does not resolve`);
  }
});
