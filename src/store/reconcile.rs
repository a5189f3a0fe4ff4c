//! What the reconciler persists per device: the inventory of profiles Pomona manages there, the
//! device's latest ProfileList, and the intent behind each command the reconciler queued (so a
//! result can be folded back into the inventory). `apply_plan` writes one plan — inventory,
//! folded results, new commands, cancellations — in one transaction; `apply_plans` writes the
//! plans of many devices in one (group commit). One SQL implementation for every `Backend`.

use super::backend::{Backend, Db, Finish as _, Row};
use super::enrollment::enrollment_from_row;
use super::{CommandStatus, NewCommand, StoreResult};
use crate::vocab::profiles::{
    Intent, ManagedProfile, ProfileState, RemovalPolicy, ReportedProfiles,
};
use async_trait::async_trait;

/// One of the reconciler's commands whose result has not been folded into the inventory yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenCommand {
    pub uuid: String,
    pub intent: Intent,
    pub status: CommandStatus,
    /// Sent at least once (a queued command never sent can still be cancelled cleanly).
    pub sent: bool,
    /// The device's raw result plist, for finished commands.
    pub result: Option<Vec<u8>>,
    pub updated_at: i64,
}

/// The reconciler's stored view of one device.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReconcileState {
    pub managed: Vec<ManagedProfile>,
    pub reported: Option<ReportedProfiles>,
    pub open: Vec<OpenCommand>,
}

/// What the reconciler reads to plan one device: its enrollment (None if unknown) and its
/// stored state, read in one transaction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReconcileView {
    pub enrollment: Option<super::Enrollment>,
    pub state: ReconcileState,
}

/// Everything one plan changes, written atomically.
#[derive(Debug, Clone, Default)]
pub struct PlanChange {
    /// The full inventory after the plan (replaces the stored one).
    pub managed: Vec<ManagedProfile>,
    /// Reconciler commands whose results this plan folded in.
    pub processed: Vec<String>,
    /// A newer ProfileList to remember.
    pub reported: Option<ReportedProfiles>,
    /// Commands to queue, with their intent.
    pub enqueue: Vec<(NewCommand, Intent)>,
    /// Queued commands to cancel (only if still queued).
    pub cancel: Vec<String>,
}

/// One device's plan, for `apply_plans`.
#[derive(Debug, Clone, Default)]
pub struct DevicePlan {
    pub device_id: String,
    pub change: PlanChange,
    /// The plan's time (Unix ms).
    pub now: i64,
}

/// Managed-profile counts of one profile, for status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProfileCounts {
    pub profile_key: String,
    pub pending: i64,
    pub verifying: i64,
    pub verified: i64,
    pub failed: i64,
    pub removing: i64,
    /// Removals given up after `max_attempts` (the profile may still be on the device).
    pub removal_failed: i64,
    /// The verified devices, by the content hash they were verified with.
    pub verified_by_hash: std::collections::BTreeMap<String, i64>,
}

impl ProfileCounts {
    /// The counts against the content declared now (`declared_hash`; None when the profile is
    /// no longer declared): a device verified with an earlier content counts as pending, since
    /// its reinstall is on the way, so a content change never reads as verified everywhere
    /// before a single device has the new content.
    pub fn against(mut self, declared_hash: Option<&str>) -> Self {
        if let Some(hash) = declared_hash {
            let current = self.verified_by_hash.get(hash).copied().unwrap_or(0);
            self.pending += self.verified - current;
            self.verified = current;
        }
        self
    }
}

/// The status counts: devices per profile, state and content. Answered from the covering index
/// `managed_profiles_by_profile_state_hash` (migration 8) without reading the table.
pub const PROFILE_COUNTS_SQL: &str = "SELECT profile_key, state, hash, COUNT(*) AS n \
     FROM managed_profiles GROUP BY profile_key, state, hash ORDER BY profile_key";

#[async_trait]
pub trait ReconcileStore: Send + Sync {
    /// A device's enrollment and reconcile state. Reads of many devices arriving together
    /// (the reconciles in flight) are answered by a few statements for all of them.
    async fn reconcile_view(&self, device_id: &str) -> StoreResult<ReconcileView>;
    async fn reconcile_state(&self, device_id: &str) -> StoreResult<ReconcileState> {
        Ok(self.reconcile_view(device_id).await?.state)
    }
    /// Applies a plan; returns how many commands were newly queued (replays queue none).
    /// Nothing is queued for unknown or checked-out devices. Plans finishing together are
    /// written in one transaction with the other writes of the moment (see `sql::Write`).
    /// The change is taken, not borrowed: it holds the commands' payloads, and the write queue
    /// keeps it until its batch is written.
    async fn apply_plan(&self, device_id: &str, change: PlanChange, now: i64) -> StoreResult<u64>;
    /// Applies the plans of several devices in one transaction (group commit: one durable write
    /// for many plans), each exactly as `apply_plan` would; returns what each newly queued. If
    /// any plan fails, none is applied.
    async fn apply_plans(&self, plans: &[DevicePlan]) -> StoreResult<Vec<u64>>;
    /// Per-profile state counts across the fleet.
    async fn profile_counts(&self) -> StoreResult<Vec<ProfileCounts>>;
    /// Managed profiles in `state` for a profile, with their devices (bounded).
    async fn managed_in_state(
        &self,
        profile_key: &str,
        state: &str,
        limit: i64,
    ) -> StoreResult<Vec<(String, ManagedProfile)>>;
}

pub(crate) fn intent_columns(intent: &Intent) -> (&'static str, Option<&str>, Option<&str>) {
    match intent {
        Intent::Install { identifier, hash } => ("install", Some(identifier), Some(hash)),
        Intent::Remove { identifier } => ("remove", Some(identifier), None),
        Intent::ProfileList => ("profile-list", None, None),
        Intent::DeviceInformation => ("device-information", None, None),
    }
}

pub(crate) fn intent_from_columns(
    kind: &str,
    identifier: Option<String>,
    hash: Option<String>,
) -> Intent {
    match kind {
        "install" => Intent::Install {
            identifier: identifier.unwrap_or_default(),
            hash: hash.unwrap_or_default(),
        },
        "remove" => Intent::Remove {
            identifier: identifier.unwrap_or_default(),
        },
        "device-information" => Intent::DeviceInformation,
        _ => Intent::ProfileList,
    }
}

pub(crate) fn encode_reported(r: &ReportedProfiles) -> String {
    serde_json::to_string(&r.profiles).unwrap_or_else(|_| "{}".into())
}

pub(crate) fn decode_reported(reported_at: i64, json: &str) -> ReportedProfiles {
    ReportedProfiles {
        reported_at,
        profiles: serde_json::from_str(json).unwrap_or_default(),
    }
}

pub(crate) const MANAGED_COLUMNS: &str = "identifier, profile_key, hash, uuid, state, attempts, \
    installs, last_attempt_at, acknowledged_at, last_error, removal_policy";

fn managed_from_row(row: &Row) -> Result<ManagedProfile, sqlx::Error> {
    Ok(ManagedProfile {
        identifier: row.col("identifier")?,
        profile_key: row.col("profile_key")?,
        hash: row.col("hash")?,
        uuid: row.col("uuid")?,
        state: crate::store::sql::known(ProfileState::parse(&row.col::<String>("state")?))?,
        attempts: row.col::<i64>("attempts")? as u32,
        installs: row.col::<i64>("installs")? as u32,
        last_attempt_at: row.col("last_attempt_at")?,
        acknowledged_at: row.col("acknowledged_at")?,
        last_error: row.col("last_error")?,
        removal_policy: crate::store::sql::known(RemovalPolicy::parse(
            &row.col::<String>("removal_policy")?,
        ))?,
    })
}

/// Writes plans of distinct devices inside the caller's transaction, with a few
/// statements for all of them (each statement is a round trip to the database, and
/// a fleet-wide change writes thousands of plans a second); returns how many
/// commands each plan newly queued.
async fn apply_distinct_plans<D: Db>(
    tx: &mut D::Tx,
    plans: &[&DevicePlan],
) -> Result<Vec<u64>, sqlx::Error> {
    // Write first (SQLite takes the write lock up front), then the rest.
    replace_managed_profiles::<D>(tx, plans).await?;
    mark_processed::<D>(tx, plans).await?;
    store_reported::<D>(tx, plans).await?;
    cancel_superseded::<D>(tx, plans).await?;
    enqueue_planned::<D>(tx, plans).await
}

/// Each device's managed-profile rows become the plan's.
async fn replace_managed_profiles<D: Db>(
    tx: &mut D::Tx,
    plans: &[&DevicePlan],
) -> Result<(), sqlx::Error> {
    use crate::store::sql::chunk_rows;
    let marks = crate::store::sql::Marks::of::<D>();
    for chunk in chunk_rows(plans, 1) {
        let sql = format!(
            "DELETE FROM managed_profiles WHERE device_id IN ({})",
            marks.list(1, chunk.len())
        );
        let mut query = D::sql(&sql).persistent(crate::store::sql::kept_prepared(chunk.len()));
        for p in chunk {
            query = query.arg(&p.device_id);
        }
        query.execute_on(&mut **tx).await?;
    }
    let managed: Vec<_> = plans
        .iter()
        .flat_map(|p| p.change.managed.iter().map(move |m| (*p, m)))
        .collect();
    for chunk in chunk_rows(&managed, 13) {
        let sql = format!(
            "INSERT INTO managed_profiles (device_id, {MANAGED_COLUMNS}, updated_at) VALUES {}",
            marks.rows(1, chunk.len(), 13)
        );
        let mut query = D::sql(&sql).persistent(crate::store::sql::kept_prepared(chunk.len()));
        for (p, m) in chunk {
            query = query
                .arg(&p.device_id)
                .arg(&m.identifier)
                .arg(&m.profile_key)
                .arg(&m.hash)
                .arg(&m.uuid)
                .arg(m.state.as_str())
                .arg(m.attempts as i64)
                .arg(m.installs as i64)
                .arg(m.last_attempt_at)
                .arg(m.acknowledged_at)
                .arg(&m.last_error)
                .arg(m.removal_policy.as_str())
                .arg(p.now);
        }
        query.execute_on(&mut **tx).await?;
    }
    Ok(())
}

/// Command results the plans folded in are not folded again.
async fn mark_processed<D: Db>(tx: &mut D::Tx, plans: &[&DevicePlan]) -> Result<(), sqlx::Error> {
    use crate::store::sql::chunk_rows;
    let marks = crate::store::sql::Marks::of::<D>();
    let now = plans.iter().map(|p| p.now).max().unwrap_or_default();
    let processed: Vec<&String> = plans.iter().flat_map(|p| &p.change.processed).collect();
    for chunk in chunk_rows(&processed, 1) {
        let sql = format!(
            "UPDATE reconcile_commands SET processed_at = {} WHERE command_uuid IN ({})",
            marks.one(1),
            marks.list(2, chunk.len())
        );
        let mut query = D::sql(&sql)
            .persistent(crate::store::sql::kept_prepared(chunk.len()))
            .arg(now);
        for uuid in chunk {
            query = query.arg(*uuid);
        }
        query.execute_on(&mut **tx).await?;
    }
    Ok(())
}

/// The profile lists the plans were made from, unless a newer one is stored already.
async fn store_reported<D: Db>(tx: &mut D::Tx, plans: &[&DevicePlan]) -> Result<(), sqlx::Error> {
    use crate::store::sql::chunk_rows;
    let marks = crate::store::sql::Marks::of::<D>();
    let reported: Vec<_> = plans
        .iter()
        .filter_map(|p| Some((&p.device_id, p.change.reported.as_ref()?)))
        .collect();
    for chunk in chunk_rows(&reported, 3) {
        let sql = format!(
            "INSERT INTO reported_profiles (device_id, reported_at, profiles) VALUES {} \
             ON CONFLICT (device_id) DO UPDATE SET reported_at = excluded.reported_at, \
               profiles = excluded.profiles \
             WHERE excluded.reported_at >= reported_profiles.reported_at",
            marks.rows(1, chunk.len(), 3)
        );
        let mut query = D::sql(&sql).persistent(crate::store::sql::kept_prepared(chunk.len()));
        for (device_id, r) in chunk {
            query = query
                .arg(*device_id)
                .arg(r.reported_at)
                .arg(encode_reported(r));
        }
        query.execute_on(&mut **tx).await?;
    }
    Ok(())
}

/// Queued commands a newer plan superseded are cancelled.
async fn cancel_superseded<D: Db>(
    tx: &mut D::Tx,
    plans: &[&DevicePlan],
) -> Result<(), sqlx::Error> {
    // Cancellations are rare (a newer plan superseding a queued command): one by one.
    for p in plans {
        for uuid in &p.change.cancel {
            let cancelled = D::sql(
                "UPDATE commands SET status = 'cancelled', updated_at = $3 \
                 WHERE uuid = $1 AND enrollment_id = $2 AND status = 'queued'",
            )
            .arg(uuid)
            .arg(&p.device_id)
            .arg(p.now)
            .execute_on(&mut **tx)
            .await?;
            if cancelled == 1 {
                D::sql("UPDATE reconcile_commands SET processed_at = $2 WHERE command_uuid = $1")
                    .arg(uuid)
                    .arg(p.now)
                    .execute_on(&mut **tx)
                    .await?;
            }
        }
    }
    Ok(())
}

/// The plans' new commands, with what each one is for; returns how many each plan queued.
async fn enqueue_planned<D: Db>(
    tx: &mut D::Tx,
    plans: &[&DevicePlan],
) -> Result<Vec<u64>, sqlx::Error> {
    use crate::store::sql::chunk_rows;
    let marks = crate::store::sql::Marks::of::<D>();
    // New commands, for devices still enrolled; a replayed UUID is not queued again.
    // The ordinal keeps each device's commands in the planned order.
    let enqueue: Vec<_> = plans
        .iter()
        .enumerate()
        .flat_map(|(i, p)| {
            p.change
                .enqueue
                .iter()
                .map(move |(c, intent)| (i, *p, c, intent))
        })
        .collect();
    let stored: Vec<_> = enqueue
        .iter()
        .map(|(_, _, command, _)| super::command_parts::stored(command))
        .collect();
    let now = plans.iter().map(|p| p.now).max().unwrap_or_default();
    super::command_parts::insert_parts_in::<D>(
        tx,
        stored.iter().filter_map(|s| s.part.as_ref()),
        now,
    )
    .await?;
    let rows: Vec<_> = enqueue.iter().zip(&stored).collect();
    let mut inserted = std::collections::HashSet::new();
    for chunk in chunk_rows(&rows, 8) {
        let sql = format!(
            "INSERT INTO commands (uuid, enrollment_id, request_type, command, part_digest, part_at, status, created_at, updated_at) \
             SELECT v.column1, e.id, v.column3, v.column4, v.column7, v.column8, 'queued', v.column5, v.column5 \
             FROM (VALUES {}) AS v JOIN enrollments e ON e.id = v.column2 \
             WHERE e.state <> 'checked_out' ORDER BY v.column6 \
             ON CONFLICT (uuid) DO NOTHING RETURNING uuid",
            marks.rows(1, chunk.len(), 8)
        );
        let mut query = D::sql(&sql).persistent(crate::store::sql::kept_prepared(chunk.len()));
        for (ordinal, ((_, p, command, _), stored)) in chunk.iter().enumerate() {
            let (part_digest, part_at) = stored.part_columns();
            query = query
                .arg(&command.uuid)
                .arg(&p.device_id)
                .arg(&command.request_type)
                .arg(stored.command.as_ref())
                .arg(p.now)
                .arg(ordinal as i64)
                .arg(part_digest)
                .arg(part_at);
        }
        for row in query.fetch_all_on(&mut **tx).await? {
            inserted.insert(row.col::<String>("uuid")?);
        }
    }
    let mut queued = vec![0; plans.len()];
    let fresh: Vec<_> = enqueue
        .into_iter()
        .filter(|(i, _, command, _)| {
            let new = inserted.remove(&command.uuid);
            if new {
                queued[*i] += 1;
            }
            new
        })
        .collect();
    for chunk in chunk_rows(&fresh, 6) {
        let sql = format!(
            "INSERT INTO reconcile_commands (command_uuid, device_id, intent, identifier, hash, created_at) \
             VALUES {} ON CONFLICT (command_uuid) DO NOTHING",
            marks.rows(1, chunk.len(), 6)
        );
        let mut query = D::sql(&sql).persistent(crate::store::sql::kept_prepared(chunk.len()));
        for (_, p, command, intent) in chunk {
            let (kind, identifier, hash) = intent_columns(intent);
            query = query
                .arg(&command.uuid)
                .arg(&p.device_id)
                .arg(kind)
                .arg(identifier)
                .arg(hash)
                .arg(p.now);
        }
        query.execute_on(&mut **tx).await?;
    }
    Ok(queued)
}

/// A one-off query with `devices` bound to its marks, in order.
fn bind_devices<'q, D: Db>(sql: &'q str, devices: &[&'q String]) -> super::backend::Query<'q> {
    let mut query = D::sql(sql).persistent(crate::store::sql::kept_prepared(devices.len()));
    for device_id in devices {
        query = query.arg(*device_id);
    }
    query
}

/// The reconcile views of `devices`, each read by statements shared by all of them.
async fn reconcile_views_of<D: Db>(
    tx: &mut D::Tx,
    devices: &[String],
) -> Result<std::collections::HashMap<String, ReconcileView>, sqlx::Error> {
    use crate::store::sql::{chunk_rows, ENROLLMENT_COLUMNS};
    let marks = crate::store::sql::Marks::of::<D>();
    let mut unique: Vec<&String> = devices.iter().collect();
    unique.sort();
    unique.dedup();
    let mut views: std::collections::HashMap<String, ReconcileView> = unique
        .iter()
        .map(|d| ((*d).clone(), ReconcileView::default()))
        .collect();
    for chunk in chunk_rows(&unique, 1) {
        let list = marks.list(1, chunk.len());
        let sql = format!("SELECT {ENROLLMENT_COLUMNS} FROM enrollments WHERE id IN ({list})");
        for row in bind_devices::<D>(&sql, chunk)
            .fetch_all_on(&mut **tx)
            .await?
        {
            let enrollment = enrollment_from_row(&row)?;
            if let Some(view) = views.get_mut(&enrollment.device_id) {
                view.enrollment = Some(enrollment);
            }
        }
        let sql = format!(
            "SELECT device_id, {MANAGED_COLUMNS} FROM managed_profiles \
             WHERE device_id IN ({list}) ORDER BY device_id, identifier"
        );
        for row in bind_devices::<D>(&sql, chunk)
            .fetch_all_on(&mut **tx)
            .await?
        {
            let device_id: String = row.col("device_id")?;
            if let Some(view) = views.get_mut(&device_id) {
                view.state.managed.push(managed_from_row(&row)?);
            }
        }
        let sql = format!(
            "SELECT device_id, reported_at, profiles FROM reported_profiles WHERE device_id IN ({list})"
        );
        for row in bind_devices::<D>(&sql, chunk)
            .fetch_all_on(&mut **tx)
            .await?
        {
            let device_id: String = row.col("device_id")?;
            if let Some(view) = views.get_mut(&device_id) {
                view.state.reported = Some(decode_reported(
                    row.col("reported_at")?,
                    &row.col::<String>("profiles")?,
                ));
            }
        }
        let sql = format!(
            "SELECT rc.device_id, rc.command_uuid, rc.intent, rc.identifier, rc.hash, c.status, \
               c.sent_count, c.updated_at, r.raw \
             FROM reconcile_commands rc \
             JOIN commands c ON c.uuid = rc.command_uuid \
             LEFT JOIN command_results r ON r.command_uuid = rc.command_uuid \
             WHERE rc.device_id IN ({list}) AND rc.processed_at IS NULL \
             ORDER BY rc.device_id, c.seq"
        );
        for row in bind_devices::<D>(&sql, chunk)
            .fetch_all_on(&mut **tx)
            .await?
        {
            let device_id: String = row.col("device_id")?;
            let open = OpenCommand {
                uuid: row.col("command_uuid")?,
                intent: intent_from_columns(
                    &row.col::<String>("intent")?,
                    row.col("identifier")?,
                    row.col("hash")?,
                ),
                status: crate::store::sql::known(CommandStatus::parse(
                    &row.col::<String>("status")?,
                ))?,
                sent: row.col::<i64>("sent_count")? > 0,
                result: row.col("raw")?,
                updated_at: row.col("updated_at")?,
            };
            if let Some(view) = views.get_mut(&device_id) {
                view.state.open.push(open);
            }
        }
    }
    Ok(views)
}

/// Answers a batch of the reconcile read queue (`reconcile_view` for each device
/// asked) in one read transaction.
pub(crate) fn reconcile_view_flush<B: Backend>(
    source: B::ReadSource,
) -> crate::store::group_commit::Flush<String, ReconcileView> {
    std::sync::Arc::new(move |asked: Vec<String>| {
        let source = source.clone();
        Box::pin(async move {
            let found = async {
                let mut tx = B::begin_read_on(&source).await?;
                let views = reconcile_views_of::<B::Db>(&mut tx, &asked).await?;
                tx.commit().await?;
                Ok::<_, sqlx::Error>(views)
            }
            .await;
            crate::store::sql::answer_each(&asked, found.map_err(Into::into), |views, device| {
                views.get(device).cloned().unwrap_or_default()
            })
        })
    })
}

/// Writes plans in order inside the caller's transaction: those of distinct
/// devices together, a device's second plan in a batch after its first.
pub(crate) async fn apply_plans_in<D: Db>(
    tx: &mut D::Tx,
    plans: &[&DevicePlan],
) -> Result<Vec<u64>, sqlx::Error> {
    let mut queued = vec![0; plans.len()];
    for round in crate::store::sql::rounds_by_device(plans, |p| &p.device_id) {
        let these: Vec<&DevicePlan> = round.iter().map(|&i| plans[i]).collect();
        let counts = apply_distinct_plans::<D>(tx, &these).await?;
        for (i, n) in round.into_iter().zip(counts) {
            queued[i] = n;
        }
    }
    Ok(queued)
}

#[async_trait]
impl<B: Backend> ReconcileStore for B {
    async fn reconcile_view(&self, device_id: &str) -> StoreResult<ReconcileView> {
        self.reads().views.submit(device_id.to_string()).await
    }

    async fn apply_plan(&self, device_id: &str, change: PlanChange, now: i64) -> StoreResult<u64> {
        // Through the write queue: plans finishing together share one transaction.
        let plan = DevicePlan {
            device_id: device_id.to_string(),
            change,
            now,
        };
        match self
            .writes()
            .submit(crate::store::sql::Write::Plan(plan))
            .await?
        {
            crate::store::sql::Written::Plan(queued) => Ok(queued),
            other => Err(crate::store::sql::wrong_kind(other)),
        }
    }

    async fn apply_plans(&self, plans: &[DevicePlan]) -> StoreResult<Vec<u64>> {
        let mut tx = self.begin_write().await?;
        let plans: Vec<&DevicePlan> = plans.iter().collect();
        let queued = apply_plans_in::<B::Db>(&mut tx, &plans).await?;
        tx.commit().await?;
        Ok(queued)
    }

    async fn profile_counts(&self) -> StoreResult<Vec<ProfileCounts>> {
        let rows = Self::sql(crate::store::reconcile::PROFILE_COUNTS_SQL)
            .fetch_all_on(&mut *self.reader().await?)
            .await?;
        let mut out: Vec<ProfileCounts> = Vec::new();
        for row in rows {
            let key: String = row.col("profile_key")?;
            let state: String = row.col("state")?;
            let n: i64 = row.col("n")?;
            if out.last().map(|c| &c.profile_key) != Some(&key) {
                out.push(ProfileCounts {
                    profile_key: key,
                    ..ProfileCounts::default()
                });
            }
            let counts = out.last_mut().expect("pushed above");
            match crate::store::sql::known(ProfileState::parse(&state))? {
                ProfileState::Pending => counts.pending += n,
                ProfileState::Verifying => counts.verifying += n,
                ProfileState::Verified => {
                    counts.verified += n;
                    let hash: String = row.col("hash")?;
                    *counts.verified_by_hash.entry(hash).or_default() += n;
                }
                ProfileState::Failed => counts.failed += n,
                ProfileState::Removing => counts.removing += n,
                ProfileState::RemovalFailed => counts.removal_failed += n,
            }
        }
        Ok(out)
    }

    async fn managed_in_state(
        &self,
        profile_key: &str,
        state: &str,
        limit: i64,
    ) -> StoreResult<Vec<(String, ManagedProfile)>> {
        let rows = Self::sql(&format!(
            "SELECT device_id, {MANAGED_COLUMNS} FROM managed_profiles \
             WHERE profile_key = $1 AND state = $2 ORDER BY device_id LIMIT $3"
        ))
        .arg(profile_key)
        .arg(state)
        .arg(limit)
        .fetch_all_on(&mut *self.reader().await?)
        .await?;
        rows.iter()
            .map(|row| Ok((row.col("device_id")?, managed_from_row(row)?)))
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(Into::into)
    }
}

/// Schema for the reconciler's tables (same text on both backends).
pub(crate) const SCHEMA: &str = r#"
CREATE TABLE managed_profiles (
    device_id TEXT NOT NULL,
    identifier TEXT NOT NULL,
    profile_key TEXT NOT NULL,
    hash TEXT NOT NULL,
    uuid TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    installs BIGINT NOT NULL,
    last_attempt_at BIGINT,
    acknowledged_at BIGINT,
    last_error TEXT,
    removal_policy TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (device_id, identifier)
);
CREATE INDEX managed_profiles_by_profile ON managed_profiles (profile_key, state);
CREATE TABLE reported_profiles (
    device_id TEXT PRIMARY KEY,
    reported_at BIGINT NOT NULL,
    profiles TEXT NOT NULL
);
CREATE TABLE reconcile_commands (
    command_uuid TEXT PRIMARY KEY,
    device_id TEXT NOT NULL,
    intent TEXT NOT NULL,
    identifier TEXT,
    hash TEXT,
    created_at BIGINT NOT NULL,
    processed_at BIGINT
);
CREATE INDEX reconcile_commands_open ON reconcile_commands (device_id) WHERE processed_at IS NULL
"#;

#[cfg(test)]
mod counts_tests {
    use super::ProfileCounts;

    #[test]
    fn devices_verified_with_an_earlier_content_count_as_pending() {
        let counts = ProfileCounts {
            profile_key: "Profile/wifi".into(),
            pending: 1,
            verified: 5,
            verified_by_hash: [("old".to_string(), 3), ("new".to_string(), 2)].into(),
            ..ProfileCounts::default()
        };
        let now = counts.clone().against(Some("new"));
        assert_eq!((now.verified, now.pending), (2, 4));
        let nothing_yet = counts.clone().against(Some("newest"));
        assert_eq!((nothing_yet.verified, nothing_yet.pending), (0, 6));
        let undeclared = counts.clone().against(None);
        assert_eq!((undeclared.verified, undeclared.pending), (5, 1));
    }
}
