//! Table tests for the planner: one case per rule in `plan.rs`'s header.

use super::plan::*;
use crate::policy::snapshot::{CompiledProfile, ProfileOrigin};
use crate::vocab::profiles::*;
use std::sync::Arc;

const NOW: i64 = 1_000_000;

fn profile(identifier: &str, hash: &str, policy: RemovalPolicy) -> CompiledProfile {
    CompiledProfile {
        key: format!("Profile/{identifier}"),
        origin: ProfileOrigin::Profile,
        name: identifier.into(),
        identifier: identifier.into(),
        uuid: format!("UUID-{hash}"),
        mobileconfig: Arc::new(format!("<plist>{hash}</plist>").into_bytes()),
        hash: hash.into(),
        groups: vec!["all".into()],
        removal_policy: policy,
        sign: false,
    }
}

fn managed(identifier: &str, hash: &str, state: ProfileState) -> ManagedProfile {
    ManagedProfile {
        identifier: identifier.into(),
        profile_key: format!("Profile/{identifier}"),
        hash: hash.into(),
        uuid: format!("UUID-{hash}"),
        state,
        attempts: 0,
        installs: 1,
        last_attempt_at: Some(NOW - 10_000),
        acknowledged_at: matches!(state, ProfileState::Verifying | ProfileState::Verified)
            .then_some(NOW - 10_000),
        last_error: None,
        removal_policy: RemovalPolicy::Remove,
    }
}

fn reported(at: i64, items: &[(&str, &str)]) -> ReportedProfiles {
    ReportedProfiles {
        reported_at: at,
        profiles: items
            .iter()
            .map(|(i, u)| (i.to_string(), u.to_string()))
            .collect(),
    }
}

fn install_intent(identifier: &str, hash: &str) -> Intent {
    Intent::Install {
        identifier: identifier.into(),
        hash: hash.into(),
    }
}

fn input<'a>(
    desired: Vec<&'a CompiledProfile>,
    managed: Vec<ManagedProfile>,
    reported: Option<&'a ReportedProfiles>,
) -> PlanInput<'a> {
    PlanInput {
        device_id: "DEV",
        desired,
        managed,
        reported,
        in_flight: vec![],
        finished: vec![],
        now: NOW,
        settings: PlanSettings::default(),
    }
}

fn intents(plan: &Plan) -> Vec<Intent> {
    plan.commands.iter().map(|c| c.intent.clone()).collect()
}

fn state_of(plan: &Plan, identifier: &str) -> Option<ProfileState> {
    plan.managed
        .iter()
        .find(|m| m.identifier == identifier)
        .map(|m| m.state)
}

#[test]
fn a_missing_profile_is_installed_once_and_a_replay_queues_nothing_new() {
    let wifi = profile("wifi", "h1", RemovalPolicy::Remove);
    let first = plan(input(vec![&wifi], vec![], None));
    assert_eq!(
        intents(&first),
        [install_intent("wifi", "h1"), Intent::ProfileList]
    );
    assert_eq!(
        first.commands[0].payload.as_deref(),
        Some(&wifi.mobileconfig.to_vec())
    );
    assert_eq!(state_of(&first, "wifi"), Some(ProfileState::Pending));

    // The same input again gives the same command UUID: the store refuses the duplicate.
    let again = plan(input(vec![&wifi], vec![], None));
    assert_eq!(again.commands[0].uuid, first.commands[0].uuid);

    // With the install in flight (queued, or NotNow'd and still queued) nothing new.
    let mut waiting = input(vec![&wifi], first.managed.clone(), None);
    waiting.in_flight = vec![InFlight {
        command_uuid: first.commands[0].uuid.clone(),
        intent: install_intent("wifi", "h1"),
        queued: true,
    }];
    let waiting = plan(waiting);
    assert!(
        waiting.commands.is_empty() && waiting.cancel.is_empty(),
        "{waiting:?}"
    );
}

#[test]
fn acknowledged_install_is_verified_by_a_later_profile_list() {
    let wifi = profile("wifi", "h1", RemovalPolicy::Remove);
    let mut ack = input(
        vec![&wifi],
        vec![managed("wifi", "h1", ProfileState::Pending)],
        None,
    );
    ack.finished = vec![Finished {
        command_uuid: "C1".into(),
        intent: install_intent("wifi", "h1"),
        result: CommandResult::Acknowledged,
        at: NOW - 5,
    }];
    let after_ack = plan(ack);
    assert_eq!(state_of(&after_ack, "wifi"), Some(ProfileState::Verifying));
    assert_eq!(intents(&after_ack), [Intent::ProfileList]);

    // A ProfileList already in flight is not asked for twice.
    let mut asked = input(vec![&wifi], after_ack.managed.clone(), None);
    asked.in_flight = vec![InFlight {
        command_uuid: after_ack.commands[0].uuid.clone(),
        intent: Intent::ProfileList,
        queued: false,
    }];
    assert!(plan(asked).commands.is_empty());

    // An old report (before the acknowledgement) proves nothing.
    let stale = reported(NOW - 100, &[]);
    let still = plan(input(vec![&wifi], after_ack.managed.clone(), Some(&stale)));
    assert_eq!(state_of(&still, "wifi"), Some(ProfileState::Verifying));

    let listed = reported(NOW, &[("wifi", "UUID-h1")]);
    let verified = plan(input(vec![&wifi], after_ack.managed.clone(), Some(&listed)));
    assert_eq!(state_of(&verified, "wifi"), Some(ProfileState::Verified));
    assert!(verified.commands.is_empty());

    let missing = reported(NOW, &[]);
    let unlisted = plan(input(vec![&wifi], after_ack.managed, Some(&missing)));
    let entry = &unlisted.managed[0];
    assert_eq!((entry.state, entry.attempts), (ProfileState::Pending, 1));
    assert!(entry
        .last_error
        .as_deref()
        .unwrap()
        .contains("does not list it"));
    assert!(unlisted.wake_at.is_some(), "a retry must be scheduled");
}

#[test]
fn errors_are_retried_with_backoff_then_fail_with_the_device_error() {
    let wifi = profile("wifi", "h1", RemovalPolicy::Remove);
    let settings = PlanSettings::default();
    let mut entry = managed("wifi", "h1", ProfileState::Pending);
    let mut seen_uuids = std::collections::BTreeSet::new();
    for attempt in 1..=settings.max_attempts {
        let mut failed = input(vec![&wifi], vec![entry.clone()], None);
        failed.finished = vec![Finished {
            command_uuid: format!("C{attempt}"),
            intent: install_intent("wifi", "h1"),
            result: CommandResult::Error("MDMErrorDomain 12345: bad payload".into()),
            at: NOW,
        }];
        let p = plan(failed);
        entry = p.managed[0].clone();
        assert_eq!(entry.attempts, attempt);
        if attempt < settings.max_attempts {
            assert_eq!(entry.state, ProfileState::Pending, "attempt {attempt}");
            assert!(p.commands.is_empty(), "retried before its backoff");
            assert_eq!(p.wake_at, Some(NOW + backoff(attempt, &settings)));
            // When the backoff has passed, a retry with a fresh UUID.
            let mut later = input(vec![&wifi], vec![entry.clone()], None);
            later.now = NOW + backoff(attempt, &settings);
            let retry = plan(later);
            assert_eq!(
                intents(&retry),
                [install_intent("wifi", "h1"), Intent::ProfileList]
            );
            assert!(
                seen_uuids.insert(retry.commands[0].uuid.clone()),
                "UUID reused"
            );
            entry = retry.managed[0].clone();
        } else {
            assert_eq!(entry.state, ProfileState::Failed);
            assert_eq!(
                entry.last_error.as_deref(),
                Some("MDMErrorDomain 12345: bad payload")
            );
            assert!(p.commands.is_empty());
        }
    }
    // Failed stays failed (no retry storm) until the content changes.
    let failed = plan(input(vec![&wifi], vec![entry.clone()], None));
    assert!(failed.commands.is_empty());
    let fixed = profile("wifi", "h2", RemovalPolicy::Remove);
    let fixed_plan = plan(input(vec![&fixed], vec![entry], None));
    assert_eq!(
        intents(&fixed_plan),
        [install_intent("wifi", "h2"), Intent::ProfileList]
    );
}

#[test]
fn backoff_doubles_and_is_capped() {
    let s = PlanSettings::default();
    assert_eq!(backoff(1, &s), 60_000);
    assert_eq!(backoff(2, &s), 120_000);
    assert_eq!(backoff(3, &s), 240_000);
    assert_eq!(backoff(30, &s), s.max_backoff_ms);
}

#[test]
fn changed_content_is_reinstalled_and_the_queued_old_version_cancelled() {
    let v2 = profile("wifi", "h2", RemovalPolicy::Remove);
    let mut changed = input(
        vec![&v2],
        vec![managed("wifi", "h1", ProfileState::Verified)],
        None,
    );
    changed.in_flight = vec![InFlight {
        command_uuid: "OLD".into(),
        intent: install_intent("wifi", "h1"),
        queued: true,
    }];
    let p = plan(changed);
    assert_eq!(
        intents(&p),
        [install_intent("wifi", "h2"), Intent::ProfileList]
    );
    assert_eq!(p.cancel, ["OLD"]);
    let entry = &p.managed[0];
    assert_eq!(
        (entry.hash.as_str(), entry.state),
        ("h2", ProfileState::Pending)
    );
    assert_eq!(
        entry.installs, 2,
        "install count carries over, so UUIDs stay unique"
    );
}

#[test]
fn removal_follows_the_removal_policy() {
    // Remove: RemoveProfile, then forgotten once acknowledged.
    let p = plan(input(
        vec![],
        vec![managed("wifi", "h1", ProfileState::Verified)],
        None,
    ));
    assert_eq!(
        intents(&p),
        [
            Intent::Remove {
                identifier: "wifi".into()
            },
            Intent::ProfileList
        ]
    );
    assert_eq!(state_of(&p, "wifi"), Some(ProfileState::Removing));
    let mut done = input(vec![], p.managed.clone(), None);
    done.finished = vec![Finished {
        command_uuid: p.commands[0].uuid.clone(),
        intent: Intent::Remove {
            identifier: "wifi".into(),
        },
        result: CommandResult::Acknowledged,
        at: NOW,
    }];
    let done = plan(done);
    assert!(done.managed.is_empty() && done.commands.is_empty());

    // Keep: left installed, no longer managed.
    let mut kept = managed("wifi", "h1", ProfileState::Verified);
    kept.removal_policy = RemovalPolicy::Keep;
    let p = plan(input(vec![], vec![kept], None));
    assert!(p.commands.is_empty() && p.managed.is_empty());

    // Already gone from the device (a newer report): nothing to remove.
    let gone = reported(NOW, &[]);
    let p = plan(input(
        vec![],
        vec![managed("wifi", "h1", ProfileState::Verified)],
        Some(&gone),
    ));
    assert!(p.commands.is_empty() && p.managed.is_empty());

    // A remove already in flight is not sent twice.
    let mut flying = input(
        vec![],
        vec![managed("wifi", "h1", ProfileState::Removing)],
        None,
    );
    flying.in_flight = vec![InFlight {
        command_uuid: "R".into(),
        intent: Intent::Remove {
            identifier: "wifi".into(),
        },
        queued: false,
    }];
    assert!(plan(flying).commands.is_empty());

    // A failed install that is no longer wanted is simply forgotten.
    let mut failed = managed("wifi", "h1", ProfileState::Failed);
    failed.acknowledged_at = None;
    let p = plan(input(vec![], vec![failed], None));
    assert!(p.commands.is_empty() && p.managed.is_empty());
}

#[test]
fn removal_errors_are_retried_then_given_up() {
    let settings = PlanSettings::default();
    let mut entry = managed("wifi", "h1", ProfileState::Removing);
    for attempt in 1..=settings.max_attempts {
        let at = NOW + attempt as i64 * 1_000;
        let mut failed = input(vec![], vec![entry.clone()], None);
        failed.finished = vec![Finished {
            command_uuid: format!("R{attempt}"),
            intent: Intent::Remove {
                identifier: "wifi".into(),
            },
            result: CommandResult::Error("profile is locked".into()),
            at,
        }];
        failed.now = at;
        let p = plan(failed);
        entry = p.managed[0].clone();
        if attempt < settings.max_attempts {
            // Refused: retried after the backoff, with a ProfileList behind it that shows
            // whether the profile is still there.
            let mut retry = input(vec![], vec![entry.clone()], None);
            retry.now = at + backoff(attempt, &settings);
            let p = plan(retry);
            assert_eq!(
                intents(&p),
                [
                    Intent::Remove {
                        identifier: "wifi".into()
                    },
                    Intent::ProfileList
                ]
            );
            entry = p.managed[0].clone();
        } else {
            assert!(p.commands.is_empty(), "gave up after {attempt}");
            assert_eq!(entry.last_error.as_deref(), Some("profile is locked"));
            // Given up is a state of its own, not a removal still in progress.
            assert_eq!(entry.state, ProfileState::RemovalFailed);
        }
    }
    // Terminal: later plans send nothing and keep the state and the device's error.
    let p = plan(input(vec![], vec![entry.clone()], None));
    assert!(p.commands.is_empty());
    assert_eq!(state_of(&p, "wifi"), Some(ProfileState::RemovalFailed));
    // Declared again: a new install cycle.
    let wifi = profile("wifi", "h1", RemovalPolicy::Remove);
    let p = plan(input(vec![&wifi], vec![entry.clone()], None));
    assert_eq!(state_of(&p, "wifi"), Some(ProfileState::Pending));
    // The device reports it gone: forgotten.
    let gone = reported(NOW + 60_000, &[]);
    let p = plan(input(vec![], vec![entry], Some(&gone)));
    assert!(p.managed.is_empty());
}

#[test]
fn drift_is_repaired_and_foreign_profiles_are_never_touched() {
    let wifi = profile("wifi", "h1", RemovalPolicy::Remove);
    let verified = managed("wifi", "h1", ProfileState::Verified);
    // The user removed it.
    let removed = reported(NOW, &[("com.vendor.vpn", "X")]);
    let p = plan(input(vec![&wifi], vec![verified.clone()], Some(&removed)));
    assert_eq!(
        intents(&p),
        [install_intent("wifi", "h1"), Intent::ProfileList]
    );
    // Someone replaced it with another version (other PayloadUUID).
    let replaced = reported(NOW, &[("wifi", "UUID-other")]);
    let p = plan(input(vec![&wifi], vec![verified.clone()], Some(&replaced)));
    assert_eq!(
        intents(&p),
        [install_intent("wifi", "h1"), Intent::ProfileList]
    );
    // Still there: nothing to do; the foreign VPN profile is not ours and stays.
    let fine = reported(NOW, &[("wifi", "UUID-h1"), ("com.vendor.vpn", "X")]);
    let p = plan(input(vec![&wifi], vec![verified], Some(&fine)));
    assert!(p.commands.is_empty());
    assert_eq!(p.managed.len(), 1);
}

#[test]
fn nothing_desired_nothing_managed_means_no_commands() {
    let report = reported(NOW, &[("com.vendor.vpn", "X")]);
    let p = plan(input(vec![], vec![], Some(&report)));
    assert_eq!(p, Plan::default());
}

#[test]
fn a_profile_list_rides_along_behind_installs_so_one_session_verifies() {
    let wifi = profile("wifi", "h1", RemovalPolicy::Remove);
    let first = plan(input(vec![&wifi], vec![], None));
    assert_eq!(
        intents(&first),
        [install_intent("wifi", "h1"), Intent::ProfileList],
        "the install, then its verification"
    );
    let again = plan(input(vec![&wifi], vec![], None));
    assert_eq!(
        again.commands[1].uuid, first.commands[1].uuid,
        "replays queue nothing"
    );

    // The device answers both in one session: acknowledged, then listed → verified at once.
    let mut answered = input(vec![&wifi], first.managed.clone(), None);
    answered.finished = vec![Finished {
        command_uuid: first.commands[0].uuid.clone(),
        intent: install_intent("wifi", "h1"),
        result: CommandResult::Acknowledged,
        at: NOW - 5,
    }];
    let listed = ReportedProfiles {
        reported_at: NOW - 4,
        profiles: [("wifi".to_string(), wifi.uuid.clone())].into(),
    };
    answered.reported = Some(&listed);
    let verified = plan(answered);
    assert_eq!(state_of(&verified, "wifi"), Some(ProfileState::Verified));
    assert!(verified.commands.is_empty(), "{verified:?}");
}

#[test]
fn a_queued_removal_of_a_profile_declared_again_is_cancelled_and_it_is_reinstalled() {
    let wifi = profile("wifi", "h1", RemovalPolicy::Remove);
    let mut again = input(
        vec![&wifi],
        vec![managed("wifi", "h1", ProfileState::Removing)],
        None,
    );
    again.in_flight = vec![InFlight {
        command_uuid: "R".into(),
        intent: Intent::Remove {
            identifier: "wifi".into(),
        },
        queued: true,
    }];
    let p = plan(again);
    assert_eq!(p.cancel, ["R"]);
    assert!(intents(&p).contains(&Intent::Install {
        identifier: "wifi".into(),
        hash: "h1".into()
    }));
    assert_eq!(state_of(&p, "wifi"), Some(ProfileState::Pending));
}

#[test]
fn a_profile_whose_presence_is_in_doubt_is_looked_for_before_it_is_removed() {
    // Pending and never acknowledged (a device that enrolled again, an install that never
    // arrived), and no longer declared: the device is asked, not sent RemoveProfile.
    let mut doubtful = managed("wifi", "h1", ProfileState::Pending);
    doubtful.acknowledged_at = None;
    let p = plan(input(vec![], vec![doubtful.clone()], None));
    assert_eq!(intents(&p), [Intent::ProfileList]);
    // Not there: forgotten, nothing removed.
    let absent = reported(NOW + 1, &[]);
    let p = plan(input(vec![], vec![doubtful.clone()], Some(&absent)));
    assert!(p.commands.is_empty() && p.managed.is_empty(), "{p:?}");
    // There after all (an install that did arrive): removed.
    let present = reported(NOW + 1, &[("wifi", "UUID-h1")]);
    let p = plan(input(vec![], vec![doubtful], Some(&present)));
    assert_eq!(
        intents(&p),
        [
            Intent::Remove {
                identifier: "wifi".into()
            },
            Intent::ProfileList
        ]
    );
}

#[test]
fn a_profile_declared_again_after_its_removal_is_installed_with_a_new_command() {
    // Found by the fleet campaign: the entry is forgotten once removed, so its counters start
    // again; an install UUID made of them alone was the UUID of the first install, and a
    // command whose UUID exists is never queued again: the profile stayed pending for ever.
    let wifi = profile("wifi", "h1", RemovalPolicy::Remove);
    let first = plan(input(vec![&wifi], vec![], None));
    let mut again = input(vec![&wifi], vec![], None);
    again.now = NOW + 60_000;
    let second = plan(again);
    let uuid = |p: &Plan| {
        p.commands
            .iter()
            .find(|c| matches!(c.intent, Intent::Install { .. }))
            .map(|c| c.uuid.clone())
            .unwrap()
    };
    assert_ne!(uuid(&first), uuid(&second));
    // A replay of the same plan is the same command.
    assert_eq!(uuid(&first), uuid(&plan(input(vec![&wifi], vec![], None))));
}
