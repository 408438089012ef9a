// The local identity provider's browser script: the part of clerk-js's `window.Clerk` the dashboard uses, backed
// by the local provider's frontend API (see server.mjs). Loaded like clerk-js, from the provider's own origin.
(() => {
  const FRONTEND_API = "__FRONTEND_API__";
  // Ask for a new token this long before the current one expires.
  const REFRESH_MARGIN_MS = 10_000;
  const listeners = new Set();

  const api = async (method, path) => {
    const res = await fetch(`${FRONTEND_API}${path}`, { method, credentials: "include" });
    const body = await res.json().catch(() => ({}));
    if (!res.ok) throw new Error(body.errors?.[0]?.message || `local identity provider answered ${res.status}`);
    return body;
  };

  const toUser = (u) => ({ id: u.id, username: u.username, fullName: null, primaryEmailAddress: null });

  const clerk = {
    loaded: false,
    user: null,
    session: null,
    async load() {
      const { response } = await api("GET", "/v1/client");
      const active = response.sessions.find((s) => s.id === response.last_active_session_id) || null;
      this.user = active ? toUser(active.user) : null;
      this.session = active ? makeSession(active.id) : null;
      this.loaded = true;
      notify();
    },
    addListener(fn) {
      listeners.add(fn);
      if (this.loaded) fn({ user: this.user, session: this.session });
      return () => listeners.delete(fn);
    },
    redirectToSignIn({ redirectUrl } = {}) {
      const back = redirectUrl || window.location.href;
      window.location.assign(`${FRONTEND_API}/sign-in?redirect_url=${encodeURIComponent(back)}`);
    },
    async signOut() {
      if (this.session) await api("POST", `/v1/client/sessions/${this.session.id}/end`);
      this.user = null;
      this.session = null;
      notify();
    },
  };

  function makeSession(id) {
    let cached = null; // { jwt, expiresAt }
    return {
      id,
      async getToken({ skipCache = false } = {}) {
        if (!skipCache && cached && cached.expiresAt - REFRESH_MARGIN_MS > Date.now()) return cached.jwt;
        try {
          const { jwt } = await api("POST", `/v1/client/sessions/${id}/tokens`);
          const { exp } = JSON.parse(atob(jwt.split(".")[1].replace(/-/g, "+").replace(/_/g, "/")));
          cached = { jwt, expiresAt: exp * 1000 };
          return jwt;
        } catch {
          // The session ended elsewhere: signed out, as clerk-js reports it.
          clerk.user = null;
          clerk.session = null;
          notify();
          return null;
        }
      },
    };
  }

  function notify() {
    for (const fn of listeners) fn({ user: clerk.user, session: clerk.session });
  }

  window.Clerk = clerk;
})();
