//! Status of the Pomona custom resources, written by the leader: kstatus conditions (`Ready`,
//! `Reconciling`, `Stalled`, each with the `observedGeneration` it judges; computed without I/O
//! in `conditions.rs`), the generation judged as `status.observedGeneration` (refused ones too,
//! as kstatus expects), the generation in force and its spec as `status.inForce` (what devices
//! get, and what a restarted controller starts from), device counts from the store and
//! the reconciler's targeting index, a bounded message naming failing devices, events on
//! transitions with the text of the moment, and the Profile/Restrictions finalizer (added to live objects; released once
//! no device carries the profile, at once for `removalPolicy: Keep`, or after the removal
//! timeout, naming the devices that kept it). DeviceActions get the status `action_status.rs`
//! renders and no finalizer (deleting an action does not undo it). Secrets never appear here:
//! messages carry device ids, device-reported reasons and Secret names only, never a PIN.

use super::action_status::{action_conditions, device_line, render_action, ActionTally};
use super::conditions::{plain_conditions, profile_conditions, render, Counts, Desired};
use super::events::{Kind, Recorder};
use super::source::{ObjectKey, Verdict};
use super::{name_of, BuiltGetter, KubeSettings, Readers, FINALIZER};
use crate::policy::actions::ActionTarget;
use crate::policy::crd::InForce;
use crate::policy::crd::{bounded, Condition, PolicyStatus};
use crate::policy::model::DeviceActionResource;
use crate::reconcile::driver::Reconciler;
use crate::store::actions::{ActionCounts, ActionPhase};
use crate::store::StatusReads;
use crate::vocab::profiles::RemovalPolicy;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Failing or lingering devices named in a message (the rest are counted).
const DEVICES_NAMED: i64 = 5;
/// Devices listed in a DeviceAction's status (failures first; the rest are counted).
const ACTION_DEVICES_LISTED: i64 = 50;
/// Stalled reasons an author resolves by editing objects: a new message is a new event.
const AUTHOR_REASONS: &[&str] = &["Invalid", "GroupMissing"];

/// One object's verdict from the latest build, as the status writer needs it.
struct Judged {
    key: ObjectKey,
    /// `metadata.generation` as judged.
    generation: Option<i64>,
    verdict: Verdict,
    /// What the object has in force (written to `status.inForce`).
    in_force: Option<InForce>,
}

struct Writer {
    client: Client,
    recorder: Recorder,
    settings: KubeSettings,
    reconciler: Arc<Reconciler>,
    store: Arc<dyn StatusReads>,
}

/// Writes status now and whenever kicked or every `status_interval`.
pub(crate) async fn status_loop(
    client: Client,
    settings: KubeSettings,
    readers: Readers,
    built: BuiltGetter,
    reconciler: Arc<Reconciler>,
    store: Arc<dyn StatusReads>,
    kick: Arc<tokio::sync::Notify>,
) {
    let recorder = Recorder::new(client.clone(), "pomona", &settings.identity);
    let writer = Writer {
        client,
        recorder,
        settings,
        reconciler,
        store,
    };
    let mut applied = writer.reconciler.applied_revisions();
    let mut failures = 0;
    loop {
        let mut wait = writer.settings.status_interval;
        if let Some(built) = built() {
            // The build reaches the reconciler through the policy feed: count targets only once
            // it is applied, or a pass could count a new revision against the old membership.
            // Bounded: a later pass corrects what this one writes.
            let revision = built.snapshot.revision.as_str();
            let _ = tokio::time::timeout(
                std::time::Duration::from_secs(5),
                applied.wait_for(|r| r.as_deref() == Some(revision)),
            )
            .await;
            match writer.pass(&readers, &built).await {
                Ok(()) => failures = 0,
                Err(e) => {
                    failures += 1;
                    let error = super::classify(e);
                    // Sooner than the next regular pass while the cause may be brief, never later.
                    if let Some(delay) = error.retry_after(failures) {
                        wait = wait.min(delay);
                    }
                    if error.needs_attention() {
                        tracing::error!(%error, failures, "writing custom resource status failed");
                    } else {
                        tracing::warn!(%error, failures, "writing custom resource status failed; retrying");
                    }
                }
            }
        }
        tokio::select! {
            _ = kick.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// One object's status could not be written: the others still are, and the next pass retries.
fn report(object: &str, e: anyhow::Error) {
    tracing::warn!(%object, error = format!("{e:#}"), "could not update a custom resource; retrying");
}

impl Writer {
    async fn pass(&self, readers: &Readers, built: &super::source::Built) -> anyhow::Result<()> {
        let now = crate::pki::ca::rfc3339_seconds(crate::vocab::clock::now_millis() / 1000);
        let revision = built.snapshot.revision.clone();
        let counts: BTreeMap<String, crate::store::reconcile::ProfileCounts> = self
            .store
            .profile_counts()
            .await?
            .into_iter()
            .map(|c| {
                let declared = built.snapshot.profiles.get(&c.profile_key);
                (
                    c.profile_key.clone(),
                    c.against(declared.map(|p| p.hash.as_str())),
                )
            })
            .collect();
        let targeted = self.reconciler.targeted_counts();
        let members = self.reconciler.group_member_counts();
        let verdict_of = |kind: &'static str, o: &dyn ResourceMeta| -> Option<Judged> {
            let key = ObjectKey {
                kind,
                namespace: o.ns(),
                name: o.nm(),
            };
            let (generation, verdict) = built.verdicts.get(&key)?.clone();
            Some(Judged {
                generation,
                verdict,
                in_force: built.in_force.get(&key).map(|r| r.in_force.clone()),
                key,
            })
        };

        for o in readers.profiles.state() {
            let Some(judged) = verdict_of("Profile", &*o) else {
                continue;
            };
            let removal = o.spec.removal_policy;
            self.profile_like(&*o, &judged, removal, &counts, &targeted, &revision, &now)
                .await
                .unwrap_or_else(|e| report(&name_of(&*o), e));
        }
        for o in readers.restrictions.state() {
            let Some(judged) = verdict_of("Restrictions", &*o) else {
                continue;
            };
            let removal = o.spec.removal_policy;
            self.profile_like(&*o, &judged, removal, &counts, &targeted, &revision, &now)
                .await
                .unwrap_or_else(|e| report(&name_of(&*o), e));
        }
        for o in readers.groups.state() {
            let Some(judged) = verdict_of("DeviceGroup", &*o) else {
                continue;
            };
            let members = members.get(&judged.key.qualified_name()).copied();
            let desired = plain_conditions(&judged.verdict, Some(members.unwrap_or(0)));
            self.write(&*o, &desired, &judged, &revision, o.status.as_ref(), &now)
                .await
                .unwrap_or_else(|e| report(&name_of(&*o), e));
        }
        let action_ids: Vec<String> = built
            .snapshot
            .actions
            .values()
            .map(|a| a.action_id())
            .collect();
        let action_counts: HashMap<String, ActionCounts> = if action_ids.is_empty() {
            HashMap::new()
        } else {
            self.store
                .action_counts(&action_ids)
                .await?
                .into_iter()
                .map(|c| (c.action_id.clone(), c))
                .collect()
        };
        let matched = self.reconciler.action_target_counts();
        for o in readers.actions.state() {
            let Some(judged) = verdict_of("DeviceAction", &*o) else {
                continue;
            };
            self.device_action(
                &o,
                built,
                &judged,
                &action_counts,
                &matched,
                &revision,
                &now,
            )
            .await
            .unwrap_or_else(|e| report(&name_of(&*o), e));
        }
        for o in readers.labels.state() {
            let Some(judged) = verdict_of("DeviceLabels", &*o) else {
                continue;
            };
            let desired = plain_conditions(&judged.verdict, None);
            self.write(&*o, &desired, &judged, &revision, o.status.as_ref(), &now)
                .await
                .unwrap_or_else(|e| report(&name_of(&*o), e));
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn profile_like<K>(
        &self,
        o: &K,
        judged: &Judged,
        removal: RemovalPolicy,
        counts: &BTreeMap<String, crate::store::reconcile::ProfileCounts>,
        targeted: &HashMap<String, i64>,
        revision: &str,
        now: &str,
    ) -> anyhow::Result<()>
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + HasStatus
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        let key = &judged.key.snapshot_key();
        let c = counts.get(key).cloned().unwrap_or_default();
        let counts = Counts {
            targeted: targeted.get(key).copied().unwrap_or(0),
            verified: c.verified,
            pending: c.pending + c.verifying,
            // A removal given up is a failure on the device, as an install given up is.
            failed: c.failed + c.removal_failed,
            removing: c.removing,
        };
        let api: Api<K> = Api::namespaced(
            self.client.clone(),
            &o.meta().namespace.clone().unwrap_or_default(),
        );
        let has_finalizer = o.finalizers().iter().any(|f| f == FINALIZER);
        if o.meta().deletion_timestamp.is_some() {
            if has_finalizer {
                self.maybe_release(&api, o, key, removal, &counts).await?;
            }
            // Status of a deleting object is still written (it shows the removal progress).
        } else if !has_finalizer {
            let mut finalizers = o.finalizers().to_vec();
            finalizers.push(FINALIZER.to_string());
            patch_finalizers(&api, o, finalizers).await?;
        }
        let failing = if counts.failed > 0 {
            self.store
                .managed_in_state(key, "failed", DEVICES_NAMED)
                .await?
                .into_iter()
                .map(|(device, m)| {
                    format!(
                        "{device}: {}",
                        m.last_error.unwrap_or_else(|| "no reason given".into())
                    )
                })
                .collect::<Vec<_>>()
                .join("; ")
        } else {
            String::new()
        };
        let desired = profile_conditions(&judged.verdict, &counts, &failing);
        self.write(o, &desired, judged, revision, o.status_ref(), now)
            .await
    }

    /// A DeviceAction's status: counts and conditions from the store's rows and the devices it
    /// targets now, and the first devices (failures first) with their outcome.
    #[allow(clippy::too_many_arguments)]
    async fn device_action(
        &self,
        o: &DeviceActionResource,
        built: &super::source::Built,
        judged: &Judged,
        counts: &HashMap<String, ActionCounts>,
        matched: &HashMap<String, i64>,
        revision: &str,
        now: &str,
    ) -> anyhow::Result<()> {
        let key = judged.key.snapshot_key();
        let verdict = &judged.verdict;
        let declared = match verdict {
            Verdict::Accepted { .. } => built.snapshot.actions.get(&key),
            _ => None,
        };
        let (tally, records) = match declared {
            Some(action) => {
                let id = action.action_id();
                let rows = counts.get(&id).cloned().unwrap_or_default();
                let tally = ActionTally::of(&rows, matched.get(&key).copied().unwrap_or(0));
                let records = if rows.targeted() > 0 {
                    self.store
                        .action_records(&id, ACTION_DEVICES_LISTED)
                        .await?
                } else {
                    Vec::new()
                };
                (tally, records)
            }
            None => (ActionTally::default(), Vec::new()),
        };
        let nobody = match declared.map(|a| &a.target) {
            Some(ActionTarget::Group(g)) => format!("DeviceGroup {g} has no enrolled members yet"),
            Some(target) => format!("no enrolled device matches {target} yet"),
            None => String::new(),
        };
        let named = |phase: ActionPhase| {
            records
                .iter()
                .filter(|r| r.phase() == phase)
                .take(DEVICES_NAMED as usize)
                .map(|r| {
                    format!(
                        "{}: {}",
                        r.device_id,
                        r.detail.as_deref().unwrap_or("no reason given")
                    )
                })
                .collect::<Vec<_>>()
                .join("; ")
        };
        let desired = action_conditions(
            verdict,
            &tally,
            &nobody,
            &named(ActionPhase::Failed),
            &named(ActionPhase::NotApplicable),
        );
        let devices = records
            .iter()
            .map(|r| device_line(r, self.reconciler.serial_number(&r.device_id)))
            .collect();
        let status = render_action(
            &desired,
            &tally,
            devices,
            judged.generation,
            revision,
            o.status.as_ref(),
            now,
        );
        let old_conditions = o.status.as_ref().map_or(&[][..], |s| &s.conditions[..]);
        self.publish(o, &status, o.status.as_ref(), old_conditions, &desired)
            .await
    }

    /// Releases the finalizer of a deleted Profile/Restrictions when devices are done with it.
    async fn maybe_release<K>(
        &self,
        api: &Api<K>,
        o: &K,
        key: &str,
        removal: RemovalPolicy,
        counts: &Counts,
    ) -> anyhow::Result<()>
    where
        K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        let on_devices = counts.verified + counts.pending + counts.removing + counts.failed;
        let deleted_at = o
            .meta()
            .deletion_timestamp
            .as_ref()
            .map(|t| t.0.as_millisecond())
            .unwrap_or_default();
        let waited = crate::vocab::clock::now_millis() - deleted_at;
        let timed_out = waited > self.settings.removal_timeout.as_millis() as i64;
        let (release, event) = if removal == RemovalPolicy::Keep {
            (
                true,
                Some((
                    "Kept",
                    "removalPolicy is Keep: the profile stays on devices".to_string(),
                    Kind::Normal,
                )),
            )
        } else if on_devices == 0 {
            (
                true,
                Some((
                    "Removed",
                    "no device carries the profile any more".to_string(),
                    Kind::Normal,
                )),
            )
        } else if timed_out {
            let kept: Vec<String> = self
                .store
                .managed_in_state(key, "removing", DEVICES_NAMED)
                .await?
                .into_iter()
                .map(|(device, _)| device)
                .collect();
            let message = format!(
                "gave up after {} s: {} device(s) did not confirm removal ({}{})",
                self.settings.removal_timeout.as_secs(),
                on_devices,
                kept.join(", "),
                if on_devices > kept.len() as i64 {
                    ", …"
                } else {
                    ""
                }
            );
            tracing::warn!(object = %name_of(o), %message, "finalizer released after the removal timeout");
            (true, Some(("RemovalTimedOut", message, Kind::Warning)))
        } else {
            (false, None)
        };
        if let Some((reason, note, type_)) = event {
            self.event(o, type_, reason, note).await;
        }
        if release {
            let finalizers: Vec<String> = o
                .finalizers()
                .iter()
                .filter(|f| *f != FINALIZER)
                .cloned()
                .collect();
            patch_finalizers(api, o, finalizers).await?;
        }
        Ok(())
    }

    async fn write<K>(
        &self,
        o: &K,
        desired: &Desired,
        judged: &Judged,
        revision: &str,
        old: Option<&PolicyStatus>,
        now: &str,
    ) -> anyhow::Result<()>
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        let mut status = render(desired, judged.generation, revision, old, now);
        status.in_force = judged.in_force.clone();
        let old_conditions = old.map_or(&[][..], |s| &s.conditions[..]);
        self.publish(o, &status, old, old_conditions, desired).await
    }

    /// Writes `status` unless it equals `old`, and records an event on a transition: the object
    /// becomes Ready, or becomes Stalled, or stays Stalled for a new reason — or for a new
    /// message when an author can act on it (a refused generation, a missing group; not
    /// counts of failing devices, which move on their own). Each event carries the text of
    /// the moment (see `events.rs`).
    async fn publish<K, S>(
        &self,
        o: &K,
        status: &S,
        old: Option<&S>,
        old_conditions: &[Condition],
        desired: &Desired,
    ) -> anyhow::Result<()>
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
        S: serde::Serialize + PartialEq,
    {
        if old == Some(status) {
            return Ok(());
        }
        let old_condition = |type_: &str| old_conditions.iter().find(|c| c.type_ == type_);
        let was_ready = old_condition("Ready").is_some_and(|c| c.status == "True");
        let (ready, reason, message) = &desired.ready;
        let message = bounded(message);
        let stalled_anew = desired.stalled.0
            && match old_condition("Stalled") {
                Some(c) if c.status == "True" && c.reason == *reason => {
                    AUTHOR_REASONS.contains(reason) && c.message != message
                }
                _ => true,
            };
        let api: Api<K> = Api::namespaced(
            self.client.clone(),
            &o.meta().namespace.clone().unwrap_or_default(),
        );
        let patched = api
            .patch_status(
                &o.name_any(),
                &PatchParams::default(),
                &Patch::Merge(json!({"status": status})),
            )
            .await;
        match patched {
            Ok(_) => {}
            // Deleted meanwhile: nothing to report on.
            Err(kube::Error::Api(e)) if e.code == 404 => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        if *ready && !was_ready {
            self.event(o, Kind::Normal, "Ready", message).await;
        } else if stalled_anew {
            self.event(o, Kind::Warning, reason, message).await;
        }
        Ok(())
    }

    async fn event<K: Resource<DynamicType = ()>>(
        &self,
        o: &K,
        kind: Kind,
        reason: &str,
        note: String,
    ) {
        let reference = o.object_ref(&());
        if let Err(e) = self
            .recorder
            .publish(&reference, kind, reason, &bounded(&note))
            .await
        {
            tracing::warn!(error = %e, object = ?reference.name, "could not record an event");
        }
    }
}

/// Sets the finalizer list, only if the object is unchanged since it was read (the
/// resourceVersion makes the patch conditional): another controller's finalizer is never lost.
async fn patch_finalizers<K>(api: &Api<K>, o: &K, finalizers: Vec<String>) -> anyhow::Result<()>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let patch = json!({"metadata": {
        "finalizers": finalizers,
        "resourceVersion": o.meta().resource_version,
    }});
    match api
        .patch(&o.name_any(), &PatchParams::default(), &Patch::Merge(patch))
        .await
    {
        Ok(_) => Ok(()),
        // Changed meanwhile: the watch brings the new version and the next pass retries.
        Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Namespace and name of an object, object-safe.
trait ResourceMeta {
    fn ns(&self) -> String;
    fn nm(&self) -> String;
}

impl<K: Resource> ResourceMeta for K {
    fn ns(&self) -> String {
        self.meta().namespace.clone().unwrap_or_default()
    }
    fn nm(&self) -> String {
        self.meta().name.clone().unwrap_or_default()
    }
}

/// The status of the generated resource types.
pub(crate) trait HasStatus {
    fn status_ref(&self) -> Option<&PolicyStatus>;
}

macro_rules! has_status {
    ($($t:ty),*) => {$(
        impl HasStatus for $t {
            fn status_ref(&self) -> Option<&PolicyStatus> {
                self.status.as_ref()
            }
        }
    )*};
}
has_status!(
    crate::policy::model::ProfileResource,
    crate::policy::model::RestrictionsResource
);
