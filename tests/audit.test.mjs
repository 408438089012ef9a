// The audit trail: every privileged action is recorded with its actor, target and outcome — by users, the
// operator, Stripe and the system — each user reads only their own trail, operators read everyone's, and no entry
// ever holds a secret's value or an API key.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import Stripe from "stripe";
import { startLocalCloudflare } from "../local-cloudflare/server.mjs";
import { startLocalStripe } from "../local-stripe/server.mjs";
import { deployVars, expectError, startControlPlane } from "./support/harness.mjs";

const ADMIN = "audit-test-admin-token-0123456789abcdef";
const SECRET_VALUE = "audit-secret-value-never-recorded";
let lcf, stripe, app, alice, mallory;
before(async () => {
  lcf = await startLocalCloudflare();
  stripe = await startLocalStripe({ retryDelaysMs: [200] });
  app = await startControlPlane({
    vars: {
      ...deployVars(lcf, "workers_dev"),
      ADMIN_TOKEN: ADMIN,
      STRIPE_SECRET_KEY: stripe.secretKey,
      STRIPE_WEBHOOK_SECRETS: stripe.webhookSecret,
      STRIPE_PRICE_PRO: "price_local_pro",
      STRIPE_API_BASE_URL: stripe.origin,
      BILLING_RETURN_URL: "http://127.0.0.1:8787/billing",
    },
  });
  stripe.setWebhookUrl(new URL("/v1/billing/webhook", app.url).href);
  alice = await app.token("user_audit_alice");
  mallory = await app.token("user_audit_mallory");
});
after(async () => {
  await app?.close();
  await stripe?.close();
  await lcf?.close();
});

const admin = { headers: { Authorization: `Bearer ${ADMIN}` } };


/** Every entry of `token`'s trail, following the cursor `limit` at a time. */
async function trail(token, query = "", limit = 100) {
  const entries = [];
  let cursor = null;
  for (let pages = 0; pages < 50; pages++) {
    const res = await app.request("GET", `/v1/audit?limit=${limit}${query}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`, { token });
    assert.equal(res.status, 200, res.text);
    entries.push(...res.body.entries);
    cursor = res.body.nextCursor;
    if (!cursor) return { entries, raw: JSON.stringify(entries) };
  }
  throw new Error("the cursor never ended");
}

test("every privileged action a user takes is in their trail, with its target and outcome, and no secret", { timeout: 90_000 }, async () => {
  const aliceId = (await app.me(alice)).body.id;
  const agent = (await app.createAgent(alice, { name: "audited-agent" })).body;
  expectError(assert, await app.createAgent(alice, { name: "Bad Name" }), 400, "validation_failed");
  await app.updateAgent(alice, agent.id, { description: "watched" });
  await app.disableAgent(alice, agent.id);
  await app.enableAgent(alice, agent.id);
  assert.equal((await app.putSecret(alice, agent.id, "API_TOKEN", SECRET_VALUE)).status, 200);
  const first = (await app.deploy(alice, agent.id)).body;
  await app.settled(alice, agent.id, first.id);
  const second = (await app.deploy(alice, agent.id)).body;
  await app.settled(alice, agent.id, second.id);
  assert.equal((await app.activate(alice, agent.id, first.id)).status, 200);
  const key = await app.request("POST", "/v1/api-keys", { token: alice, json: { name: "audit key" } });
  assert.equal(key.status, 201);
  await app.request("DELETE", `/v1/api-keys/${key.body.id}`, { token: alice });
  await app.request("DELETE", `/v1/agents/${agent.id}/secrets/API_TOKEN`, { token: alice });

  const expected = ["agent.create", "agent.update", "agent.disable", "agent.enable", "secret.set", "deploy.request", "deploy.finish", "deployment.activate", "api_key.create", "api_key.revoke", "secret.delete"];
  const { entries, raw } = await app.until("every action recorded", async () => {
    const t = await trail(alice);
    return expected.every((a) => t.entries.some((e) => e.action === a)) && t.entries.filter((e) => e.action === "deploy.finish").length >= 2 ? t : null;
  });
  const one = (action, pick = () => true) => entries.find((e) => e.action === action && pick(e));
  assert.deepEqual(
    (({ actor, actorId, userId, target, agentId, outcome, status }) => ({ actor, actorId, userId, target, agentId, outcome, status }))(one("agent.create", (e) => e.outcome === "ok")),
    { actor: "user", actorId: aliceId, userId: aliceId, target: agent.id, agentId: null, outcome: "ok", status: 201 },
  );
  const refused = one("agent.create", (e) => e.outcome === "refused");
  assert.deepEqual([refused.status, refused.detail.code], [400, "validation_failed"]);
  assert.equal(one("secret.set").target, "API_TOKEN");
  assert.equal(one("secret.set").agentId, agent.id);
  assert.equal(one("deployment.activate").target, first.id);
  assert.equal(one("api_key.revoke").target, key.body.id);
  const finished = one("deploy.finish");
  assert.deepEqual([finished.actor, finished.outcome, finished.detail.status], ["system", "ok", "active"]);
  assert.match(one("agent.create").requestId, /\S/);
  // Never a secret's value, never an API key.
  assert.ok(!raw.includes(SECRET_VALUE), "a secret's value is never recorded");
  assert.ok(!raw.includes(key.body.key), "an API key is never recorded");

  // Filters and the cursor.
  const secrets = await trail(alice, "&action=secret.set");
  assert.ok(secrets.entries.length >= 1 && secrets.entries.every((e) => e.action === "secret.set"));
  const forAgent = await trail(alice, `&agentId=${agent.id}`);
  assert.ok(forAgent.entries.every((e) => e.agentId === agent.id));
  const paged = await trail(alice, "", 2);
  assert.deepEqual(paged.entries.map((e) => e.id), entries.map((e) => e.id), "two at a time, the same trail, newest first");
  const times = entries.map((e) => e.at);
  assert.deepEqual(times, [...times].sort((a, b) => b - a));
  expectError(assert, await app.request("GET", "/v1/audit?action=bad%20value", { token: alice }), 400, "invalid_query");
  expectError(assert, await app.request("GET", "/v1/audit?cursor=forged", { token: alice }), 400, "invalid_cursor");
});

test("a user's trail holds only their own entries; operators read everyone's, and their own actions join the user's trail", { timeout: 60_000 }, async () => {
  const aliceId = (await app.me(alice)).body.id;
  await app.createAgent(mallory, { name: "mallorys-agent" });
  const res = await app.admin("PUT", `/users/${aliceId}/tier`, ADMIN, { tier: "pro" });
  assert.equal(res.status, 200, res.text);
  const tierSet = await app.until("the operator's change in Alice's trail", async () => (await trail(alice)).entries.find((e) => e.action === "tier.set"));
  assert.deepEqual([tierSet.actor, tierSet.actorId, tierSet.userId, tierSet.outcome], ["operator", null, aliceId, "ok"]);

  const mallorys = await app.until("Mallory's own entry", async () => {
    const t = await trail(mallory);
    return t.entries.some((e) => e.action === "agent.create") ? t : null;
  });
  const malloryId = (await app.me(mallory)).body.id;
  assert.ok(mallorys.entries.every((e) => e.userId === malloryId), "only her own entries");
  assert.ok(!mallorys.raw.includes(aliceId), "nothing of Alice's");
  // Asking for Alice's trail by filter is not a thing a user can do: the filter is the caller.
  const sneaky = await app.request("GET", `/v1/audit?userId=${aliceId}`, { token: mallory });
  assert.ok(sneaky.body.entries.every((e) => e.userId === malloryId));

  const all = await app.request("GET", `/v1/admin/audit?userId=${aliceId}&limit=100`, admin);
  assert.equal(all.status, 200);
  assert.ok(all.body.entries.length > 0 && all.body.entries.every((e) => e.userId === aliceId));
  const everyone = await app.request("GET", "/v1/admin/audit?limit=100", admin);
  assert.ok(new Set(everyone.body.entries.map((e) => e.userId)).size >= 2);
  expectError(assert, await app.request("GET", "/v1/admin/audit"), 401, "missing_credentials");
  expectError(assert, await app.request("GET", "/v1/admin/audit", { token: alice }), 401, "invalid_admin_token");
});

test("billing leaves a record: Stripe's processed events in the owner's trail, refused webhooks for operators", { timeout: 60_000 }, async () => {
  const carol = await app.token("user_audit_carol");
  const carolId = (await app.me(carol)).body.id;
  const checkout = await app.request("POST", "/v1/billing/checkout", { token: carol, json: { tier: "pro" } });
  assert.equal(checkout.status, 200, checkout.text);
  const paid = await fetch(`${checkout.body.url}/pay`, { method: "POST", redirect: "manual" });
  assert.equal(paid.status, 303);
  const changed = await app.until("the billing event that moved Carol's plan", async () => (await trail(carol)).entries.find((e) => e.action === "billing.event" && e.detail?.tierTo === "pro"));
  assert.deepEqual([changed.actor, changed.userId, changed.outcome, changed.detail.tierFrom], ["stripe", carolId, "ok", "free"]);
  assert.ok((await trail(carol)).entries.some((e) => e.action === "billing.checkout" && e.actor === "user"));

  // A forged webhook: refused, and recorded for operators with its reason.
  const payload = JSON.stringify({ id: "evt_forged_audit", object: "event", type: "invoice.paid", created: Math.floor(Date.now() / 1000), livemode: false, data: { object: {} } });
  const header = new Stripe("sk_test_x").webhooks.generateTestHeaderString({ payload, secret: "whsec_attacker" });
  const refused = await app.request("POST", "/v1/billing/webhook", { body: payload, headers: { "Stripe-Signature": header, "Content-Type": "application/json" } });
  expectError(assert, refused, 400, "invalid_webhook_signature");
  const record = await app.until("the refused webhook's record", async () => {
    const rows = (await app.request("GET", "/v1/admin/audit?action=billing.webhook_refused&limit=100", admin)).body.entries;
    return rows.find((e) => e.requestId === refused.headers.get("x-request-id"));
  });
  assert.deepEqual([record.actor, record.outcome, record.status, record.detail.reason], ["stripe", "refused", 400, "no_matching_signature"]);
});
