// Agent scripts the gateway tests deploy for real (through the control plane into the local Cloudflare).
import http from "node:http";

/**
 * Answers invoke/v1 with what it saw: the runtime session id, the headers the gateway forwarded, and its
 * `VERSION` variable (so rollback tests can tell deployments apart).
 */
export const ECHO_AGENT = `export default { async fetch(req, env) {
  const body = await req.json();
  const seen = { runtimeSession: body.sessionId, version: env.VERSION ?? null,
    authorization: req.headers.get("Authorization"), cookie: req.headers.get("Cookie"),
    traceId: req.headers.get("X-Trace-Id"), accept: req.headers.get("Accept"), metadata: body.metadata ?? null };
  return Response.json({ protocol: "invoke/v1", output: { text: JSON.stringify(seen) }, sessionId: body.sessionId,
    usage: { inputTokens: 3, outputTokens: 4 }, traceId: "agent-chosen" });
} };`;

/** Misbehaves as `metadata.mode` says, so each upstream failure can be produced on demand. */
export const UNRULY_AGENT = `
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const sse = (event, data) => new TextEncoder().encode("event: " + event + "\\ndata: " + JSON.stringify(data) + "\\n\\n");
function stream(ctx, produce) {
  const { readable, writable } = new TransformStream();
  const writer = writable.getWriter();
  ctx.waitUntil(produce(writer).catch(() => {}));
  return new Response(readable, { headers: { "Content-Type": "text/event-stream" } });
}
export default { async fetch(req, env, ctx) {
  const { metadata = {} } = await req.json();
  switch (metadata.mode) {
    case "status-500": return new Response("boom ".repeat(400), { status: 500 });
    case "status-400": return new Response("the agent did not like that", { status: 400 });
    case "not-invoke": return Response.json({ hello: "world" });
    case "slow": await sleep(metadata.ms || 3000); return Response.json({ protocol: "invoke/v1", output: { text: "late" } });
    case "throw-after-work":
      // Does something observable first (the test's gate counts it), then fails.
      await fetch(metadata.gate + "/tick?run=" + metadata.run);
      throw new Error("the agent crashed after doing work");
    case "throw-not-found":
      // Does work, then throws the very message a namespace gives for a script it does not hold.
      await fetch(metadata.gate + "/tick?run=" + metadata.run);
      throw new Error("Worker not found.");
    case "redirect": return Response.redirect(metadata.gate + "/tick?run=" + metadata.run + "&redirected=1", 302);
    case "json-always": return Response.json({ protocol: "invoke/v1", output: { text: "whole answer" }, usage: { inputTokens: 1, outputTokens: 2 } });
    case "text-always": return new Response("plain words", { headers: { "Content-Type": "text/plain" } });
    case "lockstep": return stream(ctx, async (w) => {
      // Each delta waits for the test's go-ahead, which it gives only after receiving the previous delta.
      await w.write(sse("meta", { sessionId: "runtime-side" }));
      for (let i = 0; i < metadata.deltas; i++) {
        await fetch(metadata.gate + "/next?run=" + metadata.run + "&i=" + i);
        await w.write(sse("delta", { text: "d" + i + " " }));
      }
      // Finishing, too, waits until the client has the last delta.
      await fetch(metadata.gate + "/next?run=" + metadata.run + "&i=" + metadata.deltas);
      await fetch(metadata.gate + "/finished?run=" + metadata.run);
      await w.write(sse("usage", { inputTokens: 1, outputTokens: metadata.deltas }));
      await w.write(sse("done", {}));
      await w.close();
    });
    case "ticks": return stream(ctx, async (w) => {
      for (let i = 0; i < 40; i++) {
        await fetch(metadata.gate + "/tick?run=" + metadata.run + "&i=" + i);
        await w.write(sse("delta", { text: "t" + i + " " }));
        await sleep(100);
      }
      await w.write(sse("done", {}));
      await w.close();
    });
    case "break": return stream(ctx, async (w) => {
      await w.write(sse("delta", { text: "partial " }));
      await sleep(50);
      await w.abort(new Error("the agent crashed"));
    });
    case "no-done": return stream(ctx, async (w) => {
      await w.write(sse("delta", { text: "partial " }));
      await w.close();
    });
    case "stall": return stream(ctx, async (w) => {
      await w.write(sse("delta", { text: "then silence " }));
      await sleep(metadata.ms || 3000);
      await w.close();
    });
    case "agent-error": return stream(ctx, async (w) => {
      await w.write(sse("delta", { text: "partial " }));
      await w.write(sse("error", { code: "model_overloaded", message: "try later", retryable: true }));
      await w.close();
    });
    default: return Response.json({ protocol: "invoke/v1", output: { text: "ok" } });
  }
} };`;

/**
 * A small HTTP server agents call back to, per `run`: `/next?run&i` blocks until `release(run, i)`; `/tick` and
 * `/finished` are counted. Lets tests observe what an agent does, and in which order, without timing anything.
 */
export async function startGate() {
  const waiting = new Map();
  const released = new Set();
  const counts = new Map();
  const bump = (run, kind) => counts.set(`${run}/${kind}`, (counts.get(`${run}/${kind}`) || 0) + 1);
  const server = http.createServer((req, res) => {
    const url = new URL(req.url, "http://gate");
    const run = url.searchParams.get("run");
    if (url.pathname === "/next") {
      const key = `${run}/${url.searchParams.get("i")}`;
      if (released.has(key)) return res.end("go");
      waiting.set(key, () => res.end("go"));
      return;
    }
    bump(run, url.pathname.slice(1));
    res.end("ok");
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    count: (run, kind) => counts.get(`${run}/${kind}`) || 0,
    release(run, i) {
      const key = `${run}/${i}`;
      released.add(key);
      const go = waiting.get(key);
      if (go) go();
    },
    close: () => new Promise((resolve) => {
      for (const go of waiting.values()) go();
      server.close(resolve);
    }),
  };
}

export const invokeBody = (text, extra = {}) => ({
  protocol: "invoke/v1",
  input: { messages: [{ role: "user", content: text }] },
  ...extra,
});
