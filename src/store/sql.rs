//! What the areas' SQL shares: column lists, the write queue (exchanges, plans, push requests
//! and outcomes arriving together, written in one transaction by `write_batch`), the read
//! queues, how bound values are marked (`Marks`) and chunked, reading persisted enums back,
//! `Store` itself (migrate, ping) and the migrations runner. Placeholders are `$n`, which both
//! databases accept, and every query uses only syntax both support (ON CONFLICT, RETURNING,
//! partial indexes).
//!
//! Transactions start with a write where they can: a SQLite transaction that reads first and
//! writes later can fail to upgrade its lock under concurrency.

use super::backend::{Backend, Finish as _};
use super::push::{record_pushes_in, request_pushes_in};
use super::queue::exchange_round;
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
    /// A step of an enrollment (see `EnrollmentWrite`).
    Enrollment(EnrollmentWrite),
}

/// The enrollment's writes, through the write queue so that devices enrolling together share
/// commits (each step alone cost a commit and an fsync; BENCHMARKS.md, enrollment). Holds
/// secrets (push and unlock tokens): no Debug.
pub(crate) enum EnrollmentWrite {
    Authenticate(Box<super::DeviceFacts>, i64),
    TokenUpdate(Box<super::TokenUpdateRecord>, i64),
    /// An issued certificate, with the hash of the SCEP challenge it uses up.
    Certificate(Box<super::CertificateRecord>, Option<String>, i64),
    /// A one-time secret used up (an enrollment token).
    ConsumeSecret(super::SecretKind, String, i64),
}

/// What an `EnrollmentWrite` returns.
#[derive(Debug)]
pub(crate) enum EnrollmentWritten {
    Authenticated(super::AuthenticateOutcome),
    TokenUpdated,
    /// Whether the secret (or the certificate's challenge) was valid and is now used.
    SecretUsed(bool),
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
    Enrollment(EnrollmentWritten),
}

/// Writes in one transaction at most. Under a fleet-wide change the queue holds more than
/// this, and a commit rewrites every page its writes touched (device-keyed, so scattered): the
/// larger the batch, the more writes share a page. 4,096 converged faster than 1,024, though
/// not in every sitting (figures: BENCHMARKS.md, "Reconciler", session 8).
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

/// Multi-row statements of up to this many rows are kept prepared on their connection. Under
/// light load a batch holds one or two writes of each kind, and preparing their statements
/// anew each time was a good part of an exchange's cost; larger ones vary too much in shape to
/// be worth a place in the cache.
const KEPT_ROWS: usize = 4;

/// Whether a multi-row statement of `rows` rows is kept prepared (see `KEPT_ROWS`).
pub(crate) fn kept_prepared(rows: usize) -> bool {
    rows <= KEPT_ROWS
}

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
    pub fn of<D: super::backend::Db>() -> Self {
        Self {
            numbered: D::NUMBERED_MARKS,
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

    async fn planning_lock(&self) -> StoreResult<Option<Box<dyn PlanningLock>>> {
        self.take_planning_lock().await
    }

    async fn sweep_lock(&self) -> StoreResult<Option<SweepGuard>> {
        self.take_sweep_lock().await
    }
}

/// Writes a batch from the write queue in one transaction (see `sql::Write`). Should
/// that fail, each write is written on its own, so that one device's failure is that
/// device's alone.
pub(crate) fn write_flush<B: Backend>(
    writer: B::WriteSource,
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
    writer: &B::WriteSource,
    batch: &[Write],
) -> StoreResult<Vec<Written>> {
    use crate::store::sql::{Write, Written};
    // Exchanges alone, where one statement can write them all: no transaction around it.
    // (Not on SQLite, where a statement may not update two tables: nothing to look at.)
    let alone: Option<Vec<&PendingExchange>> = if <B::Db as super::backend::Db>::DATA_MODIFYING_WITH
    {
        batch
            .iter()
            .map(|write| match write {
                Write::Exchange(x) => Some(x),
                _ => None,
            })
            .collect()
    } else {
        None
    };
    if let Some(exchanges) = alone.filter(|x| super::queue::exchanges_fit_one_statement(x)) {
        if let Some(mut conn) = B::autocommit_on(writer).await? {
            let done = super::queue::exchange_alone::<B::Db>(&mut conn, &exchanges).await?;
            return Ok(done.into_iter().map(Written::Exchange).collect());
        }
    }
    let mut plans = Vec::new();
    let mut exchanges = Vec::new();
    let mut requests = Vec::new();
    let mut outcomes = Vec::new();
    let mut enrollments = Vec::new();
    for write in batch {
        match write {
            Write::Plan(p) => plans.push(p),
            Write::Exchange(x) => exchanges.push(x),
            Write::PushRequest(request) => requests.push(request),
            Write::PushOutcome(o) => outcomes.push(o),
            Write::Enrollment(e) => enrollments.push(e),
        }
    }
    let mut tx = B::begin_on(writer).await?;
    // Enrollment steps first, in the order they came: an Authenticate cancels what was queued
    // for the device before, never what a plan in this batch queues for the new enrollment.
    let mut enrolled = Vec::with_capacity(enrollments.len());
    for e in enrollments {
        enrolled.push(write_enrollment::<B::Db>(&mut tx, e).await?);
    }
    let mut enrolled = enrolled.into_iter();
    let mut queued = super::reconcile::apply_plans_in::<B::Db>(&mut tx, &plans)
        .await?
        .into_iter();
    let mut exchanged = vec![(None, None); exchanges.len()];
    for round in rounds_by_device(&exchanges, |x| &x.device_id) {
        exchange_round::<B::Db>(&mut tx, &exchanges, &round, &mut exchanged).await?;
    }
    let mut exchanged = exchanged.into_iter();
    let mut found = request_pushes_in::<B::Db>(&mut tx, &requests)
        .await?
        .into_iter();
    record_pushes_in::<B::Db>(&mut tx, &outcomes).await?;
    tx.commit().await?;
    // Answers in the order of the batch.
    Ok(batch
        .iter()
        .map(|write| match write {
            Write::Plan(_) => Written::Plan(queued.next().unwrap_or_default()),
            Write::Exchange(_) => Written::Exchange(exchanged.next().unwrap_or_default()),
            Write::PushRequest(_) => Written::PushRequest(found.next().unwrap_or_default()),
            Write::PushOutcome(_) => Written::PushOutcome,
            Write::Enrollment(_) => Written::Enrollment(
                enrolled
                    .next()
                    .unwrap_or(EnrollmentWritten::SecretUsed(false)),
            ),
        })
        .collect())
}

async fn write_enrollment<D: super::backend::Db>(
    tx: &mut D::Tx,
    write: &EnrollmentWrite,
) -> Result<EnrollmentWritten, sqlx::Error> {
    use super::enrollment::{authenticate_in, token_update_in};
    use super::identity::{consume_secret_in, record_certificate_in};
    Ok(match write {
        EnrollmentWrite::Authenticate(facts, now) => {
            EnrollmentWritten::Authenticated(authenticate_in::<D>(tx, facts, *now).await?)
        }
        EnrollmentWrite::TokenUpdate(update, now) => {
            token_update_in::<D>(tx, update, *now).await?;
            EnrollmentWritten::TokenUpdated
        }
        EnrollmentWrite::Certificate(certificate, challenge, now) => EnrollmentWritten::SecretUsed(
            record_certificate_in::<D>(tx, certificate, challenge.as_deref(), *now).await?,
        ),
        EnrollmentWrite::ConsumeSecret(kind, hash, now) => {
            EnrollmentWritten::SecretUsed(consume_secret_in::<D>(tx, *kind, hash, *now).await?)
        }
    })
}

async fn run_migrations<B: Backend>(store: &B) -> StoreResult<()> {
    let mut tx = store.begin_write().await?;
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
        let pg = Marks::of::<super::backend::Postgres>();
        assert_eq!(pg.rows(1, 2, 3), "($1, $2, $3), ($4, $5, $6)");
        assert_eq!(pg.rows(2, 1, 1), "($2)");
        assert_eq!(pg.list(3, 3), "$3, $4, $5");
        let sqlite = Marks::of::<super::sqlite_conn::Sqlite>();
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
