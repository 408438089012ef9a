// The second runtime end to end: the control plane in workerd deploys container images to the local AgentCore
// (every call signed with the control plane's own SigV4, checked there by an independent implementation), each
// deployment a runtime version with its own endpoint, and the gateway invokes them — JSON and streamed, with the
// runtime session id in AgentCore's header — while the tier gate keeps free users away from it by every route.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { expectError } from "./support/harness.mjs";
import { IMAGE, ROLE, invokeBody, startAgentCoreStack } from "./support/agentcore_stack.mjs";

let stack, app, agentcore, ADMIN;
before(async () => {
  stack = await startAgentCoreStack();
  ({ app, agentcore, admin: ADMIN } = stack);
});
after(async () => {
  await stack?.close();
});

const user = (subject, tier) => stack.user(subject, tier);
const deployImage = (token, agentId, json) => stack.deployImage(token, agentId, json);
const invocations = () => stack.invocations();

test("an agentcore deploy is a runtime version with its own endpoint, and the gateway invokes it: JSON, a stream, one session", { timeout: 90_000 }, async () => {
  const pro = await user("agentcore_pro", "pro");
  const agent = (await app.createAgent(pro.token, { name: "container-agent" })).body;
  assert.equal((await app.putSecret(pro.token, agent.id, "API_KEY", "agentcore-secret")).status, 200);
  const done = await deployImage(pro.token, agent.id, { containerUri: IMAGE("v1"), env: { GREETING: "hi" } });
  assert.equal(done.status, "active", JSON.stringify(done.error));
  assert.equal(done.runtimeProvider, "agentcore");
  assert.equal(done.deployTarget, "agentcore");
  assert.equal(done.containerUri, IMAGE("v1"));
  // The platform's role when the deploy names none; the platform's AWS account id is not shown to owners.
  const shown = (arn) => arn.replaceAll(agentcore.accountId, "{account}");
  assert.equal(done.executionRoleArn, shown(ROLE));
  const runtime = agentcore.runtimes().find((r) => r.name === `webhost_${agent.id.slice(4)}`);
  assert.ok(runtime, JSON.stringify(agentcore.runtimes()));
  assert.equal(done.providerRef, `${shown(runtime.arn)}?version=1&qualifier=${done.id}`);
  for (const listed of (await app.listDeployments(pro.token, agent.id)).body.deployments) {
    assert.ok(![listed.providerRef, listed.executionRoleArn].join().includes(agentcore.accountId), JSON.stringify(listed));
  }
  assert.deepEqual(runtime.endpoints.find((e) => e.name === done.id), { name: done.id, status: "READY", liveVersion: "1", targetVersion: "1" });
  // The operator's lifecycle setting (AGENTCORE_IDLE_SESSION_TIMEOUT_SECONDS), AgentCore's default for the rest.
  assert.deepEqual(runtime.versions[0].lifecycle, { idleRuntimeSessionTimeout: 600, maxLifetime: 28800 });
  // The version's environment: the platform's settings, the agent's variables and secrets (values never shown).
  const names = runtime.versions[0].environmentVariables;
  for (const name of ["API_KEY", "GREETING", "TELEMETRY_SECRET", "TELEMETRY_REPORT_URL", "DEPLOYMENT_ID", "AGENT_ID", "USER_ID", "RUNTIME_PROVIDER"]) {
    assert.ok(names.includes(name), `${name} in ${names}`);
  }
  assert.ok(!JSON.stringify(done).includes("agentcore-secret"));

  const first = await app.invoke(pro.token, agent.id, invokeBody("hello container"));
  assert.equal(first.status, 200, first.text);
  assert.equal(first.body.output.text, "[v1] hello container");
  const session = invocations().at(-1).sessionId;
  assert.match(session, /^rts_[0-9a-f]{48}$/, "the SessionMap's internal id, in AgentCore's header");
  assert.ok(session.length >= 33 && session.length <= 256);
  const again = await app.invoke(pro.token, agent.id, { ...invokeBody("same session?"), sessionId: first.body.sessionId });
  assert.equal(again.status, 200, again.text);
  assert.equal(invocations().at(-1).sessionId, session, "one platform session, one runtime session");

  const stream = await app.request("POST", `/v1/invoke/${agent.id}/stream`, { token: pro.token, json: invokeBody("one two three") });
  assert.equal(stream.status, 200, stream.text);
  assert.match(stream.headers.get("content-type"), /text\/event-stream/);
  assert.match(stream.text, /event: delta/);
  assert.match(stream.text, /event: done/);

  // The agent reports signed telemetry like a Cloudflare agent; it is charged under the call's trace id.
  const rows = await app.until("telemetry from the AgentCore agent", async () => {
    const found = (await app.db.prepare("SELECT runtime_provider, trace_id FROM metrics_events WHERE deployment_id = ?1").bind(done.id).all()).results;
    return found.length >= 3 ? found : null;
  });
  assert.ok(rows.every((r) => r.runtime_provider === "agentcore"));
  assert.ok(rows.some((r) => r.trace_id === first.body.traceId), `${first.body.traceId} in ${rows.map((r) => r.trace_id)}`);
  // The role as shown names the same role when sent back.
  const redeployed = await app.deploy(pro.token, agent.id, { runtimeProvider: "agentcore", containerUri: IMAGE("v1"), executionRoleArn: done.executionRoleArn });
  assert.equal(redeployed.status, 202, redeployed.text);
  assert.equal(redeployed.body.executionRoleArn, shown(ROLE));
  assert.equal((await app.settled(pro.token, agent.id, redeployed.body.id)).status, "active");
});

test("deploys are immutable versions: a new image is version 2, rollback serves version 1 again, a failing version changes nothing", { timeout: 90_000 }, async () => {
  const pro = await user("agentcore_versions", "pro");
  const agent = (await app.createAgent(pro.token, { name: "versioned-container" })).body;
  const v1 = await deployImage(pro.token, agent.id, { containerUri: IMAGE("v1") });
  const v2 = await deployImage(pro.token, agent.id, { containerUri: IMAGE("v2") });
  assert.equal(v2.status, "active", JSON.stringify(v2.error));
  assert.match(v2.providerRef, /\?version=2&qualifier=/);
  const text = async () => (await app.invoke(pro.token, agent.id, invokeBody("which?"))).body.output.text;
  assert.equal(await text(), "[v2] which?");
  assert.equal((await app.activate(pro.token, agent.id, v1.id)).status, 200);
  assert.equal(await text(), "[v1] which?", "rollback: the gateway calls version 1's endpoint");
  assert.equal((await app.activate(pro.token, agent.id, v2.id)).status, 200);
  assert.equal(await text(), "[v2] which?");

  // A version AgentCore cannot start fails with its reason; the pointer stays.
  agentcore.failNextVersions("Container exited with code 1");
  const broken = await deployImage(pro.token, agent.id, { containerUri: IMAGE("v3") });
  assert.equal(broken.status, "failed");
  assert.equal(broken.error.step, "ready");
  assert.match(broken.error.message, /Container exited with code 1/);
  assert.equal((await app.getAgent(pro.token, agent.id)).body.activeDeploymentId, v2.id);
  assert.equal(await text(), "[v2] which?");
  // AgentCore refusing the update: the step, the endpoint and AgentCore's own error.
  agentcore.injectFault({ operation: "UpdateAgentRuntime", status: 400, type: "ValidationException", message: "injected refusal" });
  const refused = await deployImage(pro.token, agent.id, { containerUri: IMAGE("v4") });
  assert.equal(refused.status, "failed");
  assert.equal(refused.error.step, "runtime");
  assert.match(refused.error.endpoint, /^PUT \/runtimes\/webhost_[0-9a-f]{24}-[A-Za-z0-9]{10}\/$/);
  assert.equal(refused.error.message, "ValidationException: injected refusal");
  // Throttling is waited out.
  agentcore.injectFault({ operation: "GetAgentRuntime", status: 429, type: "ThrottlingException", message: "Rate exceeded", times: 2 });
  const throttled = await deployImage(pro.token, agent.id, { containerUri: IMAGE("v5") });
  assert.equal(throttled.status, "active", JSON.stringify(throttled.error));
  assert.ok(throttled.retries >= 2);
});

test("AgentCore refusing a call (throttled, denied) is not the agent's answer: the request is given back, AWS's words stay inside", { timeout: 60_000 }, async () => {
  const pro = await user("agentcore_refusals", "pro");
  const agent = (await app.createAgent(pro.token, { name: "refused-container" })).body;
  assert.equal((await deployImage(pro.token, agent.id, { containerUri: IMAGE("v1") })).status, "active");
  const remaining = (res) => Number(res.headers.get("X-RateLimit-Remaining"));
  const before = await app.invoke(pro.token, agent.id, invokeBody("warm"));
  assert.equal(before.status, 200, before.text);
  for (const [status, type] of [[429, "ThrottlingException"], [403, "AccessDeniedException"]]) {
    agentcore.injectFault({ operation: "InvokeAgentRuntime", status, type, message: `arn:aws:iam::${agentcore.accountId}:user/platform is not allowed` });
    const res = await app.invoke(pro.token, agent.id, invokeBody("refused"));
    const err = expectError(assert, res, 502, "upstream_unreachable");
    assert.equal(err.retryable, true);
    assert.ok(!res.text.includes(agentcore.accountId) && !res.text.includes(type), res.text);
    assert.equal(remaining(res), remaining(before), `${type}: given back`);
  }
  // AgentCore's own 5xx may come after the container started: unreachable, but it counts (as a broken connection).
  agentcore.injectFault({ operation: "InvokeAgentRuntime", status: 503, type: "ServiceUnavailableException", message: "try later" });
  const unavailable = await app.invoke(pro.token, agent.id, invokeBody("maybe ran"));
  expectError(assert, unavailable, 502, "upstream_unreachable");
  assert.equal(remaining(unavailable), remaining(before) - 1, "counted");
  const after = await app.invoke(pro.token, agent.id, invokeBody("again"));
  assert.equal(after.status, 200);
  assert.equal(remaining(after), remaining(before) - 2, "a call that reached the agent counts");
  // The agent's own failure: AgentCore turns its status into a 424 RuntimeClientError naming it; the caller gets
  // the agent's status back, retryable as on Cloudflare (5xx and 429), and the call counts.
  for (const [status, retryable] of [[503, true], [429, true], [400, false]]) {
    const failed = await app.invoke(pro.token, agent.id, invokeBody(`fail:${status}`));
    const err = expectError(assert, failed, 502, "upstream_error");
    assert.equal(err.details.upstreamStatus, status, failed.text);
    assert.equal(err.retryable, retryable, `${status}`);
    assert.match(err.details.upstreamBody, new RegExp(`Received error \\(${status}\\) from runtime`));
    assert.ok(!failed.text.includes(agentcore.accountId), failed.text);
  }
  const last = await app.invoke(pro.token, agent.id, invokeBody("counted"));
  assert.equal(remaining(last), remaining(before) - 6, "the agent's failures count");
});

test("bad agentcore deploys are refused before anything is created, naming the field", async () => {
  const pro = await user("agentcore_validation", "pro");
  const agent = (await app.createAgent(pro.token, { name: "invalid-container" })).body;
  const before = agentcore.requests().length;
  for (const [json, field] of [
    [{}, "containerUri"],
    [{ containerUri: "docker.io/library/agent:latest" }, "containerUri"],
    [{ containerUri: IMAGE("v1"), executionRoleArn: "admin" }, "executionRoleArn"],
    // An ECR image, but not from a repository the operator runs agents from.
    [{ containerUri: "123456789012.dkr.ecr.us-east-1.amazonaws.com/internal-billing:latest" }, "containerUri"],
    // A real role, but not one the operator lets deployments use.
    [{ containerUri: IMAGE("v1"), executionRoleArn: "arn:aws:iam::123456789012:role/Administrator" }, "executionRoleArn"],
    [{ containerUri: IMAGE("v1"), moduleCode: "export default {}" }, "moduleCode"],
    [{ containerUri: IMAGE("v1"), env: { TELEMETRY_SECRET: "x" } }, "env.TELEMETRY_SECRET"],
  ]) {
    const err = expectError(assert, await app.deploy(pro.token, agent.id, { runtimeProvider: "agentcore", ...json }), 400, "validation_failed");
    assert.equal(err.details.field, field, JSON.stringify(json));
  }
  // AgentCore's fields on a Cloudflare deploy are refused, not ignored.
  const mixed = expectError(assert, await app.deploy(pro.token, agent.id, { containerUri: IMAGE("v1") }), 400, "validation_failed");
  assert.equal(mixed.details.field, "containerUri");
  assert.equal(agentcore.requests().length, before, "AgentCore was never called");
});

test("the tier gate: a free user reaches AgentCore by no route, and a downgraded user's AgentCore agent stops answering", { timeout: 90_000 }, async () => {
  const free = await user("agentcore_free");
  const agent = (await app.createAgent(free.token, { name: "free-container" })).body;
  const before = agentcore.requests().length;
  const refused = expectError(assert, await app.deploy(free.token, agent.id, { runtimeProvider: "agentcore", containerUri: IMAGE("v1") }), 403, "not_entitled");
  assert.equal(refused.details.entitlement, "runtimeProviders");
  assert.equal(agentcore.requests().length, before, "nothing was created");

  const later = await user("agentcore_downgraded", "pro");
  const theirs = (await app.createAgent(later.token, { name: "downgraded-container" })).body;
  assert.equal((await deployImage(later.token, theirs.id, { containerUri: IMAGE("v1") })).status, "active");
  assert.equal((await app.invoke(later.token, theirs.id, invokeBody("still pro"))).status, 200);
  assert.equal((await app.admin("PUT", `/users/${later.id}/tier`, ADMIN, { tier: "free" })).status, 200);
  const calls = invocations().length;
  const gated = expectError(assert, await app.invoke(later.token, theirs.id, invokeBody("now free")), 403, "not_entitled");
  assert.equal(gated.details.entitlement, "runtimeProviders");
  const streamed = await app.request("POST", `/v1/invoke/${theirs.id}/stream`, { token: later.token, json: invokeBody("now free") });
  assert.equal(streamed.status, 403);
  assert.equal(invocations().length, calls, "no call reached AgentCore");
  expectError(assert, await app.deploy(later.token, theirs.id, { runtimeProvider: "agentcore", containerUri: IMAGE("v2") }), 403, "not_entitled");
  // Rolling back to an AgentCore deployment only moves the pointer: calls through it stay refused.
  const only = (await app.listDeployments(later.token, theirs.id)).body.deployments[0];
  assert.equal((await app.activate(later.token, theirs.id, only.id)).status, 200);
  expectError(assert, await app.invoke(later.token, theirs.id, invokeBody("after rollback")), 403, "not_entitled");
  assert.equal(invocations().length, calls, "no call reached AgentCore by any route");
});

test("clean-up: versions beyond the three kept for rollback are deleted from AgentCore, and a deleted agent's runtime goes", { timeout: 120_000 }, async () => {
  const pro = await user("agentcore_cleanup", "pro");
  const agent = (await app.createAgent(pro.token, { name: "cleaned-container" })).body;
  const done = [];
  for (let i = 1; i <= 5; i++) done.push(await deployImage(pro.token, agent.id, { containerUri: IMAGE(`v${i}`) }));
  assert.ok(done.every((d) => d.status === "active"), JSON.stringify(done.map((d) => d.error)));
  await app.runScheduled();
  const runtime = () => agentcore.runtimes().find((r) => r.name === `webhost_${agent.id.slice(4)}`);
  // Active v5 and the 3 newest inactive (v2–v4) stay; v1's endpoint and version go.
  assert.deepEqual(runtime().versions.map((v) => v.number), ["2", "3", "4", "5"]);
  assert.ok(!runtime().endpoints.some((e) => e.name === done[0].id));
  expectError(assert, await app.activate(pro.token, agent.id, done[0].id), 409, "deployment_not_activatable");
  assert.equal((await app.activate(pro.token, agent.id, done[1].id)).status, 200);
  assert.equal((await app.invoke(pro.token, agent.id, invokeBody("kept"))).body.output.text, "[v2] kept");

  assert.equal((await app.deleteAgent(pro.token, agent.id)).status, 204);
  await app.runScheduled();
  await app.until("the runtime's deletion", async () => !runtime());
});

test("one agent moves between providers: Cloudflare, then AgentCore, then rolled back to Cloudflare, each call served where the pointer says", { timeout: 90_000 }, async () => {
  const pro = await user("agentcore_mover", "pro");
  const agent = (await app.createAgent(pro.token, { name: "moving-agent" })).body;
  const worker = await app.deploy(pro.token, agent.id, {});
  assert.equal(worker.status, 202, worker.text);
  const onCloudflare = await app.settled(pro.token, agent.id, worker.body.id);
  assert.equal(onCloudflare.status, "active", JSON.stringify(onCloudflare.error));
  const first = await app.invoke(pro.token, agent.id, invokeBody("on workers"));
  assert.equal(first.body.output.text, "on workers", "the template echoes");
  const calls = invocations().length;

  const onAgentCore = await deployImage(pro.token, agent.id, { containerUri: IMAGE("moved") });
  assert.equal(onAgentCore.status, "active", JSON.stringify(onAgentCore.error));
  assert.equal(onAgentCore.version, 2, "one history across providers");
  assert.equal((await app.invoke(pro.token, agent.id, invokeBody("on agentcore"))).body.output.text, "[moved] on agentcore");
  assert.equal(invocations().length, calls + 1);

  assert.equal((await app.activate(pro.token, agent.id, onCloudflare.id)).status, 200);
  const back = await app.invoke(pro.token, agent.id, invokeBody("back on workers"));
  assert.equal(back.body.output.text, "back on workers");
  assert.equal(invocations().length, calls + 1, "the rolled-back call went to Cloudflare, not AgentCore");
  const listed = (await app.listDeployments(pro.token, agent.id)).body.deployments;
  assert.deepEqual(listed.map((d) => [d.version, d.runtimeProvider, d.status]), [[2, "agentcore", "inactive"], [1, "cloudflare", "active"]]);
});
