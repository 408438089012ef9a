// The agent worker template on its own in workerd: invoke/v1 JSON and SSE, and a telemetry event whose
// HMAC-SHA256 signature verifies over the exact bytes received; a dead telemetry endpoint never fails a call.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import { createHmac } from "node:crypto";
import { Miniflare } from "miniflare";
import path from "node:path";
import { ROOT } from "./support/harness.mjs";

// As the platform makes it: base64url of 32 random bytes (seed 001).
const SECRET = Buffer.from(crypto.getRandomValues(new Uint8Array(32))).toString("base64url");
let reports = [];
let collector, mf, deadMf;
/** Statuses the collector answers with, in order, before it falls back to 202. */
let answers = [];

function startTemplate(reportUrl) {
  return new Miniflare({
    modules: true,
    scriptPath: path.join(ROOT, "worker-template/index.js"),
    compatibilityDate: "2026-07-30",
    bindings: {
      TELEMETRY_SECRET: SECRET,
      TELEMETRY_REPORT_URL: reportUrl,
      USER_ID: "usr_000000000000000000000001",
      AGENT_ID: "agt_000000000000000000000001",
      DEPLOYMENT_ID: "dep_000000000000000000000001",
      RUNTIME_PROVIDER: "cloudflare",
    },
  });
}

before(async () => {
  collector = http.createServer((req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      reports.push({ headers: req.headers, body: Buffer.concat(chunks) });
      res.writeHead(answers.shift() ?? 202).end();
    });
  });
  await new Promise((r) => collector.listen(0, "127.0.0.1", r));
  mf = startTemplate(`http://127.0.0.1:${collector.address().port}/v1/telemetry/report`);
  deadMf = startTemplate("http://127.0.0.1:9/v1/telemetry/report");
});
after(async () => {
  await mf?.dispose();
  await deadMf?.dispose();
  collector?.close();
});

const request = (messages, extra = {}) => ({ protocol: "invoke/v1", input: { messages }, ...extra });

async function waitFor(predicate, ms = 5000) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (predicate()) return;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error("timed out waiting");
}

test("JSON invoke echoes the last user message with usage and ids", async () => {
  reports = [];
  const res = await mf.dispatchFetch("http://agent/invoke", {
    method: "POST",
    headers: { "X-Trace-Id": "trace-1" },
    body: JSON.stringify(request([{ role: "user", content: "first" }, { role: "assistant", content: "ok" }, { role: "user", content: "hello there agent" }], { sessionId: "s-1" })),
  });
  assert.equal(res.status, 200);
  const body = await res.json();
  assert.deepEqual(body, {
    protocol: "invoke/v1",
    output: { text: "hello there agent" },
    sessionId: "s-1",
    usage: { inputTokens: 5, outputTokens: 3 },
    traceId: "trace-1",
  });

  await waitFor(() => reports.length === 1);
  const [{ headers, body: raw }] = reports;
  const expected = createHmac("sha256", Buffer.from(SECRET, "base64url")).update(raw).digest("hex");
  assert.equal(headers["x-telemetry-signature"], `v1=${expected}`, "signed over the exact bytes sent");
  assert.equal(headers["x-telemetry-deployment-id"], "dep_000000000000000000000001");
  const event = JSON.parse(raw);
  assert.equal(event.traceId, "trace-1");
  assert.equal(event.userId, "usr_000000000000000000000001");
  assert.equal(event.agentId, "agt_000000000000000000000001");
  assert.equal(event.deploymentId, "dep_000000000000000000000001");
  assert.equal(event.runtimeProvider, "cloudflare");
  assert.equal(event.requests, 1);
  assert.equal(event.inputTokens, 5);
  assert.equal(event.outputTokens, 3);
  assert.equal(event.errors, 0);
  assert.match(event.eventId, /^[0-9a-f-]{36}$/);
  assert.ok(Math.abs(event.ts - Date.now()) < 60_000);
});

test("a report the control plane could not take (5xx) is retried once with the same bytes; a 4xx is not", async () => {
  const invoke = (trace) =>
    mf.dispatchFetch("http://agent/invoke", {
      method: "POST",
      headers: { "X-Trace-Id": trace },
      body: JSON.stringify(request([{ role: "user", content: "retry me" }])),
    });
  reports = [];
  answers = [503];
  assert.equal((await invoke("trace-retry")).status, 200);
  await waitFor(() => reports.length === 2);
  assert.deepEqual(reports[1].body, reports[0].body, "the same event (same eventId) is sent again");
  assert.equal(reports[1].headers["x-telemetry-signature"], reports[0].headers["x-telemetry-signature"]);

  reports = [];
  answers = [401];
  assert.equal((await invoke("trace-refused")).status, 200);
  await waitFor(() => reports.length === 1);
  await new Promise((r) => setTimeout(r, 600));
  assert.equal(reports.length, 1, "a refused report is not retried");
});

test("SSE invoke streams meta, one delta per word, usage, done", async () => {
  const res = await mf.dispatchFetch("http://agent/invoke", {
    method: "POST",
    headers: { Accept: "text/event-stream" },
    body: JSON.stringify(request([{ role: "user", content: "one two three" }], { metadata: { delayMs: 5 } })),
  });
  assert.equal(res.status, 200);
  assert.match(res.headers.get("Content-Type"), /^text\/event-stream/);
  const text = await res.text();
  const events = text.trim().split("\n\n").map((block) => {
    const [eventLine, dataLine] = block.split("\n");
    return { event: eventLine.slice(7), data: JSON.parse(dataLine.slice(6)) };
  });
  assert.deepEqual(events.map((e) => e.event), ["meta", "delta", "delta", "delta", "delta", "delta", "usage", "done"]);
  assert.equal(events.filter((e) => e.event === "delta").map((e) => e.data.text).join(""), "one two three");
  assert.equal(events[0].data.deploymentId, "dep_000000000000000000000001");
});

test("malformed requests are clear 4xx answers", async () => {
  for (const [body, code] of [
    ["not json", "invalid_json"],
    [JSON.stringify({ protocol: "invoke/v2", input: { messages: [] } }), "invalid_protocol"],
    [JSON.stringify({ protocol: "invoke/v1", input: { messages: [{ role: "user" }] } }), "invalid_input"],
  ]) {
    const res = await mf.dispatchFetch("http://agent/invoke", { method: "POST", body });
    assert.equal(res.status, 400);
    assert.equal((await res.json()).error.code, code);
  }
  assert.equal((await mf.dispatchFetch("http://agent/invoke")).status, 405);
});

test("an unreachable telemetry endpoint never fails or delays the invocation's answer", async () => {
  const res = await deadMf.dispatchFetch("http://agent/invoke", {
    method: "POST",
    body: JSON.stringify(request([{ role: "user", content: "still works" }])),
  });
  assert.equal(res.status, 200);
  assert.equal((await res.json()).output.text, "still works");
});
