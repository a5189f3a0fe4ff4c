//! The embedded SQLite backend: one file, WAL journal, full fsync on commit so that a crash or
//! power loss after an answer never loses what was answered.
//!
//! SQLite has one writer at a time. Writes go through one dedicated connection (`writer`), so
//! they queue in this process, first come first served, instead of contending for the file lock
//! (a connection that finds it taken sleeps in SQLite's busy handler for up to milliseconds,
//! while the lock may already be free again). Reads use the other connections (`pool`); in WAL
//! mode they never wait for the writer. Reads use connections of their own (`sqlite_readers`),
//! without sqlx's pool and its pings.

use anyhow::Context as _;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;
use std::str::FromStr;
use std::time::Duration;

pub struct SqliteStore {
    /// Reads.
    readers: super::sqlite_readers::Readers,
    /// The one connection that writes.
    writer: SqlitePool,
    /// Command exchanges, written in batches (one transaction for those arriving together).
    exchanges:
        super::group_commit::GroupCommit<super::sql::PendingExchange, super::sql::ExchangeDone>,
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
            .foreign_keys(true);
        // The database holds push and unlock tokens: create it readable by its owner only
        // (SQLite gives its -wal and -shm files the same mode).
        let path = options.get_filename();
        if path != std::path::Path::new(":memory:") && !path.exists() {
            crate::config::write_private_file(path, b"")
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
            .connect_with(options.clone())
            .await
            .with_context(|| format!("cannot open SQLite database {url:?}"))?;
        let readers = super::sqlite_readers::Readers::open(&options, 8, Duration::from_secs(5))
            .await
            .with_context(|| format!("cannot open SQLite database {url:?}"))?;
        Ok(Self {
            readers,
            exchanges: super::group_commit::GroupCommit::new(
                super::sql::EXCHANGE_BATCH,
                Self::exchange_flush(writer.clone()),
            ),
            writer,
        })
    }

    /// A connection to read with.
    async fn reader(&self) -> Result<super::sqlite_readers::Reader<'_>, sqlx::Error> {
        self.readers.get().await
    }

    /// SQLite serialises writers on the file itself: no extra lock.
    const MIGRATION_LOCK: Option<&'static str> = None;
}

super::sql::impl_sql_store!(SqliteStore, sqlx::Sqlite, "sqlite");
super::reconcile::impl_reconcile_store!(SqliteStore, sqlx::Sqlite);
super::inventory::impl_inventory_store!(SqliteStore, sqlx::Sqlite);
super::actions::impl_action_store!(SqliteStore, sqlx::Sqlite);
