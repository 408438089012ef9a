// Boots the built control plane in workerd (Miniflare) with D1, applies the real migrations from
// d1-migrations/, and mints real RS256 tokens with jose. `TestApp` has one method per route.
import { Miniflare } from "miniflare";
import { createParser } from "eventsource-parser";
import { exportJWK, generateKeyPair, SignJWT } from "jose";
import { createHash, createHmac } from "node:crypto";
import { readdirSync, readFileSync } from "node:fs";
import net from "node:net";
import { fileURLToPath } from "node:url";
import path from "node:path";

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
export const ISSUER = "https://issuer.test.webhost.systems";
const WRANGLER_TOML = readFileSync(path.join(ROOT, "wrangler.toml"), "utf8");
const COMPATIBILITY_DATE = WRANGLER_TOML.match(/^compatibility_date = "([^"]+)"/m)[1];
const COMPATIBILITY_FLAGS = JSON.parse(WRANGLER_TOML.match(/^compatibility_flags = (\[[^\]]*\])/m)?.[1] ?? "[]");

/** An RS256 key pair as an identity provider holds it. */
export async function makeSigningKey(kid = `kid-${crypto.randomUUID()}`) {
  const { privateKey, publicKey } = await generateKeyPair("RS256", { extractable: true });
  const jwk = { ...(await exportJWK(publicKey)), kid, alg: "RS256", use: "sig" };
  return { kid, privateKey, publicKey, jwk };
}

export function jwksOf(...keys) {
  return JSON.stringify({ keys: keys.map((k) => k.jwk) });
}

/** Signs `claims` (defaults: our issuer, one hour of validity) with `key`. */
export async function mintToken(key, subject, { claims = {}, header = {}, expiresIn = "1h" } = {}) {
  const jwt = new SignJWT({ ...claims })
    .setProtectedHeader({ alg: "RS256", kid: key.kid, typ: "JWT", ...header })
    .setIssuedAt();
  if (subject !== undefined) jwt.setSubject(subject);
  if (!("iss" in claims)) jwt.setIssuer(ISSUER);
  if (expiresIn !== null) jwt.setExpirationTime(expiresIn);
  return jwt.sign(key.privateKey);
}

/** Splits a migration file into statements (our migrations hold no `;` inside literals). */
function migrationStatements() {
  const dir = path.join(ROOT, "d1-migrations");
  return readdirSync(dir)
    .filter((f) => f.endsWith(".sql"))
    .sort()
    .flatMap((f) =>
      readFileSync(path.join(dir, f), "utf8")
        .split("\n")
        .filter((line) => !line.trim().startsWith("--"))
        .join("\n")
        .split(";")
        .map((s) => s.trim())
        .filter(Boolean),
    );
}

/**
 * `extra` adds Miniflare options, e.g. `durableObjectsPersist` for restart tests. `dispatcher` (`{origin,
 * namespace}` of a local Cloudflare) adds the emulated dispatch namespace binding `DISPATCHER`.
 */
export function miniflareOptions(bindings, extra = {}, dispatcher = null) {
  const { workers: _ignored, ...shared } = extra;
  const controlPlane = {
    name: "control-plane",
    modules: true,
    modulesRoot: ROOT,
    scriptPath: path.join(ROOT, "src/platform/entry.mjs"),
    modulesRules: [
      { type: "ESModule", include: ["**/*.js", "**/*.mjs"] },
      { type: "CompiledWasm", include: ["**/*.wasm"] },
    ],
    compatibilityDate: COMPATIBILITY_DATE,
    compatibilityFlags: COMPATIBILITY_FLAGS,
    d1Databases: { DB: "control-plane-test" },
    r2Buckets: { ARTIFACTS: "artifacts-test" },
    durableObjects: {
      USER_GATE: { className: "UserGate", useSQLite: true },
      USER_FEED: { className: "UserFeed", useSQLite: true },
      DEPLOY_FOLLOWER: { className: "DeployFollower", useSQLite: true },
    },
    bindings,
  };
  const workers = [controlPlane];
  if (dispatcher) {
    controlPlane.wrappedBindings = {
      DISPATCHER: {
        scriptName: "dispatcher",
        bindings: { LOCAL_CLOUDFLARE_ORIGIN: dispatcher.origin, NAMESPACE: dispatcher.namespace },
      },
    };
    workers.push({ name: "dispatcher", modules: true, scriptPath: path.join(ROOT, "local-cloudflare/dispatcher.mjs") });
  }
  return { ...shared, workers };
}

/**
 * Starts a control plane. `vars` override the configuration; by default it trusts `key` inline.
 * A var given as `undefined` is left out entirely.
 */
/** Deploy settings pointing at a running local Cloudflare, in `target` mode. */
export function deployVars(lcf, target = "workers_dev") {
  return {
    DEPLOY_TARGET: target,
    CLOUDFLARE_API_BASE_URL: lcf.apiBase,
    CLOUDFLARE_API_TOKEN: lcf.apiToken,
    CLOUDFLARE_ACCOUNT_ID: lcf.accountId,
    DISPATCH_NAMESPACE: lcf.namespace,
    WORKERS_DEV_URL_TEMPLATE: `${lcf.origin}/__workers/{script}`,
    TELEMETRY_SECRETS_ENCRYPTION_KEY: Buffer.from(crypto.getRandomValues(new Uint8Array(32))).toString("base64"),
    TELEMETRY_REPORT_URL: "http://127.0.0.1:9/v1/telemetry/report",
  };
}

/** The control plane's settings for the local AgentCore `agentcore` (local-agentcore/server.mjs). */
export function agentcoreVars(agentcore) {
  const [key] = agentcore.credentials;
  return {
    AGENTCORE_REGION: agentcore.region,
    AGENTCORE_ACCOUNT_ID: agentcore.accountId,
    AGENTCORE_EXECUTION_ROLE_ARN: `arn:aws:iam::${agentcore.accountId}:role/WebhostAgentRuntime`,
    // Agents' images come from the platform's repositories only.
    AGENTCORE_ALLOWED_IMAGE_PREFIXES: `${agentcore.accountId}.dkr.ecr.${agentcore.region}.amazonaws.com/webhost-`,
    AGENTCORE_CONTROL_URL: agentcore.controlUrl,
    AGENTCORE_DATA_URL: agentcore.dataUrl,
    AWS_ACCESS_KEY_ID: key.accessKeyId,
    AWS_SECRET_ACCESS_KEY: key.secretAccessKey,
  };
}

/** A TCP port nothing listens on right now. */
export async function freePort() {
  const server = net.createServer();
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address();
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/**
 * `telemetryToSelf`: the control plane listens on a port chosen up front, and deployed agents report their
 * telemetry to it (TELEMETRY_REPORT_URL), closing the whole loop. `directSocket`: `app.url` reaches the control
 * plane on its own socket, as a deployed worker is reached, instead of through Miniflare's entry worker (which
 * adds a hop of its own; the benchmark uses this).
 */
export async function startControlPlane(options = {}) {
  // A port chosen up front (telemetryToSelf) may be taken by another test file between the choice and the listen:
  // then another one is chosen.
  for (let attempt = 1; ; attempt++) {
    try {
      return await startControlPlaneOnce(options);
    } catch (error) {
      if (error?.code !== "ERR_ADDRESS_IN_USE" || !options.telemetryToSelf || attempt >= 5) throw error;
    }
  }
}

async function startControlPlaneOnce({ vars = {}, migrate = true, miniflare = {}, dispatcher = null, telemetryToSelf = false, directSocket = false } = {}) {
  const key = await makeSigningKey();
  if (telemetryToSelf) {
    const port = await freePort();
    miniflare = { ...miniflare, host: "127.0.0.1", port };
    vars = { ...vars, TELEMETRY_REPORT_URL: `http://127.0.0.1:${port}/v1/telemetry/report` };
  }
  // Test users create far more agents than the free tier's 3; the limit itself is tested with its own setting.
  const bindings = {
    AUTH_ISSUER: ISSUER,
    AUTH_JWKS: jwksOf(key),
    // Likewise deploys: the deploy limits are tested with their own settings (tests/deploy_limits.test.mjs).
    TIER_ENTITLEMENTS: JSON.stringify({ free: { maxAgents: 1000, deploysPerHour: 100000, deploysInFlight: 100, liveScripts: 100000 } }),
    // Requests without a user's token are rate-limited per address; tests/rate_limits.test.mjs sets real limits.
    UNAUTHENTICATED_RATE_LIMIT: "1000000/1000000",
    TELEMETRY_RATE_LIMIT: "1000000/1000000",
    ...vars,
  };
  for (const [name, value] of Object.entries(bindings)) if (value === undefined) delete bindings[name];
  const options = miniflareOptions(bindings, miniflare, dispatcher);
  if (directSocket) options.workers[0].unsafeDirectSockets = [{ host: "127.0.0.1", port: 0 }];
  const mf = new Miniflare(options);
  let ready;
  try {
    ready = await mf.ready;
  } catch (error) {
    await mf.dispose().catch(() => {});
    throw error;
  }
  const url = directSocket ? await mf.unsafeGetDirectURL("control-plane") : ready;
  const db = await mf.getD1Database("DB");
  if (migrate) await db.batch(migrationStatements().map((sql) => db.prepare(sql)));
  const app = new TestApp(mf, db, key, url);
  app.vars = bindings;
  return app;
}

export class TestApp {
  constructor(mf, db, key, url) {
    this.mf = mf;
    this.db = db;
    this.key = key;
    /** The control plane's real HTTP address (for streaming clients that need a socket to close). */
    this.url = url;
  }

  async close() {
    await this.mf.dispose();
  }

  /**
   * A trace id as the gateway issues it for a call admitted to `deploymentId` (domain::admission): the only kind
   * telemetry is charged under. Made with this control plane's encryption key, as only the platform can.
   */
  admittedTraceId(deploymentId, at = Date.now()) {
    const raw = this.vars.TELEMETRY_SECRETS_ENCRYPTION_KEY;
    const keyBytes = raw.startsWith("hex:") ? Buffer.from(raw.slice(4), "hex") : Buffer.from(raw, raw.includes("-") || raw.includes("_") ? "base64url" : "base64");
    const traceKey = createHmac("sha256", keyBytes).update("webhost/trace-ids/v1").digest();
    // The minute it was issued (8 hex), then 16 random hex digits.
    const minute = Math.floor(at / 60_000).toString(16).padStart(8, "0");
    const nonce = minute + crypto.getRandomValues(Buffer.alloc(8)).toString("hex");
    const tag = createHmac("sha256", traceKey).update(`${deploymentId}\n${nonce}`).digest().subarray(0, 8).toString("hex");
    return `trc_${nonce}${tag}`;
  }

  token(subject, options) {
    return mintToken(this.key, subject, options);
  }

  /** A raw request. `json` is sent as an application/json body; `token` as a bearer token. */
  async request(method, pathname, { token, json, body, headers = {} } = {}) {
    const h = new Headers(headers);
    if (token) h.set("Authorization", `Bearer ${token}`);
    if (json !== undefined) {
      if (!h.has("Content-Type")) h.set("Content-Type", "application/json");
      body = JSON.stringify(json);
    }
    const res = await this.mf.dispatchFetch(`http://control-plane.test${pathname}`, { method, headers: h, body });
    const text = await res.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = text;
    }
    return { status: res.status, headers: res.headers, body: data, text };
  }

  health() {
    return this.request("GET", "/health");
  }
  me(token) {
    return this.request("GET", "/v1/me", { token });
  }
  listAgents(token, query = "") {
    return this.request("GET", `/v1/agents${query}`, { token });
  }
  createAgent(token, json) {
    return this.request("POST", "/v1/agents", { token, json });
  }
  getAgent(token, id) {
    return this.request("GET", `/v1/agents/${id}`, { token });
  }
  updateAgent(token, id, json) {
    return this.request("PATCH", `/v1/agents/${id}`, { token, json });
  }
  deleteAgent(token, id) {
    return this.request("DELETE", `/v1/agents/${id}`, { token });
  }
  disableAgent(token, id) {
    return this.request("POST", `/v1/agents/${id}/disable`, { token });
  }
  enableAgent(token, id) {
    return this.request("POST", `/v1/agents/${id}/enable`, { token });
  }

  /** A stub of a Durable Object of namespace `binding`, addressed by name. */
  async durableObject(binding, name) {
    const ns = await this.mf.getDurableObjectNamespace(binding);
    return ns.get(ns.idFromName(name));
  }

  deploy(token, agentId, json = {}, headers = {}) {
    return this.request("POST", `/v1/agents/${agentId}/deploy`, { token, json, headers });
  }
  listDeployments(token, agentId, query = "") {
    return this.request("GET", `/v1/agents/${agentId}/deployments${query}`, { token });
  }
  getDeployment(token, agentId, id) {
    return this.request("GET", `/v1/agents/${agentId}/deployments/${id}`, { token });
  }
  activate(token, agentId, id) {
    return this.request("POST", `/v1/agents/${agentId}/deployments/${id}/activate`, { token });
  }
  putSecret(token, agentId, name, value) {
    return this.request("PUT", `/v1/agents/${agentId}/secrets/${name}`, { token, json: { value } });
  }
  listSecrets(token, agentId) {
    return this.request("GET", `/v1/agents/${agentId}/secrets`, { token });
  }
  deleteSecret(token, agentId, name) {
    return this.request("DELETE", `/v1/agents/${agentId}/secrets/${name}`, { token });
  }

  invoke(token, agentId, json, headers = {}) {
    return this.request("POST", `/v1/invoke/${agentId}`, { token, json, headers });
  }

  /**
   * Opens `POST /v1/invoke/{agentId}/stream` over a real socket and parses the SSE as it arrives. Returns
   * `{status, headers, events, error}` once the stream ends; `onEvent(event, controller)` sees each event as
   * it arrives (and may abort the request through `controller`).
   */
  async invokeStream(token, agentId, json, { onEvent, headers = {} } = {}) {
    const controller = new AbortController();
    const res = await fetch(new URL(`/v1/invoke/${agentId}/stream`, this.url), {
      method: "POST",
      headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json", ...headers },
      body: JSON.stringify(json),
      signal: controller.signal,
    });
    const out = { status: res.status, headers: res.headers, events: [], body: null };
    if (!(res.headers.get("Content-Type") || "").includes("text/event-stream")) {
      out.body = await res.json();
      return out;
    }
    // A real SSE client's parser, fed the bytes as they arrive.
    const arrived = [];
    const parser = createParser({ onEvent: (e) => arrived.push({ event: e.event || "message", data: JSON.parse(e.data), at: Date.now() }) });
    const decoder = new TextDecoder();
    try {
      for await (const chunk of res.body) {
        parser.feed(decoder.decode(chunk, { stream: true }));
        while (arrived.length) {
          const event = arrived.shift();
          out.events.push(event);
          if (onEvent) await onEvent(event, controller);
        }
      }
    } catch (error) {
      if (error.name !== "AbortError") throw error;
      out.aborted = true;
    }
    return out;
  }

  /** The operator API with `adminToken`. */
  admin(method, pathname, adminToken, json) {
    return this.request(method, `/v1/admin${pathname}`, { json, headers: adminToken ? { Authorization: `Bearer ${adminToken}` } : {} });
  }

  createApiKey(token, json) {
    return this.request("POST", "/v1/api-keys", { token, json });
  }
  listApiKeys(token) {
    return this.request("GET", "/v1/api-keys", { token });
  }
  revokeApiKey(token, id) {
    return this.request("DELETE", `/v1/api-keys/${id}`, { token });
  }

  /** Creates an agent and deploys it (`deploy` is the deploy request); returns both once the deploy is active. */
  async deployedAgent(token, name, deploy = {}) {
    const created = await this.createAgent(token, { name });
    if (created.status !== 201) throw new Error(`create ${name}: ${created.text}`);
    const accepted = await this.deploy(token, created.body.id, deploy);
    if (accepted.status !== 202) throw new Error(`deploy ${name}: ${accepted.text}`);
    const deployment = await this.settled(token, created.body.id, accepted.body.id);
    if (deployment.status !== "active") throw new Error(`deploy ${name}: ${JSON.stringify(deployment.error)}`);
    return { agent: created.body, deployment };
  }

  /**
   * `POST /v1/telemetry/report` as a deployed agent sends it. `body` (an object, a string or bytes) is sent as
   * is; `sign` is the secret to sign those exact bytes with (or `signature` a ready header value).
   */
  report(deploymentId, body, { secret, signature, headers = {} } = {}) {
    const bytes = typeof body === "string" || body instanceof Uint8Array ? body : JSON.stringify(body);
    const h = { "Content-Type": "application/json", ...headers };
    if (deploymentId !== undefined) h["X-Telemetry-Deployment-Id"] = deploymentId;
    if (signature !== undefined) h["X-Telemetry-Signature"] = signature;
    else if (secret !== undefined) h["X-Telemetry-Signature"] = signTelemetry(secret, bytes);
    for (const [name, value] of Object.entries(h)) if (value === undefined) delete h[name];
    return this.request("POST", "/v1/telemetry/report", { body: bytes, headers: h });
  }
  usageCurrent(token) {
    return this.request("GET", "/v1/usage/current", { token });
  }
  usageHistory(token, query = "") {
    return this.request("GET", `/v1/usage/history${query}`, { token });
  }
  metricsRecent(token, query) {
    return this.request("GET", `/v1/metrics/recent${query}`, { token });
  }

  /** Polls `check()` (async, returning a truthy value when done) every 50 ms; throws after `timeoutMs`. */
  async until(what, check, timeoutMs = 15_000) {
    const end = Date.now() + timeoutMs;
    for (;;) {
      const value = await check();
      if (value) return value;
      if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** Polls a deployment until it leaves `deploying`. */
  settled(token, agentId, id, timeoutMs = 30_000) {
    return this.until(
      `deployment ${id} to leave deploying`,
      async () => {
        const res = await this.getDeployment(token, agentId, id);
        return (res.status !== 200 || res.body.status !== "deploying") && res.body;
      },
      timeoutMs,
    );
  }

  /** Runs the cron trigger (the clean-up job) once. */
  async runScheduled() {
    const worker = await this.mf.getWorker();
    return worker.scheduled({ cron: "*/5 * * * *" });
  }

  /** Every stored agent row, straight from D1, for "nothing changed" assertions. */
  async agentRows() {
    const { results } = await this.db.prepare("SELECT * FROM agents ORDER BY id").all();
    return results;
  }
}

/** `v1=<hex HMAC-SHA256 of bytes>` under `secret`, as the agent template signs (key = the secret's UTF-8 bytes). */
/** Signs as an agent does: the key is the raw bytes the TELEMETRY_SECRET (base64url, seed 001) stands for. */
export function signTelemetry(secret, bytes) {
  return `v1=${createHmac("sha256", Buffer.from(secret, "base64url")).update(bytes).digest("hex")}`;
}

/** Asserts the error envelope (DESIGN.md §3) and returns its `error` object. */
export function expectError(assert, res, status, code) {
  assert.equal(res.status, status, `expected ${status} ${code}, got ${res.status}: ${res.text}`);
  assert.ok(res.body && res.body.error, `no envelope: ${res.text}`);
  const { error } = res.body;
  assert.equal(error.code, code, res.text);
  assert.equal(typeof error.message, "string");
  assert.equal(typeof error.retryable, "boolean");
  assert.equal(error.requestId, res.headers.get("X-Request-Id"));
  return error;
}

/**
 * Calls a deployed agent's own URL the way the gateway does: with the gateway credential for its deployment
 * (domain::gateway_credential), signed with the GATEWAY_SECRET the local Cloudflare holds for `scriptName`.
 * `secret`, `at` and `traceId` override what is signed, for tests that forge, replay or age a credential.
 */
export async function asGateway(lcf, scriptName, url, { method = "GET", body, traceId = `trc_${crypto.randomUUID().replaceAll("-", "")}`, at = Date.now(), secret, signBody } = {}) {
  const key = secret ?? lcf.secretValue(scriptName, "GATEWAY_SECRET");
  const bytes = Buffer.from(body ?? "");
  const signed = Buffer.from(signBody ?? body ?? "");
  const path = new URL(url).pathname.replace(/^\/__(workers\/[^/]+|dispatch\/[^/]+\/[^/]+)/, "") || "/";
  const input = `webhost-gateway/v1\n${method}\n${path}\n${at}\n${traceId}\n${createHash("sha256").update(signed).digest("hex")}`;
  const credential = `t=${at},v1=${createHmac("sha256", key).update(input).digest("hex")}`;
  const headers = { "X-Webhost-Gateway": credential, "X-Trace-Id": traceId, "Content-Type": "application/json" };
  return fetch(url, { method, headers, body: method === "GET" ? undefined : bytes });
}
