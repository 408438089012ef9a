// The dashboard in a real browser (Debian's Chromium, driven by playwright-core) against the local stack as
// `make dev` runs it: sign in through the local identity provider, create and manage an agent, deploy and see it
// turn active, set a secret, roll back, and talk to the agent in the playground with a streamed answer. Each step
// saves a screenshot in test-results/dashboard/ for a person to look at.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdirSync } from "node:fs";
import path from "node:path";
import { chromium } from "playwright-core";
import { ROOT, mintToken } from "./support/harness.mjs";
import { startDevStack } from "./support/dev_stack.mjs";

const CHROMIUM = process.env.CHROMIUM_PATH || "/usr/bin/chromium";
const SHOTS = path.join(ROOT, "test-results/dashboard");
// Headless Chromium as root, on a machine whose network is closed: no sandbox, no background connections.
const CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"];

let stack;
let browser;
before(async () => {
  assert.ok(existsSync(CHROMIUM), `no Chromium at ${CHROMIUM}: make test installs Debian's chromium package`);
  mkdirSync(SHOTS, { recursive: true });
  stack = await startDevStack({ identity: true });
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
});
after(async () => {
  await browser?.close();
  await stack?.stop();
});

async function newPage() {
  const context = await browser.newContext({ viewport: { width: 1280, height: 860 } });
  const page = await context.newPage();
  const problems = [];
  page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
  // A failed load is reported below with its address; other console errors are problems of the page.
  page.on("console", (message) => message.type() === "error" && !message.text().startsWith("Failed to load resource") && problems.push(`console: ${message.text()}`));
  const refused = [];
  page.on("response", (res) => res.status() >= 400 && refused.push(`${res.request().method()} ${new URL(res.url()).pathname} ${res.status()}`));
  return { page, context, problems, refused };
}

/** Controls with no accessible name: neither a label, nor aria-label(ledby), nor (for a button) text. */
const unlabelledControls = (page) =>
  page.evaluate(() =>
    [...document.querySelectorAll("input, textarea, select, button")]
      .filter((el) => {
        const labelled = (el.labels && el.labels.length > 0) || el.getAttribute("aria-label") || el.getAttribute("aria-labelledby");
        return !labelled && !(el.tagName === "BUTTON" && el.textContent.trim());
      })
      .map((el) => el.outerHTML),
  );

const shot = (page, name) => page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });

async function signIn(page, username) {
  await page.goto(stack.base);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.waitForURL(`${stack.idp.origin}/sign-in**`);
  await page.getByLabel("User name").fill(username);
  await page.getByRole("button", { name: "Continue" }).click();
  await page.getByTestId("signed-in-as").filter({ hasText: username }).waitFor();
}

test("a person signs in, creates an agent, deploys it, sets a secret, rolls back and talks to it", { timeout: 150_000 }, async () => {
  const { page, context, problems, refused } = await newPage();
  try {
    // The app is served by the control plane for every path that is not an API route.
    const deepLink = await fetch(`${stack.base}/agents/agt_000000000000000000000000`);
    assert.equal(deepLink.status, 200);
    assert.match(deepLink.headers.get("content-type"), /text\/html/);
    // The control plane accepts the identity provider's tokens only when issued to the dashboard (`azp`).
    const issuedElsewhere = await mintToken(stack.key, "dash-alice", { claims: { iss: stack.issuer, aud: stack.audience, azp: "https://other-app.example" } });
    const elsewhere = await fetch(`${stack.base}/v1/me`, { headers: { Authorization: `Bearer ${issuedElsewhere}` } });
    assert.equal(elsewhere.status, 401);
    assert.equal((await elsewhere.json()).error.code, "unauthorized_party");
    const apiMiss = await fetch(`${stack.base}/v1/no-such-route`);
    assert.equal(apiMiss.status, 404);
    assert.equal((await apiMiss.json()).error.code, "route_not_found", "API paths never fall back to the app");

    await page.goto(stack.base);
    await page.getByRole("button", { name: "Sign in" }).waitFor();
    await shot(page, "01-signed-out");
    await signIn(page, "dash-alice");
    await page.getByText("No agents yet").waitFor();
    // The live feed is connected: what follows shows up without polling (the pages poll only without it).
    await page.getByTestId("live").filter({ hasText: "Live" }).waitFor();
    await shot(page, "02-agents-empty");

    // Create: the list shows it, with the plan's limit.
    await page.getByLabel("Name", { exact: true }).fill("support-bot");
    await page.getByLabel("Description").fill("Answers questions");
    await page.getByRole("button", { name: "Create agent" }).click();
    const row = page.locator('tr[data-agent="support-bot"]');
    await row.waitFor();
    assert.match(await page.getByTestId("agent-limit").textContent(), /^1 of \d+ agents on the free plan$/);
    // A bad name is refused by the API with its envelope: code, message and request id shown. (The row may come
    // from the live feed before the create call returns and clears the form: wait for that first.)
    await page.waitForFunction(() => document.querySelector('input[name="name"]').value === "");
    await page.getByLabel("Name", { exact: true }).fill("support-bot");
    await page.getByRole("button", { name: "Create agent" }).click();
    const refusal = page.getByRole("alert");
    await refusal.waitFor();
    assert.match(await refusal.textContent(), /code\s*agent_name_taken/);
    assert.match(await refusal.textContent(), /request id\s*\S+/);
    await shot(page, "03-agent-created-and-a-refusal");

    // Disable and enable.
    await page.getByRole("button", { name: "Disable support-bot" }).click();
    await row.locator(".badge-disabled").waitFor();
    await page.getByRole("button", { name: "Enable support-bot" }).click();
    await row.locator(".badge-active").waitFor();

    // Deploy the template and watch it go live without a reload.
    await row.getByRole("link", { name: "support-bot" }).click();
    await page.getByRole("heading", { name: /support-bot/ }).waitFor();
    await page.getByRole("button", { name: "Deploy the template" }).click();
    await page.locator('tr[data-version="1"] .badge-active').waitFor({ timeout: 30_000 });
    await page.locator('tr[data-version="1"]').getByText("serving").waitFor();

    // A secret: set, listed by name only; the value is never shown.
    await page.getByLabel("Name", { exact: true }).fill("SUPPORT_TOKEN");
    await page.getByLabel("Value").fill("very-secret-value-123");
    await page.getByRole("button", { name: "Set secret" }).click();
    await page.locator(".secrets").getByText("SUPPORT_TOKEN").waitFor();
    assert.ok(!(await page.content()).includes("very-secret-value-123"), "a secret's value never appears on the page");

    // A second version, then roll back to the first with confirmation.
    await page.getByRole("button", { name: "Deploy the template" }).click();
    await page.locator('tr[data-version="2"]').getByText("serving").waitFor({ timeout: 30_000 });
    await shot(page, "04-agent-deployed-twice");
    await page.getByRole("button", { name: "Roll back to v1" }).click();
    const dialog = page.getByRole("dialog");
    await dialog.waitFor();
    await shot(page, "05-rollback-confirmation");
    await dialog.getByRole("button", { name: "Roll back to v1" }).click();
    await page.locator('tr[data-version="1"]').getByText("serving").waitFor();
    assert.equal(await page.locator('tr[data-version="2"]').getByText("serving").count(), 0);

    // The playground: a streamed answer arrives word by word.
    await page.getByRole("link", { name: "Open the playground" }).click();
    const playgroundAgent = new URL(page.url()).pathname.split("/")[2];
    await page.getByLabel("Message", { exact: true }).fill("hello there from the browser test");
    await page.getByText("Metadata").click();
    await page.locator('textarea[name="metadata"]').fill('{"delayMs": 120}');
    await page.evaluate(() => {
      // Every text the answer shows while it streams.
      window.__seen = [];
      new MutationObserver(() => {
        const text = document.querySelector('[data-role="assistant"] .text')?.textContent ?? "";
        if (window.__seen.at(-1) !== text) window.__seen.push(text);
      }).observe(document.querySelector('[data-testid="conversation"]'), { subtree: true, childList: true, characterData: true });
    });
    await page.getByRole("button", { name: "Send" }).click();
    await page.getByTestId("trace-id").filter({ hasText: /^trc_/ }).waitFor();
    await page.getByRole("button", { name: "Send" }).waitFor({ timeout: 30_000 });
    const seen = (await page.evaluate(() => window.__seen)).filter((t) => t && t !== "…");
    assert.ok(seen.length >= 4, `the answer grew in steps as deltas arrived: ${JSON.stringify(seen)}`);
    const answer = seen.at(-1);
    assert.match(answer, /hello there from the browser test/);
    for (let i = 1; i < seen.length; i++) assert.ok(seen[i].startsWith(seen[i - 1]), "each step extends the last");
    assert.match(await page.getByTestId("rate-limit").textContent(), /^\d+ of \d+/);
    await shot(page, "06-playground-streamed");

    // The same session continues.
    const session = await page.locator("dt:has-text('Session') + dd").textContent();
    await page.getByLabel("Stream the answer").uncheck();
    await page.getByLabel("Message", { exact: true }).fill("second turn");
    await page.getByRole("button", { name: "Send" }).click();
    await page.locator('[data-role="assistant"]').nth(1).filter({ hasText: "second turn" }).waitFor();
    assert.equal(await page.locator("dt:has-text('Session') + dd").textContent(), session, "the session carries on");
    await shot(page, "07-playground-second-turn");

    // Stop: a slow stream is cancelled after its first words.
    await page.getByLabel("Stream the answer").check();
    await page.locator('textarea[name="metadata"]').fill('{"delayMs": 700}');
    await page.getByLabel("Message", { exact: true }).fill("one two three four five six seven eight nine ten");
    await page.getByRole("button", { name: "Send" }).click();
    const third = page.locator('[data-role="assistant"]').nth(2);
    await third.filter({ hasText: "one" }).waitFor();
    await page.getByRole("button", { name: "Stop" }).click();
    await page.locator("dt:has-text('Stopped')").waitFor();
    await page.getByRole("button", { name: "Send" }).waitFor();
    const cut = await third.textContent();
    await new Promise((r) => setTimeout(r, 1_500));
    assert.equal(await third.textContent(), cut, "nothing arrives after Stop");
    assert.ok(!cut.includes("ten"), `the answer was cut short: ${cut}`);

    // Usage: the page agrees with /v1/usage/current, and moves when a call is made elsewhere — no reload.
    await page.getByRole("link", { name: "Usage" }).click();
    const requestsMeter = page.getByTestId("meter-requests");
    await requestsMeter.waitFor();
    const current = async () =>
      page.evaluate(async () => (await fetch("/v1/usage/current", { headers: { Authorization: `Bearer ${await window.Clerk.session.getToken()}` } })).json());
    const before = await current();
    assert.equal(await requestsMeter.textContent(), `${before.requestsReserved.toLocaleString("en-US")} of ${before.entitlements.requestsPerPeriod.toLocaleString("en-US")}`);
    assert.match(await page.getByTestId("meter-tokens").textContent(), new RegExp(`^${before.totals.tokens} of `));
    const invoked = await page.evaluate(async (id) => {
      const res = await fetch(`/v1/invoke/${id}`, {
        method: "POST",
        headers: { Authorization: `Bearer ${await window.Clerk.session.getToken()}`, "Content-Type": "application/json" },
        body: JSON.stringify({ protocol: "invoke/v1", input: { messages: [{ role: "user", content: "from elsewhere" }] } }),
      });
      return res.status;
    }, playgroundAgent);
    assert.equal(invoked, 200);
    await requestsMeter.filter({ hasText: new RegExp(`^${before.requestsReserved + 1} of`) }).waitFor({ timeout: 15_000 });
    await shot(page, "08-usage");

    // API keys: created and shown once, listed by prefix, revoked after a confirmation.
    await page.getByRole("link", { name: "API keys" }).click();
    await page.getByLabel("Name", { exact: true }).fill("browser key");
    await page.getByLabel("For").selectOption({ label: "support-bot" });
    await page.getByRole("button", { name: "Create key" }).click();
    const key = await page.getByTestId("new-key").textContent();
    assert.match(key, /^whk_[0-9a-f]{48}$/);
    const keyRow = page.locator('tr[data-key="browser key"]');
    await keyRow.getByText(key.slice(0, 12)).waitFor();
    await shot(page, "09-api-key-created");
    // The key works, for its agent.
    const withKey = await fetch(`${stack.base}/v1/invoke/${playgroundAgent}`, {
      method: "POST",
      headers: { Authorization: `Bearer ${key}`, "Content-Type": "application/json" },
      body: JSON.stringify({ protocol: "invoke/v1", input: { messages: [{ role: "user", content: "by key" }] } }),
    });
    assert.equal(withKey.status, 200);
    await page.getByRole("button", { name: "Done" }).click();
    assert.ok(!(await page.content()).includes(key), "the key is not shown again");
    await page.getByRole("button", { name: "Revoke browser key" }).click();
    await page.getByRole("dialog").getByRole("button", { name: "Revoke key" }).click();
    await keyRow.getByText("revoked").waitFor();
    const afterRevoke = await fetch(`${stack.base}/v1/invoke/${playgroundAgent}`, {
      method: "POST",
      headers: { Authorization: `Bearer ${key}`, "Content-Type": "application/json" },
      body: JSON.stringify({ protocol: "invoke/v1", input: { messages: [{ role: "user", content: "by key" }] } }),
    });
    assert.equal(afterRevoke.status, 401, "a revoked key fails from the next call on");
    await shot(page, "10-api-key-revoked");

    assert.deepEqual(problems, [], "no errors in the page");
    assert.deepEqual(refused, ["POST /v1/agents 409"], "the only refused request is the one the test provoked");
  } catch (error) {
    // What the page showed when it went wrong, for the person reading the failure.
    await shot(page, "failure").catch(() => {});
    throw error;
  } finally {
    await context.close();
  }
});

test("a module file deploys from the browser; a broken one fails and shows the step and the provider's message", { timeout: 90_000 }, async () => {
  const { page, context, problems } = await newPage();
  try {
    // The app's files carry their security headers (dashboard/public/_headers).
    const index = await fetch(stack.base);
    assert.match(index.headers.get("content-security-policy") ?? "", /frame-ancestors 'none'/);
    assert.equal(index.headers.get("x-content-type-options"), "nosniff");

    await signIn(page, "dash-uploader");
    await page.getByLabel("Name", { exact: true }).fill("uploaded-agent");
    await page.getByRole("button", { name: "Create agent" }).click();
    await page.locator('tr[data-agent="uploaded-agent"]').getByRole("link").click();
    await page.getByTestId("live").filter({ hasText: "Live" }).waitFor();
    const module = `export default { async fetch() { return Response.json({ protocol: "invoke/v1", output: { text: "from an uploaded file" } }); } };`;
    await page.getByLabel(/Module file/).setInputFiles({ name: "agent.mjs", mimeType: "text/javascript", buffer: Buffer.from(module) });
    await page.getByRole("button", { name: "Deploy this file" }).click();
    await page.locator('tr[data-version="1"]').getByText("serving").waitFor({ timeout: 30_000 });
    assert.match(await page.locator('tr[data-version="1"]').textContent(), /custom/);

    await page.getByLabel(/Module file/).setInputFiles({ name: "broken.mjs", mimeType: "text/javascript", buffer: Buffer.from("export default { fetch( }") });
    await page.getByRole("button", { name: "Deploy this file" }).click();
    await page.locator('tr[data-version="2"] .badge-failed').waitFor({ timeout: 30_000 });
    const failure = await page.getByRole("note").textContent();
    assert.match(failure, /Failed at upload/);
    assert.match(failure, /SyntaxError/);
    assert.match(failure, /PUT \/accounts\//, "the endpoint that failed is named");
    // The failed version never served: version 1 still does.
    await page.locator('tr[data-version="1"]').getByText("serving").waitFor();
    await shot(page, "11-upload-and-failed-deploy");
    assert.deepEqual(problems, [], "no errors in the page (a CSP violation would be one)");
  } finally {
    await context.close();
  }
});

test("a person upgrades to Pro: checkout on the local Stripe, back to the dashboard, the plan moves without a reload, and deploys a container image to AgentCore", { timeout: 150_000 }, async () => {
  const { page, context, problems } = await newPage();
  try {
    await signIn(page, "dash-buyer");
    await page.getByTestId("live").filter({ hasText: "Live" }).waitFor();
    await page.getByRole("link", { name: "Billing" }).click();
    await page.getByTestId("plan").filter({ hasText: "Free" }).waitFor();
    await shot(page, "12-billing-free");
    await page.getByRole("button", { name: "Upgrade to Pro" }).click();
    await page.waitForURL(`${stack.stripe.origin}/checkout/**`);
    await shot(page, "13-local-stripe-checkout");
    await page.getByRole("button", { name: "Pay and subscribe" }).click();
    await page.waitForURL(`${stack.base}/billing?checkout=success**`);
    // Stripe's signed events reach the control plane; the plan event reaches the page.
    await page.getByTestId("plan").filter({ hasText: "Pro" }).waitFor({ timeout: 30_000 });
    assert.match(await page.getByTestId("subscription").textContent(), /Subscription active; renews /);
    await page.getByRole("button", { name: "Manage subscription" }).waitFor();
    assert.match(await page.locator(".account .badge").textContent(), /pro/i, "the header shows the new tier");
    await shot(page, "14-billing-pro");

    // On Pro the second runtime is there: a container image deployed to the local AgentCore from the browser.
    await page.getByRole("link", { name: "Agents" }).click();
    await page.getByLabel("Name", { exact: true }).fill("container-bot");
    await page.getByRole("button", { name: "Create agent" }).click();
    await page.locator('tr[data-agent="container-bot"]').getByRole("link", { name: "container-bot" }).click();
    await page.getByLabel("Container image on AgentCore (an Amazon ECR URI)").fill("123456789012.dkr.ecr.us-east-1.amazonaws.com/webhost-agent:dash");
    await page.getByRole("button", { name: "Deploy this image" }).click();
    const imageRow = page.locator('tr[data-version="1"]');
    await imageRow.getByText("serving").waitFor({ timeout: 45_000 });
    assert.match(await imageRow.textContent(), /image on AgentCore\s*webhost-agent:dash/);
    assert.equal(stack.agentcore.runtimes().filter((r) => r.versions.some((v) => v.containerUri.endsWith("webhost-agent:dash"))).length, 1);
    await shot(page, "15-agentcore-deployment");
    assert.deepEqual(problems, [], "no errors in the page");
  } finally {
    await context.close();
  }
});

test("the dashboard's forms are labelled and reachable with the keyboard", { timeout: 60_000 }, async () => {
  const { page, context } = await newPage();
  try {
    await signIn(page, "dash-keyboard");
    await page.getByText("No agents yet").waitFor();
    // Every control has an accessible name, on every page.
    assert.deepEqual(await unlabelledControls(page), [], "agents page");
    // Tab from the top reaches the create form's fields and its button, in order; Enter creates.
    const focused = [];
    for (let i = 0; i < 12; i++) {
      await page.keyboard.press("Tab");
      focused.push(await page.evaluate(() => document.activeElement?.getAttribute("name") || document.activeElement?.textContent?.trim()));
    }
    const at = (what) => focused.indexOf(what);
    assert.ok(at("name") !== -1 && at("name") < at("description") && at("description") < at("Create agent"), `tab order: ${focused.join(" → ")}`);
    await page.getByLabel("Name", { exact: true }).focus();
    await page.keyboard.type("keyboard-agent");
    await page.keyboard.press("Enter");
    await page.locator('tr[data-agent="keyboard-agent"]').waitFor();
    await page.locator('tr[data-agent="keyboard-agent"]').getByRole("link").click();
    await page.getByRole("heading", { name: /keyboard-agent/ }).waitFor();
    assert.deepEqual(await unlabelledControls(page), [], "agent page");
    await page.getByRole("link", { name: "Open the playground" }).click();
    await page.getByLabel("Message", { exact: true }).waitFor();
    assert.deepEqual(await unlabelledControls(page), [], "playground");
    for (const [link, ready] of [["API keys", "Create key"], ["Usage", null]]) {
      await page.getByRole("link", { name: link }).click();
      if (ready) await page.getByRole("button", { name: ready }).waitFor();
      else await page.getByTestId("meters").waitFor();
      assert.deepEqual(await unlabelledControls(page), [], link);
    }
  } finally {
    await context.close();
  }
});

test("signed out, no API call is made with a token, and signing out ends the session at the provider", { timeout: 60_000 }, async () => {
  const { page, context } = await newPage();
  try {
    await signIn(page, "dash-leaver");
    await page.getByRole("button", { name: "Sign out" }).click();
    await page.getByRole("button", { name: "Sign in" }).waitFor();
    // A reload stays signed out: the provider ended the session, not only the page.
    await page.reload();
    await page.getByRole("button", { name: "Sign in" }).waitFor();
    // The provider sends a person back only to a dashboard it serves, and signs in only from its own page.
    const signInPost = (origin, redirect) =>
      fetch(`${stack.idp.origin}/sign-in`, { method: "POST", headers: { Origin: origin }, body: new URLSearchParams({ username: "x", redirect_url: redirect }), redirect: "manual" });
    const away = await signInPost(stack.idp.origin, "https://evil.example/");
    assert.equal(away.status, 400);
    assert.equal(away.headers.get("set-cookie"), null, "no session for a sign-in that would leave for another site");
    const forged = await signInPost("https://evil.example", stack.base);
    assert.equal(forged.status, 403, "another site cannot sign the browser in");
    assert.equal(forged.headers.get("set-cookie"), null);
    const fair = await signInPost(stack.idp.origin, stack.base);
    assert.equal(fair.status, 303);
    assert.match(fair.headers.get("set-cookie"), /Path=\/v1\/client; HttpOnly; SameSite=Lax/, "the session cookie goes only to the frontend API");
  } finally {
    await context.close();
  }
});
