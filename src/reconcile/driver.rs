//! The driver: keeps the current `PolicySnapshot` and an in-memory index of device attributes,
//! and re-plans devices when something that concerns them changes — a policy change (only the
//! devices whose groups or profiles it touches), a device report (only that device), a retry
//! coming due — one reconcile per device at a time, a few devices in parallel. Each reconcile
//! reads the device's stored state, runs the pure planner, writes the result in one
//! transaction, and wakes the device when it queued something. Plans finished together are
//! written together by the store's write queue: one transaction for all of them and the device
//! exchanges of the moment (group commit, see `store::group_commit`), so a policy change that
//! touches the whole fleet costs a durable write per batch of devices, not per device. Reconciles
//! run on a thread of their own (`crate::lane`).

use super::fleet::Fleet;
use super::fold::{fold_open_commands, Folded};
use super::membership::with_labels;
use super::outcome::ReconcileError;
use super::plan::{command_uuid, plan, PlanInput, PlanSettings};
use super::reported;
use super::work_queue::WorkQueue;
use crate::policy::feed::PolicyUpdate;
use crate::policy::snapshot::PolicySnapshot;
use crate::protocol::CommandEnvelope;
use crate::store::reconcile::PlanChange;
use crate::store::{Enrollment, EnrollmentState, NewCommand, Store};
use crate::vocab::profiles::{Intent, ManagedProfile, ProfileState, ReportedProfiles};
use plist::{Dictionary, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

/// Reconciles reading and planning at once (a reconcile gives its place back before its plan
/// is written, see `reconcile_releasing`). 256 converged faster than 64, and 1,024 was slower:
/// the single SQLite writer, not concurrency, was the limit (figures: BENCHMARKS.md,
/// "Reconciler").
pub const PARALLEL_RECONCILES: usize = 256;

/// The stored inventory and ProfileList as they stand for the enrollment that began at
/// `enrolled_at` (its last Authenticate): entries nothing has happened to since are pending
/// again (or dropped, if they were being removed: the device no longer has them), and an older
/// ProfileList is not the device's. What the store's Authenticate does, applied again by the
/// planner so that a plan written back from before the Authenticate cannot undo it.
fn since_enrollment(
    managed: &[ManagedProfile],
    reported: Option<ReportedProfiles>,
    enrolled_at: i64,
) -> (Vec<ManagedProfile>, Option<ReportedProfiles>) {
    let managed = managed
        .iter()
        .filter_map(|m| {
            // Entries with no time at all are fresh, or were reset by the Authenticate itself.
            let touched = m.last_attempt_at.max(m.acknowledged_at);
            if touched.is_none_or(|t| t >= enrolled_at) {
                return Some(m.clone());
            }
            match m.state {
                ProfileState::Removing | ProfileState::RemovalFailed => None,
                _ => Some(ManagedProfile {
                    state: ProfileState::Pending,
                    attempts: 0,
                    last_attempt_at: None,
                    acknowledged_at: None,
                    last_error: None,
                    ..m.clone()
                }),
            }
        })
        .collect();
    let reported = reported.filter(|r| r.reported_at >= enrolled_at);
    (managed, reported)
}

/// Called with a device id when commands were queued for it (the push scheduler).
pub type Wake = Arc<dyn Fn(&str) + Send + Sync>;

/// The outcome of the last policy load, for status.
#[derive(Debug, Clone, Default)]
pub struct PolicyHealth {
    pub revision: Option<String>,
    /// Problems of the last load that was refused (the previous snapshot keeps serving).
    pub last_error: Option<Vec<String>>,
    pub warnings: Vec<String>,
    /// Where policy comes from (`dir <path>`, `git <url> <branch> <path>`).
    pub source: Option<String>,
    /// Git sources: the full SHA of the applied commit, the commit of the refused change, the
    /// last successful fetch (Unix ms) and the error of the last fetch when it failed.
    pub commit: Option<String>,
    pub refused_commit: Option<String>,
    pub last_fetch_at: Option<i64>,
    pub last_fetch_error: Option<String>,
}

pub struct Reconciler {
    pub(super) store: Arc<dyn Store>,
    snapshot: RwLock<Arc<PolicySnapshot>>,
    health: RwLock<PolicyHealth>,
    /// The fleet as planning sees it: attributes, group membership, facts (see `fleet`).
    pub(super) fleet: Fleet,
    /// Which devices want planning, and when (see `work_queue`).
    work: WorkQueue,
    wake: Option<Wake>,
    /// Signs profiles declared with `sign: true` (the server's HTTPS identity).
    signer: Option<Arc<crate::pki::ProfileSigner>>,
    /// Seals commands that carry secrets before they are stored (see `pki::seal`).
    sealer: Option<Arc<crate::pki::seal::Sealer>>,
    /// False until a policy source installed its first snapshot. Until then the desired state
    /// is unknown, not empty: nothing is planned (planning against the empty default would
    /// remove every declared profile from each device that talks to the server).
    policy_loaded: std::sync::atomic::AtomicBool,
    /// The revision of the snapshot in force, sent once `set_snapshot` has applied it (the
    /// membership index included): the status writer waits on it so that it never counts a
    /// new revision against the previous snapshot's membership.
    applied_revision: tokio::sync::watch::Sender<Option<String>>,
    /// Devices with device actions waiting or queued: their answers finish actions.
    pub(super) open_actions: Mutex<std::collections::HashSet<String>>,
    /// Devices that answered a command and went on to fetch another in the same session: they
    /// are planned when the session ends (see `command_answered`).
    answered_mid_session: Mutex<std::collections::HashSet<String>>,
    pub settings: PlanSettings,
    /// Reconciles run so far (for metrics and benchmarks).
    pub reconciles: std::sync::atomic::AtomicU64,
    /// How long reconciles take, from a device's turn to its plan committed.
    pub reconcile_latency: crate::histogram::LatencyHistogram,
    /// Where `run` plans devices: a thread of its own, so that planning neither waits behind
    /// device requests nor holds them up (see `crate::lane`).
    lane: crate::lane::Lane,
}

/// How long planning waits for a device that answered a command mid-session to end the session.
const MID_SESSION_GRACE_MS: i64 = 30_000;

/// What the reconciler works with besides the store, given when it is built. A reconciler
/// built without them (tests) wakes no device, signs no profile and stores commands unsealed.
#[derive(Default)]
pub struct Collaborators {
    /// Called with a device id when commands were queued for it (the push scheduler).
    pub wake: Option<Wake>,
    /// Signs profiles declared with `sign: true` (the server's HTTPS identity).
    pub signer: Option<Arc<crate::pki::ProfileSigner>>,
    /// Seals commands that carry secrets before they are stored (see `pki::seal`).
    pub sealer: Option<Arc<crate::pki::seal::Sealer>>,
}

impl Reconciler {
    pub fn new(
        store: Arc<dyn Store>,
        settings: PlanSettings,
        collaborators: Collaborators,
    ) -> Arc<Self> {
        Arc::new(Self {
            lane: crate::lane::Lane::start("pomona-plan").expect("starting the planning thread"),
            store,
            snapshot: RwLock::new(Arc::new(PolicySnapshot::default())),
            health: RwLock::new(PolicyHealth::default()),
            fleet: Fleet::default(),
            work: WorkQueue::default(),
            wake: collaborators.wake,
            signer: collaborators.signer,
            sealer: collaborators.sealer,
            policy_loaded: std::sync::atomic::AtomicBool::new(false),
            applied_revision: tokio::sync::watch::Sender::new(None),
            open_actions: Mutex::new(std::collections::HashSet::new()),
            answered_mid_session: Mutex::new(std::collections::HashSet::new()),
            settings,
            reconciles: std::sync::atomic::AtomicU64::new(0),
            reconcile_latency: Default::default(),
        })
    }

    /// Asks the push scheduler to wake a device (commands were queued for it).
    pub(super) fn wake_device(&self, device_id: &str) {
        if let Some(wake) = &self.wake {
            wake(device_id);
        }
    }

    /// The sealer, when the server has one (a reconciler built without one, in tests, stores
    /// commands as they are).
    pub(super) fn sealer(&self) -> Option<Arc<crate::pki::seal::Sealer>> {
        self.sealer.clone()
    }

    /// Signs the profiles of `new` declared with `sign: true`, once per content: a profile
    /// whose content is unchanged keeps the signed bytes it had in `old` (a signature carries a
    /// time, so re-signing would make an unchanged profile look changed). The content hash
    /// stays the hash of the unsigned profile.
    fn sign_profiles(&self, old: &PolicySnapshot, new: &mut PolicySnapshot) {
        let signer = self.signer.clone();
        for profile in new.profiles.values_mut().filter(|p| p.sign) {
            if let Some(previous) = old
                .profiles
                .get(&profile.key)
                .filter(|p| p.sign && p.hash == profile.hash)
            {
                profile.mobileconfig = previous.mobileconfig.clone();
                continue;
            }
            let Some(signer) = &signer else {
                tracing::warn!(profile = %profile.key, "no signing identity: the profile is sent unsigned");
                continue;
            };
            match signer.sign(&profile.mobileconfig) {
                Ok(signed) => profile.mobileconfig = Arc::new(signed),
                Err(e) => {
                    tracing::error!(profile = %profile.key, error = %e, "signing failed: the profile is sent unsigned")
                }
            }
        }
    }

    /// True once a policy source installed a snapshot (see `policy_loaded`).
    pub fn has_policy(&self) -> bool {
        self.policy_loaded
            .load(std::sync::atomic::Ordering::Acquire)
    }

    pub fn snapshot(&self) -> Arc<PolicySnapshot> {
        read(&self.snapshot).clone()
    }

    pub fn health(&self) -> PolicyHealth {
        read(&self.health).clone()
    }

    /// Queues a device for reconciling.
    pub fn mark_dirty(&self, device_id: &str) {
        self.work.mark(device_id);
    }

    /// A device answered a command: re-plan it if the reconciler may care. While the device
    /// goes on fetching commands in the same session (`session_goes_on`), planning waits for the
    /// session to end, so that one plan takes in all of the session's answers (an install and
    /// the ProfileList behind it) instead of one plan per answer. A device that drops out
    /// mid-session is planned after `MID_SESSION_GRACE_MS` all the same.
    pub fn command_answered(&self, device_id: &str, session_goes_on: bool) {
        let cares = !read(&self.snapshot).profiles.is_empty()
            || self.fleet.involved(device_id)
            || lock(&self.open_actions).contains(device_id);
        if !cares {
            return;
        }
        if session_goes_on {
            lock(&self.answered_mid_session).insert(device_id.to_string());
            let at = crate::vocab::clock::now_millis() + MID_SESSION_GRACE_MS;
            self.work
                .schedule_no_later(self.fleet.shared_id(device_id), at);
        } else {
            lock(&self.answered_mid_session).remove(device_id);
            self.mark_dirty(device_id);
        }
    }

    /// A device's session ended (it got an empty answer): plan it if it answered commands
    /// during the session.
    pub fn session_ended(&self, device_id: &str) {
        if lock(&self.answered_mid_session).remove(device_id) {
            self.mark_dirty(device_id);
        }
    }

    /// Records what an enrollment says about a device (Authenticate facts, TokenUpdate).
    pub fn observe_enrollment(&self, e: &Enrollment) {
        if e.state == EnrollmentState::CheckedOut {
            self.forget_device(&e.device_id);
            return;
        }
        self.fleet.observe_enrollment(e, &self.snapshot());
    }

    /// Drops a device that left (checked out, wiped) from the in-memory index.
    fn forget_device(&self, device_id: &str) {
        self.fleet.forget(device_id);
        lock(&self.open_actions).remove(device_id);
        lock(&self.answered_mid_session).remove(device_id);
    }

    /// Loads every enrolled device into the index and marks all of them dirty (start-up).
    pub async fn load_devices(&self) -> anyhow::Result<usize> {
        let mut after: Option<String> = None;
        let mut count = 0;
        loop {
            let page = self.store.list_enrollments(after.as_deref(), 1000).await?;
            let Some(last) = page.last() else { break };
            after = Some(last.device_id.clone());
            for e in &page {
                if e.state == EnrollmentState::Enrolled {
                    self.observe_enrollment(e);
                    self.work.mark(&e.device_id);
                    count += 1;
                }
            }
        }
        let mut after: Option<String> = None;
        loop {
            let page = self.store.inventory_page(after.as_deref(), 1000).await?;
            let Some(last) = page.last() else { break };
            after = Some(last.device_id.clone());
            for inventory in page {
                self.observe_inventory(inventory);
            }
        }
        // Devices with actions in flight: their answers must finish them.
        let open = self.store.devices_with_open_actions().await?;
        lock(&self.open_actions).extend(open.iter().cloned());
        self.work.mark_all(open);
        Ok(count)
    }

    /// Folds a stored inventory row (facts, API labels) into the index.
    fn observe_inventory(&self, inventory: crate::store::inventory::DeviceInventory) {
        self.fleet.observe_inventory(inventory, &self.snapshot());
    }

    /// Replaces a device's API labels (already stored) and re-plans it: its groups may change.
    pub fn set_labels(&self, device_id: &str, labels: std::collections::BTreeMap<String, String>) {
        self.fleet.set_labels(device_id, labels, &self.snapshot());
        self.mark_dirty(device_id);
    }

    /// Installs a new snapshot and marks the devices it touches.
    pub fn set_snapshot(&self, mut new: PolicySnapshot) -> usize {
        self.sign_profiles(&self.snapshot(), &mut new);
        let new = Arc::new(new);
        let old = std::mem::replace(&mut *write(&self.snapshot), new.clone());
        let first = !self
            .policy_loaded
            .swap(true, std::sync::atomic::Ordering::AcqRel);
        if first {
            tracing::info!(revision = %new.revision, "first policy snapshot: planning starts");
        }
        {
            let mut health = write(&self.health);
            health.revision = Some(new.revision.clone());
            health.last_error = None;
            health.warnings = new.warnings.iter().map(|w| w.to_string()).collect();
        }
        let mut touched = self.fleet.apply_snapshot(&old, &new);
        if first {
            // Nothing was planned before: every device is planned against the policy now known
            // (a profile the previous policy installed and this one dropped is removed too).
            touched.extend(self.fleet.device_ids());
        }
        if !new.profiles.is_empty() {
            // Devices never inventoried may belong to groups that select on what
            // DeviceInformation reports: plan them so that they are asked.
            touched.extend(self.fleet.without_facts());
        }
        // New or changed device actions go first, outside rollout pacing: a lost device
        // must not wait behind a profile rollout.
        let action_targets = self.devices_of_new_actions(&old, &new);
        if !action_targets.is_empty() {
            self.work.mark_all(action_targets);
        }
        let count = touched.len();
        self.work.enqueue_rollout(touched);
        self.applied_revision
            .send_replace(Some(new.revision.clone()));
        tracing::info!(revision = %new.revision, touched_devices = count, "policy snapshot applied");
        count
    }

    /// Follows the revisions `set_snapshot` has applied (None before the first).
    pub fn applied_revisions(&self) -> tokio::sync::watch::Receiver<Option<String>> {
        self.applied_revision.subscribe()
    }

    /// Applies one update from a policy source: a snapshot comes into force, a refusal is
    /// recorded (the snapshot in force keeps serving), health follows the source.
    pub fn apply_policy_update(&self, update: PolicyUpdate) {
        match update {
            PolicyUpdate::Started { description } => {
                self.update_health(|h| h.source = Some(description))
            }
            PolicyUpdate::FetchSucceeded { at } => self.update_health(|h| {
                h.last_fetch_at = Some(at);
                h.last_fetch_error = None;
            }),
            PolicyUpdate::FetchFailed { error } => {
                self.update_health(|h| h.last_fetch_error = Some(error))
            }
            PolicyUpdate::Applied { snapshot, commit } => {
                self.set_snapshot(*snapshot);
                if let Some(commit) = commit {
                    self.update_health(|h| {
                        h.commit = Some(commit);
                        h.refused_commit = None;
                    });
                }
            }
            PolicyUpdate::Refused { problems, commit } => {
                self.policy_refused(problems);
                if let Some(commit) = commit {
                    self.update_health(|h| h.refused_commit = Some(commit));
                }
            }
        }
    }

    /// Applies every update a policy source publishes, in order, until the source's feed is
    /// dropped (the source stopped).
    pub async fn follow_policy(
        self: Arc<Self>,
        mut updates: tokio::sync::mpsc::UnboundedReceiver<PolicyUpdate>,
    ) {
        while let Some(update) = updates.recv().await {
            self.apply_policy_update(update);
        }
    }

    /// Devices targeted by actions that `new` declares and `old` did not (by name and spec).
    fn devices_of_new_actions(&self, old: &PolicySnapshot, new: &PolicySnapshot) -> Vec<String> {
        let fresh: Vec<_> = new
            .actions
            .values()
            .filter(|a| {
                old.actions
                    .get(&a.key)
                    .is_none_or(|o| o.fingerprint != a.fingerprint)
            })
            .collect();
        if fresh.is_empty() {
            return Vec::new();
        }
        fresh
            .into_iter()
            .flat_map(|action| self.fleet.targets_of(&action.target))
            .collect()
    }

    /// Rollout progress: (devices waiting for a slot, devices with installs outstanding).
    pub fn rollout_progress(&self) -> (usize, usize) {
        self.work.rollout_progress()
    }

    /// Lets a policy source record what it knows about itself (source, commit, fetch state).
    pub fn update_health(&self, update: impl FnOnce(&mut PolicyHealth)) {
        update(&mut write(&self.health));
    }

    /// Records a refused policy change; the current snapshot keeps serving.
    pub fn policy_refused(&self, problems: Vec<String>) {
        write(&self.health).last_error = Some(problems);
    }

    /// Profiles each indexed device should carry, counted per profile key (targeted counts).
    pub fn targeted_counts(&self) -> HashMap<String, i64> {
        self.fleet.targeted_counts(&self.snapshot())
    }

    /// A declared group's members after `after`, in id order (None: no such group).
    pub fn group_members_after(&self, group: &str, after: &str) -> Option<Vec<String>> {
        if !self.snapshot().groups.contains_key(group) {
            return None;
        }
        Some(
            self.fleet
                .group_members_after(group, after)
                .unwrap_or_default(),
        )
    }

    /// The declared groups a device belongs to now.
    pub fn groups_of(&self, device_id: &str) -> Vec<String> {
        self.fleet.groups_of(&self.snapshot(), device_id)
    }

    /// Members of each declared group (DeviceGroup status), from the membership index.
    pub fn group_member_counts(&self) -> HashMap<String, i64> {
        self.fleet.group_member_counts(&self.snapshot())
    }

    /// Runs reconciles until `shutdown` resolves, `parallel` devices at a time.
    pub async fn run(
        self: Arc<Self>,
        parallel: usize,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        let permits = Arc::new(tokio::sync::Semaphore::new(parallel.max(1)));
        loop {
            let (batch, next_wakeup) = self.work.take_ready(
                self.settings.rollout_max_devices,
                crate::vocab::clock::now_millis(),
                256,
            );
            if batch.is_empty() {
                let idle = next_wakeup
                    .map(|at| (at - crate::vocab::clock::now_millis()).clamp(1, 1000))
                    .unwrap_or(1000);
                tokio::select! {
                    _ = &mut shutdown => return,
                    _ = self.work.changed() => continue,
                    _ = tokio::time::sleep(Duration::from_millis(idle as u64)) => continue,
                }
            }
            for device in batch {
                let permit = tokio::select! {
                    _ = &mut shutdown => return,
                    p = permits.clone().acquire_owned() => p.expect("semaphore open"),
                };
                self.work.started(&device);
                let this = self.clone();
                self.lane.spawn(async move {
                    let started = std::time::Instant::now();
                    let planned = this.reconcile_releasing(&device, Some(permit)).await;
                    this.reconcile_latency.observe(started.elapsed());
                    match planned {
                        Ok(_) => this.work.succeeded(&device),
                        Err(e) => this.reconcile_failed(&device, ReconcileError::from(e)),
                    }
                    this.work.finished(&device);
                });
            }
        }
    }

    /// A device's reconcile failed: log it as its kind deserves and plan the device again when
    /// its kind says (a database that is down is retried later and later, up to minutes).
    fn reconcile_failed(&self, device_id: &str, error: ReconcileError) {
        let failures = self.work.failed(device_id);
        let retry = error.retry_after(failures);
        let retry_in = retry.map(|d| format!("{}s", d.as_secs()));
        let retry_in = retry_in.as_deref().unwrap_or("after a change");
        if error.needs_attention() {
            tracing::error!(device = %device_id, %error, failures, retry_in, "reconcile failed");
        } else {
            tracing::warn!(device = %device_id, %error, failures, retry_in, "reconcile failed");
        }
        if let Some(delay) = retry {
            let at = crate::vocab::clock::now_millis() + delay.as_millis() as i64;
            self.schedule_wakeup(device_id, at);
        }
    }

    /// Plans one device and writes the plan. Public for tests and benchmarks.
    pub async fn reconcile(self: &Arc<Self>, device_id: &str) -> anyhow::Result<u64> {
        self.reconcile_releasing(device_id, None).await
    }

    /// `reconcile`, giving `permit` (a place among the reconciles in flight) back once the
    /// plan is made, before it is written. Writing waits for a batch of the write queue, up to
    /// a second under a fleet-wide change; with the place held, planning slowed to the pace of
    /// the commits and part of a rollout was pushed seconds late in some runs (BENCHMARKS.md,
    /// "Reconciler", session 8). The places bound the reads and the planning; the device
    /// stays busy (one reconcile at a time) until its plan is written.
    async fn reconcile_releasing(
        self: &Arc<Self>,
        device_id: &str,
        permit: Option<tokio::sync::OwnedSemaphorePermit>,
    ) -> anyhow::Result<u64> {
        self.reconciles
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let view = self.store.reconcile_view(device_id).await?;
        let Some(enrollment) = view.enrollment else {
            self.release_slot(device_id);
            return Ok(0);
        };
        self.observe_enrollment(&enrollment);
        if enrollment.state != EnrollmentState::Enrolled {
            self.release_slot(device_id);
            return Ok(0); // not pushable yet, or checked out
        }
        // Whether policy is known is read before the snapshot, once: a first snapshot arriving
        // during this reconcile must not make it plan against the empty one it read (found by
        // the fleet campaign: a restart removed the profiles of a device planned just then).
        let policy_known = self.has_policy();
        let snapshot = self.snapshot();
        let state = view.state;
        let now = crate::vocab::clock::now_millis();

        let Folded {
            finished,
            in_flight,
            processed,
            newest_report,
            facts,
        } = fold_open_commands(&state.open, state.reported.clone());
        for (facts, at) in facts {
            self.store.set_device_facts(device_id, &facts, at).await?;
            self.fleet.record_facts(device_id, facts, at, &snapshot);
        }

        let attributes = self.fleet.attributes(device_id).unwrap_or_default();
        let attributes = with_labels(&snapshot, &attributes);
        let actions = self
            .reconcile_actions(&enrollment, &attributes, &snapshot, now)
            .await?;
        if actions.queued > 0 {
            self.wake_device(device_id);
        }
        if actions.wiped {
            self.forget_device(device_id);
            self.release_slot(device_id);
            return Ok(actions.queued);
        }
        if !policy_known {
            // Device actions go on (an erase must be recorded, an administrator's lock
            // answered), but what the device should carry is unknown, not empty: no profile is
            // planned until the first snapshot, which plans every device (`set_snapshot`).
            self.release_slot(device_id);
            return Ok(actions.queued);
        }
        let desired = snapshot.desired_for(&attributes);
        // Authenticate resets what the device carries in the store, but a reconcile that read
        // the device just before may have written the old enrollment's rows back: whatever is
        // older than the last Authenticate speaks of the old enrollment, and is reset here too.
        let (managed, newest_report) =
            since_enrollment(&state.managed, newest_report, enrollment.authenticated_at);
        let result = plan(PlanInput {
            device_id,
            desired,
            managed,
            reported: newest_report.as_ref(),
            in_flight: in_flight.clone(),
            finished,
            now,
            settings: self.settings,
        });
        for gave_up in result.managed.iter().filter(|m| {
            m.state == ProfileState::RemovalFailed
                && state
                    .managed
                    .iter()
                    .any(|old| old.identifier == m.identifier && old.state != m.state)
        }) {
            tracing::warn!(device = %device_id, profile = %gave_up.identifier, attempts = gave_up.attempts,
                error = gave_up.last_error.as_deref().unwrap_or(""),
                "RemoveProfile given up after max_attempts: the profile may still be on the device");
        }

        let mut enqueue: Vec<(NewCommand, Intent)> = result
            .commands
            .iter()
            .map(|c| {
                (
                    to_command(&c.uuid, &c.intent, c.payload.as_deref()),
                    c.intent.clone(),
                )
            })
            .collect();
        // With nothing declared and nothing managed there is nothing to verify: no traffic.
        let nothing_to_manage = snapshot.profiles.is_empty() && result.managed.is_empty();
        let next_inventory = self.ask_inventory(
            Inventory {
                device_id,
                now,
                newest_report: newest_report.as_ref(),
                in_flight: &in_flight,
                nothing_to_manage,
                facts_for_actions: actions.needs_facts,
            },
            &mut enqueue,
        );
        let installing = enqueue
            .iter()
            .any(|(_, i)| matches!(i, Intent::Install { .. }))
            || in_flight
                .iter()
                .any(|f| matches!(f.intent, Intent::Install { .. }));
        self.work.set_installing(device_id, installing, now);
        let involved = !result.managed.is_empty() || !enqueue.is_empty() || !in_flight.is_empty();
        self.fleet.set_involved(device_id, involved);
        let reported_changed = newest_report != state.reported;
        let nothing_changed = enqueue.is_empty()
            && result.cancel.is_empty()
            && processed.is_empty()
            && !reported_changed
            && result.managed == state.managed;
        if !nothing_changed {
            let change = PlanChange {
                managed: result.managed,
                processed,
                reported: newest_report.filter(|_| reported_changed),
                enqueue,
                cancel: result.cancel,
            };
            drop(permit);
            // The store's write queue puts plans finishing together in one transaction.
            let queued = self.store.apply_plan(device_id, change, now).await?;
            if queued > 0 {
                self.wake_device(device_id);
            }
            let at = result
                .wake_at
                .map_or(next_inventory, |w| w.min(next_inventory));
            self.schedule_wakeup(device_id, at);
            return Ok(queued);
        }
        let at = result
            .wake_at
            .map_or(next_inventory, |w| w.min(next_inventory));
        self.schedule_wakeup(device_id, at);
        Ok(0)
    }

    /// Inventory: a device never inventoried, or not for `inventory_interval`, is asked for its
    /// ProfileList (so drift and foreign profiles are known) and for the DeviceInformation facts
    /// groups select on (once after enrollment, then with each inventory). UUIDs are seeded by
    /// the interval bucket, so replays ask once per interval. Returns when to inventory next.
    fn ask_inventory(&self, device: Inventory<'_>, enqueue: &mut Vec<(NewCommand, Intent)>) -> i64 {
        let Inventory {
            device_id,
            now,
            newest_report,
            in_flight,
            nothing_to_manage,
            facts_for_actions,
        } = device;
        let list_pending = in_flight.iter().any(|f| f.intent == Intent::ProfileList)
            || enqueue.iter().any(|(_, i)| *i == Intent::ProfileList);
        let interval = self.settings.inventory_interval_ms.max(1);
        let inventory_due = newest_report.map_or(now, |r| r.reported_at + interval);
        if now >= inventory_due && !list_pending && !nothing_to_manage {
            let bucket = (now / interval).to_string();
            let uuid = command_uuid(device_id, "profile-list", "", &bucket, 0);
            enqueue.push((
                to_command(&uuid, &Intent::ProfileList, None),
                Intent::ProfileList,
            ));
        }
        let facts_due = self.fleet.facts_due(device_id, now, interval);
        let facts_pending = in_flight
            .iter()
            .any(|f| f.intent == Intent::DeviceInformation);
        if facts_due && !facts_pending && (!nothing_to_manage || facts_for_actions) {
            let bucket = (now / interval).to_string();
            let uuid = command_uuid(device_id, "device-information", "", &bucket, 0);
            enqueue.insert(
                0,
                (
                    to_command(&uuid, &Intent::DeviceInformation, None),
                    Intent::DeviceInformation,
                ),
            );
        }
        // Up to 10 % jitter, so a fleet enrolled at once does not report in lockstep.
        let jitter = fastrand::i64(0..=interval / 10);
        jitter
            + if nothing_to_manage {
                now + interval
            } else {
                inventory_due.max(now) + if now >= inventory_due { interval } else { 0 }
            }
    }

    /// A device that will not be planned gives its rollout slot back.
    fn release_slot(&self, device_id: &str) {
        self.work
            .set_installing(device_id, false, crate::vocab::clock::now_millis());
    }

    /// Plans `device_id` again at `at` (Unix ms), replacing any earlier request for it.
    fn schedule_wakeup(&self, device_id: &str, at: i64) {
        self.work.schedule(self.fleet.shared_id(device_id), at);
    }
}

/// What deciding a device's inventory looks at.
struct Inventory<'a> {
    device_id: &'a str,
    now: i64,
    newest_report: Option<&'a ReportedProfiles>,
    in_flight: &'a [super::plan::InFlight],
    nothing_to_manage: bool,
    /// A declared action waits for facts (supervision) the device has not reported yet.
    facts_for_actions: bool,
}

/// The command envelope for an intent.
fn to_command(uuid: &str, intent: &Intent, payload: Option<&Vec<u8>>) -> NewCommand {
    let mut dict = Dictionary::new();
    let request_type = match intent {
        Intent::Install { .. } => {
            dict.insert(
                "Payload".into(),
                Value::Data(payload.cloned().unwrap_or_default()),
            );
            "InstallProfile"
        }
        Intent::Remove { identifier } => {
            dict.insert("Identifier".into(), Value::String(identifier.clone()));
            "RemoveProfile"
        }
        Intent::ProfileList => {
            dict.insert("ManagedOnly".into(), Value::Boolean(false));
            "ProfileList"
        }
        Intent::DeviceInformation => {
            let queries = reported::INVENTORY_QUERIES
                .iter()
                .map(|q| Value::String(q.to_string()))
                .collect();
            dict.insert("Queries".into(), Value::Array(queries));
            "DeviceInformation"
        }
    };
    dict.insert("RequestType".into(), Value::String(request_type.into()));
    let command = CommandEnvelope::encode(uuid, &dict);
    // Every device installing this profile gets the same bytes: stored once.
    let shared = match intent {
        Intent::Install { .. } => crate::protocol::command::data_span(&command, "Payload"),
        _ => None,
    };
    NewCommand {
        uuid: uuid.to_string(),
        request_type: request_type.to_string(),
        command,
        shared,
    }
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub(super) fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

pub(super) fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod since_enrollment_tests {
    use super::since_enrollment;
    use crate::vocab::profiles::{ManagedProfile, ProfileState, RemovalPolicy, ReportedProfiles};

    fn entry(id: &str, state: ProfileState, at: Option<i64>) -> ManagedProfile {
        ManagedProfile {
            identifier: id.into(),
            profile_key: format!("Profile/{id}"),
            hash: "h".into(),
            uuid: "U".into(),
            state,
            attempts: 1,
            installs: 3,
            last_attempt_at: at,
            acknowledged_at: at,
            last_error: Some("e".into()),
            removal_policy: RemovalPolicy::Remove,
        }
    }

    #[test]
    fn what_predates_the_last_authenticate_is_the_old_enrollment() {
        let managed = vec![
            entry("old-verified", ProfileState::Verified, Some(100)),
            entry("old-removing", ProfileState::Removing, Some(100)),
            entry("new-verified", ProfileState::Verified, Some(300)),
            entry("fresh", ProfileState::Pending, None),
        ];
        let old_list = ReportedProfiles {
            reported_at: 150,
            ..ReportedProfiles::default()
        };
        let (now, list) = since_enrollment(&managed, Some(old_list), 200);
        assert!(
            list.is_none(),
            "a ProfileList of the old enrollment is not the device's"
        );
        let find = |id: &str| now.iter().find(|m| m.identifier == id).cloned();
        let reset = find("old-verified").unwrap();
        assert_eq!(
            (
                reset.state,
                reset.attempts,
                reset.acknowledged_at,
                reset.installs
            ),
            (ProfileState::Pending, 0, None, 3),
            "pending again, its install counter kept"
        );
        assert!(find("old-removing").is_none(), "nothing left to remove");
        assert_eq!(find("new-verified").unwrap().state, ProfileState::Verified);
        assert_eq!(find("fresh").unwrap().state, ProfileState::Pending);
    }
}
