//! `GET /api/v1/devices`: the device list and its search (text, state, platform, group), one
//! keyset page at a time by device id. The store answers text, state and platform; a group's
//! members come from the reconciler's membership index and are handed to the store a chunk at
//! a time, so a page costs the devices it reads, not the fleet.

use super::admin::{error, store_error};
use super::{views, AppState};
use crate::api;
use crate::policy::model::Platform;
use crate::store::{DeviceQuery, EnrollmentState};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use std::sync::Arc;

/// Group members handed to the store per query (bound values in one statement).
const MEMBERS_PER_QUERY: usize = 500;

#[derive(Deserialize)]
pub struct DeviceSearch {
    after: Option<String>,
    limit: Option<i64>,
    q: Option<String>,
    state: Option<String>,
    platform: Option<String>,
    group: Option<String>,
}

/// What narrows the list, checked: an unknown state or platform is refused with the values
/// that exist.
fn device_query(search: &DeviceSearch) -> Result<DeviceQuery, String> {
    let state = match search.state.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(text) => Some(EnrollmentState::parse(text).map_err(|_| {
            format!("state: {text:?} is not one of authenticated, enrolled, checked_out")
        })?),
    };
    let product_prefixes = match search.platform.as_deref().filter(|p| !p.is_empty()) {
        None => Vec::new(),
        Some(text) => {
            let platform = Platform::parse(text).ok_or_else(|| {
                let known: Vec<&str> = Platform::ALL.iter().map(|p| p.as_str()).collect();
                format!("platform: {text:?} is not one of {}", known.join(", "))
            })?;
            crate::reconcile::reported::product_prefixes(platform)
                .iter()
                .map(|p| p.to_string())
                .collect()
        }
    };
    Ok(DeviceQuery {
        text: search.q.clone().filter(|q| !q.trim().is_empty()),
        state,
        product_prefixes,
        among: None,
    })
}

pub async fn list_devices(
    State(state): State<Arc<AppState>>,
    Query(search): Query<DeviceSearch>,
) -> Response {
    let limit = search.limit.unwrap_or(100).clamp(1, 1000);
    let mut query = match device_query(&search) {
        Ok(q) => q,
        Err(reason) => return error(StatusCode::BAD_REQUEST, reason),
    };
    let after = search.after.clone().unwrap_or_default();
    let group = search.group.as_deref().filter(|g| !g.is_empty());
    let found = match group {
        None => state
            .store
            .search_enrollments(&query, Some(&after), limit)
            .await
            .map_err(store_error),
        Some(group) => {
            let Some(members) = state.reconciler.group_members_after(group, &after) else {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("group: no declared device group {group:?}"),
                );
            };
            // Members in id order (bytes), a chunk at a time, until the page is full. The
            // chunk's matches are put in that order here: the database may sort ids by its
            // collation, and the cursor into the members must follow one order only.
            let mut found = Vec::new();
            for chunk in members.chunks(MEMBERS_PER_QUERY) {
                query.among = Some(chunk.to_vec());
                let mut page = match state
                    .store
                    .search_enrollments(&query, None, chunk.len() as i64)
                    .await
                {
                    Ok(page) => page,
                    Err(e) => return store_error(e),
                };
                page.sort_by(|a, b| a.device_id.cmp(&b.device_id));
                page.truncate((limit as usize).saturating_sub(found.len()));
                found.extend(page);
                if found.len() as i64 == limit {
                    break;
                }
            }
            Ok(found)
        }
    };
    match found {
        Ok(devices) => {
            let next_after = (devices.len() as i64 == limit)
                .then(|| devices.last().map(|d| d.device_id.clone()))
                .flatten();
            Json(api::DevicePage {
                devices: devices.iter().map(views::device).collect(),
                next_after,
            })
            .into_response()
        }
        Err(response) => response,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn search(state: Option<&str>, platform: Option<&str>) -> DeviceSearch {
        DeviceSearch {
            after: None,
            limit: None,
            q: Some("  ".into()),
            state: state.map(String::from),
            platform: platform.map(String::from),
            group: None,
        }
    }

    #[test]
    fn a_platform_becomes_its_product_prefixes_and_a_blank_search_matches_all() {
        let query = device_query(&search(Some("enrolled"), Some("iOS"))).unwrap();
        assert_eq!(query.state, Some(EnrollmentState::Enrolled));
        assert_eq!(query.product_prefixes, ["iPhone", "iPod"]);
        assert_eq!(query.text, None);
    }

    #[test]
    fn unknown_states_and_platforms_are_refused_with_the_values_that_exist() {
        let e = device_query(&search(Some("lost"), None)).unwrap_err();
        assert!(e.contains("enrolled") && e.contains("\"lost\""), "{e}");
        let e = device_query(&search(None, Some("Android"))).unwrap_err();
        assert!(e.contains("macOS") && e.contains("\"Android\""), "{e}");
    }
}
