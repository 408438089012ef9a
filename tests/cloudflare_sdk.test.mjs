// An independent client proves the local Cloudflare: Cloudflare's official TypeScript SDK (the `cloudflare` npm
// package, generated from Cloudflare's API schema) drives it as it would drive api.cloudflare.com — uploads a
// module script with bindings and tags, puts a secret, enables the workers.dev route, and does the same in a
// dispatch namespace, then lists and deletes by tag. Every answer goes through the SDK's own parsing.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import Cloudflare, { toFile } from "cloudflare";
import { startLocalCloudflare } from "../local-cloudflare/server.mjs";

let lcf, client;
before(async () => {
  lcf = await startLocalCloudflare();
  client = new Cloudflare({ apiToken: lcf.apiToken, baseURL: lcf.apiBase, maxRetries: 0 });
});
after(() => lcf?.close());

const CODE = `export default { async fetch(req, env) {
  return Response.json({ greeting: env.GREETING, hasKey: env.API_KEY === "s3cret" });
} };`;
const module = () => toFile(Buffer.from(CODE), "worker.mjs", { type: "application/javascript+module" });
const metadata = (tags) => ({
  main_module: "worker.mjs",
  compatibility_date: "2026-07-30",
  bindings: [{ type: "plain_text", name: "GREETING", text: "hello from the sdk" }],
  tags,
});

test("workers.dev: the SDK uploads a module with bindings and tags, puts a secret and enables the route", async () => {
  const account_id = lcf.accountId;
  const uploaded = await client.workers.scripts.update("sdk-script", { account_id, metadata: metadata(["sdk", "team-a"]), files: [await module()] });
  assert.equal(uploaded.id, "sdk-script");
  const secret = await client.workers.scripts.secrets.update("sdk-script", { account_id, name: "API_KEY", text: "s3cret", type: "secret_text" });
  assert.equal(secret.name, "API_KEY");
  const route = await client.workers.scripts.subdomain.create("sdk-script", { account_id, enabled: true, previews_enabled: false });
  assert.equal(route.enabled, true);
  assert.equal(route.previews_enabled, false);
  const answer = await (await fetch(`${lcf.origin}/__workers/sdk-script`)).json();
  assert.deepEqual(answer, { greeting: "hello from the sdk", hasKey: true });
  // A wrong token is an error the SDK raises as Cloudflare's own.
  const stranger = new Cloudflare({ apiToken: "not-the-token", baseURL: lcf.apiBase, maxRetries: 0 });
  await assert.rejects(stranger.workers.scripts.update("sdk-script", { account_id, metadata: metadata([]), files: [await module()] }), (e) => e.status === 401);
  await client.workers.scripts.delete("sdk-script", { account_id, force: true });
  assert.equal((await fetch(`${lcf.origin}/__workers/sdk-script`)).status, 404);
});

test("dispatch namespace: the SDK uploads, sets a secret, lists secrets; listing and deleting by tag work", async () => {
  const params = { account_id: lcf.accountId };
  const ns = lcf.namespace;
  const scripts = client.workersForPlatforms.dispatch.namespaces.scripts;
  for (const [name, tags] of [["sdk-a", ["tenant-1", "sdk"]], ["sdk-b", ["tenant-1"]], ["sdk-c", ["tenant-2"]]]) {
    const uploaded = await scripts.update(ns, name, { ...params, metadata: metadata(tags), files: [await module()] });
    assert.equal(uploaded.id, name);
  }
  await scripts.secrets.update(ns, "sdk-a", { ...params, name: "API_KEY", text: "s3cret", type: "secret_text" });
  const secrets = [];
  for await (const s of scripts.secrets.list(ns, "sdk-a", params)) secrets.push(s);
  assert.deepEqual(secrets.map((s) => [s.name, s.type]), [["API_KEY", "secret_text"]]);
  const got = await scripts.get(ns, "sdk-a", params);
  assert.equal(got.script.id, "sdk-a");

  // The tag filter, through the SDK's own request and envelope handling.
  const base = `/accounts/${lcf.accountId}/workers/dispatch/namespaces/${ns}/scripts`;
  const listed = await client.get(base, { query: { tags: "tenant-1:yes" } });
  assert.deepEqual(listed.result.map((s) => s.id).sort(), ["sdk-a", "sdk-b"]);
  await client.delete(base, { query: { tags: "tenant-1:yes" } });
  const left = await client.get(base, { query: { tags: "tenant-2:yes" } });
  assert.deepEqual(left.result.map((s) => s.id), ["sdk-c"]);
  assert.deepEqual(lcf.scripts().filter((s) => s.name.startsWith("sdk-")).map((s) => s.name), ["sdk-c"]);
});
