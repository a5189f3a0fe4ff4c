//! HTTPS front door: device endpoints (`/mdm/checkin`, `/mdm/connect`), the admin API
//! (`/api/v1/…`), the web console on it (`/ui`), health and metrics. Handlers decode,
//! authenticate, persist and answer; they hold no business rules and never fan out.

mod actions;
mod admin;
mod body;
mod console;
mod device;
mod device_list;
pub mod enroll;
pub mod hooks;
pub mod identity;
mod last_seen;
mod metrics;
mod sessions;
pub mod settings;
mod status;
pub mod tls;
mod views;

use crate::pki::DeviceCa;
use crate::store::Store;
use axum::routing::{get, post, put};
use axum::Router;
use settings::{EnrollmentSettings, Limits};
use std::sync::Arc;
use std::time::Duration;

pub use last_seen::LastSeen;
pub use metrics::Metrics;

/// Everything a handler may touch.
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub admin_token: String,
    pub limits: Limits,
    pub metrics: Metrics,
    pub last_seen: Arc<LastSeen>,
    sessions: sessions::NotNowSessions,
    pub device_ca: Arc<DeviceCa>,
    /// Seals secrets (PINs, UnlockTokens) before they are stored; opens them when sent.
    pub sealer: crate::pki::seal::Sealer,
    pub identity: identity::IdentityPolicy,
    pub enrollment: EnrollmentSettings,
    /// The https:// base URL devices use.
    pub public_url: String,
    /// DER of the HTTPS root that enrollment profiles install (generated TLS only).
    pub tls_root_der: Option<Vec<u8>>,
    /// The APNs topic from the push certificate, when one is configured.
    pub push_topic: Option<String>,
    /// Signs enrollment profiles when `sign_profiles` is on.
    pub profile_signer: Option<Arc<crate::pki::ProfileSigner>>,
    /// Plans and queues what policy asks of each device.
    pub reconciler: Arc<crate::reconcile::driver::Reconciler>,
    /// APNs push (admin API: wake after enqueue, push now; metrics).
    pub push: Arc<crate::push::Push>,
    /// The git policy source, when policy comes from git (webhook, metrics).
    pub git: Option<Arc<crate::policy::git::GitSource>>,
    /// See `Services::readiness_waits_for_policy`.
    pub readiness_waits_for_policy: bool,
}

/// The running parts handlers reach besides the store, for `AppState::new`.
pub struct Services {
    pub reconciler: Arc<crate::reconcile::driver::Reconciler>,
    pub push: Arc<crate::push::Push>,
    pub git: Option<Arc<crate::policy::git::GitSource>>,
    /// `/readyz` answers 503 until the policy source built its first snapshot (see
    /// `admin::readyz`): true for the Kubernetes source.
    pub readiness_waits_for_policy: bool,
}

/// Identity and enrollment settings for `AppState::new`.
pub struct IdentitySettings {
    pub device_ca: Arc<DeviceCa>,
    pub policy: identity::IdentityPolicy,
    pub enrollment: EnrollmentSettings,
    pub public_url: String,
    pub tls_root_der: Option<Vec<u8>>,
    pub push_topic: Option<String>,
    pub profile_signer: Option<Arc<crate::pki::ProfileSigner>>,
}

impl AppState {
    pub fn new(
        store: Arc<dyn Store>,
        admin_token: String,
        limits: Limits,
        identity: IdentitySettings,
        services: Services,
    ) -> Arc<Self> {
        Arc::new(Self {
            reconciler: services.reconciler,
            push: services.push,
            git: services.git,
            readiness_waits_for_policy: services.readiness_waits_for_policy,
            last_seen: Arc::new(LastSeen::new(store.clone())),
            store,
            admin_token,
            limits,
            metrics: Metrics::default(),
            sessions: sessions::NotNowSessions::default(),
            sealer: identity.device_ca.sealer(),
            device_ca: identity.device_ca,
            identity: identity.policy,
            enrollment: identity.enrollment,
            public_url: identity.public_url.trim_end_matches('/').to_string(),
            tls_root_der: identity.tls_root_der,
            push_topic: identity.push_topic,
            profile_signer: identity.profile_signer,
        })
    }
}

pub fn router(state: Arc<AppState>) -> Router {
    let admin = Router::new()
        .route("/devices", get(device_list::list_devices))
        .route("/devices/{id}", get(admin::get_device))
        .route("/devices/{id}/revoke", post(admin::revoke_device))
        .route("/devices/{id}/labels", put(admin::put_labels))
        .route("/enrollment-tokens", post(enroll::create_enrollment_token))
        .route("/status", get(status::status))
        .route("/plan", post(status::plan))
        .route(
            "/devices/{id}/commands",
            post(admin::enqueue_command).get(admin::list_commands),
        )
        .route("/devices/{id}/push", post(admin::push_device))
        .route(
            "/devices/{id}/actions",
            post(actions::start_action).get(actions::device_actions),
        )
        .route("/actions", get(actions::list_actions))
        .route("/actions/{*id}", get(actions::get_action))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            admin::require_token,
        ))
        // The API's description holds no secret: tools read it without a token.
        .route("/openapi.json", get(admin::openapi))
        .layer(axum::middleware::from_fn(admin::errors_as_json));
    Router::new()
        .route("/mdm/checkin", put(device::checkin))
        .route("/mdm/connect", put(device::connect))
        .route("/enroll", get(enroll::enrollment_profile))
        .route("/scep", get(enroll::scep).post(enroll::scep))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(admin::readyz))
        .route("/metrics", get(metrics::render))
        .route("/hooks/git", post(hooks::git))
        .route("/ui", get(console::page))
        .route("/ui/", get(console::page))
        .route("/ui/{file}", get(console::file))
        .nest("/api/v1", admin)
        .fallback(admin::not_found)
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .with_state(state)
}

/// Serves HTTPS on an already bound listener until `shutdown` resolves, then drains in-flight
/// requests (up to 10 s) and flushes buffered writes.
pub async fn run(
    listener: std::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    state: Arc<AppState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    listener.set_nonblocking(true)?;
    let handle = axum_server::Handle::new();
    let flusher = state.last_seen.spawn_flusher(Duration::from_secs(2));
    {
        let handle = handle.clone();
        tokio::spawn(async move {
            shutdown.await;
            handle.graceful_shutdown(Some(Duration::from_secs(10)));
        });
    }
    let config = axum_server::tls_rustls::RustlsConfig::from_config(tls);
    let acceptor = tls::PeerAcceptor::new(axum_server::tls_rustls::RustlsAcceptor::new(config));
    let mut server = axum_server::from_tcp(listener)
        .acceptor(acceptor)
        .handle(handle);
    server
        .http_builder()
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(state.limits.read_timeout);
    server
        .serve(router(state.clone()).into_make_service())
        .await?;
    flusher.abort();
    state.last_seen.flush().await;
    Ok(())
}
