//! RSA key pairs for native tests, generated once per test binary.

use jwt_compact::alg::{ModulusBits, Rsa, RsaPrivateKey, StrongKey};
use jwt_compact::jwk::JsonWebKey;
use std::sync::OnceLock;

#[derive(Clone)]
pub struct TestKey {
    pub kid: String,
    pub private: RsaPrivateKey,
    /// The public JWK with `kid`, `alg` and `use`, as an identity provider publishes it.
    pub public_jwk_json: String,
}

impl TestKey {
    pub fn get(index: usize) -> &'static TestKey {
        static KEYS: OnceLock<Vec<TestKey>> = OnceLock::new();
        &KEYS.get_or_init(|| (0..2).map(generate).collect())[index]
    }
}

fn generate(index: usize) -> TestKey {
    let (private, public) = Rsa::generate(&mut rand_core::OsRng, ModulusBits::TwoKibibytes)
        .expect("RSA key generation");
    let kid = format!("test-key-{index}");
    let mut jwk = serde_json::to_value(JsonWebKey::from(public.as_ref())).unwrap();
    jwk["kid"] = kid.clone().into();
    jwk["alg"] = "RS256".into();
    jwk["use"] = "sig".into();
    TestKey {
        kid,
        private: StrongKey::into_inner(private),
        public_jwk_json: jwk.to_string(),
    }
}

pub fn jwks_json(keys: &[&TestKey]) -> String {
    let keys: Vec<serde_json::Value> = keys
        .iter()
        .map(|k| serde_json::from_str(&k.public_jwk_json).unwrap())
        .collect();
    serde_json::json!({ "keys": keys }).to_string()
}
