// Secrets under a key that can rotate: every sealed value records its key id; with a second key configured as
// current and the first kept as previous, the re-seal job moves every value to the new key; the first key can
// then be removed and every secret is still there — a deploy injects the right values, calls to existing
// deployments are still signed, their telemetry still verifies.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { tmpdir } from "node:os";
import path from "node:path";
import { startLocalCloudflare } from "../local-cloudflare/server.mjs";
import { deployVars, expectError, startControlPlane } from "./support/harness.mjs";
import { invokeBody } from "./support/agents.mjs";

const ADMIN = randomBytes(24).toString("hex");
const KEY_1 = randomBytes(32).toString("base64");
const KEY_2 = `hex:${randomBytes(32).toString("hex")}`;
const VALUE = "sk-rotation-4b1d9e0c-never-lost";
// Answers whether the secret it was given is the one the test set (never the value itself).
const AGENT = `export default { async fetch(req, env) {
  const body = await req.json();
  const text = env.OPENAI_KEY === ${JSON.stringify(VALUE)} ? "secret matches" : "secret differs";
  return Response.json({ protocol: "invoke/v1", output: { text }, sessionId: body.sessionId });
} };`;

let lcf, dir, app;
before(async () => {
  lcf = await startLocalCloudflare();
  dir = mkdtempSync(path.join(tmpdir(), "key-rotation-d1-"));
});
after(async () => {
  await app?.close();
  await lcf?.close();
  rmSync(dir, { recursive: true, force: true });
});

/** The control plane over the same D1 files, with `keys` as its key configuration. */
async function controlPlane(keys, migrate) {
  await app?.close();
  app = await startControlPlane({
    vars: { ...deployVars(lcf, "workers_dev"), ADMIN_TOKEN: ADMIN, ...keys },
    miniflare: { d1Persist: dir },
    migrate,
  });
  return app;
}

const sealedValues = async () =>
  [
    ...(await app.db.prepare("SELECT value_sealed AS v FROM agent_secrets").all()).results,
    ...(await app.db.prepare("SELECT telemetry_secret_sealed AS v FROM deployments").all()).results,
    ...(await app.db.prepare("SELECT gateway_secret_sealed AS v FROM deployments").all()).results,
  ].map((r) => r.v);
const keyIdOf = (sealed) => sealed.split(".")[1];

test("seal with key 1, add key 2, re-seal, remove key 1: every secret is still there", async () => {
  // Key 1 alone.
  await controlPlane({ TELEMETRY_SECRETS_ENCRYPTION_KEY: KEY_1 }, true);
  let token = await app.token("user_rotation");
  const agent = (await app.createAgent(token, { name: "rotating" })).body;
  assert.equal((await app.putSecret(token, agent.id, "OPENAI_KEY", VALUE)).status, 200);
  const first = await app.settled(token, agent.id, (await app.deploy(token, agent.id, { moduleCode: AGENT })).body.id);
  assert.equal(first.status, "active", JSON.stringify(first.error));
  assert.equal((await app.invoke(token, agent.id, invokeBody("hi"))).body.output.text, "secret matches");
  const underKey1 = await sealedValues();
  assert.equal(underKey1.length, 3);
  const key1Id = keyIdOf(underKey1[0]);
  assert.ok(underKey1.every((v) => v.startsWith(`v2.${key1Id}.`)), underKey1.join(" "));

  // Key 2 current, key 1 previous: everything still opens; the re-seal moves it all to key 2.
  await controlPlane({ TELEMETRY_SECRETS_ENCRYPTION_KEY: KEY_2, PREVIOUS_ENCRYPTION_KEYS: KEY_1 }, false);
  token = await app.token("user_rotation");
  assert.equal((await app.invoke(token, agent.id, invokeBody("hi"))).body.output.text, "secret matches");
  expectError(assert, await app.admin("POST", "/secrets/reseal", "wrong-token"), 401, "invalid_admin_token");
  const run = await app.admin("POST", "/secrets/reseal", ADMIN);
  assert.equal(run.status, 200, run.text);
  assert.equal(run.body.resealed, 3);
  assert.equal(run.body.remaining, 0);
  assert.deepEqual(run.body.unreadable, []);
  assert.notEqual(run.body.currentKeyId, key1Id);
  assert.ok(!run.text.includes(VALUE));
  const underKey2 = await sealedValues();
  assert.ok(underKey2.every((v) => v.startsWith(`v2.${run.body.currentKeyId}.`)), underKey2.join(" "));
  const audit = await app.db.prepare("SELECT status FROM admin_audit WHERE action = 'reseal_secrets' ORDER BY at").all();
  assert.deepEqual(audit.results.map((r) => r.status), [401, 200]);

  // Key 1 removed: the existing deployment is still reached, a new deploy still injects the right value.
  await controlPlane({ TELEMETRY_SECRETS_ENCRYPTION_KEY: KEY_2 }, false);
  token = await app.token("user_rotation");
  assert.equal((await app.invoke(token, agent.id, invokeBody("hi"))).body.output.text, "secret matches");
  const second = await app.settled(token, agent.id, (await app.deploy(token, agent.id, { moduleCode: AGENT })).body.id);
  assert.equal(second.status, "active", JSON.stringify(second.error));
  const res = await app.invoke(token, agent.id, invokeBody("hi"));
  assert.equal(res.headers.get("X-Deployment-Id"), second.id);
  assert.equal(res.body.output.text, "secret matches");
});

test("a key removed before the re-seal: values are named as unreadable, never destroyed, and a deploy says why", async () => {
  await controlPlane({ TELEMETRY_SECRETS_ENCRYPTION_KEY: KEY_2 }, false);
  const token = await app.token("user_premature");
  const agent = (await app.createAgent(token, { name: "premature" })).body;
  assert.equal((await app.putSecret(token, agent.id, "OPENAI_KEY", VALUE)).status, 200);
  // The operator swaps in a third key without keeping key 2.
  await controlPlane({ TELEMETRY_SECRETS_ENCRYPTION_KEY: randomBytes(32).toString("base64") }, false);
  const run = await app.admin("POST", "/secrets/reseal", ADMIN);
  assert.equal(run.status, 200, run.text);
  assert.equal(run.body.resealed, 0);
  assert.ok(run.body.unreadable.includes(`secret OPENAI_KEY of agent ${agent.id}`), JSON.stringify(run.body.unreadable));
  assert.ok(run.body.remaining >= run.body.unreadable.length);
  const stillThere = await app.db.prepare("SELECT COUNT(*) AS n FROM agent_secrets WHERE agent_id = ?").bind(agent.id).first();
  assert.equal(stillThere.n, 1);
  const t2 = await app.token("user_premature");
  const failed = await app.settled(t2, agent.id, (await app.deploy(t2, agent.id, { moduleCode: AGENT })).body.id);
  assert.equal(failed.status, "failed");
  assert.equal(failed.error.step, "secrets");
  assert.ok(failed.error.message.includes("OPENAI_KEY"), failed.error.message);
});

test("while a previous key is configured, the cron trigger re-seals on its own", async () => {
  const KEY_3 = randomBytes(32).toString("base64url");
  await controlPlane({ TELEMETRY_SECRETS_ENCRYPTION_KEY: KEY_3, PREVIOUS_ENCRYPTION_KEYS: `${KEY_1}, ${KEY_2}` }, false);
  const secretOf = async (name) =>
    (await app.db.prepare("SELECT s.value_sealed AS v FROM agent_secrets s JOIN agents a ON a.id = s.agent_id WHERE a.name = ?").bind(name).first()).v;
  const before = await secretOf("rotating");
  await app.runScheduled();
  const after = await secretOf("rotating");
  assert.notEqual(keyIdOf(after), keyIdOf(before), "moved to key 3");
  const run = await app.admin("POST", "/secrets/reseal", ADMIN);
  assert.equal(keyIdOf(after), run.body.currentKeyId);
  assert.equal(run.body.resealed, 0, "the cron run already did it");
  // What no configured key opens (the second test's, sealed under a key nobody kept) is all that remains.
  assert.equal(run.body.remaining, run.body.unreadable.length);
});
