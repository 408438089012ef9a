// SSE through the gateway, over real sockets, against agents running in the local Cloudflare. Nothing here
// asserts a duration: "true streaming" is shown by an agent that cannot produce its next delta until the
// client has received the previous one, and "disconnect cancels" by an agent that stops being driven.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startLocalCloudflare } from "../local-cloudflare/server.mjs";
import { startControlPlane, deployVars, expectError } from "./support/harness.mjs";
import { UNRULY_AGENT, invokeBody, startGate } from "./support/agents.mjs";

let lcf, app, alice, gate, unruly, template;
before(async () => {
  lcf = await startLocalCloudflare();
  gate = await startGate();
  // Generous enough that a busy CI machine never trips it between two lockstep deltas; the stall test
  // below outlasts it.
  app = await startControlPlane({ vars: { ...deployVars(lcf, "workers_dev"), INVOKE_TIMEOUT_MS: "4000" } });
  alice = await app.token("user_streamer");
  unruly = await deployed("unruly-streamer", { moduleCode: UNRULY_AGENT });
  template = await deployed("template-streamer", {});
});
after(async () => {
  await app?.close();
  await gate?.close();
  await lcf?.close();
});

async function deployed(name, deploy) {
  const agent = (await app.createAgent(alice, { name })).body;
  const dep = await app.settled(alice, agent.id, (await app.deploy(alice, agent.id, deploy)).body.id);
  assert.equal(dep.status, "active", JSON.stringify(dep.error));
  return { agent, dep };
}

const names = (out) => out.events.map((e) => e.event);
const stream = (target, metadata, extra = {}) =>
  app.invokeStream(alice, target.agent.id, invokeBody("one two three", { metadata, ...extra }));

test("the template's stream: meta, deltas, usage, done — with the client's session, never the runtime's", async () => {
  const out = await app.invokeStream(alice, template.agent.id, invokeBody("streams word by word", { sessionId: "conv-9" }));
  assert.equal(out.status, 200);
  assert.match(out.headers.get("Content-Type"), /^text\/event-stream/);
  assert.equal(out.headers.get("X-Deployment-Id"), template.dep.id);
  assert.ok(out.headers.get("X-RateLimit-Remaining"));
  // The template sends words and the spaces between them as separate deltas.
  assert.deepEqual(names(out), ["meta", ...Array(7).fill("delta"), "usage", "done"]);
  assert.deepEqual(out.events[0].data, { traceId: out.headers.get("X-Trace-Id"), sessionId: "conv-9", deploymentId: template.dep.id });
  assert.equal(out.events.filter((e) => e.event === "delta").map((e) => e.data.text).join(""), "streams word by word");
  assert.deepEqual(out.events.at(-2).data, { inputTokens: 4, outputTokens: 4 });
  let row;
  for (let i = 0; i < 50 && row?.outcome !== "ok"; i++) {
    await new Promise((r) => setTimeout(r, 20));
    row = await app.db.prepare("SELECT outcome, counted, mode, upstream_status FROM invocations WHERE id = ?").bind(out.headers.get("X-Trace-Id")).first();
  }
  assert.deepEqual(row, { outcome: "ok", counted: 1, mode: "stream", upstream_status: 200 });
});

test("true streaming: each delta reaches the client before the agent can produce the next", async () => {
  const deltas = 5;
  const run = `lockstep-${Date.now()}`;
  const finishedWhenSeen = [];
  gate.release(run, 0);
  // Delta i+1 is produced only after the client has received delta i. Had the gateway buffered the stream, no
  // delta would reach the client, the agent could never finish, and the stream would end in a timeout error.
  const out = await app.invokeStream(
    alice,
    unruly.agent.id,
    invokeBody("x", { metadata: { mode: "lockstep", deltas, gate: gate.url, run } }),
    {
      onEvent: (event) => {
        if (event.event !== "delta") return;
        finishedWhenSeen.push(gate.count(run, "finished"));
        gate.release(run, Number(event.data.text.trim().slice(1)) + 1);
      },
    },
  );
  assert.deepEqual(names(out), ["meta", ...Array(deltas).fill("delta"), "usage", "done"], JSON.stringify(out.events));
  assert.deepEqual(finishedWhenSeen, Array(deltas).fill(0), "every delta arrived before the agent finished");
  assert.equal(gate.count(run, "finished"), 1);
  assert.ok(!out.events.some((e) => e.data.sessionId === "runtime-side"), "the agent's own meta is not forwarded");
});

test("a client that disconnects cancels the agent's stream", async () => {
  const run = `ticks-${Date.now()}`;
  const out = await app.invokeStream(alice, unruly.agent.id, invokeBody("x", { metadata: { mode: "ticks", gate: gate.url, run } }), {
    onEvent: (event, controller) => {
      if (event.event === "delta" && event.data.text === "t1 ") controller.abort();
    },
  });
  assert.equal(out.aborted, true);
  // Wait until the agent stops ticking (it would tick 40 times, every ~100 ms, if it were still being read).
  let last = -1;
  let unchanged = 0;
  while (unchanged < 4) {
    await new Promise((r) => setTimeout(r, 300));
    const now = gate.count(run, "tick");
    unchanged = now === last ? unchanged + 1 : 0;
    last = now;
  }
  assert.ok(last < 40, `the agent stopped after the client left (${last} of 40 ticks)`);
  const traceId = out.headers.get("X-Trace-Id");
  const row = await app.db.prepare("SELECT outcome, counted, mode FROM invocations WHERE id = ?").bind(traceId).first();
  assert.deepEqual(row, { outcome: "client_closed", counted: 1, mode: "stream" });
});

test("stream failures end with an error event; whole answers are wrapped into events", async () => {
  const broken = await stream(unruly, { mode: "break" });
  assert.deepEqual(names(broken), ["meta", "delta", "error"]);
  assert.equal(broken.events.at(-1).data.code, "upstream_interrupted");
  assert.equal(broken.events.at(-1).data.retryable, true);

  const early = await stream(unruly, { mode: "no-done" });
  assert.deepEqual(names(early), ["meta", "delta", "error"]);
  assert.equal(early.events.at(-1).data.code, "upstream_interrupted");

  const stalled = await stream(unruly, { mode: "stall", ms: 5000 });
  assert.deepEqual(names(stalled), ["meta", "delta", "error"]);
  assert.equal(stalled.events.at(-1).data.code, "upstream_timeout");
  assert.equal(stalled.events.at(-1).data.details.timeoutMs, 4000);

  const agentError = await stream(unruly, { mode: "agent-error" });
  assert.deepEqual(names(agentError), ["meta", "delta", "error"]);
  assert.deepEqual(agentError.events.at(-1).data, { code: "agent_error", message: "try later", retryable: true, details: { agentCode: "model_overloaded" } });

  const json = await stream(unruly, { mode: "json-always" });
  assert.deepEqual(names(json), ["meta", "delta", "usage", "done"]);
  assert.equal(json.events[1].data.text, "whole answer");
  const text = await stream(unruly, { mode: "text-always" });
  assert.deepEqual(names(text), ["meta", "delta", "done"]);
  assert.equal(text.events[1].data.text, "plain words");

  // Before any byte is streamed, a failed agent is an ordinary error response.
  const failed = await stream(unruly, { mode: "status-500" });
  assert.equal(failed.status, 502);
  assert.equal(failed.body.error.code, "upstream_error");
});

test("refusals on the stream endpoint are ordinary error envelopes", async () => {
  const undeployed = (await app.createAgent(alice, { name: "stream-undeployed" })).body;
  expectError(assert, await app.request("POST", `/v1/invoke/${undeployed.id}/stream`, { token: alice, json: invokeBody("x") }), 409, "no_active_deployment");
  expectError(assert, await app.request("POST", `/v1/invoke/${template.agent.id}/stream`, { token: alice, json: { protocol: "nope" } }), 400, "invalid_body");
});
