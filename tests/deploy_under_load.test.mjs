// Deploying never breaks calls to agents that are already running: invocations through the gateway (JSON and
// SSE, two users, both deploy modes' local stand-in) under sustained load while other agents are created and
// deployed, an agent is redeployed and rolled back, and an agent is deleted. Every call must succeed.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startLocalCloudflare } from "../local-cloudflare/server.mjs";
import { deployVars, startControlPlane } from "./support/harness.mjs";
import { ECHO_AGENT, invokeBody } from "./support/agents.mjs";

/** Streams five deltas 100 ms apart, so streams are in flight whenever a deploy lands. */
const SLOW_STREAM_AGENT = `
const sse = (event, data) => new TextEncoder().encode("event: " + event + "\\ndata: " + JSON.stringify(data) + "\\n\\n");
export default { async fetch(req, env, ctx) {
  const body = await req.json();
  if (!(req.headers.get("Accept") || "").includes("text/event-stream")) {
    return Response.json({ protocol: "invoke/v1", output: { text: "whole" }, sessionId: body.sessionId });
  }
  const { readable, writable } = new TransformStream();
  const w = writable.getWriter();
  ctx.waitUntil((async () => {
    await w.write(sse("meta", { sessionId: body.sessionId }));
    for (let i = 0; i < 5; i++) {
      await new Promise((r) => setTimeout(r, 100));
      await w.write(sse("delta", { text: "d" + i + " " }));
    }
    await w.write(sse("usage", { inputTokens: 1, outputTokens: 5 }));
    await w.write(sse("done", {}));
    await w.close();
  })());
  return new Response(readable, { headers: { "Content-Type": "text/event-stream" } });
} };`;

let lcf, app, alice, bob;
before(async () => {
  lcf = await startLocalCloudflare();
  app = await startControlPlane({ vars: deployVars(lcf, "workers_dev") });
  alice = await app.token("load-alice");
  bob = await app.token("load-bob");
});
after(async () => {
  await app?.close();
  await lcf?.close();
});

test("deploys, redeploys, rollbacks and deletes never fail a call to another running agent", async () => {
  const steady = [
    { token: alice, ...(await app.deployedAgent(alice, "steady-a")) },
    { token: bob, ...(await app.deployedAgent(bob, "steady-b", { moduleCode: SLOW_STREAM_AGENT })) },
  ];
  const failures = [];
  const counts = { json: 0, sse: 0 };
  let stop = false;

  async function caller(i) {
    while (!stop) {
      // Even callers stream from the slow agent; odd ones call both agents' JSON endpoints.
      const target = i % 2 === 0 ? steady[1] : steady[((i - 1) / 2) % 2];
      try {
        if (i % 2 === 0) {
          const res = await app.invokeStream(target.token, target.agent.id, invokeBody(`sse ${i}`));
          const names = res.events.map((e) => e.event);
          if (res.status !== 200 || names[0] !== "meta" || names[names.length - 1] !== "done") failures.push(`sse ${res.status} ${names.join(",")}`);
          else counts.sse++;
        } else {
          const res = await app.invoke(target.token, target.agent.id, invokeBody(`json ${i}`));
          if (res.status !== 200) failures.push(`json ${res.status} ${res.text}`);
          else counts.json++;
        }
      } catch (error) {
        failures.push(`call threw: ${error.message}`);
      }
    }
  }

  const load = Array.from({ length: 8 }, (_, i) => caller(i));
  try {
    // Meanwhile: new agents deployed, one redeployed twice and rolled back, one deleted.
    const moving = await app.deployedAgent(alice, "moving", { moduleCode: ECHO_AGENT, env: { VERSION: "m1" } });
    const m2 = await app.settled(alice, moving.agent.id, (await app.deploy(alice, moving.agent.id, { moduleCode: ECHO_AGENT, env: { VERSION: "m2" } })).body.id);
    assert.equal(m2.status, "active");
    for (let n = 0; n < 3; n++) await app.deployedAgent(bob, `newcomer-${n}`);
    assert.equal((await app.activate(alice, moving.agent.id, moving.deployment.id)).status, 200);
    const rolledBack = await app.invoke(alice, moving.agent.id, invokeBody("which?"));
    assert.equal(rolledBack.headers.get("X-Deployment-Id"), moving.deployment.id);
    assert.equal((await app.deleteAgent(alice, moving.agent.id)).status, 204);
    // Give the clean-up that a delete starts time to remove the scripts while calls go on.
    await app.until("the deleted agent's scripts are gone", async () => !lcf.scripts().some((s) => s.tags.includes(`agent-${moving.agent.id}`)), 20_000);
  } finally {
    stop = true;
    await Promise.all(load);
  }
  assert.deepEqual(failures, [], `${failures.length} calls failed`);
  assert.ok(counts.json > 20 && counts.sse > 5, JSON.stringify(counts));
});
