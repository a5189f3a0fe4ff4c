//! The embedded SQLite backend: one file, WAL journal, full fsync on commit so that a crash or
//! power loss after an answer never loses what was answered.
//!
//! SQLite has one writer at a time. Writes go through one dedicated connection (`writer`), so
//! they queue in this process, first come first served, instead of contending for the file lock
//! (a connection that finds it taken sleeps in SQLite's busy handler for up to milliseconds,
//! while the lock may already be free again). Reads use the other connections (`pool`); in WAL
//! mode they never wait for the writer. Reads use connections of their own (`sqlite_readers`),
//! without sqlx's pool and its pings.
//!
//! Checkpoints (copying the WAL back into the database file, with an fsync of the file) run on
//! a connection of their own (`checkpoints`), every `CHECKPOINT_EVERY`. Left to SQLite, the
//! writer checkpoints inside the commit that takes the WAL past 1,000 pages: under a
//! fleet-wide change nearly every batch did, and each device's answer waited for it; taken off
//! the writer, a fleet converges markedly faster (figures: BENCHMARKS.md, "Reconciler",
//! session 7). The writer still checkpoints by itself past `WRITER_CHECKPOINT_PAGES`, should
//! the checkpointer fall behind or fail.

use super::sqlite_conn::{Settings, SqliteConn, SqliteTx};
use anyhow::Context as _;
use std::sync::Arc;
use std::time::Duration;

/// How often the checkpointer copies the WAL back into the database file. A checkpoint with
/// nothing to copy costs nothing.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);

/// WAL pages (of 4 KiB) past which the writer checkpoints inside a commit (SQLite's default is
/// 1,000): a backstop, normally never reached.
const WRITER_CHECKPOINT_PAGES: u32 = 16_384;

/// The WAL file is truncated back to this size after a checkpoint that emptied it.
const WAL_SIZE_LIMIT: u64 = 64 * 1024 * 1024;

/// Read connections.
const READERS: usize = 8;

/// Write batches of at most this many items are written by the request that leads them, in
/// its own worker thread (a few exchanges: well under a millisecond with the fsync); bigger
/// ones go to the commit lane, so that under a burst the workers keep serving requests while a
/// batch commits.
const WRITTEN_IN_PLACE: usize = 8;

pub struct SqliteStore {
    /// Reads.
    readers: Arc<super::sqlite_readers::Readers>,
    /// The one connection that writes, held by one transaction at a time.
    writer: Arc<tokio::sync::Mutex<SqliteConn>>,
    /// The write queue: command exchanges, plans, push requests and push outcomes, written in
    /// batches (one transaction for those arriving together, see `sql::Write`).
    writes: super::group_commit::GroupCommit<super::sql::Write, super::sql::Written>,
    /// The read queues: certificate standings (every device request) and reconcile views
    /// (every reconcile), answered in batches (see `group_commit`).
    reads: super::sql::ReadQueues,
    /// Dropping it stops the checkpointer's thread.
    _checkpoints: std::sync::mpsc::Sender<()>,
}

/// The file a `sqlite://path` (or `sqlite:path`) URL names; relative paths are relative to the
/// working directory. Connection options in the URL are refused rather than ignored: the store
/// sets its own (WAL, synchronous commits, private file mode).
fn database_path(url: &str) -> anyhow::Result<std::path::PathBuf> {
    let path = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .with_context(|| format!("invalid SQLite URL {url:?}: expected sqlite://PATH"))?;
    anyhow::ensure!(
        !path.contains('?'),
        "invalid SQLite URL {url:?}: options after '?' are not supported (Pomona sets its own); give sqlite://PATH"
    );
    anyhow::ensure!(
        !path.is_empty(),
        "invalid SQLite URL {url:?}: no file; give sqlite://PATH"
    );
    anyhow::ensure!(
        !path.starts_with(":memory:"),
        "an in-memory SQLite database is not supported: each connection would see its own; give a file"
    );
    Ok(std::path::PathBuf::from(path))
}

impl SqliteStore {
    /// Opens (creating if missing) the database at a `sqlite://path` URL.
    pub async fn open(url: &str) -> anyhow::Result<Self> {
        let path = database_path(url)?;
        // The database holds push and unlock tokens: create it readable by its owner only
        // (SQLite gives its -wal and -shm files the same mode).
        if !path.exists() {
            crate::vocab::fs::write_private_file(&path, b"")
                .with_context(|| format!("creating SQLite database {}", path.display()))?;
        }
        let settings = |extra: &[(&'static str, String)]| {
            let mut pragmas = vec![
                ("journal_mode", "WAL".to_string()),
                // A commit is on disk before the device gets its answer.
                ("synchronous", "FULL".to_string()),
                ("journal_size_limit", WAL_SIZE_LIMIT.to_string()),
                // Deleted and overwritten content is zeroed, not left in free pages: what was
                // redacted (a finished command's envelope) does not linger in the file.
                ("secure_delete", "ON".to_string()),
                ("foreign_keys", "ON".to_string()),
            ];
            pragmas.extend_from_slice(extra);
            Settings {
                path: path.clone(),
                busy_timeout: Duration::from_secs(5),
                pragmas,
            }
        };
        let cannot_open = || format!("cannot open SQLite database {url:?}");
        // The writer first: it switches the file to WAL.
        let writer = SqliteConn::open(&settings(&[(
            "wal_autocheckpoint",
            WRITER_CHECKPOINT_PAGES.to_string(),
        )]))
        .with_context(cannot_open)?;
        let readers = Arc::new(
            super::sqlite_readers::Readers::open(&settings(&[]), READERS, Duration::from_secs(5))
                .with_context(cannot_open)?,
        );
        let checkpointer = SqliteConn::open(&settings(&[])).with_context(cannot_open)?;
        let writer = Arc::new(tokio::sync::Mutex::new(writer));
        Ok(Self {
            _checkpoints: checkpoint_regularly(checkpointer)?,
            reads: super::sql::ReadQueues::new(
                super::identity::standing_flush::<Self>(readers.clone()),
                super::reconcile::reconcile_view_flush::<Self>(readers.clone()),
            ),
            readers,
            writes: super::group_commit::GroupCommit::new(
                super::sql::WRITE_BATCH,
                super::sql::write_flush::<Self>(writer.clone()),
            )
            .in_place_up_to(WRITTEN_IN_PLACE),
            writer,
        })
    }
}

/// Checkpoints the WAL every `CHECKPOINT_EVERY` on a thread of its own, without waiting for
/// readers or the writer (PASSIVE: what a reader still needs is copied at a later turn), until
/// the returned sender is dropped. A failure is logged once until a checkpoint succeeds again;
/// meanwhile the writer's backstop bounds the WAL.
fn checkpoint_regularly(connection: SqliteConn) -> anyhow::Result<std::sync::mpsc::Sender<()>> {
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    std::thread::Builder::new()
        .name("pomona-checkpoint".into())
        .spawn(move || {
            let mut failing = false;
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                stopped.recv_timeout(CHECKPOINT_EVERY)
            {
                match connection.batch("PRAGMA wal_checkpoint(PASSIVE)") {
                    Ok(()) => failing = false,
                    Err(e) if !failing => {
                        failing = true;
                        tracing::warn!(error = %e, "WAL checkpoint failed; the writer checkpoints by itself past {WRITER_CHECKPOINT_PAGES} pages");
                    }
                    Err(_) => {}
                }
            }
        })
        .context("starting the checkpoint thread")?;
    Ok(stop)
}

impl super::backend::Backend for SqliteStore {
    type Db = super::sqlite_conn::Sqlite;
    const NAME: &'static str = "sqlite";
    /// SQLite serialises writers on the file itself: no extra lock.
    const QUEUED_READS: bool = false;
    const MIGRATION_LOCK: Option<&'static str> = None;
    type WriteSource = Arc<tokio::sync::Mutex<SqliteConn>>;
    /// The read connections, shared with the read queues' batches.
    type ReadSource = Arc<super::sqlite_readers::Readers>;
    type Reader<'a> = super::sqlite_readers::Reader;
    fn write_source(&self) -> &Self::WriteSource {
        &self.writer
    }
    fn read_source(&self) -> &Self::ReadSource {
        &self.readers
    }
    fn begin_on(
        source: &Self::WriteSource,
    ) -> futures::future::BoxFuture<'_, Result<SqliteTx, sqlx::Error>> {
        Box::pin(SqliteTx::write(source.clone()))
    }
    fn read_on(
        source: &Self::ReadSource,
    ) -> impl std::future::Future<Output = Result<Self::Reader<'_>, sqlx::Error>> + Send {
        source.get()
    }
    fn begin_read_on(
        source: &Self::ReadSource,
    ) -> futures::future::BoxFuture<'_, Result<SqliteTx, sqlx::Error>> {
        Box::pin(async move { SqliteTx::read(source.get().await?) })
    }
    fn writes(&self) -> &super::group_commit::GroupCommit<super::sql::Write, super::sql::Written> {
        &self.writes
    }
    fn reads(&self) -> &super::sql::ReadQueues {
        &self.reads
    }
}

#[cfg(test)]
mod tests {
    use super::database_path;

    #[test]
    fn a_sqlite_url_names_its_file_and_options_or_memory_are_refused() {
        assert_eq!(
            database_path("sqlite://pomona-data/pomona.db").unwrap(),
            std::path::Path::new("pomona-data/pomona.db")
        );
        assert_eq!(
            database_path("sqlite:///var/lib/pomona.db").unwrap(),
            std::path::Path::new("/var/lib/pomona.db")
        );
        assert_eq!(
            database_path("sqlite:pomona.db").unwrap(),
            std::path::Path::new("pomona.db")
        );
        for (url, says) in [
            ("postgres://db/pomona", "expected sqlite://PATH"),
            ("sqlite://a.db?mode=ro", "options after '?'"),
            ("sqlite://", "no file"),
            ("sqlite::memory:", "in-memory"),
        ] {
            let error = database_path(url).unwrap_err().to_string();
            assert!(error.contains(says), "{url}: {error}");
        }
    }
}
