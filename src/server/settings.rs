//! The settings the HTTPS front door is built with: request limits and how enrollment profiles
//! are made and guarded. `config` fills them from flags, environment and the config file; they
//! are defined here, by the module that uses them, so that `server` does not import `config`
//! (which sits above it and assembles it).

use std::time::Duration;

/// Who may fetch an enrollment profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnrollAccess {
    /// A one-time enrollment token, or the admin token.
    Token,
    /// Only the admin token.
    Admin,
}

/// How enrollment profiles are made and guarded.
#[derive(Clone)]
pub struct EnrollmentSettings {
    pub access: EnrollAccess,
    pub challenge_ttl: Duration,
    pub token_ttl: Duration,
    /// A static SCEP challenge (secret; never printed).
    pub static_challenge: Option<String>,
    pub sign_message: bool,
    pub sign_profiles: bool,
    pub organization: String,
}

impl std::fmt::Debug for EnrollmentSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnrollmentSettings")
            .field("access", &self.access)
            .field("challenge_ttl", &self.challenge_ttl)
            .field("token_ttl", &self.token_ttl)
            .field(
                "static_challenge",
                &self.static_challenge.as_ref().map(|_| "<redacted>"),
            )
            .field("sign_message", &self.sign_message)
            .field("sign_profiles", &self.sign_profiles)
            .field("organization", &self.organization)
            .finish()
    }
}

impl Default for EnrollmentSettings {
    fn default() -> Self {
        Self {
            access: EnrollAccess::Token,
            challenge_ttl: Duration::from_secs(3600),
            token_ttl: Duration::from_secs(7 * 86_400),
            static_challenge: None,
            sign_message: false,
            sign_profiles: false,
            organization: "Pomona".into(),
        }
    }
}

/// Request limits applied to every endpoint.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub read_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 10 * 1024 * 1024,
            read_timeout: Duration::from_secs(30),
        }
    }
}
