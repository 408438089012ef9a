// Usage: this period against the plan (requests, tokens, compute), past periods as a chart, an agent's recent
// telemetry events, and what happens when a quota is reached.
import { useEffect, useState } from "preact/hooks";
import { api, type Agent, type MetricsEvent, type UsageCurrent, type UsagePeriod } from "../api";
import { useLive } from "../live";
import { ErrorBox, ListTable, Loading, time } from "../ui";

const HISTORY_PERIODS = 12;
const QUOTA_NAMES = { requestsPerPeriod: "requests", tokensPerPeriod: "tokens", computeMsPerPeriod: "compute" } as const;

export function UsagePage() {
  const [refreshKey, setRefreshKey] = useState(0);
  // Usage moves as calls are made and telemetry arrives; the plan may change: read again when told.
  useLive(["usage", "plan"], () => setRefreshKey((k) => k + 1));
  const [current, setCurrent] = useState<UsageCurrent | null>(null);
  const [history, setHistory] = useState<UsagePeriod[] | null>(null);
  const [error, setError] = useState<unknown>(null);
  useEffect(() => {
    // A later refresh supersedes this one: its answers are dropped if they arrive after.
    let superseded = false;
    Promise.all([api<UsageCurrent>("GET", "/v1/usage/current"), api<{ periods: UsagePeriod[] }>("GET", `/v1/usage/history?periods=${HISTORY_PERIODS}`)]).then(
      ([c, h]) => {
        if (superseded) return;
        setCurrent(c);
        setHistory(h.periods);
        setError(null);
      },
      (e) => superseded || setError(e),
    );
    return () => void (superseded = true);
  }, [refreshKey]);

  if (!current) return error ? <ErrorBox error={error} /> : <Loading what="usage" />;
  const e = current.entitlements;
  // Compute is charged with the larger of what the agents reported and what the gateway measured.
  const compute = Math.max(current.totals.computeMs, current.totals.gatewayMs);
  return (
    <section aria-labelledby="usage-title">
      <header class="page-header">
        <h1 id="usage-title">Usage</h1>
        <p class="muted">
          Period {current.periodKey} on the {current.tier} plan; it resets {time(Date.parse(current.resetsAt))}.
        </p>
      </header>
      <ErrorBox error={error} />
      {current.exhausted.length > 0 && (
        <p class="notice" role="alert" data-testid="exhausted">
          You have used all your {current.exhausted.map((q) => QUOTA_NAMES[q]).join(" and ")} for this period: calls are refused with 429 (
          <code>{current.exhausted.includes("requestsPerPeriod") ? "request_limit_exceeded" : "quota_exhausted"}</code>) until the period resets.
        </p>
      )}
      <div class="card meters" data-testid="meters">
        <Meter label="Requests" used={current.requestsReserved} limit={e.requestsPerPeriod} unit="" />
        <Meter label="Tokens" used={current.totals.tokens} limit={e.tokensPerPeriod} unit="" detail={`${current.totals.inputTokens} in, ${current.totals.outputTokens} out`} />
        <Meter label="Compute" used={compute} limit={e.computeMsPerPeriod} unit=" ms" detail={`${current.totals.computeMs} ms reported, ${current.totals.gatewayMs} ms measured`} />
      </div>
      <p class="muted small">
        Requests are counted by the gateway as they are made. Tokens and compute come from the agents' signed telemetry
        and the gateway's own measurements; once a period's total reaches the plan, calls are refused before the agent
        runs, until the period resets. Nothing is deleted and deployed agents keep their state.
      </p>
      {history && <HistoryChart periods={history} />}
      <RecentEvents refreshKey={refreshKey} />
    </section>
  );
}

function Meter({ label, used, limit, unit, detail }: { label: string; used: number; limit: number; unit: string; detail?: string }) {
  const share = limit > 0 ? Math.min(1, used / limit) : 1;
  return (
    <div class="meter">
      <div class="meter-head">
        <strong id={`meter-${label}`}>{label}</strong>
        <span data-testid={`meter-${label.toLowerCase()}`}>
          {used.toLocaleString()}
          {unit} of {limit.toLocaleString()}
          {unit}
        </span>
      </div>
      <div class="bar" role="meter" aria-labelledby={`meter-${label}`} aria-valuemin={0} aria-valuemax={limit} aria-valuenow={Math.min(used, limit)}>
        <div class={`fill ${share >= 1 ? "full" : share >= 0.8 ? "high" : ""}`} style={{ width: `${share * 100}%` }} />
      </div>
      {detail && <div class="muted small">{detail}</div>}
    </div>
  );
}

/** Requests and tokens per period, oldest on the left, as bars scaled to the busiest period. */
function HistoryChart({ periods }: { periods: UsagePeriod[] }) {
  const ordered = [...periods].reverse();
  const most = Math.max(1, ...ordered.map((p) => p.totals.requests));
  const width = 640;
  const height = 160;
  const slot = width / ordered.length;
  return (
    <div class="card">
      <h2 id="history-title">Past periods</h2>
      <svg viewBox={`0 0 ${width} ${height + 24}`} class="chart" role="img" aria-labelledby="history-title history-desc">
        <desc id="history-desc">Requests per period for the last {ordered.length} periods.</desc>
        {ordered.map((p, i) => {
          const h = Math.round((p.totals.requests / most) * height);
          return (
            <g key={p.periodKey}>
              <rect x={i * slot + 6} y={height - h} width={slot - 12} height={h} class={p.finalized ? "final" : "open"}>
                <title>
                  {p.periodKey}: {p.totals.requests} requests, {p.totals.tokens} tokens{p.finalized ? "" : " (so far)"}
                </title>
              </rect>
              <text x={i * slot + slot / 2} y={height + 16} text-anchor="middle">
                {p.periodKey.slice(2)}
              </text>
            </g>
          );
        })}
      </svg>
      <table class="list small" aria-label="Past periods">
        <thead>
          <tr>
            <th scope="col">Period</th>
            <th scope="col">Requests</th>
            <th scope="col">Tokens</th>
            <th scope="col">Compute ms</th>
            <th scope="col">Errors</th>
          </tr>
        </thead>
        <tbody>
          {periods.map((p) => (
            <tr key={p.periodKey}>
              <td>
                {p.periodKey} {!p.finalized && <span class="muted">(open)</span>}
              </td>
              <td>{p.totals.requests}</td>
              <td>{p.totals.tokens}</td>
              <td>{Math.max(p.totals.computeMs, p.totals.gatewayMs)}</td>
              <td>{p.totals.errors}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

function RecentEvents({ refreshKey }: { refreshKey: number }) {
  const [agents, setAgents] = useState<Agent[] | null>(null);
  const [agentId, setAgentId] = useState("");
  const [events, setEvents] = useState<MetricsEvent[] | null>(null);
  const [error, setError] = useState<unknown>(null);
  useEffect(() => {
    api<{ agents: Agent[] }>("GET", "/v1/agents?limit=100").then((page) => {
      setAgents(page.agents);
      if (page.agents[0]) setAgentId(page.agents[0].id);
    }, setError);
  }, []);
  useEffect(() => {
    if (!agentId) return;
    let superseded = false;
    api<{ events: MetricsEvent[] }>("GET", `/v1/metrics/recent?agentId=${agentId}&limit=20`).then(
      (r) => superseded || setEvents(r.events),
      (e) => superseded || setError(e),
    );
    return () => void (superseded = true);
  }, [agentId, refreshKey]);
  return (
    <div class="card">
      <h2>Recent telemetry</h2>
      <ErrorBox error={error} />
      {agents?.length === 0 && <p class="empty">No agents, so no telemetry.</p>}
      {agents && agents.length > 0 && (
        <label class="inline">
          Agent
          <select name="events-agent" value={agentId} onChange={(e) => setAgentId(e.currentTarget.value)}>
            {agents.map((a) => (
              <option key={a.id} value={a.id}>
                {a.name}
              </option>
            ))}
          </select>
        </label>
      )}
      {events?.length === 0 && <p class="empty">No telemetry from this agent yet.</p>}
      {events && events.length > 0 && (
        <ListTable columns={["When", "Trace", "Requests", "Tokens in", "Tokens out", "Compute ms", "Errors"]}>
          {events.map((ev) => (
            <tr key={`${ev.traceId}-${ev.eventId}`}>
              <td>{time(ev.ts)}</td>
              <td>
                <code class="small">{ev.traceId}</code>
              </td>
              <td>{ev.requests}</td>
              <td>{ev.inputTokens}</td>
              <td>{ev.outputTokens}</td>
              <td>{ev.computeMs}</td>
              <td>{ev.errors}</td>
              <td />
            </tr>
          ))}
        </ListTable>
      )}
    </div>
  );
}
