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
mod command_parts;
mod enrollment;
pub mod group_commit;
mod identity;
pub mod inventory;
mod migrations;
mod model;
mod postgres;
mod push;
mod queue;
pub mod reconcile;
mod retention;
mod sql;
mod sqlite;
mod sqlite_conn;
mod sqlite_memory;
mod sqlite_readers;

pub use enrollment::EnrollmentStore;
pub use identity::IdentityStore;
pub use model::*;
pub use postgres::PostgresStore;
pub use push::PushStore;
pub use queue::QueueStore;
pub use retention::PruneStep;
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
                let transient = matches!(
                    code.as_str(),
                    "5" | "6" | "261" | "262" | "517" | "773" | "40001" | "40P01"
                ) || code.starts_with("08")
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
    /// The right to plan for this database, if no other server holds it. Servers sharing a
    /// PostgreSQL database without `--kube` would otherwise each plan from their own picture
    /// of the fleet, and one could remove what another installed. On SQLite (one server) it is
    /// always granted; on PostgreSQL it is a session advisory lock held on a connection of its
    /// own, released when that connection ends (the server stopped or died).
    async fn planning_lock(&self) -> StoreResult<Option<Box<dyn PlanningLock>>>;
    /// The right to run the retention sweep now, if no other server is running one: replicas
    /// sharing a database would otherwise each walk the whole commands table every sweep. On
    /// SQLite always granted; on PostgreSQL a session advisory lock on a connection of its own,
    /// released when the guard is dropped (or the server dies).
    async fn sweep_lock(&self) -> StoreResult<Option<SweepGuard>>;
}

/// Held while a server runs the retention sweep (see `Store::sweep_lock`); dropping it releases
/// the right.
pub struct SweepGuard(#[allow(dead_code)] pub(crate) Box<dyn std::any::Any + Send>);

/// Held by the one server that plans for a database (see `Store::planning_lock`).
#[async_trait]
pub trait PlanningLock: Send {
    /// Whether the lock is still held (Err once its connection broke: planning must stop), and
    /// whether other servers now serve devices of this database: their requests mark devices
    /// dirty there, so the planner has to pick those devices up from their last-seen times.
    async fn check(&mut self) -> Result<bool, StoreError>;
}

/// The lock of a database only one server uses (SQLite): never lost, never shared.
pub(crate) struct SoleServer;

#[async_trait]
impl PlanningLock for SoleServer {
    async fn check(&mut self) -> Result<bool, StoreError> {
        Ok(false)
    }
}

/// What status reports read (admin API, CLI, custom resource status): profile counts and
/// device-action rows and counts.
pub trait StatusReads: reconcile::ReconcileStore + actions::ActionStore {}
impl<T: reconcile::ReconcileStore + actions::ActionStore + ?Sized> StatusReads for T {}

/// PostgreSQL connections for requests' own statements, unless configured.
pub const DEFAULT_POSTGRES_CONNECTIONS: u32 = 16;

/// Opens the store named by a URL: `sqlite://path` (created if missing) or `postgres://…`.
pub async fn open(url: &str) -> anyhow::Result<Arc<dyn Store>> {
    open_sized(url, DEFAULT_POSTGRES_CONNECTIONS).await
}

/// `open`, with PostgreSQL's pool for requests holding up to `postgres_connections`
/// (SQLite has one writer and a reader per core whatever this says).
pub async fn open_sized(url: &str, postgres_connections: u32) -> anyhow::Result<Arc<dyn Store>> {
    let store: Arc<dyn Store> = if url.starts_with("sqlite:") {
        Arc::new(SqliteStore::open(url).await?)
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        Arc::new(PostgresStore::open_sized(url, postgres_connections).await?)
    } else {
        anyhow::bail!("database URL must start with sqlite:// or postgres://");
    };
    store.migrate().await?;
    Ok(store)
}
