//! Admin API for device actions: `POST /api/v1/devices/{id}/actions` starts one on a device
//! (lock, erase, Lost Mode, locate, restart, shut down, clear passcode), `GET` on the same path
//! lists a device's actions, `GET /api/v1/actions` the recent ones and
//! `GET /api/v1/actions/{id}` one action with each device's state. A PIN is accepted in a
//! request and never returned, logged or stored outside the command it goes into.

use super::admin::{error, resolve, store_error};
use super::{body, views, AppState};
use crate::api;
use crate::policy::actions::{check_fields, check_pin, ActionParams, ActionSpec, Secret};
use crate::policy::model::ActionKind;
use crate::store::actions::ActionCounts;
use crate::store::EnrollmentState;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use std::sync::Arc;

/// Devices listed per action in `GET /api/v1/actions/{id}`.
const DEVICES_SHOWN: i64 = 500;

/// The action an administrator asked for, checked: each field is one the action takes (errors
/// name the field and the fix), and a PIN is six digits.
fn action_spec(request: api::ActionRequest) -> Result<(ActionSpec, Option<String>), String> {
    let params = ActionParams {
        message: request.message,
        phone_number: request.phone_number,
        footnote: request.footnote,
        pin: request.pin.map(Secret::new),
        preserve_data_plan: request.preserve_data_plan,
        disallow_proximity_setup: request.disallow_proximity_setup,
        return_to_service: request.return_to_service,
        notify_user: request.notify_user,
    };
    let mut given = params.given_fields();
    given.extend(request.confirm.as_ref().map(|_| "confirm"));
    let errors = check_fields(request.action, &given);
    if !errors.is_empty() {
        return Err(errors.join("; "));
    }
    if let Some(pin) = &params.pin {
        check_pin(pin).map_err(|e| format!("pin: {e}"))?;
    }
    let spec = ActionSpec {
        kind: request.action,
        params,
    };
    Ok((spec, request.confirm))
}

/// `POST /api/v1/devices/{id}/actions`.
pub async fn start_action(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
    body: Body,
) -> Response {
    let request: api::ActionRequest = match body::read_json(
        &state,
        &headers,
        body,
        "invalid action JSON (expected {\"action\": \"Lock\", …})",
    )
    .await
    {
        Ok(r) => r,
        Err((status, reason)) => return error(status, reason),
    };
    let (spec, confirm) = match action_spec(request) {
        Ok(s) => s,
        Err(reason) => return error(StatusCode::BAD_REQUEST, reason),
    };
    let device = match resolve(&state, &id).await {
        Ok(e) => e,
        Err(r) => return r,
    };
    if spec.kind == ActionKind::Erase {
        let confirmed = confirm
            .as_deref()
            .is_some_and(|c| c == device.device_id || Some(c) == device.serial_number.as_deref());
        if !confirmed {
            return error(
                StatusCode::BAD_REQUEST,
                "Erase wipes the device: set confirm to its serial number or UDID",
            );
        }
    }
    if device.state != EnrollmentState::Enrolled {
        return error(
            StatusCode::CONFLICT,
            format!(
                "device {} is not enrolled (state {}): it cannot receive commands",
                device.device_id,
                device.state.as_str()
            ),
        );
    }
    match state.reconciler.start_now(&device, &spec).await {
        Ok(started) => (
            StatusCode::CREATED,
            Json(api::StartedAction {
                action_id: started.action_id,
                device_id: device.device_id,
                action: spec.kind.as_str().to_string(),
                state: crate::store::actions::ActionPhase::of(started.state, false)
                    .as_str()
                    .to_string(),
                detail: started.detail,
                command_uuid: started.command_uuid,
            }),
        )
            .into_response(),
        Err(e) => match e.downcast::<crate::store::StoreError>() {
            Ok(e) => store_error(e),
            Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")),
        },
    }
}

/// `GET /api/v1/devices/{id}/actions`: the device's actions, oldest first.
pub async fn device_actions(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Response {
    let device = match resolve(&state, &id).await {
        Ok(e) => e,
        Err(r) => return r,
    };
    match state.store.device_actions(&device.device_id).await {
        Ok(records) => Json(api::DeviceActions {
            device_id: device.device_id,
            wiped_at: views::optional_time(device.wiped_at),
            actions: records.iter().map(views::action_record).collect(),
        })
        .into_response(),
        Err(e) => store_error(e),
    }
}

/// `GET /api/v1/actions`: the most recently updated actions with per-state counts.
pub async fn list_actions(State(state): State<Arc<AppState>>) -> Response {
    match state.store.recent_actions(100).await {
        Ok(counts) => Json(api::ActionList {
            actions: counts.iter().map(views::action_counts).collect(),
        })
        .into_response(),
        Err(e) => store_error(e),
    }
}

/// `GET /api/v1/actions/{id}`: `api-…` ids, `DeviceAction/<name>@<fingerprint>`, or
/// `DeviceAction/<name>` for the declared action's current version.
pub async fn get_action(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    let snapshot = state.reconciler.snapshot();
    let declared = snapshot.actions.get(&id);
    let action_id = declared.map_or_else(|| id.clone(), |a| a.action_id());
    let counts = match state
        .store
        .action_counts(std::slice::from_ref(&action_id))
        .await
    {
        Ok(c) => c.into_iter().next(),
        Err(e) => return store_error(e),
    };
    let Some(counts) = counts.or_else(|| {
        declared.map(|a| ActionCounts {
            action_id: action_id.clone(),
            action: a.spec.kind.as_str().to_string(),
            source: a.key.clone(),
            ..ActionCounts::default()
        })
    }) else {
        return error(StatusCode::NOT_FOUND, format!("no action {id:?}"));
    };
    let records = match state.store.action_records(&action_id, DEVICES_SHOWN).await {
        Ok(r) => r,
        Err(e) => return store_error(e),
    };
    Json(api::ActionDetail {
        counts: views::action_counts(&counts),
        target: declared.map(|a| a.target.to_string()),
        devices: records.iter().map(views::action_record).collect(),
    })
    .into_response()
}
