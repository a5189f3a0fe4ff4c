//! Kubernetes events (events.k8s.io/v1) that say what is true when they are recorded. The
//! recorder in kube-runtime folds every event of one reason into one object and keeps its
//! first note, so `kubectl describe` showed `Ready (x3) verified on 0 device(s)` while status
//! said 20. Here an event repeats as a series only when its note is the same; new text is a
//! new event. Events are only recorded on transitions (see `status.rs`), so they stay few.
//! Notes are bounded and never carry a secret (callers pass device ids, reasons and names).

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use std::collections::HashMap;
use std::time::Duration;

/// How long a recorded event may be continued as a series (then a repeat is a new event).
const SERIES_WINDOW: Duration = Duration::from_secs(600);
/// Remembered events beyond which the oldest are forgotten.
const REMEMBERED: usize = 4096;

/// Normal or Warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    Normal,
    Warning,
}

/// What makes two events the same: the object, the reason and the very note.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Same {
    uid: String,
    namespace: String,
    name: String,
    kind: Kind,
    reason: String,
    note: String,
}

struct Recorded {
    name: String,
    count: i32,
    at: Timestamp,
}

/// Records events as `controller`, from this replica (`instance`).
pub(crate) struct Recorder {
    client: Client,
    controller: String,
    instance: String,
    recorded: tokio::sync::Mutex<HashMap<Same, Recorded>>,
}

impl Recorder {
    pub(crate) fn new(client: Client, controller: &str, instance: &str) -> Self {
        Self {
            client,
            controller: controller.to_string(),
            instance: instance.to_string(),
            recorded: Default::default(),
        }
    }

    /// Records `note` about `regarding`: a new event, or the next of a series when the same
    /// note was recorded for it recently.
    pub(crate) async fn publish(
        &self,
        regarding: &ObjectReference,
        kind: Kind,
        reason: &str,
        note: &str,
    ) -> Result<(), kube::Error> {
        let namespace = regarding
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let name = regarding.name.clone().unwrap_or_default();
        let same = Same {
            uid: regarding.uid.clone().unwrap_or_default(),
            namespace: namespace.clone(),
            name: name.clone(),
            kind,
            reason: reason.to_string(),
            note: note.to_string(),
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        let now = Timestamp::now();
        let window = jiff_span(SERIES_WINDOW);
        let mut recorded = self.recorded.lock().await;
        recorded.retain(|_, r| r.at + window > now);
        if let Some(r) = recorded.get_mut(&same) {
            let series = EventSeries {
                count: r.count + 1,
                last_observed_time: MicroTime(now),
            };
            let patch = serde_json::json!({ "series": series });
            match api
                .patch(&r.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    r.count += 1;
                    r.at = now;
                    return Ok(());
                }
                // Expired or deleted by the cluster: record it anew.
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        let event = Event {
            metadata: ObjectMeta {
                // Object names may be 253 characters long, and so may event names.
                name: Some(format!(
                    "{}.{:x}",
                    name.chars().take(200).collect::<String>(),
                    now.as_nanosecond()
                )),
                namespace: Some(namespace),
                ..ObjectMeta::default()
            },
            action: Some("Reconcile".into()),
            event_time: Some(MicroTime(now)),
            note: Some(note.to_string()),
            reason: Some(reason.to_string()),
            regarding: Some(regarding.clone()),
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            type_: Some(
                match kind {
                    Kind::Normal => "Normal",
                    Kind::Warning => "Warning",
                }
                .into(),
            ),
            ..Event::default()
        };
        let created = api.create(&PostParams::default(), &event).await?;
        if recorded.len() >= REMEMBERED {
            recorded.clear(); // a repeat after this is a new event, which is harmless
        }
        recorded.insert(
            same,
            Recorded {
                name: created.metadata.name.unwrap_or_default(),
                count: 1,
                at: now,
            },
        );
        Ok(())
    }
}

fn jiff_span(d: Duration) -> k8s_openapi::jiff::SignedDuration {
    k8s_openapi::jiff::SignedDuration::from_secs(d.as_secs() as i64)
}
