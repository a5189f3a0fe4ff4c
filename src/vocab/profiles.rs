//! The profile inventory as it is persisted: where each profile Pomona manages stands on each
//! device, what the device last listed, and what each of the reconciler's commands is for.
//!
//! The planner (`reconcile::plan`) computes these and the store (`store::reconcile`) writes and
//! reads them. They live here, not in the planner, because the store sits below the planner and
//! must not import it. `RemovalPolicy` is a field of the declared model (`policy::model`) and is
//! recorded with each managed profile, and the store must not import `policy` either, so it
//! lives here too (its serde and schemars derives and doc comments are what the custom resource
//! definitions in `crds/` are generated from: keep them as they are).

use super::persisted::UnknownValue;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What happens on devices when a profile stops targeting them (or is deleted).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum RemovalPolicy {
    /// Remove it from devices that are no longer targeted.
    #[default]
    Remove,
    /// Leave it installed.
    Keep,
}

impl RemovalPolicy {
    /// The persisted spelling (as in policy documents).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Remove => "Remove",
            Self::Keep => "Keep",
        }
    }

    /// Reads a persisted spelling; an unknown one is an error, never a guess: read as `Remove`
    /// it would uninstall what a newer replica was told to keep.
    pub fn parse(text: &str) -> Result<Self, UnknownValue> {
        match text {
            "Remove" => Ok(Self::Remove),
            "Keep" => Ok(Self::Keep),
            _ => Err(UnknownValue::new("removal policy", text)),
        }
    }
}

/// Where one managed profile stands on one device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ProfileState {
    /// Needs (re)installing, or an install is queued.
    Pending,
    /// InstallProfile acknowledged; waiting for a ProfileList that lists it.
    Verifying,
    /// Listed by the device with our PayloadUUID.
    Verified,
    /// Gave up after `max_attempts`; `last_error` says why.
    Failed,
    /// No longer desired; RemoveProfile queued or sent.
    Removing,
    /// No longer desired, and RemoveProfile failed `max_attempts` times: given up, the
    /// profile may still be on the device; `last_error` says why. Terminal until the device
    /// reports it gone, it is declared again, or the device enrolls again.
    RemovalFailed,
}

impl ProfileState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Verifying => "verifying",
            Self::Verified => "verified",
            Self::Failed => "failed",
            Self::Removing => "removing",
            Self::RemovalFailed => "removal_failed",
        }
    }

    pub fn parse(text: &str) -> Result<Self, UnknownValue> {
        Ok(match text {
            "pending" => Self::Pending,
            "verifying" => Self::Verifying,
            "verified" => Self::Verified,
            "failed" => Self::Failed,
            "removing" => Self::Removing,
            "removal_failed" => Self::RemovalFailed,
            _ => return Err(UnknownValue::new("profile state", text)),
        })
    }
}

/// Pomona's record of one profile it manages on one device (persisted by the driver).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedProfile {
    pub identifier: String,
    /// `Profile/name` or `Restrictions/name` that wanted it.
    pub profile_key: String,
    /// Content hash and PayloadUUID of the version installed or being installed.
    pub hash: String,
    pub uuid: String,
    pub state: ProfileState,
    /// Failed attempts for the current version (install, verification or removal).
    pub attempts: u32,
    /// InstallProfile commands issued for this entry so far (part of command UUIDs).
    pub installs: u32,
    pub last_attempt_at: Option<i64>,
    pub acknowledged_at: Option<i64>,
    pub last_error: Option<String>,
    /// The removal policy of the profile when it was last desired.
    pub removal_policy: RemovalPolicy,
}

/// The device's latest ProfileList: identifier → top-level PayloadUUID.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReportedProfiles {
    pub reported_at: i64,
    pub profiles: BTreeMap<String, String>,
}

/// What one of our commands is for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Intent {
    Install {
        identifier: String,
        hash: String,
    },
    Remove {
        identifier: String,
    },
    ProfileList,
    /// The inventory queries groups select on (supervision, model, OS version…).
    DeviceInformation,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_profile_state_reads_back_and_an_unknown_one_is_an_error() {
        use ProfileState::*;
        for state in [
            Pending,
            Verifying,
            Verified,
            Failed,
            Removing,
            RemovalFailed,
        ] {
            assert_eq!(ProfileState::parse(state.as_str()), Ok(state));
        }
        let unknown = ProfileState::parse("quarantined").unwrap_err();
        assert_eq!(unknown, UnknownValue::new("profile state", "quarantined"));
        assert!(unknown.to_string().contains("\"quarantined\""), "{unknown}");
    }
}
