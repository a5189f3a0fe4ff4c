//! Persistent state: enrollments, the per-device command queue, command results, device
//! identity, push scheduling, what the reconciler believes each device carries, inventory and
//! device actions. One trait per area (`EnrollmentStore`, `QueueStore`, `IdentityStore`,
//! `PushStore`, `reconcile::ReconcileStore`, `inventory::InventoryStore`,
//! `actions::ActionStore`); `Store` is all of them, and a consumer that needs only one area takes
//! only that trait (push takes `PushStore`, the last-seen batcher `EnrollmentStore`, status
//! writers `StatusReads`). Two backends: SQLite (embedded, the default) and PostgreSQL (several
//! replicas, scale). Both run the same SQL (`sql.rs` and the area files) and must pass the same
//! conformance suite (`tests/store_conformance/`).
//!
//! Every state change that spans rows is one transaction. Queue reads and writes go through the
//! partial index on queued commands, so their cost does not grow with the fleet. This module holds
//! no policy: it stores what it is told and answers what it is asked.

pub mod actions;
mod backend;
pub mod group_commit;
pub mod inventory;
mod migrations;
mod model;
mod postgres;
pub mod reconcile;
mod sql;
mod sqlite;
mod sqlite_readers;

pub use model::*;
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

use async_trait::async_trait;
use std::sync::Arc;

pub type StoreResult<T> = Result<T, StoreError>;

/// Store failures, typed by what the caller should do next.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The database is unreachable, busy or timed out: retry later. Devices get 503, never 401.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The request refers to something that does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with the stored state (e.g. a command for a checked-out device).
    #[error("{0}")]
    Conflict(String),
    /// Anything else the database reported.
    #[error("database error: {0}")]
    Database(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        use sqlx::Error as E;
        match &e {
            E::PoolTimedOut | E::PoolClosed | E::Io(_) | E::Tls(_) | E::WorkerCrashed => {
                StoreError::Unavailable(e.to_string())
            }
            E::Database(db) => {
                // SQLite BUSY/LOCKED and PostgreSQL serialization/connection classes are transient.
                let code = db.code().map(|c| c.to_string()).unwrap_or_default();
                let transient =
                    matches!(code.as_str(), "5" | "6" | "517" | "261" | "40001" | "40P01")
                        || code.starts_with("08")
                        || code.starts_with("57P");
                if transient {
                    StoreError::Unavailable(e.to_string())
                } else {
                    StoreError::Database(e.to_string())
                }
            }
            _ => StoreError::Database(e.to_string()),
        }
    }
}

/// Enrollments: Authenticate, TokenUpdate and CheckOut, bootstrap tokens, finding and listing
/// devices, and when each was last seen.
#[async_trait]
pub trait EnrollmentStore: Send + Sync {
    /// Authenticate: records device facts and starts a fresh enrollment. Queued commands of a
    /// previous enrollment are cancelled in the same transaction; push stays off until TokenUpdate.
    async fn authenticate(&self, facts: &DeviceFacts, now: i64)
        -> StoreResult<AuthenticateOutcome>;
    /// TokenUpdate: stores push credentials and marks the device enrolled. A missing unlock
    /// token keeps the stored one. Creates the enrollment if Authenticate was never seen.
    async fn token_update(&self, update: &TokenUpdateRecord, now: i64) -> StoreResult<()>;
    /// CheckOut: marks the device unenrolled; its history stays. False if unknown.
    async fn check_out(&self, device_id: &str, now: i64) -> StoreResult<bool>;
    async fn set_bootstrap_token(&self, device_id: &str, token: Option<&[u8]>) -> StoreResult<()>;
    async fn bootstrap_token(&self, device_id: &str) -> StoreResult<Option<Vec<u8>>>;
    async fn enrollment(&self, device_id: &str) -> StoreResult<Option<Enrollment>>;
    /// Looks a device up by UDID/EnrollmentID, then by serial number.
    async fn find_enrollment(&self, key: &str) -> StoreResult<Option<Enrollment>>;
    /// Devices last seen at or after `since` (Unix ms), ordered by (last seen, id), after the
    /// cursor `after` (keyset pagination through the last-seen index): what changed lately,
    /// without reading the fleet.
    async fn devices_seen_since(
        &self,
        since: i64,
        after: Option<(i64, String)>,
        limit: i64,
    ) -> StoreResult<Vec<(i64, String)>>;
    /// Enrollments ordered by id, starting after `after` (keyset pagination).
    async fn list_enrollments(
        &self,
        after: Option<&str>,
        limit: i64,
    ) -> StoreResult<Vec<Enrollment>>;
    /// Writes a batch of last-seen times in one transaction (never moves a time backwards).
    async fn record_last_seen(&self, seen: &[(String, i64)]) -> StoreResult<()>;
}

/// The per-device command queue and the results devices report.
#[async_trait]
pub trait QueueStore: Send + Sync {
    /// Queues a command for a device. Fails with NotFound / Conflict for unknown or
    /// checked-out devices, and with Conflict when the UUID is already used.
    async fn enqueue(&self, device_id: &str, command: &NewCommand, now: i64) -> StoreResult<()>;
    /// The oldest queued command of this device not in `skip`; counts it as sent.
    async fn next_command(
        &self,
        device_id: &str,
        skip: &[String],
        now: i64,
    ) -> StoreResult<Option<QueuedCommand>>;
    /// Records a device's report for one of its commands (one transaction). Terminal statuses
    /// store the raw result and dequeue; NotNow keeps the command queued. A report for another
    /// device's command is treated exactly like an unknown UUID.
    async fn record_report(
        &self,
        device_id: &str,
        report: &ReportRecord<'_>,
        now: i64,
    ) -> StoreResult<ReportOutcome>;
    /// One command exchange in one transaction: `record_report` (when the device reported a
    /// result) then `next_command`, with exactly their effects. Returns the report's outcome
    /// and the command to send next.
    async fn exchange(
        &self,
        device_id: &str,
        report: Option<&ReportRecord<'_>>,
        skip: &[String],
        now: i64,
    ) -> StoreResult<(Option<ReportOutcome>, Option<QueuedCommand>)>;
    /// Commands of one device, newest first, with their results.
    async fn commands(&self, device_id: &str, limit: i64) -> StoreResult<Vec<CommandRecord>>;
    /// Number of queued commands across the fleet (for metrics).
    async fn queue_depth(&self) -> StoreResult<i64>;
}

/// Device identity: the certificates the CA issued, their standing, and one-time secrets (SCEP
/// challenges, enrollment tokens).
#[async_trait]
pub trait IdentityStore: Send + Sync {
    /// Records a certificate the CA has just issued. With `challenge_hash`, the one-time SCEP
    /// challenge is used up in the same transaction, and nothing is recorded unless it was
    /// valid (the returned use says why not).
    async fn record_certificate(
        &self,
        certificate: &CertificateRecord,
        challenge_hash: Option<&str>,
        now: i64,
    ) -> StoreResult<SecretUse>;
    /// The stored certificate with this fingerprint, with the binding and state of the
    /// enrollment it was bound to at Authenticate (one round trip: this runs on every device
    /// request, before its body is parsed). None if not ours.
    async fn certificate_standing(
        &self,
        fingerprint: &str,
    ) -> StoreResult<Option<CertificateStanding>>;
    /// Certificates bound to a device, newest first.
    async fn device_certificates(&self, device_id: &str) -> StoreResult<Vec<CertificateRecord>>;
    /// Revokes every certificate bound to a device; returns how many were newly revoked.
    async fn revoke_device_certificates(&self, device_id: &str, now: i64) -> StoreResult<u64>;
    /// Stores a one-time secret by its hash.
    async fn create_secret(
        &self,
        kind: SecretKind,
        hash: &str,
        expires_at: i64,
        now: i64,
    ) -> StoreResult<()>;
    /// Uses a one-time secret up, atomically: of concurrent attempts exactly one is Accepted.
    async fn consume_secret(
        &self,
        kind: SecretKind,
        hash: &str,
        now: i64,
    ) -> StoreResult<SecretUse>;
}

/// Push credentials and push scheduling: requests that coalesce, claims with a lease, outcomes
/// and backoff.
#[async_trait]
pub trait PushStore: Send + Sync {
    async fn push_credentials(&self, device_id: &str) -> StoreResult<Option<PushCredentials>>;
    /// Asks for a push to the device at `at`. Pending pushes coalesce: an earlier pending time
    /// is kept, a push being sent covers the request, and a device in backoff (pushed, not
    /// answered since) keeps its backoff time.
    /// NotFound for an unknown device. Requests arriving together are written in one
    /// transaction with the other writes of the moment (exchanges, plans, push outcomes).
    async fn request_push(&self, device_id: &str, at: i64) -> StoreResult<()>;
    /// `request_push` for several (device, time) pairs in one transaction; per request, false
    /// for an unknown device (where `request_push` says NotFound).
    async fn request_pushes(&self, requests: &[(String, i64)]) -> StoreResult<Vec<bool>>;
    /// Claims up to `limit` pushes due at `now`, oldest first, moving them to `claimed_until` so
    /// that a crash leaves them due again rather than lost.
    async fn claim_due_pushes(
        &self,
        now: i64,
        claimed_until: i64,
        limit: i64,
    ) -> StoreResult<Vec<DuePush>>;
    /// Records what happened to a push and, for scheduled ones, what comes next. Batched like
    /// `request_push`.
    async fn record_push(&self, outcome: &PushOutcome) -> StoreResult<()>;
    /// `record_push` for several outcomes in one transaction.
    async fn record_pushes(&self, outcomes: &[PushOutcome]) -> StoreResult<()>;
    async fn push_status(&self, device_id: &str) -> StoreResult<Option<PushStatus>>;
    /// Requests a push at `at` for every enrolled device with queued commands and none pending
    /// (run at start: a wake requested just before a crash is not lost).
    async fn request_pushes_for_queued(&self, at: i64) -> StoreResult<u64>;
    /// Enrolled devices per push topic (checked against the push certificate at start).
    async fn enrolled_topics(&self) -> StoreResult<Vec<(String, i64)>>;
}

/// Everything the server persists: every area's trait, plus what concerns the database as a
/// whole. Times are Unix milliseconds passed in by the caller. A consumer that needs one area
/// takes that area's trait (`Arc<dyn PushStore>`), upcast from the `Arc<dyn Store>` the
/// composition root opens.
#[async_trait]
pub trait Store:
    EnrollmentStore
    + QueueStore
    + IdentityStore
    + PushStore
    + reconcile::ReconcileStore
    + inventory::InventoryStore
    + actions::ActionStore
    + StatusReads
    + Send
    + Sync
    + 'static
{
    /// Brings the schema up to date (idempotent, safe with several replicas starting at once).
    async fn migrate(&self) -> StoreResult<()>;
    /// Cheap round trip for readiness checks.
    async fn ping(&self) -> StoreResult<()>;
    /// "sqlite" or "postgres".
    fn backend(&self) -> &'static str;
}

/// What status reports read (admin API, CLI, custom resource status): profile counts and
/// device-action rows and counts.
pub trait StatusReads: reconcile::ReconcileStore + actions::ActionStore {}
impl<T: reconcile::ReconcileStore + actions::ActionStore + ?Sized> StatusReads for T {}

/// Opens the store named by a URL: `sqlite://path` (created if missing) or `postgres://…`.
pub async fn open(url: &str) -> anyhow::Result<Arc<dyn Store>> {
    let store: Arc<dyn Store> = if url.starts_with("sqlite:") {
        Arc::new(SqliteStore::open(url).await?)
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        Arc::new(PostgresStore::open(url).await?)
    } else {
        anyhow::bail!("database URL must start with sqlite:// or postgres://");
    };
    store.migrate().await?;
    Ok(store)
}
