// Signing in: Clerk in production, the local identity provider (Clerk-compatible) on the local stack. Either way
// the provider's own script is loaded from the address the control plane names (GET /v1/dashboard/config), and
// its session token is the bearer token of every API call. The control plane never mints a token.

interface ClerkSession {
  id: string;
  getToken(options?: { skipCache?: boolean }): Promise<string | null>;
}
interface ClerkUser {
  id: string;
  username?: string | null;
  fullName?: string | null;
  primaryEmailAddress?: { emailAddress: string } | null;
}
interface Clerk {
  load(options?: Record<string, unknown>): Promise<void>;
  user: ClerkUser | null | undefined;
  session: ClerkSession | null | undefined;
  addListener(fn: (state: { user?: ClerkUser | null; session?: ClerkSession | null }) => void): () => void;
  redirectToSignIn(options?: { redirectUrl?: string }): Promise<unknown> | void;
  signOut(): Promise<void>;
}
declare global {
  interface Window {
    Clerk?: Clerk;
  }
}

export interface SignInConfig {
  provider: "clerk";
  publishableKey: string;
  scriptUrl: string;
}

let clerk: Clerk | null = null;

/** Loads the identity provider's script and its state. Resolves once it knows whether someone is signed in. */
export async function startAuth(config: SignInConfig): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const script = document.createElement("script");
    script.src = config.scriptUrl;
    script.async = true;
    script.crossOrigin = "anonymous";
    script.dataset.clerkPublishableKey = config.publishableKey;
    script.onload = () => resolve();
    script.onerror = () => reject(new Error(`The identity provider's script could not be loaded from ${config.scriptUrl}.`));
    document.head.appendChild(script);
  });
  if (!window.Clerk) throw new Error("The identity provider's script did not start.");
  clerk = window.Clerk;
  await clerk.load();
}

export function currentUser(): { id: string; label: string } | null {
  const user = clerk?.user;
  if (!user) return null;
  return { id: user.id, label: user.primaryEmailAddress?.emailAddress || user.username || user.fullName || user.id };
}

export function onAuthChange(fn: () => void): () => void {
  return clerk ? clerk.addListener(() => fn()) : () => {};
}

export async function getToken(): Promise<string | null> {
  return (await clerk?.session?.getToken()) ?? null;
}

export function signIn(): void {
  void clerk?.redirectToSignIn({ redirectUrl: window.location.href });
}

export async function signOut(): Promise<void> {
  await clerk?.signOut();
}
