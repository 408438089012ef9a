// `make dev` survives any client: wrangler dev, as make dev runs it, keeps answering after oversized chunked
// uploads that are refused before their body is read (it used to fail the next request and exit, taking the
// whole local stack down). The worker now reads such a body to its end before answering.
import { test } from "node:test";
import assert from "node:assert/strict";
import { jwksOf, makeSigningKey, mintToken } from "./support/harness.mjs";
import { startDevStack } from "./support/dev_stack.mjs";

test("wrangler dev keeps answering after oversized chunked POSTs it refuses", { timeout: 120_000 }, async () => {
  // Configured with an identity provider of its own, so a token gets as far as the body.
  const key = await makeSigningKey();
  const stack = await startDevStack({ vars: { AUTH_JWKS: jwksOf(key) } });
  const token = await mintToken(key, "dev-stack-user");
  try {
    assert.equal(await stack.health(), 200, `wrangler dev stopped answering after it started:\n${stack.output.slice(-2000)}`);
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
      const res = await fetch(`${stack.base}/v1/invoke/agt_000000000000000000000000`, {
        method: "POST",
        headers: { "Content-Type": "application/json", Authorization: `Bearer ${token}` },
        body,
        duplex: "half",
      });
      assert.equal(res.status, 413, `refused as too large, not a dropped connection: ${await res.clone().text()}\n${stack.output.slice(-2000)}`);
      await res.arrayBuffer();
    }
    assert.equal(stack.exited, null, `wrangler dev exited:\n${stack.output.slice(-2000)}`);
    assert.equal(await stack.health(), 200, "still answering");
  } finally {
    await stack.stop();
  }
});
