// Write-only secrets: values go in and are injected into deployments, but never come back out of any route,
// never reach a log, and are not stored in plaintext: the D1 files on disk and the worker's output are scanned.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { startLocalCloudflare } from "../local-cloudflare/server.mjs";
import { asGateway, startControlPlane, deployVars, expectError } from "./support/harness.mjs";

const SECRET_VALUE = "sk-live-7f3a9c1e5b2d4f6a8c0e-never-log-me";
let lcf, app, token, d1Dir, output;

before(async () => {
  lcf = await startLocalCloudflare();
  d1Dir = mkdtempSync(path.join(tmpdir(), "secrets-d1-"));
  output = [];
  const collect = (stream) => stream.on("data", (chunk) => output.push(chunk.toString("utf8")));
  app = await startControlPlane({
    vars: deployVars(lcf, "workers_dev"),
    miniflare: { d1Persist: d1Dir, handleRuntimeStdio: (stdout, stderr) => (collect(stdout), collect(stderr)) },
  });
  token = await app.token("user_secrets");
});
after(async () => {
  await app?.close();
  await lcf?.close();
  rmSync(d1Dir, { recursive: true, force: true });
});

function filesUnder(dir) {
  return readdirSync(dir).flatMap((name) => {
    const p = path.join(dir, name);
    return statSync(p).isDirectory() ? filesUnder(p) : [p];
  });
}

test("put, list (names and timestamps only), replace, delete", async () => {
  const agent = (await app.createAgent(token, { name: "secret-keeper" })).body;
  const put = await app.putSecret(token, agent.id, "API_KEY", SECRET_VALUE);
  assert.equal(put.status, 200, put.text);
  assert.deepEqual(Object.keys(put.body).sort(), ["createdAt", "name", "updatedAt"]);
  const replaced = await app.putSecret(token, agent.id, "API_KEY", "another-value");
  assert.equal(replaced.body.createdAt, put.body.createdAt);
  await app.putSecret(token, agent.id, "API_KEY", SECRET_VALUE);
  const list = await app.listSecrets(token, agent.id);
  assert.deepEqual(list.body.secrets.map((s) => s.name), ["API_KEY"]);
  assert.ok(!list.text.includes(SECRET_VALUE));

  await app.putSecret(token, agent.id, "TEMP", "x");
  assert.equal((await app.deleteSecret(token, agent.id, "TEMP")).status, 204);
  expectError(assert, await app.deleteSecret(token, agent.id, "TEMP"), 404, "secret_not_found");
});

test("bad names and values are refused and change nothing", async () => {
  const agent = (await app.createAgent(token, { name: "secret-validation" })).body;
  for (const [name, value, field] of [
    ["lower_case", "v", "name"],
    ["TELEMETRY_SECRET", "v", "name"],
    ["DEPLOYMENT_ID", "v", "name"],
    ["OK_NAME", "", "value"],
    ["OK_NAME", "x".repeat(5121), "value"],
  ]) {
    const err = expectError(assert, await app.putSecret(token, agent.id, name, value), 400, "validation_failed");
    assert.equal(err.details.field, field);
  }
  expectError(
    assert,
    await app.request("PUT", `/v1/agents/${agent.id}/secrets/OK_NAME`, { token, json: { value: "v", extra: 1 } }),
    400,
    "invalid_body",
  );
  assert.deepEqual((await app.listSecrets(token, agent.id)).body.secrets, []);
});

test("the value reaches the deployed script, and nowhere else: no response, no log, no plaintext in D1", async () => {
  const agent = (await app.createAgent(token, { name: "secret-consumer" })).body;
  await app.putSecret(token, agent.id, "API_KEY", SECRET_VALUE);
  const code = "export default { fetch(req, env) { return new Response(env.API_KEY === " + JSON.stringify(SECRET_VALUE) + " ? 'match' : 'mismatch'); } };";
  const accepted = await app.deploy(token, agent.id, { moduleCode: code });
  const done = await app.settled(token, agent.id, accepted.body.id);
  assert.equal(done.status, "active", JSON.stringify(done.error));
  assert.equal(await (await asGateway(lcf, done.scriptName, done.providerRef)).text(), "match");

  const responses = [
    await app.listSecrets(token, agent.id),
    await app.getAgent(token, agent.id),
    await app.getDeployment(token, agent.id, done.id),
    await app.listDeployments(token, agent.id, "?includeInactive=true"),
    await app.listAgents(token),
  ];
  for (const res of responses) assert.ok(!res.text.includes(SECRET_VALUE), `response leaks the secret: ${res.text}`);

  // Every byte the worker stored in D1 (the SQLite files and their WAL) and everything it printed.
  const files = filesUnder(d1Dir);
  assert.ok(files.length > 0, "D1 is persisted to disk");
  const needle = Buffer.from(SECRET_VALUE);
  for (const f of files) assert.ok(!readFileSync(f).includes(needle), `plaintext secret in ${f}`);
  // Positive control: the same files do hold what was written in the clear, so the scan looks in the right place.
  assert.ok(files.some((f) => readFileSync(f).includes(Buffer.from("secret-consumer"))), "the scan sees D1's data");
  const rows = (await app.db.prepare("SELECT value_sealed FROM agent_secrets").all()).results;
  assert.ok(rows.length > 0 && rows.every((r) => r.value_sealed.startsWith("v2.")));
  const sealed = (await app.db.prepare("SELECT telemetry_secret_sealed FROM deployments").all()).results;
  assert.ok(sealed.every((r) => r.telemetry_secret_sealed.startsWith("v2.")));
  assert.ok(!output.join("").includes(SECRET_VALUE), "the worker's output mentions the secret");
  assert.ok(output.join("").includes(`deploy ${done.id} finished active`), "the capture sees the worker's logs");
});
