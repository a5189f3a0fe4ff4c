//! The admin API's requests and answers, as types: the server writes them, the CLI reads them,
//! and `openapi` describes them (`GET /api/v1/openapi.json`, committed as
//! `docs/openapi.json`). Plain data with no behaviour, importing only the shared vocabulary,
//! so that server, CLI and any other client agree by construction. Times are RFC 3339 strings
//! in UTC; absent values are `null`.

pub mod openapi;

pub use crate::vocab::actions::ActionKind;
pub use crate::vocab::facts::ReportedFacts;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Every error answer: what was wrong, in a sentence. A refused policy lists its problems.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ErrorBody {
    pub error: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problems: Option<Vec<String>>,
}

/// An enrolled (or once enrolled) device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Device {
    /// UDID (device enrollment) or EnrollmentID.
    pub device_id: String,
    /// `Device` or `UserEnrollment`.
    pub enrollment_type: String,
    /// `authenticated` (waiting for TokenUpdate), `enrolled` or `checked_out`.
    pub state: String,
    pub serial_number: Option<String>,
    pub model: Option<String>,
    pub model_name: Option<String>,
    pub product_name: Option<String>,
    pub os_version: Option<String>,
    pub build_version: Option<String>,
    pub device_name: Option<String>,
    pub imei: Option<String>,
    pub meid: Option<String>,
    /// The push topic the device enrolled with.
    pub topic: String,
    pub has_push_token: bool,
    pub has_unlock_token: bool,
    pub awaiting_configuration: bool,
    pub enrolled_at: Option<String>,
    pub authenticated_at: Option<String>,
    pub token_updated_at: Option<String>,
    pub checked_out_at: Option<String>,
    pub last_seen_at: Option<String>,
    /// When an acknowledged EraseDevice wiped it.
    pub wiped_at: Option<String>,
}

/// `GET /api/v1/devices`: one page of the devices that match the search, by device id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DevicePage {
    pub devices: Vec<Device>,
    /// Pass as `after` for the next page; null on the last one.
    pub next_after: Option<String>,
}

/// `GET /api/v1/devices/{id}`: the device with its identity, push state, inventory and the
/// profiles Pomona manages on it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DeviceDetail {
    #[serde(flatten)]
    pub device: Device,
    pub certificates: Vec<Certificate>,
    pub push: PushState,
    /// Labels set through the API (what groups select on besides inventory).
    pub labels: BTreeMap<String, String>,
    /// The latest DeviceInformation answer, if any.
    pub facts: Option<Facts>,
    pub profiles: Vec<ManagedProfile>,
    /// When the device last reported its ProfileList.
    pub profiles_reported_at: Option<String>,
    /// The declared device groups it belongs to now.
    pub groups: Vec<String>,
}

/// An identity certificate the CA issued to the device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Certificate {
    pub serial: String,
    pub fingerprint_sha256: String,
    pub subject: String,
    pub not_before: Option<String>,
    pub not_after: Option<String>,
    pub issued_at: Option<String>,
    /// The certificate the current enrollment authenticated with.
    pub bound: bool,
    pub revoked_at: Option<String>,
}

/// Where pushing the device stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PushState {
    pub last_push_at: Option<String>,
    pub last_result: Option<String>,
    pub last_result_at: Option<String>,
    pub next_push_at: Option<String>,
    /// Pushes since the device last connected.
    pub attempts_since_seen: i64,
    pub consecutive_failures: i64,
    /// APNs said the token is no longer valid: no push until the next TokenUpdate.
    pub token_invalid: bool,
    pub token_invalid_at: Option<String>,
}

/// The DeviceInformation facts groups select on (absent when the device did not answer them),
/// and when the device reported them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Facts {
    #[serde(flatten)]
    pub facts: ReportedFacts,
    pub reported_at: Option<String>,
}

/// A profile Pomona manages on one device, and where it stands there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ManagedProfile {
    /// The declaring object (`Profile/office-wifi`, `Restrictions/…`).
    pub profile: String,
    /// The profile's PayloadIdentifier.
    pub identifier: String,
    /// `pending`, `verifying`, `verified`, `failed`, `removing` or `removal_failed`.
    pub state: String,
    pub attempts: u32,
    pub last_error: Option<String>,
}

/// `PUT /api/v1/devices/{id}/labels`: the device's labels, replacing the previous ones.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LabelsRequest {
    pub labels: BTreeMap<String, String>,
}

/// The labels now in force on a device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Labels {
    pub device_id: String,
    pub labels: BTreeMap<String, String>,
}

/// `POST /api/v1/devices/{id}/revoke`: the device's certificates newly revoked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Revoked {
    pub device_id: String,
    pub revoked_certificates: u64,
}

/// `POST /api/v1/devices/{id}/push`: what APNs answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Pushed {
    pub device_id: String,
    pub accepted: bool,
    pub apns_status: u16,
    pub apns_id: Option<String>,
    /// APNs's answer in words (reason and status).
    pub result: String,
}

/// `POST /api/v1/devices/{id}/commands`: the command as queued.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct QueuedCommand {
    pub command_uuid: String,
    pub device_id: String,
    pub request_type: String,
    /// Always `queued`.
    pub status: String,
}

/// A command sent (or to be sent) to a device, with its result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Command {
    pub command_uuid: String,
    pub device_id: String,
    pub request_type: String,
    /// `queued`, `acknowledged`, `error`, `command_format_error` or `cancelled`.
    pub status: String,
    pub created_at: Option<String>,
    pub updated_at: Option<String>,
    /// Times the device fetched it.
    pub attempts: i64,
    pub last_sent_at: Option<String>,
    pub not_now_count: i64,
    pub last_not_now_at: Option<String>,
    pub completed_at: Option<String>,
    /// The device's result plist, as JSON (data as base64).
    pub result: Option<serde_json::Value>,
}

/// `GET /api/v1/devices/{id}/commands`: newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Commands {
    pub device_id: String,
    pub commands: Vec<Command>,
}

/// `POST /api/v1/enrollment-tokens`: a one-time enrollment link.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct EnrollmentToken {
    pub token: String,
    /// Open on the device to install the enrollment profile.
    pub enroll_url: String,
    pub expires_at: Option<String>,
}

/// `GET /api/v1/status`: the policy in force and where the fleet stands on it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Status {
    pub policy: PolicyStatus,
    pub rollout: RolloutStatus,
    pub profiles: Vec<ProfileStatus>,
    pub actions: Vec<ActionStatus>,
    /// Each declared device group and how many devices belong to it now.
    pub groups: Vec<GroupStatus>,
}

/// A declared device group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct GroupStatus {
    pub name: String,
    pub members: i64,
}

/// The policy revision in force, where it comes from, and the last change refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PolicyStatus {
    pub revision: Option<String>,
    /// `dir <path>`, `git <url> <branch> <path>`, `kubernetes <namespace>`.
    pub source: Option<String>,
    /// Git: the commit in force.
    pub commit: Option<String>,
    /// Problems of the last change that was refused (the revision in force keeps serving).
    pub last_error: Option<Vec<String>>,
    pub refused_commit: Option<String>,
    pub warnings: Vec<String>,
    pub last_fetch_at: Option<String>,
    pub last_fetch_error: Option<String>,
}

/// Rollout pacing of the last policy change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RolloutStatus {
    pub waiting_devices: usize,
    pub installing_devices: usize,
    /// Devices with installs outstanding at most (0: no limit).
    pub max_devices: usize,
}

/// One profile: how many devices it targets and where they stand.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ProfileStatus {
    pub profile: String,
    /// False for a profile no longer declared that devices still carry (being removed).
    pub declared: bool,
    pub identifier: Option<String>,
    pub targeted: i64,
    pub verified: i64,
    pub pending: i64,
    pub failed: i64,
    pub removing: i64,
    pub removal_failed: i64,
    /// A few devices it failed on, with the device's error.
    pub failing_devices: Vec<FailingDevice>,
}

/// A device a profile failed on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct FailingDevice {
    pub device_id: String,
    /// `install` or `removal`.
    pub phase: String,
    pub reason: Option<String>,
}

/// A device action's devices, counted by phase.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ActionCounts {
    pub action_id: String,
    /// `Lock`, `EraseDevice`, `EnableLostMode`, …
    pub action: String,
    /// `api` or the declaring DeviceAction.
    pub source: String,
    pub targeted: i64,
    pub pending: i64,
    pub sent: i64,
    pub acknowledged: i64,
    pub failed: i64,
    pub not_applicable: i64,
    pub updated_at: Option<String>,
}

/// A declared device action in status: its counts, and the devices it failed or could not
/// run on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ActionStatus {
    #[serde(flatten)]
    pub counts: ActionCounts,
    pub name: String,
    /// `udid …`, `serial …` or `group …`.
    pub target: String,
    pub failing_devices: Vec<ActionFailure>,
}

/// A device a declared action failed on or could not run on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ActionFailure {
    pub device_id: String,
    /// `Failed` or `NotApplicable`.
    pub state: String,
    pub reason: Option<String>,
}

/// One device's part in one action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ActionRecord {
    pub action_id: String,
    pub device_id: String,
    pub action: String,
    pub source: String,
    /// `Pending`, `Sent`, `Acknowledged`, `Failed` or `NotApplicable`.
    pub state: String,
    pub detail: Option<String>,
    /// What the device answered (a location, …), as JSON.
    pub result: Option<serde_json::Value>,
    pub command_uuid: Option<String>,
    pub created_at: Option<String>,
    pub updated_at: Option<String>,
}

/// `GET /api/v1/actions`: the latest actions, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ActionList {
    pub actions: Vec<ActionCounts>,
}

/// `GET /api/v1/actions/{id}`: an action's counts and its devices.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ActionDetail {
    #[serde(flatten)]
    pub counts: ActionCounts,
    /// Declared actions: what they target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    pub devices: Vec<ActionRecord>,
}

/// `GET /api/v1/devices/{id}/actions`: every action on one device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DeviceActions {
    pub device_id: String,
    pub wiped_at: Option<String>,
    pub actions: Vec<ActionRecord>,
}

/// `POST /api/v1/devices/{id}/actions`: an action started on one device now. Not `Debug`: it
/// may hold a PIN.
#[derive(Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ActionRequest {
    pub action: ActionKind,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub phone_number: Option<String>,
    #[serde(default)]
    pub footnote: Option<String>,
    /// Six digits (Lock, Erase on a Mac).
    #[serde(default)]
    pub pin: Option<String>,
    #[serde(default)]
    pub preserve_data_plan: Option<bool>,
    #[serde(default)]
    pub disallow_proximity_setup: Option<bool>,
    #[serde(default)]
    pub return_to_service: Option<bool>,
    #[serde(default)]
    pub notify_user: Option<bool>,
    /// Erase only: the device's serial number or UDID, to confirm.
    #[serde(default)]
    pub confirm: Option<String>,
}

/// An action started on one device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct StartedAction {
    pub action_id: String,
    pub device_id: String,
    pub action: String,
    /// `Pending`, `Sent` or `NotApplicable` (with the reason in `detail`).
    pub state: String,
    pub detail: Option<String>,
    pub command_uuid: Option<String>,
}

/// `POST /api/v1/plan`: a candidate policy, as its files (path → content).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PlanRequest {
    pub files: BTreeMap<String, String>,
}

/// What a candidate policy would change on the live fleet.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PlanPreview {
    pub revision: String,
    /// Enrolled devices compared.
    pub devices: u64,
    pub changes: Vec<ProfileChange>,
    #[serde(default)]
    pub actions: Vec<ActionChange>,
}

/// How many devices would get a profile installed (new or changed content) or removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ProfileChange {
    pub profile: String,
    pub identifier: String,
    pub install: u64,
    pub remove: u64,
}

/// A declared device action and how many devices it would run on (not run there yet).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ActionChange {
    pub action: String,
    pub kind: String,
    pub run_on: u64,
}
