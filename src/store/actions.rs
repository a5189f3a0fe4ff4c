//! What the store keeps about device actions (lock, erase, Lost Mode…): one row per (action,
//! device) saying where that device is with it — waiting, queued (with its command), or
//! finished — so an action runs once per device and survives restarts. A row and the command
//! it queues are written in one transaction; finishing a row redacts secrets (PINs, unlock
//! tokens) from the stored command. One SQL implementation for every `Backend`.

use super::backend::{Backend, Finish as _, Row};
use super::{CommandStatus, NewCommand, StoreResult};
use crate::vocab::persisted::UnknownValue;
use async_trait::async_trait;

/// Where one device is with one action, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionState {
    /// Not sent yet: waiting for a fact (supervision) or for Lost Mode.
    Waiting,
    /// Its command is queued (or fetched by the device and not answered yet).
    Queued,
    Acknowledged,
    Failed,
    /// The device's platform, supervision or enrollment cannot run it.
    NotApplicable,
}

impl ActionState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Waiting => "waiting",
            Self::Queued => "queued",
            Self::Acknowledged => "acknowledged",
            Self::Failed => "failed",
            Self::NotApplicable => "not_applicable",
        }
    }

    pub fn parse(s: &str) -> Result<Self, UnknownValue> {
        Ok(match s {
            "waiting" => Self::Waiting,
            "queued" => Self::Queued,
            "acknowledged" => Self::Acknowledged,
            "failed" => Self::Failed,
            "not_applicable" => Self::NotApplicable,
            _ => return Err(UnknownValue::new("device action state", s)),
        })
    }

    pub fn is_finished(self) -> bool {
        matches!(
            self,
            Self::Acknowledged | Self::Failed | Self::NotApplicable
        )
    }
}

/// What status shows: `Queued` splits into Pending and Sent by whether the device fetched it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ActionPhase {
    Pending,
    Sent,
    Acknowledged,
    Failed,
    NotApplicable,
}

impl ActionPhase {
    pub fn of(state: ActionState, sent: bool) -> Self {
        match state {
            ActionState::Waiting => Self::Pending,
            ActionState::Queued if sent => Self::Sent,
            ActionState::Queued => Self::Pending,
            ActionState::Acknowledged => Self::Acknowledged,
            ActionState::Failed => Self::Failed,
            ActionState::NotApplicable => Self::NotApplicable,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::Sent => "Sent",
            Self::Acknowledged => "Acknowledged",
            Self::Failed => "Failed",
            Self::NotApplicable => "NotApplicable",
        }
    }
}

/// One (action, device) row, with its command's delivery state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionRecord {
    /// `DeviceAction/<name>@<fingerprint>` for declared actions, `api-<uuid>` for the API's.
    pub action_id: String,
    pub device_id: String,
    /// The ActionKind's name (`Lock`, `Erase`…).
    pub action: String,
    /// Who asked: `DeviceAction/<name>` or `api`.
    pub source: String,
    pub state: ActionState,
    pub command_uuid: Option<String>,
    /// Why it waits, failed or is not applicable (never a secret).
    pub detail: Option<String>,
    /// What the device answered that status shows (a location, a message result), as JSON.
    pub result: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    /// The device fetched the command at least once.
    pub sent: bool,
    /// The command's status and raw result (what a reconcile folds into the row).
    pub command_status: Option<CommandStatus>,
    pub command_result: Option<Vec<u8>>,
}

impl ActionRecord {
    pub fn phase(&self) -> ActionPhase {
        ActionPhase::of(self.state, self.sent)
    }
}

/// A row to write for one device: new, or replacing one that is still waiting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionStart {
    pub action_id: String,
    pub action: String,
    pub source: String,
    /// Waiting, Queued (with `command`) or NotApplicable.
    pub state: ActionState,
    pub detail: Option<String>,
    pub command: Option<NewCommand>,
}

/// How a row ends, once its command's result is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionFinish {
    pub action_id: String,
    pub state: ActionState,
    pub detail: Option<String>,
    pub result: Option<String>,
    /// Replaces the stored command (its secrets removed) when it carried a PIN or token.
    pub redacted_command: Option<Vec<u8>>,
}

/// Per-phase device counts of one action.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ActionCounts {
    pub action_id: String,
    pub action: String,
    pub source: String,
    pub pending: i64,
    pub sent: i64,
    pub acknowledged: i64,
    pub failed: i64,
    pub not_applicable: i64,
    pub updated_at: i64,
}

impl ActionCounts {
    pub fn targeted(&self) -> i64 {
        self.pending + self.sent + self.acknowledged + self.failed + self.not_applicable
    }
}

#[async_trait]
pub trait ActionStore: Send + Sync {
    /// Writes rows for one device in one transaction: a new row is inserted, a row still
    /// waiting is replaced, any other row is left alone (an action runs once per device). A
    /// row's command is queued with it; nothing is written for unknown or checked-out devices.
    /// Returns how many commands were queued.
    async fn start_actions(
        &self,
        device_id: &str,
        starts: &[ActionStart],
        now: i64,
    ) -> StoreResult<u64>;
    /// Every action row of a device, oldest first, with its command's state and result.
    async fn device_actions(&self, device_id: &str) -> StoreResult<Vec<ActionRecord>>;
    /// Finishes queued rows of a device (only rows still queued change).
    async fn finish_actions(
        &self,
        device_id: &str,
        finishes: &[ActionFinish],
        now: i64,
    ) -> StoreResult<()>;
    /// An erase was acknowledged: the enrollment is marked wiped and checked out, and its
    /// queued commands are cancelled.
    async fn mark_wiped(&self, device_id: &str, now: i64) -> StoreResult<()>;
    /// Rows of one action, failures first, then by device (bounded).
    async fn action_records(&self, action_id: &str, limit: i64) -> StoreResult<Vec<ActionRecord>>;
    /// Per-phase counts of the given actions (those with rows).
    async fn action_counts(&self, action_ids: &[String]) -> StoreResult<Vec<ActionCounts>>;
    /// Per-phase counts of the most recently updated actions.
    async fn recent_actions(&self, limit: i64) -> StoreResult<Vec<ActionCounts>>;
    /// Devices with rows waiting or queued (planned again at start-up).
    async fn devices_with_open_actions(&self) -> StoreResult<Vec<String>>;
    /// The UnlockToken a device gave in TokenUpdate (a secret: for ClearPasscode only).
    async fn unlock_token(&self, device_id: &str) -> StoreResult<Option<Vec<u8>>>;
}

pub(crate) const ACTION_COLUMNS: &str = "a.action_id, a.device_id, a.action, a.source, a.state, \
    a.command_uuid, a.detail, a.result, a.created_at, a.updated_at, \
    c.sent_count, c.status AS command_status, r.raw AS command_result";

pub(crate) const ACTION_JOINS: &str = "FROM device_actions a \
    LEFT JOIN commands c ON c.uuid = a.command_uuid \
    LEFT JOIN command_results r ON r.command_uuid = a.command_uuid";

/// Folds (state, sent) rows into per-action counts; rows must be ordered by action id.
pub(crate) fn fold_counts(
    rows: Vec<(String, String, String, ActionState, bool, i64, i64)>,
) -> Vec<ActionCounts> {
    let mut out: Vec<ActionCounts> = Vec::new();
    for (action_id, action, source, state, sent, n, updated_at) in rows {
        if out.last().map(|c| &c.action_id) != Some(&action_id) {
            out.push(ActionCounts {
                action_id,
                action,
                source,
                ..ActionCounts::default()
            });
        }
        let counts = out.last_mut().expect("pushed above");
        counts.updated_at = counts.updated_at.max(updated_at);
        match ActionPhase::of(state, sent) {
            ActionPhase::Pending => counts.pending += n,
            ActionPhase::Sent => counts.sent += n,
            ActionPhase::Acknowledged => counts.acknowledged += n,
            ActionPhase::Failed => counts.failed += n,
            ActionPhase::NotApplicable => counts.not_applicable += n,
        }
    }
    out
}

fn record_from_row(row: &Row) -> Result<ActionRecord, sqlx::Error> {
    Ok(ActionRecord {
        action_id: row.col("action_id")?,
        device_id: row.col("device_id")?,
        action: row.col("action")?,
        source: row.col("source")?,
        state: crate::store::sql::known(ActionState::parse(&row.col::<String>("state")?))?,
        command_uuid: row.col("command_uuid")?,
        detail: row.col("detail")?,
        result: row.col("result")?,
        created_at: row.col("created_at")?,
        updated_at: row.col("updated_at")?,
        sent: row.col::<Option<i64>>("sent_count")?.unwrap_or(0) > 0,
        command_status: row
            .col::<Option<String>>("command_status")?
            .map(|s| CommandStatus::parse(&s))
            .transpose()
            .map_err(crate::store::sql::known_error)?,
        command_result: row.col("command_result")?,
    })
}

type CountRow = (String, String, String, ActionState, bool, i64, i64);

fn count_from_row(row: &Row) -> Result<CountRow, sqlx::Error> {
    Ok((
        row.col("action_id")?,
        row.col("action")?,
        row.col("source")?,
        crate::store::sql::known(ActionState::parse(&row.col::<String>("state")?))?,
        row.col::<i64>("sent")? > 0,
        row.col("n")?,
        row.col("updated")?,
    ))
}

const COUNT_SELECT: &str = "SELECT a.action_id, MIN(a.action) AS action, \
    MIN(a.source) AS source, a.state, \
    CAST(CASE WHEN COALESCE(c.sent_count, 0) > 0 THEN 1 ELSE 0 END AS BIGINT) AS sent, \
    COUNT(*) AS n, MAX(a.updated_at) AS updated \
    FROM device_actions a LEFT JOIN commands c ON c.uuid = a.command_uuid";

const COUNT_GROUP: &str = "GROUP BY a.action_id, a.state, \
    CASE WHEN COALESCE(c.sent_count, 0) > 0 THEN 1 ELSE 0 END \
    ORDER BY a.action_id";

#[async_trait]
impl<B: Backend> ActionStore for B {
    async fn start_actions(
        &self,
        device_id: &str,
        starts: &[ActionStart],
        now: i64,
    ) -> StoreResult<u64> {
        let mut tx = self.begin_write().await?;
        let mut queued = 0;
        for start in starts {
            // Insert, or replace a row still waiting; finished and queued rows stay.
            let written = Self::sql(
                "INSERT INTO device_actions (action_id, device_id, action, source, state, \
                   command_uuid, detail, created_at, updated_at) \
                 SELECT $1, id, $3, $4, $5, $6, $7, $8, $8 FROM enrollments \
                 WHERE id = $2 AND state <> 'checked_out' \
                 ON CONFLICT (action_id, device_id) DO UPDATE SET state = excluded.state, \
                   command_uuid = excluded.command_uuid, detail = excluded.detail, \
                   updated_at = excluded.updated_at \
                 WHERE device_actions.state = 'waiting'",
            )
            .arg(&start.action_id)
            .arg(device_id)
            .arg(&start.action)
            .arg(&start.source)
            .arg(start.state.as_str())
            .arg(start.command.as_ref().map(|c| c.uuid.as_str()))
            .arg(&start.detail)
            .arg(now)
            .execute_on(&mut *tx)
            .await?;
            let Some(command) = start.command.as_ref().filter(|_| written == 1) else {
                continue;
            };
            let stored = super::command_parts::stored(command);
            super::command_parts::insert_parts_in::<B::Db>(&mut tx, &stored.part, now).await?;
            let inserted = Self::sql(
                "INSERT INTO commands (uuid, enrollment_id, request_type, command, part_digest, part_at, status, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $6, $7, 'queued', $5, $5) ON CONFLICT (uuid) DO NOTHING",
            )
            .arg(&command.uuid)
            .arg(device_id)
            .arg(&command.request_type)
            .arg(stored.command.as_ref())
            .arg(now)
            .arg(stored.part_columns().0)
            .arg(stored.part_columns().1)
            .execute_on(&mut *tx)
            .await?;
            queued += inserted;
        }
        tx.commit().await?;
        Ok(queued)
    }

    async fn device_actions(&self, device_id: &str) -> StoreResult<Vec<ActionRecord>> {
        let rows = Self::sql(&format!(
            "SELECT {ACTION_COLUMNS} {ACTION_JOINS} WHERE a.device_id = $1 \
             ORDER BY a.created_at, a.action_id"
        ))
        .arg(device_id)
        .fetch_all_on(&mut *self.reader().await?)
        .await?;
        rows.iter()
            .map(record_from_row)
            .collect::<Result<Vec<_>, _>>()
            .map_err(Into::into)
    }

    async fn finish_actions(
        &self,
        device_id: &str,
        finishes: &[ActionFinish],
        now: i64,
    ) -> StoreResult<()> {
        if finishes.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin_write().await?;
        for finish in finishes {
            let command_uuid: Option<Option<String>> = Self::sql(
                "UPDATE device_actions SET state = $3, detail = $4, result = $5, updated_at = $6 \
                 WHERE action_id = $1 AND device_id = $2 AND state = 'queued' \
                 RETURNING command_uuid",
            )
            .arg(&finish.action_id)
            .arg(device_id)
            .arg(finish.state.as_str())
            .arg(&finish.detail)
            .arg(&finish.result)
            .arg(now)
            .fetch_optional_on(&mut *tx)
            .await?
            .map(|row| row.col("command_uuid"))
            .transpose()?;
            if let (Some(Some(uuid)), Some(redacted)) = (command_uuid, &finish.redacted_command) {
                Self::sql(
                    "UPDATE commands SET command = $2 WHERE uuid = $1 AND status <> 'queued'",
                )
                .arg(uuid)
                .arg(redacted)
                .execute_on(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    async fn mark_wiped(&self, device_id: &str, now: i64) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        Self::sql(
            "UPDATE enrollments SET state = 'checked_out', checked_out_at = $2, wiped_at = $2 \
             WHERE id = $1",
        )
        .arg(device_id)
        .arg(now)
        .execute_on(&mut *tx)
        .await?;
        Self::sql(
            "UPDATE commands SET status = 'cancelled', updated_at = $2 \
             WHERE enrollment_id = $1 AND status = 'queued'",
        )
        .arg(device_id)
        .arg(now)
        .execute_on(&mut *tx)
        .await?;
        Self::sql("UPDATE push_state SET next_push_at = NULL WHERE enrollment_id = $1")
            .arg(device_id)
            .execute_on(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn action_records(&self, action_id: &str, limit: i64) -> StoreResult<Vec<ActionRecord>> {
        let rows = Self::sql(&format!(
            "SELECT {ACTION_COLUMNS} {ACTION_JOINS} WHERE a.action_id = $1 \
             ORDER BY CASE a.state WHEN 'failed' THEN 0 WHEN 'not_applicable' THEN 1 ELSE 2 END, \
               a.device_id LIMIT $2"
        ))
        .arg(action_id)
        .arg(limit)
        .fetch_all_on(&mut *self.reader().await?)
        .await?;
        rows.iter()
            .map(record_from_row)
            .collect::<Result<Vec<_>, _>>()
            .map_err(Into::into)
    }

    async fn action_counts(&self, action_ids: &[String]) -> StoreResult<Vec<ActionCounts>> {
        if action_ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "{COUNT_SELECT} WHERE a.action_id IN ({}) {COUNT_GROUP}",
            crate::store::sql::placeholders(1, action_ids.len())
        );
        let mut query = Self::sql(&sql);
        for id in action_ids {
            query = query.arg(id);
        }
        let rows = query.fetch_all_on(&mut *self.reader().await?).await?;
        let rows = rows
            .iter()
            .map(count_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(fold_counts(rows))
    }

    async fn recent_actions(&self, limit: i64) -> StoreResult<Vec<ActionCounts>> {
        let ids: Vec<String> = Self::sql(
            "SELECT action_id, MAX(updated_at) AS updated FROM device_actions \
             GROUP BY action_id ORDER BY updated DESC, action_id LIMIT $1",
        )
        .arg(limit)
        .fetch_all_on(&mut *self.reader().await?)
        .await?
        .iter()
        .map(|row| row.col("action_id"))
        .collect::<Result<_, _>>()?;
        let mut counts = self.action_counts(&ids).await?;
        counts.sort_by(|a, b| {
            b.updated_at
                .cmp(&a.updated_at)
                .then(a.action_id.cmp(&b.action_id))
        });
        Ok(counts)
    }

    async fn devices_with_open_actions(&self) -> StoreResult<Vec<String>> {
        Self::sql(
            "SELECT DISTINCT device_id FROM device_actions \
             WHERE state IN ('waiting', 'queued') ORDER BY device_id",
        )
        .fetch_all_on(&mut *self.reader().await?)
        .await?
        .iter()
        .map(|row| row.col("device_id"))
        .collect::<Result<Vec<String>, _>>()
        .map_err(Into::into)
    }

    async fn unlock_token(&self, device_id: &str) -> StoreResult<Option<Vec<u8>>> {
        Ok(
            Self::sql("SELECT unlock_token FROM enrollments WHERE id = $1")
                .arg(device_id)
                .fetch_optional_on(&mut *self.reader().await?)
                .await?
                .map(|row| row.col::<Option<Vec<u8>>>("unlock_token"))
                .transpose()?
                .flatten(),
        )
    }
}

/// Schema for device actions (same text on both backends); also marks wiped enrollments.
pub(crate) const SCHEMA: &str = r#"
CREATE TABLE device_actions (
    action_id TEXT NOT NULL,
    device_id TEXT NOT NULL REFERENCES enrollments (id),
    action TEXT NOT NULL,
    source TEXT NOT NULL,
    state TEXT NOT NULL,
    command_uuid TEXT,
    detail TEXT,
    result TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (action_id, device_id)
);
CREATE INDEX device_actions_by_device ON device_actions (device_id);
CREATE INDEX device_actions_open ON device_actions (device_id) WHERE state IN ('waiting', 'queued');
CREATE INDEX device_actions_by_update ON device_actions (updated_at);
ALTER TABLE enrollments ADD COLUMN wiped_at BIGINT
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_action_state_reads_back_and_an_unknown_one_is_an_error() {
        use ActionState::*;
        for s in [Waiting, Queued, Acknowledged, Failed, NotApplicable] {
            assert_eq!(ActionState::parse(s.as_str()), Ok(s));
        }
        assert_eq!(
            ActionState::parse("paused").unwrap_err(),
            UnknownValue::new("device action state", "paused")
        );
    }
}
