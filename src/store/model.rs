//! Plain records the store reads and writes.

use crate::protocol::ReportStatus;
use crate::vocab::persisted::UnknownValue;
use serde::Serialize;

/// Facts a device sends with Authenticate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceFacts {
    pub device_id: String,
    pub enrollment_type: EnrollmentType,
    pub topic: String,
    pub serial_number: Option<String>,
    pub model: Option<String>,
    pub model_name: Option<String>,
    pub product_name: Option<String>,
    pub os_version: Option<String>,
    pub build_version: Option<String>,
    pub device_name: Option<String>,
    pub imei: Option<String>,
    pub meid: Option<String>,
    /// The identity certificate the device authenticated with; bound to this enrollment.
    pub certificate_fingerprint: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub enum EnrollmentType {
    /// Identified by UDID.
    #[default]
    Device,
    /// User Enrollment: identified by EnrollmentID, no UDID or serial.
    UserEnrollment,
}

impl EnrollmentType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Device => "Device",
            Self::UserEnrollment => "UserEnrollment",
        }
    }
    pub fn parse(s: &str) -> Result<Self, UnknownValue> {
        match s {
            "Device" => Ok(Self::Device),
            "UserEnrollment" => Ok(Self::UserEnrollment),
            _ => Err(UnknownValue::new("enrollment type", s)),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EnrollmentState {
    /// Authenticate seen, waiting for TokenUpdate: not pushable yet.
    Authenticated,
    /// TokenUpdate seen: managed and pushable.
    Enrolled,
    /// CheckOut seen (profile removed): history kept, nothing sent.
    CheckedOut,
}

impl EnrollmentState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Authenticated => "authenticated",
            Self::Enrolled => "enrolled",
            Self::CheckedOut => "checked_out",
        }
    }
    pub fn parse(s: &str) -> Result<Self, UnknownValue> {
        Ok(match s {
            "authenticated" => Self::Authenticated,
            "enrolled" => Self::Enrolled,
            "checked_out" => Self::CheckedOut,
            _ => return Err(UnknownValue::new("enrollment state", s)),
        })
    }
}

/// Push credentials from TokenUpdate.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenUpdateRecord {
    pub device_id: String,
    pub enrollment_type: EnrollmentType,
    pub topic: String,
    pub token: Vec<u8>,
    pub push_magic: String,
    pub unlock_token: Option<Vec<u8>>,
    pub awaiting_configuration: bool,
}

/// What push needs to wake a device. Secrets: never logged.
#[derive(Clone, PartialEq, Eq)]
pub struct PushCredentials {
    pub topic: String,
    pub token: Vec<u8>,
    pub push_magic: String,
}

impl std::fmt::Debug for PushCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushCredentials")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

/// A device as the admin API shows it (no secrets: only whether they exist).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Enrollment {
    pub device_id: String,
    pub enrollment_type: EnrollmentType,
    pub state: EnrollmentState,
    pub topic: String,
    pub serial_number: Option<String>,
    pub model: Option<String>,
    pub model_name: Option<String>,
    pub product_name: Option<String>,
    pub os_version: Option<String>,
    pub build_version: Option<String>,
    pub device_name: Option<String>,
    pub imei: Option<String>,
    pub meid: Option<String>,
    pub has_push_token: bool,
    pub has_unlock_token: bool,
    pub awaiting_configuration: bool,
    pub created_at: i64,
    pub authenticated_at: i64,
    pub token_updated_at: Option<i64>,
    pub checked_out_at: Option<i64>,
    pub last_seen_at: Option<i64>,
    /// SHA-256 of the identity certificate bound at Authenticate.
    pub certificate_fingerprint: Option<String>,
    /// When an EraseDevice was acknowledged (the enrollment is checked out then).
    pub wiped_at: Option<i64>,
}

/// Which devices `EnrollmentStore::search_enrollments` lists: every field given narrows the
/// list (the default lists every device).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceQuery {
    /// A prefix, compared without ASCII case, of the UDID/EnrollmentID, the serial number, the
    /// device name or the value of a label set through the API; `key=prefix` matches that one
    /// label only.
    pub text: Option<String>,
    pub state: Option<EnrollmentState>,
    /// Devices whose ProductName (else Model) starts with one of these (a platform's
    /// identifiers, e.g. `iPhone` and `iPod`). Empty: any.
    pub product_prefixes: Vec<String>,
    /// Only these devices (e.g. a group's members, a chunk at a time).
    pub among: Option<Vec<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthenticateOutcome {
    /// Commands of the previous enrollment that were cancelled.
    pub cancelled_commands: u64,
    /// True when the device was already known (a re-enrollment).
    pub re_enrollment: bool,
}

/// A command to queue: the full `Command` dictionary as plist bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCommand {
    pub uuid: String,
    pub request_type: String,
    /// The envelope exactly as the device receives it.
    pub command: Vec<u8>,
    /// A span of `command` that many commands carry (an InstallProfile's profile): stored once
    /// for all of them (`store::command_parts`). None stores the envelope whole.
    pub shared: Option<std::ops::Range<usize>>,
}

/// A command handed to a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedCommand {
    pub uuid: String,
    pub request_type: String,
    pub command: Vec<u8>,
}

/// A device's report about one command, with the exact bytes it sent.
#[derive(Debug, Clone, Copy)]
pub struct ReportRecord<'a> {
    pub command_uuid: &'a str,
    pub status: ReportStatus,
    pub raw: &'a [u8],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportOutcome {
    /// Terminal result stored; the command left the queue.
    Dequeued,
    /// NotNow: still queued.
    StillQueued,
    /// The command already had a terminal result: nothing changed.
    AlreadyFinished,
    /// No command with this UUID for this device.
    Unknown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandStatus {
    Queued,
    Acknowledged,
    Error,
    CommandFormatError,
    /// Dropped before delivery (a new enrollment cleared the queue).
    Cancelled,
}

impl CommandStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Acknowledged => "acknowledged",
            Self::Error => "error",
            Self::CommandFormatError => "command_format_error",
            Self::Cancelled => "cancelled",
        }
    }
    pub fn parse(s: &str) -> Result<Self, UnknownValue> {
        Ok(match s {
            "queued" => Self::Queued,
            "acknowledged" => Self::Acknowledged,
            "error" => Self::Error,
            "command_format_error" => Self::CommandFormatError,
            "cancelled" => Self::Cancelled,
            _ => return Err(UnknownValue::new("command status", s)),
        })
    }
    pub fn from_report(status: ReportStatus) -> Option<Self> {
        match status {
            ReportStatus::Acknowledged => Some(Self::Acknowledged),
            ReportStatus::Error => Some(Self::Error),
            ReportStatus::CommandFormatError => Some(Self::CommandFormatError),
            ReportStatus::Idle | ReportStatus::NotNow => None,
        }
    }
}

/// A command with its delivery history and, once finished, the raw result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandRecord {
    pub uuid: String,
    pub device_id: String,
    pub request_type: String,
    pub status: CommandStatus,
    pub created_at: i64,
    pub updated_at: i64,
    pub sent_count: i64,
    pub last_sent_at: Option<i64>,
    pub not_now_count: i64,
    pub last_not_now_at: Option<i64>,
    pub completed_at: Option<i64>,
    pub result: Option<Vec<u8>>,
}

/// A device identity certificate this server issued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CertificateRecord {
    pub fingerprint: String,
    pub serial: String,
    pub subject: String,
    pub not_before: i64,
    pub not_after: i64,
    pub issued_at: i64,
    /// The device it was bound to at Authenticate (None until then).
    pub device_id: Option<String>,
    pub bound_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

/// What the store knows about a presented certificate, and about the enrollment it claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateStanding {
    pub certificate: CertificateRecord,
    /// The certificate bound to the enrollment this certificate belongs to (its `device_id`),
    /// if that enrollment exists.
    pub enrollment_fingerprint: Option<String>,
    pub enrollment_state: Option<EnrollmentState>,
}

/// One-time secrets: SCEP challenges and enrollment-profile tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretKind {
    ScepChallenge,
    EnrollmentToken,
}

impl SecretKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ScepChallenge => "scep-challenge",
            Self::EnrollmentToken => "enrollment-token",
        }
    }
}

/// The result of presenting a one-time secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretUse {
    /// Valid, and now used up.
    Accepted,
    Unknown,
    AlreadyUsed,
    Expired,
}

/// A device whose push is due, claimed by one scheduler, with what is needed to decide and send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DuePush {
    pub device_id: String,
    /// The lease written when claiming: the row is due again then if nothing is recorded.
    pub claimed_until: i64,
    /// Pushes accepted by APNs since the device last answered.
    pub attempts: i64,
    /// Consecutive failures to hand this push to APNs (429, 5xx, connection errors).
    pub failures: i64,
    pub last_push_at: Option<i64>,
    pub last_seen_at: Option<i64>,
    /// None when the device cannot be pushed: not enrolled, no TokenUpdate yet, or token invalid.
    pub credentials: Option<PushCredentials>,
    pub has_queued_commands: bool,
    /// Some queued command is newer than the device's last contact (fresh work, not only
    /// commands it deferred with NotNow).
    pub has_commands_queued_since_seen: bool,
}

/// The schedule the scheduler decided after handling a claimed push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PushSchedule {
    /// `DuePush::claimed_until`: a wake requested meanwhile (an earlier time) is kept.
    pub claimed_until: i64,
    pub next_push_at: Option<i64>,
    pub attempts: i64,
    pub failures: i64,
    /// The claim found nothing queued, so nothing was pushed; but a wake requested after the
    /// claim was covered by it (see `request_push`). Commands queued by then get their push
    /// now instead of being dropped with the claim.
    pub push_if_queued: bool,
}

/// What happened to one push (scheduled or requested by an administrator).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushOutcome {
    pub device_id: String,
    pub at: i64,
    /// True when APNs accepted the push (sets `last_push_at`).
    pub accepted: bool,
    /// `accepted`, `410 Unregistered`, `connection failed: …`; None keeps the last result
    /// (a claimed push that was not sent).
    pub result: Option<String>,
    /// APNs said the token is invalid: no pushes until the next TokenUpdate.
    pub token_invalid: bool,
    /// None: leave the schedule as it is (an administrator's push).
    pub schedule: Option<PushSchedule>,
}

/// A device's push state as the admin API shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PushStatus {
    pub next_push_at: Option<i64>,
    pub attempts: i64,
    pub failures: i64,
    pub last_push_at: Option<i64>,
    pub last_result: Option<String>,
    pub last_result_at: Option<i64>,
    pub token_invalid_at: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_persisted_value_reads_back_and_an_unknown_one_is_an_error() {
        for t in [EnrollmentType::Device, EnrollmentType::UserEnrollment] {
            assert_eq!(EnrollmentType::parse(t.as_str()), Ok(t));
        }
        use EnrollmentState::*;
        for s in [Authenticated, Enrolled, CheckedOut] {
            assert_eq!(EnrollmentState::parse(s.as_str()), Ok(s));
        }
        use CommandStatus::*;
        for s in [Queued, Acknowledged, Error, CommandFormatError, Cancelled] {
            assert_eq!(CommandStatus::parse(s.as_str()), Ok(s));
        }
        // Each used to fall back silently (to Device, Authenticated, Queued).
        assert!(EnrollmentType::parse("device").is_err());
        assert!(EnrollmentState::parse("frozen").is_err());
        assert_eq!(
            CommandStatus::parse("delivered").unwrap_err().what,
            "command status"
        );
    }
}
