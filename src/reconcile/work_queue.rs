//! The reconciler's keyed work queue: which devices want planning (dirty), which are being
//! planned (busy: one reconcile per device at a time), when each wants planning again (one
//! wake-up per device, the newest plan's), and rollout pacing (a fleet-wide change admits
//! devices while few enough have installs outstanding). It knows devices only by id; what a
//! reconcile does is the driver's.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

#[derive(Default)]
pub(super) struct WorkQueue {
    dirty: Mutex<BTreeSet<String>>,
    /// Devices a policy change touched, waiting for a rollout slot (see `Rollout`).
    rollout: Mutex<Rollout>,
    busy: Mutex<BTreeSet<String>>,
    /// When each device wants planning again (a retry coming due, the next inventory): one
    /// entry per device, replaced by each plan, so timers never pile up.
    wakeups: Mutex<Wakeups>,
    /// Reconciles failed in a row, per device (for the retry delay); cleared by a success.
    failures: Mutex<HashMap<String, u32>>,
    notify: tokio::sync::Notify,
}

impl WorkQueue {
    /// Queues a device for planning.
    pub fn mark(&self, device_id: &str) {
        lock(&self.dirty).insert(device_id.to_string());
        self.notify.notify_one();
    }

    /// Queues devices for planning, ahead of rollout pacing.
    pub fn mark_all(&self, devices: impl IntoIterator<Item = String>) {
        lock(&self.dirty).extend(devices);
        self.notify.notify_one();
    }

    /// Queues devices a policy change touched behind rollout pacing (in order, once each).
    pub fn enqueue_rollout(&self, devices: impl IntoIterator<Item = String>) {
        lock(&self.rollout).enqueue(devices);
        self.notify.notify_one();
    }

    /// Plans `device_id` again at `at` (Unix ms), replacing any earlier request for it.
    /// The id is kept as given: pass the fleet index's allocation of it, so that a wake-up per
    /// enrolled device costs no id of its own.
    pub fn schedule(&self, device_id: Arc<str>, at: i64) {
        lock(&self.wakeups).schedule(device_id, at);
    }

    /// Plans `device_id` at `at` at the latest, keeping an earlier time it already has.
    pub fn schedule_no_later(&self, device_id: Arc<str>, at: i64) {
        lock(&self.wakeups).schedule_no_later(device_id, at);
        self.notify.notify_one();
    }

    /// Records whether a device has installs outstanding (its rollout slot).
    pub fn set_installing(&self, device_id: &str, installing: bool, now: i64) {
        if lock(&self.rollout).set_installing(device_id, installing, now) {
            self.notify.notify_one(); // a slot came free
        }
    }

    /// Rollout progress: (devices waiting for a slot, devices with installs outstanding).
    pub fn rollout_progress(&self) -> (usize, usize) {
        let rollout = lock(&self.rollout);
        (rollout.waiting.len(), rollout.installing.len())
    }

    /// Devices to plan now, at most `max`: due wake-ups and devices admitted by the rollout
    /// (at most `rollout_limit` with installs outstanding, 0 for no limit) join the dirty
    /// ones, and those not being planned already are taken. Also the next wake-up time.
    pub fn take_ready(
        &self,
        rollout_limit: usize,
        now: i64,
        max: usize,
    ) -> (Vec<String>, Option<i64>) {
        let (due, next_wakeup) = lock(&self.wakeups).take_due(now);
        let admitted = lock(&self.rollout).admit(rollout_limit, now);
        let mut dirty = lock(&self.dirty);
        dirty.extend(due);
        dirty.extend(admitted);
        let busy = lock(&self.busy);
        let ready: Vec<String> = dirty
            .iter()
            .filter(|d| !busy.contains(*d))
            .take(max)
            .cloned()
            .collect();
        for d in &ready {
            dirty.remove(d);
        }
        (ready, next_wakeup)
    }

    /// A device's reconcile starts: it is not taken again until `finished`.
    pub fn started(&self, device_id: &str) {
        lock(&self.busy).insert(device_id.to_string());
    }

    pub fn finished(&self, device_id: &str) {
        lock(&self.busy).remove(device_id);
    }

    /// A device's reconcile failed: how many times in a row now.
    pub fn failed(&self, device_id: &str) -> u32 {
        let mut failures = lock(&self.failures);
        let n = failures.entry(device_id.to_string()).or_insert(0);
        *n += 1;
        *n
    }

    /// A device's reconcile succeeded: its next failure is a first one again.
    pub fn succeeded(&self, device_id: &str) {
        let mut failures = lock(&self.failures);
        if !failures.is_empty() {
            failures.remove(device_id);
        }
    }

    /// Resolves when devices were queued or a rollout slot came free.
    pub async fn changed(&self) {
        self.notify.notified().await
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Rollout pacing. A policy change can touch the whole fleet at once; its devices queue here
/// (in order, once each) and are admitted for planning while fewer than the limit have
/// profile installs outstanding (queued or sent, not yet answered). A device leaves
/// `installing` when its plan has no install in flight, or after `ROLLOUT_SLOT_MS` — so devices
/// that are switched off cannot stall a rollout. Device reports and retries bypass the queue:
/// they concern devices already admitted, or one device at a time.
#[derive(Default)]
struct Rollout {
    waiting: std::collections::VecDeque<String>,
    queued: std::collections::HashSet<String>,
    /// Device → when it took its slot (Unix ms).
    installing: HashMap<String, i64>,
}

/// How long a device with installs outstanding holds a rollout slot.
const ROLLOUT_SLOT_MS: i64 = 120_000;

impl Rollout {
    fn enqueue(&mut self, devices: impl IntoIterator<Item = String>) {
        for device in devices {
            if self.queued.insert(device.clone()) {
                self.waiting.push_back(device);
            }
        }
    }

    /// Devices to plan now: as many as there are free slots (`limit` 0: all).
    fn admit(&mut self, limit: usize, now: i64) -> Vec<String> {
        if self.waiting.is_empty() {
            return Vec::new();
        }
        self.installing
            .retain(|_, since| *since + ROLLOUT_SLOT_MS > now);
        let free = if limit == 0 {
            usize::MAX
        } else {
            limit.saturating_sub(self.installing.len())
        };
        let mut admitted = Vec::new();
        while admitted.len() < free {
            let Some(device) = self.waiting.pop_front() else {
                break;
            };
            self.queued.remove(&device);
            // Counted as installing until its plan says otherwise, so one pass cannot admit
            // more devices than there are slots.
            self.installing.insert(device.clone(), now);
            admitted.push(device);
        }
        if self.waiting.is_empty() {
            // A fleet-wide change queued every device; once the queue drains, its room (about
            // 60 bytes per device) goes back instead of staying allocated until the next one.
            self.waiting = std::collections::VecDeque::new();
            self.queued = std::collections::HashSet::new();
        }
        admitted
    }

    /// Records whether a device has installs outstanding; true when a slot came free.
    fn set_installing(&mut self, device: &str, installing: bool, now: i64) -> bool {
        if installing {
            self.installing.entry(device.to_string()).or_insert(now);
            false
        } else {
            self.installing.remove(device).is_some() && !self.waiting.is_empty()
        }
    }
}

/// Pending wakeups, by time (to find what is due) and by device (one entry each).
#[derive(Default)]
struct Wakeups {
    by_time: BTreeSet<(i64, Arc<str>)>,
    /// Each device's entry shares its id with `by_time`, and rescheduling reuses it: every
    /// plan reschedules its device, so this keeps a rollout from allocating two ids per plan.
    by_device: HashMap<Arc<str>, i64>,
}

impl Wakeups {
    /// The newest plan knows best: its time replaces the device's previous one.
    fn schedule(&mut self, device_id: impl AsRef<str> + Into<Arc<str>>, at: i64) {
        let id = match self.by_device.get_key_value(device_id.as_ref()) {
            Some((id, &old)) => {
                let id = id.clone();
                self.by_time.remove(&(old, id.clone()));
                id
            }
            None => device_id.into(),
        };
        self.by_device.insert(id.clone(), at);
        self.by_time.insert((at, id));
    }

    /// Makes the device due at `at` at the latest, keeping an earlier time it already has.
    fn schedule_no_later(&mut self, device_id: impl AsRef<str> + Into<Arc<str>>, at: i64) {
        if self
            .by_device
            .get(device_id.as_ref())
            .is_none_or(|old| *old > at)
        {
            self.schedule(device_id, at);
        }
    }

    /// Removes and returns the devices due at `now`, and the next time after that.
    fn take_due(&mut self, now: i64) -> (Vec<String>, Option<i64>) {
        let mut due = Vec::new();
        while self.by_time.first().is_some_and(|(at, _)| *at <= now) {
            let (_, device) = self.by_time.pop_first().expect("checked above");
            self.by_device.remove(&device);
            due.push(device.to_string());
        }
        (due, self.by_time.first().map(|(at, _)| *at))
    }
}

#[cfg(test)]
mod rollout_tests {
    use super::Rollout;

    #[test]
    fn a_rollout_admits_only_as_many_devices_as_there_are_free_slots() {
        let mut r = Rollout::default();
        r.enqueue(["A", "B", "C", "D", "A"].map(String::from));
        assert_eq!(r.admit(2, 0), ["A", "B"].map(String::from));
        assert!(
            r.admit(2, 0).is_empty(),
            "both slots are taken until A and B are planned"
        );
        assert!(!r.set_installing("A", true, 0));
        assert!(
            r.set_installing("B", false, 0),
            "B needed no install: its slot is free"
        );
        assert_eq!(r.admit(2, 0), ["C"].map(String::from));
        // A device that never answers gives its slot up after a while.
        assert!(r.admit(2, 1_000).is_empty());
        assert_eq!(r.admit(2, super::ROLLOUT_SLOT_MS), ["D"].map(String::from));
        r.enqueue(["E", "F"].map(String::from));
        assert_eq!(r.admit(0, 0).len(), 2, "0 means no limit");
        assert_eq!(
            (r.waiting.capacity(), r.queued.capacity()),
            (0, 0),
            "a drained queue gives its room back"
        );
    }
}

#[cfg(test)]
mod wakeup_tests {
    use super::Wakeups;

    #[test]
    fn one_wakeup_per_device_and_the_newest_plan_wins() {
        let mut w = Wakeups::default();
        w.schedule("A", 100);
        let first = w.by_device.get_key_value("A").unwrap().0.clone();
        w.schedule("A", 500); // re-planned: the later time replaces the earlier one
        let (kept, _) = w.by_device.get_key_value("A").unwrap();
        assert!(
            std::sync::Arc::ptr_eq(kept, &first),
            "rescheduling allocates no new id"
        );
        assert!(w
            .by_time
            .iter()
            .all(|(_, id)| std::sync::Arc::ptr_eq(id, &first)));
        w.schedule("B", 200);
        assert_eq!(w.take_due(150), (vec![], Some(200)));
        assert_eq!(w.take_due(300), (vec!["B".to_string()], Some(500)));
        assert_eq!(w.take_due(500), (vec!["A".to_string()], None));
        assert_eq!(w.by_device.len(), 0);
    }

    #[test]
    fn a_deadline_keeps_an_earlier_wakeup_and_brings_a_later_one_forward() {
        let mut w = Wakeups::default();
        w.schedule("A", 100);
        w.schedule_no_later("A", 300); // already due sooner: kept
        w.schedule("B", 900);
        w.schedule_no_later("B", 400); // brought forward
        w.schedule_no_later("C", 500); // none yet: set
        assert_eq!(w.take_due(100), (vec!["A".to_string()], Some(400)));
        assert_eq!(
            w.take_due(500),
            (vec!["B".to_string(), "C".to_string()], None)
        );
    }
}
