// AWS Signature Version 4, checked the way AWS checks it, with an implementation independent of the control
// plane's: @smithy/signature-v4 (the signer of the AWS SDK for JavaScript) re-signs the request as received, over
// exactly the headers it names, at the time it names, and the signatures are compared in constant time. Failures
// answer as AWS's REST-JSON services do: 403 with `x-amzn-ErrorType` and `{"message": …}`.
import { createHash, randomUUID, timingSafeEqual } from "node:crypto";
import { SignatureV4 } from "@smithy/signature-v4";
import { Sha256 } from "@aws-crypto/sha256-js";

/** How far a request's X-Amz-Date may be from now (the SigV4 default). */
export const MAX_SKEW_MS = 15 * 60 * 1000;
const MISMATCH =
  "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.";
const AUTHORIZATION = /^AWS4-HMAC-SHA256 Credential=([^/]+)\/(\d{8})\/([^/]+)\/([^/]+)\/aws4_request,\s*SignedHeaders=([a-z0-9;-]+),\s*Signature=([0-9a-f]{64})$/;

const basicDate = (d) => d.toISOString().replace(/[-:]|\.\d{3}/g, "");

/** An AWS REST-JSON error: the status, the error type in `x-amzn-ErrorType`, `{"message"}` and a request id. */
export function awsError(status, type, message, extra = {}) {
  return {
    status,
    headers: { "content-type": "application/json", "x-amzn-errortype": type, "x-amzn-requestid": randomUUID() },
    body: JSON.stringify({ message, ...extra }),
  };
}

/** The decoded query of a raw query string, repeated names as arrays (as the signer takes it). */
function decodedQuery(rawQuery) {
  const query = {};
  for (const pair of rawQuery.split("&").filter(Boolean)) {
    const [k, v = ""] = pair.split("=");
    const key = decodeURIComponent(k.replaceAll("+", "%20"));
    const value = decodeURIComponent(v.replaceAll("+", "%20"));
    query[key] = query[key] === undefined ? value : [].concat(query[key], value);
  }
  return query;
}

/**
 * Checks one request: `rawPath` and `rawQuery` as they came on the wire, `headers` lower-cased, `body` the bytes.
 * `credentials` maps access key ids to `{ secretAccessKey, sessionToken? }`. Answers `{ ok: true, accessKeyId }`
 * or `{ ok: false, error }` with the AWS error to send.
 */
export async function verify({ method, rawPath, rawQuery, headers, body }, { credentials, region, service, now = Date.now() }) {
  const refuse = (status, type, message) => ({ ok: false, error: awsError(status, type, message) });
  const authorization = headers.authorization;
  if (!authorization) return refuse(403, "MissingAuthenticationTokenException", "Missing Authentication Token");
  const m = AUTHORIZATION.exec(authorization);
  if (!m) {
    return refuse(400, "IncompleteSignatureException", "Authorization header requires 'Credential', 'SignedHeaders' and 'Signature' parameters.");
  }
  const [, accessKeyId, scopeDate, scopeRegion, scopeService, signedList, signature] = m;
  const amzDate = headers["x-amz-date"];
  if (!/^\d{8}T\d{6}Z$/.test(amzDate ?? "")) {
    return refuse(400, "IncompleteSignatureException", "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.");
  }
  if (scopeDate !== amzDate.slice(0, 8)) {
    return refuse(403, "InvalidSignatureException", "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP");
  }
  if (scopeRegion !== region) return refuse(403, "InvalidSignatureException", `Credential should be scoped to a valid region, not '${scopeRegion}'.`);
  if (scopeService !== service) return refuse(403, "InvalidSignatureException", `Credential should be scoped to correct service: '${service}'.`);
  const signedAt = Date.parse(`${amzDate.slice(0, 4)}-${amzDate.slice(4, 6)}-${amzDate.slice(6, 8)}T${amzDate.slice(9, 11)}:${amzDate.slice(11, 13)}:${amzDate.slice(13, 15)}Z`);
  if (signedAt < now - MAX_SKEW_MS) {
    return refuse(403, "InvalidSignatureException", `Signature expired: ${amzDate} is now earlier than ${basicDate(new Date(now - MAX_SKEW_MS))} (${basicDate(new Date(now))} - 15 min.)`);
  }
  if (signedAt > now + MAX_SKEW_MS) {
    return refuse(403, "InvalidSignatureException", `Signature not yet current: ${amzDate} is still later than ${basicDate(new Date(now + MAX_SKEW_MS))} (${basicDate(new Date(now))} + 15 min.)`);
  }
  const known = credentials.get(accessKeyId);
  if (!known) return refuse(403, "UnrecognizedClientException", "The security token included in the request is invalid.");
  const signedNames = signedList.split(";");
  if (!signedNames.includes("host")) return refuse(403, "InvalidSignatureException", MISMATCH);
  const signedHeaders = {};
  for (const name of signedNames) {
    if (headers[name] === undefined) return refuse(403, "InvalidSignatureException", MISMATCH);
    signedHeaders[name] = headers[name];
  }
  // Temporary credentials sign their session token, the one issued with the key; a long-term key has none.
  if (signedHeaders["x-amz-security-token"] !== known.sessionToken) {
    return refuse(403, "UnrecognizedClientException", "The security token included in the request is invalid.");
  }
  if (signedHeaders["x-amz-content-sha256"] && signedHeaders["x-amz-content-sha256"] !== createHash("sha256").update(body).digest("hex")) {
    return refuse(400, "InvalidSignatureException", "The provided 'x-amz-content-sha256' header does not match what was computed.");
  }
  const signer = new SignatureV4({
    service,
    region,
    credentials: { accessKeyId, secretAccessKey: known.secretAccessKey, sessionToken: signedHeaders["x-amz-security-token"] },
    sha256: Sha256,
    applyChecksum: false,
  });
  const resigned = await signer.sign(
    { method, protocol: "https:", hostname: headers.host, path: rawPath, query: decodedQuery(rawQuery), headers: signedHeaders, body },
    { signingDate: new Date(signedAt), signableHeaders: new Set(signedNames) },
  );
  const expected = Buffer.from(/Signature=([0-9a-f]{64})$/.exec(resigned.headers.authorization)[1]);
  const given = Buffer.from(signature);
  if (expected.length !== given.length || !timingSafeEqual(expected, given)) return refuse(403, "InvalidSignatureException", MISMATCH);
  return { ok: true, accessKeyId };
}
