//! Prometheus metrics in the text exposition format: requests by endpoint and status, check-ins
//! by message type, command reports by status, the fleet-wide queue depth (read at scrape), and
//! the latency of device requests and reconciles (`crate::histogram`).

use super::AppState;
use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    checkins: Mutex<BTreeMap<String, u64>>,
    reports: Mutex<BTreeMap<&'static str, u64>>,
    identity_refusals: std::sync::atomic::AtomicU64,
    scep: Mutex<BTreeMap<&'static str, u64>>,
    device_latency: crate::histogram::LatencyHistogram,
}

impl Metrics {
    pub fn count_checkin(&self, message_type: &str) {
        // Unknown types from devices are bucketed so a bad client cannot grow the map unboundedly.
        let known = [
            "Authenticate",
            "TokenUpdate",
            "CheckOut",
            "UserAuthenticate",
            "SetBootstrapToken",
            "GetBootstrapToken",
            "DeclarativeManagement",
            "GetToken",
            "ReturnToService",
        ];
        let label = if known.contains(&message_type) {
            message_type
        } else {
            "other"
        };
        *lock(&self.checkins).entry(label.to_string()).or_default() += 1;
    }

    pub fn count_identity_refusal(&self) {
        self.identity_refusals
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// SCEP PKIOperation outcomes: "issued", or the failInfo name.
    pub fn count_scep(&self, outcome: &'static str) {
        *lock(&self.scep).entry(outcome).or_default() += 1;
    }

    pub fn count_report(&self, status: &'static str) {
        *lock(&self.reports).entry(status).or_default() += 1;
    }

    fn count_request(&self, endpoint: &str, status: u16) {
        *lock(&self.requests)
            .entry((endpoint.to_string(), status))
            .or_default() += 1;
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Middleware: counts every request by its route template (never the raw path: ids would explode
/// the label set) and status, inside a tracing span.
pub async fn track(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let endpoint = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = request.method().clone();
    let span = tracing::info_span!("request", %method, endpoint = %endpoint);
    let started = std::time::Instant::now();
    let response = tracing::Instrument::instrument(next.run(request), span).await;
    if endpoint.starts_with("/mdm/") {
        state.metrics.device_latency.observe(started.elapsed());
    }
    state
        .metrics
        .count_request(&endpoint, response.status().as_u16());
    response
}

pub async fn render(State(state): State<Arc<AppState>>) -> Response {
    let mut out = String::new();
    out.push_str("# HELP pomona_http_requests_total HTTP requests by route and status.\n");
    out.push_str("# TYPE pomona_http_requests_total counter\n");
    for ((endpoint, status), n) in lock(&state.metrics.requests).iter() {
        let _ = writeln!(
            out,
            "pomona_http_requests_total{{endpoint=\"{endpoint}\",status=\"{status}\"}} {n}"
        );
    }
    out.push_str("# HELP pomona_device_request_duration_seconds Time to answer a device's check-in or command exchange.\n");
    out.push_str("# TYPE pomona_device_request_duration_seconds histogram\n");
    state
        .metrics
        .device_latency
        .render("pomona_device_request_duration_seconds", &mut out);
    out.push_str("# HELP pomona_checkins_total Check-in messages by MessageType.\n");
    out.push_str("# TYPE pomona_checkins_total counter\n");
    for (message_type, n) in lock(&state.metrics.checkins).iter() {
        let _ = writeln!(
            out,
            "pomona_checkins_total{{message_type=\"{message_type}\"}} {n}"
        );
    }
    out.push_str("# HELP pomona_command_reports_total Command reports from devices by Status.\n");
    out.push_str("# TYPE pomona_command_reports_total counter\n");
    for (status, n) in lock(&state.metrics.reports).iter() {
        let _ = writeln!(
            out,
            "pomona_command_reports_total{{status=\"{status}\"}} {n}"
        );
    }
    // Where managed profiles stand across the fleet (from the covering index status uses).
    if let Ok(counts) = state.store.profile_counts().await {
        out.push_str("# HELP pomona_managed_profiles Managed profiles on devices by state (removal_failed: RemoveProfile given up after max_attempts).\n");
        out.push_str("# TYPE pomona_managed_profiles gauge\n");
        let total = |f: fn(&crate::store::reconcile::ProfileCounts) -> i64| {
            counts.iter().map(f).sum::<i64>()
        };
        for (label, n) in [
            ("pending", total(|c| c.pending)),
            ("verifying", total(|c| c.verifying)),
            ("verified", total(|c| c.verified)),
            ("failed", total(|c| c.failed)),
            ("removing", total(|c| c.removing)),
            ("removal_failed", total(|c| c.removal_failed)),
        ] {
            let _ = writeln!(out, "pomona_managed_profiles{{state=\"{label}\"}} {n}");
        }
    }
    let (waiting, installing) = state.reconciler.rollout_progress();
    out.push_str(
        "# HELP pomona_rollout_waiting_devices Devices a policy change touched, waiting for a rollout slot.\n",
    );
    out.push_str("# TYPE pomona_rollout_waiting_devices gauge\n");
    let _ = writeln!(out, "pomona_rollout_waiting_devices {waiting}");
    out.push_str(
        "# HELP pomona_rollout_installing_devices Devices with profile installs outstanding.\n",
    );
    out.push_str("# TYPE pomona_rollout_installing_devices gauge\n");
    let _ = writeln!(out, "pomona_rollout_installing_devices {installing}");
    out.push_str("# HELP pomona_reconciles_total Device reconciles run (plans made).\n");
    out.push_str("# TYPE pomona_reconciles_total counter\n");
    let _ = writeln!(
        out,
        "pomona_reconciles_total {}",
        state
            .reconciler
            .reconciles
            .load(std::sync::atomic::Ordering::Relaxed)
    );
    out.push_str(
        "# HELP pomona_reconcile_duration_seconds Time from a device's turn to its plan written.\n",
    );
    out.push_str("# TYPE pomona_reconcile_duration_seconds histogram\n");
    state
        .reconciler
        .reconcile_latency
        .render("pomona_reconcile_duration_seconds", &mut out);
    out.push_str(
        "# HELP pomona_identity_refusals_total Device requests refused (403) for their identity.\n",
    );
    out.push_str("# TYPE pomona_identity_refusals_total counter\n");
    let _ = writeln!(
        out,
        "pomona_identity_refusals_total {}",
        state
            .metrics
            .identity_refusals
            .load(std::sync::atomic::Ordering::Relaxed)
    );
    out.push_str("# HELP pomona_scep_requests_total SCEP PKIOperations by outcome.\n");
    out.push_str("# TYPE pomona_scep_requests_total counter\n");
    for (outcome, n) in lock(&state.metrics.scep).iter() {
        let _ = writeln!(
            out,
            "pomona_scep_requests_total{{outcome=\"{outcome}\"}} {n}"
        );
    }
    out.push_str("# HELP pomona_command_queue_depth Commands queued and not yet answered.\n");
    out.push_str("# TYPE pomona_command_queue_depth gauge\n");
    match state.store.queue_depth().await {
        Ok(depth) => {
            let _ = writeln!(out, "pomona_command_queue_depth {depth}");
        }
        Err(e) => tracing::warn!(error = %e, "queue depth unavailable for metrics"),
    }
    render_policy(&state, &mut out);
    crate::retention::render_metrics(&mut out);
    state.push.render_metrics(&mut out);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

/// The policy revision in force and, for git sources, fetch health.
fn render_policy(state: &AppState, out: &mut String) {
    let health = state.reconciler.health();
    let escape = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
    out.push_str(
        "# HELP pomona_policy_revision_info The policy revision being served (value 1).\n",
    );
    out.push_str("# TYPE pomona_policy_revision_info gauge\n");
    if let Some(revision) = &health.revision {
        let _ = writeln!(
            out,
            "pomona_policy_revision_info{{revision=\"{}\",commit=\"{}\"}} 1",
            escape(revision),
            escape(health.commit.as_deref().unwrap_or(""))
        );
    }
    out.push_str(
        "# HELP pomona_policy_refused 1 while the latest policy change is refused (the previous revision serves).\n",
    );
    out.push_str("# TYPE pomona_policy_refused gauge\n");
    let _ = writeln!(
        out,
        "pomona_policy_refused {}",
        u8::from(health.last_error.is_some())
    );
    let Some(git) = &state.git else {
        return;
    };
    let stats = git.stats();
    out.push_str("# HELP pomona_git_fetches_total Git fetches by outcome.\n");
    out.push_str("# TYPE pomona_git_fetches_total counter\n");
    let _ = writeln!(
        out,
        "pomona_git_fetches_total{{outcome=\"success\"}} {}",
        stats.fetches
    );
    let _ = writeln!(
        out,
        "pomona_git_fetches_total{{outcome=\"failure\"}} {}",
        stats.failures
    );
    out.push_str(
        "# HELP pomona_git_last_successful_fetch_timestamp_seconds When the remote last answered.\n",
    );
    out.push_str("# TYPE pomona_git_last_successful_fetch_timestamp_seconds gauge\n");
    if let Some(ms) = stats.last_success_ms {
        let _ = writeln!(
            out,
            "pomona_git_last_successful_fetch_timestamp_seconds {:.3}",
            ms as f64 / 1000.0
        );
    }
}
