// The Cloudflare API's wire shapes as the local Cloudflare speaks them: the v4 envelope, multipart script uploads
// and the module content types a script upload may carry.

// The module content types the Workers API accepts (wrangler's own list), and how workerd loads each. Any
// other type is refused, as Cloudflare refuses it (a JSON file, for one, must be bundled or sent as text).
export const MODULE_TYPES = {
  "application/javascript+module": "ESModule",
  "text/javascript+module": "ESModule",
  "application/javascript": "CommonJS",
  "text/javascript": "CommonJS",
  "application/wasm": "CompiledWasm",
  "text/plain": "Text",
  "application/octet-stream": "Data",
  // Accepted by Cloudflare and kept with the script, but never loaded as a module.
  "application/source-map": null,
  // Python Workers: accepted by Cloudflare; the local Cloudflare cannot run them and says so.
  "text/x-python": "Python",
  "text/x-python-requirement": "Python",
};

// Cloudflare's limits on a script's environment: 128 variables and secrets, each at most 5 KiB.
export const MAX_ENV_BINDINGS = 128;
export const MAX_ENV_VALUE_BYTES = 5 * 1024;
// Workers for Platforms: at most 8 tags per script, none with `,` or `&` (they would break tag filters).
export const MAX_TAGS = 8;

export const envelope = (result, errors = [], status = 200) => ({ status, body: { success: errors.length === 0, errors, messages: [], result } });
export const failure = (status, code, message) => envelope(null, [{ code, message }], status);

/** Splits a multipart/form-data body into parts {name, filename, contentType, data: Buffer}. */
export function parseMultipart(buffer, contentType) {
  const match = /boundary=(?:"([^"]+)"|([^;]+))/i.exec(contentType || "");
  if (!match) throw new Error("multipart body without a boundary");
  const boundary = Buffer.from(`--${match[1] || match[2]}`);
  const parts = [];
  let start = buffer.indexOf(boundary);
  while (start !== -1) {
    const next = buffer.indexOf(boundary, start + boundary.length);
    if (next === -1) break;
    const chunk = buffer.subarray(start + boundary.length + 2, next - 2); // skip CRLF after boundary, before next
    const headerEnd = chunk.indexOf("\r\n\r\n");
    if (headerEnd !== -1) {
      const headers = chunk.subarray(0, headerEnd).toString("utf8");
      const data = chunk.subarray(headerEnd + 4);
      const name = /name="([^"]*)"/i.exec(headers)?.[1];
      const filename = /filename="([^"]*)"/i.exec(headers)?.[1];
      const type = /content-type:\s*([^\r\n;]+)/i.exec(headers)?.[1]?.trim() || "application/octet-stream";
      parts.push({ name, filename, contentType: type, data });
    }
    start = next;
  }
  return parts;
}

/** Parses a JSON request body; `null` when it is not JSON (the caller answers with Cloudflare's error). */
export function jsonBody(body) {
  try {
    return JSON.parse(body.toString("utf8"));
  } catch {
    return null;
  }
}

export function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => resolve(Buffer.concat(chunks)));
    req.on("error", reject);
  });
}
