// `make smoke-cloudflare`: one real deploy through the control plane's own Cloudflare client, against a real
// account. The control plane runs here (workerd, with its D1 and Durable Objects); agents go to Cloudflare.
// Skipped unless CLOUDFLARE_API_TOKEN and CLOUDFLARE_ACCOUNT_ID are set. Not part of `make test`.
//
//   workers_dev (default)   deploy the template, invoke it through the local gateway (JSON and a stream), deploy
//                           a second version, roll back to the first and invoke it again, delete the agent and
//                           check its scripts are gone.
//   dispatch_namespace      (SMOKE_TARGET=dispatch_namespace, with DISPATCH_NAMESPACE) the same deploys, rollback
//                           and clean-up; invocations need the namespace binding, which exists only on Cloudflare,
//                           so each version is checked through the API instead.
//
// CLOUDFLARE_API_BASE_URL (default Cloudflare's) and WORKERS_DEV_URL_TEMPLATE (default from the account's
// workers.dev subdomain) may point it elsewhere: the test suite runs it against the local Cloudflare.
import { randomBytes } from "node:crypto";
import { deployVars, startControlPlane } from "../tests/support/harness.mjs";

const env = process.env;
const token = env.CLOUDFLARE_API_TOKEN;
const account = env.CLOUDFLARE_ACCOUNT_ID;
const target = env.SMOKE_TARGET || "workers_dev";
const apiBase = (env.CLOUDFLARE_API_BASE_URL || "https://api.cloudflare.com/client/v4").replace(/\/$/, "");

if (!token || !account || (target === "dispatch_namespace" && !env.DISPATCH_NAMESPACE)) {
  console.log(
    "smoke-cloudflare: skipped. Set CLOUDFLARE_API_TOKEN and CLOUDFLARE_ACCOUNT_ID (a token with Workers Scripts: Edit)" +
      " to deploy to that account; SMOKE_TARGET=dispatch_namespace with DISPATCH_NAMESPACE for a namespace.",
  );
  process.exit(0);
}

const say = (line) => console.log(`smoke-cloudflare: ${line}`);
const fail = (line) => {
  throw new Error(line);
};

async function api(method, path) {
  const res = await fetch(`${apiBase}${path}`, { method, headers: { Authorization: `Bearer ${token}` } });
  const body = await res.json().catch(() => null);
  return { status: res.status, body };
}

async function urlTemplate() {
  if (env.WORKERS_DEV_URL_TEMPLATE) return env.WORKERS_DEV_URL_TEMPLATE;
  const res = await api("GET", `/accounts/${account}/workers/subdomain`);
  const subdomain = res.body?.result?.subdomain;
  if (!subdomain) fail(`the account has no workers.dev subdomain (HTTP ${res.status}); register one in the dashboard`);
  return `https://{script}.${subdomain}.workers.dev`;
}

const vars = {
  ...deployVars({ origin: "", apiBase, apiToken: token, accountId: account, namespace: env.DISPATCH_NAMESPACE || "" }, target),
  WORKERS_DEV_URL_TEMPLATE: target === "workers_dev" ? await urlTemplate() : undefined,
  DISPATCH_NAMESPACE: target === "dispatch_namespace" ? env.DISPATCH_NAMESPACE : undefined,
  TELEMETRY_SECRETS_ENCRYPTION_KEY: randomBytes(32).toString("base64"),
};
const app = await startControlPlane({ vars });
const scriptsOf = async (names) => {
  const found = [];
  for (const name of names) {
    const path =
      target === "dispatch_namespace"
        ? `/accounts/${account}/workers/dispatch/namespaces/${env.DISPATCH_NAMESPACE}/scripts/${name}`
        : `/accounts/${account}/workers/scripts/${name}`;
    if ((await api("GET", path)).status === 200) found.push(name);
  }
  return found;
};
let agentId = null;
let userToken = null;
try {
  userToken = await app.token(`smoke-${Date.now()}`);
  const agent = await app.createAgent(userToken, { name: `smoke-${randomBytes(3).toString("hex")}` });
  if (agent.status !== 201) fail(`create agent: ${agent.text}`);
  agentId = agent.body.id;
  say(`agent ${agentId} created; deploying the template to ${target} at ${apiBase}`);

  const deploy = async (label) => {
    const started = Date.now();
    const accepted = await app.deploy(userToken, agentId, { env: { SMOKE_VERSION: label } });
    if (accepted.status !== 202) fail(`deploy ${label}: ${accepted.text}`);
    const done = await app.settled(userToken, agentId, accepted.body.id, 120_000);
    if (done.status !== "active") fail(`deploy ${label} ended ${done.status}: ${JSON.stringify(done.error)}`);
    say(`deployment ${done.id} (${label}) active in ${Date.now() - started} ms as ${done.scriptName} (retries: ${done.retries})`);
    return done;
  };
  const check = async (deployment, label) => {
    if (target === "dispatch_namespace") {
      if ((await scriptsOf([deployment.scriptName])).length !== 1) fail(`${deployment.scriptName} is not in the namespace`);
      return say(`${label}: ${deployment.scriptName} is in the namespace (invocations need the binding on Cloudflare)`);
    }
    const body = { protocol: "invoke/v1", input: { messages: [{ role: "user", content: `hello ${label}` }] } };
    const res = await app.invoke(userToken, agentId, body);
    if (res.status !== 200 || res.headers.get("X-Deployment-Id") !== deployment.id) fail(`invoke (${label}): ${res.status} ${res.text}`);
    const streamed = await app.invokeStream(userToken, agentId, body);
    const events = streamed.events.map((e) => e.event);
    if (events.at(-1) !== "done") fail(`stream (${label}) ended ${events.join(",")}`);
    const direct = await fetch(deployment.providerRef);
    if (direct.status !== 401) fail(`the agent's own URL answered a direct call with ${direct.status}`);
    say(`${label}: JSON "${res.body.output.text}", a stream of ${events.length} events, and its own URL refuses direct calls`);
  };

  const first = await deploy("v1");
  await check(first, "v1");
  const second = await deploy("v2");
  await check(second, "v2");
  const back = await app.request("POST", `/v1/agents/${agentId}/deployments/${first.id}/activate`, { token: userToken });
  if (back.status !== 200) fail(`rollback: ${back.text}`);
  say(`rolled back to ${first.id}`);
  await check(first, "v1 again");

  const deleted = await app.deleteAgent(userToken, agentId);
  if (deleted.status !== 204) fail(`delete agent: ${deleted.text}`);
  agentId = null;
  await new Promise((r) => setTimeout(r, 1_000));
  await app.runScheduled();
  const left = await scriptsOf([first.scriptName, second.scriptName]);
  if (left.length) fail(`scripts left behind after deleting the agent: ${left.join(", ")}`);
  say("agent deleted; its scripts are gone. Done.");
} finally {
  if (agentId && userToken) {
    await app.deleteAgent(userToken, agentId).catch(() => {});
    await app.runScheduled().catch(() => {});
  }
  await app.close();
}
