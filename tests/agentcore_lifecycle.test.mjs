// The second runtime's lifecycle against the local AgentCore: versions slower than a deploy (followed by the cron
// job), versions that never start (the timeout), a failed first version and a lost runtime (recovery), and one
// AgentCore deploy of an agent at a time. (tests/agentcore.test.mjs holds deploys, invocations and the tier gate.)
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { expectError } from "./support/harness.mjs";
import { IMAGE, ROLE, invokeBody, startAgentCoreStack } from "./support/agentcore_stack.mjs";

let stack, app, agentcore, ADMIN;
before(async () => {
  stack = await startAgentCoreStack();
  ({ app, agentcore, admin: ADMIN } = stack);
});
after(async () => {
  await stack?.close();
});

const user = (subject, tier) => stack.user(subject, tier);
const deployImage = (token, agentId, json) => stack.deployImage(token, agentId, json);
const invocations = () => stack.invocations();

test("a version slower than the deploy's 18 s stays deploying, and its follower takes it to active once READY, with no cron run", { timeout: 120_000 }, async () => {
  const pro = await user("agentcore_slow", "pro");
  const agent = (await app.createAgent(pro.token, { name: "slow-container" })).body;
  agentcore.holdVersions(true);
  let accepted;
  try {
    accepted = await app.deploy(pro.token, agent.id, { runtimeProvider: "agentcore", containerUri: IMAGE("slow") });
    assert.equal(accepted.status, 202, accepted.text);
    // Past the deploy's own budget (18 s, its calls answered at once here): still deploying, its version recorded.
    const looks = () => agentcore.requests().filter((r) => r.operation === "GetAgentRuntime").length;
    await new Promise((r) => setTimeout(r, 21_000));
    const pending = (await app.getDeployment(pro.token, agent.id, accepted.body.id)).body;
    assert.equal(pending.status, "deploying", JSON.stringify(pending.error));
    assert.match(pending.providerRef, /\?version=1&qualifier=/);
    // From 25 s on, its follower looks at the version (every 5 s); AgentCore is still at work.
    const before = looks();
    await new Promise((r) => setTimeout(r, 11_000));
    assert.ok(looks() > before, `the follower looked at the version (${looks() - before} looks after the deploy's own)`);
    assert.equal((await app.getDeployment(pro.token, agent.id, accepted.body.id)).body.status, "deploying");
  } finally {
    agentcore.holdVersions(false);
  }
  // AgentCore brings it up; the follower (every 5 s at this age) makes the endpoint and ends the deploy.
  const done = await app.until("the follower to end it", async () => {
    const now = (await app.getDeployment(pro.token, agent.id, accepted.body.id)).body;
    return now.status !== "deploying" ? now : null;
  }, 30_000);
  assert.equal(done.status, "active", JSON.stringify(done.error));
  assert.equal((await app.getAgent(pro.token, agent.id)).body.activeDeploymentId, done.id);
  assert.equal((await app.invoke(pro.token, agent.id, invokeBody("finally"))).body.output.text, "[slow] finally");
  const trail = await app.until("the owner's trail", async () => {
    const rows = (await app.request("GET", "/v1/audit?action=deploy.finish", { token: pro.token })).body.entries ?? [];
    return rows.find((r) => r.target === accepted.body.id);
  });
  assert.equal(trail.outcome, "ok");
});

test("a deploy cut off before it recorded anything is failed by its follower (step interrupted) and holds nothing up", { timeout: 90_000 }, async () => {
  const pro = await user("agentcore_interrupted", "pro");
  const agent = (await app.createAgent(pro.token, { name: "interrupted-container" })).body;
  const first = await deployImage(pro.token, agent.id, { containerUri: IMAGE("v1") });
  assert.equal(first.status, "active", JSON.stringify(first.error));
  // A deploy whose background work Workers ended 100 s ago, before it recorded its version: a row still
  // `deploying`, with no provider reference, and its follower told (as the deploy's background work does first).
  const id = `dep_${"cafe".repeat(6)}`;
  const createdAt = Date.now() - 100_000;
  const columns = (await app.db.prepare("PRAGMA table_info(deployments)").all()).results.map((c) => c.name);
  const override = { id: "?1", version: "version + 1", status: "'deploying'", provider_ref: "NULL", error_json: "NULL", idempotency_key: "NULL", script_name: "'wh-dep-" + "cafe".repeat(6) + "'", created_at: "?2", updated_at: "?2", finished_at: "NULL", script_deleted_at: "NULL" };
  await app.db
    .prepare(`INSERT INTO deployments (${columns.join(", ")}) SELECT ${columns.map((c) => override[c] ?? c).join(", ")} FROM deployments WHERE id = ?3`)
    .bind(id, createdAt, first.id)
    .run();
  // While it is deploying, the agent's next AgentCore deploy waits for it.
  expectError(assert, await app.deploy(pro.token, agent.id, { runtimeProvider: "agentcore", containerUri: IMAGE("v2") }), 409, "deploy_in_progress");
  const follower = await app.durableObject("DEPLOY_FOLLOWER", id);
  const told = await follower.fetch("https://follower/follow", {
    method: "POST",
    body: JSON.stringify({ userId: pro.id, agentId: agent.id, deploymentId: id, createdAt }),
  });
  assert.equal(told.status, 200, await told.text());
  const failed = await app.until("the follower to fail it", async () => {
    const now = (await app.getDeployment(pro.token, agent.id, id)).body;
    return now.status === "failed" ? now : null;
  }, 30_000);
  assert.equal(failed.error.step, "interrupted");
  assert.match(failed.error.message, /deploy again/);
  const trail = await app.until("the owner's trail", async () => {
    const rows = (await app.request("GET", "/v1/audit?action=deploy.finish", { token: pro.token })).body.entries ?? [];
    return rows.find((r) => r.target === id);
  });
  assert.equal(trail.outcome, "failed");
  // The agent kept serving its active deployment, and deploys again.
  assert.equal((await app.getAgent(pro.token, agent.id)).body.activeDeploymentId, first.id);
  const next = await deployImage(pro.token, agent.id, { containerUri: IMAGE("v2") });
  assert.equal(next.status, "active", JSON.stringify(next.error));
});

test("recovery: a failed first version takes its runtime with it so the next deploy starts afresh; a runtime nobody recorded is found by name", { timeout: 90_000 }, async () => {
  const pro = await user("agentcore_recovery", "pro");
  const agent = (await app.createAgent(pro.token, { name: "recovering-container" })).body;
  const named = () => agentcore.runtimes().filter((r) => r.name === `webhost_${agent.id.slice(4)}`);
  agentcore.failNextVersions("exec format error");
  const first = await deployImage(pro.token, agent.id, { containerUri: IMAGE("v1") });
  assert.equal(first.status, "failed");
  await app.until("the failed runtime's deletion", async () => named().length === 0);
  const second = await deployImage(pro.token, agent.id, { containerUri: IMAGE("v2") });
  assert.equal(second.status, "active", JSON.stringify(second.error));
  assert.match(second.providerRef, /\?version=1&/, "a new runtime, from version 1");

  // The runtime exists but the control plane lost track of it (a create whose answer never came back). It is
  // looked for page by page (a page of one runtime here, so it sits on a later page).
  await app.db.prepare("UPDATE agents SET agentcore_runtime_id = NULL WHERE id = ?1").bind(agent.id).run();
  const lists = agentcore.requests().filter((r) => r.operation === "ListAgentRuntimes").length;
  agentcore.setPageSize(1);
  let third;
  try {
    third = await deployImage(pro.token, agent.id, { containerUri: IMAGE("v3") });
  } finally {
    agentcore.setPageSize(100);
  }
  assert.ok(agentcore.requests().filter((r) => r.operation === "ListAgentRuntimes").length - lists >= 2, "read past the first page");
  assert.equal(third.status, "active", JSON.stringify(third.error));
  assert.match(third.providerRef, /\?version=2&/, "the existing runtime, found by its name, got a new version");
  assert.equal(named().length, 1);
  assert.equal((await app.invoke(pro.token, agent.id, invokeBody("recovered"))).body.output.text, "[v3] recovered");
});

test("one AgentCore deploy of an agent at a time: a second while the first runs is refused before AgentCore is called", { timeout: 90_000 }, async () => {
  const pro = await user("agentcore_serial", "pro");
  const agent = (await app.createAgent(pro.token, { name: "serial-container" })).body;
  const versionsMade = () => agentcore.requests().filter((r) => ["CreateAgentRuntime", "UpdateAgentRuntime"].includes(r.operation)).length;
  const made = versionsMade();
  agentcore.holdVersions(true);
  try {
    const first = await app.deploy(pro.token, agent.id, { runtimeProvider: "agentcore", containerUri: IMAGE("one") });
    assert.equal(first.status, 202, first.text);
    // (The first deploy keeps polling its version meanwhile; the refused one makes no version.)
    await app.until("the first deploy's version", async () => versionsMade() === made + 1);
    const second = expectError(assert, await app.deploy(pro.token, agent.id, { runtimeProvider: "agentcore", containerUri: IMAGE("two") }), 409, "deploy_in_progress");
    assert.equal(second.retryable, true);
    // A deploy limit that also holds it back is the one named (read with the refused insert).
    assert.equal((await app.admin("PUT", `/users/${pro.id}/entitlements`, ADMIN, { deploysInFlight: 1 })).status, 200);
    const limited = expectError(assert, await app.deploy(pro.token, agent.id, { runtimeProvider: "agentcore", containerUri: IMAGE("two") }), 429, "deploy_limit_reached");
    assert.equal(limited.details.entitlement, "deploysInFlight");
    assert.equal((await app.admin("PUT", `/users/${pro.id}/entitlements`, ADMIN, { deploysInFlight: 5 })).status, 200);
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(versionsMade(), made + 1, "nothing sent for the refused deploy");
    // A Cloudflare deploy of the same agent is not held back.
    assert.equal((await app.deploy(pro.token, agent.id, {})).status, 202);
  } finally {
    agentcore.holdVersions(false);
  }
  const deployments = (await app.listDeployments(pro.token, agent.id)).body.deployments;
  for (const d of deployments) await app.settled(pro.token, agent.id, d.id, 60_000);
});

test("a version that never becomes ready is failed by the 10-minute timeout, reported, and deleted from AgentCore", { timeout: 90_000 }, async () => {
  const pro = await user("agentcore_timeout", "pro");
  const agent = (await app.createAgent(pro.token, { name: "stuck-container" })).body;
  const named = () => agentcore.runtimes().filter((r) => r.name === `webhost_${agent.id.slice(4)}`);
  agentcore.holdVersions(true);
  try {
    const accepted = await app.deploy(pro.token, agent.id, { runtimeProvider: "agentcore", containerUri: IMAGE("stuck") });
    assert.equal(accepted.status, 202, accepted.text);
    await app.until("its version", async () => (await app.getDeployment(pro.token, agent.id, accepted.body.id)).body.providerRef);
    await app.db.prepare("UPDATE deployments SET created_at = created_at - 660000 WHERE id = ?1").bind(accepted.body.id).run();
    await app.runScheduled();
    const failed = (await app.getDeployment(pro.token, agent.id, accepted.body.id)).body;
    assert.equal(failed.status, "failed");
    assert.equal(failed.error.step, "timeout");
    const trail = await app.until("the owner's trail", async () => {
      const rows = (await app.request("GET", "/v1/audit?action=deploy.finish", { token: pro.token })).body.entries ?? [];
      return rows.find((r) => r.target === accepted.body.id);
    });
    assert.equal(trail.outcome, "failed");
    // The next clean-up run deletes what it left on AgentCore (its only version: the whole runtime).
    await app.runScheduled();
    await app.until("the runtime's deletion", async () => named().length === 0);
  } finally {
    agentcore.holdVersions(false);
  }
});

test("deleting an agent's whole runtime and a new deploy of the agent exclude each other; a deploy waits for the deleted runtime's name", { timeout: 170_000 }, async () => {
  const pro = await user("agentcore_lease", "pro");
  const agent = (await app.createAgent(pro.token, { name: "leased-container" })).body;
  const named = () => agentcore.runtimes().filter((r) => r.name === `webhost_${agent.id.slice(4)}`);
  const calls = (operation) => agentcore.requests().filter((r) => r.operation === operation).length;
  const [deletes, versionsMade] = [calls("DeleteAgentRuntime"), () => calls("CreateAgentRuntime") + calls("UpdateAgentRuntime")];
  // The failed first version takes its runtime with it; that deletion is held at AgentCore, and released within
  // a second or two (should the control plane give up on the call first, after 5 s, the lease expires instead).
  const release = agentcore.holdCalls("DeleteAgentRuntime");
  let made, cloudflare;
  try {
    agentcore.failNextVersions("exec format error");
    const first = await deployImage(pro.token, agent.id, { containerUri: IMAGE("v1") });
    assert.equal(first.status, "failed");
    await app.until("the runtime's deletion to be sent", async () => calls("DeleteAgentRuntime") > deletes, 5_000);
    made = versionsMade();
    // Taking the lease, the agent stopped recording the runtime: no deploy updates a runtime being deleted, even
    // should this deletion's answer never come.
    assert.equal((await app.db.prepare("SELECT agentcore_runtime_id AS r FROM agents WHERE id = ?1").bind(agent.id).first()).r, null);
    // Without the lease this deploy would add its version to the runtime being deleted, and lose it with it.
    const refused = expectError(assert, await app.deploy(pro.token, agent.id, { runtimeProvider: "agentcore", containerUri: IMAGE("v2") }), 409, "deploy_in_progress");
    assert.equal(refused.retryable, true);
    assert.equal(versionsMade(), made, "nothing sent for the refused deploy");
    // The lease is the agent's AgentCore runtime only: a Cloudflare deploy goes ahead.
    cloudflare = await app.deploy(pro.token, agent.id, {});
    assert.equal(cloudflare.status, 202, cloudflare.text);
    // The deletion is answered, but AgentCore goes on deleting the runtime for a while (its name still taken).
    agentcore.holdDeletions(true);
  } finally {
    release();
  }
  let accepted;
  try {
    await app.until("the lease to be given back", async () => {
      const t = (await app.db.prepare("SELECT agentcore_removing_until AS t FROM agents WHERE id = ?1").bind(agent.id).first()).t;
      return t === null || t <= Date.now();
    }, 70_000);
    const lists = calls("ListAgentRuntimes");
    accepted = await app.deploy(pro.token, agent.id, { runtimeProvider: "agentcore", containerUri: IMAGE("v2") });
    assert.equal(accepted.status, 202, accepted.text);
    await app.until("the deploy to find the name taken", async () => calls("ListAgentRuntimes") > lists);
    await new Promise((r) => setTimeout(r, 1_000));
  } finally {
    agentcore.holdDeletions(false);
  }
  await app.settled(pro.token, agent.id, cloudflare.body.id, 60_000);
  const second = await app.settled(pro.token, agent.id, accepted.body.id, 60_000);
  assert.equal(second.status, "active", JSON.stringify(second.error));
  assert.match(second.providerRef, /\?version=1&/, "a new runtime, from version 1");
  assert.ok(second.retries > 0, "it waited for the old runtime's name");
  assert.equal(named().length, 1);
  assert.equal((await app.invoke(pro.token, agent.id, invokeBody("after the lease"))).body.output.text, "[v2] after the lease");
});

test("a version AgentCore made though its answer was lost is found by its description and deleted by the clean-up job", { timeout: 120_000 }, async () => {
  const pro = await user("agentcore_lost_answer", "pro");
  const agent = (await app.createAgent(pro.token, { name: "lost-answer-container" })).body;
  const first = await deployImage(pro.token, agent.id, { containerUri: IMAGE("v1") });
  assert.equal(first.status, "active", JSON.stringify(first.error));
  const runtime = () => agentcore.runtimes().find((r) => r.name === `webhost_${agent.id.slice(4)}`);
  // AgentCore makes the version, but no answer ever arrives (each try times out after 5 s, until the deploy's
  // budget is spent): the deploy fails without knowing the version exists.
  const release = agentcore.holdCalls("UpdateAgentRuntime", { runFirst: true });
  let failed;
  try {
    const accepted = await app.deploy(pro.token, agent.id, { runtimeProvider: "agentcore", containerUri: IMAGE("v2") });
    assert.equal(accepted.status, 202, accepted.text);
    failed = await app.settled(pro.token, agent.id, accepted.body.id, 60_000);
  } finally {
    release();
  }
  assert.equal(failed.status, "failed");
  assert.equal(failed.error.step, "runtime");
  assert.equal(failed.providerRef, null, "it never learned of its version");
  // Its version is left alone at first (a lost answer's call may still be under way at AgentCore) ...
  await app.runScheduled();
  assert.equal(runtime().versions.length, 2, "not looked for yet");
  // ... and two minutes after the failure the clean-up job finds it by its description and deletes it; the
  // serving version stays and still answers.
  await app.db.prepare("UPDATE deployments SET finished_at = finished_at - 120000 WHERE id = ?1").bind(failed.id).run();
  await app.runScheduled();
  await app.until("the unrecorded version's deletion", async () => runtime().versions.every((v) => v.number === "1"), 30_000);
  assert.equal((await app.getAgent(pro.token, agent.id)).body.activeDeploymentId, first.id);
  assert.equal((await app.invoke(pro.token, agent.id, invokeBody("still here"))).body.output.text, "[v1] still here");
  const lookups = agentcore.requests().filter((r) => r.operation === "ListAgentRuntimeVersions");
  assert.ok(lookups.length >= 1, "looked for by its description");
});
