// The UserGate Durable Object in workerd, spoken to in its own protocol (app::gate::protocol): it reads the
// facts from D1 once and then answers from memory, grants exactly N of M concurrent admissions, keeps its count
// and sessions across a restart, scopes sessions per agent, and sees a change only once it is told.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { startControlPlane } from "./support/harness.mjs";

const PERIOD = new Date().toISOString().slice(0, 7);
let app;
before(async () => {
  app = await startControlPlane({ vars: { TIER_ENTITLEMENTS: JSON.stringify({ free: { requestsPerPeriod: 7 } }) } });
});
after(() => app?.close());

/** A user with one enabled agent whose active deployment is `dep_<user>`, written straight into D1. */
async function seed(target, user, { agents = ["agt_1"] } = {}) {
  const now = Date.now();
  await target.db.prepare("INSERT INTO users (id, auth_issuer, auth_subject, tier, created_at) VALUES (?, 'iss', ?, 'free', ?)").bind(user, user, now).run();
  for (const agent of agents) {
    const dep = `dep_${user}_${agent}`;
    await target.db.prepare("INSERT INTO agents (id, user_id, name, status, active_deployment_id, created_at, updated_at) VALUES (?, ?, ?, 'active', ?, ?, ?)").bind(`${user}_${agent}`, user, agent, dep, now, now).run();
    await target.db
      .prepare(
        "INSERT INTO deployments (id, agent_id, user_id, version, status, runtime_provider, deploy_target, script_name, main_module_name, compatibility_date, invoke_path, source, code_sha256, env_json, telemetry_secret_sealed, request_sha256, provider_ref, created_at, updated_at) VALUES (?, ?, ?, 1, 'active', 'cloudflare', 'workers_dev', ?, 'index.js', '2026-07-30', '/invoke', 'template', 'x', '{}', 'sealed', 'x', 'http://127.0.0.1:9/agent', ?, ?)",
      )
      .bind(dep, `${user}_${agent}`, user, `wh-${dep}`, now, now)
      .run();
  }
}

async function call(stub, body, route = "/call") {
  const res = await stub.fetch(`http://gate${route}`, { method: "POST", body: JSON.stringify(body) });
  return { status: res.status, body: await res.json() };
}

const admit = (agentId, extra = {}) => ({ op: "admit", agentId, streaming: false, periodKey: PERIOD, ...extra });

test("UserGate: with N left, exactly N of M concurrent admissions are granted, each a distinct slot", async () => {
  await seed(app, "usr_concurrency");
  const gate = await app.durableObject("USER_GATE", "usr_concurrency");
  const replies = await Promise.all(Array.from({ length: 40 }, () => call(gate, admit("usr_concurrency_agt_1"))));
  assert.ok(replies.every((r) => r.status === 200), JSON.stringify(replies.find((r) => r.status !== 200)));
  const granted = replies.filter((r) => r.body.verdict.kind === "granted");
  assert.equal(granted.length, 7);
  assert.deepEqual(granted.map((r) => r.body.verdict.decision.used).sort((a, b) => a - b), [1, 2, 3, 4, 5, 6, 7]);
  const refused = replies.find((r) => r.body.verdict.kind === "refused").body.verdict;
  assert.equal(refused.reason, "limitExceeded");
  assert.equal(refused.decision.remaining, 0);
  assert.equal(granted[0].body.verdict.route.deployment.scriptName, "wh-dep_usr_concurrency_agt_1");
  // Given back once, granted once more.
  const released = await call(gate, { op: "release", periodKey: PERIOD });
  assert.equal(released.body.used, 6);
  assert.equal((await call(gate, admit("usr_concurrency_agt_1"))).body.verdict.kind, "granted");
  assert.equal((await call(gate, { op: "peek", periodKey: PERIOD, limit: 7 })).body.remaining, 0);
});

test("UserGate: D1 is read once, and a change is seen only once the gate is told", async () => {
  await seed(app, "usr_coherence");
  const gate = await app.durableObject("USER_GATE", "usr_coherence");
  const first = await call(gate, admit("usr_coherence_agt_1"));
  assert.equal(first.body.loaded, true);
  const second = await call(gate, admit("usr_coherence_agt_1"));
  assert.equal(second.body.loaded, false, "answered from memory");
  await app.db.prepare("UPDATE agents SET status = 'disabled' WHERE id = ?").bind("usr_coherence_agt_1").run();
  assert.equal((await call(gate, admit("usr_coherence_agt_1"))).body.verdict.kind, "granted", "not told yet");
  assert.deepEqual((await call(gate, { op: "forget", what: "agent", id: "usr_coherence_agt_1" })).body, {});
  const refused = await call(gate, admit("usr_coherence_agt_1"));
  assert.equal(refused.body.loaded, true);
  assert.equal(refused.body.verdict.reason, "agentDisabled");
  const unknown = await call(gate, admit("agt_nobody"));
  assert.equal(unknown.body.verdict.reason, "agentNotFound");
  const badKey = await call(gate, admit("usr_coherence_agt_1", { keyId: "key_nope" }));
  assert.equal(badKey.body.verdict.reason, "invalidApiKey");
});

test("UserGate: bad calls are 400 or 404 and change nothing", async () => {
  await seed(app, "usr_bad_input");
  const gate = await app.durableObject("USER_GATE", "usr_bad_input");
  await call(gate, admit("usr_bad_input_agt_1"));
  for (const body of [
    { op: "admit", agentId: "x", streaming: false, periodKey: "2026-13" },
    { op: "reserve", periodKey: PERIOD },
    { op: "release" },
    { op: "peek", periodKey: PERIOD, limit: -1 },
    { op: "admit", agentId: "x", streaming: false, periodKey: PERIOD, userId: "usr_other" },
  ]) {
    const res = await call(gate, body);
    assert.equal(res.status, 400, JSON.stringify(body));
    assert.equal(res.body.error.code, "invalid_body");
  }
  assert.equal((await call(gate, { op: "peek", periodKey: PERIOD, limit: 7 })).body.used, 1);
  assert.equal((await call(gate, {}, "/reserve")).status, 404);
});

test("UserGate: sessions continue per agent; the same client id for another agent or user is another session", async () => {
  await seed(app, "usr_sessions", { agents: ["agt_1", "agt_2"] });
  await seed(app, "usr_sessions_b");
  const gate = await app.durableObject("USER_GATE", "usr_sessions");
  const started = (await call(gate, admit("usr_sessions_agt_1"))).body.verdict;
  assert.match(started.sessionId, /^ses_[0-9a-f]{32}$/);
  assert.ok(started.runtimeSessionId.length >= 33);
  const continued = (await call(gate, admit("usr_sessions_agt_1", { sessionId: started.sessionId }))).body.verdict;
  assert.equal(continued.runtimeSessionId, started.runtimeSessionId);
  const otherAgent = (await call(gate, admit("usr_sessions_agt_2", { sessionId: started.sessionId }))).body.verdict;
  assert.notEqual(otherAgent.runtimeSessionId, started.runtimeSessionId);
  const otherUser = await app.durableObject("USER_GATE", "usr_sessions_b");
  const hijack = (await call(otherUser, admit("usr_sessions_b_agt_1", { sessionId: started.sessionId }))).body.verdict;
  assert.equal(hijack.kind, "granted");
  assert.notEqual(hijack.runtimeSessionId, started.runtimeSessionId);
});

test("UserGate: the count and the sessions survive a restart of the object", async () => {
  const dir = mkdtempSync(path.join(tmpdir(), "gate-persist-"));
  try {
    const opts = {
      vars: { TIER_ENTITLEMENTS: JSON.stringify({ free: { requestsPerPeriod: 4 } }) },
      miniflare: { durableObjectsPersist: dir, d1Persist: path.join(dir, "d1") },
    };
    const first = await startControlPlane(opts);
    await seed(first, "usr_restart");
    const gate = await first.durableObject("USER_GATE", "usr_restart");
    let session;
    for (let i = 0; i < 3; i++) session = (await call(gate, admit("usr_restart_agt_1"))).body.verdict;
    await first.close();
    const second = await startControlPlane({ ...opts, migrate: false });
    try {
      const again = await second.durableObject("USER_GATE", "usr_restart");
      const fourth = (await call(again, admit("usr_restart_agt_1", { sessionId: session.sessionId }))).body;
      assert.equal(fourth.loaded, true, "a new object reads D1 again");
      assert.equal(fourth.verdict.decision.used, 4, "the three admissions before the restart still count");
      assert.equal(fourth.verdict.runtimeSessionId, session.runtimeSessionId);
      assert.equal((await call(again, admit("usr_restart_agt_1"))).body.verdict.reason, "limitExceeded");
    } finally {
      await second.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
