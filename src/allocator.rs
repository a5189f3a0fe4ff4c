//! The memory allocator: mimalloc, and giving back to the system what a burst freed.
//!
//! mimalloc keeps pages freed by a thread in that thread's heap until the thread collects
//! them, and returns them to the system a second after they reach its arenas. A thread that
//! goes idle after a burst (a rollout: thousands of connections' buffers, plans, rows) never
//! allocates again to trigger that, so the burst's peak stayed resident for good: about 20 MB
//! at 10,000 devices (BENCHMARKS.md). `on_idle` runs when a runtime's worker thread parks.

use std::cell::Cell;
use std::time::{Duration, Instant};

/// How often an idle thread collects at most: often enough that the arenas' one-second purge
/// delay expires between two collections, rarely enough to cost nothing.
const COLLECT_EVERY: Duration = Duration::from_secs(1);

/// For a runtime's `on_thread_park`: at most once a second per thread, hands the thread's
/// wholly free pages back to the allocator's arenas, which purge what has been free long
/// enough. A busy thread does not park, and pays nothing.
pub fn on_idle() {
    thread_local! {
        static LAST: Cell<Option<Instant>> = const { Cell::new(None) };
    }
    let now = Instant::now();
    let due = LAST.with(|last| {
        let due = last
            .get()
            .is_none_or(|at| now.duration_since(at) >= COLLECT_EVERY);
        if due {
            last.set(Some(now));
        }
        due
    });
    if due {
        // SAFETY: mi_collect takes no pointer and may be called from any thread at any time;
        // `false` asks for the normal (not forced) collection.
        unsafe { libmimalloc_sys::mi_collect(false) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This process's resident memory, in bytes.
    fn resident() -> usize {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        let kb: usize = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        kb * 1024
    }

    #[test]
    fn an_idle_thread_gives_back_a_bursts_memory() {
        // 80 MB of blocks, freed: without `on_idle` they stay resident (measured: all of it
        // a few seconds later); with it, they go. Other tests run beside this one, hence the
        // margin.
        let burst: Vec<Vec<u8>> = (0..40_000).map(|i| vec![i as u8; 2048]).collect();
        assert!(burst.iter().all(|block| block.len() == 2048));
        drop(burst);
        let freed = resident();
        for _ in 0..3 {
            on_idle();
            std::thread::sleep(COLLECT_EVERY + Duration::from_millis(100));
        }
        on_idle();
        let after = resident();
        assert!(
            after + 40_000_000 < freed,
            "resident memory {freed} bytes after the burst was freed, {after} after collecting"
        );
    }
}
