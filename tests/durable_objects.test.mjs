// The Durable Objects in workerd: UserGate grants exactly N of M concurrent reservations and keeps its count
// across a restart; SessionMap keeps a runtime session per client session id, scoped to its (user, agent).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { startControlPlane } from "./support/harness.mjs";

let app;
before(async () => {
  app = await startControlPlane();
});
after(() => app?.close());

async function call(stub, route, body) {
  const res = await stub.fetch(`http://do${route}`, { method: "POST", body: JSON.stringify(body) });
  return { status: res.status, body: await res.json() };
}

test("UserGate: with N left, exactly N of M concurrent reservations are granted", async () => {
  const gate = await app.durableObject("USER_GATE", "usr_concurrency");
  const replies = await Promise.all(
    Array.from({ length: 40 }, () => call(gate, "/reserve", { periodKey: "2026-11", limit: 7 })),
  );
  assert.ok(replies.every((r) => r.status === 200));
  assert.equal(replies.filter((r) => r.body.granted).length, 7);
  const usedSeen = replies.filter((r) => r.body.granted).map((r) => r.body.used).sort((a, b) => a - b);
  assert.deepEqual(usedSeen, [1, 2, 3, 4, 5, 6, 7], "each grant took a distinct slot");
  const refused = replies.find((r) => !r.body.granted).body;
  assert.equal(refused.remaining, 0);
  assert.equal(refused.resetsAtMs, Date.UTC(2026, 11, 1));
});

test("UserGate: periods reset, release gives one back, users are separate", async () => {
  const gate = await app.durableObject("USER_GATE", "usr_periods");
  for (let i = 0; i < 2; i++) await call(gate, "/reserve", { periodKey: "2026-10", limit: 2 });
  assert.equal((await call(gate, "/reserve", { periodKey: "2026-10", limit: 2 })).body.granted, false);
  const released = await call(gate, "/release", { periodKey: "2026-10" });
  assert.equal(released.body.used, 1);
  assert.equal((await call(gate, "/reserve", { periodKey: "2026-10", limit: 2 })).body.granted, true);
  const next = await call(gate, "/reserve", { periodKey: "2026-11", limit: 2 });
  assert.equal(next.body.used, 1, "a new period starts at zero");
  const other = await app.durableObject("USER_GATE", "usr_someone_else");
  assert.equal((await call(other, "/reserve", { periodKey: "2026-11", limit: 2 })).body.used, 1);
});

test("UserGate: bad requests are 400 and change nothing", async () => {
  const gate = await app.durableObject("USER_GATE", "usr_bad_input");
  await call(gate, "/reserve", { periodKey: "2026-11", limit: 5 });
  for (const body of [{ periodKey: "2026-13", limit: 5 }, { limit: 5 }, { periodKey: "2026-11", limit: -1 }, { periodKey: "2026-11", userId: "x" }]) {
    const res = await call(gate, "/reserve", body);
    assert.equal(res.status, 400, JSON.stringify(body));
    assert.equal(res.body.error.code, "invalid_body");
  }
  assert.equal((await call(gate, "/reserve", { periodKey: "2026-11", limit: 5 })).body.used, 2);
  const unknown = await gate.fetch("http://do/reset", { method: "POST", body: "{}" });
  assert.equal(unknown.status, 404);
});

test("UserGate: the count survives a restart of the object", async () => {
  const dir = mkdtempSync(path.join(tmpdir(), "gate-persist-"));
  try {
    const opts = { miniflare: { durableObjectsPersist: dir } };
    const first = await startControlPlane(opts);
    const gate = await first.durableObject("USER_GATE", "usr_restart");
    for (let i = 0; i < 3; i++) await call(gate, "/reserve", { periodKey: "2026-11", limit: 4 });
    await first.close();
    const second = await startControlPlane(opts);
    try {
      const again = await second.durableObject("USER_GATE", "usr_restart");
      const fourth = await call(again, "/reserve", { periodKey: "2026-11", limit: 4 });
      assert.equal(fourth.body.granted, true);
      assert.equal(fourth.body.used, 4, "the three reservations before the restart still count");
      assert.equal((await call(again, "/reserve", { periodKey: "2026-11", limit: 4 })).body.granted, false);
    } finally {
      await second.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("SessionMap: sessions are created, continued, and scoped to their object", async () => {
  const mine = await app.durableObject("SESSION_MAP", "usr_a/agt_1");
  const started = await call(mine, "/resolve", {});
  assert.equal(started.status, 200);
  assert.match(started.body.sessionId, /^ses_[0-9a-f]{32}$/);
  assert.ok(started.body.runtimeSessionId.length >= 33);
  assert.equal(started.body.created, true);

  const continued = await call(mine, "/resolve", { sessionId: started.body.sessionId });
  assert.equal(continued.body.created, false);
  assert.equal(continued.body.runtimeSessionId, started.body.runtimeSessionId);

  // The same client session id presented for another user's agent never reaches this runtime session.
  for (const name of ["usr_b/agt_1", "usr_a/agt_2"]) {
    const other = await app.durableObject("SESSION_MAP", name);
    const hijack = await call(other, "/resolve", { sessionId: started.body.sessionId });
    assert.equal(hijack.body.created, true);
    assert.notEqual(hijack.body.runtimeSessionId, started.body.runtimeSessionId);
  }

  const chosen = await call(mine, "/resolve", { sessionId: "conversation-42" });
  assert.equal(chosen.body.sessionId, "conversation-42");
  for (const sessionId of ["", "has space", "x".repeat(129), 42]) {
    const res = await call(mine, "/resolve", { sessionId });
    assert.equal(res.status, 400, JSON.stringify(sessionId));
  }
});
