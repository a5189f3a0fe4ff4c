//! Device endpoints: check-in (`PUT /mdm/checkin`) and command exchange (`PUT /mdm/connect`),
//! exactly as PROTOCOL.md §2–§5 describe. In one-URL mode a device sends check-ins to the
//! connect URL too; they are told apart by content type.
//!
//! Status codes: 400 for a message that cannot be understood, 403 for an identity that is
//! refused, 503 when the database is unavailable. Never 401: it makes a device un-enroll.

use super::identity::{
    self, authorize, presented_certificate, IdentityRefusal, PresentedCertificate,
};
use super::tls::TlsPeer;
use super::{body, AppState};
use crate::protocol::ddm::{self, DdmAnswer};
use crate::protocol::{self, Checkin, CheckinMessage, Report, ReportStatus};
use crate::store::{
    CertificateStanding, DeviceFacts, EnrollmentType, ReportOutcome, ReportRecord, StoreError,
    TokenUpdateRecord,
};
use crate::vocab::clock::now_millis;
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use std::sync::Arc;

pub async fn checkin(
    State(state): State<Arc<AppState>>,
    peer: Option<Extension<TlsPeer>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match authenticated_body(&state, &headers, peer.as_deref(), body, "check-in").await {
        Ok(request) => handle_checkin(&state, &request).await,
        Err(refused) => refused,
    }
}

pub async fn connect(
    State(state): State<Arc<AppState>>,
    peer: Option<Extension<TlsPeer>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let is_checkin = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.trim().starts_with(protocol::CHECKIN_CONTENT_TYPE));
    let what = if is_checkin {
        "check-in"
    } else {
        "command report"
    };
    let request = match authenticated_body(&state, &headers, peer.as_deref(), body, what).await {
        Ok(request) => request,
        Err(refused) => return refused,
    };
    if is_checkin {
        return handle_checkin(&state, &request).await;
    }
    handle_report(&state, &request).await
}

/// A device request whose sender is established, with its body, not yet parsed.
struct AuthenticatedBody {
    presented: PresentedCertificate,
    standing: CertificateStanding,
    raw: Vec<u8>,
}

/// Establishes who is asking before anything of the body is parsed: the certificate's chain
/// and validity, then its standing in the store (unknown and revoked certificates stop here,
/// before the body is even read), then the body within its limits, then an `Mdm-Signature`
/// over the raw bytes. Which device the body claims to be is checked after parsing.
async fn authenticated_body(
    state: &AppState,
    headers: &HeaderMap,
    peer: Option<&TlsPeer>,
    body: Body,
    what: &str,
) -> Result<AuthenticatedBody, Response> {
    let (presented, signature) = presented_certificate(state, headers, peer)
        .map_err(|refusal| identity_refused(state, refusal, what))?;
    let standing = identity::standing(state, &presented)
        .await
        .map_err(|refusal| identity_refused(state, refusal, what))?;
    let raw = body::read(state, headers, body)
        .await
        .map_err(|(status, reason)| refuse(status, what, &reason))?;
    if let Some(signature) = signature {
        signature
            .verify(&raw)
            .map_err(|refusal| identity_refused(state, refusal, what))?;
    }
    Ok(AuthenticatedBody {
        presented,
        standing,
        raw,
    })
}

fn identity_refused(state: &AppState, refusal: IdentityRefusal, what: &str) -> Response {
    match refusal {
        IdentityRefusal::Forbidden(reason) => {
            state.metrics.count_identity_refusal();
            refuse(
                StatusCode::FORBIDDEN,
                what,
                &format!("identity refused: {reason}"),
            )
        }
        IdentityRefusal::Unavailable(e) => store_failure(e, what),
    }
}

fn refuse(status: StatusCode, what: &str, reason: &str) -> Response {
    tracing::warn!(%status, what, reason, "refused device request");
    (status, format!("{reason}\n")).into_response()
}

fn store_failure(e: StoreError, what: &str) -> Response {
    match e {
        StoreError::Unavailable(_) => {
            tracing::error!(error = %e, what, "database unavailable; asking the device to retry");
            let mut response = (
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily unavailable, retry later\n",
            )
                .into_response();
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("30"));
            response
        }
        other => {
            tracing::error!(error = %other, what, "store error");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error\n").into_response()
        }
    }
}

fn plist_response(value: plist::Value) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, protocol::COMMAND_CONTENT_TYPE)],
        protocol::to_xml(&value),
    )
        .into_response()
}

/// 200 with a zero-byte body: "nothing more" / "accepted" (not an empty plist).
fn empty_ok() -> Response {
    StatusCode::OK.into_response()
}

async fn handle_checkin(state: &AppState, request: &AuthenticatedBody) -> Response {
    let (presented, raw) = (&request.presented, request.raw.as_slice());
    let checkin = match Checkin::parse(raw) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(reason = %e, body = %e.raw_excerpt(), "malformed check-in");
            return (
                StatusCode::BAD_REQUEST,
                format!("malformed check-in: {e}\n"),
            )
                .into_response();
        }
    };
    state.metrics.count_checkin(checkin.message.message_type());
    let is_authenticate = matches!(checkin.message, CheckinMessage::Authenticate(_));
    let identity = match authorize(presented, &request.standing, &checkin.ids, is_authenticate) {
        Ok(id) => id,
        Err(refusal) => return identity_refused(state, refusal, "check-in"),
    };
    let now = now_millis();
    let device_id = identity.device_id.as_str();
    let message_type = checkin.message.message_type().to_string();
    tracing::info!(device = device_id, message_type = %message_type, user_channel = identity.user_channel, proof = presented.proof.as_str(), "check-in");

    if identity.user_channel {
        return user_channel_checkin(&checkin.message, device_id);
    }
    state.last_seen.touch(device_id, now);
    let enrollment_type = if checkin.ids.is_user_enrollment() {
        EnrollmentType::UserEnrollment
    } else {
        EnrollmentType::Device
    };

    match checkin.message {
        CheckinMessage::Authenticate(a) => {
            let fingerprint = identity.certificate_fingerprint.clone();
            authenticate(state, device_id, enrollment_type, a, fingerprint, now).await
        }
        CheckinMessage::TokenUpdate(t) => {
            token_update(state, device_id, enrollment_type, t, now).await
        }
        CheckinMessage::CheckOut => match state.store.check_out(device_id, now).await {
            Ok(found) => {
                if !found {
                    tracing::warn!(
                        device = device_id,
                        "CheckOut from a device that was never enrolled"
                    );
                }
                empty_ok()
            }
            Err(e) => store_failure(e, "CheckOut"),
        },
        CheckinMessage::SetBootstrapToken { bootstrap_token } => {
            match state
                .store
                .set_bootstrap_token(device_id, bootstrap_token.as_deref())
                .await
            {
                Ok(()) => empty_ok(),
                Err(StoreError::NotFound(reason)) => {
                    refuse(StatusCode::FORBIDDEN, "SetBootstrapToken", &reason)
                }
                Err(e) => store_failure(e, "SetBootstrapToken"),
            }
        }
        CheckinMessage::GetBootstrapToken => match state.store.bootstrap_token(device_id).await {
            Ok(Some(token)) => {
                let mut dict = plist::Dictionary::new();
                dict.insert("BootstrapToken".into(), plist::Value::Data(token));
                plist_response(plist::Value::Dictionary(dict))
            }
            Ok(None) => empty_ok(),
            Err(e) => store_failure(e, "GetBootstrapToken"),
        },
        CheckinMessage::DeclarativeManagement { endpoint, .. } => match ddm::answer(&endpoint) {
            DdmAnswer::Json(body) => (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                body,
            )
                .into_response(),
            DdmAnswer::Empty => empty_ok(),
            DdmAnswer::NotFound => (StatusCode::NOT_FOUND, "no such declaration\n").into_response(),
            DdmAnswer::BadEndpoint(reason) => {
                refuse(StatusCode::BAD_REQUEST, "DeclarativeManagement", &reason)
            }
        },
        CheckinMessage::GetToken { token_service_type } => refuse(
            StatusCode::BAD_REQUEST,
            "GetToken",
            &format!("TokenServiceType {token_service_type:?} is not offered by this server"),
        ),
        CheckinMessage::ReturnToService => {
            let mut inner = plist::Dictionary::new();
            inner.insert("Enabled".into(), plist::Value::Boolean(false));
            let mut dict = plist::Dictionary::new();
            dict.insert("ReturnToService".into(), plist::Value::Dictionary(inner));
            plist_response(plist::Value::Dictionary(dict))
        }
        CheckinMessage::UserAuthenticate { .. } => user_channel_checkin(
            &CheckinMessage::UserAuthenticate {
                digest_response: None,
            },
            device_id,
        ),
        CheckinMessage::Unknown(name) => refuse(
            StatusCode::BAD_REQUEST,
            "check-in",
            &format!("unsupported MessageType {name:?}"),
        ),
    }
}

/// Authenticate: the device's facts are recorded and what we believed it carried is reset
/// (a re-enrollment starts from nothing); it is planned once its TokenUpdate arrives.
async fn authenticate(
    state: &AppState,
    device_id: &str,
    enrollment_type: EnrollmentType,
    a: protocol::checkin::Authenticate,
    fingerprint: String,
    now: i64,
) -> Response {
    let facts = DeviceFacts {
        device_id: device_id.to_string(),
        enrollment_type,
        topic: a.topic,
        serial_number: a.serial_number,
        model: a.model,
        model_name: a.model_name,
        product_name: a.product_name,
        os_version: a.os_version,
        build_version: a.build_version,
        device_name: a.device_name,
        imei: a.imei,
        meid: a.meid,
        certificate_fingerprint: Some(fingerprint),
    };
    match state.store.authenticate(&facts, now).await {
        Ok(outcome) => {
            tracing::info!(
                device = device_id,
                re_enrollment = outcome.re_enrollment,
                cancelled_commands = outcome.cancelled_commands,
                "device authenticated; waiting for TokenUpdate"
            );
            empty_ok()
        }
        Err(e) => store_failure(e, "Authenticate"),
    }
}

/// TokenUpdate: the push credentials are recorded (the unlock token sealed), and the device,
/// now enrolled and pushable, is brought in line with policy.
async fn token_update(
    state: &AppState,
    device_id: &str,
    enrollment_type: EnrollmentType,
    t: protocol::checkin::TokenUpdate,
    now: i64,
) -> Response {
    let record = TokenUpdateRecord {
        device_id: device_id.to_string(),
        enrollment_type,
        topic: t.topic,
        token: t.token,
        push_magic: t.push_magic,
        unlock_token: t.unlock_token.map(|token| state.sealer.seal(&token)),
        awaiting_configuration: t.awaiting_configuration,
    };
    match state.store.token_update(&record, now).await {
        Ok(()) => {
            // Enrolled and pushable: time to bring it in line with policy.
            state.reconciler.mark_dirty(device_id);
            empty_ok()
        }
        Err(e) => store_failure(e, "TokenUpdate"),
    }
}

/// User channels (macOS users, Shared iPad) are not managed yet: their TokenUpdates are accepted
/// without touching the device channel's credentials, and UserAuthenticate is declined with 410,
/// the protocol's way of saying "this server does not manage the user".
fn user_channel_checkin(message: &CheckinMessage, device_id: &str) -> Response {
    match message {
        CheckinMessage::UserAuthenticate { .. } => {
            tracing::info!(
                device = device_id,
                "declining user channel (UserAuthenticate → 410)"
            );
            StatusCode::GONE.into_response()
        }
        other => {
            tracing::info!(
                device = device_id,
                message_type = other.message_type(),
                "user-channel check-in accepted; user channels are not managed yet"
            );
            empty_ok()
        }
    }
}

async fn handle_report(state: &AppState, request: &AuthenticatedBody) -> Response {
    let (presented, raw) = (&request.presented, request.raw.as_slice());
    let report = match Report::parse(raw) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(reason = %e, body = %e.raw_excerpt(), "malformed command report");
            return (
                StatusCode::BAD_REQUEST,
                format!("malformed command report: {e}\n"),
            )
                .into_response();
        }
    };
    state.metrics.count_report(report.status.as_str());
    // Binding covers unknown and checked-out devices too: the answer is 403 without the
    // unrecognized-device body, so a wiped or restored database never un-enrolls a fleet.
    let identity = match authorize(presented, &request.standing, &report.ids, false) {
        Ok(id) => id,
        Err(refusal) => return identity_refused(state, refusal, "command report"),
    };
    if identity.user_channel {
        return empty_ok(); // No user-channel commands are queued yet.
    }
    let device_id = identity.device_id.as_str();
    let now = now_millis();
    state.last_seen.touch(device_id, now);

    let record = match (report.status, report.command_uuid.as_deref()) {
        (ReportStatus::Idle, _) => {
            state.sessions.start(device_id);
            None
        }
        (status, Some(uuid)) => {
            if status == ReportStatus::NotNow {
                state.sessions.skip(device_id, uuid);
            }
            Some(ReportRecord {
                command_uuid: uuid,
                status,
                raw,
            })
        }
        (_, None) => unreachable!("Report::parse requires a CommandUUID for every status but Idle"),
    };

    // The result and the next command in one transaction (one durable write per exchange).
    let skip = state.sessions.skipped(device_id);
    let (outcome, next) = match state
        .store
        .exchange(device_id, record.as_ref(), &skip, now)
        .await
    {
        Ok(done) => done,
        // Non-2xx makes the device keep the result and report it again later.
        Err(e) => return store_failure(e, "command report"),
    };
    if let (Some(outcome), Some(record)) = (outcome, &record) {
        let (uuid, status) = (record.command_uuid, record.status);
        match outcome {
            ReportOutcome::Dequeued => {
                state.reconciler.command_answered(device_id, next.is_some());
                tracing::info!(
                    device = device_id,
                    command = uuid,
                    status = status.as_str(),
                    "command finished"
                )
            }
            ReportOutcome::StillQueued => {
                tracing::info!(
                    device = device_id,
                    command = uuid,
                    "NotNow: kept queued, skipped for this exchange"
                );
            }
            ReportOutcome::AlreadyFinished => {
                tracing::info!(
                    device = device_id,
                    command = uuid,
                    status = status.as_str(),
                    "duplicate report ignored"
                )
            }
            ReportOutcome::Unknown => {
                tracing::warn!(
                    device = device_id,
                    command = uuid,
                    status = status.as_str(),
                    "report for an unknown command UUID"
                )
            }
        }
    }

    match next {
        Some(command) => {
            tracing::info!(device = device_id, command = %command.uuid, request_type = %command.request_type, "sending command");
            let body = match state.sealer.open(&command.command) {
                Ok(body) => body,
                Err(e) => {
                    tracing::error!(device = device_id, command = %command.uuid, error = %e, "cannot send a sealed command");
                    return (StatusCode::INTERNAL_SERVER_ERROR, "internal error\n").into_response();
                }
            };
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, protocol::COMMAND_CONTENT_TYPE)],
                body,
            )
                .into_response()
        }
        None => {
            state.sessions.end(device_id);
            state.reconciler.session_ended(device_id);
            empty_ok()
        }
    }
}
