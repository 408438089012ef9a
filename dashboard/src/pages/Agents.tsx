// Agents: the list (newest first, a page at a time), create, rename, disable and enable, and the plan's limit on
// how many a person may have.
import { useEffect, useState } from "preact/hooks";
import { api, type Agent, type Me } from "../api";
import { useLive } from "../live";
import { Link } from "../router";
import { ErrorBox, ListTable, Loading, StatusBadge, ago } from "../ui";

const PAGE = 20;

export function AgentsPage({ me }: { me: Me }) {
  const [agents, setAgents] = useState<Agent[] | null>(null);
  const [cursor, setCursor] = useState<string | null>(null);
  const [error, setError] = useState<unknown>(null);

  async function load(after: string | null) {
    setError(null);
    try {
      const page = await api<{ agents: Agent[]; nextCursor: string | null }>("GET", `/v1/agents?limit=${PAGE}${after ? `&cursor=${encodeURIComponent(after)}` : ""}`);
      setAgents((shown) => (after && shown ? [...shown, ...page.agents] : page.agents));
      setCursor(page.nextCursor);
    } catch (e) {
      setError(e);
    }
  }
  useEffect(() => void load(null), []);

  const replace = (agent: Agent) => setAgents((shown) => shown?.map((a) => (a.id === agent.id ? agent : a)) ?? null);
  // Changes made elsewhere (another tab, the API, a deploy finishing) show without a reload.
  useLive(["agent", "agent_deleted"], (event) => {
    if (event.kind === "resync") return void load(null);
    const id = event.data.id as string;
    if (event.kind === "agent_deleted") return setAgents((shown) => shown?.filter((a) => a.id !== id) ?? null);
    const agent = event.data as unknown as Agent;
    setAgents((shown) => (shown === null ? shown : shown.some((a) => a.id === id) ? shown.map((a) => (a.id === id ? agent : a)) : [agent, ...shown]));
  });
  const max = me.entitlements.maxAgents;
  const count = agents?.length ?? 0;
  const atLimit = agents !== null && cursor === null && count >= max;

  return (
    <section aria-labelledby="agents-title">
      <header class="page-header">
        <h1 id="agents-title">Agents</h1>
        <p class="muted" data-testid="agent-limit">
          {agents === null ? "" : `${cursor ? `${count}+` : count} of ${max} agents on the ${me.tier} plan`}
        </p>
      </header>
      <CreateAgent disabled={atLimit} onCreated={(agent) => setAgents((shown) => [agent, ...(shown ?? []).filter((a) => a.id !== agent.id)])} />
      {atLimit && <p class="notice">You have reached your plan's limit of {max} agents. Delete one to create another.</p>}
      <ErrorBox error={error} onRetry={() => load(null)} />
      {agents === null && !error && <Loading what="agents" />}
      {agents !== null && agents.length === 0 && <p class="empty">No agents yet. Create one above, then deploy it.</p>}
      {agents !== null && agents.length > 0 && (
        <ListTable columns={["Name", "Status", "Deployed", "Created"]}>
          {agents.map((agent) => (
            <AgentRow key={agent.id} agent={agent} onChange={replace} />
          ))}
        </ListTable>
      )}
      {cursor && (
        <button type="button" class="secondary" onClick={() => load(cursor)}>
          Show more
        </button>
      )}
    </section>
  );
}

function CreateAgent({ disabled, onCreated }: { disabled: boolean; onCreated: (agent: Agent) => void }) {
  const [name, setName] = useState("");
  const [description, setDescription] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);
  return (
    <form
      class="card inline-form"
      aria-label="Create an agent"
      onSubmit={async (event) => {
        event.preventDefault();
        setBusy(true);
        setError(null);
        try {
          onCreated(await api<Agent>("POST", "/v1/agents", { name: name.trim(), description: description.trim() || null }));
          setName("");
          setDescription("");
        } catch (e) {
          setError(e);
        } finally {
          setBusy(false);
        }
      }}
    >
      <label>
        Name
        <input name="name" required minLength={3} maxLength={63} pattern="[a-z][a-z0-9\-]*[a-z0-9]" title="Lowercase letters, digits and '-', starting with a letter" value={name} onInput={(e) => setName(e.currentTarget.value)} placeholder="support-bot" />
      </label>
      <label>
        Description <span class="muted">(optional)</span>
        <input name="description" maxLength={500} value={description} onInput={(e) => setDescription(e.currentTarget.value)} />
      </label>
      <button type="submit" disabled={busy || disabled}>
        {busy ? "Creating…" : "Create agent"}
      </button>
      <ErrorBox error={error} />
    </form>
  );
}

function AgentRow({ agent, onChange }: { agent: Agent; onChange: (agent: Agent) => void }) {
  const [renaming, setRenaming] = useState(false);
  const [name, setName] = useState(agent.name);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const run = async (call: () => Promise<Agent>) => {
    setBusy(true);
    setError(null);
    try {
      onChange(await call());
      setRenaming(false);
    } catch (e) {
      setError(e);
    } finally {
      setBusy(false);
    }
  };
  return (
    <>
      <tr data-agent={agent.name}>
        <td>
          {renaming ? (
            <form class="rename" onSubmit={(e) => (e.preventDefault(), run(() => api<Agent>("PATCH", `/v1/agents/${agent.id}`, { name: name.trim() })))}>
              <label class="visually-hidden" for={`rename-${agent.id}`}>
                New name for {agent.name}
              </label>
              <input id={`rename-${agent.id}`} value={name} required onInput={(e) => setName(e.currentTarget.value)} />
              <button type="submit" disabled={busy}>
                Save
              </button>
              <button type="button" class="secondary" onClick={() => (setRenaming(false), setName(agent.name))}>
                Cancel
              </button>
            </form>
          ) : (
            <Link href={`/agents/${agent.id}`}>{agent.name}</Link>
          )}
          {agent.description && <div class="muted small">{agent.description}</div>}
        </td>
        <td>
          <StatusBadge status={agent.status} />
        </td>
        <td>{agent.activeDeploymentId ? "yes" : <span class="muted">not yet</span>}</td>
        <td title={new Date(agent.createdAt).toISOString()}>{ago(agent.createdAt)}</td>
        <td class="row-actions">
          {!renaming && (
            <button type="button" class="secondary" onClick={() => setRenaming(true)} aria-label={`Rename ${agent.name}`}>
              Rename
            </button>
          )}
          <button type="button" class="secondary" disabled={busy} onClick={() => run(() => api<Agent>("POST", `/v1/agents/${agent.id}/${agent.status === "active" ? "disable" : "enable"}`))} aria-label={`${agent.status === "active" ? "Disable" : "Enable"} ${agent.name}`}>
            {agent.status === "active" ? "Disable" : "Enable"}
          </button>
        </td>
      </tr>
      {error ? (
        <tr>
          <td colSpan={5}>
            <ErrorBox error={error} />
          </td>
        </tr>
      ) : null}
    </>
  );
}
