//! `POST /hooks/git`: a git host says the repository changed. The request is authenticated
//! against the configured shared secret — GitHub's `X-Hub-Signature-256: sha256=<HMAC-SHA256 of
//! the body>` or GitLab's `X-Gitlab-Token: <secret>`, both compared in constant time — and then
//! only asks the git source to fetch (coalesced). The body is never read as policy. A bad or
//! missing signature is 401 with a JSON error and fetches nothing. Devices never use this route.

use super::admin::error;
use super::AppState;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use hmac::Mac as _;
use std::sync::Arc;

/// Which header style authenticated a webhook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookStyle {
    GitHub,
    GitLab,
}

/// Why a webhook was not accepted. Never holds the expected value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HookRefused {
    #[error("X-Hub-Signature-256 must be sha256=<hex HMAC of the body>")]
    GitHubHeaderShape,
    #[error("X-Hub-Signature-256 is not hexadecimal")]
    GitHubNotHex,
    #[error("webhook secret unusable")]
    SecretUnusable,
    #[error("X-Hub-Signature-256 does not match the body and the secret")]
    GitHubMismatch,
    #[error("X-Gitlab-Token does not match the secret")]
    GitLabMismatch,
    #[error("no X-Hub-Signature-256 (GitHub) or X-Gitlab-Token (GitLab) header")]
    Unsigned,
}

/// Checks a webhook's signature headers against `secret`.
pub fn verify(secret: &str, headers: &HeaderMap, body: &[u8]) -> Result<HookStyle, HookRefused> {
    if let Some(value) = headers.get("x-hub-signature-256") {
        let value = value.to_str().unwrap_or("");
        let hex_signature = value
            .strip_prefix("sha256=")
            .ok_or(HookRefused::GitHubHeaderShape)?;
        let signature = hex::decode(hex_signature.trim()).map_err(|_| HookRefused::GitHubNotHex)?;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes())
            .map_err(|_| HookRefused::SecretUnusable)?;
        mac.update(body);
        // verify_slice compares in constant time.
        return mac
            .verify_slice(&signature)
            .map(|()| HookStyle::GitHub)
            .map_err(|_| HookRefused::GitHubMismatch);
    }
    if let Some(value) = headers.get("x-gitlab-token") {
        return if constant_time_eq(value.as_bytes(), secret.as_bytes()) {
            Ok(HookStyle::GitLab)
        } else {
            Err(HookRefused::GitLabMismatch)
        };
    }
    Err(HookRefused::Unsigned)
}

/// Equality whose time does not depend on where the inputs differ (both are hashed first, so
/// neither does it reveal the secret's length).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use sha2::Digest as _;
    let (a, b) = (sha2::Sha256::digest(a), sha2::Sha256::digest(b));
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

pub async fn git(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    let Some(source) = &state.git else {
        return error(
            StatusCode::NOT_FOUND,
            "policy does not come from git on this server (start it with --git URL)",
        );
    };
    let Some(secret) = &source.settings.webhook_secret else {
        return error(
            StatusCode::NOT_FOUND,
            "the git webhook is off: start the server with --git-webhook-secret-file",
        );
    };
    let body = match super::body::read(&state, &headers, body).await {
        Ok(body) => body,
        Err((status, reason)) => return error(status, reason),
    };
    match verify(secret, &headers, &body) {
        Ok(style) => {
            tracing::info!(?style, "git webhook accepted: fetching");
            source.trigger();
            (
                StatusCode::ACCEPTED,
                Json(serde_json::json!({"status": "fetch scheduled"})),
            )
                .into_response()
        }
        Err(reason) => {
            tracing::warn!(%reason, "git webhook refused");
            error(StatusCode::UNAUTHORIZED, reason.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(name: &'static str, value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, value.parse().unwrap());
        h
    }

    #[test]
    fn github_and_gitlab_signatures_are_checked() {
        // GitHub's documented example: secret "It's a Secret to Everybody", body "Hello, World!".
        let sig = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        let secret = "It's a Secret to Everybody";
        assert_eq!(
            verify(
                secret,
                &headers("x-hub-signature-256", sig),
                b"Hello, World!"
            ),
            Ok(HookStyle::GitHub)
        );
        assert!(verify(
            secret,
            &headers("x-hub-signature-256", sig),
            b"Hello, World?"
        )
        .is_err());
        assert!(verify(
            "other",
            &headers("x-hub-signature-256", sig),
            b"Hello, World!"
        )
        .is_err());
        assert_eq!(
            verify(secret, &headers("x-hub-signature-256", "sha1=00"), b""),
            Err(HookRefused::GitHubHeaderShape)
        );
        assert_eq!(
            verify(secret, &headers("x-gitlab-token", secret), b"{}"),
            Ok(HookStyle::GitLab)
        );
        assert_eq!(
            verify(secret, &headers("x-gitlab-token", "guess"), b"{}"),
            Err(HookRefused::GitLabMismatch)
        );
        assert_eq!(
            verify(secret, &HeaderMap::new(), b"{}"),
            Err(HookRefused::Unsigned)
        );
    }
}
