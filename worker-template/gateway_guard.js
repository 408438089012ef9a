// The gateway guard: the main module of every agent the platform deploys, in front of the agent's own code
// (template or custom). It lets a request through only if it carries the gateway credential for this deployment
// (DESIGN.md §4.7): `X-Webhost-Gateway: t=<unix ms>,v1=<hex HMAC-SHA256>` over
//   "webhost-gateway/v1\n<method>\n<path>\n<t>\n<X-Trace-Id>\n<hex SHA-256 of the body>"
// keyed with the GATEWAY_SECRET binding, at most 30 s from this clock, and not seen before in this isolate.
// Anything else gets 401 before a line of the agent runs: no work, no telemetry, nothing billed. The agent sees
// its env without GATEWAY_SECRET. `__AGENT_MAIN__` is replaced with the agent's main module when it is deployed.
import * as agent from "__AGENT_MAIN__";

export * from "__AGENT_MAIN__";

const HEADER = "X-Webhost-Gateway";
const WINDOW_MS = 30_000;
const MAX_REMEMBERED = 10_000;
// The gateway sends at most 512 KiB bodies with their length: nothing larger (or unmeasured) is read or hashed.
const MAX_BODY_BYTES = 600 * 1024;
// Trace ids already let through, with when they may be forgotten (after their window has passed).
const seen = new Map();

const refuse = (reason) =>
  new Response(JSON.stringify({ error: { code: "gateway_credential_required", message: `Only the webhost.systems gateway may call this agent (${reason}).` } }), {
    status: 401,
    headers: { "Content-Type": "application/json; charset=utf-8" },
  });

const hex = (buffer) => Array.from(new Uint8Array(buffer), (b) => b.toString(16).padStart(2, "0")).join("");

function fromHex(text) {
  if (!/^[0-9a-f]{64}$/.test(text)) return null;
  const bytes = new Uint8Array(32);
  for (let i = 0; i < 32; i++) bytes[i] = parseInt(text.slice(i * 2, i * 2 + 2), 16);
  return bytes;
}

/** The request's body if it carries this deployment's credential, else the reason it does not. */
async function admitted(request, env) {
  if (typeof env.GATEWAY_SECRET !== "string" || env.GATEWAY_SECRET.length === 0) return { reason: "no credential configured" };
  const match = /^t=(\d{13}),v1=([0-9a-f]{64})$/.exec(request.headers.get(HEADER) || "");
  if (!match) return { reason: "no credential" };
  const at = Number(match[1]);
  const now = Date.now();
  if (Math.abs(now - at) > WINDOW_MS) return { reason: "expired credential" };
  const traceId = request.headers.get("X-Trace-Id") || "";
  const declared = request.headers.get("Content-Length");
  if (declared !== null && !(Number(declared) <= MAX_BODY_BYTES)) return { reason: "body too large" };
  for (const [id, until] of seen) {
    if (until > now) break;
    seen.delete(id);
  }
  if (seen.has(traceId)) return { reason: "replayed credential" };
  // Refuse rather than forget a credential that could still be replayed.
  if (seen.size >= MAX_REMEMBERED) return { reason: "too many calls at once" };
  // Reserved before anything is awaited, so the same credential sent twice at once gets through once.
  seen.set(traceId, now + 2 * WINDOW_MS);
  const verdict = await verify(request, env, match, at, traceId);
  if (!verdict.body) seen.delete(traceId);
  return verdict;
}

/** The body, read only up to `MAX_BODY_BYTES` (`null` past it). */
async function boundedBody(request) {
  if (!request.body) return new ArrayBuffer(0);
  const reader = request.body.getReader();
  const chunks = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > MAX_BODY_BYTES) {
      await reader.cancel();
      return null;
    }
    chunks.push(value);
  }
  const body = new Uint8Array(size);
  let at = 0;
  for (const chunk of chunks) {
    body.set(chunk, at);
    at += chunk.byteLength;
  }
  return body.buffer;
}

async function verify(request, env, match, at, traceId) {
  const body = await boundedBody(request);
  if (body === null) return { reason: "body too large" };
  const path = new URL(request.url).pathname;
  const input = `webhost-gateway/v1\n${request.method}\n${path}\n${at}\n${traceId}\n${hex(await crypto.subtle.digest("SHA-256", body))}`;
  const key = await crypto.subtle.importKey("raw", new TextEncoder().encode(env.GATEWAY_SECRET), { name: "HMAC", hash: "SHA-256" }, false, ["verify"]);
  // crypto.subtle.verify compares in constant time.
  if (!(await crypto.subtle.verify("HMAC", key, fromHex(match[2]), new TextEncoder().encode(input)))) return { reason: "invalid credential" };
  return { body };
}

const handler = agent.default;
// A default export that is a class (e.g. `class extends WorkerEntrypoint`) is instantiated per call with
// (ctx, env), as workerd would; an object's handlers are called as they are.
const isClass = typeof handler === "function";
const withoutCredential = ({ GATEWAY_SECRET: _, ...agentEnv }) => agentEnv;
// The agent's other handlers (scheduled, queue, …) never see GATEWAY_SECRET either.
const OTHER_HANDLERS = ["scheduled", "queue", "tail", "email", "trace"];
const otherHandlers = Object.fromEntries(
  OTHER_HANDLERS.flatMap((name) => {
    if (isClass && typeof handler.prototype?.[name] === "function") {
      return [[name, (event, env, ctx) => new handler(ctx, withoutCredential(env))[name](event)]];
    }
    if (!isClass && handler && typeof handler[name] === "function") {
      return [[name, (event, env, ctx) => handler[name](event, withoutCredential(env), ctx)]];
    }
    return [];
  }),
);

export default {
  ...otherHandlers,
  async fetch(request, env, ctx) {
    const verdict = await admitted(request, env);
    if (!verdict.body) {
      // A body of a size the gateway could have sent is read before the refusal (never kept, never hashed), so
      // the sender is not cut off mid-upload; a larger one is refused unread.
      if (!request.bodyUsed && verdict.reason !== "body too large") await boundedBody(request).catch(() => null);
      return refuse(verdict.reason);
    }
    const agentEnv = withoutCredential(env);
    const headers = new Headers(request.headers);
    headers.delete(HEADER);
    const forwarded = new Request(request.url, { method: request.method, headers, body: ["GET", "HEAD"].includes(request.method) ? undefined : verdict.body });
    if (isClass) {
      const instance = new handler(ctx, agentEnv);
      if (typeof instance.fetch !== "function") return new Response("this agent has no fetch handler", { status: 500 });
      return instance.fetch(forwarded);
    }
    if (!handler || typeof handler.fetch !== "function") return new Response("this agent has no fetch handler", { status: 500 });
    return handler.fetch(forwarded, agentEnv, ctx);
  },
};
