//! Pomona: a declarative Apple MDM server.
//!
//! Data flows one way: devices talk to `server`, which decodes with `protocol`, persists through
//! `store`, and answers; administrators queue commands through the admin API. `sim` is a
//! simulated fleet that speaks the same wire protocol as real devices.

pub mod config;
pub mod protocol;
pub mod push;
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
    let push = push::Push::new(store.clone(), &config.push).context("setting up APNs push")?;
    push.report_at_start().await;
    let state = server::AppState::new(store, prepared.admin_token, config.limits);
    let _ = state.push.set(push.clone());
    let scheduler = push.spawn_scheduler();
    let served = server::run(listener, prepared.tls, state, shutdown).await;
    if let Some(task) = scheduler {
        // Pending pushes are in the store; the next start picks them up.
        task.abort();
    }
    served
}

fn report_policy_dir(config: &config::ServeConfig) {
    let dir = &config.policy_dir;
    if !dir.is_dir() {
        tracing::info!(dir = %dir.display(), "no policy directory; nothing is declared yet");
        return;
    }
    let documents = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| {
                    e.path()
                        .extension()
                        .is_some_and(|x| x == "yaml" || x == "yml")
                })
                .count()
        })
        .unwrap_or(0);
    // Policy evaluation arrives with the reconciler; until then the files are only counted.
    tracing::info!(dir = %dir.display(), yaml_files = documents, "policy directory found (policies are not evaluated yet)");
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
