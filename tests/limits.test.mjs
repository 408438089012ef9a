// Entitlements, the per-user request limit (UserGate) under concurrency, and the operator API that changes them.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { startLocalCloudflare } from "../local-cloudflare/server.mjs";
import { startControlPlane, deployVars, expectError } from "./support/harness.mjs";
import { invokeBody } from "./support/agents.mjs";

const ADMIN = randomBytes(24).toString("hex");
let lcf, app;
before(async () => {
  lcf = await startLocalCloudflare();
  app = await startControlPlane({ vars: { ...deployVars(lcf, "workers_dev"), ADMIN_TOKEN: ADMIN } });
});
after(async () => {
  await app?.close();
  await lcf?.close();
});

/** A fresh user with one deployed template agent. */
async function customer(subject) {
  const token = await app.token(subject);
  const me = (await app.me(token)).body;
  const agent = (await app.createAgent(token, { name: `${subject.replaceAll("_", "-")}-agent` })).body;
  const dep = await app.settled(token, agent.id, (await app.deploy(token, agent.id)).body.id);
  assert.equal(dep.status, "active", JSON.stringify(dep.error));
  return { token, userId: me.id, agent };
}

const setEntitlements = (userId, json) => app.admin("PUT", `/users/${userId}/entitlements`, ADMIN, json);

async function meteredRows(userId, expected) {
  for (let i = 0; i < 100; i++) {
    const { results } = await app.db.prepare("SELECT outcome, counted FROM invocations WHERE user_id = ?").bind(userId).all();
    if (results.length >= expected) return results;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`metering rows for ${userId} never reached ${expected}`);
}

test("with N requests left, exactly N of M concurrent calls succeed; the rest get 429 with headers", async () => {
  const { token, userId, agent } = await customer("user_concurrency");
  const set = await setEntitlements(userId, { requestsPerPeriod: 5 });
  assert.equal(set.status, 200, set.text);
  assert.equal(set.body.entitlements.requestsPerPeriod, 5);

  const replies = await Promise.all(Array.from({ length: 12 }, (_, i) => app.invoke(token, agent.id, invokeBody(`call ${i}`))));
  const ok = replies.filter((r) => r.status === 200);
  const limited = replies.filter((r) => r.status === 429);
  assert.equal(ok.length, 5, replies.map((r) => r.status).join(","));
  assert.equal(limited.length, 7);
  assert.deepEqual(ok.map((r) => Number(r.headers.get("X-RateLimit-Remaining"))).sort(), [0, 1, 2, 3, 4]);
  for (const res of limited) {
    const err = expectError(assert, res, 429, "request_limit_exceeded");
    assert.equal(err.retryable, true);
    assert.equal(err.details.entitlement, "requestsPerPeriod");
    assert.equal(err.details.limit, 5);
    assert.equal(res.headers.get("X-RateLimit-Limit"), "5");
    assert.equal(res.headers.get("X-RateLimit-Remaining"), "0");
    const retryAfter = Number(res.headers.get("Retry-After"));
    const reset = Number(res.headers.get("X-RateLimit-Reset"));
    assert.ok(retryAfter >= 1 && retryAfter <= 31 * 24 * 3600, `Retry-After ${retryAfter}`);
    assert.ok(Math.abs(reset - (Date.now() / 1000 + retryAfter)) < 5, "Retry-After points at the reset");
  }

  // Clearing the override restores the tier's limit at once; the five used requests stay counted.
  const cleared = await setEntitlements(userId, { requestsPerPeriod: null });
  assert.equal(cleared.body.entitlements.requestsPerPeriod, 1000);
  assert.deepEqual(cleared.body.overrides, {});
  const again = await app.invoke(token, agent.id, invokeBody("after the raise"));
  assert.equal(again.status, 200, again.text);
  assert.equal(again.headers.get("X-RateLimit-Remaining"), String(1000 - 6));

  const rows = await meteredRows(userId, 13);
  assert.equal(rows.filter((r) => r.outcome === "ok" && r.counted === 1).length, 6);
  assert.equal(rows.filter((r) => r.outcome === "request_limit_exceeded" && r.counted === 0).length, 7);
  const usage = await app.admin("GET", `/users/${userId}/usage`, ADMIN);
  assert.equal(usage.status, 200, usage.text);
  assert.match(usage.body.periodKey, /^\d{4}-\d{2}$/);
  assert.deepEqual(usage.body.invocations.byOutcome, { ok: 6, request_limit_exceeded: 7 });
  assert.equal(usage.body.invocations.counted, 6);
  assert.equal(usage.body.remaining.requests, 994);
});

test("a flood of refused calls writes a bounded number of rows; each is still refused", async () => {
  const { token, userId, agent } = await customer("user_refusal_flood");
  assert.equal((await setEntitlements(userId, { requestsPerPeriod: 1 })).status, 200);
  assert.equal((await app.invoke(token, agent.id, invokeBody("the one allowed"))).status, 200);
  for (let i = 0; i < 25; i++) expectError(assert, await app.invoke(token, agent.id, invokeBody(`refused ${i}`)), 429, "request_limit_exceeded");
  // The rows written in the background, then a pause to be sure no more come.
  await meteredRows(userId, 11);
  await new Promise((r) => setTimeout(r, 300));
  const { results } = await app.db.prepare("SELECT outcome, suppressed FROM invocations WHERE user_id = ?").bind(userId).all();
  const refused = results.filter((r) => r.outcome === "request_limit_exceeded");
  assert.equal(refused.length, 10, "10 rows a minute per user; the other 15 refusals are counted into the next row");
  assert.ok(refused.every((r) => r.suppressed === 0), "nothing was suppressed before these rows");
  // Another user refused at the same time still gets rows of their own.
  const other = await customer("user_refusal_other");
  assert.equal((await setEntitlements(other.userId, { requestsPerPeriod: 0 })).status, 200);
  expectError(assert, await app.invoke(other.token, other.agent.id, invokeBody("refused")), 429, "request_limit_exceeded");
  assert.equal((await meteredRows(other.userId, 1)).length, 1);
});

test("entitlements are enforced on create-agent, deploy and invoke", async () => {
  const { token, userId, agent } = await customer("user_entitled");

  assert.equal((await setEntitlements(userId, { maxAgents: 1 })).status, 200);
  const refused = expectError(assert, await app.createAgent(token, { name: "one-too-many" }), 403, "agent_limit_reached");
  assert.equal(refused.details.limit, 1);
  assert.equal((await setEntitlements(userId, { maxAgents: null })).status, 200);

  assert.equal((await setEntitlements(userId, { streaming: false })).status, 200);
  const noStream = await app.request("POST", `/v1/invoke/${agent.id}/stream`, { token, json: invokeBody("x") });
  assert.equal(expectError(assert, noStream, 403, "not_entitled").details.entitlement, "streaming");
  assert.equal((await app.invoke(token, agent.id, invokeBody("json still works"))).status, 200);

  // Runtime gating: at deploy, and again at invoke for what was deployed before the entitlement changed.
  assert.equal((await setEntitlements(userId, { streaming: null, runtimeProviders: ["agentcore"] })).status, 200);
  const deploy = expectError(assert, await app.deploy(token, agent.id), 403, "not_entitled");
  assert.equal(deploy.details.entitlement, "runtimeProviders");
  const invoke = expectError(assert, await app.invoke(token, agent.id, invokeBody("x")), 403, "not_entitled");
  assert.equal(invoke.details.entitlement, "runtimeProviders");
  assert.equal((await setEntitlements(userId, { runtimeProviders: null })).status, 200);
  assert.equal((await app.invoke(token, agent.id, invokeBody("back"))).status, 200);
});

test("tier changes take effect on the next call and show in /v1/me", async () => {
  const { token, userId } = await customer("user_upgrade");
  const res = await app.admin("PUT", `/users/${userId}/tier`, ADMIN, { tier: "pro" });
  assert.equal(res.status, 200, res.text);
  assert.equal(res.body.tier, "pro");
  assert.equal(res.body.entitlements.requestsPerPeriod, 100000);
  const me = (await app.me(token)).body;
  assert.equal(me.tier, "pro");
  assert.deepEqual(me.entitlements, res.body.entitlements);
});

test("the operator API: its own token, clear refusals, nothing changed by bad input, every call audited", async () => {
  const { token, userId } = await customer("user_audited");
  const userRow = () => app.db.prepare("SELECT tier, entitlements_json FROM users WHERE id = ?").bind(userId).first();
  const before = await userRow();
  const auditCount = async () => (await app.db.prepare("SELECT COUNT(*) AS n FROM admin_audit").first()).n;
  const audited = await auditCount();

  expectError(assert, await app.admin("GET", `/users/${userId}/usage`), 401, "missing_credentials");
  expectError(assert, await app.admin("GET", `/users/${userId}/usage`, "wrong-token"), 401, "invalid_admin_token");
  expectError(assert, await app.admin("GET", `/users/${userId}/usage`, ADMIN.slice(0, -1)), 401, "invalid_admin_token");
  expectError(assert, await app.admin("PUT", `/users/${userId}/tier`, token, { tier: "enterprise" }), 401, "invalid_admin_token");
  expectError(assert, await app.admin("PUT", `/users/${userId}/tier`, ADMIN, { tier: "gold" }), 400, "validation_failed");
  expectError(assert, await app.admin("PUT", `/users/${userId}/tier`, ADMIN, { tier: "pro", extra: 1 }), 400, "validation_failed");
  expectError(assert, await app.admin("PUT", `/users/${userId}/entitlements`, ADMIN, {}), 400, "invalid_body");
  expectError(assert, await app.admin("PUT", `/users/${userId}/entitlements`, ADMIN, { requestsPerPeriod: -1 }), 400, "invalid_body");
  expectError(assert, await app.admin("PUT", `/users/${userId}/entitlements`, ADMIN, { requestPerPeriod: 5 }), 400, "invalid_body");
  expectError(assert, await app.admin("PUT", `/users/${userId}/entitlements`, ADMIN, { runtimeProviders: ["lambda"] }), 400, "validation_failed");
  expectError(assert, await app.admin("PUT", "/users/usr_000000000000000000000000/tier", ADMIN, { tier: "pro" }), 404, "user_not_found");
  expectError(assert, await app.admin("GET", "/users/not-a-user/usage", ADMIN), 404, "user_not_found");
  expectError(assert, await app.admin("GET", `/users/${userId}/usage?period=2026-13`, ADMIN), 400, "invalid_query");
  assert.deepEqual(await userRow(), before, "no refused call changed the user");

  const ok = await app.admin("PUT", `/users/${userId}/entitlements`, ADMIN, { requestsPerPeriod: 42, streaming: false });
  assert.equal(ok.status, 200, ok.text);
  assert.deepEqual(ok.body.overrides, { requestsPerPeriod: 42, streaming: false });
  const merged = await app.admin("PUT", `/users/${userId}/entitlements`, ADMIN, { streaming: null, maxAgents: 7 });
  assert.deepEqual(merged.body.overrides, { requestsPerPeriod: 42, maxAgents: 7 }, "unmentioned fields are kept");

  const { results } = await app.db.prepare("SELECT action, target_user_id, status, outcome, change_json FROM admin_audit ORDER BY rowid").all();
  assert.equal(results.length - audited, 15, "every call, allowed or not, is audited");
  const mine = results.slice(audited);
  assert.deepEqual(mine[1], { action: "get_usage", target_user_id: userId, status: 401, outcome: "invalid_admin_token", change_json: null });
  assert.equal(mine.at(-1).outcome, "ok");
  assert.deepEqual(JSON.parse(mine.at(-1).change_json), { streaming: null, maxAgents: 7 });
  assert.ok(!JSON.stringify(results).includes(ADMIN), "the operator token is never stored");
});

test("without ADMIN_TOKEN the operator API is off; a short one is a configuration error", async () => {
  const off = await startControlPlane();
  try {
    expectError(assert, await off.admin("GET", "/users/usr_000000000000000000000000/usage", "anything"), 503, "admin_not_configured");
  } finally {
    await off.close();
  }
  const weak = await startControlPlane({ vars: { ADMIN_TOKEN: "short" } });
  try {
    expectError(assert, await weak.health(), 500, "server_misconfigured");
  } finally {
    await weak.close();
  }
});
