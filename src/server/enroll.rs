//! Enrollment: one-time enrollment tokens (admin API), the enrollment profile download
//! (`GET /enroll`), and the SCEP endpoint (`/scep`) that turns a profile's challenge into a
//! device identity certificate. Secrets (tokens, challenges) are stored only as SHA-256 hashes
//! and never logged.

use super::admin::{error, store_error, tokens_match};
use super::{body, AppState};
use crate::pki::scep::{self, FailInfo};
use crate::protocol::enrollment_profile::{self, EnrollmentProfileSpec};
use crate::store::{CertificateRecord, SecretKind, SecretUse, StoreError};
use crate::vocab::clock::now_millis;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use serde::Deserialize;
use std::sync::Arc;

/// A fresh random secret (192 bits, URL-safe) and the hash the store keeps.
fn new_secret() -> (String, String) {
    let mut bytes = [0u8; 24];
    openssl::rand::rand_bytes(&mut bytes).expect("the system random generator works");
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let hash = secret_hash(&secret);
    (secret, hash)
}

pub fn secret_hash(secret: &str) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(secret.as_bytes()))
}

/// `POST /api/v1/enrollment-tokens`: a one-time link to an enrollment profile.
pub async fn create_enrollment_token(State(state): State<Arc<AppState>>) -> Response {
    let now = now_millis();
    let (token, hash) = new_secret();
    let expires_at = now + state.enrollment.token_ttl.as_millis() as i64;
    if let Err(e) = state
        .store
        .create_secret(SecretKind::EnrollmentToken, &hash, expires_at, now)
        .await
    {
        return store_error(e);
    }
    let url = format!("{}/enroll?token={token}", state.public_url);
    (
        StatusCode::CREATED,
        Json(crate::api::EnrollmentToken {
            token,
            enroll_url: url,
            expires_at: super::views::time(expires_at),
        }),
    )
        .into_response()
}

#[derive(Deserialize)]
pub struct EnrollQuery {
    token: Option<String>,
}

/// `GET /enroll`: the enrollment profile, for an admin or the holder of a one-time token.
pub async fn enrollment_profile(
    State(state): State<Arc<AppState>>,
    Query(query): Query<EnrollQuery>,
    headers: HeaderMap,
) -> Response {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let is_admin = bearer.is_some_and(|t| tokens_match(t.trim(), &state.admin_token));
    if !is_admin {
        let token = match (state.enrollment.access, query.token.as_deref()) {
            (super::settings::EnrollAccess::Admin, _) => return error(
                StatusCode::FORBIDDEN,
                "this server hands out enrollment profiles to administrators only (admin token)",
            ),
            (_, None) => {
                return error(
                    StatusCode::FORBIDDEN,
                    "an enrollment token (?token=…) or the admin token is required",
                )
            }
            (_, Some(token)) => token,
        };
        match state
            .store
            .consume_secret(
                SecretKind::EnrollmentToken,
                &secret_hash(token),
                now_millis(),
            )
            .await
        {
            Ok(SecretUse::Accepted) => {}
            Ok(refused) => {
                let reason = secret_refusal_text("enrollment token", refused);
                tracing::warn!(reason, "enrollment profile refused");
                return error(StatusCode::FORBIDDEN, reason);
            }
            Err(e) => return store_error(e),
        }
    }
    match build_profile(&state).await {
        Ok(bytes) => (
            StatusCode::OK,
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/x-apple-aspen-config"),
                ),
                (
                    header::CONTENT_DISPOSITION,
                    HeaderValue::from_static("attachment; filename=\"pomona-enroll.mobileconfig\""),
                ),
            ],
            bytes,
        )
            .into_response(),
        Err(e) => store_error(e),
    }
}

fn secret_refusal_text(what: &str, refused: SecretUse) -> String {
    match refused {
        SecretUse::Accepted => format!("{what} accepted"),
        SecretUse::Unknown => format!("{what} is not known to this server"),
        SecretUse::AlreadyUsed => format!("{what} was already used (they are single-use)"),
        SecretUse::Expired => format!("{what} has expired"),
    }
}

/// A profile with a fresh one-time SCEP challenge (or the configured static one).
async fn build_profile(state: &AppState) -> Result<Vec<u8>, StoreError> {
    let challenge = match &state.enrollment.static_challenge {
        Some(fixed) => fixed.clone(),
        None => {
            let now = now_millis();
            let (challenge, hash) = new_secret();
            let expires_at = now + state.enrollment.challenge_ttl.as_millis() as i64;
            state
                .store
                .create_secret(SecretKind::ScepChallenge, &hash, expires_at, now)
                .await?;
            challenge
        }
    };
    let topic = match &state.push_topic {
        Some(topic) => topic.clone(),
        // Warned about once at start (lib.rs), not per profile.
        None => enrollment_profile::PLACEHOLDER_TOPIC.to_string(),
    };
    let base = &state.public_url;
    let profile = enrollment_profile::build(&EnrollmentProfileSpec {
        server_url: format!("{base}/mdm/connect"),
        checkin_url: format!("{base}/mdm/checkin"),
        scep_url: format!("{base}/scep"),
        challenge,
        topic,
        tls_root_der: state.tls_root_der.clone(),
        sign_message: state.enrollment.sign_message,
        organization: state.enrollment.organization.clone(),
        access_rights: enrollment_profile::ALL_ACCESS_RIGHTS,
    });
    match &state.profile_signer {
        Some(signer) => signer.sign(&profile).map_err(|e| {
            tracing::error!(error = %e, "signing the enrollment profile failed");
            StoreError::Database(format!("signing the enrollment profile failed: {e}"))
        }),
        None => Ok(profile),
    }
}

/// `pomona enroll-profile` and tests build the same profile without HTTP.
pub async fn profile_for(state: &AppState) -> Result<Vec<u8>, StoreError> {
    build_profile(state).await
}

#[derive(Deserialize)]
pub struct ScepQuery {
    operation: Option<String>,
    message: Option<String>,
}

/// `/scep` (RFC 8894): GetCACaps, GetCACert, and PKIOperation by GET or POST.
pub async fn scep(
    State(state): State<Arc<AppState>>,
    method: Method,
    Query(query): Query<ScepQuery>,
    headers: axum::http::HeaderMap,
    body: Body,
) -> Response {
    match query.operation.as_deref() {
        Some("GetCACaps") => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain")],
            scep::CAPABILITIES,
        )
            .into_response(),
        Some("GetCACert") => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/x-x509-ca-cert")],
            state.device_ca.certificate_der().to_vec(),
        )
            .into_response(),
        Some("PKIOperation") => {
            let message = if method == Method::POST {
                match body::read(&state, &headers, body).await {
                    Ok(raw) => raw,
                    Err((status, reason)) => return scep_refusal(status, &reason),
                }
            } else {
                let Some(text) = query.message.as_deref() else {
                    return scep_refusal(
                        StatusCode::BAD_REQUEST,
                        "PKIOperation by GET needs a message parameter",
                    );
                };
                let compact: String = text.split_ascii_whitespace().collect();
                match base64::engine::general_purpose::STANDARD.decode(compact) {
                    Ok(raw) => raw,
                    Err(_) => {
                        return scep_refusal(
                            StatusCode::BAD_REQUEST,
                            "PKIOperation message parameter is not base64",
                        )
                    }
                }
            };
            pki_operation(&state, &message).await
        }
        Some(other) => scep_refusal(
            StatusCode::BAD_REQUEST,
            &format!("unsupported SCEP operation {other:?} (GetCACaps, GetCACert, PKIOperation)"),
        ),
        None => scep_refusal(
            StatusCode::BAD_REQUEST,
            "missing operation parameter (GetCACaps, GetCACert, PKIOperation)",
        ),
    }
}

fn scep_refusal(status: StatusCode, reason: &str) -> Response {
    tracing::warn!(%status, reason, "SCEP request refused");
    (status, format!("{reason}\n")).into_response()
}

async fn pki_operation(state: &AppState, message: &[u8]) -> Response {
    let request = match scep::decode_request(message, &state.device_ca) {
        Ok(r) => r,
        Err(malformed) => {
            state.metrics.count_scep("malformed");
            return scep_refusal(StatusCode::BAD_REQUEST, &malformed.to_string());
        }
    };
    let transaction = request.transaction_id.clone();
    let outcome = decide_and_issue(state, &request).await;
    let reply = match &outcome {
        Ok(Ok(cert)) => scep::cert_rep(&state.device_ca, &request, Ok(&cert.der)),
        Ok(Err((fail, reason))) => {
            state.metrics.count_scep(fail.name());
            tracing::warn!(
                transaction,
                fail_info = fail.name(),
                reason,
                "SCEP request refused: FAILURE"
            );
            scep::cert_rep(&state.device_ca, &request, Err(*fail))
        }
        Err(e) => {
            let mut response = store_error_for_scep(e);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("30"));
            return response;
        }
    };
    match reply {
        Ok(bytes) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/x-pki-message")],
            bytes,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, transaction, "cannot build the SCEP CertRep");
            (StatusCode::INTERNAL_SERVER_ERROR, "cannot build CertRep\n").into_response()
        }
    }
}

fn store_error_for_scep(e: &StoreError) -> Response {
    tracing::error!(error = %e, "SCEP: database unavailable; the client will retry");
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "temporarily unavailable, retry later\n",
    )
        .into_response()
}

type Decision = Result<crate::pki::ca::IssuedCertificate, (FailInfo, String)>;

/// Checks the challenge and issues: Ok(Ok(cert)) SUCCESS, Ok(Err(..)) FAILURE, Err(..) 503.
async fn decide_and_issue(
    state: &AppState,
    request: &scep::PkiRequest,
) -> Result<Decision, StoreError> {
    if let Some((fail, reason)) = &request.problem {
        return Ok(Err((*fail, reason.clone())));
    }
    let (Some(csr), Some(csr_der)) = (request.csr.as_ref(), request.csr_der.as_deref()) else {
        return Ok(Err((FailInfo::BadRequest, "no CSR".into())));
    };
    let Some(challenge) = request.challenge.as_deref() else {
        return Ok(Err((
            FailInfo::BadRequest,
            "the CSR has no challengePassword".into(),
        )));
    };
    let is_static = state
        .enrollment
        .static_challenge
        .as_deref()
        .is_some_and(|fixed| tokens_match(challenge, fixed));
    let issued = match state.device_ca.issue(csr, csr_der) {
        Ok(cert) => cert,
        Err(e) => {
            tracing::error!(error = %e, "issuing a device certificate failed");
            return Ok(Err((
                FailInfo::BadRequest,
                "the CSR could not be signed".into(),
            )));
        }
    };
    let described = &issued.described;
    let record = CertificateRecord {
        fingerprint: described.fingerprint.clone(),
        serial: described.serial.clone(),
        subject: described.subject.clone(),
        not_before: described.not_before,
        not_after: described.not_after,
        issued_at: now_millis(),
        device_id: None,
        bound_at: None,
        revoked_at: None,
    };
    let hash = (!is_static).then(|| secret_hash(challenge));
    match state
        .store
        .record_certificate(&record, hash.as_deref(), now_millis())
        .await?
    {
        SecretUse::Accepted => {
            state.metrics.count_scep("issued");
            tracing::info!(
                serial = %record.serial,
                subject = %record.subject,
                transaction = %request.transaction_id,
                "issued a device identity certificate"
            );
            Ok(Ok(issued))
        }
        refused => Ok(Err((
            FailInfo::BadRequest,
            secret_refusal_text("SCEP challenge", refused),
        ))),
    }
}
