// Creates the local stack's own RS256 signing key (once, in .dev/, git-ignored) and writes the matching
// AUTH_ISSUER and AUTH_JWKS into .dev.vars, which `wrangler dev` reads. Other lines in .dev.vars are kept,
// so local additions such as CORS_ALLOWED_ORIGINS survive.
import { exportJWK, generateKeyPair } from "jose";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { randomUUID } from "node:crypto";
import { DEV_ISSUER, KEY_FILE } from "./dev-identity.mjs";

async function loadOrCreateKey() {
  if (existsSync(KEY_FILE)) return JSON.parse(readFileSync(KEY_FILE, "utf8"));
  const { privateKey } = await generateKeyPair("RS256", { modulusLength: 2048, extractable: true });
  const jwk = { ...(await exportJWK(privateKey)), kid: `dev-${randomUUID()}`, alg: "RS256", use: "sig" };
  mkdirSync(".dev", { recursive: true, mode: 0o700 });
  writeFileSync(KEY_FILE, JSON.stringify(jwk, null, 2) + "\n", { mode: 0o600 });
  return jwk;
}

const key = await loadOrCreateKey();
const { kty, n, e, kid, alg, use } = key;
const jwks = JSON.stringify({ keys: [{ kty, n, e, kid, alg, use }] });

const managed = { AUTH_ISSUER: DEV_ISSUER, AUTH_JWKS: jwks };
const kept = existsSync(".dev.vars")
  ? readFileSync(".dev.vars", "utf8")
      .split("\n")
      .filter((line) => line.trim() && !Object.keys(managed).some((name) => line.startsWith(`${name}=`)))
  : ["# Local-only settings for `wrangler dev`. AUTH_* lines are rewritten by scripts/dev-keys.mjs."];
const lines = [...kept, ...Object.entries(managed).map(([name, value]) => `${name}='${value}'`)];
writeFileSync(".dev.vars", lines.join("\n") + "\n", { mode: 0o600 });
console.error(`Local signing key ${kid} ready; .dev.vars written.`);
