//! What the store's SQL needs from a database, so that it is written once as ordinary generic
//! code (`impl<B: Backend> InventoryStore for B`) instead of being expanded per backend.
//!
//! sqlx states what a query may bind, decode and run on as bounds on the *value* types
//! (`i64: Encode<Sqlite>`, `&mut SqliteConnection: Executor`), and Rust does not carry such
//! bounds from a trait to its users. So `Db` turns each one into a supertrait whose subject is
//! the database (`Encodes<i64>`, `Decodes<String>`, `Runs`), which Rust does carry, and the
//! extension traits below give the SQL its usual shape: `Self::sql(text).arg(x).fetch_all_on(conn)`,
//! `row.col::<i64>("n")`. A value type the SQL needs that is not listed in `Db` is a compile
//! error naming `Encodes<T>` or `Decodes<T>`: add it there.

use futures::future::BoxFuture;
use sqlx::query::Query;
use sqlx::{ColumnIndex, Database, Decode, Encode, Type};
use std::ops::DerefMut;

/// Arguments of a query on `D`.
pub(crate) type Args<'q, D> = <D as Database>::Arguments<'q>;

/// A database whose queries with arguments of lifetime `'q` can bind `T`.
pub(crate) trait Encodes<'q, T: 'q>: Database {
    fn bind_value(
        query: Query<'q, Self, Args<'q, Self>>,
        value: T,
    ) -> Query<'q, Self, Args<'q, Self>>;
}

impl<'q, D: Database, T> Encodes<'q, T> for D
where
    T: 'q + Encode<'q, D> + Type<D> + Send,
{
    fn bind_value(query: Query<'q, D, Args<'q, D>>, value: T) -> Query<'q, D, Args<'q, D>> {
        query.bind(value)
    }
}

/// A database whose rows can be read as `T`, by column name.
pub(crate) trait Decodes<T>: Database {
    fn column(row: &Self::Row, name: &str) -> Result<T, sqlx::Error>;
}

impl<D: Database, T> Decodes<T> for D
where
    T: for<'r> Decode<'r, D> + Type<D>,
    for<'n> &'n str: ColumnIndex<D::Row>,
{
    fn column(row: &D::Row, name: &str) -> Result<T, sqlx::Error> {
        sqlx::Row::try_get(row, name)
    }
}

/// Running a query on a connection of the database (sqlx's `Executor`, per backend).
pub(crate) trait Runs: Database {
    fn fetch_all<'e, 'q: 'e>(
        connection: &'e mut Self::Connection,
        query: Query<'q, Self, Args<'q, Self>>,
    ) -> BoxFuture<'e, Result<Vec<Self::Row>, sqlx::Error>>;
    fn fetch_optional<'e, 'q: 'e>(
        connection: &'e mut Self::Connection,
        query: Query<'q, Self, Args<'q, Self>>,
    ) -> BoxFuture<'e, Result<Option<Self::Row>, sqlx::Error>>;
    fn fetch_one<'e, 'q: 'e>(
        connection: &'e mut Self::Connection,
        query: Query<'q, Self, Args<'q, Self>>,
    ) -> BoxFuture<'e, Result<Self::Row, sqlx::Error>>;
    /// Runs a statement; the number of rows it affected.
    fn execute<'e, 'q: 'e>(
        connection: &'e mut Self::Connection,
        query: Query<'q, Self, Args<'q, Self>>,
    ) -> BoxFuture<'e, Result<u64, sqlx::Error>>;
}

macro_rules! runs_with_executor {
    ($db:ty) => {
        impl Runs for $db {
            fn fetch_all<'e, 'q: 'e>(
                connection: &'e mut Self::Connection,
                query: Query<'q, Self, Args<'q, Self>>,
            ) -> BoxFuture<'e, Result<Vec<Self::Row>, sqlx::Error>> {
                Box::pin(query.fetch_all(connection))
            }
            fn fetch_optional<'e, 'q: 'e>(
                connection: &'e mut Self::Connection,
                query: Query<'q, Self, Args<'q, Self>>,
            ) -> BoxFuture<'e, Result<Option<Self::Row>, sqlx::Error>> {
                Box::pin(query.fetch_optional(connection))
            }
            fn fetch_one<'e, 'q: 'e>(
                connection: &'e mut Self::Connection,
                query: Query<'q, Self, Args<'q, Self>>,
            ) -> BoxFuture<'e, Result<Self::Row, sqlx::Error>> {
                Box::pin(query.fetch_one(connection))
            }
            fn execute<'e, 'q: 'e>(
                connection: &'e mut Self::Connection,
                query: Query<'q, Self, Args<'q, Self>>,
            ) -> BoxFuture<'e, Result<u64, sqlx::Error>> {
                Box::pin(async move { Ok(query.execute(connection).await?.rows_affected()) })
            }
        }
    };
}
runs_with_executor!(sqlx::Sqlite);
runs_with_executor!(sqlx::Postgres);

/// Everything the store's SQL binds, reads and runs.
pub(crate) trait Db:
    Runs
    + sqlx::database::HasStatementCache
    + for<'q> Encodes<'q, i64>
    + for<'q> Encodes<'q, Option<i64>>
    + for<'q> Encodes<'q, bool>
    + for<'q> Encodes<'q, String>
    + for<'q> Encodes<'q, Option<String>>
    + for<'q> Encodes<'q, &'q str>
    + for<'q> Encodes<'q, Option<&'q str>>
    + for<'q> Encodes<'q, Vec<u8>>
    + for<'q> Encodes<'q, &'q [u8]>
    + for<'q> Encodes<'q, Option<Vec<u8>>>
    + for<'q> Encodes<'q, Option<&'q [u8]>>
    + for<'q> Encodes<'q, &'q String>
    + for<'q> Encodes<'q, &'q Option<String>>
    + for<'q> Encodes<'q, &'q Vec<u8>>
    + for<'q> Encodes<'q, &'q Option<Vec<u8>>>
    + Decodes<i64>
    + Decodes<Option<i64>>
    + Decodes<bool>
    + Decodes<String>
    + Decodes<Option<String>>
    + Decodes<Vec<u8>>
    + Decodes<Option<Vec<u8>>>
{
    /// A query on this database, for code generic over `D: Db`: `D::sql("…")`.
    fn sql(text: &str) -> Query<'_, Self, Args<'_, Self>> {
        sqlx::query(text)
    }
}

impl Db for sqlx::Sqlite {}
impl Db for sqlx::Postgres {}

/// A store over one database: where it reads and writes, and its write and read queues.
pub(crate) trait Backend: Send + Sync + 'static {
    type Db: Db;
    /// "sqlite" or "postgres".
    const NAME: &'static str;
    /// Taken inside the migration transaction, so that replicas starting together do not run
    /// the same migration twice (PostgreSQL); None where one process owns the file (SQLite).
    const MIGRATION_LOCK: Option<&'static str>;
    /// Where reads get a connection; cloned into the read queues' batches.
    type ReadSource: Clone + Send + Sync + 'static;
    /// A connection to read with, for as long as it is held.
    type Reader<'a>: DerefMut<Target = <Self::Db as Database>::Connection> + Send;
    fn read_source(&self) -> &Self::ReadSource;
    fn read_on(
        source: &Self::ReadSource,
    ) -> impl std::future::Future<Output = Result<Self::Reader<'_>, sqlx::Error>> + Send;
    /// The pool writes go through (one connection on SQLite).
    fn writer(&self) -> &sqlx::Pool<Self::Db>;
    /// The write queue: command exchanges, plans, push requests and push outcomes arriving
    /// together share one transaction (see `sql::Write`).
    fn writes(&self) -> &super::group_commit::GroupCommit<super::sql::Write, super::sql::Written>;
    /// The read queues: certificate standings and reconcile views, answered in batches.
    fn reads(&self) -> &super::sql::ReadQueues;

    /// A connection to read with.
    fn reader(
        &self,
    ) -> impl std::future::Future<Output = Result<Self::Reader<'_>, sqlx::Error>> + Send {
        Self::read_on(self.read_source())
    }
    /// A query on this backend's database: `Self::sql("…").arg(x).fetch_all_on(conn)`.
    fn sql(text: &str) -> Query<'_, Self::Db, Args<'_, Self::Db>> {
        sqlx::query(text)
    }
}

/// The usual shape of a query, for any `Db`: `Self::sql(text).arg(value).fetch_all_on(&mut *conn)`.
pub(crate) trait QueryExt<'q, D: Runs>: Sized {
    /// Binds any value the database `Encodes`.
    fn arg<T: 'q>(self, value: T) -> Self
    where
        D: Encodes<'q, T>;
    fn fetch_all_on<'e>(
        self,
        connection: &'e mut D::Connection,
    ) -> BoxFuture<'e, Result<Vec<D::Row>, sqlx::Error>>
    where
        'q: 'e;
    fn fetch_optional_on<'e>(
        self,
        connection: &'e mut D::Connection,
    ) -> BoxFuture<'e, Result<Option<D::Row>, sqlx::Error>>
    where
        'q: 'e;
    /// Runs a statement; the number of rows it affected.
    fn fetch_one_on<'e>(
        self,
        connection: &'e mut D::Connection,
    ) -> BoxFuture<'e, Result<D::Row, sqlx::Error>>
    where
        'q: 'e;
    fn execute_on<'e>(
        self,
        connection: &'e mut D::Connection,
    ) -> BoxFuture<'e, Result<u64, sqlx::Error>>
    where
        'q: 'e;
}

impl<'q, D: Runs> QueryExt<'q, D> for Query<'q, D, Args<'q, D>> {
    fn arg<T: 'q>(self, value: T) -> Self
    where
        D: Encodes<'q, T>,
    {
        D::bind_value(self, value)
    }
    fn fetch_all_on<'e>(
        self,
        connection: &'e mut D::Connection,
    ) -> BoxFuture<'e, Result<Vec<D::Row>, sqlx::Error>>
    where
        'q: 'e,
    {
        D::fetch_all(connection, self)
    }
    fn fetch_optional_on<'e>(
        self,
        connection: &'e mut D::Connection,
    ) -> BoxFuture<'e, Result<Option<D::Row>, sqlx::Error>>
    where
        'q: 'e,
    {
        D::fetch_optional(connection, self)
    }
    fn fetch_one_on<'e>(
        self,
        connection: &'e mut D::Connection,
    ) -> BoxFuture<'e, Result<D::Row, sqlx::Error>>
    where
        'q: 'e,
    {
        D::fetch_one(connection, self)
    }
    fn execute_on<'e>(
        self,
        connection: &'e mut D::Connection,
    ) -> BoxFuture<'e, Result<u64, sqlx::Error>>
    where
        'q: 'e,
    {
        D::execute(connection, self)
    }
}

/// `row.col::<T>("name")`: reads any value the row's database `Decodes`.
pub(crate) trait Column: sqlx::Row {
    fn col<T>(&self, name: &str) -> Result<T, sqlx::Error>
    where
        Self::Database: Decodes<T>;
}

impl<R: sqlx::Row> Column for R {
    fn col<T>(&self, name: &str) -> Result<T, sqlx::Error>
    where
        R::Database: Decodes<T>,
    {
        <R::Database as Decodes<T>>::column(self, name)
    }
}
