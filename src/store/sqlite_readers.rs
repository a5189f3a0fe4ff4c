//! The SQLite backend's read connections, handed out without sqlx's pool.
//!
//! Each sqlx SQLite connection runs on a worker thread of its own, and every message to it is a
//! round trip between threads. sqlx's pool adds two such round trips to every read: a ping when
//! a connection is taken (optional) and another when it goes back (always). For the one-statement
//! reads on the request and reconcile paths that tripled the thread hand-offs. These connections
//! are only read from and go back to the free list as they are: a SQLite file does not hang up
//! like a network peer, and a read cancelled half-way is finished by its worker before the next
//! statement on that connection starts (each worker runs its messages in order).

use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::ConnectOptions as _;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::{Semaphore, SemaphorePermit};

/// A fixed set of read connections.
pub struct Readers {
    free: Mutex<Vec<SqliteConnection>>,
    available: Semaphore,
    acquire_timeout: Duration,
}

impl Readers {
    /// Opens `count` connections with `options`.
    pub async fn open(
        options: &SqliteConnectOptions,
        count: usize,
        acquire_timeout: Duration,
    ) -> Result<Self, sqlx::Error> {
        let mut free = Vec::with_capacity(count);
        for _ in 0..count {
            free.push(options.connect().await?);
        }
        Ok(Self {
            free: Mutex::new(free),
            available: Semaphore::new(count),
            acquire_timeout,
        })
    }

    /// A free connection, waiting up to the acquire timeout for one (then `PoolTimedOut`, which
    /// the store reports as a transient fault).
    pub async fn get(&self) -> Result<Reader<'_>, sqlx::Error> {
        let permit = tokio::time::timeout(self.acquire_timeout, self.available.acquire())
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)?
            .map_err(|_| sqlx::Error::PoolClosed)?;
        let conn = self
            .free
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop()
            .expect("a permit guarantees a free connection");
        Ok(Reader {
            conn: Some(conn),
            readers: self,
            _permit: permit,
        })
    }
}

/// A read connection on loan; it goes back to the free list when dropped.
pub struct Reader<'a> {
    conn: Option<SqliteConnection>,
    readers: &'a Readers,
    // Released after `drop` has put the connection back on the list.
    _permit: SemaphorePermit<'a>,
}

impl std::ops::Deref for Reader<'_> {
    type Target = SqliteConnection;
    fn deref(&self) -> &SqliteConnection {
        self.conn.as_ref().expect("present until dropped")
    }
}

impl std::ops::DerefMut for Reader<'_> {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        self.conn.as_mut().expect("present until dropped")
    }
}

impl Drop for Reader<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.readers
                .free
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(conn);
        }
    }
}
