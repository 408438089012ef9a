// The Cloudflare API's wire shapes as the local Cloudflare speaks them: the v4 envelope, multipart script uploads
// and the module content types a script upload may carry.

// Content types the Workers API accepts for module parts, and how workerd loads them.
export const MODULE_TYPES = {
  "application/javascript+module": "ESModule",
  "text/javascript+module": "ESModule",
  "application/javascript": "CommonJS",
  "text/javascript": "CommonJS",
  "application/wasm": "CompiledWasm",
  "text/plain": "Text",
  "application/octet-stream": "Data",
  "application/json": "Text",
};

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
