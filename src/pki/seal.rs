//! Secrets at rest: commands that carry a PIN or an UnlockToken, and the UnlockToken a device
//! gives at TokenUpdate, are sealed (AES-256-GCM) before they reach the database and opened
//! only when they are sent. The key is derived from the device CA's private key, which is
//! kept apart from the database (a file in the data directory, or a mounted Secret) and is
//! the same on every replica; a copy of the database alone (a backup, a volume snapshot, the
//! SQLite WAL) therefore holds no PIN in clear.
//!
//! Sealed bytes start with `SEALED_PREFIX`, so stored values written before sealing existed
//! (or by a server without a sealer) are still read as they are.

use openssl::symm::{decrypt_aead, encrypt_aead, Cipher};

/// Marks sealed bytes; what follows is a 12-byte nonce, the ciphertext and a 16-byte tag.
pub const SEALED_PREFIX: &[u8] = b"pomona-sealed-v1:";
const NONCE_BYTES: usize = 12;
const TAG_BYTES: usize = 16;

/// Top-level keys of a command dictionary that make it a secret.
const SECRET_COMMAND_KEYS: &[&str] = &["PIN", "UnlockToken"];

/// Seals and opens secrets with one key.
pub struct Sealer {
    key: [u8; 32],
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer { key: <hidden> }")
    }
}

/// Sealed bytes that could not be opened: the key changed (a new device CA) or they were
/// altered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a sealed secret could not be opened: the device CA key changed, or the stored value was altered")]
pub struct Unopenable;

impl Sealer {
    /// A sealer whose key is derived from `secret` (the device CA's private key) under a label
    /// of its own, so the key serves no other purpose.
    pub fn derived_from(secret: &[u8]) -> Self {
        use hmac::Mac as _;
        let mut mac = <hmac::Hmac<sha2::Sha256> as hmac::Mac>::new_from_slice(secret)
            .expect("HMAC takes keys of any length");
        mac.update(b"pomona: secrets at rest, v1");
        Self {
            key: mac.finalize().into_bytes().into(),
        }
    }

    pub fn seal(&self, plain: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_BYTES];
        openssl::rand::rand_bytes(&mut nonce).expect("the system random source works");
        let mut tag = [0u8; TAG_BYTES];
        let sealed = encrypt_aead(
            Cipher::aes_256_gcm(),
            &self.key,
            Some(&nonce),
            SEALED_PREFIX,
            plain,
            &mut tag,
        )
        .expect("AES-256-GCM with a 32-byte key and 12-byte nonce cannot fail");
        let mut out =
            Vec::with_capacity(SEALED_PREFIX.len() + NONCE_BYTES + sealed.len() + TAG_BYTES);
        out.extend_from_slice(SEALED_PREFIX);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out.extend_from_slice(&tag);
        out
    }

    /// Opens sealed bytes; bytes that are not sealed are returned as they are.
    pub fn open(&self, stored: &[u8]) -> Result<Vec<u8>, Unopenable> {
        let Some(body) = stored.strip_prefix(SEALED_PREFIX) else {
            return Ok(stored.to_vec());
        };
        if body.len() < NONCE_BYTES + TAG_BYTES {
            return Err(Unopenable);
        }
        let (nonce, rest) = body.split_at(NONCE_BYTES);
        let (ciphertext, tag) = rest.split_at(rest.len() - TAG_BYTES);
        decrypt_aead(
            Cipher::aes_256_gcm(),
            &self.key,
            Some(nonce),
            SEALED_PREFIX,
            ciphertext,
            tag,
        )
        .map_err(|_| Unopenable)
    }

    /// A command envelope as it should be stored: sealed when its dictionary carries a secret.
    pub fn seal_command(&self, command: &plist::Dictionary, envelope: Vec<u8>) -> Vec<u8> {
        if carries_secret(command) {
            self.seal(&envelope)
        } else {
            envelope
        }
    }
}

/// True when a command dictionary carries a PIN or an UnlockToken.
pub fn carries_secret(command: &plist::Dictionary) -> bool {
    SECRET_COMMAND_KEYS.iter().any(|k| command.contains_key(k))
}

/// True when stored bytes are sealed.
pub fn is_sealed(stored: &[u8]) -> bool {
    stored.starts_with(SEALED_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_secrets_open_with_the_same_key_only_and_hide_their_content() {
        let sealer = Sealer::derived_from(b"ca key one");
        let sealed = sealer.seal(b"<key>PIN</key><string>123456</string>");
        assert!(is_sealed(&sealed));
        assert!(!sealed.windows(6).any(|w| w == b"123456"));
        assert_eq!(
            sealer.open(&sealed).unwrap(),
            b"<key>PIN</key><string>123456</string>"
        );
        // A fresh nonce each time: the same secret never seals to the same bytes.
        assert_ne!(sealer.seal(b"x"), sealer.seal(b"x"));
        assert_eq!(
            Sealer::derived_from(b"ca key two").open(&sealed),
            Err(Unopenable)
        );
        let mut altered = sealed.clone();
        *altered.last_mut().unwrap() ^= 1;
        assert_eq!(sealer.open(&altered), Err(Unopenable));
        assert_eq!(sealer.open(b"plain").unwrap(), b"plain");
        assert!(
            !format!("{sealer:?}").contains("key:") || format!("{sealer:?}").contains("hidden")
        );
    }

    #[test]
    fn only_commands_with_a_pin_or_unlock_token_are_sealed() {
        let sealer = Sealer::derived_from(b"k");
        let mut lock = plist::Dictionary::new();
        lock.insert("RequestType".into(), "DeviceLock".into());
        assert_eq!(sealer.seal_command(&lock, b"env".to_vec()), b"env");
        lock.insert("PIN".into(), "123456".into());
        assert!(is_sealed(&sealer.seal_command(&lock, b"env".to_vec())));
    }
}
