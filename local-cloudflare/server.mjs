// The local Cloudflare: the part of the Cloudflare API v4 that the control plane (and wrangler) use, served on
// this machine, with every uploaded script really running in workerd. One Miniflare runs root-worker.mjs, which
// loads each script version into its own isolate with a Worker Loader: changing the script set never
// reconfigures workerd, so a deploy never breaks calls to scripts that are already running (in flight or new).
//
// workerd never unloads a named loader isolate, so superseded versions pile up (about 1 MB each). After
// `maxStaleVersions` of them a fresh Miniflare takes the new calls, and the old one is disposed once its last
// call (and a grace period for its waitUntil work) is over.
//
//   /client/v4/...                        the API: same paths, multipart uploads, {success,errors,messages,result}
//   /__workers/<script>/<path>            a script with its workers.dev route enabled (workers.dev style)
//   /__dispatch/<namespace>/<script>/...  a script in a dispatch namespace (what the emulated binding calls)
//   /__local/faults                       tests inject provider failures per step
//
// `node local-cloudflare/server.mjs` runs it standalone (make dev); tests import `startLocalCloudflare`.
import http from "node:http";
import { Miniflare } from "miniflare";
// The undici Miniflare itself uses (and ships): calls reach workerd exactly as Miniflare's own fetch sends them.
import { Client, fetch, Pool } from "undici";
import { transform } from "esbuild";
import { existsSync, mkdirSync, readFileSync, writeFileSync, renameSync } from "node:fs";
import path from "node:path";
import { randomUUID } from "node:crypto";
import { fileURLToPath } from "node:url";
import { MODULE_TYPES, envelope, failure, jsonBody, parseMultipart, readBody } from "./wire.mjs";
import { secretRefusal, uploadRefusal } from "./refusals.mjs";

export { parseMultipart };

const ROOT_WORKER_PATH = path.join(path.dirname(fileURLToPath(import.meta.url)), "root-worker.mjs");
// Headers between this server and the root worker (see root-worker.mjs); never passed on to a script.
const SCRIPT_HEADER = "x-local-cloudflare-script";
const URL_HEADER = "x-local-cloudflare-url";
const PROBE_HEADER = "x-local-cloudflare-probe";
const FAILURE_HEADER = "x-local-cloudflare-failure";
// Set on a script route's answer when there was no script to run, or the script threw (for the dispatcher).
const OUTCOME_HEADER = "x-local-cloudflare-outcome";
// workerd reads `request.cf` from this header on the root worker's socket (Miniflare's cfBlobHeader).
const CF_HEADER = "mf-cf-blob";
const INTERNAL_HEADERS = new Set([SCRIPT_HEADER, URL_HEADER, PROBE_HEADER, FAILURE_HEADER, CF_HEADER, "x-local-dispatch-limits"]);
/**
 * The id a script version runs under in the Worker Loader. It changes whenever the code, bindings or secrets do,
 * so the next request gets a fresh isolate while calls already made to the previous one run to their end.
 */
const loaderId = (script) => `${script.scope}/${script.name}@${script.version}`;
const newVersion = () => randomUUID().replaceAll("-", "");

/** How long a replaced workerd outlives its last call, for work the scripts left to ctx.waitUntil. */
const RETIRE_GRACE_MS = 5000;
// A script may answer without reading its request body (the gateway guard refuses oversized bodies unread), and
// workerd then drops that connection; back in a pool, the dropped connection fails the next call that reuses it
// ("fetch failed"). Bodies above this size therefore go over a connection of their own, closed after the answer.
const OWN_CONNECTION_BODY_BYTES = 64 * 1024;

export async function startLocalCloudflare({
  port = 0,
  host = "127.0.0.1",
  apiToken = "local-cloudflare-token",
  accountId = "local-account",
  namespaces = ["webhost-agents"],
  subdomain = "local",
  stateDir = null,
  maxStaleVersions = 64,
  // How long a newly enabled workers.dev route takes to answer (Cloudflare propagates it asynchronously; until
  // then the URL answers 404). 0 by default; tests set it to show a deploy waits.
  propagationDelayMs = 0,
  // Cloudflare's per-token API limit: 1200 requests per 5 minutes, then 429 (code 971) with Retry-After.
  // `null` turns it off.
  rateLimit = { requests: 1200, windowMs: 300_000 },
  // Workers an account may hold outside dispatch namespaces (500 on the paid plan, 100 on free; namespaces are
  // unlimited): past it, an upload of a new script is refused with code 10037. `null` turns it off.
  maxAccountScripts = 500,
  log = () => {},
} = {}) {
  const scripts = new Map(); // key `${scope}/${name}` → script
  const faults = [];
  // When each API request of the current rate-limit window arrived.
  const apiRequests = [];
  // API calls made about each script (upload, secrets, subdomain, delete…), by script name: what a deploy costs.
  const apiCalls = new Map();
  const dispatchLimits = new Map();
  const requestsServed = new Map();
  let queue = Promise.resolve();
  // Script versions that calls (or upload probes) are using, by loader id, with how many use each: a replaced
  // version's code stays available to the root worker until the last call made to it is over.
  const pinned = new Map();
  const codeToken = randomUUID();
  let codeUrl = null;
  let cf = null; // the `request.cf` scripts see, as Miniflare gives it to its workers
  // A running workerd: {mf, url (the root worker's direct socket), pool, calls, loaded (loader ids sent to it),
  // retired}.
  let current = null;
  const generations = new Set();
  let recycling = null;
  let closed = false;

  const stateFile = stateDir && path.join(stateDir, "scripts.json");
  if (stateFile && existsSync(stateFile)) {
    for (const s of JSON.parse(readFileSync(stateFile, "utf8"))) {
      s.modules = s.modules.map((m) => ({ ...m, data: Buffer.from(m.data, "base64") }));
      s.version = newVersion();
      scripts.set(`${s.scope}/${s.name}`, s);
    }
  }
  function persist() {
    if (!stateFile) return;
    mkdirSync(stateDir, { recursive: true });
    const data = [...scripts.values()].map(({ version: _, ...s }) => ({ ...s, modules: s.modules.map((m) => ({ ...m, data: m.data.toString("base64") })) }));
    writeFileSync(`${stateFile}.tmp`, JSON.stringify(data));
    renameSync(`${stateFile}.tmp`, stateFile);
  }

  /** What the root worker needs to load a script version (see root-worker.mjs). */
  function code(script) {
    return {
      // Without a compatibility date Cloudflare runs a script at the oldest one, before any flag took effect.
      compatibilityDate: script.metadata.compatibility_date || "2021-11-02",
      compatibilityFlags: script.metadata.compatibility_flags || [],
      mainModule: script.metadata.main_module,
      // Source maps travel with a script but are no module of it.
      modules: script.modules.filter((m) => MODULE_TYPES[m.contentType]).map((m) => {
        const type = MODULE_TYPES[m.contentType];
        const binary = type === "CompiledWasm" || type === "Data";
        return { name: m.name, type, ...(binary ? { base64: m.data.toString("base64") } : { text: m.data.toString("utf8") }) };
      }),
      env: { ...script.plainBindings, ...script.secrets },
    };
  }

  function codeFor(id) {
    return pinned.get(id)?.script ?? [...scripts.values()].find((s) => loaderId(s) === id) ?? null;
  }

  async function startGeneration() {
    const mf = new Miniflare({
      name: "local-cloudflare-root",
      modules: true,
      modulesRoot: path.dirname(ROOT_WORKER_PATH),
      scriptPath: ROOT_WORKER_PATH,
      compatibilityDate: "2026-07-30",
      workerLoaders: { LOADER: {} },
      bindings: { CODE_URL: codeUrl, CODE_TOKEN: codeToken },
      unsafeDirectSockets: [{ host: "127.0.0.1", port: 0 }],
    });
    try {
      const url = await mf.unsafeGetDirectURL();
      cf ??= await mf.getCf();
      // No timeouts, as in Miniflare: a stream may stay silent for as long as its script likes.
      const pool = new Pool(url, { headersTimeout: 0, bodyTimeout: 0 });
      const gen = { mf, url, pool, calls: 0, loaded: new Set(), retired: false, disposed: null, timer: null };
      generations.add(gen);
      return gen;
    } catch (error) {
      await mf.dispose().catch(() => {});
      throw error;
    }
  }

  function dispose(gen) {
    clearTimeout(gen.timer);
    gen.disposed ??= Promise.all([gen.pool.destroy(), gen.mf.dispose()])
      .catch(() => {})
      .finally(() => generations.delete(gen));
    return gen.disposed;
  }

  /** Replaces the current workerd once it holds `maxStaleVersions` isolates of versions no longer current. */
  function maybeRecycle() {
    if (recycling || closed) return;
    const live = new Set([...scripts.values()].map(loaderId));
    if ([...current.loaded].filter((id) => !live.has(id)).length < maxStaleVersions) return;
    recycling = startGeneration()
      .then((gen) => {
        const old = current;
        current = gen;
        old.retired = true;
        if (old.calls === 0) old.timer = setTimeout(() => dispose(old), RETIRE_GRACE_MS).unref();
        log(`replaced workerd (${old.loaded.size} script versions loaded)`);
      })
      .catch((error) => log(`could not replace workerd: ${error.message}`))
      .finally(() => (recycling = null));
  }

  /**
   * Takes `script`'s version for one call (or probe) on the current workerd. Until `done()`, the version's code
   * stays available to the root worker and that workerd stays up, whatever changes meanwhile.
   */
  function use(script, { probe = false } = {}) {
    const id = loaderId(script);
    const pin = pinned.get(id) ?? { script, uses: 0 };
    pin.uses++;
    pinned.set(id, pin);
    const gen = current;
    gen.calls++;
    gen.loaded.add(probe ? `probe:${id}` : id);
    let over = false;
    return {
      id,
      url: gen.url,
      dispatcher: gen.pool,
      done() {
        if (over) return;
        over = true;
        if (--pin.uses === 0) pinned.delete(id);
        if (--gen.calls === 0 && gen.retired && !closed) gen.timer = setTimeout(() => dispose(gen), RETIRE_GRACE_MS).unref();
      },
    };
  }

  /** Starts `script` once in its own isolate (no handler is called); rejects with workerd's startup error. */
  async function probe(script) {
    const call = use(script, { probe: true });
    try {
      const res = await fetch(call.url, { headers: { [SCRIPT_HEADER]: call.id, [PROBE_HEADER]: "1" }, dispatcher: call.dispatcher });
      const text = await res.text();
      if (res.headers.has(FAILURE_HEADER) || res.status !== 204) throw new Error(text || `probe answered ${res.status}`);
    } finally {
      call.done();
    }
  }

  /**
   * Serialises changes in arrival order. `mutate` may be async (an upload waits for its probe); nothing in
   * workerd is reconfigured, so calls to running scripts are never disturbed.
   */
  function change(mutate) {
    const run = queue.then(async () => {
      const result = await mutate();
      persist();
      maybeRecycle();
      return result;
    });
    queue = run.catch(() => {});
    return run;
  }

  /**
   * Replaces script `key` with `update(latest)` as a new version. `latest` is the script as it is when the change
   * runs (a change queued just before, e.g. an upload, is kept), or `seen` if it is gone by then.
   */
  function withLatest(key, seen, update) {
    scripts.set(key, { ...update(scripts.get(key) ?? seen), version: newVersion() });
  }

  function takeFault(step, method, pathname) {
    const i = faults.findIndex((f) => f.step === step && (!f.method || f.method === method) && (!f.pathIncludes || pathname.includes(f.pathIncludes)));
    if (i === -1) return null;
    const fault = faults[i];
    if (--fault.times <= 0) faults.splice(i, 1);
    return fault;
  }

  function summary(s) {
    return {
      id: s.name,
      etag: s.etag,
      handlers: ["fetch"],
      created_on: s.createdOn,
      modified_on: s.modifiedOn,
      compatibility_date: s.metadata.compatibility_date,
      compatibility_flags: s.metadata.compatibility_flags || [],
      tags: s.tags,
      usage_model: "standard",
      has_modules: true,
    };
  }

  async function upload(scope, name, req, body) {
    if (!/^[a-z0-9_-]+$/.test(name)) {
      return failure(400, 10016, "Invalid Worker name. Ensure the name is lowercase, alphanumeric, and contains no spaces or special characters except dashes.");
    }
    if (scope === "workers" && maxAccountScripts !== null && !scripts.has(`workers/${name}`)) {
      const held = [...scripts.values()].filter((s) => s.scope === "workers").length;
      if (held >= maxAccountScripts) return failure(400, 10037, "You have exceeded the limit of Workers allowed on this account.");
    }
    let parts;
    try {
      parts = parseMultipart(body, req.headers["content-type"]);
    } catch (error) {
      return failure(400, 10021, `could not parse the upload: ${error.message}`);
    }
    const metaPart = parts.find((p) => p.name === "metadata");
    if (!metaPart) return failure(400, 10021, "the upload has no metadata part");
    let metadata;
    try {
      metadata = JSON.parse(metaPart.data.toString("utf8"));
    } catch {
      return failure(400, 10021, "the metadata part is not JSON");
    }
    // Modules are the file parts, known by their filename (what `main_module` names), whatever the part is called:
    // wrangler names parts like their files, Cloudflare's SDK calls them all `files`.
    const modules = parts.filter((p) => p !== metaPart && p.filename).map((p) => ({ name: p.filename, contentType: p.contentType, data: p.data }));
    const main = metadata.main_module;
    if (!main || !modules.some((m) => m.name === main)) return failure(400, 10021, `Uncaught Error: No such module: ${main}`);
    const refused = uploadRefusal(metadata, modules);
    if (refused) return refused;
    // Reorder so the main module comes first: workerd treats the first module as the entry point.
    modules.sort((a, b) => (a.name === main ? -1 : b.name === main ? 1 : 0));
    for (const m of modules.filter((m) => MODULE_TYPES[m.contentType] === "ESModule" || MODULE_TYPES[m.contentType] === "CommonJS")) {
      try {
        await transform(m.data.toString("utf8"), { loader: "js", format: "esm", sourcefile: m.name, logLevel: "silent" });
      } catch (error) {
        const first = error.errors?.[0];
        const where = first?.location ? ` at ${m.name}:${first.location.line}:${first.location.column}` : "";
        return failure(400, 10021, `Uncaught SyntaxError: ${first?.text || error.message}${where}`);
      }
    }
    const key = `${scope}/${name}`;
    const existing = scripts.get(key);
    // What the new version keeps of the previous one, as on Cloudflare: every binding of a type listed in
    // `keep_bindings`, and each `inherit` binding's one binding (under `old_name` before, `name` now).
    const keep = new Set(metadata.keep_bindings || []);
    const plainBindings = keep.has("plain_text") ? { ...existing?.plainBindings } : {};
    const secretsFromMeta = keep.has("secret_text") ? { ...existing?.secrets } : {};
    for (const b of metadata.bindings || []) {
      if (b.type === "plain_text") plainBindings[b.name] = b.text;
      else if (b.type === "secret_text") secretsFromMeta[b.name] = b.text;
      else if (b.type === "json") plainBindings[b.name] = b.json;
      else if (b.type === "inherit") {
        const from = b.old_name || b.name;
        if (existing && from in existing.secrets) secretsFromMeta[b.name] = existing.secrets[from];
        else if (existing && from in existing.plainBindings) plainBindings[b.name] = existing.plainBindings[from];
      } else return failure(400, 10021, `binding type ${JSON.stringify(b.type)} is not supported by the local Cloudflare`);
    }
    const now = new Date().toISOString();
    const script = {
      scope,
      name,
      metadata,
      modules,
      plainBindings,
      secrets: secretsFromMeta,
      tags: metadata.tags || existing?.tags || [],
      subdomainEnabled: existing?.subdomainEnabled || false,
      createdOn: existing?.createdOn || now,
      modifiedOn: now,
      etag: randomUUID().replaceAll("-", ""),
      version: newVersion(),
    };
    // The probe starts now, concurrently with other uploads; the script set still changes in arrival order.
    const probed = probe(script);
    probed.catch(() => {});
    try {
      await change(async () => {
        await probed;
        scripts.set(key, script);
      });
    } catch (error) {
      return failure(400, 10021, `Script startup failed: ${String(error.message || error).slice(0, 500)}`);
    }
    log(`uploaded ${key}`);
    return envelope({ ...summary(script), deployment_id: script.etag, startup_time_ms: 1 });
  }

  async function api(req, url, body) {
    const auth = req.headers.authorization || "";
    if (auth !== `Bearer ${apiToken}`) return failure(401, 10000, "Authentication error");
    if (rateLimit) {
      const now = Date.now();
      while (apiRequests.length && apiRequests[0] <= now - rateLimit.windowMs) apiRequests.shift();
      if (apiRequests.length >= rateLimit.requests) {
        const retryAfter = Math.max(1, Math.ceil((apiRequests[0] + rateLimit.windowMs - now) / 1000));
        return { ...failure(429, 971, "Please wait and consider throttling your request speed"), headers: { "Retry-After": String(retryAfter) } };
      }
      apiRequests.push(now);
    }
    const p = url.pathname.slice("/client/v4".length).split("/").filter(Boolean);
    const method = req.method;
    if (p[0] === "accounts" && p[1] !== accountId) return failure(403, 10000, "Authentication error: not a member of this account");

    // /accounts/:a/workers/dispatch/namespaces/:ns/scripts[/:name[/secrets]]
    let scope = null;
    let rest = null;
    if (p[2] === "workers" && p[3] === "dispatch" && p[4] === "namespaces" && p[6] === "scripts") {
      if (!namespaces.includes(p[5])) return failure(404, 100119, `dispatch namespace ${p[5]} does not exist`);
      scope = `dispatch:${p[5]}`;
      rest = p.slice(7);
    } else if (p[2] === "workers" && p[3] === "scripts") {
      scope = "workers";
      rest = p.slice(4);
    } else if (p[2] === "workers" && p[3] === "services" && p[4]) {
      const s = scripts.get(`workers/${p[4]}`);
      if (!s) return failure(404, 10090, "This Worker does not exist on your account.");
      return envelope({ id: s.name, default_environment: { environment: "production", script: summary(s) } });
    } else if (p[2] === "workers" && p[3] === "subdomain") {
      return envelope({ subdomain });
    }
    if (scope) {
      const stepFor = () => (rest[1] === "secrets" ? "secret" : rest[1] === "subdomain" ? "subdomain" : method === "DELETE" ? "delete" : method === "PUT" && rest.length === 1 ? "upload" : "other");
      const fault = rest.length ? takeFault(stepFor(), method, url.pathname) : takeFault(method === "DELETE" ? "delete" : "list", method, url.pathname);
      if (fault) return { status: fault.status, body: { success: false, errors: [{ code: fault.code || (fault.status >= 500 ? 10002 : 10021), message: fault.message || "injected failure" }], messages: [], result: null }, headers: fault.retryAfter ? { "Retry-After": String(fault.retryAfter) } : {} };

      if (rest.length === 0) {
        // `tag:yes` includes, `tag:no` excludes (a bare tag is `:yes`); every pair must hold.
        const pairs = (url.searchParams.get("tags") || "").split(",").filter(Boolean).map((t) => {
          const [tag, allowed = "yes"] = t.split(":");
          return { tag, include: allowed !== "no" };
        });
        const matching = [...scripts.values()].filter((s) => s.scope === scope && pairs.every((p) => s.tags.includes(p.tag) === p.include));
        if (method === "GET") return envelope(matching.map(summary));
        if (method === "DELETE" && pairs.length) {
          await change(() => matching.forEach((s) => scripts.delete(`${s.scope}/${s.name}`)));
          return envelope(null);
        }
        return failure(405, 10000, "method not allowed");
      }
      const name = rest[0];
      const key = `${scope}/${name}`;
      apiCalls.set(name, (apiCalls.get(name) ?? 0) + 1);
      if (rest.length === 1 && method === "PUT") return upload(scope, name, req, body);
      const script = scripts.get(key);
      if (!script) return failure(404, 10007, `This Worker (${name}) does not exist.`);
      if (rest.length === 1 && method === "GET") {
        // A namespace wraps the script's summary (as Cloudflare's API and its SDKs have it); the account's own
        // scripts API answers the summary itself.
        if (scope === "workers") return envelope(summary(script));
        return envelope({ created_on: script.createdOn, modified_on: script.modifiedOn, dispatch_namespace: scope.slice("dispatch:".length), script: summary(script) });
      }
      if (rest.length === 1 && method === "DELETE") {
        await change(() => scripts.delete(key));
        log(`deleted ${key}`);
        return envelope(null);
      }
      if (rest[1] === "secrets") {
        if (method === "GET") return envelope(Object.keys(script.secrets).map((n) => ({ name: n, type: "secret_text" })));
        if (method === "PUT") {
          const secret = jsonBody(body);
          const refused = secretRefusal(secret, script);
          if (refused) return refused;
          await change(() => withLatest(key, script, (s) => ({ ...s, secrets: { ...s.secrets, [secret.name]: secret.text }, modifiedOn: new Date().toISOString() })));
          return envelope({ name: secret.name, type: "secret_text" });
        }
        if (method === "DELETE" && rest[2]) {
          await change(() => withLatest(key, script, (s) => {
            const { [rest[2]]: _, ...remaining } = s.secrets;
            return { ...s, secrets: remaining };
          }));
          return envelope(null);
        }
      }
      if (rest[1] === "subdomain" && scope === "workers") {
        if (method === "GET") return envelope({ enabled: script.subdomainEnabled, previews_enabled: script.previewsEnabled ?? true });
        if (method === "POST") {
          const wanted = jsonBody(body);
          if (typeof wanted?.enabled !== "boolean") return failure(400, 10021, "expected a JSON body {enabled: boolean, previews_enabled?: boolean}");
          if (wanted.enabled === true && !script.subdomainEnabled) script.liveAt = Date.now() + propagationDelayMs;
          script.subdomainEnabled = wanted.enabled === true;
          // As on Cloudflare, previews follow `enabled` unless the request says otherwise.
          script.previewsEnabled = wanted.previews_enabled ?? script.subdomainEnabled;
          persist();
          return envelope({ enabled: script.subdomainEnabled, previews_enabled: script.previewsEnabled });
        }
      }
    }
    log(`unhandled API call ${method} ${url.pathname}`);
    return failure(404, 7003, `Could not route to ${url.pathname}, perhaps your object identifier is invalid?`);
  }

  /** Forwards a request to one script, streaming the answer back. */
  async function forward(req, res, scope, name, rest, body) {
    const script = scripts.get(`${scope}/${name}`);
    if (scope === "workers" && script?.subdomainEnabled && Date.now() < (script.liveAt ?? 0)) {
      // Not propagated yet: what a workers.dev URL answers before its route is live.
      res.writeHead(404, { "Content-Type": "text/plain" }).end("There is nothing here yet");
      return;
    }
    if (!script || (scope === "workers" && !script.subdomainEnabled)) {
      // The emulated dispatch binding turns this into the rejection a real namespace gives ("Worker not found").
      res.writeHead(404, { "Content-Type": "text/plain", [OUTCOME_HEADER]: "missing" }).end(`no script ${name} here`);
      return;
    }
    // The call runs on the version current now, to its end, whatever deploys happen meanwhile.
    const call = use(script);
    requestsServed.set(name, (requestsServed.get(name) ?? 0) + 1);
    const limits = req.headers["x-local-dispatch-limits"];
    if (limits && scope !== "workers") dispatchLimits.set(name, JSON.parse(limits));
    const headers = Object.fromEntries(Object.entries(req.headers).filter(([k]) => k !== "host" && k !== "connection" && !INTERNAL_HEADERS.has(k)));
    headers[SCRIPT_HEADER] = call.id;
    headers[URL_HEADER] = `https://${name}.${subdomain}.workers.dev${rest}`;
    headers[CF_HEADER] = JSON.stringify({ ...cf, clientAcceptEncoding: req.headers["accept-encoding"] ?? "" });
    const controller = new AbortController();
    res.on("close", () => controller.abort());
    const ownConnection = body?.length > OWN_CONNECTION_BODY_BYTES ? new Client(call.url, { headersTimeout: 0, bodyTimeout: 0 }) : null;
    try {
      const upstream = await fetch(call.url, {
        method: req.method,
        headers,
        body: ["GET", "HEAD"].includes(req.method) ? undefined : body,
        signal: controller.signal,
        dispatcher: ownConnection ?? call.dispatcher,
        // A script's redirect is its answer, passed on as Cloudflare passes it on.
        redirect: "manual",
      });
      if (upstream.headers.has(FAILURE_HEADER)) throw new Error(await upstream.text());
      // The body arrives decoded; the encoding is reported under Miniflare's name for it, as its fetch does.
      // A script cannot speak for the stand-in: its own x-local-cloudflare-* headers are dropped.
      const answered = Object.fromEntries([...upstream.headers].filter(([name]) => !name.startsWith("x-local-cloudflare-")));
      if (answered["content-encoding"]) {
        answered["mf-content-encoding"] = answered["content-encoding"];
        delete answered["content-encoding"];
      }
      res.writeHead(upstream.status, answered);
      if (upstream.body) for await (const chunk of upstream.body) res.write(chunk);
      res.end();
    } catch (error) {
      // Over workers.dev a script that throws is a 5xx answer; through a namespace the call rejects instead.
      if (!res.headersSent) res.writeHead(502, { "Content-Type": "text/plain", [OUTCOME_HEADER]: "threw" });
      res.end(`script ${name} failed: ${error.message}`);
    } finally {
      call.done();
      ownConnection?.destroy().catch(() => {});
    }
  }

  const server = http.createServer(async (req, res) => {
    try {
      const url = new URL(req.url, `http://${req.headers.host || host}`);
      const body = await readBody(req);
      if (url.pathname.startsWith("/client/v4/")) {
        const out = await api(req, url, body);
        res.writeHead(out.status, { "Content-Type": "application/json", ...(out.headers || {}) }).end(JSON.stringify(out.body));
        return;
      }
      const segments = url.pathname.split("/");
      if (segments[1] === "__workers" && segments[2]) {
        return forward(req, res, "workers", segments[2], "/" + segments.slice(3).join("/") + url.search, body);
      }
      if (segments[1] === "__dispatch" && segments[2] && segments[3]) {
        return forward(req, res, `dispatch:${segments[2]}`, segments[3], "/" + segments.slice(4).join("/") + url.search, body);
      }
      if (url.pathname === "/__local/code" && req.headers.authorization === `Bearer ${codeToken}`) {
        const script = codeFor(url.searchParams.get("id"));
        if (!script) return res.writeHead(404, { "Content-Type": "text/plain" }).end("no such script version");
        res.writeHead(200, { "Content-Type": "application/json" }).end(JSON.stringify(code(script)));
        return;
      }
      if (url.pathname === "/__local/faults" && req.headers.authorization === `Bearer ${apiToken}`) {
        if (req.method === "POST") faults.push({ times: 1, ...JSON.parse(body.toString("utf8")) });
        if (req.method === "DELETE") faults.length = 0;
        res.writeHead(200, { "Content-Type": "application/json" }).end(JSON.stringify(faults));
        return;
      }
      res.writeHead(404, { "Content-Type": "text/plain" }).end("local cloudflare: unknown path");
    } catch (error) {
      res.writeHead(500, { "Content-Type": "text/plain" }).end(`local cloudflare error: ${error.message}`);
    }
  });

  await new Promise((resolve) => server.listen(port, host, resolve));
  const origin = `http://${host}:${server.address().port}`;
  // workerd is started after the server listens: the root worker fetches scripts' code from it, at the address
  // the server is bound to (`host` may be a name, or a wildcard address).
  const bound = server.address().address;
  const reachable = bound === "0.0.0.0" || bound === "::" ? "127.0.0.1" : bound.includes(":") ? `[${bound}]` : bound;
  codeUrl = `http://${reachable}:${server.address().port}/__local/code`;
  try {
    current = await startGeneration();
  } catch (error) {
    server.close();
    throw error;
  }
  return {
    origin,
    apiBase: `${origin}/client/v4`,
    apiToken,
    accountId,
    namespace: namespaces[0],
    /** The URL a workers.dev-style script answers on. */
    workerUrl: (name) => `${origin}/__workers/${name}`,
    scripts: () => [...scripts.values()].map((s) => ({ scope: s.scope, name: s.name, tags: s.tags, secrets: Object.keys(s.secrets), subdomainEnabled: s.subdomainEnabled, previewsEnabled: s.previewsEnabled ?? null })),
    injectFault: (fault) => faults.push({ times: 1, ...fault }),
    /** The `limits` the last dispatch-namespace call to `name` asked for (the emulation does not enforce them). */
    dispatchLimits: (name) => dispatchLimits.get(name) ?? null,
    /** How many API calls were made about script `name`. */
    apiCalls: (name) => apiCalls.get(name) ?? 0,
    /** How many requests script `name` has been handed (either route): proves a call never reached a script. */
    requestsServed: (name) => requestsServed.get(name) ?? 0,
    /**
     * A secret's value as the script sees it, for tests that sign telemetry as the agent would. Only the local
     * emulation can do this; Cloudflare never reveals a secret.
     */
    secretValue: (name, secret) => [...scripts.values()].find((s) => s.name === name)?.secrets[secret] ?? null,
    clearFaults: () => (faults.length = 0),
    /** Newly enabled workers.dev routes answer 404 for `ms` first, as while Cloudflare propagates them. */
    setPropagationDelay: (ms) => (propagationDelayMs = ms),
    /** Sets Cloudflare's per-token API limit (`null`: off), e.g. `{ requests: 3, windowMs: 60_000 }`. */
    setRateLimit: (limit) => {
      rateLimit = limit;
      apiRequests.length = 0;
    },
    /** Sets how many Workers the account may hold outside namespaces (`null`: no limit). */
    setMaxAccountScripts: (n) => (maxAccountScripts = n),
    async close() {
      // Connections are cut first: `close` alone waits for every open one (a client's keep-alive, a request a
      // script still holds) and could wait forever.
      const stopped = new Promise((resolve) => server.close(resolve));
      server.closeAllConnections?.();
      await stopped;
      await queue;
      closed = true;
      await recycling;
      await Promise.all([...generations].map(dispose));
    },
  };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const lcf = await startLocalCloudflare({
    port: Number(process.env.LOCAL_CLOUDFLARE_PORT || 8788),
    apiToken: process.env.LOCAL_CLOUDFLARE_API_TOKEN || "local-cloudflare-token",
    accountId: process.env.LOCAL_CLOUDFLARE_ACCOUNT_ID || "local-account",
    stateDir: process.env.LOCAL_CLOUDFLARE_STATE || ".wrangler/local-cloudflare",
    log: (line) => console.log(`[local-cloudflare] ${line}`),
  });
  console.log(`[local-cloudflare] API on ${lcf.apiBase} (account ${lcf.accountId}); scripts on ${lcf.origin}/__workers/<name>`);
}
