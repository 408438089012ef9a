//! The keys secrets are sealed under, so a key can be rotated without losing a secret: the current key
//! (`TELEMETRY_SECRETS_ENCRYPTION_KEY`) seals every new value and every re-sealed one; previous keys
//! (`PREVIOUS_ENCRYPTION_KEYS`) only open values still sealed under them. Each value records its key id, so the
//! right key is chosen without trying them all, and the re-seal job (`app::key_rotation`) can find every value
//! not yet under the current key. Once none is left, a previous key can be removed from the configuration.

use super::secret_box::{sealed_key_id, sealed_prefix, EncryptionKey, SealedUnder, LEGACY_PREFIX};

#[derive(Debug, Clone)]
pub struct Keyring {
    current: EncryptionKey,
    previous: Vec<EncryptionKey>,
}

impl Keyring {
    pub fn new(current: EncryptionKey, previous: Vec<EncryptionKey>) -> Self {
        let current_id = current.key_id();
        // The current key listed again among the previous ones would be harmless, but is left out.
        let previous = previous
            .into_iter()
            .filter(|k| k.key_id() != current_id)
            .collect();
        Keyring { current, previous }
    }

    pub fn current_key_id(&self) -> String {
        self.current.key_id()
    }

    /// Whether any previous key is configured (a rotation under way).
    pub fn rotating(&self) -> bool {
        !self.previous.is_empty()
    }

    /// The stored-value prefix of everything sealed under the current key.
    pub fn current_prefix(&self) -> String {
        sealed_prefix(&self.current.key_id())
    }

    /// Prefixes of the values the re-seal job can move: those under a previous key, and those from before key
    /// ids (which any configured key may have sealed).
    pub fn movable_prefixes(&self) -> Vec<String> {
        std::iter::once(LEGACY_PREFIX.to_owned())
            .chain(self.previous.iter().map(|k| sealed_prefix(&k.key_id())))
            .collect()
    }

    /// Prefixes of every value some configured key can open: anything else is under a key no longer configured.
    pub fn known_prefixes(&self) -> Vec<String> {
        let mut prefixes = self.movable_prefixes();
        prefixes.push(self.current_prefix());
        prefixes
    }

    /// Seals under the current key.
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> String {
        self.current.seal(plaintext, aad)
    }

    /// Opens a value sealed under any configured key: the one its key id names, or, for a value from before key
    /// ids, whichever opens it.
    pub fn open(&self, sealed: &str, aad: &[u8]) -> Result<Vec<u8>, String> {
        let keys = || std::iter::once(&self.current).chain(&self.previous);
        match sealed_key_id(sealed)? {
            SealedUnder::Key(id) => keys()
                .find(|k| k.key_id() == id)
                .ok_or_else(|| {
                    format!(
                        "sealed under key {id}, which is not configured (neither \
                         TELEMETRY_SECRETS_ENCRYPTION_KEY nor PREVIOUS_ENCRYPTION_KEYS)"
                    )
                })?
                .open(sealed, aad),
            SealedUnder::Legacy => keys()
                .find_map(|k| k.open(sealed, aad).ok())
                .ok_or_else(|| "sealed secret does not open under any configured key".into()),
        }
    }

    /// Whether `sealed` is under a key other than the current one (what the re-seal job moves).
    pub fn needs_reseal(&self, sealed: &str) -> bool {
        !sealed.starts_with(&self.current_prefix())
    }

    /// `sealed` opened and sealed again under the current key, bound to the same `aad`.
    pub fn reseal(&self, sealed: &str, aad: &[u8]) -> Result<String, String> {
        Ok(self.seal(&self.open(sealed, aad)?, aad))
    }

    /// A key for another purpose derived from the current key (what new values are made with).
    pub fn derive(&self, label: &[u8]) -> [u8; 32] {
        self.current.derive(label)
    }

    /// The same derivation from every configured key, current first: what values made before a rotation are
    /// checked against.
    pub fn derive_all(&self, label: &[u8]) -> Vec<[u8; 32]> {
        std::iter::once(&self.current)
            .chain(&self.previous)
            .map(|k| k.derive(label))
            .collect()
    }
}

impl From<EncryptionKey> for Keyring {
    fn from(current: EncryptionKey) -> Self {
        Keyring::new(current, Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: &str) -> EncryptionKey {
        EncryptionKey::parse(&format!("hex:{}", byte.repeat(32))).unwrap()
    }

    #[test]
    fn a_rotation_keeps_every_value_readable_until_it_is_resealed() {
        let before = Keyring::from(key("01"));
        let old = before.seal(b"hunter2", b"aad");
        // Key 2 becomes current, key 1 is kept to open what it sealed.
        let during = Keyring::new(key("02"), vec![key("01")]);
        assert!(during.rotating());
        assert!(during.needs_reseal(&old));
        assert_eq!(during.open(&old, b"aad").unwrap(), b"hunter2");
        let moved = during.reseal(&old, b"aad").unwrap();
        assert!(!during.needs_reseal(&moved));
        assert!(
            during.reseal(&old, b"other aad").is_err(),
            "the binding stays"
        );
        // Key 1 removed: what was re-sealed opens, what was not names the missing key.
        let after = Keyring::from(key("02"));
        assert_eq!(after.open(&moved, b"aad").unwrap(), b"hunter2");
        let err = after.open(&old, b"aad").unwrap_err();
        assert!(err.contains(&key("01").key_id()), "{err}");
        assert!(!after.rotating());
    }

    #[test]
    fn derived_keys_of_every_configured_key_are_offered_for_checks() {
        let ring = Keyring::new(key("02"), vec![key("01"), key("02")]);
        let all = ring.derive_all(b"label");
        assert_eq!(all.len(), 2, "the current key listed again is left out");
        assert_eq!(all[0], ring.derive(b"label"));
        assert_eq!(all[1], key("01").derive(b"label"));
    }
}
