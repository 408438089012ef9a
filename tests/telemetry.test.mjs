// Telemetry ingestion against real deployments (their secrets sealed in D1, the template running in the local
// Cloudflare): every rejection, dedupe of retries and batches, billing usage kept in step with the raw events,
// the recompute and retention jobs, and the tenant-isolated usage and metrics reads.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startLocalCloudflare } from "../local-cloudflare/server.mjs";
import { createHmac } from "node:crypto";
import { startControlPlane, deployVars, expectError, signTelemetry } from "./support/harness.mjs";

const ADMIN = "telemetry-test-admin-token-0123456789abcdef";
let lcf, app, alice, bob, a, b;

/** A deployment with what signing as it needs: its ids and its secret as the agent holds it. */
async function agentOf(token, name) {
  const { agent, deployment } = await app.deployedAgent(token, name);
  const me = await app.me(token);
  return {
    agent,
    deployment,
    userId: me.body.id,
    secret: lcf.secretValue(deployment.scriptName, "TELEMETRY_SECRET"),
  };
}

before(async () => {
  lcf = await startLocalCloudflare();
  // Agents report to a dead address here: every report in this file is sent by the test, signed as the agent.
  app = await startControlPlane({ vars: { ...deployVars(lcf), ADMIN_TOKEN: ADMIN } });
  alice = await app.token("user_alice");
  bob = await app.token("user_bob");
  a = await agentOf(alice, "alice-agent");
  b = await agentOf(bob, "bob-agent");
  // Seed 001: base64url of 32 raw key bytes.
  assert.match(a.secret, /^[A-Za-z0-9_-]{43}$/);
  assert.equal(Buffer.from(a.secret, "base64url").length, 32);
});
after(async () => {
  await app?.close();
  await lcf?.close();
});

let seq = 0;
function event(of, over = {}) {
  seq += 1;
  return {
    eventId: `ev-${process.pid}-${seq}`,
    traceId: app.admittedTraceId(of.deployment.id),
    userId: of.userId,
    agentId: of.agent.id,
    deploymentId: of.deployment.id,
    runtimeProvider: "cloudflare",
    ts: Date.now(),
    requests: 1,
    inputTokens: 2,
    outputTokens: 3,
    computeMs: 5,
    errors: 0,
    ...over,
  };
}

const send = (of, body, options = {}) => app.report(of.deployment.id, body, { secret: of.secret, ...options });

async function stored() {
  const events = (await app.db.prepare("SELECT * FROM metrics_events ORDER BY deployment_id, dedupe_key").all()).results;
  const usage = (await app.db.prepare("SELECT * FROM billing_usage ORDER BY user_id, period_key").all()).results;
  return { events, usage };
}

async function usageRow(userId) {
  return (await app.db.prepare("SELECT * FROM billing_usage WHERE user_id = ?").bind(userId).all()).results;
}

test("an agent written to seed 001's contract reports: HMAC-SHA256 keyed with the bytes TELEMETRY_SECRET encodes", async () => {
  // Node's crypto, as a third party's agent would sign: the secret is base64url of the raw key bytes.
  const body = JSON.stringify(event(a, { inputTokens: 1 }));
  const signature = `v1=${createHmac("sha256", Buffer.from(a.secret, "base64url")).update(body).digest("hex")}`;
  const res = await send(a, body, { signature });
  assert.equal(res.status, 200, res.text);
  assert.equal(res.body.accepted, 1);
  // Keyed with the text of the secret instead of its bytes: refused.
  const wrong = `v1=${createHmac("sha256", a.secret).update(body).digest("hex")}`;
  expectError(assert, await send(a, JSON.stringify(event(a)), { signature: wrong }), 401, "invalid_telemetry_signature");
});

test("a signed event is stored once however often it is retried or replayed", async () => {
  const body = JSON.stringify(event(a, { inputTokens: 7 }));
  const first = await send(a, body);
  assert.equal(first.status, 200, first.text);
  assert.equal(first.body.accepted, 1);
  assert.equal(first.body.duplicates, 0);
  assert.match(first.body.periodKey, /^\d{4}-\d{2}$/);
  const before = await usageRow(a.userId);
  const retries = await Promise.all(Array.from({ length: 8 }, () => send(a, body)));
  for (const r of retries) assert.deepEqual([r.status, r.body.accepted, r.body.duplicates], [200, 0, 1], r.text);
  assert.deepEqual(await usageRow(a.userId), before.map((r) => ({ ...r, updated_at: r.updated_at })));
  const rows = (await app.db.prepare("SELECT COUNT(*) AS n FROM metrics_events WHERE event_id = ?").bind(JSON.parse(body).eventId).first()).n;
  assert.equal(rows, 1);
});

test("an event without an eventId is deduplicated by its traceId", async () => {
  const e = event(a, { eventId: undefined });
  delete e.eventId;
  assert.equal((await send(a, e)).body.accepted, 1);
  // A re-serialised copy (different bytes, same trace) is signed afresh by the agent: still a duplicate.
  const again = await send(a, { ...e, ts: e.ts + 1 });
  assert.deepEqual([again.status, again.body.accepted], [200, 0], again.text);
});

test("every rejection: a stable code, nothing stored, one audit row each", async () => {
  const good = () => JSON.stringify(event(a));
  const signedByA = good();
  const reordered = JSON.stringify(Object.fromEntries(Object.entries(JSON.parse(signedByA)).reverse()));
  const flipped = Buffer.from(signedByA);
  flipped[flipped.indexOf("3")] = "4".charCodeAt(0); // outputTokens 3 → 4: one byte
  const oversized = JSON.stringify({ ...event(a), padding: "x".repeat(70 * 1024) });
  const wrongSecret = "0".repeat(64);
  const cases = [
    ["no deployment header", () => app.report(undefined, signedByA, { secret: a.secret }), 400, "invalid_telemetry_headers"],
    ["garbled deployment header", () => app.report("dep_nope", signedByA, { secret: a.secret }), 400, "invalid_telemetry_headers"],
    ["no signature header", () => send(a, signedByA, { secret: undefined }), 400, "invalid_telemetry_headers"],
    ["garbled signature header", () => send(a, signedByA, { signature: "sha256=abc" }), 400, "invalid_telemetry_headers"],
    ["short signature", () => send(a, signedByA, { signature: "v1=abcd" }), 400, "invalid_telemetry_headers"],
    ["unknown deployment", () => app.report("dep_" + "0".repeat(24), signedByA, { secret: a.secret }), 401, "unknown_deployment"],
    ["wrong secret", () => send(a, signedByA, { secret: wrongSecret }), 401, "invalid_telemetry_signature"],
    // A's valid signature over A's own report, presented as deployment B's.
    ["A's signature for B", () => app.report(b.deployment.id, signedByA, { secret: a.secret }), 401, "invalid_telemetry_signature"],
    ["B's secret over A's events", () => app.report(b.deployment.id, signedByA, { secret: b.secret }), 403, "telemetry_mismatch"],
    ["one byte altered", () => send(a, flipped, { signature: signTelemetry(a.secret, signedByA) }), 401, "invalid_telemetry_signature"],
    ["reordered JSON, same meaning", () => send(a, reordered, { signature: signTelemetry(a.secret, signedByA) }), 401, "invalid_telemetry_signature"],
    ["over the size limit", () => send(a, oversized), 413, "payload_too_large"],
    ["not JSON content", () => send(a, signedByA, { headers: { "Content-Type": "text/plain" } }), 415, "unsupported_media_type"],
    ["malformed JSON", () => send(a, '{"eventId": "x",'), 400, "invalid_json"],
    ["not an event", () => send(a, "[1,2,3]"), 400, "invalid_body"],
    ["missing traceId", () => send(a, { ...event(a), traceId: undefined }), 400, "validation_failed"],
    ["negative tokens", () => send(a, event(a, { inputTokens: -5 })), 400, "validation_failed"],
    ["unknown field", () => send(a, event(a, { userIdOverride: "x" })), 400, "validation_failed"],
    ["another user's id", () => send(a, event(a, { userId: b.userId })), 403, "telemetry_mismatch"],
    ["another agent's id", () => send(a, event(a, { agentId: b.agent.id })), 403, "telemetry_mismatch"],
    ["another deployment's id", () => send(a, event(a, { deploymentId: b.deployment.id })), 403, "telemetry_mismatch"],
    // DESIGN.md §4.8: signed by the deployment, but about a call the gateway never admitted to it.
    ["a trace id the gateway never issued", () => send(a, event(a, { traceId: "trc_0123456789abcdef0123456789abcdef01234567" })), 403, "trace_not_admitted"],
    ["a trace id issued for another deployment", () => send(a, event(a, { traceId: app.admittedTraceId(b.deployment.id) })), 403, "trace_not_admitted"],
    // Issued for this deployment, but longer ago than an event about it could be reported: a trace id a client once
    // saw cannot be billed under for ever.
    ["a trace id issued over an hour ago", () => send(a, event(a, { traceId: app.admittedTraceId(a.deployment.id, Date.now() - 62 * 60_000) })), 403, "trace_not_admitted"],
    ["too old", () => send(a, event(a, { ts: Date.now() - 2 * 3600_000 })), 400, "timestamp_out_of_window"],
    ["from the future", () => send(a, event(a, { ts: Date.now() + 3600_000 })), 400, "timestamp_out_of_window"],
    ["101 events", () => send(a, { events: Array.from({ length: 101 }, () => event(a)) }), 400, "too_many_events"],
    ["one bad event in a batch", () => send(a, { events: [event(a), event(a), event(a, { userId: b.userId }), event(a)] }), 403, "telemetry_mismatch"],
    ["empty batch", () => send(a, { events: [] }), 400, "validation_failed"],
  ];
  const snapshot = await stored();
  const auditBefore = (await app.db.prepare("SELECT COUNT(*) AS n FROM telemetry_rejects").first()).n;
  for (const [name, run, status, code] of cases) {
    const res = await run();
    const err = expectError(assert, res, status, code);
    assert.ok(!JSON.stringify(err).includes(a.secret), `${name}: no secret in the answer`);
    const audit = await app.db.prepare("SELECT * FROM telemetry_rejects WHERE request_id = ?").bind(res.headers.get("X-Request-Id")).first();
    assert.ok(audit, `${name}: audited`);
    assert.equal(audit.code, code, name);
    assert.equal(audit.status, status, name);
  }
  assert.deepEqual(await stored(), snapshot, "no rejected report stored or counted anything");
  const audited = (await app.db.prepare("SELECT COUNT(*) AS n FROM telemetry_rejects").first()).n - auditBefore;
  assert.equal(audited, cases.length);
  // The audit names a claimed deployment only when the header is a well-formed id, and never holds the body.
  const rows = (await app.db.prepare("SELECT * FROM telemetry_rejects").all()).results;
  assert.ok(rows.every((r) => r.deployment_id === null || /^dep_[0-9a-f]{24}$/.test(r.deployment_id)));
  assert.ok(!JSON.stringify(rows).includes("userIdOverride"));

  // The same report, re-signed over its reordered bytes, is accepted — and is the same event, so it counts once.
  assert.equal((await send(a, signedByA)).body.accepted, 1);
  const resigned = await send(a, reordered);
  assert.deepEqual([resigned.status, resigned.body.accepted, resigned.body.duplicates], [200, 0, 1], resigned.text);
});

test("a flood of rejects writes a bounded number of audit rows", async () => {
  const before = (await app.db.prepare("SELECT COUNT(*) AS n FROM telemetry_rejects").first()).n;
  const flood = 150;
  for (let i = 0; i < flood; i += 25) {
    await Promise.all(Array.from({ length: 25 }, () => app.report("dep_" + "f".repeat(24), "{}", { signature: "v1=" + "0".repeat(64) })));
  }
  const written = (await app.db.prepare("SELECT COUNT(*) AS n FROM telemetry_rejects").first()).n - before;
  // At most 60 rows per minute per isolate (DESIGN: rate-limited audit); the rest are counted, not written.
  assert.ok(written < flood, `${written} rows for ${flood} rejects`);
  assert.ok(written <= 2 * 60, `${written} rows`);
});

test("a batch is all or nothing, and duplicates inside it count once", async () => {
  const before = (await usageRow(a.userId))[0];
  const e1 = event(a, { inputTokens: 10 });
  const e2 = event(a, { inputTokens: 20 });
  const batch = await send(a, { events: [e1, e2, e1, e2, event(a, { eventId: e1.eventId, inputTokens: 999 })] });
  assert.deepEqual([batch.status, batch.body.accepted, batch.body.duplicates], [200, 2, 3], batch.text);
  const after = (await usageRow(a.userId))[0];
  assert.equal(after.events - before.events, 2);
  assert.equal(after.input_tokens - before.input_tokens, 30, "the first copy of a repeated eventId wins");
});

test("dedupe storm: incremental totals equal the recompute", async () => {
  const period = (await send(b, event(b))).body.periodKey;
  const distinct = Array.from({ length: 40 }, (_, i) => event(b, { inputTokens: i, outputTokens: 2 * i, computeMs: 3 * i, errors: i % 3 === 0 ? 1 : 0 }));
  // Singles, overlapping batches, concurrent retries of both, in a scrambled order.
  const reports = [];
  for (const e of distinct) reports.push(JSON.stringify(e));
  for (let i = 0; i < distinct.length; i += 7) reports.push(JSON.stringify({ events: distinct.slice(i, i + 10) }));
  reports.push(JSON.stringify({ events: distinct.slice(0, 40) }));
  const storm = [...reports, ...reports, ...reports].sort(() => Math.random() - 0.5);
  for (let i = 0; i < storm.length; i += 12) {
    const answers = await Promise.all(storm.slice(i, i + 12).map((body) => send(b, body)));
    for (const r of answers) assert.equal(r.status, 200, r.text);
  }
  const usage = (await usageRow(b.userId)).find((r) => r.period_key === period);
  const raw = await app.db.prepare(
    "SELECT COUNT(*) AS events, SUM(requests) AS requests, SUM(input_tokens) AS input_tokens, SUM(output_tokens) AS output_tokens, SUM(compute_ms) AS compute_ms, SUM(errors) AS errors FROM metrics_events WHERE user_id = ? AND period_key = ?",
  ).bind(b.userId, period).first();
  const sum = (f) => distinct.reduce((n, e) => n + e[f], 0);
  assert.equal(raw.events, 41, "each distinct event stored once");
  assert.equal(raw.input_tokens, sum("inputTokens") + 2);
  for (const k of ["events", "requests", "input_tokens", "output_tokens", "compute_ms", "errors"]) assert.equal(usage[k], raw[k], k);

  // The operator's recompute finds nothing to correct and changes nothing…
  const snapshot = await stored();
  const rec = await app.admin("POST", "/usage/recompute", ADMIN, { period });
  assert.equal(rec.status, 200, rec.text);
  assert.equal(rec.body.drifted, 0);
  assert.equal(rec.body.periodKey, period);
  const strip = (s) => ({ events: s.events, usage: s.usage.map(({ updated_at, ...r }) => r) });
  assert.deepEqual(strip(await stored()), strip(snapshot));
  // …but puts right a row that was tampered with, and the scheduled job does the same.
  await app.db.prepare("UPDATE billing_usage SET input_tokens = input_tokens + 1000 WHERE user_id = ? AND period_key = ?").bind(b.userId, period).run();
  const fixed = await app.admin("POST", "/usage/recompute", ADMIN, { period });
  assert.equal(fixed.body.drifted, 1);
  assert.deepEqual(strip(await stored()), strip(snapshot));
  await app.db.prepare("DELETE FROM billing_usage WHERE user_id = ?").bind(b.userId).run();
  await app.runScheduled();
  assert.deepEqual(strip(await stored()), strip(snapshot));
  const audit = await app.db.prepare("SELECT * FROM admin_audit WHERE action = 'recompute_usage' ORDER BY at").all();
  assert.equal(audit.results.length, 2);
});

test("recompute refuses bad input and the future, and is operator-only", async () => {
  expectError(assert, await app.admin("POST", "/usage/recompute", "x".repeat(40), { period: "2026-01" }), 401, "invalid_admin_token");
  expectError(assert, await app.request("POST", "/v1/admin/usage/recompute", { token: alice, json: { period: "2026-01" } }), 401, "invalid_admin_token");
  expectError(assert, await app.admin("POST", "/usage/recompute", ADMIN, { period: "2026-13" }), 400, "validation_failed");
  expectError(assert, await app.admin("POST", "/usage/recompute", ADMIN, { period: "2999-01" }), 400, "validation_failed");
  expectError(assert, await app.admin("POST", "/usage/recompute", ADMIN, { period: "2026-01", extra: 1 }), 400, "validation_failed");
});

function periodOf(ms) {
  const d = new Date(ms);
  return `${d.getUTCFullYear()}-${String(d.getUTCMonth() + 1).padStart(2, "0")}`;
}

async function seedEvents(of, period, n) {
  const stmt = app.db.prepare(
    "INSERT INTO metrics_events (deployment_id, dedupe_key, event_id, trace_id, user_id, agent_id, runtime_provider, ts, received_at, period_key, report_id, requests, input_tokens, output_tokens, compute_ms, errors) VALUES (?, ?, ?, ?, ?, ?, 'cloudflare', ?, ?, ?, 'rpt_seed', 1, ?, 1, 1, 0)",
  );
  const start = Date.parse(`${period}-01T00:00:00Z`);
  await app.db.batch(Array.from({ length: n }, (_, i) => stmt.bind(of.deployment.id, `e:seed-${period}-${i}`, `seed-${period}-${i}`, `t-${i}`, of.userId, of.agent.id, start + i, start + i, period, i + 1)));
}

test("retention: a period's raw events go only once it is final and rolled up", async () => {
  // Events stored in periods long past (as they would be after months of running), with no billing rows yet.
  const old = "2025-01";
  const recent = periodOf(Date.now() - 40 * 86400_000); // ended, but inside the 90-day retention
  await seedEvents(a, old, 30);
  await seedEvents(a, recent, 5);
  await app.runScheduled();

  const oldUsage = (await usageRow(a.userId)).find((r) => r.period_key === old);
  assert.ok(oldUsage, "rolled up before pruning");
  assert.equal(oldUsage.events, 30);
  assert.equal(oldUsage.input_tokens, (30 * 31) / 2);
  const count = async (p) => (await app.db.prepare("SELECT COUNT(*) AS n FROM metrics_events WHERE period_key = ?").bind(p).first()).n;
  assert.equal(await count(old), 0, "pruned past the retention");
  assert.equal(await count(recent), 5, "kept inside the retention");
  const rollups = Object.fromEntries((await app.db.prepare("SELECT * FROM usage_rollups").all()).results.map((r) => [r.period_key, r]));
  assert.ok(rollups[old].finalized_at && rollups[old].pruned_at);
  assert.ok(rollups[recent].finalized_at && !rollups[recent].pruned_at);
  assert.equal(rollups[periodOf(Date.now())].finalized_at, null, "the current period is never final");

  // A pruned period's totals are the record: a recompute is refused and changes nothing.
  expectError(assert, await app.admin("POST", "/usage/recompute", ADMIN, { period: old }), 409, "usage_period_pruned");
  assert.deepEqual((await usageRow(a.userId)).find((r) => r.period_key === old), oldUsage);
  await app.runScheduled();
  assert.deepEqual((await usageRow(a.userId)).find((r) => r.period_key === old), oldUsage);
  // A final period inside the retention can still be recomputed from its raw events.
  const again = await app.admin("POST", "/usage/recompute", ADMIN, { period: recent });
  assert.deepEqual([again.status, again.body.drifted, again.body.events, again.body.finalized], [200, 0, 5, true], again.text);
});

test("usage and metrics reads are the caller's own", async () => {
  const mine = await app.usageCurrent(alice);
  assert.equal(mine.status, 200, mine.text);
  const period = periodOf(Date.now());
  assert.equal(mine.body.periodKey, period);
  assert.equal(mine.body.tier, "free");
  const row = (await usageRow(a.userId)).find((r) => r.period_key === period);
  assert.deepEqual(mine.body.totals, {
    events: row.events, requests: row.requests, inputTokens: row.input_tokens, outputTokens: row.output_tokens,
    tokens: row.input_tokens + row.output_tokens, computeMs: row.compute_ms, errors: row.errors,
    // Reported telemetry only here: these users made no calls through the gateway, so nothing was measured.
    gatewayMs: 0,
  });
  assert.equal(mine.body.entitlements.tokensPerPeriod, 200000);
  assert.equal(mine.body.remaining.tokens, 200000 - mine.body.totals.tokens);
  assert.equal(mine.body.remaining.requests, 1000 - mine.body.requestsReserved);
  assert.equal(mine.body.resetsAt, new Date(Date.UTC(new Date().getUTCFullYear(), new Date().getUTCMonth() + 1, 1)).toISOString().replace(".000", ""));
  const bobs = await app.usageCurrent(bob);
  assert.notEqual(bobs.body.totals.inputTokens, mine.body.totals.inputTokens);

  const history = await app.usageHistory(alice, "?periods=3");
  assert.equal(history.status, 200, history.text);
  assert.equal(history.body.periods.length, 3);
  assert.equal(history.body.periods[0].periodKey, period);
  assert.deepEqual(history.body.periods[0].totals, mine.body.totals);
  assert.equal(history.body.periods[0].finalized, false);
  assert.equal((await app.usageHistory(alice)).body.periods.length, 6);
  const longAgo = await app.usageHistory(alice, "?periods=24");
  assert.ok(longAgo.body.periods.every((p, i, all) => i === 0 || p.periodKey < all[i - 1].periodKey), "newest first");
  for (const q of ["?periods=0", "?periods=25", "?periods=x"]) expectError(assert, await app.usageHistory(alice, q), 400, "invalid_query");

  const recent = await app.metricsRecent(alice, `?agentId=${a.agent.id}&limit=5`);
  assert.equal(recent.status, 200, recent.text);
  assert.equal(recent.body.events.length, 5);
  assert.doesNotMatch(recent.text, /\d\.\d/, "whole numbers are written as integers");
  for (const e of recent.body.events) {
    assert.equal(e.agentId, a.agent.id);
    assert.equal(e.deploymentId, a.deployment.id);
  }
  assert.ok(recent.body.events.every((e, i, all) => i === 0 || e.ts <= all[i - 1].ts), "newest first");
  const since = recent.body.events[2].ts;
  const later = await app.metricsRecent(alice, `?agentId=${a.agent.id}&sinceMs=${since}&limit=200`);
  assert.ok(later.body.events.length >= 3 && later.body.events.every((e) => e.ts >= since));
  // Bob cannot read Alice's events, not even by naming her agent; a nonexistent agent looks the same.
  expectError(assert, await app.metricsRecent(bob, `?agentId=${a.agent.id}`), 404, "agent_not_found");
  expectError(assert, await app.metricsRecent(bob, `?agentId=agt_${"0".repeat(24)}`), 404, "agent_not_found");
  const bobsOwn = await app.metricsRecent(bob, `?agentId=${b.agent.id}&limit=200`);
  assert.ok(bobsOwn.body.events.length > 0 && bobsOwn.body.events.every((e) => e.deploymentId === b.deployment.id));
  for (const q of ["", `?agentId=${a.agent.id}&limit=0`, `?agentId=${a.agent.id}&limit=201`, `?agentId=${a.agent.id}&sinceMs=-1`]) {
    expectError(assert, await app.metricsRecent(alice, q), 400, "invalid_query");
  }
  // Telemetry routes never accept a user's token as a signature, and usage needs one.
  expectError(assert, await app.usageCurrent(undefined), 401, "missing_credentials");
  const withToken = await app.request("POST", "/v1/telemetry/report", { token: alice, json: event(a) });
  expectError(assert, withToken, 400, "invalid_telemetry_headers");
});

test("a bad METRICS_RETENTION_DAYS is a configuration error; without deploys configured, reports answer 503", async () => {
  for (const days of ["0", "ninety", "3651"]) {
    const broken = await startControlPlane({ vars: { METRICS_RETENTION_DAYS: days } });
    try {
      expectError(assert, await broken.health(), 500, "server_misconfigured");
    } finally {
      await broken.close();
    }
  }
  const noDeploys = await startControlPlane();
  try {
    const res = await noDeploys.report("dep_" + "0".repeat(24), "{}", { secret: "x" });
    expectError(assert, res, 503, "deploys_not_configured");
  } finally {
    await noDeploys.close();
  }
});
