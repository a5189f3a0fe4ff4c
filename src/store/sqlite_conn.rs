//! SQLite connections that run the store's statements in the calling thread.
//!
//! A statement on a local file takes microseconds; handing it to another thread and waiting for
//! the answer (what sqlx does, one thread per connection) cost more than the statement itself,
//! twice per statement, and a command exchange is half a dozen statements (BENCHMARKS.md,
//! "Drain"). Here a batch of the write queue runs from its first statement to its commit
//! without waiting for anyone: a small batch in the worker thread of the request that leads it
//! (on a local disk its fsync waits a fraction of a millisecond, and the two thread hand-offs
//! it saves cost CPU on every batch), a bigger one on the commit lane's thread
//! (`group_commit`). A transaction begun on a tokio worker (an administrator's write, an
//! enrollment) runs its statements there too, but hands its commit, which waits for the disk,
//! to the commit lane: apart from a small batch's leader, no worker waits for the disk.
//! (`block_in_place` instead moved the worker to another thread at every commit: the
//! runtime grew by a thread, and an allocator heap, per commit in flight, doubling the
//! server's memory under load.)
//!
//! Statements are kept prepared per connection (`persistent`), and values are bound in text
//! order (`?`; see `sql::Marks`).

use super::backend::{Conn, Db, Finish, Query, Row, Value};
use futures::future::BoxFuture;
use rusqlite::types::{ToSqlOutput, ValueRef};
use std::borrow::Cow;
use std::sync::Arc;

/// Prepared statements kept per connection: every fixed statement of the store, with room.
const STATEMENT_CACHE: usize = 256;

/// SQLite, run in the calling thread.
pub(crate) struct Sqlite;

impl Db for Sqlite {
    const NUMBERED_MARKS: bool = false;
    const DATA_MODIFYING_WITH: bool = false;
    type Conn = SqliteConn;
    type Tx = SqliteTx;
}

/// One connection to the database file.
pub(crate) struct SqliteConn {
    connection: rusqlite::Connection,
}

/// How each connection is set up; `pragmas` in order (the writer's first: it switches the file
/// to WAL).
pub(crate) struct Settings {
    pub path: std::path::PathBuf,
    pub busy_timeout: std::time::Duration,
    pub pragmas: Vec<(&'static str, String)>,
}

impl SqliteConn {
    pub fn open(settings: &Settings) -> Result<Self, sqlx::Error> {
        super::sqlite_memory::configure();
        let connection = rusqlite::Connection::open(&settings.path).map_err(error)?;
        connection
            .busy_timeout(settings.busy_timeout)
            .map_err(error)?;
        for (name, value) in &settings.pragmas {
            // Some pragmas answer with a row (journal_mode), others with none.
            let _: Vec<Row> = run(
                &connection,
                &Query::new(&format!("PRAGMA {name} = {value}")),
            )
            .map_err(error)?;
        }
        connection.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        Ok(Self { connection })
    }

    /// Runs one statement without values, ignoring what it answers (BEGIN, COMMIT, a
    /// checkpoint); kept prepared.
    pub fn batch(&self, sql: &str) -> Result<(), sqlx::Error> {
        run_counting(&self.connection, &Query::new(sql))
            .map(drop)
            .map_err(error)
    }
}

impl Conn for SqliteConn {
    fn fetch_all<'e>(
        &'e mut self,
        query: Query<'e>,
    ) -> BoxFuture<'e, Result<Vec<Row>, sqlx::Error>> {
        let rows = run(&self.connection, &query).map_err(error);
        Box::pin(std::future::ready(rows))
    }
    fn fetch_optional<'e>(
        &'e mut self,
        query: Query<'e>,
    ) -> BoxFuture<'e, Result<Option<Row>, sqlx::Error>> {
        let row = run(&self.connection, &query)
            .map(|rows| rows.into_iter().next())
            .map_err(error);
        Box::pin(std::future::ready(row))
    }
    fn execute<'e>(&'e mut self, query: Query<'e>) -> BoxFuture<'e, Result<u64, sqlx::Error>> {
        let changed = run_counting(&self.connection, &query).map_err(error);
        Box::pin(std::future::ready(changed))
    }
}

/// A row read from SQLite: its values, owned, and the statement's column names.
pub(crate) struct SqliteRow {
    names: Arc<[String]>,
    values: Vec<rusqlite::types::Value>,
}

impl SqliteRow {
    pub fn get(&self, name: &str) -> Result<&rusqlite::types::Value, sqlx::Error> {
        self.names
            .iter()
            .position(|n| n == name)
            .map(|i| &self.values[i])
            .ok_or_else(|| sqlx::Error::ColumnNotFound(name.to_string()))
    }
}

impl rusqlite::ToSql for Value<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self {
            Value::Int(Some(n)) => ValueRef::Integer(*n),
            Value::Bool(Some(b)) => ValueRef::Integer(i64::from(*b)),
            Value::Text(Some(s)) => ValueRef::Text(s.as_bytes()),
            Value::Blob(Some(b)) => ValueRef::Blob(b),
            Value::Int(None) | Value::Bool(None) | Value::Text(None) | Value::Blob(None) => {
                ValueRef::Null
            }
        }))
    }
}

/// Prepares the query's statement (from the connection's cache when `persistent`) and hands
/// it to `work`.
fn with_statement<T>(
    connection: &rusqlite::Connection,
    query: &Query<'_>,
    work: impl FnOnce(&mut rusqlite::Statement<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    if query.persistent {
        work(&mut *connection.prepare_cached(query.sql)?)
    } else {
        work(&mut connection.prepare(query.sql)?)
    }
}

/// Runs a statement with its values; its rows.
fn run(connection: &rusqlite::Connection, query: &Query<'_>) -> rusqlite::Result<Vec<Row>> {
    with_statement(connection, query, |statement| rows_of(statement, query))
}

/// Runs a statement (reading past any rows it returns); how many rows it changed.
fn run_counting(connection: &rusqlite::Connection, query: &Query<'_>) -> rusqlite::Result<u64> {
    with_statement(connection, query, |statement| {
        let readonly = statement.readonly();
        bind(statement, query)?;
        let mut rows = statement.raw_query();
        while rows.next()?.is_some() {}
        // A read-only statement changed nothing (`changes` still counts the last write).
        Ok(if readonly { 0 } else { connection.changes() })
    })
}

/// Binds the query's values: a `$n` mark takes the `n`th value (SQLite numbers the marks in the
/// order they first appear, so `$2` may well be its first, and a mark used twice is one), and
/// a `?` the next value in text order. Every value must be used.
fn bind(statement: &mut rusqlite::Statement<'_>, query: &Query<'_>) -> rusqlite::Result<()> {
    let marks = statement.parameter_count();
    let mut next_unnumbered = 0;
    let mut used = vec![false; query.args.len()];
    for index in 1..=marks {
        let value = match statement.parameter_name(index) {
            Some(name) => name
                .strip_prefix(['$', '?'])
                .and_then(|n| n.parse::<usize>().ok())
                .filter(|&n| n >= 1)
                .map(|n| n - 1)
                .ok_or_else(|| {
                    rusqlite::Error::InvalidParameterName(format!(
                        "{name} (the store marks values $1, $2, … or ?)"
                    ))
                })?,
            None => {
                next_unnumbered += 1;
                next_unnumbered - 1
            }
        };
        let Some(arg) = query.args.get(value) else {
            return Err(rusqlite::Error::InvalidParameterCount(
                value + 1,
                query.args.len(),
            ));
        };
        used[value] = true;
        statement.raw_bind_parameter(index, arg)?;
    }
    if used.iter().any(|u| !u) {
        return Err(rusqlite::Error::InvalidParameterCount(
            query.args.len(),
            used.iter().filter(|u| **u).count(),
        ));
    }
    Ok(())
}

fn rows_of(
    statement: &mut rusqlite::Statement<'_>,
    query: &Query<'_>,
) -> rusqlite::Result<Vec<Row>> {
    let names: Arc<[String]> = statement
        .column_names()
        .into_iter()
        .map(str::to_string)
        .collect();
    bind(statement, query)?;
    let mut rows = statement.raw_query();
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        let values = (0..names.len())
            .map(|i| row.get_ref(i).map(rusqlite::types::Value::from))
            .collect::<rusqlite::Result<_>>()?;
        out.push(Row::Sqlite(SqliteRow {
            names: names.clone(),
            values,
        }));
    }
    Ok(out)
}

/// A transaction on a connection held for its duration: the writer (behind its lock) or a
/// reader (on loan). Dropped before `commit`, it rolls back.
pub(crate) struct SqliteTx {
    held: Held,
    open: bool,
}

enum Held {
    Writer(tokio::sync::OwnedMutexGuard<SqliteConn>),
    Reader(super::sqlite_readers::Reader),
}

impl SqliteTx {
    /// Begins a write transaction on the writer; IMMEDIATE takes the write lock now, so that a
    /// transaction that reads first never fails to upgrade its lock later.
    pub async fn write(writer: Arc<tokio::sync::Mutex<SqliteConn>>) -> Result<Self, sqlx::Error> {
        let held = writer.lock_owned().await;
        held.batch("BEGIN IMMEDIATE")?;
        Ok(Self {
            held: Held::Writer(held),
            open: true,
        })
    }

    /// Begins a read transaction on a reader: its reads see one state of the database.
    pub fn read(reader: super::sqlite_readers::Reader) -> Result<Self, sqlx::Error> {
        reader.batch("BEGIN")?;
        Ok(Self {
            held: Held::Reader(reader),
            open: true,
        })
    }

    fn end(mut self, sql: &'static str) -> Result<(), sqlx::Error> {
        self.open = false;
        self.batch(sql)
    }
}

/// Whether the calling thread is a worker of a multi-threaded tokio runtime (not a lane, which
/// runs one thread of its own, nor a test's runtime).
fn on_a_worker() -> bool {
    use tokio::runtime::{Handle, RuntimeFlavor};
    Handle::try_current().is_ok_and(|h| h.runtime_flavor() == RuntimeFlavor::MultiThread)
}

impl std::ops::Deref for SqliteTx {
    type Target = SqliteConn;
    fn deref(&self) -> &SqliteConn {
        match &self.held {
            Held::Writer(guard) => guard,
            Held::Reader(reader) => reader,
        }
    }
}

impl std::ops::DerefMut for SqliteTx {
    fn deref_mut(&mut self) -> &mut SqliteConn {
        match &mut self.held {
            Held::Writer(guard) => guard,
            Held::Reader(reader) => reader,
        }
    }
}

impl Finish for SqliteTx {
    fn commit(self) -> BoxFuture<'static, Result<(), sqlx::Error>> {
        if !on_a_worker() || super::group_commit::writing_in_place() {
            return Box::pin(std::future::ready(self.end("COMMIT")));
        }
        // Once handed over, the commit happens even if the caller goes away meanwhile.
        let committed = crate::lane::commit_lane().spawn(async move { self.end("COMMIT") });
        Box::pin(async move {
            committed.await.unwrap_or_else(|e| {
                Err(sqlx::Error::Protocol(format!(
                    "the commit did not finish: {e}"
                )))
            })
        })
    }
    fn rollback(self) -> BoxFuture<'static, Result<(), sqlx::Error>> {
        Box::pin(std::future::ready(self.end("ROLLBACK")))
    }
}

impl Drop for SqliteTx {
    fn drop(&mut self) {
        if self.open {
            // Not committed (an error on the way): nothing of it stays. Should the rollback
            // itself fail, SQLite has already rolled back (that is when it fails).
            let _ = self.batch("ROLLBACK");
        }
    }
}

/// SQLite's error, as sqlx reports database errors (its extended result code as the code, so
/// that `StoreError` tells transient ones apart the same way for both backends).
#[derive(Debug)]
pub(crate) struct SqliteError {
    code: String,
    extended_code: i32,
    message: String,
}

impl std::fmt::Display for SqliteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "(code: {}) {}", self.code, self.message)
    }
}

impl std::error::Error for SqliteError {}

impl sqlx::error::DatabaseError for SqliteError {
    fn message(&self) -> &str {
        &self.message
    }
    fn code(&self) -> Option<Cow<'_, str>> {
        Some(Cow::Borrowed(&self.code))
    }
    fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        self
    }
    fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
        self
    }
    fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
        self
    }
    fn kind(&self) -> sqlx::error::ErrorKind {
        use rusqlite::ffi;
        use sqlx::error::ErrorKind;
        match self.extended_code {
            ffi::SQLITE_CONSTRAINT_UNIQUE | ffi::SQLITE_CONSTRAINT_PRIMARYKEY => {
                ErrorKind::UniqueViolation
            }
            ffi::SQLITE_CONSTRAINT_FOREIGNKEY => ErrorKind::ForeignKeyViolation,
            ffi::SQLITE_CONSTRAINT_NOTNULL => ErrorKind::NotNullViolation,
            ffi::SQLITE_CONSTRAINT_CHECK => ErrorKind::CheckViolation,
            _ => ErrorKind::Other,
        }
    }
}

/// A rusqlite error as a sqlx one: what SQLite said, with its code, or what went wrong on our
/// side of the call (a value of the wrong count or type).
pub(crate) fn error(e: rusqlite::Error) -> sqlx::Error {
    match e {
        rusqlite::Error::SqliteFailure(failure, message) => {
            sqlx::Error::Database(Box::new(SqliteError {
                code: failure.extended_code.to_string(),
                extended_code: failure.extended_code,
                message: message.unwrap_or_else(|| failure.to_string()),
            }))
        }
        other => sqlx::Error::Protocol(format!("SQLite: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt as _;
    use std::time::Duration;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_worker_commits_in_place_while_it_writes_a_batch_in_place() {
        let path = std::env::temp_dir().join(format!("pomona-commit-{}.db", std::process::id()));
        let settings = Settings {
            path: path.clone(),
            busy_timeout: Duration::from_secs(5),
            pragmas: vec![("journal_mode", "WAL".to_string())],
        };
        let writer = Arc::new(tokio::sync::Mutex::new(
            SqliteConn::open(&settings).unwrap(),
        ));
        writer
            .lock()
            .await
            .batch("CREATE TABLE t (x INTEGER)")
            .unwrap();
        let tx = SqliteTx::write(writer.clone()).await.unwrap();
        tx.batch("INSERT INTO t VALUES (7)").unwrap();
        // On a worker, a commit is otherwise handed to the commit lane and not done at once.
        let committed = super::super::group_commit::in_place(|| tx.commit().now_or_never());
        assert!(
            matches!(committed, Some(Ok(()))),
            "not committed in place: {committed:?}"
        );
        let reader = SqliteConn::open(&settings).unwrap();
        let seen = reader
            .connection
            .query_row("SELECT count(*) FROM t WHERE x = 7", [], |row| {
                row.get::<_, i64>(0)
            });
        drop((reader, writer));
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
        assert_eq!(
            seen.unwrap(),
            1,
            "the committed row, seen by another connection"
        );
    }
}
