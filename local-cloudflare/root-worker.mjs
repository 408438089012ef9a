// The one worker the local Cloudflare's workerd is started with. It runs every uploaded script through a
// Worker Loader, one isolate per script version, so a deploy never reconfigures (and never restarts) the
// workerd that is serving calls: a new version gets a new isolate while the old one finishes what it started.
//
// The server calls it on a direct socket (not through Miniflare's entry worker, which would rewrite headers and
// compress answers), naming the version to run in SCRIPT_HEADER (an id that changes with the code, the bindings
// or the secrets) and the URL the script is to see in URL_HEADER. On a loader cache miss the code is fetched
// from the server's /__local/code endpoint. PROBE_HEADER asks only to start the version (evaluate its modules),
// which is how an upload that fails at startup is refused. A failure to start or an exception from the script
// is answered with FAILURE_HEADER set, so the server can tell it from an answer the script gave.
const SCRIPT_HEADER = "x-local-cloudflare-script";
const URL_HEADER = "x-local-cloudflare-url";
const PROBE_HEADER = "x-local-cloudflare-probe";
const FAILURE_HEADER = "x-local-cloudflare-failure";
const PROBE_MODULE = "__local_cloudflare_probe.js";

function decode(base64) {
  const binary = atob(base64);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes.buffer;
}

// Module types as the server names them (Miniflare's names) → the Worker Loader's module shapes.
const SHAPES = {
  ESModule: (m) => ({ js: m.text }),
  CommonJS: (m) => ({ cjs: m.text }),
  Text: (m) => ({ text: m.text }),
  Data: (m) => ({ data: decode(m.base64) }),
  CompiledWasm: (m) => ({ wasm: decode(m.base64) }),
};

async function load(env, id, probe) {
  const res = await fetch(`${env.CODE_URL}?id=${encodeURIComponent(id)}`, { headers: { Authorization: `Bearer ${env.CODE_TOKEN}` } });
  if (!res.ok) throw new Error(`the code of ${id} is not available (${res.status})`);
  const code = await res.json();
  const modules = Object.fromEntries(code.modules.map((m) => [m.name, SHAPES[m.type](m)]));
  let mainModule = code.mainModule;
  if (probe) {
    // Evaluates the script's modules and has workerd check its named exports, without calling any handler.
    const main = JSON.stringify(code.mainModule);
    modules[PROBE_MODULE] = {
      js: `import * as main from ${main};
export * from ${main};
const d = main.default;
if (d !== undefined && (d === null || (typeof d !== "object" && typeof d !== "function"))) {
  throw new TypeError("Incorrect type for the default export: the provided value is not of type 'function or ExportedHandler'.");
}
export default { fetch() { return new Response(null, { status: 204 }); } };`,
    };
    mainModule = PROBE_MODULE;
  }
  return { compatibilityDate: code.compatibilityDate, compatibilityFlags: code.compatibilityFlags, mainModule, modules, env: code.env };
}

export default {
  async fetch(request, env) {
    const id = request.headers.get(SCRIPT_HEADER);
    if (!id) return new Response("local cloudflare", { status: 404 });
    const probe = request.headers.has(PROBE_HEADER);
    try {
      const worker = env.LOADER.get(probe ? `probe:${id}` : id, () => load(env, id, probe));
      if (probe) {
        const res = await worker.getEntrypoint().fetch("http://probe/");
        await res.body?.cancel();
        return new Response(null, { status: 204 });
      }
      const forwarded = new Request(request.headers.get(URL_HEADER), request);
      forwarded.headers.delete(SCRIPT_HEADER);
      forwarded.headers.delete(URL_HEADER);
      return await worker.getEntrypoint().fetch(forwarded);
    } catch (error) {
      return new Response(String(error?.message ?? error), { status: 500, headers: { [FAILURE_HEADER]: "1" } });
    }
  },
};
