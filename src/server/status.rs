//! `GET /api/v1/status`: the policy revision in force (and the last refused change), and per
//! profile how many devices it targets and where they stand, with a few failing devices and
//! their reasons; per declared device action, its devices' states. Read-only; counts come from the store, targeting from the reconciler's index.

use super::admin::store_error;
use super::views;
use super::AppState;
use crate::api;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use std::sync::Arc;

/// Failing devices listed per profile (the rest are counted).
const FAILING_SHOWN: i64 = 10;

pub async fn status(State(state): State<Arc<AppState>>) -> Response {
    let reconciler = &state.reconciler;
    let snapshot = reconciler.snapshot();
    let health = reconciler.health();
    let counts = match state.store.profile_counts().await {
        Ok(c) => c,
        Err(e) => return store_error(e),
    };
    let targeted = reconciler.targeted_counts();
    let mut profiles = Vec::new();
    let keys: std::collections::BTreeSet<String> = snapshot
        .profiles
        .keys()
        .cloned()
        .chain(counts.iter().map(|c| c.profile_key.clone()))
        .collect();
    for key in keys {
        let declared = snapshot.profiles.get(&key);
        let c = counts
            .iter()
            .find(|c| c.profile_key == key)
            .cloned()
            .unwrap_or_default()
            .against(declared.map(|p| p.hash.as_str()));
        // Installs and removals given up, each with the device's error.
        let mut failing = Vec::new();
        for (phase, stored_state) in [("install", "failed"), ("removal", "removal_failed")] {
            match state
                .store
                .managed_in_state(&key, stored_state, FAILING_SHOWN)
                .await
            {
                Ok(rows) => {
                    failing.extend(rows.into_iter().map(|(device, m)| api::FailingDevice {
                        device_id: device,
                        phase: phase.to_string(),
                        reason: m.last_error,
                    }))
                }
                Err(e) => return store_error(e),
            }
        }
        profiles.push(api::ProfileStatus {
            declared: declared.is_some(),
            identifier: declared.map(|p| p.identifier.clone()),
            targeted: targeted.get(&key).copied().unwrap_or(0),
            verified: c.verified,
            pending: c.pending + c.verifying,
            failed: c.failed,
            removing: c.removing,
            removal_failed: c.removal_failed,
            failing_devices: failing,
            profile: key,
        });
    }
    let actions = match declared_actions(&state, &snapshot).await {
        Ok(a) => a,
        Err(e) => return store_error(e),
    };
    let (waiting, installing) = reconciler.rollout_progress();
    Json(api::Status {
        policy: api::PolicyStatus {
            revision: health.revision,
            source: health.source,
            commit: health.commit,
            last_error: health.last_error,
            refused_commit: health.refused_commit,
            warnings: health.warnings,
            last_fetch_at: views::optional_time(health.last_fetch_at),
            last_fetch_error: health.last_fetch_error,
        },
        rollout: api::RolloutStatus {
            waiting_devices: waiting,
            installing_devices: installing,
            max_devices: reconciler.settings.rollout_max_devices,
        },
        profiles,
        actions,
        groups: groups(reconciler),
    })
    .into_response()
}

/// Each declared group with its member count, by name.
fn groups(reconciler: &crate::reconcile::driver::Reconciler) -> Vec<api::GroupStatus> {
    let mut groups: Vec<api::GroupStatus> = reconciler
        .group_member_counts()
        .into_iter()
        .map(|(name, members)| api::GroupStatus { name, members })
        .collect();
    groups.sort_by(|a, b| a.name.cmp(&b.name));
    groups
}

/// Each declared DeviceAction with per-state device counts and the devices it failed on or
/// could not run on (with the reason).
async fn declared_actions(
    state: &AppState,
    snapshot: &crate::policy::snapshot::PolicySnapshot,
) -> Result<Vec<api::ActionStatus>, crate::store::StoreError> {
    let ids: Vec<String> = snapshot.actions.values().map(|a| a.action_id()).collect();
    let counts = state.store.action_counts(&ids).await?;
    let mut out = Vec::new();
    for action in snapshot.actions.values() {
        let id = action.action_id();
        let c = counts
            .iter()
            .find(|c| c.action_id == id)
            .cloned()
            .unwrap_or_else(|| crate::store::actions::ActionCounts {
                action_id: id.clone(),
                action: action.spec.kind.as_str().to_string(),
                source: action.key.clone(),
                ..Default::default()
            });
        let unsuccessful = if c.failed + c.not_applicable > 0 {
            state.store.action_records(&id, FAILING_SHOWN).await?
        } else {
            Vec::new()
        };
        out.push(api::ActionStatus {
            counts: views::action_counts(&c),
            name: action.name.clone(),
            target: action.target.to_string(),
            failing_devices: unsuccessful
                .iter()
                .filter(|r| {
                    r.state.is_finished()
                        && r.state != crate::store::actions::ActionState::Acknowledged
                })
                .map(|r| api::ActionFailure {
                    device_id: r.device_id.clone(),
                    state: r.phase().as_str().to_string(),
                    reason: r.detail.clone(),
                })
                .collect(),
        });
    }
    Ok(out)
}

/// `POST /api/v1/plan`: a candidate policy (its files) compared with the live fleet.
pub async fn plan(
    State(state): State<Arc<AppState>>,
    headers: axum::http::HeaderMap,
    body: axum::body::Body,
) -> Response {
    use super::admin::error;
    use axum::http::StatusCode;
    let request: api::PlanRequest =
        match super::body::read_json(&state, &headers, body, "expected {\"files\": {path: text}}")
            .await
        {
            Ok(r) => r,
            Err((status, reason)) => return error(status, reason),
        };
    use crate::policy::source::WriteFilesError;
    let dir = std::env::temp_dir().join(format!("pomona-plan-{}", uuid::Uuid::new_v4()));
    let root = dir.join("policies");
    let loaded = match crate::policy::source::write_files(&root, &request.files) {
        Ok(()) => crate::policy::source::load_dir(&root)
            .map_err(|problems| problems.iter().map(|p| p.to_string()).collect()),
        Err(escapes @ WriteFilesError::Escapes(_)) => Err(vec![escapes.to_string()]),
        Err(io @ WriteFilesError::Io { .. }) => {
            let _ = std::fs::remove_dir_all(&dir);
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot write the policy to a temporary directory: {io}"),
            );
        }
    };
    let _ = std::fs::remove_dir_all(&dir);
    let snapshot = match loaded {
        Ok(s) => s,
        Err(problems) => {
            return (
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(api::ErrorBody {
                    error: "the policy is invalid".into(),
                    problems: Some(problems),
                }),
            )
                .into_response()
        }
    };
    match crate::reconcile::preview::preview(&*state.store, &snapshot).await {
        Ok(preview) => Json(preview).into_response(),
        Err(e) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("cannot read the fleet: {e}"),
        ),
    }
}
