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

use anyhow::Context as _;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;
use std::str::FromStr;
use std::time::Duration;

/// How often the checkpointer copies the WAL back into the database file. A checkpoint with
/// nothing to copy costs nothing.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);

/// WAL pages (of 4 KiB) past which the writer checkpoints inside a commit (SQLite's default is
/// 1,000): a backstop, normally never reached.
const WRITER_CHECKPOINT_PAGES: u32 = 16_384;

/// The WAL file is truncated back to this size after a checkpoint that emptied it.
const WAL_SIZE_LIMIT: u64 = 64 * 1024 * 1024;

pub struct SqliteStore {
    /// Reads.
    readers: std::sync::Arc<super::sqlite_readers::Readers>,
    /// The one connection that writes.
    writer: SqlitePool,
    /// The write queue: command exchanges, plans, push requests and push outcomes, written in
    /// batches (one transaction for those arriving together, see `sql::Write`).
    writes: super::group_commit::GroupCommit<super::sql::Write, super::sql::Written>,
    /// The read queues: certificate standings (every device request) and reconcile views
    /// (every reconcile), answered in batches (see `group_commit`).
    reads: super::sql::ReadQueues,
    /// The checkpointer task, stopped with the store.
    checkpoints: tokio::task::JoinHandle<()>,
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        self.checkpoints.abort();
    }
}

impl SqliteStore {
    /// Opens (creating if missing) the database at a `sqlite://path` URL.
    pub async fn open(url: &str) -> anyhow::Result<Self> {
        let options = SqliteConnectOptions::from_str(url)
            .with_context(|| format!("invalid SQLite URL {url:?}"))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(5))
            .pragma("journal_size_limit", WAL_SIZE_LIMIT.to_string())
            // Deleted and overwritten content is zeroed, not left in free pages: what was
            // redacted (a finished command's envelope) does not linger in the file.
            .pragma("secure_delete", "ON")
            .foreign_keys(true);
        // The database holds push and unlock tokens: create it readable by its owner only
        // (SQLite gives its -wal and -shm files the same mode).
        let path = options.get_filename();
        if path != std::path::Path::new(":memory:") && !path.exists() {
            crate::vocab::fs::write_private_file(path, b"")
                .with_context(|| format!("creating SQLite database {}", path.display()))?;
        }
        // The writer first: it creates the file and switches it to WAL.
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            // A local file does not hang up: no ping round trip before each transaction.
            .test_before_acquire(false)
            // Writers wait their turn here rather than in SQLite's busy handler; under a burst
            // the queue can be long, and a device told 503 only comes back later.
            .acquire_timeout(Duration::from_secs(15))
            .connect_with(
                options
                    .clone()
                    .pragma("wal_autocheckpoint", WRITER_CHECKPOINT_PAGES.to_string()),
            )
            .await
            .with_context(|| format!("cannot open SQLite database {url:?}"))?;
        let readers = super::sqlite_readers::Readers::open(&options, 8, Duration::from_secs(5))
            .await
            .with_context(|| format!("cannot open SQLite database {url:?}"))?;
        let readers = std::sync::Arc::new(readers);
        let checkpointer = sqlx::ConnectOptions::connect(&options)
            .await
            .with_context(|| format!("cannot open SQLite database {url:?}"))?;
        Ok(Self {
            checkpoints: crate::lane::commit_lane().spawn(checkpoint_regularly(checkpointer)),
            reads: super::sql::ReadQueues::new(
                super::identity::standing_flush::<Self>(readers.clone()),
                super::reconcile::reconcile_view_flush::<Self>(readers.clone()),
            ),
            readers,
            writes: super::group_commit::GroupCommit::new(
                super::sql::WRITE_BATCH,
                super::sql::write_flush::<Self>(writer.clone()),
            ),
            writer,
        })
    }
}

/// Checkpoints the WAL every `CHECKPOINT_EVERY`, without waiting for readers or the writer
/// (PASSIVE: what a reader still needs is copied at a later turn). A failure is logged once
/// until a checkpoint succeeds again; meanwhile the writer's backstop bounds the WAL.
async fn checkpoint_regularly(mut connection: sqlx::SqliteConnection) {
    let mut every = tokio::time::interval(CHECKPOINT_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        every.tick().await;
        match sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&mut connection)
            .await
        {
            Ok(_) => failing = false,
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %e, "WAL checkpoint failed; the writer checkpoints by itself past {WRITER_CHECKPOINT_PAGES} pages");
            }
            Err(_) => {}
        }
    }
}

impl super::backend::Backend for SqliteStore {
    type Db = sqlx::Sqlite;
    const NAME: &'static str = "sqlite";
    /// SQLite serialises writers on the file itself: no extra lock.
    const MIGRATION_LOCK: Option<&'static str> = None;
    /// The read connections, shared with the read queues' batches.
    type ReadSource = std::sync::Arc<super::sqlite_readers::Readers>;
    type Reader<'a> = super::sqlite_readers::Reader<'a>;
    fn read_source(&self) -> &Self::ReadSource {
        &self.readers
    }
    fn read_on(
        source: &Self::ReadSource,
    ) -> impl std::future::Future<Output = Result<Self::Reader<'_>, sqlx::Error>> + Send {
        source.get()
    }
    fn writer(&self) -> &SqlitePool {
        &self.writer
    }
    fn writes(&self) -> &super::group_commit::GroupCommit<super::sql::Write, super::sql::Written> {
        &self.writes
    }
    fn reads(&self) -> &super::sql::ReadQueues {
        &self.reads
    }
}
