//! Group commit: many callers each submit one small write and wait for it; whoever finds no
//! write in progress takes everything submitted so far and writes it in one transaction (one
//! durable commit instead of one per caller), then hands every caller its own result. Alone, a
//! caller's write goes out at once (no added delay); under load, writes arriving while one
//! batch commits form the next batch. The batch runs in its own task on a lane
//! (`crate::lane`), so a caller that goes away (a closed connection) cannot abandon the others'
//! writes halfway, and the batch's statements do not wait behind the device requests.
//!
//! Where a batch's writing never waits (SQLite: its statements and its fsync run in the calling
//! thread), a small batch is written by its leader in place, with no hand-off to the lane and
//! back: two thread wake-ups per batch saved, which is most of a small batch's overhead when few
//! devices are in flight. It goes to the lane should it wait after all, and big batches (a
//! burst) always do, so the request workers keep serving while they commit.
//!
//! The same queue serves reads (`GroupCommit::on_lane` with the read lane): point reads
//! arriving together are answered by a few statements for all of them (see `sql::READ_BATCH`).
//!
//! Holds nothing beyond the batch being formed: each caller returns only after its write is
//! committed (or failed), exactly as with a direct call.

use super::{StoreError, StoreResult};
use futures::future::BoxFuture;
use std::collections::VecDeque;

/// Room an empty queue keeps: what ordinary traffic fills without reallocating.
const SPARE_KEPT: usize = 1024;
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// Writes a batch; returns one result per item, in order.
pub type Flush<T, R> = Arc<dyn Fn(Vec<T>) -> BoxFuture<'static, Vec<StoreResult<R>>> + Send + Sync>;

pub struct GroupCommit<T, R> {
    pending: Mutex<VecDeque<(T, oneshot::Sender<StoreResult<R>>)>>,
    /// Held by the caller whose batch is being written.
    leader: tokio::sync::Mutex<()>,
    max_batch: usize,
    flush: Flush<T, R>,
    lane: &'static crate::lane::Lane,
    /// Batches of at most this many items start in the leader's thread (0: none do).
    in_place_up_to: usize,
}

impl<T: Send + 'static, R: Send + 'static> GroupCommit<T, R> {
    /// Batches written on the commit lane.
    pub fn new(max_batch: usize, flush: Flush<T, R>) -> Self {
        Self::on_lane(crate::lane::commit_lane(), max_batch, flush)
    }

    /// Batches run on `lane`.
    pub fn on_lane(lane: &'static crate::lane::Lane, max_batch: usize, flush: Flush<T, R>) -> Self {
        Self {
            pending: Mutex::new(VecDeque::new()),
            leader: tokio::sync::Mutex::new(()),
            max_batch: max_batch.max(1),
            flush,
            lane,
            in_place_up_to: 0,
        }
    }

    /// Lets the leader write batches of up to `items` itself, in its own thread, as long as the
    /// writing does not wait (see the module's paragraph). Only for a flush that normally
    /// completes without waiting: a flush that waits is moved to the lane at its first wait.
    pub fn in_place_up_to(mut self, items: usize) -> Self {
        self.in_place_up_to = items;
        self
    }

    /// Submits one write and waits until it is committed.
    pub async fn submit(&self, item: T) -> StoreResult<R> {
        let (tx, mut rx) = oneshot::channel();
        lock(&self.pending).push_back((item, tx));
        loop {
            let guard = tokio::select! {
                biased;
                done = &mut rx => return done.unwrap_or_else(|_| Err(abandoned())),
                guard = self.leader.lock() => guard,
            };
            let batch: Vec<_> = {
                let mut pending = lock(&self.pending);
                let n = pending.len().min(self.max_batch);
                let batch = pending.drain(..n).collect();
                if pending.is_empty() && pending.capacity() > SPARE_KEPT {
                    // A burst (a push wave over the whole fleet) grew the queue; its room
                    // would otherwise stay allocated for good.
                    *pending = VecDeque::new();
                }
                batch
            };
            if batch.is_empty() {
                // Ours is in a batch still being written (its leader went away meanwhile).
                drop(guard);
                return rx.await.unwrap_or_else(|_| Err(abandoned()));
            }
            let in_place = batch.len() <= self.in_place_up_to;
            let (items, senders): (Vec<T>, Vec<_>) = batch.into_iter().unzip();
            let flush = self.flush.clone();
            let mut writing = Box::pin(async move {
                let results = flush(items).await;
                for (sender, result) in senders.into_iter().zip(results) {
                    let _ = sender.send(result);
                }
            });
            // No await between this poll and the hand-off below: a caller going away cannot
            // abandon the batch halfway.
            if !in_place || poll_in_place(writing.as_mut()).await.is_pending() {
                // On a lane: each statement of the batch is a wake-up, and on the main runtime
                // each would wait behind every request in flight (see `lane`).
                let _ = self.lane.spawn(writing).await;
            }
            drop(guard);
            // Our result has been sent, unless our item waits for the next batch.
        }
    }
}

thread_local! {
    /// Set while this thread's leader writes its batch in place.
    static WRITING_IN_PLACE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether this thread is writing a batch in place: what the batch's writing would otherwise
/// hand to another thread to keep a worker free (SQLite's commit, `sqlite_conn`) is done here
/// too, or the hand-off this saves would only move to the commit.
pub(crate) fn writing_in_place() -> bool {
    WRITING_IN_PLACE.with(std::cell::Cell::get)
}

/// Runs `f` marked as writing a batch in place (`writing_in_place`).
pub(crate) fn in_place<R>(f: impl FnOnce() -> R) -> R {
    struct Unmark;
    impl Drop for Unmark {
        fn drop(&mut self) {
            WRITING_IN_PLACE.with(|flag| flag.set(false));
        }
    }
    WRITING_IN_PLACE.with(|flag| flag.set(true));
    let _unmark = Unmark; // also if `f` panics
    f()
}

/// Polls `writing` once, in this thread, marked as writing in place.
async fn poll_in_place<F: std::future::Future>(
    mut writing: std::pin::Pin<&mut F>,
) -> std::task::Poll<F::Output> {
    std::future::poll_fn(|cx| std::task::Poll::Ready(in_place(|| writing.as_mut().poll(cx)))).await
}

fn abandoned() -> StoreError {
    StoreError::Unavailable("a batched write was abandoned".into())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_submissions_share_batches_and_each_gets_its_own_result() {
        let batches = Arc::new(AtomicUsize::new(0));
        let counted = batches.clone();
        let flush: Flush<u32, u32> = Arc::new(move |items: Vec<u32>| {
            counted.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                items
                    .into_iter()
                    .map(|i| {
                        if i == 7 {
                            Err(StoreError::Conflict("seven".into()))
                        } else {
                            Ok(i * 10)
                        }
                    })
                    .collect()
            })
        });
        let group = Arc::new(GroupCommit::new(16, flush));
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..100u32 {
            let group = group.clone();
            tasks.spawn(async move { (i, group.submit(i).await) });
        }
        while let Some(done) = tasks.join_next().await {
            let (i, result) = done.unwrap();
            match result {
                Ok(v) => assert_eq!(v, i * 10),
                Err(e) => assert!(i == 7 && matches!(e, StoreError::Conflict(_))),
            }
        }
        let batches = batches.load(Ordering::SeqCst);
        assert!(
            (7..100).contains(&batches),
            "100 concurrent writes in batches of at most 16 took {batches} batches"
        );
    }

    /// A flush recording the name of the thread each batch's writing ended on, waiting first
    /// when told to.
    fn thread_recording_flush(threads: Arc<Mutex<Vec<String>>>) -> Flush<bool, ()> {
        Arc::new(move |waits: Vec<bool>| {
            let threads = threads.clone();
            Box::pin(async move {
                if waits.iter().any(|&w| w) {
                    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                }
                let mut name = std::thread::current().name().unwrap_or("").to_string();
                if writing_in_place() {
                    name.push_str(" (in place)");
                }
                lock(&threads).push(name);
                waits.iter().map(|_| Ok(())).collect()
            })
        })
    }

    #[tokio::test]
    async fn a_small_batch_that_never_waits_is_written_in_place_and_one_that_waits_on_the_lane() {
        let threads = Arc::new(Mutex::new(Vec::new()));
        let group = GroupCommit::new(8, thread_recording_flush(threads.clone())).in_place_up_to(2);
        let here = std::thread::current().name().unwrap_or("").to_string();
        group.submit(false).await.unwrap();
        group.submit(true).await.unwrap();
        let without = GroupCommit::new(8, thread_recording_flush(threads.clone()));
        without.submit(false).await.unwrap();
        assert_eq!(
            *lock(&threads),
            [
                format!("{here} (in place)").as_str(),
                "pomona-commit",
                "pomona-commit"
            ],
            "in place, moved to the lane at its wait, on the lane without in_place_up_to"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn batches_bigger_than_the_in_place_limit_go_to_the_lane() {
        let threads = Arc::new(Mutex::new(Vec::new()));
        let group = Arc::new(
            GroupCommit::new(64, thread_recording_flush(threads.clone())).in_place_up_to(1),
        );
        // Hold the leadership so that the next submissions form one batch.
        let held = group.leader.lock().await;
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..10 {
            let group = group.clone();
            tasks.spawn(async move { group.submit(false).await });
        }
        while lock(&group.pending).len() < 10 {
            tokio::task::yield_now().await;
        }
        drop(held);
        while let Some(done) = tasks.join_next().await {
            done.unwrap().unwrap();
        }
        assert_eq!(*lock(&threads), ["pomona-commit"], "one batch, on the lane");
    }

    #[tokio::test]
    async fn a_lone_submission_is_written_at_once() {
        let flush: Flush<&'static str, usize> = Arc::new(|items: Vec<&'static str>| {
            Box::pin(async move { items.into_iter().map(|s| Ok(s.len())).collect() })
        });
        let group = GroupCommit::new(8, flush);
        assert_eq!(group.submit("four").await.unwrap(), 4);
        assert_eq!(group.submit("").await.unwrap(), 0);
    }
}
