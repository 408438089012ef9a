// `make dev` survives any client: wrangler dev, as make dev runs it, keeps answering after oversized chunked
// uploads that are refused before their body is read (it used to fail the next request and exit, taking the
// whole local stack down). The worker now reads such a body to its end before answering.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { ISSUER, ROOT, freePort, jwksOf, makeSigningKey, mintToken } from "./support/harness.mjs";

test("wrangler dev keeps answering after oversized chunked POSTs it refuses", { timeout: 120_000 }, async () => {
  const port = await freePort();
  const state = mkdtempSync(path.join(tmpdir(), "dev-stack-"));
  // Configured like the local stack (an identity provider of its own), so a token gets as far as the body.
  const key = await makeSigningKey();
  const envFile = path.join(state, "dev.env");
  writeFileSync(envFile, `AUTH_ISSUER='${ISSUER}'\nAUTH_JWKS='${jwksOf(key)}'\nDRAIN_UNREAD_BODIES=true\n`);
  const token = await mintToken(key, "dev-stack-user");
  // Its own process group, so stopping it stops workerd too.
  const dev = spawn(path.join(ROOT, "node_modules/.bin/wrangler"), ["dev", "--local", "--ip", "127.0.0.1", "--port", String(port), "--persist-to", state, "--env-file", envFile], {
    cwd: ROOT,
    env: { ...process.env, WRANGLER_SEND_METRICS: "false", CI: "1" },
    stdio: ["ignore", "pipe", "pipe"],
    detached: true,
  });
  let output = "";
  let exited = null;
  dev.stdout.on("data", (d) => (output += d));
  dev.stderr.on("data", (d) => (output += d));
  dev.on("exit", (code) => (exited = code));
  const base = `http://127.0.0.1:${port}`;
  const alive = async () => {
    try {
      return (await fetch(`${base}/health`)).status;
    } catch {
      return null;
    }
  };
  try {
    let before = null;
    for (let i = 0; i < 600 && before === null && exited === null; i++) {
      before = await alive();
      if (before === null) await new Promise((r) => setTimeout(r, 250));
    }
    assert.notEqual(before, null, `wrangler dev did not start:\n${output.slice(-2000)}`);
    // Settled: wrangler may still reload the worker once its build output is in place.
    for (let i = 0; i < 40 && output.includes("Reloading") && !/Reloading[\s\S]*Ready/.test(output); i++) await new Promise((r) => setTimeout(r, 250));
    await new Promise((r) => setTimeout(r, 1_000));
    assert.equal(await alive(), 200, `wrangler dev stopped answering after it started:\n${output.slice(-2000)}`);
    // 3 MB, chunked (no Content-Length): read until it passes the limit, then refused with 413. Twice in a row
    // used to be enough to take wrangler dev down.
    const big = "x".repeat(3_000_000);
    for (let i = 0; i < 3; i++) {
      const body = new ReadableStream({
        start(controller) {
          for (let at = 0; at < big.length; at += 65_536) controller.enqueue(new TextEncoder().encode(big.slice(at, at + 65_536)));
          controller.close();
        },
      });
      const res = await fetch(`${base}/v1/invoke/agt_000000000000000000000000`, {
        method: "POST",
        headers: { "Content-Type": "application/json", Authorization: `Bearer ${token}` },
        body,
        duplex: "half",
      });
      assert.equal(res.status, 413, `refused as too large, not a dropped connection: ${await res.clone().text()}\n${output.slice(-2000)}`);
      await res.arrayBuffer();
    }
    assert.equal(exited, null, `wrangler dev exited:\n${output.slice(-2000)}`);
    assert.equal(before, 200);
    assert.equal(await alive(), 200, "still answering");
  } finally {
    const stopped = new Promise((r) => (exited !== null ? r() : dev.on("exit", r)));
    try {
      process.kill(-dev.pid, "SIGTERM");
    } catch {
      // Already gone.
    }
    await stopped;
    rmSync(state, { recursive: true, force: true });
  }
});
