// The local Stripe: the part of the Stripe API the control plane uses, served on this machine, with a checkout
// page a person can "pay" on and signed webhook deliveries, retried like Stripe retries them.
//
//   POST /v1/customers, /v1/checkout/sessions, /v1/billing_portal/sessions   form-encoded, Idempotency-Key honoured
//   GET  /v1/subscriptions/:id                                                 the subscription as it is now
//   GET  /checkout/:session, POST /checkout/:session/pay                       the checkout page; paying creates the
//                                                                              subscription and sends the events
//   GET  /portal/:session, POST /portal/:session/cancel                        the portal: cancel at period end
//
// Errors have Stripe's shape ({error: {type, code, message, param}}) and statuses. Events are signed with the
// webhook secret exactly as Stripe signs them (`Stripe-Signature: t=…,v1=…`) and delivered to `webhookUrl`;
// a delivery that is not answered 2xx is retried with backoff (`retryDelaysMs`), as Stripe does over days.
// `node local-stripe/server.mjs` runs it standalone (make dev); tests import `startLocalStripe`.
import http from "node:http";
import { createHmac, randomBytes } from "node:crypto";
import { fileURLToPath } from "node:url";

const id = (prefix) => `${prefix}_${randomBytes(12).toString("hex")}`;
const DAY_S = 86_400;

/** Parses an x-www-form-urlencoded body into nested objects (`a[b][0][c]=x`), as Stripe reads its forms. */
export function parseForm(text) {
  const out = {};
  for (const [rawKey, value] of new URLSearchParams(text)) {
    const path = rawKey.split(/\[|\]\[|\]/).filter((p) => p !== "");
    let node = out;
    path.forEach((part, i) => {
      if (i === path.length - 1) node[part] = value;
      else node = node[part] ??= /^\d+$/.test(path[i + 1]) ? [] : {};
    });
  }
  return out;
}

const escapeHtml = (s) => String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);

export async function startLocalStripe({
  port = 0,
  host = "127.0.0.1",
  secretKey = "sk_test_local",
  webhookSecret = "whsec_local",
  webhookUrl = null,
  // Stripe retries over three days; locally the same schedule, compressed.
  retryDelaysMs = [1_000, 2_000, 5_000, 10_000, 30_000],
  prices = { price_local_pro: "Pro", price_local_enterprise: "Enterprise" },
  log = () => {},
} = {}) {
  const customers = new Map();
  const sessions = new Map();
  const portals = new Map();
  const subscriptions = new Map();
  const idempotent = new Map(); // key → {fingerprint, status, body}
  const deliveries = []; // {event, attempts: [{status, at}], delivered}
  const requests = []; // every API request: {method, path, idempotencyKey, version}
  const timers = new Set();
  let origin = null;

  const error = (status, type, message, extra = {}) => ({ status, body: { error: { type, message, ...extra } } });

  function signedHeader(payload, timestamp = Math.floor(Date.now() / 1000)) {
    const v1 = createHmac("sha256", webhookSecret).update(`${timestamp}.${payload}`).digest("hex");
    return `t=${timestamp},v1=${v1}`;
  }

  function subscriptionObject(s) {
    return {
      id: s.id,
      object: "subscription",
      customer: s.customer,
      status: s.status,
      cancel_at_period_end: s.cancelAtPeriodEnd,
      livemode: false,
      metadata: s.metadata,
      items: { object: "list", data: [{ id: s.itemId, object: "subscription_item", price: { id: s.price, object: "price" }, quantity: 1, current_period_start: s.periodStart, current_period_end: s.periodEnd }] },
    };
  }

  /** Builds an event and delivers it, retrying on failure. */
  function emit(type, object) {
    const event = { id: id("evt"), object: "event", api_version: "2026-10-28.endive", created: Math.floor(Date.now() / 1000), livemode: false, type, data: { object }, pending_webhooks: 1 };
    const delivery = { event, attempts: [], delivered: false };
    deliveries.push(delivery);
    void deliver(delivery, 0);
    return event;
  }

  async function deliver(delivery, attempt) {
    if (!webhookUrl) return;
    const payload = JSON.stringify(delivery.event, null, 2);
    let status = 0;
    try {
      const res = await fetch(webhookUrl, { method: "POST", headers: { "Content-Type": "application/json; charset=utf-8", "Stripe-Signature": signedHeader(payload), "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)" }, body: payload });
      status = res.status;
      await res.arrayBuffer();
    } catch {
      status = 0;
    }
    delivery.attempts.push({ status, at: Date.now() });
    if (status >= 200 && status < 300) {
      delivery.delivered = true;
      log(`delivered ${delivery.event.type} ${delivery.event.id}`);
      return;
    }
    const delay = retryDelaysMs[attempt];
    log(`delivery of ${delivery.event.id} answered ${status}; ${delay === undefined ? "giving up" : `retrying in ${delay} ms`}`);
    if (delay === undefined) return;
    const timer = setTimeout(() => {
      timers.delete(timer);
      void deliver(delivery, attempt + 1);
    }, delay);
    timer.unref?.();
    timers.add(timer);
  }

  function createSubscription(customer, price, metadata = {}) {
    const now = Math.floor(Date.now() / 1000);
    const s = { id: id("sub"), itemId: id("si"), customer, price, status: "active", cancelAtPeriodEnd: false, metadata, periodStart: now, periodEnd: now + 30 * DAY_S };
    subscriptions.set(s.id, s);
    return s;
  }

  /** The API: `form` is the parsed body. */
  function api(method, path, form) {
    if (method === "POST" && path === "/v1/customers") {
      const customer = { id: id("cus"), object: "customer", created: Math.floor(Date.now() / 1000), email: form.email ?? null, metadata: form.metadata ?? {}, livemode: false };
      customers.set(customer.id, customer);
      return { status: 200, body: customer };
    }
    if (method === "POST" && path === "/v1/checkout/sessions") {
      if (form.mode !== "subscription") return error(400, "invalid_request_error", "This local Stripe supports mode=subscription only.", { param: "mode" });
      if (!customers.has(form.customer)) return error(400, "invalid_request_error", `No such customer: '${form.customer}'`, { code: "resource_missing", param: "customer" });
      const price = form.line_items?.[0]?.price;
      if (!prices[price]) return error(400, "invalid_request_error", `No such price: '${price}'`, { code: "resource_missing", param: "line_items[0][price]" });
      for (const field of ["success_url", "cancel_url"]) {
        if (!/^https?:\/\//.test(form[field] ?? "")) return error(400, "invalid_request_error", `Invalid URL: ${field}`, { param: field });
      }
      const session = { id: id("cs_test"), object: "checkout.session", mode: "subscription", status: "open", payment_status: "unpaid", customer: form.customer, client_reference_id: form.client_reference_id ?? null, subscription: null, success_url: form.success_url, cancel_url: form.cancel_url, price, subscription_metadata: form.subscription_data?.metadata ?? {}, livemode: false };
      session.url = `${origin}/checkout/${session.id}`;
      sessions.set(session.id, session);
      return { status: 200, body: session };
    }
    if (method === "POST" && path === "/v1/billing_portal/sessions") {
      if (!customers.has(form.customer)) return error(400, "invalid_request_error", `No such customer: '${form.customer}'`, { code: "resource_missing", param: "customer" });
      const portal = { id: id("bps"), object: "billing_portal.session", customer: form.customer, return_url: form.return_url ?? null, livemode: false };
      portal.url = `${origin}/portal/${portal.id}`;
      portals.set(portal.id, portal);
      return { status: 200, body: portal };
    }
    const sub = /^\/v1\/subscriptions\/([^/]+)$/.exec(path);
    if (method === "GET" && sub) {
      const s = subscriptions.get(decodeURIComponent(sub[1]));
      if (!s) return error(404, "invalid_request_error", `No such subscription: '${decodeURIComponent(sub[1])}'`, { code: "resource_missing", param: "id" });
      return { status: 200, body: subscriptionObject(s) };
    }
    return error(404, "invalid_request_error", `Unrecognized request URL (${method}: ${path}).`);
  }

  function pay(session) {
    const s = createSubscription(session.customer, session.price, session.subscription_metadata);
    Object.assign(session, { status: "complete", payment_status: "paid", subscription: s.id });
    emit("customer.subscription.created", subscriptionObject(s));
    emit("checkout.session.completed", { ...session });
    emit("invoice.paid", { id: id("in"), object: "invoice", customer: s.customer, status: "paid", parent: { type: "subscription_details", subscription_details: { subscription: s.id } } });
    return s;
  }

  function page(res, status, title, body) {
    res.writeHead(status, { "Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-store" }).end(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><link rel="icon" href="data:,">
<title>${escapeHtml(title)} · local Stripe</title>
<style>body{font:16px/1.5 system-ui,sans-serif;background:#f6f9fc;color:#1a1f36;display:grid;place-items:center;min-height:100vh;margin:0}
main{background:#fff;border-radius:12px;padding:2rem;width:min(26rem,92vw);box-shadow:0 6px 24px #0002}h1{font-size:1.3rem;margin:0 0 .5rem}
p{color:#4f566b}button{font:inherit;font-weight:600;width:100%;padding:.6rem;border:0;border-radius:6px;background:#635bff;color:#fff;cursor:pointer;margin-top:.75rem}
a{color:#635bff}.muted{font-size:.85rem}</style></head><body><main>${body}</main></body></html>`);
  }

  function readBody(req) {
    return new Promise((resolve, reject) => {
      const chunks = [];
      let size = 0;
      req.on("data", (c) => {
        size += c.length;
        if (size > 256 * 1024) {
          req.destroy();
          reject(new Error("body too large"));
        } else chunks.push(c);
      });
      req.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
      req.on("error", reject);
    });
  }

  const server = http.createServer(async (req, res) => {
    const url = new URL(req.url, origin);
    try {
      const body = await readBody(req);
      if (url.pathname.startsWith("/v1/")) {
        const json = (status, value, headers = {}) => res.writeHead(status, { "Content-Type": "application/json", "Request-Id": id("req"), ...headers }).end(JSON.stringify(value));
        if (req.headers.authorization !== `Bearer ${secretKey}`) {
          return json(401, { error: { type: "invalid_request_error", message: "Invalid API Key provided." } });
        }
        const form = parseForm(body);
        requests.push({ method: req.method, path: url.pathname, idempotencyKey: req.headers["idempotency-key"] ?? null, version: req.headers["stripe-version"] ?? null, contentType: req.headers["content-type"] ?? null, userAgent: req.headers["user-agent"] ?? "" });
        // Idempotency: the same key with the same request answers the first answer; with another, 400 (Stripe's
        // idempotency_error).
        const key = req.headers["idempotency-key"];
        const fingerprint = `${req.method} ${url.pathname} ${body}`;
        if (key && req.method === "POST") {
          const seen = idempotent.get(key);
          if (seen && seen.fingerprint !== fingerprint) {
            return json(400, { error: { type: "idempotency_error", message: "Keys for idempotent requests can only be used with the same parameters they were first used with." } });
          }
          if (seen) return json(seen.status, seen.body, { "Idempotent-Replayed": "true" });
        }
        const out = api(req.method, url.pathname, form);
        if (key && req.method === "POST") idempotent.set(key, { fingerprint, status: out.status, body: out.body });
        return json(out.status, out.body);
      }
      const checkout = /^\/checkout\/([^/]+)(\/pay)?$/.exec(url.pathname);
      if (checkout) {
        const session = sessions.get(checkout[1]);
        if (!session) return page(res, 404, "Not found", "<h1>This checkout does not exist.</h1>");
        if (req.method === "POST" && checkout[2]) {
          if (session.status !== "open") return page(res, 409, "Already paid", "<h1>This checkout is complete.</h1>");
          pay(session);
          return res.writeHead(303, { Location: session.success_url }).end();
        }
        return page(res, 200, "Checkout", `<h1>Subscribe to ${escapeHtml(prices[session.price])}</h1>
<p>Local test checkout: no card, no charge. Paying creates the subscription and sends Stripe's events to the control plane.</p>
<form method="post" action="/checkout/${escapeHtml(session.id)}/pay"><button type="submit">Pay and subscribe</button></form>
<p class="muted"><a href="${escapeHtml(session.cancel_url)}">Cancel and go back</a></p>`);
      }
      const portal = /^\/portal\/([^/]+)(\/cancel)?$/.exec(url.pathname);
      if (portal) {
        const session = portals.get(portal[1]);
        if (!session) return page(res, 404, "Not found", "<h1>This portal session does not exist.</h1>");
        const active = [...subscriptions.values()].filter((s) => s.customer === session.customer && s.status === "active");
        if (req.method === "POST" && portal[2]) {
          for (const s of active) {
            s.cancelAtPeriodEnd = true;
            emit("customer.subscription.updated", subscriptionObject(s));
          }
          return res.writeHead(303, { Location: session.return_url }).end();
        }
        return page(res, 200, "Billing", `<h1>Your subscription</h1>
${active.length ? active.map((s) => `<p>${escapeHtml(prices[s.price])}: ${s.cancelAtPeriodEnd ? "ends at the end of the period" : "renews monthly"}</p>`).join("") : "<p>No active subscription.</p>"}
${active.some((s) => !s.cancelAtPeriodEnd) ? `<form method="post" action="/portal/${escapeHtml(session.id)}/cancel"><button type="submit">Cancel at period end</button></form>` : ""}
<p class="muted"><a href="${escapeHtml(session.return_url)}">Back</a></p>`);
      }
      res.writeHead(404, { "Content-Type": "text/plain" }).end("local stripe: unknown path");
    } catch (err) {
      log(`error: ${err.message}`);
      if (!res.headersSent) res.writeHead(500, { "Content-Type": "application/json" }).end(JSON.stringify({ error: { type: "api_error", message: "local stripe error" } }));
    }
  });

  await new Promise((resolve) => server.listen(port, host, resolve));
  origin = `http://${host}:${server.address().port}`;
  return {
    origin,
    secretKey,
    webhookSecret,
    prices: Object.keys(prices),
    /** Points webhook deliveries at `url` (the control plane's `/v1/billing/webhook`). */
    setWebhookUrl: (url) => (webhookUrl = url),
    deliveries: () => deliveries.map((d) => ({ id: d.event.id, type: d.event.type, attempts: d.attempts.map((a) => a.status), delivered: d.delivered })),
    subscription: (subId) => subscriptions.get(subId) ?? null,
    /** Every API request received: method, path, Idempotency-Key, Stripe-Version, Content-Type. */
    requests: () => [...requests],
    /** An event as it was sent. */
    event: (eventId) => deliveries.find((d) => d.event.id === eventId)?.event ?? null,
    /** Pays a checkout session as the page's button does. */
    pay: (sessionId) => pay(sessions.get(sessionId)),
    /** Changes a subscription (status, cancelAtPeriodEnd, price) and sends `customer.subscription.<type>`. */
    update(subId, change, type = "updated") {
      const s = subscriptions.get(subId);
      Object.assign(s, change);
      return emit(`customer.subscription.${type}`, subscriptionObject(s));
    },
    /** Signs `payload` as Stripe would, for tests. */
    signedHeader,
    close: () =>
      new Promise((resolve) => {
        timers.forEach(clearTimeout);
        server.close(resolve);
        server.closeAllConnections?.();
      }),
  };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const port = Number(process.env.LOCAL_STRIPE_PORT || 8790);
  const controlPlane = `http://127.0.0.1:${process.env.PORT || 8787}`;
  const stripe = await startLocalStripe({
    port,
    secretKey: process.env.LOCAL_STRIPE_SECRET_KEY || "sk_test_local",
    webhookSecret: process.env.LOCAL_STRIPE_WEBHOOK_SECRET || "whsec_local",
    webhookUrl: `${controlPlane}/v1/billing/webhook`,
    log: (line) => console.log(`[local-stripe] ${line}`),
  });
  console.log(`[local-stripe] API on ${stripe.origin}/v1; events to ${controlPlane}/v1/billing/webhook`);
}
