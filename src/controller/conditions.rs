//! What the status of a Pomona custom resource says, computed without I/O from the object's
//! verdict (accepted, invalid with a generation in force, dangling) and the fleet's counts:
//! the kstatus conditions `Ready`, `Reconciling` and `Stalled` with their reasons and messages,
//! and the rendered status that keeps the transition times of
//! conditions whose status did not change. `status.rs` reads the counts and writes the result.

use super::source::Verdict;
use crate::policy::crd::{bounded, Condition, PolicyStatus};
use std::collections::HashMap;

/// What the status of one object should say (before transition times).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    pub ready: (bool, &'static str, String),
    pub reconciling: (bool, &'static str),
    pub stalled: (bool, &'static str),
    pub counts: Option<Counts>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    pub targeted: i64,
    pub verified: i64,
    pub pending: i64,
    pub failed: i64,
    pub removing: i64,
}

/// Why an object's current generation is refused, and what devices get instead.
fn refusal(errors: &[String], in_force: Option<i64>) -> String {
    let errors = errors.join("; ");
    match in_force {
        Some(g) => format!("{errors} (generation {g} stays in force)"),
        None => errors,
    }
}

/// What an object whose groups are gone says, naming them and the fix.
fn groups_missing(groups: &[String]) -> String {
    let quoted: Vec<String> = groups.iter().map(|g| format!("{g:?}")).collect();
    let (noun, gone, kept, them) = if groups.len() == 1 {
        (
            "DeviceGroup",
            "no longer exists or is not valid",
            "its last definition stays",
            "it",
        )
    } else {
        (
            "DeviceGroups",
            "no longer exist or are not valid",
            "their last definitions stay",
            "them",
        )
    };
    format!(
        "spec.groups: {noun} {} {gone}: {kept} in force for this object; \
         create {them} again or change spec.groups",
        quoted.join(", ")
    )
}

/// The conditions for a profile-like object from its verdict and counts. Pure.
pub fn profile_conditions(verdict: &Verdict, counts: &Counts, failing: &str) -> Desired {
    match verdict {
        Verdict::Invalid { errors, in_force } => Desired {
            ready: (false, "Invalid", refusal(errors, *in_force)),
            reconciling: (false, "Invalid"),
            stalled: (true, "Invalid"),
            counts: Some(counts.clone()),
        },
        Verdict::GroupsMissing { groups, .. } => Desired {
            ready: (false, "GroupMissing", groups_missing(groups)),
            reconciling: (false, "GroupMissing"),
            stalled: (true, "GroupMissing"),
            counts: Some(counts.clone()),
        },
        Verdict::Deleting => Desired {
            ready: (
                false,
                "Removing",
                format!(
                    "being removed from {} device(s)",
                    counts.removing + counts.verified + counts.pending
                ),
            ),
            reconciling: (true, "Removing"),
            stalled: (false, "Removing"),
            counts: Some(counts.clone()),
        },
        Verdict::Accepted { warnings } => {
            let warn = if warnings.is_empty() {
                String::new()
            } else {
                format!(" (warnings: {})", warnings.join("; "))
            };
            if counts.failed > 0 {
                Desired {
                    ready: (
                        false,
                        "DevicesFailed",
                        format!(
                            "{} of {} device(s) failed: {failing}{warn}",
                            counts.failed, counts.targeted
                        ),
                    ),
                    reconciling: (
                        counts.pending > 0,
                        if counts.pending > 0 {
                            "Installing"
                        } else {
                            "DevicesFailed"
                        },
                    ),
                    stalled: (counts.pending == 0, "DevicesFailed"),
                    counts: Some(counts.clone()),
                }
            } else if counts.pending > 0 || counts.verified < counts.targeted || counts.removing > 0
            {
                Desired {
                    ready: (
                        false,
                        "Installing",
                        format!(
                            "{} of {} device(s) verified, {} pending{warn}",
                            counts.verified, counts.targeted, counts.pending
                        ),
                    ),
                    reconciling: (true, "Installing"),
                    stalled: (false, "Installing"),
                    counts: Some(counts.clone()),
                }
            } else if counts.targeted == 0 {
                // Nothing to do is a converged state (GitOps health checks must not wait on
                // it), but it is said plainly: an empty target is often a selector's typo.
                Desired {
                    ready: (
                        true,
                        "NoDevicesTargeted",
                        format!(
                            "no enrolled device is in the targeted groups, so there is nothing \
                             to install{warn}"
                        ),
                    ),
                    reconciling: (false, "NoDevicesTargeted"),
                    stalled: (false, "NoDevicesTargeted"),
                    counts: Some(counts.clone()),
                }
            } else {
                Desired {
                    ready: (
                        true,
                        "Verified",
                        format!("verified on {} device(s){warn}", counts.verified),
                    ),
                    reconciling: (false, "Verified"),
                    stalled: (false, "Verified"),
                    counts: Some(counts.clone()),
                }
            }
        }
    }
}

/// The conditions for a DeviceGroup or DeviceLabels object. Pure.
pub fn plain_conditions(verdict: &Verdict, members: Option<i64>) -> Desired {
    let counts = members.map(|m| Counts {
        targeted: m,
        ..Counts::default()
    });
    match verdict {
        Verdict::Invalid { errors, in_force } => Desired {
            ready: (false, "Invalid", refusal(errors, *in_force)),
            reconciling: (false, "Invalid"),
            stalled: (true, "Invalid"),
            counts,
        },
        Verdict::GroupsMissing { groups, .. } => Desired {
            ready: (false, "GroupMissing", groups_missing(groups)),
            reconciling: (false, "GroupMissing"),
            stalled: (true, "GroupMissing"),
            counts,
        },
        Verdict::Deleting => Desired {
            ready: (false, "Deleting", "being deleted".into()),
            reconciling: (true, "Deleting"),
            stalled: (false, "Deleting"),
            counts,
        },
        Verdict::Accepted { warnings } => {
            let mut message = match members {
                Some(m) => format!("{m} device(s)"),
                None => "accepted".into(),
            };
            if !warnings.is_empty() {
                message.push_str(&format!(" (warnings: {})", warnings.join("; ")));
            }
            Desired {
                ready: (true, "Accepted", message),
                reconciling: (false, "Accepted"),
                stalled: (false, "Accepted"),
                counts,
            }
        }
    }
}

fn status_word(b: bool) -> String {
    if b { "True" } else { "False" }.to_string()
}

/// The three conditions `desired` calls for, keeping the transition times of those whose
/// status did not change (shared by every kind's status).
pub(super) fn conditions(
    desired: &Desired,
    generation: Option<i64>,
    old: &[Condition],
    now: &str,
) -> Vec<Condition> {
    let old_conditions: HashMap<&str, &Condition> =
        old.iter().map(|c| (c.type_.as_str(), c)).collect();
    let condition = |type_: &str, status: bool, reason: &str, message: String| {
        let status = status_word(status);
        let since = old_conditions
            .get(type_)
            .filter(|c| c.status == status)
            .map(|c| c.last_transition_time.clone())
            .unwrap_or_else(|| now.to_string());
        Condition {
            type_: type_.to_string(),
            status,
            reason: reason.to_string(),
            message: bounded(&message),
            last_transition_time: since,
            observed_generation: generation,
        }
    };
    let (ready, ready_reason, message) = &desired.ready;
    vec![
        condition("Ready", *ready, ready_reason, message.clone()),
        condition(
            "Reconciling",
            desired.reconciling.0,
            desired.reconciling.1,
            if desired.reconciling.0 {
                message.clone()
            } else {
                String::new()
            },
        ),
        condition(
            "Stalled",
            desired.stalled.0,
            desired.stalled.1,
            if desired.stalled.0 {
                message.clone()
            } else {
                String::new()
            },
        ),
    ]
}

/// The full status, keeping transition times of conditions whose status did not change.
///
/// `status.observedGeneration` is the generation judged, refused ones included (kstatus's
/// meaning: Flux, `kubectl wait` and Argo CD see a refused generation as Stalled at once, not
/// as not yet observed until a timeout); what devices get is `status.inForce.generation`.
pub fn render(
    desired: &Desired,
    generation: Option<i64>,
    revision: &str,
    old: Option<&PolicyStatus>,
    now: &str,
) -> PolicyStatus {
    let counts = desired.counts.clone();
    PolicyStatus {
        observed_generation: generation,
        conditions: conditions(
            desired,
            generation,
            old.map_or(&[][..], |o| &o.conditions),
            now,
        ),
        targeted: counts.as_ref().map(|c| c.targeted),
        verified: counts.as_ref().map(|c| c.verified),
        pending: counts.as_ref().map(|c| c.pending),
        failed: counts.as_ref().map(|c| c.failed),
        removing: counts.as_ref().map(|c| c.removing),
        revision: Some(revision.to_string()),
        in_force: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(targeted: i64, verified: i64, pending: i64, failed: i64) -> Counts {
        Counts {
            targeted,
            verified,
            pending,
            failed,
            removing: 0,
        }
    }

    #[test]
    fn a_profile_that_targets_no_device_is_ready_and_says_why() {
        let ok = Verdict::Accepted { warnings: vec![] };
        let d = profile_conditions(&ok, &counts(0, 0, 0, 0), "");
        assert_eq!((d.ready.0, d.ready.1), (true, "NoDevicesTargeted"));
        assert!(d.ready.2.contains("no enrolled device"), "{}", d.ready.2);
        assert!(!d.reconciling.0 && !d.stalled.0);
        // Once a device is targeted, it is about that device again.
        let d = profile_conditions(&ok, &counts(1, 1, 0, 0), "");
        assert_eq!((d.ready.0, d.ready.1), (true, "Verified"));
    }

    #[test]
    fn conditions_follow_the_fleet() {
        let ok = Verdict::Accepted { warnings: vec![] };
        let d = profile_conditions(&ok, &counts(3, 3, 0, 0), "");
        assert_eq!(
            (d.ready.0, d.reconciling.0, d.stalled.0),
            (true, false, false)
        );
        let d = profile_conditions(&ok, &counts(3, 1, 2, 0), "");
        assert_eq!(
            (d.ready.0, d.reconciling.0, d.stalled.0),
            (false, true, false)
        );
        assert_eq!(d.ready.2, "1 of 3 device(s) verified, 2 pending");
        let d = profile_conditions(&ok, &counts(3, 2, 0, 1), "D1: refused");
        assert_eq!((d.ready.0, d.stalled.0), (false, true));
        assert!(d.ready.2.contains("D1: refused"), "{}", d.ready.2);
        let bad = Verdict::Invalid {
            errors: vec!["spec.groups: DeviceGroup \"x\" is not declared".into()],
            in_force: None,
        };
        let d = profile_conditions(&bad, &Counts::default(), "");
        assert_eq!(
            (d.ready.0, d.stalled.0, d.stalled.1),
            (false, true, "Invalid")
        );
        let kept = Verdict::Invalid {
            errors: vec!["spec.groups: DeviceGroup \"x\" is not declared".into()],
            in_force: Some(4),
        };
        let d = profile_conditions(&kept, &counts(3, 3, 0, 0), "");
        assert_eq!((d.ready.0, d.stalled.0), (false, true));
        assert!(
            d.ready.2.ends_with("(generation 4 stays in force)"),
            "{}",
            d.ready.2
        );
        assert_eq!(
            d.counts,
            Some(counts(3, 3, 0, 0)),
            "counts of what is in force"
        );
        let status = render(&d, Some(5), "r", None, "now");
        assert_eq!(
            status.observed_generation,
            Some(5),
            "a refused generation is observed (judged), as kstatus reads it"
        );
        let gone = Verdict::GroupsMissing {
            groups: vec!["everyone".into()],
            warnings: vec![],
        };
        let d = profile_conditions(&gone, &counts(3, 3, 0, 0), "");
        assert_eq!(
            (d.ready.0, d.stalled.0, d.stalled.1),
            (false, true, "GroupMissing")
        );
        assert!(
            d.ready
                .2
                .starts_with("spec.groups: DeviceGroup \"everyone\" no longer exists"),
            "{}",
            d.ready.2
        );
    }

    #[test]
    fn transition_times_survive_unchanged_conditions() {
        let ok = Verdict::Accepted { warnings: vec![] };
        let first = render(
            &profile_conditions(&ok, &counts(1, 1, 0, 0), ""),
            Some(1),
            "r",
            None,
            "T1",
        );
        let again = render(
            &profile_conditions(&ok, &counts(1, 1, 0, 0), ""),
            Some(1),
            "r",
            Some(&first),
            "T2",
        );
        assert_eq!(first, again, "nothing changed: nothing to write");
        let moved = render(
            &profile_conditions(&ok, &counts(2, 1, 1, 0), ""),
            Some(2),
            "r",
            Some(&first),
            "T3",
        );
        let ready = moved
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.last_transition_time.as_str()),
            ("False", "T3")
        );
        assert_eq!(ready.observed_generation, Some(2));
    }
}
