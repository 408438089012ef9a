// Deploys never disturb running scripts: while eight clients call three scripts without pause (JSON answers and
// ~1 s SSE streams, through both routes), scripts are uploaded and deleted, one of the scripts under load is
// re-uploaded with new code again and again, and secrets of scripts under load are put and deleted. Every call
// must succeed with its whole body, and a change must be visible to the first call made after it returns.
// Also: every module type loads, and the agent template's telemetry (sent after the answer) reaches 127.0.0.1.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import { createHmac } from "node:crypto";
import { readFileSync } from "node:fs";
import path from "node:path";
import { startLocalCloudflare } from "../local-cloudflare/server.mjs";
import { ROOT } from "./support/harness.mjs";

// The load runs for LOAD_MS and until MIN_ROUNDS rounds of changes are done (on a busy machine that takes
// longer), but never past MAX_LOAD_MS.
const LOAD_MS = 5000;
const MAX_LOAD_MS = 20000;
const MIN_ROUNDS = 3;
const CLIENTS = 8;
const STREAM_EVENTS = 10;

// Low, so that the workerd serving the load is also replaced (to reclaim old isolates) while calls run.
const MAX_STALE_VERSIONS = 12;
let lcf;
const logged = [];
before(async () => {
  lcf = await startLocalCloudflare({ maxStaleVersions: MAX_STALE_VERSIONS, log: (line) => logged.push(line) });
});
after(() => lcf?.close());

const ECHO = `export default { async fetch(req, env) {
  return Response.json({ name: env.NAME, path: new URL(req.url).pathname, body: req.method === "POST" ? await req.text() : null,
    rotating: env.ROTATING ?? null, secrets: Object.keys(env).filter((k) => k !== "NAME").sort() });
} };`;

/** `/stream` sends STREAM_EVENTS events 100 ms apart, then `done`; anything else is a JSON answer. Both carry `gen`. */
const streamer = (gen) => `const GEN = ${gen};
export default { fetch(req) {
  if (new URL(req.url).pathname !== "/stream") return Response.json({ gen: GEN });
  const encoder = new TextEncoder();
  let i = 0;
  const body = new ReadableStream({ async pull(controller) {
    if (i === ${STREAM_EVENTS}) {
      controller.enqueue(encoder.encode("event: done\\ndata: {}\\n\\n"));
      controller.close();
      return;
    }
    await new Promise((r) => setTimeout(r, 100));
    controller.enqueue(encoder.encode("data: " + JSON.stringify({ i: i++, gen: GEN }) + "\\n\\n"));
  } });
  return new Response(body, { headers: { "Content-Type": "text/event-stream" } });
} };`;

async function api(method, p, { form, json } = {}) {
  const headers = { Authorization: `Bearer ${lcf.apiToken}` };
  let body = form;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  }
  const res = await fetch(`${lcf.apiBase}/accounts/${lcf.accountId}${p}`, { method, headers, body });
  return { status: res.status, body: await res.json() };
}

const ns = () => `/workers/dispatch/namespaces/${lcf.namespace}/scripts`;

/** `parts`: more modules, as [name, contents, content type]. */
function upload(p, code, bindings = [], parts = []) {
  const form = new FormData();
  form.set("metadata", new Blob([JSON.stringify({ main_module: "index.js", compatibility_date: "2026-07-30", bindings, keep_bindings: ["secret_text"] })], { type: "application/json" }));
  form.set("index.js", new Blob([code], { type: "application/javascript+module" }), "index.js");
  for (const [name, contents, type] of parts) form.set(name, new Blob([contents], { type }), name);
  return api("PUT", p, { form });
}

const dispatchUrl = (name, rest = "/") => `${lcf.origin}/__dispatch/${lcf.namespace}/${name}${rest}`;

test("uploads, re-uploads, secret changes and deletions never fail a call to a running script", async () => {
  const plain = (name) => [{ type: "plain_text", name: "NAME", text: name }];
  assert.equal((await upload("/workers/scripts/echo-a", ECHO, plain("echo-a"))).status, 200);
  assert.equal((await api("POST", "/workers/scripts/echo-a/subdomain", { json: { enabled: true } })).status, 200);
  assert.equal((await upload(`${ns()}/echo-b`, ECHO, plain("echo-b"))).status, 200);
  assert.equal((await upload(`${ns()}/slow`, streamer(0))).status, 200);
  let gen = 1;
  assert.equal((await upload(`${ns()}/hot`, streamer(gen))).status, 200);
  // `hot` runs at least `committed` once that upload has returned, and never more than the last one started.
  let committed = gen;
  let started = gen;

  const failures = [];
  const fail = (what, detail) => failures.push(`${what}: ${detail}`);
  let calls = 0;
  let streams = 0;
  let spanning = 0;
  const replaced = () => logged.some((line) => line.startsWith("replaced workerd"));
  const start = Date.now();
  let running = true;

  async function json(what, url, init, check) {
    let res, text;
    try {
      res = await fetch(url, init);
      text = await res.text();
    } catch (error) {
      return fail(what, `${error.message} (${error.cause?.message})`);
    }
    if (res.status !== 200) return fail(what, `${res.status} ${text}`);
    let body;
    try {
      body = JSON.parse(text);
    } catch {
      return fail(what, `incomplete body ${JSON.stringify(text)}`);
    }
    const problem = check(body);
    if (problem) fail(what, problem);
  }

  async function stream(what, url, genAtLeast = 0) {
    let res, text;
    try {
      res = await fetch(url);
      text = await res.text();
    } catch (error) {
      return fail(what, `${error.message} (${error.cause?.message})`);
    }
    if (res.status !== 200) return fail(what, `${res.status} ${text}`);
    const events = text.split("\n\n").filter(Boolean);
    let data = [];
    try {
      data = events.slice(0, -1).map((e) => JSON.parse(e.slice("data: ".length)));
    } catch {}
    const complete = events.at(-1) === "event: done\ndata: {}" && data.length === STREAM_EVENTS && data.every((d, i) => d.i === i && d.gen === data[0].gen);
    if (!complete) return fail(what, `incomplete stream ${JSON.stringify(text)}`);
    if (data[0].gen < genAtLeast) return fail(what, `stream from generation ${data[0].gen}, older than ${genAtLeast}`);
    streams++;
    // Served to its end by a version that had been replaced meanwhile.
    if (what === "hot stream" && data[0].gen < committed) spanning++;
  }

  async function client(n) {
    for (let i = 0; running; i++) {
      const marker = `client ${n} call ${i}`;
      switch (i % 5) {
        case 0:
          await json("echo-a", `${lcf.workerUrl("echo-a")}/a/${n}`, undefined, (b) => (b.name === "echo-a" && b.path === `/a/${n}` ? null : JSON.stringify(b)));
          break;
        case 1:
          await json("echo-b", dispatchUrl("echo-b", "/b"), { method: "POST", body: marker }, (b) => (b.name === "echo-b" && b.body === marker ? null : JSON.stringify(b)));
          break;
        case 2: {
          const atLeast = committed;
          await json("hot", dispatchUrl("hot"), undefined, (b) => (b.gen >= atLeast && b.gen <= started ? null : `generation ${b.gen}, expected ${atLeast}..${started}`));
          break;
        }
        case 3:
          await stream("slow stream", dispatchUrl("slow", "/stream"));
          break;
        case 4:
          await stream("hot stream", dispatchUrl("hot", "/stream"), committed);
          break;
      }
      calls++;
    }
  }

  async function deployer() {
    let round = 0;
    const expect = async (what, promise) => {
      try {
        const res = await promise;
        if (res.status !== 200) fail(what, `${res.status} ${JSON.stringify(res.body)}`);
      } catch (error) {
        fail(what, error.message);
      }
    };
    while (running) {
      round++;
      await expect(`upload extra-${round}`, upload(`${ns()}/extra-${round}`, ECHO, plain(`extra-${round}`)));
      if (round > 1) await expect(`delete extra-${round - 1}`, api("DELETE", `${ns()}/extra-${round - 1}`));

      started = ++gen;
      await expect(`re-upload hot ${gen}`, upload(`${ns()}/hot`, streamer(gen)));
      committed = gen;
      await json("hot right after its upload", dispatchUrl("hot"), undefined, (b) => (b.gen === gen ? null : `generation ${b.gen}, expected ${gen}`));

      await expect("put secret on echo-b", api("PUT", `${ns()}/echo-b/secrets`, { json: { name: "ROTATING", text: `value-${round}`, type: "secret_text" } }));
      await json("echo-b right after a secret put", dispatchUrl("echo-b"), { method: "POST", body: "x" }, (b) => (b.rotating === `value-${round}` ? null : JSON.stringify(b)));

      await expect("put secret on echo-a", api("PUT", "/workers/scripts/echo-a/secrets", { json: { name: "TEMP", text: "t", type: "secret_text" } }));
      await expect("delete secret of echo-a", api("DELETE", "/workers/scripts/echo-a/secrets/TEMP"));
      await json("echo-a right after a secret delete", lcf.workerUrl("echo-a"), undefined, (b) => (!b.secrets.includes("TEMP") ? null : JSON.stringify(b)));

      await new Promise((r) => setTimeout(r, 250));
      const elapsed = Date.now() - start;
      if ((elapsed >= LOAD_MS && round >= MIN_ROUNDS && spanning > 0 && replaced()) || elapsed >= MAX_LOAD_MS) running = false;
    }
    return round;
  }

  const [rounds] = await Promise.all([deployer(), ...Array.from({ length: CLIENTS }, (_, n) => client(n))]);

  assert.deepEqual(failures.slice(0, 10), [], `${failures.length} of ${calls} calls or changes failed`);
  // The load really overlapped the changes (counts stay low enough for a machine busy with other work).
  assert.ok(rounds >= MIN_ROUNDS, `only ${rounds} rounds of changes`);
  assert.ok(calls >= 2 * CLIENTS && streams >= CLIENTS, `only ${calls} calls and ${streams} streams`);
  assert.ok(spanning >= 1, "no stream of `hot` was served to its end by a version replaced meanwhile");
  assert.ok(replaced(), "the workerd serving the load was never replaced");
});

test("Wasm, Data, Text and CommonJS module parts load", async () => {
  // (module (func (export "add") (param i32 i32) (result i32) local.get 0 local.get 1 i32.add))
  const wasm = new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0, 1, 7, 1, 96, 2, 127, 127, 1, 127, 3, 2, 1, 0, 7, 7, 1, 3, 97, 100, 100, 0, 0, 10, 9, 1, 7, 0, 32, 0, 32, 1, 106, 11]);
  const code = `import add from "add.wasm"; import bytes from "bytes.bin"; import text from "words.txt"; import cjs from "helper.js";
export default { fetch() { return Response.json({ sum: new WebAssembly.Instance(add).exports.add(2, 3), bytes: [...new Uint8Array(bytes)], text, cjs }); } };`;
  const up = await upload(`${ns()}/module-types`, code, [], [
    ["add.wasm", wasm, "application/wasm"],
    ["bytes.bin", new Uint8Array([1, 2, 255]), "application/octet-stream"],
    ["words.txt", "some words", "text/plain"],
    ["helper.js", "module.exports = { fromCommonJs: true };", "application/javascript"],
  ]);
  assert.equal(up.status, 200, JSON.stringify(up.body));
  const res = await fetch(dispatchUrl("module-types"));
  assert.deepEqual(await res.json(), { sum: 5, bytes: [1, 2, 255], text: "some words", cjs: { fromCommonJs: true } });
});

test("the agent template reports signed telemetry to 127.0.0.1 with ctx.waitUntil", async () => {
  const reports = [];
  const collector = http.createServer((req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      reports.push({ headers: req.headers, body: Buffer.concat(chunks) });
      res.writeHead(202).end();
    });
  });
  await new Promise((r) => collector.listen(0, "127.0.0.1", r));
  try {
    const template = readFileSync(path.join(ROOT, "worker-template/index.js"), "utf8");
    const up = await upload(`${ns()}/template`, template, [
      { type: "plain_text", name: "TELEMETRY_REPORT_URL", text: `http://127.0.0.1:${collector.address().port}/v1/telemetry/report` },
      { type: "secret_text", name: "TELEMETRY_SECRET", text: Buffer.from("template-secret-raw-key-bytes!!!").toString("base64url") },
      { type: "plain_text", name: "DEPLOYMENT_ID", text: "dep_000000000000000000000001" },
    ]);
    assert.equal(up.status, 200, JSON.stringify(up.body));
    const res = await fetch(dispatchUrl("template", "/invoke"), {
      method: "POST",
      headers: { "X-Trace-Id": "trace-lcf" },
      body: JSON.stringify({ protocol: "invoke/v1", input: { messages: [{ role: "user", content: "hello" }] } }),
    });
    assert.equal(res.status, 200);
    assert.equal((await res.json()).output.text, "hello");
    for (let i = 0; i < 250 && reports.length === 0; i++) await new Promise((r) => setTimeout(r, 20));
    assert.equal(reports.length, 1, "one report, sent after the answer");
    const [{ headers, body }] = reports;
    assert.equal(headers["x-telemetry-signature"], `v1=${createHmac("sha256", "template-secret-raw-key-bytes!!!").update(body).digest("hex")}`);
    assert.equal(JSON.parse(body).traceId, "trace-lcf");
  } finally {
    collector.close();
  }
});
