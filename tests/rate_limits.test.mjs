// Requests without a user's token — the routes reachable without one and any request without Authorization —
// are rate-limited per client address, and telemetry reports per claimed deployment, with 429 and Retry-After,
// before they touch D1.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { deployVars, expectError, startControlPlane } from "./support/harness.mjs";

let app;
before(async () => {
  // Deploy settings (no provider is ever called here) so telemetry is checked as it is in production.
  const nowhere = { origin: "http://127.0.0.1:9", apiBase: "http://127.0.0.1:9/client/v4", apiToken: "t", accountId: "a", namespace: "n" };
  app = await startControlPlane({ vars: { ...deployVars(nowhere), UNAUTHENTICATED_RATE_LIMIT: "5/1", TELEMETRY_RATE_LIMIT: "3/1" } });
});
after(() => app?.close());

const from = (address) => ({ "CF-Connecting-IP": address });

test("per client address: a burst, then 429 with Retry-After; other addresses and users with tokens carry on", async () => {
  // Twelve at once: a burst of 5 (and at most a refill or two, however slow this machine) gets through.
  const answers = await Promise.all(Array.from({ length: 12 }, () => app.request("GET", "/health", { headers: from("203.0.113.1") })));
  const ok = answers.filter((r) => r.status === 200).length;
  assert.ok(ok >= 5 && ok <= 7, `${ok} got through`);
  const limited = answers.find((r) => r.status === 429);
  const err = expectError(assert, limited, 429, "rate_limited");
  assert.equal(err.retryable, true);
  assert.match(limited.headers.get("Retry-After"), /^[1-9]\d*$/);
  // Any route, without a token, counts against the same address.
  expectError(assert, await app.request("GET", "/v1/agents", { headers: from("203.0.113.1") }), 429, "rate_limited");
  assert.equal((await app.request("GET", "/health", { headers: from("203.0.113.2") })).status, 200);
  const token = await app.token("rate-limited-neighbour");
  assert.equal((await app.request("GET", "/v1/me", { token, headers: from("203.0.113.1") })).status, 200);
});

test("telemetry reports are limited per claimed deployment before anything is read or written", async () => {
  const deployment = "dep_0123456789abcdef01234567";
  const rejects = async () => (await app.db.prepare("SELECT COUNT(*) AS n FROM telemetry_rejects").first()).n;
  const before = await rejects();
  const report = (address) =>
    app.report(deployment, { hello: "world" }, { signature: `v1=${"0".repeat(64)}`, headers: from(address) });
  // Each from a new address, so only the deployment's bucket can refuse them.
  const answers = await Promise.all(Array.from({ length: 8 }, (_, i) => report(`198.51.100.${i}`)));
  const read = answers.filter((r) => r.status === 401);
  const limited = answers.filter((r) => r.status === 429);
  assert.equal(read.length + limited.length, 8);
  assert.ok(read.length >= 3 && read.length <= 5, `${read.length} got through`);
  for (const r of limited) assert.equal(r.body.error.code, "rate_limited");
  assert.equal(await rejects(), before + read.length, "a report refused by the rate left no row");
});
