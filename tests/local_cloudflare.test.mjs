// The local Cloudflare on its own: the API subset with its envelope and token check, scripts really running
// in workerd with their bindings, workers.dev-style and dispatch-namespace access, deletion, tags, injected
// faults, state kept on disk, and wrangler itself as a real client.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { Miniflare } from "miniflare";
import { startLocalCloudflare } from "../local-cloudflare/server.mjs";
import { ROOT } from "./support/harness.mjs";

const run = promisify(execFile);
let lcf;
before(async () => {
  lcf = await startLocalCloudflare();
});
after(() => lcf?.close());

const ENV_ECHO = `export default { fetch(req, env) { return Response.json({ plain: env.PLAIN, secret: env.SECRET ?? null, later: env.LATER ?? null, path: new URL(req.url).pathname }); } };`;

function uploadForm(code, metadata) {
  const form = new FormData();
  form.set("metadata", new Blob([JSON.stringify({ main_module: "index.js", compatibility_date: "2026-07-30", ...metadata })], { type: "application/json" }));
  form.set("index.js", new Blob([code], { type: "application/javascript+module" }), "index.js");
  return form;
}

async function api(method, p, { body, token = lcf.apiToken, json } = {}) {
  const headers = { Authorization: `Bearer ${token}` };
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  }
  const res = await fetch(`${lcf.apiBase}/accounts/${lcf.accountId}${p}`, { method, headers, body });
  return { status: res.status, body: await res.json() };
}

test("upload, enable workers.dev, call: plain and secret bindings are in env", async () => {
  const bindings = [
    { type: "plain_text", name: "PLAIN", text: "plain-value" },
    { type: "secret_text", name: "SECRET", text: "secret-value" },
  ];
  const up = await api("PUT", "/workers/scripts/echo-env", { body: uploadForm(ENV_ECHO, { bindings, tags: ["t1"] }) });
  assert.equal(up.status, 200, JSON.stringify(up.body));
  assert.equal(up.body.success, true);
  assert.deepEqual(up.body.errors, []);
  assert.equal(up.body.result.id, "echo-env");

  assert.equal((await fetch(lcf.workerUrl("echo-env"))).status, 404, "not routed before the subdomain is enabled");
  const sub = await api("POST", "/workers/scripts/echo-env/subdomain", { json: { enabled: true } });
  assert.equal(sub.body.result.enabled, true);
  const res = await fetch(`${lcf.workerUrl("echo-env")}/some/path`);
  assert.deepEqual(await res.json(), { plain: "plain-value", secret: "secret-value", later: null, path: "/some/path" });

  const secret = await api("PUT", "/workers/scripts/echo-env/secrets", { json: { name: "LATER", text: "added", type: "secret_text" } });
  assert.equal(secret.status, 200);
  assert.equal((await (await fetch(lcf.workerUrl("echo-env"))).json()).later, "added");
});

test("the API checks the bearer token and the account", async () => {
  const res = await api("GET", "/workers/scripts/echo-env", { token: "wrong" });
  assert.equal(res.status, 401);
  assert.equal(res.body.success, false);
  assert.equal(res.body.errors[0].code, 10000);
  const other = await fetch(`${lcf.apiBase}/accounts/not-mine/workers/scripts/x`, { headers: { Authorization: `Bearer ${lcf.apiToken}` } });
  assert.equal(other.status, 403);
});

test("a script with a syntax error is refused with the provider's message and nothing changes", async () => {
  const res = await api("PUT", "/workers/scripts/broken", { body: uploadForm("export default { fetch() { return new Response('x') }", {}) });
  assert.equal(res.status, 400);
  assert.equal(res.body.errors[0].code, 10021);
  assert.match(res.body.errors[0].message, /SyntaxError/);
  assert.equal((await api("GET", "/workers/scripts/broken")).status, 404);
  const throwsAtStartup = await api("PUT", "/workers/scripts/throws", { body: uploadForm("throw new Error('boom at startup'); export default {}", {}) });
  assert.equal(throwsAtStartup.status, 400);
  assert.equal((await fetch(`${lcf.workerUrl("echo-env")}`)).status, 200, "other scripts keep running");
});

test("deleting a script stops it", async () => {
  await api("PUT", "/workers/scripts/short-lived", { body: uploadForm(ENV_ECHO, {}) });
  await api("POST", "/workers/scripts/short-lived/subdomain", { json: { enabled: true } });
  assert.equal((await fetch(lcf.workerUrl("short-lived"))).status, 200);
  assert.equal((await api("DELETE", "/workers/scripts/short-lived?force=true")).status, 200);
  assert.equal((await fetch(lcf.workerUrl("short-lived"))).status, 404);
  assert.equal((await api("DELETE", "/workers/scripts/short-lived")).status, 404);
});

test("dispatch namespace: upload, list and bulk delete by tag, reach through the emulated binding", async () => {
  const ns = `/workers/dispatch/namespaces/${lcf.namespace}/scripts`;
  for (const [name, tags] of [["d1", ["agent-a", "user-u"]], ["d2", ["agent-a", "user-u"]], ["d3", ["agent-b", "user-u"]]]) {
    const up = await api("PUT", `${ns}/${name}`, { body: uploadForm(ENV_ECHO, { tags, bindings: [{ type: "plain_text", name: "PLAIN", text: name }] }) });
    assert.equal(up.status, 200, JSON.stringify(up.body));
  }
  assert.equal((await api("PUT", `/workers/dispatch/namespaces/nope/scripts/x`, { body: uploadForm(ENV_ECHO, {}) })).status, 404);
  const listed = await api("GET", `${ns}?tags=agent-a:yes`);
  assert.deepEqual(listed.body.result.map((s) => s.id).sort(), ["d1", "d2"]);

  // A worker holding the emulated dispatch namespace binding reaches the scripts by name.
  const callerScript = `export default { async fetch(req, env) {
    const name = new URL(req.url).pathname.slice(1);
    return env.DISPATCHER.get(name, {}, { limits: { cpuMs: 50 } }).fetch("https://agent/hello");
  } };`;
  const caller = new Miniflare({
    workers: [
      {
        name: "caller",
        modules: true,
        compatibilityDate: "2026-07-30",
        script: callerScript,
        wrappedBindings: { DISPATCHER: { scriptName: "dispatcher", bindings: { LOCAL_CLOUDFLARE_ORIGIN: lcf.origin, NAMESPACE: lcf.namespace } } },
      },
      { name: "dispatcher", modules: true, scriptPath: path.join(ROOT, "local-cloudflare/dispatcher.mjs") },
    ],
  });
  try {
    const res = await caller.dispatchFetch("http://caller/d1");
    assert.deepEqual(await res.json(), { plain: "d1", secret: null, later: null, path: "/hello" });
  } finally {
    await caller.dispose();
  }

  assert.equal((await api("DELETE", `${ns}?tags=agent-a:yes`)).status, 200);
  const left = await api("GET", ns);
  assert.deepEqual(left.body.result.map((s) => s.id), ["d3"]);
  assert.equal((await fetch(`${lcf.origin}/__dispatch/${lcf.namespace}/d1/`)).status, 404);
});

test("injected faults answer like Cloudflare, once per injection", async () => {
  lcf.injectFault({ step: "upload", status: 503, message: "temporarily unavailable" });
  const failed = await api("PUT", "/workers/scripts/faulty", { body: uploadForm(ENV_ECHO, {}) });
  assert.equal(failed.status, 503);
  assert.equal(failed.body.success, false);
  assert.equal(failed.body.errors[0].message, "temporarily unavailable");
  assert.equal((await api("PUT", "/workers/scripts/faulty", { body: uploadForm(ENV_ECHO, {}) })).status, 200);
  lcf.injectFault({ step: "secret", status: 429, retryAfter: 7 });
  const limited = await fetch(`${lcf.apiBase}/accounts/${lcf.accountId}/workers/scripts/faulty/secrets`, {
    method: "PUT",
    headers: { Authorization: `Bearer ${lcf.apiToken}`, "Content-Type": "application/json" },
    body: JSON.stringify({ name: "X", text: "y", type: "secret_text" }),
  });
  assert.equal(limited.status, 429);
  assert.equal(limited.headers.get("Retry-After"), "7");
});

test("state kept on disk survives a restart", async () => {
  const dir = mkdtempSync(path.join(tmpdir(), "lcf-state-"));
  try {
    const first = await startLocalCloudflare({ stateDir: dir });
    const form = uploadForm(ENV_ECHO, { bindings: [{ type: "plain_text", name: "PLAIN", text: "kept" }] });
    await fetch(`${first.apiBase}/accounts/${first.accountId}/workers/scripts/durable`, { method: "PUT", headers: { Authorization: `Bearer ${first.apiToken}` }, body: form });
    await fetch(`${first.apiBase}/accounts/${first.accountId}/workers/scripts/durable/subdomain`, {
      method: "POST",
      headers: { Authorization: `Bearer ${first.apiToken}`, "Content-Type": "application/json" },
      body: JSON.stringify({ enabled: true }),
    });
    await first.close();
    const second = await startLocalCloudflare({ stateDir: dir });
    try {
      assert.equal((await (await fetch(second.workerUrl("durable"))).json()).plain, "kept");
    } finally {
      await second.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("wrangler deploy, pointed at the local Cloudflare, uploads a worker that then runs", async () => {
  const dir = mkdtempSync(path.join(tmpdir(), "wrangler-client-"));
  try {
    writeFileSync(path.join(dir, "wrangler.toml"), 'name = "from-wrangler"\nmain = "index.js"\ncompatibility_date = "2026-07-30"\n[vars]\nGREETING = "hello"\n');
    writeFileSync(path.join(dir, "index.js"), "export default { fetch(req, env) { return new Response(`${env.GREETING} from a wrangler upload`); } };\n");
    const { stdout } = await run(path.join(ROOT, "node_modules/.bin/wrangler"), ["deploy"], {
      cwd: dir,
      env: {
        ...process.env,
        PATH: `${path.join(ROOT, "node_modules/.bin")}:${process.env.PATH}`,
        CLOUDFLARE_API_BASE_URL: lcf.apiBase,
        CLOUDFLARE_API_TOKEN: lcf.apiToken,
        CLOUDFLARE_ACCOUNT_ID: lcf.accountId,
        WRANGLER_SEND_METRICS: "false",
        CI: "true",
      },
    });
    assert.match(stdout, /Uploaded from-wrangler/);
    const res = await fetch(lcf.workerUrl("from-wrangler"));
    assert.equal(await res.text(), "hello from a wrangler upload");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("it refuses what Cloudflare refuses: a bad script name, a main module no file part carries", async () => {
  for (const name of ["Upper-Case", "has space", "dots.too"]) {
    const res = await api("PUT", `/workers/scripts/${encodeURIComponent(name)}`, { body: uploadForm(ENV_ECHO, {}) });
    assert.equal(res.status, 400, name);
    assert.equal(res.body.errors[0].code, 10016);
    assert.match(res.body.errors[0].message, /^Invalid Worker name/);
  }
  // Modules are known by their filename: a part *named* like main_module whose file is called something else
  // does not provide it.
  const form = new FormData();
  form.set("metadata", new Blob([JSON.stringify({ main_module: "index.js", compatibility_date: "2026-07-30" })], { type: "application/json" }));
  form.set("index.js", new Blob([ENV_ECHO], { type: "application/javascript+module" }), "other.js");
  const misnamed = await api("PUT", "/workers/scripts/misnamed", { body: form });
  assert.equal(misnamed.status, 400);
  assert.deepEqual(misnamed.body.errors, [{ code: 10021, message: "Uncaught Error: No such module: index.js" }]);
  // Named anything, filed under the right name: accepted (Cloudflare's SDK calls every part `files`).
  const sdkStyle = new FormData();
  sdkStyle.set("metadata", new Blob([JSON.stringify({ main_module: "index.js", compatibility_date: "2026-07-30" })], { type: "application/json" }));
  sdkStyle.set("files", new Blob([ENV_ECHO], { type: "application/javascript+module" }), "index.js");
  assert.equal((await api("PUT", "/workers/scripts/sdk-style", { body: sdkStyle })).status, 200);
  assert.ok(!lcf.scripts().some((s) => s.name === "misnamed"));
});

test("it refuses what Cloudflare refuses in an upload, with Cloudflare's status and code, and nothing changes", async () => {
  const p = "/workers/scripts/refusals";
  const good = await api("PUT", p, { body: uploadForm(ENV_ECHO, { bindings: [{ type: "plain_text", name: "PLAIN", text: "kept" }], tags: ["t"] }) });
  assert.equal(good.status, 200, JSON.stringify(good.body));
  await api("POST", `${p}/subdomain`, { json: { enabled: true } });
  const secret = (n) => ({ type: "secret_text", name: `S${n}`, text: "x" });
  const refusals = [
    ["two bindings with one name", { bindings: [{ type: "plain_text", name: "PLAIN", text: "a" }, { type: "secret_text", name: "PLAIN", text: "b" }] }, 10053, /^Binding name 'PLAIN' already in use/],
    ["a binding without a name", { bindings: [{ type: "plain_text", text: "a" }] }, 10052, /missing a name/],
    ["a value over 5 KiB", { bindings: [{ type: "secret_text", name: "BIG", text: "x".repeat(5 * 1024 + 1) }] }, 10054, /'BIG' is larger than 5120 bytes/],
    ["129 variables and secrets", { bindings: Array.from({ length: 129 }, (_, n) => secret(n)) }, 10055, /at most 128/],
    ["nine tags", { tags: ["a", "b", "c", "d", "e", "f", "g", "h", "i"] }, 10021, /at most 8 tags/],
    ["a tag with a comma", { tags: ["a,b"] }, 10021, /contains ',' or '&'/],
    ["a tag with an ampersand", { tags: ["a&b"] }, 10021, /contains ',' or '&'/],
  ];
  for (const [what, metadata, code, message] of refusals) {
    const res = await api("PUT", p, { body: uploadForm(ENV_ECHO, metadata) });
    assert.equal(res.status, 400, what);
    assert.equal(res.body.success, false, what);
    assert.equal(res.body.errors[0].code, code, what);
    assert.match(res.body.errors[0].message, message, what);
  }
  // 128 is allowed: the limit is Cloudflare's, not lower.
  const most = await api("PUT", "/workers/scripts/refusals-most", { body: uploadForm(ENV_ECHO, { bindings: Array.from({ length: 128 }, (_, n) => secret(n)), tags: ["1", "2", "3", "4", "5", "6", "7", "8"] }) });
  assert.equal(most.status, 200, JSON.stringify(most.body));

  // Module parts: only the Workers API's content types. JSON is not one of them (bundle it, or send text/plain).
  for (const [file, type] of [["data.json", "application/json"], ["page.html", "text/html"]]) {
    const form = uploadForm(ENV_ECHO, {});
    form.set(file, new Blob(["{}"], { type }), file);
    const res = await api("PUT", p, { body: form });
    assert.equal(res.status, 400, type);
    assert.deepEqual(res.body.errors, [{ code: 10021, message: `module with name '${file}' has unsupported content type '${type}'` }]);
  }
  // A source map is accepted and kept aside: it is no module of the script.
  const mapped = uploadForm(ENV_ECHO, {});
  mapped.set("index.js.map", new Blob(['{"version":3}'], { type: "application/source-map" }), "index.js.map");
  assert.equal((await api("PUT", "/workers/scripts/refusals-mapped", { body: mapped })).status, 200);

  // Secrets: `type: "secret_text"` is required, and a secret may not take a plain variable's name.
  const refusedSecrets = [
    [{ name: "NEW", text: "v" }, 10021, /secret type must be "secret_text"/],
    [{ name: "NEW", text: "v", type: "plain_text" }, 10021, /secret type must be "secret_text"/],
    [{ name: "PLAIN", text: "v", type: "secret_text" }, 10053, /^Binding name 'PLAIN' already in use/],
    [{ name: "NEW", text: "x".repeat(5 * 1024 + 1), type: "secret_text" }, 10054, /larger than 5120 bytes/],
  ];
  for (const [json, code, message] of refusedSecrets) {
    const res = await api("PUT", `${p}/secrets`, { json });
    assert.equal(res.status, 400, JSON.stringify(json).slice(0, 60));
    assert.equal(res.body.errors[0].code, code);
    assert.match(res.body.errors[0].message, message);
  }
  // The subdomain needs {enabled: boolean}: an empty body or a missing flag changes nothing.
  for (const body of ["", "{}", '{"enabled":"yes"}']) {
    const res = await fetch(`${lcf.apiBase}/accounts/${lcf.accountId}${p}/subdomain`, { method: "POST", headers: { Authorization: `Bearer ${lcf.apiToken}`, "Content-Type": "application/json" }, body });
    assert.equal(res.status, 400, `subdomain body ${JSON.stringify(body)}`);
    assert.equal((await res.json()).errors[0].code, 10021);
  }
  assert.equal((await api("GET", `${p}/subdomain`)).body.result.enabled, true);

  // Nothing refused took effect: the first version still answers, with only its binding.
  assert.deepEqual(await (await fetch(lcf.workerUrl("refusals"))).json(), { plain: "kept", secret: null, later: null, path: "/" });
  assert.deepEqual((await api("GET", `${p}/secrets`)).body.result, []);
  assert.deepEqual(lcf.scripts().find((s) => s.name === "refusals").tags, ["t"]);
});

test("Cloudflare's limits, configurable: API requests per token, and Workers per account", async () => {
  const limited = await startLocalCloudflare({ rateLimit: { requests: 3, windowMs: 60_000 }, maxAccountScripts: 2 });
  try {
    const call = (p, init = {}) =>
      fetch(`${limited.apiBase}/accounts/${limited.accountId}${p}`, { headers: { Authorization: `Bearer ${limited.apiToken}` }, ...init });
    const upload = (name) => call(`/workers/scripts/${name}`, { method: "PUT", body: uploadForm(ENV_ECHO, {}) });
    assert.equal((await upload("one")).status, 200);
    assert.equal((await upload("two")).status, 200);
    const third = await upload("three");
    assert.equal(third.status, 400);
    assert.equal((await third.json()).errors[0].code, 10037, "past the account's Workers");
    const throttled = await call("/workers/scripts/one");
    assert.equal(throttled.status, 429);
    assert.equal((await throttled.json()).errors[0].code, 971);
    assert.match(throttled.headers.get("Retry-After"), /^[1-9]\d*$/);
    // Dispatch namespaces hold any number of scripts.
    limited.setRateLimit(null);
    for (const name of ["ns-1", "ns-2", "ns-3"]) {
      const res = await call(`/workers/dispatch/namespaces/${limited.namespace}/scripts/${name}`, { method: "PUT", body: uploadForm(ENV_ECHO, {}) });
      assert.equal(res.status, 200, name);
    }
  } finally {
    await limited.close();
  }
});

test("a new version keeps what Cloudflare keeps: inherit keeps the one binding it names, keep_bindings a type", async () => {
  const p = "/workers/scripts/keeper";
  const first = uploadForm(ENV_ECHO, { bindings: [{ type: "plain_text", name: "PLAIN", text: "one" }, { type: "secret_text", name: "SECRET", text: "s1" }, { type: "secret_text", name: "LATER", text: "l1" }] });
  assert.equal((await api("PUT", p, { body: first })).status, 200);
  await api("POST", `${p}/subdomain`, { json: { enabled: true } });
  const env = async () => (await fetch(`${lcf.origin}/__workers/keeper`)).json();
  // Only SECRET is inherited: LATER is gone, PLAIN is set anew.
  const second = uploadForm(ENV_ECHO, { bindings: [{ type: "plain_text", name: "PLAIN", text: "two" }, { type: "inherit", name: "SECRET" }] });
  assert.equal((await api("PUT", p, { body: second })).status, 200);
  assert.deepEqual(await env(), { plain: "two", secret: "s1", later: null, path: "/" });
  // keep_bindings keeps every secret (what wrangler sends when it changes code but not secrets).
  await api("PUT", `${p}/secrets`, { json: { name: "LATER", text: "l2", type: "secret_text" } });
  const third = uploadForm(ENV_ECHO, { bindings: [{ type: "plain_text", name: "PLAIN", text: "three" }], keep_bindings: ["secret_text"] });
  assert.equal((await api("PUT", p, { body: third })).status, 200);
  assert.deepEqual(await env(), { plain: "three", secret: "s1", later: "l2", path: "/" });
  // Neither: a new version has only what it names.
  assert.equal((await api("PUT", p, { body: uploadForm(ENV_ECHO, { bindings: [{ type: "plain_text", name: "PLAIN", text: "four" }] }) })).status, 200);
  assert.deepEqual(await env(), { plain: "four", secret: null, later: null, path: "/" });
});

test("tag filters: tag:yes includes, tag:no excludes, every pair must hold", async () => {
  const ns = `/workers/dispatch/namespaces/${lcf.namespace}/scripts`;
  for (const [name, tags] of [["tf-a", ["team", "beta"]], ["tf-b", ["team"]], ["tf-c", ["other"]]]) {
    assert.equal((await api("PUT", `${ns}/${name}`, { body: uploadForm(ENV_ECHO, { tags }) })).status, 200);
  }
  const ids = async (filter) => (await api("GET", `${ns}?tags=${encodeURIComponent(filter)}`)).body.result.map((s) => s.id).filter((id) => id.startsWith("tf-")).sort();
  assert.deepEqual(await ids("team:yes"), ["tf-a", "tf-b"]);
  assert.deepEqual(await ids("team:yes,beta:no"), ["tf-b"]);
  assert.deepEqual(await ids("team:no"), ["tf-c"]);
  await api("DELETE", `${ns}?tags=${encodeURIComponent("team:yes,beta:no")}`);
  assert.deepEqual(lcf.scripts().filter((s) => s.name.startsWith("tf-")).map((s) => s.name).sort(), ["tf-a", "tf-c"]);
});

test("by default, Cloudflare's numbers: 1200 API requests per 5 minutes, 500 Workers outside namespaces", async () => {
  const fresh = await startLocalCloudflare();
  try {
    const call = (p, init = {}) =>
      fetch(`${fresh.apiBase}/accounts/${fresh.accountId}${p}`, { headers: { Authorization: `Bearer ${fresh.apiToken}` }, ...init });
    for (let i = 0; i < 500; i++) {
      const res = await call(`/workers/scripts/w-${i}`, { method: "PUT", body: uploadForm(ENV_ECHO, {}) });
      assert.equal(res.status, 200, `upload ${i}`);
    }
    const past = await call("/workers/scripts/w-500", { method: "PUT", body: uploadForm(ENV_ECHO, {}) });
    assert.equal((await past.json()).errors[0].code, 10037, "the 501st Worker");
    // 501 requests so far; 699 more reach the limit of 1200, the next is refused.
    const answers = await Promise.all(Array.from({ length: 699 }, () => call("/workers/scripts/w-0").then((r) => r.status)));
    assert.ok(answers.every((s) => s === 200));
    const refused = await call("/workers/scripts/w-0");
    assert.equal(refused.status, 429);
    assert.equal((await refused.json()).errors[0].code, 971);
  } finally {
    await fresh.close();
  }
});

test("a script uploaded without a compatibility date runs at Cloudflare's oldest one", async () => {
  // `navigator` exists from the 2022-03-21 compatibility date on: a script without a date has none.
  const probe = `export default { fetch() { return new Response(typeof navigator); } };`;
  const form = (metadata) => {
    const f = new FormData();
    f.set("metadata", new Blob([JSON.stringify({ main_module: "index.js", ...metadata })], { type: "application/json" }));
    f.set("index.js", new Blob([probe], { type: "application/javascript+module" }), "index.js");
    return f;
  };
  for (const [name, metadata, expected] of [["dated", { compatibility_date: "2026-07-30" }, "object"], ["undated", {}, "undefined"]]) {
    assert.equal((await api("PUT", `/workers/scripts/${name}`, { body: form(metadata) })).status, 200);
    await api("POST", `/workers/scripts/${name}/subdomain`, { json: { enabled: true } });
    assert.equal(await (await fetch(`${lcf.origin}/__workers/${name}`)).text(), expected, name);
  }
});
