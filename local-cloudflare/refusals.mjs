// What Cloudflare refuses in a script upload or a secret, checked before anything changes, with the status and
// code the Workers API answers. Where Cloudflare publishes no specific code, the refusal uses 10021 ("script
// content failed validation checks"), the code the Workers API gives every other validation failure.
import { MAX_ENV_BINDINGS, MAX_ENV_VALUE_BYTES, MAX_TAGS, MODULE_TYPES, failure } from "./wire.mjs";

const ENV_TYPES = new Set(["plain_text", "secret_text", "json"]);

/** The refusal for an upload's `metadata` and module parts, or null when Cloudflare would take it. */
export function uploadRefusal(metadata, modules) {
  for (const m of modules) {
    if (!(m.contentType in MODULE_TYPES)) {
      return failure(400, 10021, `module with name '${m.name}' has unsupported content type '${m.contentType}'`);
    }
  }
  const python = modules.find((m) => MODULE_TYPES[m.contentType] === "Python");
  if (python) return failure(400, 10021, `module with name '${python.name}' is a Python module, which the local Cloudflare cannot run`);
  return tagRefusal(metadata.tags) ?? bindingRefusal(metadata.bindings);
}

function tagRefusal(tags) {
  if (tags === undefined) return null;
  if (!Array.isArray(tags) || tags.some((t) => typeof t !== "string" || t === "")) return failure(400, 10021, "tags must be a list of non-empty strings");
  if (tags.length > MAX_TAGS) return failure(400, 10021, `a script may have at most ${MAX_TAGS} tags; this one has ${tags.length}`);
  const bad = tags.find((t) => /[,&]/.test(t));
  if (bad) return failure(400, 10021, `tag '${bad}' contains ',' or '&', which a tag may not contain`);
  return null;
}

function bindingRefusal(bindings = []) {
  if (!Array.isArray(bindings)) return failure(400, 10021, "bindings must be a list");
  const seen = new Set();
  let environment = 0;
  for (const b of bindings) {
    if (typeof b?.name !== "string" || b.name === "") return failure(400, 10052, "A binding is missing a name.");
    if (seen.has(b.name)) return failure(400, 10053, `Binding name '${b.name}' already in use. Please use a different name and try again.`);
    seen.add(b.name);
    if (!ENV_TYPES.has(b.type)) continue;
    environment++;
    const value = b.type === "json" ? JSON.stringify(b.json) : b.text;
    if (typeof value === "string" && Buffer.byteLength(value) > MAX_ENV_VALUE_BYTES) return envValueTooLarge(b.name);
  }
  if (environment > MAX_ENV_BINDINGS) return failure(400, 10055, `A script may have at most ${MAX_ENV_BINDINGS} environment variables and secrets; this one has ${environment}.`);
  return null;
}

const envValueTooLarge = (name) => failure(400, 10054, `The value of '${name}' is larger than ${MAX_ENV_VALUE_BYTES} bytes.`);

/**
 * The refusal for a secrets PUT body against the script's current environment, or null. A secret may replace a
 * secret but not take the name of a plain variable (10053, as on Cloudflare).
 */
export function secretRefusal(secret, script) {
  if (!secret || typeof secret.name !== "string" || secret.name === "" || typeof secret.text !== "string") {
    return failure(400, 10021, "expected a JSON body {name, text, type: \"secret_text\"}");
  }
  if (secret.type !== "secret_text") return failure(400, 10021, `secret type must be "secret_text", not ${JSON.stringify(secret.type ?? null)}`);
  if (secret.name in script.plainBindings) return failure(400, 10053, `Binding name '${secret.name}' already in use. Please use a different name and try again.`);
  if (Buffer.byteLength(secret.text) > MAX_ENV_VALUE_BYTES) return envValueTooLarge(secret.name);
  const count = Object.keys(script.plainBindings).length + Object.keys(script.secrets).length + (secret.name in script.secrets ? 0 : 1);
  if (count > MAX_ENV_BINDINGS) return failure(400, 10055, `A script may have at most ${MAX_ENV_BINDINGS} environment variables and secrets.`);
  return null;
}
