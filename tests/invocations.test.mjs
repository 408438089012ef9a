// A user's record of their own invocations (GET /v1/agents/:id/invocations): newest first, paginated, tenant
// isolated; and the retention job that prunes old metering rows and telemetry rejects.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startLocalCloudflare } from "../local-cloudflare/server.mjs";
import { deployVars, expectError, startControlPlane } from "./support/harness.mjs";
import { invokeBody } from "./support/agents.mjs";

let lcf, app, alice, bob;
before(async () => {
  lcf = await startLocalCloudflare();
  app = await startControlPlane({ vars: { ...deployVars(lcf), INVOCATIONS_RETENTION_DAYS: "30", TELEMETRY_REJECTS_RETENTION_DAYS: "7" } });
  alice = await app.token("invocations-alice");
  bob = await app.token("invocations-bob");
});
after(async () => {
  await app?.close();
  await lcf?.close();
});

const list = (token, agentId, query = "") => app.request("GET", `/v1/agents/${agentId}/invocations${query}`, { token });

test("the caller lists their agent's invocations, newest first, a page at a time, and nobody else's", async () => {
  const { agent, deployment } = await app.deployedAgent(alice, "listed");
  const traces = [];
  for (const text of ["one", "two", "three"]) {
    const res = await app.invoke(alice, agent.id, invokeBody(text));
    assert.equal(res.status, 200, res.text);
    traces.push(res.body.traceId);
  }
  await app.disableAgent(alice, agent.id);
  expectError(assert, await app.invoke(alice, agent.id, invokeBody("refused")), 409, "agent_disabled");
  const all = await app.until("four metered calls", async () => {
    const res = await list(alice, agent.id);
    return res.body.invocations?.length === 4 && res.body;
  });
  assert.equal(all.nextCursor, null);
  const [refused, ...ok] = all.invocations;
  assert.deepEqual(
    { outcome: refused.outcome, errorClass: refused.errorClass, counted: refused.counted, deploymentId: refused.deploymentId },
    { outcome: "agent_disabled", errorClass: "refused", counted: false, deploymentId: deployment.id },
  );
  assert.deepEqual(ok.map((i) => i.id), [...traces].reverse(), "newest first");
  for (const i of ok) {
    assert.deepEqual([i.outcome, i.errorClass, i.counted, i.upstreamStatus, i.mode], ["ok", null, true, 200, "json"]);
    assert.ok(i.wallMs >= 0 && i.startedAt > 0);
  }
  // Two pages of two.
  const first = (await list(alice, agent.id, "?limit=2")).body;
  assert.equal(first.invocations.length, 2);
  const second = (await list(alice, agent.id, `?limit=2&cursor=${first.nextCursor}`)).body;
  assert.deepEqual([...first.invocations, ...second.invocations].map((i) => i.id), all.invocations.map((i) => i.id));
  assert.equal(second.nextCursor, null);
  // Someone else's agent is indistinguishable from one that does not exist; bad input is a 400.
  expectError(assert, await list(bob, agent.id), 404, "agent_not_found");
  expectError(assert, await list(alice, agent.id, "?limit=0"), 400, "invalid_query");
  expectError(assert, await list(alice, agent.id, "?cursor=not-a-cursor"), 400, "invalid_cursor");
});

test("the cron job prunes metering rows and telemetry rejects past their retention, and keeps the rest", async () => {
  const { agent, deployment } = await app.deployedAgent(bob, "aging");
  const userId = (await app.me(bob)).body.id;
  const day = 86_400_000;
  const now = Date.now();
  const insert = (id, startedAt) =>
    app.db
      .prepare("INSERT INTO invocations (id, request_id, user_id, agent_id, deployment_id, period_key, mode, outcome, counted, started_at, wall_ms) VALUES (?, 'req', ?, ?, ?, '2026-01', 'json', 'ok', 1, ?, 1)")
      .bind(id, userId, agent.id, deployment.id, startedAt)
      .run();
  await insert("trc_old", now - 31 * day);
  await insert("trc_young", now - 29 * day);
  const reject = (id, at) => app.db.prepare("INSERT INTO telemetry_rejects (id, at, request_id, code, status) VALUES (?, ?, 'req', 'x', 400)").bind(id, at).run();
  await reject("tlr_old", now - 8 * day);
  await reject("tlr_young", now - 6 * day);
  await app.runScheduled();
  const ids = (await list(bob, agent.id)).body.invocations.map((i) => i.id);
  assert.deepEqual(ids, ["trc_young"]);
  const rejects = (await app.db.prepare("SELECT id FROM telemetry_rejects WHERE id LIKE 'tlr_%' ORDER BY id").all()).results.map((r) => r.id);
  assert.deepEqual(rejects, ["tlr_young"]);
});
