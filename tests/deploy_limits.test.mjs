// One tenant cannot exhaust the platform's shared deploy capacity: deploys in flight, deploys an hour and live
// scripts are limited per user from the entitlements, checked with the insert (concurrent deploys cannot
// overshoot) and before any Cloudflare API call.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startLocalCloudflare } from "../local-cloudflare/server.mjs";
import { deployVars, expectError, startControlPlane } from "./support/harness.mjs";

let lcf, app;
before(async () => {
  lcf = await startLocalCloudflare();
  app = await startControlPlane({
    vars: { ...deployVars(lcf), TIER_ENTITLEMENTS: JSON.stringify({ free: { maxAgents: 100, deploysInFlight: 2, deploysPerHour: 5, liveScripts: 4 } }) },
  });
});
after(async () => {
  await app?.close();
  await lcf?.close();
});

const uploads = () => lcf.scripts().length;

test("concurrent deploys past the in-flight limit are refused before the provider is called", async () => {
  const token = await app.token("limits-in-flight");
  const agents = [];
  for (let i = 0; i < 6; i++) agents.push((await app.createAgent(token, { name: `flight-${i}` })).body);
  const before = uploads();
  const answers = await Promise.all(agents.map((a) => app.deploy(token, a.id)));
  const accepted = answers.filter((r) => r.status === 202);
  const refused = answers.filter((r) => r.status === 429);
  assert.equal(accepted.length + refused.length, 6, answers.map((r) => r.text).join("\n"));
  assert.ok(accepted.length <= 2, `at most 2 at once, got ${accepted.length}`);
  assert.ok(accepted.length >= 1);
  for (const r of refused) {
    assert.equal(r.body.error.code, "deploy_limit_reached");
    assert.equal(r.body.error.details.entitlement, "deploysInFlight");
    assert.equal(r.headers.get("Retry-After"), "5");
  }
  for (const r of accepted) await app.settled(token, r.body.agentId, r.body.id);
  assert.equal(uploads() - before, accepted.length, "refused deploys never reached the provider");
});

test("deploys an hour and live scripts are limited, each refusal naming its limit", async () => {
  const hourly = await app.token("limits-hourly");
  const agent = (await app.createAgent(hourly, { name: "hourly" })).body;
  for (let i = 0; i < 5; i++) {
    const r = await app.deploy(hourly, agent.id, { moduleCode: "broken(" });
    assert.equal(r.status, 202, r.text);
    await app.settled(hourly, agent.id, r.body.id);
  }
  const sixth = expectError(assert, await app.deploy(hourly, agent.id), 429, "deploy_limit_reached");
  assert.deepEqual([sixth.details.entitlement, sixth.details.limit, sixth.details.current], ["deploysPerHour", 5, 5]);
  assert.equal(sixth.retryable, true);

  const busy = await app.token("limits-live");
  const scripted = (await app.createAgent(busy, { name: "scripted" })).body;
  for (let i = 0; i < 4; i++) {
    const r = await app.deploy(busy, scripted.id);
    assert.equal(r.status, 202, r.text);
    assert.equal((await app.settled(busy, scripted.id, r.body.id)).status, "active");
  }
  const full = expectError(assert, await app.deploy(busy, scripted.id), 429, "deploy_limit_reached");
  assert.equal(full.details.entitlement, "liveScripts");
  assert.equal(full.retryable, false, "waiting does not help: scripts must go");
  // Deleting the agent (its scripts go with it) makes room.
  assert.equal((await app.deleteAgent(busy, scripted.id)).status, 204);
  await app.runScheduled();
  const next = (await app.createAgent(busy, { name: "after-cleanup" })).body;
  assert.equal((await app.deploy(busy, next.id)).status, 202);
});

test("uploading a cleaned-up deployment again counts as a deploy: past the plan's limits it is refused before any upload", { timeout: 60_000 }, async () => {
  const token = await app.token("limits-restore");
  const agent = (await app.createAgent(token, { name: "restoring" })).body;
  const done = [];
  for (let i = 0; i < 4; i++) {
    const r = await app.deploy(token, agent.id, { moduleCode: `export default { fetch() { return new Response("v${i}"); } };` });
    assert.equal(r.status, 202, r.text);
    done.push(await app.settled(token, agent.id, r.body.id));
  }
  // As the clean-up job records them: the scripts of v1 and v2 deleted.
  const removeScript = (d) => app.db.prepare("UPDATE deployments SET script_deleted_at = ?1 WHERE id = ?2").bind(Date.now(), d.id).run();
  await removeScript(done[0]);
  await removeScript(done[1]);
  // The first restore is the fifth deploy of the hour: allowed.
  assert.equal((await app.activate(token, agent.id, done[0].id)).status, 200);
  // The second would be the sixth: refused, naming the limit, and nothing is uploaded.
  const calls = lcf.apiCalls(done[1].scriptName);
  const refused = expectError(assert, await app.activate(token, agent.id, done[1].id), 429, "deploy_limit_reached");
  assert.equal(refused.details.entitlement, "deploysPerHour");
  assert.equal(lcf.apiCalls(done[1].scriptName), calls, "no provider call");
  assert.equal((await app.getAgent(token, agent.id)).body.activeDeploymentId, done[0].id);
});
