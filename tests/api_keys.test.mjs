// API keys: shown once, stored as a hash, good for the invoke routes of their owner (optionally one agent),
// dead the moment they are revoked.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { startLocalCloudflare } from "../local-cloudflare/server.mjs";
import { startControlPlane, deployVars, expectError } from "./support/harness.mjs";
import { invokeBody } from "./support/agents.mjs";

let lcf, app, alice, bob, agentA, agentB, bobsAgent;
before(async () => {
  lcf = await startLocalCloudflare();
  app = await startControlPlane({ vars: deployVars(lcf, "workers_dev") });
  alice = await app.token("user_alice_keys");
  bob = await app.token("user_bob_keys");
  agentA = await deployed(alice, "key-agent-a");
  agentB = await deployed(alice, "key-agent-b");
  bobsAgent = await deployed(bob, "bobs-agent");
});
after(async () => {
  await app?.close();
  await lcf?.close();
});

async function deployed(token, name) {
  const agent = (await app.createAgent(token, { name })).body;
  const dep = await app.settled(token, agent.id, (await app.deploy(token, agent.id)).body.id);
  assert.equal(dep.status, "active");
  return agent;
}

test("a key is returned once, stored only as its SHA-256, and listed without its secret", async () => {
  const created = await app.createApiKey(alice, { name: "ci pipeline" });
  assert.equal(created.status, 201, created.text);
  const { key, id, prefix } = created.body;
  assert.match(key, /^whk_[0-9a-f]{48}$/);
  assert.match(id, /^key_[0-9a-f]{24}$/);
  assert.equal(prefix, key.slice(0, 12));
  assert.equal(created.body.agentId, null);

  const row = await app.db.prepare("SELECT * FROM api_keys WHERE id = ?").bind(id).first();
  assert.equal(row.key_hash, createHash("sha256").update(key).digest("hex"));
  assert.ok(!JSON.stringify(row).includes(key.slice(12)), "no column holds the secret part of the key");

  const listed = await app.listApiKeys(alice);
  assert.equal(listed.status, 200);
  const entry = listed.body.apiKeys.find((k) => k.id === id);
  assert.deepEqual(Object.keys(entry).sort(), ["agentId", "createdAt", "id", "lastUsedAt", "name", "prefix", "revokedAt"]);
  assert.ok(!listed.text.includes(key.slice(12)));
  assert.ok(!(await app.listApiKeys(bob)).body.apiKeys.some((k) => k.id === id), "keys are per user");
});

test("a key invokes its owner's agents (JSON and SSE), and nothing else", async () => {
  const { key, id } = (await app.createApiKey(alice, { name: "invoker" })).body;
  const res = await app.invoke(key, agentA.id, invokeBody("by key"));
  assert.equal(res.status, 200, res.text);
  assert.equal(res.body.output.text, "by key");
  const streamed = await app.invokeStream(key, agentB.id, invokeBody("streamed by key"));
  assert.equal(streamed.status, 200);
  assert.equal(streamed.events.at(-1).event, "done");

  expectError(assert, await app.invoke(key, bobsAgent.id, invokeBody("x")), 404, "agent_not_found");
  expectError(assert, await app.listAgents(key), 403, "api_key_not_allowed");
  expectError(assert, await app.me(key), 403, "api_key_not_allowed");
  expectError(assert, await app.createApiKey(key, { name: "key minting keys" }), 403, "api_key_not_allowed");
  expectError(assert, await app.deploy(key, agentA.id), 403, "api_key_not_allowed");

  let used;
  for (let i = 0; i < 50 && !used; i++) {
    used = (await app.listApiKeys(alice)).body.apiKeys.find((k) => k.id === id).lastUsedAt;
    if (!used) await new Promise((r) => setTimeout(r, 20));
  }
  assert.equal(typeof used, "number", "the key's last use is recorded");
  const row = await app.db.prepare("SELECT api_key_id FROM invocations WHERE id = ?").bind(res.headers.get("X-Trace-Id")).first();
  assert.equal(row.api_key_id, id, "metering names the key");
});

test("a key scoped to one agent cannot invoke another", async () => {
  const scoped = await app.createApiKey(alice, { name: "only A", agentId: agentA.id });
  assert.equal(scoped.status, 201, scoped.text);
  assert.equal(scoped.body.agentId, agentA.id);
  assert.equal((await app.invoke(scoped.body.key, agentA.id, invokeBody("ok"))).status, 200);
  expectError(assert, await app.invoke(scoped.body.key, agentB.id, invokeBody("x")), 403, "api_key_scope_mismatch");
  expectError(assert, await app.invoke(scoped.body.key, bobsAgent.id, invokeBody("x")), 403, "api_key_scope_mismatch");
  expectError(assert, await app.createApiKey(alice, { name: "foreign", agentId: bobsAgent.id }), 404, "agent_not_found");
  expectError(assert, await app.createApiKey(alice, { name: "bad", agentId: "nope" }), 400, "validation_failed");
  expectError(assert, await app.createApiKey(alice, { name: "" }), 400, "validation_failed");
  expectError(assert, await app.createApiKey(alice, { name: "x", userId: "usr_x" }), 400, "invalid_body");
});

test("revoking a key stops it at once; only its owner can revoke it", async () => {
  const { key, id } = (await app.createApiKey(alice, { name: "short-lived" })).body;
  assert.equal((await app.invoke(key, agentA.id, invokeBody("alive"))).status, 200);
  expectError(assert, await app.revokeApiKey(bob, id), 404, "api_key_not_found");
  assert.equal((await app.invoke(key, agentA.id, invokeBody("still alive"))).status, 200, "bob could not revoke it");
  assert.equal((await app.revokeApiKey(alice, id)).status, 204);
  expectError(assert, await app.invoke(key, agentA.id, invokeBody("dead")), 401, "invalid_api_key");
  assert.equal((await app.revokeApiKey(alice, id)).status, 204, "revoking twice is harmless");
  const listed = (await app.listApiKeys(alice)).body.apiKeys.find((k) => k.id === id);
  assert.equal(typeof listed.revokedAt, "number");
  expectError(assert, await app.revokeApiKey(alice, "key_000000000000000000000000"), 404, "api_key_not_found");
  expectError(assert, await app.revokeApiKey(alice, "garbage"), 404, "api_key_not_found");
});

test("malformed and unknown keys are refused without revealing anything", async () => {
  expectError(assert, await app.invoke("whk_short", agentA.id, invokeBody("x")), 401, "invalid_api_key");
  expectError(assert, await app.invoke(`whk_${"0".repeat(48)}`, agentA.id, invokeBody("x")), 401, "invalid_api_key");
});

test("live keys per user are bounded", async () => {
  const carol = await app.token("user_carol_keys");
  for (let i = 0; i < 25; i++) assert.equal((await app.createApiKey(carol, { name: `k${i}` })).status, 201);
  expectError(assert, await app.createApiKey(carol, { name: "one more" }), 409, "api_key_limit_reached");
  const first = (await app.listApiKeys(carol)).body.apiKeys.at(-1);
  assert.equal((await app.revokeApiKey(carol, first.id)).status, 204);
  assert.equal((await app.createApiKey(carol, { name: "after revoking" })).status, 201);
});
