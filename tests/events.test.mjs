// The live feed (GET /v1/events): a user's changes arrive as they happen — agents, deployments going live, the
// active pointer, usage — numbered, replayed after a reconnect, and never to anyone else.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createParser } from "eventsource-parser";
import { startLocalCloudflare } from "../local-cloudflare/server.mjs";
import { deployVars, startControlPlane } from "./support/harness.mjs";

let lcf, app, alice, mallory;
before(async () => {
  lcf = await startLocalCloudflare();
  app = await startControlPlane({ vars: deployVars(lcf, "workers_dev") });
  alice = await app.token("user_feed_alice");
  mallory = await app.token("user_feed_mallory");
});
after(async () => {
  await app?.close();
  await lcf?.close();
});

/** Opens `token`'s feed; `events` fills as they arrive, `raw` keeps every byte received. */
async function openFeed(token, lastEventId) {
  const controller = new AbortController();
  const headers = { Authorization: `Bearer ${token}` };
  if (lastEventId !== undefined) headers["Last-Event-ID"] = String(lastEventId);
  const res = await app.mf.dispatchFetch("http://control-plane.test/v1/events", { headers, signal: controller.signal });
  const feed = { status: res.status, contentType: res.headers.get("content-type"), events: [], raw: "", waiters: [] };
  if (res.status !== 200) {
    feed.body = await res.text();
    return feed;
  }
  const parser = createParser({
    onEvent(e) {
      feed.events.push({ id: e.id === undefined ? null : Number(e.id), kind: e.event, body: JSON.parse(e.data) });
      feed.waiters = feed.waiters.filter((w) => !w());
    },
  });
  feed.ended = (async () => {
    const decoder = new TextDecoder();
    try {
      for await (const chunk of res.body) {
        const text = decoder.decode(chunk, { stream: true });
        feed.raw += text;
        parser.feed(text);
      }
    } catch {
      // Closed by the test.
    }
  })();
  /** Resolves with the first event (after those already checked) matching `match`. */
  feed.next = (match, timeoutMs = 20_000) => {
    feed.seen ??= 0;
    return new Promise((resolve, reject) => {
      const check = () => {
        for (let i = feed.seen; i < feed.events.length; i++) {
          if (match(feed.events[i])) {
            feed.seen = i + 1;
            resolve(feed.events[i]);
            return true;
          }
        }
        return false;
      };
      if (check()) return;
      const timer = setTimeout(() => reject(new Error(`no matching event; got ${JSON.stringify(feed.events.map((e) => e.kind))}`)), timeoutMs);
      feed.waiters.push(() => check() && (clearTimeout(timer), true));
    });
  };
  feed.close = () => controller.abort();
  await feed.next((e) => e.kind === "ready");
  return feed;
}

const invokeBody = { protocol: "invoke/v1", input: { messages: [{ role: "user", content: "hello feed" }] } };

test("a user's feed carries their changes as they happen, in order, with increasing ids", { timeout: 60_000 }, async () => {
  const feed = await openFeed(alice);
  assert.equal(feed.status, 200);
  assert.match(feed.contentType, /^text\/event-stream/);
  const agent = (await app.createAgent(alice, { name: "feed-agent" })).body;
  const created = await feed.next((e) => e.kind === "agent");
  assert.equal(created.body.data.id, agent.id);
  assert.equal(created.body.data.name, "feed-agent");

  // A deploy: deploying, then active, then the agent pointing at it — without anyone asking.
  const deployment = (await app.deploy(alice, agent.id)).body;
  const deploying = await feed.next((e) => e.kind === "deployment");
  assert.deepEqual([deploying.body.data.id, deploying.body.data.status], [deployment.id, "deploying"]);
  const live = await feed.next((e) => e.kind === "deployment" && e.body.data.status !== "deploying");
  assert.deepEqual([live.body.data.id, live.body.data.status], [deployment.id, "active"]);
  const pointed = await feed.next((e) => e.kind === "agent" && e.body.data.activeDeploymentId === deployment.id);
  assert.ok(pointed.id > live.id);

  // A second version goes live: the first is reported inactive; a rollback reports both again.
  const second = (await app.deploy(alice, agent.id)).body;
  await feed.next((e) => e.kind === "deployment" && e.body.data.id === second.id && e.body.data.status === "active");
  await feed.next((e) => e.kind === "deployment" && e.body.data.id === deployment.id && e.body.data.status === "inactive");
  assert.equal((await app.activate(alice, agent.id, deployment.id)).status, 200);
  const rolledBack = [
    feed.next((e) => e.kind === "deployment" && e.body.data.id === deployment.id && e.body.data.status === "active"),
  ];
  await Promise.all(rolledBack);
  await feed.next((e) => e.kind === "agent" && e.body.data.activeDeploymentId === deployment.id);
  await feed.next((e) => e.kind === "deployment" && e.body.data.id === second.id && e.body.data.status === "inactive");

  // A call moves usage; disabling and deleting are agent events.
  assert.equal((await app.invoke(alice, agent.id, invokeBody)).status, 200);
  const usage = await feed.next((e) => e.kind === "usage");
  assert.match(usage.body.data.periodKey, /^\d{4}-\d{2}$/);
  assert.equal(usage.id, null, "usage is live only: no id, never replayed");
  await app.disableAgent(alice, agent.id);
  assert.equal((await feed.next((e) => e.kind === "agent")).body.data.status, "disabled");
  assert.equal((await app.deleteAgent(alice, agent.id)).status, 204);
  assert.equal((await feed.next((e) => e.kind === "agent_deleted")).body.data.id, agent.id);

  const ids = feed.events.filter((e) => e.kind !== "ready" && e.id !== null).map((e) => e.id);
  assert.deepEqual(ids, [...ids].sort((a, b) => a - b), "ids increase");
  assert.equal(new Set(ids).size, ids.length, "ids are unique");
  for (const e of feed.events.filter((e) => e.kind !== "ready")) assert.equal(typeof e.body.at, "number");
  feed.close();
});

test("a reconnect with Last-Event-ID replays exactly what was missed; an id the feed never gave resyncs", { timeout: 60_000 }, async () => {
  const first = await openFeed(alice);
  const before = (await app.createAgent(alice, { name: "replay-one" })).body;
  const seen = await first.next((e) => e.kind === "agent" && e.body.data.id === before.id);
  first.close();
  // Missed while away.
  const missedA = (await app.createAgent(alice, { name: "replay-two" })).body;
  const missedB = (await app.updateAgent(alice, missedA.id, { name: "replay-three" })).body;
  // Publishing happens after the answer: give it a moment.
  const again = await (async () => {
    for (let i = 0; i < 50; i++) {
      const feed = await openFeed(alice, seen.id);
      if (feed.events.filter((e) => e.kind === "agent").length >= 2) return feed;
      feed.close();
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error("the missed events never came");
  })();
  const replayed = again.events.filter((e) => e.kind !== "ready");
  assert.deepEqual(
    replayed.slice(0, 2).map((e) => [e.body.data.id, e.body.data.name]),
    [
      [missedA.id, "replay-two"],
      [missedB.id, "replay-three"],
    ],
  );
  assert.ok(replayed.every((e) => e.id > seen.id), "nothing already seen is sent again");
  again.close();

  const future = await openFeed(alice, seen.id + 100_000);
  assert.ok(future.events.some((e) => e.kind === "resync"), "an id from the future means: read everything again");
  future.close();
  const garbled = await openFeed(alice, "not-a-number");
  assert.ok(!garbled.events.some((e) => e.kind === "resync"), "a garbled id is a new client, from now");
  garbled.close();
});

test("one user's feed never carries another user's events, whatever Last-Event-ID it sends", { timeout: 60_000 }, async () => {
  const watching = await openFeed(mallory);
  const alices = await openFeed(alice);
  const agent = (await app.createAgent(alice, { name: "secret-project" })).body;
  const deployment = (await app.deploy(alice, agent.id)).body;
  // Every publisher has spoken for Alice: the router (create, deploy, disable) and the deploy job (going live).
  await alices.next((e) => e.kind === "deployment" && e.body.data.id === deployment.id && e.body.data.status === "active");
  assert.equal((await app.invoke(alice, agent.id, invokeBody)).status, 200);
  await alices.next((e) => e.kind === "usage");
  await app.disableAgent(alice, agent.id);
  await alices.next((e) => e.kind === "agent" && e.body.data.status === "disabled");
  alices.close();
  const lastOfAlice = Math.max(...alices.events.map((e) => e.id ?? 0));

  // Mallory's feed works (a positive control): her own change arrives, and only that.
  const own = (await app.createAgent(mallory, { name: "mallory-own" })).body;
  await watching.next((e) => e.kind === "agent" && e.body.data.id === own.id);
  // Feeds she opens claiming to have seen any of Alice's ids.
  const probes = [watching];
  for (const id of [0, 1, Math.floor(lastOfAlice / 2), lastOfAlice]) probes.push(await openFeed(mallory, id));
  for (const feed of probes) {
    const theirs = feed.events.filter((e) => !["ready", "resync"].includes(e.kind));
    assert.ok(theirs.every((e) => e.kind === "agent" && e.body.data.id === own.id), `only Mallory's own event: ${JSON.stringify(theirs)}`);
    for (const leak of [agent.id, deployment.id, "secret-project"]) assert.ok(!feed.raw.includes(leak), `${leak} leaked`);
    feed.close();
  }
  assert.ok(probes[1].events.some((e) => e.kind === "agent" && e.body.data.id === own.id), "replayed from 0: her own event");
  // Without a token there is no feed at all.
  const anonymous = await app.request("GET", "/v1/events");
  assert.equal(anonymous.status, 401);
});

test("a stream ends when the token that opened it expires", { timeout: 30_000 }, async () => {
  const shortLived = await app.token("user_feed_alice", { expiresIn: "3s" });
  const feed = await openFeed(shortLived);
  const opened = Date.now();
  await feed.ended;
  const lasted = Date.now() - opened;
  assert.ok(lasted >= 1_000 && lasted < 10_000, `ended after ${lasted} ms`);
});
