//! Where SQLite gets its memory: from the server's allocator (mimalloc), not from the C
//! library's malloc, and without SQLite's global memory statistics.
//!
//! Why: a profile of the commit lane during a drain (BENCHMARKS.md, "Drain") spent a quarter of
//! its time in page faults and `madvise`. Statements that use a temporary b-tree (`IN (…)`
//! lists, `UPDATE … FROM`) open a page cache that allocates ~80 KB at once and frees it when
//! the statement ends; glibc's per-thread arena gave those pages back to the system at every
//! free (`heap_trim`) and the next statement faulted them in again, a few hundred times a
//! second. mimalloc keeps freed pages for reuse. SQLite's memory statistics, which nothing here
//! reads, take a global mutex on every allocation; they are turned off.
//!
//! SQLite takes this configuration only before it initialises, which the first connection
//! does: `configure` runs before every connection the store opens (once per process). If
//! something initialised SQLite earlier, SQLite keeps its own allocator and a warning says so.

use rusqlite::ffi;
use std::os::raw::{c_int, c_void};
use std::sync::Once;

/// Routes SQLite's allocations through mimalloc and turns its memory statistics off, once per
/// process, before the first connection opens.
pub(crate) fn configure() {
    static CONFIGURE: Once = Once::new();
    CONFIGURE.call_once(|| {
        // SAFETY: both calls happen before SQLite initialises (or fail with SQLITE_MISUSE, which
        // changes nothing); `METHODS` lives for the whole process, as SQLite requires.
        let (memory, statistics) = unsafe {
            (
                ffi::sqlite3_config(ffi::SQLITE_CONFIG_MALLOC, &METHODS.0),
                ffi::sqlite3_config(ffi::SQLITE_CONFIG_MEMSTATUS, 0 as c_int),
            )
        };
        if memory != ffi::SQLITE_OK || statistics != ffi::SQLITE_OK {
            tracing::warn!(
                memory,
                statistics,
                "SQLite was initialised before the store configured it: it keeps the C \
                 library's allocator (slower under load, not wrong)"
            );
        }
    });
}

/// Whether memory SQLite allocates now comes from mimalloc (for tests: a probe allocation).
#[cfg(test)]
fn uses_mimalloc() -> bool {
    // SAFETY: a block from sqlite3_malloc, inspected and handed back to sqlite3_free.
    unsafe {
        let block = ffi::sqlite3_malloc(64);
        if block.is_null() {
            return false;
        }
        let ours = libmimalloc_sys::mi_is_in_heap_region(block);
        ffi::sqlite3_free(block);
        ours
    }
}

/// The methods SQLite calls, for as long as the process lives.
struct Methods(ffi::sqlite3_mem_methods);

// SAFETY: the table is never written after it is built: function pointers and a null pointer.
unsafe impl Sync for Methods {}

static METHODS: Methods = Methods(ffi::sqlite3_mem_methods {
    xMalloc: Some(allocate),
    xFree: Some(free),
    xRealloc: Some(reallocate),
    xSize: Some(size_of_block),
    xRoundup: Some(round_up),
    xInit: Some(init),
    xShutdown: Some(shutdown),
    pAppData: std::ptr::null_mut(),
});

// SQLite calls these with sizes it has already checked to be positive (sqlite3Malloc and
// sqlite3Realloc handle zero, negative and oversized requests themselves); mimalloc's blocks
// are aligned to at least 8 bytes, as SQLite requires.

unsafe extern "C" fn allocate(size: c_int) -> *mut c_void {
    unsafe { libmimalloc_sys::mi_malloc(size.max(0) as usize) }
}

unsafe extern "C" fn free(block: *mut c_void) {
    unsafe { libmimalloc_sys::mi_free(block) }
}

unsafe extern "C" fn reallocate(block: *mut c_void, size: c_int) -> *mut c_void {
    unsafe { libmimalloc_sys::mi_realloc(block, size.max(0) as usize) }
}

unsafe extern "C" fn size_of_block(block: *mut c_void) -> c_int {
    let size = unsafe { libmimalloc_sys::mi_usable_size(block) };
    c_int::try_from(size).unwrap_or(c_int::MAX)
}

/// What an allocation of `size` will be, as SQLite's own allocator rounds: to 8 bytes.
unsafe extern "C" fn round_up(size: c_int) -> c_int {
    size.saturating_add(7) & !7
}

unsafe extern "C" fn init(_: *mut c_void) -> c_int {
    ffi::SQLITE_OK
}

unsafe extern "C" fn shutdown(_: *mut c_void) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_allocates_from_mimalloc() {
        // Every connection the library opens configures first; so does this test.
        configure();
        assert!(uses_mimalloc(), "SQLite does not allocate from mimalloc");
        let db = rusqlite::Connection::open_in_memory().unwrap();
        // A statement that uses a temporary b-tree and grows a block (realloc) works through it.
        let total: i64 = db
            .query_row(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5000) \
                 SELECT SUM(i) FROM n WHERE i IN (SELECT i FROM n WHERE i % 2 = 0) \
                 AND length(printf('%.*c', i, 'x')) = i",
                [],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(total, (1..=2500).map(|k| 2 * k).sum::<i64>());
        assert!(uses_mimalloc());
    }

    #[test]
    fn round_up_is_to_eight_bytes() {
        // SAFETY: a pure function.
        let rounded: Vec<c_int> = [1, 8, 9, 4095, c_int::MAX]
            .into_iter()
            .map(|n| unsafe { round_up(n) })
            .collect();
        assert_eq!(rounded, [8, 8, 16, 4096, c_int::MAX & !7]);
    }
}
