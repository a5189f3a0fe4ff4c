//! When each device is pushed. Rows in the store's `push_state` say when a device is due; this
//! loop claims due rows in batches (through the index on `next_push_at`, so its cost follows the
//! pending pushes, not the fleet) as they come due, sends them concurrently on the one APNs
//! connection while claiming more (up to two batches in flight), and writes back what comes next:
//!
//! - accepted → the next push only if the device stays silent, after 1 min, 5 min, 30 min, 2 h,
//!   then daily (configurable); a device that connects and drains its queue starts over, one
//!   that only answers NotNow keeps backing off;
//! - 410 Unregistered / BadDeviceToken → token invalid, no pushes until a new TokenUpdate;
//! - 429, 5xx, connection failures → retried after a jittered exponential delay, and when APNs
//!   fails for many devices in a row a circuit breaker pauses all pushes for a while;
//! - nothing queued any more, or not pushable (no TokenUpdate yet) → the row goes idle.
//!
//! Must not send anything but wake-ups, and never holds a push only in memory.

use super::client::{ApnsResponse, Disposition, PushError};
use super::Push;
use crate::store::{DuePush, PushOutcome, PushSchedule};
use std::sync::Arc;
use std::time::Duration;

/// Timing of the scheduler. Tests shorten everything.
#[derive(Debug, Clone)]
pub struct ScheduleSettings {
    /// Enqueues within this window after the first are covered by one push.
    pub coalesce: Duration,
    /// Re-push delays for a device that does not answer; the last one repeats.
    pub backoff: Vec<Duration>,
    /// First delay after APNs failed to take a push; doubles per failure up to `retry_max`.
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// How often due rows are looked for when nothing wakes the scheduler.
    pub poll_interval: Duration,
    /// Rows claimed per batch.
    pub batch: i64,
    /// Consecutive failures (across devices) that open the circuit breaker.
    pub breaker_threshold: u32,
    /// How long a claimed push is reserved for the process that claimed it; if that process
    /// dies, the push is due again after this. Longer than one push may take.
    pub lease: Duration,
}

impl Default for ScheduleSettings {
    fn default() -> Self {
        Self {
            coalesce: Duration::from_secs(1),
            backoff: [60, 300, 1800, 7200, 86_400]
                .into_iter()
                .map(Duration::from_secs)
                .collect(),
            retry_base: Duration::from_secs(5),
            retry_max: Duration::from_secs(600),
            poll_interval: Duration::from_secs(1),
            batch: 500,
            breaker_threshold: 20,
            lease: Duration::from_secs(60),
        }
    }
}

impl ScheduleSettings {
    /// Delay before re-pushing a device that has not answered `attempts` accepted pushes.
    pub fn backoff_after(&self, attempts: i64) -> Duration {
        let index = (attempts.max(1) - 1) as usize;
        self.backoff
            .get(index)
            .or(self.backoff.last())
            .copied()
            .unwrap_or(Duration::from_secs(86_400))
    }

    /// Delay before retrying after the `failures`-th consecutive failure, without jitter.
    pub fn retry_after(&self, failures: i64) -> Duration {
        let doublings = (failures.max(1) - 1).min(20) as u32;
        self.retry_base
            .saturating_mul(2u32.saturating_pow(doublings))
            .min(self.retry_max)
    }
}

/// ±20 % so that devices failed together do not retry together.
fn jitter(d: Duration) -> Duration {
    d.mul_f64(0.8 + fastrand::f64() * 0.4)
}

/// Opens after `threshold` consecutive failures across devices; while open, due pushes are
/// postponed without being tried. Each opening lasts twice the previous one (up to retry_max);
/// one success closes it.
#[derive(Debug, Default)]
pub struct Breaker {
    consecutive_failures: u32,
    openings: u32,
    open_until: i64,
}

impl Breaker {
    pub fn is_open(&self, now: i64) -> bool {
        now < self.open_until
    }

    pub fn open_until(&self) -> i64 {
        self.open_until
    }

    pub fn success(&mut self) {
        self.consecutive_failures = 0;
        self.openings = 0;
    }

    /// Records a failure; returns true when this failure opened the breaker.
    pub fn failure(&mut self, now: i64, settings: &ScheduleSettings) -> bool {
        self.consecutive_failures += 1;
        if self.consecutive_failures < settings.breaker_threshold.max(1) || self.is_open(now) {
            return false;
        }
        self.openings += 1;
        let pause = settings.retry_after(self.openings as i64);
        self.open_until = now + pause.as_millis() as i64;
        true
    }
}

/// The label a push outcome is counted under in `/metrics`.
pub fn metric_label(sent: &Result<ApnsResponse, PushError>) -> &'static str {
    match sent {
        Ok(r) => match r.disposition() {
            Disposition::Accepted => "accepted",
            Disposition::TokenInvalid => "token_invalid",
            Disposition::Transient => "apns_unavailable",
            Disposition::Misconfigured => "rejected",
        },
        Err(PushError::CertificateRejected { .. }) => "certificate_rejected",
        Err(_) => "connection_failed",
    }
}

impl Push {
    /// Starts the scheduler task (only when a push certificate is configured), on a thread of
    /// its own: its claims are database transactions, and on the main runtime each of their
    /// statements would wait behind every device request in flight (see `crate::lane`).
    pub fn spawn_scheduler(self: &Arc<Self>) -> Option<tokio::task::JoinHandle<()>> {
        self.client.as_ref()?;
        let lane = self.lane.get_or_init(|| {
            crate::lane::Lane::start("pomona-push").expect("starting the push thread")
        });
        let this = self.clone();
        Some(lane.spawn(async move { this.run().await }))
    }

    /// The scheduler loop. Pushes are claimed as they come due: when a wake-up's coalescing
    /// window ends (`wake` leaves a hint of when), at each poll (rows due for retries,
    /// backoff, other replicas' requests), and when a push in flight finishes while more were
    /// due than could be started. Claiming never waits for the pushes already in flight, so a
    /// fleet-wide change streams out at the rate APNs takes it instead of batch by batch.
    async fn run(self: Arc<Self>) {
        let mut last_expiry_check = tokio::time::Instant::now();
        let mut next_poll = tokio::time::Instant::now();
        let mut pushes = tokio::task::JoinSet::new();
        let mut more_due = false;
        loop {
            let hinted = self.take_due_hints(crate::vocab::clock::now_millis());
            let polling = tokio::time::Instant::now() >= next_poll;
            if polling {
                next_poll = tokio::time::Instant::now() + self.schedule.poll_interval;
            }
            if hinted || polling || more_due {
                more_due = match self.start_due(&mut pushes).await {
                    Ok(more) => more,
                    Err(e) => {
                        tracing::warn!(error = %e, "push scheduler: database unavailable; retrying");
                        false
                    }
                };
            }
            if last_expiry_check.elapsed() > Duration::from_secs(6 * 3600) {
                last_expiry_check = tokio::time::Instant::now();
                self.warn_about_expiry();
            }
            let until_hint = self.next_due_hint().map(|at| {
                Duration::from_millis((at - crate::vocab::clock::now_millis()).max(0) as u64)
            });
            let until_poll = next_poll.saturating_duration_since(tokio::time::Instant::now());
            let wait = until_hint.map_or(until_poll, |h| h.min(until_poll));
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
                Some(done) = pushes.join_next(), if !pushes.is_empty() => log_push_task(done),
            }
        }
    }

    /// Claims the pushes due now and starts them, up to `2 × batch` in flight. Returns true
    /// when it stopped for want of room (more may be due).
    async fn start_due(
        self: &Arc<Self>,
        pushes: &mut tokio::task::JoinSet<Result<(), crate::store::StoreError>>,
    ) -> Result<bool, crate::store::StoreError> {
        let max_in_flight = (self.schedule.batch.max(1) * 2) as usize;
        loop {
            while let Some(done) = pushes.try_join_next() {
                log_push_task(done);
            }
            let room = max_in_flight.saturating_sub(pushes.len());
            if room == 0 {
                return Ok(true);
            }
            let limit = (room as i64).min(self.schedule.batch.max(1));
            let now = crate::vocab::clock::now_millis();
            let lease = now + self.schedule.lease.as_millis() as i64;
            let due = self.store.claim_due_pushes(now, lease, limit).await?;
            let count = due.len() as i64;
            for push in due {
                let this = self.clone();
                pushes.spawn(async move { this.handle(push).await });
            }
            if count < limit {
                return Ok(false);
            }
        }
    }

    /// Forgets the wake-up hints due by `now`; true if there were any.
    fn take_due_hints(&self, now: i64) -> bool {
        let mut hints = self.due_hints.lock().unwrap_or_else(|p| p.into_inner());
        let mut any = false;
        while hints.peek().is_some_and(|std::cmp::Reverse(at)| *at <= now) {
            hints.pop();
            any = true;
        }
        any
    }

    fn next_due_hint(&self) -> Option<i64> {
        let hints = self.due_hints.lock().unwrap_or_else(|p| p.into_inner());
        hints.peek().map(|std::cmp::Reverse(at)| *at)
    }

    async fn handle(&self, due: DuePush) -> Result<(), crate::store::StoreError> {
        let now = crate::vocab::clock::now_millis();
        let idle = PushSchedule {
            claimed_until: due.claimed_until,
            next_push_at: None,
            attempts: 0,
            failures: 0,
            push_if_queued: false,
        };
        let Some(credentials) = due.credentials.as_ref().filter(|_| due.has_queued_commands) else {
            // Nothing to wake it for, or it cannot be pushed until its TokenUpdate (which
            // schedules a push itself when commands are waiting). Work queued since the claim
            // asked for a push that the claim covered: the record pushes it after all.
            let nothing_queued = PushSchedule {
                push_if_queued: due.credentials.is_some(),
                ..idle
            };
            return self
                .record(&due, now, false, None, false, nothing_queued)
                .await;
        };
        let breaker_until = {
            let breaker = self.breaker.lock().unwrap_or_else(|p| p.into_inner());
            breaker.is_open(now).then(|| breaker.open_until())
        };
        if let Some(until) = breaker_until {
            let later = PushSchedule {
                next_push_at: Some(until + jitter(Duration::from_millis(500)).as_millis() as i64),
                attempts: due.attempts,
                failures: due.failures,
                ..idle
            };
            return self.record(&due, now, false, None, false, later).await;
        }
        // A device seen since the last push answered it (its connect may have come before the
        // push was recorded). With new work its backoff starts over; with only commands it
        // deferred (NotNow) the backoff goes on, so a busy device is not pushed every minute.
        let answered = matches!((due.last_seen_at, due.last_push_at), (Some(seen), Some(pushed)) if seen >= pushed);
        let attempts = if answered && due.has_commands_queued_since_seen {
            0
        } else {
            due.attempts
        };
        let client = self
            .client
            .as_ref()
            .expect("scheduler runs only with a client");
        let sent = client
            .push(&credentials.token, &credentials.push_magic)
            .await;
        self.metrics.count(metric_label(&sent));
        let now = crate::vocab::clock::now_millis();
        let after = |d: Duration| Some(now + d.as_millis() as i64);
        match &sent {
            Ok(response) => match response.disposition() {
                Disposition::Accepted => {
                    self.breaker
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .success();
                    let attempts = attempts + 1;
                    let next = PushSchedule {
                        next_push_at: after(self.schedule.backoff_after(attempts)),
                        attempts,
                        failures: 0,
                        ..idle
                    };
                    tracing::debug!(device = %due.device_id, attempts, "push accepted by APNs");
                    self.record(&due, now, true, Some(response.summary()), false, next)
                        .await
                }
                Disposition::TokenInvalid => {
                    tracing::warn!(device = %due.device_id, result = %response.summary(), "APNs says the push token is invalid: no more pushes until the device sends a new TokenUpdate");
                    self.record(&due, now, false, Some(response.summary()), true, idle)
                        .await
                }
                disposition => {
                    if disposition == Disposition::Misconfigured {
                        tracing::error!(device = %due.device_id, result = %response.summary(), topic = client.topic(), "APNs rejected the push request: check the push certificate, its topic and the endpoint");
                    }
                    self.failed(&due, now, attempts, response.summary(), idle)
                        .await
                }
            },
            Err(error) => {
                tracing::debug!(device = %due.device_id, error = %error, "push not handed to APNs; will retry");
                self.failed(&due, now, attempts, format!("failed: {error}"), idle)
                    .await
            }
        }
    }

    async fn failed(
        &self,
        due: &DuePush,
        now: i64,
        attempts: i64,
        result: String,
        idle: PushSchedule,
    ) -> Result<(), crate::store::StoreError> {
        let opened = self
            .breaker
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .failure(now, &self.schedule);
        if opened {
            tracing::warn!(last_result = %result, "APNs is failing for many devices: pausing pushes (circuit breaker open)");
        }
        let failures = due.failures + 1;
        let retry = jitter(self.schedule.retry_after(failures));
        let next = PushSchedule {
            next_push_at: Some(now + retry.as_millis() as i64),
            attempts,
            failures,
            ..idle
        };
        self.record(due, now, false, Some(result), false, next)
            .await
    }

    /// Records a push's outcome in a task of its own, so that the push gives its place among
    /// those in flight back at once: a fleet-wide change pushes at the rate APNs answers, not
    /// at the rate outcomes are committed (each waits for a batch of the write queue, up to a
    /// second under load, and with the place held 1,000 places allowed about 1,000 pushes a
    /// second). Until it is recorded, the push's claim keeps the device from being claimed
    /// again; should the write fail, the claim's lease runs out and the push is due again.
    async fn record(
        &self,
        due: &DuePush,
        now: i64,
        accepted: bool,
        result: Option<String>,
        token_invalid: bool,
        schedule: PushSchedule,
    ) -> Result<(), crate::store::StoreError> {
        let outcome = PushOutcome {
            device_id: due.device_id.clone(),
            at: now,
            accepted,
            result,
            token_invalid,
            schedule: Some(schedule),
        };
        let store = self.store.clone();
        tokio::spawn(async move {
            // Batched with the other writes arriving together (see `Store::record_push`).
            log_push_task(Ok(store.record_push(&outcome).await));
        });
        Ok(())
    }
}

fn log_push_task(done: Result<Result<(), crate::store::StoreError>, tokio::task::JoinError>) {
    match done {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "push scheduler: could not record a push outcome; it will be retried after its lease")
        }
        Err(e) => tracing::error!(error = %e, "push scheduler: a push task failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_follows_the_schedule_then_repeats_the_daily_cap() {
        let s = ScheduleSettings::default();
        let minutes = |n: u64| Duration::from_secs(n * 60);
        assert_eq!(s.backoff_after(1), minutes(1));
        assert_eq!(s.backoff_after(2), minutes(5));
        assert_eq!(s.backoff_after(3), minutes(30));
        assert_eq!(s.backoff_after(4), minutes(120));
        assert_eq!(s.backoff_after(5), minutes(1440));
        assert_eq!(s.backoff_after(50), minutes(1440));
    }

    #[test]
    fn retries_double_up_to_the_cap() {
        let s = ScheduleSettings::default();
        assert_eq!(s.retry_after(1), Duration::from_secs(5));
        assert_eq!(s.retry_after(2), Duration::from_secs(10));
        assert_eq!(s.retry_after(4), Duration::from_secs(40));
        assert_eq!(s.retry_after(40), Duration::from_secs(600));
    }

    #[test]
    fn breaker_opens_after_the_threshold_and_closes_on_success() {
        let s = ScheduleSettings {
            breaker_threshold: 3,
            ..ScheduleSettings::default()
        };
        let mut b = Breaker::default();
        assert!(!b.failure(0, &s));
        assert!(!b.failure(0, &s));
        assert!(b.failure(0, &s), "third failure opens");
        assert!(b.is_open(1));
        assert!(!b.is_open(b.open_until()));
        b.success();
        assert!(!b.failure(10_000, &s), "a success resets the count");
    }

    #[test]
    fn jitter_stays_within_twenty_percent() {
        for _ in 0..100 {
            let d = jitter(Duration::from_secs(10));
            assert!(d >= Duration::from_secs(8) && d <= Duration::from_secs(12));
        }
    }
}
