// Prints (only) a bearer token for the local stack: `node scripts/token.mjs <subject>`, valid for one hour.
import { importJWK, SignJWT } from "jose";
import { readFileSync } from "node:fs";
import { DEV_AUDIENCE, DEV_ISSUER, KEY_FILE } from "./dev-identity.mjs";

const subject = process.argv[2];
if (!subject) {
  console.error("usage: node scripts/token.mjs <subject>");
  process.exit(2);
}
const jwk = JSON.parse(readFileSync(KEY_FILE, "utf8"));
const token = await new SignJWT({})
  .setProtectedHeader({ alg: "RS256", kid: jwk.kid, typ: "JWT" })
  .setIssuer(DEV_ISSUER)
  .setAudience(DEV_AUDIENCE)
  .setSubject(subject)
  .setIssuedAt()
  .setExpirationTime("1h")
  .sign(await importJWK(jwk, "RS256"));
process.stdout.write(token + "\n");
