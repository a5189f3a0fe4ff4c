//! Wake on push: a simulated device that does not poll, and runs one command exchange each
//! time APNs (in tests, the local APNs server) relays a push for its token. Devices in this mode
//! reach the server only because they were pushed, which is what end-to-end push tests check.
//!
//! Owns only the waiting loop; how a push reaches the device (a `Notify` per token) is up to
//! whoever delivers pushes. Must not poll on its own.

use super::device::{SimDevice, SimError};
use std::sync::Arc;
use tokio::sync::{watch, Notify};

/// What a device in wake-on-push mode did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct WakeStats {
    /// Pushes that woke the device (several pushes before it wakes count once).
    pub wakes: u64,
    /// Exchanges that failed (the device waits for the next push, as a real one would).
    pub failed_exchanges: u64,
    /// Why the last failed exchange failed (for test and benchmark messages).
    pub last_failure: Option<String>,
}

/// Runs exchanges on each push until `stop` turns true or the device is erased.
pub async fn answer_pushes(
    device: &mut SimDevice,
    pushed: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) -> WakeStats {
    let mut stats = WakeStats::default();
    loop {
        if *stop.borrow() {
            return stats;
        }
        tokio::select! {
            _ = pushed.notified() => {}
            _ = stop.changed() => return stats,
        }
        stats.wakes += 1;
        match device.exchange().await {
            // A wiped device ignores every later push.
            Ok(_) if device.is_erased() => return stats,
            Ok(_) => {}
            Err(SimError::Erased) => return stats,
            Err(e) => {
                stats.failed_exchanges += 1;
                stats.last_failure = Some(e.to_string());
                tracing::debug!(device = device.udid(), error = %e, "woken exchange failed");
            }
        }
    }
}
