// Platform-measured usage: the gateway charges the compute it measures for every admitted call (forwarding to
// the answer's last byte, a stream the client cancels included) to the user's period, so an agent that reports
// no telemetry still uses its compute quota; the token counts an answer carried are recorded beside the signed
// telemetry, so the operator sees a mismatch.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { startLocalCloudflare } from "../local-cloudflare/server.mjs";
import { deployVars, expectError, startControlPlane } from "./support/harness.mjs";
import { UNRULY_AGENT, invokeBody, startGate } from "./support/agents.mjs";

const ADMIN = randomBytes(24).toString("hex");
let lcf, gate, app;
before(async () => {
  lcf = await startLocalCloudflare();
  gate = await startGate();
  app = await startControlPlane({ vars: { ...deployVars(lcf, "workers_dev"), ADMIN_TOKEN: ADMIN } });
});
after(async () => {
  await app?.close();
  await gate?.close();
  await lcf?.close();
});

/** A user with one deployed agent that never reports telemetry (`UNRULY_AGENT`). */
async function silentAgent(subject) {
  const token = await app.token(subject);
  const userId = (await app.me(token)).body.id;
  const { agent } = await app.deployedAgent(token, "silent", { moduleCode: UNRULY_AGENT });
  const call = (metadata) => app.invoke(token, agent.id, invokeBody("x", { metadata: { gate: gate.url, ...metadata } }));
  return { token, userId, agent, call };
}

/** The user's one call and the measured total, read together: there only once the call's last (charging)
 * write has landed. */
const chargedCall = (userId) =>
  app.db
    .prepare(
      "SELECT i.outcome, i.counted, i.wall_ms, m.invocations, m.gateway_ms FROM invocations i " +
        "JOIN measured_usage m ON m.user_id = i.user_id AND m.period_key = i.period_key WHERE i.user_id = ?",
    )
    .bind(userId)
    .first();

const measured = async (userId) =>
  (await app.db.prepare("SELECT invocations, gateway_ms, answer_input_tokens, answer_output_tokens FROM measured_usage WHERE user_id = ?").bind(userId).first()) || null;

test("an agent that reports nothing still spends its compute quota: the gateway's measure is charged", async () => {
  const { token, userId, call } = await silentAgent("measured-silent");
  const set = await app.admin("PUT", `/users/${userId}/entitlements`, ADMIN, { computeMsPerPeriod: 250 });
  assert.equal(set.status, 200, set.text);

  const slow = await call({ mode: "slow", ms: 400 });
  assert.equal(slow.status, 200, slow.text);
  // Written after the answer (waitUntil): the measured total reaches D1, and the gate, which then refuses.
  const row = await app.until("the measured charge", async () => {
    const m = await measured(userId);
    return m && m.gateway_ms >= 400 && m;
  });
  assert.equal(row.invocations, 1);
  let admittedMeanwhile = 0;
  const refused = await app.until("the next call to be refused", async () => {
    const res = await call({ mode: "json-always" });
    if (res.status === 200) admittedMeanwhile += 1;
    return res.status !== 200 && res;
  });
  const err = expectError(assert, refused, 429, "quota_exhausted");
  assert.equal(err.details.entitlement, "computeMsPerPeriod");
  assert.ok(err.details.used >= 400, JSON.stringify(err.details));

  const usage = await app.usageCurrent(token);
  assert.equal(usage.status, 200, usage.text);
  assert.equal(usage.body.totals.computeMs, 0, "the agent reported nothing");
  assert.ok(usage.body.totals.gatewayMs >= 400, JSON.stringify(usage.body.totals));
  assert.equal(usage.body.remaining.computeMs, 0);
  assert.ok(usage.body.exhausted.includes("computeMsPerPeriod"));
  // Refused calls are never charged: exactly the admitted ones add to the measure.
  const admitted = 1 + admittedMeanwhile;
  await app.until("every admitted call measured", async () => (await measured(userId)).invocations >= admitted);
  await new Promise((r) => setTimeout(r, 300));
  assert.equal((await measured(userId)).invocations, admitted, "the refused call was not charged");
  const history = await app.usageHistory(token, "?periods=1");
  assert.ok(history.body.periods[0].totals.gatewayMs >= 400, JSON.stringify(history.body));

  // Raising the quota lets calls through again once the gate hears of it.
  await app.admin("PUT", `/users/${userId}/entitlements`, ADMIN, { computeMsPerPeriod: 1_000_000 });
  assert.equal((await call({ mode: "json-always" })).status, 200);
});

test("the token counts an answer carried are recorded per call and beside the telemetry for the operator", async () => {
  const { token, userId, agent, call } = await silentAgent("measured-answers");
  for (let i = 0; i < 3; i++) assert.equal((await call({ mode: "json-always" })).status, 200);
  const m = await app.until("three measured calls", async () => {
    const row = await measured(userId);
    return row && row.invocations === 3 && row;
  });
  assert.equal(m.answer_input_tokens, 3);
  assert.equal(m.answer_output_tokens, 6);

  const list = await app.request("GET", `/v1/agents/${agent.id}/invocations`, { token });
  assert.equal(list.status, 200, list.text);
  assert.deepEqual(list.body.invocations.map((i) => i.answerUsage), Array(3).fill({ inputTokens: 1, outputTokens: 2 }));

  const usage = await app.admin("GET", `/users/${userId}/usage`, ADMIN);
  assert.equal(usage.status, 200, usage.text);
  assert.deepEqual(usage.body.measured, { invocations: 3, gatewayMs: m.gateway_ms, answerInputTokens: 3, answerOutputTokens: 6 });
  // The agent told its callers about 9 tokens and its telemetry reported none: the operator sees the gap.
  assert.deepEqual(usage.body.answeredVsReported, { inputTokens: 3, outputTokens: 6 });
});

test("a stream the client cancels is charged up to the moment it went away", async () => {
  const { token, userId, agent } = await silentAgent("measured-cancel");
  const started = Date.now();
  const res = await app.invokeStream(token, agent.id, invokeBody("x", { metadata: { mode: "ticks", gate: gate.url, run: "cancel" } }), {
    onEvent: (event, controller) => {
      if (event.event === "delta" && Date.now() - started >= 500) controller.abort();
    },
  });
  assert.equal(res.status, 200);
  assert.ok(res.aborted, "the client cancelled");
  const row = await app.until("the cancelled stream's last write", () => chargedCall(userId));
  assert.equal(row.outcome, "client_closed");
  assert.equal(row.counted, 1);
  assert.ok(row.wall_ms >= 500, `measured ${row.wall_ms} ms`);
  assert.ok(row.wall_ms < 4_000, `the whole stream would take 4 s; measured ${row.wall_ms} ms`);
  assert.equal(row.invocations, 1, "charged once, not once per write");
  // Charged from forwarding the call, so at most the call's whole time (which also holds auth and the gate).
  assert.ok(row.gateway_ms >= 500 && row.gateway_ms <= row.wall_ms, JSON.stringify(row));
  // The agent was cancelled with the client: far fewer than its 40 ticks ran.
  await new Promise((r) => setTimeout(r, 300));
  assert.ok(gate.count("cancel", "tick") < 20, `${gate.count("cancel", "tick")} of 40 ticks ran`);
});

test("a JSON call whose client goes away is still recorded and charged", async () => {
  const { token, userId, agent } = await silentAgent("measured-json-cancel");
  const controller = new AbortController();
  const pending = fetch(new URL(`/v1/invoke/${agent.id}`, app.url), {
    method: "POST",
    headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
    body: JSON.stringify(invokeBody("x", { metadata: { mode: "slow", ms: 1500 } })),
    signal: controller.signal,
  });
  setTimeout(() => controller.abort(), 500);
  await assert.rejects(pending, { name: "AbortError" });
  const row = await app.until("the abandoned call's row", () => chargedCall(userId));
  // Where the runtime tells the worker its client left (request.signal), the call ends then, as client_closed,
  // and the agent's answer is cancelled; where it cannot tell (a plain HTTP/1.1 client that closes while waiting
  // is noticed only on writing), the call runs to the agent's answer. Either way it counts and is charged.
  assert.ok(["client_closed", "ok"].includes(row.outcome), row.outcome);
  assert.equal(row.counted, 1);
  assert.equal(row.invocations, 1);
  assert.ok(row.gateway_ms >= 450, `measured ${row.gateway_ms} ms`);
});
