// The local AgentCore speaks AgentCore's wire format: the AWS SDK for JavaScript's own clients
// (@aws-sdk/client-bedrock-agentcore-control and -agentcore, independent of this project) create, update and read
// runtimes and endpoints and invoke them, JSON and streaming; bad, expired and unknown signatures are refused as AWS
// refuses them; faults and failing versions surface as AWS's errors and statuses.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import {
  BedrockAgentCoreControlClient, CreateAgentRuntimeCommand, CreateAgentRuntimeEndpointCommand, DeleteAgentRuntimeCommand,
  GetAgentRuntimeCommand, GetAgentRuntimeEndpointCommand, ListAgentRuntimeVersionsCommand, UpdateAgentRuntimeCommand,
} from "@aws-sdk/client-bedrock-agentcore-control";
import { BedrockAgentCoreClient, InvokeAgentRuntimeCommand } from "@aws-sdk/client-bedrock-agentcore";
import { SignatureV4 } from "@smithy/signature-v4";
import { Sha256 } from "@aws-crypto/sha256-js";
import { startLocalAgentCore } from "../local-agentcore/server.mjs";

const REGION = "us-east-1";
const KEY = { accessKeyId: "AKIATESTLOCALAGENTCORE", secretAccessKey: "test-secret-access-key" };
const TEMPORARY = { accessKeyId: "ASIATESTLOCALAGENTCORE", secretAccessKey: "test-temporary-secret", sessionToken: "test-session-token" };
const IMAGE = (tag) => `123456789012.dkr.ecr.us-east-1.amazonaws.com/webhost-agent:${tag}`;
const ROLE = "arn:aws:iam::123456789012:role/AgentCoreRuntime";
let agentcore, control, data;

before(async () => {
  agentcore = await startLocalAgentCore({ credentials: [KEY, TEMPORARY], region: REGION });
  control = new BedrockAgentCoreControlClient({ region: REGION, endpoint: agentcore.controlUrl, credentials: KEY });
  data = new BedrockAgentCoreClient({ region: REGION, endpoint: agentcore.dataUrl, credentials: KEY });
});
after(async () => {
  control?.destroy();
  data?.destroy();
  await agentcore?.close();
});

const invokeBody = (text) => JSON.stringify({ protocol: "invoke/v1", input: { messages: [{ role: "user", content: text }] } });
const SESSION = "webhost-session-0000000000000000000000001";

async function until(read, done, what) {
  for (let i = 0; i < 100; i++) {
    const value = await read();
    if (done(value)) return value;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out waiting for ${what}`);
}

async function createReady(name, tag = "v1", environmentVariables = {}, client = control) {
  const control = client;
  const created = await control.send(new CreateAgentRuntimeCommand({
    agentRuntimeName: name,
    agentRuntimeArtifact: { containerConfiguration: { containerUri: IMAGE(tag) } },
    roleArn: ROLE,
    networkConfiguration: { networkMode: "PUBLIC" },
    environmentVariables,
  }));
  assert.equal(created.$metadata.httpStatusCode, 202);
  assert.equal(created.status, "CREATING");
  assert.equal(created.agentRuntimeVersion, "1");
  assert.match(created.agentRuntimeArn, new RegExp(`^arn:aws:bedrock-agentcore:us-east-1:123456789012:runtime/${name}-[a-zA-Z0-9]{10}$`));
  await until(() => control.send(new GetAgentRuntimeCommand({ agentRuntimeId: created.agentRuntimeId })), (r) => r.status !== "CREATING", "READY");
  return created;
}

test("the AWS SDK creates a runtime, sees it READY, and invokes it: JSON and a stream, with its session id", async () => {
  const created = await createReady("sdk_agent", "v1", { GREETING: "hi" });
  const got = await control.send(new GetAgentRuntimeCommand({ agentRuntimeId: created.agentRuntimeId }));
  assert.equal(got.status, "READY");
  assert.equal(got.agentRuntimeArtifact.containerConfiguration.containerUri, IMAGE("v1"));
  assert.ok(got.createdAt instanceof Date, "timestamps parse as AWS's");

  const answer = await data.send(new InvokeAgentRuntimeCommand({
    agentRuntimeArn: created.agentRuntimeArn, runtimeSessionId: SESSION, contentType: "application/json", accept: "application/json", payload: invokeBody("hello"),
  }));
  assert.equal(answer.runtimeSessionId, SESSION);
  assert.match(answer.contentType, /application\/json/);
  const json = JSON.parse(await answer.response.transformToString());
  assert.equal(json.output.text, "[v1] hello");

  const streamed = await data.send(new InvokeAgentRuntimeCommand({
    agentRuntimeArn: created.agentRuntimeArn, runtimeSessionId: SESSION, contentType: "application/json", accept: "text/event-stream", payload: invokeBody("one two three"),
  }));
  assert.match(streamed.contentType, /text\/event-stream/);
  const events = await streamed.response.transformToString();
  assert.match(events, /event: delta/);
  assert.match(events, /event: done/);
  assert.equal(agentcore.requests().filter((r) => r.operation === "InvokeAgentRuntime").at(-1).sessionId, SESSION);
});

test("an update is a new version; an endpoint pins a version; DEFAULT follows the newest; a failing version says why", async () => {
  const created = await createReady("versioned_agent", "v1");
  const id = created.agentRuntimeId;
  const pinned = await control.send(new CreateAgentRuntimeEndpointCommand({ agentRuntimeId: id, name: "dep_one", agentRuntimeVersion: "1" }));
  assert.equal(pinned.targetVersion, "1");
  await until(() => control.send(new GetAgentRuntimeEndpointCommand({ agentRuntimeId: id, endpointName: "dep_one" })), (e) => e.status === "READY", "endpoint");
  const updated = await control.send(new UpdateAgentRuntimeCommand({
    agentRuntimeId: id, agentRuntimeArtifact: { containerConfiguration: { containerUri: IMAGE("v2") } }, roleArn: ROLE, networkConfiguration: { networkMode: "PUBLIC" },
  }));
  assert.equal(updated.agentRuntimeVersion, "2");
  await until(() => control.send(new GetAgentRuntimeCommand({ agentRuntimeId: id })), (r) => r.status === "READY", "v2");
  const text = async (qualifier) => {
    const out = await data.send(new InvokeAgentRuntimeCommand({ agentRuntimeArn: created.agentRuntimeArn, qualifier, runtimeSessionId: SESSION, payload: invokeBody("which?") }));
    return JSON.parse(await out.response.transformToString()).output.text;
  };
  assert.equal(await text(undefined), "[v2] which?");
  assert.equal(await text("dep_one"), "[v1] which?");
  const versions = await control.send(new ListAgentRuntimeVersionsCommand({ agentRuntimeId: id }));
  assert.deepEqual(versions.agentRuntimes.map((v) => v.agentRuntimeVersion).sort(), ["1", "2"]);

  agentcore.failNextVersions("Container exited with code 1");
  await control.send(new UpdateAgentRuntimeCommand({
    agentRuntimeId: id, agentRuntimeArtifact: { containerConfiguration: { containerUri: IMAGE("v3") } }, roleArn: ROLE, networkConfiguration: { networkMode: "PUBLIC" },
  }));
  const failed = await until(() => control.send(new GetAgentRuntimeCommand({ agentRuntimeId: id })), (r) => r.status !== "UPDATING", "v3");
  assert.equal(failed.status, "UPDATE_FAILED");
  assert.equal(failed.failureReason, "Container exited with code 1");
  assert.equal(await text(undefined), "[v2] which?", "DEFAULT stays on the newest READY version");

  // An image that does not exist fails too, saying so.
  await control.send(new UpdateAgentRuntimeCommand({
    agentRuntimeId: id, agentRuntimeArtifact: { containerConfiguration: { containerUri: "123456789012.dkr.ecr.us-east-1.amazonaws.com/no-such-image:v1" } }, roleArn: ROLE, networkConfiguration: { networkMode: "PUBLIC" },
  }));
  const missing = await until(() => control.send(new GetAgentRuntimeCommand({ agentRuntimeId: id })), (r) => r.status !== "UPDATING", "v4");
  assert.match(missing.failureReason, /could not be pulled/);

  await control.send(new DeleteAgentRuntimeCommand({ agentRuntimeId: id }));
  await until(async () => agentcore.runtimes().some((r) => r.id === id), (present) => !present, "deletion");
  await assert.rejects(control.send(new GetAgentRuntimeCommand({ agentRuntimeId: id })), (e) => e.name === "ResourceNotFoundException" && e.$metadata.httpStatusCode === 404);
});

test("signatures: a wrong secret, an unknown key, an expired date and a missing one are refused as AWS refuses them", async () => {
  const refused = async (client, command) => {
    const e = await client.send(command).then(() => null, (e) => e);
    assert.ok(e, "refused");
    return e;
  };
  const list = new ListAgentRuntimeVersionsCommand({ agentRuntimeId: "nobody-0123456789" });
  const wrongSecret = new BedrockAgentCoreControlClient({ region: REGION, endpoint: agentcore.controlUrl, credentials: { ...KEY, secretAccessKey: "wrong" } });
  const e1 = await refused(wrongSecret, list);
  assert.equal(e1.name, "InvalidSignatureException");
  assert.equal(e1.$metadata.httpStatusCode, 403);
  assert.match(e1.message, /does not match the signature you provided/);
  const unknown = new BedrockAgentCoreControlClient({ region: REGION, endpoint: agentcore.controlUrl, credentials: { accessKeyId: "AKIANOBODY", secretAccessKey: "x" } });
  assert.equal((await refused(unknown, list)).name, "UnrecognizedClientException");
  const otherRegion = new BedrockAgentCoreControlClient({ region: "eu-west-1", endpoint: agentcore.controlUrl, credentials: KEY });
  assert.equal((await refused(otherRegion, list)).name, "InvalidSignatureException");
  // Temporary credentials must sign their own session token.
  const withToken = new BedrockAgentCoreControlClient({ region: REGION, endpoint: agentcore.controlUrl, credentials: TEMPORARY });
  assert.equal((await refused(withToken, list)).name, "ResourceNotFoundException", "signed with its token: accepted");
  const wrongToken = new BedrockAgentCoreControlClient({ region: REGION, endpoint: agentcore.controlUrl, credentials: { ...TEMPORARY, sessionToken: "other" } });
  assert.equal((await refused(wrongToken, list)).name, "UnrecognizedClientException");
  const tokenOnLongTermKey = new BedrockAgentCoreControlClient({ region: REGION, endpoint: agentcore.controlUrl, credentials: { ...KEY, sessionToken: "made-up" } });
  assert.equal((await refused(tokenOnLongTermKey, list)).name, "UnrecognizedClientException", "a long-term key has no session token");
  tokenOnLongTermKey.destroy();
  wrongSecret.destroy(); unknown.destroy(); otherRegion.destroy(); withToken.destroy(); wrongToken.destroy();

  // Signed 20 minutes ago (outside the 15-minute window), by the SDK's own signer.
  const url = new URL(`${agentcore.controlUrl}/runtimes/nobody-0123456789/`);
  const signer = new SignatureV4({ service: "bedrock-agentcore", region: REGION, credentials: KEY, sha256: Sha256, applyChecksum: false });
  const stale = await signer.sign({ method: "GET", protocol: "http:", hostname: url.hostname, port: Number(url.port), path: url.pathname, query: {}, headers: { host: url.host } }, { signingDate: new Date(Date.now() - 20 * 60_000) });
  const expired = await fetch(url, { headers: stale.headers });
  assert.equal(expired.status, 403);
  assert.equal(expired.headers.get("x-amzn-errortype"), "InvalidSignatureException");
  assert.match((await expired.json()).message, /^Signature expired: \d{8}T\d{6}Z is now earlier than \d{8}T\d{6}Z \(\d{8}T\d{6}Z - 15 min\.\)$/);
  // A signed request whose body was changed on the way.
  const fresh = await signer.sign({ method: "PUT", protocol: "http:", hostname: url.hostname, port: Number(url.port), path: "/runtimes/", query: {}, headers: { host: url.host, "content-type": "application/json" }, body: "{}" });
  const tampered = await fetch(`${agentcore.controlUrl}/runtimes/`, { method: "PUT", headers: fresh.headers, body: '{"agentRuntimeName":"x"}' });
  assert.equal(tampered.status, 403);
  const none = await fetch(url);
  assert.equal(none.status, 403);
  assert.equal(none.headers.get("x-amzn-errortype"), "MissingAuthenticationTokenException");
});

test("faults and refusals surface as AWS's errors: throttling, validation, a conflict, an unknown runtime", async (t) => {
  // One attempt each: the SDK would otherwise retry throttling and 5xx by itself.
  const control = new BedrockAgentCoreControlClient({ region: REGION, endpoint: agentcore.controlUrl, credentials: KEY, maxAttempts: 1 });
  const data = new BedrockAgentCoreClient({ region: REGION, endpoint: agentcore.dataUrl, credentials: KEY, maxAttempts: 1 });
  t.after(() => { control.destroy(); data.destroy(); });
  agentcore.injectFault({ operation: "CreateAgentRuntime", status: 429, type: "ThrottlingException", message: "Rate exceeded" });
  const input = { agentRuntimeName: "faulty_agent", agentRuntimeArtifact: { containerConfiguration: { containerUri: IMAGE("v1") } }, roleArn: ROLE };
  const throttled = await control.send(new CreateAgentRuntimeCommand(input)).then(() => null, (e) => e);
  assert.equal(throttled?.name, "ThrottlingException");
  assert.equal(throttled.$metadata.httpStatusCode, 429);
  const bad = await control.send(new CreateAgentRuntimeCommand({ ...input, agentRuntimeName: "has-hyphens" })).then(() => null, (e) => e);
  assert.equal(bad?.name, "ValidationException");
  const badImage = await control.send(new CreateAgentRuntimeCommand({ ...input, agentRuntimeArtifact: { containerConfiguration: { containerUri: "docker.io/library/agent:latest" } } })).then(() => null, (e) => e);
  assert.equal(badImage?.name, "ValidationException");
  const created = await createReady("faulty_agent", "v1", {}, control);
  const again = await control.send(new CreateAgentRuntimeCommand(input)).then(() => null, (e) => e);
  assert.equal(again?.name, "ConflictException");
  agentcore.injectFault({ operation: "InvokeAgentRuntime", status: 503, type: "ServiceUnavailableException", message: "try again" });
  const unavailable = await data.send(new InvokeAgentRuntimeCommand({ agentRuntimeArn: created.agentRuntimeArn, runtimeSessionId: SESSION, payload: invokeBody("x") })).then(() => null, (e) => e);
  assert.equal(unavailable?.name, "ServiceUnavailableException");
  const shortSession = await data.send(new InvokeAgentRuntimeCommand({ agentRuntimeArn: created.agentRuntimeArn, runtimeSessionId: "too-short", payload: invokeBody("x") })).then(() => null, (e) => e);
  assert.equal(shortSession?.name, "ValidationException");
  const nowhere = await data.send(new InvokeAgentRuntimeCommand({ agentRuntimeArn: created.agentRuntimeArn.replace(/-[a-zA-Z0-9]{10}$/, "-0000000000"), runtimeSessionId: SESSION, payload: invokeBody("x") })).then(() => null, (e) => e);
  assert.equal(nowhere?.name, "ResourceNotFoundException");
  // An agent that refuses its input: the container's 400 comes back as AgentCore's RuntimeClientError (424).
  const refused = await data.send(new InvokeAgentRuntimeCommand({ agentRuntimeArn: created.agentRuntimeArn, runtimeSessionId: SESSION, payload: "{}" })).then(() => null, (e) => e);
  assert.equal(refused?.name, "RuntimeClientError");
  assert.equal(refused.$metadata.httpStatusCode, 424);
});
