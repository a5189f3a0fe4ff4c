//! How long finished commands are kept. Every command a device answered stays in `commands`
//! with its result in `command_results`; a fleet that is inventoried and reconciled adds rows
//! every day for ever (at 1,000,000 devices about 20 GB a day), until the disk is full. This
//! module deletes, in short windows walked in queue order, the commands that are finished and
//! older than the retention, with their results and their reconciler bookkeeping.
//!
//! What anything still reads is kept, whatever its age: a command still queued; one whose
//! result the reconciler has not folded in yet (an open `reconcile_commands` row; a cancelled
//! command may still have run); the command of a device action (its state and result are what
//! the action shows); and a status this build does not know.

use super::backend::{Backend, Db, Finish as _};
use super::sql::{kept_prepared, Marks};
use super::StoreResult;

/// Migration 11: finding a command's device action without a scan of the actions.
pub(crate) const SCHEMA: &str =
    "CREATE INDEX device_actions_by_command ON device_actions (command_uuid)";

/// The statuses of a finished command (`CommandStatus`), as stored.
const FINISHED: &str = "'acknowledged', 'error', 'command_format_error', 'cancelled'";

/// What one window of the walk did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PruneStep {
    /// Where the next window starts (the last queue position examined).
    pub after_seq: i64,
    /// Commands deleted in this window.
    pub deleted: u64,
    /// The walk reached commands created after the cutoff, or the end of the queue.
    pub done: bool,
}

/// One window of at most `window` commands after queue position `after_seq`: those created
/// before `created_before` that may go are deleted, in one transaction. The walk stops at the
/// first command created at or after the cutoff: positions grow with creation time, so what
/// follows is newer.
pub(crate) async fn prune_window<B: Backend>(
    store: &B,
    created_before: i64,
    after_seq: i64,
    window: i64,
) -> StoreResult<PruneStep> {
    let mut tx = store.begin_write().await?;
    let rows = B::sql(&format!(
        "SELECT c.seq, c.uuid, c.created_at, \
           (c.status IN ({FINISHED}) \
            AND NOT EXISTS (SELECT 1 FROM reconcile_commands rc \
                            WHERE rc.command_uuid = c.uuid AND rc.processed_at IS NULL) \
            AND NOT EXISTS (SELECT 1 FROM device_actions a WHERE a.command_uuid = c.uuid)) AS prunable \
         FROM commands c WHERE c.seq > $1 ORDER BY c.seq LIMIT $2"
    ))
    .arg(after_seq)
    .arg(window)
    .fetch_all_on(&mut *tx)
    .await?;
    let mut step = PruneStep {
        after_seq,
        deleted: 0,
        done: (rows.len() as i64) < window,
    };
    let mut doomed: Vec<String> = Vec::new();
    for row in &rows {
        if row.col::<i64>("created_at")? >= created_before {
            step.done = true;
            break;
        }
        step.after_seq = row.col("seq")?;
        if row.col::<bool>("prunable")? {
            doomed.push(row.col("uuid")?);
        }
    }
    if doomed.is_empty() {
        tx.rollback().await?;
        return Ok(step);
    }
    // What refers to a command first, then the command.
    delete_where_in::<B::Db>(&mut tx, "command_results", "command_uuid", &doomed).await?;
    delete_where_in::<B::Db>(&mut tx, "reconcile_commands", "command_uuid", &doomed).await?;
    step.deleted = delete_where_in::<B::Db>(&mut tx, "commands", "uuid", &doomed).await?;
    tx.commit().await?;
    Ok(step)
}

/// Deletes the rows of `table` whose `column` is one of `uuids`; how many.
async fn delete_where_in<D: Db>(
    tx: &mut D::Tx,
    table: &str,
    column: &str,
    uuids: &[String],
) -> Result<u64, sqlx::Error> {
    let sql = format!(
        "DELETE FROM {table} WHERE {column} IN ({})",
        Marks::of::<D>().list(1, uuids.len())
    );
    let mut query = D::sql(&sql).persistent(kept_prepared(uuids.len()));
    for uuid in uuids {
        query = query.arg(uuid.as_str());
    }
    query.execute_on(&mut **tx).await
}
