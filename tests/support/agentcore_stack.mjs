// The stack the AgentCore suites run against: the local Cloudflare, the local AgentCore, and the control plane
// configured for both (reporting telemetry to itself), with an operator token to move users between plans.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { startLocalCloudflare } from "../../local-cloudflare/server.mjs";
import { startLocalAgentCore } from "../../local-agentcore/server.mjs";
import { agentcoreVars, deployVars, startControlPlane } from "./harness.mjs";

export const ROLE = "arn:aws:iam::123456789012:role/WebhostAgentRuntime"; // agentcoreVars' default role
export const IMAGE = (tag) => `123456789012.dkr.ecr.us-east-1.amazonaws.com/webhost-agent:${tag}`;
export const invokeBody = (text) => ({ protocol: "invoke/v1", input: { messages: [{ role: "user", content: text }] } });

export async function startAgentCoreStack() {
  const admin = randomBytes(24).toString("hex");
  const key = { accessKeyId: "AKIACONTROLPLANETEST", secretAccessKey: randomBytes(20).toString("base64") };
  const lcf = await startLocalCloudflare();
  const agentcore = await startLocalAgentCore({ credentials: [key] });
  const app = await startControlPlane({
    telemetryToSelf: true,
    // An operator's idle-session timeout; the maximum lifetime stays AgentCore's.
    vars: { ...deployVars(lcf, "workers_dev"), ...agentcoreVars(agentcore), AGENTCORE_IDLE_SESSION_TIMEOUT_SECONDS: "600", ADMIN_TOKEN: admin },
  });
  return {
    lcf,
    agentcore,
    app,
    admin,
    /** A user, on `tier` when given (through the operator API). */
    async user(subject, tier) {
      const token = await app.token(subject);
      const me = (await app.me(token)).body;
      if (tier) assert.equal((await app.admin("PUT", `/users/${me.id}/tier`, admin, { tier })).status, 200);
      return { token, id: me.id };
    },
    /** An AgentCore deploy, followed until it leaves `deploying`. */
    async deployImage(token, agentId, json) {
      const res = await app.deploy(token, agentId, { runtimeProvider: "agentcore", ...json });
      assert.equal(res.status, 202, res.text);
      return app.settled(token, agentId, res.body.id);
    },
    /** The InvokeAgentRuntime calls that reached the local AgentCore. */
    invocations: () => agentcore.requests().filter((r) => r.operation === "InvokeAgentRuntime"),
    async close() {
      await app.close();
      await agentcore.close();
      await lcf.close();
    },
  };
}
