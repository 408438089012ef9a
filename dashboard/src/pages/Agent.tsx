// One agent: its deployments (status, version, source, error with step, endpoint and provider message, times;
// the active one marked), deploying the template, a module file or (plans with AgentCore) a container image,
// rollback with confirmation, and its secrets.
import { Fragment } from "preact";
import { useEffect, useRef, useState } from "preact/hooks";
import { api, type Agent, type Deployment, type Me, type Secret } from "../api";
import { useLive, useLiveStatus } from "../live";
import { Link, navigate } from "../router";
import { Confirm, ErrorBox, ListTable, Loading, StatusBadge, time } from "../ui";

// How often a deploy in progress is looked at again: often while the live feed is reconnecting, seldom while it
// is connected (in case its event is lost, the page never stays on "deploying").
const POLL_MS = 1000;
const POLL_WHILE_LIVE_MS = 5000;
// The control plane's limit on one module (docs/openapi.yaml, DeployRequest.moduleCode).
const MAX_MODULE_BYTES = 1024 * 1024;

export function AgentPage({ agentId, me }: { agentId: string; me: Me }) {
  const [agent, setAgent] = useState<Agent | null>(null);
  const [deployments, setDeployments] = useState<Deployment[] | null>(null);
  const [error, setError] = useState<unknown>(null);
  // Only the latest refresh's answers are shown: an older one arriving late never overwrites a newer one.
  const latest = useRef(0);

  async function refresh() {
    const mine = ++latest.current;
    try {
      const [a, d] = await Promise.all([
        api<Agent>("GET", `/v1/agents/${agentId}`),
        api<{ deployments: Deployment[] }>("GET", `/v1/agents/${agentId}/deployments?limit=200`),
      ]);
      if (mine !== latest.current) return;
      setAgent(a);
      setDeployments(d.deployments);
      setError(null);
    } catch (e) {
      if (mine === latest.current) setError(e);
    }
  }
  useEffect(() => void refresh(), [agentId]);
  // The live feed says when anything of this agent changes (a deploy going live, a rollback elsewhere).
  useLive(
    ["agent", "agent_deleted", "deployment"],
    (event) => {
      if (event.kind === "agent_deleted" && event.data.id === agentId) return navigate("/");
      if (event.kind === "resync" || event.data.id === agentId || event.data.agentId === agentId) void refresh();
    },
    [agentId],
  );
  // A deploy in progress is also followed by asking again: seldom with the feed, often without it.
  const live = useLiveStatus();
  const deploying = deployments?.some((d) => d.status === "deploying") ?? false;
  useEffect(() => {
    if (!deploying) return;
    const timer = setInterval(refresh, live ? POLL_WHILE_LIVE_MS : POLL_MS);
    return () => clearInterval(timer);
  }, [deploying, live, agentId]);

  if (!agent) return error ? <ErrorBox error={error} onRetry={refresh} /> : <Loading what="the agent" />;
  return (
    <section aria-labelledby="agent-title">
      <header class="page-header">
        <p class="crumbs">
          <Link href="/">Agents</Link> /
        </p>
        <h1 id="agent-title">
          {agent.name} <StatusBadge status={agent.status} />
        </h1>
        {agent.description && <p class="muted">{agent.description}</p>}
        <p>
          <Link class="button" href={`/agents/${agent.id}/playground`}>
            Open the playground
          </Link>
        </p>
      </header>
      <ErrorBox error={error} onRetry={refresh} />
      <DeployPanel
        agent={agent}
        agentcore={me.entitlements.runtimeProviders.includes("agentcore")}
        onDeployed={(d) => setDeployments((shown) => [d, ...(shown ?? [])])}
      />
      <Deployments agent={agent} deployments={deployments} onChange={refresh} />
      <Secrets agentId={agent.id} />
    </section>
  );
}

function DeployPanel({ agent, agentcore, onDeployed }: { agent: Agent; agentcore: boolean; onDeployed: (d: Deployment) => void }) {
  const [file, setFile] = useState<File | null>(null);
  const [image, setImage] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const deploy = async (body: Record<string, unknown>): Promise<boolean> => {
    setBusy(true);
    setError(null);
    try {
      // One key per click: a retried request returns the same deployment instead of starting a second one.
      onDeployed(await api<Deployment>("POST", `/v1/agents/${agent.id}/deploy`, body, { headers: { "Idempotency-Key": crypto.randomUUID() } }));
      return true;
    } catch (e) {
      setError(e);
      return false;
    } finally {
      setBusy(false);
    }
  };
  return (
    <div class="card" role="group" aria-labelledby="deploy-title">
      <h2 id="deploy-title">Deploy</h2>
      <p class="muted">A deploy makes a new version; it takes calls once it is active. Earlier versions stay for rollback.</p>
      <div class="deploy-options">
        <button type="button" disabled={busy} onClick={() => void deploy({})}>
          Deploy the template
        </button>
        <form
          class="inline-form"
          onSubmit={async (event) => {
            event.preventDefault();
            const form = event.currentTarget;
            if (!file) return;
            if (file.size > MAX_MODULE_BYTES) {
              setError(new Error(`${file.name} is ${file.size} bytes; a module may be at most 1 MiB.`));
              return;
            }
            const name = /^[A-Za-z0-9_-][A-Za-z0-9._-]*\.m?js$/.test(file.name) ? file.name : "index.mjs";
            if (await deploy({ moduleCode: await file.text(), mainModuleName: name })) {
              form.reset();
              setFile(null);
            }
          }}
        >
          <label>
            Module file (an ES module with a default export)
            <input type="file" accept=".js,.mjs,text/javascript" onChange={(e) => setFile(e.currentTarget.files?.[0] ?? null)} />
          </label>
          <button type="submit" disabled={busy || !file}>
            Deploy this file
          </button>
        </form>
        {agentcore ? (
          <form
            class="inline-form"
            onSubmit={async (event) => {
              event.preventDefault();
              if (await deploy({ runtimeProvider: "agentcore", containerUri: image.trim() })) setImage("");
            }}
          >
            <label>
              Container image on AgentCore (an Amazon ECR URI)
              <input
                type="text"
                value={image}
                placeholder="123456789012.dkr.ecr.us-east-1.amazonaws.com/my-agent:v1"
                onInput={(e) => setImage(e.currentTarget.value)}
              />
            </label>
            <button type="submit" disabled={busy || !image.trim()}>
              Deploy this image
            </button>
          </form>
        ) : (
          <p class="muted small">Container images on Amazon Bedrock AgentCore come with the Pro and Enterprise plans.</p>
        )}
      </div>
      <ErrorBox error={error} />
    </div>
  );
}

function Deployments({ agent, deployments, onChange }: { agent: Agent; deployments: Deployment[] | null; onChange: () => void }) {
  const [confirming, setConfirming] = useState<Deployment | null>(null);
  const [error, setError] = useState<unknown>(null);
  const activate = async (d: Deployment) => {
    setConfirming(null);
    setError(null);
    try {
      await api("POST", `/v1/agents/${agent.id}/deployments/${d.id}/activate`);
      onChange();
    } catch (e) {
      setError(e);
    }
  };
  return (
    <div class="card" role="group" aria-labelledby="deployments-title">
      <h2 id="deployments-title">Deployments</h2>
      <ErrorBox error={error} />
      {deployments === null && <Loading what="deployments" />}
      {deployments?.length === 0 && <p class="empty">Nothing deployed yet.</p>}
      {deployments && deployments.length > 0 && (
        <ListTable columns={["Version", "Status", "Source", "Started", "Finished"]}>
          {deployments.map((d) => {
            const isActive = d.id === agent.activeDeploymentId;
            return (
              <Fragment key={d.id}>
                <tr data-version={d.version} class={isActive ? "active-row" : undefined}>
                  <td>
                    v{d.version} {isActive && <span class="badge badge-live">serving</span>}
                  </td>
                  <td>
                    <StatusBadge status={d.status} />
                    {d.retries > 0 && <span class="muted small"> ({d.retries} retried)</span>}
                  </td>
                  <td>
                    {d.runtimeProvider === "agentcore" ? (
                      <>
                        image on AgentCore <code class="small" title={d.containerUri}>{d.containerUri?.split("/").pop()}</code>
                      </>
                    ) : (
                      <>
                        {d.source} <code class="small" title={d.codeSha256}>{d.codeSha256.slice(0, 8)}</code>
                      </>
                    )}
                  </td>
                  <td>{time(d.createdAt)}</td>
                  <td>{time(d.finishedAt)}</td>
                  <td class="row-actions">
                    {d.status === "inactive" && (
                      <button type="button" class="secondary" onClick={() => setConfirming(d)}>
                        Roll back to v{d.version}
                      </button>
                    )}
                  </td>
                </tr>
                {d.error && (
                  <tr>
                    <td colSpan={6}>
                      <div class="deploy-error" role="note">
                        <strong>Failed at {d.error.step}</strong> ({d.error.kind}
                        {d.error.status ? `, HTTP ${d.error.status}` : ""}
                        {d.error.providerCodes.length ? `, codes ${d.error.providerCodes.join(", ")}` : ""}): {d.error.message}
                        {d.error.endpoint && (
                          <div class="small">
                            <code>{d.error.endpoint}</code>
                          </div>
                        )}
                      </div>
                    </td>
                  </tr>
                )}
              </Fragment>
            );
          })}
        </ListTable>
      )}
      {confirming && (
        <Confirm title={`Roll back to v${confirming.version}?`} action={`Roll back to v${confirming.version}`} onConfirm={() => activate(confirming)} onCancel={() => setConfirming(null)}>
          <p>Calls go to version {confirming.version} from the next one on. The version serving now stays available to roll forward again.</p>
        </Confirm>
      )}
    </div>
  );
}

function Secrets({ agentId }: { agentId: string }) {
  const [secrets, setSecrets] = useState<Secret[] | null>(null);
  const [name, setName] = useState("");
  const [value, setValue] = useState("");
  const [deleting, setDeleting] = useState<string | null>(null);
  const [error, setError] = useState<unknown>(null);
  const load = async () => {
    try {
      setSecrets((await api<{ secrets: Secret[] }>("GET", `/v1/agents/${agentId}/secrets`)).secrets);
    } catch (e) {
      setError(e);
    }
  };
  useEffect(() => void load(), [agentId]);
  return (
    <div class="card" role="group" aria-labelledby="secrets-title">
      <h2 id="secrets-title">Secrets</h2>
      <p class="muted">Values are write-only: stored encrypted, given to the agent at its next deploy, never shown again.</p>
      <form
        class="inline-form"
        aria-label="Set a secret"
        onSubmit={async (event) => {
          event.preventDefault();
          setError(null);
          try {
            await api("PUT", `/v1/agents/${agentId}/secrets/${encodeURIComponent(name.trim())}`, { value });
            setName("");
            setValue("");
            await load();
          } catch (e) {
            setError(e);
          }
        }}
      >
        <label>
          Name
          <input name="secret-name" required pattern="[A-Z_][A-Z0-9_]*" title="Upper-case letters, digits and _" value={name} onInput={(e) => setName(e.currentTarget.value)} placeholder="OPENAI_API_KEY" />
        </label>
        <label>
          Value
          <input name="secret-value" type="password" required autoComplete="off" value={value} onInput={(e) => setValue(e.currentTarget.value)} />
        </label>
        <button type="submit">Set secret</button>
      </form>
      <ErrorBox error={error} />
      {secrets?.length === 0 && <p class="empty">No secrets.</p>}
      {secrets && secrets.length > 0 && (
        <ul class="secrets">
          {secrets.map((s) => (
            <li key={s.name}>
              <code>{s.name}</code> <span class="muted small">updated {time(s.updatedAt)}</span>
              <button type="button" class="secondary" onClick={() => setDeleting(s.name)} aria-label={`Delete secret ${s.name}`}>
                Delete
              </button>
            </li>
          ))}
        </ul>
      )}
      {deleting && (
        <Confirm
          title={`Delete ${deleting}?`}
          action="Delete secret"
          onCancel={() => setDeleting(null)}
          onConfirm={async () => {
            const target = deleting;
            setDeleting(null);
            try {
              await api("DELETE", `/v1/agents/${agentId}/secrets/${encodeURIComponent(target)}`);
              await load();
            } catch (e) {
              setError(e);
            }
          }}
        >
          <p>The agent keeps the value until its next deploy.</p>
        </Confirm>
      )}
    </div>
  );
}
