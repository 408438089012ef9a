// Billing end to end: the control plane in workerd against the local Stripe. A checkout is paid on the local
// Stripe's page, its signed events move the user to the paid tier for their next call; the portal cancels; forged,
// altered, stale, replayed and crossed events change nothing. Stripe's own npm package is the independent client:
// it signs test events, and it talks to the local Stripe to prove the stand-in speaks Stripe's wire format.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import Stripe from "stripe";
import { startLocalStripe } from "../local-stripe/server.mjs";
import { expectError, startControlPlane } from "./support/harness.mjs";

const ADMIN = "billing-test-admin-token-0123456789abcdef";
let stripe, app;
before(async () => {
  stripe = await startLocalStripe({ retryDelaysMs: [200, 400, 800] });
  app = await startControlPlane({
    vars: {
      STRIPE_SECRET_KEY: stripe.secretKey,
      STRIPE_WEBHOOK_SECRETS: stripe.webhookSecret,
      STRIPE_PRICE_PRO: "price_local_pro",
      STRIPE_PRICE_ENTERPRISE: "price_local_enterprise",
      STRIPE_API_BASE_URL: stripe.origin,
      BILLING_RETURN_URL: "http://127.0.0.1:8787/billing",
      ADMIN_TOKEN: ADMIN,
      // The tiers' own limits (the harness raises the free plan's), so a downgrade meets a real limit.
      TIER_ENTITLEMENTS: undefined,
    },
  });
  stripe.setWebhookUrl(new URL("/v1/billing/webhook", app.url).href);
});
after(async () => {
  await app?.close();
  await stripe?.close();
});

/** Stripe's SDK, pointed at the local Stripe. */
const sdk = () => new Stripe(stripe.secretKey, { host: "127.0.0.1", port: new URL(stripe.origin).port, protocol: "http", maxNetworkRetries: 0 });


const tierOf = async (token) => (await app.me(token)).body.tier;

/** Checks out `tier` for `token`'s user and pays on the local Stripe's page (a real form post). */
async function subscribe(token, tier) {
  const res = await app.request("POST", "/v1/billing/checkout", { token, json: { tier } });
  assert.equal(res.status, 200, res.text);
  const page = await fetch(res.body.url);
  assert.equal(page.status, 200);
  assert.match(await page.text(), /Pay and subscribe/);
  const paid = await fetch(`${res.body.url}/pay`, { method: "POST", redirect: "manual" });
  assert.equal(paid.status, 303);
  assert.match(paid.headers.get("location"), /^http:\/\/127\.0\.0\.1:8787\/billing\?checkout=success&tier=/);
  return res.body.url.split("/").pop();
}

/** Posts `event` to the webhook, signed by Stripe's own library with `secret` at `timestamp`. */
function postEvent(event, { secret = stripe.webhookSecret, timestamp, alter } = {}) {
  const payload = JSON.stringify(event);
  const header = sdk().webhooks.generateTestHeaderString({ payload, secret, timestamp });
  const body = alter ? alter(payload) : payload;
  return app.request("POST", "/v1/billing/webhook", { body, headers: { "Stripe-Signature": header, "Content-Type": "application/json" } });
}

const eventOf = (type, object, id = `evt_${crypto.randomUUID().replaceAll("-", "")}`) => ({ id, object: "event", type, created: Math.floor(Date.now() / 1000), livemode: false, data: { object } });

test("Stripe's SDK talks to the local Stripe, and verifies the events it signs", async () => {
  const client = sdk();
  const customer = await client.customers.create({ metadata: { user_id: "usr_sdk" } });
  assert.match(customer.id, /^cus_/);
  // Idempotency: the same key answers the same customer.
  const again = await client.customers.create({ metadata: { user_id: "usr_sdk" } }, { idempotencyKey: "k-sdk" });
  const replay = await client.customers.create({ metadata: { user_id: "usr_sdk" } }, { idempotencyKey: "k-sdk" });
  assert.equal(again.id, replay.id);
  const session = await client.checkout.sessions.create({ mode: "subscription", customer: customer.id, client_reference_id: "usr_sdk", line_items: [{ price: "price_local_pro", quantity: 1 }], success_url: "http://127.0.0.1/ok", cancel_url: "http://127.0.0.1/no" });
  assert.match(session.url, /\/checkout\/cs_test_/);
  await assert.rejects(
    client.checkout.sessions.create({ mode: "subscription", customer: customer.id, line_items: [{ price: "price_nope", quantity: 1 }], success_url: "http://127.0.0.1/ok", cancel_url: "http://127.0.0.1/no" }),
    (e) => e.type === "StripeInvalidRequestError" && e.code === "resource_missing" && e.statusCode === 400,
  );
  const portal = await client.billingPortal.sessions.create({ customer: customer.id, return_url: "http://127.0.0.1/back" });
  assert.match(portal.url, /\/portal\/bps_/);
  await assert.rejects(new Stripe("sk_test_wrong", { host: "127.0.0.1", port: new URL(stripe.origin).port, protocol: "http" }).customers.create({}), (e) => e.statusCode === 401);

  // Events the local Stripe delivers carry signatures the SDK's own verifier accepts.
  const received = [];
  let refusals = 2;
  const sink = http.createServer((req, res) => {
    let body = "";
    req.on("data", (c) => (body += c));
    req.on("end", () => {
      // The first two deliveries fail: the local Stripe retries, as Stripe does.
      if (refusals-- > 0) return res.writeHead(500).end();
      received.push({ body, signature: req.headers["stripe-signature"] });
      res.writeHead(200).end();
    });
  });
  await new Promise((r) => sink.listen(0, "127.0.0.1", r));
  const local = await startLocalStripe({ webhookUrl: `http://127.0.0.1:${sink.address().port}/`, retryDelaysMs: [100, 200, 400] });
  try {
    const c = new Stripe(local.secretKey, { host: "127.0.0.1", port: new URL(local.origin).port, protocol: "http" });
    const cus = await c.customers.create({});
    const cs = await c.checkout.sessions.create({ mode: "subscription", customer: cus.id, line_items: [{ price: "price_local_pro", quantity: 1 }], success_url: "http://127.0.0.1/ok", cancel_url: "http://127.0.0.1/no" });
    local.pay(cs.id);
    await app.until("three deliveries", () => received.length >= 3);
    const attempts = local.deliveries().map((d) => d.attempts);
    assert.ok(attempts.some((a) => a.length > 1 && a.at(-1) === 200 && a.slice(0, -1).every((s) => s === 500)), `retried until acknowledged: ${JSON.stringify(attempts)}`);
    for (const { body, signature } of received) {
      const event = c.webhooks.constructEvent(body, signature, local.webhookSecret);
      assert.ok(["customer.subscription.created", "checkout.session.completed", "invoice.paid"].includes(event.type));
    }
    const created = received.map((r) => JSON.parse(r.body)).find((e) => e.type === "customer.subscription.created");
    const subscription = await c.subscriptions.retrieve(created.data.object.id);
    assert.equal(subscription.status, "active");
    assert.equal(subscription.items.data[0].price.id, "price_local_pro");
  } finally {
    await local.close();
    sink.close();
  }
});

test("a paid checkout moves the user to the tier from their next call; the portal cancels at period end", { timeout: 60_000 }, async () => {
  const alice = await app.token("user_billing_alice");
  assert.equal(await tierOf(alice), "free");
  const before = (await app.request("GET", "/v1/billing", { token: alice })).body;
  assert.deepEqual(before, { tier: "free", subscription: null, purchasable: ["pro", "enterprise"] });
  expectError(assert, await app.request("POST", "/v1/billing/portal", { token: alice }), 409, "no_billing_customer");

  await subscribe(alice, "pro");
  await app.until("the pro tier", async () => (await tierOf(alice)) === "pro");
  const me = (await app.me(alice)).body;
  assert.ok(me.entitlements.maxAgents > 3, "the pro plan's entitlements hold at once");
  const billing = (await app.request("GET", "/v1/billing", { token: alice })).body;
  assert.equal(billing.tier, "pro");
  assert.equal(billing.subscription.status, "active");
  assert.equal(billing.subscription.cancelAtPeriodEnd, false);
  assert.ok(billing.subscription.currentPeriodEnd > Date.now());
  // Each event was delivered once and acknowledged at the first attempt.
  await app.until("every delivery acknowledged", () => stripe.deliveries().every((d) => d.delivered));

  // Our requests carry what Stripe expects: every create an Idempotency-Key, every request the pinned version,
  // forms form-encoded.
  // (Stripe's SDK, used by the first test, names itself in User-Agent; the control plane does not.)
  const fromControlPlane = stripe.requests().filter((r) => !r.userAgent.startsWith("Stripe/"));
  assert.ok(fromControlPlane.every((r) => r.version === "2026-10-28.endive"), "the API version is pinned");
  assert.ok(fromControlPlane.some((r) => r.path === "/v1/checkout/sessions") && fromControlPlane.some((r) => r.path.startsWith("/v1/subscriptions/")));
  for (const r of fromControlPlane.filter((r) => r.method === "POST")) {
    assert.match(r.idempotencyKey ?? "", /\S/, `${r.path} carries an Idempotency-Key`);
    assert.equal(r.contentType, "application/x-www-form-urlencoded");
  }
  // No second subscription: plans change in the portal.
  expectError(assert, await app.request("POST", "/v1/billing/checkout", { token: alice, json: { tier: "enterprise" } }), 409, "already_subscribed");
  // The portal works now.
  const portal = await app.request("POST", "/v1/billing/portal", { token: alice });
  assert.equal(portal.status, 200, portal.text);
  const cancel = await fetch(`${portal.body.url}/cancel`, { method: "POST", redirect: "manual" });
  assert.equal(cancel.status, 303);
  await app.until("cancel at period end", async () => (await app.request("GET", "/v1/billing", { token: alice })).body.subscription.cancelAtPeriodEnd);
  assert.equal(await tierOf(alice), "pro", "still paid until the period ends");

});

test("forged, altered, stale or replayed webhooks are refused with 400 and change nothing", async () => {
  const bob = await app.token("user_billing_bob");
  const event = eventOf("invoice.paid", { customer: "cus_nobody" });
  // Well outside the 300 s either way, so a slow machine (seconds between here and the worker) cannot bring
  // either back inside.
  const now = Math.floor(Date.now() / 1000);
  const cases = [
    ["another endpoint's secret", { secret: "whsec_someone_else" }, "no_matching_signature"],
    ["a timestamp past the tolerance", { timestamp: now - 360 }, "timestamp_out_of_tolerance"],
    ["a timestamp in the future", { timestamp: now + 360 }, "timestamp_out_of_tolerance"],
    ["one byte of the body changed", { alter: (p) => p.replace("cus_nobody", "cus_nobodz") }, "no_matching_signature"],
  ];
  for (const [what, options, reason] of cases) {
    const res = await postEvent(event, options);
    assert.equal(res.status, 400, `${what}: ${res.text}`);
    expectError(assert, res, 400, "invalid_webhook_signature");
    assert.equal(res.body.error.details.reason, reason, what);
  }
  const unsigned = await app.request("POST", "/v1/billing/webhook", { json: event });
  expectError(assert, unsigned, 400, "invalid_webhook_signature");
  assert.equal(unsigned.body.error.details.reason, "missing_header");
  const events = (await app.request("GET", "/v1/admin/billing/events", { headers: { Authorization: `Bearer ${ADMIN}` } })).body.events;
  assert.ok(!events.some((e) => e.id === event.id), "nothing refused was stored");
  assert.equal(await tierOf(bob), "free");

  // A correctly signed event is stored once; its replay is acknowledged as a duplicate.
  const first = await postEvent(event);
  assert.equal(first.status, 200, first.text);
  assert.equal(first.body.duplicate, false);
  const replay = await postEvent(event);
  assert.equal(replay.status, 200);
  assert.equal(replay.body.duplicate, true);
});

test("an event about another user's customer, or a checkout naming another user, moves no plan and is recorded", { timeout: 60_000 }, async () => {
  const carol = await app.token("user_billing_carol");
  const dave = await app.token("user_billing_dave");
  await subscribe(carol, "enterprise");
  await app.until("carol on enterprise", async () => (await tierOf(carol)) === "enterprise");
  const daveId = (await app.me(dave)).body.id;
  const carolId = (await app.me(carol)).body.id;
  const admin = { headers: { Authorization: `Bearer ${ADMIN}` } };
  const carolEvents = (await app.request("GET", "/v1/admin/billing/events?status=processed", admin)).body.events.filter((e) => e.userId === carolId);
  assert.ok(carolEvents.length >= 2, "Carol's checkout, subscription and invoice events were processed for her");

  // A checkout completion for Carol's customer that names Dave: Dave stays free, Carol is untouched.
  const forged = eventOf("checkout.session.completed", { object: "checkout.session", customer: await customerOf(carol), subscription: await subscriptionOf(carol), client_reference_id: daveId });
  assert.equal((await postEvent(forged)).status, 200);
  const rejected = await app.until("the forged checkout rejected", async () => {
    const list = (await app.request("GET", "/v1/admin/billing/events?status=rejected", admin)).body.events;
    return list.find((e) => e.id === forged.id);
  });
  assert.match(rejected.lastError, /client_reference_id/);
  assert.equal(await tierOf(dave), "free");

  // A subscription event naming a customer nobody here owns.
  const stray = eventOf("customer.subscription.updated", { id: "sub_stray", object: "subscription", customer: "cus_stray", status: "active", items: { data: [{ price: { id: "price_local_enterprise" } }] } });
  assert.equal((await postEvent(stray)).status, 200);
  await app.until("the stray event rejected", async () => (await app.request("GET", "/v1/admin/billing/events?status=rejected", admin)).body.events.some((e) => e.id === stray.id));
  assert.equal(await tierOf(carol), "enterprise");
  assert.equal(await tierOf(dave), "free");
});

test("a stale event cannot regress a user: the subscription is read again from Stripe", { timeout: 150_000 }, async () => {
  const erin = await app.token("user_billing_erin");
  await subscribe(erin, "pro");
  // Generous waits: webhook deliveries and retries run beside other test files on a 2-core machine.
  await app.until("erin on pro", async () => (await tierOf(erin)) === "pro", 45_000);
  const subId = await subscriptionOf(erin);
  // On pro, more agents than the free plan allows.
  for (const n of [1, 2, 3, 4]) assert.equal((await app.createAgent(erin, { name: `erin-agent-${n}` })).status, 201);
  // Stripe cancels; the deletion is delivered.
  stripe.update(subId, { status: "canceled" }, "deleted");
  await app.until("erin back on free", async () => (await tierOf(erin)) === "free", 45_000);
  // The downgrade deletes nothing: all four agents are still there; a fifth is refused by the free limit.
  assert.equal((await app.listAgents(erin)).body.agents.length, 4);
  expectError(assert, await app.createAgent(erin, { name: "erin-agent-5" }), 403, "agent_limit_reached");
  // A late copy of an older "active" update arrives afterwards: Erin stays on free.
  const stale = eventOf("customer.subscription.updated", { id: subId, object: "subscription", customer: await customerOf(erin), status: "active", items: { data: [{ price: { id: "price_local_pro" } }] } });
  assert.equal((await postEvent(stale)).status, 200);
  const admin = { headers: { Authorization: `Bearer ${ADMIN}` } };
  await app.until("the stale event processed", async () => (await app.request("GET", "/v1/admin/billing/events", admin)).body.events.some((e) => e.id === stale.id && e.status === "processed"), 45_000);
  assert.equal(await tierOf(erin), "free");
  assert.equal((await app.request("GET", "/v1/billing", { token: erin })).body.subscription.status, "canceled");

  // The operator API: a bad status filter is refused; retrying an unknown event is 404.
  expectError(assert, await app.request("GET", "/v1/admin/billing/events?status=nope", admin), 400, "invalid_query");
  expectError(assert, await app.request("POST", "/v1/admin/billing/events/evt_unknown/retry", admin), 404, "billing_event_not_found");
  expectError(assert, await app.request("GET", "/v1/admin/billing/events"), 401, "missing_credentials");
  expectError(assert, await app.request("GET", "/v1/admin/billing/events", { headers: { Authorization: "Bearer wrong-token-wrong-token-wrong-token" } }), 401, "invalid_admin_token");
});

// The customer and subscription of a user, from the events the control plane processed for them.
async function customerOf(token) {
  return (await eventsOf(token)).customer;
}
async function subscriptionOf(token) {
  return (await eventsOf(token)).subscription;
}
async function eventsOf(token) {
  const userId = (await app.me(token)).body.id;
  const admin = { headers: { Authorization: `Bearer ${ADMIN}` } };
  // The subscription's own events may move the plan before the checkout event is processed: wait for that one.
  const events = await app.until(`a checkout processed for ${userId}`, async () => {
    const found = (await app.request("GET", "/v1/admin/billing/events", admin)).body.events.filter((e) => e.userId === userId && e.type === "checkout.session.completed");
    return found.length ? found : null;
  }, 45_000);
  const delivered = stripe.deliveries().find((d) => d.id === events[0].id);
  assert.ok(delivered, "the local Stripe delivered it");
  const full = stripe.event(delivered.id);
  return { customer: full.data.object.customer, subscription: full.data.object.subscription };
}
