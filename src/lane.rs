//! Lanes: one-thread tokio runtimes of their own, for work that must not queue behind device
//! requests.
//!
//! Under a burst, the main runtime holds thousands of ready tasks, one per device request in
//! flight, and a task woken there waits its turn behind all of them. A database transaction is
//! a chain of such wake-ups (on PostgreSQL one per statement, each answered by the server; on
//! SQLite, whose statements run in the calling thread, the commit that waits for the disk),
//! and so is a reconcile (its reads, then its plan's commit). On the main runtime each link of the
//! chain waited hundreds of milliseconds behind the request queue while the database sat idle,
//! and planning crawled while devices were busy (BENCHMARKS.md, session 7). On a lane a wake-up
//! waits only for the lane's own tasks, and the operating system shares the CPU between the
//! lanes' threads and the main runtime's workers.
//!
//! A lane runs until its `Lane` is dropped; then the tasks still on it are cancelled.

use std::sync::OnceLock;
use tokio::runtime::Handle;
use tokio::sync::oneshot;

pub struct Lane {
    handle: Handle,
    /// Dropping it ends the lane's thread.
    _stop: oneshot::Sender<()>,
}

impl Lane {
    /// Starts a lane on a thread named `name`.
    pub fn start(name: &str) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .on_thread_park(crate::allocator::on_idle)
            .build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                runtime.block_on(async {
                    let _ = stopped.await;
                });
            })?;
        Ok(Self {
            handle,
            _stop: stop,
        })
    }

    /// Runs `future` on the lane.
    pub fn spawn<F>(&self, future: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handle.spawn(future)
    }
}

/// The lane that runs batched reads (`store::group_commit` as a read queue): apart from the
/// commit lane, so that reads are not held up while a batch of writes waits for its commit.
pub fn read_lane() -> &'static Lane {
    static LANE: OnceLock<Lane> = OnceLock::new();
    LANE.get_or_init(|| Lane::start("pomona-read").expect("starting the read thread"))
}

/// The lane that writes batched commits (`store::group_commit`), shared by every batch in the
/// process: they all end on the same database writer anyway.
pub fn commit_lane() -> &'static Lane {
    static LANE: OnceLock<Lane> = OnceLock::new();
    LANE.get_or_init(|| Lane::start("pomona-commit").expect("starting the commit thread"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn work_spawned_on_a_lane_runs_on_the_lanes_thread_and_returns_its_result() {
        let lane = Lane::start("test-lane").unwrap();
        let name = lane
            .spawn(async { std::thread::current().name().map(str::to_string) })
            .await
            .unwrap();
        assert_eq!(name.as_deref(), Some("test-lane"));
    }

    #[tokio::test]
    async fn dropping_a_lane_cancels_what_is_still_on_it() {
        let lane = Lane::start("test-lane-drop").unwrap();
        let stuck = lane.spawn(std::future::pending::<()>());
        drop(lane);
        let ended = tokio::time::timeout(std::time::Duration::from_secs(5), stuck)
            .await
            .expect("the lane's task ends when the lane is dropped");
        assert!(ended.unwrap_err().is_cancelled());
    }
}
