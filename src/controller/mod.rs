//! The Kubernetes policy source and controller (`pomona serve --kube`): watches the Pomona
//! custom resources, turns them into the same `PolicySnapshot` as the directory source (see
//! `source.rs`) and publishes it on the `PolicyFeed` the reconciler follows — each namespace on its own (`namespaced.rs`), each object keeping what it last
//! had accepted in force when a change cannot be served (`last_good.rs`) — and, on the one
//! replica that holds the `coordination.k8s.io` Lease and only once that snapshot exists, runs
//! the reconciler, writes status through the status subresource (`status.rs`), records events
//! (`events.rs`) and releases the Profile/Restrictions finalizer once devices no longer carry
//! the profile.
//! DeviceActions may take a PIN from a Secret of their own namespace: those Secrets alone are
//! read (`get`, never list or watch), again on every build and every status interval. Every
//! replica serves the device endpoints; queued commands live in the store, so a new leader
//! carries on where the old one stopped. It must not plan, nor touch devices other than
//! through the reconciler.

pub mod action_status;
pub mod conditions;
mod events;
mod last_good;
mod namespaced;
pub mod source;
pub mod status;

use crate::policy::feed::{PolicyFeed, PolicyUpdate};
use crate::policy::model::{
    DeviceActionResource, DeviceGroupResource, DeviceLabelsResource, ProfileResource,
    RestrictionsResource,
};
use crate::reconcile::driver::Reconciler;
use crate::store::{EnrollmentStore, Store};
use anyhow::Context as _;
use futures::StreamExt as _;
use kube::runtime::reflector::{self, Store as Reader};
use kube::runtime::{watcher, WatchStreamExt as _};
use kube::{Api, Client, Resource, ResourceExt};
use source::{Built, Object, ObjectKey, Objects};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The finalizer Pomona puts on Profile and Restrictions objects.
pub const FINALIZER: &str = "mdm.pomona.dev/remove-from-devices";
/// Name of the Lease the replicas compete for.
pub const LEASE_NAME: &str = "pomona-controller";

/// How `serve --kube` talks to the cluster.
#[derive(Debug, Clone)]
pub struct KubeSettings {
    /// A kubeconfig file; none: in-cluster service account (or the usual inference).
    pub kubeconfig: Option<PathBuf>,
    /// Watch only this namespace; none: every namespace.
    pub namespace: Option<String>,
    /// Where the leader Lease lives.
    pub lease_namespace: String,
    /// This replica's name in the Lease and in events (the pod name on Kubernetes).
    pub identity: String,
    /// Lease validity; a dead leader is replaced after at most this long.
    pub lease_duration: Duration,
    /// How often status is recomputed (it is also written on every policy change).
    pub status_interval: Duration,
    /// How long a deleted Profile waits for devices to remove it before its finalizer is
    /// released anyway (the event and log name the devices that kept it).
    pub removal_timeout: Duration,
    /// How often the leader looks for devices that talked to other replicas.
    pub sweep_interval: Duration,
}

/// Shared between the source loop and the leader's status writer.
#[derive(Default)]
struct Shared {
    built: Mutex<Option<Arc<Built>>>,
    changed: tokio::sync::Notify,
    /// The first snapshot was handed to the reconciler.
    first_built: tokio::sync::Notify,
}

/// The watched objects, one reflector store per kind.
#[derive(Clone)]
pub(crate) struct Readers {
    groups: Reader<DeviceGroupResource>,
    profiles: Reader<ProfileResource>,
    restrictions: Reader<RestrictionsResource>,
    labels: Reader<DeviceLabelsResource>,
    actions: Reader<DeviceActionResource>,
}

/// Why a controller task failed, for its retry: a Kubernetes API server that is unreachable,
/// overloaded or failing is transient; one that refused the request is stalled until
/// something changes; anything else is classified as the reconciler classifies it.
pub(crate) fn classify(e: anyhow::Error) -> crate::reconcile::outcome::ReconcileError {
    use crate::reconcile::outcome::ReconcileError;
    if let Some(kube) = e.downcast_ref::<kube::Error>() {
        return match kube {
            kube::Error::Api(status) if status.code < 500 && status.code != 429 => {
                ReconcileError::Stalled(format!("{e:#}"))
            }
            _ => ReconcileError::Transient(format!("{e:#}")),
        };
    }
    e.into()
}

/// Connects to the API server as configured.
pub async fn client(settings: &KubeSettings) -> anyhow::Result<Client> {
    let config = match &settings.kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
                .await
                .with_context(|| format!("kubeconfig {}", path.display()))?
        }
        None => kube::Config::infer()
            .await
            .context("no kubeconfig given and no in-cluster service account found")?,
    };
    Client::try_from(config).context("creating the Kubernetes client")
}

fn api<K>(client: &Client, namespace: &Option<String>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    <K as Resource>::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Starts a reflector for one kind; every change pokes `changed` — creations, updates,
/// deletions and re-lists alike (an object without a finalizer leaves with a delete event
/// only, and its removal must give a new snapshot like any other change).
fn reflect<K>(
    api: Api<K>,
    shared: Arc<Shared>,
    health: Arc<WatchHealth>,
) -> (Reader<K>, tokio::task::JoinHandle<()>)
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (reader, writer) = reflector::store();
    let stream =
        reflector::reflector(writer, watcher(api, watcher::Config::default())).default_backoff();
    let task = tokio::spawn(async move {
        let kind = K::kind(&Default::default()).to_string();
        let mut stream = std::pin::pin!(stream);
        while let Some(item) = stream.next().await {
            match item {
                Ok(_) => {
                    health.watch_succeeded(&kind);
                    // The reflector store has taken the event in by now.
                    shared.changed.notify_one()
                }
                Err(e) => {
                    tracing::warn!(error = %e, kind = %kind, "watch error; retrying");
                    health.watch_failed(&kind, &e);
                }
            }
        }
    });
    (reader, task)
}

/// Whether the custom-resource watches reach the API server, told to the reconciler's policy
/// health (`PolicyUpdate::FetchFailed` / `FetchSucceeded`) only when that changes, so that
/// `/readyz`, `/api/v1/status` and `pomona status` say when the replica serves the last
/// snapshot it built because the API server cannot be watched.
struct WatchHealth {
    /// The kinds whose watch failed last, with the error.
    failing: Mutex<std::collections::BTreeMap<String, String>>,
    /// Whether a first success was reported (the time the watches first answered).
    reported: std::sync::atomic::AtomicBool,
    feed: PolicyFeed,
}

impl WatchHealth {
    fn new(feed: PolicyFeed) -> Self {
        Self {
            failing: Mutex::new(std::collections::BTreeMap::new()),
            reported: std::sync::atomic::AtomicBool::new(false),
            feed,
        }
    }

    fn watch_failed(&self, kind: &str, error: &dyn std::fmt::Display) {
        let mut failing = self.failing.lock().expect("lock");
        let message = format!("watching {kind} on the Kubernetes API server: {error}");
        if failing.get(kind) != Some(&message) {
            failing.insert(kind.to_string(), message.clone());
            self.feed.send(PolicyUpdate::FetchFailed { error: message });
        }
    }

    fn watch_succeeded(&self, kind: &str) {
        let mut failing = self.failing.lock().expect("lock");
        let recovered = failing.remove(kind).is_some();
        let first = !self
            .reported
            .swap(true, std::sync::atomic::Ordering::Relaxed);
        match failing.values().next() {
            // Another kind's watch still fails: that is the error to show now.
            Some(still) if recovered => self.feed.send(PolicyUpdate::FetchFailed {
                error: still.clone(),
            }),
            Some(_) => {}
            None if recovered || first => self.feed.send(PolicyUpdate::FetchSucceeded {
                at: crate::vocab::clock::now_millis(),
            }),
            None => {}
        }
    }
}

fn object<K, S>(
    kind: &'static str,
    o: &K,
    spec: &S,
    status: Option<&crate::policy::crd::PolicyStatus>,
) -> Object<S>
where
    K: Resource,
    S: Clone,
{
    let meta = o.meta();
    Object {
        key: ObjectKey {
            kind,
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
        },
        uid: meta.uid.clone().unwrap_or_default(),
        generation: meta.generation,
        created: meta
            .creation_timestamp
            .as_ref()
            .map_or(0, |t| t.0.as_millisecond()),
        deleting: meta.deletion_timestamp.is_some(),
        spec: spec.clone(),
        persisted: status.and_then(|s| s.in_force.clone()),
    }
}

impl Readers {
    fn actions(&self) -> Vec<Object<crate::policy::model::DeviceActionSpec>> {
        self.actions
            .state()
            .iter()
            .map(|o| object("DeviceAction", &**o, &o.spec, None))
            .collect()
    }

    /// The watched objects, without Secret values (see `read_secrets`).
    fn objects(&self) -> Objects {
        Objects {
            groups: self
                .groups
                .state()
                .iter()
                .map(|o| object("DeviceGroup", &**o, &o.spec, o.status.as_ref()))
                .collect(),
            profiles: self
                .profiles
                .state()
                .iter()
                .map(|o| object("Profile", &**o, &o.spec, o.status.as_ref()))
                .collect(),
            restrictions: self
                .restrictions
                .state()
                .iter()
                .map(|o| object("Restrictions", &**o, &o.spec, o.status.as_ref()))
                .collect(),
            labels: self
                .labels
                .state()
                .iter()
                .map(|o| object("DeviceLabels", &**o, &o.spec, o.status.as_ref()))
                .collect(),
            actions: self.actions(),
            secrets: Default::default(),
            unreadable_secrets: Default::default(),
        }
    }
}

/// The Secrets that DeviceActions refer to, as last read.
#[derive(Debug, Default, PartialEq)]
struct SecretsRead {
    values: crate::policy::actions::SecretValues,
    unreadable: std::collections::BTreeMap<(String, String), String>,
}

/// Reads each referenced Secret with `get`, from the referring object's namespace: the
/// controller needs no list or watch on Secrets (it never sees the ones nobody refers to), and
/// reading again on every build picks up a rotated PIN. Values are kept as `Secret`s, whose
/// `Debug` hides them; errors name the Secret and never carry its data.
async fn read_secrets(
    client: &Client,
    wanted: &std::collections::BTreeSet<(String, String)>,
) -> SecretsRead {
    use k8s_openapi::api::core::v1::Secret;
    let mut read = SecretsRead::default();
    for (namespace, name) in wanted {
        let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
        let why = match api.get_opt(name).await {
            Ok(Some(secret)) => {
                for (key, value) in secret.data.unwrap_or_default() {
                    // kubectl create secret --from-file keeps a trailing newline; a PIN file does
                    // too, and is trimmed the same way.
                    let text = String::from_utf8_lossy(&value.0).trim().to_string();
                    read.values.insert(
                        crate::policy::actions::secret_key(Some(namespace), name, &key),
                        crate::policy::actions::Secret::new(text),
                    );
                }
                continue;
            }
            Ok(None) => format!(
                "does not exist: create it (kubectl create secret generic {name} -n {namespace} \
                 --from-literal=KEY=PIN) or fix spec.pin.secretKeyRef.name"
            ),
            Err(kube::Error::Api(e)) if e.code == 403 => format!(
                "cannot be read: Pomona may not get Secrets in namespace {namespace}; bind the \
                 ClusterRole pomona-action-secrets there (see deploy/rbac.yaml)"
            ),
            Err(e) => format!("cannot be read ({e}); retried on the next pass"),
        };
        read.unreadable
            .insert((namespace.clone(), name.clone()), why);
    }
    read
}

/// Runs the Kubernetes source and, while this replica leads, the reconciler and the status
/// writer, until `stop` resolves (then the Lease is released so another replica takes over at
/// once). Tasks also end when the returned future is dropped (the Lease then expires).
pub async fn run(
    settings: KubeSettings,
    reconciler: Arc<Reconciler>,
    store: Arc<dyn Store>,
    feed: PolicyFeed,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    tokio::pin!(stop);
    let client = client(&settings).await?;
    let shared = Arc::new(Shared::default());
    let health = Arc::new(WatchHealth::new(feed.clone()));
    let mut tasks = TaskSet::default();
    let (groups, t) = reflect(
        api(&client, &settings.namespace),
        shared.clone(),
        health.clone(),
    );
    tasks.push(t);
    let (profiles, t) = reflect(
        api(&client, &settings.namespace),
        shared.clone(),
        health.clone(),
    );
    tasks.push(t);
    let (restrictions, t) = reflect(
        api(&client, &settings.namespace),
        shared.clone(),
        health.clone(),
    );
    tasks.push(t);
    let (labels, t) = reflect(
        api(&client, &settings.namespace),
        shared.clone(),
        health.clone(),
    );
    tasks.push(t);
    let (actions, t) = reflect(
        api(&client, &settings.namespace),
        shared.clone(),
        health.clone(),
    );
    tasks.push(t);
    let readers = Readers {
        groups,
        profiles,
        restrictions,
        labels,
        actions,
    };
    let all_ready = async {
        for ready in [
            readers.groups.wait_until_ready().await,
            readers.profiles.wait_until_ready().await,
            readers.restrictions.wait_until_ready().await,
            readers.labels.wait_until_ready().await,
            readers.actions.wait_until_ready().await,
        ] {
            ready.context("a custom resource watch stopped before it was ready")?;
        }
        anyhow::Ok(())
    };
    tokio::pin!(all_ready);
    loop {
        tokio::select! {
            ready = &mut all_ready => { ready?; break }
            _ = tokio::time::sleep(Duration::from_secs(30)) => tracing::error!(
                "the Pomona custom resources cannot be listed yet: are the CRDs installed \
                 (`pomona crds | kubectl apply -f -`) and may this identity list them (deploy/rbac.yaml)? \
                 Devices are served meanwhile; policies apply once the watches start"
            ),
        }
    }
    let source = format!(
        "kube {}",
        settings.namespace.as_deref().unwrap_or("(all namespaces)")
    );
    feed.send(PolicyUpdate::Started {
        description: source,
    });
    tracing::info!(
        namespace = settings.namespace.as_deref().unwrap_or("(all)"),
        "watching Pomona custom resources"
    );

    let status_kick = Arc::new(tokio::sync::Notify::new());
    tasks.push(tokio::spawn(source_loop(
        client.clone(),
        settings.status_interval,
        readers.clone(),
        shared.clone(),
        feed,
        status_kick.clone(),
    )));

    // No reconciling before the first snapshot: planning against an empty one would remove
    // every profile from every device.
    loop {
        let first = shared.first_built.notified();
        if shared.built.lock().expect("lock").is_some() {
            break;
        }
        first.await;
    }

    let lease = kube_lease_manager::LeaseManagerBuilder::new(client.clone(), LEASE_NAME)
        .with_namespace(settings.lease_namespace.clone())
        .with_identity(settings.identity.clone())
        .with_duration(settings.lease_duration.as_secs().max(2))
        .with_grace((settings.lease_duration.as_secs() / 3).max(1))
        .build()
        .await
        .context("setting up the leader Lease")?;
    let (mut leading, lease_task) = lease.watch().await;
    let mut leader_tasks: Option<TaskSet> = None;
    loop {
        let is_leader = *leading.borrow_and_update();
        match (is_leader, leader_tasks.is_some()) {
            (true, false) => {
                tracing::info!(identity = %settings.identity, "this replica leads: reconciling and writing status");
                let mut t = TaskSet::default();
                if let Err(e) = reconciler.load_devices().await {
                    tracing::warn!(error = %e, "could not load devices on taking the lead");
                }
                t.push(tokio::spawn(reconciler.clone().run(
                    crate::reconcile::driver::PARALLEL_RECONCILES,
                    std::future::pending::<()>(),
                )));
                t.push(tokio::spawn(status::status_loop(
                    client.clone(),
                    settings.clone(),
                    readers.clone(),
                    shared_built(shared.clone()),
                    reconciler.clone(),
                    store.clone(),
                    status_kick.clone(),
                )));
                t.push(tokio::spawn(sweep_loop(
                    reconciler.clone(),
                    store.clone(),
                    settings.sweep_interval,
                )));
                leader_tasks = Some(t);
            }
            (false, true) => {
                tracing::warn!(identity = %settings.identity, "this replica lost the lead: it only serves devices now");
                leader_tasks = None; // dropping aborts them
            }
            _ => {}
        }
        tokio::select! {
            changed = leading.changed() => if changed.is_err() { break },
            _ = &mut stop => {
                drop(leader_tasks);
                drop(leading); // the Lease task releases the Lease and ends
                return match lease_task.await {
                    Ok(Ok(_)) => {
                        tracing::info!(identity = %settings.identity, "stopped; the Lease is released");
                        Ok(())
                    }
                    Ok(Err(e)) => Err(anyhow::anyhow!(e).context("releasing the Lease")),
                    Err(e) => Err(anyhow::anyhow!(e).context("leader election task crashed")),
                };
            }
        }
    }
    drop(leader_tasks);
    match lease_task.await {
        Ok(Ok(_)) => anyhow::bail!("the leader election stopped"),
        Ok(Err(e)) => Err(anyhow::anyhow!(e).context("leader election failed")),
        Err(e) => Err(anyhow::anyhow!(e).context("leader election task crashed")),
    }
}

/// A getter for the latest build, for the status writer.
pub(crate) type BuiltGetter = Arc<dyn Fn() -> Option<Arc<Built>> + Send + Sync>;

fn shared_built(shared: Arc<Shared>) -> BuiltGetter {
    Arc::new(move || shared.built.lock().expect("lock").clone())
}

/// Rebuilds the snapshot whenever a watched object changes (debounced), and publishes a new
/// revision on `feed`. The Secrets DeviceActions refer to are read again before each
/// build and every `secrets_every`; a changed value (a rotated PIN) rebuilds too.
async fn source_loop(
    client: Client,
    secrets_every: Duration,
    readers: Readers,
    shared: Arc<Shared>,
    feed: PolicyFeed,
    status_kick: Arc<tokio::sync::Notify>,
) {
    let mut last_revision: Option<String> = None;
    let mut last_verdicts = None;
    let mut last_secrets = SecretsRead::default();
    // What each object has in force, from one build to the next.
    let mut memory = source::Memory::new();
    loop {
        let mut objects = readers.objects();
        let secrets = read_secrets(&client, &source::referenced_secrets(&objects.actions)).await;
        for (secret, why) in &secrets.unreadable {
            if last_secrets.unreadable.get(secret) != Some(why) {
                tracing::warn!(secret = %format!("{}/{}", secret.0, secret.1), reason = %why,
                    "a Secret referenced by a DeviceAction is unavailable");
            }
        }
        // The revision hashes specs, never Secret values: a rotated PIN alone leaves it as it is,
        // yet the reconciler must get the snapshot that carries the new value.
        let secrets_changed = secrets != last_secrets;
        objects.secrets = secrets.values.clone();
        objects.unreadable_secrets = secrets.unreadable.clone();
        last_secrets = secrets;
        let previous = memory.clone();
        let built =
            tokio::task::spawn_blocking(move || source::build_snapshot(&objects, &previous)).await;
        match built {
            Ok(Ok(built)) => {
                let revision = built.snapshot.revision.clone();
                let refused: Vec<String> = built
                    .verdicts
                    .iter()
                    .filter_map(|(k, (_, v))| match v {
                        source::Verdict::Invalid { errors, in_force } => Some(format!(
                            "{k}: {}{}",
                            errors.join("; "),
                            in_force.map_or_else(String::new, |g| format!(
                                " (generation {g} stays in force)"
                            ))
                        )),
                        _ => None,
                    })
                    .collect();
                if last_revision.as_deref() != Some(revision.as_str()) || secrets_changed {
                    tracing::info!(
                        %revision,
                        groups = built.snapshot.groups.len(),
                        profiles = built.snapshot.profiles.len(),
                        actions = built.snapshot.actions.len(),
                        refused = refused.len(),
                        "policy from custom resources"
                    );
                    feed.send(PolicyUpdate::Applied {
                        snapshot: Box::new(built.snapshot.clone()),
                        commit: None,
                    });
                    last_revision = Some(revision);
                }
                if last_verdicts.as_ref() != Some(&built.verdicts) {
                    for problem in &refused {
                        tracing::error!(%problem, "invalid custom resource: refused, the others are served");
                    }
                    if !refused.is_empty() {
                        feed.send(PolicyUpdate::Refused {
                            problems: refused,
                            commit: None,
                        });
                    }
                    last_verdicts = Some(built.verdicts.clone());
                }
                memory = built.in_force.clone();
                *shared.built.lock().expect("lock") = Some(Arc::new(built));
                shared.first_built.notify_waiters();
                status_kick.notify_one();
            }
            Ok(Err(problems)) => {
                for problem in &problems {
                    tracing::error!(%problem, "custom resources refused as a whole; the previous snapshot keeps serving");
                }
                feed.send(PolicyUpdate::Refused {
                    problems,
                    commit: None,
                });
            }
            Err(e) => tracing::error!(error = %e, "building the snapshot crashed"),
        }
        // Wait for a watched object to change, or for a referenced Secret to (Secrets are not
        // watched: see `read_secrets`).
        loop {
            tokio::select! {
                _ = shared.changed.notified() => break,
                _ = tokio::time::sleep(secrets_every) => {
                    let wanted = source::referenced_secrets(&readers.actions());
                    if !wanted.is_empty() && read_secrets(&client, &wanted).await != last_secrets {
                        break;
                    }
                }
            }
        }
        // Let a burst of changes (kubectl apply -f dir/) settle into one snapshot.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Devices that talked to another replica were marked dirty there, where no reconciler runs:
/// the leader re-plans every device seen since its last look.
async fn sweep_loop(reconciler: Arc<Reconciler>, store: Arc<dyn EnrollmentStore>, every: Duration) {
    let mut since = crate::vocab::clock::now_millis();
    loop {
        tokio::time::sleep(every).await;
        let now = crate::vocab::clock::now_millis();
        mark_seen_since(&reconciler, store.as_ref(), since).await;
        since = now;
    }
}

/// Marks dirty every device seen since `since` (Unix ms), a page at a time.
pub(crate) async fn mark_seen_since(
    reconciler: &Reconciler,
    store: &dyn EnrollmentStore,
    since: i64,
) {
    // Last-seen writes are batched: look back a little further than asked.
    let horizon = since - 5_000;
    let mut after: Option<(i64, String)> = None;
    loop {
        let page = match store.devices_seen_since(horizon, after.clone(), 1000).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "device sweep could not read recent devices");
                return;
            }
        };
        let Some(last) = page.last() else { return };
        after = Some(last.clone());
        for (_, device_id) in &page {
            reconciler.mark_dirty(device_id);
        }
    }
}

/// Tasks that are aborted together when the set is dropped.
#[derive(Default)]
pub(crate) struct TaskSet(Vec<tokio::task::JoinHandle<()>>);

impl TaskSet {
    pub(crate) fn push(&mut self, task: tokio::task::JoinHandle<()>) {
        self.0.push(task);
    }
}

impl Drop for TaskSet {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// The name of an object, for messages.
pub(crate) fn name_of<K: ResourceExt>(o: &K) -> String {
    format!("{}/{}", o.namespace().unwrap_or_default(), o.name_any())
}
