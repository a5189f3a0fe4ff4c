//! The one SQL implementation of the enrollment, queue, identity and push stores, generic over
//! the `Backend` (SQLite or PostgreSQL), with the write queue's batches and the certificate
//! standing reads. Placeholders are `$n`, which both databases accept (or `Marks`), and every
//! query uses only syntax both support (ON CONFLICT, RETURNING, partial indexes).
//!
//! Transactions start with a write where they can: a SQLite transaction that reads first and
//! writes later can fail to upgrade its lock under concurrency.
use super::backend::{Backend, Column, Db, QueryExt as _};
use super::*;
use crate::vocab::persisted::UnknownValue;
use async_trait::async_trait;

pub(crate) const ENROLLMENT_COLUMNS: &str = "id, enrollment_type, state, topic, serial_number, model, \
    model_name, product_name, os_version, build_version, device_name, imei, meid, \
    push_token IS NOT NULL AS has_push_token, unlock_token IS NOT NULL AS has_unlock_token, \
    awaiting_configuration, created_at, authenticated_at, token_updated_at, checked_out_at, last_seen_at, cert_fingerprint, wiped_at";

pub(crate) const CERTIFICATE_COLUMNS: &str =
    "fingerprint, serial, subject, not_before, not_after, \
    issued_at, device_id, bound_at, revoked_at";

pub(crate) const COMMAND_COLUMNS: &str = "c.uuid, c.enrollment_id, c.request_type, c.status, c.created_at, \
    c.updated_at, c.sent_count, c.last_sent_at, c.not_now_count, c.last_not_now_at, c.completed_at, r.raw";

/// One device's command exchange, owned, waiting to be written with others (group commit).
pub(crate) struct PendingExchange {
    pub device_id: String,
    /// Command UUID, status and the device's exact bytes.
    pub report: Option<(String, crate::protocol::ReportStatus, Vec<u8>)>,
    pub skip: Vec<String>,
    pub now: i64,
}

impl PendingExchange {
    pub fn report(&self) -> Option<super::ReportRecord<'_>> {
        self.report
            .as_ref()
            .map(|(uuid, status, raw)| super::ReportRecord {
                command_uuid: uuid,
                status: *status,
                raw,
            })
    }
}

pub(crate) type ExchangeDone = (Option<super::ReportOutcome>, Option<super::QueuedCommand>);

/// A write waiting in the store's one write queue. Command exchanges, plans, push requests and
/// push outcomes arriving together share one transaction: one commit (one fsync) for all of
/// them, and the pages they have in common (the command indexes, `push_state`) written once per
/// commit rather than once per kind of write (BENCHMARKS.md, session 7).
pub(crate) enum Write {
    Exchange(PendingExchange),
    Plan(super::reconcile::DevicePlan),
    /// A device to push, and when (Unix ms); see `Store::request_pushes`.
    PushRequest((String, i64)),
    PushOutcome(super::PushOutcome),
}

/// What a `Write` returns, of the same kind.
#[derive(Debug)]
pub(crate) enum Written {
    Exchange(ExchangeDone),
    /// Commands the plan newly queued.
    Plan(u64),
    /// Whether the device is known.
    PushRequest(bool),
    PushOutcome,
}

/// Writes in one transaction at most. Under a fleet-wide change the queue holds more than
/// this, and a commit rewrites every page its writes touched (device-keyed, so scattered): the
/// larger the batch, the more writes share a page. With 4,096, 10,000 devices converged in
/// 12.96 and 13.56 s against 14.78–15.51 s with 1,024 in the same hour; a later run was within
/// the machine's noise (BENCHMARKS.md, session 8).
pub(crate) const WRITE_BATCH: usize = 4096;

/// Point reads answered together at most (see `group_commit`): the reconciles in flight, or
/// the device requests arriving while the previous batch was read.
pub(crate) const READ_BATCH: usize = 512;

/// The read queues of a SQL store: point reads that every device request or reconcile makes,
/// answered in batches on the read lane (see `group_commit`).
pub(crate) struct ReadQueues {
    /// `Store::certificate_standing`, by fingerprint.
    pub standings: super::group_commit::GroupCommit<String, Option<super::CertificateStanding>>,
    /// `ReconcileStore::reconcile_view`, by device.
    pub views: super::group_commit::GroupCommit<String, super::reconcile::ReconcileView>,
}

impl ReadQueues {
    pub fn new(
        standings: super::group_commit::Flush<String, Option<super::CertificateStanding>>,
        views: super::group_commit::Flush<String, super::reconcile::ReconcileView>,
    ) -> Self {
        let lane = crate::lane::read_lane();
        Self {
            standings: super::group_commit::GroupCommit::on_lane(lane, READ_BATCH, standings),
            views: super::group_commit::GroupCommit::on_lane(lane, READ_BATCH, views),
        }
    }
}

/// One answer per item of a read batch, in order: each picked from what the batch found, or
/// the batch's error for every item.
pub(crate) fn answer_each<K, F, R>(
    asked: &[K],
    found: Result<F, super::StoreError>,
    pick: impl Fn(&F, &K) -> R,
) -> Vec<super::StoreResult<R>> {
    match found {
        Ok(found) => asked.iter().map(|key| Ok(pick(&found, key))).collect(),
        Err(e) => asked.iter().map(|_| Err(e.clone())).collect(),
    }
}

/// The answer to a write of another kind than the one submitted: a bug in the store.
pub(crate) fn wrong_kind(written: Written) -> super::StoreError {
    super::StoreError::Unavailable(format!("the write queue answered {written:?}"))
}

/// The order in which a batch touches its devices: by device id, so that two batches written
/// at once on PostgreSQL take their row locks in the same order and cannot deadlock. A
/// device's entries keep their order (a stable sort).
pub(crate) fn by_device<T>(items: &[T], device: impl Fn(&T) -> &String) -> Vec<usize> {
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by(|&a, &b| device(&items[a]).cmp(device(&items[b])));
    order
}

/// Bound values per multi-row statement at most (SQLite allows 32,766, PostgreSQL 65,535;
/// smaller statements are cheaper to prepare).
pub(crate) const MAX_BOUND_VALUES: usize = 4_000;

/// `items` in chunks that fit one multi-row statement of `columns` values per row.
pub(crate) fn chunk_rows<T>(items: &[T], columns: usize) -> std::slice::Chunks<'_, T> {
    items.chunks((MAX_BOUND_VALUES / columns.max(1)).max(1))
}

/// How a backend marks bound values in SQL text. PostgreSQL needs `$n`. SQLite accepts `$n`
/// too, but looks each one up by name in a list, when it prepares the statement and again when
/// sqlx binds it: quadratic in the number of values, which made a 4,000-value statement cost
/// more than the round trips it saved. For SQLite the statements built here use plain `?`,
/// bound in the order they appear in the text (which is why every caller numbers its values in
/// text order).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Marks {
    numbered: bool,
}

impl Marks {
    pub fn of<DB: sqlx::Database>() -> Self {
        Self {
            numbered: DB::NAME != "SQLite",
        }
    }

    /// The mark of the `n`th value.
    pub fn one(self, n: usize) -> String {
        if self.numbered {
            format!("${n}")
        } else {
            "?".into()
        }
    }

    /// `count` values from the `first`th, comma-separated (for `IN (…)`).
    pub fn list(self, first: usize, count: usize) -> String {
        self.rows(first, count, 1).replace(['(', ')'], "")
    }

    /// `(…), (…)`: `rows` rows of `columns` values from the `first`th, for `VALUES`.
    pub fn rows(self, first: usize, rows: usize, columns: usize) -> String {
        let mut out = String::with_capacity(rows * columns * 6);
        for row in 0..rows {
            if row > 0 {
                out.push_str(", ");
            }
            out.push('(');
            for column in 0..columns {
                if column > 0 {
                    out.push_str(", ");
                }
                out.push_str(&self.one(first + row * columns + column));
            }
            out.push(')');
        }
        out
    }
}

/// Splits a batch into rounds in which each device appears once, in device order, a device's
/// later items in later rounds (so multi-row statements never touch a row twice, and items of
/// one device keep their order).
pub(crate) fn rounds_by_device<T>(items: &[T], device: impl Fn(&T) -> &String) -> Vec<Vec<usize>> {
    let mut rounds: Vec<Vec<usize>> = Vec::new();
    let mut previous: Option<&String> = None;
    let mut repeat = 0;
    for i in by_device(items, &device) {
        let this = device(&items[i]);
        repeat = if previous == Some(this) {
            repeat + 1
        } else {
            0
        };
        previous = Some(this);
        if rounds.len() <= repeat {
            rounds.push(Vec::new());
        }
        rounds[repeat].push(i);
    }
    rounds
}

/// A persisted enum read back: an unknown value fails the read, naming the value (see
/// `vocab::persisted`), instead of standing for some other state.
pub(crate) fn known<T>(parsed: Result<T, UnknownValue>) -> Result<T, sqlx::Error> {
    parsed.map_err(known_error)
}

pub(crate) fn known_error(unknown: UnknownValue) -> sqlx::Error {
    sqlx::Error::Decode(Box::new(unknown))
}

/// `$first, $first+1, …` for a list of `count` bound values.
pub(crate) fn placeholders(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|n| format!("${n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

pub(crate) fn enrollment_from_row<R: Column>(row: &R) -> Result<Enrollment, sqlx::Error>
where
    R::Database: Db,
{
    Ok(Enrollment {
        device_id: row.col("id")?,
        enrollment_type: known(EnrollmentType::parse(
            &row.col::<String>("enrollment_type")?,
        ))?,
        state: known(EnrollmentState::parse(&row.col::<String>("state")?))?,
        topic: row.col("topic")?,
        serial_number: row.col("serial_number")?,
        model: row.col("model")?,
        model_name: row.col("model_name")?,
        product_name: row.col("product_name")?,
        os_version: row.col("os_version")?,
        build_version: row.col("build_version")?,
        device_name: row.col("device_name")?,
        imei: row.col("imei")?,
        meid: row.col("meid")?,
        has_push_token: row.col("has_push_token")?,
        has_unlock_token: row.col("has_unlock_token")?,
        awaiting_configuration: row.col("awaiting_configuration")?,
        created_at: row.col("created_at")?,
        authenticated_at: row.col("authenticated_at")?,
        token_updated_at: row.col("token_updated_at")?,
        checked_out_at: row.col("checked_out_at")?,
        last_seen_at: row.col("last_seen_at")?,
        certificate_fingerprint: row.col("cert_fingerprint")?,
        wiped_at: row.col("wiped_at")?,
    })
}

fn certificate_from_row<R: Column>(row: &R) -> Result<CertificateRecord, sqlx::Error>
where
    R::Database: Db,
{
    Ok(CertificateRecord {
        fingerprint: row.col("fingerprint")?,
        serial: row.col("serial")?,
        subject: row.col("subject")?,
        not_before: row.col("not_before")?,
        not_after: row.col("not_after")?,
        issued_at: row.col("issued_at")?,
        device_id: row.col("device_id")?,
        bound_at: row.col("bound_at")?,
        revoked_at: row.col("revoked_at")?,
    })
}

fn command_from_row<R: Column>(row: &R) -> Result<CommandRecord, sqlx::Error>
where
    R::Database: Db,
{
    Ok(CommandRecord {
        uuid: row.col("uuid")?,
        device_id: row.col("enrollment_id")?,
        request_type: row.col("request_type")?,
        status: known(CommandStatus::parse(&row.col::<String>("status")?))?,
        created_at: row.col("created_at")?,
        updated_at: row.col("updated_at")?,
        sent_count: row.col("sent_count")?,
        last_sent_at: row.col("last_sent_at")?,
        not_now_count: row.col("not_now_count")?,
        last_not_now_at: row.col("last_not_now_at")?,
        completed_at: row.col("completed_at")?,
        result: row.col("raw")?,
    })
}

/// Records an administrator's push (`push_now`: no schedule to write; the scheduler's
/// outcomes go through `record_pushes`' batch statement).
fn admin_push_query<D: Db>(
    o: &PushOutcome,
) -> sqlx::query::Query<'_, D, <D as sqlx::Database>::Arguments<'_>> {
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
impl<B: Backend> Store for B {
    async fn migrate(&self) -> StoreResult<()> {
        run_migrations(self).await
    }

    async fn ping(&self) -> StoreResult<()> {
        Self::sql("SELECT 1")
            .execute_on(&mut *self.reader().await?)
            .await?;
        Ok(())
    }

    fn backend(&self) -> &'static str {
        Self::NAME
    }
}

#[async_trait]
impl<B: Backend> EnrollmentStore for B {
    async fn authenticate(&self, f: &DeviceFacts, now: i64) -> StoreResult<AuthenticateOutcome> {
        let mut tx = self.writer().begin().await?;
        let inserted: bool = Self::sql(
            "INSERT INTO enrollments (id, enrollment_type, state, topic, serial_number, model, model_name, \
             product_name, os_version, build_version, device_name, imei, meid, created_at, authenticated_at, \
             cert_fingerprint) \
             VALUES ($1, $2, 'authenticated', $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $13, $14) \
             ON CONFLICT (id) DO UPDATE SET enrollment_type = excluded.enrollment_type, \
               state = 'authenticated', topic = excluded.topic, \
               serial_number = COALESCE(excluded.serial_number, enrollments.serial_number), \
               model = COALESCE(excluded.model, enrollments.model), \
               model_name = COALESCE(excluded.model_name, enrollments.model_name), \
               product_name = COALESCE(excluded.product_name, enrollments.product_name), \
               os_version = COALESCE(excluded.os_version, enrollments.os_version), \
               build_version = COALESCE(excluded.build_version, enrollments.build_version), \
               device_name = COALESCE(excluded.device_name, enrollments.device_name), \
               imei = COALESCE(excluded.imei, enrollments.imei), \
               meid = COALESCE(excluded.meid, enrollments.meid), \
               push_token = NULL, push_magic = NULL, awaiting_configuration = FALSE, \
               authenticated_at = excluded.authenticated_at, checked_out_at = NULL, \
               cert_fingerprint = excluded.cert_fingerprint \
             RETURNING created_at = authenticated_at AS inserted",
        )
        .arg(&f.device_id)
        .arg(f.enrollment_type.as_str())
        .arg(&f.topic)
        .arg(&f.serial_number)
        .arg(&f.model)
        .arg(&f.model_name)
        .arg(&f.product_name)
        .arg(&f.os_version)
        .arg(&f.build_version)
        .arg(&f.device_name)
        .arg(&f.imei)
        .arg(&f.meid)
        .arg(now)
        .arg(&f.certificate_fingerprint)
        .fetch_one_on(&mut *tx)
        .await?
        .col("inserted")?;
        if let Some(fingerprint) = &f.certificate_fingerprint {
            Self::sql(
                "UPDATE device_certificates SET device_id = $2, bound_at = $3 WHERE fingerprint = $1",
            )
            .arg(fingerprint)
            .arg(&f.device_id)
            .arg(now)
            .execute_on(&mut *tx)
            .await?;
        }
        let cancelled = Self::sql(
            "UPDATE commands SET status = 'cancelled', updated_at = $2 \
             WHERE enrollment_id = $1 AND status = 'queued'",
        )
        .arg(&f.device_id)
        .arg(now)
        .execute_on(&mut *tx)
        .await?;
        if !inserted {
            // A new enrollment of a known device (after an erase, a CheckOut, a removed
            // MDM profile): it carries none of what we installed before. Whatever is
            // still declared for it is pending again (and reinstalled once it is
            // enrolled), nothing is left to remove, and its last ProfileList is stale.
            Self::sql("DELETE FROM managed_profiles WHERE device_id = $1 AND state IN ('removing', 'removal_failed')")
                .arg(&f.device_id)
                .execute_on(&mut *tx)
                .await?;
            Self::sql(
                "UPDATE managed_profiles SET state = 'pending', attempts = 0, last_attempt_at = NULL, \
                   acknowledged_at = NULL, last_error = NULL, updated_at = $2 \
                 WHERE device_id = $1",
            )
            .arg(&f.device_id)
            .arg(now)
            .execute_on(&mut *tx)
            .await?;
            Self::sql("DELETE FROM reported_profiles WHERE device_id = $1")
                .arg(&f.device_id)
                .execute_on(&mut *tx)
                .await?;
            // Results the old enrollment gave (a ProfileList answered just before) speak
            // of a device that no longer exists: they are not folded in.
            Self::sql(
                "UPDATE reconcile_commands SET processed_at = $2 \
                 WHERE device_id = $1 AND processed_at IS NULL",
            )
            .arg(&f.device_id)
            .arg(now)
            .execute_on(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(AuthenticateOutcome {
            cancelled_commands: cancelled,
            re_enrollment: !inserted,
        })
    }

    async fn token_update(&self, u: &TokenUpdateRecord, now: i64) -> StoreResult<()> {
        let mut tx = self.writer().begin().await?;
        // Upsert: a device whose Authenticate was lost still becomes reachable.
        Self::sql(
            "INSERT INTO enrollments (id, enrollment_type, state, topic, push_token, push_magic, \
             unlock_token, awaiting_configuration, created_at, authenticated_at, token_updated_at) \
             VALUES ($1, $2, 'enrolled', $3, $4, $5, $6, $7, $8, $8, $8) \
             ON CONFLICT (id) DO UPDATE SET state = 'enrolled', topic = excluded.topic, \
               push_token = excluded.push_token, push_magic = excluded.push_magic, \
               unlock_token = COALESCE(excluded.unlock_token, enrollments.unlock_token), \
               awaiting_configuration = excluded.awaiting_configuration, \
               token_updated_at = excluded.token_updated_at, checked_out_at = NULL",
        )
        .arg(&u.device_id)
        .arg(u.enrollment_type.as_str())
        .arg(&u.topic)
        .arg(&u.token)
        .arg(&u.push_magic)
        .arg(&u.unlock_token)
        .arg(u.awaiting_configuration)
        .arg(now)
        .execute_on(&mut *tx)
        .await?;
        // A new token may work again; commands still waiting deserve a wake-up.
        Self::sql(
            "UPDATE push_state SET token_invalid_at = NULL, attempts = 0, failures = 0, \
             next_push_at = CASE WHEN next_push_at IS NULL AND EXISTS (SELECT 1 FROM commands \
               WHERE enrollment_id = $1 AND status = 'queued') THEN $2 ELSE next_push_at END \
             WHERE enrollment_id = $1",
        )
        .arg(&u.device_id)
        .arg(now)
        .execute_on(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn check_out(&self, device_id: &str, now: i64) -> StoreResult<bool> {
        let mut tx = self.writer().begin().await?;
        let found = Self::sql(
            "UPDATE enrollments SET state = 'checked_out', checked_out_at = $2, \
             push_token = NULL, push_magic = NULL WHERE id = $1",
        )
        .arg(device_id)
        .arg(now)
        .execute_on(&mut *tx)
        .await?
            > 0;
        // Nothing can be delivered to an unenrolled device; keep the rows as history.
        Self::sql(
            "UPDATE commands SET status = 'cancelled', updated_at = $2 \
             WHERE enrollment_id = $1 AND status = 'queued'",
        )
        .arg(device_id)
        .arg(now)
        .execute_on(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(found)
    }

    async fn set_bootstrap_token(&self, device_id: &str, token: Option<&[u8]>) -> StoreResult<()> {
        let found = Self::sql("UPDATE enrollments SET bootstrap_token = $2 WHERE id = $1")
            .arg(device_id)
            .arg(token)
            .execute_on(&mut *self.writer().acquire().await?)
            .await?;
        if found == 0 {
            return Err(StoreError::NotFound(format!("no enrollment {device_id}")));
        }
        Ok(())
    }

    async fn bootstrap_token(&self, device_id: &str) -> StoreResult<Option<Vec<u8>>> {
        let row = Self::sql("SELECT bootstrap_token FROM enrollments WHERE id = $1")
            .arg(device_id)
            .fetch_optional_on(&mut *self.reader().await?)
            .await?;
        Ok(match row {
            Some(row) => row.col("bootstrap_token")?,
            None => None,
        })
    }

    async fn enrollment(&self, device_id: &str) -> StoreResult<Option<Enrollment>> {
        let row = Self::sql(&format!(
            "SELECT {ENROLLMENT_COLUMNS} FROM enrollments WHERE id = $1"
        ))
        .arg(device_id)
        .fetch_optional_on(&mut *self.reader().await?)
        .await?;
        Ok(row.as_ref().map(enrollment_from_row).transpose()?)
    }

    async fn find_enrollment(&self, key: &str) -> StoreResult<Option<Enrollment>> {
        if let Some(found) = self.enrollment(key).await? {
            return Ok(Some(found));
        }
        // Serial numbers can repeat across re-enrollments; the latest wins.
        let row = Self::sql(&format!(
            "SELECT {ENROLLMENT_COLUMNS} FROM enrollments WHERE serial_number = $1 \
             ORDER BY authenticated_at DESC LIMIT 1"
        ))
        .arg(key)
        .fetch_optional_on(&mut *self.reader().await?)
        .await?;
        Ok(row.as_ref().map(enrollment_from_row).transpose()?)
    }

    async fn devices_seen_since(
        &self,
        since: i64,
        after: Option<(i64, String)>,
        limit: i64,
    ) -> StoreResult<Vec<(i64, String)>> {
        let (at, id) = after.unwrap_or((since, String::new()));
        let rows = Self::sql(
            "SELECT last_seen_at, id FROM enrollments \
             WHERE last_seen_at >= $1 AND (last_seen_at > $2 OR (last_seen_at = $2 AND id > $3)) \
             ORDER BY last_seen_at, id LIMIT $4",
        )
        .arg(since)
        .arg(at)
        .arg(id)
        .arg(limit)
        .fetch_all_on(&mut *self.reader().await?)
        .await?;
        rows.iter()
            .map(|row| Ok((row.col("last_seen_at")?, row.col("id")?)))
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(Into::into)
    }

    async fn list_enrollments(
        &self,
        after: Option<&str>,
        limit: i64,
    ) -> StoreResult<Vec<Enrollment>> {
        let rows = Self::sql(&format!(
            "SELECT {ENROLLMENT_COLUMNS} FROM enrollments WHERE id > $1 ORDER BY id LIMIT $2"
        ))
        .arg(after.unwrap_or(""))
        .arg(limit)
        .fetch_all_on(&mut *self.reader().await?)
        .await?;
        Ok(rows
            .iter()
            .map(enrollment_from_row)
            .collect::<Result<_, _>>()?)
    }

    async fn record_last_seen(&self, seen: &[(String, i64)]) -> StoreResult<()> {
        if seen.is_empty() {
            return Ok(());
        }
        let mut tx = self.writer().begin().await?;
        for (device_id, at) in seen {
            Self::sql(
                "UPDATE enrollments SET last_seen_at = $2 \
                 WHERE id = $1 AND (last_seen_at IS NULL OR last_seen_at < $2)",
            )
            .arg(device_id)
            .arg(*at)
            .execute_on(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

#[async_trait]
impl<B: Backend> QueueStore for B {
    async fn enqueue(&self, device_id: &str, c: &NewCommand, now: i64) -> StoreResult<()> {
        let mut tx = self.writer().begin().await?;
        // Insert only for a device that exists and is not checked out, in one statement.
        let inserted = Self::sql(
            "INSERT INTO commands (uuid, enrollment_id, request_type, command, status, created_at, updated_at) \
             SELECT $1, id, $3, $4, 'queued', $5, $5 FROM enrollments WHERE id = $2 AND state <> 'checked_out' \
             ON CONFLICT (uuid) DO NOTHING",
        )
        .arg(&c.uuid)
        .arg(device_id)
        .arg(&c.request_type)
        .arg(&c.command)
        .arg(now)
        .execute_on(&mut *tx)
        .await?;
        if inserted == 1 {
            tx.commit().await?;
            return Ok(());
        }
        let state: Option<String> = Self::sql("SELECT state FROM enrollments WHERE id = $1")
            .arg(device_id)
            .fetch_optional_on(&mut *tx)
            .await?
            .map(|row| row.col("state"))
            .transpose()?;
        tx.rollback().await?;
        Err(match state.as_deref() {
            None => StoreError::NotFound(format!("no device {device_id}")),
            Some("checked_out") => StoreError::Conflict(format!(
                "device {device_id} is checked out (unenrolled); it can receive commands again after it re-enrolls"
            )),
            Some(_) => StoreError::Conflict(format!("command UUID {} is already in use", c.uuid)),
        })
    }

    async fn next_command(
        &self,
        device_id: &str,
        skip: &[String],
        now: i64,
    ) -> StoreResult<Option<QueuedCommand>> {
        let mut tx = self.writer().begin().await?;
        let next = next_command_in(&mut tx, device_id, skip, now).await?;
        tx.commit().await?;
        Ok(next)
    }

    async fn record_report(
        &self,
        device_id: &str,
        r: &ReportRecord<'_>,
        now: i64,
    ) -> StoreResult<ReportOutcome> {
        let mut tx = self.writer().begin().await?;
        let outcome = record_report_in(&mut tx, device_id, r, now).await?;
        tx.commit().await?;
        Ok(outcome)
    }

    async fn exchange(
        &self,
        device_id: &str,
        report: Option<&ReportRecord<'_>>,
        skip: &[String],
        now: i64,
    ) -> StoreResult<(Option<ReportOutcome>, Option<QueuedCommand>)> {
        // Exchanges of many devices arriving together share one transaction.
        let exchange = PendingExchange {
            device_id: device_id.to_string(),
            report: report.map(|r| (r.command_uuid.to_string(), r.status, r.raw.to_vec())),
            skip: skip.to_vec(),
            now,
        };
        match self
            .writes()
            .submit(Write::Exchange(exchange))
            .await?
        {
            Written::Exchange(done) => Ok(done),
            other => Err(wrong_kind(other)),
        }
    }

    async fn commands(&self, device_id: &str, limit: i64) -> StoreResult<Vec<CommandRecord>> {
        let rows = Self::sql(&format!(
            "SELECT {COMMAND_COLUMNS} FROM commands c LEFT JOIN command_results r ON r.command_uuid = c.uuid \
             WHERE c.enrollment_id = $1 ORDER BY c.seq DESC LIMIT $2"
        ))
        .arg(device_id)
        .arg(limit)
        .fetch_all_on(&mut *self.reader().await?)
        .await?;
        Ok(rows
            .iter()
            .map(command_from_row)
            .collect::<Result<_, _>>()?)
    }

    async fn queue_depth(&self) -> StoreResult<i64> {
        let row = Self::sql("SELECT COUNT(*) AS n FROM commands WHERE status = 'queued'")
            .fetch_one_on(&mut *self.reader().await?)
            .await?;
        Ok(row.col("n")?)
    }
}

#[async_trait]
impl<B: Backend> IdentityStore for B {
    async fn record_certificate(
        &self,
        c: &CertificateRecord,
        challenge_hash: Option<&str>,
        now: i64,
    ) -> StoreResult<SecretUse> {
        let mut tx = self.writer().begin().await?;
        if let Some(hash) = challenge_hash {
            let used = Self::sql(
                "UPDATE enrollment_secrets SET used_at = $3 \
                 WHERE hash = $1 AND kind = $2 AND used_at IS NULL AND expires_at > $3",
            )
            .arg(hash)
            .arg(SecretKind::ScepChallenge.as_str())
            .arg(now)
            .execute_on(&mut *tx)
            .await?;
            if used != 1 {
                tx.rollback().await?;
                return secret_refusal(self, SecretKind::ScepChallenge, hash).await;
            }
        }
        Self::sql(&format!(
            "INSERT INTO device_certificates ({CERTIFICATE_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        ))
        .arg(&c.fingerprint)
        .arg(&c.serial)
        .arg(&c.subject)
        .arg(c.not_before)
        .arg(c.not_after)
        .arg(c.issued_at)
        .arg(&c.device_id)
        .arg(c.bound_at)
        .arg(c.revoked_at)
        .execute_on(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(SecretUse::Accepted)
    }

    async fn certificate_standing(
        &self,
        fingerprint: &str,
    ) -> StoreResult<Option<CertificateStanding>> {
        // Through the read queue: lookups arriving together share one statement.
        self.reads().standings.submit(fingerprint.to_string()).await
    }

    async fn device_certificates(&self, device_id: &str) -> StoreResult<Vec<CertificateRecord>> {
        let rows = Self::sql(&format!(
            "SELECT {CERTIFICATE_COLUMNS} FROM device_certificates WHERE device_id = $1 \
             ORDER BY issued_at DESC, fingerprint"
        ))
        .arg(device_id)
        .fetch_all_on(&mut *self.reader().await?)
        .await?;
        Ok(rows
            .iter()
            .map(certificate_from_row)
            .collect::<Result<_, _>>()?)
    }

    async fn revoke_device_certificates(&self, device_id: &str, now: i64) -> StoreResult<u64> {
        Ok(Self::sql(
            "UPDATE device_certificates SET revoked_at = $2 \
             WHERE device_id = $1 AND revoked_at IS NULL",
        )
        .arg(device_id)
        .arg(now)
        .execute_on(&mut *self.writer().acquire().await?)
        .await?)
    }

    async fn create_secret(
        &self,
        kind: SecretKind,
        hash: &str,
        expires_at: i64,
        now: i64,
    ) -> StoreResult<()> {
        Self::sql(
            "INSERT INTO enrollment_secrets (hash, kind, created_at, expires_at) VALUES ($1, $2, $3, $4)",
        )
        .arg(hash)
        .arg(kind.as_str())
        .arg(now)
        .arg(expires_at)
        .execute_on(&mut *self.writer().acquire().await?)
        .await?;
        // Expired secrets are dead weight; dropping a few per creation keeps the table small
        // without a background job (indexed by expiry).
        Self::sql(
            "DELETE FROM enrollment_secrets WHERE hash IN \
             (SELECT hash FROM enrollment_secrets WHERE expires_at < $1 LIMIT 100)",
        )
        .arg(now - 86_400_000)
        .execute_on(&mut *self.writer().acquire().await?)
        .await?;
        Ok(())
    }

    async fn consume_secret(
        &self,
        kind: SecretKind,
        hash: &str,
        now: i64,
    ) -> StoreResult<SecretUse> {
        // One conditional UPDATE: of concurrent attempts exactly one changes the row.
        let used = Self::sql(
            "UPDATE enrollment_secrets SET used_at = $3 \
             WHERE hash = $1 AND kind = $2 AND used_at IS NULL AND expires_at > $3",
        )
        .arg(hash)
        .arg(kind.as_str())
        .arg(now)
        .execute_on(&mut *self.writer().acquire().await?)
        .await?;
        if used == 1 {
            return Ok(SecretUse::Accepted);
        }
        secret_refusal(self, kind, hash).await
    }
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
        let mut tx = self.writer().begin().await?;
        let requests: Vec<&(String, i64)> = requests.iter().collect();
        let found = request_pushes_in(&mut tx, &requests).await?;
        tx.commit().await?;
        Ok(found)
    }

    async fn claim_due_pushes(
        &self,
        now: i64,
        claimed_until: i64,
        limit: i64,
    ) -> StoreResult<Vec<DuePush>> {
        let mut tx = self.writer().begin().await?;
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
        match self
            .writes()
            .submit(Write::PushOutcome(o.clone()))
            .await?
        {
            Written::PushOutcome => Ok(()),
            other => Err(wrong_kind(other)),
        }
    }

    async fn record_pushes(&self, outcomes: &[PushOutcome]) -> StoreResult<()> {
        let mut tx = self.writer().begin().await?;
        let outcomes: Vec<&PushOutcome> = outcomes.iter().collect();
        record_pushes_in(&mut tx, &outcomes).await?;
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
        .execute_on(&mut *self.writer().acquire().await?)
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

/// Why a one-time secret was not accepted: never seen, already used, or expired.
async fn secret_refusal<B: Backend>(
    store: &B,
    kind: SecretKind,
    hash: &str,
) -> StoreResult<SecretUse> {
    let row = B::sql("SELECT used_at FROM enrollment_secrets WHERE hash = $1 AND kind = $2")
        .arg(hash)
        .arg(kind.as_str())
        .fetch_optional_on(&mut *store.reader().await?)
        .await?;
    Ok(match row {
        None => SecretUse::Unknown,
        Some(row) if row.col::<Option<i64>>("used_at")?.is_some() => SecretUse::AlreadyUsed,
        Some(_) => SecretUse::Expired,
    })
}

/// Answers a batch of the standing read queue (`Store::certificate_standing` for
/// each fingerprint asked) with one statement per chunk.
pub(crate) fn standing_flush<B: Backend>(
    source: B::ReadSource,
) -> crate::store::group_commit::Flush<String, Option<CertificateStanding>> {
    std::sync::Arc::new(move |asked: Vec<String>| {
        let source = source.clone();
        Box::pin(async move {
            let found = async {
                let mut conn = B::read_on(&source).await?;
                standings_of::<B::Db>(&mut conn, &asked).await
            }
            .await;
            answer_each(&asked, found.map_err(Into::into), |found, key| {
                found.get(key).cloned()
            })
        })
    })
}

async fn standings_of<D: Db>(
    conn: &mut <D as sqlx::Database>::Connection,
    asked: &[String],
) -> Result<std::collections::HashMap<String, CertificateStanding>, sqlx::Error> {
    let marks = Marks::of::<D>();
    let mut found = std::collections::HashMap::new();
    for chunk in chunk_rows(asked, 1) {
        // The enrollment joined is the certificate's own (the device it was bound
        // to at Authenticate), so the standing is known before the body is read.
        let sql = format!(
            "SELECT c.fingerprint, c.serial, c.subject, c.not_before, c.not_after, c.issued_at, \
               c.device_id, c.bound_at, c.revoked_at, \
               e.cert_fingerprint AS enrollment_fingerprint, e.state AS enrollment_state \
             FROM device_certificates c \
             LEFT JOIN enrollments e ON e.id = c.device_id \
             WHERE c.fingerprint IN ({})",
            marks.list(1, chunk.len())
        );
        let mut query = D::sql(&sql).persistent(false);
        for fingerprint in chunk {
            query = query.arg(fingerprint);
        }
        for row in query.fetch_all_on(&mut *conn).await? {
            let state: Option<String> = row.col("enrollment_state")?;
            let certificate = certificate_from_row(&row)?;
            found.insert(
                certificate.fingerprint.clone(),
                CertificateStanding {
                    certificate,
                    enrollment_fingerprint: row.col("enrollment_fingerprint")?,
                    enrollment_state: state
                        .as_deref()
                        .map(EnrollmentState::parse)
                        .transpose()
                        .map_err(known_error)?,
                },
            );
        }
    }
    Ok(found)
}

/// Writes a batch from the write queue in one transaction (see `sql::Write`). Should
/// that fail, each write is written on its own, so that one device's failure is that
/// device's alone.
pub(crate) fn write_flush<B: Backend>(
    writer: sqlx::Pool<B::Db>,
) -> crate::store::group_commit::Flush<Write, Written> {
    std::sync::Arc::new(move |batch: Vec<Write>| {
        let writer = writer.clone();
        Box::pin(async move {
            match write_batch::<B>(&writer, &batch).await {
                Ok(done) => done.into_iter().map(Ok).collect(),
                Err(e) if batch.len() == 1 => vec![Err(e)],
                Err(_) => {
                    let mut results = Vec::with_capacity(batch.len());
                    for one in batch {
                        results.push(
                            write_batch::<B>(&writer, std::slice::from_ref(&one))
                                .await
                                .map(|mut done| done.remove(0)),
                        );
                    }
                    results
                }
            }
        })
    })
}

/// One transaction for a batch of writes of every kind: plans first, then command
/// exchanges (a device fetching commands gets those just planned), then push
/// requests and outcomes. Writes submitted together are concurrent, so any order is
/// one they could have had; a device's writes of one kind keep theirs.
async fn write_batch<B: Backend>(
    writer: &sqlx::Pool<B::Db>,
    batch: &[Write],
) -> StoreResult<Vec<Written>> {
    use crate::store::sql::{Write, Written};
    let mut plans = Vec::new();
    let mut exchanges = Vec::new();
    let mut requests = Vec::new();
    let mut outcomes = Vec::new();
    for write in batch {
        match write {
            Write::Plan(p) => plans.push(p),
            Write::Exchange(x) => exchanges.push(x),
            Write::PushRequest(request) => requests.push(request),
            Write::PushOutcome(o) => outcomes.push(o),
        }
    }
    let mut tx = writer.begin().await?;
    let mut queued = super::reconcile::apply_plans_in(&mut tx, &plans)
        .await?
        .into_iter();
    let mut exchanged = vec![(None, None); exchanges.len()];
    for round in rounds_by_device(&exchanges, |x| &x.device_id) {
        exchange_round(&mut tx, &exchanges, &round, &mut exchanged).await?;
    }
    let mut exchanged = exchanged.into_iter();
    let mut found = request_pushes_in(&mut tx, &requests).await?.into_iter();
    record_pushes_in(&mut tx, &outcomes).await?;
    tx.commit().await?;
    // Answers in the order of the batch.
    Ok(batch
        .iter()
        .map(|write| match write {
            Write::Plan(_) => Written::Plan(queued.next().unwrap_or_default()),
            Write::Exchange(_) => Written::Exchange(exchanged.next().unwrap_or_default()),
            Write::PushRequest(_) => Written::PushRequest(found.next().unwrap_or_default()),
            Write::PushOutcome(_) => Written::PushOutcome,
        })
        .collect())
}

/// Push requests (see `Store::request_pushes`) inside the caller's transaction.
async fn request_pushes_in<D: Db>(
    tx: &mut sqlx::Transaction<'_, D>,
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
            let mut query = D::sql(&sql).persistent(false);
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
async fn record_pushes_in<D: Db>(
    tx: &mut sqlx::Transaction<'_, D>,
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
            let mut query = D::sql(&sql).persistent(false);
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

/// The exchanges `round` of distinct devices, with a few statements for all of them
/// (each statement is a round trip to the database): results first, then each
/// device's next command. NotNow answers, unknown commands and devices skipping
/// deferred commands take the one-by-one path.
async fn exchange_round<D: Db>(
    tx: &mut sqlx::Transaction<'_, D>,
    batch: &[&PendingExchange],
    round: &[usize],
    done: &mut [ExchangeDone],
) -> StoreResult<()> {
    use chunk_rows;
    let marks = Marks::of::<D>();
    let now = round
        .iter()
        .map(|&i| batch[i].now)
        .max()
        .unwrap_or_default();
    let mut terminal = Vec::new();
    for &i in round {
        let x = &batch[i];
        let Some(report) = x.report() else { continue };
        match CommandStatus::from_report(report.status) {
            Some(status) => terminal.push((i, report, status)),
            None => done[i].0 = Some(record_report_in(tx, &x.device_id, &report, x.now).await?),
        }
    }
    let answers: Vec<_> = terminal
        .iter()
        .map(|(i, report, status)| (batch[*i].device_id.as_str(), report, *status, batch[*i].now))
        .collect();
    let outcomes = record_results_in(tx, &answers).await?;
    for ((i, _, _), outcome) in terminal.iter().zip(outcomes) {
        done[*i].0 = Some(outcome);
    }
    // Each device's next command, marked sent.
    let mut fetching = Vec::new();
    for &i in round {
        let x = &batch[i];
        if x.skip.is_empty() {
            fetching.push(i);
        } else {
            done[i].1 = next_command_in(tx, &x.device_id, &x.skip, x.now).await?;
        }
    }
    let mut next: std::collections::HashMap<String, QueuedCommand> =
        std::collections::HashMap::new();
    for chunk in chunk_rows(&fetching, 1) {
        let sql = format!(
            "UPDATE commands SET sent_count = sent_count + 1, last_sent_at = {} \
             WHERE seq IN (SELECT (SELECT c.seq FROM commands c \
                 WHERE c.enrollment_id = v.column1 AND c.status = 'queued' ORDER BY c.seq LIMIT 1) \
               FROM (VALUES {}) AS v) \
             RETURNING enrollment_id, uuid, request_type, command",
            marks.one(1),
            marks.rows(2, chunk.len(), 1)
        );
        let mut query = D::sql(&sql).persistent(false).arg(now);
        for &i in chunk {
            query = query.arg(&batch[i].device_id);
        }
        for row in query.fetch_all_on(&mut **tx).await? {
            next.insert(
                row.col("enrollment_id")?,
                QueuedCommand {
                    uuid: row.col("uuid")?,
                    request_type: row.col("request_type")?,
                    command: row.col("command")?,
                },
            );
        }
    }
    let mut drained = Vec::new();
    for &i in &fetching {
        done[i].1 = next.remove(&batch[i].device_id);
        if done[i].1.is_none() {
            drained.push(batch[i].device_id.as_str());
        }
    }
    queue_drained_in(tx, &drained).await?;
    Ok(())
}

/// Final answers (Acknowledged, Error, CommandFormatError) of distinct devices, with
/// a few statements for all of them: each command that is the answering device's
/// own and still open is finished and its raw result kept; the others are told apart
/// as already finished or unknown. One outcome per answer, in order.
async fn record_results_in<D: Db>(
    tx: &mut sqlx::Transaction<'_, D>,
    answers: &[(&str, &ReportRecord<'_>, CommandStatus, i64)],
) -> StoreResult<Vec<ReportOutcome>> {
    use chunk_rows;
    let marks = Marks::of::<D>();
    // A cancelled command may still have run on the device: its result counts.
    let mut finished = std::collections::HashSet::new();
    for chunk in chunk_rows(answers, 4) {
        let sql = format!(
            "UPDATE commands SET status = v.column3, completed_at = v.column4, updated_at = v.column4 \
             FROM (VALUES {}) AS v \
             WHERE commands.uuid = v.column1 AND commands.enrollment_id = v.column2 \
               AND commands.status IN ('queued', 'cancelled') \
             RETURNING uuid, enrollment_id",
            marks.rows(1, chunk.len(), 4)
        );
        let mut query = D::sql(&sql).persistent(false);
        for (device_id, report, status, now) in chunk {
            query = query
                .arg(report.command_uuid)
                .arg(*device_id)
                .arg(status.as_str())
                .arg(*now);
        }
        for row in query.fetch_all_on(&mut **tx).await? {
            finished.insert((
                row.col::<String>("uuid")?,
                row.col::<String>("enrollment_id")?,
            ));
        }
    }
    let mut outcomes = Vec::with_capacity(answers.len());
    let mut results = Vec::with_capacity(answers.len());
    for answer in answers {
        let (device_id, report, _, _) = answer;
        if finished.contains(&(report.command_uuid.to_string(), device_id.to_string())) {
            outcomes.push(ReportOutcome::Dequeued);
            results.push(answer);
        } else {
            outcomes.push(finished_or_unknown(tx, device_id, report.command_uuid).await?);
        }
    }
    for chunk in chunk_rows(&results, 5) {
        let sql = format!(
            "INSERT INTO command_results (command_uuid, enrollment_id, status, raw, received_at) \
             VALUES {} ON CONFLICT (command_uuid) DO NOTHING",
            marks.rows(1, chunk.len(), 5)
        );
        let mut query = D::sql(&sql).persistent(false);
        for (device_id, report, status, now) in chunk {
            query = query
                .arg(report.command_uuid)
                .arg(*device_id)
                .arg(status.as_str())
                .arg(report.raw)
                .arg(*now);
        }
        query.execute_on(&mut **tx).await?;
    }
    Ok(outcomes)
}

/// Devices that drained their queue: their push backoff starts over, and a push
/// still being sent no longer covers new work (the device answered it already, often
/// before APNs acknowledged it). Conditional, so the common case changes no row.
async fn queue_drained_in<D: Db>(
    tx: &mut sqlx::Transaction<'_, D>,
    devices: &[&str],
) -> StoreResult<()> {
    let marks = Marks::of::<D>();
    for chunk in chunk_rows(devices, 1) {
        let sql = format!(
            "UPDATE push_state SET attempts = 0, claimed_until = NULL WHERE enrollment_id IN ({}) \
             AND (attempts > 0 OR claimed_until IS NOT NULL)",
            marks.list(1, chunk.len())
        );
        let mut query = D::sql(&sql).persistent(false);
        for device_id in chunk {
            query = query.arg(*device_id);
        }
        query.execute_on(&mut **tx).await?;
    }
    Ok(())
}

/// `next_command` inside a transaction.
async fn next_command_in<D: Db>(
    tx: &mut sqlx::Transaction<'_, D>,
    device_id: &str,
    skip: &[String],
    now: i64,
) -> StoreResult<Option<QueuedCommand>> {
    let skip_clause = if skip.is_empty() {
        String::new()
    } else {
        format!(" AND uuid NOT IN ({})", placeholders(3, skip.len()))
    };
    let sql = format!(
        "UPDATE commands SET sent_count = sent_count + 1, last_sent_at = $2 \
         WHERE seq = (SELECT seq FROM commands WHERE enrollment_id = $1 AND status = 'queued'{skip_clause} \
                      ORDER BY seq LIMIT 1) \
         RETURNING uuid, request_type, command"
    );
    let mut query = D::sql(&sql).arg(device_id).arg(now);
    for uuid in skip {
        query = query.arg(uuid);
    }
    let row = query.fetch_optional_on(&mut **tx).await?;
    // Not when it only deferred commands (NotNow): those keep backing off instead of
    // being pushed again every minute.
    if row.is_none() && skip.is_empty() {
        queue_drained_in(tx, &[device_id]).await?;
    }
    Ok(match row {
        Some(row) => Some(QueuedCommand {
            uuid: row.col("uuid")?,
            request_type: row.col("request_type")?,
            command: row.col("command")?,
        }),
        None => None,
    })
}

/// `record_report` inside a transaction.
async fn record_report_in<D: Db>(
    tx: &mut sqlx::Transaction<'_, D>,
    device_id: &str,
    r: &ReportRecord<'_>,
    now: i64,
) -> StoreResult<ReportOutcome> {
    let Some(terminal) = CommandStatus::from_report(r.status) else {
        let updated = D::sql(
            "UPDATE commands SET not_now_count = not_now_count + 1, last_not_now_at = $3, updated_at = $3 \
             WHERE uuid = $1 AND enrollment_id = $2 AND status = 'queued'",
        )
        .arg(r.command_uuid)
        .arg(device_id)
        .arg(now)
        .execute_on(&mut **tx)
        .await?;
        if updated == 1 {
            return Ok(ReportOutcome::StillQueued);
        }
        return finished_or_unknown(tx, device_id, r.command_uuid).await;
    };
    let outcomes = record_results_in(tx, &[(device_id, r, terminal, now)]).await?;
    Ok(outcomes[0])
}

async fn finished_or_unknown<D: Db>(
    tx: &mut sqlx::Transaction<'_, D>,
    device_id: &str,
    uuid: &str,
) -> StoreResult<ReportOutcome> {
    let exists = D::sql("SELECT 1 AS one FROM commands WHERE uuid = $1 AND enrollment_id = $2")
        .arg(uuid)
        .arg(device_id)
        .fetch_optional_on(&mut **tx)
        .await?
        .is_some();
    Ok(if exists {
        ReportOutcome::AlreadyFinished
    } else {
        ReportOutcome::Unknown
    })
}

async fn run_migrations<B: Backend>(store: &B) -> StoreResult<()> {
    let mut tx = store.writer().begin().await?;
    if let Some(lock) = B::MIGRATION_LOCK {
        B::sql(lock).execute_on(&mut *tx).await?;
    }
    B::sql(
        "CREATE TABLE IF NOT EXISTS pomona_schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
    )
    .execute_on(&mut *tx)
    .await?;
    let applied: Vec<i64> = B::sql("SELECT version FROM pomona_schema_migrations")
        .fetch_all_on(&mut *tx)
        .await?
        .iter()
        .map(|row| row.col("version"))
        .collect::<Result<_, _>>()?;
    for &(version, sqlite_sql, postgres_sql) in crate::store::migrations::MIGRATIONS {
        if applied.contains(&version) {
            continue;
        }
        let sql: &'static str = if B::NAME == "sqlite" {
            sqlite_sql
        } else {
            postgres_sql
        };
        // One statement at a time: PostgreSQL prepares each separately.
        for statement in sql.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            B::sql(statement).execute_on(&mut *tx).await?;
        }
        B::sql("INSERT INTO pomona_schema_migrations (version, applied_at) VALUES ($1, $2)")
            .arg(version)
            .arg(crate::vocab::clock::now_millis())
            .execute_on(&mut *tx)
            .await?;
        tracing::info!(version, backend = B::NAME, "applied schema migration");
    }
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod batch_tests {
    use super::*;

    #[test]
    fn postgres_numbers_every_value_and_sqlite_marks_them_in_order() {
        let pg = Marks::of::<sqlx::Postgres>();
        assert_eq!(pg.rows(1, 2, 3), "($1, $2, $3), ($4, $5, $6)");
        assert_eq!(pg.rows(2, 1, 1), "($2)");
        assert_eq!(pg.list(3, 3), "$3, $4, $5");
        let sqlite = Marks::of::<sqlx::Sqlite>();
        assert_eq!(sqlite.rows(1, 2, 2), "(?, ?), (?, ?)");
        assert_eq!(sqlite.list(2, 2), "?, ?");
        assert_eq!(sqlite.one(7), "?");
    }

    #[test]
    fn chunks_hold_whole_rows_within_the_bound_value_limit() {
        let rows: Vec<u32> = (0..1000).collect();
        let chunks: Vec<_> = chunk_rows(&rows, 13).collect();
        assert!(chunks.iter().all(|c| c.len() * 13 <= MAX_BOUND_VALUES));
        assert_eq!(chunks.iter().map(|c| c.len()).sum::<usize>(), 1000);
    }

    #[test]
    fn rounds_hold_each_device_once_and_keep_a_devices_items_in_order() {
        let items: Vec<String> = ["b", "a", "b", "c", "b", "a"]
            .into_iter()
            .map(String::from)
            .collect();
        let rounds = rounds_by_device(&items, |d| d);
        assert_eq!(rounds, vec![vec![1, 0, 3], vec![5, 2], vec![4]]);
    }
}
