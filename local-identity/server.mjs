// The local identity provider: a stand-in for Clerk on this machine, so the dashboard signs people in the same
// way locally as in production. It serves
//
//   /npm/@clerk/clerk-js@5/dist/clerk.browser.js  a script with the part of clerk-js's browser API the dashboard
//                                                 uses (window.Clerk: load, user, session.getToken, addListener,
//                                                 redirectToSignIn, signOut), talking to the endpoints below
//   /sign-in?redirect_url=…                       a sign-in page: a person picks a user name, no password
//   /v1/client, /v1/client/sessions/:id/tokens,   Clerk's frontend API shapes: the signed-in client, a fresh
//   /v1/client/sessions/:id/end                   session token (RS256, 60 s, `azp` = the dashboard's origin), sign out
//   /.well-known/jwks.json                        the public key the local control plane trusts (AUTH_JWKS_URL)
//
// Tokens are signed with the local stack's key (.dev/signing-key.json, the one `make token` uses), so a person
// signed in as `alice` is the same user as `make token USER=alice`. The control plane never mints a token.
import http from "node:http";
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { importJWK, SignJWT } from "jose";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const CLERK_JS_PATH = "/npm/@clerk/clerk-js@5/dist/clerk.browser.js";
const SESSION_COOKIE = "__local_identity_session";
// Cookies are not told apart by port: the session goes only to the frontend API's paths, never to the control
// plane or to deployed agents on other ports of the same host.
const COOKIE_SCOPE = "Path=/v1/client; HttpOnly; SameSite=Lax";
// Clerk's session tokens live 60 s; clients ask for a new one before that.
const TOKEN_LIFETIME_S = 60;
// A user name becomes the token's `sub`: what the control plane calls the user.
const USER_NAME = /^[A-Za-z0-9_.@-]{1,64}$/;

/**
 * `signingKey`: the private RS256 JWK (with `kid`). `allowedOrigins`: the dashboard origins that may use this
 * provider (CORS, redirects after sign-in, and the `azp` of their tokens).
 */
export async function startLocalIdentity({ port = 0, host = "127.0.0.1", signingKey, issuer, audience, allowedOrigins, log = () => {} }) {
  const privateKey = await importJWK(signingKey, "RS256");
  const { kty, n, e, kid } = signingKey;
  const jwks = JSON.stringify({ keys: [{ kty, n, e, kid, alg: "RS256", use: "sig" }] });
  const sessions = new Map(); // session id → { id, userId, createdAt }
  const script = readFileSync(path.join(HERE, "clerk-browser.js"), "utf8");
  const origins = new Set(allowedOrigins);
  // This provider's own origin (known once it listens): what its script calls, and the only page that signs in.
  let self = null;

  const sessionOf = (req) => {
    const cookie = (req.headers.cookie || "").split(/;\s*/).find((c) => c.startsWith(`${SESSION_COOKIE}=`));
    return cookie ? sessions.get(cookie.slice(SESSION_COOKIE.length + 1)) ?? null : null;
  };
  const clientJson = (session) => ({
    response: {
      object: "client",
      sessions: session ? [{ object: "session", id: session.id, status: "active", user: userJson(session.userId) }] : [],
      last_active_session_id: session?.id ?? null,
    },
  });
  const userJson = (id) => ({ object: "user", id, username: id, first_name: null, last_name: null, email_addresses: [] });

  /** Where to send a person after sign-in: only back to an allowed dashboard origin. */
  const safeRedirect = (raw) => {
    try {
      const url = new URL(raw);
      return origins.has(url.origin) ? url.href : null;
    } catch {
      return null;
    }
  };

  const server = http.createServer(async (req, res) => {
    const url = new URL(req.url, `http://${req.headers.host || host}`);
    const origin = req.headers.origin;
    const cors = origin && origins.has(origin) ? { "Access-Control-Allow-Origin": origin, "Access-Control-Allow-Credentials": "true", Vary: "Origin" } : {};
    const json = (status, body) => res.writeHead(status, { "Content-Type": "application/json", "Cache-Control": "no-store", ...cors }).end(JSON.stringify(body));
    const error = (status, code, message) => json(status, { errors: [{ code, message, long_message: message }] });
    try {
      if (req.method === "OPTIONS") {
        if (!cors["Access-Control-Allow-Origin"]) return res.writeHead(403).end();
        return res.writeHead(204, { ...cors, "Access-Control-Allow-Methods": "GET, POST", "Access-Control-Allow-Headers": "Content-Type", "Access-Control-Max-Age": "600" }).end();
      }
      if (req.method === "GET" && url.pathname === "/.well-known/jwks.json") {
        return res.writeHead(200, { "Content-Type": "application/json", "Cache-Control": "max-age=60" }).end(jwks);
      }
      if (req.method === "GET" && url.pathname === CLERK_JS_PATH) {
        // Public, like clerk-js on Clerk's CDN: any page may load it (the dashboard loads it with CORS).
        return res.writeHead(200, { "Content-Type": "text/javascript; charset=utf-8", "Cache-Control": "no-cache", "Access-Control-Allow-Origin": "*" }).end(script.replace("__FRONTEND_API__", () => self));
      }
      if (url.pathname === "/sign-in") return signIn(req, res, url);
      // The frontend API: only for an allowed dashboard origin, with the session cookie.
      if (url.pathname.startsWith("/v1/client")) {
        if (!cors["Access-Control-Allow-Origin"]) return error(403, "origin_invalid", "This origin may not use the local identity provider.");
        const session = sessionOf(req);
        if (req.method === "GET" && url.pathname === "/v1/client") return json(200, clientJson(session));
        const match = /^\/v1\/client\/sessions\/([^/]+)\/(tokens|end)$/.exec(url.pathname);
        if (req.method === "POST" && match) {
          if (!session || session.id !== match[1]) return error(401, "signed_out", "You are signed out.");
          if (match[2] === "end") {
            sessions.delete(session.id);
            res.setHeader("Set-Cookie", `${SESSION_COOKIE}=; ${COOKIE_SCOPE}; Max-Age=0`);
            return json(200, clientJson(null));
          }
          const jwt = await new SignJWT({ sid: session.id, azp: origin })
            .setProtectedHeader({ alg: "RS256", kid, typ: "JWT" })
            .setIssuer(issuer)
            .setAudience(audience)
            .setSubject(session.userId)
            .setIssuedAt()
            .setNotBefore(Math.floor(Date.now() / 1000) - 5)
            .setExpirationTime(Math.floor(Date.now() / 1000) + TOKEN_LIFETIME_S)
            .sign(privateKey);
          return json(200, { object: "token", jwt });
        }
      }
      res.writeHead(404, { "Content-Type": "text/plain" }).end("local identity provider: unknown path");
    } catch (err) {
      log(`error: ${err.message}`);
      if (!res.headersSent) res.writeHead(500, { "Content-Type": "text/plain" }).end("local identity provider error");
    }
  });

  async function signIn(req, res, url) {
    if (req.method === "GET") {
      const back = safeRedirect(url.searchParams.get("redirect_url") || "");
      return page(res, 200, back, "");
    }
    if (req.method !== "POST") return res.writeHead(405, { Allow: "GET, POST" }).end();
    // Only this provider's own page signs anyone in: no other site can post a user name here (login CSRF).
    if (req.headers.origin !== self) return page(res, 403, null, "Sign in from this provider's own page.");
    let body;
    try {
      body = await readBody(req);
    } catch {
      return page(res, 413, null, "That sign-in form is too large.");
    }
    const form = new URLSearchParams(body);
    const back = safeRedirect(form.get("redirect_url") || "");
    const username = (form.get("username") || "").trim();
    if (!back) return page(res, 400, null, "This sign-in did not come from a dashboard this provider serves.");
    if (!USER_NAME.test(username)) return page(res, 400, back, "A user name is 1 to 64 letters, digits, or . _ @ -");
    const session = { id: `sess_${randomBytes(12).toString("hex")}`, userId: username, createdAt: Date.now() };
    sessions.set(session.id, session);
    log(`signed in ${username}`);
    res.writeHead(303, { Location: back, "Set-Cookie": `${SESSION_COOKIE}=${session.id}; ${COOKIE_SCOPE}` }).end();
  }

  await new Promise((resolve) => server.listen(port, host, resolve));
  const origin = `http://${host}:${server.address().port}`;
  self = origin;
  return {
    origin,
    scriptUrl: `${origin}${CLERK_JS_PATH}`,
    jwksUrl: `${origin}/.well-known/jwks.json`,
    /** Clerk's development publishable key format: pk_test_ + base64("<frontend API host>$"). */
    publishableKey: `pk_test_${Buffer.from(`${host}:${server.address().port}$`).toString("base64")}`,
    close: () =>
      new Promise((resolve) => {
        server.close(resolve);
        server.closeAllConnections?.();
      }),
  };
}

const escapeHtml = (s) => String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);

function page(res, status, back, problem) {
  const body = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sign in · webhost.systems (local)</title><link rel="icon" href="data:,">
<style>
body{font:16px/1.5 system-ui,sans-serif;background:#f5f6f8;color:#1b1f24;display:grid;place-items:center;min-height:100vh;margin:0}
main{background:#fff;border:1px solid #d8dce2;border-radius:12px;padding:2rem;width:min(22rem,90vw);box-shadow:0 4px 16px #0001}
h1{font-size:1.25rem;margin:0 0 .25rem}p{color:#57606a;margin:.25rem 0 1rem}label{display:block;font-weight:600;margin-bottom:.25rem}
input{width:100%;box-sizing:border-box;font:inherit;padding:.5rem .6rem;border:1px solid #b8bfc8;border-radius:6px}
button{margin-top:1rem;width:100%;font:inherit;font-weight:600;padding:.55rem;border:0;border-radius:6px;background:#2f5bd3;color:#fff;cursor:pointer}
.problem{color:#b42318;font-weight:600}
</style></head><body><main>
<h1>Sign in</h1>
<p>The local identity provider of webhost.systems. Any user name signs in; no password, no account.</p>
${problem ? `<p class="problem" role="alert">${escapeHtml(problem)}</p>` : ""}
${back ? `<form method="post" action="/sign-in">
<input type="hidden" name="redirect_url" value="${escapeHtml(back)}">
<label for="username">User name</label>
<input id="username" name="username" autocomplete="username" required maxlength="64" pattern="[A-Za-z0-9_.@\\-]{1,64}" autofocus>
<button type="submit">Continue</button>
</form>` : `<p class="problem" role="alert">Open the dashboard and sign in from there.</p>`}
</main></body></html>`;
  res.writeHead(status, { "Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-store", "X-Frame-Options": "DENY" }).end(body);
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    let size = 0;
    const chunks = [];
    req.on("data", (c) => {
      size += c.length;
      if (size > 16 * 1024) {
        req.destroy();
        return reject(new Error("sign-in form too large"));
      }
      chunks.push(c);
    });
    req.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
    req.on("error", reject);
  });
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const { DEV_AUDIENCE, DEV_ISSUER, KEY_FILE } = await import("../scripts/dev-identity.mjs");
  const port = Number(process.env.LOCAL_IDENTITY_PORT || 8789);
  const dashboardPort = process.env.PORT || "8787";
  const idp = await startLocalIdentity({
    port,
    signingKey: JSON.parse(readFileSync(KEY_FILE, "utf8")),
    issuer: DEV_ISSUER,
    audience: DEV_AUDIENCE,
    allowedOrigins: [`http://127.0.0.1:${dashboardPort}`, `http://localhost:${dashboardPort}`],
    log: (line) => console.log(`[local-identity] ${line}`),
  });
  console.log(`[local-identity] sign-in on ${idp.origin}/sign-in; keys at ${idp.jwksUrl}`);
}
