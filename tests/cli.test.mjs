// The `webhost` CLI against the control plane in workerd and the local Cloudflare: log in, deploy both examples
// (a multi-module agent with Wasm and data files, and a streaming agent), invoke them (a stream printed as it
// arrives), set a secret from stdin, roll back, and fail with the envelope's code, request id and exit code.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { randomBytes } from "node:crypto";
import { startLocalCloudflare } from "../local-cloudflare/server.mjs";
import { startLocalAgentCore } from "../local-agentcore/server.mjs";
import { ROOT, agentcoreVars, deployVars, startControlPlane } from "./support/harness.mjs";

const BIN = path.join(ROOT, "target/debug/webhost");
const ADMIN = randomBytes(24).toString("hex");
let lcf, agentcore, app, home, token;
before(async () => {
  lcf = await startLocalCloudflare();
  agentcore = await startLocalAgentCore();
  app = await startControlPlane({ vars: { ...deployVars(lcf, "workers_dev"), ...agentcoreVars(agentcore), ADMIN_TOKEN: ADMIN } });
  token = await app.token("user_cli_dev");
  home = mkdtempSync(path.join(tmpdir(), "webhost-cli-"));
});
after(async () => {
  await app?.close();
  await agentcore?.close();
  await lcf?.close();
  rmSync(home, { recursive: true, force: true });
});

/** Runs `webhost args…` with `input` on stdin; resolves with its exit code and output. */
function webhost(args, { input = "", env = {} } = {}) {
  return new Promise((resolve) => {
    const child = execFile(BIN, args, { env: { ...process.env, WEBHOST_CONFIG: path.join(home, "config.json"), ...env }, cwd: ROOT }, (error, stdout, stderr) =>
      resolve({ code: error ? error.code : 0, stdout, stderr }),
    );
    // A command that does not read stdin may be gone before it is written.
    child.stdin.on("error", () => {});
    child.stdin.end(input);
  });
}

test("log in, deploy both examples, invoke them, set a secret, list, roll back", { timeout: 120_000 }, async () => {
  const login = await webhost(["login", "--endpoint", app.url.toString()], { input: `${token}\n` });
  assert.equal(login.code, 0, login.stderr);
  assert.match(login.stdout, /^Logged in as usr_[0-9a-f]{24} \(free plan\)/);

  const wasm = await webhost(["deploy", "examples/wasm-agent"]);
  assert.equal(wasm.code, 0, wasm.stderr);
  assert.match(wasm.stderr, /Uploading 4 modules/);
  assert.match(wasm.stdout, /^Deployed: dep_[0-9a-f]{24} v1 is active/);
  const answer = await webhost(["invoke", "wasm-agent", "hello"]);
  assert.equal(answer.code, 0, answer.stderr);
  assert.equal(answer.stdout.trim(), 'Sum 19+23=42; you said "hello"; computed in WebAssembly');

  const streaming = await webhost(["deploy", "examples/streaming-agent", "--json"]);
  assert.equal(streaming.code, 0, streaming.stderr);
  assert.equal(JSON.parse(streaming.stdout).status, "active");
  // The stream is printed as it arrives: several writes, spread over time.
  const chunks = [];
  const child = spawn(BIN, ["invoke", "streaming-agent", "one two three four five", "--stream"], { env: { ...process.env, WEBHOST_CONFIG: path.join(home, "config.json") } });
  child.stdout.on("data", (d) => chunks.push({ text: d.toString(), at: Date.now() }));
  const code = await new Promise((r) => child.on("close", r));
  assert.equal(code, 0);
  assert.equal(chunks.map((c) => c.text).join(""), "You said: one two three four five\n");
  assert.ok(chunks.length >= 4, `deltas printed as they came: ${chunks.length} writes`);
  assert.ok(chunks.at(-1).at - chunks[0].at >= 100, "spread over the agent's pauses");

  // A secret from stdin: never echoed, listed by name.
  const set = await webhost(["secrets", "set", "wasm-agent", "API_TOKEN"], { input: "cli-secret-value\n" });
  assert.equal(set.code, 0, set.stderr);
  assert.ok(!set.stdout.includes("cli-secret-value") && !set.stderr.includes("cli-secret-value"));
  const listed = await webhost(["secrets", "list", "wasm-agent", "--json"]);
  assert.deepEqual(JSON.parse(listed.stdout).secrets.map((s) => s.name), ["API_TOKEN"]);

  // A second version, then back to the first.
  const again = await webhost(["deploy", "examples/wasm-agent"]);
  assert.match(again.stdout, /v2 is active/);
  const deployments = JSON.parse((await webhost(["deployments", "list", "wasm-agent", "--json"])).stdout).deployments;
  assert.deepEqual(deployments.map((d) => d.version), [2, 1]);
  assert.equal(deployments[0].codeSha256, deployments[1].codeSha256, "the same bundle, the same content address");
  const back = await webhost(["rollback", deployments[1].id]);
  assert.equal(back.code, 0, back.stderr);
  assert.match(back.stdout, /is active \(v1\)/);

  const agents = JSON.parse((await webhost(["agents", "list", "--json"])).stdout).agents.map((a) => a.name).sort();
  assert.deepEqual(agents, ["streaming-agent", "wasm-agent"]);
  const usage = await webhost(["usage"]);
  assert.match(usage.stdout, /requests {2}\d+ of \d+/);
});

test("failures print the envelope's code and request id and end with the documented exit codes", { timeout: 60_000 }, async () => {
  const missing = await webhost(["invoke", "agt_000000000000000000000000", "hi"]);
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /error agent_not_found \(404\): .* \[request req_[0-9a-f]+\]/);
  const asJson = await webhost(["invoke", "agt_000000000000000000000000", "hi", "--json"]);
  assert.equal(JSON.parse(asJson.stdout).error.code, "agent_not_found");
  const noFolder = await webhost(["deploy", "examples/nope", "--agent", "x-agent"]);
  assert.equal(noFolder.code, 2);
  assert.match(noFolder.stderr, /agent\.config\.json/);
  const loggedOut = await webhost(["agents", "list"], { env: { WEBHOST_CONFIG: path.join(home, "nobody.json") } });
  assert.equal(loggedOut.code, 2);
  assert.match(loggedOut.stderr, /not logged in/);
  const unreachable = await webhost(["agents", "list"], { env: { WEBHOST_ENDPOINT: "http://127.0.0.1:9", WEBHOST_TOKEN: token } });
  assert.equal(unreachable.code, 4);
  const badLogin = await webhost(["login", "--endpoint", app.url.toString(), "--token", "not-a-token"]);
  assert.equal(badLogin.code, 1);
  assert.match(badLogin.stderr, /error invalid_token/);
});

test("in a terminal, deploy shows the upload's progress and a spinner while it waits; piped or --json, neither", { timeout: 60_000 }, async () => {
  // `script` (util-linux) runs the CLI on a pseudo-terminal, as a person's shell would.
  const inTerminal = await new Promise((resolve) => {
    execFile("script", ["-qfec", `${BIN} deploy examples/streaming-agent`, "/dev/null"], {
      env: { ...process.env, WEBHOST_CONFIG: path.join(home, "config.json") }, cwd: ROOT,
    }, (error, stdout) => resolve({ code: error ? error.code : 0, stdout }));
  });
  assert.equal(inTerminal.code, 0, inTerminal.stdout);
  assert.match(inTerminal.stdout, /uploading \[=+\] [\d.]+ (B|KiB)\/[\d.]+ (B|KiB)/, "the bar reaches the whole body");
  assert.match(inTerminal.stdout, /v\d+ deploying \(\d+s\)/);
  assert.match(inTerminal.stdout, /Deployed: dep_[0-9a-f]{24} v\d+ is active/);

  // A secret typed at a terminal is asked for and never echoed.
  const typed = await new Promise((resolve) => {
    const child = execFile("script", ["-qfec", `${BIN} secrets set streaming-agent TYPED_SECRET`, "/dev/null"], {
      env: { ...process.env, WEBHOST_CONFIG: path.join(home, "config.json") }, cwd: ROOT,
    }, (error, stdout) => resolve({ code: error ? error.code : 0, stdout }));
    // Typed once the prompt is up (the terminal would drop what comes before echo is off).
    setTimeout(() => child.stdin.end("typed-secret-value\n"), 2_000);
  });
  assert.equal(typed.code, 0, typed.stdout);
  assert.match(typed.stdout, /Value of TYPED_SECRET:/);
  assert.ok(!typed.stdout.includes("typed-secret-value"), typed.stdout);
  assert.match((await webhost(["secrets", "list", "streaming-agent"])).stdout, /TYPED_SECRET/);

  const piped = await webhost(["deploy", "examples/streaming-agent"]);
  assert.equal(piped.code, 0, piped.stderr);
  assert.ok(!/uploading \[|deploying \(/.test(piped.stderr), piped.stderr);
  const json = await webhost(["deploy", "examples/streaming-agent", "--json"]);
  assert.equal(JSON.parse(json.stdout).status, "active");
  assert.equal(json.stderr, "");
});

test("deploy --image runs a container on AgentCore for a plan that has it, and refuses one that does not", { timeout: 90_000 }, async () => {
  const image = "123456789012.dkr.ecr.us-east-1.amazonaws.com/webhost-agent:cli";
  // On the free plan: the entitlement's refusal, exit code 1.
  const free = await webhost(["deploy", "--image", image, "--agent", "container-cli"]);
  assert.equal(free.code, 1, free.stderr);
  assert.match(free.stderr, /error not_entitled \(403\)/);
  const agents = JSON.parse((await webhost(["agents", "list", "--json"])).stdout).agents.map((a) => a.name);
  assert.ok(!agents.includes("container-cli"), "nothing created for a refused deploy");
  const me = (await app.me(token)).body;
  assert.equal((await app.admin("PUT", `/users/${me.id}/tier`, ADMIN, { tier: "pro" })).status, 200);
  const deployed = await webhost(["deploy", "--image", image, "--agent", "container-cli"]);
  assert.equal(deployed.code, 0, deployed.stderr);
  assert.match(deployed.stderr, /Deploying .*webhost-agent:cli to agt_[0-9a-f]{24} on AgentCore/);
  assert.match(deployed.stdout, /Deployed: dep_[0-9a-f]{24} v1 is active/);
  const answer = await webhost(["invoke", "container-cli", "from the cli"]);
  assert.equal(answer.code, 0, answer.stderr);
  assert.equal(answer.stdout.trim(), "[cli] from the cli");
});
