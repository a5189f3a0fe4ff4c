//! Per-device "connection" state for NotNow: a command the device answered NotNow is not offered
//! again until the device starts a new exchange with Idle (PROTOCOL.md §5), which avoids a NotNow
//! loop. The state lives only while an exchange is in progress and is dropped when the server
//! answers with an empty body, so it stays as small as the number of devices mid-exchange.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

#[derive(Default)]
pub struct NotNowSessions {
    skipped: Mutex<HashMap<String, HashSet<String>>>,
}

impl NotNowSessions {
    /// A new exchange (Idle): everything queued may be offered again.
    pub fn start(&self, device_id: &str) {
        self.lock().remove(device_id);
    }

    pub fn skip(&self, device_id: &str, command_uuid: &str) {
        self.lock()
            .entry(device_id.to_string())
            .or_default()
            .insert(command_uuid.to_string());
    }

    pub fn skipped(&self, device_id: &str) -> Vec<String> {
        self.lock()
            .get(device_id)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The exchange ended (empty answer).
    pub fn end(&self, device_id: &str) {
        self.lock().remove(device_id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, HashSet<String>>> {
        self.skipped
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
