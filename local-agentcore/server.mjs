// The local AgentCore: the part of Amazon Bedrock AgentCore's control API (bedrock-agentcore-control) and data
// API (bedrock-agentcore) the control plane uses, served on this machine on two ports as AWS serves them on two
// hosts, with every runtime version really running: its container image is a program in images/ (the last segment
// of the ECR repository names it), started as its own process with the version's environment variables, and
// spoken to over the AgentCore HTTP contract (POST /invocations, GET /ping).
//
//   control  PUT /runtimes/                                   CreateAgentRuntime (202, CREATING → READY)
//            GET|PUT|DELETE /runtimes/{id}/                   Get (?version=) | Update (a new version) | Delete
//            POST /runtimes/{id}/versions/                    ListAgentRuntimeVersions
//            PUT /runtimes/{id}/runtime-endpoints/            CreateAgentRuntimeEndpoint (a name → a version)
//            GET|PUT|DELETE /runtimes/{id}/runtime-endpoints/{name}/
//   data     POST /runtimes/{url-encoded ARN}/invocations?qualifier=   InvokeAgentRuntime, JSON or SSE relayed
//
// Every request's Signature Version 4 is checked by sigv4.mjs (an implementation independent of the control
// plane's); errors have AWS's REST-JSON shape (`x-amzn-ErrorType`, `{"message"}`) and statuses. Tests inject
// faults per operation, make versions fail to start, hold versions (and deletions) in progress, and hold the
// answers to an operation's calls. `node local-agentcore/server.mjs` runs it standalone
// (make dev); tests import `startLocalAgentCore`.
import http from "node:http";
import { fork } from "node:child_process";
import { existsSync } from "node:fs";
import path from "node:path";
import { randomBytes, randomUUID } from "node:crypto";
import { fileURLToPath } from "node:url";
import { awsError, verify } from "./sigv4.mjs";

const IMAGES = path.join(path.dirname(fileURLToPath(import.meta.url)), "images");
const SERVICE = "bedrock-agentcore";
const NAME = /^[a-zA-Z][a-zA-Z0-9_]{0,47}$/;
const CONTAINER_URI = /^(([0-9]{12})\.dkr\.ecr\.([a-z0-9-]+)\.amazonaws\.com(\.cn)?|public\.ecr\.aws)\/((?:[a-z0-9]+(?:[._-][a-z0-9]+)*\/)*[a-z0-9]+(?:[._-][a-z0-9]+)*)(?::([^:@]{1,300}))?(?:@(.+))?$/;
const ROLE_ARN = /^arn:aws(-[^:]+)?:iam::([0-9]{12})?:role\/.+$/;
const SESSION_HEADER = "x-amzn-bedrock-agentcore-runtime-session-id";
/** How long a started image has to answer its first ping. */
const START_TIMEOUT_MS = 10_000;

const readBody = (req) =>
  new Promise((resolve, reject) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => resolve(Buffer.concat(chunks)));
    req.on("error", reject);
  });

function validation(message, fieldList) {
  return awsError(400, "ValidationException", message, { reason: "FieldValidationFailed", ...(fieldList ? { fieldList } : {}) });
}

export async function startLocalAgentCore({
  controlPort = 0,
  dataPort = 0,
  host = "127.0.0.1",
  region = "us-east-1",
  accountId = "123456789012",
  // The access keys this account knows: { accessKeyId, secretAccessKey, sessionToken? }.
  credentials = [{ accessKeyId: "AKIALOCALAGENTCORE01", secretAccessKey: "local-agentcore-secret-access-key" }],
  // How long a version stays CREATING/UPDATING before its image is started (AgentCore takes tens of seconds).
  readyDelayMs = 150,
  log = () => {},
} = {}) {
  const keys = new Map(credentials.map((c) => [c.accessKeyId, c]));
  const runtimes = new Map(); // id → runtime
  const faults = []; // { operation, status, type, message, times }
  const requests = []; // { operation, accessKeyId, sessionId, qualifier }
  const tokens = new Map(); // clientToken → { fingerprint, answer }
  let failNextVersions = []; // failure reasons for the next versions to start
  let holding = false; // versions stay CREATING/UPDATING while set (AgentCore often takes minutes)
  let holdingDeletions = false; // deleted runtimes stay DELETING (their names taken) while set
  let pageSize = 100; // list pages, smaller in tests of paging
  const heldCalls = new Map(); // operation → { until: a promise its answers wait for, runFirst }
  let closed = false;
  const children = new Set(); // every image process started, so closing stops them all

  const now = () => new Date().toISOString();
  const arnOf = (id) => `arn:aws:bedrock-agentcore:${region}:${accountId}:runtime/${id}`;

  function takeFault(operation) {
    const i = faults.findIndex((f) => f.operation === operation);
    if (i === -1) return null;
    const f = faults[i];
    if (--f.times <= 0) faults.splice(i, 1);
    return awsError(f.status ?? 500, f.type ?? "InternalServerException", f.message ?? `injected ${operation} failure`);
  }

  /** Starts a version's image: its process, then pings until it is healthy (READY) or gives up (…_FAILED). */
  async function start(runtime, version) {
    const failed = (reason) => {
      version.status = version.number === "1" ? "CREATE_FAILED" : "UPDATE_FAILED";
      version.failureReason = reason;
      version.lastUpdatedAt = now();
      log(`${runtime.id} v${version.number}: ${reason}`);
      settleEndpoints(runtime);
    };
    await new Promise((r) => setTimeout(r, readyDelayMs));
    while (holding && !closed) await new Promise((r) => setTimeout(r, 50));
    if (closed || version.status === "DELETING") return;
    const injected = failNextVersions.shift();
    if (injected) return failed(injected);
    const m = CONTAINER_URI.exec(version.containerUri);
    const repository = m[5].split("/").at(-1);
    const program = path.join(IMAGES, `${repository}.mjs`);
    if (!existsSync(program)) return failed(`The container image ${version.containerUri} could not be pulled: repository ${repository} not found.`);
    const child = fork(program, [], {
      env: { ...version.environmentVariables, PORT: "0", IMAGE_TAG: m[6] ?? "latest", PATH: process.env.PATH },
      stdio: ["ignore", "inherit", "inherit", "ipc"],
    });
    version.process = child;
    children.add(child);
    child.once("exit", () => children.delete(child));
    // Deleted while it started: stopped at once.
    if (closed || version.status === "DELETING") {
      child.kill();
      return;
    }
    const port = await new Promise((resolve) => {
      const timer = setTimeout(() => resolve(null), START_TIMEOUT_MS);
      child.once("message", (msg) => { clearTimeout(timer); resolve(msg?.listening ?? null); });
      child.once("exit", () => { clearTimeout(timer); resolve(null); });
    });
    if (!port) return failed("The container exited before it listened on its port.");
    version.port = port;
    try {
      const ping = await fetch(`http://127.0.0.1:${port}/ping`);
      const status = (await ping.json()).status;
      if (!["Healthy", "HealthyBusy"].includes(status)) return failed(`The container's /ping answered ${status}.`);
    } catch (e) {
      return failed(`The container did not answer /ping: ${e.message}`);
    }
    child.once("exit", () => { version.port = null; });
    version.status = "READY";
    version.lastUpdatedAt = now();
    settleEndpoints(runtime);
  }

  /** Endpoints waiting for their version take its outcome; DEFAULT follows the newest READY version. */
  function settleEndpoints(runtime) {
    const ready = [...runtime.versions.values()].filter((v) => v.status === "READY");
    const newest = ready.at(-1);
    if (newest) runtime.endpoints.get("DEFAULT").liveVersion = newest.number;
    for (const e of runtime.endpoints.values()) {
      if (e.name === "DEFAULT" || e.status === "READY" || e.status === "DELETING") continue;
      const v = runtime.versions.get(e.targetVersion);
      if (v?.status === "READY") Object.assign(e, { status: "READY", liveVersion: v.number, lastUpdatedAt: now() });
      else if (v && v.status.endsWith("FAILED")) Object.assign(e, { status: e.liveVersion ? "UPDATE_FAILED" : "CREATE_FAILED", failureReason: `Version ${v.number} failed: ${v.failureReason}`, lastUpdatedAt: now() });
    }
    const latest = [...runtime.versions.values()].at(-1);
    runtime.status = latest.status;
    runtime.lastUpdatedAt = latest.lastUpdatedAt;
  }

  function stop(version) {
    version.process?.kill();
    version.process = null;
    version.port = null;
  }

  /** The version fields shared by Create and Update, validated as AgentCore validates them. */
  function readConfiguration(body, { requireNetwork }) {
    const fields = [];
    const uri = body?.agentRuntimeArtifact?.containerConfiguration?.containerUri;
    if (typeof uri !== "string" || !CONTAINER_URI.test(uri)) fields.push({ name: "agentRuntimeArtifact.containerConfiguration.containerUri", message: "must be an Amazon ECR image URI" });
    if (typeof body?.roleArn !== "string" || !ROLE_ARN.test(body.roleArn)) fields.push({ name: "roleArn", message: "must be an IAM role ARN" });
    const mode = body?.networkConfiguration?.networkMode;
    if ((requireNetwork || mode !== undefined) && !["PUBLIC", "VPC"].includes(mode)) fields.push({ name: "networkConfiguration.networkMode", message: "must be PUBLIC or VPC" });
    const env = body?.environmentVariables ?? {};
    if (typeof env !== "object" || Array.isArray(env) || Object.keys(env).length > 50) fields.push({ name: "environmentVariables", message: "at most 50 variables" });
    else for (const [k, v] of Object.entries(env)) if (k.length < 1 || k.length > 100 || typeof v !== "string" || v.length > 5000) fields.push({ name: `environmentVariables.${k}`, message: "keys 1-100 characters, values at most 5000" });
    if (fields.length) return { error: validation(`${fields.length} validation error(s) detected: ${fields.map((f) => `'${f.name}' ${f.message}`).join("; ")}`, fields) };
    const lifecycle = body?.lifecycleConfiguration;
    if (lifecycle !== undefined) {
      const bad = typeof lifecycle !== "object" || lifecycle === null || Object.entries(lifecycle).some(([k, v]) => !["idleRuntimeSessionTimeout", "maxLifetime"].includes(k) || !Number.isInteger(v) || v < 60 || v > 28800);
      if (bad) return { error: validation("'lifecycleConfiguration' values must be 60 to 28800 seconds", [{ name: "lifecycleConfiguration", message: "invalid" }]) };
    }
    // AgentCore's defaults (15 minutes idle, 8 hours), the idle timeout never above the lifetime.
    const maxLifetime = lifecycle?.maxLifetime ?? 28800;
    const idleRuntimeSessionTimeout = lifecycle?.idleRuntimeSessionTimeout ?? Math.min(900, maxLifetime);
    if (idleRuntimeSessionTimeout > maxLifetime) return { error: validation("'lifecycleConfiguration.idleRuntimeSessionTimeout' must not exceed 'maxLifetime'", [{ name: "lifecycleConfiguration", message: "invalid" }]) };
    const allowlist = body?.requestHeaderConfiguration?.requestHeaderAllowlist ?? [];
    if (!Array.isArray(allowlist) || allowlist.length > 20 || allowlist.some((h) => typeof h !== "string" || !/^[A-Za-z][A-Za-z0-9_-]{0,255}$/.test(h))) {
      return { error: validation("'requestHeaderConfiguration.requestHeaderAllowlist' must list at most 20 header names", [{ name: "requestHeaderConfiguration", message: "invalid" }]) };
    }
    // The description is a version's too: an update's replaces the runtime's for the version it makes.
    return { description: typeof body?.description === "string" ? body.description : undefined, lifecycleConfiguration: { idleRuntimeSessionTimeout, maxLifetime }, containerUri: uri, roleArn: body.roleArn, networkConfiguration: body.networkConfiguration ?? { networkMode: "PUBLIC" }, environmentVariables: env, protocolConfiguration: body.protocolConfiguration ?? { serverProtocol: "HTTP" }, requestHeaderAllowlist: allowlist.map((h) => h.toLowerCase()) };
  }

  function newVersion(runtime, config) {
    const number = String(runtime.versions.size === 0 ? 1 : Math.max(...[...runtime.versions.keys()].map(Number)) + 1);
    const version = { number, ...config, status: number === "1" ? "CREATING" : "UPDATING", failureReason: null, createdAt: now(), lastUpdatedAt: now(), process: null, port: null };
    runtime.versions.set(number, version);
    runtime.status = version.status;
    runtime.lastUpdatedAt = version.lastUpdatedAt;
    start(runtime, version).catch((e) => log(`start failed: ${e.stack}`));
    return version;
  }

  function runtimeView(runtime, version) {
    return {
      agentRuntimeArn: runtime.arn,
      agentRuntimeName: runtime.name,
      agentRuntimeId: runtime.id,
      agentRuntimeVersion: version.number,
      createdAt: runtime.createdAt,
      lastUpdatedAt: version.lastUpdatedAt,
      roleArn: version.roleArn,
      networkConfiguration: version.networkConfiguration,
      status: version.status,
      lifecycleConfiguration: version.lifecycleConfiguration ?? { idleRuntimeSessionTimeout: 900, maxLifetime: 28800 },
      ...(version.failureReason ? { failureReason: version.failureReason } : {}),
      description: version.description ?? runtime.description,
      agentRuntimeArtifact: { containerConfiguration: { containerUri: version.containerUri } },
      protocolConfiguration: version.protocolConfiguration,
      ...(version.requestHeaderAllowlist.length ? { requestHeaderConfiguration: { requestHeaderAllowlist: version.requestHeaderAllowlist } } : {}),
      environmentVariables: version.environmentVariables,
    };
  }

  function endpointView(runtime, e) {
    return {
      ...(e.liveVersion ? { liveVersion: e.liveVersion } : {}),
      ...(e.targetVersion ? { targetVersion: e.targetVersion } : {}),
      agentRuntimeEndpointArn: `${runtime.arn}/runtime-endpoint/${e.name}`,
      agentRuntimeArn: runtime.arn,
      status: e.status,
      createdAt: e.createdAt,
      lastUpdatedAt: e.lastUpdatedAt,
      ...(e.failureReason ? { failureReason: e.failureReason } : {}),
      name: e.name,
      id: e.id,
    };
  }

  /** Create and Update are idempotent by clientToken: the same token and body answer the first answer again. */
  function idempotent(token, fingerprint, make) {
    if (token === undefined) return make();
    const seen = tokens.get(token);
    if (seen) return seen.fingerprint === fingerprint ? seen.answer : validation("The client token was used with other parameters.");
    const answer = make();
    if (answer.status < 300) tokens.set(token, { fingerprint, answer });
    return answer;
  }

  const ok = (status, body) => ({ status, headers: { "content-type": "application/json", "x-amzn-requestid": randomUUID() }, body: JSON.stringify(body) });
  const notFound = (what) => awsError(404, "ResourceNotFoundException", `${what} not found.`);

  /** One page of a list: at most `maxResults` (100, or the test's smaller page size), from `nextToken`. */
  function pageOf(all, query) {
    const size = Math.min(Number(query.get("maxResults") ?? 100), 100, pageSize);
    const from = Number(query.get("nextToken") ?? 0);
    return { items: all.slice(from, from + size), nextToken: from + size < all.length ? String(from + size) : null };
  }

  function control(method, segments, query, body) {
    // segments after "runtimes": [] | [id] | [id, "versions"] | [id, "runtime-endpoints"] | [id, "runtime-endpoints", name]
    const [id, sub, endpointName] = segments;
    const runtime = id ? runtimes.get(id) : null;
    if (method === "POST" && !id) {
      return ["ListAgentRuntimes", () => {
        // Runtimes being deleted are listed, as DELETING, until they are gone.
        const { items, nextToken } = pageOf([...runtimes.values()], query);
        return ok(200, {
          agentRuntimes: items.map((r) => ({ agentRuntimeArn: r.arn, agentRuntimeId: r.id, agentRuntimeVersion: [...r.versions.keys()].at(-1) ?? "1", agentRuntimeName: r.name, description: r.description ?? "", lastUpdatedAt: r.lastUpdatedAt, status: r.status })),
          ...(nextToken ? { nextToken } : {}),
        });
      }];
    }
    if (method === "PUT" && !id) {
      return ["CreateAgentRuntime", () => {
        const name = body?.agentRuntimeName;
        if (typeof name !== "string" || !NAME.test(name)) return validation("1 validation error detected: 'agentRuntimeName' must match [a-zA-Z][a-zA-Z0-9_]{0,47}", [{ name: "agentRuntimeName", message: "invalid" }]);
        const config = readConfiguration(body, { requireNetwork: false });
        if (config.error) return config.error;
        return idempotent(body.clientToken, JSON.stringify(body), () => {
          if ([...runtimes.values()].some((r) => r.name === name)) return awsError(409, "ConflictException", `An agent runtime named ${name} already exists.`);
          const rid = `${name}-${randomBytes(8).toString("base64url").replace(/[^a-zA-Z0-9]/g, "x").slice(0, 10)}`;
          const runtime = { id: rid, name, arn: arnOf(rid), description: body.description, createdAt: now(), lastUpdatedAt: now(), status: "CREATING", versions: new Map(), endpoints: new Map() };
          runtime.endpoints.set("DEFAULT", { name: "DEFAULT", id: `DEFAULT`, status: "READY", liveVersion: null, targetVersion: null, createdAt: now(), lastUpdatedAt: now() });
          runtimes.set(rid, runtime);
          const version = newVersion(runtime, config);
          return ok(202, { agentRuntimeArn: runtime.arn, agentRuntimeId: rid, agentRuntimeVersion: version.number, createdAt: runtime.createdAt, status: version.status });
        });
      }];
    }
    if (!runtime) return [method === "GET" ? "GetAgentRuntime" : "Unknown", () => notFound(`Agent runtime ${id}`)];
    if (segments.length === 1 && method === "GET") {
      return ["GetAgentRuntime", () => {
        const version = query.get("version") ? runtime.versions.get(query.get("version")) : [...runtime.versions.values()].at(-1);
        return version ? ok(200, runtimeView(runtime, version)) : notFound(`Version ${query.get("version")} of agent runtime ${id}`);
      }];
    }
    if (segments.length === 1 && method === "PUT") {
      return ["UpdateAgentRuntime", () => {
        const config = readConfiguration(body, { requireNetwork: true });
        if (config.error) return config.error;
        return idempotent(body.clientToken, JSON.stringify({ id, body }), () => {
          const latest = [...runtime.versions.values()].at(-1);
          if (runtime.status === "DELETING") return awsError(409, "ConflictException", `Agent runtime ${id} is being deleted.`);
          if (latest && ["CREATING", "UPDATING"].includes(latest.status)) return awsError(409, "ConflictException", `Agent runtime ${id} is ${latest.status}; wait until it finishes.`);
          const version = newVersion(runtime, config);
          return ok(202, { agentRuntimeArn: runtime.arn, agentRuntimeId: id, agentRuntimeVersion: version.number, createdAt: runtime.createdAt, lastUpdatedAt: version.lastUpdatedAt, status: version.status });
        });
      }];
    }
    if (segments.length === 1 && method === "DELETE") {
      return ["DeleteAgentRuntime", () => {
        const only = query.get("version");
        if (only) {
          const version = runtime.versions.get(only);
          if (!version) return notFound(`Version ${only} of agent runtime ${id}`);
          if ([...runtime.endpoints.values()].some((e) => e.liveVersion === only && e.status !== "DELETING" && e.name !== "DEFAULT")) return awsError(409, "ConflictException", `Version ${only} is in use by an endpoint.`);
          if (runtime.versions.size === 1) return awsError(409, "ConflictException", `Version ${only} is the runtime's only version; delete the runtime instead.`);
          version.status = "DELETING";
          stop(version);
          runtime.versions.delete(only);
          return ok(202, { status: "DELETING", agentRuntimeId: id, agentRuntimeVersion: only });
        }
        runtime.status = "DELETING";
        for (const v of runtime.versions.values()) {
          v.status = "DELETING";
          stop(v);
        }
        setTimeout(async () => {
          while (holdingDeletions && !closed) await new Promise((r) => setTimeout(r, 50));
          runtimes.delete(id);
        }, readyDelayMs);
        return ok(202, { status: "DELETING", agentRuntimeId: id });
      }];
    }
    if (sub === "versions" && method === "POST") {
      return ["ListAgentRuntimeVersions", () => {
        const { items, nextToken } = pageOf([...runtime.versions.values()].reverse(), query);
        return ok(200, {
          agentRuntimes: items.map((v) => ({ agentRuntimeArn: runtime.arn, agentRuntimeId: id, agentRuntimeVersion: v.number, agentRuntimeName: runtime.name, description: v.description ?? runtime.description ?? "", lastUpdatedAt: v.lastUpdatedAt, status: v.status })),
          ...(nextToken ? { nextToken } : {}),
        });
      }];
    }
    if (sub === "runtime-endpoints" && !endpointName && method === "PUT") {
      return ["CreateAgentRuntimeEndpoint", () => {
        const name = body?.name;
        if (typeof name !== "string" || !NAME.test(name)) return validation("1 validation error detected: 'name' must match [a-zA-Z][a-zA-Z0-9_]{0,47}", [{ name: "name", message: "invalid" }]);
        return idempotent(body.clientToken, JSON.stringify({ id, body }), () => {
          if (runtime.endpoints.has(name)) return awsError(409, "ConflictException", `An endpoint named ${name} already exists.`);
          const target = body.agentRuntimeVersion ?? [...runtime.versions.keys()].at(-1);
          if (!runtime.versions.has(target)) return validation(`Version ${target} does not exist.`, [{ name: "agentRuntimeVersion", message: "no such version" }]);
          const e = { name, id: `${name}-${randomBytes(5).toString("hex")}`, status: "CREATING", liveVersion: null, targetVersion: target, createdAt: now(), lastUpdatedAt: now() };
          runtime.endpoints.set(name, e);
          setTimeout(() => settleEndpoints(runtime), readyDelayMs);
          return ok(202, { targetVersion: target, agentRuntimeEndpointArn: endpointView(runtime, e).agentRuntimeEndpointArn, agentRuntimeArn: runtime.arn, agentRuntimeId: id, endpointName: name, status: e.status, createdAt: e.createdAt });
        });
      }];
    }
    if (sub === "runtime-endpoints" && endpointName) {
      const e = runtime.endpoints.get(endpointName);
      const op = { GET: "GetAgentRuntimeEndpoint", PUT: "UpdateAgentRuntimeEndpoint", DELETE: "DeleteAgentRuntimeEndpoint" }[method] ?? "Unknown";
      if (!e) return [op, () => notFound(`Endpoint ${endpointName} of agent runtime ${id}`)];
      if (method === "GET") return [op, () => ok(200, endpointView(runtime, e))];
      if (method === "DELETE") {
        return [op, () => {
          if (e.name === "DEFAULT") return validation("The DEFAULT endpoint cannot be deleted.");
          runtime.endpoints.delete(endpointName);
          return ok(202, { status: "DELETING", agentRuntimeId: id, endpointName });
        }];
      }
    }
    return ["Unknown", () => awsError(404, "UnknownOperationException", `No operation ${method} /runtimes/${segments.join("/")}/`)];
  }

  /** InvokeAgentRuntime: the endpoint's live version's process answers; its answer is relayed as it streams. */
  async function invoke(req, res, arnOrId, query, body) {
    const id = arnOrId.startsWith("arn:") ? arnOrId.split("runtime/")[1] : arnOrId;
    const runtime = runtimes.get(id);
    if (!runtime || (arnOrId.startsWith("arn:") && runtime.arn !== arnOrId)) return awsError(404, "ResourceNotFoundException", `Agent runtime ${arnOrId} not found.`);
    const qualifier = query.get("qualifier") ?? "DEFAULT";
    const endpoint = runtime.endpoints.get(qualifier);
    if (!endpoint) return awsError(404, "ResourceNotFoundException", `Endpoint ${qualifier} of agent runtime ${id} not found.`);
    const version = endpoint.liveVersion && runtime.versions.get(endpoint.liveVersion);
    if (!version || version.status !== "READY") return awsError(409, "ConflictException", `Endpoint ${qualifier} has no ready version.`);
    let sessionId = req.headers[SESSION_HEADER];
    if (sessionId !== undefined && (sessionId.length < 33 || sessionId.length > 256)) {
      return validation("1 validation error detected: 'runtimeSessionId' must have length between 33 and 256", [{ name: "runtimeSessionId", message: "length 33-256" }]);
    }
    sessionId ??= randomUUID();
    requests.push({ operation: "InvokeAgentRuntime", runtimeId: id, qualifier, version: version.number, sessionId });
    if (!version.port) return awsError(424, "RuntimeClientError", "The runtime's container is not running.");
    let answer;
    try {
      answer = await fetch(`http://127.0.0.1:${version.port}/invocations`, {
        method: "POST",
        headers: {
          // Only the headers the runtime allowlists reach the container (AgentCore's header allowlist).
          ...Object.fromEntries(version.requestHeaderAllowlist.filter((h) => req.headers[h] !== undefined).map((h) => [h, req.headers[h]])),
          "content-type": req.headers["content-type"] ?? "application/json",
          accept: req.headers.accept ?? "application/json",
          [SESSION_HEADER]: sessionId,
          "x-amzn-bedrock-agentcore-runtime-request-id": randomUUID(),
        },
        body,
      });
    } catch (e) {
      return awsError(424, "RuntimeClientError", `The runtime's container did not answer: ${e.message}`);
    }
    // As AgentCore does: any non-2xx of the container is a 424 naming its status, the container's body dropped.
    if (answer.status >= 300) {
      await answer.body?.cancel();
      return awsError(424, "RuntimeClientError", `Received error (${answer.status}) from runtime. Please check your CloudWatch logs for more information.`);
    }
    res.writeHead(answer.status, {
      "content-type": answer.headers.get("content-type") ?? "application/json",
      [SESSION_HEADER]: sessionId,
      "x-amzn-requestid": randomUUID(),
    });
    for await (const chunk of answer.body) res.write(chunk);
    res.end();
    return null;
  }

  function serve(kind) {
    return async (req, res) => {
      const send = ({ status, headers, body }) => {
        res.writeHead(status, headers);
        res.end(body);
      };
      try {
        const body = await readBody(req);
        const [rawPath, rawQuery = ""] = req.url.split(/\?(.*)/s);
        const headers = Object.fromEntries(Object.entries(req.headers).map(([k, v]) => [k, Array.isArray(v) ? v.join(",") : v]));
        const checked = await verify({ method: req.method, rawPath, rawQuery, headers, body }, { credentials: keys, region, service: SERVICE });
        if (!checked.ok) {
          requests.push({ operation: "refused", status: checked.error.status, type: checked.error.headers["x-amzn-errortype"] });
          return send(checked.error);
        }
        const query = new URLSearchParams(rawQuery);
        const segments = rawPath.split("/").filter(Boolean).map(decodeURIComponent);
        if (segments[0] !== "runtimes") return send(awsError(404, "UnknownOperationException", `No operation at ${rawPath}`));
        if (kind === "data") {
          if (req.method !== "POST" || segments.length !== 3 || segments[2] !== "invocations") return send(awsError(404, "UnknownOperationException", `No operation at ${rawPath}`));
          const fault = takeFault("InvokeAgentRuntime");
          if (fault) return send(fault);
          const refused = await invoke(req, res, segments[1], query, body);
          if (refused) send(refused);
          return;
        }
        let json = null;
        if (body.length) {
          try {
            json = JSON.parse(body);
          } catch {
            return send(awsError(400, "ValidationException", "The request body is not valid JSON.", { reason: "CannotParse" }));
          }
        }
        const [operation, run] = control(req.method, segments.slice(1), query, json);
        requests.push({ operation, accessKeyId: checked.accessKeyId, body: json });
        const held = heldCalls.get(operation);
        if (held?.runFirst) {
          // Done at once, its answer lost on the way (the caller gives up waiting): as a call that timed out.
          const answer = takeFault(operation) ?? run();
          await held.until;
          return send(answer);
        }
        await held?.until;
        send(takeFault(operation) ?? run());
      } catch (e) {
        log(`error: ${e.stack}`);
        if (!res.headersSent) send(awsError(500, "InternalServerException", "Internal error."));
        else res.destroy();
      }
    };
  }

  const listen = (handler, port) =>
    new Promise((resolve) => {
      const server = http.createServer(handler);
      server.listen(port, host, () => resolve(server));
    });
  const controlServer = await listen(serve("control"), controlPort);
  const dataServer = await listen(serve("data"), dataPort);
  const controlUrl = `http://${host}:${controlServer.address().port}`;
  const dataUrl = `http://${host}:${dataServer.address().port}`;
  log(`control API on ${controlUrl}, data API on ${dataUrl} (region ${region}, account ${accountId})`);

  return {
    controlUrl,
    dataUrl,
    region,
    accountId,
    credentials,
    /** Every runtime as it stands: versions (status, image, environment variable names), endpoints. */
    runtimes: () =>
      [...runtimes.values()].map((r) => ({
        id: r.id,
        name: r.name,
        arn: r.arn,
        status: r.status,
        versions: [...r.versions.values()].map((v) => ({ number: v.number, status: v.status, containerUri: v.containerUri, roleArn: v.roleArn, lifecycle: v.lifecycleConfiguration, environmentVariables: Object.keys(v.environmentVariables), failureReason: v.failureReason, running: Boolean(v.port) })),
        endpoints: [...r.endpoints.values()].map((e) => ({ name: e.name, status: e.status, liveVersion: e.liveVersion, targetVersion: e.targetVersion })),
      })),
    /** A version's environment variable as its container sees it (tests sign telemetry as the agent would). */
    environmentValue: (runtimeId, version, name) => runtimes.get(runtimeId)?.versions.get(version)?.environmentVariables[name] ?? null,
    /** Answers the next `times` calls of `operation` with an AWS error. */
    injectFault: (fault) => faults.push({ times: 1, ...fault }),
    clearFaults: () => (faults.length = 0),
    /** The next versions to start fail with these reasons (…_FAILED, `failureReason`). */
    failNextVersions: (...reasons) => (failNextVersions = reasons),
    /** While held, versions stay CREATING/UPDATING (as a real runtime takes minutes to start). */
    holdVersions: (hold) => (holding = hold),
    /** Lists answer at most `size` items a page (AgentCore's is up to 100), so tests reach later pages. */
    setPageSize: (size) => (pageSize = size),
    /** While held, a deleted runtime stays DELETING, its name taken (AgentCore deletes in the background). */
    holdDeletions: (hold) => (holdingDeletions = hold),
    /**
     * Calls of `operation` are received (and listed) but not answered until the returned function is called; with
     * `runFirst` they are carried out at once and only their answers held (an answer lost on the way).
     */
    holdCalls(operation, { runFirst = false } = {}) {
      let release;
      heldCalls.set(operation, { until: new Promise((resolve) => (release = resolve)), runFirst });
      return () => {
        heldCalls.delete(operation);
        release();
      };
    },
    /** Every request: its operation (or `refused`, with the status and error type). */
    requests: () => [...requests],
    async close() {
      closed = true;
      for (const r of runtimes.values()) for (const v of r.versions.values()) stop(v);
      for (const child of children) child.kill();
      for (const server of [controlServer, dataServer]) {
        const stopped = new Promise((resolve) => server.close(resolve));
        server.closeAllConnections?.();
        await stopped;
      }
    },
  };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const agentcore = await startLocalAgentCore({
    controlPort: Number(process.env.LOCAL_AGENTCORE_CONTROL_PORT || 8791),
    dataPort: Number(process.env.LOCAL_AGENTCORE_DATA_PORT || 8792),
    credentials: [{ accessKeyId: process.env.LOCAL_AGENTCORE_ACCESS_KEY_ID || "AKIALOCALAGENTCORE01", secretAccessKey: process.env.LOCAL_AGENTCORE_SECRET_ACCESS_KEY || "local-agentcore-secret-access-key" }],
    log: (line) => console.log(`[local-agentcore] ${line}`),
  });
  process.on("SIGTERM", () => agentcore.close().then(() => process.exit(0)));
}
