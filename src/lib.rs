//! Pomona: a declarative Apple MDM server.
//!
//! # Layout
//!
//! - `vocab`: the shared vocabulary (clock, persisted profile states, device actions, small file
//!   helpers);
//!   `cmdline`: duration syntax and the HTTPS client of the command-line tools; `lane`,
//!   `histogram`: small utilities.
//! - `protocol`: Apple's wire types and plist codec; `pki`: the device CA, SCEP, signatures.
//! - `store`: persistence (SQLite, PostgreSQL), one trait per area; `policy`: the declared model
//!   and its sources; `api`: the admin API's request and answer types and their OpenAPI
//!   document.
//! - `reconcile`: the pure planner and the driver that runs it; `push`: APNs.
//! - `server`: HTTPS routes; `controller`: Kubernetes; `cli`: the admin and policy commands.
//! - `config`: flags, environment and file, assembling the above (with `serve` here, at the root).
//! - `sim`: the device simulator, apart: it sees only `protocol`, `pki` and `cmdline`, and no
//!   module imports it.
//!
//! Direction, bottom to top (an import only points down; two modules on one layer do not know
//! each other; `tests/dependency_direction.rs` holds the table and enforces it):
//! `vocab`, `cmdline`, `lane`, `histogram` → `protocol`, `pki` → `store`, `policy`, `api` →
//! `reconcile`, `push` → `server`, `controller`, `cli` → `config`.
//!
//! Data flows one way: devices talk to `server`, which decodes with `protocol`, persists through
//! `store`, and answers; administrators queue commands through the admin API. `sim` is a
//! simulated fleet that speaks the same wire protocol as real devices.

pub mod allocator;
pub mod api;
pub mod cli;
pub mod cmdline;
pub mod config;
pub mod controller;
pub mod histogram;
pub mod lane;
pub mod pki;
pub mod policy;
pub mod protocol;
pub mod push;
pub mod reconcile;
pub mod retention;
pub mod server;
pub mod sim;
pub mod store;
pub mod vocab;

use anyhow::Context as _;

// mimalloc instead of the system allocator for the server, its tests and benchmarks: glibc's
// malloc was a large share of the CPU time of a fleet converging (many small, short-lived
// buffers for HTTP, TLS, plists and SQL rows across threads); figures in BENCHMARKS.md.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
        announce_admin_token(path, &prepared.admin_token);
    }
    let store = store::open_sized(&config.database, config.database_connections)
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
    let push = push::Push::new(store.clone(), &config.push).context("setting up APNs push")?;
    push.report_at_start().await;
    let identity = server::IdentitySettings {
        device_ca: prepared.device_ca.clone(),
        policy: config.identity.clone(),
        enrollment: config.enrollment.clone(),
        public_url: config.public_url.clone(),
        tls_root_der,
        push_topic: push.topic().map(str::to_string),
        profile_signer: prepared.profile_signer.clone(),
    };
    if identity.push_topic.is_none() {
        tracing::warn!(
            topic = protocol::enrollment_profile::PLACEHOLDER_TOPIC,
            "no push certificate configured: enrollment profiles carry a placeholder topic; \
             devices enrolled with them check in but cannot be woken by push"
        );
    }
    // Queued commands wake their device through the (persisted) push schedule.
    let wake: reconcile::driver::Wake = {
        let push = push.clone();
        std::sync::Arc::new(move |device_id: &str| {
            let push = push.clone();
            let device_id = device_id.to_string();
            tokio::spawn(async move {
                if let Err(e) = push.wake(&device_id).await {
                    tracing::warn!(device = %device_id, error = %e, "could not schedule a push");
                }
            });
        })
    };
    let reconciler = reconcile::driver::Reconciler::new(
        store.clone(),
        config.plan,
        reconcile::driver::Collaborators {
            wake: Some(wake),
            signer: Some(prepared.signer.clone()),
            sealer: Some(std::sync::Arc::new(prepared.device_ca.sealer())),
        },
    );
    let devices = reconciler
        .load_devices()
        .await
        .context("loading enrolled devices")?;
    tracing::info!(devices, "enrolled devices loaded for reconciling");
    let git_source = git_source(&config)?;
    // With --kube, shutting down also hands the Lease over (at once, not after it expires).
    let (stopping, stopped) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async move {
        shutdown.await;
        let _ = stopping.send(());
    };
    // Every source publishes on this feed; the reconciler applies what arrives, in order.
    let (feed, policy_updates) = policy::feed::PolicyFeed::channel();
    let follower = tokio::spawn(reconciler.clone().follow_policy(policy_updates));
    let (watcher, driver) = start_policy_source(
        &config,
        git_source.as_ref(),
        reconciler.clone(),
        store.clone(),
        feed,
        stopped,
    );
    let retention = retention::spawn(store.clone(), config.command_retention);
    let state = server::AppState::new(
        store,
        prepared.admin_token,
        config.limits,
        identity,
        server::Services {
            reconciler,
            push: push.clone(),
            git: git_source,
            readiness_waits_for_policy: config.kube.is_some(),
        },
    );
    let scheduler = push.spawn_scheduler();
    let served = server::run(listener, prepared.tls, state, shutdown).await;
    if config.kube.is_some() {
        // The controller releases its Lease and returns; do not wait forever for the API.
        let abort = watcher.abort_handle();
        if tokio::time::timeout(std::time::Duration::from_secs(5), watcher)
            .await
            .is_err()
        {
            abort.abort();
        }
    } else {
        watcher.abort();
    }
    driver.abort();
    follower.abort();
    retention.abort();
    if let Some(task) = scheduler {
        // Pending pushes are in the store; the next start picks them up.
        task.abort();
    }
    served
}

/// Shows a newly created admin token once, and only to a person at a terminal: never into a
/// log file, a pipe or `kubectl logs`. Anywhere else, only where it is.
fn announce_admin_token(path: &std::path::Path, token: &str) {
    use std::io::IsTerminal as _;
    if std::io::stdout().is_terminal() {
        println!(
            "Admin API token (saved to {}, shown only this once):\n  {token}",
            path.display()
        );
    } else {
        println!(
            "Admin API token created in {} (readable by this user only)",
            path.display()
        );
    }
}

/// The git policy source, when the configuration names one (its extra CA trusted first).
fn git_source(
    config: &config::ServeConfig,
) -> anyhow::Result<Option<std::sync::Arc<policy::git::GitSource>>> {
    let Some(settings) = &config.git else {
        return Ok(None);
    };
    if let Some(ca) = &config.git_ca_file {
        policy::git::trust_ca_file(ca)
            .with_context(|| format!("loading git_ca_file {}", ca.display()))?;
    }
    tracing::info!(
        source = %settings.describe(),
        interval = ?settings.interval,
        webhook = settings.webhook_secret.is_some(),
        signed_commits_only = settings.allowed_signers.is_some(),
        "policy comes from git"
    );
    Ok(Some(policy::git::GitSource::new(
        settings.clone(),
        &config.data_dir,
    )))
}

/// Starts the policy source the configuration names, publishing on `feed`, and the
/// reconciler's driver: custom resources (the driver runs on the replica holding the Lease,
/// inside the controller, which stops when `stopped` fires), git, or the policy directory.
/// Returns the source's task and the driver's.
fn start_policy_source(
    config: &config::ServeConfig,
    git_source: Option<&std::sync::Arc<policy::git::GitSource>>,
    reconciler: std::sync::Arc<reconcile::driver::Reconciler>,
    store: std::sync::Arc<dyn store::Store>,
    feed: policy::feed::PolicyFeed,
    stopped: tokio::sync::oneshot::Receiver<()>,
) -> (tokio::task::JoinHandle<()>, tokio::task::JoinHandle<()>) {
    let run_driver = |reconciler: std::sync::Arc<reconcile::driver::Reconciler>| {
        tokio::spawn(plan_while_allowed(reconciler, store.clone()))
    };
    match (&config.kube, git_source) {
        (Some(settings), _) => {
            let settings = settings.clone();
            let stop = async move {
                let _ = stopped.await;
            };
            let source = tokio::spawn(async move {
                if let Err(e) = controller::run(settings, reconciler, store, feed, stop).await {
                    tracing::error!(error = format!("{e:#}"), "the Kubernetes source stopped");
                }
            });
            (source, tokio::spawn(async {}))
        }
        (None, Some(source)) => (
            tokio::spawn(source.clone().run(feed)),
            run_driver(reconciler),
        ),
        (None, None) => (
            tokio::spawn(policy::dir_source::watch_dir(
                config.policy_dir.clone(),
                std::time::Duration::from_secs(2),
                feed,
            )),
            run_driver(reconciler),
        ),
    }
}

/// Runs the reconciler while this server holds the database's planning lock
/// (`Store::planning_lock`; with `--kube` the Lease decides instead). A server that cannot take
/// it serves devices only, says so, and tries again every few seconds, so that it takes over
/// when the planning server stops. While other servers use the database, the planner also picks
/// up the devices they saw, as the Kubernetes leader does.
async fn plan_while_allowed(
    reconciler: std::sync::Arc<reconcile::driver::Reconciler>,
    store: std::sync::Arc<dyn store::Store>,
) {
    let mut waiting = false;
    loop {
        match store.planning_lock().await {
            Ok(Some(mut lock)) => {
                if waiting {
                    tracing::info!("took the planning lock: this server plans now");
                    if let Err(e) = reconciler.load_devices().await {
                        tracing::warn!(error = %e, "could not load devices on taking the planning lock");
                    }
                }
                let planner = tokio::spawn(reconciler.clone().run(
                    crate::reconcile::driver::PARALLEL_RECONCILES,
                    std::future::pending::<()>(),
                ));
                let mut since = crate::vocab::clock::now_millis();
                loop {
                    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
                    let now = crate::vocab::clock::now_millis();
                    match lock.check().await {
                        Ok(false) => {}
                        Ok(true) => {
                            controller::mark_seen_since(&reconciler, store.as_ref(), since).await
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "the planning lock's connection broke");
                            break;
                        }
                    }
                    since = now;
                }
                planner.abort();
                tracing::warn!("lost the planning lock: this server serves devices only until it takes it again");
                waiting = true;
            }
            Ok(None) => {
                if !waiting {
                    tracing::error!(
                        "another Pomona server plans for this database: this one serves devices \
                         only and takes over when that one stops. Several replicas belong under \
                         --kube (one Lease, status written back); see docs/deploy.md"
                    );
                    waiting = true;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not ask for the planning lock; trying again");
                waiting = true;
            }
        }
        tokio::time::sleep(std::time::Duration::from_secs(5)).await;
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
