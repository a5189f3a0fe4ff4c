//! What the store's SQL needs from a database, so that it is written once as ordinary generic
//! code (`impl<B: Backend> InventoryStore for B`) for both backends: a statement with its bound
//! values (`Query`: `Self::sql(text).arg(x).fetch_all_on(&mut *conn)`), a row read by column
//! name (`row.col::<i64>("n")`), a connection that runs statements (`Conn`), a transaction
//! (`Db::Tx`), and where a backend's writes and reads get theirs (`Backend`).
//!
//! The statement and its values are ours, not the driver's: PostgreSQL runs them through sqlx
//! (`Conn` for `PgConnection`), SQLite runs them in the calling thread (`sqlite_conn`), where
//! sqlx would send each statement to a thread of the connection's own and wait for the answer
//! (two thread hand-offs per statement, the larger part of a command exchange's cost).

use futures::future::BoxFuture;
use sqlx::postgres::PgRow;
use std::borrow::Cow;
use std::ops::DerefMut;

/// A value bound to a statement, typed even when NULL (PostgreSQL types every parameter).
#[derive(Debug, Clone)]
pub(crate) enum Value<'q> {
    Int(Option<i64>),
    Bool(Option<bool>),
    Text(Option<Cow<'q, str>>),
    Blob(Option<Cow<'q, [u8]>>),
}

/// A Rust value a statement can bind.
pub(crate) trait Bind<'q> {
    fn bound(self) -> Value<'q>;
}

macro_rules! binds {
    ($($t:ty => |$v:ident| $e:expr;)*) => {
        $(impl<'q> Bind<'q> for $t {
            fn bound(self) -> Value<'q> {
                let $v = self;
                $e
            }
        })*
    };
}

binds! {
    i64 => |v| Value::Int(Some(v));
    Option<i64> => |v| Value::Int(v);
    bool => |v| Value::Bool(Some(v));
    Option<bool> => |v| Value::Bool(v);
    String => |v| Value::Text(Some(Cow::Owned(v)));
    Option<String> => |v| Value::Text(v.map(Cow::Owned));
    &'q str => |v| Value::Text(Some(Cow::Borrowed(v)));
    Option<&'q str> => |v| Value::Text(v.map(Cow::Borrowed));
    &'q String => |v| Value::Text(Some(Cow::Borrowed(v.as_str())));
    &'q Option<String> => |v| Value::Text(v.as_deref().map(Cow::Borrowed));
    Vec<u8> => |v| Value::Blob(Some(Cow::Owned(v)));
    Option<Vec<u8>> => |v| Value::Blob(v.map(Cow::Owned));
    &'q [u8] => |v| Value::Blob(Some(Cow::Borrowed(v)));
    Option<&'q [u8]> => |v| Value::Blob(v.map(Cow::Borrowed));
    &'q Vec<u8> => |v| Value::Blob(Some(Cow::Borrowed(v.as_slice())));
    &'q Option<Vec<u8>> => |v| Value::Blob(v.as_deref().map(Cow::Borrowed));
}

/// One statement and its values, bound in order.
#[derive(Debug, Clone)]
pub(crate) struct Query<'q> {
    pub sql: &'q str,
    pub args: Vec<Value<'q>>,
    /// Kept prepared on the connection for the next run (the default). Statements whose text
    /// varies with the batch are not, or they would push the fixed ones out of the cache.
    pub persistent: bool,
}

impl<'q> Query<'q> {
    pub fn new(sql: &'q str) -> Self {
        Self {
            sql,
            args: Vec::new(),
            persistent: true,
        }
    }

    /// Binds the next value.
    pub fn arg<T: Bind<'q>>(mut self, value: T) -> Self {
        self.args.push(value.bound());
        self
    }

    pub fn persistent(mut self, persistent: bool) -> Self {
        self.persistent = persistent;
        self
    }

    pub fn fetch_all_on<'e, C: Conn + ?Sized>(
        self,
        connection: &'e mut C,
    ) -> BoxFuture<'e, Result<Vec<Row>, sqlx::Error>>
    where
        'q: 'e,
    {
        connection.fetch_all(self)
    }

    pub fn fetch_optional_on<'e, C: Conn + ?Sized>(
        self,
        connection: &'e mut C,
    ) -> BoxFuture<'e, Result<Option<Row>, sqlx::Error>>
    where
        'q: 'e,
    {
        connection.fetch_optional(self)
    }

    pub fn fetch_one_on<'e, C: Conn + ?Sized>(
        self,
        connection: &'e mut C,
    ) -> BoxFuture<'e, Result<Row, sqlx::Error>>
    where
        'q: 'e,
    {
        let rows = connection.fetch_optional(self);
        Box::pin(async move { rows.await?.ok_or(sqlx::Error::RowNotFound) })
    }

    /// Runs a statement in a write transaction of its own; the number of rows it changed.
    pub fn write_alone<B: Backend>(self, store: &'q B) -> BoxFuture<'q, Result<u64, sqlx::Error>> {
        Box::pin(async move {
            let mut tx = store.begin_write().await?;
            let changed = self.execute_on(&mut *tx).await?;
            tx.commit().await?;
            Ok(changed)
        })
    }

    /// Runs a statement; the number of rows it changed.
    pub fn execute_on<'e, C: Conn + ?Sized>(
        self,
        connection: &'e mut C,
    ) -> BoxFuture<'e, Result<u64, sqlx::Error>>
    where
        'q: 'e,
    {
        connection.execute(self)
    }
}

/// A connection that runs statements.
pub(crate) trait Conn: Send {
    fn fetch_all<'e>(
        &'e mut self,
        query: Query<'e>,
    ) -> BoxFuture<'e, Result<Vec<Row>, sqlx::Error>>;
    fn fetch_optional<'e>(
        &'e mut self,
        query: Query<'e>,
    ) -> BoxFuture<'e, Result<Option<Row>, sqlx::Error>>;
    fn execute<'e>(&'e mut self, query: Query<'e>) -> BoxFuture<'e, Result<u64, sqlx::Error>>;
}

/// A row of a result, read by column name.
pub(crate) enum Row {
    Postgres(PgRow),
    Sqlite(super::sqlite_conn::SqliteRow),
}

impl Row {
    /// The column `name` as `T`; a type that does not fit is an error naming the column.
    pub fn col<T: FromColumn>(&self, name: &str) -> Result<T, sqlx::Error> {
        match self {
            Row::Postgres(row) => T::from_postgres(row, name),
            Row::Sqlite(row) => {
                let value = row.get(name)?;
                T::from_sqlite(value).ok_or_else(|| sqlx::Error::ColumnDecode {
                    index: name.to_string(),
                    source: format!(
                        "a {} cannot be read as {}",
                        value.data_type(),
                        std::any::type_name::<T>()
                    )
                    .into(),
                })
            }
        }
    }
}

/// A Rust type a column can be read as.
pub(crate) trait FromColumn: Sized {
    /// None when the stored value is of another type.
    fn from_sqlite(value: &rusqlite::types::Value) -> Option<Self>;
    fn from_postgres(row: &PgRow, name: &str) -> Result<Self, sqlx::Error>;
}

macro_rules! reads {
    ($($t:ty => |$v:ident| $e:expr;)*) => {
        $(impl FromColumn for $t {
            fn from_sqlite($v: &rusqlite::types::Value) -> Option<Self> {
                use rusqlite::types::Value as V;
                $e
            }
            fn from_postgres(row: &PgRow, name: &str) -> Result<Self, sqlx::Error> {
                sqlx::Row::try_get(row, name)
            }
        }
        impl FromColumn for Option<$t> {
            fn from_sqlite(value: &rusqlite::types::Value) -> Option<Self> {
                match value {
                    rusqlite::types::Value::Null => Some(None),
                    other => <$t>::from_sqlite(other).map(Some),
                }
            }
            fn from_postgres(row: &PgRow, name: &str) -> Result<Self, sqlx::Error> {
                sqlx::Row::try_get(row, name)
            }
        })*
    };
}

reads! {
    i64 => |v| match v { V::Integer(n) => Some(*n), _ => None };
    bool => |v| match v { V::Integer(n) => Some(*n != 0), _ => None };
    String => |v| match v {
        V::Text(s) => Some(s.clone()),
        V::Blob(b) => String::from_utf8(b.clone()).ok(),
        _ => None,
    };
    Vec<u8> => |v| match v {
        V::Blob(b) => Some(b.clone()),
        V::Text(s) => Some(s.clone().into_bytes()),
        _ => None,
    };
}

/// A transaction, ended by `commit` or `rollback` (dropped, it rolls back).
pub(crate) trait Finish {
    fn commit(self) -> BoxFuture<'static, Result<(), sqlx::Error>>;
    fn rollback(self) -> BoxFuture<'static, Result<(), sqlx::Error>>;
}

/// A database the store's SQL runs on.
pub(crate) trait Db: Send + Sync + 'static {
    /// Whether values are marked `$n` (PostgreSQL) or `?` in text order (SQLite; see
    /// `sql::Marks`).
    const NUMBERED_MARKS: bool;
    /// Whether a `WITH` may hold UPDATE/INSERT … RETURNING (PostgreSQL), so that writes that
    /// depend on each other go in one statement: one round trip instead of several.
    const DATA_MODIFYING_WITH: bool;
    type Conn: Conn + Send;
    type Tx: DerefMut<Target = Self::Conn> + Finish + Send + 'static;

    /// A query on this database, for code generic over `D: Db`: `D::sql("…")`.
    fn sql(text: &str) -> Query<'_> {
        Query::new(text)
    }
}

/// PostgreSQL, through sqlx.
pub(crate) struct Postgres;

impl Db for Postgres {
    const NUMBERED_MARKS: bool = true;
    const DATA_MODIFYING_WITH: bool = true;
    type Conn = sqlx::PgConnection;
    type Tx = sqlx::Transaction<'static, sqlx::Postgres>;
}

impl Finish for sqlx::Transaction<'static, sqlx::Postgres> {
    fn commit(self) -> BoxFuture<'static, Result<(), sqlx::Error>> {
        Box::pin(sqlx::Transaction::commit(self))
    }
    fn rollback(self) -> BoxFuture<'static, Result<(), sqlx::Error>> {
        Box::pin(sqlx::Transaction::rollback(self))
    }
}

/// The sqlx query for one of ours.
fn postgres_query(
    query: Query<'_>,
) -> sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments> {
    let mut bound = sqlx::query(query.sql).persistent(query.persistent);
    for value in query.args {
        bound = match value {
            Value::Int(v) => bound.bind(v),
            Value::Bool(v) => bound.bind(v),
            Value::Text(v) => bound.bind(v),
            Value::Blob(Some(Cow::Borrowed(v))) => bound.bind(v),
            Value::Blob(Some(Cow::Owned(v))) => bound.bind(v),
            Value::Blob(None) => bound.bind(None::<Vec<u8>>),
        };
    }
    bound
}

impl Conn for sqlx::PgConnection {
    fn fetch_all<'e>(
        &'e mut self,
        query: Query<'e>,
    ) -> BoxFuture<'e, Result<Vec<Row>, sqlx::Error>> {
        Box::pin(async move {
            let rows = postgres_query(query).fetch_all(self).await?;
            Ok(rows.into_iter().map(Row::Postgres).collect())
        })
    }
    fn fetch_optional<'e>(
        &'e mut self,
        query: Query<'e>,
    ) -> BoxFuture<'e, Result<Option<Row>, sqlx::Error>> {
        Box::pin(async move {
            let row = postgres_query(query).fetch_optional(self).await?;
            Ok(row.map(Row::Postgres))
        })
    }
    fn execute<'e>(&'e mut self, query: Query<'e>) -> BoxFuture<'e, Result<u64, sqlx::Error>> {
        Box::pin(async move { Ok(postgres_query(query).execute(self).await?.rows_affected()) })
    }
}

/// A store over one database: where it reads and writes, and its write and read queues.
pub(crate) trait Backend: Send + Sync + 'static {
    type Db: Db;
    /// "sqlite" or "postgres".
    const NAME: &'static str;
    /// Taken inside the migration transaction, so that replicas starting together do not run
    /// the same migration twice (PostgreSQL); None where one process owns the file (SQLite).
    const MIGRATION_LOCK: Option<&'static str>;
    /// Whether a device request's certificate standing goes through the read queue (a round
    /// trip to the database saved for each request that arrives with others), or is read at
    /// once in the request's own thread (SQLite: a point read costs less than the two thread
    /// hand-offs of the queue's lane).
    const QUEUED_READS: bool;
    /// Where writes get their transaction; cloned into the write queue's batches.
    type WriteSource: Clone + Send + Sync + 'static;
    /// Where reads get a connection; cloned into the read queues' batches.
    type ReadSource: Clone + Send + Sync + 'static;
    /// A connection to read with, for as long as it is held.
    type Reader<'a>: DerefMut<Target = <Self::Db as Db>::Conn> + Send;
    fn write_source(&self) -> &Self::WriteSource;
    fn read_source(&self) -> &Self::ReadSource;
    /// A write transaction (on SQLite, the one writer connection, held until it ends).
    fn begin_on(
        source: &Self::WriteSource,
    ) -> BoxFuture<'_, Result<<Self::Db as Db>::Tx, sqlx::Error>>;
    fn read_on(
        source: &Self::ReadSource,
    ) -> impl std::future::Future<Output = Result<Self::Reader<'_>, sqlx::Error>> + Send;
    /// A connection outside any transaction, on which one statement commits by itself
    /// (PostgreSQL); None where every write goes through a transaction (SQLite's one writer).
    fn autocommit_on(
        _source: &Self::WriteSource,
    ) -> BoxFuture<'_, Result<Option<Self::Reader<'_>>, sqlx::Error>> {
        Box::pin(async { Ok(None) })
    }
    /// A transaction only read from: its reads see one state of the database.
    fn begin_read_on(
        source: &Self::ReadSource,
    ) -> BoxFuture<'_, Result<<Self::Db as Db>::Tx, sqlx::Error>>;
    /// The write queue: command exchanges, plans, push requests and push outcomes arriving
    /// together share one transaction (see `sql::Write`).
    fn writes(&self) -> &super::group_commit::GroupCommit<super::sql::Write, super::sql::Written>;
    /// See `Store::planning_lock`. By default (one server per database) always granted.
    fn take_planning_lock(
        &self,
    ) -> BoxFuture<'_, super::StoreResult<Option<Box<dyn super::PlanningLock>>>> {
        Box::pin(async {
            Ok(Some(
                Box::new(super::SoleServer) as Box<dyn super::PlanningLock>
            ))
        })
    }
    /// See `Store::sweep_lock`. By default (one server per database) always granted.
    fn take_sweep_lock(&self) -> BoxFuture<'_, super::StoreResult<Option<super::SweepGuard>>> {
        Box::pin(async { Ok(Some(super::SweepGuard(Box::new(())))) })
    }
    /// The read queues: certificate standings and reconcile views, answered in batches.
    fn reads(&self) -> &super::sql::ReadQueues;

    /// A write transaction.
    fn begin_write(&self) -> BoxFuture<'_, Result<<Self::Db as Db>::Tx, sqlx::Error>> {
        Self::begin_on(self.write_source())
    }
    /// A connection to read with.
    fn reader(
        &self,
    ) -> impl std::future::Future<Output = Result<Self::Reader<'_>, sqlx::Error>> + Send {
        Self::read_on(self.read_source())
    }
    /// A query on this backend's database: `Self::sql("…").arg(x).fetch_all_on(conn)`.
    fn sql(text: &str) -> Query<'_> {
        Query::new(text)
    }
}
