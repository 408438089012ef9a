//! Who is calling. A verified token is remembered (by its SHA-256) until its `exp`, the user an identity maps
//! to and the holder of an API key are remembered for the isolate's life (they never change), so the steady
//! state of an invocation spends neither an RSA verification nor a D1 read on the caller. Whether a key still
//! works is the user gate's to say, on every call.

use super::d1::D1Store;
use super::jwks;
use super::JsClock;
use crate::app::invoke::{invalid_api_key, Caller, KeyHolder};
use crate::app::ports::{Clock, Store};
use crate::app::users;
use crate::auth::bearer::{bearer, Bearer};
use crate::auth::verdict_cache::{VerdictCache, DEFAULT_CAPACITY};
use crate::auth::{jwt, Identity};
use crate::config::ServiceConfig;
use crate::crypto::sha256_hex;
use crate::domain::ids::UserId;
use crate::domain::user::User;
use crate::domain::{api_key, ApiError, ErrorCode};
use std::cell::RefCell;
use std::rc::Rc;

/// How long a key hash D1 does not know is remembered as unknown.
const UNKNOWN_KEY_MS: i64 = 60_000;

/// Held for the isolate's life: these facts never change once true.
const FOREVER: i64 = i64::MAX;

struct Caches {
    /// The configuration the verdicts were reached under: a new one starts them afresh.
    config: Option<Rc<ServiceConfig>>,
    tokens: VerdictCache<String, Identity>,
    users: VerdictCache<(String, String), UserId>,
    keys: VerdictCache<String, KeyHolder>,
    /// Key hashes D1 holds no live key for, for a minute: a stream of made-up keys costs one read each per
    /// minute, not one per request. A real key cannot be presented before it exists (256 random bits), and a
    /// revoked one stays revoked, so this can refuse nothing that would have worked.
    unknown_keys: VerdictCache<String, ()>,
}

thread_local! {
    static CACHES: RefCell<Caches> = RefCell::new(Caches {
        config: None,
        tokens: VerdictCache::new(DEFAULT_CAPACITY),
        users: VerdictCache::new(DEFAULT_CAPACITY),
        keys: VerdictCache::new(DEFAULT_CAPACITY),
        unknown_keys: VerdictCache::new(DEFAULT_CAPACITY),
    });
}

fn with_caches<T>(config: &Rc<ServiceConfig>, f: impl FnOnce(&mut Caches) -> T) -> T {
    CACHES.with(|c| {
        let mut c = c.borrow_mut();
        // Held (not just its address), so a later configuration can never be mistaken for this one.
        if !c
            .config
            .as_ref()
            .is_some_and(|held| Rc::ptr_eq(held, config))
        {
            c.config = Some(config.clone());
            c.tokens.clear();
            c.users.clear();
            c.keys.clear();
            c.unknown_keys.clear();
        }
        f(&mut c)
    })
}

/// The bearer credential as presented: a token to verify or an API key to look up.
pub enum Credential {
    Token(Identity),
    Key { hash: String },
}

/// Reads `Authorization` and verifies a token (or checks a key's form). No D1.
pub async fn credential(
    authorization: Option<&str>,
    config: &Rc<ServiceConfig>,
    now: i64,
) -> Result<Credential, ApiError> {
    match bearer(authorization)? {
        Bearer::Key(key) if api_key::is_well_formed(key) => Ok(Credential::Key {
            hash: api_key::hash(key),
        }),
        Bearer::Key(_) => Err(invalid_api_key()),
        Bearer::Token(token) => Ok(Credential::Token(
            verify_identity(token, config, now).await?,
        )),
    }
}

/// Verifies an identity-provider token, or recalls having verified it.
pub async fn verify_identity(
    token: &str,
    config: &Rc<ServiceConfig>,
    now: i64,
) -> Result<Identity, ApiError> {
    let digest = sha256_hex(token.as_bytes());
    if let Some(identity) = with_caches(config, |c| c.tokens.get(&digest, now)) {
        return Ok(identity);
    }
    let kid = jwt::signing_key_id(token)?;
    let keys = jwks::keys_for(&config.auth.jwks, &kid, now).await?;
    let (identity, expires_at) = jwt::verify_until(token, &keys, &config.auth, now)?;
    with_caches(config, |c| {
        c.tokens.put(digest, identity.clone(), expires_at, now)
    });
    Ok(identity)
}

/// The caller of an invocation, resolved from the caches (D1 only on a miss).
/// `unknown_key` is asked before an API key no cache knows is looked up in D1 (a made-up key costs a read, so
/// it is charged to the sender's address like a request without a token).
pub async fn invoke_caller(
    credential: Credential,
    config: &Rc<ServiceConfig>,
    store: &D1Store,
    unknown_key: impl FnOnce() -> Result<(), ApiError>,
) -> Result<Caller, ApiError> {
    let now = JsClock.now_ms();
    match credential {
        Credential::Key { hash } => {
            if let Some(holder) = with_caches(config, |c| c.keys.get(&hash, now)) {
                return Ok(Caller::Key(holder));
            }
            if with_caches(config, |c| c.unknown_keys.get(&hash, now)).is_some() {
                return Err(invalid_api_key());
            }
            unknown_key()?;
            let Some(holder) = store.key_holder(&hash).await? else {
                with_caches(config, |c| {
                    c.unknown_keys.put(hash, (), now + UNKNOWN_KEY_MS, now)
                });
                return Err(invalid_api_key());
            };
            with_caches(config, |c| c.keys.put(hash, holder.clone(), FOREVER, now));
            Ok(Caller::Key(holder))
        }
        Credential::Token(identity) => {
            let key = (identity.issuer.clone(), identity.subject.clone());
            if let Some(user_id) = with_caches(config, |c| c.users.get(&key, now)) {
                return Ok(Caller::Token { user_id });
            }
            // First sight of this identity creates its user, as every authenticated route does.
            let user = users::resolve_user(store, &JsClock, &identity).await?;
            with_caches(config, |c| c.users.put(key, user.id.clone(), FOREVER, now));
            Ok(Caller::Token { user_id: user.id })
        }
    }
}

/// Authenticates a user's identity-provider token for the management routes. API keys are refused here: they
/// authenticate the invoke routes only.
pub async fn authenticate(
    authorization: Option<&str>,
    config: &Rc<ServiceConfig>,
    store: &impl Store,
) -> Result<User, ApiError> {
    let Bearer::Token(token) = bearer(authorization)? else {
        return Err(ApiError::new(
            ErrorCode::ApiKeyNotAllowed,
            "API keys authenticate the invoke routes only; use a user session token here.",
        ));
    };
    let identity = verify_identity(token, config, JsClock.now_ms()).await?;
    users::resolve_user(store, &JsClock, &identity).await
}
