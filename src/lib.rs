//! Pomona: a declarative Apple MDM server.
//!
//! Data flows one way: devices talk to `server`, which decodes with `protocol`, persists through
//! `store`, and answers; administrators queue commands through the admin API. `sim` is a
//! simulated fleet that speaks the same wire protocol as real devices.

pub mod cli;
pub mod config;
pub mod pki;
pub mod policy;
pub mod protocol;
pub mod reconcile;
pub mod server;
pub mod sim;
pub mod store;

use anyhow::Context as _;

/// Runs `pomona serve` with a validated configuration until Ctrl-C or SIGTERM.
pub async fn serve(config: config::ServeConfig) -> anyhow::Result<()> {
    let listener = std::net::TcpListener::bind(config.listen)
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    serve_on(config, listener, shutdown_signal()).await
}

/// Serves on an already bound listener (tests bind port 0) until `shutdown` resolves.
pub async fn serve_on(
    config: config::ServeConfig,
    listener: std::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let prepared = config::bootstrap::prepare(&config)?;
    if let Some(path) = &prepared.new_admin_token_file {
        // Printed once, on the start that created it; later starts only say where it is.
        println!(
            "Admin API token (saved to {}, shown only this once):\n  {}",
            path.display(),
            prepared.admin_token
        );
    }
    report_policy_dir(&config);
    let store = store::open(&config.database)
        .await
        .context("opening the database")?;
    let local = listener.local_addr()?;
    tracing::info!(
        listen = %local,
        public_url = %config.public_url,
        database = store.backend(),
        data_dir = %config.data_dir.display(),
        "Pomona is serving: devices use {}/mdm/checkin and {}/mdm/connect",
        config.public_url,
        config.public_url
    );
    if let Some(ca) = &prepared.generated_ca {
        tracing::info!(ca = %ca.display(), "HTTPS uses a generated certificate; clients must trust this CA");
    }
    let tls_root_der = match &prepared.tls_root_pem {
        Some(pem) => Some(
            openssl::x509::X509::from_pem(pem)
                .and_then(|c| c.to_der())
                .context("reading the generated TLS root")?,
        ),
        None => None,
    };
    let identity = server::IdentitySettings {
        device_ca: prepared.device_ca.clone(),
        policy: config.identity.clone(),
        enrollment: config.enrollment.clone(),
        public_url: config.public_url.clone(),
        tls_root_der,
        push_topic: None,
        profile_signer: prepared.profile_signer.clone(),
    };
    if identity.push_topic.is_none() {
        tracing::warn!(
            topic = protocol::enrollment_profile::PLACEHOLDER_TOPIC,
            "no push certificate configured: enrollment profiles carry a placeholder topic; \
             devices enrolled with them check in but cannot be woken by push"
        );
    }
    let state = server::AppState::new(store, prepared.admin_token, config.limits, identity);
    server::run(listener, prepared.tls, state, shutdown).await
}

/// Reads the policy directory once at start and reports what it declares. (The reconciler
/// that applies it, and re-reading on change, arrive with the reconciler issue.)
fn report_policy_dir(config: &config::ServeConfig) {
    let dir = &config.policy_dir;
    if !dir.is_dir() {
        tracing::info!(dir = %dir.display(), "no policy directory; nothing is declared yet");
        return;
    }
    match policy::source::load_dir(dir) {
        Ok(snapshot) => {
            for warning in &snapshot.warnings {
                tracing::warn!(%warning, "policy warning");
            }
            tracing::info!(
                dir = %dir.display(),
                revision = %snapshot.revision,
                groups = snapshot.groups.len(),
                profiles = snapshot.profiles.len(),
                "policy directory is valid (not applied to devices yet)"
            );
        }
        Err(problems) => {
            for problem in &problems {
                tracing::error!(%problem, "invalid policy");
            }
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down: finishing in-flight requests");
}
