// API keys: create one (shown once, with a copy button), list them, revoke one after a confirmation.
import { useEffect, useState } from "preact/hooks";
import { api, type Agent, type ApiKey } from "../api";
import { Confirm, ErrorBox, ListTable, Loading, time } from "../ui";

export function ApiKeysPage() {
  const [keys, setKeys] = useState<ApiKey[] | null>(null);
  const [agents, setAgents] = useState<Agent[]>([]);
  const [name, setName] = useState("");
  const [agentId, setAgentId] = useState("");
  const [created, setCreated] = useState<(ApiKey & { key: string }) | null>(null);
  const [copied, setCopied] = useState(false);
  const [revoking, setRevoking] = useState<ApiKey | null>(null);
  const [error, setError] = useState<unknown>(null);

  const load = async () => {
    try {
      setKeys((await api<{ apiKeys: ApiKey[] }>("GET", "/v1/api-keys")).apiKeys);
    } catch (e) {
      setError(e);
    }
  };
  useEffect(() => {
    void load();
    api<{ agents: Agent[] }>("GET", "/v1/agents?limit=100").then((page) => setAgents(page.agents), setError);
  }, []);
  const agentName = (id: string | null) => (id ? (agents.find((a) => a.id === id)?.name ?? id) : "all agents");

  return (
    <section aria-labelledby="keys-title">
      <header class="page-header">
        <h1 id="keys-title">API keys</h1>
        <p class="muted">
          Keys call the invoke routes from your own code: <code>Authorization: Bearer whk_…</code>. Only a key's hash is stored.
        </p>
      </header>
      <form
        class="card inline-form"
        aria-label="Create an API key"
        onSubmit={async (event) => {
          event.preventDefault();
          setError(null);
          setCopied(false);
          try {
            const key = await api<ApiKey & { key: string }>("POST", "/v1/api-keys", { name: name.trim(), ...(agentId ? { agentId } : {}) });
            setCreated(key);
            setName("");
            await load();
          } catch (e) {
            setError(e);
          }
        }}
      >
        <label>
          Name
          <input name="key-name" required maxLength={64} value={name} onInput={(e) => setName(e.currentTarget.value)} placeholder="production backend" />
        </label>
        <label>
          For
          <select name="key-agent" value={agentId} onChange={(e) => setAgentId(e.currentTarget.value)}>
            <option value="">all my agents</option>
            {agents.map((a) => (
              <option value={a.id} key={a.id}>
                {a.name}
              </option>
            ))}
          </select>
        </label>
        <button type="submit">Create key</button>
      </form>
      {created && (
        <div class="card new-key" role="status">
          <h2>Your new key “{created.name}”</h2>
          <p>Copy it now: it is shown only this once.</p>
          <div class="key-line">
            <code data-testid="new-key">{created.key}</code>
            <button
              type="button"
              class="secondary"
              onClick={async () => {
                await navigator.clipboard.writeText(created.key);
                setCopied(true);
              }}
            >
              {copied ? "Copied" : "Copy"}
            </button>
            <button type="button" class="secondary" onClick={() => setCreated(null)}>
              Done
            </button>
          </div>
        </div>
      )}
      <ErrorBox error={error} />
      {keys === null && !error && <Loading what="keys" />}
      {keys?.length === 0 && <p class="empty">No keys yet.</p>}
      {keys && keys.length > 0 && (
        <ListTable columns={["Name", "Key", "For", "Created", "Last used", "State"]}>
          {keys.map((k) => (
            <tr key={k.id} data-key={k.name}>
              <td>{k.name}</td>
              <td>
                <code>{k.prefix}…</code>
              </td>
              <td>{agentName(k.agentId)}</td>
              <td>{time(k.createdAt)}</td>
              <td>{k.lastUsedAt ? time(k.lastUsedAt) : <span class="muted">never</span>}</td>
              <td>{k.revokedAt ? <span class="badge badge-failed">revoked</span> : <span class="badge badge-active">live</span>}</td>
              <td class="row-actions">
                {!k.revokedAt && (
                  <button type="button" class="secondary" onClick={() => setRevoking(k)} aria-label={`Revoke ${k.name}`}>
                    Revoke
                  </button>
                )}
              </td>
            </tr>
          ))}
        </ListTable>
      )}
      {revoking && (
        <Confirm
          title={`Revoke “${revoking.name}”?`}
          action="Revoke key"
          onCancel={() => setRevoking(null)}
          onConfirm={async () => {
            const key = revoking;
            setRevoking(null);
            try {
              await api("DELETE", `/v1/api-keys/${key.id}`);
              await load();
            } catch (e) {
              setError(e);
            }
          }}
        >
          <p>Calls made with this key fail from the next one on. This cannot be undone.</p>
        </Confirm>
      )}
    </section>
  );
}
