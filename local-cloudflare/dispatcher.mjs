// An emulated Workers for Platforms dispatch namespace binding, for local runs (wrangler and Miniflare cannot
// run a real one). Configure it as a wrapped binding whose inner bindings are LOCAL_CLOUDFLARE_ORIGIN and
// NAMESPACE; `get(name)` then returns a fetcher that reaches the script `name` in that namespace on the local
// Cloudflare. workers-rs recognises the binding by its class name, so it must stay `DynamicDispatcher`.
class DynamicDispatcher {
  constructor(env) {
    this.origin = env.LOCAL_CLOUDFLARE_ORIGIN;
    this.namespace = env.NAMESPACE;
  }

  // `args` and `options` (e.g. {limits: {cpuMs, subRequests}}) are accepted like the real binding's; the local
  // stack does not enforce limits.
  get(name, _args, _options) {
    const base = `${this.origin}/__dispatch/${encodeURIComponent(this.namespace)}/${encodeURIComponent(name)}`;
    return {
      fetch: (input, init) => {
        const request = new Request(input, init);
        const url = new URL(request.url);
        return fetch(new Request(base + url.pathname + url.search, request));
      },
    };
  }
}

export default function makeDispatcher(env) {
  return new DynamicDispatcher(env);
}
