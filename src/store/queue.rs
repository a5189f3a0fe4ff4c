//! The per-device command queue and the results devices report: enqueueing, the device's
//! exchange (record its report, hand out its next command) alone or in a batch of the write
//! queue, and reading a device's commands back. The trait and its SQL for every `Backend`.

use super::backend::{Backend, Db, Finish as _, Query, Row};
use super::sql::*;
use super::*;
use async_trait::async_trait;

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
    /// Deletes, among the next `window` commands (at most 1,000) after queue position
    /// `after_seq`, the finished ones created before `created_before` that nothing reads any
    /// more, with their results (`store::retention`). Walk from 0 until `done`.
    async fn prune_commands(
        &self,
        created_before: i64,
        after_seq: i64,
        window: i64,
    ) -> StoreResult<PruneStep>;
    /// Deletes the stored command parts (`store::command_parts`) no command refers to any
    /// more, last queued before `used_before`; how many.
    async fn prune_parts(&self, used_before: i64) -> StoreResult<u64>;
}

pub(crate) fn command_from_row(row: &Row) -> Result<CommandRecord, sqlx::Error> {
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

#[async_trait]
impl<B: Backend> QueueStore for B {
    async fn enqueue(&self, device_id: &str, c: &NewCommand, now: i64) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        let stored = command_parts::stored(c);
        command_parts::insert_parts_in::<B::Db>(&mut tx, &stored.part, now).await?;
        // Insert only for a device that exists and is not checked out, in one statement.
        let inserted = Self::sql(
            "INSERT INTO commands (uuid, enrollment_id, request_type, command, part_digest, part_at, status, created_at, updated_at) \
             SELECT $1, id, $3, $4, $6, $7, 'queued', $5, $5 FROM enrollments WHERE id = $2 AND state <> 'checked_out' \
             ON CONFLICT (uuid) DO NOTHING",
        )
        .arg(&c.uuid)
        .arg(device_id)
        .arg(&c.request_type)
        .arg(stored.command.as_ref())
        .arg(now)
        .arg(stored.part_columns().0)
        .arg(stored.part_columns().1)
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
        let mut tx = self.begin_write().await?;
        let next = next_command_in::<B::Db>(&mut tx, device_id, skip, now).await?;
        tx.commit().await?;
        Ok(next)
    }

    async fn record_report(
        &self,
        device_id: &str,
        r: &ReportRecord<'_>,
        now: i64,
    ) -> StoreResult<ReportOutcome> {
        let mut tx = self.begin_write().await?;
        let outcome = record_report_in::<B::Db>(&mut tx, device_id, r, now).await?;
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
        match self.writes().submit(Write::Exchange(exchange)).await? {
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

    async fn prune_commands(
        &self,
        created_before: i64,
        after_seq: i64,
        window: i64,
    ) -> StoreResult<PruneStep> {
        retention::prune_window(self, created_before, after_seq, window.clamp(1, 1000)).await
    }

    async fn prune_parts(&self, used_before: i64) -> StoreResult<u64> {
        let mut tx = self.begin_write().await?;
        let deleted = command_parts::prune_parts_in::<B::Db>(&mut tx, used_before).await?;
        tx.commit().await?;
        Ok(deleted)
    }
}

/// The exchanges `round` of distinct devices, with a few statements for all of them
/// (each statement is a round trip to the database): results first, then each
/// device's next command. NotNow answers, unknown commands and devices skipping
/// deferred commands take the one-by-one path.
pub(crate) async fn exchange_round<D: Db>(
    tx: &mut D::Tx,
    batch: &[&PendingExchange],
    round: &[usize],
    done: &mut [ExchangeDone],
) -> StoreResult<()> {
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
            None => {
                done[i].0 = Some(record_report_in::<D>(tx, &x.device_id, &report, x.now).await?)
            }
        }
    }
    let answers: Vec<_> = terminal
        .iter()
        .map(|(i, report, status)| (batch[*i].device_id.as_str(), report, *status, batch[*i].now))
        .collect();
    // Each device's next command, marked sent: together for the devices that skip nothing,
    // one by one (after their answers are recorded) for those skipping deferred commands.
    let (fetching, skipping): (Vec<usize>, Vec<usize>) =
        round.iter().partition(|&&i| batch[i].skip.is_empty());
    let devices: Vec<&str> = fetching
        .iter()
        .map(|&i| batch[i].device_id.as_str())
        .collect();
    // Where one statement may update several tables (PostgreSQL), the answers, the next
    // commands and the drained devices' push state are one round trip.
    let together = D::DATA_MODIFYING_WITH
        && !devices.is_empty()
        && one_statement_holds(answers.len(), devices.len());
    let (outcomes, mut next) = if together {
        exchange_statement_in::<D>(&mut **tx, &answers, &devices, now).await?
    } else {
        let outcomes = record_results_in::<D>(tx, &answers).await?;
        (outcomes, fetch_next_in::<D>(tx, &devices, now).await?)
    };
    for ((i, _, _), outcome) in terminal.iter().zip(outcomes) {
        done[*i].0 = Some(outcome);
    }
    for i in skipping {
        let x = &batch[i];
        done[i].1 = next_command_in::<D>(tx, &x.device_id, &x.skip, x.now).await?;
    }
    let mut drained = Vec::new();
    for &i in &fetching {
        done[i].1 = next.remove(&batch[i].device_id);
        if done[i].1.is_none() {
            drained.push(batch[i].device_id.as_str());
        }
    }
    if !together {
        queue_drained_in::<D>(tx, &drained).await?;
    }
    Ok(())
}

/// Whether `exchange_alone` can write this batch: distinct devices, each answering with a
/// final status or idle and skipping nothing, few enough for one statement.
pub(crate) fn exchanges_fit_one_statement(batch: &[&PendingExchange]) -> bool {
    let mut devices = std::collections::HashSet::with_capacity(batch.len());
    let mut answers = 0;
    for x in batch {
        if !x.skip.is_empty() || !devices.insert(x.device_id.as_str()) {
            return false;
        }
        if let Some((_, status, _)) = &x.report {
            if CommandStatus::from_report(*status).is_none() {
                return false;
            }
            answers += 1;
        }
    }
    !batch.is_empty() && one_statement_holds(answers, batch.len())
}

/// Whether `exchange_statement_in`'s values for this many answers and devices stay under
/// `MAX_BOUND_VALUES` (five per answer, one per device, and the time).
fn one_statement_holds(answers: usize, devices: usize) -> bool {
    answers * 5 + devices < MAX_BOUND_VALUES
}

/// A batch of exchanges (`exchanges_fit_one_statement`) written by one statement outside any
/// transaction (PostgreSQL): a statement is atomic and durable when it commits, so the
/// transaction's BEGIN and COMMIT, two round trips, are saved. What may run after it only
/// reads: the parts of the commands handed out, which never change and are not pruned while a
/// command refers to them.
pub(crate) async fn exchange_alone<D: Db>(
    conn: &mut D::Conn,
    batch: &[&PendingExchange],
) -> StoreResult<Vec<ExchangeDone>> {
    let now = batch.iter().map(|x| x.now).max().unwrap_or_default();
    let reports: Vec<_> = batch.iter().map(|x| x.report()).collect();
    let mut answers = Vec::new();
    for (x, report) in batch.iter().zip(&reports) {
        if let Some(report) = report {
            let status = CommandStatus::from_report(report.status).ok_or_else(|| {
                StoreError::Database("a NotNow answer cannot be written alone".into())
            })?;
            answers.push((x.device_id.as_str(), report, status, x.now));
        }
    }
    let devices: Vec<&str> = batch.iter().map(|x| x.device_id.as_str()).collect();
    let (outcomes, mut next) = exchange_statement_in::<D>(conn, &answers, &devices, now).await?;
    let mut outcomes = outcomes.into_iter();
    Ok(batch
        .iter()
        .map(|x| {
            let outcome = x.report.as_ref().and_then(|_| outcomes.next());
            (outcome, next.remove(&x.device_id))
        })
        .collect())
}

/// The oldest queued command of each of `devices` (distinct), marked sent, by device.
async fn fetch_next_in<D: Db>(
    tx: &mut D::Tx,
    devices: &[&str],
    now: i64,
) -> StoreResult<std::collections::HashMap<String, QueuedCommand>> {
    let marks = Marks::of::<D>();
    let mut next = std::collections::HashMap::new();
    for chunk in chunk_rows(devices, 1) {
        // One device (most batches when few devices are in flight) without the list of
        // values, which SQLite materialises in a temporary table even for one row.
        let oldest_queued = if chunk.len() == 1 {
            format!(
                "seq = (SELECT c.seq FROM commands c \
                 WHERE c.enrollment_id = {} AND c.status = 'queued' ORDER BY c.seq LIMIT 1)",
                marks.one(2)
            )
        } else {
            format!(
                "seq IN (SELECT (SELECT c.seq FROM commands c \
                 WHERE c.enrollment_id = v.column1 AND c.status = 'queued' ORDER BY c.seq LIMIT 1) \
               FROM (VALUES {}) AS v)",
                marks.rows(2, chunk.len(), 1)
            )
        };
        let sql = format!(
            "UPDATE commands SET sent_count = sent_count + 1, last_sent_at = {} \
             WHERE {oldest_queued} \
             RETURNING enrollment_id, uuid, request_type, command, {}",
            marks.one(1),
            command_parts::PART_COLUMNS
        );
        let mut query = D::sql(&sql).persistent(kept_prepared(chunk.len())).arg(now);
        for device in chunk {
            query = query.arg(*device);
        }
        let rows = query.fetch_all_on(&mut **tx).await?;
        next.extend(next_by_device::<D>(tx, &rows).await?);
    }
    Ok(next)
}

/// Queued commands read from `rows` (`enrollment_id` and the columns `Unresolved` reads),
/// completed with their shared parts, by device.
async fn next_by_device<D: Db>(
    tx: &mut D::Tx,
    rows: &[Row],
) -> StoreResult<Vec<(String, QueuedCommand)>> {
    let mut devices = Vec::with_capacity(rows.len());
    let mut read = Vec::with_capacity(rows.len());
    for row in rows {
        devices.push(row.col::<String>("enrollment_id")?);
        read.push(command_parts::Unresolved::from_row(row)?);
    }
    let commands = command_parts::resolve_in::<D>(&mut **tx, read).await?;
    Ok(devices.into_iter().zip(commands).collect())
}

/// `record_results_in`, `fetch_next_in` and `queue_drained_in` in one statement, where a
/// `WITH` may update (PostgreSQL): one round trip for a batch's answers, next commands (with
/// the parts they refer to) and drained devices. Every part of a `WITH` sees the same
/// snapshot, so the next command is chosen among the queued ones other than those this
/// statement finishes, and an answer that finished nothing is told apart as already finished
/// (its command exists) or unknown. `devices` is not empty; the caller keeps the values under
/// `MAX_BOUND_VALUES`.
async fn exchange_statement_in<D: Db>(
    conn: &mut D::Conn,
    answers: &[(&str, &ReportRecord<'_>, CommandStatus, i64)],
    devices: &[&str],
    now: i64,
) -> StoreResult<(
    Vec<ReportOutcome>,
    std::collections::HashMap<String, QueuedCommand>,
)> {
    let marks = Marks::of::<D>();
    let first_device = 1 + answers.len() * 5;
    let devices_cte = format!(
        "d (device) AS (VALUES {})",
        marks.rows(first_device, devices.len(), 1)
    );
    let (start, not_done, answer_rows) = if answers.is_empty() {
        (format!("WITH {devices_cte}"), "", String::new())
    } else {
        (
            format!(
                "{}, {devices_cte}",
                finish_and_keep_with(&marks.rows(1, answers.len(), 5))
            ),
            " AND c.seq NOT IN (SELECT seq FROM done)",
            "SELECT 'answer' AS kind, v.uuid, v.device AS enrollment_id, f.finished, \
               f.finished OR EXISTS (SELECT 1 FROM commands c \
                 WHERE c.uuid = v.uuid AND c.enrollment_id = v.device) AS known, \
               NULL AS request_type, NULL::bytea AS command, NULL AS part_digest, \
               NULL::bigint AS part_at, NULL::bytea AS part_body \
             FROM v CROSS JOIN LATERAL (SELECT EXISTS (SELECT 1 FROM done \
               WHERE done.uuid = v.uuid AND done.enrollment_id = v.device) AS finished) f \
             UNION ALL "
                .to_string(),
        )
    };
    let sql = format!(
        "{start}, \
         handed AS (UPDATE commands SET sent_count = sent_count + 1, last_sent_at = {} \
             WHERE seq IN (SELECT (SELECT c.seq FROM commands c \
                 WHERE c.enrollment_id = d.device AND c.status = 'queued'{not_done} \
                 ORDER BY c.seq LIMIT 1) FROM d) \
             RETURNING enrollment_id, uuid, request_type, command, {parts}), \
         drained AS (UPDATE push_state SET attempts = 0, claimed_until = NULL \
             WHERE enrollment_id IN (SELECT device FROM d EXCEPT SELECT enrollment_id FROM handed) \
               AND (attempts > 0 OR claimed_until IS NOT NULL)) \
         {answer_rows}SELECT 'next' AS kind, h.uuid, h.enrollment_id, FALSE AS finished, TRUE AS known, \
           h.request_type, h.command, h.part_digest, h.part_at, {body} \
         FROM handed h LEFT JOIN command_parts p ON p.digest = h.part_digest",
        marks.one(first_device + devices.len()),
        parts = command_parts::PART_COLUMNS,
        body = command_parts::PART_BODY,
    );
    let mut query = D::sql(&sql).persistent(kept_prepared(answers.len() + devices.len()));
    for answer in answers {
        query = bind_answer(query, answer).arg(answer.1.raw);
    }
    for device in devices {
        query = query.arg(*device);
    }
    let rows = query.arg(now).fetch_all_on(&mut *conn).await?;
    // By device: a statement holds each device once.
    let mut answered: std::collections::HashMap<String, (String, ReportOutcome)> =
        std::collections::HashMap::with_capacity(answers.len());
    let (mut next_devices, mut next_read) = (Vec::new(), Vec::new());
    for row in rows {
        let device: String = row.col("enrollment_id")?;
        if row.col::<String>("kind")? == "answer" {
            let outcome = match (row.col::<bool>("finished")?, row.col::<bool>("known")?) {
                (true, _) => ReportOutcome::Dequeued,
                (false, true) => ReportOutcome::AlreadyFinished,
                (false, false) => ReportOutcome::Unknown,
            };
            answered.insert(device, (row.col("uuid")?, outcome));
        } else {
            next_devices.push(device);
            next_read.push(command_parts::Unresolved::with_body_from_row(&row)?);
        }
    }
    let outcomes = answers
        .iter()
        .map(|(device_id, report, _, _)| {
            answered
                .get(*device_id)
                .filter(|(uuid, _)| uuid == report.command_uuid)
                .map(|(_, outcome)| *outcome)
                .ok_or_else(|| {
                    StoreError::Database(format!(
                        "the answer to command {} of device {device_id} was not accounted for",
                        report.command_uuid
                    ))
                })
        })
        .collect::<StoreResult<Vec<_>>>()?;
    let commands = command_parts::resolve_in::<D>(conn, next_read).await?;
    Ok((outcomes, next_devices.into_iter().zip(commands).collect()))
}

/// Final answers (Acknowledged, Error, CommandFormatError) of distinct devices, with
/// a few statements for all of them: each command that is the answering device's
/// own and still open is finished and its raw result kept; the others are told apart
/// as already finished or unknown. One outcome per answer, in order.
pub(crate) async fn record_results_in<D: Db>(
    tx: &mut D::Tx,
    answers: &[(&str, &ReportRecord<'_>, CommandStatus, i64)],
) -> StoreResult<Vec<ReportOutcome>> {
    if D::DATA_MODIFYING_WITH {
        return record_results_together_in::<D>(tx, answers).await;
    }
    let marks = Marks::of::<D>();
    // A cancelled command may still have run on the device: its result counts.
    let mut finished = std::collections::HashSet::new();
    for chunk in chunk_rows(answers, 4) {
        let sql;
        let query = if let [(device_id, report, status, now)] = chunk {
            // One answer without `FROM (VALUES …)`, which SQLite materialises in a temporary
            // table even for one row. Its values in the order they appear.
            const ONE: &str = "UPDATE commands SET status = ?, completed_at = ?, updated_at = ? \
                 WHERE uuid = ? AND enrollment_id = ? AND status IN ('queued', 'cancelled') \
                 RETURNING uuid, enrollment_id";
            const ONE_NUMBERED: &str =
                "UPDATE commands SET status = $1, completed_at = $2, updated_at = $3 \
                 WHERE uuid = $4 AND enrollment_id = $5 AND status IN ('queued', 'cancelled') \
                 RETURNING uuid, enrollment_id";
            D::sql(if D::NUMBERED_MARKS { ONE_NUMBERED } else { ONE })
                .arg(status.as_str())
                .arg(*now)
                .arg(*now)
                .arg(report.command_uuid)
                .arg(*device_id)
        } else {
            sql = format!(
                "UPDATE commands SET status = v.column3, completed_at = v.column4, updated_at = v.column4 \
                 FROM (VALUES {}) AS v \
                 WHERE commands.uuid = v.column1 AND commands.enrollment_id = v.column2 \
                   AND commands.status IN ('queued', 'cancelled') \
                 RETURNING uuid, enrollment_id",
                marks.rows(1, chunk.len(), 4)
            );
            let mut query = D::sql(&sql).persistent(kept_prepared(chunk.len()));
            for answer in chunk {
                query = bind_answer(query, answer);
            }
            query
        };
        collect_finished(query.fetch_all_on(&mut **tx).await?, &mut finished)?;
    }
    let outcomes = outcomes_in::<D>(tx, answers, &finished).await?;
    let results: Vec<_> = answers
        .iter()
        .zip(&outcomes)
        .filter(|(_, outcome)| **outcome == ReportOutcome::Dequeued)
        .map(|(answer, _)| answer)
        .collect();
    for chunk in chunk_rows(&results, 5) {
        let sql = format!(
            "INSERT INTO command_results (command_uuid, enrollment_id, status, raw, received_at) \
             VALUES {} ON CONFLICT (command_uuid) DO NOTHING",
            marks.rows(1, chunk.len(), 5)
        );
        let mut query = D::sql(&sql).persistent(kept_prepared(chunk.len()));
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

/// `record_results_in` where one statement may update and insert (PostgreSQL): each command
/// finished and its result kept in one round trip, with the same effects and outcomes.
async fn record_results_together_in<D: Db>(
    tx: &mut D::Tx,
    answers: &[(&str, &ReportRecord<'_>, CommandStatus, i64)],
) -> StoreResult<Vec<ReportOutcome>> {
    let marks = Marks::of::<D>();
    let mut finished = std::collections::HashSet::new();
    for chunk in chunk_rows(answers, 5) {
        let sql = format!(
            "{} SELECT uuid, enrollment_id FROM done",
            finish_and_keep_with(&marks.rows(1, chunk.len(), 5))
        );
        let mut query = D::sql(&sql).persistent(kept_prepared(chunk.len()));
        for answer in chunk {
            query = bind_answer(query, answer).arg(answer.1.raw);
        }
        collect_finished(query.fetch_all_on(&mut **tx).await?, &mut finished)?;
    }
    outcomes_in::<D>(tx, answers, &finished).await
}

/// The start of a PostgreSQL statement that finishes the answered commands and keeps their
/// results: `v` holds the answers (rows bound by `bind_answer` then the raw result, marked by
/// `values`), `done` the commands it finished. A cancelled command may still have run on the
/// device: its result counts.
fn finish_and_keep_with(values: &str) -> String {
    format!(
        "WITH v (uuid, device, status, at, raw) AS (VALUES {values}), \
         done AS (UPDATE commands SET status = v.status, completed_at = v.at, updated_at = v.at \
             FROM v WHERE commands.uuid = v.uuid AND commands.enrollment_id = v.device \
               AND commands.status IN ('queued', 'cancelled') \
             RETURNING commands.seq, commands.uuid, commands.enrollment_id), \
         kept AS (INSERT INTO command_results (command_uuid, enrollment_id, status, raw, received_at) \
             SELECT v.uuid, v.device, v.status, v.raw, v.at \
             FROM v JOIN done ON done.uuid = v.uuid AND done.enrollment_id = v.device \
             ON CONFLICT (command_uuid) DO NOTHING)"
    )
}

/// An answer's command, device, status and time, the values a finishing statement's row starts
/// with.
fn bind_answer<'q>(
    query: Query<'q>,
    (device_id, report, status, now): &(&'q str, &ReportRecord<'q>, CommandStatus, i64),
) -> Query<'q> {
    query
        .arg(report.command_uuid)
        .arg(*device_id)
        .arg(status.as_str())
        .arg(*now)
}

/// The (command, device) pairs a finishing statement returned.
fn collect_finished(
    rows: Vec<Row>,
    finished: &mut std::collections::HashSet<(String, String)>,
) -> Result<(), sqlx::Error> {
    for row in rows {
        finished.insert((row.col("uuid")?, row.col("enrollment_id")?));
    }
    Ok(())
}

/// One outcome per answer, in order: Dequeued for those that finished their command; the
/// others are told apart as already finished or unknown, one by one (they are rare).
async fn outcomes_in<D: Db>(
    tx: &mut D::Tx,
    answers: &[(&str, &ReportRecord<'_>, CommandStatus, i64)],
    finished: &std::collections::HashSet<(String, String)>,
) -> StoreResult<Vec<ReportOutcome>> {
    let mut outcomes = Vec::with_capacity(answers.len());
    for (device_id, report, _, _) in answers {
        if finished.contains(&(report.command_uuid.to_string(), device_id.to_string())) {
            outcomes.push(ReportOutcome::Dequeued);
        } else {
            outcomes.push(finished_or_unknown::<D>(tx, device_id, report.command_uuid).await?);
        }
    }
    Ok(outcomes)
}

/// Devices that drained their queue: their push backoff starts over, and a push
/// still being sent no longer covers new work (the device answered it already, often
/// before APNs acknowledged it). Conditional, so the common case changes no row.
pub(crate) async fn queue_drained_in<D: Db>(tx: &mut D::Tx, devices: &[&str]) -> StoreResult<()> {
    let marks = Marks::of::<D>();
    for chunk in chunk_rows(devices, 1) {
        let sql = format!(
            "UPDATE push_state SET attempts = 0, claimed_until = NULL WHERE enrollment_id IN ({}) \
             AND (attempts > 0 OR claimed_until IS NOT NULL)",
            marks.list(1, chunk.len())
        );
        let mut query = D::sql(&sql).persistent(kept_prepared(chunk.len()));
        for device_id in chunk {
            query = query.arg(*device_id);
        }
        query.execute_on(&mut **tx).await?;
    }
    Ok(())
}

/// `next_command` inside a transaction.
pub(crate) async fn next_command_in<D: Db>(
    tx: &mut D::Tx,
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
         RETURNING uuid, request_type, command, {}",
        command_parts::PART_COLUMNS
    );
    let mut query = D::sql(&sql).arg(device_id).arg(now);
    for uuid in skip {
        query = query.arg(uuid);
    }
    let row = query.fetch_optional_on(&mut **tx).await?;
    // Not when it only deferred commands (NotNow): those keep backing off instead of
    // being pushed again every minute.
    if row.is_none() && skip.is_empty() {
        queue_drained_in::<D>(tx, &[device_id]).await?;
    }
    let Some(row) = row else {
        return Ok(None);
    };
    let read = vec![command_parts::Unresolved::from_row(&row)?];
    Ok(command_parts::resolve_in::<D>(&mut **tx, read).await?.pop())
}

/// `record_report` inside a transaction.
pub(crate) async fn record_report_in<D: Db>(
    tx: &mut D::Tx,
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
        return finished_or_unknown::<D>(tx, device_id, r.command_uuid).await;
    };
    let outcomes = record_results_in::<D>(tx, &[(device_id, r, terminal, now)]).await?;
    Ok(outcomes[0])
}

pub(crate) async fn finished_or_unknown<D: Db>(
    tx: &mut D::Tx,
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
