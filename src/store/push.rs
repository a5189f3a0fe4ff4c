//! Push credentials and push scheduling: requests that coalesce, claims with a lease,
//! outcomes and backoff, alone or in a batch of the write queue. The trait and its SQL for
//! every `Backend`.

use super::backend::{Backend, Db, Finish as _};
use super::sql::*;
use super::*;
use async_trait::async_trait;

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

/// Records an administrator's push (`push_now`: no schedule to write; the scheduler's
/// outcomes go through `record_pushes`' batch statement).
pub(crate) fn admin_push_query<D: Db>(o: &PushOutcome) -> super::backend::Query<'_> {
    D::sql(
            "INSERT INTO push_state (enrollment_id, last_push_at, last_result, last_result_at, token_invalid_at) \
             SELECT id, CASE WHEN $3 THEN $2 ELSE NULL END, $4, $2, CASE WHEN $5 THEN $2 ELSE NULL END \
             FROM enrollments WHERE id = $1 \
             ON CONFLICT (enrollment_id) DO UPDATE SET \
               last_push_at = COALESCE(excluded.last_push_at, push_state.last_push_at), \
               last_result = excluded.last_result, last_result_at = excluded.last_result_at, \
               token_invalid_at = COALESCE(excluded.token_invalid_at, push_state.token_invalid_at), \
               next_push_at = CASE WHEN $5 THEN NULL ELSE push_state.next_push_at END",
        )
        .arg(&o.device_id)
        .arg(o.at)
        .arg(o.accepted)
        .arg(&o.result)
        .arg(o.token_invalid)
}

#[async_trait]
impl<B: Backend> PushStore for B {
    async fn push_credentials(&self, device_id: &str) -> StoreResult<Option<PushCredentials>> {
        let row = Self::sql(
            "SELECT topic, push_token, push_magic FROM enrollments \
             WHERE id = $1 AND state = 'enrolled' AND push_token IS NOT NULL",
        )
        .arg(device_id)
        .fetch_optional_on(&mut *self.reader().await?)
        .await?;
        Ok(match row {
            Some(row) => Some(PushCredentials {
                topic: row.col("topic")?,
                token: row.col("push_token")?,
                push_magic: row.col("push_magic")?,
            }),
            None => None,
        })
    }

    async fn request_push(&self, device_id: &str, at: i64) -> StoreResult<()> {
        // Through the write queue: the rules live in `request_pushes_in` only.
        let request = Write::PushRequest((device_id.to_string(), at));
        match self.writes().submit(request).await? {
            Written::PushRequest(true) => Ok(()),
            Written::PushRequest(false) => {
                Err(StoreError::NotFound(format!("no device {device_id}")))
            }
            other => Err(wrong_kind(other)),
        }
    }

    async fn request_pushes(&self, requests: &[(String, i64)]) -> StoreResult<Vec<bool>> {
        let mut tx = self.begin_write().await?;
        let requests: Vec<&(String, i64)> = requests.iter().collect();
        let found = request_pushes_in::<B::Db>(&mut tx, &requests).await?;
        tx.commit().await?;
        Ok(found)
    }

    async fn claim_due_pushes(
        &self,
        now: i64,
        claimed_until: i64,
        limit: i64,
    ) -> StoreResult<Vec<DuePush>> {
        let mut tx = self.begin_write().await?;
        // PostgreSQL replicas skip each other's rows; SQLite serialises writers anyway.
        let lock = if Self::NAME == "postgres" {
            " FOR UPDATE SKIP LOCKED"
        } else {
            ""
        };
        let claimed: Vec<String> = Self::sql(&format!(
            "UPDATE push_state SET next_push_at = $2, claimed_until = $2 WHERE enrollment_id IN \
             (SELECT enrollment_id FROM push_state WHERE next_push_at <= $1 \
              ORDER BY next_push_at LIMIT $3{lock}) RETURNING enrollment_id"
        ))
        .arg(now)
        .arg(claimed_until)
        .arg(limit)
        .fetch_all_on(&mut *tx)
        .await?
        .iter()
        .map(|row| row.col("enrollment_id"))
        .collect::<Result<_, _>>()?;
        if claimed.is_empty() {
            tx.commit().await?;
            return Ok(Vec::new());
        }
        let details = format!(
            "SELECT p.enrollment_id, p.attempts, p.failures, p.last_push_at, p.token_invalid_at, \
               e.state, e.topic, e.push_token, e.push_magic, e.last_seen_at, \
               EXISTS (SELECT 1 FROM commands c WHERE c.enrollment_id = p.enrollment_id \
                 AND c.status = 'queued') AS has_queued, \
               EXISTS (SELECT 1 FROM commands c WHERE c.enrollment_id = p.enrollment_id \
                 AND c.status = 'queued' AND c.created_at > COALESCE(e.last_seen_at, 0)) AS has_new \
             FROM push_state p JOIN enrollments e ON e.id = p.enrollment_id \
             WHERE p.enrollment_id IN ({})",
            Marks::of::<B::Db>().list(1, claimed.len())
        );
        let mut query = Self::sql(&details);
        for id in &claimed {
            query = query.arg(id);
        }
        let rows = query.fetch_all_on(&mut *tx).await?;
        tx.commit().await?;
        let mut due = Vec::with_capacity(rows.len());
        for row in rows {
            let token: Option<Vec<u8>> = row.col("push_token")?;
            let magic: Option<String> = row.col("push_magic")?;
            let state: String = row.col("state")?;
            let invalid: Option<i64> = row.col("token_invalid_at")?;
            let credentials = match (token, magic) {
                (Some(token), Some(push_magic)) if state == "enrolled" && invalid.is_none() => {
                    Some(PushCredentials {
                        topic: row.col("topic")?,
                        token,
                        push_magic,
                    })
                }
                _ => None,
            };
            due.push(DuePush {
                device_id: row.col("enrollment_id")?,
                claimed_until,
                attempts: row.col("attempts")?,
                failures: row.col("failures")?,
                last_push_at: row.col("last_push_at")?,
                last_seen_at: row.col("last_seen_at")?,
                credentials,
                has_queued_commands: row.col("has_queued")?,
                has_commands_queued_since_seen: row.col("has_new")?,
            });
        }
        Ok(due)
    }

    async fn record_push(&self, o: &PushOutcome) -> StoreResult<()> {
        // Through the write queue: the rules live in `record_pushes_in` only.
        match self.writes().submit(Write::PushOutcome(o.clone())).await? {
            Written::PushOutcome => Ok(()),
            other => Err(wrong_kind(other)),
        }
    }

    async fn record_pushes(&self, outcomes: &[PushOutcome]) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        let outcomes: Vec<&PushOutcome> = outcomes.iter().collect();
        record_pushes_in::<B::Db>(&mut tx, &outcomes).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn push_status(&self, device_id: &str) -> StoreResult<Option<PushStatus>> {
        let row = Self::sql(
            "SELECT next_push_at, attempts, failures, last_push_at, last_result, last_result_at, \
             token_invalid_at FROM push_state WHERE enrollment_id = $1",
        )
        .arg(device_id)
        .fetch_optional_on(&mut *self.reader().await?)
        .await?;
        Ok(match row {
            Some(row) => Some(PushStatus {
                next_push_at: row.col("next_push_at")?,
                attempts: row.col("attempts")?,
                failures: row.col("failures")?,
                last_push_at: row.col("last_push_at")?,
                last_result: row.col("last_result")?,
                last_result_at: row.col("last_result_at")?,
                token_invalid_at: row.col("token_invalid_at")?,
            }),
            None => None,
        })
    }

    async fn request_pushes_for_queued(&self, at: i64) -> StoreResult<u64> {
        let affected = Self::sql(
            "INSERT INTO push_state (enrollment_id, next_push_at) \
             SELECT DISTINCT c.enrollment_id, $1 FROM commands c WHERE c.status = 'queued' \
             ON CONFLICT (enrollment_id) DO UPDATE SET next_push_at = excluded.next_push_at \
             WHERE push_state.next_push_at IS NULL AND push_state.token_invalid_at IS NULL",
        )
        .arg(at)
        .write_alone(self)
        .await?;
        Ok(affected)
    }

    async fn enrolled_topics(&self) -> StoreResult<Vec<(String, i64)>> {
        let rows = Self::sql(
            "SELECT topic, COUNT(*) AS n FROM enrollments WHERE state = 'enrolled' GROUP BY topic ORDER BY topic",
        )
        .fetch_all_on(&mut *self.reader().await?)
        .await?;
        rows.iter()
            .map(|row| Ok((row.col("topic")?, row.col("n")?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Into::into)
    }
}

/// Push requests (see `Store::request_pushes`) inside the caller's transaction.
pub(crate) async fn request_pushes_in<D: Db>(
    tx: &mut D::Tx,
    requests: &[&(String, i64)],
) -> StoreResult<Vec<bool>> {
    // A push is due at `at` unless an earlier one is pending, or a push is out that
    // the device has not answered yet (a claim covering `at`, or backoff running
    // while the device stayed silent since its last push). A few statements for the
    // whole batch.
    let marks = Marks::of::<D>();
    let mut found = vec![false; requests.len()];
    for round in rounds_by_device(requests, |r| &r.0) {
        let mut known = std::collections::HashSet::new();
        for chunk in chunk_rows(&round, 2) {
            let sql = format!(
                "INSERT INTO push_state (enrollment_id, next_push_at) \
                 SELECT e.id, v.column2 FROM (VALUES {}) AS v JOIN enrollments e ON e.id = v.column1 \
                 WHERE true \
                 ON CONFLICT (enrollment_id) DO UPDATE SET next_push_at = CASE \
                   WHEN push_state.next_push_at IS NULL THEN excluded.next_push_at \
                   WHEN push_state.next_push_at <= excluded.next_push_at THEN push_state.next_push_at \
                   WHEN push_state.claimed_until >= excluded.next_push_at THEN push_state.next_push_at \
                   WHEN push_state.attempts = 0 THEN excluded.next_push_at \
                   WHEN EXISTS (SELECT 1 FROM enrollments e2 WHERE e2.id = push_state.enrollment_id \
                     AND e2.last_seen_at >= push_state.last_push_at) THEN excluded.next_push_at \
                   ELSE push_state.next_push_at END \
                 RETURNING enrollment_id",
                marks.rows(1, chunk.len(), 2)
            );
            let mut query = D::sql(&sql).persistent(kept_prepared(chunk.len()));
            for &i in chunk {
                query = query.arg(&requests[i].0).arg(requests[i].1);
            }
            for row in query.fetch_all_on(&mut **tx).await? {
                known.insert(row.col::<String>("enrollment_id")?);
            }
        }
        for i in round {
            found[i] = known.contains(&requests[i].0);
        }
    }
    Ok(found)
}

/// Push outcomes (see `Store::record_pushes`) inside the caller's transaction.
pub(crate) async fn record_pushes_in<D: Db>(
    tx: &mut D::Tx,
    outcomes: &[&PushOutcome],
) -> StoreResult<()> {
    // The scheduler's outcomes, a few statements for the whole batch. A wake
    // requested while the push was out (an earlier time) is kept. A device that
    // already drained its queue (claim cleared by next_command) answered this push:
    // no backoff, no re-push unless new work asked for one. Administrators' pushes
    // (no schedule) one by one.
    let marks = Marks::of::<D>();
    for round in rounds_by_device(outcomes, |o| &o.device_id) {
        let mut scheduled = Vec::new();
        for i in round {
            match &outcomes[i].schedule {
                Some(schedule) => scheduled.push((outcomes[i], schedule)),
                None => {
                    admin_push_query::<D>(outcomes[i])
                        .execute_on(&mut **tx)
                        .await?;
                }
            }
        }
        for chunk in chunk_rows(&scheduled, 10) {
            let sql = format!(
                "UPDATE push_state SET \
                   last_push_at = CASE WHEN v.column3 THEN v.column2 ELSE last_push_at END, \
                   last_result = COALESCE(v.column4, last_result), \
                   last_result_at = CASE WHEN v.column4 IS NULL THEN last_result_at ELSE v.column2 END, \
                   token_invalid_at = CASE WHEN v.column5 THEN v.column2 ELSE token_invalid_at END, \
                   attempts = CASE WHEN claimed_until IS NULL THEN 0 ELSE v.column6 END, \
                   failures = v.column7, claimed_until = NULL, \
                   next_push_at = CASE WHEN v.column5 THEN NULL \
                     WHEN next_push_at IS NOT NULL AND next_push_at < v.column8 THEN next_push_at \
                     WHEN claimed_until IS NULL THEN NULL \
                     WHEN v.column10 AND EXISTS (SELECT 1 FROM commands c WHERE c.enrollment_id = v.column1 \
                       AND c.status = 'queued') THEN v.column2 \
                     ELSE v.column9 END \
                 FROM (VALUES {}) AS v WHERE push_state.enrollment_id = v.column1",
                marks.rows(1, chunk.len(), 10)
            );
            let mut query = D::sql(&sql).persistent(kept_prepared(chunk.len()));
            for (o, schedule) in chunk {
                query = query
                    .arg(&o.device_id)
                    .arg(o.at)
                    .arg(o.accepted)
                    .arg(&o.result)
                    .arg(o.token_invalid)
                    .arg(schedule.attempts)
                    .arg(schedule.failures)
                    .arg(schedule.claimed_until)
                    .arg(schedule.next_push_at)
                    .arg(schedule.push_if_queued);
            }
            query.execute_on(&mut **tx).await?;
        }
    }
    Ok(())
}
