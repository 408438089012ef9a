// Requests without a user's token — the routes reachable without one and any request without Authorization —
// are rate-limited per client address (so are API keys no cache knows), and telemetry reports per claimed
// deployment and address, with 429 and Retry-After, before they touch D1.
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

test("telemetry reports are limited per claimed deployment and address, before anything is read or written", async () => {
  const deployment = "dep_0123456789abcdef01234567";
  const rejects = async () => (await app.db.prepare("SELECT COUNT(*) AS n FROM telemetry_rejects").first()).n;
  const before = await rejects();
  const report = (address) =>
    app.report(deployment, { hello: "world" }, { signature: `v1=${"0".repeat(64)}`, headers: from(address) });
  // All from one address: the bucket of (deployment, address) refuses the rest.
  const answers = await Promise.all(Array.from({ length: 8 }, () => report("198.51.100.1")));
  const read = answers.filter((r) => r.status === 401);
  const limited = answers.filter((r) => r.status === 429);
  assert.equal(read.length + limited.length, 8);
  assert.ok(read.length >= 3 && read.length <= 5, `${read.length} got through`);
  for (const r of limited) assert.equal(r.body.error.code, "rate_limited");
  assert.equal(await rejects(), before + read.length, "a report refused by the rate left no row");
  // Someone flooding reports that claim a real agent's deployment does not use up the agent's own allowance:
  // the agent reports from another address, and its reports are still read (and here, refused as unsigned).
  assert.equal((await report("198.51.100.200")).status, 401);
});

test("reports claiming a new made-up deployment each time count against the sender's address", async () => {
  const rejects = async () => (await app.db.prepare("SELECT COUNT(*) AS n FROM telemetry_rejects").first()).n;
  const before = await rejects();
  const id = () => `dep_${crypto.getRandomValues(Buffer.alloc(12)).toString("hex")}`;
  const answers = await Promise.all(
    Array.from({ length: 12 }, () => app.report(id(), { hello: "world" }, { signature: `v1=${"0".repeat(64)}`, headers: from("198.51.100.77") })),
  );
  const read = answers.filter((r) => r.status === 401);
  const limited = answers.filter((r) => r.status === 429);
  assert.equal(read.length + limited.length, 12, answers.map((r) => r.status).join(","));
  assert.ok(read.length >= 5 && read.length <= 7, `${read.length} were looked up`);
  for (const r of read) assert.equal(r.body.error.code, "unknown_deployment");
  assert.equal(await rejects(), before + read.length, "the limited ones left no row");
});

test("made-up API keys count against the sender's address: each one would cost a D1 read", async () => {
  const key = () => `whk_${crypto.getRandomValues(Buffer.alloc(24)).toString("hex")}`;
  const invoke = (address) =>
    app.request("POST", "/v1/invoke/agt_0123456789abcdef01234567", {
      headers: { Authorization: `Bearer ${key()}`, ...from(address) },
      json: { protocol: "invoke/v1", input: { messages: [{ role: "user", content: "hi" }] } },
    });
  const answers = await Promise.all(Array.from({ length: 12 }, () => invoke("192.0.2.77")));
  const unknown = answers.filter((r) => r.status === 401);
  const limited = answers.filter((r) => r.status === 429);
  assert.equal(unknown.length + limited.length, 12, answers.map((r) => r.status).join(","));
  assert.ok(unknown.length >= 5 && unknown.length <= 7, `${unknown.length} were looked up`);
  for (const r of unknown) assert.equal(r.body.error.code, "invalid_api_key");
  for (const r of limited) assert.equal(r.body.error.code, "rate_limited");
  // Another address is not affected.
  expectError(assert, await invoke("192.0.2.78"), 401, "invalid_api_key");
});
