// The control plane's API as the dashboard calls it: same origin, the signed-in person's session token as the
// bearer token, and every failure turned into an ApiError carrying the envelope's code, message, retryable flag
// and request id (what a person needs to report a problem).
import { getToken } from "./auth";

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly retryable: boolean,
    readonly requestId: string | null,
    readonly details: Record<string, unknown> | null = null,
  ) {
    super(message);
  }
}

export interface Entitlements {
  requestsPerPeriod: number;
  tokensPerPeriod: number;
  computeMsPerPeriod: number;
  maxAgents: number;
  runtimeProviders: string[];
  streaming: boolean;
  deploysPerHour: number;
  deploysInFlight: number;
  liveScripts: number;
  bundleBytes: number;
}
export interface Me {
  id: string;
  tier: string;
  createdAt: number;
  entitlements: Entitlements;
}
export interface Agent {
  id: string;
  name: string;
  description: string | null;
  status: "active" | "disabled";
  activeDeploymentId: string | null;
  createdAt: number;
  updatedAt: number;
}
export interface DeploymentError {
  step: string;
  endpoint: string | null;
  kind: string;
  status: number | null;
  providerCodes: number[];
  message: string;
}
export interface Deployment {
  id: string;
  agentId: string;
  version: number;
  status: "deploying" | "active" | "failed" | "inactive";
  runtimeProvider: "cloudflare" | "agentcore";
  source: "template" | "custom" | "image";
  /** AgentCore deployments: the image they run. */
  containerUri?: string;
  mainModuleName: string;
  codeSha256: string;
  error: DeploymentError | null;
  createdAt: number;
  updatedAt: number;
  finishedAt: number | null;
  retries: number;
}
export interface Secret {
  name: string;
  createdAt: number;
  updatedAt: number;
}

/** Calls the API; `body` is sent as JSON. Resolves with the parsed answer (null for 204). */
export async function api<T>(method: string, path: string, body?: unknown, init: RequestInit = {}): Promise<T> {
  const res = await send(method, path, body, init);
  if (res.status === 204) return null as T;
  return (await res.json()) as T;
}

/** Like `api`, but hands back the Response (headers, streamed body) once it is known to be a success. */
export async function send(method: string, path: string, body?: unknown, init: RequestInit = {}): Promise<Response> {
  const token = await getToken();
  const headers = new Headers(init.headers);
  if (token) headers.set("Authorization", `Bearer ${token}`);
  if (body !== undefined) headers.set("Content-Type", "application/json");
  let res: Response;
  try {
    res = await fetch(path, { ...init, method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (error) {
    if ((error as Error).name === "AbortError") throw error;
    throw new ApiError(0, "network_error", "The control plane could not be reached. Check your connection and try again.", true, null);
  }
  if (!res.ok) throw await errorOf(res);
  return res;
}

async function errorOf(res: Response): Promise<ApiError> {
  const requestId = res.headers.get("X-Request-Id");
  try {
    const { error } = await res.json();
    return new ApiError(res.status, error.code, error.message, Boolean(error.retryable), error.requestId ?? requestId, error.details ?? null);
  } catch {
    return new ApiError(res.status, "unexpected_response", `The control plane answered ${res.status} without an error envelope.`, res.status >= 500, requestId);
  }
}
export interface ApiKey {
  id: string;
  name: string;
  prefix: string;
  agentId: string | null;
  createdAt: number;
  lastUsedAt: number | null;
  revokedAt: number | null;
}
export interface UsageTotals {
  events: number;
  requests: number;
  inputTokens: number;
  outputTokens: number;
  tokens: number;
  computeMs: number;
  errors: number;
  gatewayMs: number;
}
export interface UsageCurrent {
  periodKey: string;
  periodStart: string;
  resetsAt: string;
  tier: string;
  totals: UsageTotals;
  measured: { invocations: number; gatewayMs: number; answerInputTokens: number; answerOutputTokens: number };
  requestsReserved: number;
  entitlements: Entitlements;
  remaining: { requests: number; tokens: number; computeMs: number };
  exhausted: ("requestsPerPeriod" | "tokensPerPeriod" | "computeMsPerPeriod")[];
}
export interface UsagePeriod {
  periodKey: string;
  totals: UsageTotals;
  finalized: boolean;
}
export interface MetricsEvent {
  eventId: string | null;
  traceId: string;
  deploymentId: string;
  agentId: string;
  ts: number;
  requests: number;
  inputTokens: number;
  outputTokens: number;
  computeMs: number;
  errors: number;
}
export interface BillingView {
  tier: "free" | "pro" | "enterprise";
  subscription: { status: string; tier: string; currentPeriodEnd: number | null; cancelAtPeriodEnd: boolean } | null;
  purchasable: ("pro" | "enterprise")[];
}
