// The playground: talk to an agent through the gateway as a person's app would, as JSON or as a stream (deltas
// shown as they arrive, Stop cancels the request), continuing one session; shows the trace id, the usage and the
// rate-limit headers of each answer.
import { createParser } from "eventsource-parser";
import { useRef, useState } from "preact/hooks";
import { ApiError, send } from "../api";
import { Link } from "../router";
import { ErrorBox } from "../ui";

interface Turn {
  role: "user" | "assistant";
  content: string;
}
interface Facts {
  traceId: string | null;
  deploymentId: string | null;
  usage: { inputTokens: number; outputTokens: number } | null;
  limit: string | null;
  remaining: string | null;
  reset: string | null;
  stopped?: boolean;
}

export function PlaygroundPage({ agentId }: { agentId: string }) {
  const [turns, setTurns] = useState<Turn[]>([]);
  const [input, setInput] = useState("");
  const [stream, setStream] = useState(true);
  const [metadata, setMetadata] = useState("");
  const [sessionId, setSessionId] = useState<string | null>(null);
  const [facts, setFacts] = useState<Facts | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [running, setRunning] = useState(false);
  const abort = useRef<AbortController | null>(null);

  const headerFacts = (res: Response): Facts => ({
    traceId: res.headers.get("X-Trace-Id"),
    deploymentId: res.headers.get("X-Deployment-Id"),
    usage: null,
    limit: res.headers.get("X-RateLimit-Limit"),
    remaining: res.headers.get("X-RateLimit-Remaining"),
    reset: res.headers.get("X-RateLimit-Reset"),
  });

  async function submit(event: Event) {
    event.preventDefault();
    const text = input.trim();
    if (!text || running) return;
    let extra: Record<string, unknown> = {};
    if (metadata.trim()) {
      try {
        extra = { metadata: JSON.parse(metadata) };
      } catch {
        setError(new Error("Metadata must be a JSON object, for example {\"delayMs\": 100}."));
        return;
      }
    }
    const history: Turn[] = [...turns, { role: "user", content: text }];
    setTurns([...history, { role: "assistant", content: "" }]);
    setInput("");
    setError(null);
    setRunning(true);
    const controller = new AbortController();
    abort.current = controller;
    const body = { protocol: "invoke/v1", input: { messages: history }, ...(sessionId ? { sessionId } : {}), ...extra };
    const append = (delta: string) =>
      setTurns((shown) => {
        const last = shown[shown.length - 1];
        return [...shown.slice(0, -1), { ...last, content: last.content + delta }];
      });
    try {
      const res = await send("POST", `/v1/invoke/${agentId}${stream ? "/stream" : ""}`, body, { signal: controller.signal });
      const seen = headerFacts(res);
      setFacts(seen);
      if (!stream) {
        const answer = await res.json();
        append(typeof answer.output?.text === "string" ? answer.output.text : JSON.stringify(answer.output));
        setSessionId(answer.sessionId);
        setFacts({ ...seen, traceId: answer.traceId ?? seen.traceId, usage: answer.usage ?? null });
        return;
      }
      let failure: ApiError | null = null;
      const parser = createParser({
        onEvent(message) {
          const data = message.data ? JSON.parse(message.data) : {};
          if (message.event === "meta") {
            setSessionId(data.sessionId);
            setFacts((f) => ({ ...(f ?? seen), traceId: data.traceId ?? f?.traceId ?? null }));
          } else if (message.event === "delta") append(data.text ?? "");
          else if (message.event === "usage") setFacts((f) => ({ ...(f ?? seen), usage: data }));
          else if (message.event === "error") failure = new ApiError(200, data.code, data.message, Boolean(data.retryable), res.headers.get("X-Request-Id"), data.details ?? null);
        },
      });
      const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        parser.feed(value);
      }
      if (failure) setError(failure);
    } catch (e) {
      if ((e as Error).name === "AbortError") setFacts((f) => (f ? { ...f, stopped: true } : f));
      else setError(e);
    } finally {
      setRunning(false);
      abort.current = null;
    }
  }

  return (
    <section aria-labelledby="playground-title">
      <header class="page-header">
        <p class="crumbs">
          <Link href="/">Agents</Link> / <Link href={`/agents/${agentId}`}>Agent</Link> /
        </p>
        <h1 id="playground-title">Playground</h1>
        <p class="muted">Calls go through the gateway like any client's: they count against your plan.</p>
      </header>
      <div class="card conversation" aria-live="polite" data-testid="conversation">
        {turns.length === 0 && <p class="empty">Say something to the agent.</p>}
        {turns.map((turn, i) => (
          <div key={i} class={`turn turn-${turn.role}`} data-role={turn.role}>
            <span class="who">{turn.role === "user" ? "You" : "Agent"}</span>
            <div class="text">{turn.content || (running && i === turns.length - 1 ? "…" : "")}</div>
          </div>
        ))}
      </div>
      <form class="card composer" onSubmit={submit} aria-label="Message the agent">
        <label for="message">Message</label>
        <textarea id="message" rows={3} value={input} onInput={(e) => setInput(e.currentTarget.value)} onKeyDown={(e) => e.key === "Enter" && (e.metaKey || e.ctrlKey) && submit(e)} />
        <details>
          <summary>Metadata</summary>
          <label>
            <span>
              Passed to the agent unchanged (a JSON object; the template agent waits <code>delayMs</code> between streamed words)
            </span>
            <textarea name="metadata" rows={2} value={metadata} onInput={(e) => setMetadata(e.currentTarget.value)} placeholder='{"delayMs": 100}' />
          </label>
        </details>
        <div class="composer-actions">
          <label class="check">
            <input type="checkbox" checked={stream} onChange={(e) => setStream(e.currentTarget.checked)} /> Stream the answer
          </label>
          {sessionId && (
            <button type="button" class="secondary" onClick={() => (setSessionId(null), setTurns([]), setFacts(null))}>
              New session
            </button>
          )}
          {running ? (
            <button type="button" class="danger" onClick={() => abort.current?.abort()}>
              Stop
            </button>
          ) : (
            <button type="submit" disabled={!input.trim()}>
              Send
            </button>
          )}
        </div>
      </form>
      <ErrorBox error={error} />
      {facts && (
        <dl class="card facts" data-testid="call-facts">
          <dt>Trace id</dt>
          <dd>
            <code data-testid="trace-id">{facts.traceId ?? "—"}</code>
          </dd>
          <dt>Session</dt>
          <dd>
            <code>{sessionId ?? "—"}</code>
          </dd>
          <dt>Deployment</dt>
          <dd>
            <code>{facts.deploymentId ?? "—"}</code>
          </dd>
          <dt>Usage</dt>
          <dd data-testid="usage">{facts.usage ? `${facts.usage.inputTokens} in, ${facts.usage.outputTokens} out` : "not reported"}</dd>
          <dt>Requests left</dt>
          <dd data-testid="rate-limit">
            {facts.remaining ?? "—"} of {facts.limit ?? "—"}
            {facts.reset && `, resets ${new Date(Number(facts.reset) * 1000).toLocaleString()}`}
          </dd>
          {facts.stopped && (
            <>
              <dt>Stopped</dt>
              <dd>you stopped this answer; the agent's request was cancelled</dd>
            </>
          )}
        </dl>
      )}
    </section>
  );
}
