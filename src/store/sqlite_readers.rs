//! The SQLite backend's read connections: a fixed set, each lent to one reader at a time. In
//! WAL mode a read never waits for the writer. A read's statements run in the thread that reads
//! (`sqlite_conn`); a connection goes back to the free list as it is, since a statement leaves
//! nothing running on it once it has returned.

use super::sqlite_conn::{Settings, SqliteConn};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A fixed set of read connections.
pub(crate) struct Readers {
    free: Mutex<Vec<SqliteConn>>,
    available: Arc<Semaphore>,
    acquire_timeout: Duration,
}

impl Readers {
    /// Opens `count` connections with `settings`.
    pub fn open(
        settings: &Settings,
        count: usize,
        acquire_timeout: Duration,
    ) -> Result<Self, sqlx::Error> {
        let free = (0..count)
            .map(|_| SqliteConn::open(settings))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            free: Mutex::new(free),
            available: Arc::new(Semaphore::new(count)),
            acquire_timeout,
        })
    }

    /// A free connection, waiting up to the acquire timeout for one (then `PoolTimedOut`, which
    /// the store reports as a transient fault).
    pub async fn get(self: &Arc<Self>) -> Result<Reader, sqlx::Error> {
        let permit =
            tokio::time::timeout(self.acquire_timeout, self.available.clone().acquire_owned())
                .await
                .map_err(|_| sqlx::Error::PoolTimedOut)?
                .map_err(|_| sqlx::Error::PoolClosed)?;
        let conn = lock(&self.free)
            .pop()
            .expect("a permit guarantees a free connection");
        Ok(Reader {
            conn: Some(conn),
            readers: self.clone(),
            _permit: permit,
        })
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A read connection on loan; it goes back to the free list when dropped.
pub(crate) struct Reader {
    conn: Option<SqliteConn>,
    readers: Arc<Readers>,
    // Released after `drop` has put the connection back on the list.
    _permit: OwnedSemaphorePermit,
}

impl std::ops::Deref for Reader {
    type Target = SqliteConn;
    fn deref(&self) -> &SqliteConn {
        self.conn.as_ref().expect("present until dropped")
    }
}

impl std::ops::DerefMut for Reader {
    fn deref_mut(&mut self) -> &mut SqliteConn {
        self.conn.as_mut().expect("present until dropped")
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            lock(&self.readers.free).push(conn);
        }
    }
}
