// Bundle deploys: agent.config.json and several modules (an ES module importing a Wasm module, JSON and text, a
// CommonJS helper) uploaded as multipart, deployed into the local Cloudflare and invoked through the gateway; bad
// manifests and oversized bundles refused before anything is uploaded.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { startLocalCloudflare } from "../local-cloudflare/server.mjs";
import { deployVars, expectError, startControlPlane } from "./support/harness.mjs";

const ADMIN = randomBytes(24).toString("hex");
let lcf, app, dev;
before(async () => {
  lcf = await startLocalCloudflare();
  app = await startControlPlane({ vars: { ...deployVars(lcf, "workers_dev"), ADMIN_TOKEN: ADMIN } });
  dev = await app.token("user_bundle_dev");
});
after(async () => {
  await app?.close();
  await lcf?.close();
});

// (module (func (export "add") (param i32 i32) (result i32) local.get 0 local.get 1 i32.add))
const ADD_WASM = new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0, 1, 7, 1, 96, 2, 127, 127, 1, 127, 3, 2, 1, 0, 7, 7, 1, 3, 97, 100, 100, 0, 0, 10, 9, 1, 7, 0, 32, 0, 32, 1, 106, 11]);
const MAIN = `import add from "./add.wasm";
import words from "./data/words.json";
import greeting from "./greeting.txt";
import helper from "./helper.cjs";
export default {
  async fetch(request, env) {
    const body = await request.json();
    const text = body.input.messages.at(-1).content;
    const sum = new WebAssembly.Instance(add).exports.add(words.a, words.b);
    return Response.json({ protocol: "invoke/v1", output: { text: \`\${greeting.trim()} \${text}: \${sum} \${helper.shout("ok")} \${env.MODE}\` } });
  },
};`;

function bundleForm(manifest, modules) {
  const form = new FormData();
  form.set("manifest", new Blob([JSON.stringify(manifest)], { type: "application/json" }), "agent.config.json");
  for (const [name, bytes] of modules) form.append("files", new Blob([bytes]), name);
  return form;
}

const MODULES = [
  ["src/index.js", MAIN.replaceAll('"./', '"../')],
  ["add.wasm", ADD_WASM],
  ["data/words.json", JSON.stringify({ a: 20, b: 22 })],
  ["greeting.txt", "hello from a bundle,\n"],
  ["helper.cjs", "module.exports = { shout: (s) => s.toUpperCase() };"],
];

async function deployBundle(agentId, form, headers = {}, token = dev) {
  // Over a real socket, with the platform's own FormData encoding (as a client sends it).
  const res = await fetch(new URL(`/v1/agents/${agentId}/deploy`, app.url), {
    method: "POST",
    headers: { Authorization: `Bearer ${token}`, ...headers },
    body: form,
  });
  return { status: res.status, headers: res.headers, body: await res.json() };
}

const invokeBody = (text) => ({ protocol: "invoke/v1", input: { messages: [{ role: "user", content: text }] } });

test("a multi-module bundle deploys and answers: Wasm, JSON, text and CommonJS modules load", { timeout: 60_000 }, async () => {
  const agent = (await app.createAgent(dev, { name: "bundled-agent" })).body;
  const manifest = { main: "src/index.js", compatibilityDate: "2026-07-30", vars: { MODE: "bundled" } };
  const res = await deployBundle(agent.id, bundleForm(manifest, MODULES));
  assert.equal(res.status, 202, JSON.stringify(res.body));
  assert.equal(res.body.source, "custom");
  assert.equal(res.body.mainModuleName, "src/index.js");
  assert.match(res.body.codeSha256, /^[0-9a-f]{64}$/);
  const deployment = await app.settled(dev, agent.id, res.body.id);
  assert.equal(deployment.status, "active", JSON.stringify(deployment.error));
  const answer = await app.invoke(dev, agent.id, invokeBody("sum"));
  assert.equal(answer.status, 200, answer.text);
  assert.equal(answer.body.output.text, "hello from a bundle, sum: 42 OK bundled");

  // Its artifact: the manifest and every module's name, type, size and hash — never the bytes.
  const artifact = await app.request("GET", `/v1/agents/${agent.id}/deployments/${res.body.id}/artifact`, { token: dev });
  assert.equal(artifact.status, 200, artifact.text);
  assert.equal(artifact.body.codeSha256, res.body.codeSha256);
  assert.equal(artifact.body.manifest.main, "src/index.js");
  assert.deepEqual(artifact.body.manifest.vars, { MODE: "bundled" });
  assert.deepEqual(
    artifact.body.modules.map((m) => [m.name, m.type]),
    [["add.wasm", "wasm"], ["data/words.json", "json"], ["greeting.txt", "text"], ["helper.cjs", "commonjs"], ["src/index.js", "es_module"]],
  );
  const wasmEntry = artifact.body.modules.find((m) => m.name === "add.wasm");
  assert.deepEqual([wasmEntry.size, wasmEntry.sha256], [ADD_WASM.length, createHash("sha256").update(ADD_WASM).digest("hex")]);
  assert.ok(!artifact.text.includes("WebAssembly.Instance"), "no module's bytes are shown");
  // Someone else cannot see it.
  const stranger = await app.token("user_bundle_stranger");
  expectError(assert, await app.request("GET", `/v1/agents/${agent.id}/deployments/${res.body.id}/artifact`, { token: stranger }), 404, "agent_not_found");

  // The same bundle packed in another order has the same content address, and is stored once.
  const again = await deployBundle(agent.id, bundleForm(manifest, [...MODULES].reverse()));
  assert.equal(again.status, 202);
  assert.equal(again.body.codeSha256, res.body.codeSha256);
  await app.settled(dev, agent.id, again.body.id);
  const bucket = await app.mf.getR2Bucket("ARTIFACTS");
  const stored = (await bucket.list({ prefix: "artifacts/" })).objects.filter((o) => o.key === `artifacts/${res.body.codeSha256}.json`);
  assert.equal(stored.length, 1);
  const againArtifact = await app.request("GET", `/v1/agents/${agent.id}/deployments/${again.body.id}/artifact`, { token: dev });
  assert.deepEqual(againArtifact.body, artifact.body);
});

test("a bad manifest or module is refused naming the field, before anything is uploaded", async () => {
  const agent = (await app.createAgent(dev, { name: "refused-bundle" })).body;
  const uploadsBefore = lcf.scripts().length;
  const cases = [
    [{ compatibilityDate: "2026-07-30" }, MODULES, "main"],
    [{ main: "src/index.js", vars: { lower: "x" } }, MODULES, "vars.lower"],
    [{ main: "src/index.js", routes: ["*"] }, MODULES, "routes"],
    [{ main: "src/missing.js" }, MODULES, "main"],
    [{ main: "src/index.js" }, [...MODULES, ["notes.xyz", "?"]], "modules[notes.xyz]"],
    [{ main: "src/index.js" }, [...MODULES, ["../escape.js", "x"]], "modules[../escape.js]"],
  ];
  for (const [manifest, modules, field] of cases) {
    const res = await deployBundle(agent.id, bundleForm(manifest, modules));
    assert.equal(res.status, 400, JSON.stringify(res.body));
    assert.equal(res.body.error.code, "invalid_manifest");
    assert.equal(res.body.error.details.field, field);
  }
  const noManifest = new FormData();
  noManifest.append("files", new Blob(["export default {}"]), "index.js");
  expectError(assert, await deployBundle(agent.id, noManifest), 400, "invalid_manifest");
  // Over the per-module limit (5 MiB): 413 with the limit named.
  const big = await deployBundle(agent.id, bundleForm({ main: "src/index.js" }, [...MODULES, ["big.bin", new Uint8Array(5 * 1024 * 1024 + 1)]]));
  assert.equal(big.status, 413);
  assert.equal(big.body.error.code, "bundle_too_large");
  assert.equal(big.body.error.details.limit, "moduleBytes");
  assert.equal(lcf.scripts().length, uploadsBefore, "nothing was uploaded");
  assert.deepEqual((await app.listDeployments(dev, agent.id)).body.deployments, [], "and no deployment was made");
});

test("a bundle's main module may be larger than a JSON deploy's 1 MiB (bundlers make big ones)", { timeout: 60_000 }, async () => {
  const agent = (await app.createAgent(dev, { name: "big-main-bundle" })).body;
  const big = `// ${"x".repeat(1_300_000)}\nexport default { fetch() { return Response.json({ protocol: "invoke/v1", output: { text: "big" } }); } };`;
  const res = await deployBundle(agent.id, bundleForm({ main: "index.js" }, [["index.js", big]]));
  assert.equal(res.status, 202, JSON.stringify(res.body));
  assert.equal((await app.settled(dev, agent.id, res.body.id)).status, "active");
  assert.equal((await app.invoke(dev, agent.id, invokeBody("x"))).body.output.text, "big");
});

test("one module's artifact is its own: the same code with other settings is other content, shown only as deployed", { timeout: 60_000 }, async () => {
  const other = await app.token("user_bundle_other");
  const code = `export default { fetch() { return Response.json({ protocol: "invoke/v1", output: { text: "same" } }); } };`;
  const mine = (await app.createAgent(dev, { name: "same-code-mine" })).body;
  const theirs = (await app.createAgent(other, { name: "same-code-theirs" })).body;
  const first = await app.deploy(dev, mine.id, { moduleCode: code, env: { OWNER: "dev" } });
  const second = await app.deploy(other, theirs.id, { moduleCode: code, env: { OWNER: "other" } });
  assert.equal(first.status, 202);
  assert.equal(second.status, 202);
  assert.notEqual(first.body.codeSha256, second.body.codeSha256, "settings are part of the address");
  await app.settled(dev, mine.id, first.body.id);
  await app.settled(other, theirs.id, second.body.id);
  const shown = await app.request("GET", `/v1/agents/${theirs.id}/deployments/${second.body.id}/artifact`, { token: other });
  assert.equal(shown.status, 200, shown.text);
  assert.deepEqual(shown.body.manifest.vars, { OWNER: "other" }, "never another tenant's settings");
  // The same code and settings again is the same content, stored once.
  const again = await app.deploy(dev, mine.id, { moduleCode: code, env: { OWNER: "dev" } });
  assert.equal(again.body.codeSha256, first.body.codeSha256);
});

test("the plan's bundleBytes bounds a deployment's code: 3 MiB on free, raised or lowered per user", { timeout: 60_000 }, async () => {
  const token = await app.token("user_bundle_sizes");
  const userId = (await app.me(token)).body.id;
  const agent = (await app.createAgent(token, { name: "sized-bundle" })).body;
  const deploy = (form) => deployBundle(agent.id, form, {}, token);
  const MiB = 1024 * 1024;
  const main = `export default { fetch() { return Response.json({ protocol: "invoke/v1", output: { text: "sized" } }); } };`;
  // 3.5 MiB: two data files under the 5 MiB per-module limit, over the free plan's 3 MiB together.
  const form = () => bundleForm({ main: "index.js" }, [["index.js", main], ["a.bin", new Uint8Array(2 * MiB)], ["b.bin", new Uint8Array(1.5 * MiB)]]);
  const refused = expectError(assert, await deploy(form()), 413, "bundle_too_large");
  assert.deepEqual(refused.details, { limit: "totalBytes", max: 3 * MiB, actual: 3.5 * MiB + main.length });
  assert.equal(lcf.scripts().filter((s) => s.tags?.includes(`agent-${agent.id}`)).length, 0, "nothing uploaded");

  const setBundleBytes = (bundleBytes) => app.admin("PUT", `/users/${userId}/entitlements`, ADMIN, { bundleBytes });
  assert.equal((await setBundleBytes(10 * MiB)).status, 200);
  const accepted = await deploy(form());
  assert.equal(accepted.status, 202, JSON.stringify(accepted.body));
  assert.equal((await app.settled(token, agent.id, accepted.body.id)).status, "active");

  // Lowered: a single-module JSON deploy counts too.
  assert.equal((await setBundleBytes(64 * 1024)).status, 200);
  const json = await app.deploy(token, agent.id, { moduleCode: `// ${"x".repeat(70_000)}\n${main}` });
  assert.equal(expectError(assert, json, 413, "bundle_too_large").details.max, 64 * 1024);
  expectError(assert, await setBundleBytes(1024), 400, "validation_failed");
});

test("the clean-up job removes artifacts only deleted agents used, after the grace period, and keeps shared ones", { timeout: 90_000 }, async () => {
  const bucket = await app.mf.getR2Bucket("ARTIFACTS");
  const stored = async (sha) => (await bucket.head(`artifacts/${sha}.json`)) !== null;
  const claimsAgeBy = (ms) => app.db.prepare("UPDATE deployments SET artifact_deleted_at = artifact_deleted_at - ?1 WHERE artifact_deleted_at IS NOT NULL").bind(ms).run();
  const deploy = async (agentId, text) => {
    const res = await deployBundle(agentId, bundleForm({ main: "index.js" }, [["index.js", `export default { fetch() { return new Response(${JSON.stringify(text)}); } };`]]));
    assert.equal(res.status, 202, JSON.stringify(res.body));
    await app.settled(dev, agentId, res.body.id);
    return res.body.codeSha256;
  };
  const leaving = (await app.createAgent(dev, { name: "leaving-agent" })).body;
  const staying = (await app.createAgent(dev, { name: "staying-agent" })).body;
  const onlyLeaving = await deploy(leaving.id, "only the leaving agent");
  const shared = await deploy(leaving.id, "shared code");
  assert.equal(await deploy(staying.id, "shared code"), shared);
  assert.ok((await stored(onlyLeaving)) && (await stored(shared)));

  assert.equal((await app.deleteAgent(dev, leaving.id)).status, 204);
  // Within the grace period nothing goes.
  await app.runScheduled();
  assert.ok(await stored(onlyLeaving), "kept during the grace period");
  // Eight days later: the leaving agent's own code is claimed, and removed by a run 15 minutes later; the code
  // the staying agent also runs stays.
  await app.db.prepare("UPDATE agents SET deleted_at = deleted_at - ?1 WHERE id = ?2").bind(8 * 86_400_000, leaving.id).run();
  await app.runScheduled();
  assert.ok(await stored(onlyLeaving), "claimed, not removed yet");
  await claimsAgeBy(16 * 60_000);
  await app.runScheduled();
  assert.equal(await stored(onlyLeaving), false, "removed");
  assert.ok(await stored(shared), "a live deployment's artifact is never removed");
  const live = (await app.listDeployments(dev, staying.id)).body.deployments[0];
  assert.equal((await app.request("GET", `/v1/agents/${staying.id}/deployments/${live.id}/artifact`, { token: dev })).status, 200);
  // Again: nothing more to do, nothing else removed.
  await app.runScheduled();
  assert.ok(await stored(shared));

  // The removed code deployed again by another agent is stored again and counts as kept, so that agent can see
  // it and roll back to it, and its own deletion later removes it again.
  assert.equal(await deploy(staying.id, "only the leaving agent"), onlyLeaving);
  assert.ok(await stored(onlyLeaving), "stored again");
  const marked = await app.db.prepare("SELECT COUNT(*) AS n FROM deployments WHERE code_sha256 = ?1 AND (artifact_deleted_at IS NOT NULL OR artifact_removed_at IS NOT NULL)").bind(onlyLeaving).first();
  assert.equal(marked.n, 0, "no deployment counts it removed any more");
  // A deploy of claimed code clears the claim: it is never removed under a deployment recorded after the claim.
  const third = (await app.createAgent(dev, { name: "third-agent" })).body;
  const thirdCode = await deploy(third.id, "third's code");
  assert.equal((await app.deleteAgent(dev, third.id)).status, 204);
  await app.db.prepare("UPDATE agents SET deleted_at = deleted_at - ?1 WHERE id = ?2").bind(8 * 86_400_000, third.id).run();
  await app.runScheduled();
  const fourth = (await app.createAgent(dev, { name: "fourth-agent" })).body;
  assert.equal(await deploy(fourth.id, "third's code"), thirdCode);
  await claimsAgeBy(16 * 60_000);
  await app.runScheduled();
  assert.ok(await stored(thirdCode), "the claim was cleared by the later deploy");

  assert.equal((await app.deleteAgent(dev, staying.id)).status, 204);
  await app.db.prepare("UPDATE agents SET deleted_at = deleted_at - ?1 WHERE id = ?2").bind(8 * 86_400_000, staying.id).run();
  await app.runScheduled();
  await claimsAgeBy(16 * 60_000);
  await app.runScheduled();
  assert.equal(await stored(onlyLeaving), false);
  assert.equal(await stored(shared), false, "once no live agent uses it, shared code goes too");
});
