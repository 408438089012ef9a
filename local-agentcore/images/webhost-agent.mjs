// The container image `webhost-agent` as the local AgentCore runs it: the platform's agent template
// (worker-template/index.js, an invoke/v1 agent that streams and reports signed telemetry) served by Node on the
// AgentCore HTTP contract — `POST /invocations` and `GET /ping` on $PORT (8080 in a real container). Its settings
// are the runtime version's environment variables, as a container's are. IMAGE_TAG (the image's tag) is added to
// every answer's text, so versions of one runtime can be told apart. A last message `fail:<status>` makes it
// answer that HTTP status with an error of its own (an agent failing, for tests of how its failure comes back).
import http from "node:http";
import { Readable } from "node:stream";
import template from "../../worker-template/index.js";

const env = { ...process.env, INVOKE_PATH: "/invocations" };
const tag = process.env.IMAGE_TAG || "latest";
const pending = new Set();
const ctx = { waitUntil: (p) => { pending.add(p); p.finally(() => pending.delete(p)); } };

const server = http.createServer(async (req, res) => {
  if (req.method === "GET" && req.url === "/ping") {
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify({ status: pending.size ? "HealthyBusy" : "Healthy", time_of_last_update: Math.floor(Date.now() / 1000) }));
    return;
  }
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  let body = Buffer.concat(chunks);
  if (req.url === "/invocations") {
    let last = "";
    try {
      last = JSON.parse(body)?.input?.messages?.at(-1)?.content ?? "";
    } catch {}
    const failing = /^fail:(\d{3})$/.exec(typeof last === "string" ? last : "");
    if (failing) {
      res.writeHead(Number(failing[1]), { "content-type": "application/json" });
      res.end(JSON.stringify({ error: { code: "agent_failed", message: `failing with ${failing[1]} on request` } }));
      return;
    }
  }
  // The image's tag, so a test can tell which version answered.
  if (req.url === "/invocations" && tag !== "latest") {
    try {
      const parsed = JSON.parse(body);
      const last = parsed?.input?.messages?.at(-1);
      if (last && typeof last.content === "string") last.content = `[${tag}] ${last.content}`;
      body = Buffer.from(JSON.stringify(parsed));
    } catch {}
  }
  const headers = new Headers();
  for (const [name, value] of Object.entries(req.headers)) if (typeof value === "string") headers.set(name, value);
  // The platform's trace id arrives in an allowlisted custom header; the template reads X-Trace-Id.
  const trace = req.headers["x-amzn-bedrock-agentcore-runtime-custom-trace-id"];
  if (trace) headers.set("X-Trace-Id", trace);
  const answer = await template.fetch(new Request(`http://agent${req.url}`, { method: req.method, headers, body: req.method === "GET" ? undefined : body }), env, ctx);
  res.writeHead(answer.status, Object.fromEntries(answer.headers));
  if (answer.body) Readable.fromWeb(answer.body).pipe(res);
  else res.end();
});
server.listen(Number(process.env.PORT || 8080), "127.0.0.1", () => process.send?.({ listening: server.address().port }));
