//! A randomized fleet campaign with an oracle (issue 20). A seeded driver runs steps against a
//! real `pomona serve` process and a real store (SQLite, and PostgreSQL), with policy from a
//! directory or, in the Kubernetes variant, from custom resources on a real kube-apiserver:
//! valid and invalid policy changes, group edits, deletions, kill -9 and graceful restarts,
//! re-enrollments (CheckOut, and erase-and-set-up-again), devices going offline and coming back,
//! and APNs outages (the local APNs stand-in refusing connections, or answering 503 or 429).
//! Devices never poll: like real ones, they connect when a push reaches them (one waiting push
//! is kept for a device while it is offline, as APNs does), or to retry a connection that
//! failed. The oracle is what each simulated device really carries (its installed profiles, by
//! PayloadUUID, which follows the content), never what the server believes. Checked after every
//! step and at quiescence:
//!
//! - (a) no device receives RemoveProfile for a profile that every last good policy in force
//!   since its previous exchange assigned to it;
//! - (b) at quiescence every device carries exactly what the last good policy assigns to it;
//! - (c) the API's status counts (targeted, verified) equal the oracle's, and in the Kubernetes
//!   variant so do each Profile's `status.targeted` and `status.verified`;
//! - (d) no command the device acknowledged is delivered to it again (unless the device lost
//!   the server's answer to a transport failure);
//! - (e) every declared device action (Restart, one device each) runs exactly once on its
//!   device, across restarts and re-enrollments (never twice; at quiescence, once);
//! - at the end, `pomona status` prints the same counts as the API;
//! - and no device request is ever answered 401 (a device un-enrolls on it).
//!
//! A failure prints the seed and every step so far; `POMONA_CAMPAIGN_SEED=N` replays it.
//! `POMONA_CAMPAIGN_STEPS` (default 40) and `POMONA_CAMPAIGN_DEVICES` (default 6) size a run:
//! `POMONA_CAMPAIGN_STEPS=300 cargo test --release --test campaign -- --nocapture` is the long
//! form.
//!
//! Kubernetes accepts objects one at a time, so a change spanning several objects passes through
//! intermediate policies, each one really in force for a moment. The campaign makes every such
//! intermediate a policy it would accept anyway, in three recorded phases: groups first grow to
//! the union of their old and new members, then profiles change (deleted ones first), then
//! groups shrink to their new members. Whatever order the controller sees the objects of one
//! phase in, no device loses a profile that both the policy before and the policy after assign
//! to it, so invariant (a) holds for the server's behaviour, not for an artefact of `kubectl`.

mod support;

use pomona::sim::device::{SimDevice, SimError};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::apns::{FakeApns, TestPki};
use support::kube::{condition, install, ApiServer};
use support::TestServer;

const GROUPS: usize = 3;
const MAX_PROFILES: usize = 4;
/// The namespace of the Kubernetes variant's objects.
const NS: &str = "mdm";

/// One policy as the campaign declares it: which devices (by index) each group lists by
/// serial number, and each profile's content and group.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Model {
    groups: [BTreeSet<usize>; GROUPS],
    /// (name, SSID, group)
    profiles: Vec<(String, String, usize)>,
}

impl Model {
    fn random(rng: &mut fastrand::Rng, devices: usize) -> Self {
        let groups = std::array::from_fn(|_| (0..devices).filter(|_| rng.bool()).collect());
        let mut profiles = Vec::new();
        for i in 0..MAX_PROFILES {
            if rng.u8(0..4) > 0 {
                profiles.push((
                    format!("p{i}"),
                    format!("net-{}", rng.u8(0..3)),
                    rng.usize(0..GROUPS),
                ));
            }
        }
        Self { groups, profiles }
    }

    /// Profile names assigned to device `d`.
    fn desired(&self, d: usize) -> BTreeSet<String> {
        self.profiles
            .iter()
            .filter(|(_, _, g)| self.groups[*g].contains(&d))
            .map(|(name, _, _)| name.clone())
            .collect()
    }

    /// The DeviceGroups, as YAML documents.
    fn groups_yaml(&self, serials: &[String]) -> String {
        let mut groups = String::new();
        for (g, members) in self.groups.iter().enumerate() {
            // A serial no device has keeps every group valid when it lists no device.
            let mut listed = vec![format!("NO-DEVICE-{g}")];
            listed.extend(members.iter().map(|d| serials[*d].clone()));
            groups.push_str(&format!(
                "apiVersion: mdm.pomona.dev/v1alpha1\nkind: DeviceGroup\nmetadata: {{name: g{g}}}\n\
                 spec: {{serialNumbers: [{}]}}\n---\n",
                listed.join(", ")
            ));
        }
        groups
    }

    /// The Profiles, as YAML documents.
    fn profiles_yaml(&self) -> String {
        let mut profiles = String::new();
        for (name, ssid, g) in &self.profiles {
            profiles.push_str(&format!(
                "apiVersion: mdm.pomona.dev/v1alpha1\nkind: Profile\nmetadata: {{name: {name}}}\n\
                 spec:\n  groups: [g{g}]\n  payloads:\n    - payloadType: com.apple.wifi.managed\n      \
                 content: {{SSID_STR: {ssid}, AutoJoin: true}}\n---\n"
            ));
        }
        profiles
    }

    /// This model with each group holding its members here and in `other`, and these profiles.
    fn union_groups(&self, other: &Model) -> Model {
        Model {
            groups: std::array::from_fn(|g| &self.groups[g] | &other.groups[g]),
            profiles: self.profiles.clone(),
        }
    }
}

/// Restart actions (name, device) as DeviceAction YAML documents.
fn actions_yaml(actions: &[(String, usize)], serials: &[String]) -> String {
    let mut text = String::new();
    for (name, d) in actions {
        text.push_str(&format!(
            "apiVersion: mdm.pomona.dev/v1alpha1\nkind: DeviceAction\nmetadata: {{name: {name}}}\n\
             spec:\n  target: {{serialNumber: {}}}\n  action: Restart\n---\n",
            serials[*d]
        ));
    }
    text
}

/// A policy the server accepted (or, for one moment of a Kubernetes change, is accepting): the
/// model, and each profile's identifier and PayloadUUID as compiled.
#[derive(Debug, Clone)]
struct LastGood {
    model: Model,
    /// name → (identifier, PayloadUUID)
    compiled: BTreeMap<String, (String, String)>,
}

impl LastGood {
    fn desired_identifiers(&self, d: usize) -> BTreeMap<String, String> {
        self.model
            .desired(d)
            .into_iter()
            .map(|name| self.compiled[&name].clone())
            .collect()
    }
}

/// Where the campaign declares policy.
enum Source {
    /// The directory the server watches.
    Dir,
    /// Custom resources in namespace `mdm` of a real kube-apiserver.
    Kube(Box<ApiServer>),
}

/// How the local APNs stand-in misbehaves during an outage.
#[derive(Debug, Clone, Copy)]
enum Outage {
    /// Connections are dropped and refused.
    Down,
    /// Every push is answered with this status.
    Answering(u16, &'static str),
}

struct Slot {
    device: SimDevice,
    online: bool,
    /// Index into `Campaign::history` of the policy in force at its last exchange.
    seen_policy: usize,
    acknowledged: HashSet<String>,
    lost_an_answer: bool,
    /// Its last connection failed: it tries again at the next round, pushed or not.
    retry: bool,
}

struct Campaign {
    seed: u64,
    rng: fastrand::Rng,
    log: Vec<String>,
    data_dir: PathBuf,
    /// The policy directory (in the Kubernetes variant, a scratch directory the campaign
    /// compiles its models in).
    policy_dir: PathBuf,
    source: Source,
    apns: FakeApns,
    outage: Option<Outage>,
    port: u16,
    flags: Vec<String>,
    server: Option<TestServer>,
    slots: Vec<Slot>,
    serials: Vec<String>,
    /// Every policy the server was given, in order; the last is in force.
    history: Vec<LastGood>,
    restarts: usize,
    outages: usize,
    /// Declared Restart actions (name, device), never withdrawn: each must run exactly once.
    actions: Vec<(String, usize)>,
    /// RestartDevice commands each device acknowledged, across its enrollments.
    restarts_seen: Vec<usize>,
}

impl Campaign {
    fn fail(&self, what: String) -> ! {
        panic!(
            "campaign invariant broken: {what}\nreplay with POMONA_CAMPAIGN_SEED={} (steps: {})\n{}\nserver log: {}",
            self.seed,
            self.log.len(),
            self.log.join("\n"),
            self.data_dir.join("server.log").display()
        );
    }

    fn server(&self) -> &TestServer {
        self.server.as_ref().expect("server running")
    }

    fn kube(&self) -> Option<&ApiServer> {
        match &self.source {
            Source::Kube(api) => Some(api),
            Source::Dir => None,
        }
    }

    /// How the API's status and the store name a profile of the campaign.
    fn profile_key(&self, name: &str) -> String {
        match self.source {
            Source::Dir => format!("Profile/{name}"),
            Source::Kube(_) => format!("Profile/{NS}/{name}"),
        }
    }

    async fn start_server(&mut self) {
        self.server = Some(
            TestServer::start_process_on(
                self.data_dir.clone(),
                self.port,
                &self.flags,
                "info,pomona=info",
            )
            .await,
        );
    }

    /// Records `model` as the policy in force from now on and returns its compiled profiles.
    /// Recorded before the server is given it: from the moment a change is written, the server
    /// may act on it.
    fn record(&mut self, model: Model) -> pomona::policy::snapshot::PolicySnapshot {
        std::fs::write(
            self.policy_dir.join("groups.yaml"),
            model.groups_yaml(&self.serials),
        )
        .unwrap();
        std::fs::write(self.policy_dir.join("profiles.yaml"), model.profiles_yaml()).unwrap();
        std::fs::write(
            self.policy_dir.join("actions.yaml"),
            actions_yaml(&self.actions, &self.serials),
        )
        .unwrap();
        let snapshot = pomona::policy::source::load_dir(&self.policy_dir)
            .unwrap_or_else(|p| self.fail(format!("the campaign wrote an invalid policy: {p:?}")));
        let compiled = snapshot
            .profiles
            .values()
            .map(|p| {
                let name = p.key.trim_start_matches("Profile/").to_string();
                (name, (p.identifier.clone(), p.uuid.clone()))
            })
            .collect();
        self.history.push(LastGood { model, compiled });
        snapshot
    }

    /// Declares `model`, which must be valid, and waits until the server has it in force.
    async fn declare(&mut self, model: Model) {
        if self.kube().is_some() {
            return self.declare_objects(model).await;
        }
        // The directory: written as the server reads it.
        let revision = self.record(model).revision.clone();
        self.wait_for("the policy in force", |s| {
            s["policy"]["revision"] == revision.as_str()
        })
        .await;
        self.log.push(format!("  in force: {revision}"));
    }

    /// The Kubernetes variant of `declare`, in the three phases the module doc explains. Each
    /// phase is recorded once the controller accepted it (no device exchanges in between, so no
    /// command can reach a device meanwhile), except deletions: recorded before they are made,
    /// as devices must talk for a deleted profile to go.
    async fn declare_objects(&mut self, model: Model) {
        let before = self
            .history
            .last()
            .map(|g| g.model.clone())
            .unwrap_or(Model {
                groups: model.groups.clone(),
                profiles: Vec::new(),
            });
        // 1. Groups grow.
        let grown = before.union_groups(&model);
        self.apply(&grown.groups_yaml(&self.serials));
        self.wait_accepted(&grown, true, "groups grown").await;
        self.record(grown.clone());
        // 2. Profiles change: deleted ones first (a deleted name is free again only once its
        //    devices removed it, or the removal timeout passed).
        let keep: BTreeSet<String> = model.profiles.iter().map(|p| p.0.clone()).collect();
        let doomed: Vec<String> = self
            .existing("profiles")
            .into_iter()
            .filter(|name| !keep.contains(name))
            .collect();
        if !doomed.is_empty() {
            let pruned = Model {
                groups: grown.groups.clone(),
                profiles: grown
                    .profiles
                    .iter()
                    .filter(|p| keep.contains(&p.0))
                    .cloned()
                    .collect(),
            };
            self.record(pruned);
            for name in &doomed {
                self.kubectl(&["delete", "profile", name, "-n", NS, "--wait=false"]);
            }
            self.wait_objects("deleted profiles gone", true, |objects| {
                objects
                    .iter()
                    .filter(|o| o["kind"] == "Profile")
                    .all(|o| keep.contains(o["metadata"]["name"].as_str().unwrap_or_default()))
            })
            .await;
        }
        let changed = Model {
            groups: grown.groups.clone(),
            profiles: model.profiles.clone(),
        };
        if !changed.profiles.is_empty() {
            self.apply(&changed.profiles_yaml());
        }
        self.wait_accepted(&changed, false, "profiles changed")
            .await;
        self.record(changed);
        // 3. Groups shrink; actions.
        let mut text = model.groups_yaml(&self.serials);
        text.push_str(&actions_yaml(&self.actions, &self.serials));
        self.apply(&text);
        self.wait_accepted(&model, false, "groups shrunk").await;
        self.record(model);
    }

    fn kubectl(&self, args: &[&str]) -> String {
        self.kube().expect("the Kubernetes variant").kubectl(args)
    }

    /// `kubectl apply -n mdm` of YAML documents.
    fn apply(&self, yaml: &str) {
        let api = self.kube().expect("the Kubernetes variant");
        let (ok, out, err) = api.kubectl_result(&["apply", "-n", NS, "-f", "-"], Some(yaml));
        if !ok {
            self.fail(format!("kubectl apply failed: {err}\n{out}"));
        }
    }

    /// Names of the objects of one kind in the namespace.
    fn existing(&self, kind: &str) -> Vec<String> {
        self.kubectl(&["get", kind, "-n", NS, "-o", "name"])
            .lines()
            .filter_map(|l| l.rsplit('/').next())
            .map(str::to_string)
            .collect()
    }

    /// The namespace's Profiles and DeviceGroups as JSON.
    fn objects(&self) -> Vec<serde_json::Value> {
        let out = self.kubectl(&["get", "profiles,devicegroups", "-n", NS, "-o", "json"]);
        let list: serde_json::Value = serde_json::from_str(&out).unwrap();
        list["items"].as_array().cloned().unwrap_or_default()
    }

    /// Waits until `done` holds for the namespace's objects (30 s at most), with rounds of
    /// exchanges meanwhile if `exchange`.
    async fn wait_objects(
        &mut self,
        what: &str,
        exchange: bool,
        done: impl Fn(&[serde_json::Value]) -> bool,
    ) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let objects = self.objects();
            if done(&objects) {
                return;
            }
            if Instant::now() > deadline {
                self.fail(format!("{what}: not reached in 30 s: {objects:#?}"));
            }
            if exchange {
                self.round().await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until every group (and, unless `groups_only`, every profile) of `model` exists with
    /// its current generation observed and not Stalled, and no other profile is left. A profile
    /// made invalid by an earlier step stays Stalled until the profiles phase rewrites it.
    async fn wait_accepted(&mut self, model: &Model, groups_only: bool, what: &str) {
        let profiles: BTreeSet<String> = model.profiles.iter().map(|p| p.0.clone()).collect();
        self.wait_objects(what, false, |objects| {
            let accepted = |o: &serde_json::Value| {
                o["status"]["observedGeneration"] == o["metadata"]["generation"]
                    && condition(o, "Stalled")["status"] != "True"
            };
            let named = |kind: &str, name: &str| {
                objects
                    .iter()
                    .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
            };
            (0..GROUPS).all(|g| named("DeviceGroup", &format!("g{g}")).is_some_and(accepted))
                && (groups_only
                    || profiles
                        .iter()
                        .all(|p| named("Profile", p).is_some_and(accepted)))
                && objects
                    .iter()
                    .filter(|o| o["kind"] == "Profile")
                    .all(|o| profiles.contains(o["metadata"]["name"].as_str().unwrap_or_default()))
        })
        .await;
        self.log.push(format!("  accepted: {what}"));
    }

    /// An invalid change in the directory: the server refuses it and keeps the last good one.
    async fn invalid_file(&mut self, step: usize) {
        let (what, text) = match self.rng.u8(0..3) {
            0 => ("a YAML syntax error", "kind: Profile\nspec: [\n".to_string()),
            1 => (
                "a profile naming a group that does not exist",
                "apiVersion: mdm.pomona.dev/v1alpha1\nkind: Profile\nmetadata: {name: p0}\nspec:\n  groups: [no-such-group]\n  payloads:\n    - payloadType: com.apple.wifi.managed\n      content: {SSID_STR: typo}\n".to_string(),
            ),
            _ => (
                "an unknown field",
                "apiVersion: mdm.pomona.dev/v1alpha1\nkind: Profile\nmetadata: {name: p0}\nspec:\n  grups: [g0]\n".to_string(),
            ),
        };
        self.log
            .push(format!("step {step}: invalid change ({what})"));
        std::fs::write(self.policy_dir.join("profiles.yaml"), text).unwrap();
        self.wait_for("the invalid change refused", |s| {
            !s["policy"]["last_error"].is_null()
        })
        .await;
    }

    /// An invalid change to one custom resource: the object is Stalled (or the API server
    /// refuses it) and its last good spec stays in force.
    async fn invalid_object(&mut self, step: usize) {
        let model = self.history.last().expect("declared").model.clone();
        let profile = (!model.profiles.is_empty())
            .then(|| model.profiles[self.rng.usize(0..model.profiles.len())].clone());
        // An earlier step may have deleted a group; only existing ones can be broken again.
        let objects = self.objects();
        let existing: Vec<usize> = (0..GROUPS)
            .filter(|g| {
                let name = format!("g{g}");
                objects
                    .iter()
                    .any(|o| o["kind"] == "DeviceGroup" && o["metadata"]["name"] == name.as_str())
            })
            .collect();
        let g = (!existing.is_empty()).then(|| existing[self.rng.usize(0..existing.len())]);
        match (self.rng.u8(0..4), profile) {
            (0, Some((name, _, _))) => {
                self.log
                    .push(format!("step {step}: typo in Profile {name}'s groups"));
                self.kubectl(&[
                    "patch",
                    "profile",
                    &name,
                    "-n",
                    NS,
                    "--type",
                    "merge",
                    "-p",
                    r#"{"spec":{"groups":["no-such-group"]}}"#,
                ]);
                self.wait_stalled("Profile", &name, "Invalid").await;
            }
            (1, _) if g.is_some() => {
                let g = g.expect("checked");
                self.log.push(format!(
                    "step {step}: DeviceGroup g{g} loses its members list"
                ));
                self.kubectl(&[
                    "patch",
                    "devicegroup",
                    &format!("g{g}"),
                    "-n",
                    NS,
                    "--type",
                    "json",
                    "-p",
                    r#"[{"op":"remove","path":"/spec/serialNumbers"}]"#,
                ]);
                self.wait_stalled("DeviceGroup", &format!("g{g}"), "Invalid")
                    .await;
            }
            (2, Some((name, _, used))) if existing.contains(&used) => {
                self.log.push(format!(
                    "step {step}: DeviceGroup g{used}, which Profile {name} uses, deleted"
                ));
                // A profile already Stalled by an earlier typo names no existing group at all:
                // its reason stays the typo's; otherwise the dangling reference is the reason.
                let already = self
                    .objects()
                    .into_iter()
                    .find(|o| o["kind"] == "Profile" && o["metadata"]["name"] == name.as_str())
                    .map(|o| condition(&o, "Stalled").clone())
                    .filter(|c| c["status"] == "True")
                    .and_then(|c| c["reason"].as_str().map(str::to_string));
                self.kubectl(&["delete", "devicegroup", &format!("g{used}"), "-n", NS]);
                let reason = already.unwrap_or_else(|| "GroupMissing".into());
                self.wait_stalled("Profile", &name, &reason).await;
            }
            _ => {
                self.log
                    .push(format!("step {step}: a Profile with an unknown field"));
                let api = self.kube().expect("the Kubernetes variant");
                let (ok, _, err) = api.kubectl_result(
                    &["apply", "-n", NS, "-f", "-"],
                    Some(
                        "apiVersion: mdm.pomona.dev/v1alpha1\nkind: Profile\nmetadata: {name: p0}\nspec:\n  grups: [g0]\n",
                    ),
                );
                if ok || !err.contains("grups") {
                    self.fail(format!(
                        "the API server took a Profile with an unknown field (ok {ok}): {err}"
                    ));
                }
            }
        }
    }

    async fn wait_stalled(&mut self, kind: &str, name: &str, reason: &str) {
        self.wait_objects(
            &format!("{kind} {name} Stalled ({reason})"),
            true,
            |objects| {
                objects.iter().any(|o| {
                    o["kind"] == kind
                        && o["metadata"]["name"] == name
                        && condition(o, "Stalled")["status"] == "True"
                        && condition(o, "Stalled")["reason"] == reason
                })
            },
        )
        .await;
    }

    async fn wait_for(&self, what: &str, done: impl Fn(&serde_json::Value) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let (code, s) = self.server().admin_get("/api/v1/status").await;
            if code == 200 && done(&s) {
                return;
            }
            if Instant::now() > deadline {
                self.fail(format!("{what}: not reached in 15 s: {s:#}"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn in_force(&self) -> &LastGood {
        self.history.last().expect("a policy was declared first")
    }

    /// Whether a push for device `d` is waiting (and takes it).
    async fn pushed(&self, d: usize) -> bool {
        let signal: Arc<tokio::sync::Notify> = self.apns.device(self.slots[d].device.push_token());
        // `timeout` polls the future once before looking at the clock: a stored push is taken.
        tokio::time::timeout(Duration::ZERO, signal.notified())
            .await
            .is_ok()
    }

    /// One exchange for every online device that was pushed (or whose last connection failed),
    /// checking (a), (d), (e) and the 401 rule.
    async fn round(&mut self) {
        let now = self.history.len() - 1;
        for d in 0..self.slots.len() {
            if !self.slots[d].online {
                continue;
            }
            if !self.pushed(d).await && !self.slots[d].retry {
                continue;
            }
            let result = self.slots[d].device.exchange().await;
            let exchange = match result {
                Ok(e) => e,
                Err(SimError::Status {
                    status: 401, body, ..
                }) => self.fail(format!(
                    "device {d} was answered 401 (it would un-enroll): {body}"
                )),
                Err(e) => {
                    self.log.push(format!("  device {d}: exchange failed: {e}"));
                    self.slots[d].lost_an_answer = true;
                    self.slots[d].retry = true;
                    continue;
                }
            };
            self.slots[d].retry = false;
            let since = self.slots[d].seen_policy;
            for c in &exchange.commands {
                if c.request_type == "RestartDevice"
                    && c.status == pomona::protocol::ReportStatus::Acknowledged
                {
                    self.restarts_seen[d] += 1;
                    let declared = self.actions.iter().filter(|(_, t)| *t == d).count();
                    if self.restarts_seen[d] > declared {
                        self.fail(format!(
                            "(e) device {d} restarted {} times for {declared} declared Restart action(s)",
                            self.restarts_seen[d]
                        ));
                    }
                }
                if c.request_type == "RemoveProfile" {
                    let id = c.identifier.clone().unwrap_or_default();
                    let kept_throughout = self.history[since..=now]
                        .iter()
                        .all(|p| p.desired_identifiers(d).contains_key(&id));
                    if kept_throughout {
                        self.fail(format!(
                            "(a) device {d} was sent RemoveProfile {id}, which every policy in force since its last exchange assigns to it"
                        ));
                    }
                }
                let acknowledged = c.status == pomona::protocol::ReportStatus::Acknowledged;
                if !self.slots[d].acknowledged.insert(c.uuid.clone())
                    && !self.slots[d].lost_an_answer
                {
                    self.fail(format!(
                        "(d) device {d} received command {} ({}) again after answering it",
                        c.uuid, c.request_type
                    ));
                }
                if !acknowledged {
                    self.slots[d].acknowledged.remove(&c.uuid);
                }
            }
            self.slots[d].lost_an_answer = false;
            self.slots[d].seen_policy = now;
        }
    }

    /// What device `d` carries: identifier → PayloadUUID.
    fn carries(&self, d: usize) -> BTreeMap<String, String> {
        self.slots[d]
            .device
            .state
            .profiles
            .iter()
            .map(|(id, p)| (id.clone(), p.summary.uuid.clone()))
            .collect()
    }

    /// The oracle's (targeted, verified) for one profile of the policy in force.
    fn oracle_counts(&self, name: &str) -> (u64, u64) {
        let good = self.in_force();
        let (identifier, uuid) = &good.compiled[name];
        let targeted: Vec<usize> = (0..self.slots.len())
            .filter(|d| good.model.desired(*d).contains(name))
            .collect();
        // Verified: assigned, and carried with the declared content.
        let verified = targeted
            .iter()
            .filter(|d| self.carries(**d).get(identifier) == Some(uuid))
            .count();
        (targeted.len() as u64, verified as u64)
    }

    /// Whether a reported (targeted, verified) pair agrees with the oracle's. With a device
    /// offline, the server cannot have verified what it installed last (the ProfileList is
    /// still to come): status may count fewer verified, never more.
    fn counts_agree(&self, reported: (Option<u64>, Option<u64>), oracle: (u64, u64)) -> bool {
        let all_online = self.slots.iter().all(|s| s.online);
        let verified_ok = if all_online {
            reported.1 == Some(oracle.1)
        } else {
            reported.1.is_some_and(|v| v <= oracle.1)
        };
        reported.0 == Some(oracle.0) && verified_ok
    }

    /// Where (b) and (c) fail now, if anywhere.
    async fn discrepancies(&self) -> Vec<String> {
        let good = self.in_force();
        let mut out = Vec::new();
        for d in (0..self.slots.len()).filter(|d| self.slots[*d].online) {
            let want = good.desired_identifiers(d);
            let has = self.carries(d);
            let declared = self.actions.iter().filter(|(_, t)| *t == d).count();
            if self.restarts_seen[d] != declared {
                out.push(format!(
                    "(e) device {d} ran {} of its {declared} declared Restart action(s)",
                    self.restarts_seen[d]
                ));
            }
            if want != has {
                let udid = self.slots[d].device.udid().to_string();
                let (_, view) = self
                    .server()
                    .admin_get(&format!("/api/v1/devices/{udid}"))
                    .await;
                let (_, commands) = self
                    .server()
                    .admin_get(&format!("/api/v1/devices/{udid}/commands"))
                    .await;
                let recent: Vec<String> = commands["commands"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .take(8)
                    .map(|c| format!("{} {} {}", c["created_at"], c["request_type"], c["status"]))
                    .collect();
                out.push(format!(
                    "(b) device {d} ({udid}) carries {has:?}, the policy assigns {want:?}; the server says {} {} push {}; its newest commands: {recent:?}",
                    view["state"], view["profiles"], view["push"]
                ));
            }
        }
        let (code, status) = self.server().admin_get("/api/v1/status").await;
        if code != 200 {
            out.push(format!("status answered {code}"));
            return out;
        }
        let custom_resources = self.kube().map(|_| self.objects());
        for name in good.compiled.keys() {
            let oracle = self.oracle_counts(name);
            let key = self.profile_key(name);
            let row = status["profiles"]
                .as_array()
                .and_then(|a| a.iter().find(|p| p["profile"] == key.as_str()))
                .cloned()
                .unwrap_or_default();
            let api = (row["targeted"].as_u64(), row["verified"].as_u64());
            if !self.counts_agree(api, oracle) {
                out.push(format!(
                    "(c) {key}: the API says targeted {:?} verified {:?}, the devices say {oracle:?}: {}",
                    api.0,
                    api.1,
                    self.who_carries(name).await
                ));
            }
            if let Some(objects) = &custom_resources {
                let object = objects
                    .iter()
                    .find(|o| o["kind"] == "Profile" && o["metadata"]["name"] == name.as_str())
                    .cloned()
                    .unwrap_or_default();
                let cr = (
                    object["status"]["targeted"].as_u64(),
                    object["status"]["verified"].as_u64(),
                );
                if !self.counts_agree(cr, oracle) {
                    out.push(format!(
                        "(c) Profile {NS}/{name}: status says targeted {:?} verified {:?}, the devices say {oracle:?}: {:#}",
                        cr.0, cr.1, object["status"]
                    ));
                }
            }
        }
        out
    }

    /// For a failure message: what each device assigned profile `name` carries, and what the
    /// server believes.
    async fn who_carries(&self, name: &str) -> String {
        let good = self.in_force();
        let identifier = &good.compiled[name].0;
        let mut seen = Vec::new();
        for d in (0..self.slots.len()).filter(|d| good.model.desired(*d).contains(name)) {
            let udid = self.slots[d].device.udid().to_string();
            let (_, view) = self
                .server()
                .admin_get(&format!("/api/v1/devices/{udid}"))
                .await;
            seen.push(format!(
                "device {d} online {} carries {:?}; server: {}",
                self.slots[d].online,
                self.carries(d).get(identifier),
                view["profiles"]
            ));
        }
        seen.join("; ")
    }

    /// `pomona status` prints, for every profile, the API's targeted and verified counts.
    async fn status_cli_agrees_with_the_api(&self) {
        let server = self.server();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_pomona"))
            .arg("status")
            .arg("--server")
            .arg(&server.base_url)
            .arg("--admin-token-file")
            .arg(server.data_dir.join("admin-token"))
            .arg("--server-ca")
            .arg(server.data_dir.join("tls/ca.pem"))
            .output()
            .expect("pomona binary");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (_, api) = server.admin_get("/api/v1/status").await;
        for p in api["profiles"].as_array().into_iter().flatten() {
            let key = p["profile"].as_str().unwrap_or_default();
            let row = text
                .lines()
                .find(|l| l.split_whitespace().next() == Some(key))
                .unwrap_or_else(|| {
                    self.fail(format!("pomona status has no row for {key}: {text}"))
                });
            let numbers: Vec<&str> = row.split_whitespace().skip(1).collect();
            let expected = [p["targeted"].to_string(), p["verified"].to_string()];
            if numbers.get(..2) != Some(&[expected[0].as_str(), expected[1].as_str()][..]) {
                self.fail(format!(
                    "pomona status says {row:?}, the API targeted {} verified {}",
                    expected[0], expected[1]
                ));
            }
        }
    }

    /// Starts or ends an APNs outage.
    fn set_outage(&mut self, outage: Option<Outage>) {
        self.apns.set_down(matches!(outage, Some(Outage::Down)));
        self.apns.fail_all(match outage {
            Some(Outage::Answering(status, reason)) => Some((status, reason)),
            _ => None,
        });
        if outage.is_some() {
            self.outages += 1;
        }
        self.outage = outage;
    }

    /// Runs rounds until (b) and (c) hold, or fails after 60 s with what still differs. An
    /// APNs outage ends first: without pushes, devices never come.
    async fn quiesce(&mut self, why: &str) {
        if self.outage.is_some() {
            self.log.push("  APNs is back".into());
            self.set_outage(None);
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            self.round().await;
            let left = self.discrepancies().await;
            if left.is_empty() {
                self.log.push(format!("  quiescent ({why})"));
                return;
            }
            if Instant::now() > deadline {
                self.fail(format!(
                    "no quiescence ({why}) in 60 s:\n{}",
                    left.join("\n")
                ));
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }
}

/// Which policy source a campaign runs against.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Variant {
    Dir,
    Kube,
}

async fn run_campaign(variant: Variant, database: Option<String>) {
    let seed = std::env::var("POMONA_CAMPAIGN_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    let steps: usize = std::env::var("POMONA_CAMPAIGN_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40);
    let devices: usize = std::env::var("POMONA_CAMPAIGN_DEVICES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(6);
    // Kept when the campaign fails (the server log is the other half of the story); removed
    // at the end of a run that passed.
    let data = tempfile::tempdir().unwrap().keep();
    let policy = tempfile::tempdir().unwrap().keep();
    let pki = TestPki::new();
    let apns = FakeApns::start(&pki).await;
    let mut flags = vec!["--retry-backoff-ms".to_string(), "200".into()];
    // Pushes: coalesced briefly, retried quickly after APNs failed, and a device that stays
    // silent (offline) pushed again every two seconds.
    flags.extend(apns.serve_flags(&pki));
    for (flag, value) in [
        ("--push-coalesce", "100ms"),
        ("--push-poll-interval", "50ms"),
        ("--push-retry-base", "100ms"),
        ("--push-retry-max", "1s"),
        ("--push-backoff", "2s"),
        ("--push-timeout", "2s"),
    ] {
        flags.extend([flag.to_string(), value.to_string()]);
    }
    let source = match variant {
        Variant::Dir => {
            flags.extend(["--policy-dir".to_string(), policy.display().to_string()]);
            Source::Dir
        }
        Variant::Kube => {
            let api = ApiServer::start().await;
            install(&api, &[NS]);
            for (flag, value) in [
                (
                    "--kubeconfig",
                    api.controller_kubeconfig.display().to_string(),
                ),
                ("--lease-namespace", "pomona-system".into()),
                ("--identity", "campaign".into()),
                ("--lease-duration-secs", "4".into()),
                ("--status-interval-secs", "1".into()),
                ("--removal-timeout-secs", "3".into()),
            ] {
                flags.extend([flag.to_string(), value]);
            }
            flags.push("--kube".into());
            Source::Kube(Box::new(api))
        }
    };
    if let Some(url) = &database {
        flags.extend(["--database".to_string(), url.clone()]);
    }
    let started = Instant::now();
    let mut c = Campaign {
        seed,
        rng: fastrand::Rng::with_seed(seed),
        log: vec![format!(
            "seed {seed}, {steps} steps, {devices} devices, {}, policy from {}",
            if database.is_some() {
                "PostgreSQL"
            } else {
                "SQLite"
            },
            if variant == Variant::Kube {
                "custom resources"
            } else {
                "a directory"
            }
        )],
        data_dir: data.clone(),
        policy_dir: policy.clone(),
        source,
        apns,
        outage: None,
        // Chosen last, once etcd, the API server and the APNs stand-in hold their ports: a port
        // free when probed can be taken by a process started after the probe.
        port: {
            let probe = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
            probe.local_addr().unwrap().port()
        },
        flags,
        server: None,
        slots: Vec::new(),
        serials: Vec::new(),
        history: Vec::new(),
        restarts: 0,
        outages: 0,
        actions: Vec::new(),
        restarts_seen: vec![0; devices],
    };
    c.start_server().await;
    for d in 0..devices {
        let mut device = c.server().device(d);
        device.enroll().await.expect("enroll");
        c.serials.push(device.hw.serial_number.clone());
        c.slots.push(Slot {
            device,
            online: true,
            seen_policy: 0,
            acknowledged: HashSet::new(),
            lost_an_answer: false,
            retry: false,
        });
    }
    let first = Model::random(&mut c.rng, devices);
    c.log.push(format!("declare {first:?}"));
    c.declare(first).await;
    c.quiesce("start").await;

    for step in 1..=steps {
        let roll = c.rng.u8(0..100);
        let d = c.rng.usize(0..devices);
        match roll {
            0..=29 => {
                let model = Model::random(&mut c.rng, devices);
                c.log.push(format!("step {step}: declare {model:?}"));
                c.declare(model).await;
            }
            30..=39 if variant == Variant::Kube => c.invalid_object(step).await,
            30..=39 => c.invalid_file(step).await,
            40..=47 => {
                c.log.push(format!("step {step}: kill -9 and start again"));
                c.server.take().unwrap().stop().await; // SIGKILL
                c.restarts += 1;
                c.start_server().await;
            }
            48..=52 => {
                c.log
                    .push(format!("step {step}: graceful restart (SIGTERM)"));
                let mut server = c.server.take().unwrap();
                let mut process = server.process.take().unwrap();
                let pid = process.id().expect("running").to_string();
                std::process::Command::new("kill")
                    .args(["-TERM", &pid])
                    .status()
                    .unwrap();
                if tokio::time::timeout(Duration::from_secs(15), process.wait())
                    .await
                    .is_err()
                {
                    c.fail("the server did not stop within 15 s of SIGTERM".into());
                }
                c.restarts += 1;
                c.start_server().await;
            }
            53..=60 if c.slots[d].online => {
                c.log.push(format!(
                    "step {step}: device {d} checks out and enrolls again"
                ));
                let slot = &mut c.slots[d];
                slot.device.check_out().await.expect("check out");
                slot.device.enroll().await.expect("enroll again");
                slot.acknowledged.clear();
            }
            61..=65 if c.slots[d].online => {
                c.log.push(format!(
                    "step {step}: device {d} is erased and set up again"
                ));
                let fresh = c.server().device(d);
                let slot = &mut c.slots[d];
                slot.device = fresh;
                slot.device.enroll().await.expect("enroll after erase");
                slot.acknowledged.clear();
            }
            66..=77 => {
                let slot = &mut c.slots[d];
                slot.online = !slot.online;
                let now = if slot.online {
                    "comes back"
                } else {
                    "goes offline"
                };
                c.log.push(format!("step {step}: device {d} {now}"));
            }
            78..=83 => {
                let name = format!("restart-{step}");
                c.log.push(format!(
                    "step {step}: declare action {name} (Restart device {d})"
                ));
                c.actions.push((name, d));
                let model = c.in_force().model.clone();
                c.declare(model).await;
            }
            84..=89 => {
                let outage = match (c.outage, c.rng.u8(0..3)) {
                    (Some(_), _) => None,
                    (None, 0) => Some(Outage::Down),
                    (None, 1) => Some(Outage::Answering(503, "ServiceUnavailable")),
                    (None, _) => Some(Outage::Answering(429, "TooManyRequests")),
                };
                c.log.push(match outage {
                    Some(o) => format!("step {step}: APNs outage ({o:?})"),
                    None => format!("step {step}: APNs is back"),
                });
                c.set_outage(outage);
            }
            _ => c.log.push(format!("step {step}: devices exchange")),
        }
        c.round().await;
        if step % 5 == 0 || step == steps {
            if step == steps {
                for slot in &mut c.slots {
                    slot.online = true;
                }
            }
            let (_, s) = c.server().admin_get("/api/v1/status").await;
            if s["policy"]["revision"].is_string() {
                c.quiesce(&format!("after step {step}")).await;
            } else {
                c.log.push(
                    "  no policy in force (a restart with an invalid policy): not checked".into(),
                );
            }
        }
    }
    // The last word: a valid policy again, and everything converges to it.
    let last = Model::random(&mut c.rng, devices);
    c.log.push(format!("final: declare {last:?}"));
    c.declare(last).await;
    c.quiesce("final").await;
    c.status_cli_agrees_with_the_api().await;
    println!(
        "campaign: seed {seed}, {steps} steps, {devices} devices, {} restarts, {} APNs outages, {} policies, {} actions ({} restarts run), {:.1} s",
        c.restarts,
        c.outages,
        c.history.len(),
        c.actions.len(),
        c.restarts_seen.iter().sum::<usize>(),
        started.elapsed().as_secs_f64()
    );
    c.server.take().unwrap().stop().await;
    let _ = std::fs::remove_dir_all(&data);
    let _ = std::fs::remove_dir_all(&policy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_random_campaign_on_sqlite_keeps_the_fleet_on_the_last_good_policy() {
    run_campaign(Variant::Dir, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_random_campaign_on_postgresql_keeps_the_fleet_on_the_last_good_policy() {
    run_campaign(
        Variant::Dir,
        Some(support::fresh_postgres_database("campaign").await),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_random_campaign_with_custom_resources_keeps_the_fleet_on_the_last_good_policy() {
    run_campaign(Variant::Kube, None).await;
}
