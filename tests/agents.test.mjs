// Agents end to end in workerd: CRUD, pagination, validation, name conflicts, and tenant isolation on every
// agent route (another user's agent answers exactly like a missing one, and nothing changes).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startControlPlane, expectError } from "./support/harness.mjs";

let app, alice, bob;
before(async () => {
  app = await startControlPlane();
  alice = await app.token("user_alice");
  bob = await app.token("user_bob");
});
after(() => app?.close());

test("create, read, update, disable, enable, delete", async () => {
  const created = await app.createAgent(alice, { name: "support-bot", description: "Answers tickets" });
  assert.equal(created.status, 201, created.text);
  const agent = created.body;
  assert.match(agent.id, /^agt_[0-9a-f]{24}$/);
  assert.equal(agent.name, "support-bot");
  assert.equal(agent.description, "Answers tickets");
  assert.equal(agent.status, "active");
  assert.equal(agent.activeDeploymentId, null);
  assert.equal(agent.createdAt, agent.updatedAt);
  assert.ok(!("userId" in agent), "the internal owner id is not exposed");

  assert.deepEqual((await app.getAgent(alice, agent.id)).body, agent);

  const renamed = await app.updateAgent(alice, agent.id, { name: "helpdesk-bot" });
  assert.equal(renamed.status, 200, renamed.text);
  assert.equal(renamed.body.name, "helpdesk-bot");
  assert.equal(renamed.body.description, "Answers tickets", "fields not sent are kept");
  assert.ok(renamed.body.updatedAt >= agent.updatedAt);
  const cleared = await app.updateAgent(alice, agent.id, { description: null });
  assert.equal(cleared.body.description, null);

  for (let i = 0; i < 2; i++) {
    const disabled = await app.disableAgent(alice, agent.id);
    assert.equal(disabled.status, 200);
    assert.equal(disabled.body.status, "disabled");
  }
  assert.equal((await app.enableAgent(alice, agent.id)).body.status, "active");

  const deleted = await app.deleteAgent(alice, agent.id);
  assert.equal(deleted.status, 204);
  assert.equal(deleted.text, "");
  expectError(assert, await app.getAgent(alice, agent.id), 404, "agent_not_found");
  expectError(assert, await app.deleteAgent(alice, agent.id), 404, "agent_not_found");
  // The name is free again.
  assert.equal((await app.createAgent(alice, { name: "helpdesk-bot" })).status, 201);
});

test("names are unique per user: 409 on create and on rename, but other users may reuse them", async () => {
  assert.equal((await app.createAgent(alice, { name: "dup-name" })).status, 201);
  const err = expectError(assert, await app.createAgent(alice, { name: "dup-name" }), 409, "agent_name_taken");
  assert.equal(err.details.field, "name");
  const other = await app.createAgent(alice, { name: "other-name" });
  const before = await app.agentRows();
  expectError(assert, await app.updateAgent(alice, other.body.id, { name: "dup-name" }), 409, "agent_name_taken");
  assert.deepEqual(await app.agentRows(), before, "a failed rename changes nothing");
  assert.equal((await app.createAgent(bob, { name: "dup-name" })).status, 201);
});

test("validation errors are 4xx with stable codes and change nothing", async () => {
  const target = (await app.createAgent(alice, { name: "validation-target" })).body;
  const before = await app.agentRows();
  const cases = [
    [{ name: "ab" }, 400, "validation_failed"],
    [{ name: "x".repeat(64) }, 400, "validation_failed"],
    [{ name: "Has Caps" }, 400, "validation_failed"],
    [{ name: "bad_char" }, 400, "validation_failed"],
    [{ name: "ok-name", description: "d".repeat(501) }, 400, "validation_failed"],
    [{ name: "ok-name", description: "bell\u0007" }, 400, "validation_failed"],
    [{}, 400, "invalid_body"],
    [{ name: 42 }, 400, "invalid_body"],
    [{ name: "ok-name", status: "disabled" }, 400, "invalid_body"],
    [{ name: "ok-name", activeDeploymentId: "dep_x" }, 400, "invalid_body"],
    [[], 400, "invalid_body"],
  ];
  for (const [json, status, code] of cases) {
    const err = expectError(assert, await app.createAgent(alice, json), status, code);
    if (code === "validation_failed") assert.ok(err.details.field, JSON.stringify(json));
  }
  for (const [json, status, code] of [
    [{ name: "A" }, 400, "validation_failed"],
    [{ description: 5 }, 400, "invalid_body"],
    [{ nmae: "typo" }, 400, "invalid_body"],
    [{ status: "disabled" }, 400, "invalid_body"],
    [{ name: "fine-name", description: "\u0000" }, 400, "validation_failed"],
  ]) {
    expectError(assert, await app.updateAgent(alice, target.id, json), status, code);
  }
  expectError(
    assert,
    await app.request("POST", "/v1/agents", { token: alice, body: "{", headers: { "Content-Type": "application/json" } }),
    400,
    "invalid_json",
  );
  expectError(
    assert,
    await app.request("POST", "/v1/agents", { token: alice, body: '{"name":"plain"}', headers: { "Content-Type": "text/plain" } }),
    415,
    "unsupported_media_type",
  );
  assert.deepEqual(await app.agentRows(), before);
});

test("list: newest first, cursor pagination without gaps or repeats, bounded limit", async () => {
  const carol = await app.token("user_carol");
  const made = [];
  for (let i = 0; i < 7; i++) made.push((await app.createAgent(carol, { name: `page-agent-${i}` })).body);
  const seen = [];
  let cursor = null;
  let pages = 0;
  do {
    const res = await app.listAgents(carol, `?limit=3${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`);
    assert.equal(res.status, 200, res.text);
    assert.ok(res.body.agents.length <= 3);
    seen.push(...res.body.agents);
    cursor = res.body.nextCursor;
    pages++;
  } while (cursor);
  assert.equal(pages, 3);
  const expected = [...made].sort((a, b) => b.createdAt - a.createdAt || (a.id < b.id ? 1 : -1));
  assert.deepEqual(seen.map((a) => a.id), expected.map((a) => a.id));

  const all = await app.listAgents(carol);
  assert.equal(all.body.agents.length, 7);
  assert.equal(all.body.nextCursor, null);
  for (const q of ["?limit=0", "?limit=101", "?limit=abc"]) {
    expectError(assert, await app.listAgents(carol, q), 400, "invalid_query");
  }
  for (const q of ["?cursor=garbage!", "?cursor=djE6MTphZ3RfeCcgT1IgMT0x"]) {
    expectError(assert, await app.listAgents(carol, q), 400, "invalid_cursor");
  }
});

test("tenant isolation on every agent route: 404 like a missing agent, and nothing changes", async () => {
  const dave = await app.token("user_dave");
  const mallory = await app.token("user_mallory");
  const victim = (await app.createAgent(dave, { name: "victim-agent", description: "private" })).body;
  const missing = "agt_000000000000000000000000";
  const before = await app.agentRows();

  const attempts = (id) => [
    () => app.getAgent(mallory, id),
    () => app.updateAgent(mallory, id, { name: "stolen-agent" }),
    () => app.updateAgent(mallory, id, { description: "pwned" }),
    () => app.disableAgent(mallory, id),
    () => app.enableAgent(mallory, id),
    () => app.deleteAgent(mallory, id),
  ];
  const foreign = attempts(victim.id);
  const absent = attempts(missing);
  for (let i = 0; i < foreign.length; i++) {
    const a = await foreign[i]();
    const b = await absent[i]();
    const errA = expectError(assert, a, 404, "agent_not_found");
    const errB = expectError(assert, b, 404, "agent_not_found");
    assert.equal(errA.message, errB.message, "indistinguishable from a missing agent");
    assert.deepEqual(Object.keys(a.body.error).sort(), Object.keys(b.body.error).sort());
  }
  assert.deepEqual(await app.agentRows(), before, "nothing changed");

  const list = await app.listAgents(mallory);
  assert.ok(!list.body.agents.some((a) => a.id === victim.id));
  assert.deepEqual((await app.getAgent(dave, victim.id)).body, victim);
});

test("client-supplied user ids are ignored in bodies and queries", async () => {
  const erin = await app.token("user_erin");
  const frank = await app.token("user_frank");
  const frankId = (await app.me(frank)).body.id;
  const created = await app.createAgent(erin, { name: "erins-agent", userId: frankId });
  assert.equal(created.status, 201, created.text);
  expectError(assert, await app.getAgent(frank, created.body.id), 404, "agent_not_found");
  const listed = await app.listAgents(erin, `?userId=${frankId}`);
  assert.ok(listed.body.agents.some((a) => a.id === created.body.id));
  const franks = await app.listAgents(frank, `?userId=${(await app.me(erin)).body.id}`);
  assert.ok(!franks.body.agents.some((a) => a.id === created.body.id));
  const patched = await app.updateAgent(erin, created.body.id, { description: "mine", userId: frankId });
  assert.equal(patched.status, 200);
  expectError(assert, await app.getAgent(frank, created.body.id), 404, "agent_not_found");
});
