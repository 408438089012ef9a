// HTTP hygiene end to end in workerd: request ids, the error envelope on every failure, body limits, CORS,
// health, and a Rust panic answered with a clean 500 after which the worker keeps serving.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startControlPlane, expectError } from "./support/harness.mjs";

const DASHBOARD = "https://dash.example.test";
let app, token;
before(async () => {
  app = await startControlPlane({ vars: { CORS_ALLOWED_ORIGINS: `${DASHBOARD}, http://localhost:5173`, ENABLE_DEBUG_ROUTES: "true" } });
  token = await app.token("user_http");
});
after(() => app?.close());

test("health reports version and D1, without auth", async () => {
  const res = await app.health();
  assert.equal(res.status, 200, res.text);
  assert.equal(res.body.status, "ok");
  assert.equal(res.body.d1, "ok");
  assert.match(res.body.version, /^\d+\.\d+\.\d+/);
});

test("a database failure is a generic, retryable 500 whose cause stays in the logs", async () => {
  const bare = await startControlPlane({ migrate: false });
  try {
    // Without migrations D1 still answers SELECT 1: health checks reachability, so it stays up.
    assert.equal((await bare.health()).status, 200);
    const res = await bare.me(await bare.token("u"));
    const err = expectError(assert, res, 500, "internal_error");
    assert.equal(err.retryable, true);
    assert.ok(!/D1|SQL|table/i.test(err.message), err.message);
    assert.equal(err.details, undefined);
  } finally {
    await bare.close();
  }
});

test("every response carries a request id; a well-formed incoming one is kept", async () => {
  const generated = await app.health();
  assert.match(generated.headers.get("X-Request-Id"), /^req_[0-9a-f]{24}$/);
  const kept = await app.request("GET", "/v1/me", { token, headers: { "X-Request-Id": "trace-123:abc" } });
  assert.equal(kept.headers.get("X-Request-Id"), "trace-123:abc");
  const failed = await app.request("GET", "/nope", { headers: { "X-Request-Id": "client-id-1" } });
  assert.equal(expectError(assert, failed, 404, "route_not_found").requestId, "client-id-1");
  const unsafe = await app.request("GET", "/health", { headers: { "X-Request-Id": "bad id <script>" } });
  assert.match(unsafe.headers.get("X-Request-Id"), /^req_/);
});

test("unknown routes are 404 and wrong methods 405 with Allow", async () => {
  expectError(assert, await app.request("GET", "/v2/agents", { token }), 404, "route_not_found");
  const res = await app.request("PUT", "/v1/agents/agt_000000000000000000000000", { token });
  const err = expectError(assert, res, 405, "method_not_allowed");
  assert.deepEqual(err.details.allow, ["GET", "PATCH", "DELETE"]);
  assert.equal(res.headers.get("Allow"), "GET, PATCH, DELETE");
});

test("oversized bodies are 413, declared or streamed, and create nothing", async () => {
  const big = JSON.stringify({ name: "big-agent", description: "x".repeat(70 * 1024) });
  const declared = await app.request("POST", "/v1/agents", { token, body: big, headers: { "Content-Type": "application/json" } });
  expectError(assert, declared, 413, "payload_too_large");
  // A streamed body has no Content-Length: the limit is enforced while reading.
  const chunks = [new TextEncoder().encode(big)];
  const stream = new ReadableStream({
    pull(controller) {
      const next = chunks.shift();
      if (next) controller.enqueue(next);
      else controller.close();
    },
  });
  const res = await app.mf.dispatchFetch("http://control-plane.test/v1/agents", {
    method: "POST",
    headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
    body: stream,
    duplex: "half",
  });
  assert.equal(res.status, 413);
  assert.equal((await res.json()).error.code, "payload_too_large");
  assert.equal((await app.agentRows()).length, 0);
});

test("CORS: preflight for allowed origins, 403 for others, nothing by default", async () => {
  const preflight = (origin) =>
    app.request("OPTIONS", "/v1/agents", {
      headers: { Origin: origin, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization, content-type" },
    });
  const ok = await preflight(DASHBOARD);
  assert.equal(ok.status, 204);
  assert.equal(ok.headers.get("Access-Control-Allow-Origin"), DASHBOARD);
  assert.match(ok.headers.get("Access-Control-Allow-Methods"), /POST/);
  assert.match(ok.headers.get("Access-Control-Allow-Headers"), /Authorization/);
  assert.ok(ok.headers.get("X-Request-Id"));

  const denied = await preflight("https://evil.example.test");
  expectError(assert, denied, 403, "cors_origin_not_allowed");
  assert.equal(denied.headers.get("Access-Control-Allow-Origin"), null);

  const actual = await app.request("GET", "/v1/me", { token, headers: { Origin: DASHBOARD } });
  assert.equal(actual.headers.get("Access-Control-Allow-Origin"), DASHBOARD);
  assert.match(actual.headers.get("Access-Control-Expose-Headers"), /X-Request-Id/);
  const errorToo = await app.request("GET", "/v1/me", { headers: { Origin: DASHBOARD } });
  assert.equal(errorToo.status, 401);
  assert.equal(errorToo.headers.get("Access-Control-Allow-Origin"), DASHBOARD, "errors are readable by the dashboard");
  const foreign = await app.request("GET", "/v1/me", { token, headers: { Origin: "https://evil.example.test" } });
  assert.equal(foreign.headers.get("Access-Control-Allow-Origin"), null);

  const closed = await startControlPlane();
  try {
    const res = await closed.request("OPTIONS", "/v1/agents", {
      headers: { Origin: DASHBOARD, "Access-Control-Request-Method": "GET" },
    });
    expectError(assert, res, 403, "cors_origin_not_allowed");
  } finally {
    await closed.close();
  }
});

test("a panic in a handler is a clean 500 envelope, and the worker keeps serving", async () => {
  const res = await app.request("GET", "/__debug/panic", { headers: { "X-Request-Id": "panic-probe" } });
  const err = expectError(assert, res, 500, "internal_error");
  assert.equal(err.requestId, "panic-probe");
  assert.ok(!res.text.includes("deliberate"), "the panic message stays in the logs");
  const after = await app.me(token);
  assert.equal(after.status, 200, after.text);
});

test("debug routes do not exist unless enabled", async () => {
  const plain = await startControlPlane();
  try {
    expectError(assert, await plain.request("GET", "/__debug/panic"), 404, "route_not_found");
  } finally {
    await plain.close();
  }
});
