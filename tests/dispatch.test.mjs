// The gateway in dispatch_namespace mode: invocations go through the DISPATCHER binding (the local Cloudflare's
// emulated dispatch namespace) with per-tier limits, never over a public URL.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { startLocalCloudflare } from "../local-cloudflare/server.mjs";
import { startControlPlane, deployVars } from "./support/harness.mjs";
import { ECHO_AGENT, invokeBody } from "./support/agents.mjs";

const ADMIN = randomBytes(24).toString("hex");
let lcf, app, alice;
before(async () => {
  lcf = await startLocalCloudflare();
  app = await startControlPlane({
    vars: { ...deployVars(lcf, "dispatch_namespace"), ADMIN_TOKEN: ADMIN },
    dispatcher: { origin: lcf.origin, namespace: lcf.namespace },
  });
  alice = await app.token("user_dispatch");
});
after(async () => {
  await app?.close();
  await lcf?.close();
});

test("JSON and SSE through the dispatch namespace, with the tier's limits", async () => {
  const agent = (await app.createAgent(alice, { name: "dispatched" })).body;
  const dep = await app.settled(alice, agent.id, (await app.deploy(alice, agent.id)).body.id);
  assert.equal(dep.status, "active", JSON.stringify(dep.error));
  assert.equal(dep.deployTarget, "dispatch_namespace");
  // One atomic upload, secrets included: the whole deploy is a single API call in a namespace.
  assert.equal(lcf.apiCalls(dep.scriptName), 1);

  const res = await app.invoke(alice, agent.id, invokeBody("through the namespace"));
  assert.equal(res.status, 200, res.text);
  assert.equal(res.body.output.text, "through the namespace");
  assert.equal(res.headers.get("X-Deployment-Id"), dep.id);
  assert.deepEqual(lcf.dispatchLimits(dep.scriptName), { cpuMs: 50, subRequests: 50 }, "the free tier's limits");

  const streamed = await app.invokeStream(alice, agent.id, invokeBody("streamed too"));
  assert.deepEqual(streamed.events.map((e) => e.event), ["meta", "delta", "delta", "delta", "usage", "done"]);

  const me = (await app.me(alice)).body;
  assert.equal((await app.admin("PUT", `/users/${me.id}/tier`, ADMIN, { tier: "pro" })).status, 200);
  assert.equal((await app.invoke(alice, agent.id, invokeBody("as pro"))).status, 200);
  assert.deepEqual(lcf.dispatchLimits(dep.scriptName), { cpuMs: 1000, subRequests: 200 }, "the pro tier's limits, at once");
  const custom = await app.admin("PUT", `/users/${me.id}/entitlements`, ADMIN, { cpuMsPerInvocation: 120 });
  assert.equal(custom.status, 200, custom.text);
  assert.equal((await app.invoke(alice, agent.id, invokeBody("custom"))).status, 200);
  assert.deepEqual(lcf.dispatchLimits(dep.scriptName), { cpuMs: 120, subRequests: 200 });
});

test("rollback in dispatch mode reaches the reactivated script", async () => {
  const agent = (await app.createAgent(alice, { name: "dispatched-rollback" })).body;
  const v1 = await app.settled(alice, agent.id, (await app.deploy(alice, agent.id, { moduleCode: ECHO_AGENT, env: { VERSION: "v1" } })).body.id);
  const v2 = await app.settled(alice, agent.id, (await app.deploy(alice, agent.id, { moduleCode: ECHO_AGENT, env: { VERSION: "v2" } })).body.id);
  const version = async () => JSON.parse((await app.invoke(alice, agent.id, invokeBody("?"))).body.output.text).version;
  assert.equal(await version(), "v2");
  assert.equal((await app.activate(alice, agent.id, v1.id)).status, 200);
  assert.equal(await version(), "v1");
  assert.equal((await app.activate(alice, agent.id, v2.id)).status, 200);
  assert.equal(await version(), "v2");
});
