//! `GET /api/v1/status`: the policy revision in force (and the last refused change), and per
//! profile how many devices it targets and where they stand, with a few failing devices and
//! their reasons. Read-only; counts come from the store, targeting from the reconciler's index.

use super::admin::store_error;
use super::AppState;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
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
        let c = counts
            .iter()
            .find(|c| c.profile_key == key)
            .cloned()
            .unwrap_or_default();
        let failing = match state
            .store
            .managed_in_state(&key, "failed", FAILING_SHOWN)
            .await
        {
            Ok(rows) => rows
                .into_iter()
                .map(|(device, m)| json!({"device_id": device, "reason": m.last_error}))
                .collect::<Vec<_>>(),
            Err(e) => return store_error(e),
        };
        let declared = snapshot.profiles.get(&key);
        profiles.push(json!({
            "profile": key,
            "declared": declared.is_some(),
            "identifier": declared.map(|p| p.identifier.clone()),
            "targeted": targeted.get(&key).copied().unwrap_or(0),
            "verified": c.verified,
            "pending": c.pending + c.verifying,
            "failed": c.failed,
            "removing": c.removing,
            "failing_devices": failing,
        }));
    }
    Json(json!({
        "policy": {
            "revision": health.revision,
            "last_error": health.last_error,
            "warnings": health.warnings,
        },
        "profiles": profiles,
    }))
    .into_response()
}
