// An emulated Workers for Platforms dispatch namespace binding, for local runs (wrangler and Miniflare cannot
// run a real one). Configure it as a wrapped binding whose inner bindings are LOCAL_CLOUDFLARE_ORIGIN and
// NAMESPACE; `get(name)` then returns a fetcher that reaches the script `name` in that namespace on the local
// Cloudflare. workers-rs recognises the binding by its class name, so it must stay `DynamicDispatcher`.
const LIMITS_HEADER = "X-Local-Dispatch-Limits";
const OUTCOME_HEADER = "X-Local-Cloudflare-Outcome";

class DynamicDispatcher {
  constructor(env) {
    this.origin = env.LOCAL_CLOUDFLARE_ORIGIN;
    this.namespace = env.NAMESPACE;
  }

  // `args` and `options` (e.g. {limits: {cpuMs, subRequests}}) are accepted like the real binding's. The local
  // stack does not enforce limits; it records the last ones each script was called with, so tests can check
  // what a real namespace would have been asked to enforce.
  get(name, _args, options) {
    const base = `${this.origin}/__dispatch/${encodeURIComponent(this.namespace)}/${encodeURIComponent(name)}`;
    const limits = options && options.limits ? JSON.stringify(options.limits) : null;
    return {
      // Like a real namespace's fetcher: a name it does not hold, or a script that throws, rejects the call
      // (with Cloudflare's "Worker not found." for the first) instead of answering it.
      fetch: async (input, init) => {
        const request = new Request(input, init);
        const url = new URL(request.url);
        const forwarded = new Request(base + url.pathname + url.search, request);
        if (limits) forwarded.headers.set(LIMITS_HEADER, limits);
        const res = await fetch(forwarded);
        const outcome = res.headers.get(OUTCOME_HEADER);
        if (outcome === "missing") throw new Error("Worker not found.");
        if (outcome === "threw") throw new Error(await res.text());
        return res;
      },
    };
  }
}

export default function makeDispatcher(env) {
  return new DynamicDispatcher(env);
}
