// The worker's entry module: the Rust worker as built by worker-build, with one addition. A Rust panic aborts
// the Wasm instance and surfaces here as a thrown error; workers-rs schedules the instance's reinitialisation,
// but the request itself would end in workerd's bare 500. This wrapper answers it with the API's error envelope
// instead, keeping a well-formed request id, and logs the cause for the operator.
import RustWorker from "../../build/index.js";

export * from "../../build/index.js";

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

function requestIdFor(request) {
  const incoming = request.headers.get("X-Request-Id");
  if (incoming && REQUEST_ID.test(incoming)) return incoming;
  const bytes = crypto.getRandomValues(new Uint8Array(12));
  return "req_" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

export default class ControlPlane extends RustWorker {
  async fetch(request) {
    try {
      return await super.fetch(request);
    } catch (error) {
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
  }
}
