//! Batches "last seen" times: every device request records one in memory and a background task
//! writes them in one transaction every few seconds. One row update per request at fleet scale
//! is the hot-row write that broke earlier MDM servers (DESIGN.md, lessons).

use crate::store::EnrollmentStore;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct LastSeen {
    store: Arc<dyn EnrollmentStore>,
    pending: Mutex<HashMap<String, i64>>,
}

impl LastSeen {
    pub fn new(store: Arc<dyn EnrollmentStore>) -> Self {
        Self {
            store,
            pending: Mutex::new(HashMap::new()),
        }
    }

    pub fn touch(&self, device_id: &str, at: i64) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let entry = pending.entry(device_id.to_string()).or_insert(at);
        *entry = (*entry).max(at);
    }

    /// Writes what is pending; on failure the times are put back for the next round.
    pub async fn flush(&self) {
        let batch: Vec<(String, i64)> = {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            pending.drain().collect()
        };
        if batch.is_empty() {
            return;
        }
        if let Err(e) = self.store.record_last_seen(&batch).await {
            tracing::warn!(error = %e, devices = batch.len(), "could not write last-seen times; will retry");
            for (id, at) in batch {
                self.touch(&id, at);
            }
        }
    }

    pub fn spawn_flusher(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                this.flush().await;
            }
        })
    }
}
