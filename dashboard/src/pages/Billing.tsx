// Billing: the plan, the subscription as Stripe last said, an upgrade through Stripe Checkout, and the Customer
// Portal to change or cancel. The plan changes when Stripe's signed event arrives; the live feed shows it.
import { useEffect, useState } from "preact/hooks";
import { api, ApiError, type BillingView, type Me } from "../api";
import { useLive } from "../live";
import { ErrorBox, Loading, time } from "../ui";

const PLAN_NAMES = { free: "Free", pro: "Pro", enterprise: "Enterprise" } as const;

export function BillingPage({ me }: { me: Me }) {
  const [billing, setBilling] = useState<BillingView | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  const params = new URLSearchParams(window.location.search);
  const returned = params.get("checkout");
  const load = () => api<BillingView>("GET", "/v1/billing").then((b) => (setBilling(b), setError(null)), setError);
  useEffect(() => void load(), []);
  useLive(["plan"], () => void load());

  const go = async (path: string, body?: unknown) => {
    setBusy(true);
    setError(null);
    try {
      const { url } = await api<{ url: string }>("POST", path, body, { headers: { "Idempotency-Key": crypto.randomUUID() } });
      window.location.assign(url);
    } catch (e) {
      setError(e);
      setBusy(false);
    }
  };

  if (!billing) {
    const off = error instanceof ApiError && error.code === "billing_not_configured";
    return off ? <p class="notice">Billing is not configured on this control plane.</p> : error ? <ErrorBox error={error} /> : <Loading what="billing" />;
  }
  const sub = billing.subscription;
  const waiting = returned === "success" && billing.tier === "free";
  return (
    <section aria-labelledby="billing-title">
      <header class="page-header">
        <h1 id="billing-title">Billing</h1>
        <p class="muted">Payments are handled by Stripe; the plan changes when Stripe confirms the subscription.</p>
      </header>
      {returned === "cancelled" && <p class="notice">Checkout was cancelled; nothing changed.</p>}
      {waiting && (
        <p class="notice" role="status">
          Payment received by Stripe; your plan changes as soon as Stripe's confirmation arrives…
        </p>
      )}
      <ErrorBox error={error} />
      <div class="card">
        <h2>Your plan</h2>
        <p>
          <strong data-testid="plan">{PLAN_NAMES[billing.tier]}</strong> — {me.entitlements.requestsPerPeriod.toLocaleString()} requests a month, up to{" "}
          {me.entitlements.maxAgents} agents.
        </p>
        {sub && (
          <p data-testid="subscription">
            Subscription {sub.status}
            {sub.currentPeriodEnd && (sub.cancelAtPeriodEnd ? `; ends ${time(sub.currentPeriodEnd)}` : `; renews ${time(sub.currentPeriodEnd)}`)}.
          </p>
        )}
        <div class="deploy-options">
          {/* A paying customer changes plans in the portal (one subscription, prorated by Stripe), not by a second checkout. */}
          {billing.tier === "free" &&
            billing.purchasable.map((t) => (
              <button type="button" key={t} disabled={busy} onClick={() => go("/v1/billing/checkout", { tier: t })}>
                Upgrade to {PLAN_NAMES[t]}
              </button>
            ))}
          {sub && (
            <button type="button" class="secondary" disabled={busy} onClick={() => go("/v1/billing/portal")}>
              Manage subscription
            </button>
          )}
        </div>
      </div>
      <p class="muted small">
        A downgrade never deletes anything: agents beyond the new plan's limit keep running and stay yours, but no new one can be
        created until you are under the limit; usage above the new quotas is refused from the next call.
      </p>
    </section>
  );
}
