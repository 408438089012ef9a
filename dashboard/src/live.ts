// The live feed (GET /v1/events) as the pages use it: one connection per tab, read with fetch streaming (the
// bearer token cannot go on an EventSource), reconnecting with Last-Event-ID after a drop so nothing recent is
// missed. Pages subscribe to the kinds they show; `resync` (and every reconnect) tells them to read again.
import { createParser } from "eventsource-parser";
import { useEffect, useState } from "preact/hooks";
import { getToken } from "./auth";

export type LiveKind = "agent" | "agent_deleted" | "deployment" | "usage" | "plan";
export interface LiveEvent {
  kind: LiveKind | "resync";
  data: Record<string, unknown>;
}
type Listener = (event: LiveEvent) => void;

const MAX_BACKOFF_MS = 30_000;
// A stream that ends this soon after it began is treated as a failure (no reconnect loop without a pause).
const MIN_HEALTHY_STREAM_MS = 2_000;
const listeners = new Set<Listener>();
const statusListeners = new Set<(connected: boolean) => void>();
let lastEventId: string | null = null;
let connected = false;
// Pages read everything again on the next `ready`: at the start (events before the first connection) and after
// a drop (usage events are live only, and the feed may have moved past what it keeps).
let needsResync = true;
let started = false;
let stopped = false;
let controller: AbortController | null = null;

function setConnected(value: boolean) {
  connected = value;
  statusListeners.forEach((fn) => fn(value));
}

function emit(event: LiveEvent) {
  listeners.forEach((fn) => fn(event));
}

async function connectOnce(): Promise<void> {
  const token = await getToken();
  if (!token) throw new Error("signed out");
  controller = new AbortController();
  const headers: Record<string, string> = { Authorization: `Bearer ${token}` };
  if (lastEventId) headers["Last-Event-ID"] = lastEventId;
  const res = await fetch("/v1/events", { headers, signal: controller.signal });
  if (!res.ok || !res.body) throw new Error(`the live feed answered ${res.status}`);
  const parser = createParser({
    onEvent(message) {
      if (message.id) lastEventId = message.id;
      if (message.event === "ready") {
        setConnected(true);
        if (needsResync) {
          needsResync = false;
          emit({ kind: "resync", data: {} });
        }
        return;
      }
      const payload = message.data ? JSON.parse(message.data) : {};
      emit({ kind: message.event as LiveKind | "resync", data: payload.data ?? payload });
    },
  });
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return;
    parser.feed(value);
  }
}

/** Starts the feed for the signed-in person (once per tab) and keeps it connected until `stopLive`. */
export function startLive(): void {
  if (started) return;
  started = true;
  stopped = false;
  void (async () => {
    let backoff = 1_000;
    while (!stopped) {
      try {
        // Ends cleanly when the server closes the stream (its token expired): reconnect at once with a fresh
        // token, from the last event seen.
        const began = Date.now();
        await connectOnce();
        if (Date.now() - began >= MIN_HEALTHY_STREAM_MS) {
          backoff = 1_000;
          continue;
        }
      } catch {
        // Dropped, refused or signed out: try again after a pause, and read everything again once back.
      }
      if (stopped) break;
      needsResync = true;
      setConnected(false);
      await new Promise((r) => setTimeout(r, backoff));
      backoff = Math.min(MAX_BACKOFF_MS, backoff * 2);
    }
  })();
}

export function stopLive(): void {
  stopped = true;
  started = false;
  lastEventId = null;
  needsResync = true;
  controller?.abort();
  setConnected(false);
}

/** Calls `fn` for each event of `kinds` (and for `resync`) while the component is mounted. */
export function useLive(kinds: LiveKind[], fn: (event: LiveEvent) => void, deps: unknown[] = []): void {
  useEffect(() => {
    const listener: Listener = (event) => {
      if (event.kind === "resync" || kinds.includes(event.kind)) fn(event);
    };
    listeners.add(listener);
    return () => void listeners.delete(listener);
  }, deps);
}

/** Whether the live feed is connected now. */
export function useLiveStatus(): boolean {
  const [value, setValue] = useState(connected);
  useEffect(() => {
    statusListeners.add(setValue);
    setValue(connected);
    return () => void statusListeners.delete(setValue);
  }, []);
  return value;
}
