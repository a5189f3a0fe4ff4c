//! Admin API (JSON over HTTPS, bearer token): devices, their commands and results, push,
//! identity (revocation), readiness.
//! Errors are `{"error": "..."}` with a message that names what was wrong.

use super::{body, views, AppState};
use crate::api;
use crate::protocol::{CommandEnvelope, CommandRequest};
use crate::store::{Enrollment, NewCommand, StoreError};
use crate::vocab::clock::now_millis;
use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::sync::Arc;

pub fn error(status: StatusCode, message: impl Into<String>) -> Response {
    let body = api::ErrorBody {
        error: message.into(),
        problems: None,
    };
    (status, Json(body)).into_response()
}

pub(super) fn store_error(e: StoreError) -> Response {
    match e {
        StoreError::NotFound(m) => error(StatusCode::NOT_FOUND, m),
        StoreError::Conflict(m) => error(StatusCode::CONFLICT, m),
        StoreError::Unavailable(_) => {
            tracing::error!(error = %e, "database unavailable");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "database unavailable; retry later",
            )
        }
        StoreError::Database(_) => {
            tracing::error!(error = %e, "store error");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal database error (see server log)",
            )
        }
    }
}

/// Compares SHA-256 digests so the time taken does not depend on where the tokens differ.
pub(super) fn tokens_match(given: &str, expected: &str) -> bool {
    let a = Sha256::digest(given.as_bytes());
    let b = Sha256::digest(expected.as_bytes());
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

pub async fn require_token(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        Some(token) if tokens_match(token.trim(), &state.admin_token) => next.run(request).await,
        Some(_) => {
            tracing::warn!("admin API request with a wrong token");
            error(StatusCode::UNAUTHORIZED, "the bearer token is not valid for this server")
        }
        None => error(
            StatusCode::UNAUTHORIZED,
            "missing 'Authorization: Bearer <token>' header (the token is in <data-dir>/admin-token)",
        ),
    }
}

/// Every `/api/v1` answer is JSON, including the ones the framework writes itself (an
/// undecodable path segment or query, a method the route does not take): an error that is
/// not JSON yet is wrapped as `{"error": …}` with its text.
pub async fn errors_as_json(request: Request, next: axum::middleware::Next) -> Response {
    /// The framework's rejections are one line; anything longer is cut.
    const MAX_TEXT: usize = 4096;
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = match axum::body::to_bytes(body, MAX_TEXT).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).trim().to_string(),
        Err(_) => String::new(),
    };
    let message = if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("request refused")
            .to_string()
    } else {
        text
    };
    let mut wrapped = error(status, message);
    for (name, value) in parts.headers.iter() {
        if name == axum::http::header::ALLOW || name == axum::http::header::RETRY_AFTER {
            wrapped.headers_mut().insert(name.clone(), value.clone());
        }
    }
    wrapped
}

pub async fn not_found(request: Request) -> Response {
    error(
        StatusCode::NOT_FOUND,
        format!("no route for {} {}", request.method(), request.uri().path()),
    )
}

/// `GET /api/v1/openapi.json`: the admin API's OpenAPI 3.1 description.
pub async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        api::openapi::document_text(),
    )
        .into_response()
}

/// `GET /readyz`: whether this replica should get traffic. Not ready while the database cannot
/// be reached, and, with the Kubernetes source, until the replica built its first policy
/// snapshot from the custom resources (a replica that never saw policy cannot plan if it takes
/// the lead; during a rollout the replicas that have it keep serving). Once it has one, an API
/// server that cannot be watched leaves it ready: devices are served and planned against the
/// last snapshot built (the body says so), and an unready replica would gain nothing — without
/// the API server no endpoint changes anyway. Git and directory sources never hold readiness
/// back: with a git remote down at start, serving devices beats refusing them. The source's
/// errors are not shown here (no token needed): `/api/v1/status` has them.
pub async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    if let Err(e) = state.store.ping().await {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: the database cannot be reached: {e}\n"),
        )
            .into_response();
    }
    let health = state.reconciler.health();
    let source = health.source.as_deref().unwrap_or("the policy source");
    if state.readiness_waits_for_policy && !state.reconciler.has_policy() {
        let why = if health.last_fetch_error.is_some() {
            "it cannot be read (see the log or /api/v1/status)"
        } else {
            "waiting for the custom resources to be listed"
        };
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: no policy snapshot built yet from {source}: {why}\n"),
        )
            .into_response();
    }
    let mut body = String::from("ready\n");
    if health.last_fetch_error.is_some() && state.reconciler.has_policy() {
        body.push_str(&format!(
            "degraded: {source} cannot be read; serving the last snapshot built (revision {}); \
             see /api/v1/status\n",
            health.revision.as_deref().unwrap_or("unknown")
        ));
    }
    (StatusCode::OK, body).into_response()
}

/// `GET /devices/{id}/commands?limit=`.
#[derive(Deserialize)]
pub struct Page {
    limit: Option<i64>,
}

pub(super) async fn resolve(state: &AppState, key: &str) -> Result<Enrollment, Response> {
    match state.store.find_enrollment(key).await {
        Ok(Some(e)) => Ok(e),
        Ok(None) => Err(error(
            StatusCode::NOT_FOUND,
            format!("no device with UDID, EnrollmentID or serial number {key:?}"),
        )),
        Err(e) => Err(store_error(e)),
    }
}

pub async fn get_device(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    let device = match resolve(&state, &id).await {
        Ok(e) => e,
        Err(r) => return r,
    };
    let certificates = match state.store.device_certificates(&device.device_id).await {
        Ok(c) => c,
        Err(e) => return store_error(e),
    };
    let push = match state.store.push_status(&device.device_id).await {
        Ok(status) => views::push(&status.unwrap_or_default()),
        Err(e) => return store_error(e),
    };
    let inventory = match state.store.device_inventory(&device.device_id).await {
        Ok(inventory) => inventory.unwrap_or_default(),
        Err(e) => return store_error(e),
    };
    // Each profile the reconciler manages on this device, and where it stands.
    let reconcile = match state.store.reconcile_state(&device.device_id).await {
        Ok(reconcile) => reconcile,
        Err(e) => return store_error(e),
    };
    let bound = device.certificate_fingerprint.as_deref();
    Json(api::DeviceDetail {
        device: views::device(&device),
        certificates: certificates
            .iter()
            .map(|c| views::certificate(c, bound))
            .collect(),
        push,
        labels: inventory.labels,
        facts: inventory.facts.map(|(facts, at)| api::Facts {
            facts,
            reported_at: views::time(at),
        }),
        profiles: reconcile
            .managed
            .iter()
            .map(|m| api::ManagedProfile {
                profile: m.profile_key.clone(),
                identifier: m.identifier.clone(),
                state: m.state.as_str().to_string(),
                attempts: m.attempts,
                last_error: m.last_error.clone(),
            })
            .collect(),
        profiles_reported_at: views::optional_time(
            reconcile.reported.as_ref().map(|r| r.reported_at),
        ),
        groups: state.reconciler.groups_of(&device.device_id),
    })
    .into_response()
}

/// At most this many labels per device (they are kept in memory for every device).
const MAX_LABELS: usize = 64;

/// `PUT /api/v1/devices/{id}/labels` with `{"labels": {...}}`: replaces the device's labels
/// (what groups select on besides inventory attributes and policy-declared labels) and
/// re-plans the device.
pub async fn put_labels(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
    body: Body,
) -> Response {
    let request: api::LabelsRequest = match body::read_json(
        &state,
        &headers,
        body,
        "invalid labels JSON (expected {\"labels\": {\"key\": \"value\"}})",
    )
    .await
    {
        Ok(r) => r,
        Err((status, reason)) => return error(status, reason),
    };
    if request.labels.len() > MAX_LABELS {
        return error(
            StatusCode::BAD_REQUEST,
            format!("at most {MAX_LABELS} labels per device"),
        );
    }
    for (key, value) in &request.labels {
        if let Err(message) = crate::policy::selector::check_label(key, value) {
            return error(StatusCode::BAD_REQUEST, message.to_string());
        }
    }
    let device = match resolve(&state, &id).await {
        Ok(e) => e,
        Err(r) => return r,
    };
    match state
        .store
        .set_device_labels(&device.device_id, &request.labels, now_millis())
        .await
    {
        Ok(true) => {
            state
                .reconciler
                .set_labels(&device.device_id, request.labels.clone());
            Json(api::Labels {
                device_id: device.device_id,
                labels: request.labels,
            })
            .into_response()
        }
        Ok(false) => error(
            StatusCode::NOT_FOUND,
            format!("no device {:?}", device.device_id),
        ),
        Err(e) => store_error(e),
    }
}

/// `POST /api/v1/devices/{id}/revoke`: revokes the device's certificates; its next request
/// is refused (403) until it enrolls again with a new identity.
pub async fn revoke_device(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    let device = match resolve(&state, &id).await {
        Ok(e) => e,
        Err(r) => return r,
    };
    match state
        .store
        .revoke_device_certificates(&device.device_id, now_millis())
        .await
    {
        Ok(n) => {
            tracing::warn!(device = %device.device_id, revoked = n, "device certificates revoked by an administrator");
            Json(api::Revoked {
                device_id: device.device_id,
                revoked_certificates: n,
            })
            .into_response()
        }
        Err(e) => store_error(e),
    }
}

/// `POST /devices/{id}/push`: push one device now and answer with what APNs said.
pub async fn push_device(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    use crate::push::AdminPushError as E;
    let device = match resolve(&state, &id).await {
        Ok(e) => e,
        Err(r) => return r,
    };
    match state.push.push_now(&device.device_id).await {
        Ok(response) => {
            let accepted = response.status == 200;
            tracing::info!(device = %device.device_id, result = %response.summary(), "push requested by an administrator");
            let status = if accepted {
                StatusCode::OK
            } else {
                StatusCode::BAD_GATEWAY
            };
            (
                status,
                Json(api::Pushed {
                    device_id: device.device_id,
                    accepted,
                    apns_status: response.status,
                    apns_id: response.apns_id.clone(),
                    result: response.summary(),
                }),
            )
                .into_response()
        }
        Err(E::Store(e)) => store_error(e),
        Err(e @ (E::Disabled | E::NoToken(_) | E::TokenInvalid(_))) => {
            error(StatusCode::CONFLICT, e.to_string())
        }
        Err(e @ E::Apns(_)) => error(StatusCode::BAD_GATEWAY, e.to_string()),
    }
}

pub async fn enqueue_command(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
    body: Body,
) -> Response {
    let request: CommandRequest =
        match body::read_json(&state, &headers, body, "invalid command JSON").await {
            Ok(r) => r,
            Err((status, reason)) => return error(status, reason),
        };
    let command = match request.build() {
        Ok(c) => c,
        Err(reason) => return error(StatusCode::UNPROCESSABLE_ENTITY, reason.to_string()),
    };
    let device = match resolve(&state, &id).await {
        Ok(e) => e,
        Err(r) => return r,
    };
    let uuid = uuid::Uuid::new_v4().to_string().to_uppercase();
    let new = NewCommand {
        uuid: uuid.clone(),
        request_type: command.request_type.clone(),
        command: state
            .sealer
            .seal_command(&command.dict, CommandEnvelope::encode(&uuid, &command.dict)),
        shared: None,
    };
    match state
        .store
        .enqueue(&device.device_id, &new, now_millis())
        .await
    {
        Ok(()) => {
            tracing::info!(device = %device.device_id, command = %uuid, request_type = %command.request_type, "command queued");
            // The command is queued either way; a lost wake-up is re-requested at next start.
            if let Err(e) = state.push.wake(&device.device_id).await {
                tracing::warn!(device = %device.device_id, error = %e, "could not schedule a push");
            }
            (
                StatusCode::CREATED,
                Json(api::QueuedCommand {
                    command_uuid: uuid,
                    device_id: device.device_id,
                    request_type: command.request_type,
                    status: "queued".into(),
                }),
            )
                .into_response()
        }
        Err(e) => store_error(e),
    }
}

pub async fn list_commands(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Query(page): Query<Page>,
) -> Response {
    let device = match resolve(&state, &id).await {
        Ok(e) => e,
        Err(r) => return r,
    };
    let limit = page.limit.unwrap_or(100).clamp(1, 1000);
    match state.store.commands(&device.device_id, limit).await {
        Ok(commands) => Json(api::Commands {
            device_id: device.device_id,
            commands: commands.iter().map(views::command).collect(),
        })
        .into_response(),
        Err(e) => store_error(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_comparison_accepts_only_the_exact_token() {
        assert!(tokens_match("abc123", "abc123"));
        assert!(!tokens_match("abc124", "abc123"));
        assert!(!tokens_match("", "abc123"));
    }

    #[test]
    fn times_are_rfc3339() {
        assert_eq!(views::time(0).as_deref(), Some("1970-01-01T00:00:00Z"));
    }
}
