//! The PostgreSQL backend, for several replicas and large fleets.

use anyhow::Context as _;
use futures::future::BoxFuture;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;
use std::str::FromStr;
use std::time::Duration;

/// Connections of the three batch queues (certificate standings, reconcile views, writes),
/// two each.
pub const LANE_CONNECTIONS: u32 = 6;

pub struct PostgresStore {
    pool: PgPool,
    /// Writes: the same pool (PostgreSQL runs concurrent writers itself).
    writer: PgPool,
    /// The write queue: command exchanges, plans, push requests and push outcomes, written in
    /// batches (one transaction for those arriving together, see `sql::Write`).
    writes: super::group_commit::GroupCommit<super::sql::Write, super::sql::Written>,
    /// The read queues: certificate standings and reconcile views, answered in batches.
    reads: super::sql::ReadQueues,
    /// `pomona <random>`: the `application_name` of this server's connections, by which the
    /// planning server tells whether other servers use the database (`PlanningLock::check`).
    instance: String,
}

impl PostgresStore {
    pub async fn open(url: &str) -> anyhow::Result<Self> {
        Self::open_sized(url, super::DEFAULT_POSTGRES_CONNECTIONS).await
    }

    /// Opens with a pool of `connections` for requests' own statements; the batch queues open
    /// `LANE_CONNECTIONS` more. A server holds at most `connections + LANE_CONNECTIONS`.
    pub async fn open_sized(url: &str, connections: u32) -> anyhow::Result<Self> {
        let options = PgConnectOptions::from_str(url).context("invalid PostgreSQL URL")?;
        Self::open_with_sized(options, connections).await
    }

    /// Opens with explicit options (tests use this to give each run its own schema).
    pub async fn open_with(options: PgConnectOptions) -> anyhow::Result<Self> {
        Self::open_with_sized(options, super::DEFAULT_POSTGRES_CONNECTIONS).await
    }

    async fn open_with_sized(options: PgConnectOptions, connections: u32) -> anyhow::Result<Self> {
        let instance = format!(
            "pomona {}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        let options = options.application_name(&instance);
        let target = format!("{}:{}", options.get_host(), options.get_port());
        let pool = PgPoolOptions::new()
            .max_connections(connections.max(2))
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options.clone())
            .await
            // The URL may hold a password: name only host and port.
            .with_context(|| format!("cannot connect to PostgreSQL at {target}"))?;
        // The queues' batches run on their lanes (`crate::lane`), each with connections of
        // its own, opened there on first use: a connection's socket wakes the runtime it was
        // opened on, and one shared with the main runtime would wake another thread for
        // every statement of a batch.
        let lane_pool = |connections: u32| {
            PgPoolOptions::new()
                .max_connections(connections)
                .acquire_timeout(Duration::from_secs(5))
                .connect_lazy_with(options.clone())
        };
        let per_lane = LANE_CONNECTIONS / 3;
        Ok(Self {
            reads: super::sql::ReadQueues::new(
                super::identity::standing_flush::<Self>(lane_pool(per_lane)),
                super::reconcile::reconcile_view_flush::<Self>(lane_pool(per_lane)),
            ),
            writes: super::group_commit::GroupCommit::new(
                super::sql::WRITE_BATCH,
                super::sql::write_flush::<Self>(lane_pool(per_lane)),
            ),
            writer: pool.clone(),
            pool,
            instance,
        })
    }
}

impl super::backend::Backend for PostgresStore {
    type Db = super::backend::Postgres;
    const NAME: &'static str = "postgres";
    /// Replicas starting together must not run the same migration twice.
    const QUEUED_READS: bool = true;
    const MIGRATION_LOCK: Option<&'static str> = Some("SELECT pg_advisory_xact_lock(7400517)");
    type WriteSource = PgPool;
    /// The pool, shared with the read queues' batches.
    type ReadSource = PgPool;
    type Reader<'a> = sqlx::pool::PoolConnection<sqlx::Postgres>;
    fn write_source(&self) -> &Self::WriteSource {
        &self.writer
    }
    fn read_source(&self) -> &Self::ReadSource {
        &self.pool
    }
    fn begin_on(
        source: &Self::WriteSource,
    ) -> BoxFuture<'_, Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error>> {
        Box::pin(source.begin())
    }
    fn read_on(
        source: &Self::ReadSource,
    ) -> impl std::future::Future<Output = Result<Self::Reader<'_>, sqlx::Error>> + Send {
        source.acquire()
    }
    fn autocommit_on(
        source: &Self::WriteSource,
    ) -> BoxFuture<'_, Result<Option<Self::Reader<'_>>, sqlx::Error>> {
        Box::pin(async move { Ok(Some(source.acquire().await?)) })
    }
    fn begin_read_on(
        source: &Self::ReadSource,
    ) -> BoxFuture<'_, Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error>> {
        Box::pin(source.begin())
    }
    fn writes(&self) -> &super::group_commit::GroupCommit<super::sql::Write, super::sql::Written> {
        &self.writes
    }
    fn reads(&self) -> &super::sql::ReadQueues {
        &self.reads
    }
    fn take_planning_lock(
        &self,
    ) -> BoxFuture<'_, super::StoreResult<Option<Box<dyn super::PlanningLock>>>> {
        Box::pin(async move {
            // A connection of its own, out of the pool: the lock lives as long as it does.
            let mut connection = self.pool.acquire().await?.detach();
            let held: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                .bind(PLANNING_LOCK_KEY)
                .fetch_one(&mut connection)
                .await?;
            let instance = self.instance.clone();
            Ok(held.then(|| {
                Box::new(AdvisoryLock {
                    connection,
                    instance,
                }) as Box<dyn super::PlanningLock>
            }))
        })
    }
    fn take_sweep_lock(&self) -> BoxFuture<'_, super::StoreResult<Option<super::SweepGuard>>> {
        Box::pin(async move {
            // Out of the pool, like the planning lock: closing the connection releases it.
            let mut connection = self.pool.acquire().await?.detach();
            // Keyed by schema too: servers of other schemas in the same database (another
            // installation) sweep their own tables.
            let held: bool =
                sqlx::query_scalar("SELECT pg_try_advisory_lock($1, hashtext(current_schema()))")
                    .bind(SWEEP_LOCK_KEY)
                    .fetch_one(&mut connection)
                    .await?;
            Ok(held.then(|| super::SweepGuard(Box::new(connection))))
        })
    }
}

/// The advisory lock key of the right to plan (`Store::planning_lock`); the migrations use
/// another.
const PLANNING_LOCK_KEY: i64 = 7_400_518;
/// The advisory lock key of the right to sweep (`Store::sweep_lock`), with the schema's hash.
const SWEEP_LOCK_KEY: i32 = 7_400_519;

/// The planning lock on PostgreSQL: held while its connection lives.
struct AdvisoryLock {
    connection: sqlx::PgConnection,
    /// This server's `application_name` (see `PostgresStore::instance`).
    instance: String,
}

#[async_trait::async_trait]
impl super::PlanningLock for AdvisoryLock {
    async fn check(&mut self) -> Result<bool, super::StoreError> {
        // Other servers' connections carry their own name; one with none left serves no device.
        let others: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE datname = current_database() \
             AND application_name LIKE 'pomona %' AND application_name <> $1)",
        )
        .bind(&self.instance)
        .fetch_one(&mut self.connection)
        .await?;
        Ok(others)
    }
}
