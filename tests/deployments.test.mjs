// Deploying agents end to end: the control plane in workerd calls the local Cloudflare, which runs every
// uploaded script in workerd. Nothing on this path is faked.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startLocalCloudflare } from "../local-cloudflare/server.mjs";
import { asGateway, startControlPlane, deployVars, expectError } from "./support/harness.mjs";

let lcf, app, alice, mallory;
before(async () => {
  lcf = await startLocalCloudflare();
  app = await startControlPlane({ vars: deployVars(lcf, "workers_dev") });
  alice = await app.token("user_alice");
  mallory = await app.token("user_mallory");
});
after(async () => {
  await app?.close();
  await lcf?.close();
});

const invokeBody = (text) => ({ protocol: "invoke/v1", input: { messages: [{ role: "user", content: text }] } });

async function newAgent(token, name) {
  const res = await app.createAgent(token, { name });
  assert.equal(res.status, 201, res.text);
  return res.body;
}

async function deployAndSettle(token, agentId, json = {}, headers = {}) {
  const res = await app.deploy(token, agentId, json, headers);
  assert.equal(res.status, 202, res.text);
  return app.settled(token, agentId, res.body.id);
}

const ENV_MODULE = `export default { async fetch(req, env) {
  return Response.json({ apiKey: env.API_KEY ?? null, greeting: env.GREETING ?? null, agentId: env.AGENT_ID,
    deploymentId: env.DEPLOYMENT_ID, userId: env.USER_ID, provider: env.RUNTIME_PROVIDER,
    telemetrySecretLength: (env.TELEMETRY_SECRET || "").length, reportUrl: env.TELEMETRY_REPORT_URL,
    gatewaySecretVisible: "GATEWAY_SECRET" in env, sawCredential: req.headers.has("X-Webhost-Gateway") });
} };`;

test("deploying the template: 202 deploying, then active, pointer moved, and the script answers invoke/v1", async () => {
  const agent = await newAgent(alice, "template-agent");
  const accepted = await app.deploy(alice, agent.id);
  assert.equal(accepted.status, 202, accepted.text);
  assert.equal(accepted.body.status, "deploying");
  assert.equal(accepted.body.version, 1);
  assert.equal(accepted.body.source, "template");
  assert.match(accepted.body.id, /^dep_[0-9a-f]{24}$/);
  assert.ok(!("userId" in accepted.body));

  const done = await app.settled(alice, agent.id, accepted.body.id);
  assert.equal(done.status, "active", JSON.stringify(done.error));
  assert.equal(done.error, null);
  assert.equal((await app.getAgent(alice, agent.id)).body.activeDeploymentId, done.id);
  assert.equal(done.providerRef, `${lcf.origin}/__workers/${done.scriptName}`);

  // Called as the gateway calls it (with its credential); tests/gateway_only.test.mjs shows what anyone else gets.
  const res = await asGateway(lcf, done.scriptName, `${done.providerRef}/invoke`, { method: "POST", body: JSON.stringify(invokeBody("hello deployed agent")) });
  assert.equal(res.status, 200);
  assert.equal((await res.json()).output.text, "hello deployed agent");
  const info = await (await asGateway(lcf, done.scriptName, done.providerRef)).json();
  assert.deepEqual(info, { agentId: agent.id, deploymentId: done.id, runtimeProvider: "cloudflare", template: "echo" });

  const script = lcf.scripts().find((s) => s.name === done.scriptName);
  assert.deepEqual(script.tags.sort(), [`agent-${agent.id}`, `deployment-${done.id}`, `user-${(await app.me(alice)).body.id}`].sort());
  assert.deepEqual(script.secrets.sort(), ["GATEWAY_SECRET", "TELEMETRY_SECRET"]);
});

test("a custom module sees its env vars, the agent's secrets and every injected binding", async () => {
  const agent = await newAgent(alice, "custom-agent");
  assert.equal((await app.putSecret(alice, agent.id, "API_KEY", "sk-live-123")).status, 200);
  const done = await deployAndSettle(alice, agent.id, { moduleCode: ENV_MODULE, env: { GREETING: "hi" } });
  assert.equal(done.status, "active", JSON.stringify(done.error));
  assert.equal(done.source, "custom");
  assert.deepEqual(done.env, { GREETING: "hi" });
  const env = await (await asGateway(lcf, done.scriptName, done.providerRef)).json();
  assert.deepEqual(env, {
    apiKey: "sk-live-123",
    greeting: "hi",
    agentId: agent.id,
    deploymentId: done.id,
    userId: (await app.me(alice)).body.id,
    provider: "cloudflare",
    telemetrySecretLength: 43,
    reportUrl: "http://127.0.0.1:9/v1/telemetry/report",
    // The guard keeps its key and the credential to itself.
    gatewaySecretVisible: false,
    sawCredential: false,
  });
  const second = await deployAndSettle(alice, agent.id, { moduleCode: ENV_MODULE });
  assert.equal(second.version, 2);
  assert.equal(second.status, "active");
  assert.equal((await app.getDeployment(alice, agent.id, done.id)).body.status, "inactive");
  assert.equal((await app.getAgent(alice, agent.id)).body.activeDeploymentId, second.id);
});

test("one atomic upload: a deploy costs the same two API calls with 0 or 40 secrets, every secret in the upload", async () => {
  const agent = await newAgent(alice, "many-secrets");
  const none = await deployAndSettle(alice, agent.id, { moduleCode: ENV_MODULE });
  assert.equal(none.status, "active", JSON.stringify(none.error));
  for (let i = 0; i < 40; i++) assert.equal((await app.putSecret(alice, agent.id, `SECRET_${i}`, `value-${i}`)).status, 200);
  assert.equal((await app.putSecret(alice, agent.id, "API_KEY", "the-key")).status, 200);
  const many = await deployAndSettle(alice, agent.id, { moduleCode: ENV_MODULE, env: { GREETING: "hi" } });
  assert.equal(many.status, "active", JSON.stringify(many.error));
  // workers.dev: the upload, then the subdomain; never one call per secret.
  assert.equal(lcf.apiCalls(none.scriptName), 2);
  assert.equal(lcf.apiCalls(many.scriptName), 2);
  const script = lcf.scripts().find((s) => s.name === many.scriptName);
  assert.equal(script.secrets.length, 40 + 1 + 2, "the agent's 41 secrets and the platform's two");
  assert.equal(script.subdomainEnabled, true);
  assert.equal(script.previewsEnabled, false, "no version answers at a preview URL");
  assert.equal(lcf.secretValue(many.scriptName, "SECRET_39"), "value-39");
  const env = await (await asGateway(lcf, many.scriptName, many.providerRef)).json();
  assert.equal(env.apiKey, "the-key");
  assert.equal(env.greeting, "hi");
  assert.equal(env.telemetrySecretLength, 43);
});

test("live means live: a workers.dev deployment turns active only once its URL answers", async () => {
  const agent = await newAgent(alice, "slow-propagation");
  lcf.setPropagationDelay(1_500);
  try {
    const started = Date.now();
    const accepted = await app.deploy(alice, agent.id, {});
    assert.equal(accepted.status, 202, accepted.text);
    // Uploaded and routed well before its URL answers: still deploying.
    await new Promise((r) => setTimeout(r, 700));
    assert.equal((await app.getDeployment(alice, agent.id, accepted.body.id)).body.status, "deploying");
    const done = await app.settled(alice, agent.id, accepted.body.id);
    assert.equal(done.status, "active", JSON.stringify(done.error));
    assert.ok(Date.now() - started >= 1_500, "not before the URL answered");
    // So the very first call after `active` reaches it.
    const res = await app.invoke(alice, agent.id, invokeBody("first"));
    assert.equal(res.status, 200, res.text);
  } finally {
    lcf.setPropagationDelay(0);
  }
});

test("a module with a syntax error ends failed with the provider's message; the pointer stays", async () => {
  const agent = await newAgent(alice, "syntax-agent");
  const good = await deployAndSettle(alice, agent.id);
  const bad = await deployAndSettle(alice, agent.id, { moduleCode: "export default { fetch() { return new Response('x') }" });
  assert.equal(bad.status, "failed");
  assert.equal(bad.error.step, "upload");
  assert.equal(bad.error.kind, "validation");
  assert.equal(bad.error.status, 400);
  assert.deepEqual(bad.error.providerCodes, [10021]);
  assert.match(bad.error.message, /SyntaxError/);
  // The platform's account id is never shown to users.
  assert.match(bad.error.endpoint, /^PUT \/accounts\/\{account\}\/workers\/scripts\/wh-dep-/);
  assert.ok(!JSON.stringify(bad).includes(lcf.accountId));
  assert.equal((await app.getAgent(alice, agent.id)).body.activeDeploymentId, good.id);
  assert.equal((await app.getDeployment(alice, agent.id, good.id)).body.status, "active");
});

test("a busy provider is waited out: 429 and 5xx are retried (the waits, Retry-After included, are tested natively), and the deployment shows its attempts", async () => {
  const agent = await newAgent(alice, "busy-provider");
  lcf.injectFault({ step: "upload", status: 429, code: 971, retryAfter: 1, message: "Please wait and consider throttling your request speed" });
  // Cloudflare's "concurrent modification", whatever status it comes with, is a moment's trouble too.
  lcf.injectFault({ step: "upload", status: 409, code: 10035, message: "concurrent modification" });
  lcf.injectFault({ step: "subdomain", status: 503, times: 2, message: "try later" });
  const d = await deployAndSettle(alice, agent.id);
  assert.equal(d.status, "active", JSON.stringify(d.error));
  assert.equal(d.retries, 4);
  assert.equal(d.error, null);
  lcf.clearFaults();
});

test("a provider failure at each step ends failed, moves nothing, and leaves no orphan after clean-up", async () => {
  const agent = await newAgent(alice, "fault-agent");
  const good = await deployAndSettle(alice, agent.id);
  const failed = [];
  // Failures retrying cannot fix (a busy provider is retried: see above).
  for (const [step, status] of [["upload", 400], ["subdomain", 403]]) {
    lcf.injectFault({ step, status, message: `injected ${step} failure` });
    // The best-effort delete right after the failure fails too, so only the clean-up job can remove the script.
    lcf.injectFault({ step: "delete", status: 500 });
    const d = await deployAndSettle(alice, agent.id);
    assert.equal(d.status, "failed", step);
    assert.equal(d.error.step, step);
    assert.equal(d.error.status, status);
    assert.match(d.error.message, new RegExp(`injected ${step} failure`));
    assert.ok(!JSON.stringify(d).includes(lcf.apiToken), "the API token never appears");
    failed.push(d);
    lcf.clearFaults();
  }
  assert.equal((await app.getAgent(alice, agent.id)).body.activeDeploymentId, good.id);
  await app.runScheduled();
  const names = lcf.scripts().map((s) => s.name);
  for (const d of failed) assert.ok(!names.includes(d.scriptName), `orphan ${d.scriptName} (${d.error.step})`);
  assert.ok(names.includes(good.scriptName), "the active script stays");
});

// Columns that may change after insert (DESIGN.md §4.2): the status, provider reference and error fields, and
// the timestamps recording those changes. Everything else must equal what was written at insert.
const MUTABLE = new Set(["status", "provider_ref", "error_json", "updated_at", "finished_at", "script_deleted_at"]);
const immutablePart = (row) => Object.fromEntries(Object.entries(row).filter(([k]) => !MUTABLE.has(k)));
const rowOf = async (id) => (await app.db.prepare("SELECT * FROM deployments WHERE id = ?").bind(id).first());

test("rollback: activate any successful deployment; failed or foreign ones are refused", async () => {
  const agent = await newAgent(alice, "rollback-agent");
  const accepted = await app.deploy(alice, agent.id);
  const atInsert = immutablePart(await rowOf(accepted.body.id));
  const v1 = await app.settled(alice, agent.id, accepted.body.id);
  const v2 = await deployAndSettle(alice, agent.id, { moduleCode: ENV_MODULE });
  const rolled = await app.activate(alice, agent.id, v1.id);
  assert.equal(rolled.status, 200, rolled.text);
  assert.equal(rolled.body.status, "active");
  assert.equal((await app.getAgent(alice, agent.id)).body.activeDeploymentId, v1.id);
  assert.equal((await app.getDeployment(alice, agent.id, v2.id)).body.status, "inactive");
  const again = await app.activate(alice, agent.id, v2.id);
  assert.equal(again.body.status, "active");

  const bad = await deployAndSettle(alice, agent.id, { moduleCode: "syntax error here(" });
  expectError(assert, await app.activate(alice, agent.id, bad.id), 409, "deployment_not_activatable");
  expectError(assert, await app.activate(alice, agent.id, "dep_000000000000000000000000"), 404, "deployment_not_found");
  const other = await newAgent(alice, "rollback-other");
  expectError(assert, await app.activate(alice, other.id, v1.id), 404, "deployment_not_found");
  assert.equal((await app.getAgent(alice, agent.id)).body.activeDeploymentId, v2.id);

  // deploying → active → inactive → active → inactive, then a clean-up pass: the record itself never changed.
  await app.runScheduled();
  assert.deepEqual(immutablePart(await rowOf(v1.id)), atInsert);
});

test("idempotency: a retried request returns the same deployment; a reused key with another body is 422", async () => {
  const agent = await newAgent(alice, "idem-agent");
  const headers = { "Idempotency-Key": "deploy-attempt-1" };
  const first = await app.deploy(alice, agent.id, { env: { A: "1" } }, headers);
  const second = await app.deploy(alice, agent.id, { env: { A: "1" } }, headers);
  assert.equal(first.status, 202);
  assert.equal(second.status, 202);
  assert.equal(second.body.id, first.body.id);
  expectError(assert, await app.deploy(alice, agent.id, { env: { A: "2" } }, headers), 422, "idempotency_key_reused");
  expectError(assert, await app.deploy(alice, agent.id, {}, { "Idempotency-Key": "has space" }), 400, "invalid_idempotency_key");
  await app.settled(alice, agent.id, first.body.id);
  const list = await app.listDeployments(alice, agent.id, "?includeInactive=true");
  assert.equal(list.body.deployments.length, 1);
});

test("concurrent deploys leave one consistent pointer: the newest version", async () => {
  const agent = await newAgent(alice, "race-agent");
  const accepted = await Promise.all([1, 2, 3, 4].map(() => app.deploy(alice, agent.id)));
  assert.deepEqual(accepted.map((r) => r.status), [202, 202, 202, 202]);
  assert.deepEqual(accepted.map((r) => r.body.version).sort(), [1, 2, 3, 4]);
  await Promise.all(accepted.map((r) => app.settled(alice, agent.id, r.body.id)));
  const all = (await app.listDeployments(alice, agent.id, "?includeInactive=true")).body.deployments;
  const active = all.filter((d) => d.status === "active");
  assert.equal(active.length, 1);
  assert.equal(active[0].version, 4);
  assert.equal((await app.getAgent(alice, agent.id)).body.activeDeploymentId, active[0].id);
});

test("deployment lists: newest first, filters, bounded limit", async () => {
  const agent = await newAgent(alice, "list-agent");
  for (let i = 0; i < 3; i++) await deployAndSettle(alice, agent.id);
  await deployAndSettle(alice, agent.id, { moduleCode: "broken(" });
  const all = await app.listDeployments(alice, agent.id, "?includeInactive=true");
  assert.deepEqual(all.body.deployments.map((d) => d.version), [4, 3, 2, 1]);
  // Seed 001: inactive deployments are listed by default; includeInactive=false leaves them out.
  const byDefault = await app.listDeployments(alice, agent.id);
  assert.deepEqual(byDefault.body.deployments.map((d) => d.version), [4, 3, 2, 1]);
  const visible = await app.listDeployments(alice, agent.id, "?includeInactive=false");
  assert.deepEqual(visible.body.deployments.map((d) => d.status), ["failed", "active"]);
  const failedOnly = await app.listDeployments(alice, agent.id, "?status=failed");
  assert.deepEqual(failedOnly.body.deployments.map((d) => d.version), [4]);
  assert.equal((await app.listDeployments(alice, agent.id, "?includeInactive=true&limit=2")).body.deployments.length, 2);
  for (const q of ["?limit=0", "?limit=201", "?status=gone", "?includeInactive=yes"]) {
    expectError(assert, await app.listDeployments(alice, agent.id, q), 400, "invalid_query");
  }
});

test("disabled agents cannot be deployed; invalid deploy requests change nothing", async () => {
  const agent = await newAgent(alice, "disabled-agent");
  await app.disableAgent(alice, agent.id);
  expectError(assert, await app.deploy(alice, agent.id), 409, "agent_disabled");
  await app.enableAgent(alice, agent.id);
  for (const [json, field] of [
    [{ moduleCode: "" }, "moduleCode"],
    [{ compatibilityDate: "soon" }, "compatibilityDate"],
    [{ env: { TELEMETRY_SECRET: "x" } }, "env.TELEMETRY_SECRET"],
    [{ mainModuleName: "../../etc/passwd" }, "mainModuleName"],
  ]) {
    const err = expectError(assert, await app.deploy(alice, agent.id, json), 400, "validation_failed");
    assert.equal(err.details.field, field);
  }
  expectError(assert, await app.deploy(alice, agent.id, { code: "x" }), 400, "invalid_body");
  assert.equal((await app.listDeployments(alice, agent.id, "?includeInactive=true")).body.deployments.length, 0);
});

test("deleting an agent removes its scripts", async () => {
  const agent = await newAgent(alice, "doomed-agent");
  const a = await deployAndSettle(alice, agent.id);
  const b = await deployAndSettle(alice, agent.id);
  assert.equal((await app.deleteAgent(alice, agent.id)).status, 204);
  await app.runScheduled();
  const names = lcf.scripts().map((s) => s.name);
  assert.ok(!names.includes(a.scriptName) && !names.includes(b.scriptName), names.join(","));
});

test("the clean-up job fails stuck deploys and keeps only a few inactive scripts for rollback", async () => {
  const agent = await newAgent(alice, "cleanup-agent");
  const done = [];
  for (let i = 0; i < 6; i++) done.push(await deployAndSettle(alice, agent.id));
  await app.runScheduled();
  const names = lcf.scripts().map((s) => s.name);
  // Active v6 plus the 3 newest inactive (v3–v5) stay; v1 and v2 go.
  assert.deepEqual(done.map((d) => names.includes(d.scriptName)), [false, false, true, true, true, true]);
  // Rolling back to v1 uploads its script again from its artifact (tests below); v3's still exists.
  assert.equal((await app.activate(alice, agent.id, done[2].id)).status, 200);

  // A deploy that never finished (its worker died) is failed once it is older than the timeout.
  const stuck = await app.deploy(alice, agent.id);
  await app.settled(alice, agent.id, stuck.body.id);
  await app.db.prepare("UPDATE deployments SET status = 'deploying', created_at = created_at - 3600000 WHERE id = ?").bind(stuck.body.id).run();
  await app.runScheduled();
  const after = (await app.getDeployment(alice, agent.id, stuck.body.id)).body;
  assert.equal(after.status, "failed");
  assert.equal(after.error.step, "timeout");
});

const VERSIONED_MODULE = (label) => `export default { async fetch(req, env) {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(env.TELEMETRY_SECRET || ""));
  return Response.json({ protocol: "invoke/v1", output: { label: ${JSON.stringify(label)}, greeting: env.GREETING ?? null,
    apiKey: env.API_KEY ?? null, deploymentId: env.DEPLOYMENT_ID,
    telemetrySecretSha: [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("") } });
} };`;
const answerOf = async (agentId, text) => {
  const res = await app.invoke(alice, agentId, invokeBody(text));
  assert.equal(res.status, 200, res.text);
  return res.body.output;
};

test("rolling back to a deployment whose script was cleaned up uploads it again from its artifact", { timeout: 90_000 }, async () => {
  const agent = await newAgent(alice, "restored-agent");
  await app.putSecret(alice, agent.id, "API_KEY", "first-key");
  const first = await deployAndSettle(alice, agent.id, { moduleCode: VERSIONED_MODULE("first"), env: { GREETING: "hello from v1" } });
  assert.equal(first.status, "active", JSON.stringify(first.error));
  const before = await answerOf(agent.id, "v1 before");
  assert.equal(before.label, "first");
  for (let i = 0; i < 4; i++) await deployAndSettle(alice, agent.id, { moduleCode: VERSIONED_MODULE(`later-${i}`) });
  await app.runScheduled();
  assert.ok(!lcf.scripts().some((s) => s.name === first.scriptName), "the clean-up job removed v1's script");
  await app.putSecret(alice, agent.id, "API_KEY", "rotated-key");

  const rolledBack = await app.activate(alice, agent.id, first.id);
  assert.equal(rolledBack.status, 200, rolledBack.text);
  assert.equal(rolledBack.body.status, "active");
  assert.equal((await app.getAgent(alice, agent.id)).body.activeDeploymentId, first.id);
  assert.ok(lcf.scripts().some((s) => s.name === first.scriptName), "v1's script is back under its own name");

  // Through the gateway: v1's code and settings, its own credentials (the gateway's credential and the telemetry
  // secret it was deployed with), and the agent's secrets as they are now.
  assert.deepEqual(await answerOf(agent.id, "are you v1?"), {
    label: "first", greeting: "hello from v1", apiKey: "rotated-key", deploymentId: first.id, telemetrySecretSha: before.telemetrySecretSha,
  });
  // Active now, so the next clean-up keeps it.
  await app.runScheduled();
  assert.ok(lcf.scripts().some((s) => s.name === first.scriptName));
  assert.equal((await answerOf(agent.id, "still there?")).label, "first");
});

test("two rollbacks to the same cleaned-up deployment at once: one uploads it, the other is told a restore is under way", { timeout: 90_000 }, async () => {
  const agent = await newAgent(alice, "raced-restore");
  const done = [];
  for (let i = 0; i < 5; i++) done.push(await deployAndSettle(alice, agent.id, { moduleCode: VERSIONED_MODULE(`raced-${i}`) }));
  await app.runScheduled();
  assert.ok(!lcf.scripts().some((s) => s.name === done[0].scriptName));
  lcf.setPropagationDelay(1_500);
  try {
    const answers = await Promise.all([app.activate(alice, agent.id, done[0].id), app.activate(alice, agent.id, done[0].id)]);
    const statuses = answers.map((r) => r.status).sort();
    assert.deepEqual(statuses, [200, 409], answers.map((r) => r.text).join("\n"));
    const busy = answers.find((r) => r.status === 409);
    expectError(assert, busy, 409, "restore_in_progress");
    assert.equal(busy.body.error.retryable, true);
  } finally {
    lcf.setPropagationDelay(0);
  }
  assert.equal((await answerOf(agent.id, "after the race")).label, "raced-0");
  // Once done, the same rollback is instant.
  assert.equal((await app.activate(alice, agent.id, done[0].id)).status, 200);
});

test("a cleaned-up deployment with no artifact, or whose upload fails, is refused and nothing changes", { timeout: 90_000 }, async () => {
  const agent = await newAgent(alice, "unrestorable-agent");
  const done = [];
  for (let i = 0; i < 6; i++) done.push(await deployAndSettle(alice, agent.id, { moduleCode: VERSIONED_MODULE(`unrestorable-${i}`) }));
  await app.runScheduled();
  const [gone, alsoGone] = done;
  assert.ok(!lcf.scripts().some((s) => s.name === gone.scriptName || s.name === alsoGone.scriptName));
  const active = done[5].id;

  // The upload fails: 502 restore_failed with the step and the provider's message; the pointer stays.
  lcf.injectFault({ step: "upload", status: 400, code: 10021, message: "injected upload refusal" });
  const failed = expectError(assert, await app.activate(alice, agent.id, gone.id), 502, "restore_failed");
  assert.equal(failed.details.step, "upload");
  assert.match(failed.details.message, /injected upload refusal/);
  assert.equal((await app.getAgent(alice, agent.id)).body.activeDeploymentId, active);
  assert.equal((await app.getDeployment(alice, agent.id, gone.id)).body.status, "inactive");
  assert.ok(!lcf.scripts().some((s) => s.name === gone.scriptName));

  // No artifact kept for its code: 409, and the pointer stays.
  const bucket = await app.mf.getR2Bucket("ARTIFACTS");
  await bucket.delete(`artifacts/${alsoGone.codeSha256}.json`);
  const refused = expectError(assert, await app.activate(alice, agent.id, alsoGone.id), 409, "deployment_not_activatable");
  assert.match(refused.message, /not kept as an artifact/);
  assert.equal((await app.getAgent(alice, agent.id)).body.activeDeploymentId, active);

  // Someone else's cleaned-up deployment is not found, and is not uploaded.
  expectError(assert, await app.activate(mallory, agent.id, gone.id), 404, "agent_not_found");
  assert.ok(!lcf.scripts().some((s) => s.name === gone.scriptName));

  // Once the provider answers again, the same rollback works.
  assert.equal((await app.activate(alice, agent.id, gone.id)).status, 200);
  assert.equal((await answerOf(agent.id, "x")).label, "unrestorable-0");
});

test("cross-tenant: every deployment and secret route answers 404 and changes nothing", async () => {
  const agent = await newAgent(alice, "private-deploys");
  await app.putSecret(alice, agent.id, "API_KEY", "alice-only");
  const d = await deployAndSettle(alice, agent.id);
  const before = {
    deployments: (await app.db.prepare("SELECT * FROM deployments ORDER BY id").all()).results,
    secrets: (await app.db.prepare("SELECT * FROM agent_secrets ORDER BY agent_id, name").all()).results,
    agents: await app.agentRows(),
  };
  const attempts = [
    () => app.deploy(mallory, agent.id),
    () => app.listDeployments(mallory, agent.id),
    () => app.getDeployment(mallory, agent.id, d.id),
    () => app.activate(mallory, agent.id, d.id),
    () => app.listSecrets(mallory, agent.id),
    () => app.putSecret(mallory, agent.id, "API_KEY", "mallory-was-here"),
    () => app.deleteSecret(mallory, agent.id, "API_KEY"),
  ];
  for (const attempt of attempts) expectError(assert, await attempt(), 404, "agent_not_found");
  // Mallory's own agent cannot reach Alice's deployment either.
  const own = await newAgent(mallory, "mallory-agent");
  expectError(assert, await app.getDeployment(mallory, own.id, d.id), 404, "deployment_not_found");
  expectError(assert, await app.activate(mallory, own.id, d.id), 404, "deployment_not_found");
  assert.deepEqual((await app.db.prepare("SELECT * FROM deployments WHERE agent_id != ? ORDER BY id").bind(own.id).all()).results, before.deployments);
  assert.deepEqual((await app.db.prepare("SELECT * FROM agent_secrets ORDER BY agent_id, name").all()).results, before.secrets);
});

test("dispatch namespace mode: the same deploy lands in the namespace, reachable through the namespace", async () => {
  const wfp = await startControlPlane({ vars: deployVars(lcf, "dispatch_namespace") });
  try {
    const token = await wfp.token("user_wfp");
    const agent = (await wfp.createAgent(token, { name: "wfp-agent" })).body;
    const accepted = await wfp.deploy(token, agent.id);
    const done = await wfp.settled(token, agent.id, accepted.body.id);
    assert.equal(done.status, "active", JSON.stringify(done.error));
    assert.equal(done.deployTarget, "dispatch_namespace");
    assert.equal(done.providerRef, `${lcf.namespace}/${done.scriptName}`);
    const script = lcf.scripts().find((s) => s.name === done.scriptName);
    assert.equal(script.scope, `dispatch:${lcf.namespace}`);
    assert.equal(script.subdomainEnabled, false);
    const res = await asGateway(lcf, done.scriptName, `${lcf.origin}/__dispatch/${lcf.namespace}/${done.scriptName}/invoke`, {
      method: "POST",
      body: JSON.stringify(invokeBody("through the namespace")),
    });
    assert.equal((await res.json()).output.text, "through the namespace");

    // Clean-up in this mode deletes by tag: deleting the agent removes its script from the namespace.
    assert.equal((await wfp.deleteAgent(token, agent.id)).status, 204);
    await wfp.runScheduled();
    assert.ok(!lcf.scripts().some((s) => s.name === done.scriptName), "script left in the namespace");
  } finally {
    await wfp.close();
  }
});

test("a wrong-length encryption key fails every request loudly instead of deploying", async () => {
  const broken = await startControlPlane({
    vars: { ...deployVars(lcf), TELEMETRY_SECRETS_ENCRYPTION_KEY: Buffer.alloc(16).toString("base64") },
  });
  try {
    const token = await broken.token("u");
    expectError(assert, await broken.me(token), 500, "server_misconfigured");
    expectError(assert, await broken.deploy(token, "agt_000000000000000000000000"), 500, "server_misconfigured");
  } finally {
    await broken.close();
  }
});

test("deploy routes answer 503 when no deploy target is configured", async () => {
  const plain = await startControlPlane();
  try {
    const token = await plain.token("u");
    const agent = (await plain.createAgent(token, { name: "no-target" })).body;
    expectError(assert, await plain.deploy(token, agent.id), 503, "deploys_not_configured");
  } finally {
    await plain.close();
  }
});

test("seed 001's deploy and list contract, as written", async () => {
  const agent = await newAgent(alice, "seed-contract");
  // runtimeProvider "cloudflare" is accepted; the main module defaults to index.mjs.
  const first = await deployAndSettle(alice, agent.id, { runtimeProvider: "cloudflare" });
  assert.equal(first.status, "active", JSON.stringify(first.error));
  assert.equal(first.mainModuleName, "index.mjs");
  assert.equal(first.runtimeProvider, "cloudflare");
  // A provider the tier lacks is the entitlement's refusal, not a malformed body; an unknown one is invalid.
  const lacking = expectError(assert, await app.deploy(alice, agent.id, { runtimeProvider: "agentcore" }), 403, "not_entitled");
  assert.equal(lacking.details.entitlement, "runtimeProviders");
  const unknown = expectError(assert, await app.deploy(alice, agent.id, { runtimeProvider: "lambda" }), 400, "validation_failed");
  assert.equal(unknown.details.field, "runtimeProvider");
  // index.js is still accepted.
  const second = await deployAndSettle(alice, agent.id, { moduleCode: ENV_MODULE, mainModuleName: "index.js" });
  assert.equal(second.mainModuleName, "index.js");
  assert.equal(second.status, "active", JSON.stringify(second.error));
  // includeInactive defaults to true: the superseded first deployment is listed without asking.
  const listed = (await app.listDeployments(alice, agent.id)).body.deployments.map((d) => [d.id, d.status]);
  assert.deepEqual(listed, [[second.id, "active"], [first.id, "inactive"]]);
  const activeOnly = (await app.listDeployments(alice, agent.id, "?includeInactive=false")).body.deployments;
  assert.deepEqual(activeOnly.map((d) => d.id), [second.id]);
});
