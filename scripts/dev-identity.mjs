// The local stack's identity provider: its issuer and where its private signing key lives (git-ignored).
export const DEV_ISSUER = "http://127.0.0.1/webhost-local-dev";
export const KEY_FILE = ".dev/signing-key.json";
