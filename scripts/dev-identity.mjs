// The local stack's identity provider: its issuer and where its private signing key lives (git-ignored).
export const DEV_ISSUER = "http://127.0.0.1/webhost-local-dev";
// The audience the local stack's tokens are issued for, and the only one it accepts (AUTH_AUDIENCES).
export const DEV_AUDIENCE = "webhost-local-dev";
export const KEY_FILE = ".dev/signing-key.json";
// The local stack's AES-256 key for secrets at rest (created once, git-ignored).
export const ENCRYPTION_KEY_FILE = ".dev/encryption-key";
// The local stack's operator token for /v1/admin/… (created once, git-ignored; `make admin-token` prints it).
export const ADMIN_TOKEN_FILE = ".dev/admin-token";
