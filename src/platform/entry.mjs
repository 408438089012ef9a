// The worker's entry module: the Rust worker as built by worker-build, with one addition. A Rust panic aborts
// the Wasm instance; workers-rs schedules the instance's reinitialisation, but the request's promise never
// settles and workerd would eventually cancel it as hung. The abort surfaces as a global `error` event carrying
// a WebAssembly.RuntimeError: on that signal every request in flight in this isolate (all of them died with the
// instance) is answered with the API's error envelope, keeping a well-formed request id.
import RustWorker from "../../build/index.js";

export * from "../../build/index.js";

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;
const inFlight = new Set();

addEventListener("error", (event) => {
  if (!(event.error instanceof WebAssembly.RuntimeError)) return;
  for (const abort of inFlight) abort(event.error);
  inFlight.clear();
});

function requestIdFor(request) {
  const incoming = request.headers.get("X-Request-Id");
  if (incoming && REQUEST_ID.test(incoming)) return incoming;
  const bytes = crypto.getRandomValues(new Uint8Array(12));
  return "req_" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function crashResponse(request, error) {
  const requestId = requestIdFor(request);
  console.error(`request ${requestId} crashed:`, error);
  const body = {
    error: {
      code: "internal_error",
      message: "An internal error occurred. Retry later; quote the request id if it persists.",
      retryable: true,
      requestId,
    },
  };
  return new Response(JSON.stringify(body), {
    status: 500,
    headers: {
      "Content-Type": "application/json; charset=utf-8",
      "X-Request-Id": requestId,
      "Cache-Control": "no-store",
    },
  });
}

export default class ControlPlane extends RustWorker {
  async fetch(request) {
    let abort;
    const aborted = new Promise((_, reject) => (abort = reject));
    inFlight.add(abort);
    try {
      return await Promise.race([super.fetch(request), aborted]);
    } catch (error) {
      return crashResponse(request, error);
    } finally {
      inFlight.delete(abort);
    }
  }
}
