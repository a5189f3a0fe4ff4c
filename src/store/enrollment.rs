//! Enrollments: Authenticate, TokenUpdate and CheckOut, bootstrap tokens, finding and listing
//! devices, and when each was last seen. The trait and its SQL for every `Backend`.

use super::backend::{Backend, Db, Finish as _, Row};
use super::sql::*;
use super::*;
use async_trait::async_trait;

/// Enrollments: Authenticate, TokenUpdate and CheckOut, bootstrap tokens, finding and listing
/// devices, and when each was last seen.
#[async_trait]
pub trait EnrollmentStore: Send + Sync {
    /// Authenticate: records device facts and starts a fresh enrollment. Queued commands of a
    /// previous enrollment are cancelled in the same transaction; push stays off until TokenUpdate.
    async fn authenticate(&self, facts: &DeviceFacts, now: i64)
        -> StoreResult<AuthenticateOutcome>;
    /// TokenUpdate: stores push credentials and marks the device enrolled. A missing unlock
    /// token keeps the stored one. Creates the enrollment if Authenticate was never seen.
    async fn token_update(&self, update: &TokenUpdateRecord, now: i64) -> StoreResult<()>;
    /// CheckOut: marks the device unenrolled; its history stays. False if unknown.
    async fn check_out(&self, device_id: &str, now: i64) -> StoreResult<bool>;
    async fn set_bootstrap_token(&self, device_id: &str, token: Option<&[u8]>) -> StoreResult<()>;
    async fn bootstrap_token(&self, device_id: &str) -> StoreResult<Option<Vec<u8>>>;
    async fn enrollment(&self, device_id: &str) -> StoreResult<Option<Enrollment>>;
    /// Looks a device up by UDID/EnrollmentID, then by serial number.
    async fn find_enrollment(&self, key: &str) -> StoreResult<Option<Enrollment>>;
    /// Devices last seen at or after `since` (Unix ms), ordered by (last seen, id), after the
    /// cursor `after` (keyset pagination through the last-seen index): what changed lately,
    /// without reading the fleet.
    async fn devices_seen_since(
        &self,
        since: i64,
        after: Option<(i64, String)>,
        limit: i64,
    ) -> StoreResult<Vec<(i64, String)>>;
    /// Enrollments ordered by id, starting after `after` (keyset pagination).
    async fn list_enrollments(
        &self,
        after: Option<&str>,
        limit: i64,
    ) -> StoreResult<Vec<Enrollment>>;
    /// Enrollments that match `query`, ordered by id, after `after` (keyset pagination). Each
    /// text match is a range over an index of lower-cased values (see migration 9), so a search
    /// reads the devices it finds, not the fleet; a state is a range of the (state, id) index;
    /// a platform alone narrows while walking the id index (a page of a rare platform may read
    /// the whole table).
    async fn search_enrollments(
        &self,
        query: &DeviceQuery,
        after: Option<&str>,
        limit: i64,
    ) -> StoreResult<Vec<Enrollment>>;
    /// Writes a batch of last-seen times in one transaction (never moves a time backwards).
    async fn record_last_seen(&self, seen: &[(String, i64)]) -> StoreResult<()>;
}

pub(crate) fn enrollment_from_row(row: &Row) -> Result<Enrollment, sqlx::Error> {
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

#[async_trait]
impl<B: Backend> EnrollmentStore for B {
    async fn authenticate(&self, f: &DeviceFacts, now: i64) -> StoreResult<AuthenticateOutcome> {
        // Through the write queue: enrollments arriving together share one commit.
        let write = EnrollmentWrite::Authenticate(Box::new(f.clone()), now);
        match self.writes().submit(Write::Enrollment(write)).await? {
            Written::Enrollment(EnrollmentWritten::Authenticated(outcome)) => Ok(outcome),
            other => Err(wrong_kind(other)),
        }
    }

    async fn token_update(&self, u: &TokenUpdateRecord, now: i64) -> StoreResult<()> {
        let write = EnrollmentWrite::TokenUpdate(Box::new(u.clone()), now);
        match self.writes().submit(Write::Enrollment(write)).await? {
            Written::Enrollment(EnrollmentWritten::TokenUpdated) => Ok(()),
            other => Err(wrong_kind(other)),
        }
    }

    async fn check_out(&self, device_id: &str, now: i64) -> StoreResult<bool> {
        let mut tx = self.begin_write().await?;
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
            .write_alone(self)
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

    async fn search_enrollments(
        &self,
        query: &DeviceQuery,
        after: Option<&str>,
        limit: i64,
    ) -> StoreResult<Vec<Enrollment>> {
        let search = DeviceSearch::new::<Self>(query);
        let text = format!(
            "SELECT {ENROLLMENT_COLUMNS} FROM enrollments WHERE id > $1{} ORDER BY id LIMIT ${}",
            search.conditions,
            search.values.len() + 2
        );
        let mut statement = Self::sql(&text).persistent(false).arg(after.unwrap_or(""));
        for value in &search.values {
            statement = statement.arg(value.as_str());
        }
        let rows = statement
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
        // In id order: two servers writing overlapping batches lock rows in the same order.
        // A device listed twice keeps its latest time.
        let mut seen: Vec<&(String, i64)> = seen.iter().collect();
        seen.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        seen.dedup_by(|later, kept| later.0 == kept.0);
        let marks = Marks::of::<B::Db>();
        let mut tx = self.begin_write().await?;
        // A few statements for the whole batch: one round trip each, not one per device.
        for chunk in chunk_rows(&seen, 2) {
            let sql = format!(
                "UPDATE enrollments SET last_seen_at = v.column2 FROM (VALUES {}) AS v \
                 WHERE enrollments.id = v.column1 \
                   AND (enrollments.last_seen_at IS NULL OR enrollments.last_seen_at < v.column2)",
                marks.rows(1, chunk.len(), 2)
            );
            let mut query = Self::sql(&sql).persistent(kept_prepared(chunk.len()));
            for (device_id, at) in chunk {
                query = query.arg(device_id.as_str()).arg(*at);
            }
            query.execute_on(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

/// The conditions of a device search (after `id > $1`) and their values, numbered from `$2`.
struct DeviceSearch {
    conditions: String,
    values: Vec<String>,
}

impl DeviceSearch {
    fn new<B: Backend>(query: &DeviceQuery) -> Self {
        let mut search = Self {
            conditions: String::new(),
            values: Vec::new(),
        };
        // Prefix ranges compare bytes: PostgreSQL's default collation may order by language
        // rules, under which a prefix's matches need not lie between it and its upper bound.
        let bytes = if B::NAME == "postgres" {
            " COLLATE \"C\""
        } else {
            ""
        };
        if let Some(state) = query.state {
            let n = search.value(state.as_str().to_string());
            search.conditions.push_str(&format!(" AND state = ${n}"));
        }
        if !query.product_prefixes.is_empty() {
            let ranges: Vec<String> = query
                .product_prefixes
                .iter()
                .map(|prefix| search.prefix_range("COALESCE(product_name, model)", bytes, prefix))
                .collect();
            search
                .conditions
                .push_str(&format!(" AND ({})", ranges.join(" OR ")));
        }
        if let Some(among) = &query.among {
            let marks: Vec<String> = among
                .iter()
                .map(|id| format!("${}", search.value(id.clone())))
                .collect();
            if marks.is_empty() {
                search.conditions.push_str(" AND 1 = 0");
            } else {
                search
                    .conditions
                    .push_str(&format!(" AND id IN ({})", marks.join(", ")));
            }
        }
        if let Some(text) = query
            .text
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty())
        {
            let found = match text.split_once('=') {
                Some((key, value)) => {
                    let k = search.value(key.trim().to_string());
                    let value = value.trim().to_ascii_lowercase();
                    let range = search.prefix_range("lower(value)", bytes, &value);
                    format!("SELECT device_id FROM device_labels WHERE key = ${k} AND {range}")
                }
                None => {
                    let text = text.to_ascii_lowercase();
                    let mut parts = Vec::new();
                    for column in ["lower(id)", "lower(serial_number)", "lower(device_name)"] {
                        let range = search.prefix_range(column, bytes, &text);
                        parts.push(format!("SELECT id FROM enrollments WHERE {range}"));
                    }
                    let range = search.prefix_range("lower(value)", bytes, &text);
                    parts.push(format!("SELECT device_id FROM device_labels WHERE {range}"));
                    parts.join(" UNION ")
                }
            };
            search.conditions.push_str(&format!(" AND id IN ({found})"));
        }
        search
    }

    /// Binds a value; its number.
    fn value(&mut self, value: String) -> usize {
        self.values.push(value);
        self.values.len() + 1
    }

    /// `expr >= prefix AND expr < prefix + U+10FFFF`: the values starting with `prefix`, as an
    /// index range (no value continues a prefix with a greater character).
    fn prefix_range(&mut self, expr: &str, collate: &str, prefix: &str) -> String {
        let low = self.value(prefix.to_string());
        let high = self.value(format!("{prefix}\u{10FFFF}"));
        format!("{expr}{collate} >= ${low} AND {expr}{collate} < ${high}")
    }
}

/// Authenticate inside a write transaction (see `EnrollmentStore::authenticate`).
pub(crate) async fn authenticate_in<D: Db>(
    tx: &mut D::Tx,
    f: &DeviceFacts,
    now: i64,
) -> Result<AuthenticateOutcome, sqlx::Error> {
    let inserted: bool = D::sql(
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
    .fetch_one_on(&mut **tx)
    .await?
    .col("inserted")?;
    if let Some(fingerprint) = &f.certificate_fingerprint {
        D::sql(
            "UPDATE device_certificates SET device_id = $2, bound_at = $3 WHERE fingerprint = $1",
        )
        .arg(fingerprint)
        .arg(&f.device_id)
        .arg(now)
        .execute_on(&mut **tx)
        .await?;
    }
    let cancelled = D::sql(
        "UPDATE commands SET status = 'cancelled', updated_at = $2 \
         WHERE enrollment_id = $1 AND status = 'queued'",
    )
    .arg(&f.device_id)
    .arg(now)
    .execute_on(&mut **tx)
    .await?;
    if !inserted {
        // A new enrollment of a known device (after an erase, a CheckOut, a removed
        // MDM profile): it carries none of what we installed before. Whatever is
        // still declared for it is pending again (and reinstalled once it is
        // enrolled), nothing is left to remove, and its last ProfileList is stale.
        D::sql("DELETE FROM managed_profiles WHERE device_id = $1 AND state IN ('removing', 'removal_failed')")
            .arg(&f.device_id)
            .execute_on(&mut **tx)
            .await?;
        D::sql(
            "UPDATE managed_profiles SET state = 'pending', attempts = 0, last_attempt_at = NULL, \
               acknowledged_at = NULL, last_error = NULL, updated_at = $2 \
             WHERE device_id = $1",
        )
        .arg(&f.device_id)
        .arg(now)
        .execute_on(&mut **tx)
        .await?;
        D::sql("DELETE FROM reported_profiles WHERE device_id = $1")
            .arg(&f.device_id)
            .execute_on(&mut **tx)
            .await?;
        // Results the old enrollment gave (a ProfileList answered just before) speak
        // of a device that no longer exists: they are not folded in.
        D::sql(
            "UPDATE reconcile_commands SET processed_at = $2 \
             WHERE device_id = $1 AND processed_at IS NULL",
        )
        .arg(&f.device_id)
        .arg(now)
        .execute_on(&mut **tx)
        .await?;
    }
    Ok(AuthenticateOutcome {
        cancelled_commands: cancelled,
        re_enrollment: !inserted,
    })
}

/// TokenUpdate inside a write transaction (see `EnrollmentStore::token_update`).
pub(crate) async fn token_update_in<D: Db>(
    tx: &mut D::Tx,
    u: &TokenUpdateRecord,
    now: i64,
) -> Result<(), sqlx::Error> {
    // Upsert: a device whose Authenticate was lost still becomes reachable.
    D::sql(
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
    .execute_on(&mut **tx)
    .await?;
    // A new token may work again; commands still waiting deserve a wake-up.
    D::sql(
        "UPDATE push_state SET token_invalid_at = NULL, attempts = 0, failures = 0, \
         next_push_at = CASE WHEN next_push_at IS NULL AND EXISTS (SELECT 1 FROM commands \
           WHERE enrollment_id = $1 AND status = 'queued') THEN $2 ELSE next_push_at END \
         WHERE enrollment_id = $1",
    )
    .arg(&u.device_id)
    .arg(now)
    .execute_on(&mut **tx)
    .await?;
    Ok(())
}

#[cfg(test)]
mod search_tests {
    use super::*;

    /// The plan SQLite makes for a search, on an empty database with the whole schema.
    fn sqlite_plan(query: &DeviceQuery) -> Vec<String> {
        super::super::sqlite_memory::configure();
        let db = rusqlite::Connection::open_in_memory().unwrap();
        for (_, sqlite, _) in super::super::migrations::MIGRATIONS {
            db.execute_batch(sqlite).unwrap();
        }
        let search = DeviceSearch::new::<super::super::SqliteStore>(query);
        let text = format!(
            "EXPLAIN QUERY PLAN SELECT {ENROLLMENT_COLUMNS} FROM enrollments WHERE id > $1{} \
             ORDER BY id LIMIT ${}",
            search.conditions,
            search.values.len() + 2
        );
        let mut statement = db.prepare(&text).unwrap();
        for index in 1..=statement.parameter_count() {
            statement.raw_bind_parameter(index, "x").unwrap();
        }
        let mut rows = statement.raw_query();
        let mut plan = Vec::new();
        while let Some(row) = rows.next().unwrap() {
            plan.push(row.get::<_, String>(3).unwrap());
        }
        plan
    }

    #[test]
    fn a_text_search_reads_index_ranges_and_never_scans_a_table() {
        let plan = sqlite_plan(&DeviceQuery {
            text: Some("C02".into()),
            state: Some(EnrollmentState::Enrolled),
            ..DeviceQuery::default()
        });
        for index in [
            "enrollments_by_lower_id",
            "enrollments_by_lower_serial",
            "enrollments_by_lower_name",
            "device_labels_by_value",
        ] {
            assert!(
                plan.iter().any(|step| step.contains(index)),
                "{index} unused: {plan:#?}"
            );
        }
        assert!(
            !plan.iter().any(|step| step.starts_with("SCAN ")),
            "a table scan: {plan:#?}"
        );
        let plan = sqlite_plan(&DeviceQuery {
            text: Some("team=fin".into()),
            ..DeviceQuery::default()
        });
        assert!(
            plan.iter()
                .any(|step| step.contains("device_labels_by_key_value")),
            "{plan:#?}"
        );
    }

    #[test]
    fn a_page_of_one_state_is_a_range_of_the_state_index() {
        let plan = sqlite_plan(&DeviceQuery {
            state: Some(EnrollmentState::CheckedOut),
            product_prefixes: vec!["iPad".into()],
            ..DeviceQuery::default()
        });
        assert!(
            plan.iter()
                .any(|step| step.contains("INDEX enrollments_by_state (state=? AND id>?)")),
            "{plan:#?}"
        );
    }

    #[test]
    fn a_page_without_text_walks_the_id_index() {
        let plan = sqlite_plan(&DeviceQuery {
            product_prefixes: vec!["iPhone".into()],
            ..DeviceQuery::default()
        });
        assert!(
            plan.iter()
                .any(|step| step.starts_with("SEARCH enrollments USING INDEX sqlite_autoindex")),
            "{plan:#?}"
        );
    }
}
