//! The PostgreSQL backend, for several replicas and large fleets.

use anyhow::Context as _;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;
use std::str::FromStr;
use std::time::Duration;

/// Where reads get a connection: the pool, shared with the read queues' batches.
type ReadSource = PgPool;

async fn read_connection(
    source: &ReadSource,
) -> Result<sqlx::pool::PoolConnection<sqlx::Postgres>, sqlx::Error> {
    source.acquire().await
}

pub struct PostgresStore {
    pool: PgPool,
    /// Writes: the same pool (PostgreSQL runs concurrent writers itself).
    writer: PgPool,
    /// The write queue: command exchanges, plans, push requests and push outcomes, written in
    /// batches (one transaction for those arriving together, see `sql::Write`).
    writes: super::group_commit::GroupCommit<super::sql::Write, super::sql::Written>,
    /// The read queues: certificate standings and reconcile views, answered in batches.
    reads: super::sql::ReadQueues,
}

impl PostgresStore {
    pub async fn open(url: &str) -> anyhow::Result<Self> {
        let options = PgConnectOptions::from_str(url).context("invalid PostgreSQL URL")?;
        Self::open_with(options).await
    }

    /// Opens with explicit options (tests use this to give each run its own schema).
    pub async fn open_with(options: PgConnectOptions) -> anyhow::Result<Self> {
        let target = format!("{}:{}", options.get_host(), options.get_port());
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await
            // The URL may hold a password: name only host and port.
            .with_context(|| format!("cannot connect to PostgreSQL at {target}"))?;
        Ok(Self {
            reads: super::sql::ReadQueues::new(
                Self::standing_flush(pool.clone()),
                Self::reconcile_view_flush(pool.clone()),
            ),
            writes: super::group_commit::GroupCommit::new(
                super::sql::WRITE_BATCH,
                Self::write_flush(pool.clone()),
            ),
            writer: pool.clone(),
            pool,
        })
    }

    /// A connection to read with.
    async fn reader(&self) -> Result<sqlx::pool::PoolConnection<sqlx::Postgres>, sqlx::Error> {
        read_connection(&self.pool).await
    }

    /// Replicas starting together must not run the same migration twice.
    const MIGRATION_LOCK: Option<&'static str> = Some("SELECT pg_advisory_xact_lock(7400517)");
}

super::sql::impl_sql_store!(PostgresStore, sqlx::Postgres, "postgres");
super::reconcile::impl_reconcile_store!(PostgresStore, sqlx::Postgres);

impl super::backend::Backend for PostgresStore {
    type Db = sqlx::Postgres;
    type Reader<'a> = sqlx::pool::PoolConnection<sqlx::Postgres>;
    fn reader(
        &self,
    ) -> impl std::future::Future<Output = Result<Self::Reader<'_>, sqlx::Error>> + Send {
        read_connection(&self.pool)
    }
    fn writer(&self) -> &PgPool {
        &self.writer
    }
}
