//! What the reconciler persists per device: the inventory of profiles Pomona manages there, the
//! device's latest ProfileList, and the intent behind each command the reconciler queued (so a
//! result can be folded back into the inventory). `apply_plan` writes one plan — inventory,
//! folded results, new commands, cancellations — in one transaction; `apply_plans` writes the
//! plans of many devices in one (group commit). Implemented for both backends by
//! `impl_reconcile_store!`, with the same SQL.

use super::{CommandStatus, NewCommand, StoreResult};
use crate::vocab::profiles::{Intent, ManagedProfile, ReportedProfiles};
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

macro_rules! impl_reconcile_store {
    ($store:ty, $db:ty) => {
        const _: () = {
            use $crate::vocab::profiles::{ManagedProfile, ProfileState, RemovalPolicy};
            use $crate::store::reconcile::*;
            use $crate::store::*;
            use sqlx::Row as _;

            type DbRow = <$db as sqlx::Database>::Row;

            fn managed_from_row(row: &DbRow) -> Result<ManagedProfile, sqlx::Error> {
                Ok(ManagedProfile {
                    identifier: row.try_get("identifier")?,
                    profile_key: row.try_get("profile_key")?,
                    hash: row.try_get("hash")?,
                    uuid: row.try_get("uuid")?,
                    state: $crate::store::sql::known(ProfileState::parse(&row.try_get::<String, _>("state")?))?,
                    attempts: row.try_get::<i64, _>("attempts")? as u32,
                    installs: row.try_get::<i64, _>("installs")? as u32,
                    last_attempt_at: row.try_get("last_attempt_at")?,
                    acknowledged_at: row.try_get("acknowledged_at")?,
                    last_error: row.try_get("last_error")?,
                    removal_policy: if row.try_get::<String, _>("removal_policy")? == "Keep" {
                        RemovalPolicy::Keep
                    } else {
                        RemovalPolicy::Remove
                    },
                })
            }

            /// Writes plans of distinct devices inside the caller's transaction, with a few
            /// statements for all of them (each statement is a round trip to the database, and
            /// a fleet-wide change writes thousands of plans a second); returns how many
            /// commands each plan newly queued.
            async fn apply_distinct_plans(
                tx: &mut sqlx::Transaction<'_, $db>,
                plans: &[&DevicePlan],
            ) -> Result<Vec<u64>, sqlx::Error> {
                use $crate::store::sql::chunk_rows;
                let marks = $crate::store::sql::Marks::of::<$db>();
                let now = plans.iter().map(|p| p.now).max().unwrap_or_default();
                // Write first (SQLite takes the write lock up front), then the rest.
                for chunk in chunk_rows(plans, 1) {
                    let sql = format!(
                        "DELETE FROM managed_profiles WHERE device_id IN ({})",
                        marks.list(1, chunk.len())
                    );
                    let mut query = sqlx::query(&sql).persistent(false);
                    for p in chunk {
                        query = query.bind(&p.device_id);
                    }
                    query.execute(&mut **tx).await?;
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
                    let mut query = sqlx::query(&sql).persistent(false);
                    for (p, m) in chunk {
                        query = query
                            .bind(&p.device_id)
                            .bind(&m.identifier)
                            .bind(&m.profile_key)
                            .bind(&m.hash)
                            .bind(&m.uuid)
                            .bind(m.state.as_str())
                            .bind(m.attempts as i64)
                            .bind(m.installs as i64)
                            .bind(m.last_attempt_at)
                            .bind(m.acknowledged_at)
                            .bind(&m.last_error)
                            .bind(match m.removal_policy {
                                RemovalPolicy::Keep => "Keep",
                                RemovalPolicy::Remove => "Remove",
                            })
                            .bind(p.now);
                    }
                    query.execute(&mut **tx).await?;
                }
                let processed: Vec<&String> =
                    plans.iter().flat_map(|p| &p.change.processed).collect();
                for chunk in chunk_rows(&processed, 1) {
                    let sql = format!(
                        "UPDATE reconcile_commands SET processed_at = {} WHERE command_uuid IN ({})",
                        marks.one(1),
                        marks.list(2, chunk.len())
                    );
                    let mut query = sqlx::query(&sql).persistent(false).bind(now);
                    for uuid in chunk {
                        query = query.bind(*uuid);
                    }
                    query.execute(&mut **tx).await?;
                }
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
                    let mut query = sqlx::query(&sql).persistent(false);
                    for (device_id, r) in chunk {
                        query = query.bind(*device_id).bind(r.reported_at).bind(encode_reported(r));
                    }
                    query.execute(&mut **tx).await?;
                }
                // Cancellations are rare (a newer plan superseding a queued command): one by one.
                for p in plans {
                    for uuid in &p.change.cancel {
                        let cancelled = sqlx::query(
                            "UPDATE commands SET status = 'cancelled', updated_at = $3 \
                             WHERE uuid = $1 AND enrollment_id = $2 AND status = 'queued'",
                        )
                        .bind(uuid)
                        .bind(&p.device_id)
                        .bind(p.now)
                        .execute(&mut **tx)
                        .await?
                        .rows_affected();
                        if cancelled == 1 {
                            sqlx::query(
                                "UPDATE reconcile_commands SET processed_at = $2 WHERE command_uuid = $1",
                            )
                            .bind(uuid)
                            .bind(p.now)
                            .execute(&mut **tx)
                            .await?;
                        }
                    }
                }
                // New commands, for devices still enrolled; a replayed UUID is not queued again.
                // The ordinal keeps each device's commands in the planned order.
                let enqueue: Vec<_> = plans
                    .iter()
                    .enumerate()
                    .flat_map(|(i, p)| p.change.enqueue.iter().map(move |(c, intent)| (i, *p, c, intent)))
                    .collect();
                let mut inserted = std::collections::HashSet::new();
                for chunk in chunk_rows(&enqueue, 6) {
                    let sql = format!(
                        "INSERT INTO commands (uuid, enrollment_id, request_type, command, status, created_at, updated_at) \
                         SELECT v.column1, e.id, v.column3, v.column4, 'queued', v.column5, v.column5 \
                         FROM (VALUES {}) AS v JOIN enrollments e ON e.id = v.column2 \
                         WHERE e.state <> 'checked_out' ORDER BY v.column6 \
                         ON CONFLICT (uuid) DO NOTHING RETURNING uuid",
                        marks.rows(1, chunk.len(), 6)
                    );
                    let mut query = sqlx::query(&sql).persistent(false);
                    for (ordinal, (_, p, command, _)) in chunk.iter().enumerate() {
                        query = query
                            .bind(&command.uuid)
                            .bind(&p.device_id)
                            .bind(&command.request_type)
                            .bind(&command.command)
                            .bind(p.now)
                            .bind(ordinal as i64);
                    }
                    for row in query.fetch_all(&mut **tx).await? {
                        inserted.insert(row.try_get::<String, _>("uuid")?);
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
                    let mut query = sqlx::query(&sql).persistent(false);
                    for (_, p, command, intent) in chunk {
                        let (kind, identifier, hash) = intent_columns(intent);
                        query = query
                            .bind(&command.uuid)
                            .bind(&p.device_id)
                            .bind(kind)
                            .bind(identifier)
                            .bind(hash)
                            .bind(p.now);
                    }
                    query.execute(&mut **tx).await?;
                }
                Ok(queued)
            }

            /// A one-off query with `devices` bound to its marks, in order.
            fn bind_devices<'q>(
                sql: &'q str,
                devices: &[&'q String],
            ) -> sqlx::query::Query<'q, $db, <$db as sqlx::Database>::Arguments<'q>> {
                let mut query = sqlx::query(sql).persistent(false);
                for device_id in devices {
                    query = query.bind(*device_id);
                }
                query
            }

            /// The reconcile views of `devices`, each read by statements shared by all of them.
            async fn reconcile_views_of(
                tx: &mut sqlx::Transaction<'_, $db>,
                devices: &[String],
            ) -> Result<std::collections::HashMap<String, ReconcileView>, sqlx::Error> {
                use $crate::store::sql::{chunk_rows, ENROLLMENT_COLUMNS};
                let marks = $crate::store::sql::Marks::of::<$db>();
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
                    for row in bind_devices(&sql, chunk).fetch_all(&mut **tx).await? {
                        let enrollment = enrollment_from_row(&row)?;
                        if let Some(view) = views.get_mut(&enrollment.device_id) {
                            view.enrollment = Some(enrollment);
                        }
                    }
                    let sql = format!(
                        "SELECT device_id, {MANAGED_COLUMNS} FROM managed_profiles \
                         WHERE device_id IN ({list}) ORDER BY device_id, identifier"
                    );
                    for row in bind_devices(&sql, chunk).fetch_all(&mut **tx).await? {
                        let device_id: String = row.try_get("device_id")?;
                        if let Some(view) = views.get_mut(&device_id) {
                            view.state.managed.push(managed_from_row(&row)?);
                        }
                    }
                    let sql = format!(
                        "SELECT device_id, reported_at, profiles FROM reported_profiles WHERE device_id IN ({list})"
                    );
                    for row in bind_devices(&sql, chunk).fetch_all(&mut **tx).await? {
                        let device_id: String = row.try_get("device_id")?;
                        if let Some(view) = views.get_mut(&device_id) {
                            view.state.reported = Some(decode_reported(
                                row.try_get("reported_at")?,
                                &row.try_get::<String, _>("profiles")?,
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
                    for row in bind_devices(&sql, chunk).fetch_all(&mut **tx).await? {
                        let device_id: String = row.try_get("device_id")?;
                        let open = OpenCommand {
                            uuid: row.try_get("command_uuid")?,
                            intent: intent_from_columns(
                                &row.try_get::<String, _>("intent")?,
                                row.try_get("identifier")?,
                                row.try_get("hash")?,
                            ),
                            status: $crate::store::sql::known(CommandStatus::parse(&row.try_get::<String, _>("status")?))?,
                            sent: row.try_get::<i64, _>("sent_count")? > 0,
                            result: row.try_get("raw")?,
                            updated_at: row.try_get("updated_at")?,
                        };
                        if let Some(view) = views.get_mut(&device_id) {
                            view.state.open.push(open);
                        }
                    }
                }
                Ok(views)
            }

            impl $store {
                /// Answers a batch of the reconcile read queue (`reconcile_view` for each device
                /// asked) in one read transaction.
                pub(crate) fn reconcile_view_flush(
                    source: ReadSource,
                ) -> $crate::store::group_commit::Flush<String, ReconcileView> {
                    std::sync::Arc::new(move |asked: Vec<String>| {
                        let source = source.clone();
                        Box::pin(async move {
                            let found = async {
                                let mut conn = read_connection(&source).await?;
                                let mut tx = sqlx::Connection::begin(&mut *conn).await?;
                                let views = reconcile_views_of(&mut tx, &asked).await?;
                                tx.commit().await?;
                                Ok::<_, sqlx::Error>(views)
                            }
                            .await;
                            $crate::store::sql::answer_each(&asked, found.map_err(Into::into), |views, device| {
                                views.get(device).cloned().unwrap_or_default()
                            })
                        })
                    })
                }

                /// Writes plans in order inside the caller's transaction: those of distinct
                /// devices together, a device's second plan in a batch after its first.
                pub(crate) async fn apply_plans_in(
                    tx: &mut sqlx::Transaction<'_, $db>,
                    plans: &[&DevicePlan],
                ) -> Result<Vec<u64>, sqlx::Error> {
                    let mut queued = vec![0; plans.len()];
                    for round in $crate::store::sql::rounds_by_device(plans, |p| &p.device_id) {
                        let these: Vec<&DevicePlan> = round.iter().map(|&i| plans[i]).collect();
                        let counts = apply_distinct_plans(tx, &these).await?;
                        for (i, n) in round.into_iter().zip(counts) {
                            queued[i] = n;
                        }
                    }
                    Ok(queued)
                }
            }

            #[async_trait::async_trait]
            impl ReconcileStore for $store {
                async fn reconcile_view(&self, device_id: &str) -> StoreResult<ReconcileView> {
                    self.reads.views.submit(device_id.to_string()).await
                }

                async fn apply_plan(
                    &self,
                    device_id: &str,
                    change: PlanChange,
                    now: i64,
                ) -> StoreResult<u64> {
                    // Through the write queue: plans finishing together share one transaction.
                    let plan = DevicePlan {
                        device_id: device_id.to_string(),
                        change,
                        now,
                    };
                    match self.writes.submit($crate::store::sql::Write::Plan(plan)).await? {
                        $crate::store::sql::Written::Plan(queued) => Ok(queued),
                        other => Err($crate::store::sql::wrong_kind(other)),
                    }
                }

                async fn apply_plans(&self, plans: &[DevicePlan]) -> StoreResult<Vec<u64>> {
                    let mut tx = self.writer.begin().await?;
                    let plans: Vec<&DevicePlan> = plans.iter().collect();
                    let queued = Self::apply_plans_in(&mut tx, &plans).await?;
                    tx.commit().await?;
                    Ok(queued)
                }

                async fn profile_counts(&self) -> StoreResult<Vec<ProfileCounts>> {
                    let rows = sqlx::query($crate::store::reconcile::PROFILE_COUNTS_SQL)
                    .fetch_all(&mut *self.reader().await?)
                    .await?;
                    let mut out: Vec<ProfileCounts> = Vec::new();
                    for row in rows {
                        let key: String = row.try_get("profile_key")?;
                        let state: String = row.try_get("state")?;
                        let n: i64 = row.try_get("n")?;
                        if out.last().map(|c| &c.profile_key) != Some(&key) {
                            out.push(ProfileCounts {
                                profile_key: key,
                                ..ProfileCounts::default()
                            });
                        }
                        let counts = out.last_mut().expect("pushed above");
                        match $crate::store::sql::known(ProfileState::parse(&state))? {
                            ProfileState::Pending => counts.pending += n,
                            ProfileState::Verifying => counts.verifying += n,
                            ProfileState::Verified => {
                                counts.verified += n;
                                let hash: String = row.try_get("hash")?;
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
                    let rows = sqlx::query(&format!(
                        "SELECT device_id, {MANAGED_COLUMNS} FROM managed_profiles \
                         WHERE profile_key = $1 AND state = $2 ORDER BY device_id LIMIT $3"
                    ))
                    .bind(profile_key)
                    .bind(state)
                    .bind(limit)
                    .fetch_all(&mut *self.reader().await?)
                    .await?;
                    rows.iter()
                        .map(|row| Ok((row.try_get("device_id")?, managed_from_row(row)?)))
                        .collect::<Result<Vec<_>, sqlx::Error>>()
                        .map_err(Into::into)
                }
            }
        };
    };
}

pub(crate) use impl_reconcile_store;

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
