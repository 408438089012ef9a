// The dashboard's shell: asks the control plane how to sign in, loads the identity provider, then shows the
// page for the current path. Signed out, it shows a sign-in screen; nothing else is reachable.
import { render } from "preact";
import { useEffect, useState } from "preact/hooks";
import { api, type Me } from "./api";
import { currentUser, onAuthChange, signIn, signOut, startAuth, type SignInConfig } from "./auth";
import { AgentPage } from "./pages/Agent";
import { AgentsPage } from "./pages/Agents";
import { ApiKeysPage } from "./pages/ApiKeys";
import { BillingPage } from "./pages/Billing";
import { PlaygroundPage } from "./pages/Playground";
import { UsagePage } from "./pages/Usage";
import { startLive, stopLive, useLive, useLiveStatus } from "./live";
import { Link, navigate, usePath } from "./router";
import { ErrorBox, Loading } from "./ui";
import "./styles.css";

type Boot = { state: "loading" } | { state: "failed"; error: unknown } | { state: "no-sign-in" } | { state: "ready" };

function App() {
  const [boot, setBoot] = useState<Boot>({ state: "loading" });
  const [user, setUser] = useState(currentUser());
  useEffect(() => {
    (async () => {
      try {
        const { signIn: config } = await fetch("/v1/dashboard/config").then((r) => r.json() as Promise<{ signIn: SignInConfig | null }>);
        if (!config) return setBoot({ state: "no-sign-in" });
        await startAuth(config);
        setUser(currentUser());
        onAuthChange(() => setUser(currentUser()));
        setBoot({ state: "ready" });
      } catch (error) {
        setBoot({ state: "failed", error });
      }
    })();
  }, []);

  if (boot.state === "loading") return <Shell><Loading what="the dashboard" /></Shell>;
  if (boot.state === "failed") return <Shell><ErrorBox error={boot.error} /></Shell>;
  if (boot.state === "no-sign-in")
    return (
      <Shell>
        <p class="notice">Sign-in is not configured for this control plane: set DASHBOARD_CLERK_PUBLISHABLE_KEY (README › Dashboard).</p>
      </Shell>
    );
  if (!user)
    return (
      <Shell>
        <div class="card signin">
          <h1>Sign in to webhost.systems</h1>
          <p>Deploy AI agents, talk to them, and watch what they use.</p>
          <button type="button" onClick={signIn}>
            Sign in
          </button>
        </div>
      </Shell>
    );
  return <SignedIn label={user.label} />;
}

function SignedIn({ label }: { label: string }) {
  const path = usePath();
  const [me, setMe] = useState<Me | null>(null);
  const [error, setError] = useState<unknown>(null);
  const live = useLiveStatus();
  const loadMe = () => api<Me>("GET", "/v1/me").then(setMe, setError);
  useEffect(() => {
    void loadMe();
    startLive();
  }, []);
  // A plan change (tier, entitlements) shows at once.
  useLive(["plan"], () => void loadMe());
  const agentMatch = /^\/agents\/(agt_[0-9a-f]{24})(\/playground)?$/.exec(path);
  let page;
  if (error) page = <ErrorBox error={error} />;
  else if (!me) page = <Loading what="your account" />;
  else if (path === "/" || path === "/agents") page = <AgentsPage me={me} />;
  else if (path === "/usage") page = <UsagePage />;
  else if (path === "/api-keys") page = <ApiKeysPage />;
  else if (path === "/billing") page = <BillingPage me={me} />;
  else if (agentMatch?.[2]) page = <PlaygroundPage agentId={agentMatch[1]} />;
  else if (agentMatch) page = <AgentPage agentId={agentMatch[1]} me={me} />;
  else
    page = (
      <p class="notice">
        No page here. <Link href="/">Go to your agents</Link>.
      </p>
    );
  return (
    <Shell
      nav={
        <>
          <nav aria-label="Main">
            <Link href="/">Agents</Link>
            <Link href="/usage">Usage</Link>
            <Link href="/api-keys">API keys</Link>
            <Link href="/billing">Billing</Link>
          </nav>
          <div class="account">
            <span class={live ? "live on" : "live"} data-testid="live" title={live ? "Changes appear as they happen" : "Reconnecting to the live feed"}>
              {live ? "Live" : "Reconnecting…"}
            </span>
            <span data-testid="signed-in-as">{label}</span>
            {me && <span class="badge">{me.tier}</span>}
            <button type="button" class="secondary" onClick={() => (stopLive(), signOut().then(() => navigate("/")))}>
              Sign out
            </button>
          </div>
        </>
      }
    >
      {page}
    </Shell>
  );
}

function Shell({ nav, children }: { nav?: preact.ComponentChildren; children: preact.ComponentChildren }) {
  return (
    <>
      <a class="skip" href="#main">
        Skip to content
      </a>
      <header class="top">
        <Link href="/" class="brand">
          webhost.systems
        </Link>
        {nav}
      </header>
      <main id="main">{children}</main>
    </>
  );
}

render(<App />, document.getElementById("app")!);
