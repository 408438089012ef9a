// webhost.systems agent template: a deterministic echo agent speaking invoke/v1 (DESIGN.md §3).
//
//   POST <invokePath>   invoke/v1 request → JSON response, or SSE when the client sends `Accept: text/event-stream`
//   GET  /              which deployment this is (no secrets)
//
// After every invocation it reports one signed telemetry event (telemetry v1) with ctx.waitUntil, so reporting
// never delays or fails the invocation. Bindings injected at deploy: TELEMETRY_SECRET, TELEMETRY_REPORT_URL,
// USER_ID, AGENT_ID, DEPLOYMENT_ID, RUNTIME_PROVIDER, INVOKE_PATH, plus the agent's own secrets.

const PROTOCOL = "invoke/v1";
const MAX_DELAY_MS = 5000;
const TELEMETRY_ATTEMPTS = 2;
const TELEMETRY_RETRY_DELAY_MS = 250;

function json(status, value, headers = {}) {
  return new Response(JSON.stringify(value), {
    status,
    headers: { "Content-Type": "application/json; charset=utf-8", ...headers },
  });
}

function invokeError(status, code, message) {
  return json(status, { protocol: PROTOCOL, error: { code, message, retryable: false } });
}

/** Validates an invoke/v1 request; returns [request, null] or [null, Response]. */
function parseInvoke(body) {
  if (!body || typeof body !== "object" || body.protocol !== PROTOCOL) {
    return [null, invokeError(400, "invalid_protocol", `expected {"protocol":"${PROTOCOL}",…}`)];
  }
  const messages = body.input && body.input.messages;
  if (!Array.isArray(messages) || messages.some((m) => !m || typeof m.role !== "string" || typeof m.content !== "string")) {
    return [null, invokeError(400, "invalid_input", "input.messages must be an array of {role, content} strings")];
  }
  return [body, null];
}

/** Rough token count: whitespace-separated words. Deterministic, which is what tests and demos need. */
function countTokens(text) {
  return text.split(/\s+/).filter(Boolean).length;
}

function lastUserMessage(messages) {
  for (let i = messages.length - 1; i >= 0; i--) if (messages[i].role === "user") return messages[i].content;
  return "";
}

/** TELEMETRY_SECRET is base64url of the raw key bytes (seed 001): those bytes are the HMAC key. */
function keyBytes(secret) {
  const base64 = secret.replaceAll("-", "+").replaceAll("_", "/");
  const binary = atob(base64 + "=".repeat((4 - (base64.length % 4)) % 4));
  return Uint8Array.from(binary, (c) => c.charCodeAt(0));
}

async function hmacHex(secret, bytes) {
  const key = await crypto.subtle.importKey("raw", keyBytes(secret), { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  const mac = new Uint8Array(await crypto.subtle.sign("HMAC", key, bytes));
  return Array.from(mac, (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * Posts one signed telemetry event, retrying once on a network failure or a 5xx (the control plane counts a
 * retried event once: it is deduplicated by eventId). Never throws: a failed report is logged and dropped.
 */
async function reportTelemetry(env, event) {
  if (!env.TELEMETRY_REPORT_URL || !env.TELEMETRY_SECRET) return;
  const body = new TextEncoder().encode(JSON.stringify(event));
  const signature = await hmacHex(env.TELEMETRY_SECRET, body);
  for (let attempt = 1; attempt <= TELEMETRY_ATTEMPTS; attempt++) {
    try {
      const res = await fetch(env.TELEMETRY_REPORT_URL, {
        method: "POST",
        headers: {
          "Content-Type": "application/json",
          "X-Telemetry-Deployment-Id": env.DEPLOYMENT_ID || "",
          "X-Telemetry-Signature": `v1=${signature}`,
        },
        body,
      });
      if (res.ok) return;
      // A 4xx will not change on a retry (a bad signature, a malformed event): drop it.
      console.log(`telemetry report answered ${res.status}`);
      if (res.status < 500) return;
    } catch (error) {
      console.log(`telemetry report failed: ${error}`);
    }
    if (attempt < TELEMETRY_ATTEMPTS) await sleep(TELEMETRY_RETRY_DELAY_MS);
  }
}

function telemetryEvent(env, { traceId, inputTokens, outputTokens, computeMs, errors }) {
  return {
    eventId: crypto.randomUUID(),
    traceId,
    userId: env.USER_ID,
    agentId: env.AGENT_ID,
    deploymentId: env.DEPLOYMENT_ID,
    runtimeProvider: env.RUNTIME_PROVIDER || "cloudflare",
    ts: Date.now(),
    requests: 1,
    inputTokens,
    outputTokens,
    computeMs,
    errors,
  };
}

function sse(event, data) {
  return `event: ${event}\ndata: ${JSON.stringify(data)}\n\n`;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function invoke(request, env, ctx) {
  const started = Date.now();
  let body;
  try {
    body = await request.json();
  } catch {
    return invokeError(400, "invalid_json", "the request body is not JSON");
  }
  const [req, error] = parseInvoke(body);
  if (error) return error;

  const traceId = request.headers.get("X-Trace-Id") || crypto.randomUUID();
  const sessionId = typeof req.sessionId === "string" && req.sessionId ? req.sessionId : crypto.randomUUID();
  const text = lastUserMessage(req.input.messages);
  const inputTokens = req.input.messages.reduce((n, m) => n + countTokens(m.content), 0);
  const outputTokens = countTokens(text);
  const usage = { inputTokens, outputTokens };
  const report = () =>
    ctx.waitUntil(reportTelemetry(env, telemetryEvent(env, { traceId, inputTokens, outputTokens, computeMs: Date.now() - started, errors: 0 })));

  if (!(request.headers.get("Accept") || "").includes("text/event-stream")) {
    report();
    return json(200, { protocol: PROTOCOL, output: { text }, sessionId, usage, traceId });
  }

  // Streaming: one `delta` per word, `metadata.delayMs` apart (bounded), so clients can see bytes arrive as
  // they are produced.
  const delay = Math.min(Math.max(Number((req.metadata && req.metadata.delayMs) || 0), 0), MAX_DELAY_MS);
  const words = text.split(/(\s+)/).filter(Boolean);
  const encoder = new TextEncoder();
  const { readable, writable } = new TransformStream();
  const writer = writable.getWriter();
  ctx.waitUntil(
    (async () => {
      try {
        await writer.write(encoder.encode(sse("meta", { traceId, sessionId, deploymentId: env.DEPLOYMENT_ID })));
        for (const word of words) {
          if (delay) await sleep(delay);
          await writer.write(encoder.encode(sse("delta", { text: word })));
        }
        await writer.write(encoder.encode(sse("usage", usage)));
        await writer.write(encoder.encode(sse("done", {})));
        await writer.close();
      } catch {
        // The client went away: stop producing.
      }
      report();
    })(),
  );
  return new Response(readable, {
    status: 200,
    headers: { "Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-store" },
  });
}

export default {
  async fetch(request, env, ctx) {
    const url = new URL(request.url);
    const invokePath = env.INVOKE_PATH || "/invoke";
    if (url.pathname === invokePath) {
      if (request.method !== "POST") return invokeError(405, "method_not_allowed", "use POST");
      return invoke(request, env, ctx);
    }
    if (request.method === "GET" && url.pathname === "/") {
      return json(200, {
        agentId: env.AGENT_ID,
        deploymentId: env.DEPLOYMENT_ID,
        runtimeProvider: env.RUNTIME_PROVIDER,
        template: "echo",
      });
    }
    return invokeError(404, "not_found", `POST ${invokePath} with an invoke/v1 request`);
  },
};
