//! The retention sweep: finished commands older than `--command-retention` (default 7 days)
//! are deleted with their results, so that the database stops growing with time and grows with
//! the fleet instead. What may go and what is kept is the store's rule (`store::retention`):
//! queued commands, results the reconciler has not read and device actions' commands stay.
//!
//! A sweep walks the queue in short windows with a pause between them, so that devices' writes
//! are never held up for long; it resumes where the previous sweep stopped (the walk only moves
//! forward in time) and starts again from the beginning once a day, to reach commands that
//! finished after the walk passed them. Replicas sharing a database take turns
//! (`Store::sweep_lock`), so that the table is walked once per sweep, not once per replica.

use crate::store::{QueueStore, StoreResult};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Commands the sweeps of this process deleted, and sweeps that failed (for metrics).
static DELETED: AtomicU64 = AtomicU64::new(0);
static FAILED_SWEEPS: AtomicU64 = AtomicU64::new(0);
static DELETED_PARTS: AtomicU64 = AtomicU64::new(0);

/// Writes the sweep's counters in Prometheus' text format.
pub fn render_metrics(out: &mut String) {
    use std::fmt::Write as _;
    let _ = writeln!(
        out,
        "# HELP pomona_retention_deleted_commands_total Finished commands deleted by the retention sweep, with their results.\n\
         # TYPE pomona_retention_deleted_commands_total counter\n\
         pomona_retention_deleted_commands_total {}\n\
         # HELP pomona_retention_failed_sweeps_total Retention sweeps that stopped on a database error (retried at the next).\n\
         # TYPE pomona_retention_failed_sweeps_total counter\n\
         pomona_retention_failed_sweeps_total {}\n\
         # HELP pomona_retention_deleted_parts_total Stored profiles (command parts) deleted once no command referred to them.\n\
         # TYPE pomona_retention_deleted_parts_total counter\n\
         pomona_retention_deleted_parts_total {}",
        DELETED.load(Ordering::Relaxed),
        FAILED_SWEEPS.load(Ordering::Relaxed),
        DELETED_PARTS.load(Ordering::Relaxed),
    );
}

/// How long finished commands are kept, unless configured.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 86_400);
/// Commands examined per window (one short write transaction).
const WINDOW: i64 = 500;
/// The pause between windows.
const PAUSE: Duration = Duration::from_millis(20);
/// Time between sweeps, and before the first one (let the server settle after a start).
const EVERY: Duration = Duration::from_secs(600);
const FIRST_AFTER: Duration = Duration::from_secs(60);
/// How often the walk starts again from the oldest command.
const RESTART_WALK_EVERY: Duration = Duration::from_secs(86_400);

/// How long a stored part no command refers to is kept after it was last queued: a plan may
/// be about to queue it again.
const PART_GRACE: Duration = Duration::from_secs(3600);

/// Where a sweep starts, carried from one sweep to the next.
#[derive(Debug, Default, Clone, Copy)]
pub struct Walk {
    after_seq: i64,
    started_at: Option<i64>,
}

/// One sweep: walks from where `walk` stopped until commands newer than the cutoff, deleting
/// what may go. Returns how many commands it deleted.
pub async fn sweep<S: QueueStore + ?Sized>(
    store: &S,
    retention: Duration,
    now_millis: i64,
    walk: &mut Walk,
    pause: Duration,
) -> StoreResult<u64> {
    let restart_after = RESTART_WALK_EVERY.as_millis() as i64;
    if walk
        .started_at
        .is_none_or(|at| now_millis - at >= restart_after)
    {
        *walk = Walk {
            after_seq: 0,
            started_at: Some(now_millis),
        };
    }
    let created_before = now_millis - retention.as_millis() as i64;
    let mut deleted = 0;
    loop {
        let step = store
            .prune_commands(created_before, walk.after_seq, WINDOW)
            .await?;
        walk.after_seq = step.after_seq;
        deleted += step.deleted;
        DELETED.fetch_add(step.deleted, Ordering::Relaxed);
        if step.done {
            // The commands that went may have been the last to refer to some stored parts.
            let used_before = now_millis - PART_GRACE.as_millis() as i64;
            let parts = store.prune_parts(used_before).await?;
            DELETED_PARTS.fetch_add(parts, Ordering::Relaxed);
            if parts > 0 {
                tracing::info!(
                    parts,
                    "retention: deleted stored profiles no command refers to"
                );
            }
            return Ok(deleted);
        }
        tokio::time::sleep(pause).await;
    }
}

/// `sweep`, unless another server sweeps the same database now (`Store::sweep_lock`): None
/// then. The walk carries on from where this server stopped when its turn comes.
pub async fn sweep_if_alone<S: crate::store::Store + ?Sized>(
    store: &S,
    retention: Duration,
    now_millis: i64,
    walk: &mut Walk,
    pause: Duration,
) -> StoreResult<Option<u64>> {
    let Some(guard) = store.sweep_lock().await? else {
        return Ok(None);
    };
    let deleted = sweep(store, retention, now_millis, walk, pause).await;
    drop(guard);
    deleted.map(Some)
}

/// Sweeps every ten minutes for as long as the server runs.
pub fn spawn(
    store: Arc<dyn crate::store::Store>,
    retention: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        tokio::time::sleep(FIRST_AFTER).await;
        let mut walk = Walk::default();
        loop {
            let now = crate::vocab::clock::now_millis();
            match sweep_if_alone(&*store, retention, now, &mut walk, PAUSE).await {
                Ok(None) => {
                    tracing::debug!("retention: another server is sweeping this database")
                }
                Ok(Some(0)) => tracing::debug!("retention: no finished command to delete"),
                Ok(Some(n)) => tracing::info!(
                    deleted = n,
                    retention_hours = retention.as_secs() / 3600,
                    "retention: deleted finished commands and their results"
                ),
                Err(e) => {
                    FAILED_SWEEPS.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "retention: sweep failed; retrying at the next one")
                }
            }
            tokio::time::sleep(EVERY).await;
        }
    })
}
